"""The real entry point (`python -m recourse_sim`) on tiny configurations."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY

from recourse_sim.errors import ConfigError
from recourse_sim.keys import job_key
from recourse_sim.run import resolve_device

METRICS = {
    "mmd_domain",
    "perturbation",
    "mmd_model",
    "mmd_model_grid",
    "disagreement",
    "decisiveness",
    "f1_change",
}


def cli(*overrides: str, run_dir: Path | None = None, check: bool = True):
    args = [sys.executable, "-m", "recourse_sim", *overrides]
    if run_dir is not None:
        args.append(f"hydra.run.dir={run_dir}")
    result = subprocess.run(args, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def check_outputs(run_dir: Path, n_systems: int, n_rounds: int = 2) -> pd.DataFrame:
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert set(metrics.metric) == METRICS
    assert sorted(metrics["round"].unique()) == list(range(n_rounds + 1))
    assert len(metrics) == len(METRICS) * (n_rounds + 1) * n_systems
    assert metrics.value.notna().all()
    recourse = pd.read_csv(run_dir / "recourse.csv")
    assert list(recourse.columns[:6]) == [
        "repetition",
        "round",
        "model",
        "generator",
        "n_candidates",
        "n_chosen",
    ]
    assert len(recourse) == n_rounds * n_systems
    population = pd.read_csv(run_dir / "final_population.csv")
    assert population.groupby(["repetition", "model", "generator"]).ngroups == n_systems
    return metrics


@pytest.mark.parametrize(
    ("experiment", "grid"),
    [
        ("credit", 1 * 2),
        ("synthetic", 2 * 1),
        # 15 systems, the costliest preset: in the slow step (its generators run in the sweep
        # test below, its models in the experiments' own tests).
        pytest.param("mitigation", 3 * 5, marks=pytest.mark.slow),
    ],  # models x generators
)
def test_every_experiment_runs(experiment, grid, tmp_path):
    result = cli(f"+experiment={experiment}", *TINY, run_dir=tmp_path)
    assert str(tmp_path) in result.stdout  # the output directory is printed at the end
    check_outputs(tmp_path, n_systems=grid * 2)  # x 2 repetitions


@pytest.mark.parametrize(
    "data", ["overlapping", "linearly_separable", "circles", "moons", "credit", "german"]
)
def test_every_embedded_data_option_runs(data, tmp_path):
    cli(f"data={data}", *TINY, run_dir=tmp_path)
    check_outputs(tmp_path, n_systems=2)


def _write_credit_like_csv(path: Path, n: int = 120, nan: bool = False, labels=(0, 1)):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "income": rng.normal(50, 10, n),
            "debt": rng.normal(10, 3, n),
            "region": rng.choice(["north", "south", "east"], n),
            "approved": rng.choice(labels, n),
        }
    )
    if nan:
        frame.loc[3, "debt"] = np.nan
    frame.to_csv(path, index=False)
    return path


def test_user_csv_runs_with_immutable_feature(tmp_path):
    csv = _write_credit_like_csv(tmp_path / "loans.csv")
    run_dir = tmp_path / "run"
    cli(
        "data=csv",
        f"data.path={csv}",
        "data.target=approved",
        "data.immutable=[region]",
        *TINY,
        run_dir=run_dir,
    )
    check_outputs(run_dir, n_systems=2)
    population = pd.read_csv(run_dir / "final_population.csv")
    region = [c for c in population.columns if c.startswith("region_")]
    assert len(region) == 3
    assert (population.n_recourse > 0).any()
    # Every system started from the same rows; an immutable group must still agree everywhere.
    assert (population.groupby("individual")[region].nunique() == 1).all().all()


def test_gmsc_and_california_read_user_files(tmp_path):
    rng = np.random.default_rng(1)
    n = 200
    gmsc = pd.DataFrame(
        {
            "SeriousDlqin2yrs": rng.integers(0, 2, n),
            "RevolvingUtilizationOfUnsecuredLines": rng.random(n),
            "age": rng.integers(21, 90, n),
            "NumberOfTime30-59DaysPastDueNotWorse": rng.integers(0, 3, n),
            "DebtRatio": rng.random(n),
            "MonthlyIncome": rng.normal(5000, 1000, n),
            "NumberOfOpenCreditLinesAndLoans": rng.integers(0, 20, n),
            "NumberOfTimes90DaysLate": rng.integers(0, 3, n),
            "NumberRealEstateLoansOrLines": rng.integers(0, 4, n),
            "NumberOfTime60-89DaysPastDueNotWorse": rng.integers(0, 3, n),
            "NumberOfDependents": rng.integers(0, 4, n),
        }
    )
    gmsc.to_csv(tmp_path / "cs-training.csv")  # Kaggle's file has an unnamed index column
    cli("data=gmsc", f"data.path={tmp_path / 'cs-training.csv'}", *TINY, run_dir=tmp_path / "gmsc")
    check_outputs(tmp_path / "gmsc", n_systems=2)
    names = [
        "MedInc",
        "HouseAge",
        "AveRooms",
        "AveBedrms",
        "Population",
        "AveOccup",
        "Latitude",
        "Longitude",
        "MedHouseVal",
    ]
    pd.DataFrame(rng.random((n, len(names))), columns=names).to_csv(
        tmp_path / "ca.csv", index=False
    )
    cli("data=california", f"data.path={tmp_path / 'ca.csv'}", *TINY, run_dir=tmp_path / "ca")
    check_outputs(tmp_path / "ca", n_systems=2)


def test_grid_of_models_and_generators_in_one_job(tmp_path):
    cli("model=[logistic,mlp]", "generator=[generic,wachter_mad]", *TINY, run_dir=tmp_path)
    metrics = check_outputs(tmp_path, n_systems=2 * 2 * 2)
    assert set(metrics.model) == {"logistic", "mlp"}
    assert set(metrics.generator) == {"generic", "wachter_mad"}


def test_sweep_runs_one_job_per_combination(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "recourse_sim",
            "-m",
            "generator=generic,wachter_mad",
            "seed=0,1",
            *TINY,
            f"hydra.sweep.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and (p / "done.json").is_file())
    # Each job's directory is named by its result-key overrides, not its number.
    expected = {
        job_key([f"generator={g}", f"seed={seed}", *TINY])
        for g in ("generic", "wachter_mad")
        for seed in (0, 1)
    }
    assert {p.name for p in jobs} == expected
    generators = set()
    for job in jobs:
        generators |= set(check_outputs(job, n_systems=2).generator)
    assert generators == {"generic", "wachter_mad"}


def test_same_seed_gives_byte_identical_metrics(tmp_path):
    cli("model=mlp", *TINY, run_dir=tmp_path / "a")
    cli("model=mlp", *TINY, run_dir=tmp_path / "b")
    assert (tmp_path / "a/metrics.csv").read_bytes() == (tmp_path / "b/metrics.csv").read_bytes()


def test_training_in_one_process_agrees_with_two(tmp_path):
    # The default shares retraining between two processes; one process gives the same results
    # up to float rounding (the shards' vectorised updates round in different places).
    cli("model=deep_ensemble", *TINY, run_dir=tmp_path / "two")
    cli("model=deep_ensemble", *TINY, "processes=1", run_dir=tmp_path / "one")
    two = pd.read_csv(tmp_path / "two/metrics.csv")
    one = pd.read_csv(tmp_path / "one/metrics.csv")
    pd.testing.assert_frame_equal(one, two, check_exact=False, rtol=1e-3, atol=1e-4)


@pytest.mark.slow  # device=cpu is the default: two identical runs, a guard for the device code
def test_explicit_cpu_device_gives_byte_identical_metrics(tmp_path):
    cli("model=mlp", *TINY, run_dir=tmp_path / "default")
    devices = ["cpu"] if torch.cuda.is_available() else ["cpu", "auto"]  # auto: cpu here
    for device in devices:
        cli("model=mlp", f"device={device}", *TINY, run_dir=tmp_path / device)
        for name in ("metrics.csv", "recourse.csv", "final_population.csv"):
            expected = (tmp_path / "default" / name).read_bytes()
            assert (tmp_path / device / name).read_bytes() == expected, (device, name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available on this machine")
def test_cuda_without_a_gpu_stops_before_any_work(tmp_path):
    result = cli("device=cuda", "progress=false", run_dir=tmp_path, check=False)
    assert result.returncode == 2, result.stderr
    assert "<device='cuda'>" in result.stderr
    assert "CUDA is not available on this machine" in result.stderr
    assert "device=cpu" in result.stderr
    assert "Traceback" not in result.stderr
    assert not any((tmp_path / name).exists() for name in ("metrics.csv", "recourse.csv"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [("cpu", "cpu"), ("cpu:0", "cpu"), ("auto", "cuda" if torch.cuda.is_available() else "cpu")],
)
def test_device_values_resolve(value, expected):
    assert resolve_device(value) == torch.device(expected)


@pytest.mark.parametrize("value", ["tpu9", "mps", "gpu", "", 0, None])
def test_unusable_device_values_name_the_key(value):
    with pytest.raises(ConfigError, match=r"<device=.*'cpu', 'cuda', 'cuda:N'.*'auto'"):
        resolve_device(value)


#: Generators for some model kinds only, which refuse the synthetic experiment's MLP: n_feature
#: (linear models, tested below) and feature_tweak (scikit-learn's trees; run through the CLI by
#: tests/test_sklearn_model.py and tests/test_readme_models.py).
MODEL_SPECIFIC = {"n_feature", "feature_tweak"}
#: Every generator option (the no-recourse control included), not the `wachter` stub that only
#: names its two replacements (tests/test_control.py).
GENERATORS = sorted(
    p.stem
    for p in (Path(__file__).parents[1] / "recourse_sim/configs/generator").glob("*.yaml")
    if p.stem != "wachter" and p.stem not in MODEL_SPECIFIC
)


def test_every_generator_runs_through_the_cli_sweep(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "recourse_sim",
            "-m",
            "+experiment=synthetic",
            f"generator={','.join(GENERATORS)}",
            *TINY,
            "processes=1",  # one process per job: a sweep of short jobs pays no worker start-up
            f"hydra.sweep.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and (p / "done.json").is_file())
    assert len(jobs) == len(GENERATORS)
    seen = set()
    for job in jobs:
        metrics = check_outputs(job, n_systems=2 * 2)
        seen |= set(metrics.generator)
    assert seen == set(GENERATORS)


@pytest.mark.slow
def test_linear_only_generator_runs_with_logistic_and_refuses_an_mlp(tmp_path):
    # One sweep, two jobs: the logistic job runs; the MLP job stops with status 2 naming the
    # generator, and the sweep reports it at the end.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "recourse_sim",
            "-m",
            "generator=n_feature",
            "model=logistic,mlp",
            *TINY,
            f"hydra.sweep.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "<generator.n_feature=" in result.stderr and "needs a linear model" in result.stderr
    assert "Traceback" not in result.stderr
    job = next(p for p in tmp_path.iterdir() if "model=logistic" in p.name)
    metrics = check_outputs(job, n_systems=2)
    assert set(metrics.model) == {"logistic"} and set(metrics.generator) == {"n_feature"}
