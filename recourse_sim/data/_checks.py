"""Checks specific to the data loaders; value checks go through :mod:`recourse_sim.checks`."""

from __future__ import annotations

import numpy as np

from recourse_sim import checks
from recourse_sim.errors import ConfigError


def check_rng(rng: object) -> np.random.Generator:
    """Return ``rng`` if it is a numpy ``Generator``; loaders never fall back to global state."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def check_sample_count(key: str, value: object, *, minimum: int, even: bool = False) -> int:
    """A row count: an integer ``>= minimum``, and even when half the rows go to each class."""
    if not even:
        return checks.integer(key, value, minimum=minimum)
    allowed = f"an even integer >= {minimum} (half the rows per class)"
    try:
        number = checks.integer(key, value, minimum=minimum)
    except ConfigError:
        raise ConfigError(key, value, allowed) from None
    if number % 2:
        raise ConfigError(key, value, allowed)
    return number
