"""The numbers of the time-based view: recourse over rounds, population flows, groups of agents.

A run with time-based dynamics (agents arrive, compete for a limited number of favourable
decisions, act on advice over several rounds and leave) writes two things besides its shift
metrics:

- rows of ``metrics.csv`` with ``scope`` ``dynamics``: one per round 0..T, system and metric
  (:data:`FLOW_METRICS`, ``threshold``, ``threshold_drift``, :data:`RECOURSE_METRICS`,
  ``n_failures``); with groups also ``<metric>@<level>`` (e.g. ``time_to_recourse@SEX=1``) and the
  group comparisons :data:`COMPARISONS`;
- ``agents.csv``: one row per agent and system (columns: ``recourse_sim.simulation.frames``).

A run without dynamics writes neither, and its report is exactly the shift report: everything
here is used only when :func:`has_dynamics` is true. A missing value (an empty cell: e.g. a
reliability in a round where nobody qualified) is a gap: it is left out of every mean and count,
never read as 0.

Every table is computed from those two files alone, so it can be checked with a few lines of
pandas. ``by`` names the columns that identify a system (``model, generator``; a sweep adds its
variant keys); ``per`` the columns that separate independent runs besides ``repetition``
(``job`` in a sweep). A *run* below is one repetition of one job.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from recourse_sim.report.tables import SYSTEM, ordered

log = logging.getLogger(__name__)

#: The ``scope`` of the rows written by time-based dynamics.
DYNAMICS_SCOPE = "dynamics"
#: Separates a metric from its group level: ``time_to_recourse@SEX=1``.
GROUP_SEPARATOR = "@"
#: Population flows per round (counts of agents).
FLOW_METRICS = ("n_active", "n_arrivals", "n_favourable", "n_exits")
#: What recourse achieves over rounds.
RECOURSE_METRICS = (
    "reliability",
    "time_to_recourse",
    "effort_to_recourse",
    "effort_to_recourse_score",
)
#: Metrics the runs write per group level.
GROUP_METRICS = (*RECOURSE_METRICS, "n_active", "n_favourable")
#: Group comparisons written per round, with their plain-language names.
COMPARISONS = {
    "time_to_recourse_difference": "time to recourse: difference of group means (rounds)",
    "effort_to_recourse_ratio": "effort to recourse: ratio of group means",
}
#: Plain-language names and units of the per-round metrics (axis labels and prose).
LABELS = {
    "reliability": ("reliability", "share of qualifying agents"),
    "time_to_recourse": ("time to recourse", "rounds"),
    "effort_to_recourse": ("effort to recourse", "distance, standardised feature units"),
    "effort_to_recourse_score": ("score gain to recourse", "score (probability)"),
    "threshold": ("decision threshold", "probability"),
    "threshold_drift": ("threshold drift", "change of probability"),
    "n_active": ("active agents", "agents"),
    "n_arrivals": ("arrivals", "agents"),
    "n_exits": ("exits", "agents"),
    "n_favourable": ("favourable decisions", "agents"),
    "n_advice": ("advice given", "agents"),
    "n_failures": ("failures", "agents"),
}
#: The order in which per-round metrics are listed.
METRIC_ORDER = (
    *FLOW_METRICS,
    "n_advice",
    "threshold",
    "threshold_drift",
    "reliability",
    "n_failures",
    "time_to_recourse",
    "effort_to_recourse",
    "effort_to_recourse_score",
    *COMPARISONS,
)

SUMMARY_COLUMNS = (
    "runs",
    "rounds",
    "reliability",
    "rounds_counted",
    "rounds_without_reliability",
    "time_to_recourse",
    "effort_to_recourse",
    "effort_to_recourse_score",
    "failures",
    "agents",
    "ever_favourable",
    "initial_threshold",
    "final_threshold",
)
AGENT_SUMMARY = ("agents", "ever_favourable")


def is_dynamics(metrics: pd.DataFrame) -> pd.Series:
    """Which rows of a ``metrics.csv`` frame the time-based dynamics wrote."""
    if "scope" not in metrics.columns:
        return pd.Series(False, index=metrics.index)
    return metrics["scope"] == DYNAMICS_SCOPE


def has_dynamics(metrics: pd.DataFrame | None) -> bool:
    """Whether a frame holds any row of time-based dynamics."""
    return metrics is not None and not metrics.empty and bool(is_dynamics(metrics).any())


def split_scope(metrics: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(shift rows, dynamics rows)``; a frame without dynamics comes back as it is."""
    mask = is_dynamics(metrics)
    if not mask.any():
        return metrics, metrics.iloc[:0]
    return metrics[~mask].reset_index(drop=True), metrics[mask].reset_index(drop=True)


def split_metric(name: str) -> tuple[str, str | None]:
    """``time_to_recourse@SEX=1`` -> ``("time_to_recourse", "SEX=1")``; no level: ``None``."""
    base, sep, level = str(name).partition(GROUP_SEPARATOR)
    return (base, level) if sep else (base, None)


def group_levels(dynamics: pd.DataFrame) -> list[str]:
    """The group levels of the ``@`` metrics, in the order the run wrote them."""
    levels = (split_metric(name)[1] for name in dynamics["metric"])
    return ordered(level for level in levels if level is not None)


def rolling_window(n_rounds: int) -> int:
    """Rounds in the centred rolling mean: about a tenth of the run, odd, at least 3."""
    window = max(3, int(n_rounds) // 10)
    return window if window % 2 else window + 1


def _runs(by: Sequence[str], per: Sequence[str]) -> list[str]:
    return [*per, "repetition", *by]


def _rank(values: pd.Series) -> dict:
    return {v: i for i, v in enumerate(ordered(values))}


def _sort(frame: pd.DataFrame, by: Sequence[str], then: Sequence[str] = ()) -> pd.DataFrame:
    """Systems in order of appearance, then the columns ``then`` by value."""
    if frame.empty:
        return frame.reset_index(drop=True)
    rank = pd.DataFrame({k: frame[k].map(_rank(frame[k])) for k in by}, index=frame.index)
    for k in then:
        rank[k] = frame[k]
    keys = [*by, *then]
    if not keys:
        return frame.reset_index(drop=True)
    return frame.loc[rank.sort_values(keys, kind="stable").index].reset_index(drop=True)


def per_round(
    dynamics: pd.DataFrame, by: Sequence[str] = SYSTEM, per: Sequence[str] = ()
) -> pd.DataFrame:
    """Every dynamics metric per round and system, over runs (the numbers behind the figures).

    Returns:
        ``*by, metric, round, n, mean, sd, rolling_mean``: ``n`` counts the runs with a value in
        that round (a missing value counts nowhere), ``mean`` and ``sd`` (sample standard
        deviation) are over those runs, NaN where none has a value. ``rolling_mean`` is the
        centred rolling mean of ``mean`` over :func:`rolling_window` rounds, taken over the rounds
        of the window that have a value, and left empty where the round itself has none (a gap
        stays a gap).
    """
    by = list(by)
    columns = [*by, "metric", "round", "n", "mean", "sd", "rolling_mean"]
    if dynamics.empty:
        return pd.DataFrame(columns=columns)
    table = (
        dynamics.groupby([*by, "metric", "round"], sort=False, dropna=False)["value"]
        .agg(n="count", mean="mean", sd="std")
        .reset_index()
    )
    metric_rank = {m: i for i, m in enumerate(ordered(table["metric"], METRIC_ORDER))}
    table["_metric"] = table["metric"].map(metric_rank)
    table = _sort(table, by, ["_metric", "round"])
    window = rolling_window(int(table["round"].max()) - int(table["round"].min()))
    rolling = []
    for _, rows in table.groupby([*by, "metric"], sort=False, dropna=False):
        series = rows.set_index("round")["mean"]
        full = series.reindex(range(int(series.index.min()), int(series.index.max()) + 1))
        smooth = full.rolling(window, center=True, min_periods=1).mean().reindex(series.index)
        rolling.append(smooth.where(series.notna()).set_axis(rows.index))
    table["rolling_mean"] = pd.concat(rolling) if rolling else pd.Series(dtype=float)
    return table.drop(columns="_metric").reset_index(drop=True)[columns]


def _pooled(dynamics: pd.DataFrame, metric: str, by: list[str]) -> pd.Series:
    """Mean of a metric over every run and round with a value, per system."""
    rows = dynamics[dynamics["metric"] == metric]
    return rows.groupby(by, sort=False, dropna=False)["value"].mean()


def _at_round(dynamics: pd.DataFrame, metric: str, by: list[str], per: list[str], last: bool):
    """A metric at each run's last (or first) round, averaged over runs, per system."""
    rows = dynamics[dynamics["metric"] == metric]
    if rows.empty:
        return pd.Series(dtype=float)
    runs = _runs(by, per)
    edge = rows.groupby(runs, sort=False, dropna=False)["round"].transform("max" if last else "min")
    return rows[rows["round"] == edge].groupby(by, sort=False, dropna=False)["value"].mean()


def agent_summary(
    agents: pd.DataFrame | None, by: Sequence[str] = SYSTEM, per: Sequence[str] = (), extra=()
) -> pd.DataFrame | None:
    """Agents per run and the share ever favourable, per system (and ``extra`` columns).

    Returns:
        ``*by, *extra, agents, ever_favourable, agent_time_to_recourse``: the mean number of
        agents per run, the share of all agents (pooled over runs) with a ``favourable_round``,
        and the mean rounds from entry to the first favourable decision of the agents rejected
        first (pooled over runs); None without ``agents.csv``.
    """
    by, extra, per = list(by), list(extra), list(per)
    needed = {*per, *by, *extra, "favourable_round", "entered_round", "repetition"}
    if agents is None or not needed <= set(agents.columns):
        return None
    waited = agents["favourable_round"] - agents["entered_round"]
    frame = agents.assign(
        _favourable=agents["favourable_round"].notna(),
        # Favourable later than at its first decision: rejected first (time to recourse > 0).
        _waited=waited.where(waited > 0),
    )
    keys = [*by, *extra]
    grouped = frame.groupby(keys, sort=False, dropna=False)
    table = grouped.agg(
        total=("_favourable", "size"),
        ever_favourable=("_favourable", "mean"),
        agent_time_to_recourse=("_waited", "mean"),
    )
    runs = frame.drop_duplicates([*per, "repetition", *by]).groupby(by, sort=False, dropna=False)
    n_runs = runs.size().rename("n_runs")
    table = table.reset_index().join(n_runs, on=by)
    table["agents"] = table["total"] / table["n_runs"]
    return table[[*keys, "agents", "ever_favourable", "agent_time_to_recourse"]]


def dynamics_summary(
    dynamics: pd.DataFrame,
    agents: pd.DataFrame | None = None,
    by: Sequence[str] = SYSTEM,
    per: Sequence[str] = (),
) -> pd.DataFrame:
    """One row per system summarising the run over time.

    Returns:
        ``*by, runs, rounds, reliability, rounds_counted, rounds_without_reliability,
        time_to_recourse, effort_to_recourse, effort_to_recourse_score, failures, [agents,
        ever_favourable,] initial_threshold, final_threshold``:

        - ``runs``: repetitions (of every job, in a sweep); ``rounds``: the last round;
        - ``reliability``, ``time_to_recourse``, ``effort_to_recourse``,
          ``effort_to_recourse_score``: means over every run and round with a value (each round
          weighs the same, however many agents it counted); missing values are left out; with
          ``agents.csv``, ``time_to_recourse`` is the mean over agents instead (rejected first,
          favourable later);
        - ``rounds_counted``: the rounds after round 0, over all runs;
          ``rounds_without_reliability``: those of them without a reliability value (nobody
          qualified);
        - ``failures``: agents who crossed the threshold after acting but were not favourable,
          summed over the rounds of a run, mean over runs;
        - ``agents``, ``ever_favourable`` (only with ``agents.csv``): agents per run, share of
          them favourable at some decision;
        - ``initial_threshold``, ``final_threshold``: the threshold at each run's first and last
          round, mean over runs.
    """
    by, per = list(by), list(per)
    summary_columns = [c for c in SUMMARY_COLUMNS if agents is not None or c not in AGENT_SUMMARY]
    columns = [*by, *summary_columns]
    if dynamics.empty:
        return pd.DataFrame(columns=columns)
    runs = _runs(by, per)
    plain = dynamics[~dynamics["metric"].astype(str).str.contains(GROUP_SEPARATOR, regex=False)]
    grouped = plain.groupby(by, sort=False, dropna=False)
    table = pd.DataFrame(
        {
            "runs": plain.drop_duplicates(runs).groupby(by, sort=False, dropna=False).size(),
            "rounds": grouped["round"].max(),
        }
    )
    for metric in RECOURSE_METRICS:
        table[metric] = _pooled(plain, metric, by)
    reliability = plain[(plain["metric"] == "reliability") & (plain["round"] > 0)]
    counted = reliability.groupby(by, sort=False, dropna=False)["value"]
    table["rounds_counted"] = counted.size()
    table["rounds_without_reliability"] = counted.size() - counted.count()
    failures = plain[plain["metric"] == "n_failures"]
    if not failures.empty:
        per_run = failures.groupby(runs, sort=False, dropna=False)["value"].sum(min_count=1)
        table["failures"] = per_run.groupby(by, sort=False, dropna=False).mean()
    table["initial_threshold"] = _at_round(plain, "threshold", by, per, last=False)
    table["final_threshold"] = _at_round(plain, "threshold", by, per, last=True)
    table = table.reset_index()
    agent_table = agent_summary(agents, by, per)
    if agent_table is not None:
        table = table.merge(agent_table, on=by, how="left")
        # Per agent rather than per round: without arrivals every agent entered at round 0 and
        # the per-round means of time to recourse would only average the round numbers.
        per_agent = table.pop("agent_time_to_recourse")
        table["time_to_recourse"] = per_agent.where(per_agent.notna(), table["time_to_recourse"])
    elif agents is not None:
        table[list(AGENT_SUMMARY)] = float("nan")
    table = table.reindex(columns=columns)
    for column in ("rounds_counted", "rounds_without_reliability"):
        table[column] = table[column].fillna(0).astype(int)
    return _sort(table, by)


def group_summary(
    dynamics: pd.DataFrame,
    agents: pd.DataFrame | None = None,
    by: Sequence[str] = SYSTEM,
    per: Sequence[str] = (),
) -> pd.DataFrame:
    """One row per system and group level, from the ``<metric>@<level>`` rows.

    Returns:
        ``*by, group, reliability, time_to_recourse, effort_to_recourse,
        effort_to_recourse_score, n_active, n_favourable, [agents, ever_favourable]``: each metric
        averaged over every run and round with a value (``n_active``, ``n_favourable``: agents
        per round); with ``agents.csv``, agents per run and the share ever favourable of the
        agents whose ``group`` is the level. Empty when the run has no groups.
    """
    by = list(by)
    agent_columns = list(AGENT_SUMMARY) if agents is not None else []
    columns = [*by, "group", *GROUP_METRICS, *agent_columns]
    if dynamics.empty:
        return pd.DataFrame(columns=columns)
    parts = [split_metric(name) for name in dynamics["metric"]]
    grouped = dynamics.assign(base=[p[0] for p in parts], group=[p[1] for p in parts])
    grouped = grouped[grouped["group"].notna()]
    if grouped.empty:
        return pd.DataFrame(columns=columns)
    means = grouped.groupby([*by, "group", "base"], sort=False, dropna=False)["value"].mean()
    table = means.unstack("base").reset_index()
    bases = ordered(grouped["base"], GROUP_METRICS)
    table = table.reindex(columns=[*by, "group", *GROUP_METRICS, *bases])
    table = table.loc[:, ~table.columns.duplicated()]
    if agents is not None:
        agent_table = None
        if "group" in agents.columns:
            labels = agents["group"]
            with_groups = agents.assign(group=labels.where(labels.isna(), labels.astype(str)))
            agent_table = agent_summary(with_groups, by, per, extra=["group"])
        if agent_table is not None and not set(agent_table["group"]) & set(table["group"]):
            log.warning(
                "the groups of agents.csv (%s) match none of the levels of metrics.csv (%s); "
                "the agent columns of the group table stay empty",
                ", ".join(map(str, ordered(agent_table["group"]))),
                ", ".join(group_levels(dynamics)),
            )
        if agent_table is not None:
            table = table.merge(agent_table, on=[*by, "group"], how="left")
        else:
            table[agent_columns] = float("nan")
    levels = {level: i for i, level in enumerate(group_levels(dynamics))}
    table["_level"] = table["group"].map(levels)
    return _sort(table, by, ["_level"]).drop(columns="_level")


def group_comparison(
    dynamics: pd.DataFrame, by: Sequence[str] = SYSTEM, per: Sequence[str] = ()
) -> pd.DataFrame:
    """The group comparisons the run wrote each round, averaged per system.

    Returns:
        ``*by, comparison, n, mean, sd``: per comparison metric (:data:`COMPARISONS`), the mean
        and sample standard deviation over every run and round with a value, and how many there
        were. Empty when the run wrote none.
    """
    by = list(by)
    columns = [*by, "comparison", "n", "mean", "sd"]
    rows = dynamics[dynamics["metric"].isin(list(COMPARISONS))] if not dynamics.empty else dynamics
    if rows.empty:
        return pd.DataFrame(columns=columns)
    table = (
        rows.groupby([*by, "metric"], sort=False, dropna=False)["value"]
        .agg(n="count", mean="mean", sd="std")
        .reset_index()
        .rename(columns={"metric": "comparison"})
    )
    order = {name: i for i, name in enumerate(COMPARISONS)}
    table["_comparison"] = table["comparison"].map(order)
    return _sort(table, by, ["_comparison"]).drop(columns="_comparison")[columns]


@dataclass
class DynamicsTables:
    """Every table of the time-based view of a run or a sweep.

    Attributes:
        per_round: :func:`per_round`.
        summary: :func:`dynamics_summary`.
        groups: :func:`group_summary` (empty without groups).
        comparison: :func:`group_comparison` (empty without groups).
        levels: The group levels, in the run's order.
        has_agents: Whether ``agents.csv`` was there.
    """

    per_round: pd.DataFrame
    summary: pd.DataFrame
    groups: pd.DataFrame
    comparison: pd.DataFrame
    levels: list[str] = field(default_factory=list)
    has_agents: bool = False


def dynamics_tables(
    dynamics: pd.DataFrame,
    agents: pd.DataFrame | None = None,
    by: Sequence[str] = SYSTEM,
    per: Sequence[str] = (),
) -> DynamicsTables:
    """Compute every table of the time-based view (``dynamics``: the rows of that scope)."""
    return DynamicsTables(
        per_round=per_round(dynamics, by, per),
        summary=dynamics_summary(dynamics, agents, by, per),
        groups=group_summary(dynamics, agents, by, per),
        comparison=group_comparison(dynamics, by, per),
        levels=group_levels(dynamics) if not dynamics.empty else [],
        has_agents=agents is not None,
    )
