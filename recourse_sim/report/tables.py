"""The numbers of a report: final-round aggregates, recourse statistics, sweep summaries.

Every table here is computed from the long ``metrics.csv`` / ``recourse.csv`` frames only, so a
report can be checked against the raw files with a few lines of pandas (the tests do exactly that).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from recourse_sim.report.files import RunFiles
from recourse_sim.report.statistics import holm_adjusted, round_statistics

#: The metrics of the reference study, in the order reports list them; others follow by name.
METRIC_ORDER = (
    "mmd_domain",
    "mmd_model",
    "mmd_model_grid",
    "disagreement",
    "decisiveness",
    "decisiveness_normalised",
    "perturbation",
    "f1_change",
)
#: The per-round recourse statistics a report shows.
RECOURSE_STATS = ("n_candidates", "n_chosen", "success_rate", "cost")
SYSTEM = ("model", "generator")
#: The interval and significance columns of :func:`final_round_summary`, after ``sd``.
STATISTIC_COLUMNS = (
    "ci_low",
    "ci_high",
    "p_value",
    "n_tested",
    "n_significant",
    "p_combined",
    "p_holm",
)
#: Swept keys that replicate a job rather than define a variant (pooled in sweep summaries).
REPLICATION_KEYS = frozenset({"seed"})
#: Override keys whose value is already a column of ``metrics.csv`` (the option names).
SYSTEM_KEYS = frozenset(SYSTEM)


def ordered(values: Iterable, order: Sequence = ()) -> list:
    """Unique ``values``: those in ``order`` first (in that order), then the rest as they appear."""
    unique = list(dict.fromkeys(values))
    known = [v for v in order if v in unique]
    return known + [v for v in unique if v not in known]


def metric_order(metrics: pd.DataFrame) -> list[str]:
    """The metrics present in a frame, in report order."""
    return ordered(metrics["metric"], METRIC_ORDER)


def final_rows(metrics: pd.DataFrame, by: Sequence[str] = SYSTEM) -> pd.DataFrame:
    """The rows of the last evaluated round of every group ``by`` (a system, or a job's system)."""
    if metrics.empty:
        return metrics.copy()
    last = metrics.groupby(list(by), sort=False, dropna=False)["round"].transform("max")
    return metrics[metrics["round"] == last].copy()


def final_round_summary(
    metrics: pd.DataFrame,
    by: Sequence[str] = SYSTEM,
    per: Sequence[str] = (),
    n_permutations: int | None = None,
    p_value_form: str = "reference",
) -> pd.DataFrame:
    """Mean, interval and significance of every metric at the final round.

    Args:
        metrics: Rows of ``metrics.csv`` (a sweep may add columns such as ``job`` or swept keys).
        by: The columns that identify a system; statistics pool the rows of each system and
            metric at its last round (the repetitions of a run, or every job and repetition of a
            sweep variant).
        per: Columns that separate independent runs (``job`` in a sweep): the last round is
            taken per run and system.
        n_permutations: ``P`` of the p-values (for their exact form ``(b + 1)/(P + 1)``).
        p_value_form: ``simulation.p_value`` of the runs (``reference`` or ``corrected``).

    Returns:
        One row per metric and system: ``metric, scope, *by, round, n, mean, sd, ci_low,
        ci_high, p_value, n_tested, n_significant, p_combined, p_holm``. ``n`` counts the values
        that are not missing, ``sd`` is the sample standard deviation and ``ci_low, ci_high``
        the 95 % t interval of the mean (NaN for a single value); ``p_value`` is the mean of
        the available p-values (descriptive only: it is not a test), ``n_tested`` and
        ``n_significant`` count the repetitions with a p-value and those with p < 0.05,
        ``p_combined`` is Fisher's combination of them and ``p_holm`` its Holm adjustment over
        every row of the table (see :mod:`recourse_sim.report.statistics`). A missing value
        (an empty ``value`` cell) counts nowhere, and neither does a p-value recorded beside
        one (older runs wrote NaN values with a p-value of 0).
    """
    by = list(by)
    columns = ["metric", "scope", *by, "round", "n", "mean", "sd", *STATISTIC_COLUMNS]
    if metrics.empty:
        return pd.DataFrame(columns=columns)
    last = final_rows(metrics, [*per, *by])
    last["p_value"] = last["p_value"].where(last["value"].notna())
    keys = ["metric", "scope", *by]
    grouped = last.groupby(keys, sort=False, dropna=False)
    summary = grouped.agg(
        round=("round", "max"),
        n=("value", "count"),
        mean=("value", "mean"),
        sd=("value", "std"),
        p_value=("p_value", "mean"),
    )
    tests = pd.DataFrame(
        {
            key: round_statistics(group, n_permutations, p_value_form)
            for key, group in grouped[["value", "p_value"]]
        }
    ).T
    tests.index.names = keys
    summary = summary.join(tests).reset_index()
    summary["p_holm"] = holm_adjusted(summary["p_combined"].to_numpy(dtype=float))
    for column in ("n_tested", "n_significant"):
        summary[column] = summary[column].astype(int)
    return _sort(summary, by)[columns]


NORMALISED_DECISIVENESS = "decisiveness_normalised"


def decisiveness_scale(form: str | None, data_rows: int | None) -> float | None:
    """The largest possible decisiveness: ½√N in the reference form, ¼ in the paper's.

    Args:
        form: ``metrics.decisiveness.form`` (``code``, the reference, or ``paper``).
        data_rows: N, the rows of the initial data; None when unknown.

    Returns:
        The divisor of the normalised form, or None when it cannot be known.
    """
    if form == "paper":
        return 0.25
    if not data_rows:
        return None
    return 0.5 * float(data_rows) ** 0.5


def with_normalised_decisiveness(metrics: pd.DataFrame, scale) -> pd.DataFrame:
    """``metrics`` with a ``decisiveness_normalised`` row beside every ``decisiveness`` row.

    The report's own rows (``metrics.csv`` keeps the reference form only): the value divided by
    ``scale``, a number or, in a sweep, a per-row Series (jobs of different data sizes); rows
    whose scale is unknown are left out. No p-value.
    """
    if metrics.empty or scale is None:
        return metrics
    rows = metrics[metrics["metric"] == "decisiveness"].copy()
    if rows.empty:
        return metrics
    if isinstance(scale, pd.Series):
        scale = scale.loc[rows.index]
    rows["value"] = rows["value"] / scale
    rows = rows[pd.Series(scale, index=rows.index).notna()]
    rows["metric"] = NORMALISED_DECISIVENESS
    rows["p_value"] = float("nan")
    return pd.concat([metrics, rows], ignore_index=True)


#: The label of the no-recourse control (``configs/generator/none.yaml``).
CONTROL = "none"


def control_comparison(
    metrics: pd.DataFrame,
    by: Sequence[str] = SYSTEM,
    per: Sequence[str] = (),
    paired_on: Sequence[str] = (),
) -> pd.DataFrame:
    """Each generator's final-round shift beside the no-recourse control's: what recourse adds.

    The control and the generators of a repetition share candidates and random draws (a paired
    design), so the difference is taken per repetition (and per value of the other ``by``
    columns, e.g. the model, and of ``paired_on``, e.g. a sweep's seed) and then averaged.

    Returns:
        One row per metric and non-control system: ``metric, scope, *by, n, mean, control,
        difference, sd_difference``: the generator's mean, the control's mean over the same
        pairs, the mean paired difference (generator − control) and its sample standard
        deviation; ``n`` counts the pairs where both values exist. Empty when the frame holds no
        control rows.
    """
    by = list(by)
    columns = ["metric", "scope", *by, "n", "mean", "control", "difference", "sd_difference"]
    if metrics.empty or CONTROL not in set(metrics["generator"]):
        return pd.DataFrame(columns=columns)
    last = final_rows(metrics, [*per, *by])
    pair = ["metric", "scope", *[c for c in by if c != "generator"], *paired_on, "repetition"]
    control = last[last["generator"] == CONTROL].groupby(pair, dropna=False)["value"].mean()
    others = last[last["generator"] != CONTROL]
    if others.empty:
        return pd.DataFrame(columns=columns)
    paired = others.join(control.rename("control_value"), on=pair)
    paired["difference"] = paired["value"] - paired["control_value"]
    both = paired[paired["value"].notna() & paired["control_value"].notna()]
    table = (
        both.groupby(["metric", "scope", *by], sort=False, dropna=False)
        .agg(
            n=("difference", "count"),
            mean=("value", "mean"),
            control=("control_value", "mean"),
            difference=("difference", "mean"),
            sd_difference=("difference", "std"),
        )
        .reset_index()
    )
    return _sort(table, by)[columns]


MISSING_COLUMNS = ("metric", "model", "generator", "reason")


def missing_summary(missing: pd.DataFrame | None, per: Sequence[str] = ()) -> pd.DataFrame:
    """The reasons of missing metric values (``missing_values.csv``), one row per reason.

    Args:
        missing: Rows ``repetition, round, model, generator, metric, reason`` (a sweep adds
            ``job``), or None.
        per: Columns kept apart before the metric (``job`` in a sweep).

    Returns:
        ``*per, metric, model, generator, reason, values, repetitions, rounds``: how many values
        are missing for that reason, and in which repetitions and rounds. A file without the
        expected columns is returned as it is.
    """
    per = list(per)
    columns = [*per, *MISSING_COLUMNS, "values", "repetitions", "rounds"]
    if missing is None or missing.empty:
        return pd.DataFrame(columns=columns)
    needed = {*per, *MISSING_COLUMNS, "repetition", "round"}
    if not needed <= set(missing.columns):
        return missing.reset_index(drop=True)

    def listed(values: pd.Series) -> str:
        unique = sorted(pd.unique(values.dropna()), key=lambda v: (str(type(v)), v))
        return ", ".join(str(v) for v in unique)

    table = (
        missing.fillna({"reason": "unknown"})
        .groupby([*per, *MISSING_COLUMNS], sort=False, dropna=False)
        .agg(
            values=("round", "size"),
            repetitions=("repetition", listed),
            rounds=("round", listed),
        )
        .reset_index()
    )
    return _sort(table, [*per, "model", "generator"])[columns]


def _sort(frame: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Sort by metric (report order), then by the system columns (order of appearance)."""
    keys = {"metric": ordered(frame["metric"], METRIC_ORDER)} if "metric" in frame else {}
    keys.update({column: ordered(frame[column]) for column in by})
    rank = pd.DataFrame(
        {
            column: frame[column].map({v: i for i, v in enumerate(order)})
            for column, order in keys.items()
        }
    )
    index = rank.sort_values(list(keys), kind="stable").index
    return frame.loc[index].reset_index(drop=True)


def recourse_per_round(recourse: pd.DataFrame | None) -> pd.DataFrame:
    """Recourse statistics per round and system, averaged over repetitions.

    Returns:
        ``round, model, generator, n, n_candidates, n_chosen, success_rate, cost``: ``n`` counts
        the repetitions; the statistics are means over repetitions, skipping the NaN of rounds in
        which nobody was chosen.
    """
    columns = ["round", *SYSTEM, "n", *RECOURSE_STATS]
    if recourse is None or recourse.empty:
        return pd.DataFrame(columns=columns)
    table = (
        recourse.groupby(["round", *SYSTEM], sort=False)
        .agg(n=("repetition", "size"), **{stat: (stat, "mean") for stat in RECOURSE_STATS})
        .reset_index()
    )
    return _sort(table, SYSTEM).sort_values("round", kind="stable").reset_index(drop=True)[columns]


def recourse_per_system(recourse: pd.DataFrame | None) -> pd.DataFrame:
    """Recourse over the whole run, per system.

    Returns:
        ``model, generator, rounds, candidates_per_round, chosen_total, success_rate, cost``:
        the mean candidate pool per round, the number of individuals who received recourse
        (summed over rounds, averaged over repetitions), and the mean success rate and cost over
        all rounds and repetitions in which someone was chosen.
    """
    columns = [
        *SYSTEM,
        "rounds",
        "candidates_per_round",
        "chosen_total",
        "success_rate",
        "cost",
    ]
    if recourse is None or recourse.empty:
        return pd.DataFrame(columns=columns)
    totals = recourse.groupby([*SYSTEM, "repetition"], sort=False)["n_chosen"].sum().reset_index()
    table = recourse.groupby(list(SYSTEM), sort=False).agg(
        rounds=("round", "nunique"),
        candidates_per_round=("n_candidates", "mean"),
        success_rate=("success_rate", "mean"),
        cost=("cost", "mean"),
    )
    table["chosen_total"] = totals.groupby(list(SYSTEM), sort=False)["n_chosen"].mean()
    return _sort(table.reset_index(), SYSTEM)[columns]


# --- configuration and sweeps ------------------------------------------------------------------


def _parse(lines: Sequence[str]) -> list:
    """Parse hydra override strings (an empty list when hydra cannot parse them)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_overrides(list(lines))
    except Exception:
        return []


def _key(override) -> str:
    key = str(override.key_or_group)
    return f"{key}@{override.package}" if override.package else key


def parse_overrides(lines: Sequence[str]) -> dict[str, str]:
    """A job's overrides as ``{key: value}`` (``+``/``++`` dropped; deletions left out).

    Lines that hydra's parser rejects are split at the first ``=``.
    """
    parsed = _parse(lines)
    if not parsed and lines:
        pairs = (line.lstrip("+~").split("=", 1) for line in lines if "=" in line)
        return dict(pairs)
    return {
        _key(o): o.get_value_element_as_str()
        for o in parsed
        if not o.is_delete() and not o.is_sweep_override()
    }


def swept_keys(multirun: DictConfig | None, jobs: Sequence[Mapping[str, str]]) -> list[str]:
    """The keys a sweep varies: sweep syntax in ``multirun.yaml``, or values that differ by job."""
    keys: list[str] = []
    if multirun is not None:
        task = OmegaConf.select(multirun, "hydra.overrides.task", default=None) or []
        keys = [_key(o) for o in _parse([str(line) for line in task]) if o.is_sweep_override()]
    for key in dict.fromkeys(k for job in jobs for k in job):
        values = {job.get(key) for job in jobs}
        if len(values) > 1 and key not in keys:
            keys.append(key)
    return keys


def variant_keys(swept: Sequence[str]) -> list[str]:
    """Swept keys that define variants compared in a sweep report (not seeds, not option names)."""
    return [key for key in swept if key not in REPLICATION_KEYS and key not in SYSTEM_KEYS]


def sweep_metrics(
    jobs: Sequence[tuple[str, Mapping[str, str], pd.DataFrame]], swept: Sequence[str]
) -> pd.DataFrame:
    """All jobs' metric rows in one frame (``summary.csv``).

    Args:
        jobs: ``(job name, parsed overrides, metrics frame)`` per job with results.
        swept: The swept keys; each becomes a column holding the job's choice. Keys that are
            already columns of ``metrics.csv`` (``model``, ``generator``) keep the per-row
            option name recorded by the run.

    Returns:
        ``job, <swept keys...>, repetition, round, model, generator, metric, scope, value,
        p_value``.
    """
    extra = [key for key in swept if key not in SYSTEM_KEYS]
    frames = []
    for name, overrides, metrics in jobs:
        frame = metrics.copy()
        for key in reversed(extra):
            frame.insert(0, key, overrides.get(key, ""))
        frame.insert(0, "job", name)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["job", *extra])
    return pd.concat(frames, ignore_index=True)


def add_system_label(frame: pd.DataFrame, variants: Sequence[str]) -> pd.DataFrame:
    """Add ``system``: the generator, plus the variant choices when a sweep has any."""
    frame = frame.copy()
    label = frame["generator"].astype(str)
    for key in variants:
        label = label + f" | {key}=" + frame[key].astype(str)
    frame["system"] = label
    return frame


def config_brief(run: RunFiles) -> pd.DataFrame:
    """The run's configuration in a few lines (``setting, value``)."""
    rows: list[tuple[str, str]] = []
    cfg, choices = run.config, run.choices
    metrics = run.metrics

    def add(setting: str, value) -> None:
        if value is not None and value != "":
            rows.append((setting, str(value)))

    data = choices.get("data")
    if cfg is not None and "data" in cfg:
        size = OmegaConf.select(cfg, "data.n_samples", default=None)
        target = OmegaConf.select(cfg, "data._target_", default=None)
        data = data or (str(target).rsplit(".", 1)[-1] if target else None)
        if data and size is not None:
            data = f"{data} ({size} samples)"
    add("data", data)
    if run.initial_population is not None:
        features = [c for c in run.initial_population.columns if c not in ("individual", "label")]
        add("training population", f"{len(run.initial_population)} rows x {len(features)} features")
    add("models", ", ".join(ordered(metrics["model"])))
    add("generators", ", ".join(ordered(metrics["generator"])))
    if cfg is not None:
        sim = OmegaConf.select(cfg, "simulation", default=None)
        if isinstance(sim, DictConfig):
            for key in (
                "n_rounds",
                "n_repetitions",
                "recourse_fraction",
                "n_counterfactuals",
                "evaluate_every",
                "candidates",
                "n_permutations",
                "p_value",
            ):
                add(f"simulation.{key}", sim.get(key))
        add("seed", cfg.get("seed"))
    metric_names = ", ".join(metric_order(metrics))
    if "metrics" in choices:
        metric_names = f"{choices['metrics']}: {metric_names}"
    add("metrics", metric_names)
    add("overrides", " ".join(run.overrides) if run.overrides else "none")
    return pd.DataFrame(rows, columns=["setting", "value"])
