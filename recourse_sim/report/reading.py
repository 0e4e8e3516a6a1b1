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

from recourse_sim.metrics.mmd import DEGENERATE_KERNEL  # numpy only: reports stay torch-free
from recourse_sim.report.document import p_value_bound
from recourse_sim.report.glossary import metric_term, plain_name
from recourse_sim.report.tables import SYSTEM, ordered

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


def _p(row: pd.Series, n_permutations: int | None = None, unit: str = "repetitions") -> str:
    """The test of a summary row in words: the per-repetition count and the combined p-value."""
    tested = row.get("n_tested", 0)
    if pd.isna(row["mean"]) or not tested or pd.isna(tested):
        return ""
    if tested == 1:
        p = row["p_value"]
        return f" (p {p_value_bound(n_permutations)})" if p == 0 else f" (p = {p:.2g})"
    text = f" (p < {ALPHA} in {int(row['n_significant'])} of {int(tested)} {unit}"
    combined = row.get("p_combined", math.nan)
    if pd.notna(combined):
        text += f"; combined p {_p_text(combined)}"
    return text + ")"


def _p_text(p: float) -> str:
    """``= 0.03`` or ``< 1e-12``: a combined p-value is never written as 0."""
    if p < 1e-12:
        return "< 1e-12"
    return f"= {p:.2g}"


def _points(points: float) -> str:
    text = f"{abs(points):.2g}"
    return f"{text} point" if text == "1" else f"{text} points"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _tied(rows: pd.DataFrame, value: float) -> pd.DataFrame:
    """The rows whose mean reads the same as ``value`` in prose: a tie as the reader sees it."""
    return rows[rows["mean"].map(_num) == _num(value)]


def _systems(rows: pd.DataFrame, by: Sequence[str]) -> str:
    names = [_system(row, by) for _, row in rows.iterrows()]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _f1_clause(value: float) -> str:
    points = 100 * value
    if abs(points) < 0.05:
        return "F1 did not change"
    return f"F1 {'fell' if points < 0 else 'rose'} by {_points(points)}"


def _rows(summary: pd.DataFrame, metric: str) -> pd.DataFrame:
    return summary[(summary["metric"] == metric) & summary["mean"].notna()]


def _extreme_sentence(
    rows: pd.DataFrame,
    label: str,
    by: Sequence[str],
    n_permutations: int | None = None,
    unit: str = "repetitions",
) -> str:
    """The sentence "The <label> was largest under A: v (p); smallest under B: w", ties named.

    A tie gets no test clause (each tied system has its own; the table lists them).
    """
    top = rows.loc[rows["mean"].idxmax()]
    high = _tied(rows, top["mean"])
    p = _p(top, n_permutations, unit) if len(high) == 1 else ""
    if len(rows) == 1:
        return f"The {label} was {_num(top['mean'])}{p} under {_system(top, by)}."
    if len(high) == len(rows):
        return f"The {label} was the same under every system: {_num(top['mean'])}{p}."
    low_row = rows.loc[rows["mean"].idxmin()]
    low = _tied(rows, low_row["mean"])
    lead = (
        f"largest under {_system(top, by)}"
        if len(high) == 1
        else f"largest, and tied, under {_systems(high, by)}"
    )
    tail = "smallest under" if len(low) == 1 else "smallest, and tied, under"
    return (
        f"The {label} was {lead}: {_num(top['mean'])}{p}; "
        f"{tail} {_systems(low, by)}: {_num(low_row['mean'])}."
    )


def kernel_findings(
    kernel: pd.DataFrame | None, metric: str, final: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Per system, what the kernel check of ``metric`` found at its last flagged round.

    Args:
        kernel: ``kernel_warnings.csv`` rows (``repetition, round, model, generator, metric,
            length_scale, median_kernel, median_length_scale, value_at_median``; a sweep adds
            its variant columns), or None.
        metric: The metric's key.
        final: The summary rows of ``metric`` (system columns and ``round``): when given, only
            systems flagged at their final round are kept (what the final-round reading says).

    Returns:
        ``model, generator, ..., round, length_scale, median_kernel, median_length_scale,
        value_at_median`` (means over repetitions; the largest median kernel value, so the
        statement "below the threshold" holds for every repetition). Empty when none.
    """
    if kernel is None or kernel.empty or "metric" not in kernel:
        return pd.DataFrame()
    rows = kernel[kernel["metric"] == metric]
    if rows.empty:
        return pd.DataFrame()
    systems = [c for c in rows.columns if c not in KERNEL_VALUES and c not in ("repetition", "job")]
    systems = [c for c in systems if c not in ("round", "metric")]
    last = rows[rows["round"] == rows.groupby(systems, dropna=False)["round"].transform("max")]
    found = (
        last.groupby(systems, sort=False, dropna=False)
        .agg(
            round=("round", "max"),
            length_scale=("length_scale", "mean"),
            median_kernel=("median_kernel", "max"),
            median_length_scale=("median_length_scale", "mean"),
            value_at_median=("value_at_median", "mean"),
        )
        .reset_index()
    )
    if final is None or found.empty:
        return found
    keys = [c for c in systems if c in final.columns]
    # Match on text: a sweep's variant columns may be read as numbers on one side only.
    ends = final[[*keys, "round"]].astype(dict.fromkeys(keys, str)).rename(columns={"round": "end"})
    merged = found.astype(dict.fromkeys(keys, str)).assign(_row=range(len(found))).merge(ends)
    kept = merged.loc[merged["round"] == merged["end"], "_row"]
    return found.iloc[sorted(kept)].reset_index(drop=True)


KERNEL_VALUES = ("length_scale", "median_kernel", "median_length_scale", "value_at_median")


def _blind_sentence(
    label: str,
    metric: str,
    rows: pd.DataFrame,
    findings: pd.DataFrame,
    by: Sequence[str],
    every: bool = True,
) -> str:
    """Why an MMD read at a degenerate length scale says nothing, and what the median gives.

    ``rows`` are the summary rows of the flagged systems only; ``every``: no other system
    has a readable value.
    """
    top = rows.loc[rows["mean"].idxmax()]
    scale = findings["length_scale"].iloc[0]
    under = "" if len(rows) == 1 else ", under " + _system(top, by)
    where = "here" if every else f"under {_systems(rows, by)}"
    at_median = "; ".join(
        f"{_num(row['value_at_median'])} under {_system(row, by)}"
        for _, row in findings.sort_values("value_at_median", ascending=False).iterrows()
    )
    largest = "" if len(rows) == 1 else "largest "
    return (
        f"The {label} cannot be read {where}: at its kernel length scale "
        f"ℓ = {_num(scale)} the median kernel value between two points was "
        f"{findings['median_kernel'].max():.1e} (below {DEGENERATE_KERNEL:.0e}), so almost "
        f"every pair of points looks equally far apart and the estimate ({largest}"
        f"{_num(top['mean'])}{under}) says nothing either way. With the median heuristic "
        f"(metrics.{metric}.bandwidth=median; ℓ ≈ "
        f"{_num(findings['median_length_scale'].mean())} here) the estimate at round "
        f"{int(findings['round'].max())} is {at_median} (see Kernel check)."
    )


def _split_blind(
    rows: pd.DataFrame, findings: pd.DataFrame | None, by: Sequence[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The summary rows of a metric split into readable ones and those of flagged systems."""
    if findings is None or findings.empty:
        return rows, rows.iloc[0:0]
    keys = [c for c in by if c in findings.columns]
    flagged = set(findings[keys].astype(str).itertuples(index=False, name=None))
    mask = rows[keys].astype(str).apply(tuple, axis=1).isin(flagged)
    return rows[~mask], rows[mask]


def _domain_sentence(
    domain: pd.DataFrame,
    f1: pd.DataFrame,
    by: Sequence[str],
    n_permutations: int | None = None,
    unit: str = "repetitions",
) -> tuple[str, bool]:
    """The headline sentence; also says whether it already named the largest F1 drop."""
    top = domain.loc[domain["mean"].idxmax()]
    rounds = int(top["round"])
    high = _tied(domain, top["mean"])
    p = _p(top, n_permutations, unit) if len(high) == 1 else ""
    if top["mean"] <= 0:
        return (
            f"No system's domain shift (MMD²) rose above zero after {rounds} rounds: the "
            f"largest was {_num(top['mean'])}, under {_system(top, by)}{p}; no shift of the "
            f"favourable class is detectable at this kernel length scale.",
            False,
        )
    where = _system(top, by) if len(high) == 1 else _systems(high, by)
    sentence = (
        f"Under {where}, the domain shift (MMD²) reached {_num(top['mean'])} after "
        f"{rounds} rounds{p}"
    )
    if len(high) == len(domain) and len(domain) > 1:
        sentence += ", the same under every system"
    elif len(high) > 1:
        sentence += f", tied for the largest of all {len(domain)} systems"
    elif len(domain) > 1:
        low = domain.loc[domain["mean"].idxmin()]
        if len(domain) == 2:
            sentence += f", the larger of the two systems ({_system(low, by)}: "
        else:
            sentence += (
                f", the largest of all {len(domain)} systems (smallest, {_system(low, by)}: "
            )
        sentence += f"{_num(low['mean'])})"
    covered = False
    if not f1.empty and len(high) == 1:
        same = f1
        for key in by:
            same = same[same[key] == top[key]]
        if not same.empty:
            change = float(same["mean"].iloc[0])
            sentence += f"; {_f1_clause(change)}"
            drop = change < 0 and _num(change) == _num(f1["mean"].min())
            covered = len(f1) == 1 or (drop and len(_tied(f1, change)) == 1)
            if covered and len(f1) == 2:
                sentence += ", the larger drop of the two"
            elif covered and len(f1) > 2:
                sentence += ", the largest drop of all systems"
    return sentence + ".", covered


def _significance_sentence(
    summary: pd.DataFrame,
    n_permutations: int | None,
    blind: dict[str, pd.DataFrame] | None = None,
    unit: str = "repetitions",
    by: Sequence[str] = SYSTEM,
) -> str | None:
    """Which MMDs are significant, combined over repetitions and adjusted over the table."""
    if "p_holm" not in summary:  # a summary without tests (older code, or built by hand)
        return None
    blind = blind or {}
    tested = summary[(summary["n_tested"] > 0) & summary["mean"].notna()]
    family = int(summary["p_holm"].notna().sum())
    parts = []
    for metric, label in (
        ("mmd_domain", "domain shift"),
        ("mmd_model", "model shift"),
        ("mmd_model_grid", "model shift on a grid"),
    ):
        rows = tested[tested["metric"] == metric]
        if rows.empty:
            continue
        significant = int((rows["p_holm"] < ALPHA).sum())
        single = int(rows["n_tested"].sum())
        counted = f"p < {ALPHA} in {int(rows['n_significant'].sum())} of {_plural(single, 'test')}"
        unknown = int(rows["p_holm"].isna().sum())
        if unknown:
            counted += f"; {unknown} without a combined p-value, P being unknown"
        blind_note = ""
        if metric in blind:
            _, flagged = _split_blind(rows, blind[metric], by)
            if len(flagged) == len(rows):
                blind_note = ", which cannot see anything at its length scale"
            elif not flagged.empty:
                blind_note = (
                    f"; it cannot see anything at its length scale under {_systems(flagged, by)}"
                )
        systems = "system" if len(rows) == 1 else "systems"
        parts.append(
            f"the {label} under {significant} of {len(rows)} {systems} ({counted}){blind_note}"
        )
    if not parts:
        return None
    p = f"P = {n_permutations}" if n_permutations else "P permutations"
    several = bool((tested["n_tested"] > 1).any())
    combined = (
        f"combining the {unit}' permutation tests ({p}; Fisher's method) and " if several else ""
    )
    return (
        f"Significant at the 5 % level after {combined}adjusting for the "
        f"{_plural(family, 'test')} of the final-round table (Holm): {'; '.join(parts)}."
    )


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
        label = f"the {plain_name(metric)}" if metric_term(metric) else metric
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
    kernel: pd.DataFrame | None = None,
    unit: str = "repetitions",
) -> list[str]:
    """Plain-language sentences about the largest shifts.

    Args:
        summary: The final-round summary (:func:`recourse_sim.report.tables.final_round_summary`).
        by: Its system columns.
        recourse: Per-system recourse statistics
            (:func:`recourse_sim.report.tables.recourse_per_system`), or None.
        n_permutations: ``P`` of the p-values, for the bound ``p < 1/P`` of a p-value of 0
            (None when unknown: ``p < 1/P`` literally).
        kernel: ``kernel_warnings.csv`` rows: an MMD whose kernel was degenerate at its last
            round is said to be blind, with what the median heuristic gives, never read as
            "no shift".
        unit: What the tests are counted over (``repetitions``; a sweep's ``runs``).

    Returns:
        The sentences, most important first (empty when there is nothing to say).
    """
    by = list(by)
    sentences: list[str] = []
    _domain, f1 = _rows(summary, "mmd_domain"), _rows(summary, "f1_change")
    f1_said = False
    blind = {}
    for metric in ("mmd_domain", "mmd_model", "mmd_model_grid"):
        found = kernel_findings(kernel, metric, _rows(summary, metric))
        if not found.empty:
            blind[metric] = found
    labels = {
        "mmd_domain": "domain shift (MMD²)",
        "mmd_model": "model shift (MMD² of predictions)",
        "disagreement": "disagreement with the initial model",
    }
    for metric in ("mmd_domain", "mmd_model", "disagreement"):
        rows = _rows(summary, metric)
        if rows.empty:
            continue
        readable, flagged = _split_blind(rows, blind.get(metric), by)
        if not readable.empty and metric == "mmd_domain":
            sentence, f1_said = _domain_sentence(readable, f1, by, n_permutations, unit)
            sentences.append(sentence)
        elif not readable.empty:
            sentences.append(_extreme_sentence(readable, labels[metric], by, n_permutations, unit))
        if not flagged.empty:
            sentences.append(
                _blind_sentence(
                    labels[metric], metric, flagged, blind[metric], by, every=readable.empty
                )
            )
    if not f1.empty and not f1_said:
        worst = f1.loc[f1["mean"].idxmin()]
        if worst["mean"] < 0:
            tied = _tied(f1, worst["mean"])
            where = "" if len(f1) == 1 else " most"
            if len(tied) == len(f1) and len(f1) > 1:
                where = " by the same amount"
            elif len(tied) > 1:
                where = " most, and equally,"
            sentences.append(
                f"Macro F1 on the test set fell{where} under {_systems(tied, by)}: "
                f"by {_points(100 * worst['mean'])} after {int(worst['round'])} rounds."
            )
        else:
            best = f1.loc[f1["mean"].idxmax()]
            sentences.append(
                f"Macro F1 on the test set did not fall under any system (largest change "
                f"{100 * best['mean']:+.2g} points, under {_system(best, by)})."
            )
    significance = _significance_sentence(summary, n_permutations, blind, unit, by)
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
