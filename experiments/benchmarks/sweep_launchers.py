"""(i) A 100-job sweep on this machine: hydra's joblib launcher against the basic launcher.

Runs the same synthetic sweep (``debug=smoke``: 100 rows, 2 rounds, 1 repetition; ``seed=0..99``)
through the real command line, side by side, with each launcher's defaults: the basic launcher
(jobs one after another in one process, ``processes=auto`` = 2 per job), the basic launcher with
``processes=1``, and joblib with two jobs at once (``processes=auto`` = 1 per job). Each sweep is
then launched a second time with the same command: every job is done, so every job is skipped
(what a re-launch after a crash costs for the finished part). Per-job times come from the jobs'
manifests (``started``/``finished``, whole seconds).

From the measured per-job times of the reference grid's jobs (``synthetic_grid.csv``,
``credit_run.csv`` in ``results/``), it also writes a plan on paper: how long the reference
study's grids take on N SLURM nodes, one job per node at a time with the example launcher
(``hydra/launcher=slurm``: 2 CPUs per job).

    python experiments/benchmarks/sweep_launchers.py            # 100 jobs per launcher (minutes)
    python experiments/benchmarks/sweep_launchers.py --quick    # 10 jobs per launcher
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import statistics
import tempfile
from pathlib import Path

from common import RESULTS_DIR, parser, results_name, run_cli, write_results

VARIANTS = {  # name: (directory, launcher overrides)
    "basic (processes=auto: 2)": ("basic", []),
    "basic, processes=1": ("basic_p1", ["processes=1"]),
    "joblib n_jobs=2 (processes=auto: 1)": (
        "joblib",
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    ),
}


def per_job_seconds(sweep_dir: Path) -> list[float]:
    """Each finished job's duration from its manifest (whole seconds; started to finished)."""
    times = []
    for manifest in sweep_dir.glob("*/manifest.json"):
        record = json.loads(manifest.read_text())
        if record.get("status") == "finished":
            started = dt.datetime.fromisoformat(record["started"])
            finished = dt.datetime.fromisoformat(record["finished"])
            times.append((finished - started).total_seconds())
    return times


def sweep_rows(n_jobs: int, out: Path) -> list[dict[str, object]]:
    rows = []
    seeds = f"seed=range(0,{n_jobs})"
    for name, (directory, launcher) in VARIANTS.items():
        sweep_dir = out / directory
        base = ["-m", *launcher, "debug=smoke", seeds, "progress=false"]
        first = run_cli([*base, f"hydra.sweep.dir={sweep_dir}"], label=name)
        jobs = per_job_seconds(sweep_dir)
        with open(sweep_dir / "jobs.csv") as handle:
            states = [row["state"] for row in csv.DictReader(handle)]
        if len(states) != n_jobs or set(states) != {"done"}:
            raise SystemExit(f"{name}: expected {n_jobs} done jobs, found {states}")
        again = run_cli([*base, f"hydra.sweep.dir={sweep_dir}"], label=f"{name} (re-launch)")
        rows.append(
            {
                "launcher": name,
                "jobs": n_jobs,
                "wall_s": first["wall_s"],
                "cpu_s": first["cpu_s"],
                "per_job_median_s": statistics.median(jobs),
                "relaunch_all_skipped_s": again["wall_s"],
                "peak_rss_mib": first["peak_rss_mib"],
                "load_1m_before": first["load_1m_before"],
                "load_1m_after": again["load_1m_after"],
            }
        )
        print(rows[-1], flush=True)
    baseline = float(rows[0]["wall_s"])
    for row in rows:
        row["speed_up_vs_basic"] = round(baseline / float(row["wall_s"]), 2)
    return rows


def _measured(name: str, key: str, value: str, column: str = "wall_s") -> float | None:
    path = RESULTS_DIR / f"{name}.csv"
    if not path.is_file():
        return None
    with open(path) as handle:
        for row in csv.DictReader(handle):
            if row.get(key) == value:
                return float(row[column])
    return None


def plan_rows() -> tuple[list[dict[str, object]], list[str]]:
    """The reference grids on N SLURM nodes, from the per-job times measured here."""
    synthetic = [
        _measured("synthetic_grid", "data", data)
        for data in ("overlapping", "linearly_separable", "circles", "moons")
    ]
    credit = _measured("credit_run", "run", "defaults")
    notes = []
    grids = []
    if all(t is not None for t in synthetic):
        grids.append(
            (
                "synthetic grid (4 data sets x 5 seeds; 60 systems per job)",
                [t for t in synthetic for _ in range(5)],
            )
        )
    if credit is not None:
        grids.append(("credit preset (5 seeds; 10 systems per job)", [credit] * 5))
    rows = []
    for label, jobs in grids:
        longest = max(jobs)
        for nodes in (1, 4, 16, 64):
            # Longest-processing-time-first on `nodes` machines, one job each at a time.
            load = [0.0] * nodes
            for t in sorted(jobs, reverse=True):
                load[load.index(min(load))] += t
            rows.append(
                {
                    "grid": label,
                    "jobs": len(jobs),
                    "nodes": nodes,
                    "estimated_min": round(max(load) / 60, 1),
                    "lower_bound_min": round(max(longest, sum(jobs) / nodes) / 60, 1),
                }
            )
    notes.append(
        "Plan on paper, not measured on a cluster: per-job wall times from "
        "`results/synthetic_grid.csv` (one job per synthetic data set, 2 processes) and "
        "`results/credit_run.csv` (the credit preset's defaults), measured on 2026-11-25 on "
        "this project's 2-core machine when it was an Intel Xeon (their .md files say so; the "
        "sweeps above ran on an AMD EPYC that the README measures as slower); each grid is run "
        "for 5 seeds; nodes like this machine run one job at a time "
        "with 2 CPUs (`hydra/launcher=slurm`, cpus_per_task=2), jobs scheduled longest first. "
        "Queueing and interpreter start-up on the nodes are not included. The real-world grid "
        "(`+experiment=paper_real_world`) is left out: no full run exists to time (one round "
        "with an evaluation took over 10 minutes here; see experiments/README.md). With as many "
        "nodes as jobs every job runs at once and the longest job is the bound."
    )
    return rows, notes


def main() -> None:
    opts = parser(__doc__.split("\n\n")[0]).parse_args()
    n_jobs = 10 if opts.quick else 100
    with tempfile.TemporaryDirectory(prefix="recourse_sweeps_") as out:
        rows = sweep_rows(n_jobs, Path(out))
    plan, plan_notes = plan_rows()
    joblib = rows[-1]
    write_results(
        results_name("sweep_launchers", opts.quick),
        rows,
        title=f"(i) A {n_jobs}-job sweep: joblib launcher against the basic launcher",
        notes=[
            f"Each row is one sweep through the CLI: `python -m recourse_sim -m [launcher] "
            f"debug=smoke seed=range(0,{n_jobs}) progress=false hydra.sweep.dir=DIR`, then the "
            "same command again (`relaunch_all_skipped_s`: every job is done and skipped; the "
            "sweep is collected again). `wall_s` includes interpreter start, every job, and "
            "collecting the sweep (summary tables and the report without figures); `cpu_s` "
            "is user + system time of the launcher and all its child processes; "
            "`per_job_median_s` is the median of the jobs' manifest times (whole seconds). "
            "The sweeps run one after another on the same machine.",
            f"joblib with two jobs at once took {joblib['wall_s']} s against "
            f"{rows[0]['wall_s']} s for the basic launcher with its defaults "
            f"(speed-up {joblib['speed_up_vs_basic']}x) and {rows[1]['wall_s']} s for the "
            "basic launcher with `processes=1`.",
            *plan_notes,
        ],
        extra_tables=[("Plan: the reference grids on N SLURM nodes", plan)],
    )


if __name__ == "__main__":
    main()
