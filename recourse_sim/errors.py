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
        super().__init__(f"<{key}={value!r}> is not valid: {allowed}")


def check_choice(key: str, value: object, choices: Iterable[object]) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise ConfigError(key, value, "allowed values are " + ", ".join(map(repr, choices)))
