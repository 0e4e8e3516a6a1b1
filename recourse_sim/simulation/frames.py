"""Rows and tables of the run's output files, built from the simulation's state.

``recourse.csv`` rows, the initial and final populations (the final one also in the data's
original units), the decision grid, ``agents.csv`` and the time-based rows of ``metrics.csv``; the
recorder writes them.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from recourse_sim.data.encoding import Encoding
from recourse_sim.data.groups import level_name

#: Time-based metrics (scope ``dynamics``) per round and system, in row order.
DYNAMICS_METRICS = (
    "n_active",
    "n_arrivals",
    "n_exits",
    "n_favourable",
    "n_advice",
    "threshold",
    "threshold_drift",
    "reliability",
    "n_failures",
    "time_to_recourse",
    "effort_to_recourse",
    "effort_to_recourse_score",
)
#: Metrics repeated per group (``NAME@LEVEL``) when the data have groups.
GROUP_METRICS = (
    "n_active",
    "n_favourable",
    "reliability",
    "time_to_recourse",
    "effort_to_recourse",
    "effort_to_recourse_score",
)
AGENT_COLUMNS = [
    "repetition",
    "model",
    "generator",
    "agent",
    "group",
    "entered_round",
    "favourable_round",
    "n_advice",
    "n_adaptations",
    "n_failures",
    "effort",
    "initial_score",
    "final_score",
]


def recourse_row(
    system,
    round_number: int,
    n_candidates: int,
    n_chosen: int,
    factual=None,
    implemented=None,
    probabilities=None,
    converged=None,
    n_iterations=None,
    threshold: float = 0.5,
) -> dict:
    """One ``recourse.csv`` row: a system's searches of one round."""
    row = {
        "repetition": system.repetition,
        "round": round_number,
        "model": system.model,
        "generator": system.generator,
        "n_candidates": n_candidates,
        # The control's chosen count too: they were offered nothing, so the rest stays empty.
        "n_chosen": n_chosen,
        "success_rate": np.nan,
        "converged": np.nan,
        "cost": np.nan,
        "redundancy": np.nan,
        "n_iterations": np.nan,
    }
    if factual is not None and len(factual):
        change = (implemented - factual).abs()
        row.update(
            # Share of the K counterfactuals that reach the generator's threshold (CE.jl).
            success_rate=float((probabilities >= threshold).double().mean()),
            converged=float(converged.double().mean()),
            # L2 distance between factual and implemented counterfactual (model space).
            cost=float(change.pow(2).sum(-1).sqrt().mean()),
            # Share of features the implemented counterfactual leaves unchanged.
            redundancy=float((change <= 1e-12).double().mean()),
            n_iterations=float(n_iterations.double().mean()),
        )
    return row


def _mean(values: torch.Tensor) -> float:
    return float(values.double().mean()) if values.numel() else math.nan


def dynamics_rows(
    system,
    round_number: int,
    counts: dict[str, int],
    threshold: float,
    previous_threshold: float,
    crossed: torch.Tensor,
    favourable: torch.Tensor,
    newly: torch.Tensor,
    waited: torch.Tensor,
    effort: torch.Tensor,
    score_gain: torch.Tensor,
    active: torch.Tensor,
    group: torch.Tensor,
    group_levels: tuple[str, ...],
) -> list[dict]:
    """The time-based ``metrics.csv`` rows of one system at one decision.

    ``crossed``: agents that acted and crossed the previous threshold (reliability's
    denominator); ``newly``: agents favourable for the first time after a rejection, with the
    rounds they ``waited``, the ``effort`` they spent and their ``score_gain``. All masks are one
    system's ``(C,)`` rows.
    """

    def summary(mask: torch.Tensor) -> dict[str, float]:
        n_crossed = int((crossed & mask).sum())
        reached = newly & mask
        return {
            "n_active": float((active & mask).sum()),
            "n_favourable": float((favourable & mask).sum()),
            "reliability": (
                float((crossed & favourable & mask).sum()) / n_crossed if n_crossed else math.nan
            ),
            "n_failures": float((crossed & ~favourable & mask).sum()),
            "time_to_recourse": _mean(waited[reached]),
            "effort_to_recourse": _mean(effort[reached]),
            "effort_to_recourse_score": _mean(score_gain[reached]),
        }

    everyone = torch.ones_like(active)
    values = {
        **{name: float(value) for name, value in counts.items()},
        **summary(everyone),
        "threshold": threshold,
        "threshold_drift": (threshold - previous_threshold if round_number > 0 else math.nan),
    }
    if round_number == 0:
        values["reliability"] = math.nan
    rows = [_row(system, round_number, name, values[name]) for name in DYNAMICS_METRICS]
    if group_levels:
        per_group = [summary(group == code) for code in range(len(group_levels))]
        if round_number == 0:
            for entry in per_group:
                entry["reliability"] = math.nan
        for name in GROUP_METRICS:
            for level, entry in zip(group_levels, per_group, strict=True):
                rows.append(_row(system, round_number, f"{name}@{level}", entry[name]))
        ttr = [entry["time_to_recourse"] for entry in per_group]
        etr = [entry["effort_to_recourse"] for entry in per_group]
        rows.append(_row(system, round_number, "time_to_recourse_difference", _gap(ttr, False)))
        rows.append(_row(system, round_number, "effort_to_recourse_ratio", _gap(etr, True)))
    return rows


def _gap(means: list[float], ratio: bool) -> float:
    """Second group over (or minus) the first; with more groups, largest over (minus) smallest."""
    if any(math.isnan(m) for m in means):
        return math.nan
    low, high = (means[0], means[1]) if len(means) == 2 else (min(means), max(means))
    if ratio:
        return high / low if low != 0 else math.nan
    return high - low


def _row(system, round_number: int, metric: str, value: float) -> dict:
    return {
        "repetition": system.repetition,
        "round": round_number,
        "model": system.model,
        "generator": system.generator,
        "metric": metric,
        "scope": "dynamics",
        "value": value,
        "p_value": np.nan,
    }


def population_frame(
    system,
    rows: np.ndarray,
    X: np.ndarray,
    labels: np.ndarray,
    initial_labels: np.ndarray,
    n_recourse: np.ndarray,
    first: np.ndarray,
    last: np.ndarray,
    names: list[str],
) -> pd.DataFrame:
    """One system's ``final_population.csv`` rows (agents that entered, at their features).

    Columns: the :data:`POPULATION_KEYS`, the features, then the :data:`POPULATION_TAIL`.
    """
    frame = pd.DataFrame(X, columns=names)
    frame.insert(0, "individual", rows)
    frame.insert(0, "generator", system.generator)
    frame.insert(0, "model", system.model)
    frame.insert(0, "repetition", system.repetition)
    frame["label"] = labels
    frame["initial_label"] = initial_labels
    frame["n_recourse"] = n_recourse
    frame["first_recourse_round"] = first
    frame["last_recourse_round"] = last
    return frame


#: The columns of ``final_population.csv`` before the features, and after them.
POPULATION_KEYS = ["repetition", "model", "generator", "individual"]
POPULATION_TAIL = [
    "label",
    "initial_label",
    "n_recourse",
    "first_recourse_round",
    "last_recourse_round",
]
#: Prefix of the columns of ``final_population_original.csv`` holding a continuous feature's
#: change in its original units.
DELTA_PREFIX = "delta_"


def original_population_frame(
    population: pd.DataFrame, initial: np.ndarray, encoding: Encoding
) -> pd.DataFrame:
    """``final_population.csv`` in the data's original units, with each individual's changes.

    Args:
        population: The ``final_population.csv`` frame (model space), any number of systems.
        initial: Each of its rows' position when the individual entered (model space).
        encoding: The data's way back to its original units.

    Returns:
        The :data:`POPULATION_KEYS`; the original features at the final position
        (:meth:`Encoding.decode`); the :data:`POPULATION_TAIL`; ``n_changed``, how many original
        features differ from the entry position; ``changes``, those changes as text
        (``"LIMIT_BAL: +20000; EDUCATION: 2 -> 1"``, in the original order; empty for an
        individual who did not move); and per continuous feature ``delta_<feature>``, its
        change in the original units (0 if none).
    """
    d = len(encoding.columns)
    keys, tail = len(POPULATION_KEYS), len(POPULATION_TAIL)
    if population.shape[1] != keys + d + tail:
        raise ValueError(
            f"original_population_frame: {keys + d + tail} columns expected ({d} features), "
            f"got {population.shape[1]}"
        )
    final = population.iloc[:, keys : keys + d].to_numpy(dtype=np.float64)
    before, after = encoding.decode(initial), encoding.decode(final)
    delta = encoding.delta(initial, final)
    moved = []
    for feature in encoding.features:
        if feature in delta.columns:
            change = delta[feature].to_numpy()
            texts = [f"{feature}: {_signed(v)}" for v in change]
            moved.append(np.where(change != 0, np.array(texts, dtype=object), ""))
        else:
            old, new = before[feature].to_numpy(), after[feature].to_numpy()
            pairs = zip(old, new, strict=True)
            texts = [f"{feature}: {level_name(a)} -> {level_name(b)}" for a, b in pairs]
            moved.append(np.where(old != new, np.array(texts, dtype=object), ""))
    changed = np.column_stack(moved) if moved else np.zeros((len(final), 0), dtype=object)
    summary = pd.DataFrame(
        {
            "n_changed": (changed != "").sum(axis=1).astype(np.int64),
            "changes": ["; ".join(t for t in row if t) for row in changed],
        }
    )
    parts = [after, summary, delta.add_prefix(DELTA_PREFIX)]
    for part in parts:
        part.index = population.index
    ids, outcome = population.iloc[:, :keys], population.iloc[:, keys + d :]
    return pd.concat([ids, parts[0], outcome, *parts[1:]], axis=1)


def _signed(value: float) -> str:
    """A change as short signed text: 6 significant digits, integers without ``.0``."""
    short = float(f"{value:.6g}")
    if short.is_integer() and abs(short) < 1e15:
        return f"{int(short):+d}"
    return f"{short:+}"


def agents_frame(system, state, slot: int, rows: torch.Tensor, levels: tuple[str, ...]):
    """One system's ``agents.csv`` rows."""

    def column(tensor: torch.Tensor) -> np.ndarray:
        return tensor[slot, rows].cpu().numpy()

    group = column(state.group)
    favourable_round = column(state.favourable_round)
    return pd.DataFrame(
        {
            "repetition": system.repetition,
            "model": system.model,
            "generator": system.generator,
            "agent": rows.cpu().numpy(),
            "group": pd.array(
                [levels[g] if g >= 0 and levels else None for g in group], dtype="string"
            ),
            "entered_round": column(state.entered),
            "favourable_round": pd.array(
                [int(r) if r >= 0 else None for r in favourable_round], dtype="Int64"
            ),
            "n_advice": column(state.n_advice),
            "n_adaptations": column(state.n_adaptations),
            "n_failures": column(state.n_failures),
            "effort": column(state.effort),
            "initial_score": column(state.initial_score),
            "final_score": column(state.score),
        },
        columns=AGENT_COLUMNS,
    )
