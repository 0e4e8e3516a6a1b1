"""Report figures (seaborn and matplotlib), as PNG and SVG in ``<directory>/figures/``.

Plotting uses matplotlib's non-interactive Agg backend, selected here before pyplot is imported,
so reports build on machines without a display. Colours follow a fixed palette keyed by the hue
values, so a generator has the same colour in every figure of a report.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from recourse_sim.report.glossary import plain_name, unit
from recourse_sim.report.tables import (
    METRIC_ORDER,
    RECOURSE_STATS,
    ordered,
)

FIGURE_DIR = "figures"
DPI = 100
#: Class colours of the population scatter (0: unfavourable, 1: favourable).
CLASS_COLOURS = {0: "#d55e00", 1: "#0072b2"}
STAT_LABELS = {
    "n_candidates": "candidates",
    "n_chosen": "chosen",
    "success_rate": "success rate",
    "cost": "cost (distance moved)",
}


def _figure_path(directory: str | Path, name: str) -> Path:
    path = Path(directory) / FIGURE_DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _save(figure, path: Path) -> Path:
    """Write the PNG (embedded in reports) and an SVG beside it (for papers); return the PNG."""
    figure.savefig(path, dpi=DPI, bbox_inches="tight")
    figure.savefig(path.with_suffix(".svg"), bbox_inches="tight")
    plt.close(figure)
    return path


def palette(values: Sequence[str]) -> dict[str, tuple]:
    """A colour per hue value (colour-blind safe for up to ten values)."""
    colours = sns.color_palette("colorblind", max(len(values), 1))
    return dict(zip(values, colours, strict=False))


def _facet_lines(
    data: pd.DataFrame,
    facet: str,
    facet_order: list[str],
    hue: str,
    path: Path,
    ylabels: dict[str, str] | str,
    title: str | None = None,
    zero_line: bool = True,
) -> Path:
    """Lines over rounds, mean with an sd band over repetitions; facets ``facet`` x model.

    With only two evaluated rounds a line would suggest a trend between them that was never
    measured: the means are drawn as points with sd error bars instead. ``ylabels`` maps each
    facet to its axis label (a string labels them all).
    """
    hue_order = ordered(data[hue])
    models = ordered(data["model"])
    few = data["round"].nunique() <= 2
    common = {
        "data": data,
        "kind": "line",
        "x": "round",
        "y": "value",
        "hue": hue,
        "hue_order": hue_order,
        "palette": palette(hue_order),
        "errorbar": "sd",
        "marker": "o",
        "markersize": 6 if few else 4,
        "height": 2.4,
        "aspect": 1.45,
    }
    if few:
        common.update(linestyle="", err_style="bars", err_kws={"capsize": 3})
    if len(models) == 1:
        grid = sns.relplot(
            col=facet,
            col_order=facet_order,
            col_wrap=min(4, len(facet_order)),
            facet_kws={"sharey": False},
            **common,
        )
        grid.set_titles("{col_name}")
        suptitle = f"{title} (model: {models[0]})" if title else f"model: {models[0]}"
        grid.figure.suptitle(suptitle, y=1.02)
        facet_of_axis = dict(zip(grid.axes.flat, facet_order, strict=False))
    else:
        grid = sns.relplot(
            row=facet,
            row_order=facet_order,
            col="model",
            col_order=models,
            facet_kws={"sharey": "row", "margin_titles": True},
            **common,
        )
        grid.set_titles(row_template="{row_name}", col_template="model: {col_name}")
        if title:
            grid.figure.suptitle(title, y=1.02)
        facet_of_axis = {ax: facet_order[i] for i, row in enumerate(grid.axes) for ax in row}
    for ax in grid.axes.flat:
        facet_value = facet_of_axis.get(ax)
        label = ylabels if isinstance(ylabels, str) else ylabels.get(facet_value, "")
        ax.set_xlabel("round")
        ax.set_ylabel(label)
        if zero_line:
            # A metric's zero is "no change": without it a tiny drift near 0 looks like a trend.
            ax.axhline(0, color="black", linewidth=0.7, zorder=1)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelbottom=True)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    return _save(grid.figure, path)


def metric_lines(
    metrics: pd.DataFrame,
    directory: str | Path,
    hue: str = "generator",
    name: str = "metrics.png",
    title: str | None = None,
    config=None,
) -> Path:
    """Every metric over rounds: mean and sd band over repetitions, hue = generator, facets = model.

    Args:
        metrics: Rows of ``metrics.csv`` (a sweep's pooled rows work too).
        directory: The report directory; the PNG (and SVG) go into its ``figures/``.
        hue: The column that colours the lines (``generator``, or ``system`` for sweep variants).
        name: File name of the PNG.
        title: The figure's title (what the run compared).
        config: The run's configuration (picks the glossary entry of a metric's form).

    Returns:
        The path of the PNG.
    """
    order = ordered(metrics["metric"], METRIC_ORDER)
    names = {metric: plain_name(metric, config) for metric in order}
    data = metrics.assign(metric=metrics["metric"].map(names))
    labels = {names[m]: unit(m, config) for m in order}
    return _facet_lines(
        data, "metric", [names[m] for m in order], hue, _figure_path(directory, name), labels, title
    )


def recourse_lines(
    recourse: pd.DataFrame, directory: str | Path, name: str = "recourse.png"
) -> Path:
    """Candidates, chosen individuals, success rate and cost per round (mean, sd band)."""
    long = recourse.melt(
        id_vars=["repetition", "round", "model", "generator"],
        value_vars=list(RECOURSE_STATS),
        var_name="statistic",
        value_name="value",
    )
    long["statistic"] = long["statistic"].map(STAT_LABELS)
    order = [STAT_LABELS[s] for s in RECOURSE_STATS]
    labels = {STAT_LABELS["success_rate"]: "share", STAT_LABELS["cost"]: "distance"}
    return _facet_lines(
        long, "statistic", order, "generator", _figure_path(directory, name), labels
    )


def _grid_surface(grid: pd.DataFrame, features: list[str]) -> tuple[np.ndarray, ...]:
    """The probabilities of one model as a 2-d surface for ``contour``."""
    surface = grid.pivot_table(index=features[1], columns=features[0], values="proba")
    return surface.columns.to_numpy(), surface.index.to_numpy(), surface.to_numpy()


def population_scatter(
    initial: pd.DataFrame,
    final: pd.DataFrame,
    grid: pd.DataFrame | None,
    directory: str | Path,
    name: str = "populations.png",
) -> Path:
    """Initial and final populations with the initial and final decision boundaries.

    One panel per system (rows = models, columns = generators), for the first repetition: the
    initial population as hollow circles, the final one as filled dots (individuals who received
    recourse outlined in black), the initial boundary dashed and the final one solid (the 0.5
    contour of the models' probabilities in ``decision_grid.csv``). Two-feature data only.

    Raises:
        ValueError: If the data do not have exactly two features.
    """
    features = [c for c in initial.columns if c not in ("individual", "label")]
    if len(features) != 2:
        raise ValueError(f"a population scatter needs two features, got {len(features)}")
    repetition = final["repetition"].min()
    final = final[final["repetition"] == repetition]
    if grid is not None:
        grid = grid[grid["repetition"] == repetition]
    models, generators = ordered(final["model"]), ordered(final["generator"])
    figure, axes = plt.subplots(
        len(models),
        len(generators),
        figsize=(3.6 * len(generators) + 0.4, 3.3 * len(models) + 0.4),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    x, y = features
    for i, model in enumerate(models):
        for j, generator in enumerate(generators):
            ax = axes[i, j]
            ax.scatter(
                initial[x],
                initial[y],
                s=14,
                facecolors="none",
                edgecolors=initial["label"].map(CLASS_COLOURS),
                linewidths=0.6,
                alpha=0.45,
            )
            system = final[(final["model"] == model) & (final["generator"] == generator)]
            if "n_recourse" in system:
                moved = system["n_recourse"].to_numpy() > 0
            else:
                moved = np.zeros(len(system), dtype=bool)
            for subset, edge in ((system[~moved], "none"), (system[moved], "black")):
                ax.scatter(
                    subset[x],
                    subset[y],
                    s=14,
                    c=subset["label"].map(CLASS_COLOURS),
                    edgecolors=edge,
                    linewidths=0.8,
                    alpha=0.8,
                )
            if grid is not None:
                cells = grid[(grid["model"] == model) & (grid["generator"] == generator)]
                for stage, style in (("initial", "--"), ("final", "-")):
                    stage_cells = cells[cells["stage"] == stage]
                    if stage_cells.empty:
                        continue
                    gx, gy, proba = _grid_surface(stage_cells, features)
                    if np.nanmin(proba) < 0.5 < np.nanmax(proba):
                        ax.contour(gx, gy, proba, levels=[0.5], colors="black", linestyles=style)
            ax.set_title(f"{generator} | {model}", fontsize=10)
            if i == len(models) - 1:
                ax.set_xlabel(x)
            if j == 0:
                ax.set_ylabel(y)
    handles = [
        Line2D([], [], ls="", marker="o", mfc="none", mec="grey", label="initial population"),
        Line2D([], [], ls="", marker="o", color="grey", label="final population"),
        Line2D([], [], ls="", marker="o", color="grey", mec="black", label="received recourse"),
        Line2D([], [], ls="", marker="o", color=CLASS_COLOURS[1], label="label 1"),
        Line2D([], [], ls="", marker="o", color=CLASS_COLOURS[0], label="label 0"),
        Line2D([], [], ls="--", color="black", label="initial boundary"),
        Line2D([], [], ls="-", color="black", label="final boundary"),
    ]
    figure.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=4,
        frameon=False,
        fontsize=9,
    )
    figure.suptitle(f"repetition {repetition}", fontsize=10)
    figure.tight_layout()
    return _save(figure, _figure_path(directory, name))


def sweep_bars(
    final: pd.DataFrame,
    directory: str | Path,
    hue: str = "generator",
    name: str = "final_round.png",
    title: str | None = None,
) -> Path:
    """Final-round values as bars with sd error bars: rows = metric, columns = model.

    Args:
        final: The final-round rows of every job (one row per job, repetition, system, metric).
        directory: The report directory; the PNG goes into its ``figures/``.
        hue: The column that colours (and places) the bars.
        name: File name of the PNG.
        title: The figure's title (what the sweep varied).

    Returns:
        The path of the PNG.
    """
    hue_order = ordered(final[hue])
    keys = ordered(final["metric"], METRIC_ORDER)
    names = {metric: plain_name(metric) for metric in keys}
    final = final.assign(metric=final["metric"].map(names))
    metrics = [names[m] for m in keys]
    units = {names[m]: unit(m) for m in keys}
    models = ordered(final["model"])
    common = {
        "data": final,
        "kind": "bar",
        "x": hue,
        "order": hue_order,
        "y": "value",
        "hue": hue,
        "hue_order": hue_order,
        "palette": palette(hue_order),
        "errorbar": "sd",
        "capsize": 0.15,
        "err_kws": {"linewidth": 1.2},
        "height": 2.4,
        "aspect": max(1.4, 0.5 * len(hue_order)),
        "legend": False,
    }
    if len(models) == 1:
        grid = sns.catplot(
            col="metric", col_order=metrics, col_wrap=min(4, len(metrics)), sharey=False, **common
        )
        grid.set_titles("{col_name}")
        suptitle = f"{title} (model: {models[0]})" if title else f"model: {models[0]}"
        grid.figure.suptitle(suptitle, y=1.02)
        metric_of_axis = dict(zip(grid.axes.flat, metrics, strict=False))
    else:
        grid = sns.catplot(
            row="metric",
            row_order=metrics,
            col="model",
            col_order=models,
            sharey="row",
            margin_titles=True,
            **common,
        )
        grid.set_titles(row_template="{row_name}", col_template="model: {col_name}")
        if title:
            grid.figure.suptitle(title, y=1.02)
        metric_of_axis = {ax: metrics[i] for i, row in enumerate(grid.axes) for ax in row}
    grid.set_axis_labels("", "")
    for ax in grid.axes.flat:
        ax.set_ylabel(units.get(metric_of_axis.get(ax), ""))
    # Short names label the bars directly; long ones (sweep variants) go into a legend.
    long_names = any(len(str(v)) > 12 for v in hue_order)
    for ax in grid.axes.flat:
        ax.axhline(0, color="black", linewidth=0.6)
        ax.grid(True, axis="y", alpha=0.3)
        ax.tick_params(axis="x", labelbottom=not long_names, bottom=not long_names)
        if not long_names:
            ax.tick_params(axis="x", labelrotation=20)
    if not long_names:
        grid.tight_layout()  # room for the rotated labels below every row
    if long_names:
        grid.tight_layout()  # reclaim the room the hidden labels took
        colours = palette(hue_order)
        grid.add_legend(legend_data={str(v): Patch(color=colours[v]) for v in hue_order}, title=hue)
    return _save(grid.figure, _figure_path(directory, name))


# --- time-based dynamics ---------------------------------------------------------------------


def _style_handles(rolling: int | None, band: str) -> list:
    """Legend entries that explain the line styles of a figure over rounds."""
    handles = [Patch(color="grey", alpha=0.2, label=band)]
    if rolling:
        handles += [
            Line2D([], [], color="grey", lw=0.9, alpha=0.5, marker="o", ms=3, label="per round"),
            Line2D([], [], color="grey", lw=2.2, label=f"rolling mean over {rolling} rounds"),
        ]
    else:
        handles.append(Line2D([], [], color="grey", lw=1.6, marker="o", ms=3, label="per round"))
    return handles


def _over_rounds(
    per_round: pd.DataFrame,
    panels: Sequence[tuple[str, str, str]],
    path: Path,
    title: str,
    rolling: int | None,
    ncols: int,
) -> Path:
    """Panels of per-round means over runs (band ±1 sd), one line per ``system``.

    Args:
        per_round: :func:`recourse_sim.report.dynamics.per_round` with a ``system`` column.
        panels: ``(metric, title, y label)`` per panel; metrics absent from the frame are skipped.
        path: The PNG.
        title: The figure's title.
        rolling: The rolling window (draws ``rolling_mean`` as a thick line), or None.
        ncols: Panels per row.

    A round without a value is a gap in every line (never 0).
    """
    present = [p for p in panels if p[0] in set(per_round["metric"])]
    if not present:
        raise ValueError("none of the metrics of this figure were recorded")
    systems = ordered(per_round["system"])
    colours = palette(systems)
    ncols = min(ncols, len(present))
    nrows = -(-len(present) // ncols)
    figure, axes = plt.subplots(
        nrows, ncols, figsize=(4.6 * ncols, 3.2 * nrows + 0.3), squeeze=False
    )
    first, last = int(per_round["round"].min()), int(per_round["round"].max())
    rounds = pd.RangeIndex(first, last + 1, name="round")
    few = per_round["round"].nunique() <= 2
    for ax, (metric, panel_title, ylabel) in zip(axes.flat, present, strict=False):
        for system in systems:
            rows = per_round[(per_round["system"] == system) & (per_round["metric"] == metric)]
            if rows.empty:
                continue
            rows = rows.set_index("round").reindex(rounds)  # an absent round is a gap too
            colour = colours[system]
            mean, sd = rows["mean"].astype(float), rows["sd"].astype(float)
            ax.fill_between(rounds, mean - sd, mean + sd, color=colour, alpha=0.15, lw=0)
            if rolling:
                ax.plot(rounds, mean, color=colour, lw=0.9, alpha=0.5, marker="o", ms=2.5)
                ax.plot(rounds, rows["rolling_mean"].astype(float), color=colour, lw=2.2)
            else:
                # Two rounds only: points, not a line implying a trend that was never measured.
                ax.plot(rounds, mean, color=colour, lw=0 if few else 1.6, marker="o", ms=3)
        if metric != "threshold":
            ax.axhline(0, color="black", linewidth=0.7, zorder=1)
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel("round")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        margin = max(0.3, 0.02 * (last - first))
        ax.set_xlim(first - margin, last + margin)  # every panel spans every round, gaps too
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
        if metric == "reliability":
            ax.set_ylim(-0.03, 1.03)
    for ax in list(axes.flat)[len(present) :]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=colours[s], lw=2, label=str(s)) for s in systems]
    handles += _style_handles(rolling, "±1 sd over repetitions")
    figure.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=min(4, len(handles)),
        frameon=False,
        fontsize=9,
    )
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    return _save(figure, path)


def recourse_over_time(
    per_round: pd.DataFrame,
    directory: str | Path,
    rolling: int | None,
    name: str = "recourse_over_time.png",
) -> Path:
    """Reliability, time to recourse and the decision threshold over rounds, one line per system.

    Args:
        per_round: :func:`recourse_sim.report.dynamics.per_round` with a ``system`` column.
        directory: The report directory; the PNG goes into its ``figures/``.
        rolling: The window of the rolling mean drawn over the per-round means (None: none).
        name: File name of the PNG.
    """
    panels = (
        ("reliability", "reliability: favourable after crossing", "share of qualifying agents"),
        ("time_to_recourse", "time to recourse", "rounds from entry"),
        ("threshold", "decision threshold", "probability"),
    )
    return _over_rounds(
        per_round,
        panels,
        _figure_path(directory, name),
        "Recourse over rounds (mean over repetitions)",
        rolling,
        ncols=3,
    )


def population_over_time(
    per_round: pd.DataFrame, directory: str | Path, name: str = "population_over_time.png"
) -> Path:
    """Active agents, arrivals, favourable decisions and exits per round, one line per system."""
    panels = (
        ("n_active", "active agents at the decision", "agents"),
        ("n_arrivals", "arrivals", "agents"),
        ("n_favourable", "favourable decisions", "agents"),
        ("n_exits", "exits", "agents"),
    )
    return _over_rounds(
        per_round,
        panels,
        _figure_path(directory, name),
        "Population per round (mean over repetitions)",
        None,
        ncols=4,
    )


def group_bars(
    rows: pd.DataFrame,
    levels: Sequence[str],
    directory: str | Path,
    name: str = "recourse_by_group.png",
) -> Path:
    """Time to recourse and effort by group: bars per system, one colour per group level.

    Args:
        rows: The ``<metric>@<level>`` rows of ``metrics.csv`` with ``base``, ``group`` and
            ``system`` columns.
        levels: The group levels, in the run's order.
        directory: The report directory; the PNG goes into its ``figures/``.
        name: File name of the PNG.

    Bars are the mean over every repetition and round with a value (as in the group table),
    error bars ±1 sd of those values; missing values are left out.
    """
    panels = [
        (metric, title, ylabel)
        for metric, title, ylabel in (
            ("time_to_recourse", "time to recourse by group", "rounds from entry"),
            ("effort_to_recourse", "effort to recourse by group", "distance (standardised units)"),
        )
        if metric in set(rows["base"])
    ]
    if not panels:
        raise ValueError("no time to recourse or effort per group was recorded")
    stats = rows.groupby(["base", "system", "group"], sort=False)["value"].agg(["mean", "std"])
    systems = ordered(rows["system"])
    levels = [level for level in levels if level in set(rows["group"])]
    colours = palette(levels)
    width = 0.8 / max(len(levels), 1)
    panel_width = max(4.6, 0.45 * len(systems) * len(levels) + 1.5)
    stacked = panel_width > 7  # many bars: one panel per row, so the page stays readable
    figure, axes = plt.subplots(
        len(panels) if stacked else 1,
        1 if stacked else len(panels),
        figsize=(
            min(panel_width, 14) if stacked else panel_width * len(panels),
            (3.6 * len(panels)) if stacked else 3.6,
        ),
        squeeze=False,
    )
    for ax, (metric, title, ylabel) in zip(axes.flat, panels, strict=True):
        for j, level in enumerate(levels):
            heights, errors = [], []
            for system in systems:
                key = (metric, system, level)
                heights.append(stats["mean"].get(key, np.nan))
                errors.append(stats["std"].get(key, np.nan))
            x = np.arange(len(systems)) + (j - (len(levels) - 1) / 2) * width
            ax.bar(x, heights, width, color=colours[level], label=str(level))
            ax.errorbar(
                x, heights, yerr=errors, fmt="none", ecolor="black", elinewidth=1, capsize=3
            )
            for position, height in zip(x, heights, strict=True):
                if pd.isna(height):  # no value is not a bar of height 0
                    ax.text(
                        position,
                        0,
                        "no value",
                        rotation=90,
                        ha="center",
                        va="bottom",
                        fontsize=8,
                        color="grey",
                    )
        ax.set_xticks(np.arange(len(systems)), [str(s) for s in systems], rotation=20, ha="right")
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        ax.grid(True, axis="y", alpha=0.3)
    figure.legend(
        handles=[Patch(color=colours[level], label=str(level)) for level in levels],
        title="group",
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=min(6, len(levels)),
        frameon=False,
        fontsize=9,
    )
    figure.suptitle(
        "Recourse by group (mean over rounds and repetitions; error bars ±1 sd)", fontsize=11
    )
    figure.tight_layout()
    return _save(figure, _figure_path(directory, name))
