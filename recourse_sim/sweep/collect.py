"""Collect a sweep: merge every job's results, write the sweep report, list what is left to run.

``python -m recourse_sim.collect SWEEP_DIR`` (and the sweep callback at the end of every ``-m``
run) writes into the sweep directory:

* ``summary.csv``: one row per job, system and metric at the job's final round (mean, sd and
  mean p-value over repetitions), with the swept choices as columns;
* ``sweep_metrics.csv``: every job's ``metrics.csv`` rows in one long table, with the swept
  choices as columns;
* ``jobs.csv``: every planned or found job with its state, why, its overrides and the command
  that runs it alone;
* ``shift_report.html`` / ``.md`` (unless switched off), with a section on unfinished jobs.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from recourse_sim.report.files import override_strings
from recourse_sim.sweep.jobs import MULTIRUN_FILE, JobState, hydra_quoted, sweep_jobs

JOBS_FILE = "jobs.csv"


@dataclass
class Collection:
    """What :func:`collect` found and wrote.

    Attributes:
        sweep_dir: The sweep directory.
        jobs: Every job with its state.
        report: ``shift_report.html``, or None when no HTML was written.
        rerun: The command that re-launches the whole sweep (done jobs are skipped).
    """

    sweep_dir: Path
    jobs: list[JobState] = field(default_factory=list)
    report: Path | None = None
    rerun: str = ""

    def by_state(self, state: str) -> list[JobState]:
        """The jobs in ``state``."""
        return [job for job in self.jobs if job.state == state]

    @property
    def complete(self) -> bool:
        """Whether every job is done."""
        return all(job.state == "done" for job in self.jobs)

    def lines(self, shown: int = 20) -> list[str]:
        """A plain-text account: counts per state, then each job that is not done."""
        counts = {}
        for job in self.jobs:
            counts[job.state] = counts.get(job.state, 0) + 1
        told = ", ".join(f"{n} {state}" for state, n in counts.items()) or "no jobs"
        noun = "job" if len(self.jobs) == 1 else "jobs"
        lines = [f"{len(self.jobs)} {noun} in {self.sweep_dir}: {told}"]
        pending = [job for job in self.jobs if job.state != "done"]
        for job in pending[:shown]:
            why = f": {job.detail}" if job.detail else ""
            lines.append(f"  {job.state} {job.name}{why}")
            lines.append(f"    run alone: {job.command()}")
        if len(pending) > shown:
            lines.append(f"  ... and {len(pending) - shown} more (all in {JOBS_FILE})")
        if pending and self.rerun:
            lines.append(f"re-launch the sweep (finished jobs are skipped): {self.rerun}")
        return lines


def rerun_command(sweep_dir: Path, program: str = "python -m recourse_sim") -> str:
    """The command that re-launches the sweep of ``multirun.yaml`` into the same directory."""
    multirun = None
    path = sweep_dir / MULTIRUN_FILE
    if path.is_file():
        try:
            multirun = OmegaConf.load(path)
        except Exception:
            multirun = None
    if multirun is None:
        return ""
    task = override_strings(OmegaConf.select(multirun, "hydra.overrides.task", default=None))
    hydra = [
        o
        for o in override_strings(OmegaConf.select(multirun, "hydra.overrides.hydra", default=None))
        if not o.startswith(("hydra.mode=", "hydra.sweep.dir="))
    ]
    words = [*task, *hydra, f"hydra.sweep.dir={hydra_quoted(str(sweep_dir.resolve()))}"]
    return " ".join([program, "-m", *(shlex.quote(w) for w in words)])


def jobs_frame(jobs: list[JobState]) -> pd.DataFrame:
    """``jobs.csv``: one row per job."""
    return pd.DataFrame(
        {
            "job": [job.name for job in jobs],
            "state": [job.state for job in jobs],
            "detail": [job.detail for job in jobs],
            "exit_status": pd.array([job.exit_status for job in jobs], dtype="Int64"),
            "overrides": [" ".join(job.overrides) for job in jobs],
            "command": [job.command() for job in jobs],
        },
        columns=["job", "state", "detail", "exit_status", "overrides", "command"],
    )


def collect(sweep_dir: str | Path, html: bool = True, figures: bool = True) -> Collection:
    """Merge a sweep's results, write its report (``html``) and list its jobs' states.

    Raises:
        ReportError: If ``sweep_dir`` is not a sweep directory.
    """
    from recourse_sim.report import build_sweep_report

    sweep_dir = Path(sweep_dir)
    jobs = sweep_jobs(sweep_dir)
    report = build_sweep_report(sweep_dir, figures=figures, html=html, states=jobs)
    jobs_frame(jobs).to_csv(sweep_dir / JOBS_FILE, index=False)
    return Collection(sweep_dir, jobs, report if html else None, rerun_command(sweep_dir))
