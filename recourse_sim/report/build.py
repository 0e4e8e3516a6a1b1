"""Assemble and write the report of a run (``report.html``, ``report.md``) or a sweep.

A run report goes into the run directory, next to the files it is computed from; a sweep report
(``shift_report.html``, ``shift_report.md``, ``summary.csv``) into the sweep directory. The exact
numbers behind the tables are written as CSV files too (``summary_table.csv``,
``recourse_table.csv``; with time-based dynamics also ``dynamics_table.csv``,
``dynamics_per_round.csv`` and, with groups, ``dynamics_groups_table.csv`` and
``dynamics_group_comparison.csv``), so they can be checked or reused without parsing HTML.

Rows of ``metrics.csv`` with scope ``dynamics`` feed the section "Recourse over time" only; every
shift table, figure and sentence is computed from the other rows, so a run without dynamics gets
exactly the report it always got.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from recourse_sim.metrics.mmd import DEGENERATE_KERNEL
from recourse_sim.report.document import (
    Block,
    Bullets,
    Document,
    Heading,
    Image,
    Link,
    Paragraph,
    PValue,
    Table,
    format_number,
    p_value_bound,
)
from recourse_sim.report.dynamics import (
    COMPARISONS,
    FLOW_METRICS,
    DynamicsTables,
    dynamics_tables,
    rolling_window,
    split_metric,
    split_scope,
)
from recourse_sim.report.files import (
    KERNEL_FILE,
    MISSING_FILE,
    ReportError,
    RunFiles,
    config_p_value_form,
    is_run_dir,
    is_sweep_dir,
    job_dirs,
    load_agents,
    load_kernel_warnings,
    load_metrics,
    load_missing,
    load_run,
    read_choices,
    read_config,
    read_data_rows,
    read_multirun,
    read_n_permutations,
    read_overrides,
)
from recourse_sim.report.glossary import glossary_table, plain_name
from recourse_sim.report.html import write_html
from recourse_sim.report.markdown import write_markdown
from recourse_sim.report.reading import (
    dynamics_reading,
    kernel_findings,
    label_systems,
    largest_shifts,
)
from recourse_sim.report.tables import (
    SYSTEM,
    SYSTEM_KEYS,
    add_system_label,
    config_brief,
    control_comparison,
    decisiveness_scale,
    final_round_summary,
    final_rows,
    metric_order,
    missing_summary,
    ordered,
    parse_overrides,
    recourse_per_round,
    recourse_per_system,
    sweep_metrics,
    swept_keys,
    variant_keys,
    with_normalised_decisiveness,
)

if TYPE_CHECKING:
    from recourse_sim.sweep.jobs import JobState

log = logging.getLogger(__name__)

RUN_HTML, RUN_MARKDOWN = "report.html", "report.md"
SWEEP_HTML, SWEEP_MARKDOWN = "shift_report.html", "shift_report.md"
SUMMARY_TABLE = "summary_table.csv"
RECOURSE_TABLE = "recourse_table.csv"
SWEEP_SUMMARY = "summary.csv"
#: Every job's metric rows in one long table (the swept choices as columns).
SWEEP_METRICS = "sweep_metrics.csv"
DYNAMICS_TABLE = "dynamics_table.csv"
DYNAMICS_PER_ROUND = "dynamics_per_round.csv"
DYNAMICS_GROUPS = "dynamics_groups_table.csv"
DYNAMICS_COMPARISON = "dynamics_group_comparison.csv"
#: Per-round tables longer than this are folded away in the HTML report.
FOLD_ROWS = 40

SUMMARY_HEADERS = {
    "round": "final round",
    "ci": "95 % CI",
    "significant": "p < 0.05 in",
    "p_combined": "combined p",
    "p_holm": "Holm p",
}
KERNEL_HEADERS = {
    "round": "last round flagged",
    "length_scale": "ℓ",
    "median_kernel": "median kernel value",
    "median_length_scale": "median-heuristic ℓ",
    "value_at_median": "estimate at median ℓ",
}
CONTROL_HEADERS = {"control": "control (none)", "sd_difference": "sd of difference"}
MISSING_HEADERS = {"values": "missing values"}
RECOURSE_HEADERS = {
    "n": "repetitions",
    "n_candidates": "candidates",
    "n_chosen": "chosen",
    "success_rate": "success rate",
    "candidates_per_round": "candidates per round",
    "chosen_total": "chosen in total",
}


def _figure(make: Callable[[], Path], caption: str) -> Image | Paragraph:
    """Draw one figure; a figure that fails becomes a note instead of failing the report."""
    try:
        return Image(make(), caption)
    except Exception as error:
        log.warning("report figure '%s' failed: %s", caption, error, exc_info=True)
        return Paragraph(f"(The figure '{caption}' could not be drawn: {error}.)")


def _summary_note(
    n: int | str,
    unit: str,
    n_permutations: int | None,
    tests: bool = True,
    combined: bool = True,
    test_unit: str = "repetition",
) -> Paragraph:
    """What the final-round table shows: intervals, and the tests as far as there are any."""
    if str(n) == "1":
        unit = unit.replace("repetitions", "repetition", 1).replace("runs", "run", 1)
    text = (
        f"Every metric at the last evaluated round over {n} {unit}: the mean, its 95 % t "
        "interval (none for a single value) and the sample standard deviation; n counts the "
        "values that could be computed. "
    )
    if not tests:
        reason = " (simulation.n_permutations=0)" if n_permutations == 0 else ""
        return Paragraph(text + f"No permutation tests were run{reason}. See the Glossary.")
    exact = "exact p-value (b + 1)/(P + 1)" if n_permutations else "recorded p-value (P is unknown)"
    text += (
        f"For the MMDs, 'p < 0.05 in' counts the tests (one per {test_unit}) whose {exact} "
        "is below 0.05; "
    )
    if combined:
        text += "the combined p-value joins them by Fisher's method and "
    text += (
        "the Holm p-value adjusts "
        + ("it" if combined else "each")
        + f" for every test of this table. A single test's recorded p-value of 0 reads "
        f"{p_value_bound(n_permutations)}. See the Glossary for every term."
    )
    return Paragraph(text)


def _has_tests(summary: pd.DataFrame, more_than: int = 0) -> bool:
    return bool("n_tested" in summary and (summary["n_tested"] > more_than).any())


def _interval(low: float, high: float) -> str:
    if pd.isna(low) or pd.isna(high):
        return "–"
    return f"{format_number(low)} … {format_number(high)}"


def _significance_count(tested, significant) -> str:
    return "–" if not tested else f"{int(significant)} of {int(tested)}"


def _combined(p: float) -> PValue:
    return PValue(p)  # "–" when there is none, right-aligned like every number; never 0


def _summary_table(summary: pd.DataFrame, n_permutations: int | None) -> Table:
    """The final-round summary as a reader sees it: interval, counts, combined p-values."""
    if summary.empty:
        return Table(summary)
    shown = summary.drop(columns=["ci_low", "ci_high", "p_value", "n_tested", "n_significant"])
    shown = shown.drop(columns=["p_combined", "p_holm"])
    shown.insert(
        shown.columns.get_loc("mean") + 1,
        "ci",
        [_interval(lo, hi) for lo, hi in zip(summary["ci_low"], summary["ci_high"], strict=True)],
    )
    shown["significant"] = [
        _significance_count(t, k)
        for t, k in zip(summary["n_tested"], summary["n_significant"], strict=True)
    ]
    shown["p_combined"] = [_combined(p) for p in summary["p_combined"]]
    shown["p_holm"] = [_combined(p) for p in summary["p_holm"]]
    shown["metric"] = [plain_name(m) for m in summary["metric"]]
    return Table(shown, headers=SUMMARY_HEADERS, group="metric")


def _kernel_blocks(kernel: pd.DataFrame | None, by: Sequence[str]) -> list[Block]:
    """The section "Kernel check": MMDs whose Gaussian kernel was too narrow to see anything."""
    if kernel is None or kernel.empty:
        return []
    parts = []
    for metric in ordered(kernel["metric"]):
        found = kernel_findings(kernel, metric)
        if not found.empty:
            found.insert(0, "metric", metric)
            parts.append(found)
    if not parts:
        return []
    table = pd.concat(parts, ignore_index=True)
    evaluations = len(kernel)
    return [
        Heading("Kernel check"),
        Paragraph(
            f"At {evaluations} evaluations an MMD's Gaussian kernel was degenerate: the median "
            f"kernel value between two distinct points was below {DEGENERATE_KERNEL:.0e}, "
            "because the points lie many length scales apart (typical of standardised data "
            "with many features and the reference's fixed ℓ = 0.5). The estimate is then "
            "close to 0 and its test cannot reject whatever the data do: the metric is blind, "
            "not evidence of 'no shift'. Per metric and system, at the last round flagged "
            "(means over repetitions; the median kernel value is the largest of them): the "
            "median-heuristic length scale (the median distance between the points compared) "
            "and the estimate it gives, computed beside the configured one. Run with "
            "metrics.<metric>.bandwidth=median to measure with it throughout (all rows in "
            f"{KERNEL_FILE})."
        ),
        Table(table, headers=KERNEL_HEADERS, group="metric"),
    ]


def _glossary_blocks(metrics: Sequence[str], config: DictConfig | None) -> list[Block]:
    return [
        Heading("Glossary"),
        Table(glossary_table(list(metrics), config), collapsed=False),
    ]


def _control_blocks(comparison: pd.DataFrame, unit: str) -> list[Block]:
    """The section "Beyond retraining": each generator's shift minus the no-recourse control's."""
    if comparison.empty:
        return []
    return [
        Heading("Beyond retraining: shift against the no-recourse control"),
        Paragraph(
            "The control (generator none) is retrained like every system but nobody moves, so "
            "its shift is what retraining alone does. Per metric and system: the generator's "
            "final-round mean, the control's, and the mean paired difference (generator − "
            f"control, paired by {unit}) with its sample standard deviation; n counts the pairs."
        ),
        Table(_plain_metrics(comparison), headers=CONTROL_HEADERS, group="metric"),
    ]


def _values(n: int) -> str:
    return "1 metric value" if n == 1 else f"{n} metric values"


def _plain_metrics(table: pd.DataFrame) -> pd.DataFrame:
    """A table whose ``metric`` cells read as plain names (the CSVs keep the keys)."""
    if table.empty or "metric" not in table:
        return table
    return table.assign(metric=[plain_name(m) for m in table["metric"]])


def _missing_blocks(missing: pd.DataFrame | None, per: list[str] | None = None) -> list[Block]:
    """The section "Missing values": why metric values could not be computed (if any were not)."""
    if missing is None or missing.empty:
        return []
    table = missing_summary(missing, per or [])
    return [
        Heading("Missing values"),
        Paragraph(
            f"{_values(len(missing))} could not be computed; missing values are empty cells in "
            f"metrics.csv (– in the tables), are left out of the means and counts above, and "
            f"are never counted as significant. The reasons, from {MISSING_FILE}:"
        ),
        Table(
            _plain_metrics(table),
            headers=MISSING_HEADERS,
            group="metric",
            collapsed=len(table) > FOLD_ROWS,
        ),
    ]


# --- time-based dynamics ---------------------------------------------------------------------

#: Per-round metrics shown in the report's per-round table (all of them are in the CSV).
PER_ROUND_SHOWN = (
    "n_active",
    "n_arrivals",
    "n_favourable",
    "n_exits",
    "n_advice",
    "threshold",
    "reliability",
    "n_failures",
    "time_to_recourse",
    "effort_to_recourse",
)
PER_ROUND_HEADERS = {
    "n_active": "active",
    "n_arrivals": "arrivals",
    "n_favourable": "favourable",
    "n_exits": "exits",
    "n_advice": "advice",
    "n_failures": "failures",
    "time_to_recourse": "time to recourse",
    "effort_to_recourse": "effort",
}
GROUP_HEADERS = {
    "time_to_recourse": "time to recourse (rounds, mean over rounds)",
    "agent_time_to_recourse": "time to recourse (rounds, mean over agents)",
    "effort_to_recourse": "effort (distance)",
    "effort_to_recourse_score": "score gain",
    "n_active": "active per round",
    "n_favourable": "favourable per round",
    "ever_favourable": "ever favourable (share)",
}
COMPARISON_HEADERS = {"n": "rounds with a value", "mean": "mean over rounds", "sd": "sd"}


def _dynamics_headers(run: str) -> dict[str, str]:
    """Column names of the per-system table; ``run``: a repetition, or a run of a sweep."""
    return {
        "runs": f"{run}s",
        "rounds": "last round",
        "rounds_without_reliability": "rounds without reliability",
        "time_to_recourse": "time to recourse (rounds)",
        "effort_to_recourse": "effort (distance)",
        "effort_to_recourse_score": "score gain",
        "failures": f"failures per {run}",
        "agents": f"agents per {run}",
        "ever_favourable": "ever favourable (share)",
        "initial_threshold": "threshold at round 0",
        "final_threshold": "threshold at last round",
    }


def split_missing(
    missing: pd.DataFrame | None, dynamics: pd.DataFrame
) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """``missing_values.csv`` split into shift metrics and dynamics metrics (by metric name)."""
    if missing is None or dynamics.empty or "metric" not in missing.columns:
        return missing, None
    mask = missing["metric"].isin(set(dynamics["metric"]))
    return missing[~mask].reset_index(drop=True), missing[mask].reset_index(drop=True)


def write_dynamics_tables(tables: DynamicsTables, directory: Path) -> list[Path]:
    """Write the numbers of the time-based view as CSV files; returns the files written."""
    written = []
    for name, frame, always in (
        (DYNAMICS_TABLE, tables.summary, True),
        (DYNAMICS_PER_ROUND, tables.per_round, True),
        (DYNAMICS_GROUPS, tables.groups, False),
        (DYNAMICS_COMPARISON, tables.comparison, False),
    ):
        if always or not frame.empty:
            frame.to_csv(directory / name, index=False)
            written.append(directory / name)
    return written


def _dynamics_settings(config: DictConfig | None) -> pd.DataFrame | None:
    """The run's ``dynamics`` settings and ``data.group``, one per line (None if none)."""
    if config is None:
        return None
    rows: list[tuple[str, str]] = []

    def walk(prefix: str, node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}", value)
        else:
            rows.append((prefix, str(node)))

    try:
        node = OmegaConf.select(config, "dynamics", default=None)
        if isinstance(node, DictConfig):
            walk("dynamics", OmegaConf.to_container(node, resolve=False))
        group = OmegaConf.select(config, "data.group", default=None)
    except Exception:  # an unresolvable interpolation: show what could be read
        group = None
    if group is not None:
        rows.append(("data.group", str(group)))
    return pd.DataFrame(rows, columns=["setting", "value"]) if rows else None


def _per_round_table(per_round: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """The main per-round means, one row per round and system."""
    shown = per_round[per_round["metric"].isin(PER_ROUND_SHOWN)]
    if shown.empty:
        return pd.DataFrame(columns=["round", *by])
    table = shown.pivot_table(
        index=["round", *by], columns="metric", values="mean", sort=False, dropna=False
    )
    table = table.reindex(columns=[m for m in PER_ROUND_SHOWN if m in table.columns])
    table = table.reset_index()
    table.columns.name = None
    return table.sort_values("round", kind="stable").reset_index(drop=True)


def _dynamics_blocks(
    tables: DynamicsTables,
    dynamics: pd.DataFrame,
    missing: pd.DataFrame | None,
    directory: Path,
    figures: bool,
    by: Sequence[str],
    per: Sequence[str] = (),
    run: str = "repetition",
    settings: pd.DataFrame | None = None,
    group_column: str | None = None,
) -> list[Block]:
    """The section "Recourse over time" (only for runs with time-based dynamics).

    Args:
        tables: The tables of the view (:func:`recourse_sim.report.dynamics.dynamics_tables`).
        dynamics: The rows of ``metrics.csv`` with scope ``dynamics``.
        missing: The rows of ``missing_values.csv`` about dynamics metrics, or None.
        directory: Where figures go (its ``figures/``).
        figures: Draw the figures.
        by: The system columns.
        per: The columns that separate independent runs besides ``repetition`` (``job``).
        run: What one independent run is called (``repetition``; ``run`` in a sweep).
        settings: The dynamics settings to show, or None.
        group_column: The data's group column (``data.group``), when known.
    """
    from recourse_sim.report import figures as plots

    by = list(by)
    runs = f"{run}s"
    blocks: list[Block] = [
        Heading("Recourse over time"),
        Paragraph(
            "Agents arrive, compete for a limited number of favourable decisions, act on advice "
            "over several rounds and leave. The numbers below come from the rows of metrics.csv "
            "with scope dynamics (one per round and system)"
            + (
                " and from agents.csv (one row per agent and system)."
                if tables.has_agents
                else "; there is no agents.csv, so the shares of agents are not shown."
            )
            + " A value that could not be computed (reliability in a round where nobody "
            "qualified, time to recourse in a round where nobody reached it) is left out of every "
            "mean and drawn as a gap, never counted as 0."
        ),
    ]
    if settings is not None:
        blocks.append(Table(settings, "Settings of the dynamics"))
    reading = dynamics_reading(tables, by, runs)
    if reading:
        blocks.append(Bullets(tuple(reading)))
    shown = tables.summary.copy()
    shown["rounds_without_reliability"] = [
        f"{without} of {counted}"
        for without, counted in zip(
            shown["rounds_without_reliability"], shown["rounds_counted"], strict=True
        )
    ]
    shown = shown.drop(columns="rounds_counted")
    agents_note = (
        f" Agents (from agents.csv): agents per {run} and the share of them favourable at some "
        f"decision."
        if tables.has_agents
        else ""
    )
    blocks += [
        Paragraph(
            "Reliability: of the agents who acted on advice and crossed the previous decision's "
            "threshold, the share favourable at the next decision. Time to recourse: rounds from "
            "entry to the first favourable decision, for agents rejected at least once; effort: "
            "the distance they moved (standardised feature units); score gain: their score when "
            "favourable minus their score at entry. Each is the mean over every round and "
            f"{run} with a value, so every round weighs the same however many agents it "
            "counted; time to recourse is the mean over those agents instead when agents.csv "
            "is there (without arrivals every agent entered at round 0, and a mean over rounds "
            "would only average the round numbers). Rounds without reliability: the rounds "
            f"after round 0 in which nobody qualified, of all such rounds (all {runs} "
            "together). Failures: agents who crossed "
            f"the threshold but were not favourable, summed over the rounds of a {run}, mean "
            f"over {runs}. Thresholds: the decision threshold (a probability; with a top-k "
            f"policy the lowest favourable score) at round 0 and at the last round, mean over "
            f"{runs}." + agents_note
        ),
        Table(shown, "Per system, over the whole run", headers=_dynamics_headers(run)),
    ]
    recorded = set(tables.per_round["metric"])
    if figures:
        labelled = tables.per_round.assign(system=label_systems(tables.per_round, by))
        span = int(tables.per_round["round"].max()) - int(tables.per_round["round"].min())
        window = rolling_window(span)
        if recorded & {"reliability", "time_to_recourse", "threshold"}:
            blocks.append(
                _figure(
                    lambda: plots.recourse_over_time(labelled, directory, window),
                    f"Reliability, time to recourse and the decision threshold per round. Thin "
                    f"lines with dots: the mean over {runs} in each round (band: ±1 sd); thick "
                    f"lines: their centred rolling mean over {window} rounds, easier to read "
                    f"than single rounds that count few agents. A gap is a round without a "
                    f"value (for reliability: nobody qualified), not a zero. One colour per "
                    f"system.",
                )
            )
        if recorded & set(FLOW_METRICS):
            blocks.append(
                _figure(
                    lambda: plots.population_over_time(labelled, directory),
                    f"Agents per round: active at the decision, arrivals, favourable decisions "
                    f"and exits (mean over {runs}, band: ±1 sd); one colour per system.",
                )
            )
    per_round = _per_round_table(tables.per_round, by)
    blocks.append(
        Table(
            per_round,
            f"Per round (means over {runs}; every metric with n and sd in {DYNAMICS_PER_ROUND})",
            headers=PER_ROUND_HEADERS,
            collapsed=len(per_round) > FOLD_ROWS,
        )
    )
    blocks += _group_blocks(tables, dynamics, directory, figures, by, run, group_column)
    if missing is not None and not missing.empty:
        table = missing_summary(missing, list(per))
        blocks += [
            Paragraph(
                f"{len(missing)} dynamics value{'s are' if len(missing) != 1 else ' is'} listed "
                f"in {MISSING_FILE} with a reason (gaps above, left out of every mean):"
            ),
            Table(
                _plain_metrics(table),
                headers=MISSING_HEADERS,
                group="metric",
                collapsed=len(table) > FOLD_ROWS,
            ),
        ]
    return blocks


def _group_blocks(
    tables: DynamicsTables,
    dynamics: pd.DataFrame,
    directory: Path,
    figures: bool,
    by: list[str],
    run: str,
    group_column: str | None,
) -> list[Block]:
    """The subsection "Recourse by group" (only when the run wrote ``<metric>@<level>`` rows)."""
    from recourse_sim.report import figures as plots

    if tables.groups.empty and tables.comparison.empty:
        return []
    runs = f"{run}s"
    levels = ", ".join(tables.levels)
    column = f" of column {group_column} (data.group)" if group_column else ""
    blocks: list[Block] = [
        Heading("Recourse by group", level=3),
        Paragraph(
            f"Groups{column}: {levels}. Per system and group: each metric's mean over every "
            f"round and {run} with a value; active agents and favourable decisions per round"
            + (
                f"; agents per {run} and the share ever favourable (from agents.csv)."
                if tables.has_agents
                else "."
            )
        ),
    ]
    if not tables.groups.empty:
        headers = {**GROUP_HEADERS, "agents": f"agents per {run}"}
        blocks.append(Table(tables.groups, headers=headers, group="generator"))
    if not tables.comparison.empty:
        comparison = tables.comparison.copy()
        comparison["comparison"] = comparison["comparison"].map(COMPARISONS)
        if len(tables.levels) == 2:
            first, second = tables.levels
            difference, ratio = f"{second} minus {first}", f"{second} over {first}"
        else:
            difference = "largest minus smallest group mean"
            ratio = "largest over smallest group mean"
        blocks.append(
            Table(
                comparison,
                f"The group comparisons the run computed every round (time to recourse: "
                f"{difference}; effort: {ratio}), averaged over the rounds and {runs} with a "
                f"value",
                headers=COMPARISON_HEADERS,
            )
        )
    if figures:
        parts = [split_metric(name) for name in dynamics["metric"]]
        rows = dynamics.assign(base=[p[0] for p in parts], group=[p[1] for p in parts])
        rows = rows[rows["group"].notna()]
        if not rows.empty:
            rows = rows.assign(system=label_systems(rows, by))
            blocks.append(
                _figure(
                    lambda: plots.group_bars(rows, tables.levels, directory),
                    "Time to recourse and effort by group: bars are the means of the table "
                    f"above (over every round and {run} with a value), error bars ±1 sd of "
                    "those per-round values; one colour per group.",
                )
            )
    return blocks


def _common(values: list[int | None]) -> int | None:
    """The one value shared by all jobs (P of a sweep), or None when they differ or are unknown."""
    unique = set(values)
    return unique.pop() if len(unique) == 1 else None


def _group_column(config: DictConfig | None) -> str | None:
    """``data.group`` of a run's configuration (None: no groups, or unknown)."""
    if config is None:
        return None
    try:
        group = OmegaConf.select(config, "data.group", default=None)
    except Exception:  # an unresolvable interpolation
        return None
    return str(group) if group is not None else None


def _two_features(run: RunFiles) -> bool:
    if run.initial_population is None or run.final_population is None:
        return False
    features = [c for c in run.initial_population.columns if c not in ("individual", "label")]
    return len(features) == 2


def _preset(overrides: Sequence[str]) -> str | None:
    for override in overrides:
        key, _, value = str(override).lstrip("+").partition("=")
        if key == "experiment" and value:
            return value
    return None


def _data_name(config: DictConfig | None, choices: dict[str, str]) -> str | None:
    if choices.get("data"):
        return choices["data"]
    target = OmegaConf.select(config, "data._target_", default=None) if config else None
    return str(target).rsplit(".", 1)[-1] if target else None


def run_title(run: RunFiles) -> str:
    """What a run compared, in one line: data, models × generators, dynamics, size."""
    parts = []
    data = _data_name(run.config, run.choices)
    if data:
        parts.append(f"{data} data")
    models = ", ".join(str(m) for m in ordered(run.metrics["model"]))
    generators = ", ".join(str(g) for g in ordered(run.metrics["generator"]))
    parts.append(f"{models} × {generators}")
    dynamics = run.choices.get("dynamics")
    if dynamics and dynamics != "reference":
        parts.append(f"dynamics: {dynamics}")
    sim = OmegaConf.select(run.config, "simulation", default=None) if run.config else None
    if isinstance(sim, DictConfig):
        rounds, repetitions = sim.get("n_rounds"), sim.get("n_repetitions")
        if rounds is not None and repetitions is not None:
            noun = "repetition" if repetitions == 1 else "repetitions"
            parts.append(f"{rounds} rounds × {repetitions} {noun}")
    preset = _preset(run.overrides)
    if preset:
        parts.append(f"preset {preset}")
    return " · ".join(parts)


def sweep_title(entries, swept: Sequence[str]) -> str:
    """What a sweep varied, in one line: ``generator ∈ {generic, wachter_mad} × seed ∈ {0, 1}``."""
    parts = []
    for key in swept:
        values = ordered(str(overrides[key]) for _, overrides, _ in entries if key in overrides)
        if values:
            parts.append(f"{key} ∈ {{{', '.join(values)}}}")
    first = next((job for job, _, metrics in entries if metrics is not None), None)
    context = []
    if first is not None and "data" not in swept:
        data = _data_name(read_config(first), read_choices(first / ".hydra"))
        if data:
            context.append(f"{data} data")
    varied = " × ".join(parts) if parts else "no swept keys"
    return " · ".join([*context, varied])


def run_document(run: RunFiles, figures: bool = True) -> Document:
    """The content of a run report (figures are drawn into the run directory)."""
    from recourse_sim.report import figures as plots  # matplotlib only when drawing

    directory = run.directory
    full = run
    shift, dynamics = split_scope(run.metrics)
    shift_missing, dynamics_missing = split_missing(run.missing, dynamics)
    if not dynamics.empty:  # every shift table sees the shift rows only
        run = replace(run, metrics=shift, missing=shift_missing)
    summary = run_summary(run)
    shown = _with_normalised(run)
    per_round = recourse_per_round(run.recourse)
    per_system = recourse_per_system(run.recourse)
    repetitions = full.metrics["repetition"].nunique()
    n_permutations = run.n_permutations
    reading = largest_shifts(summary, SYSTEM, per_system, n_permutations, run.kernel)
    title = run_title(full)
    doc = Document(f"Shift report: {title}", str(directory.resolve()))
    doc.blocks += [
        Heading("Configuration"),
        Table(config_brief(run)),
        Heading("Largest shifts"),
        Bullets(tuple(reading)) if reading else Paragraph("No metric values were recorded."),
        Heading("Final-round summary"),
        _summary_note(
            repetitions,
            "repetitions",
            n_permutations,
            _has_tests(summary),
            _has_tests(summary, 1),
        ),
        _summary_table(summary, n_permutations),
        *_normalised_note(run),
        *_kernel_blocks(run.kernel, SYSTEM),
        *_control_blocks(control_comparison(shown), "repetitions"),
        *_missing_blocks(run.missing),
    ]
    if figures and not run.metrics.empty:
        doc.blocks += [
            Heading("Metrics over rounds"),
            _figure(
                lambda: plots.metric_lines(shown, directory, title=title, config=run.config),
                "Every metric over rounds (mean, band: ±1 sd over repetitions; points where "
                "there are only two evaluations); colour = generator, panels = metric and model, "
                "each axis in the metric's unit (see the Glossary); the black line is zero.",
            ),
        ]
    doc.blocks.append(Heading("Recourse"))
    if run.recourse is None or run.recourse.empty:
        doc.blocks.append(Paragraph("No recourse statistics were recorded."))
    else:
        doc.blocks.append(
            Table(per_system, "Per system, over the whole run", headers=RECOURSE_HEADERS)
        )
        if figures:
            doc.blocks.append(
                _figure(
                    lambda: plots.recourse_lines(run.recourse, directory),
                    "Recourse per round (mean, band: ±1 sd over repetitions): the candidate "
                    "pool, the individuals chosen, the share of successful searches and the "
                    "cost of the implemented counterfactuals.",
                )
            )
        doc.blocks.append(
            Table(
                per_round,
                "Per round (means over repetitions)",
                headers=RECOURSE_HEADERS,
                collapsed=len(per_round) > FOLD_ROWS,
            )
        )
    if not dynamics.empty:
        doc.blocks += _dynamics_blocks(
            dynamics_tables(dynamics, run.agents),
            dynamics,
            dynamics_missing,
            directory,
            figures,
            SYSTEM,
            settings=_dynamics_settings(run.config),
            group_column=_group_column(run.config),
        )
    if figures and _two_features(run):
        doc.blocks += [
            Heading("Populations and decision boundaries"),
            _figure(
                lambda: plots.population_scatter(
                    run.initial_population, run.final_population, run.decision_grid, directory
                ),
                "Initial (hollow) and final (filled) populations of the first repetition, "
                "with the initial (dashed) and final (solid) decision boundaries; individuals "
                "who received recourse are outlined in black.",
            ),
        ]
    names = ordered([*metric_order(shown), *metric_order(full.metrics)])
    doc.blocks += _glossary_blocks(names, run.config)
    return doc


def headline(run_dir: str | Path, n: int = 3) -> list[str]:
    """The first ``n`` sentences of a run report's "Largest shifts" (for the terminal)."""
    run = load_run(run_dir)
    shift, _ = split_scope(run.metrics)
    run = replace(run, metrics=shift)
    sentences = largest_shifts(
        run_summary(run),
        SYSTEM,
        recourse_per_system(run.recourse),
        run.n_permutations,
        run.kernel,
    )
    return sentences[:n]


def _decisiveness_form(config: DictConfig | None) -> str | None:
    try:
        return (
            OmegaConf.select(config, "metrics.decisiveness.form", default=None) if config else None
        )
    except Exception:  # an unresolvable interpolation: the reference form
        return None


def _with_normalised(run: RunFiles) -> pd.DataFrame:
    """The run's shift rows with the report's normalised decisiveness beside the reference's."""
    scale = decisiveness_scale(_decisiveness_form(run.config), run.data_rows)
    return with_normalised_decisiveness(run.metrics, scale)


def run_summary(run: RunFiles) -> pd.DataFrame:
    """The final-round summary of a run's shift rows (``summary_table.csv``)."""
    return final_round_summary(
        _with_normalised(run), n_permutations=run.n_permutations, p_value_form=run.p_value_form
    )


def _normalised_note(run: RunFiles) -> list[Block]:
    if "decisiveness" not in set(run.metrics["metric"]):
        return []
    if decisiveness_scale(_decisiveness_form(run.config), run.data_rows) is None:
        return [
            Paragraph(
                "The normalised decisiveness needs the size N of the initial data, which this "
                "run's manifest.json does not record (runs before it did): only the reference "
                "form is shown."
            )
        ]
    return [
        Paragraph(
            "Decisiveness is shown twice: in the reference form (a sum-like norm over the "
            f"{run.data_rows or 'N'} initial data points, which grows with their number) and "
            "normalised by its largest possible value, so that it reads as a share on any data "
            "set (the report computes it; metrics.csv keeps the reference form)."
        )
    ]


def build_run_report(
    run_dir: str | Path,
    figures: bool = True,
    register: Callable[..., None] | None = None,
) -> Path:
    """Write ``report.html`` and ``report.md`` of a run directory.

    Args:
        run_dir: A run directory (with ``metrics.csv``).
        figures: Draw the figures (False: tables and text only).
        register: Called with the paths of the files written (the live run's manifest); by
            default they are added to the directory's ``manifest.json`` if it has one, so that
            a later ``overwrite=true`` removes a rebuilt report too.

    Returns:
        The path of ``report.html``.

    Raises:
        ReportError: If ``run_dir`` is not a run directory.
    """
    started = time.time()
    run = load_run(run_dir)
    directory = run.directory
    shift, dynamics = split_scope(run.metrics)
    run_summary(replace(run, metrics=shift)).to_csv(directory / SUMMARY_TABLE, index=False)
    recourse_per_round(run.recourse).to_csv(directory / RECOURSE_TABLE, index=False)
    written = [directory / name for name in (SUMMARY_TABLE, RECOURSE_TABLE)]
    if not dynamics.empty:
        written += write_dynamics_tables(dynamics_tables(dynamics, run.agents), directory)
    doc = run_document(run, figures)
    write_markdown(doc, directory / RUN_MARKDOWN)
    html = write_html(doc, directory / RUN_HTML)
    written.append(directory / RUN_MARKDOWN)
    figure_dir = directory / "figures"
    if figure_dir.is_dir():  # only what this report drew: never a user's own figures/
        written += [
            f for f in sorted(figure_dir.rglob("*")) if f.is_file() and f.stat().st_mtime >= started
        ]
    if register is None:
        from recourse_sim.simulation.rundir import add_to_manifest  # torch-free callers stay so

        register = partial(add_to_manifest, directory)
    register(*written, html)
    return html


def build_sweep_report(
    sweep_dir: str | Path,
    figures: bool = True,
    jobs: bool = False,
    html: bool = True,
    states: Sequence[JobState] | None = None,
) -> Path | None:
    """Write a sweep's tables and ``shift_report.html``/``.md`` comparing its jobs.

    The tables: ``sweep_metrics.csv`` (every job's metric rows, swept choices as columns),
    ``summary.csv`` (each job's final round per system and metric), ``summary_table.csv``
    (the final round pooled per variant and system).

    Args:
        sweep_dir: A sweep directory (hydra's ``multirun.yaml`` and job directories).
        figures: Draw the figures (False: tables and text only).
        jobs: Also rebuild the report of every job.
        html: Write the report (False: the tables only).
        states: Every job's state (:func:`recourse_sim.sweep.sweep_jobs`; read when not given).

    Returns:
        The path of ``shift_report.html`` (None when ``html`` is false).

    Raises:
        ReportError: If ``sweep_dir`` is not a sweep directory.
    """
    from recourse_sim.report import figures as plots

    figures = figures and html  # figures belong to the report: none without it
    sweep_dir = Path(sweep_dir)
    if not is_sweep_dir(sweep_dir):
        raise ReportError(f"{sweep_dir} is not a sweep directory: no multirun.yaml, no jobs")
    multirun = read_multirun(sweep_dir)
    entries = []
    for job in job_dirs(sweep_dir):
        metrics = load_metrics(job)
        if jobs and metrics is not None:
            build_run_report(job, figures)
        overrides = parse_overrides(read_overrides(job / ".hydra" / "overrides.yaml"))
        entries.append((job, overrides, metrics))
    swept = swept_keys(multirun, [overrides for _, overrides, _ in entries])
    finished = [(job.name, o, m) for job, o, m in entries if m is not None and not m.empty]
    n_permutations = _common(
        [read_n_permutations(job) for job, _, m in entries if m is not None and not m.empty]
    )
    missing = _sweep_missing([job for job, _, m in entries if m is not None and not m.empty])
    combined = sweep_metrics(finished, swept)
    combined.to_csv(sweep_dir / SWEEP_METRICS, index=False)
    per_job = [*(k for k in swept if k not in SYSTEM_KEYS), *SYSTEM]
    finished_dirs = [job for job, _, m in entries if m is not None and not m.empty]
    p_value_form = _common([config_p_value_form(read_config(job)) for job in finished_dirs])
    job_summary = (
        final_round_summary(
            combined,
            ["job", *per_job],
            n_permutations=n_permutations,
            p_value_form=p_value_form or "reference",
        )
        if finished
        else None
    )
    if job_summary is None:
        job_summary = pd.DataFrame(columns=["job", *per_job, "metric", "scope", "round", "n"])
    order = ["job", *per_job, "metric", "scope"]
    job_summary[order + [c for c in job_summary.columns if c not in order]].to_csv(
        sweep_dir / SWEEP_SUMMARY, index=False
    )
    if states is None:
        from recourse_sim.sweep.jobs import sweep_jobs

        states = sweep_jobs(sweep_dir)
    # sweep_metrics.csv keeps every row; the shift tables below see the shift rows only.
    combined, dynamics = split_scope(combined)
    missing, dynamics_missing = split_missing(missing, dynamics)
    variants = variant_keys(swept)
    by = [*variants, *SYSTEM]
    combined = _sweep_normalised(combined, finished_dirs)
    summary = (
        final_round_summary(
            combined,
            by,
            per=["job"],
            n_permutations=n_permutations,
            p_value_form=p_value_form or "reference",
        )
        if finished
        else final_round_summary(pd.DataFrame(), by)
    )
    summary.to_csv(sweep_dir / SUMMARY_TABLE, index=False)
    kernel = _sweep_kernel(entries, variants)
    title = sweep_title(entries, swept)

    doc = Document(f"Sweep shift report: {title}", str(sweep_dir.resolve()))
    doc.blocks += [Heading("Sweep"), *_sweep_brief(multirun, entries, swept)]
    doc.blocks += [
        Heading("Jobs"),
        Table(_jobs_table(sweep_dir, entries, swept, states)),
        *_pending_blocks(states),
    ]
    if not finished:
        doc.blocks.append(Paragraph("No job of this sweep has written metrics.csv yet."))
    else:
        reading = largest_shifts(
            summary, by, n_permutations=n_permutations, kernel=kernel, unit="runs"
        )
        hue = "system" if variants else "generator"
        labelled = add_system_label(combined, variants)
        rows = final_rows(labelled, ["job", *SYSTEM])
        pooled = "jobs and repetitions" if len(finished) > 1 else "repetitions"
        runs = f"runs per system ({pooled})"
        doc.blocks += [
            Heading("Largest shifts"),
            Bullets(tuple(reading)) if reading else Paragraph("No metric values were recorded."),
            Heading("Final-round summary"),
            _summary_note(
                _count(rows, by),
                runs,
                n_permutations,
                _has_tests(summary),
                _has_tests(summary, 1),
                "run (a repetition of a job)",
            ),
            _summary_table(summary, n_permutations),
            *_kernel_blocks(kernel, by),
            *_control_blocks(
                control_comparison(
                    combined,
                    by,
                    per=["job"],
                    paired_on=[k for k in swept if k not in SYSTEM and k not in by],
                ),
                "job replicate and repetition",
            ),
            *_missing_blocks(missing, ["job"]),
        ]
        if figures:
            doc.blocks += [
                Heading("Final-round comparison"),
                _figure(
                    lambda: plots.sweep_bars(rows, sweep_dir, hue=hue, title=title),
                    f"Final-round values (bars: mean, error bars: ±1 sd over {pooled}); "
                    f"panels = metric × model, colour = {hue}.",
                ),
                Heading("Metrics over rounds"),
                _figure(
                    lambda: plots.metric_lines(labelled, sweep_dir, hue=hue, title=title),
                    f"Every metric over rounds, pooled over {pooled} (mean, band: ±1 sd; points "
                    f"where there are only two evaluations); colour = {hue}; the black line is "
                    "zero.",
                ),
            ]
    if not dynamics.empty:
        agents = _sweep_agents(entries, swept)
        tables = dynamics_tables(dynamics, agents, by, per=["job"])
        write_dynamics_tables(tables, sweep_dir)
        doc.blocks += _dynamics_blocks(
            tables,
            dynamics,
            dynamics_missing,
            sweep_dir,
            figures,
            by,
            per=["job"],
            run="run",
            group_column=_common_group_column(entries),
        )
    if finished:
        first_config = read_config(finished_dirs[0]) if finished_dirs else None
        names = ordered([*metric_order(combined), *metric_order(dynamics)])
        doc.blocks += _glossary_blocks(names, first_config)
    if not html:
        return None
    write_markdown(doc, sweep_dir / SWEEP_MARKDOWN)
    return write_html(doc, sweep_dir / SWEEP_HTML)


def _pending_blocks(states: Sequence[JobState]) -> list[Block]:
    """The jobs that are not done, with why and the command that runs each (none: nothing)."""
    pending = [job for job in states if job.state != "done"]
    if not pending:
        return []
    from recourse_sim.sweep.collect import JOBS_FILE

    table = pd.DataFrame(
        {
            "job": [job.name for job in pending],
            "state": [job.state for job in pending],
            "why": [job.detail for job in pending],
            "command": [job.command() for job in pending],
        }
    )
    return [
        Heading("Jobs not done"),
        Paragraph(
            f"{len(pending)} of {len(states)} jobs are not done (every job with its state: "
            f"{JOBS_FILE}). Re-launching the sweep's command skips the finished jobs and "
            "continues the unfinished ones from their checkpoints; each command below runs one "
            "job alone."
        ),
        Table(table),
    ]


def _sweep_normalised(combined: pd.DataFrame, jobs: list[Path]) -> pd.DataFrame:
    """The normalised decisiveness of every job, each by its own data size and form."""
    if combined.empty or "job" not in combined:
        return combined
    scales = {
        job.name: decisiveness_scale(_decisiveness_form(read_config(job)), read_data_rows(job))
        for job in jobs
    }
    scale = combined["job"].map(scales).astype(float)
    return with_normalised_decisiveness(combined, scale)


def _sweep_kernel(entries, variants: list[str]) -> pd.DataFrame | None:
    """The ``kernel_warnings.csv`` rows of all jobs, with ``job`` and variant columns."""
    frames = []
    for job, overrides, _ in entries:
        frame = load_kernel_warnings(job)
        if frame is None or frame.empty:
            continue
        for key in reversed(variants):
            frame.insert(0, key, overrides.get(key, ""))
        frames.append(frame.assign(job=job.name))
    return pd.concat(frames, ignore_index=True) if frames else None


def _sweep_missing(jobs: list[Path]) -> pd.DataFrame | None:
    """The ``missing_values.csv`` rows of all jobs, with a ``job`` column (None if none)."""
    frames = []
    for job in jobs:
        frame = load_missing(job)
        if frame is not None and not frame.empty:
            frames.append(frame.assign(job=job.name))
    return pd.concat(frames, ignore_index=True) if frames else None


def _sweep_agents(entries, swept: list[str]) -> pd.DataFrame | None:
    """The ``agents.csv`` rows of all jobs with results, with ``job`` and swept-key columns."""
    extra = [key for key in swept if key not in SYSTEM]
    frames = []
    for job, overrides, metrics in entries:
        if metrics is None or metrics.empty:
            continue
        agents = load_agents(job)
        if agents is None:
            continue
        for key in reversed(extra):
            agents.insert(0, key, overrides.get(key, ""))
        agents.insert(0, "job", job.name)
        frames.append(agents)
    return pd.concat(frames, ignore_index=True) if frames else None


def _common_group_column(entries) -> str | None:
    """``data.group`` shared by every job with results (None if they differ or have none)."""
    columns = {
        _group_column(read_config(job))
        for job, _, metrics in entries
        if metrics is not None and not metrics.empty
    }
    return columns.pop() if len(columns) == 1 else None


def _count(rows: pd.DataFrame, by: list[str]) -> str:
    """How many values each final-round statistic pools (a range when systems differ)."""
    sizes = rows.groupby(["metric", *by], sort=False).size()
    low, high = int(sizes.min()), int(sizes.max())
    return str(low) if low == high else f"{low} to {high}"


def _sweep_brief(multirun, entries, swept: list[str]) -> list[Table]:
    """The sweep's overrides and jobs, and the configuration shared by its jobs."""
    from omegaconf import OmegaConf

    task = OmegaConf.select(multirun, "hydra.overrides.task", default=None) if multirun else None
    finished = sum(metrics is not None for _, _, metrics in entries)
    rows = [
        ("overrides", " ".join(str(t) for t in task) if task else "unknown"),
        ("jobs", f"{len(entries)} ({finished} with results)"),
        ("swept", ", ".join(swept) if swept else "none"),
    ]
    tables = [Table(pd.DataFrame(rows, columns=["setting", "value"]))]
    first = next((job for job, _, metrics in entries if metrics is not None), None)
    if first is not None:
        run = load_run(first)
        brief = config_brief(replace(run, metrics=split_scope(run.metrics)[0]))
        keep = ~brief["setting"].isin(["overrides", "models", "generators", "seed", *swept])
        caption = f"Configuration of job {first.name} (the jobs differ in the swept keys only)"
        tables.append(Table(brief[keep].reset_index(drop=True), caption))
    return tables


def _jobs_table(sweep_dir: Path, entries, swept: list[str], states=()) -> pd.DataFrame:
    state_of = {job.name: job.state for job in states}
    records = []
    for job, overrides, metrics in entries:
        report = job / RUN_HTML
        record = {
            "job": Link(job.name, report.relative_to(sweep_dir).as_posix())
            if report.is_file()
            else job.name
        }
        record.update({key: overrides.get(key, "") for key in swept})
        if metrics is None or metrics.empty:
            record.update(models="", generators="", rounds="", status="no metrics.csv")
        else:
            record.update(
                models=", ".join(ordered(metrics["model"])),
                generators=", ".join(ordered(metrics["generator"])),
                rounds=int(metrics["round"].max()),
                status="finished" if (job / "final_population.csv").is_file() else "partial",
            )
        if job.name in state_of:
            record["status"] = state_of[job.name]
        records.append(record)
    return pd.DataFrame(records)


def build_report(path: str | Path, figures: bool = True, jobs: bool = False) -> Path:
    """Build the report of a run directory or a sweep directory, whichever ``path`` is.

    Returns:
        The path of the HTML report.

    Raises:
        ReportError: If ``path`` is neither a run nor a sweep directory.
    """
    path = Path(path)
    if is_run_dir(path):
        return build_run_report(path, figures)
    if is_sweep_dir(path):
        return build_sweep_report(path, figures, jobs)
    raise ReportError(
        f"{path} is neither a run directory (no metrics.csv) nor a sweep directory "
        f"(no multirun.yaml and no job directories with metrics.csv)"
    )
