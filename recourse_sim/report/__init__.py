"""Shift reports: HTML and Markdown summaries of a run or a sweep, rebuilt from its files.

``build_run_report(run_dir)`` writes ``report.html`` and ``report.md`` into a run directory;
``build_sweep_report(sweep_dir)`` writes ``summary.csv``, ``sweep_metrics.csv`` and
``shift_report.html`` comparing the jobs of a hydra multirun; ``build_report(path)`` picks the
right one. From the shell:
``python -m recourse_sim.report PATH [PATH...]``.

The heavy imports (pandas, matplotlib, seaborn) happen on the first call, so importing this
package (as hydra does for the sweep callback) stays cheap.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ReportError", "build_report", "build_run_report", "build_sweep_report", "headline"]


class ReportError(Exception):
    """A directory that cannot be reported on (neither a run nor a sweep, or empty)."""


def build_run_report(run_dir: str | Path, figures: bool = True, register=None) -> Path:
    """Write ``report.html`` and ``report.md`` of a run directory; returns the HTML path.

    See :func:`recourse_sim.report.build.build_run_report`.
    """
    from recourse_sim.report.build import build_run_report as build

    return build(run_dir, figures, register)


def build_sweep_report(
    sweep_dir: str | Path, figures: bool = True, jobs: bool = False, html: bool = True, states=None
) -> Path | None:
    """Write a sweep's tables and ``shift_report.html``; returns the HTML path (None: no HTML).

    See :func:`recourse_sim.report.build.build_sweep_report`.
    """
    from recourse_sim.report.build import build_sweep_report as build

    return build(sweep_dir, figures, jobs, html, states)


def build_report(path: str | Path, figures: bool = True, jobs: bool = False) -> Path:
    """Build the report of a run or a sweep directory, whichever ``path`` is.

    See :func:`recourse_sim.report.build.build_report`.
    """
    from recourse_sim.report.build import build_report as build

    return build(path, figures, jobs)


def headline(run_dir: str | Path, n: int = 3) -> list[str]:
    """The first ``n`` sentences of a run report's "Largest shifts".

    See :func:`recourse_sim.report.build.headline`.
    """
    from recourse_sim.report.build import headline as sentences

    return sentences(run_dir, n)
