"""Summarise sweeps of time-based dynamics: reliability, time to recourse, threshold, population.

Usage:
    python experiments/over_time.py SWEEP_DIR [--by dynamics.adaptation dynamics.arrivals.per_round]
    python experiments/over_time.py SWEEP_DIR --shift [--by dynamics.delay dynamics.compliance]

SWEEP_DIR is a hydra sweep directory (``-m``; the jobs' CSVs may be gzipped); each job's swept
values are read from its ``.hydra/overrides.yaml``. Per swept cell and system the table gives,
over repetitions and rounds 1..T: the mean reliability (rounds without anybody to count are left
out, and counted), the mean time to recourse of the agents that reached recourse after a
rejection (per agent, from ``agents.csv``; without it, the mean of the per-round means), the
mean per-round effort of those agents, the total failures per repetition, the threshold and the
active agents at the last round, and the share of agents ever favourable (``agents.csv``).
``--shift`` adds the final round's shift metrics (mean ± sd over repetitions).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import yaml
from summarise import to_markdown  # this folder's table printer


def _overrides(job: Path) -> dict[str, str]:
    entries = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) or []
    pairs = (str(e).split("=", 1) for e in entries if "=" in str(e))
    return {key: yaml.safe_load(value) for key, value in pairs}  # numbers sort as numbers


def _jobs(sweep: Path) -> list[Path]:
    return sorted({p.parent for p in sweep.glob("*/metrics.csv*")}, key=lambda p: p.name)


def _table(job: Path, name: str) -> pd.DataFrame | None:
    """A job's CSV, plain or gzipped (the committed results are gzipped)."""
    for path in (job / name, job / f"{name}.gz"):
        if path.exists():
            return pd.read_csv(path)
    return None


def summarise(sweep: Path, by: list[str], shift: bool) -> pd.DataFrame:
    """One row per swept cell and system."""
    rows = []
    for job in _jobs(sweep):
        cell = {key: _overrides(job).get(key, "") for key in by}
        metrics = _table(job, "metrics.csv")
        agents = _table(job, "agents.csv")
        last = metrics["round"].max()
        for (model, generator), frame in metrics.groupby(["model", "generator"]):
            dyn = frame[frame.scope == "dynamics"]
            later = dyn[dyn["round"] > 0]

            def values(name: str, rounds: pd.DataFrame = later) -> pd.Series:
                return rounds[rounds.metric == name].value

            reliability = values("reliability")
            n_reps = frame.repetition.nunique()
            row = {
                **cell,
                "model": model,
                "generator": generator,
                "reliability": round(reliability.mean(), 3),
                "rounds without reliability": f"{int(reliability.isna().sum())}/{len(reliability)}",
                "time to recourse": round(values("time_to_recourse").mean(), 2),
                "effort": round(values("effort_to_recourse").mean(), 2),
                "failures per repetition": round(values("n_failures").sum() / n_reps, 1),
                "final threshold": round(values("threshold", dyn[dyn["round"] == last]).mean(), 3),
                "final active": round(values("n_active", dyn[dyn["round"] == last]).mean(), 1),
            }
            if agents is not None:
                mine = agents[(agents.model == model) & (agents.generator == generator)]
                # Per agent, not per round: without arrivals every agent entered at round 0, so
                # a per-round mean of time to recourse is just the mean round number.
                waited = (mine.favourable_round - mine.entered_round).dropna()
                row["time to recourse"] = round(waited[waited > 0].mean(), 2)
                row["ever favourable"] = round(mine.favourable_round.notna().mean(), 3)
            if shift:
                final = frame[(frame.scope != "dynamics") & (frame["round"] == last)]
                for metric, values_ in final.groupby("metric").value:
                    row[metric] = f"{values_.mean():.4f} ± {values_.std():.4f}"
            rows.append(row)
    return pd.DataFrame(rows).sort_values([*by, "model", "generator"]).reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument(
        "--by", nargs="+", default=["dynamics.adaptation", "dynamics.arrivals.per_round"]
    )
    parser.add_argument("--shift", action="store_true", help="add the final shift metrics")
    args = parser.parse_args()
    print(to_markdown(summarise(args.sweep, args.by, args.shift).set_index(args.by)))


if __name__ == "__main__":
    main()
