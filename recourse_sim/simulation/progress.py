"""What a run tells its user while it works: phase timings and one log line per evaluation.

The per-evaluation lines go to the logger ``recourse_sim.evaluation``; the command line keeps
them out of the terminal (where the progress bar is) and writes them to the run's log file
(``configs/config.yaml``: ``hydra.job_logging``), so the log holds every headline metric of
every system at every evaluation without flooding the screen.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

evaluation_log = logging.getLogger("recourse_sim.evaluation")

#: The metrics of the per-evaluation log line, in this order (others are left to metrics.csv).
HEADLINE = ("mmd_domain", "mmd_model", "mmd_model_grid", "disagreement", "f1_change")


class Timings:
    """Wall-clock seconds per phase of a run, summed over the times a phase runs."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Add the time spent in the ``with`` block to phase ``name``."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - started

    def describe(self) -> str:
        """``pre-training 3.1 s, rounds 250.4 s (of which evaluation 40.2 s), ...``."""
        return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.seconds.items())


def _value(row: dict) -> str:
    value = row.get("value")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:.4g}"
    p = row.get("p_value")
    if p is not None and not (isinstance(p, float) and math.isnan(p)):
        text += f" (p={p:.2g})"
    return text


def log_evaluation(rows: Sequence[dict], round_number: int) -> None:
    """One log line per system with its headline metrics at this evaluation."""
    if not evaluation_log.isEnabledFor(logging.INFO):
        return
    systems: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for row in rows:
        key = (row["model"], row["generator"], row["repetition"])
        systems[key][row["metric"]] = row
    for (model, generator, repetition), metrics in systems.items():
        shown = [m for m in HEADLINE if m in metrics] or list(metrics)[:4]
        values = ", ".join(f"{m} {_value(metrics[m])}" for m in shown)
        evaluation_log.info(
            "round %d, %s/%s, repetition %d: %s",
            round_number,
            model,
            generator,
            repetition,
            values,
        )


class TerminalFilter(logging.Filter):
    """Keeps the per-evaluation lines out of the terminal (they stay in the log file)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for records of ``recourse_sim.evaluation``."""
        return not record.name.startswith(evaluation_log.name)
