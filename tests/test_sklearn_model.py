"""The scikit-learn model kind (``model=sklearn``, ``model=gbdt``): any estimator with ``fit`` and
``predict_proba``, refitted per system from keyed seeds, rebuilt from its rows on resume."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import blobs
from hydra import compose, initialize_config_dir
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression as SkLogistic
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from recourse_sim.__main__ import _CONFIG_DIR, execute
from recourse_sim.errors import ConfigError
from recourse_sim.models import SklearnModel, StackedEstimators
from recourse_sim.models.estimators import ConstantEstimator, _FitJob
from recourse_sim.simulation.simulation import RecourseSimulation
from recourse_sim.utils import WorkerPool

LOGISTIC = {"_target_": "sklearn.linear_model.LogisticRegression"}
SGD = {"_target_": "sklearn.linear_model.SGDClassifier", "loss": "log_loss"}


def gbdt_pipeline(n_estimators: int = 10):
    """A factory returning a pipeline (``subsample`` makes the fit depend on its seed)."""
    return make_pipeline(
        StandardScaler(), GradientBoostingClassifier(n_estimators=n_estimators, subsample=0.7)
    )


def small_forest(n_estimators: int = 5, max_depth: int = 3):
    """A factory returning a classifier whose fit depends on its seed."""
    return RandomForestClassifier(n_estimators=n_estimators, max_depth=max_depth)


FOREST = {"_target_": f"{__name__}.small_forest"}


def rows(seed: int = 0, n_per_class: int = 30):
    data = blobs(n_per_class=n_per_class, std=0.5, seed=seed)
    return torch.tensor(data.X), torch.tensor(data.y, dtype=torch.int64)


X, Y = rows(0)
X2, Y2 = rows(1)
GRID = torch.cartesian_prod(torch.linspace(-1.5, 1.5, 7), torch.linspace(-1.5, 1.5, 7)).double()


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def fitted(spec: SklearnModel, seed: int = 0, X=X, y=Y) -> StackedEstimators:
    """One system fitted on ``X``, ``y`` with the seed drawn from ``generator(seed)``."""
    classifier = spec.initialise(2, generator(99))
    classifier.training_job(X[None], y[None], spec.retrain, generator(seed)).run()
    return classifier


def several(spec: SklearnModel, n: int = 3, seed: int = 0) -> StackedEstimators:
    """``n`` systems, each fitted on rows of its own."""
    classifier = fitted(spec).replicate(n)
    data = [rows(10 + s) for s in range(n)]
    Xs, ys = torch.stack([d[0] for d in data]), torch.stack([d[1] for d in data])
    classifier.training_job(Xs, ys, None, generator(seed)).run()
    return classifier


# --- the specification ------------------------------------------------------------------------

FORMS = {
    "mapping": lambda: SklearnModel(LOGISTIC),
    "object": lambda: SklearnModel(GradientBoostingClassifier(n_estimators=10, subsample=0.7)),
    "pipeline_object": lambda: SklearnModel(gbdt_pipeline()),
    "pipeline_factory": lambda: SklearnModel({"_target_": f"{__name__}.gbdt_pipeline"}),
    "factory_with_arguments": lambda: SklearnModel({**FOREST, "n_estimators": 4}),
}


@pytest.mark.parametrize("form", list(FORMS))
def test_every_form_gives_seeded_reproducible_estimators(form):
    spec = FORMS[form]()
    assert (spec.kind, spec.differentiable, spec.parametric) == ("sklearn", False, False)
    estimator = spec.seeded(1234)
    names = [k for k in estimator.get_params(deep=True) if k.split("__")[-1] == "random_state"]
    assert names  # a pipeline's step included
    assert all(estimator.get_params(deep=True)[k] == 1234 for k in names)
    assert spec.prototype() is not spec.prototype()  # a fresh estimator for every system
    if spec.factory is None:  # the user's object itself is never seeded nor fitted
        assert all(v is None for k, v in spec._object.get_params(deep=True).items() if k in names)
        assert not hasattr(spec._object, "classes_")
    first, again = fitted(spec, seed=5), fitted(spec, seed=5)
    assert first.fits[0].seed == again.fits[0].seed
    assert torch.equal(first.proba(GRID), again.proba(GRID))
    if form != "mapping":  # these estimators draw random numbers in fit
        assert not torch.equal(first.proba(GRID), fitted(spec, seed=6).proba(GRID))


def test_system_seeds_depend_on_their_keys_not_on_the_other_systems():
    spec = SklearnModel(FOREST)
    Xs, ys = torch.stack([X, X2]), torch.stack([Y, Y2])
    pair = fitted(spec).replicate(2)
    pair.training_job(Xs, ys, None, generator(7), keys=[3, 8]).run()
    alone = fitted(spec)
    alone.training_job(Xs[1:], ys[1:], None, generator(7), keys=[8]).run()
    assert pair.fits[1].seed == alone.fits[0].seed
    assert torch.equal(pair.select([1]).proba(GRID), alone.proba(GRID))
    other_key = fitted(spec)
    other_key.training_job(Xs[1:], ys[1:], None, generator(7), keys=[9]).run()
    assert other_key.fits[0].seed != alone.fits[0].seed
    assert not torch.equal(other_key.proba(GRID), alone.proba(GRID))


def test_a_single_class_population_gives_a_constant_estimator():
    spec = SklearnModel(LOGISTIC)
    classifier = fitted(spec).replicate(3)
    ys = torch.stack([torch.ones_like(Y), torch.zeros_like(Y), Y])
    classifier.training_job(torch.stack([X, X, X]), ys, None, generator(0)).run()
    assert [type(e) for e in classifier.estimators[:2]] == [ConstantEstimator] * 2
    assert [e.label for e in classifier.estimators[:2]] == [1, 0]
    p = classifier.proba(GRID)
    assert torch.equal(p[0], torch.ones(len(GRID), dtype=torch.float64))
    assert torch.equal(p[1], torch.zeros(len(GRID), dtype=torch.float64))
    assert ((p[2] > 0) & (p[2] < 1)).all()
    logits = classifier.logits(GRID)
    assert torch.isposinf(logits[0]).all() and torch.isneginf(logits[1]).all()


def test_proba_of_shared_rows_and_logits_are_the_log_odds():
    classifier = several(SklearnModel(FOREST))
    shared = classifier.proba(GRID)
    assert shared.shape == (3, len(GRID)) and shared.dtype == torch.float64
    for s, estimator in enumerate(classifier.estimators):
        np.testing.assert_array_equal(shared[s].numpy(), estimator.predict_proba(GRID)[:, 1])
    assert torch.equal(classifier.proba(GRID.expand(3, -1, -1)), shared)  # per-system rows
    assert torch.equal(classifier.proba(GRID.numpy()), shared)
    inner = shared.clamp(0.05, 0.95) == shared
    expected = torch.log(shared / (1 - shared))
    assert torch.allclose(classifier.logits(GRID)[inner], expected[inner])
    assert classifier.parameters_of(0) == []


def test_rows_shared_by_every_system_may_come_as_a_matrix():
    spec = SklearnModel(FOREST)
    stacked = fitted(spec).replicate(2)
    stacked.fit(X[None], Y[None], generator=generator(3))
    matrix = fitted(spec).replicate(2)
    matrix.fit(X, Y, generator=generator(3))  # (n, d) rows: fitted on all of them
    assert torch.equal(matrix.proba(GRID), stacked.proba(GRID))
    with pytest.raises(ValueError, match="rows for 2 systems"):
        fitted(spec).replicate(3).training_job(
            X.expand(2, -1, -1), Y.expand(2, -1), None, generator(0)
        )


def test_select_put_replicate_and_clone():
    classifier = several(SklearnModel(FOREST))
    full = classifier.proba(GRID)
    assert torch.equal(classifier.select([2, 0]).proba(GRID), full[[2, 0]])
    copy = classifier.clone()
    copy.put([0], classifier.select([2]))
    assert torch.equal(copy.proba(GRID), full[[2, 1, 2]])
    assert torch.equal(classifier.proba(GRID), full)  # the original is untouched
    assert copy.fits[0] is classifier.fits[2]
    with pytest.raises(ValueError, match="single-system"):
        classifier.replicate(2)
    single = classifier.select([1]).replicate(4)
    assert single.n_systems == 4 and torch.equal(single.proba(GRID), full[[1, 1, 1, 1]])
    with pytest.raises(RuntimeError, match="not fitted"):
        SklearnModel(LOGISTIC).initialise(2, None).proba(GRID)


@pytest.mark.parametrize("estimator", [FOREST, {"_target_": f"{__name__}.gbdt_pipeline"}])
def test_state_loads_weights_only_and_restores_the_same_predictions(estimator):
    spec = SklearnModel(estimator)
    classifier = several(spec)
    ys = torch.stack([Y, torch.ones_like(Y), Y2])
    classifier.put([1], fitted(spec, X=X, y=ys[1]))  # a constant system too
    buffer = io.BytesIO()
    torch.save(classifier.state(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    restored = SklearnModel(estimator).restore(2, 3, state)
    assert torch.equal(restored.proba(GRID), classifier.proba(GRID))
    assert isinstance(restored.estimators[1], ConstantEstimator)
    assert [f.seed for f in restored.fits] == [f.seed for f in classifier.fits]
    with pytest.raises(RuntimeError, match="not fitted"):
        spec.initialise(2, None).state()


# --- continued training -------------------------------------------------------------------------


def test_continue_training_with_partial_fit():
    spec = SklearnModel(SGD, continue_training=True)
    classifier = fitted(spec, seed=1)
    seed = classifier.fits[0].seed
    before = classifier.clone()
    classifier.training_job(X2[None], Y2[None], None, generator(2)).run()
    expected = spec.seeded(seed).fit(X.numpy(), Y.numpy())
    expected.partial_fit(X2.numpy(), Y2.numpy(), classes=np.array([0, 1]))
    np.testing.assert_array_equal(classifier.estimators[0].coef_, expected.coef_)
    fresh = fitted(spec, seed=2, X=X2, y=Y2)
    assert not np.array_equal(classifier.estimators[0].coef_, fresh.estimators[0].coef_)
    # Copies of a continued model are independent of it.
    assert torch.equal(before.proba(GRID), fitted(spec, seed=1).proba(GRID))
    with pytest.raises(ConfigError) as refused:
        spec.restore(2, 1, classifier.state())
    assert refused.value.key == "resume" and "continue_training" in str(refused.value)


def test_continue_training_with_warm_start():
    spec = SklearnModel(LOGISTIC, continue_training=True)
    classifier = fitted(spec)
    first = classifier.estimators[0]
    classifier.training_job(X2[None], Y2[None], None, generator(2)).run()
    assert classifier.estimators[0] is first and first.get_params()["warm_start"]
    reference = SkLogistic().fit(X2.numpy(), Y2.numpy())  # a convex fit: the same optimum
    np.testing.assert_allclose(first.coef_, reference.coef_, atol=1e-3)


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("sklearn.ensemble.GradientBoostingClassifier", "only adds estimators"),
        ("sklearn.ensemble.HistGradientBoostingClassifier", "only adds estimators"),
        ("sklearn.tree.DecisionTreeClassifier", "neither partial_fit nor warm_start"),
    ],
)
def test_continue_training_refused_where_it_would_not_learn(target, reason):
    with pytest.raises(ConfigError) as refused:
        SklearnModel({"_target_": target}, continue_training=True)
    assert refused.value.key == "model.continue_training"
    assert reason in str(refused.value) and "SGDClassifier" in str(refused.value)
    SklearnModel({"_target_": target})  # refitting works


# --- bad estimators -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("estimator", "key", "words"),
    [
        ({"_target_": "sklearn.linear_model.LinearRegression"}, "_target_", "predict_proba"),
        ({"_target_": "sklearn.linear_model.SGDClassifier"}, "_target_", "predict_proba"),
        ({"_target_": "sklearn.ensemble.NoSuchClassifier"}, "_target_", "NoSuchClassifier"),
        ({"_target_": "no_such_package.Classifier"}, "_target_", "import path"),
        (
            {"_target_": "sklearn.ensemble.GradientBoostingClassifier", "n_trees": 10},
            "n_trees",
            "n_estimators",
        ),
        (
            {"_target_": "sklearn.ensemble.GradientBoostingClassifier", "n_estimators": "ten"},
            "n_estimators",
            "int in the range",
        ),
    ],
    ids=["no_predict_proba", "hinge_loss", "missing_class", "missing_module", "unknown", "value"],
)
def test_bad_estimators_are_refused_naming_their_key(estimator, key, words):
    with pytest.raises(ConfigError) as refused:
        SklearnModel(estimator)
    assert refused.value.key == f"model.estimator.{key}"
    assert words in str(refused.value)


def test_a_bad_value_inside_a_pipeline_is_refused():
    with pytest.raises(ConfigError) as refused:
        SklearnModel(make_pipeline(StandardScaler(), GradientBoostingClassifier(n_estimators=-1)))
    assert refused.value.key == "model.estimator" and "n_estimators" in str(refused.value)


# --- worker processes ---------------------------------------------------------------------------


def test_fit_jobs_in_worker_processes_give_the_same_estimators():
    data = [rows(20 + s) for s in range(4)]
    Xs, ys = torch.stack([d[0] for d in data]), torch.stack([d[1] for d in data])
    specs = [
        SklearnModel(FOREST),
        SklearnModel({"_target_": f"{__name__}.gbdt_pipeline"}),  # imported by path there
        SklearnModel(SGD, continue_training=True),
    ]
    here = [fitted(spec).replicate(4) for spec in specs]
    shared = [classifier.clone() for classifier in here]
    for classifier in here:
        job = classifier.training_job(Xs, ys, None, generator(4), keys=[5, 6, 7, 8])
        assert isinstance(job, _FitJob)
        job.run()
    with WorkerPool(2) as pool:
        for classifier in shared:
            classifier.training_job(Xs, ys, None, generator(4), keys=[5, 6, 7, 8]).run(pool)
    for a, b in zip(here, shared, strict=True):
        assert [f.seed for f in b.fits] == [f.seed for f in a.fits]
        assert torch.equal(b.proba(GRID), a.proba(GRID))


# --- the command line ---------------------------------------------------------------------------
# Each `python -m recourse_sim` costs seconds of start-up alone: the runs that need the real entry
# point run in subprocesses, two at a time (module fixture); the others call its `execute`.

OUTPUTS = ("metrics.csv", "recourse.csv", "final_population.csv")
COMMON = ["data=moons", "data.n_samples=100", "progress=false", "report=none"]
SKLEARN = [
    "model=sklearn",
    "generator=[growing_spheres,nice,none]",
    *COMMON,
    "simulation.n_rounds=4",
    "simulation.n_repetitions=1",
    "simulation.n_permutations=2",
    "simulation.evaluate_every=1",
    "+model.sklearn.estimator.n_estimators=10",
    "+model.sklearn.estimator.subsample=0.7",  # the fits depend on their seeds
]
ONE_PROCESS = [*SKLEARN, "processes=1"]
CONTINUED = [
    "model=sklearn",
    "generator=[nice]",
    *COMMON,
    "debug=smoke",
    "model.sklearn.continue_training=true",
    "model.sklearn.estimator._target_=sklearn.linear_model.SGDClassifier",
    "+model.sklearn.estimator.loss=log_loss",
    "processes=1",
]
CREDIT_GBDT = [
    "+experiment=credit_gbdt",
    "data.n_samples=300",
    "simulation.n_rounds=1",
    "simulation.n_repetitions=1",
    "simulation.n_permutations=0",
    "model.gbdt.estimator.n_estimators=10",
    "progress=false",
    "report=none",
    "processes=1",
]
#: For refused runs: a data file that does not exist shows that no data was loaded.
NO_DATA = ["data=csv", "data.path=/nonexistent/rows.csv", "data.target=y", "progress=false"]


def command(overrides: list[str], run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "recourse_sim", *overrides, f"hydra.run.dir={run_dir}"]


def in_process(overrides: list[str], run_dir: Path) -> int:
    """The exit status of the entry point's ``execute``, run in this process."""
    with initialize_config_dir(config_dir=_CONFIG_DIR, version_base="1.3"):
        return execute(compose(config_name="config", overrides=overrides), output_dir=run_dir)


def only_hydras_empty_log(run_dir: Path) -> bool:
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    return [p.name for p in files] == ["__main__.log"] and not files[0].stat().st_size


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> dict:
    """A run of ONE_PROCESS stopped during round 3 (after round 2's checkpoint)."""
    run_dir = tmp_path_factory.mktemp("sklearn_interrupted") / "run"
    original = RecourseSimulation._evaluation_phase

    def crash(self, round_number):
        if round_number == 3:  # round 3's recourse rows are on disk, its metrics are not
            raise KeyboardInterrupt("simulated crash")
        original(self, round_number)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RecourseSimulation, "_evaluation_phase", crash)
        status = in_process(ONE_PROCESS, run_dir)
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    return {
        "run_dir": run_dir,
        "status": status,
        "metrics_round": int(pd.read_csv(run_dir / "metrics.csv")["round"].max()),
        "checkpoint": checkpoint["state"],
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory, interrupted) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """The command-line runs, at most two at a time; each is (its directory, its result)."""
    root = tmp_path_factory.mktemp("sklearn_cli")
    commands = {  # the longest first
        "two_processes": command([*SKLEARN, "processes=2"], root / "two_processes"),
        "whole": command(ONE_PROCESS, root / "whole"),
        "resumed": command([*ONE_PROCESS, "resume=true"], interrupted["run_dir"]),
        "credit_gbdt": command(CREDIT_GBDT, root / "credit_gbdt"),
        "gradients": command(
            ["model=sklearn", "generator=[generic]", *NO_DATA], root / "gradients"
        ),
    }
    waiting, running, done = list(commands), {}, {}
    while waiting or running:
        while waiting and len(running) < 2:
            name = waiting.pop(0)
            out, err = root / f"{name}.out", root / f"{name}.err"
            with out.open("w") as stdout, err.open("w") as stderr:
                running[name] = subprocess.Popen(commands[name], stdout=stdout, stderr=stderr)
        for name, process in list(running.items()):
            if process.poll() is not None:
                del running[name]
                result = subprocess.CompletedProcess(
                    commands[name],
                    process.returncode,
                    (root / f"{name}.out").read_text(),
                    (root / f"{name}.err").read_text(),
                )
                run_dir = interrupted["run_dir"] if name == "resumed" else root / name
                done[name] = (run_dir, result)
        time.sleep(0.05)
    return done


def finished(runs, name: str) -> Path:
    run_dir, result = runs[name]
    assert result.returncode == 0, f"{name}: exit {result.returncode}\n{result.stderr}"
    return run_dir


def test_sklearn_run_records_non_parametric_metrics_as_missing(runs):
    run_dir = finished(runs, "whole")
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert set(metrics.generator) == {"growing_spheres", "nice", "none"}
    assert sorted(metrics["round"].unique()) == [0, 1, 2, 3, 4]
    perturbation = metrics[metrics.metric == "perturbation"]
    assert len(perturbation) == 3 * 5
    assert perturbation.value.isna().all() and perturbation.p_value.isna().all()
    for name in ("mmd_model", "disagreement", "decisiveness"):
        values = metrics[metrics.metric == name]
        assert len(values) == 3 * 5 and np.isfinite(values.value).all(), name
    later = metrics[(metrics.metric == "mmd_model") & (metrics["round"] > 0)]
    assert np.isfinite(later.p_value).all()  # p-values exist, only perturbation's are missing
    missing = pd.read_csv(run_dir / "missing_values.csv")
    assert set(missing.metric) == {"perturbation"} and len(missing) == 3 * 5
    assert missing.reason.str.contains("no parameters").all()
    recourse = pd.read_csv(run_dir / "recourse.csv")
    moved = recourse[recourse.generator != "none"]
    assert len(recourse) == 3 * 4 and (moved.n_chosen > 0).all()


def test_same_results_with_worker_processes_and_again_and_not_with_another_seed(runs, tmp_path):
    whole = finished(runs, "whole")
    assert in_process(ONE_PROCESS, tmp_path / "again") == 0
    for other in (finished(runs, "two_processes"), tmp_path / "again"):
        for name in OUTPUTS:
            assert (other / name).read_bytes() == (whole / name).read_bytes(), (other, name)
    assert in_process([*ONE_PROCESS, "seed=1"], tmp_path / "other_seed") == 0
    for name in OUTPUTS:
        assert (tmp_path / "other_seed" / name).read_bytes() != (whole / name).read_bytes(), name


def test_a_gradient_generator_is_refused_before_any_work(runs):
    run_dir, result = runs["gradients"]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "<generator='generic'>" in result.stderr and "needs no gradients" in result.stderr
    assert "work with it: feature_tweak, growing_spheres, nice, none" in result.stderr
    assert "rows.csv" not in result.stderr + result.stdout  # the data was never loaded
    assert only_hydras_empty_log(run_dir)


@pytest.mark.parametrize(
    ("overrides", "key", "words"),
    [
        (["model=[mlp,sklearn]", "generator=[feature_tweak]"], "generator.feature_tweak", "tree"),
        (
            ["model=sklearn", "generator=[nice]", "+model.sklearn.estimator.max_depth=-2"],
            "model.sklearn.estimator.max_depth",
            "max_depth",
        ),
    ],
    ids=["feature_tweak_on_mlp", "bad_estimator_value"],
)
def test_other_refusals_exit_2_before_any_work(overrides, key, words, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "__main__.log").touch()  # what hydra creates
    assert in_process([*overrides, *NO_DATA], run_dir) == 2
    err = capsys.readouterr().err
    assert f"<{key}=" in err and words in err and "Traceback" not in err, err
    assert "rows.csv" not in err
    assert only_hydras_empty_log(run_dir)


def test_a_resumed_run_refits_its_estimators_and_matches_an_uninterrupted_one(interrupted, runs):
    assert interrupted["status"] == 130  # interrupted
    assert interrupted["metrics_round"] == 2
    assert interrupted["checkpoint"]["round"] == 2
    for name in ("sklearn", "sklearn/control"):
        state = interrupted["checkpoint"]["classifiers"][name]
        assert set(state) == {"X", "y", "seed"}  # rows and seeds, no estimator
    resumed = finished(runs, "resumed")
    whole = finished(runs, "whole")
    for name in OUTPUTS:
        assert (resumed / name).read_bytes() == (whole / name).read_bytes(), name


def test_continued_training_runs_and_cannot_resume(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert in_process(CONTINUED, run_dir) == 0
    assert pd.read_csv(run_dir / "metrics.csv")["round"].max() == 2
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert in_process([*CONTINUED, "resume=true"], run_dir) == 2
    err = capsys.readouterr().err
    assert "<resume=True>" in err and "continue_training" in err and "Traceback" not in err
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert after == before  # refused before any work: not a byte changed


def test_credit_gbdt_preset_runs(runs):
    run_dir = finished(runs, "credit_gbdt")
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert set(metrics.model) == {"gbdt"}
    assert set(metrics.generator) == {"feature_tweak", "growing_spheres", "none"}
    assert set(metrics["round"]) == {0, 1}
    recourse = pd.read_csv(run_dir / "recourse.csv")
    assert (recourse[recourse.generator != "none"].n_chosen > 0).all()
