"""Report figures (seaborn and matplotlib), each written as a PNG into ``<directory>/figures/``.

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
    figure.savefig(path, dpi=DPI, bbox_inches="tight")
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
    ylabel: str,
) -> Path:
    """Lines over rounds, mean with an sd band over repetitions; facets ``facet`` x model."""
    hue_order = ordered(data[hue])
    models = ordered(data["model"])
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
        "markersize": 4,
        "height": 2.4,
        "aspect": 1.45,
    }
    if len(models) == 1:
        grid = sns.relplot(
            col=facet,
            col_order=facet_order,
            col_wrap=min(4, len(facet_order)),
            facet_kws={"sharey": False},
            **common,
        )
        grid.set_titles("{col_name}")
        grid.figure.suptitle(f"model: {models[0]}", y=1.02)
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
    grid.set_axis_labels("round", ylabel)
    for ax in grid.axes.flat:
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelbottom=True)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    return _save(grid.figure, path)


def metric_lines(
    metrics: pd.DataFrame, directory: str | Path, hue: str = "generator", name: str = "metrics.png"
) -> Path:
    """Every metric over rounds: mean and sd band over repetitions, hue = generator, facets = model.

    Args:
        metrics: Rows of ``metrics.csv`` (a sweep's pooled rows work too).
        directory: The report directory; the PNG goes into its ``figures/``.
        hue: The column that colours the lines (``generator``, or ``system`` for sweep variants).
        name: File name of the PNG.

    Returns:
        The path of the PNG.
    """
    order = ordered(metrics["metric"], METRIC_ORDER)
    return _facet_lines(metrics, "metric", order, hue, _figure_path(directory, name), "value")


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
    return _facet_lines(long, "statistic", order, "generator", _figure_path(directory, name), "")


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
) -> Path:
    """Final-round values as bars with sd error bars: rows = metric, columns = model.

    Args:
        final: The final-round rows of every job (one row per job, repetition, system, metric).
        directory: The report directory; the PNG goes into its ``figures/``.
        hue: The column that colours (and places) the bars.
        name: File name of the PNG.

    Returns:
        The path of the PNG.
    """
    hue_order = ordered(final[hue])
    metrics = ordered(final["metric"], METRIC_ORDER)
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
        "aspect": max(1.0, 0.45 * len(hue_order)),
        "legend": False,
    }
    if len(models) == 1:
        grid = sns.catplot(
            col="metric", col_order=metrics, col_wrap=min(4, len(metrics)), sharey=False, **common
        )
        grid.set_titles("{col_name}")
        grid.figure.suptitle(f"model: {models[0]}", y=1.02)
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
    grid.set_axis_labels("", "final value")
    # Short names label the bars directly; long ones (sweep variants) go into a legend.
    long_names = any(len(str(v)) > 12 for v in hue_order)
    for ax in grid.axes.flat:
        ax.axhline(0, color="black", linewidth=0.6)
        ax.grid(True, axis="y", alpha=0.3)
        ax.tick_params(axis="x", labelbottom=not long_names, bottom=not long_names)
    if long_names:
        grid.tight_layout()  # reclaim the room the hidden labels took
        colours = palette(hue_order)
        grid.add_legend(legend_data={str(v): Patch(color=colours[v]) for v in hue_order}, title=hue)
    return _save(grid.figure, _figure_path(directory, name))
