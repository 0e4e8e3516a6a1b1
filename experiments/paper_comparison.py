"""Set the final-round results of the paper presets beside the published figures' cells.

Usage:
    python experiments/paper_comparison.py synthetic RUN_DIR [RUN_DIR ...]
    python experiments/paper_comparison.py real_world RUN_DIR [RUN_DIR ...]

Each RUN_DIR is one run of ``+experiment=paper_synthetic`` (overlapping data) or
``+experiment=paper_real_world`` (credit data), typically one per seed. For every cell the table
shows the paper's value, this project's mean ± sd over the 5 repetitions of the first run, and,
with several runs, the mean and the [min, max] range of the per-run means over the runs (seeds).

The paper's values are read by eye off the published figures of Altmeyer et al., "Endogenous
Macrodynamics in Algorithmic Recourse" (IEEE SaTML 2023), camera-ready files in
pat-alt/endogenous-macrodynamics-in-algorithmic-recourse@a3bd055 (``paper/www/*.png``):
Fig. 3 (``synthetic_results.png``, overlapping data, model MMD on a 1,000-point grid) and
Fig. 4 (``real_world_results.png``, deep ensemble, model MMD on samples). Reading precision is
about half a minor grid step: ±0.003 for the MMDs, ±0.01 for disagreement and performance, ±0.03
for decisiveness.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from summarise import to_markdown  # this folder's table printer

GENERATORS = ("generic", "greedy", "revise", "dice")
#: Paper figure labels of the project's generator options.
PAPER_NAMES = {"generic": "Generic", "greedy": "Greedy", "revise": "Latent", "dice": "DICE"}
#: The paper's panel rows and this project's metric names.
SYNTHETIC_METRICS = {
    "mmd_domain": "MMD (domain)",
    "mmd_model_grid": "MMD (model), grid",
    "f1_change": "Performance (F1 change)",
    "disagreement": "Disagreement",
    "decisiveness": "Decisiveness",
}
REAL_WORLD_METRICS = {
    "mmd_domain": "MMD (domain)",
    "mmd_model": "MMD (model), samples",
    "f1_change": "Performance (F1 change)",
}

# Fig. 3, overlapping data: {model: {metric: (generic, greedy, revise, dice)}}.
FIG3 = {
    "logistic": {
        "mmd_domain": (0.120, 0.109, 0.120, 0.120),
        "mmd_model_grid": (0.063, 0.046, 0.026, 0.061),
        "f1_change": (-0.225, -0.16, -0.082, -0.22),
        "disagreement": (0.238, 0.203, 0.121, 0.237),
        "decisiveness": (0.33, 0.42, 0.72, 0.34),
    },
    "mlp": {
        "mmd_domain": (0.114, 0.096, 0.116, 0.113),
        "mmd_model_grid": (0.029, 0.039, 0.017, 0.029),
        "f1_change": (-0.070, -0.087, -0.050, -0.073),
        "disagreement": (0.150, 0.163, 0.133, 0.153),
        "decisiveness": (1.12, 0.97, 0.79, 1.06),
    },
    "deep_ensemble": {
        "mmd_domain": (0.117, 0.097, 0.116, 0.118),
        "mmd_model_grid": (0.025, 0.037, 0.015, 0.019),
        "f1_change": (-0.075, -0.091, -0.058, -0.073),
        "disagreement": (0.145, 0.162, 0.128, 0.142),
        "decisiveness": (1.17, 1.05, 0.81, 1.17),
    },
}
# Fig. 4, Credit Default, deep ensemble only.
FIG4 = {
    "deep_ensemble_real_world": {
        "mmd_domain": (-0.0003, -0.0003, 0.0035, -0.0003),
        "mmd_model": (0.52, 0.525, 0.43, 0.51),
        "f1_change": (-0.317, -0.328, -0.30, -0.315),
    }
}


def final_means(run_dir: Path) -> pd.DataFrame:
    """Per model, generator and metric: mean and sd over repetitions at the last round."""
    metrics = pd.read_csv(run_dir / "metrics.csv")
    last = metrics[metrics["round"] == metrics["round"].max()]
    return last.groupby(["model", "generator", "metric"])["value"].agg(["mean", "std"])


def comparison(kind: str, run_dirs: list[Path]) -> pd.DataFrame:
    """One row per (model, metric, generator): paper value beside the runs' values."""
    paper, labels = (FIG3, SYNTHETIC_METRICS) if kind == "synthetic" else (FIG4, REAL_WORLD_METRICS)
    runs = [final_means(d) for d in run_dirs]
    rows = []
    for model, cells in paper.items():
        for metric, label in labels.items():
            for generator, published in zip(GENERATORS, cells[metric], strict=True):
                key = (model, generator, metric)
                first = runs[0].loc[key] if key in runs[0].index else None
                means = [r.loc[key, "mean"] for r in runs if key in r.index]
                row = {
                    "model": model,
                    "metric": label,
                    "generator": PAPER_NAMES[generator],
                    "paper": f"{published:g}",
                    "this project (seed 0)": (
                        "–" if first is None else f"{first['mean']:.4f} ± {first['std']:.4f}"
                    ),
                }
                if len(run_dirs) > 1:
                    row[f"mean over {len(means)} seeds [min, max]"] = (
                        f"{pd.Series(means).mean():.4f} [{min(means):.4f}, {max(means):.4f}]"
                        if means
                        else "–"
                    )
                rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["synthetic", "real_world"])
    parser.add_argument("run_dirs", type=Path, nargs="+")
    args = parser.parse_args()
    print(to_markdown(comparison(args.kind, args.run_dirs).set_index(["model", "metric"])))


if __name__ == "__main__":
    main()
