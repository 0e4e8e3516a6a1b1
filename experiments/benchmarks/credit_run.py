"""(f) The main job, ``+experiment=credit`` with its defaults, and what its report costs.

Runs the README's main job through the real command line, as a user would, three times side by
side: with its defaults (two processes, report included), without the report (``report=none``),
and in one process (``processes=1``). It then rebuilds the first run's report alone
(``python -m recourse_sim.report DIR``), which isolates the report's cost from run-to-run noise.

Targets (2-core CPU): the default run in under 2 minutes (performance issue); report generation
under 10 % of the run (shift-report issue).

    python experiments/benchmarks/credit_run.py            # three full runs (minutes)
    python experiments/benchmarks/credit_run.py --quick    # 5 rounds, 2 repetitions
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from common import REPO_ROOT, load_1m, parser, results_name, run_cli, write_results

QUICK_OVERRIDES = ["simulation.n_rounds=5", "simulation.n_repetitions=2"]
VARIANTS = {  # name: overrides on top of +experiment=credit
    "defaults": [],
    "no report": ["report=none"],
    "one process": ["processes=1"],
}


def rebuild_report(run_dir: Path) -> float:
    """Wall time of ``python -m recourse_sim.report RUN_DIR`` (interpreter start included)."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "recourse_sim.report", str(run_dir)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"report rebuild failed with exit status {proc.returncode}")
    return time.perf_counter() - start


def main() -> None:
    args = parser(__doc__.split("\n\n")[0])
    opts = args.parse_args()
    out = Path(tempfile.mkdtemp(prefix="recourse_credit_"))
    rows = []
    for name, extra in VARIANTS.items():
        run_dir = out / name.replace(" ", "_")
        overrides = ["+experiment=credit", f"hydra.run.dir={run_dir}", "progress=false", *extra]
        row: dict[str, object] = {"run": name, "overrides": " ".join(extra) or "(none)"}
        row.update(run_cli(overrides + (QUICK_OVERRIDES if opts.quick else []), label=name))
        metrics = pd.read_csv(run_dir / "metrics.csv")
        row["rounds_written"] = int(metrics["round"].max())
        row["report_written"] = "yes" if (run_dir / "report.html").exists() else "no"
        print(row, flush=True)
        rows.append(row)
    load_before = load_1m()
    report_s = rebuild_report(out / "defaults")
    shutil.rmtree(out, ignore_errors=True)

    by_run = {r["run"]: r for r in rows}
    wall = float(by_run["defaults"]["wall_s"])
    without = float(by_run["no report"]["wall_s"])
    single = float(by_run["one process"]["wall_s"])
    report_share = report_s / without
    report_rows = [
        {
            "report_rebuild_s": round(report_s, 1),
            "run_without_report_s": without,
            "report_share_of_run": f"{100 * report_share:.1f} %",
            "difference_with_minus_without_s": round(wall - without, 1),
            "load_1m_before": load_before,
        }
    ]
    notes = [
        "`wall_s` includes interpreter start, data loading, pre-training, 50 rounds x 5 "
        "repetitions of generic and Wachter recourse on the real-world MLP preset (10 systems, "
        "per-sample retraining of 2,000 rows for 10 epochs a round), the evaluations every 10 "
        "rounds with 100 permutations and, unless `report=none`, the report. `cpu_s` is the "
        "CPU time of the job and its worker process; `peak_rss_mib` is the largest single "
        "process's peak. The report's cost is measured by rebuilding the default run's report "
        "on its own (`report_rebuild_s`, interpreter start and imports included, so an upper "
        "bound); the difference between the runs with and without report is shown too but "
        "mixes in run-to-run noise.",
        f"The second process saves {single - wall:.0f} s ({single:.0f} s in one process).",
    ]
    if opts.quick:
        notes.append(
            "Smoke-test version (`--quick`): " + " ".join(QUICK_OVERRIDES) + "; no target applies."
        )
    else:
        run_verdict = "met" if wall < 120 else f"missed by {wall - 120:.0f} s"
        report_verdict = "met" if report_share < 0.10 else "missed"
        notes.append(
            f"Targets: the default run in under 2 minutes: {wall:.0f} s, {run_verdict}; the report "
            f"under 10 % of the run: {100 * report_share:.1f} %, {report_verdict}."
        )
    write_results(
        results_name("credit_run", opts.quick),
        rows,
        title="(f) `python -m recourse_sim +experiment=credit`: wall time and report cost"
        + (" (quick)" if opts.quick else ""),
        notes=notes,
        extra_tables=[("Report cost", report_rows)],
    )


if __name__ == "__main__":
    main()
