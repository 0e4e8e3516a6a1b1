"""Errors raised for bad user input, before any expensive work starts."""

from __future__ import annotations

from collections.abc import Iterable


class ConfigError(ValueError):
    """A configuration value or data column that the simulation cannot use.

    The message always names the offending key (as a dotted config path such as
    ``simulation.recourse_fraction``) or column, the value that was given, and what is allowed.
    """

    def __init__(self, key: str, value: object, allowed: str):
        self.key = key
        self.value = value
        self.allowed = allowed
        # The parts, not the message, are the arguments: SimPy re-creates an exception that
        # leaves a process from its arguments.
        super().__init__(key, value, allowed)

    def __str__(self) -> str:
        return f"<{self.key}={self.value!r}> is not valid: {self.allowed}"


class OutputError(Exception):
    """A result file could not be written (full disk, removed directory, lost permission).

    Its arguments are plain text, so it survives being re-created from ``args`` (SimPy does so
    when an exception leaves a process).
    """

    def __init__(self, path: object, error: OSError | str = ""):
        reason = error.strerror or str(error) if isinstance(error, OSError) else str(error)
        super().__init__(str(path), reason)
        self.path = str(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"could not write {self.path}: {self.reason}"


def check_choice(key: str, value: object, choices: Iterable[object]) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise ConfigError(key, value, "allowed values are " + ", ".join(map(repr, choices)))
