"""A user's callable named by its import path, with the keyword arguments of its config node.

``model.torch_module.module`` and ``model.sklearn.estimator`` name code of the user's by a
``_target_`` path (as hydra does), but the project calls it itself, with arguments only it knows
(``n_features``, a keyed ``random_state``). A :class:`Factory` keeps the path and the arguments,
not the callable, so it pickles by reference: worker processes import the same callable.
Nothing is evaluated: the path is imported, never executed as text.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence

from recourse_sim.errors import ConfigError


def plain(value: object) -> object:
    """``value`` with every mapping turned into a dict and every list-like into a list."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [plain(v) for v in value]
    return value


def import_object(key: str, path: object) -> object:
    """The object at dotted ``path`` (``package.module.name``); :class:`ConfigError` otherwise."""
    allowed = "the import path of a callable, e.g. my_package.my_module.make_model"
    if not isinstance(path, str) or "." not in path.strip("."):
        raise ConfigError(key, path, allowed)
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            # Only a missing *target* module means "try a shorter prefix"; a module that exists
            # but fails to import (its own missing dependency) is the user's error to see.
            if error.name and not module_name.startswith(error.name):
                raise ConfigError(key, path, f"{allowed} ({error})") from None
            continue
        except Exception as error:  # the module exists but raised on import
            raise ConfigError(key, path, f"{allowed}; importing it failed: {error!r}") from None
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
        except AttributeError:
            missing = path[len(module_name) + 1 :]
            raise ConfigError(key, path, f"{allowed} ({module_name} has no {missing!r})") from None
        return obj
    raise ConfigError(key, path, f"{allowed} (no module of that path can be imported)")


class Factory:
    """``target(**arguments, **extra)`` for a callable named by import path.

    Args:
        key: The config key of the node (errors name ``key._target_`` and ``key.<argument>``).
        node: A mapping with ``_target_`` (the path) and the callable's keyword arguments, or a
            callable itself (from Python; then it must be picklable for worker processes).
        reserved: Arguments the project passes itself; the node may not set them.
    """

    def __init__(self, key: str, node: object, reserved: Sequence[str] = ()):
        self.key = key
        self.reserved = tuple(reserved)
        if callable(node) and not isinstance(node, Mapping):
            self.path, self.arguments, self._target = None, {}, node
            return
        if not isinstance(node, Mapping) or "_target_" not in node:
            raise ConfigError(
                key,
                plain(node),
                "a node with a _target_ (the import path of a callable) and its keyword arguments",
            )
        values = plain(node)
        self.path = values.pop("_target_")
        for name in [k for k in values if k.startswith("_") and k.endswith("_")]:
            values.pop(name)  # hydra's own keys (_recursive_, _convert_, ...)
        self.arguments = values
        self._target = None
        target = self.target
        if not callable(target):
            raise ConfigError(f"{key}._target_", self.path, "the import path of a callable")
        for name in self.arguments:
            if name in self.reserved:
                raise ConfigError(
                    f"{key}.{name}",
                    self.arguments[name],
                    f"nothing: recourse_sim passes {name} itself",
                )
        self._check_arguments(target)

    @property
    def target(self) -> Callable:
        """The callable (imported on first use, in each process)."""
        if self._target is None:
            self._target = import_object(f"{self.key}._target_", self.path)
        return self._target

    @property
    def name(self) -> str:
        """The callable's path (or its qualified name when given as a callable)."""
        if self.path is not None:
            return self.path
        return getattr(self._target, "__qualname__", repr(self._target))

    def _check_arguments(self, target: Callable) -> None:
        try:
            parameters = inspect.signature(target).parameters
        except (TypeError, ValueError):
            return
        if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            return
        accepted = [n for n, p in parameters.items() if p.kind is not p.VAR_POSITIONAL]
        for name in self.arguments:
            if name not in accepted:
                raise ConfigError(
                    f"{self.key}.{name}",
                    self.arguments[name],
                    f"a keyword argument of {self.path}: {', '.join(accepted) or 'none'}",
                )

    def accepts(self, name: str) -> bool:
        """Whether the callable takes keyword argument ``name``."""
        try:
            parameters = inspect.signature(self.target).parameters
        except (TypeError, ValueError):
            return True
        return name in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())

    def __call__(self, **extra):
        """Call the target with the node's arguments and ``extra``."""
        return self.target(**self.arguments, **extra)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self.path is not None:
            state["_target"] = None  # re-imported by path in the receiving process
        return state

    def __repr__(self) -> str:
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.arguments.items())
        return f"{self.name}({arguments})"
