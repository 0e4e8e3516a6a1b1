"""The time-based view of the reports ("Recourse over time"), on hand-made run directories.

Every number checked here is computed by hand from the frames below (see the comments), so the
tests pin what the report says, not just that it runs. Figures are off except in one test.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from recourse_sim.report import build_run_report, build_sweep_report
from recourse_sim.report.dynamics import (
    dynamics_summary,
    dynamics_tables,
    group_comparison,
    group_summary,
    has_dynamics,
    per_round,
    rolling_window,
    split_scope,
)
from recourse_sim.report.reading import dynamics_reading

COLUMNS = ["repetition", "round", "model", "generator", "metric", "scope", "value", "p_value"]
SYSTEMS = (("mlp", "generic"), ("mlp", "none"))
N = math.nan
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DYNAMICS_FILES = {
    "dynamics_table.csv",
    "dynamics_per_round.csv",
    "dynamics_groups_table.csv",
    "dynamics_group_comparison.csv",
}
DYNAMICS_FIGURES = {"recourse_over_time.png", "population_over_time.png", "recourse_by_group.png"}


# --- hand-made run directories -----------------------------------------------------------------


def shift_rows() -> list[tuple]:
    """Shift metrics at rounds 0, 2, 4 of two repetitions; f1_change missing once."""
    rows = []
    for rep in (0, 1):
        for rnd in (0, 2, 4):
            for k, (model, gen) in enumerate(SYSTEMS):
                base = 0.01 * rnd * (2 - k) + 0.001 * rep
                p = N if rnd == 0 else 0.25 * (k + 1) - 0.125 * rep
                rows.append((rep, rnd, model, gen, "mmd_domain", "domain", base, p))
                rows.append((rep, rnd, model, gen, "disagreement", "model", 2 * base, N))
                f1 = N if (rep, rnd, gen) == (1, 4, "none") else -0.005 * rnd
                rows.append((rep, rnd, model, gen, "f1_change", "model", f1, N))
    return rows


SHIFT_MISSING = [(1, 4, "mlp", "none", "f1_change", "the test set is empty")]
DYNAMICS_MISSING = [(0, 2, "mlp", "generic", "reliability", "nobody qualified")]

#: Per system: metric -> (repetition 0, repetition 1), the values of rounds 0..4.
DYNAMICS = {
    "generic": {
        "n_active": ([8, 9, 10, 9, 8], [8, 8, 9, 10, 10]),
        "n_arrivals": ([8, 2, 2, 1, 1], [8, 1, 2, 2, 1]),
        "n_exits": ([0, 1, 1, 2, 2], [0, 1, 1, 1, 1]),
        "n_favourable": ([3, 3, 3, 3, 3], [3, 3, 3, 3, 3]),
        "n_advice": ([5, 6, 7, 6, 5], [5, 5, 6, 7, 7]),
        "threshold": ([0.5, 0.52, 0.54, 0.56, 0.58], [0.5, 0.53, 0.56, 0.59, 0.62]),
        "threshold_drift": ([N, 0.02, 0.02, 0.02, 0.02], [N, 0.03, 0.03, 0.03, 0.03]),
        # 5 values (1, .5, .75, .5, .25): mean 0.6; 3 of the 8 rounds 1..4 have none.
        "reliability": ([N, 1.0, N, 0.5, 0.75], [N, 0.5, 0.25, N, N]),
        "n_failures": ([0, 0, 0, 1, 1], [0, 1, 3, 0, 0]),  # 2 and 4: mean 3 per repetition
        "time_to_recourse": ([N, 1, 2, N, 3], [N, N, 2, 2, 4]),  # 14 / 6
        "effort_to_recourse": ([N, 0.5, 1.0, N, 1.5], [N, N, 1.0, 1.0, 2.0]),  # 7 / 6
        "effort_to_recourse_score": ([N, 0.2, 0.3, N, 0.4], [N, N, 0.3, 0.3, 0.5]),  # 2 / 6
        "reliability@SEX=0": ([N, 1.0, N, 0.5, 1.0], [N, 0.5, 0.5, N, N]),  # 3.5 / 5
        "reliability@SEX=1": ([N, N, N, N, 0.5], [N, N, N, N, N]),  # 0.5
        "time_to_recourse@SEX=0": ([N, 1, 2, N, 2], [N, N, 2, 1, N]),  # 8 / 5
        "time_to_recourse@SEX=1": ([N, N, N, N, 4], [N, N, N, 3, 4]),  # 11 / 3
        "effort_to_recourse@SEX=0": ([N, 0.4, 1.0, N, 1.0], [N, N, 1.0, 0.8, N]),  # 4.2 / 5
        "effort_to_recourse@SEX=1": ([N, N, N, N, 2.0], [N, N, N, 1.2, 2.0]),  # 5.2 / 3
        "effort_to_recourse_score@SEX=0": ([N, 0.2, 0.3, N, 0.3], [N, N, 0.3, 0.2, N]),
        "effort_to_recourse_score@SEX=1": ([N, N, N, N, 0.5], [N, N, N, 0.4, 0.5]),
        "n_active@SEX=0": ([5] * 5, [5] * 5),
        "n_active@SEX=1": ([3] * 5, [3] * 5),
        "n_favourable@SEX=0": ([2] * 5, [2] * 5),
        "n_favourable@SEX=1": ([1] * 5, [1] * 5),
        "time_to_recourse_difference": ([N, N, N, N, 2], [N, N, N, 2, N]),  # 2
        "effort_to_recourse_ratio": ([N, N, N, N, 2.0], [N, N, N, 1.5, N]),  # 1.75
    },
    "none": {  # the control: no advice, so no reliability at all
        "n_active": ([8, 9, 9, 9, 9], [8, 8, 9, 9, 9]),
        "n_arrivals": ([8, 2, 2, 1, 1], [8, 1, 2, 2, 1]),
        "n_exits": ([0, 1, 2, 1, 1], [0, 1, 1, 2, 1]),
        "n_favourable": ([3, 3, 3, 3, 3], [3, 3, 3, 3, 3]),
        "n_advice": ([0] * 5, [0] * 5),
        "threshold": ([0.5] * 5, [0.5] * 5),
        "threshold_drift": ([N, 0, 0, 0, 0], [N, 0, 0, 0, 0]),
        "reliability": ([N] * 5, [N] * 5),
        "n_failures": ([0] * 5, [0] * 5),
        "time_to_recourse": ([N, N, N, N, 4], [N] * 5),
        "effort_to_recourse": ([N, N, N, N, 2.0], [N] * 5),
        "effort_to_recourse_score": ([N, N, N, N, 0.1], [N] * 5),
        "reliability@SEX=0": ([N] * 5, [N] * 5),
        "reliability@SEX=1": ([N] * 5, [N] * 5),
        "time_to_recourse@SEX=0": ([N] * 5, [N] * 5),
        "time_to_recourse@SEX=1": ([N, N, N, N, 4], [N] * 5),
        "effort_to_recourse@SEX=0": ([N] * 5, [N] * 5),
        "effort_to_recourse@SEX=1": ([N, N, N, N, 2.0], [N] * 5),
        "effort_to_recourse_score@SEX=0": ([N] * 5, [N] * 5),
        "effort_to_recourse_score@SEX=1": ([N, N, N, N, 0.1], [N] * 5),
        "n_active@SEX=0": ([5] * 5, [5] * 5),
        "n_active@SEX=1": ([3] * 5, [3] * 5),
        "n_favourable@SEX=0": ([1] * 5, [1] * 5),
        "n_favourable@SEX=1": ([1] * 5, [1] * 5),
        "time_to_recourse_difference": ([N] * 5, [N] * 5),
        "effort_to_recourse_ratio": ([N] * 5, [N] * 5),
    },
}

#: (repetition, generator, group, entered_round, favourable_round)
AGENTS = [
    (0, "generic", "SEX=0", 0, 1),
    (0, "generic", "SEX=0", 0, N),
    (0, "generic", "SEX=1", 1, 4),
    (0, "generic", "SEX=1", 2, N),
    (1, "generic", "SEX=0", 0, 2),
    (1, "generic", "SEX=0", 1, 3),
    (1, "generic", "SEX=1", 0, 3),
    (1, "generic", "SEX=1", 3, N),
    (0, "none", "SEX=0", 0, N),
    (0, "none", "SEX=0", 0, N),
    (0, "none", "SEX=1", 1, 4),
    (0, "none", "SEX=1", 2, N),
    (1, "none", "SEX=0", 0, N),
    (1, "none", "SEX=0", 1, N),
    (1, "none", "SEX=1", 0, N),
    (1, "none", "SEX=1", 3, N),
]


def is_group_metric(metric: str) -> bool:
    return "@" in metric or metric.endswith(("_difference", "_ratio"))


def dynamics_rows(groups: bool = True, generators=("generic", "none")) -> list[tuple]:
    rows = []
    for gen in generators:
        for metric, per_rep in DYNAMICS[gen].items():
            if groups or not is_group_metric(metric):
                for rep, values in enumerate(per_rep):
                    for rnd, value in enumerate(values):
                        rows.append((rep, rnd, "mlp", gen, metric, "dynamics", float(value), N))
    return rows


def dynamics_frame(groups: bool = True) -> pd.DataFrame:
    return pd.DataFrame(dynamics_rows(groups), columns=COLUMNS)


def agents_frame(groups: bool = True, generators=("generic", "none")) -> pd.DataFrame:
    rows = [
        {
            "repetition": rep,
            "model": "mlp",
            "generator": gen,
            "agent": i % 4,
            "group": group if groups else None,
            "entered_round": entered,
            "favourable_round": favourable,
            "n_advice": 1,
            "n_adaptations": 1,
            "n_failures": 0,
            "effort": 0.5,
            "initial_score": 0.3,
            "final_score": 0.6,
        }
        for i, (rep, gen, group, entered, favourable) in enumerate(AGENTS)
        if gen in generators
    ]
    frame = pd.DataFrame(rows)
    frame["favourable_round"] = frame["favourable_round"].astype("Int64")  # empty if never
    return frame


def write_run(directory: Path, rows, missing=None, group: str | None = None, agents=None):
    """A run directory as the recorder writes it (no populations, no recourse.csv)."""
    directory.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=COLUMNS).to_csv(directory / "metrics.csv", index=False)
    (directory / ".hydra").mkdir(exist_ok=True)
    config = {"seed": 0, "simulation": {"n_rounds": 4, "n_repetitions": 2, "n_permutations": 100}}
    if group:
        config["data"] = {"group": group}
    OmegaConf.save(OmegaConf.create(config), directory / ".hydra" / "config.yaml")
    if missing:
        columns = ["repetition", "round", "model", "generator", "metric", "reason"]
        pd.DataFrame(missing, columns=columns).to_csv(directory / "missing_values.csv", index=False)
    if agents is not None:
        agents.to_csv(directory / "agents.csv", index=False)
    return directory


def write_dynamics_run(directory: Path, groups: bool = True, agents: bool = True) -> Path:
    return write_run(
        directory,
        shift_rows() + dynamics_rows(groups),
        SHIFT_MISSING + DYNAMICS_MISSING,
        group="SEX" if groups else None,
        agents=agents_frame(groups) if agents else None,
    )


def write_shift_run(directory: Path) -> Path:
    return write_run(directory, shift_rows(), SHIFT_MISSING)


def build(run: Path, figures: bool = False) -> tuple[str, str, list[str]]:
    """Build the run report; returns the Markdown, the HTML and the names registered."""
    registered: list[str] = []
    html = build_run_report(
        run, figures=figures, register=lambda *paths: registered.extend(p.name for p in paths)
    ).read_text()
    markdown = (run / "report.md").read_text().replace(str(run.resolve()), "<run>")
    return markdown, html, registered


def glossary_rows(markdown: str) -> list[str]:
    """The table rows of the Glossary, the report's last section."""
    text = markdown.split("\n## Glossary\n", 1)[1]
    assert "\n## " not in text, "the Glossary is the last section"
    return [line for line in text.splitlines() if line.startswith("| ")][1:]


def assert_glossary_extends(after: str, before: str, dynamics: pd.DataFrame | None) -> None:
    """The dynamics report's Glossary: every entry of the shift report's, plus the dynamics'."""
    rows, shift_rows = glossary_rows(after), glossary_rows(before)
    assert set(shift_rows) <= set(rows)
    if dynamics is None:
        return
    keys = {row.split(" | ")[1] for row in rows}
    assert {m.split("@", 1)[0] for m in dynamics["metric"]} <= keys
    assert "| reliability | reliability | Share of the agents who acted on advice" in after


def section(markdown: str) -> str:
    """The section "Recourse over time" of a report."""
    return markdown.split("## Recourse over time", 1)[1]


def assert_valid_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1000, path
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 50 and image.shape[1] > 50
    assert float(image[..., :3].std()) > 0.01, f"{path} is blank"


#: The report of write_shift_run as it was before the time-based view existed (the statistics of
#: issue 15: intervals, per-repetition counts, Fisher-combined and Holm-adjusted p-values) ...
BASELINE_REPORT = (
    "# Shift report: mlp × generic, none · 4 rounds × 2 repetitions\n"
    "\n"
    "<run>\n"
    "\n"
    "## Configuration\n"
    "\n"
    "| setting | value |\n"
    "|---|---|\n"
    "| models | mlp |\n"
    "| generators | generic, none |\n"
    "| simulation.n_rounds | 4 |\n"
    "| simulation.n_repetitions | 2 |\n"
    "| simulation.n_permutations | 100 |\n"
    "| seed | 0 |\n"
    "| metrics | mmd_domain, disagreement, f1_change |\n"
    "| overrides | none |\n"
    "\n"
    "## Largest shifts\n"
    "\n"
    "- Under generic with mlp, the domain shift (MMD²) reached 0.081 after 4 rounds "
    "(p < 0.05 in 0 of 2 repetitions; combined p = 0.15), the larger of the two "
    "systems (none with mlp: 0.041); F1 fell by 2 points.\n"
    "- The disagreement with the initial model was largest under generic with mlp: "
    "0.16; smallest under none with mlp: 0.081.\n"
    "- Macro F1 on the test set fell by the same amount under generic with mlp and "
    "none with mlp: by 2 points after 4 rounds.\n"
    "- Significant at the 5 % level after combining the repetitions' permutation "
    "tests (P = 100; Fisher's method) and adjusting for the 2 tests of the "
    "final-round table (Holm): the domain shift under 0 of 2 systems (p < 0.05 in 0 "
    "of 4 tests).\n"
    "\n"
    "## Final-round summary\n"
    "\n"
    "Every metric at the last evaluated round over 2 repetitions: the mean, its 95 % "
    "t interval (none for a single value) and the sample standard deviation; n counts "
    "the values that could be computed. For the MMDs, 'p < 0.05 in' counts the tests "
    "(one per repetition) whose exact p-value (b + 1)/(P + 1) is below 0.05; the "
    "combined p-value joins them by Fisher's method and the Holm p-value adjusts it "
    "for every test of this table. A single test's recorded p-value of 0 reads < "
    "0.01. See the Glossary for every term.\n"
    "\n"
    "| metric | scope | model | generator | final round | n | mean | 95 % CI | sd | p "
    "< 0.05 in | combined p | Holm p |\n"
    "|---|---|---|---|---:|---:|---:|---|---:|---|---:|---:|\n"
    "| domain shift (MMD²) | domain | mlp | generic | 4 | 2 | 0.0805 | 0.07415 … "
    "0.08685 | 0.0007071 | 0 of 2 | 0.146 | 0.2921 |\n"
    "| domain shift (MMD²) | domain | mlp | none | 4 | 2 | 0.0405 | 0.03415 … 0.04685 "
    "| 0.0007071 | 0 of 2 | 0.5137 | 0.5137 |\n"
    "| disagreement | model | mlp | generic | 4 | 2 | 0.161 | 0.1483 … 0.1737 | "
    "0.001414 | – | – | – |\n"
    "| disagreement | model | mlp | none | 4 | 2 | 0.081 | 0.06829 … 0.09371 | "
    "0.001414 | – | – | – |\n"
    "| change of macro F1 | model | mlp | generic | 4 | 2 | -0.02 | -0.02 … -0.02 | 0 "
    "| – | – | – |\n"
    "| change of macro F1 | model | mlp | none | 4 | 1 | -0.02 | – | – | – | – | – |\n"
    "\n"
    "## Beyond retraining: shift against the no-recourse control\n"
    "\n"
    "The control (generator none) is retrained like every system but nobody moves, so "
    "its shift is what retraining alone does. Per metric and system: the generator's "
    "final-round mean, the control's, and the mean paired difference (generator − "
    "control, paired by repetitions) with its sample standard deviation; n counts the "
    "pairs.\n"
    "\n"
    "| metric | scope | model | generator | n | mean | control (none) | difference | "
    "sd of difference |\n"
    "|---|---|---|---|---:|---:|---:|---:|---:|\n"
    "| domain shift (MMD²) | domain | mlp | generic | 2 | 0.0805 | 0.0405 | 0.04 | 0 |\n"
    "| disagreement | model | mlp | generic | 2 | 0.161 | 0.081 | 0.08 | 0 |\n"
    "| change of macro F1 | model | mlp | generic | 1 | -0.02 | -0.02 | 0 | – |\n"
    "\n"
    "## Missing values\n"
    "\n"
    "1 metric value could not be computed; missing values are empty cells in metrics.csv (– in "
    "the tables), are left out of the means and counts above, and are never counted "
    "as significant. The reasons, from missing_values.csv:\n"
    "\n"
    "| metric | model | generator | reason | missing values | repetitions | rounds |\n"
    "|---|---|---|---|---:|---|---|\n"
    "| change of macro F1 | mlp | none | the test set is empty | 1 | 1 | 4 |\n"
    "\n"
    "## Recourse\n"
    "\n"
    "No recourse statistics were recorded.\n"
)

#: ... and its last section, the Glossary (a report with dynamics lists their metrics too).
BASELINE_GLOSSARY = (
    "## Glossary\n"
    "\n"
    "| term | key | definition | unit or range |\n"
    "|---|---|---|---|\n"
    "| domain shift (MMD²) | mmd_domain | Squared maximum mean discrepancy (unbiased "
    "estimate, Gaussian kernel) between the favourable-class rows of the initial data "
    "and those of the current training data (Altmeyer et al. 2023, §IV-B). | squared "
    "kernel distance: 0 = same distribution, at most 2; estimates can dip below 0 |\n"
    "| disagreement | disagreement | Share of the initial data whose predicted label "
    "differs between the initial and the current model. | share, 0 … 1 |\n"
    "| change of macro F1 | f1_change | Macro-averaged F1 of the current model on the "
    "untouched test set minus the initial model's. | −1 … 1 (× 100: points); negative "
    "= worse |\n"
    "| mean and standard deviation | mean, sd | Over the repetitions (and the jobs of "
    "a sweep) at the final evaluated round. | the metric's unit |\n"
    "| 95 % confidence interval of the mean | 95 % CI | mean ± t₀.₉₇₅,ₙ₋₁ · sd/√n, a "
    "t interval over the n repetitions; none for n = 1. | the metric's unit |\n"
    "| per-repetition significance | p < 0.05 in | In how many repetitions (in a sweep: "
    "runs) the permutation test of the MMD rejected 'no shift' at the 5 % level. | count of "
    "tests |\n"
    "| combined p-value (Fisher) | combined p | Fisher's method over the repetitions' "
    "permutation p-values, each taken as (b + 1)/(P + 1) with b of P permutations at "
    "least as large as the observed MMD. | probability, 0 … 1 |\n"
    "| Holm-adjusted p-value | Holm p | The combined p-values adjusted by Holm's "
    "step-down method over every test of the table, so a grid of many comparisons "
    "keeps its 5 % family-wise error rate. | probability, 0 … 1 |\n"
    "| bound of a permutation p-value | < 1/P | No permutation of P reached the "
    "observed value: the p-value is below 1/P, not 0. | probability |\n"
    "| no-recourse control | control | Generator none: the system is retrained every "
    "round, but nobody moves. |  |\n"
)


# --- tables ------------------------------------------------------------------------------------


def test_scope_split_leaves_runs_without_dynamics_alone():
    shift = pd.DataFrame(shift_rows(), columns=COLUMNS)
    same, none = split_scope(shift)
    assert same is shift and none.empty and not has_dynamics(shift)
    both = pd.concat([shift, dynamics_frame()], ignore_index=True)
    left, right = split_scope(both)
    assert has_dynamics(both)
    pd.testing.assert_frame_equal(left, shift)
    assert (right["scope"] == "dynamics").all() and len(right) == len(dynamics_frame())


def test_summary_per_system_is_computed_by_hand():
    table = dynamics_summary(dynamics_frame(), agents_frame()).set_index("generator")
    generic, control = table.loc["generic"], table.loc["none"]
    assert generic["runs"] == 2 and generic["rounds"] == 4
    # Missing reliabilities are gaps: (1 + .5 + .75 + .5 + .25) / 5, not / 8 or / 10.
    assert generic["reliability"] == pytest.approx(0.6)
    assert generic["rounds_counted"] == 8 and generic["rounds_without_reliability"] == 3
    # With agents.csv, time to recourse is per agent (rejected first, favourable later): the
    # waits 1, 3, 2, 2, 3; from the per-round rows alone it is the mean of the rounds' means.
    assert generic["time_to_recourse"] == pytest.approx(11 / 5)
    per_round_only = dynamics_summary(dynamics_frame()).set_index("generator")
    assert per_round_only.loc["generic", "time_to_recourse"] == pytest.approx(14 / 6)
    assert generic["effort_to_recourse"] == pytest.approx(7 / 6)
    assert generic["effort_to_recourse_score"] == pytest.approx(2 / 6)
    assert generic["failures"] == pytest.approx(3)  # (2 + 4) / 2 repetitions
    assert generic["initial_threshold"] == pytest.approx(0.5)
    assert generic["final_threshold"] == pytest.approx(0.6)  # (0.58 + 0.62) / 2
    assert generic["agents"] == 4 and generic["ever_favourable"] == pytest.approx(5 / 8)
    # The control never qualifies: no reliability (not 0), all 8 rounds without one.
    assert math.isnan(control["reliability"]) and control["rounds_without_reliability"] == 8
    assert control["time_to_recourse"] == 3 and control["failures"] == 0
    assert per_round_only.loc["none", "time_to_recourse"] == 4
    assert control["ever_favourable"] == pytest.approx(1 / 8)
    # Without agents.csv the agent columns are not there at all.
    assert "ever_favourable" not in dynamics_summary(dynamics_frame()).columns


def test_per_round_means_keep_gaps():
    table = per_round(dynamics_frame())
    rel = table[(table["metric"] == "reliability") & (table["generator"] == "generic")]
    rel = rel.set_index("round")
    assert list(rel["n"]) == [0, 2, 1, 1, 1]
    assert math.isnan(rel.loc[0, "mean"])
    assert rel.loc[1, "mean"] == pytest.approx(0.75) and rel.loc[2, "mean"] == 0.25
    assert rel.loc[1, "sd"] == pytest.approx(np.std([1.0, 0.5], ddof=1))
    # Rolling mean over 3 rounds, over the rounds that have a value; round 0 stays a gap.
    assert rolling_window(4) == 3
    assert math.isnan(rel.loc[0, "rolling_mean"])
    assert rel.loc[1, "rolling_mean"] == pytest.approx((0.75 + 0.25) / 2)
    assert rel.loc[2, "rolling_mean"] == pytest.approx((0.75 + 0.25 + 0.5) / 3)
    assert rel.loc[4, "rolling_mean"] == pytest.approx((0.5 + 0.75) / 2)
    control = table[(table["metric"] == "reliability") & (table["generator"] == "none")]
    assert (control["n"] == 0).all() and control["mean"].isna().all()
    assert control["rolling_mean"].isna().all()
    active = table[(table["metric"] == "n_active") & (table["generator"] == "generic")]
    assert list(active["mean"]) == [8, 8.5, 9.5, 9.5, 9]


def test_rolling_mean_never_fills_a_gap():
    rows = [
        (0, r, "mlp", "generic", "reliability", "dynamics", v, N)
        for r, v in enumerate([N, 0.2, 0.4, N, N, N, 0.9])
    ]
    table = per_round(pd.DataFrame(rows, columns=COLUMNS)).set_index("round")
    assert table["rolling_mean"].isna().tolist() == [True, False, False, True, True, True, False]
    assert table.loc[2, "rolling_mean"] == pytest.approx(0.3)
    assert table.loc[6, "rolling_mean"] == pytest.approx(0.9)


def test_group_tables_are_computed_by_hand():
    groups = group_summary(dynamics_frame(), agents_frame()).set_index(["generator", "group"])
    assert list(groups.index) == [
        ("generic", "SEX=0"),
        ("generic", "SEX=1"),
        ("none", "SEX=0"),
        ("none", "SEX=1"),
    ]
    zero, one = groups.loc[("generic", "SEX=0")], groups.loc[("generic", "SEX=1")]
    assert zero["reliability"] == pytest.approx(0.7) and one["reliability"] == 0.5
    assert zero["time_to_recourse"] == pytest.approx(1.6)
    assert one["time_to_recourse"] == pytest.approx(11 / 3)
    assert zero["effort_to_recourse"] == pytest.approx(0.84)
    assert one["effort_to_recourse"] == pytest.approx(5.2 / 3)
    assert zero["n_active"] == 5 and one["n_active"] == 3
    assert zero["n_favourable"] == 2 and one["n_favourable"] == 1
    assert zero["agents"] == 2 and zero["ever_favourable"] == pytest.approx(3 / 4)
    assert one["ever_favourable"] == pytest.approx(2 / 4)
    assert math.isnan(groups.loc[("none", "SEX=0"), "time_to_recourse"])
    comparison = group_comparison(dynamics_frame()).set_index(["generator", "comparison"])
    difference = comparison.loc[("generic", "time_to_recourse_difference")]
    ratio = comparison.loc[("generic", "effort_to_recourse_ratio")]
    assert difference["n"] == 2 and difference["mean"] == 2
    assert ratio["n"] == 2 and ratio["mean"] == pytest.approx(1.75)
    assert comparison.loc[("none", "effort_to_recourse_ratio"), "n"] == 0
    assert group_summary(dynamics_frame(groups=False)).empty
    assert group_comparison(dynamics_frame(groups=False)).empty


def test_agent_groups_that_match_no_level_are_named_in_the_log(caplog):
    agents = agents_frame()
    agents["group"] = agents["group"].str.removeprefix("SEX=")  # "0", "1": not "SEX=0"
    groups = group_summary(dynamics_frame(), agents)
    assert groups["ever_favourable"].isna().all() and groups["agents"].isna().all()
    assert groups["time_to_recourse"].notna().any()  # the metrics.csv columns are unaffected
    assert "match none of the levels" in caplog.text and "SEX=0, SEX=1" in caplog.text


def test_reading_says_what_reliability_means_and_counts_the_gaps():
    tables = dynamics_tables(dynamics_frame(), agents_frame())
    text = " ".join(dynamics_reading(tables))
    assert (
        "generic with mlp: reliability averaged 60%: on average over the 5 rounds "
        "(2 repetitions together) that had a value, 60% of the agents who crossed the previous "
        "decision's threshold after acting on advice were favourable at the next decision; "
        "3 of the 8 rounds after round 0 had nobody who qualified and were left out "
        "(not counted as 0)" in text
    )
    assert "none with mlp: reliability has no value in any of the 8 rounds" in text
    assert "62% of the agents were favourable at some decision" in text
    assert "threshold went from 0.5 at round 0 to 0.6 at round 4" in text
    assert "the difference in time to recourse (SEX=1 minus SEX=0) was 2 rounds" in text
    assert "no test was run" in text
    assert "significant" not in text


# --- run reports -------------------------------------------------------------------------------


def test_a_run_without_dynamics_gets_the_report_it_always_got(tmp_path):
    run = write_shift_run(tmp_path / "run")
    markdown, html, registered = build(run)
    assert markdown == BASELINE_REPORT + "\n" + BASELINE_GLOSSARY
    assert "Recourse over time" not in html and "scope dynamics" not in html
    assert not DYNAMICS_FILES & {p.name for p in run.iterdir()}
    assert registered == ["summary_table.csv", "recourse_table.csv", "report.md", "report.html"]


def test_dynamics_rows_leave_every_shift_table_as_it_was(tmp_path):
    plain = write_shift_run(tmp_path / "plain" / "run")
    with_dynamics = write_dynamics_run(tmp_path / "dynamics" / "run")
    before, _, _ = build(plain)
    after, _, _ = build(with_dynamics)
    shift_part = after.split("\n\n## Recourse over time", 1)[0]
    # The section comes last but for the Glossary; nothing above it changed.
    assert shift_part + "\n" == before.split("\n## Glossary\n", 1)[0] == BASELINE_REPORT
    assert_glossary_extends(after, before, dynamics_frame())
    pd.testing.assert_frame_equal(
        pd.read_csv(with_dynamics / "summary_table.csv"), pd.read_csv(plain / "summary_table.csv")
    )
    # The dynamics value missing from missing_values.csv is listed in the new section only.
    assert "nobody qualified" not in shift_part
    assert "| reliability | mlp | generic | nobody qualified | 1 | 0 | 2 |" in section(after)


def test_run_report_shows_recourse_over_time(tmp_path):
    run = write_dynamics_run(tmp_path / "run")
    markdown, html, registered = build(run)
    text = section(markdown)
    assert "Recourse over time" in html and "Recourse by group" in html
    # The table per system, with the hand-computed means.
    assert (
        "| mlp | generic | 2 | 4 | 0.6 | 3 of 8 | 2.2 | 1.167 | 0.3333 | 3 | 4 | 0.625 | 0.5 "
        "| 0.6 |" in text
    )
    assert "| mlp | none | 2 | 4 | – | 8 of 8 | 3 | 2 | 0.1 | 0 | 4 | 0.125 | 0.5 | 0.5 |" in text
    assert "reliability averaged 60%" in text and "the 8 rounds after round 0" in text
    # Per round: means over repetitions, a round without reliability shown as missing.
    assert "| 0 | mlp | generic | 8 | 8 | 3 | 0 | 5 | 0.5 | – | 0 | – | – |" in text
    assert "| 2 | mlp | generic | 9.5 | 2 | 3 | 1 | 6.5 | 0.55 | 0.25 | 1.5 | 2 | 1 |" in text
    # Groups: the per-group means and the comparisons as the run computed them.
    assert "Groups of column SEX (data.group): SEX=0, SEX=1." in text
    assert "| mlp | generic | SEX=0 | 0.7 | 1.6 | 0.84 | 0.26 | 5 | 2 | 2 | 0.75 |" in text
    assert "| mlp | generic | SEX=1 | 0.5 | 3.667 | 1.733 | 0.4667 | 3 | 1 | 2 | 0.5 |" in text
    assert "| mlp | none | SEX=0 | – | – | – | – | 5 | 1 | 2 | 0 |" in text
    assert "time to recourse: difference of group means (rounds) | 2 | 2 | 0 |" in text
    assert "effort to recourse: ratio of group means | 2 | 1.75 | 0.3536 |" in text
    # The numbers are files too, registered with the report.
    assert set(registered) >= DYNAMICS_FILES
    table = pd.read_csv(run / "dynamics_table.csv").set_index("generator")
    assert table.loc["generic", "reliability"] == pytest.approx(0.6)
    assert math.isnan(table.loc["none", "reliability"])
    rounds = pd.read_csv(run / "dynamics_per_round.csv")
    assert set(rounds["metric"]) == set(dynamics_frame()["metric"])
    groups = pd.read_csv(run / "dynamics_groups_table.csv")
    assert groups.loc[0, "time_to_recourse"] == pytest.approx(1.6)


def test_without_groups_or_agents_the_report_says_so(tmp_path):
    run = write_dynamics_run(tmp_path / "run", groups=False, agents=False)
    markdown, _, registered = build(run)
    text = section(markdown)
    assert "there is no agents.csv, so the shares of agents are not shown" in text
    assert "Recourse by group" not in text and "ever favourable" not in text
    assert "| mlp | generic | 2 | 4 | 0.6 | 3 of 8 | 2.333 | 1.167 | 0.3333 | 3 | 0.5 | 0.6 |" in (
        text
    )
    assert {"dynamics_table.csv", "dynamics_per_round.csv"} <= set(registered)
    assert not (run / "dynamics_groups_table.csv").exists()


def test_run_report_with_figures(tmp_path):
    run = write_dynamics_run(tmp_path / "run")
    markdown, html, registered = build(run, figures=True)
    figures = {p.name for p in (run / "figures").glob("*.png")}
    assert figures == {"metrics.png", *DYNAMICS_FIGURES}
    for name in DYNAMICS_FIGURES:
        assert_valid_png(run / "figures" / name)
        assert f"figures/{name}" in markdown and name in registered
    assert html.count('<img src="data:image/png;base64,') == len(figures)
    assert "rolling mean over 3 rounds" in markdown and "not a zero" in markdown
    assert "could not be drawn" not in markdown


# --- sweep reports -----------------------------------------------------------------------------


def write_sweep(directory: Path, dynamics: bool) -> Path:
    """Two jobs, generator=generic and generator=none, each with its own files."""
    directory.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(
        OmegaConf.create({"hydra": {"overrides": {"task": ["generator=generic,none"]}}}),
        directory / "multirun.yaml",
    )
    for job, gen in enumerate(("generic", "none")):
        rows = shift_rows() + (dynamics_rows() if dynamics else [])
        missing = [m for m in SHIFT_MISSING if m[3] == gen]
        job_dir = write_run(
            directory / str(job),
            [r for r in rows if r[3] == gen],
            missing,
            group="SEX" if dynamics else None,
            agents=agents_frame(generators=(gen,)) if dynamics else None,
        )
        OmegaConf.save(
            OmegaConf.create([f"generator={gen}"]), job_dir / ".hydra" / "overrides.yaml"
        )
    return directory


def test_sweep_report_compares_the_jobs_over_time(tmp_path):
    plain = write_sweep(tmp_path / "plain" / "sweep", dynamics=False)
    with_dynamics = write_sweep(tmp_path / "dynamics" / "sweep", dynamics=True)
    before = build_sweep_report(plain, figures=False).with_suffix(".md").read_text()
    after = build_sweep_report(with_dynamics, figures=False).with_suffix(".md").read_text()
    before = before.replace(str(plain.resolve()), "<sweep>")
    after = after.replace(str(with_dynamics.resolve()), "<sweep>")
    assert "Recourse over time" not in before
    assert not DYNAMICS_FILES & {p.name for p in plain.iterdir()}
    # The shift part (configuration, tables, missing values) ignores the dynamics rows.
    assert (
        after.split("\n\n## Recourse over time", 1)[0] + "\n"
        == before.split("\n## Glossary\n", 1)[0]
    )
    assert_glossary_extends(after, before, None)  # its dynamics entries: the test below
    pd.testing.assert_frame_equal(
        pd.read_csv(with_dynamics / "summary_table.csv"), pd.read_csv(plain / "summary_table.csv")
    )
    # sweep_metrics.csv keeps every job's rows, the dynamics ones included.
    summary = pd.read_csv(with_dynamics / "sweep_metrics.csv")
    assert (summary["scope"] == "dynamics").sum() == len(dynamics_frame())
    # Jobs x repetitions pooled per system: here one job per system, so the run's numbers.
    text = section(after)
    assert (
        "| mlp | generic | 2 | 4 | 0.6 | 3 of 8 | 2.2 | 1.167 | 0.3333 | 3 | 4 | 0.625 | 0.5 "
        "| 0.6 |" in text
    )
    assert "failures per run" in text and "Groups of column SEX (data.group)" in text
    assert "| mlp | generic | SEX=1 | 0.5 | 3.667 | 1.733 | 0.4667 | 3 | 1 | 2 | 0.5 |" in text
    assert {p.name for p in with_dynamics.iterdir()} >= DYNAMICS_FILES


def test_sweep_pools_jobs_and_repetitions(tmp_path):
    """Two seeds of one generator: reliability pooled over 2 jobs x 2 repetitions."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    OmegaConf.save(
        OmegaConf.create({"hydra": {"overrides": {"task": ["seed=0,1"]}}}), sweep / "multirun.yaml"
    )
    for job, seed in enumerate((0, 1)):
        rows = [r for r in shift_rows() + dynamics_rows(groups=False) if r[3] == "generic"]
        if seed == 1:  # the second job: every reliability 0 -> a real zero, not a gap
            rows = [
                (*r[:6], 0.0 if r[4] == "reliability" and r[1] > 0 else r[6], r[7]) for r in rows
            ]
        job_dir = write_run(sweep / str(job), rows)
        OmegaConf.save(OmegaConf.create([f"seed={seed}"]), job_dir / ".hydra" / "overrides.yaml")
    build_sweep_report(sweep, figures=False)
    table = pd.read_csv(sweep / "dynamics_table.csv")
    assert len(table) == 1 and table.loc[0, "runs"] == 4
    # Job 0: 5 values summing to 3; job 1: 8 zeros -> 3 / 13.
    assert table.loc[0, "reliability"] == pytest.approx(3 / 13)
    assert table.loc[0, "rounds_counted"] == 16 and table.loc[0, "rounds_without_reliability"] == 3


def test_sweep_glossary_lists_the_dynamics_metrics(tmp_path):
    plain = write_sweep(tmp_path / "plain" / "sweep", dynamics=False)
    with_dynamics = write_sweep(tmp_path / "dynamics" / "sweep", dynamics=True)
    before = build_sweep_report(plain, figures=False).with_suffix(".md").read_text()
    after = build_sweep_report(with_dynamics, figures=False).with_suffix(".md").read_text()
    assert_glossary_extends(after, before, dynamics_frame())
    assert "without a glossary entry" not in after
