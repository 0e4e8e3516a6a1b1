"""What a researcher reads (issue 15): honest statistics, named ties, blind kernels, glossary.

The statistics are checked against hand computations (the numbers in the comments), the report
text on small run directories built the way tests/test_report.py builds them, the figures by
their matplotlib artists, and the terminal output through the real entry point.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.lines import Line2D
from omegaconf import OmegaConf
from test_report import fake_metrics, p_zero_rows, write_fake_sweep, write_small_run
from test_report_dynamics import build as build_dynamics
from test_report_dynamics import write_dynamics_run

from recourse_sim.report import build_run_report, build_sweep_report, headline
from recourse_sim.report.glossary import plain_name, unit
from recourse_sim.report.reading import kernel_findings
from recourse_sim.report.statistics import (
    exact_p_values,
    fisher_combined,
    holm_adjusted,
    round_statistics,
    t_interval,
)
from recourse_sim.report.tables import decisiveness_scale, final_round_summary
from recourse_sim.simulation.recorder import KERNEL_COLUMNS

ROOT = Path(__file__).resolve().parent.parent
NAN = math.nan
P_EQUALS_ZERO = re.compile(r"\bp = 0(?![.\d])")
ZERO_CELL = re.compile(r"^0(\.0*)?$")


# --- the statistics, by hand --------------------------------------------------------------------


def test_exact_p_values_turn_b_over_p_into_b_plus_one_over_p_plus_one():
    # P = 100: b = 0, 3, 50 of 100 -> 1/101, 4/101, 51/101; no p-value stays none.
    got = exact_p_values([0.0, 0.03, 0.5, NAN], 100)
    np.testing.assert_allclose(got[:3], [1 / 101, 4 / 101, 51 / 101], rtol=1e-15)
    assert math.isnan(got[3])
    assert (exact_p_values([0.0, 0.0], 1000) > 0).all()
    # Recorded in the corrected form already: unchanged.
    corrected = [1 / 101, 4 / 101, NAN]
    np.testing.assert_array_equal(exact_p_values(corrected, 100, "corrected"), corrected)
    # P unknown: a 0 has no exact form (NaN), any other value is taken as it is.
    for unknown in (None, 0):
        got = exact_p_values([0.0, 0.2, NAN], unknown)
        assert math.isnan(got[0]) and got[1] == 0.2 and math.isnan(got[2])


def test_fisher_combined_by_hand():
    # Two tests: x = -2 (ln .01 + ln .04); chi-square with 4 df: exp(-x/2) (1 + x/2).
    x = -2 * (math.log(0.01) + math.log(0.04))
    by_hand = math.exp(-x / 2) * (1 + x / 2)
    assert by_hand == pytest.approx(0.0004 * (1 + math.log(2500)), rel=1e-12)  # 0.00353
    assert fisher_combined([0.01, 0.04]) == pytest.approx(by_hand, rel=1e-10)
    assert fisher_combined([0.01, NAN, 0.04]) == pytest.approx(by_hand, rel=1e-10)
    # Three tests: 6 df, exp(-x/2) (1 + x/2 + (x/2)^2 / 2).
    half = -(math.log(0.2) + math.log(0.5) + math.log(0.05))
    three = math.exp(-half) * (1 + half + half**2 / 2)
    assert fisher_combined([0.2, 0.5, 0.05]) == pytest.approx(three, rel=1e-10)
    # One test is its own p-value; none gives none.
    assert fisher_combined([0.3]) == 0.3
    assert math.isnan(fisher_combined([])) and math.isnan(fisher_combined([NAN, NAN]))
    # Many large p-values do not combine into a small one.
    assert fisher_combined([0.9] * 5) > 0.9


def test_holm_adjusted_by_hand():
    # m = 3 finite p-values, sorted .01, .03, .04: 3 x .01 = .03; 2 x .03 = .06; 1 x .04 = .04,
    # raised to the running maximum .06. NaN stays NaN and is not counted in m.
    got = holm_adjusted([0.01, 0.04, 0.03, NAN])
    np.testing.assert_allclose(got[:3], [0.03, 0.06, 0.06], rtol=1e-12)
    assert math.isnan(got[3])
    np.testing.assert_array_equal(holm_adjusted([0.5, 0.6]), [1.0, 1.0])  # capped at 1
    assert np.isnan(holm_adjusted([NAN, NAN])).all() and len(holm_adjusted([])) == 0


p_lists = st.lists(
    st.one_of(st.floats(0, 1, allow_nan=False), st.just(NAN)), min_size=0, max_size=30
)


@settings(max_examples=200, deadline=None)
@given(p_lists)
def test_holm_adjusted_is_at_least_raw_at_most_one_and_keeps_the_order(p_values):
    raw = np.asarray(p_values, float)
    adjusted = holm_adjusted(raw)
    finite = np.isfinite(raw)
    np.testing.assert_array_equal(np.isfinite(adjusted), finite)
    a, r = adjusted[finite], raw[finite]
    assert (a >= r).all() and (a <= 1).all()
    order = np.argsort(r, kind="stable")
    assert (np.diff(a[order]) >= 0).all()  # monotone in the order of the raw p-values


def test_t_interval_by_hand():
    # [1, 2, 3]: mean 2, sd 1, n 3; t(0.975, 2) = 4.302653: 2 -/+ 4.302653 / sqrt(3).
    low, high = t_interval([1.0, 2.0, 3.0])
    half = 4.302653 / math.sqrt(3)
    assert low == pytest.approx(2 - half, abs=1e-6) and high == pytest.approx(2 + half, abs=1e-6)
    assert t_interval([1.0, NAN, 2.0, 3.0]) == (low, high)
    assert all(math.isnan(b) for b in t_interval([4.0]))  # no interval from one value
    assert t_interval([5.0, 5.0]) == (5.0, 5.0)


def test_final_round_summary_counts_and_combines():
    rows = []
    for rep, (a, b) in enumerate([(0.01, 0.5), (0.2, 0.6), (0.04, NAN)]):
        rows += [
            (rep, 10, "mlp", "generic", "mmd_domain", "domain", 0.1 + rep / 100, a),
            (rep, 10, "mlp", "wachter_mad", "mmd_domain", "domain", 0.01, b),
            (rep, 10, "mlp", "generic", "disagreement", "model", 0.2, NAN),
        ]
    # wachter_mad's third repetition: the value is missing, its stale p = 0 must not count.
    rows[-2] = (2, 10, "mlp", "wachter_mad", "mmd_domain", "domain", NAN, 0.0)
    columns = ["repetition", "round", "model", "generator", "metric", "scope", "value", "p_value"]
    table = final_round_summary(pd.DataFrame(rows, columns=columns), n_permutations=100)
    table = table.set_index(["metric", "generator"])
    generic = table.loc[("mmd_domain", "generic")]
    assert (generic["n"], generic["n_tested"], generic["n_significant"]) == (3, 3, 2)
    # b = 1, 20, 4 of 100 -> 2/101, 21/101, 5/101; Fisher with 6 df.
    half = -sum(math.log(b / 101) for b in (2, 21, 5))
    combined = math.exp(-half) * (1 + half + half**2 / 2)
    assert generic["p_combined"] == pytest.approx(combined, rel=1e-10)
    assert generic["p_value"] == pytest.approx((0.01 + 0.2 + 0.04) / 3)  # descriptive only
    low, high = t_interval([0.1, 0.11, 0.12])
    assert (generic["ci_low"], generic["ci_high"]) == pytest.approx((low, high))
    other = table.loc[("mmd_domain", "wachter_mad")]
    assert (other["n"], other["n_tested"], other["n_significant"]) == (2, 2, 0)
    x = -2 * (math.log(51 / 101) + math.log(61 / 101))
    other_combined = math.exp(-x / 2) * (1 + x / 2)
    assert other["p_combined"] == pytest.approx(other_combined, rel=1e-10)
    # Holm over the table's two tests.
    assert generic["p_holm"] == pytest.approx(min(1, 2 * combined), rel=1e-10)
    assert other["p_holm"] == pytest.approx(max(2 * combined, other_combined), rel=1e-10)
    untested = table.loc[("disagreement", "generic")]
    assert untested["n_tested"] == 0 and untested["n_significant"] == 0
    assert math.isnan(untested["p_combined"]) and math.isnan(untested["p_holm"])


# --- what the reports say ----------------------------------------------------------------------


def markdown_tables(markdown: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every table of a Markdown report: (headers, rows of cells)."""
    tables, lines = [], markdown.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|---") and i > 0 and lines[i - 1].startswith("| "):
            headers = [c.strip() for c in lines[i - 1].strip("|").split(" | ")]
            rows = []
            for row in lines[i + 1 :]:
                if not row.startswith("| "):
                    break
                rows.append([c.strip() for c in row.strip().strip("|").split(" | ")])
            tables.append((headers, rows))
    return tables


def p_value_cells(markdown: str) -> list[str]:
    cells = []
    for headers, rows in markdown_tables(markdown):
        columns = [
            i for i, h in enumerate(headers) if h in ("combined p", "Holm p") or "p-value" in h
        ]
        cells += [row[i] for row in rows for i in columns if i < len(row)]
    return cells


def write_zero_sweep(directory: Path) -> Path:
    for job, gen in enumerate(("generic", "wachter_mad")):
        rows = [r for r in p_zero_rows() if r[1] == gen]
        write_small_run(directory / str(job), rows, n_permutations=1000)
        OmegaConf.save(
            OmegaConf.create([f"generator={gen}"]),
            directory / str(job) / ".hydra" / "overrides.yaml",
        )
    return directory


def test_no_report_says_p_equals_zero_or_shows_a_p_value_of_zero(tmp_path):
    texts = {}
    single = [r for r in p_zero_rows() if r[0] == 0]
    for name, rows, n_permutations in (
        ("run", p_zero_rows(), 100),
        ("single", single, 100),
        ("unknown", p_zero_rows(), None),
    ):
        run = write_small_run(tmp_path / name, rows, n_permutations)
        build_run_report(run, figures=False)
        texts[name] = (run / "report.md").read_text()
    for name, sweep in (("zero sweep", write_zero_sweep(tmp_path / "zero")), ("sweep", None)):
        sweep = sweep or write_fake_sweep(tmp_path / "fake")
        texts[name] = build_sweep_report(sweep, figures=False).with_suffix(".md").read_text()
    for name, markdown in texts.items():
        assert not P_EQUALS_ZERO.search(markdown), name
        cells = p_value_cells(markdown)
        assert cells, f"{name}: no p-value column found"
        assert not [c for c in cells if ZERO_CELL.match(c)], name
    # The p-values of 0 are really there (summary_table.csv keeps the recorded numbers).
    summary = pd.read_csv(tmp_path / "run" / "summary_table.csv")
    assert (summary["p_value"] == 0).any() and (summary["p_combined"].dropna() > 0).all()


def glossary(markdown: str) -> dict[str, tuple[str, str, str]]:
    """The Glossary (the last section): key -> (term, definition, unit)."""
    text = markdown.split("\n## Glossary\n", 1)[1]
    assert "\n## " not in text, "the Glossary is the report's last section"
    (headers, rows), *_ = markdown_tables(text)
    assert headers == ["term", "key", "definition", "unit or range"]
    return {key: (term, definition, unit_) for term, key, definition, unit_ in rows}


def summary_metric_names(markdown: str) -> set[str]:
    for headers, rows in markdown_tables(markdown):
        if "combined p" in headers:
            return {row[0] for row in rows}
    raise AssertionError("no final-round summary")


def test_glossary_lists_every_metric_with_a_definition(tmp_path):
    run = write_small_run(tmp_path / "run", fake_rows(metrics=ALL_METRICS))
    (run / "manifest.json").write_text(json.dumps({"data_rows": {"training": 80, "test": 20}}))
    build_run_report(run, figures=False)
    markdown = (run / "report.md").read_text()
    entries = glossary(markdown)
    metrics = {*ALL_METRICS, "decisiveness_normalised"}
    assert metrics <= set(entries)
    for key in metrics:
        term, definition, unit_ = entries[key]
        assert term == plain_name(key) and len(definition) > 20 and unit_, key
        assert "without a glossary entry" not in definition
    # The statistics of the tables are defined too.
    assert {"95 % CI", "p < 0.05 in", "combined p", "Holm p", "< 1/P"} <= set(entries)
    # The summary table names the metrics by their glossary terms.
    assert summary_metric_names(markdown) == {entries[m][0] for m in metrics}


def test_glossary_lists_the_dynamics_metrics_of_a_run(tmp_path):
    markdown, _, _ = build_dynamics(write_dynamics_run(tmp_path / "run"))
    entries = glossary(markdown)
    for key in ("reliability", "time_to_recourse", "n_active", "threshold_drift"):
        assert key in entries and "without a glossary entry" not in entries[key][1], key


def test_glossary_defines_the_group_comparisons(tmp_path):
    markdown, _, _ = build_dynamics(write_dynamics_run(tmp_path / "run"))
    entries = glossary(markdown)
    for key in ("time_to_recourse_difference", "effort_to_recourse_ratio"):
        term, definition, unit_ = entries[key]
        assert "without a glossary entry" not in definition, key
        assert term == plain_name(key) and len(definition) > 20 and unit_, key
    assert entries["time_to_recourse_difference"][2] == "rounds"
    assert entries["effort_to_recourse_ratio"][2] == "ratio, 1 = equal"


ALL_METRICS = (
    "mmd_domain",
    "mmd_model",
    "mmd_model_grid",
    "disagreement",
    "decisiveness",
    "perturbation",
    "f1_change",
)


def fake_rows(values: dict | None = None, metrics=ALL_METRICS, repetitions=(0, 1)) -> list[tuple]:
    """Final-round rows for write_small_run: ``values[(generator, metric)] = (value, p)``."""
    values = values or {}
    rows = []
    for rep in repetitions:
        for gen in ("generic", "wachter_mad"):
            for metric in metrics:
                with_p = metric.startswith("mmd")
                value, p = values.get((gen, metric), (0.01, 0.5 if with_p else NAN))
                rows.append((rep, gen, metric, value, p))
    return rows


def largest_shifts_section(markdown: str) -> str:
    return markdown.split("## Largest shifts", 1)[1].split("\n## ", 1)[0]


def test_ties_are_named_as_ties(tmp_path):
    values = {}
    for gen, domain, model, disagreement, f1 in (
        ("generic", 0.05, 0.0201, 0.1, -0.03),
        ("wachter_mad", 0.05, 0.0204, 0.2, -0.03),  # 0.0201 and 0.0204 both read 0.02
        ("dice", 0.01, 0.02, 0.2, -0.01),
    ):
        values[(gen, "mmd_domain")] = (domain, 0.01)
        values[(gen, "mmd_model")] = (model, 0.3)
        values[(gen, "disagreement")] = (disagreement, NAN)
        values[(gen, "f1_change")] = (f1, NAN)
    rows = [
        (rep, gen, metric, *values[(gen, metric)])
        for rep in (0, 1)
        for gen in ("generic", "wachter_mad", "dice")
        for metric in ("mmd_domain", "mmd_model", "disagreement", "f1_change")
    ]
    run = write_small_run(tmp_path / "run", rows)
    build_run_report(run, figures=False)
    text = largest_shifts_section((run / "report.md").read_text())
    # A tie carries no test clause: each tied system has its own (the table lists them).
    assert (
        "Under generic with mlp and wachter_mad with mlp, the domain shift (MMD²) reached 0.05 "
        "after 10 rounds, tied for the largest of all 3 systems" in text
    )
    assert "The model shift (MMD² of predictions) was the same under every system: 0.02." in text
    assert (
        "The disagreement with the initial model was largest, and tied, under wachter_mad with "
        "mlp and dice with mlp: 0.2; smallest under generic with mlp: 0.1." in text
    )
    assert (
        "Macro F1 on the test set fell most, and equally, under generic with mlp and "
        "wachter_mad with mlp: by 3 points" in text
    )
    assert "larger" not in text and "largest under" not in text  # no winner made up
    # Every system the same: said so.
    same = {(gen, "f1_change"): (-0.02, NAN) for gen in ("generic", "wachter_mad")}
    run = write_small_run(tmp_path / "same", fake_rows(same, metrics=("f1_change",)))
    build_run_report(run, figures=False)
    text = largest_shifts_section((run / "report.md").read_text())
    assert "Macro F1 on the test set fell by the same amount under generic with mlp and " in text


def write_kernel_warnings(run: Path, metrics=("mmd_domain",)) -> None:
    rows = [
        (rep, rnd, "mlp", gen, metric, 0.5, 1e-9 * (1 + rep), 4.0, estimate)
        for metric in metrics
        for rep in (0, 1)
        for rnd in (5, 10)
        for gen, estimate in (("generic", 0.2), ("wachter_mad", 0.1))
    ]
    pd.DataFrame(rows, columns=KERNEL_COLUMNS).to_csv(run / "kernel_warnings.csv", index=False)


def test_a_blind_kernel_is_never_read_as_no_shift(tmp_path):
    values = {
        ("generic", "mmd_domain"): (-0.0001, 0.9),
        ("wachter_mad", "mmd_domain"): (-0.0002, 0.8),
    }
    rows = fake_rows(values, metrics=("mmd_domain", "mmd_model"))
    # The same run without the kernel check: the plain "did not rise above zero" sentence.
    plain = write_small_run(tmp_path / "plain", rows)
    build_run_report(plain, figures=False)
    markdown = (plain / "report.md").read_text()
    assert (
        "No system's domain shift (MMD²) rose above zero after 10 rounds: the largest was "
        "-0.0001, under generic with mlp (p < 0.05 in 0 of 2 repetitions; combined p = 0.98); no "
        "shift of the favourable class is detectable at this kernel length scale." in markdown
    )
    assert "Kernel check" not in markdown
    run = write_small_run(tmp_path / "run", rows)
    write_kernel_warnings(run)
    html = build_run_report(run, figures=False).read_text()
    markdown = (run / "report.md").read_text()
    reading = largest_shifts_section(markdown)
    for text in (markdown, html):
        assert "No system's domain shift" not in text and "rose above zero" not in text
    assert "The domain shift (MMD²) cannot be read here" in reading
    assert "ℓ = 0.5" in reading and "2.0e-09" in reading  # the largest median kernel value
    assert "metrics.mmd_domain.bandwidth=median" in reading and "ℓ ≈ 4" in reading
    assert "is 0.2 under generic with mlp; 0.1 under wachter_mad with mlp" in reading
    assert "cannot see anything at its length scale" in reading  # in the significance sentence
    # The model shift was not flagged: read as usual.
    assert "The model shift (MMD² of predictions) was" in reading
    # The section, with the median-heuristic estimate per system at the last round flagged.
    assert "## Kernel check" in markdown
    assert "| mmd_domain | mlp | generic | 10 | 0.5 | 2e-09 | 4 | 0.2 |" in markdown
    assert "| mmd_domain | mlp | wachter_mad | 10 | 0.5 | 2e-09 | 4 | 0.1 |" in markdown
    # A flagged model shift is blind too.
    write_kernel_warnings(run, ("mmd_domain", "mmd_model"))
    build_run_report(run, figures=False)
    reading = largest_shifts_section((run / "report.md").read_text())
    assert "The model shift (MMD² of predictions) cannot be read here" in reading


def test_a_kernel_flagged_only_before_the_final_round_leaves_the_final_reading_alone(tmp_path):
    values = {("generic", "mmd_domain"): (0.05, 0.01), ("wachter_mad", "mmd_domain"): (0.02, 0.3)}
    run = write_small_run(tmp_path / "run", fake_rows(values, metrics=("mmd_domain",)))
    rows = [
        (rep, 5, "mlp", gen, "mmd_domain", 0.5, 1e-9, 4.0, 0.3)
        for rep in (0, 1)
        for gen in ("generic", "wachter_mad")
    ]  # flagged at round 5 only; the final round is 10
    pd.DataFrame(rows, columns=KERNEL_COLUMNS).to_csv(run / "kernel_warnings.csv", index=False)
    build_run_report(run, figures=False)
    reading = largest_shifts_section((run / "report.md").read_text())
    assert "cannot be read here" not in reading and "cannot see anything" not in reading
    assert "Under generic with mlp, the domain shift (MMD²) reached 0.05" in reading
    # The Kernel check section still lists the earlier round.
    assert (
        "| mmd_domain | mlp | generic | 5 | 0.5 | 1e-09 | 4 | 0.3 |"
        in (run / "report.md").read_text()
    )


def test_a_kernel_flagged_at_one_systems_final_round_blinds_that_system_only(tmp_path):
    values = {("generic", "mmd_domain"): (0.05, 0.01), ("wachter_mad", "mmd_domain"): (0.02, 0.3)}
    run = write_small_run(tmp_path / "run", fake_rows(values, metrics=("mmd_domain",)))
    rows = [
        (rep, rnd, "mlp", "wachter_mad", "mmd_domain", 0.5, 1e-9, 4.0, 0.3)
        for rep in (0, 1)
        for rnd in (5, 10)
    ]  # wachter_mad flagged at its final round 10
    rows += [(rep, 5, "mlp", "generic", "mmd_domain", 0.5, 1e-9, 4.0, 0.2) for rep in (0, 1)]
    kernel = pd.DataFrame(rows, columns=KERNEL_COLUMNS)  # generic flagged at round 5 only
    kernel.to_csv(run / "kernel_warnings.csv", index=False)
    build_run_report(run, figures=False)
    markdown = (run / "report.md").read_text()
    reading = largest_shifts_section(markdown)
    # generic is read as usual, and not ranked against the blind wachter_mad.
    assert (
        "- Under generic with mlp, the domain shift (MMD²) reached 0.05 after 10 rounds (p < 0.05 "
        "in 2 of 2 repetitions; combined p = 0.0035).\n" in reading
    )
    # wachter_mad has its own sentence.
    assert (
        "- The domain shift (MMD²) cannot be read under wachter_mad with mlp: at its kernel "
        "length scale ℓ = 0.5 the median kernel value between two points was 1.0e-09 (below "
        "1e-06), so almost every pair of points looks equally far apart and the estimate (0.02) "
        "says nothing either way. With the median heuristic (metrics.mmd_domain.bandwidth=median; "
        "ℓ ≈ 4 here) the estimate at round 10 is 0.3 under wachter_mad with mlp (see Kernel "
        "check).\n" in reading
    )
    assert "cannot be read here" not in reading and "larger of the two" not in reading
    # kernel_findings: every flagged system at its last flagged round; with the summary rows,
    # only those flagged at their final round.
    found = kernel_findings(kernel, "mmd_domain")
    assert dict(zip(found["generator"], found["round"], strict=True)) == {
        "wachter_mad": 10,
        "generic": 5,
    }
    summary = pd.read_csv(run / "summary_table.csv")
    final = kernel_findings(kernel, "mmd_domain", summary[summary["metric"] == "mmd_domain"])
    assert list(final["generator"]) == ["wachter_mad"] and list(final["round"]) == [10]
    assert final.loc[0, "value_at_median"] == pytest.approx(0.3)
    # Both are in the Kernel check section, each at its last flagged round.
    assert "| mmd_domain | mlp | wachter_mad | 10 | 0.5 | 1e-09 | 4 | 0.3 |" in markdown
    assert "| mmd_domain | mlp | generic | 5 | 0.5 | 1e-09 | 4 | 0.2 |" in markdown


def test_the_significance_sentence_names_only_the_blind_systems(tmp_path):
    values = {("generic", "mmd_domain"): (0.05, 0.01), ("wachter_mad", "mmd_domain"): (0.02, 0.3)}
    run = write_small_run(tmp_path / "run", fake_rows(values, metrics=("mmd_domain",)))
    rows = [(rep, 10, "mlp", "wachter_mad", "mmd_domain", 0.5, 1e-9, 4.0, 0.3) for rep in (0, 1)]
    pd.DataFrame(rows, columns=KERNEL_COLUMNS).to_csv(run / "kernel_warnings.csv", index=False)
    build_run_report(run, figures=False)
    reading = largest_shifts_section((run / "report.md").read_text())
    significance = next(line for line in reading.splitlines() if "Significant at" in line)
    assert "(p < 0.05 in 2 of 4 tests), which cannot see anything" not in significance
    assert "wachter_mad with mlp" in significance


def test_a_test_that_cannot_reject_is_not_counted_as_rejecting(tmp_path):
    # P = 10: a p of 0 is (0 + 1)/11 = 0.09 exactly, so no single test can reject at 5 %; the
    # two together can: Fisher's chi-square with 4 df at x = 4 ln 11 is 1/121 (1 + 2 ln 11).
    rows = [(rep, "generic", "mmd_domain", 0.1, 0.0) for rep in (0, 1)]
    run = write_small_run(tmp_path / "run", rows, n_permutations=10)
    build_run_report(run, figures=False)
    summary = pd.read_csv(run / "summary_table.csv")
    assert summary.loc[0, "n_significant"] == 0 and summary.loc[0, "n_tested"] == 2
    combined = (1 + 2 * math.log(11)) / 121
    assert summary.loc[0, "p_combined"] == pytest.approx(combined, rel=1e-10)  # 0.0479
    markdown = (run / "report.md").read_text()
    assert "p < 0.05 in 2 of 2" not in markdown
    assert "(p < 0.05 in 0 of 2 repetitions; combined p = 0.048)" in markdown
    assert "the domain shift under 1 of 1 system (p < 0.05 in 0 of 2 tests)" in markdown
    assert "| 0 of 2 | 0.0479 | 0.0479 |" in markdown
    # The count itself: 1/20 = 0.05 is not below 0.05, 1/21 is; P unknown: as recorded.
    frame = pd.DataFrame({"value": [0.1], "p_value": [0.0]})
    assert [round_statistics(frame, n)["n_significant"] for n in (10, 19, 20, None)] == [0, 0, 1, 1]


def test_a_run_without_permutation_tests_says_so(tmp_path):
    rows = [(rep, "generic", "mmd_domain", 0.1, NAN) for rep in (0, 1)]
    run = write_small_run(tmp_path / "run", rows, n_permutations=0)
    build_run_report(run, figures=False)
    markdown = (run / "report.md").read_text()
    assert (
        "Every metric at the last evaluated round over 2 repetitions: the mean, its 95 % t "
        "interval (none for a single value) and the sample standard deviation; n counts the "
        "values that could be computed. No permutation tests were run "
        "(simulation.n_permutations=0). See the Glossary.\n" in markdown
    )
    assert "Fisher" not in markdown.split("## Glossary")[0] and "Significant" not in markdown
    assert "- Under generic with mlp, the domain shift (MMD²) reached 0.1 after 10 rounds.\n" in (
        markdown
    )
    assert "| 10 | 2 | 0.1 | 0.1 … 0.1 | 0 | – | – | – |" in markdown


def write_titled_run(directory: Path, repetitions: int, preset: str | None) -> Path:
    run = write_small_run(
        directory, fake_rows(metrics=("mmd_domain",), repetitions=range(repetitions))
    )
    config = {"seed": 0, "simulation": {"n_rounds": 10, "n_repetitions": repetitions}}
    OmegaConf.save(OmegaConf.create(config), run / ".hydra" / "config.yaml")
    hydra = {"hydra": {"runtime": {"choices": {"data": "overlapping", "model": "mlp"}}}}
    OmegaConf.save(OmegaConf.create(hydra), run / ".hydra" / "hydra.yaml")
    overrides = [f"+experiment={preset}"] if preset else []
    OmegaConf.save(OmegaConf.create(overrides), run / ".hydra" / "overrides.yaml")
    return run


def test_titles_say_what_was_compared(tmp_path):
    run = write_titled_run(tmp_path / "run", 2, "credit")
    html = build_run_report(run, figures=False).read_text()
    title = (
        "Shift report: overlapping data · mlp × generic, wachter_mad · 10 rounds × 2 "
        "repetitions · preset credit"
    )
    assert (run / "report.md").read_text().startswith(f"# {title}\n")
    assert f"<title>{title}</title>" in html
    run = write_titled_run(tmp_path / "single", 1, None)
    build_run_report(run, figures=False)
    first = (run / "report.md").read_text().splitlines()[0]
    assert first == (
        "# Shift report: overlapping data · mlp × generic, wachter_mad · 10 rounds × 1 repetition"
    )
    # A sweep: what it varied.
    sweep = write_fake_sweep(tmp_path / "sweep")
    for job in sweep.glob("[0-9]"):
        choices = {"hydra": {"runtime": {"choices": {"data": "moons"}}}}
        OmegaConf.save(OmegaConf.create(choices), job / ".hydra" / "hydra.yaml")
    first = build_sweep_report(sweep, figures=False).with_suffix(".md").read_text().splitlines()[0]
    assert first == (
        "# Sweep shift report: moons data · generator ∈ {generic, wachter_mad} × seed ∈ {0, 1}"
    )


def test_headline_is_the_first_sentences_of_the_reading(tmp_path):
    run = write_small_run(tmp_path / "run", p_zero_rows())
    build_run_report(run, figures=False)
    bullets = [
        line[2:]
        for line in largest_shifts_section((run / "report.md").read_text()).splitlines()
        if line.startswith("- ")
    ]
    assert headline(run) == bullets[:3] and headline(run, n=1) == bullets[:1]


def test_normalised_decisiveness(tmp_path):
    values = {
        ("generic", "decisiveness"): (2.0, NAN),
        ("wachter_mad", "decisiveness"): (1.0, NAN),
    }
    rows = fake_rows(values, metrics=("mmd_domain", "decisiveness"))
    run = write_small_run(tmp_path / "run", rows)
    (run / "manifest.json").write_text(json.dumps({"data_rows": {"training": 80, "test": 20}}))
    build_run_report(run, figures=False)
    summary = pd.read_csv(run / "summary_table.csv").set_index(["metric", "generator"])
    # N = 100 rows: the largest reference-form decisiveness is 0.5 * sqrt(100) = 5.
    assert decisiveness_scale(None, 100) == 5 and decisiveness_scale("code", 100) == 5
    assert summary.loc[("decisiveness_normalised", "generic"), "mean"] == pytest.approx(2.0 / 5)
    assert summary.loc[("decisiveness_normalised", "wachter_mad"), "mean"] == pytest.approx(0.2)
    assert summary.loc[("decisiveness_normalised", "generic"), "n_tested"] == 0
    assert summary.loc[("decisiveness", "generic"), "mean"] == 2.0  # the reference form stays
    markdown = (run / "report.md").read_text()
    assert (
        "| change of decisiveness, normalised | model | mlp | generic | 10 | 2 | 0.4 |" in markdown
    )
    assert "normalised by its largest possible value" in markdown
    # metrics.csv keeps the reference form only.
    assert "decisiveness_normalised" not in set(pd.read_csv(run / "metrics.csv")["metric"])
    # The paper's form: at most 1/4, so x 4, whatever N.
    assert decisiveness_scale("paper", None) == 0.25 and decisiveness_scale("paper", 100) == 0.25
    config = OmegaConf.load(run / ".hydra" / "config.yaml")
    config.metrics = {"decisiveness": {"form": "paper"}}
    OmegaConf.save(config, run / ".hydra" / "config.yaml")
    build_run_report(run, figures=False)
    summary = pd.read_csv(run / "summary_table.csv").set_index(["metric", "generator"])
    assert summary.loc[("decisiveness_normalised", "generic"), "mean"] == pytest.approx(8.0)


@pytest.mark.parametrize("manifest", [None, {"fingerprint": "x"}, {"data_rows": {"training": 80}}])
def test_no_normalised_decisiveness_without_the_data_size(tmp_path, manifest):
    run = write_small_run(tmp_path / "run", fake_rows(metrics=("mmd_domain", "decisiveness")))
    if manifest is not None:
        (run / "manifest.json").write_text(json.dumps(manifest))
    build_run_report(run, figures=False)
    assert "decisiveness_normalised" not in set(pd.read_csv(run / "summary_table.csv")["metric"])
    markdown = (run / "report.md").read_text()
    assert "does not record" in markdown and "only the reference form is shown" in markdown
    assert "change of decisiveness, normalised" not in markdown.split("## Glossary")[0]


def test_a_figure_of_two_evaluated_rounds_draws_points_not_lines(tmp_path, monkeypatch):
    from recourse_sim.report import figures

    saved = []
    save = figures._save

    def capture(figure, path):
        saved.append(figure)
        return save(figure, path)

    monkeypatch.setattr(figures, "_save", capture)
    metrics = fake_metrics(models=("logistic",), rounds=(0, 10), repetitions=2)
    path = figures.metric_lines(metrics, tmp_path)
    assert path.is_file() and path.with_suffix(".svg").is_file()
    assert path.with_suffix(".svg").read_text().lstrip().startswith("<?xml")
    (figure,) = saved
    axes = [ax for ax in figure.axes if ax.get_title()]
    assert {ax.get_title() for ax in axes} == {plain_name(m) for m in ALL_METRICS}
    for ax in axes:
        metric = next(m for m in ALL_METRICS if plain_name(m) == ax.get_title())
        assert ax.get_ylabel() == unit(metric) and ax.get_xlabel() == "round"
        zero = [
            line
            for line in ax.get_lines()
            if line.get_color() == "black" and list(line.get_ydata()) == [0, 0]
        ]
        assert len(zero) == 1, f"{ax.get_title()}: one zero line"
        data = [line for line in ax.get_lines() if line not in zero and len(line.get_xdata())]
        assert data, ax.get_title()
        for line in data:  # means as markers, error bar caps: never a line between the rounds
            assert line.get_linestyle() == "None", (ax.get_title(), line.get_linestyle())
        assert any(line.get_marker() == "o" for line in data)
    # Three evaluated rounds: lines again.
    saved.clear()
    figures.metric_lines(
        fake_metrics(models=("logistic",), rounds=(0, 5, 10)), tmp_path, name="m.png"
    )
    lines = [
        line
        for ax in saved[0].axes
        for line in ax.get_lines()
        if isinstance(line, Line2D) and line.get_color() != "black" and len(line.get_xdata()) == 3
    ]
    assert lines and all(line.get_linestyle() == "-" for line in lines)


# --- the terminal ------------------------------------------------------------------------------


def test_cli_prints_the_report_and_its_headline_and_logs_each_evaluation(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "recourse_sim", "debug=smoke", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    report = [i for i, line in enumerate(lines) if line.startswith("recourse_sim: report: ")]
    assert len(report) == 1
    assert lines[report[0]] == f"recourse_sim: report: {(tmp_path / 'report.html').resolve()}"
    bullets = lines[report[0] + 1 :]
    assert len(bullets) == 3 and all(line.startswith("  - ") for line in bullets)
    assert [line[4:] for line in bullets] == headline(tmp_path)
    log = (tmp_path / "__main__.log").read_text()
    evaluation = [
        line for line in log.splitlines() if "round 0, logistic/generic, repetition 0:" in line
    ]
    assert len(evaluation) == 1 and "mmd_domain" in evaluation[0]
    assert "round 2, logistic/generic, repetition 0:" in log
    timings = [line for line in log.splitlines() if "timings:" in line]
    assert len(timings) == 1
    assert re.search(r"timings: data [\d.]+ s, pre-training [\d.]+ s, rounds [\d.]+ s", timings[0])
    assert "report" in timings[0]
    # The per-evaluation lines stay off the terminal; the log's other lines do not.
    for stream in (result.stdout, result.stderr):
        assert "repetition 0:" not in stream and "recourse_sim.evaluation" not in stream
    assert "timings:" in result.stdout
