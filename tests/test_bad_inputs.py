"""Bad input through the real entry point: exit status 2, the key named, no traceback, and no
existing result file touched (issue 9; CONVENTIONS.md rule 3).

Most cases run in-process: hydra's compose API builds the configuration exactly as the command
line does, and :func:`recourse_sim.__main__.execute` is the function the command line runs; a
composition error is what the command line turns into status 2. A few cases run the real command
by subprocess to check that wrapper itself.
"""

from __future__ import annotations

import hashlib
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from recourse_sim.__main__ import _CONFIG_DIR, execute
from recourse_sim.simulation.rundir import LOCK, RunDirectory

SMOKE = ["debug=smoke", "progress=false", "processes=1"]


def compose_config(overrides: list[str]):
    with initialize_config_dir(config_dir=_CONFIG_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def status_of(overrides: list[str], run_dir: Path, capsys) -> tuple[int, str]:
    """The exit status and stderr the command line would give for these overrides."""
    try:
        cfg = compose_config(overrides)
    except (HydraException, OmegaConfBaseException) as error:
        return 2, str(error)  # the command line reports these with status 2
    status = execute(cfg, output_dir=run_dir)
    return status, capsys.readouterr().err


def snapshot(directory: Path) -> dict[str, str]:
    """Hash of every file below ``directory`` except the lock file and hydra's log."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        # hydra opens (creates) its job log before the run starts; nothing is written to it.
        if p.is_file() and p.name != LOCK and not (p.suffix == ".log" and not p.stat().st_size)
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A real run's directory (smoke preset), copied by the tests that need one."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    assert execute(compose_config(SMOKE), output_dir=run_dir) == 0
    return run_dir


@pytest.fixture
def victim(finished_run, tmp_path) -> Path:
    """A copy of a finished run that no bad input may change."""
    target = tmp_path / "victim"
    shutil.copytree(finished_run, target)
    return target


# --- user files ---------------------------------------------------------------------------


def _table(rows: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "income": rng.normal(50, 10, rows).round(2),
            "debt": rng.normal(10, 3, rows).round(2),
            "age": rng.integers(20, 70, rows),
            "approved": np.tile([0, 1], rows // 2),
        }
    )


def _bad_file(kind: str, directory: Path) -> Path:
    path = directory / f"{kind}.csv"
    table = _table()
    if kind == "huge_value":
        table["income"] = table["income"].astype(float)
        table.loc[3, "income"] = 1e300
        table.to_csv(path, index=False)
    elif kind == "infinite":
        table["debt"] = table["debt"].astype(float)
        table.loc[5, "debt"] = np.inf
        table.to_csv(path, index=False)
    elif kind == "duplicate_columns":
        text = table.to_csv(index=False).replace("debt", "income", 1)
        path.write_text(text)
    elif kind == "three_labels":
        table.loc[0, "approved"] = 2
        table.to_csv(path, index=False)
    elif kind == "missing_cells":
        table["debt"] = table["debt"].astype(object)
        table.loc[[1, 2], "debt"] = None
        table.to_csv(path, index=False)
    elif kind == "text_in_number":
        table["age"] = table["age"].astype(object)
        table.loc[0, "age"] = "old"
        table.to_csv(path, index=False)
    elif kind == "empty":
        path.write_text("")
    elif kind == "header_only":
        path.write_text("income,debt,age,approved\n")
    elif kind == "binary":
        path.write_bytes(bytes(range(256)) * 8)
    elif kind == "good":
        table.to_csv(path, index=False)
    else:  # pragma: no cover
        raise ValueError(kind)
    return path


# --- (overrides, the key the message must name) -----------------------------------------

CONFIG_VALUES = [
    # top level
    (["seed=-1"], "seed"),
    (["seed=abc"], "seed"),
    (["seed=1.5"], "seed"),
    (["seed=true"], "seed"),
    (["resume=maybe"], "resume"),
    (["resume=2"], "resume"),
    (["resume=Auto"], "resume"),
    (["overwrite=maybe"], "overwrite"),
    (["progress=maybe"], "progress"),
    (["progress=1"], "progress"),
    (["torch_threads=0"], "torch_threads"),
    (["torch_threads=abc"], "torch_threads"),
    (["torch_threads=1.5"], "torch_threads"),
    (["torch_threads=true"], "torch_threads"),
    (["processes=0"], "processes"),
    (["processes=abc"], "processes"),
    (["processes=2.5"], "processes"),
    (["processes=automatic"], "processes"),
    (["processes=true"], "processes"),
    (["device=gpu"], "device"),
    (["device=tpu9"], "device"),
    (["device=1"], "device"),
    (["report.enabled=maybe"], "report.enabled"),
    (["report.figures=2"], "report.figures"),
    (["+report.colour=red"], "report.colour"),
    (["+foo=1"], "foo"),
    (["torch_threads=100000"], "torch_threads"),
    (["processes=100000"], "processes"),
    ([f"generator.generic.learning_rate={10**400}"], "generator.generic.learning_rate"),
    # simulation
    (["simulation.n_rounds=0"], "simulation.n_rounds"),
    (["simulation.n_rounds=-1"], "simulation.n_rounds"),
    (["simulation.n_rounds=abc"], "simulation.n_rounds"),
    (["simulation.n_rounds=2.5"], "simulation.n_rounds"),
    (["simulation.n_rounds=true"], "simulation.n_rounds"),
    (["simulation.n_repetitions=0"], "simulation.n_repetitions"),
    (["simulation.n_repetitions=abc"], "simulation.n_repetitions"),
    (["simulation.recourse_fraction=0"], "simulation.recourse_fraction"),
    (["simulation.recourse_fraction=1.5"], "simulation.recourse_fraction"),
    (["simulation.recourse_fraction=nan"], "simulation.recourse_fraction"),
    (["simulation.recourse_fraction=inf"], "simulation.recourse_fraction"),
    (["simulation.recourse_fraction=abc"], "simulation.recourse_fraction"),
    (["simulation.recourse_fraction=true"], "simulation.recourse_fraction"),
    (["simulation.n_counterfactuals=0"], "simulation.n_counterfactuals"),
    (["simulation.n_counterfactuals=1.5"], "simulation.n_counterfactuals"),
    (["simulation.evaluate_every=0"], "simulation.evaluate_every"),
    (["simulation.candidates=both"], "simulation.candidates"),
    (["simulation.candidates=1"], "simulation.candidates"),
    (["simulation.n_permutations=-1"], "simulation.n_permutations"),
    (["simulation.n_permutations=2.5"], "simulation.n_permutations"),
    (["simulation.p_value=exact"], "simulation.p_value"),
    (["simulation.round_length=abc"], "simulation.round_length"),
    (["simulation.round_length=0"], "simulation.round_length"),
    (["simulation.round_length=nan"], "simulation.round_length"),
    (["simulation.round_length=inf"], "simulation.round_length"),
    (["simulation.checkpoint_every=-1"], "simulation.checkpoint_every"),
    (["+simulation.foo=1"], "simulation.foo"),
    # generators: the full key as typed
    (["generator.generic.learning_rate=abc"], "generator.generic.learning_rate"),
    (["generator.generic.learning_rate=-1"], "generator.generic.learning_rate"),
    (["generator.generic.learning_rate=0"], "generator.generic.learning_rate"),
    (["generator.generic.learning_rate=nan"], "generator.generic.learning_rate"),
    (["generator.generic.learning_rate=inf"], "generator.generic.learning_rate"),
    (["generator.generic.learning_rate=true"], "generator.generic.learning_rate"),
    (["generator.generic.max_iter=2.7"], "generator.generic.max_iter"),
    (["generator.generic.max_iter=0"], "generator.generic.max_iter"),
    (["generator.generic.max_iter=abc"], "generator.generic.max_iter"),
    (["generator.generic.max_iter=true"], "generator.generic.max_iter"),
    (["generator.generic.init_noise=nan"], "generator.generic.init_noise"),
    (["generator.generic.init_noise=-0.1"], "generator.generic.init_noise"),
    (["generator.generic.init_noise=inf"], "generator.generic.init_noise"),
    (["generator.generic.cost_weight=-1"], "generator.generic.cost_weight"),
    (["generator.generic.cost_weight=nan"], "generator.generic.cost_weight"),
    (["generator.generic.decision_threshold=1.5"], "generator.generic.decision_threshold"),
    (["generator.generic.decision_threshold=0"], "generator.generic.decision_threshold"),
    (["generator.generic.decision_threshold=2"], "generator.generic.decision_threshold"),
    (["generator.generic.decision_threshold=abc"], "generator.generic.decision_threshold"),
    (["generator.generic.step_tolerance=0"], "generator.generic.step_tolerance"),
    (["generator.generic.step_tolerance=-1"], "generator.generic.step_tolerance"),
    (["generator.generic.latent_space=maybe"], "generator.generic.latent_space"),
    (["+generator.generic.step_size=2"], "generator.generic.step_size"),
    (
        ["generator=wachter_mad", "generator.wachter_mad.learning_rate=-1"],
        "generator.wachter_mad.learning_rate",
    ),
    (
        ["generator=wachter_mad", "generator.wachter_mad.mad_floor=0"],
        "generator.wachter_mad.mad_floor",
    ),
    (
        ["generator=[generic,wachter_mad]", "generator.wachter_mad.max_iter=1.5"],
        "generator.wachter_mad.max_iter",
    ),
    (["generator=greedy", "generator.greedy.max_iter=0"], "generator.greedy.max_iter"),
    (["generator=dice", "generator.dice.learning_rate=nan"], "generator.dice.learning_rate"),
    (["generator=nope"], "generator"),
    # models
    (["model.logistic.pretrain.epochs=-1"], "model.logistic.pretrain.epochs"),
    (["model.logistic.pretrain.epochs=abc"], "model.logistic.pretrain.epochs"),
    (["model.logistic.pretrain.epochs=1.5"], "model.logistic.pretrain.epochs"),
    (["model.logistic.pretrain.batch_size=0"], "model.logistic.pretrain.batch_size"),
    (["model.logistic.pretrain.learning_rate=-1"], "model.logistic.pretrain.learning_rate"),
    (["model.logistic.retrain.epochs=true"], "model.logistic.retrain.epochs"),
    (["model.logistic.retrain.learning_rate=nan"], "model.logistic.retrain.learning_rate"),
    (["+model.logistic.width=3"], "model.logistic.width"),
    (["model=mlp", "model.mlp.hidden_sizes=[0]"], "model.mlp.hidden_sizes"),
    (["model=mlp", "model.mlp.activation=swish"], "model.mlp.activation"),
    (["model=mlp", "model.mlp.dropout=1.5"], "model.mlp.dropout"),
    (["model=mlp", "model.mlp.dropout=-0.1"], "model.mlp.dropout"),
    (["model=mlp", "model.mlp.dropout_in_search=maybe"], "model.mlp.dropout_in_search"),
    (["model=nope"], "model"),
    # metrics
    (["metrics.mmd_domain.n_samples=0"], "metrics.mmd_domain.n_samples"),
    (["metrics.mmd_domain.length_scale=0"], "metrics.mmd_domain.length_scale"),
    (["metrics.mmd_domain.length_scale=nan"], "metrics.mmd_domain.length_scale"),
    (["metrics.mmd_domain.estimator=exact"], "metrics.mmd_domain.estimator"),
    (["metrics.mmd_domain.target_only=maybe"], "metrics.mmd_domain.target_only"),
    (["metrics.perturbation.form=other"], "metrics.perturbation.form"),
    (["metrics.decisiveness.form=x"], "metrics.decisiveness.form"),
    (["metrics.mmd_model_grid.n_points=0"], "metrics.mmd_model_grid.n_points"),
    (["+metrics.f1_change.foo=1"], "metrics.f1_change.foo"),
    # data
    (["data.n_samples=1"], "data.n_samples"),
    (["data.n_samples=1.5"], "data.n_samples"),
    (["data.n_samples=abc"], "data.n_samples"),
    (["data.test_size=0"], "data.test_size"),
    (["data.test_size=1"], "data.test_size"),
    (["data.test_size=abc"], "data.test_size"),
    (["data.cluster_std=-1"], "data.cluster_std"),
    (["data=csv"], "data.path"),
    (["data=csv", "data.path=/nonexistent/loans.csv", "data.target=approved"], "data.path"),
    (["data=nope"], "data"),
    # counterfactual training (model=mlp_ct)
    (["model=mlp_ct", "model.mlp_ct.training=adversarial"], "model.mlp_ct.training"),
    (["model=mlp_ct", "model.mlp_ct.outputs=3"], "model.mlp_ct.outputs"),
    (
        ["model=mlp_ct", "model.mlp_ct.counterfactual_training.ridge_weight=-1"],
        "model.mlp_ct.counterfactual_training.ridge_weight",
    ),
    (
        ["model=mlp_ct", "model.mlp_ct.counterfactual_training.search.generator=nice"],
        "model.mlp_ct.counterfactual_training.search.generator",
    ),
    (
        ["model=mlp_ct", "+model.mlp_ct.counterfactual_training.search.gravity_weight=1"],
        "model.mlp_ct.counterfactual_training.search.gravity_weight",
    ),
    (
        ["metrics=plausibility", "metrics.implausibility_distance.norm=l3"],
        "metrics.implausibility_distance.norm",
    ),
]


@pytest.mark.parametrize(("overrides", "key"), CONFIG_VALUES, ids=lambda v: str(v))
def test_bad_config_value_is_refused_naming_the_key(overrides, key, victim, capsys):
    before = snapshot(victim)
    # overwrite=true: a value that slipped through would replace the victim's files.
    status, message = status_of([*SMOKE, "overwrite=true", *overrides], victim, capsys)
    assert status == 2, message
    assert key in message
    assert "Traceback" not in message
    assert snapshot(victim) == before


DATA_FILES = [
    ("huge_value", [], "income"),
    ("infinite", [], "debt"),
    ("duplicate_columns", [], "income"),
    ("three_labels", [], "data.target"),
    ("missing_cells", [], "debt"),
    ("text_in_number", ["data.categorical=[]"], "age"),
    ("empty", [], "data.path"),
    ("header_only", [], "data"),
    ("binary", [], "data.path"),
    ("good", ["data.target=nope"], "data.target"),
    ("good", ["data.positive_label=7"], "data.positive_label"),
    ("good", ["data.features=[income,salary]"], "salary"),
    ("good", ["data.immutable=[height]"], "height"),
    ("good", ["data.categorical=[colour]"], "data.categorical"),
    ("good", ["data.n_samples=100000"], "data.n_samples"),
    ("good", ["data.bounds=maybe"], "data.bounds"),
    ("good", ["data.standardize=maybe"], "data.standardize"),
]


@pytest.mark.parametrize(("kind", "overrides", "key"), DATA_FILES, ids=lambda v: str(v))
def test_bad_data_file_is_refused_naming_the_column(kind, overrides, key, victim, tmp_path, capsys):
    path = _bad_file(kind, tmp_path)
    before = snapshot(victim)
    args = [*SMOKE, "overwrite=true", "data=csv", f"data.path={path}", "data.target=approved"]
    status, message = status_of([*args, "data.n_samples=null", *overrides], victim, capsys)
    assert status == 2, message
    assert key in message
    assert "Traceback" not in message
    assert snapshot(victim) == before


# --- directories and checkpoints ---------------------------------------------------------


def test_output_path_that_is_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("mine")
    status, message = status_of(SMOKE, target, capsys)
    assert status == 2
    assert "hydra.run.dir" in message and "file" in message
    assert target.read_text() == "mine"


def test_output_path_below_a_file_is_refused(tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("mine")
    status, message = status_of(SMOKE, blocker / "run", capsys)
    assert status == 2
    assert "hydra.run.dir" in message
    assert "Traceback" not in message


def test_a_new_run_into_a_finished_runs_directory_is_refused(victim, capsys):
    before = snapshot(victim)
    status, message = status_of([*SMOKE, "seed=1"], victim, capsys)
    assert status == 2
    assert "overwrite" in message and "resume=true" in message
    assert snapshot(victim) == before


def test_resume_and_overwrite_together_are_refused(victim, capsys):
    before = snapshot(victim)
    status, message = status_of([*SMOKE, "resume=true", "overwrite=true"], victim, capsys)
    assert status == 2 and "overwrite" in message
    assert snapshot(victim) == before


@pytest.mark.parametrize("where", ["empty", "missing"])
def test_resume_without_a_checkpoint_is_refused(where, tmp_path, capsys):
    run_dir = tmp_path / "run"
    if where == "empty":
        run_dir.mkdir()
        (run_dir / "notes.txt").write_text("mine")
    status, message = status_of([*SMOKE, "resume=true"], run_dir, capsys)
    assert status == 2
    assert "resume" in message and "checkpoint" in message
    assert not (run_dir / "metrics.csv").exists()
    if where == "empty":
        assert (run_dir / "notes.txt").read_text() == "mine"


def _replace_checkpoint(run_dir: Path, payload: bytes) -> None:
    (run_dir / "checkpoint.pt").write_bytes(payload)


class _Exploit:
    """A pickle that runs code when loaded without weights_only."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_crafted_checkpoint_cannot_run_code(victim, tmp_path, capsys):
    marker = tmp_path / "pwned"
    saved = torch.load(victim / "checkpoint.pt", weights_only=True)
    saved["state"]["exploit"] = _Exploit(marker)
    torch.save(saved, victim / "checkpoint.pt")
    # The failure that was observed: a plain torch.load runs the payload.
    torch.load(victim / "checkpoint.pt", weights_only=False)
    assert marker.exists()
    marker.unlink()
    before = snapshot(victim)
    status, message = status_of([*SMOKE, "resume=true"], victim, capsys)
    assert status == 2
    assert "resume" in message and "checkpoint" in message
    assert not marker.exists()
    assert snapshot(victim) == before


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch, on the plain pickle
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "plain_pickle", "not_a_dict"])
def test_damaged_checkpoint_is_refused(damage, victim, capsys):
    payload = (victim / "checkpoint.pt").read_bytes()
    if damage == "truncated":
        _replace_checkpoint(victim, payload[: len(payload) // 2])
    elif damage == "garbage":
        _replace_checkpoint(victim, b"\x00garbage" * 100)
    elif damage == "empty":
        _replace_checkpoint(victim, b"")
    elif damage == "plain_pickle":
        _replace_checkpoint(victim, pickle.dumps({"state": {"round": 1}}))
    else:
        torch.save([1, 2, 3], victim / "checkpoint.pt")
    before = snapshot(victim)
    status, message = status_of([*SMOKE, "resume=true"], victim, capsys)
    assert status == 2
    assert "resume" in message
    assert "Traceback" not in message
    assert snapshot(victim) == before


def test_resume_names_every_result_key_that_differs(victim, capsys):
    before = snapshot(victim)
    overrides = [*SMOKE, "resume=true", "seed=3", "generator.generic.cost_weight=0.5"]
    status, message = status_of(overrides, victim, capsys)
    assert status == 2
    assert "seed" in message and "generator.generic.cost_weight" in message
    assert snapshot(victim) == before


def test_live_directory_is_refused_with_the_other_runs_pid(tmp_path, capsys):
    run_dir = tmp_path / "run"
    with RunDirectory(run_dir):  # another live run holds the lock
        status, message = status_of(SMOKE, run_dir, capsys)
    assert status == 2
    assert "pid" in message and "hydra.run.dir" in message
    assert not (run_dir / "metrics.csv").exists()


# --- the command line itself (subprocess; at most 10 here) ---------------------------------


def _cli(*overrides: str, run_dir: Path) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "recourse_sim", *overrides, f"hydra.run.dir={run_dir}"]
    return subprocess.run(args, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["simulation.foo=1"], "simulation.foo"),  # hydra: not in struct
        (["generator=nope"], "generator"),  # hydra: unknown option
        (["seed=[1"], "seed"),  # hydra: override syntax
        (
            ["generator=wachter_mad", "generator.wachter_mad.learning_rate=-1"],
            "generator.wachter_mad.learning_rate",
        ),
        (["data=csv"], "data.path"),
    ],
)
def test_command_line_exits_2_without_traceback(overrides, key, victim):
    before = snapshot(victim)
    result = _cli(*SMOKE, "overwrite=true", *overrides, run_dir=victim)
    assert result.returncode == 2, result.stderr
    assert key in result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(victim) == before
