"""Constructor-argument checks shared by the metrics (each failure is a :class:`ConfigError`)."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np

from recourse_sim.errors import ConfigError, check_choice


def check_count(key: str, value: object, *, minimum: int, optional: bool = False) -> int | None:
    """Return ``value`` as an int ``>= minimum``; ``None`` passes through when ``optional``."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        allowed = f"an integer >= {minimum}" + (", or null for all rows" if optional else "")
        raise ConfigError(key, value, allowed)
    return int(value)


def check_length_scale(key: str, value: object) -> float:
    """Return a kernel length-scale as a float after checking it is finite and positive."""
    if (
        isinstance(value, bool)
        or not isinstance(value, Real)
        or not np.isfinite(float(value))
        or float(value) <= 0
    ):
        raise ConfigError(key, value, "a finite number > 0")
    return float(value)


def check_flag(key: str, value: object) -> bool:
    """Return ``value`` if it is a bool (YAML ``true``/``false``), so typos such as "no" fail."""
    if not isinstance(value, bool):
        raise ConfigError(key, value, "true or false")
    return value


def check_form(key: str, value: object) -> str:
    """Return ``value`` if it names one of the two definitions, ``code`` or ``paper``."""
    check_choice(key, value, ("code", "paper"))
    return str(value)
