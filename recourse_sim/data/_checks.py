"""Argument checks shared by the data loaders (each failure is a :class:`ConfigError`)."""

from __future__ import annotations

from collections.abc import Iterable
from numbers import Integral, Real

import numpy as np

from recourse_sim.errors import ConfigError


def check_rng(rng: object) -> np.random.Generator:
    """Return ``rng`` if it is a numpy ``Generator``; loaders never fall back to global state."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def check_count(key: str, value: object, *, minimum: int, even: bool = False) -> int:
    """Return ``value`` as an int after checking it is an integer ``>= minimum`` (and even)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ConfigError(key, value, f"an integer >= {minimum}" + (" and even" if even else ""))
    value = int(value)
    if value < minimum or (even and value % 2):
        what = f"an even integer >= {minimum} (half the rows per class)" if even else None
        raise ConfigError(key, value, what or f"an integer >= {minimum}")
    return value


def check_real(
    key: str, value: object, *, low: float, high: float = np.inf, high_open: bool = False
) -> float:
    """Return ``value`` as a float after checking ``low <= value <= high`` (``< high``)."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and np.isfinite(float(value))
    if ok:
        value = float(value)
        ok = value >= low and (value < high if high_open else value <= high)
    if not ok:
        upper = "" if high == np.inf else (f" and < {high}" if high_open else f" and <= {high}")
        raise ConfigError(key, value, f"a finite number >= {low}{upper}")
    return value


def as_names(value: object, key: str) -> list[str] | None:
    """Normalise a column list from the config: ``None`` stays, one string becomes a list."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if not isinstance(value, Iterable):
        raise ConfigError(key, value, "a list of column names")
    names = [str(v) for v in value]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(key, duplicates, "each column at most once")
    return names
