"""Shift reports: the aggregation against hand-made frames, then the real CLI end to end."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from conftest import TINY as SMOKE_TWO_REPETITIONS
from omegaconf import OmegaConf
from scipy import stats

from recourse_sim.keys import job_key
from recourse_sim.report import ReportError, build_report, build_run_report, build_sweep_report
from recourse_sim.report.callback import ShiftReportCallback
from recourse_sim.report.document import format_number
from recourse_sim.report.glossary import plain_name
from recourse_sim.report.reading import largest_shifts
from recourse_sim.report.tables import (
    final_round_summary,
    parse_overrides,
    recourse_per_round,
    recourse_per_system,
    sweep_metrics,
    swept_keys,
)
from recourse_sim.simulation.recorder import METRIC_COLUMNS

TINY = [*SMOKE_TWO_REPETITIONS, "report.figures=true"]

ROOT = Path(__file__).resolve().parent.parent
METRICS = [
    "mmd_domain",
    "perturbation",
    "mmd_model",
    "mmd_model_grid",
    "disagreement",
    "decisiveness",
    "f1_change",
]
WITH_P = {"mmd_domain", "mmd_model", "mmd_model_grid"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --- synthetic run directories ---------------------------------------------------------------


def fake_metrics(
    models=("logistic", "mlp"),
    generators=("generic", "wachter_mad"),
    repetitions=3,
    rounds=(0, 5, 10),
    seed=0,
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for rep in range(repetitions):
        for rnd in rounds:
            for model in models:
                for generator in generators:
                    for metric in METRICS:
                        p = rng.uniform() if metric in WITH_P and rnd > 0 else np.nan
                        rows.append(
                            {
                                "repetition": rep,
                                "round": rnd,
                                "model": model,
                                "generator": generator,
                                "metric": metric,
                                "scope": "domain" if metric == "mmd_domain" else "model",
                                "value": rng.normal(0.01 * rnd, 0.01),
                                "p_value": p,
                            }
                        )
    return pd.DataFrame(rows)


def fake_recourse(models=("logistic",), generators=("generic", "wachter_mad"), reps=2, rounds=4):
    rng = np.random.default_rng(1)
    rows = []
    for rep in range(reps):
        for rnd in range(1, rounds + 1):
            for model in models:
                for generator in generators:
                    chosen = int(rng.integers(0, 3))
                    rows.append(
                        {
                            "repetition": rep,
                            "round": rnd,
                            "model": model,
                            "generator": generator,
                            "n_candidates": int(rng.integers(20, 40)),
                            "n_chosen": chosen,
                            "success_rate": rng.uniform() if chosen else np.nan,
                            "converged": rng.uniform() if chosen else np.nan,
                            "cost": rng.uniform() if chosen else np.nan,
                            "redundancy": 0.0 if chosen else np.nan,
                            "n_iterations": 10.0 if chosen else np.nan,
                        }
                    )
    return pd.DataFrame(rows)


def write_fake_run(directory: Path, models=("logistic",), generators=("generic", "wachter_mad")):
    """A complete two-feature run directory without running the simulation."""
    directory.mkdir(parents=True, exist_ok=True)
    fake_metrics(models, generators, repetitions=2).to_csv(directory / "metrics.csv", index=False)
    fake_recourse(models, generators).to_csv(directory / "recourse.csv", index=False)
    rng = np.random.default_rng(2)
    n = 60
    X = np.vstack([rng.normal(-1, 0.5, (n // 2, 2)), rng.normal(1, 0.5, (n // 2, 2))])
    y = np.r_[np.zeros(n // 2, int), np.ones(n // 2, int)]
    initial = pd.DataFrame({"individual": range(n), "x1": X[:, 0], "x2": X[:, 1], "label": y})
    initial.to_csv(directory / "initial_population.csv", index=False)
    finals, grids = [], []
    g0, g1 = np.meshgrid(np.linspace(-3, 3, 60), np.linspace(-3, 3, 60))
    for rep in range(2):
        for model in models:
            for generator in generators:
                final = initial.copy()
                moved = np.arange(5)
                final.loc[moved, ["x1", "x2"]] += 1.5
                final.loc[moved, "label"] = 1
                final["initial_label"] = y
                final["n_recourse"] = 0
                final.loc[moved, "n_recourse"] = 1
                final["first_recourse_round"] = np.where(final["n_recourse"] > 0, 1, -1)
                final["last_recourse_round"] = final["first_recourse_round"]
                for key, value in (("generator", generator), ("model", model), ("repetition", rep)):
                    final.insert(0, key, value)
                finals.append(final)
                for stage, shift in (("initial", 0.0), ("final", -0.5)):
                    proba = 1 / (1 + np.exp(-3 * (g0.ravel() + g1.ravel() - shift)))
                    grids.append(
                        pd.DataFrame(
                            {
                                "repetition": rep,
                                "model": model,
                                "generator": generator,
                                "stage": stage,
                                "x1": g0.ravel(),
                                "x2": g1.ravel(),
                                "proba": proba,
                            }
                        )
                    )
    pd.concat(finals).to_csv(directory / "final_population.csv", index=False)
    pd.concat(grids).to_csv(directory / "decision_grid.csv", index=False)
    return directory


def write_fake_sweep(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(
        OmegaConf.create(
            {"hydra": {"overrides": {"task": ["generator=generic,wachter_mad", "seed=0,1"]}}}
        ),
        directory / "multirun.yaml",
    )
    job = 0
    for generator in ("generic", "wachter_mad"):
        for seed in (0, 1):
            job_dir = directory / str(job)
            (job_dir / ".hydra").mkdir(parents=True)
            metrics = fake_metrics(("logistic",), (generator,), repetitions=2, seed=job)
            metrics.to_csv(job_dir / "metrics.csv", index=False)
            OmegaConf.save(
                OmegaConf.create([f"generator={generator}", f"seed={seed}"]),
                job_dir / ".hydra" / "overrides.yaml",
            )
            job += 1
    return directory


# --- independent reference computations ------------------------------------------------------


def exact_p(p: np.ndarray, n_permutations: int | None) -> np.ndarray:
    """Recorded reference-form p-values b/P as (b + 1)/(P + 1); P unknown: 0 has no exact form."""
    p = np.asarray(p, float)
    if not n_permutations:
        return np.where(p > 0, p, np.nan)
    return (np.round(p * n_permutations) + 1) / (n_permutations + 1)


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment, written out as a loop over the sorted finite p-values."""
    p = np.asarray(p_values, float)
    adjusted = np.full(len(p), np.nan)
    finite = sorted((i for i in range(len(p)) if np.isfinite(p[i])), key=lambda i: p[i])
    running = 0.0
    for rank, i in enumerate(finite):
        running = max(running, min(1.0, (len(finite) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def expected_summary(
    metrics: pd.DataFrame, by=("model", "generator"), per=(), n_permutations=None
) -> pd.DataFrame:
    """The final-round aggregate, computed here independently of the package."""
    by, per = list(by), list(per)
    last_round = metrics.groupby(per + by)["round"].transform("max")
    last = metrics[metrics["round"] == last_round]
    rows = {}
    for key, group in last.groupby(["metric", *by]):
        values = group["value"].dropna().to_numpy(float)
        p = group["p_value"][group["value"].notna()].dropna().to_numpy(float)
        n = len(values)
        mean = values.mean() if n else math.nan
        sd = values.std(ddof=1) if n > 1 else math.nan
        half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) if n > 1 else math.nan
        per_test = exact_p(p, n_permutations)
        # Counted by the exact (b + 1)/(P + 1) (with P < 20 never below 0.05); P unknown: as
        # recorded.
        significant = np.where(np.isfinite(per_test), per_test, p) < 0.05
        exact = per_test[np.isfinite(per_test)]
        if len(exact) == 0:
            combined = math.nan
        elif len(exact) == 1:
            combined = exact[0]
        else:
            combined = stats.combine_pvalues(exact, method="fisher").pvalue
        rows[key] = {
            "round": group["round"].max(),
            "n": n,
            "mean": mean,
            "sd": sd,
            "ci_low": mean - half,
            "ci_high": mean + half,
            "p_value": p.mean() if len(p) else math.nan,
            "n_tested": len(p),
            "n_significant": int(significant.sum()),
            "p_combined": combined,
        }
    expected = pd.DataFrame.from_dict(rows, orient="index")
    expected.index = expected.index.set_names(["metric", *by])
    expected["p_holm"] = holm(expected["p_combined"].to_numpy(float))
    return expected


def with_normalised(metrics: pd.DataFrame, run_dir: Path) -> pd.DataFrame:
    """``metrics`` plus the report's decisiveness / (½√N), N from the run's manifest."""
    rows = json.loads((run_dir / "manifest.json").read_text())["data_rows"]
    scale = 0.5 * math.sqrt(rows["training"] + rows["test"])
    extra = metrics[metrics["metric"] == "decisiveness"].assign(
        metric="decisiveness_normalised", p_value=math.nan
    )
    extra["value"] = extra["value"] / scale
    return pd.concat([metrics, extra], ignore_index=True)


def fmt(value) -> str:
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return "–" if math.isnan(value) else f"{value:.4g}"


def assert_summary_matches(table: pd.DataFrame, expected: pd.DataFrame, by) -> None:
    table = table.set_index(["metric", *by]).sort_index()
    expected = expected.sort_index()
    assert list(table.index) == list(expected.index)
    for column in ("round", "n", "n_tested", "n_significant"):
        np.testing.assert_array_equal(table[column].to_numpy(), expected[column].to_numpy())
    for column in ("mean", "sd", "ci_low", "ci_high", "p_value", "p_combined", "p_holm"):
        np.testing.assert_allclose(
            table[column].to_numpy(float), expected[column].to_numpy(float), rtol=1e-9, atol=0
        )


def html_row(values) -> str:
    cells = []
    for value in values:
        css = ' class="n"' if isinstance(value, (int, float, np.integer, np.floating)) else ""
        cells.append(f"<td{css}>{value if css == '' else fmt(value)}</td>")
    return "".join(cells)


def assert_html_has_summary(html: str, expected: pd.DataFrame, scopes: dict[str, str]) -> None:
    """Every row of the summary appears in the HTML as a reader sees it (4 significant digits).

    The columns: plain name, scope, system, final round, n, mean, "low … high", sd,
    "k of n" (tested repetitions), combined p and Holm p (a right-aligned – where there is no
    test).
    """
    for key, row in expected.iterrows():
        metric, *system = key
        values = [plain_name(metric), scopes.get(metric, "model"), *system]
        values += [int(row["round"]), int(row["n"]), float(row["mean"])]
        ci = "–" if math.isnan(row["ci_low"]) else f"{fmt(row['ci_low'])} … {fmt(row['ci_high'])}"
        values += [ci, float(row["sd"])]
        prefix = html_row(values)
        if row["n_tested"]:
            cells = f"<td>{int(row['n_significant'])} of {int(row['n_tested'])}</td>"
        else:
            cells = "<td>–</td>"
        for p in (row["p_combined"], row["p_holm"]):
            if p < 1e-12:
                cells += "<td>&lt; 1e-12</td>"
            else:  # fmt gives – for NaN
                cells += f'<td class="n">{fmt(float(p))}</td>'
        assert prefix + cells in html, f"summary row {key} missing from the HTML"


def assert_valid_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert len(data) > 1000
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
    assert float(image[..., :3].std()) > 0.01, f"{path} is blank"


# --- aggregation -------------------------------------------------------------------------------


def test_final_round_summary_matches_a_direct_aggregate():
    metrics = fake_metrics()
    table = final_round_summary(metrics)
    assert list(table.columns) == [
        "metric",
        "scope",
        "model",
        "generator",
        "round",
        "n",
        "mean",
        "sd",
        "ci_low",
        "ci_high",
        "p_value",
        "n_tested",
        "n_significant",
        "p_combined",
        "p_holm",
    ]
    assert len(table) == len(METRICS) * 4
    assert (table["round"] == 10).all() and (table["n"] == 3).all()
    assert_summary_matches(table, expected_summary(metrics), ["model", "generator"])
    # Report order: the reference metrics in their canonical order.
    assert table["metric"].iloc[0] == "mmd_domain" and table["metric"].iloc[-1] == "f1_change"
    # Tests only where there are p-values: the three MMDs of each of the 4 systems.
    tested = table[table["n_tested"] > 0]
    assert set(tested["metric"]) == WITH_P and (tested["n_tested"] == 3).all()
    assert table.loc[table["n_tested"] == 0, ["p_combined", "p_holm"]].isna().all().all()
    # With P known, a recorded b/P is combined as (b + 1)/(P + 1): the same rows, other p.
    rounded = metrics.assign(p_value=(metrics["p_value"] * 100).round() / 100)
    with_p = final_round_summary(rounded, n_permutations=100)
    assert_summary_matches(
        with_p, expected_summary(rounded, n_permutations=100), ["model", "generator"]
    )
    assert not np.allclose(
        with_p["p_combined"].dropna(), final_round_summary(rounded)["p_combined"].dropna()
    )


def test_final_round_is_taken_per_system():
    metrics = fake_metrics(models=("logistic",), generators=("generic", "wachter_mad"))
    # wachter_mad stopped after round 5 (e.g. a system with fewer evaluations)
    metrics = metrics[~((metrics["generator"] == "wachter_mad") & (metrics["round"] == 10))]
    table = final_round_summary(metrics).set_index(["metric", "generator"])
    assert table.loc[("mmd_domain", "generic"), "round"] == 10
    assert table.loc[("mmd_domain", "wachter_mad"), "round"] == 5
    hand = metrics.query("metric == 'mmd_domain' and generator == 'wachter_mad' and round == 5")
    assert table.loc[("mmd_domain", "wachter_mad"), "mean"] == pytest.approx(hand["value"].mean())


def test_single_repetition_and_metrics_without_p_values():
    metrics = fake_metrics(models=("mlp",), generators=("generic",), repetitions=1)
    table = final_round_summary(metrics).set_index("metric")
    assert table["sd"].isna().all()
    assert np.isnan(table.loc["f1_change", "p_value"])
    assert not np.isnan(table.loc["mmd_domain", "p_value"])
    hand = metrics.query("metric == 'mmd_domain' and round == 10")
    assert table.loc["mmd_domain", "p_value"] == hand["p_value"].iloc[0]


def test_empty_metrics_give_an_empty_summary():
    table = final_round_summary(fake_metrics().iloc[:0])
    assert table.empty and "mean" in table.columns


def test_recourse_tables_skip_rounds_without_recourse():
    recourse = fake_recourse()
    per_round = recourse_per_round(recourse)
    expected = recourse.groupby(["round", "model", "generator"])[
        ["n_candidates", "n_chosen", "success_rate", "cost"]
    ].mean()
    merged = per_round.set_index(["round", "model", "generator"]).loc[expected.index]
    np.testing.assert_allclose(merged[expected.columns].to_numpy(float), expected.to_numpy(float))
    assert (per_round["n"] == 2).all()
    per_system = recourse_per_system(recourse).set_index(["model", "generator"])
    generic = recourse[recourse["generator"] == "generic"]
    row = per_system.loc[("logistic", "generic")]
    assert row["rounds"] == 4
    assert row["chosen_total"] == pytest.approx(
        generic.groupby("repetition")["n_chosen"].sum().mean()
    )
    assert row["success_rate"] == pytest.approx(generic["success_rate"].mean())  # NaN skipped
    assert recourse_per_round(None).empty and recourse_per_system(None).empty


def test_overrides_and_swept_keys():
    lines = ["generator=wachter_mad", "+experiment=credit", "seed=1", "model=[logistic,mlp]", "~x"]
    assert parse_overrides(lines) == {
        "generator": "wachter_mad",
        "experiment": "credit",
        "seed": "1",
        "model": "[logistic,mlp]",
    }
    multirun = OmegaConf.create(
        {"hydra": {"overrides": {"task": ["generator=generic,wachter_mad", "data.n_samples=100"]}}}
    )
    jobs = [{"generator": "generic", "seed": "0"}, {"generator": "wachter_mad", "seed": "1"}]
    assert swept_keys(multirun, jobs) == ["generator", "seed"]
    assert swept_keys(None, [{"a": "1"}, {"a": "1"}]) == []


def test_sweep_metrics_carry_the_swept_choices():
    jobs = [
        ("0", {"generator": "generic", "seed": "0"}, fake_metrics(("m",), ("generic",), 1)),
        ("1", {"generator": "wachter_mad", "seed": "1"}, fake_metrics(("m",), ("wachter_mad",), 1)),
    ]
    frame = sweep_metrics(jobs, ["generator", "seed"])
    assert list(frame.columns[:3]) == ["job", "seed", "repetition"]
    assert set(frame["generator"]) == {"generic", "wachter_mad"}
    assert frame.groupby("job")["seed"].first().to_dict() == {"0": "0", "1": "1"}


def test_number_format():
    assert format_number(0.123456) == "0.1235"
    assert format_number(12) == "12"
    assert format_number(np.int64(3)) == "3"
    assert format_number(float("nan")) == "–"
    assert format_number(-0.000123456) == "-0.0001235"
    assert format_number(np.float32(0.5)) == "0.5"


#: The test columns of a summary row without p-values: p_value, n_tested, n_significant,
#: p_combined, p_holm.
NO_TEST = (np.nan, 0, 0, np.nan, np.nan)
SUMMARY_COLUMNS = [
    "metric",
    "scope",
    "model",
    "generator",
    "round",
    "n",
    "mean",
    "sd",
    "p_value",
    "n_tested",
    "n_significant",
    "p_combined",
    "p_holm",
]


def test_reading_is_derived_from_the_numbers():
    summary = pd.DataFrame(
        [
            ("mmd_domain", "domain", "mlp", "generic", 50, 5, 0.12, 0.01, 0.01, 5, 4, 0.001, 0.004),
            ("mmd_domain", "domain", "mlp", "wachter_mad", 50, 5, 0.03, 0.01, 0.4, 5, 0, 0.6, 0.6),
            # Combined p < 0.05 but not after Holm's adjustment: not significant.
            ("mmd_model", "model", "mlp", "generic", 50, 5, 0.05, 0.01, 0.02, 5, 3, 0.03, 0.09),
            ("mmd_model", "model", "mlp", "wachter_mad", 50, 5, 0.02, 0.01, 0.3, 5, 0, 0.5, 1.0),
            ("f1_change", "model", "mlp", "generic", 50, 5, -0.041, 0.01, *NO_TEST),
            ("f1_change", "model", "mlp", "wachter_mad", 50, 5, -0.01, 0.01, *NO_TEST),
        ],
        columns=SUMMARY_COLUMNS,
    )
    text = " ".join(largest_shifts(summary, n_permutations=100))
    assert (
        "Under generic with mlp, the domain shift (MMD²) reached 0.12 after 50 rounds "
        "(p < 0.05 in 4 of 5 repetitions; combined p = 0.001)" in text
    )
    assert "mean p" not in text  # the mean of p-values is no test
    assert "F1 fell by 4.1 points" in text
    assert "the domain shift under 1 of 2 systems (p < 0.05 in 4 of 10 tests)" in text
    assert "the model shift under 0 of 2 systems (p < 0.05 in 3 of 10 tests)" in text
    assert "after combining the repetitions' permutation tests (P = 100; Fisher's method)" in text
    assert "adjusting for the 4 tests of the final-round table (Holm)" in text
    # Swap the systems: the reading follows the numbers.
    swapped = summary.assign(
        generator=summary["generator"].map({"generic": "x", "wachter_mad": "y"})
    )
    assert "Under x with mlp" in " ".join(largest_shifts(swapped))
    assert largest_shifts(summary.iloc[:0]) == []


# --- whole reports on synthetic directories ---------------------------------------------------


def test_run_report_from_files(tmp_path):
    run = write_fake_run(tmp_path / "run")
    html_path = build_run_report(run)
    assert html_path == run / "report.html"
    html = html_path.read_text()
    markdown = (run / "report.md").read_text()
    metrics = pd.read_csv(run / "metrics.csv")
    expected = expected_summary(metrics)
    assert_summary_matches(pd.read_csv(run / "summary_table.csv"), expected, ["model", "generator"])
    scopes = metrics.groupby("metric")["scope"].first().to_dict()
    assert_html_has_summary(html, expected, scopes)
    figures = sorted((run / "figures").glob("*.png"))
    assert {p.name for p in figures} == {"metrics.png", "recourse.png", "populations.png"}
    for path in figures:
        assert_valid_png(path)
        assert f"figures/{path.name}" in markdown
    # Self-contained: every image inline, nothing fetched from elsewhere.
    assert html.count('<img src="data:image/png;base64,') == 3
    assert "http://" not in html and "https://" not in html and "<link" not in html
    assert "Largest shifts" in html and "domain shift (MMD²)" in html
    # Each figure also as SVG beside its PNG (for papers); the HTML embeds the PNGs only.
    assert {p.name for p in (run / "figures").glob("*.svg")} == {
        p.with_suffix(".svg").name for p in figures
    }


def test_tables_only_report(tmp_path):
    run = write_fake_run(tmp_path / "run")
    html = build_run_report(run, figures=False).read_text()
    assert "<img" not in html and not (run / "figures").exists()
    assert "Final-round summary" in html


def test_sweep_report_from_files(tmp_path):
    sweep = write_fake_sweep(tmp_path / "sweep")
    html = build_report(sweep).read_text()
    summary = pd.read_csv(sweep / "sweep_metrics.csv")
    assert {"job", "generator", "seed"} <= set(summary.columns)
    assert len(summary) == sum(len(pd.read_csv(j / "metrics.csv")) for j in sweep.glob("[0-9]"))
    # summary.csv: each job's final round per system and metric.
    per_job = pd.read_csv(sweep / "summary.csv")
    assert list(per_job.columns[:5]) == ["job", "seed", "model", "generator", "metric"]
    assert_summary_matches(
        per_job,
        expected_summary(summary, by=["job", "seed", "model", "generator"]),
        ["job", "seed", "model", "generator"],
    )
    expected = expected_summary(summary, per=["job"])
    table = pd.read_csv(sweep / "summary_table.csv")
    assert_summary_matches(table, expected, ["model", "generator"])
    assert (table["n"] == 4).all()  # two seeds x two repetitions pooled per generator
    assert_html_has_summary(html, expected, summary.groupby("metric")["scope"].first().to_dict())
    for path in (sweep / "figures").glob("*.png"):
        assert_valid_png(path)
    assert (sweep / "figures" / "final_round.png").is_file()
    assert "Sweep shift report" in html
    # --jobs also rebuilds every job's report, and the jobs table links to them.
    html = build_sweep_report(sweep, figures=False, jobs=True).read_text()
    assert all((job / "report.html").is_file() for job in sweep.glob("[0-9]"))
    assert '<a href="0/report.html">0</a>' in html


def test_neither_run_nor_sweep(tmp_path):
    with pytest.raises(ReportError, match="neither a run directory"):
        build_report(tmp_path)


def test_callback_builds_the_sweep_report_and_never_raises(tmp_path, caplog):
    sweep = write_fake_sweep(tmp_path / "sweep")
    config = OmegaConf.create(
        {"report": {"enabled": True, "figures": False}, "hydra": {"sweep": {"dir": str(sweep)}}}
    )
    callback = ShiftReportCallback()
    callback.on_multirun_start(config)
    callback.on_multirun_end(config)
    assert (sweep / "shift_report.html").is_file() and not (sweep / "figures").exists()
    # A broken sweep directory is logged, not raised.
    broken = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "missing")}}})
    ShiftReportCallback().on_multirun_end(broken)
    assert "the sweep could not be collected" in caplog.text
    # report.enabled=false: the sweep is still collected (tables, jobs.csv), without the HTML.
    other = write_fake_sweep(tmp_path / "other")
    off = OmegaConf.create({"report": {"enabled": False}, "hydra": {"sweep": {"dir": str(other)}}})
    ShiftReportCallback().on_multirun_end(off)
    assert not (other / "shift_report.html").exists()
    assert not (other / "shift_report.md").exists()
    for name in ("summary.csv", "sweep_metrics.csv", "summary_table.csv", "jobs.csv"):
        assert (other / name).is_file(), name


def test_report_command_rejects_other_directories(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "recourse_sim.report", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 2
    assert "neither a run directory" in result.stderr


# --- the real CLI --------------------------------------------------------------------------


def run_module(module: str, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    if result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def test_run_report_through_the_cli(tmp_path):
    run_module("recourse_sim", *TINY, f"hydra.run.dir={tmp_path}")
    run_module("recourse_sim.report", str(tmp_path))
    html = (tmp_path / "report.html").read_text()
    assert (tmp_path / "report.md").is_file()
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    # The report adds decisiveness / (½√N) (N from manifest.json); P = 10 (TINY).
    expected = expected_summary(with_normalised(metrics, tmp_path), n_permutations=10)
    assert "decisiveness_normalised" in expected.index.get_level_values("metric")
    assert_summary_matches(
        pd.read_csv(tmp_path / "summary_table.csv"), expected, ["model", "generator"]
    )
    assert_html_has_summary(html, expected, metrics.groupby("metric")["scope"].first().to_dict())
    recourse = pd.read_csv(tmp_path / "recourse.csv")
    per_round = pd.read_csv(tmp_path / "recourse_table.csv").set_index(
        ["round", "model", "generator"]
    )
    direct = recourse.groupby(["round", "model", "generator"])[
        ["n_candidates", "n_chosen", "success_rate", "cost"]
    ].mean()
    np.testing.assert_allclose(
        per_round.loc[direct.index, direct.columns].to_numpy(float),
        direct.to_numpy(float),
        rtol=1e-12,
    )
    figures = sorted((tmp_path / "figures").glob("*.png"))
    assert {p.name for p in figures} == {"metrics.png", "recourse.png", "populations.png"}
    for path in figures:
        assert_valid_png(path)
    assert html.count('src="data:image/png;base64,') == len(figures)


def test_sweep_report_through_the_cli(tmp_path):
    run_module(
        "recourse_sim", "-m", "generator=generic,wachter_mad", *TINY, f"hydra.sweep.dir={tmp_path}"
    )
    run_module("recourse_sim.report", str(tmp_path))
    summary = pd.read_csv(tmp_path / "sweep_metrics.csv")
    assert "generator" in summary.columns and "job" in summary.columns
    names = {g: job_key([f"generator={g}", *TINY]) for g in ("generic", "wachter_mad")}
    assert summary.groupby("job")["generator"].unique().map(list).to_dict() == {
        names["generic"]: ["generic"],
        names["wachter_mad"]: ["wachter_mad"],
    }
    jobs = [pd.read_csv(tmp_path / job / "metrics.csv") for job in names.values()]
    assert len(summary) == sum(len(job) for job in jobs)
    # Each job's decisiveness normalised by its own N; P = 10 (TINY).
    normalised = pd.concat(
        [with_normalised(summary[summary["job"] == job], tmp_path / job) for job in names.values()]
    )
    expected = expected_summary(normalised, per=["job"], n_permutations=10)
    assert_summary_matches(
        pd.read_csv(tmp_path / "summary_table.csv"), expected, ["model", "generator"]
    )
    html = (tmp_path / "shift_report.html").read_text()
    assert_html_has_summary(html, expected, summary.groupby("metric")["scope"].first().to_dict())
    figures = sorted((tmp_path / "figures").glob("*.png"))
    assert {p.name for p in figures} == {"final_round.png", "metrics.png"}
    for path in figures:
        assert_valid_png(path)


# --- p-values of 0 and missing values (issue 9) ------------------------------------------------


def write_small_run(
    directory: Path, rows: list[tuple], n_permutations: int | None = 100, missing=None
) -> Path:
    """A run directory with the given final-round metric rows, as the recorder writes them."""
    directory.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(
        [
            (rep, 10, "mlp", gen, metric, "domain" if metric == "mmd_domain" else "model", v, p)
            for rep, gen, metric, v, p in rows
        ],
        columns=METRIC_COLUMNS,
    )
    frame.to_csv(directory / "metrics.csv", index=False)
    if n_permutations is not None:
        (directory / ".hydra").mkdir(exist_ok=True)
        config = {"seed": 0, "simulation": {"n_rounds": 10, "n_permutations": n_permutations}}
        OmegaConf.save(OmegaConf.create(config), directory / ".hydra" / "config.yaml")
    if missing is not None:
        columns = ["repetition", "round", "model", "generator", "metric", "reason"]
        pd.DataFrame(missing, columns=columns).to_csv(directory / "missing_values.csv", index=False)
    return directory


def p_zero_rows() -> list[tuple]:
    return [
        (rep, gen, metric, value, p)
        for rep in (0, 1)
        for gen, metric, value, p in (
            ("generic", "mmd_domain", 0.125, 0.0),  # no permutation reached the observed value
            ("wachter_mad", "mmd_domain", 0.0625, 0.5),
            ("generic", "disagreement", 0.25, math.nan),
        )
    ]


def report_texts(run: Path) -> tuple[str, str]:
    html = build_run_report(run, figures=False).read_text()
    return html, (run / "report.md").read_text()


P_EQUALS_ZERO = r"p = 0(?![.\d])"


def test_p_value_format():
    from recourse_sim.report.document import PValue, format_cell, format_p_value, is_numeric

    assert format_p_value(0.0, 100) == "< 0.01"
    assert format_p_value(0.0, 1000) == "< 0.001"
    assert format_p_value(0.0, None) == "< 1/P" and format_p_value(0.0, 0) == "< 1/P"
    assert format_p_value(0.25, 100) == "0.25" and format_p_value(0.0123456) == "0.01235"
    assert format_p_value(math.nan, 100) == "–" and format_p_value(None) == "–"
    assert format_cell(PValue(0.0, 100)) == "< 0.01" and is_numeric(PValue(0.0))


def chi2_4_sf(p1: float, p2: float) -> float:
    """Fisher's combination of two p-values: χ²₄ survival exp(−x/2)(1 + x/2), x = −2 Σ ln p."""
    x = -2 * (math.log(p1) + math.log(p2))
    return math.exp(-x / 2) * (1 + x / 2)


def test_report_shows_a_p_value_of_zero_as_below_one_over_p(tmp_path):
    html, markdown = report_texts(write_small_run(tmp_path / "run", p_zero_rows()))
    # generic's mmd_domain: p = 0 (b = 0 of P = 100) in both repetitions, each 1/101 exactly.
    generic = chi2_4_sf(1 / 101, 1 / 101)
    wachter = chi2_4_sf(51 / 101, 51 / 101)
    assert generic == pytest.approx(0.001003, abs=5e-7)
    assert (
        f"| domain shift (MMD²) | domain | mlp | generic | 10 | 2 | 0.125 | 0.125 … 0.125 | 0 "
        f"| 2 of 2 | {generic:.4g} | {2 * generic:.4g} |" in markdown
    )
    assert (
        f"| domain shift (MMD²) | domain | mlp | wachter_mad | 10 | 2 | 0.0625 | 0.0625 … 0.0625 "
        f"| 0 | 0 of 2 | {wachter:.4g} | {wachter:.4g} |" in markdown
    )
    assert f'<td class="n">{generic:.4g}</td>' in html  # right-aligned numbers
    # The reading counts the repetitions and gives the combined p, which is never 0.
    assert "(p < 0.05 in 2 of 2 repetitions; combined p = 0.001)" in markdown
    assert "the domain shift under 1 of 2 systems (p < 0.05 in 2 of 4 tests)" in markdown
    assert "A single test's recorded p-value of 0 reads < 0.01." in markdown
    # The table's p-value columns are right-aligned numbers; no test reads a right-aligned –.
    assert (
        "| p < 0.05 in | combined p | Holm p |\n"
        "|---|---|---|---|---:|---:|---:|---|---:|---|---:|---:|" in markdown
    )
    assert "| generic | 10 | 2 | 0.25 | 0.25 … 0.25 | 0 | – | – | – |" in markdown
    assert '<td>–</td><td class="n">–</td><td class="n">–</td>' in html
    for text in (html, markdown):
        assert "0.000" not in text and "nan" not in text
        assert not re.search(P_EQUALS_ZERO, text)
    summary = pd.read_csv(tmp_path / "run" / "summary_table.csv")  # the numbers stay numbers
    row = summary.query("generator == 'generic' and metric == 'mmd_domain'").iloc[0]
    assert row["p_value"] == 0 and row["n_significant"] == 2
    assert row["p_combined"] == pytest.approx(generic, rel=1e-9)
    assert row["p_holm"] == pytest.approx(2 * generic, rel=1e-9)


def test_a_single_repetitions_p_value_of_zero_reads_below_one_over_p(tmp_path):
    rows = [r for r in p_zero_rows() if r[0] == 0]
    html, markdown = report_texts(write_small_run(tmp_path / "run", rows))
    assert "reached 0.12 after 10 rounds (p < 0.01)" in markdown
    assert "(p &lt; 0.01)" in html
    # The table gives the exact form of that one test: 1/101, not 0.
    assert "| 1 of 1 | 0.009901 |" in markdown
    assert not re.search(P_EQUALS_ZERO, markdown) and "0.000" not in markdown
    # One repetition: nothing is combined, and the counts are singular where they are one.
    assert "Every metric at the last evaluated round over 1 repetition: the mean" in markdown
    assert (
        "Significant at the 5 % level after adjusting for the 2 tests of the final-round table "
        "(Holm): the domain shift under 1 of 2 systems (p < 0.05 in 1 of 2 tests)." in markdown
    )
    assert "combining" not in markdown and "Fisher's method)" not in markdown


def test_one_test_in_all_is_counted_in_the_singular(tmp_path):
    rows = [(0, "generic", "mmd_domain", 0.1, 0.3), (0, "generic", "f1_change", -0.02, math.nan)]
    _, markdown = report_texts(write_small_run(tmp_path / "run", rows))
    assert "reached 0.1 after 10 rounds (p = 0.3); F1 fell by 2 points." in markdown
    assert (
        "Significant at the 5 % level after adjusting for the 1 test of the final-round table "
        "(Holm): the domain shift under 0 of 1 system (p < 0.05 in 0 of 1 test)." in markdown
    )
    assert "over 1 repetition:" in markdown
    assert "repetitions" not in markdown.split("## Glossary")[0] and "1 tests" not in markdown


def test_p_value_of_zero_without_a_known_p(tmp_path):
    html, markdown = report_texts(write_small_run(tmp_path / "run", p_zero_rows(), None))
    assert "A single test's recorded p-value of 0 reads < 1/P." in markdown and "&lt; 1/P" in html
    # Without P the exact form of a 0 is unknown: no combined p, and no "p = 0" anywhere.
    assert "| 2 of 2 | – | – |" in markdown
    assert not re.search(P_EQUALS_ZERO, markdown) and "0.000" not in markdown
    summary = pd.read_csv(tmp_path / "run" / "summary_table.csv")
    summary = summary[summary["metric"] == "mmd_domain"].set_index("generator")
    assert math.isnan(summary.loc["generic", "p_combined"])
    # wachter_mad's p = 0.5 (P unknown: taken as it is), combined over the two repetitions.
    assert summary.loc["wachter_mad", "p_combined"] == pytest.approx(chi2_4_sf(0.5, 0.5))


def test_p_value_of_zero_without_a_known_p_reads_without_nan(tmp_path):
    _, markdown = report_texts(write_small_run(tmp_path / "run", p_zero_rows(), None))
    assert "nan" not in markdown
    # generic: p = 0 in both repetitions, so no combined p; the counts stay, and say why.
    assert "reached 0.12 after 10 rounds (p < 0.05 in 2 of 2 repetitions), the larger" in markdown
    assert (
        "(P permutations; Fisher's method) and adjusting for the 1 test of the final-round table "
        "(Holm): the domain shift under 0 of 2 systems (p < 0.05 in 2 of 4 tests; 1 without a "
        "combined p-value, P being unknown)." in markdown
    )


def test_p_value_of_zero_and_missing_values_in_a_sweep_report(tmp_path):
    sweep = tmp_path / "sweep"
    for job, gen in enumerate(("generic", "wachter_mad")):
        rows = [r for r in p_zero_rows() if r[1] == gen]
        missing = None
        if gen == "wachter_mad":
            rows.append((0, gen, "f1_change", math.nan, math.nan))
            missing = [(0, 10, "mlp", gen, "f1_change", "the test set is empty")]
        write_small_run(sweep / str(job), rows, n_permutations=1000, missing=missing)
        OmegaConf.save(
            OmegaConf.create([f"generator={gen}"]), sweep / str(job) / ".hydra" / "overrides.yaml"
        )
    markdown = build_sweep_report(sweep, figures=False).with_suffix(".md").read_text()
    assert "A single test's recorded p-value of 0 reads < 0.001." in markdown
    assert "0.000" not in markdown
    assert not re.search(P_EQUALS_ZERO, markdown) and "nan" not in markdown
    # generic: p = 0 of P = 1000 in both repetitions, combined from 1/1001 each.
    generic = chi2_4_sf(1 / 1001, 1 / 1001)
    assert f"| 2 of 2 | {generic:.4g} | {2 * generic:.4g} |" in markdown
    # A sweep counts its tests in runs (jobs x repetitions), not repetitions.
    assert "(p < 0.05 in 2 of 2 runs; combined p = 1.5e-05)" in markdown
    assert "after combining the runs' permutation tests (P = 1000; Fisher's method)" in markdown
    assert "(p < 0.05 in 2 of 4 tests)" in markdown
    assert "## Missing values" in markdown
    assert (
        "| 1 | change of macro F1 | mlp | wachter_mad | the test set is empty | 1 | 0 | 10 |"
        in markdown
    )


def test_missing_values_are_shown_as_missing_with_their_reasons(tmp_path):
    rows = [
        *p_zero_rows(),
        # perturbation missing in both repetitions (a non-parametric model)
        (0, "generic", "perturbation", math.nan, math.nan),
        (1, "generic", "perturbation", math.nan, math.nan),
        # mmd_model missing in repetition 1 only, computed in repetition 0
        (0, "wachter_mad", "mmd_model", 0.03, 0.2),
        (1, "wachter_mad", "mmd_model", math.nan, math.nan),
        # a file written before the fix: NaN value beside a p-value of 0
        (0, "generic", "mmd_model", math.nan, 0.0),
        (1, "generic", "mmd_model", math.nan, 0.0),
    ]
    missing = [
        (0, 10, "mlp", "generic", "perturbation", "the model has no parameters"),
        (1, 10, "mlp", "generic", "perturbation", "the model has no parameters"),
        (
            1,
            10,
            "mlp",
            "wachter_mad",
            "mmd_model",
            "the current model probabilities hold 2 non-finite values (NaN or inf)",
        ),
    ]
    run = write_small_run(tmp_path / "run", rows, missing=missing)
    html, markdown = report_texts(run)
    summary = pd.read_csv(run / "summary_table.csv").set_index(["metric", "generator"])
    # Missing values count nowhere: not in n, not in the mean, and their p-values are dropped.
    assert summary.loc[("perturbation", "generic"), "n"] == 0
    assert np.isnan(summary.loc[("perturbation", "generic"), "mean"])
    assert summary.loc[("mmd_model", "wachter_mad"), "n"] == 1
    assert summary.loc[("mmd_model", "wachter_mad"), "mean"] == 0.03
    assert np.isnan(summary.loc[("mmd_model", "generic"), "p_value"])  # the stale p = 0 is gone
    assert summary.loc[("mmd_model", "generic"), "n_tested"] == 0
    assert np.isnan(summary.loc[("mmd_model", "generic"), "p_combined"])
    assert summary.loc[("mmd_model", "wachter_mad"), "n_tested"] == 1
    # The table shows the missing cells as "–": mean, interval, sd, count and both p-values.
    assert (
        "| parameter perturbation (reference form) | model | mlp | generic | 10 | 0 "
        "| – | – | – | – | – | – |" in markdown
    )
    assert (
        "| model shift (MMD² of predictions) | model | mlp | generic | 10 | 0 "
        "| – | – | – | – | – | – |" in markdown
    )
    # The section lists the reasons, in both renderings.
    for text in (html, markdown):
        assert "Missing values" in text
        assert "the model has no parameters" in text
        assert "hold 2 non-finite values (NaN or inf)" in text
    assert (
        "| parameter perturbation (reference form) | mlp | generic | the model has no parameters "
        "| 2 | 0, 1 | 10 |" in markdown
    )
    # The reading neither ranks nor counts the missing values, and names them.
    reading = markdown.split("## Largest shifts")[1].split("## Final-round summary")[0]
    assert (
        "model shift (MMD² of predictions) was 0.03 (p = 0.2) under wachter_mad with mlp" in reading
    )
    assert "model shift under 0 of 1 system" in reading  # generic's stale p = 0 is not counted
    assert "No value could be computed at the final round" in reading
    assert (
        "for the model shift (MMD² of predictions) under generic with mlp; the parameter "
        "perturbation (reference form) under generic with mlp (see Missing values)" in reading
    )


def test_one_missing_value_is_counted_in_the_singular(tmp_path):
    rows = [
        (rep, "generic", metric, value, p)
        for rep in (0, 1)
        for metric, value, p in (("mmd_domain", 0.1, 0.5), ("f1_change", -0.01, math.nan))
    ]
    rows[-1] = (1, "generic", "f1_change", math.nan, math.nan)
    missing = [(1, 10, "mlp", "generic", "f1_change", "the test set is empty")]
    _, markdown = report_texts(write_small_run(tmp_path / "run", rows, missing=missing))
    assert "1 metric values" not in markdown and "1 metric value could not be" in markdown
    assert "F1 fell by 1 point." in markdown and "1 points" not in markdown


def test_no_missing_section_without_missing_values(tmp_path):
    html, markdown = report_texts(write_small_run(tmp_path / "run", p_zero_rows()))
    assert "Missing values" not in html and "Missing values" not in markdown
    assert "No value could be computed" not in markdown


def test_reading_never_calls_a_missing_value_significant():
    exact = chi2_4_sf(1 / 101, 1 / 101)
    system = ("mmd_domain", "domain", "mlp")
    summary = pd.DataFrame(
        [
            # No value, but a stale p-value of 0 (older runs): no test.
            (*system, "generic", 10, 0, np.nan, np.nan, 0.0, 0, 0, np.nan, np.nan),
            (*system, "wachter_mad", 10, 2, 0.02, 0.01, 0.0, 2, 2, exact, exact),
        ],
        columns=SUMMARY_COLUMNS,
    )
    text = " ".join(largest_shifts(summary, n_permutations=100))
    assert "the domain shift under 1 of 1 system (p < 0.05 in 2 of 2 tests)" in text
    assert "Under wachter_mad with mlp" in text
    assert "(p < 0.05 in 2 of 2 repetitions; combined p = 0.001)" in text
    assert (
        "No value could be computed at the final round for the domain shift (MMD²) under "
        "generic with mlp (see Missing values)" in text
    )
