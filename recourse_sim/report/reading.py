"""A short plain-language reading of the largest shifts, derived from the summary tables.

Every sentence is computed from the final-round summary (and the recourse statistics): which
system shifted the domain and the model most, whether the shifts are significant, what happened
to F1. Nothing is hard-coded beyond the wording.

A missing value (a metric that could not be computed) is never ranked, called significant or
counted; a p-value of 0 (no permutation reached the observed value) reads "p < 1/P".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from recourse_sim.report.document import p_value_bound
from recourse_sim.report.tables import METRIC_LABELS, SYSTEM, ordered

ALPHA = 0.05


def _num(value: float) -> str:
    """A number for prose: two significant digits, whole numbers from 100 on."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2g}"


def _system(row: pd.Series, by: Sequence[str]) -> str:
    """``generic with mlp``, plus any further system columns: ``(data=moons)``."""
    text = f"{row['generator']} with {row['model']}"
    extra = [f"{key}={row[key]}" for key in by if key not in SYSTEM]
    return f"{text} ({', '.join(extra)})" if extra else text


def _p(row: pd.Series, n_permutations: int | None = None) -> str:
    p = row["p_value"]
    if p is None or (isinstance(p, float) and math.isnan(p)) or pd.isna(row["mean"]):
        return ""
    label = "p" if row["n"] == 1 else "mean p"
    if p == 0:
        return f" ({label} {p_value_bound(n_permutations)})"
    return f" ({label} = {p:.2g})"


def _f1_clause(value: float) -> str:
    points = 100 * value
    if abs(points) < 0.05:
        return "F1 did not change"
    return f"F1 {'fell' if points < 0 else 'rose'} by {abs(points):.2g} points"


def _rows(summary: pd.DataFrame, metric: str) -> pd.DataFrame:
    return summary[(summary["metric"] == metric) & summary["mean"].notna()]


def _extreme_sentence(
    rows: pd.DataFrame, label: str, by: Sequence[str], n_permutations: int | None = None
) -> str:
    """The sentence "The <label> was largest under A: v (p); smallest under B: w"."""
    top = rows.loc[rows["mean"].idxmax()]
    p = _p(top, n_permutations)
    if len(rows) == 1:
        return f"The {label} was {_num(top['mean'])}{p} under {_system(top, by)}."
    low = rows.loc[rows["mean"].idxmin()]
    return (
        f"The {label} was largest under {_system(top, by)}: {_num(top['mean'])}{p}; "
        f"smallest under {_system(low, by)}: {_num(low['mean'])}."
    )


def _domain_sentence(
    domain: pd.DataFrame, f1: pd.DataFrame, by: Sequence[str], n_permutations: int | None = None
) -> tuple[str, bool]:
    """The headline sentence; also says whether it already named the largest F1 drop."""
    top = domain.loc[domain["mean"].idxmax()]
    rounds = int(top["round"])
    p = _p(top, n_permutations)
    if top["mean"] <= 0:
        return (
            f"No system shifted the domain: the largest domain shift (MMD) after {rounds} "
            f"rounds was {_num(top['mean'])}{p}, under {_system(top, by)}.",
            False,
        )
    sentence = (
        f"Under {_system(top, by)}, the domain shift (MMD) reached {_num(top['mean'])} after "
        f"{rounds} rounds{p}"
    )
    if len(domain) > 1:
        low = domain.loc[domain["mean"].idxmin()]
        if len(domain) == 2:
            sentence += f", the larger of the two systems ({_system(low, by)}: "
        else:
            sentence += (
                f", the largest of all {len(domain)} systems (smallest, {_system(low, by)}: "
            )
        sentence += f"{_num(low['mean'])})"
    covered = False
    if not f1.empty:
        same = f1
        for key in by:
            same = same[same[key] == top[key]]
        if not same.empty:
            change = float(same["mean"].iloc[0])
            sentence += f"; {_f1_clause(change)}"
            covered = len(f1) == 1 or (change < 0 and change <= f1["mean"].min())
            if covered and len(f1) == 2:
                sentence += ", the larger drop of the two"
            elif covered and len(f1) > 2:
                sentence += ", the largest drop of all systems"
    return sentence + ".", covered


def _significance_sentence(summary: pd.DataFrame) -> str | None:
    parts = []
    for metric, label in (("mmd_domain", "domain shift"), ("mmd_model", "model shift")):
        rows = summary[
            (summary["metric"] == metric) & summary["p_value"].notna() & summary["mean"].notna()
        ]
        if rows.empty:
            continue
        significant = int((rows["p_value"] < ALPHA).sum())
        systems = "system" if len(rows) == 1 else "systems"
        parts.append(f"the {label} under {significant} of {len(rows)} {systems}")
    if not parts:
        return None
    return f"Significant at the 5 % level (mean p < {ALPHA}): {'; '.join(parts)}."


def _recourse_sentence(recourse: pd.DataFrame) -> str | None:
    recourse = recourse[recourse["chosen_total"].notna()]
    if recourse.empty:
        return None
    rounds = int(recourse["rounds"].max())
    low, high = recourse["chosen_total"].min(), recourse["chosen_total"].max()
    amount = _num(low) if math.isclose(low, high) else f"between {_num(low)} and {_num(high)}"
    sentence = (
        f"Over {rounds} rounds, {amount} individuals received recourse per repetition "
        f"(about {_num(recourse['candidates_per_round'].mean())} candidates per round)"
    )
    rates = recourse[recourse["success_rate"].notna()]
    if not rates.empty:
        worst = rates.loc[rates["success_rate"].idxmin()]
        if math.isclose(worst["success_rate"], rates["success_rate"].max()):
            every = "" if len(rates) == 1 else " under every system"
            sentence += f"; the searches succeeded in {worst['success_rate']:.0%} of cases{every}"
        else:
            sentence += (
                f"; the searches succeeded least often under {_system(worst, SYSTEM)} "
                f"({worst['success_rate']:.0%} of cases)"
            )
    return sentence + "."


def _missing_sentence(summary: pd.DataFrame, by: Sequence[str]) -> str | None:
    """Which metrics have no value at all at the final round, and under which systems."""
    missing = summary[summary["mean"].isna()]
    if missing.empty:
        return None
    parts = []
    for metric in ordered(missing["metric"]):
        rows = missing[missing["metric"] == metric]
        systems = ", ".join(_system(row, by) for _, row in rows.iterrows())
        label = f"the {METRIC_LABELS[metric]}" if metric in METRIC_LABELS else metric
        parts.append(f"{label} under {systems}")
    return (
        f"No value could be computed at the final round for {'; '.join(parts)} "
        f"(see Missing values); these are left out above."
    )


def largest_shifts(
    summary: pd.DataFrame,
    by: Sequence[str] = SYSTEM,
    recourse: pd.DataFrame | None = None,
    n_permutations: int | None = None,
) -> list[str]:
    """Plain-language sentences about the largest shifts.

    Args:
        summary: The final-round summary (:func:`recourse_sim.report.tables.final_round_summary`).
        by: Its system columns.
        recourse: Per-system recourse statistics
            (:func:`recourse_sim.report.tables.recourse_per_system`), or None.
        n_permutations: ``P`` of the p-values, for the bound ``p < 1/P`` of a p-value of 0
            (None when unknown: ``p < 1/P`` literally).

    Returns:
        The sentences, most important first (empty when there is nothing to say).
    """
    by = list(by)
    sentences: list[str] = []
    domain, f1 = _rows(summary, "mmd_domain"), _rows(summary, "f1_change")
    f1_said = False
    if not domain.empty:
        sentence, f1_said = _domain_sentence(domain, f1, by, n_permutations)
        sentences.append(sentence)
    for metric, label in (
        ("mmd_model", "model shift (MMD of predictions)"),
        ("disagreement", "disagreement with the initial model"),
    ):
        rows = _rows(summary, metric)
        if not rows.empty:
            sentences.append(_extreme_sentence(rows, label, by, n_permutations))
    if not f1.empty and not f1_said:
        worst = f1.loc[f1["mean"].idxmin()]
        if worst["mean"] < 0:
            where = "" if len(f1) == 1 else " most"
            sentences.append(
                f"Macro F1 on the test set fell{where} under {_system(worst, by)}: "
                f"by {abs(100 * worst['mean']):.2g} points after {int(worst['round'])} rounds."
            )
        else:
            best = f1.loc[f1["mean"].idxmax()]
            sentences.append(
                f"Macro F1 on the test set did not fall under any system (largest change "
                f"{100 * best['mean']:+.2g} points, under {_system(best, by)})."
            )
    significance = _significance_sentence(summary)
    if significance:
        sentences.append(significance)
    if recourse is not None and not recourse.empty:
        sentence = _recourse_sentence(recourse)
        if sentence:
            sentences.append(sentence)
    sentence = _missing_sentence(summary, by)
    if sentence:
        sentences.append(sentence)
    return sentences


# --- time-based dynamics ---------------------------------------------------------------------


def label_systems(frame: pd.DataFrame, by: Sequence[str] = SYSTEM) -> pd.Series:
    """Each row's system in words (``generic with mlp``), as the sentences name it."""
    if frame.empty:
        return pd.Series([], index=frame.index, dtype=object)
    return frame.apply(lambda row: _system(row, by), axis=1)


def _share(value: float) -> str:
    return f"{value:.0%}"


def _rounds(n: int, runs: int, unit: str) -> str:
    """``8 rounds`` or ``8 rounds (2 repetitions together)``."""
    text = f"{n} round{'s' if n != 1 else ''}"
    return f"{text} ({runs} {unit} together)" if runs > 1 else text


def _reliability_sentence(row: pd.Series, by: Sequence[str], unit: str) -> str:
    system, runs = _system(row, by), int(row["runs"])
    counted, without = int(row["rounds_counted"]), int(row["rounds_without_reliability"])
    failures = row.get("failures", math.nan)
    failed = (
        f"; {_num(failures)} agents per {unit.rstrip('s')} crossed the threshold after acting on "
        f"advice but were not favourable at the next decision"
        if pd.notna(failures)
        else ""
    )
    if counted == 0:
        return f"{system}: the run has no round after round 0, so reliability has no value."
    if pd.isna(row["reliability"]):
        return (
            f"{system}: reliability has no value in any of the {_rounds(counted, runs, unit)} "
            f"after round 0: nobody crossed the previous decision's threshold after acting on "
            f"advice."
        )
    share = _share(row["reliability"])
    sentence = (
        f"{system}: reliability averaged {share}: on average over the "
        f"{_rounds(counted - without, runs, unit)} that had a value, {share} of the agents who "
        f"crossed the previous decision's threshold after acting on advice were favourable at "
        f"the next decision"
    )
    if without:
        were = "was" if without == 1 else "were"
        sentence += (
            f"; {without} of the {counted} rounds after round 0 had nobody who qualified and "
            f"{were} left out (not counted as 0)"
        )
    return sentence + failed + "."


def _recourse_time_sentence(row: pd.Series, by: Sequence[str]) -> str:
    system = _system(row, by)
    if pd.isna(row["time_to_recourse"]):
        sentence = f"{system}: no agent became favourable after a rejection (no time to recourse)"
    else:
        sentence = (
            f"{system}: agents who became favourable after at least one rejection got there "
            f"{_num(row['time_to_recourse'])} rounds after entering on average"
        )
        if pd.notna(row["effort_to_recourse"]):
            sentence += (
                f", after moving a distance of {_num(row['effort_to_recourse'])} (standardised "
                f"feature units)"
            )
        if pd.notna(row["effort_to_recourse_score"]):
            sentence += f" and raising their score by {_num(row['effort_to_recourse_score'])}"
    if pd.notna(row.get("ever_favourable", math.nan)):
        sentence += (
            f"; {_share(row['ever_favourable'])} of the agents were favourable at some decision"
        )
    start, end = row["initial_threshold"], row["final_threshold"]
    if pd.notna(start) and pd.notna(end) and _num(start) == _num(end):
        sentence += f"; the decision threshold stayed at {_num(start)}"
    elif pd.notna(start) and pd.notna(end):
        sentence += (
            f"; the decision threshold went from {_num(start)} at round 0 to {_num(end)} at "
            f"round {int(row['rounds'])}"
        )
    return sentence + "."


def _group_sentence(rows: pd.DataFrame, by: Sequence[str], levels: Sequence[str]) -> str | None:
    """The comparisons of one system's groups, as the run computed them each round."""
    first = rows.iloc[0]
    if len(levels) == 2:
        difference = f"{levels[1]} minus {levels[0]}"
        ratio = f"{levels[1]} over {levels[0]}"
    else:
        difference, ratio = "largest minus smallest group", "largest over smallest group"
    parts = []
    for _, row in rows[rows["mean"].notna()].iterrows():
        n = int(row["n"])
        over = f"on average over the {n} round{'s' if n != 1 else ''} with a value"
        if row["comparison"] == "time_to_recourse_difference":
            parts.append(
                f"the difference in time to recourse ({difference}) was {_num(row['mean'])} "
                f"rounds {over}"
            )
        elif row["comparison"] == "effort_to_recourse_ratio":
            parts.append(f"the effort ratio ({ratio}) was {_num(row['mean'])} {over}")
    if not parts:
        return None
    return f"{_system(first, by)}: {'; '.join(parts)}."


def dynamics_reading(tables, by: Sequence[str] = SYSTEM, unit: str = "repetitions") -> list[str]:
    """Plain-language sentences about the time-based view.

    Args:
        tables: :class:`recourse_sim.report.dynamics.DynamicsTables`.
        by: Its system columns.
        unit: What the independent runs are called (``repetitions``; ``runs`` in a sweep).

    Returns:
        Per system: reliability (with the rounds that had none), time and effort to recourse,
        the threshold; the group comparisons; and a reminder that nothing here was tested.
    """
    by = list(by)
    summary = tables.summary
    sentences: list[str] = []
    for _, row in summary.iterrows():
        sentences.append(_reliability_sentence(row, by, unit))
        sentences.append(_recourse_time_sentence(row, by))
    comparison = tables.comparison
    if not comparison.empty:
        for _, rows in comparison.groupby(by, sort=False, dropna=False):
            sentence = _group_sentence(rows, by, tables.levels)
            if sentence:
                sentences.append(sentence)
    if not summary.empty:
        runs = int(summary["runs"].min())
        if runs > 1:
            sentences.append(
                f"These are descriptive means over {runs} {unit}; no test was run, so a "
                f"difference between systems or groups that is small next to the spread between "
                f"{unit} (the bands in the figures) may be chance."
            )
        else:
            sentences.append(
                f"These are descriptive values of a single {unit.rstrip('s')}; no test was run "
                f"and there is no spread between {unit} to compare with, so any difference "
                f"between systems or groups may be chance."
            )
    return sentences
