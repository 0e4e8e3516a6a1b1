"""(a) The reference study's full main synthetic grid through the real command line.

4 data sets (overlapping, linearly_separable, circles, moons) x 3 models (logistic, mlp,
deep_ensemble) x 4 generators (generic, greedy, revise, dice) x 5 repetitions x 50 rounds, metrics
every 10 rounds with 100 permutations, i.e. 240 systems: one ``python -m recourse_sim`` job per
data set, run one after another, each with the defaults of the configuration tree (report
included). Records wall time per data set and in total, CPU time, and each job's peak resident
memory (``/usr/bin/time -v`` where present, else ``getrusage(RUSAGE_CHILDREN)``).

Target (2-core CPU): the whole grid in under 10 minutes.

    python experiments/benchmarks/synthetic_grid.py            # the full grid (minutes)
    python experiments/benchmarks/synthetic_grid.py --quick    # 2 rounds, 1 repetition
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from common import load_1m, parser, results_name, run_cli, write_results

DATASETS = ("overlapping", "linearly_separable", "circles", "moons")
MODELS = "[logistic,mlp,deep_ensemble]"
GENERATORS = "[generic,greedy,revise,dice]"

# The smoke-test version: few rounds, one repetition, short pre-training (not the faithful grid).
QUICK_OVERRIDES = [
    "simulation.n_rounds=2",
    "simulation.n_repetitions=1",
    "simulation.evaluate_every=1",
    "simulation.n_permutations=10",
    "model.logistic.pretrain.epochs=5",
    "model.mlp.pretrain.epochs=5",
    "model.deep_ensemble.pretrain.epochs=5",
    "generator.revise.vae.epochs=5",
    "report=none",
]


def overrides(dataset: str, run_dir: Path, quick: bool) -> list[str]:
    """The job of one data set, exactly as a user would type it after ``python -m recourse_sim``."""
    args = [
        f"data={dataset}",
        f"model={MODELS}",
        f"generator={GENERATORS}",
        f"hydra.run.dir={run_dir}",
        "progress=false",
    ]
    return args + (QUICK_OVERRIDES if quick else [])


def run_job(dataset: str, run_dir: Path, quick: bool) -> dict[str, object]:
    """Run one data set's job, return its timings and memory."""
    row: dict[str, object] = {"data": dataset, "systems": 3 * 4 * (1 if quick else 5)}
    row.update(run_cli(overrides(dataset, run_dir, quick), label=dataset))
    row["rounds_written"] = _rounds_written(run_dir)
    print(f"{dataset}: {row}", flush=True)
    return row


def _rounds_written(run_dir: Path) -> int:
    """The last round in the job's metrics.csv (a check that the whole job ran)."""
    import pandas as pd

    return int(pd.read_csv(run_dir / "metrics.csv")["round"].max())


def main() -> None:
    args = parser(__doc__.split("\n\n")[0])
    args.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="where the jobs write their run directories (default: a temporary folder, removed)",
    )
    args.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    opts = args.parse_args()
    out = opts.output_dir or Path(tempfile.mkdtemp(prefix="recourse_grid_"))
    rows = []
    total_start = time.perf_counter()
    for dataset in opts.datasets:
        run_dir = out / dataset
        if run_dir.exists():
            shutil.rmtree(run_dir)
        rows.append(run_job(dataset, run_dir, opts.quick))
    total_wall = time.perf_counter() - total_start
    rows.append(
        {
            "data": "total",
            "systems": sum(int(r["systems"]) for r in rows),
            "wall_s": round(total_wall, 1),
            "cpu_s": round(sum(float(r["cpu_s"]) for r in rows), 1),
            "peak_rss_mib": max(float(r["peak_rss_mib"]) for r in rows),
            "rss_source": rows[0]["rss_source"],
            "load_1m_before": rows[0]["load_1m_before"],
            "load_1m_after": load_1m(),
            "rounds_written": min(int(r["rounds_written"]) for r in rows),
        }
    )
    if opts.output_dir is None:
        shutil.rmtree(out, ignore_errors=True)
    full = len(opts.datasets) == len(DATASETS) and not opts.quick
    minutes = total_wall / 60
    notes = [
        "Each data set is one job: `python -m recourse_sim data=DATA "
        f"model={MODELS} generator={GENERATORS} hydra.run.dir=DIR progress=false`"
        + (" " + " ".join(QUICK_OVERRIDES) if opts.quick else "")
        + ". Jobs run one after another; every job uses the configuration defaults "
        "(1,000 points, 800 training rows, 50 rounds x 5 repetitions, K = 5, 5 % recourse, "
        "batch-1 retraining for 10 epochs, metrics every 10 rounds with 100 permutations, "
        "report with figures) unless listed. `wall_s` includes interpreter start, pre-training, "
        "the report and writing the outputs; `cpu_s` is user + system time of the job and its "
        "worker process (`processes=2`, the default); `peak_rss_mib` is the largest process's "
        "maximum resident set size. `load_1m_*` is the 1-minute load average before and after the "
        "job (the job itself adds up to 2).",
    ]
    if opts.quick:
        notes.append("Smoke-test version (`--quick`): not the faithful grid, no target applies.")
    elif full:
        verdict = "met" if minutes < 10 else f"missed by {minutes - 10:.1f} min"
        notes.append(
            f"Target: the full grid in under 10 minutes. Measured {minutes:.1f} min: {verdict}."
        )
    write_results(
        results_name("synthetic_grid", opts.quick),
        rows,
        title="(a) Full synthetic grid of the reference study through the CLI"
        + (" (quick)" if opts.quick else ""),
        notes=notes,
    )


if __name__ == "__main__":
    main()
