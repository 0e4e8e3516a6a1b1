"""Config keys by kind (``CONVENTIONS.md`` rule 5) and the identity of a sweep's job.

*Result keys* change results; *rounding keys* may change float rounding but not the science;
*presentation keys* change nothing in the CSVs. Fingerprints, resume checks and the directory
name of a sweep's job use result keys only, so re-launching a sweep with another ``processes``
or ``report`` finds the jobs it already ran.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

#: Keys that change results: resume checks, fingerprints and sweep identities use these only.
RESULT_KEYS = ("seed", "data", "model", "generator", "dynamics", "simulation", "metrics")
#: Keys that may change float rounding but not the science.
ROUNDING_KEYS = ("processes", "torch_threads", "device")
#: Keys that change nothing in the CSVs.
PRESENTATION_KEYS = ("report", "progress", "overwrite", "resume", "hydra")

#: Characters kept as they are in a job's directory name (everything else becomes ``_``).
_SAFE = re.compile(r"[^A-Za-z0-9._,=+-]")
#: Longest readable part of a directory name; longer keys are cut and get a hash.
MAX_READABLE = 96
#: The directory name of a job without result-key overrides (the defaults).
DEFAULTS = "defaults"


def override_key(override: str) -> str:
    """The config key an override sets: ``+experiment=credit`` -> ``experiment``."""
    return override.split("=", 1)[0].lstrip("+~").strip()


def is_result_override(override: str) -> bool:
    """Whether an override can change results (anything but rounding and presentation keys).

    Presets (``+experiment=...``, ``debug=...``) count: they set result keys.
    """
    top = re.split(r"[./]", override_key(override), maxsplit=1)[0]
    return top not in ROUNDING_KEYS + PRESENTATION_KEYS


def result_overrides(overrides: Iterable[str]) -> list[str]:
    """The result-key overrides among ``overrides``, sorted (their order changes no job)."""
    return sorted(str(o) for o in overrides if is_result_override(str(o)))


def job_key(overrides: Iterable[str]) -> str:
    """A readable, unique directory name for the job that ``overrides`` describe.

    The result-key overrides, sorted and joined with commas (``generator=generic,seed=0``).
    When characters had to be replaced (``/``, brackets, quotes) or the name is long, it is
    cut and a hash of the full overrides is appended, so two jobs never share a name.
    """
    chosen = result_overrides(overrides)
    if not chosen:
        return DEFAULTS
    canonical = ",".join(chosen)
    readable = _SAFE.sub("_", canonical)
    if readable == canonical and len(readable) <= MAX_READABLE and not readable.startswith("."):
        return readable
    # surrogateescape: a file name in another encoding reaches argv as lone surrogates.
    digest = hashlib.sha256(canonical.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return f"{readable[:MAX_READABLE].lstrip('.')}-{digest}"
