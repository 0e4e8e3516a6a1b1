"""Print a run's metrics by round (mean ± sd over repetitions) as a Markdown table.

Usage: python experiments/summarise.py RUN_DIR [--rounds 0 10 50]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def summarise(run_dir: Path, rounds: list[int] | None = None) -> pd.DataFrame:
    """Mean and standard deviation over repetitions of every metric, per round and system."""
    metrics = pd.read_csv(run_dir / "metrics.csv")
    if rounds:
        metrics = metrics[metrics["round"].isin(rounds)]
    grouped = metrics.groupby(["model", "generator", "metric", "round"])
    table = grouped.agg(
        mean=("value", "mean"), sd=("value", "std"), p_value=("p_value", "mean")
    ).reset_index()
    table["cell"] = table.apply(lambda r: f"{r['mean']:.4f} ± {r['sd']:.4f}", axis=1)
    return table.pivot(index=["model", "generator", "metric"], columns="round", values="cell")


def to_markdown(table: pd.DataFrame) -> str:
    """A Markdown table without extra dependencies."""
    frame = table.reset_index()
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        "| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--rounds", type=int, nargs="*")
    args = parser.parse_args()
    print(to_markdown(summarise(args.run_dir, args.rounds)))


if __name__ == "__main__":
    main()
