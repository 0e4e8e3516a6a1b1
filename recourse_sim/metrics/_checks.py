"""The one constructor check of the metrics that :mod:`recourse_sim.checks` does not hold.

Counts, length-scales and flags use the shared checkers (``checks.integer``, ``checks.real``,
``checks.flag``); this module only names the two definitions that some metrics offer.
"""

from __future__ import annotations

from recourse_sim.checks import check_choice

#: The definitions of decisiveness and perturbation: the reference code's and the paper's.
FORMS = ("code", "paper")


def check_form(key: str, value: object) -> str:
    """Return ``value`` if it names one of the two definitions, ``code`` or ``paper``."""
    check_choice(key, value, FORMS)
    return str(value)
