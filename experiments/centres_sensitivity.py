"""How much the overlapping-data results depend on where the two class centres lie.

Usage: python experiments/centres_sensitivity.py experiments/results/centres

Reads ``paper_seed{0..4}`` (the default centres: the class means of the reference study's own
points) and ``random_seed{0..4}`` (both centres drawn uniformly from [-2, 2]²,
``data.centers=null``) under that directory and prints, per model and metric of the generic
generator at the final round, the mean over seeds of the per-run means with the [min, max] range
over seeds, plus the distance between the two classes' means in each run's initial data.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from summarise import to_markdown  # this folder's table printer

METRICS = ("mmd_domain", "mmd_model_grid", "disagreement", "decisiveness", "f1_change")


def run_means(run_dir: Path) -> pd.Series:
    """Final-round mean over repetitions per (model, metric) for the generic generator."""
    metrics = pd.read_csv(run_dir / "metrics.csv")
    last = metrics[(metrics["round"] == metrics["round"].max()) & (metrics.generator == "generic")]
    return last.groupby(["model", "metric"])["value"].mean()


def centre_distance(run_dir: Path) -> float:
    """Distance between the class means of the run's initial training population."""
    population = pd.read_csv(run_dir / "initial_population.csv")
    means = population.groupby("label")[["x1", "x2"]].mean().to_numpy()
    return float(np.linalg.norm(means[1] - means[0]))


def summary(root: Path) -> pd.DataFrame:
    rows = []
    for kind in ("paper", "random"):
        runs = sorted(root.glob(f"{kind}_seed*"))
        means = pd.concat([run_means(r) for r in runs], axis=1)
        distances = [centre_distance(r) for r in runs]
        for (model, metric), values in means.iterrows():
            if metric not in METRICS:
                continue
            rows.append(
                {
                    "centres": "paper (reference data's class means)"
                    if kind == "paper"
                    else "random",
                    "model": model,
                    "metric": metric,
                    "seeds": len(runs),
                    "mean [min, max] over seeds": (
                        f"{values.mean():.4f} [{values.min():.4f}, {values.max():.4f}]"
                    ),
                    "class distance [min, max]": f"[{min(distances):.2f}, {max(distances):.2f}]",
                }
            )
    frame = pd.DataFrame(rows)
    order = {m: i for i, m in enumerate(METRICS)}
    return frame.sort_values(
        ["model", "metric", "centres"], key=lambda c: c.map(order) if c.name == "metric" else c
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path)
    print(to_markdown(summary(parser.parse_args().root).set_index(["model", "metric"])))


if __name__ == "__main__":
    main()
