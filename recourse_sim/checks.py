"""The one set of value checks that every configurable object uses, with one strictness.

Each checker returns the value in its canonical Python type or raises :class:`ConfigError` naming
the key and what is allowed. The rules are the same everywhere:

* a boolean is only ``true`` or ``false`` (``"maybe"``, ``1`` and ``"yes"`` are refused);
* an integer is an integer: ``true`` is not one, nor is ``1.5`` or ``2.0``;
* a number is finite (no ``nan``, ``inf``) and within its stated range;
* text is text (a number where a name is expected is refused).

Keys are written relative to the object's own config node (``learning_rate``) or in full
(``generator.wachter_mad.learning_rate``); the entry point completes relative keys with the node's
path, so the user always sees the key as typed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from numbers import Integral, Real

from recourse_sim.errors import ConfigError, check_choice

__all__ = ["check_choice", "flag", "integer", "names", "probability", "real", "text"]


def _range_text(
    minimum: float | None,
    maximum: float | None,
    low_open: bool,
    high_open: bool,
) -> str:
    parts = []
    if minimum is not None:
        parts.append(f"{'>' if low_open else '>='} {minimum:g}")
    if maximum is not None:
        parts.append(f"{'<' if high_open else '<='} {maximum:g}")
    return " and ".join(parts)


def _allowed(kind: str, bounds: str, optional: bool, none_means: str) -> str:
    """The "allowed" text of a message: kind, range and whether null is accepted."""
    text = kind + (f" {bounds}" if bounds else "")
    if optional:
        text += f", or null{f' ({none_means})' if none_means else ''}"
    return text


def integer(
    key: str,
    value: object,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    optional: bool = False,
    none_means: str = "",
) -> int | None:
    """``value`` as an ``int`` within ``[minimum, maximum]``; ``None`` passes when ``optional``."""
    if value is None and optional:
        return None
    allowed = _allowed(
        "an integer", _range_text(minimum, maximum, False, False), optional, none_means
    )
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ConfigError(key, value, allowed)
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ConfigError(key, value, allowed)
    return value


def real(
    key: str,
    value: object,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
    none_means: str = "",
) -> float | None:
    """``value`` as a finite ``float`` within its range; ``None`` passes when ``optional``.

    ``low_open``/``high_open`` exclude the bound itself (``minimum=0, low_open=True``: ``> 0``).
    """
    if value is None and optional:
        return None
    bounds = _range_text(minimum, maximum, low_open, high_open)
    allowed = _allowed("a finite number", bounds, optional, none_means)
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ConfigError(key, value, allowed)
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float (10**400)
        raise ConfigError(key, value, allowed) from None
    if not math.isfinite(number):
        raise ConfigError(key, value, allowed)
    too_low = minimum is not None and (number <= minimum if low_open else number < minimum)
    too_high = maximum is not None and (number >= maximum if high_open else number > maximum)
    if too_low or too_high:
        raise ConfigError(key, value, allowed)
    return number


def probability(key: str, value: object, *, optional: bool = False, none_means: str = "") -> float:
    """A probability strictly between 0 and 1 (a decision threshold, a dropout rate)."""
    return real(
        key,
        value,
        minimum=0.0,
        maximum=1.0,
        low_open=True,
        high_open=True,
        optional=optional,
        none_means=none_means,
    )


def flag(key: str, value: object) -> bool:
    """``value`` if it is a boolean (YAML ``true``/``false``); anything else is refused."""
    if not isinstance(value, bool):
        raise ConfigError(key, value, "true or false")
    return value


def text(key: str, value: object, allowed: str = "a non-empty text") -> str:
    """``value`` if it is a non-empty string."""
    if not isinstance(value, str) or not value:
        raise ConfigError(key, value, allowed)
    return value


def names(key: str, value: object) -> list[str] | None:
    """A list of column names: ``None`` stays, one string becomes a list, duplicates are refused."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, bool | Real) or not isinstance(value, Iterable):
        raise ConfigError(key, value, "a list of column names")
    listed = [str(v) for v in value]
    duplicates = sorted({n for n in listed if listed.count(n) > 1})
    if duplicates:
        raise ConfigError(key, duplicates, "each column at most once")
    return listed
