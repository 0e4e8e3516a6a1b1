"""Sweeps at scale: job names and states, resume=auto, processes=auto, fallbacks, collect."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from conftest import SMOKE
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from recourse_sim.__main__ import _CONFIG_DIR, execute
from recourse_sim.keys import MAX_READABLE, RESULT_KEYS, job_key
from recourse_sim.run import available_cpus, launcher_processes, resolve_processes
from recourse_sim.simulation.recorder import Recorder
from recourse_sim.simulation.rundir import DONE, LOCK, MANIFEST
from recourse_sim.sweep.collect import rerun_command
from recourse_sim.sweep.jobs import JobState, job_state, planned_jobs, sweep_jobs
from recourse_sim.utils.workers import WorkerPool

FAST = [*SMOKE, "processes=1", "report=none"]
AUTO = [*FAST, "resume=auto"]
HASHED = re.compile(r"-[0-9a-f]{12}$")
PROGRAM = ["python", "-m", "recourse_sim"]


def compose_config(overrides: list[str]):
    with initialize_config_dir(config_dir=_CONFIG_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def run_in_process(overrides: list[str], run_dir: Path) -> int:
    return execute(compose_config(overrides), output_dir=run_dir)


def snapshot(directory: Path) -> dict[str, tuple[int, bytes]]:
    """Every file below ``directory`` (hidden ones included): its mtime and its bytes."""
    return {
        str(p.relative_to(directory)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def manifest(directory: Path) -> dict:
    return json.loads((directory / MANIFEST).read_text())


def set_status(directory: Path, status: str) -> None:
    data = manifest(directory)
    data["status"] = status
    (directory / MANIFEST).write_text(json.dumps(data))


# --- job names ---------------------------------------------------------------------------------


def test_a_simple_job_key_is_its_sorted_overrides():
    assert job_key(["seed=0", "generator=generic"]) == "generator=generic,seed=0"
    assert job_key(["generator=generic", "seed=0"]) == job_key(["seed=0", "generator=generic"])


def test_rounding_and_presentation_overrides_leave_the_key_but_presets_stay():
    ignored = [
        "processes=1",
        "report=none",
        "report.figures=false",
        "progress=false",
        "hydra.launcher.n_jobs=2",
        "resume=auto",
        "overwrite=true",
        "torch_threads=2",
        "device=cpu",
    ]
    assert job_key(ignored) == "defaults"
    assert job_key([]) == "defaults"
    assert job_key([*ignored, "seed=3"]) == "seed=3"
    assert job_key(["+experiment=credit", "debug=smoke", *ignored]) == (
        "+experiment=credit,debug=smoke"
    )


@pytest.mark.parametrize("override", ["data.path=/a/b.csv", "model=[logistic,mlp]"])
def test_unsafe_characters_are_replaced_and_hashed(override):
    name = job_key([override, "seed=0"])
    assert "/" not in name and "[" not in name and "]" not in name
    assert HASHED.search(name), name
    assert name.startswith(override.split("=")[0])
    assert name != job_key([override.replace("/", "_").replace("[", "_"), "seed=0"])


def test_a_long_key_is_cut_and_hashed():
    fits = "data.path=" + "x" * (MAX_READABLE - len("data.path="))
    assert job_key([fits]) == fits
    name = job_key([fits + "y"])
    assert len(name) <= MAX_READABLE + 13 and HASHED.search(name)
    assert name.startswith(fits[:MAX_READABLE])
    assert job_key([fits + "y"]) != job_key([fits + "z"])


_SEGMENT = st.sampled_from(["n_samples", "path", "generic", "learning_rate", "x1", "_a"])
_TOP = st.sampled_from([*RESULT_KEYS, "experiment", "debug", "processes", "report", "hydra"])
_KEY = st.builds(
    lambda prefix, top, rest: prefix + ".".join([top, *rest]),
    st.sampled_from(["", "+", "++"]),
    _TOP,
    st.lists(_SEGMENT, max_size=3),
)
# Anything a shell can pass, except lone surrogates (see the surrogate test below).
_VALUE = st.text(st.characters(blacklist_categories=("Cs",)), max_size=150)
_OVERRIDE = st.builds(lambda key, value: f"{key}={value}", _KEY, _VALUE)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(_OVERRIDE, max_size=8), st.randoms(use_true_random=False))
def test_every_job_key_is_a_safe_deterministic_directory_name(overrides, random):
    name = job_key(overrides)
    assert name and "/" not in name and "\0" not in name
    assert not name.startswith(".") and name not in (".", "..")
    assert len(name.encode("utf-8")) <= 255
    shuffled = list(overrides)
    random.shuffle(shuffled)
    assert job_key(shuffled) == name == job_key(list(overrides))


def _hydra_value(value: str) -> str:
    """``value`` as a job's override holds it: plain when it is a simple token, quoted else."""
    if re.fullmatch(r"[A-Za-z0-9_.-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


_RESULT_KEY = st.builds(
    lambda prefix, top, rest: prefix + ".".join([top, *rest]),
    st.sampled_from(["", "+"]),
    st.sampled_from([*RESULT_KEYS, "experiment", "debug"]),
    st.lists(_SEGMENT, max_size=2),
)
_RESULT_OVERRIDE = st.builds(lambda k, v: f"{k}={_hydra_value(v)}", _RESULT_KEY, _VALUE)
_RESULT_SET = st.frozensets(_RESULT_OVERRIDE, max_size=5)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(_RESULT_SET, _RESULT_SET)
def test_different_result_overrides_never_share_a_job_key(first, second):
    if first != second:
        assert job_key(first) != job_key(second)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(_RESULT_SET, st.data())
def test_a_single_changed_override_changes_the_job_key(overrides, data):
    changed = data.draw(_RESULT_OVERRIDE.filter(lambda o: o not in overrides))
    assert job_key([*overrides, changed]) != job_key(list(overrides))


def test_a_non_utf8_path_still_gets_a_job_key():
    name = job_key(["data=csv", "data.path='/data/caf\udce9.csv'"])  # b"caf\xe9" decoded by argv
    assert HASHED.search(name) and "/" not in name


# --- job states --------------------------------------------------------------------------------


def _started(job: Path, status: str = "running", checkpoint: bool = False) -> Path:
    job.mkdir(parents=True)
    (job / MANIFEST).write_text(json.dumps({"tool": "recourse_sim", "status": status, "files": []}))
    (job / LOCK).write_text("")
    if checkpoint:
        (job / "checkpoint.pt").write_bytes(b"not read")
    return job


def test_missing_and_done_jobs(tmp_path):
    missing = job_state(tmp_path / "seed=0", ["seed=0"])
    assert missing.state == "missing" and missing.overrides == ["seed=0"]
    done = _started(tmp_path / "seed=1")
    (done / DONE).write_text(json.dumps({"tool": "recourse_sim"}))
    assert job_state(done).state == "done"


def test_a_job_whose_lock_is_held_is_running_and_unfinished_once_released(tmp_path):
    job = _started(tmp_path / "seed=0", checkpoint=True)
    fd = os.open(job / LOCK, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        before = snapshot(job)
        running = job_state(job)
        assert running.state == "running" and "lock" in running.detail
        assert snapshot(job) == before  # probed without writing
    finally:
        os.close(fd)
    assert job_state(job).state == "unfinished"


@pytest.mark.parametrize(
    ("checkpoint", "detail"),
    [(True, "resume=auto continues it"), (False, "resume=auto starts it afresh")],
)
def test_an_unfinished_job_says_whether_it_has_a_checkpoint(tmp_path, checkpoint, detail):
    job = job_state(_started(tmp_path / "seed=0", checkpoint=checkpoint))
    assert job.state == "unfinished" and detail in job.detail
    assert job.exit_status is None


def test_a_failure_line_in_the_log_makes_a_failed_job(tmp_path):
    job = tmp_path / "seed=0"
    job.mkdir()
    message = "configuration error: <seed=-1> is not valid: an integer >= 0"
    (job / "__main__.log").write_text(
        "[2026-01-01 00:00:00,000][recourse_sim.run][INFO] - data: 80 training rows\n"
        f"[2026-01-01 00:00:01,000][recourse_sim][ERROR] - recourse_sim: job failed "
        f"(exit status 2): {message}\n"
    )
    failed = job_state(job)
    assert failed.state == "failed" and failed.exit_status == 2
    assert failed.detail == message


def test_a_manifest_that_says_failed_makes_a_failed_job(tmp_path):
    failed = job_state(_started(tmp_path / "seed=0", status="failed"))
    assert failed.state == "failed" and failed.exit_status is None
    assert "failed" in failed.detail


def test_the_failure_line_execute_writes_in_a_sweeps_job_is_read_back(
    tmp_path, capsys, monkeypatch
):
    import logging

    import recourse_sim.run

    job = tmp_path / "seed=-1"
    job.mkdir()
    log_file = job / "__main__.log"
    handler = logging.FileHandler(log_file)  # as hydra's job logging opens it
    logging.getLogger().addHandler(handler)
    try:
        assert run_in_process([*FAST, "seed=-1"], job) == 2
        assert log_file.read_text() == ""  # a single run leaves its directory as it was
        monkeypatch.setattr(recourse_sim.run, "in_sweep_job", lambda: True)
        assert run_in_process([*FAST, "seed=-1"], job) == 2
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    failed = job_state(job)
    assert failed.state == "failed" and failed.exit_status == 2
    assert "<seed=-1>" in failed.detail and failed.detail in capsys.readouterr().err


def _parsed(words: list[str]) -> dict[str, object]:
    return {o.get_key_element(): o.value() for o in OverridesParser.create().parse_overrides(words)}


def test_a_jobs_command_parses_back_to_its_overrides_and_directory(tmp_path):
    directory = tmp_path / "sweep" / "debug=smoke,model=[logistic, mlp],seed=0"
    overrides = ["seed=0", "model=[logistic,mlp]", "data.path='/my data/a,b=c.csv'", "debug=smoke"]
    words = shlex.split(JobState(directory.name, directory, overrides).command())
    assert words[:3] == PROGRAM
    parsed = _parsed(words[3:])
    assert parsed.pop("hydra.run.dir") == str(directory)
    assert parsed.pop("resume") == "auto"
    assert parsed == _parsed(overrides)


@pytest.mark.parametrize("name", ["it's", "trailing\\", "a,b=[c] d"])
def test_quotes_and_backslashes_before_a_quote_survive_the_command(tmp_path, name):
    directory = tmp_path / name
    words = shlex.split(JobState(name, directory, ["seed=0"]).command())
    assert _parsed(words[3:])["hydra.run.dir"] == str(directory)


def test_a_backslash_inside_a_directory_name_survives_the_command(tmp_path):
    directory = tmp_path / "a\\b"
    words = shlex.split(JobState(directory.name, directory, ["seed=0"]).command())
    assert _parsed(words[3:])["hydra.run.dir"] == str(directory)


# --- the plan of a sweep -----------------------------------------------------------------------

_MULTIRUN = """\
hydra:
  sweeper:
    _target_: {sweeper}
    max_batch_size: null
    params: null
  overrides:
    hydra: [hydra.mode=MULTIRUN]
    task: ["seed=0,1", "generator=generic,wachter_mad", "debug=smoke"]
"""
_BASIC = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def _sweep(directory: Path, sweeper: str = _BASIC) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "multirun.yaml").write_text(_MULTIRUN.format(sweeper=sweeper))
    return directory


def test_planned_jobs_expand_the_grid_of_the_basic_sweeper(tmp_path):
    planned = planned_jobs(_sweep(tmp_path))
    assert len(planned) == 4
    assert {frozenset(job) for job in planned} == {
        frozenset({f"seed={s}", f"generator={g}", "debug=smoke"})
        for s in (0, 1)
        for g in ("generic", "wachter_mad")
    }


def test_planned_jobs_are_unknown_for_another_sweeper_or_no_multirun(tmp_path):
    assert planned_jobs(_sweep(tmp_path / "a", "hydra_plugins.optuna.OptunaSweeper")) is None
    assert planned_jobs(tmp_path / "nothing") is None


def test_numbered_job_directories_are_listed_without_a_plan(tmp_path):
    # hydra.sweep.subdir=${hydra.job.num}: the plan cannot name the directories, and no
    # override is ever resolved (${hydra.job.num} has no value outside a job).
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    multirun = {
        "hydra": {
            "sweeper": {"_target_": _BASIC},
            "sweep": {"dir": str(sweep), "subdir": "${hydra.job.num}"},
            "overrides": {
                "hydra": ["hydra.mode=MULTIRUN", "hydra.sweep.subdir=${hydra.job.num}"],
                "task": ["seed=0,1"],
            },
        }
    }
    OmegaConf.save(OmegaConf.create(multirun), sweep / "multirun.yaml")
    job = _started(sweep / "0")
    (job / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(
        OmegaConf.create(["seed=0", "x=${hydra.job.num}"]), job / ".hydra/overrides.yaml"
    )
    assert planned_jobs(sweep) is None
    jobs = sweep_jobs(sweep)
    assert [(j.name, j.planned, j.overrides) for j in jobs] == [
        ("0", False, ["seed=0", "x=${hydra.job.num}"])
    ]
    assert "'hydra.sweep.subdir=${hydra.job.num}'" in rerun_command(sweep)


def test_sweep_jobs_list_the_plan_first_then_directories_of_earlier_launches(tmp_path):
    sweep = _sweep(tmp_path)
    done = _started(sweep / job_key(["seed=1", "generator=generic", "debug=smoke"]))
    (done / DONE).write_text("{}")
    _started(sweep / "aaa=earlier")  # sorts before the planned names: still listed last
    (sweep / "empty").mkdir()  # neither a manifest, nor .hydra, nor a log: not a job
    (sweep / ".hidden").mkdir()
    jobs = sweep_jobs(sweep)
    assert [job.planned for job in jobs] == [True] * 4 + [False]
    assert jobs[-1].name == "aaa=earlier" and jobs[-1].state == "unfinished"
    states = {job.name: job.state for job in jobs[:4]}
    assert states.pop(done.name) == "done"
    assert set(states.values()) == {"missing"}
    assert [job.name for job in jobs[:4]] == [job_key(o) for o in planned_jobs(sweep)]


# --- resume=auto -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """One finished smoke run (processes=1, report=none, resume=auto); copy it to change it."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    assert run_in_process(AUTO, run_dir) == 0
    assert (run_dir / DONE).is_file()
    return run_dir


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_resume_auto_skips_a_finished_run_without_touching_it(finished_run, tmp_path, capsys):
    run_dir = _copy(finished_run, tmp_path / "run")
    before = snapshot(run_dir)
    assert LOCK in before and DONE in before
    capsys.readouterr()
    assert run_in_process(AUTO, run_dir) == 0
    out = capsys.readouterr().out
    assert "recourse_sim: skipped:" in out and "results written" not in out
    assert snapshot(run_dir) == before


def test_resume_auto_refuses_the_results_of_other_result_keys(finished_run, tmp_path, capsys):
    run_dir = _copy(finished_run, tmp_path / "run")
    before = snapshot(run_dir)
    capsys.readouterr()
    assert run_in_process([*AUTO, "seed=1"], run_dir) == 2
    err = capsys.readouterr().err
    assert "<resume=" in err and "seed (checkpoint: 0, now: 1)" in err
    assert "Traceback" not in err
    assert snapshot(run_dir) == before


def test_resume_auto_continues_an_interrupted_run_byte_for_byte(
    finished_run, tmp_path, monkeypatch
):
    run_dir = tmp_path / "run"
    real = Recorder.save_checkpoint

    def interrupt_after_the_first(self, state):
        real(self, state)
        monkeypatch.setattr(Recorder, "save_checkpoint", real)
        raise KeyboardInterrupt

    monkeypatch.setattr(Recorder, "save_checkpoint", interrupt_after_the_first)
    assert run_in_process(AUTO, run_dir) == 130
    assert manifest(run_dir)["status"] == "interrupted" and not (run_dir / DONE).exists()
    assert job_state(run_dir).state == "unfinished"
    assert pd.read_csv(run_dir / "metrics.csv")["round"].max() == 1  # one round of two
    assert run_in_process(AUTO, run_dir) == 0
    assert manifest(run_dir)["resumed"] is True and manifest(run_dir)["status"] == "finished"
    assert (run_dir / DONE).is_file()
    for name in ("metrics.csv", "recourse.csv", "final_population.csv"):
        assert (run_dir / name).read_bytes() == (finished_run / name).read_bytes(), name


def test_resume_auto_resumes_a_finished_run_whose_marker_is_gone(finished_run, tmp_path):
    run_dir = _copy(finished_run, tmp_path / "run")
    (run_dir / DONE).unlink()
    set_status(run_dir, "interrupted")
    assert run_in_process(AUTO, run_dir) == 0
    assert manifest(run_dir)["resumed"] is True and (run_dir / DONE).is_file()
    assert (run_dir / "metrics.csv").read_bytes() == (finished_run / "metrics.csv").read_bytes()


def test_resume_auto_starts_afresh_over_its_own_run_without_checkpoint(finished_run, tmp_path):
    run_dir = _copy(finished_run, tmp_path / "run")
    (run_dir / DONE).unlink()
    (run_dir / "checkpoint.pt").unlink()
    set_status(run_dir, "running")
    assert run_in_process(AUTO, run_dir) == 0
    assert manifest(run_dir)["resumed"] is False and (run_dir / DONE).is_file()
    assert (run_dir / "metrics.csv").read_bytes() == (finished_run / "metrics.csv").read_bytes()


def test_overwrite_with_resume_auto_starts_afresh(finished_run, tmp_path, capsys):
    run_dir = _copy(finished_run, tmp_path / "run")
    (run_dir / "notes.txt").write_text("mine")
    before = (run_dir / "metrics.csv").stat().st_mtime_ns
    capsys.readouterr()
    assert run_in_process([*AUTO, "overwrite=true"], run_dir) == 0
    assert "results written" in capsys.readouterr().out
    assert manifest(run_dir)["resumed"] is False
    assert (run_dir / "metrics.csv").stat().st_mtime_ns != before
    assert (run_dir / "notes.txt").read_text() == "mine"


def test_an_unknown_resume_value_is_refused(tmp_path, capsys):
    assert run_in_process([*FAST, "resume=maybe"], tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert "<resume='maybe'>" in err and "auto" in err
    assert not (tmp_path / "run").exists()


def test_a_single_run_without_resume_still_refuses_earlier_results(finished_run, tmp_path, capsys):
    run_dir = _copy(finished_run, tmp_path / "run")
    before = snapshot(run_dir)
    assert run_in_process(FAST, run_dir) == 2
    assert "<overwrite=False>" in capsys.readouterr().err
    after = snapshot(run_dir)
    assert after.pop(LOCK)[1] == b""  # refused under the lock, which is given back
    before.pop(LOCK)
    assert after == before


# --- processes=auto ----------------------------------------------------------------------------

_LAUNCHERS = "hydra_plugins.hydra_submitit_launcher.submitit_launcher"


class ClusterLauncher(SlurmLauncher):
    """A site's own launcher: known by its base class, whatever its name."""


@pytest.mark.parametrize(
    ("launcher", "cpus", "expected"),
    [
        ({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, 1, 1),
        ({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, 8, 2),
        ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"}, 8, 1),
        (
            {
                "_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
                "n_jobs": -1,
            },
            8,
            1,
        ),
        (
            {
                "_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
                "n_jobs": 3,
            },
            8,
            1,
        ),
        (
            {
                "_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
                "n_jobs": 1,
            },
            8,
            2,
        ),
        (
            {
                "_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
                "n_jobs": 1,
            },
            1,
            1,
        ),
        ({"_target_": f"{_LAUNCHERS}.LocalLauncher"}, 8, 1),
        ({"_target_": f"{_LAUNCHERS}.SlurmLauncher"}, 1, 1),
        ({"_target_": f"{_LAUNCHERS}.SlurmLauncher"}, 8, 2),
        ({"_target_": "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"}, 8, 1),
        ({"_target_": "my_site.launchers.Unknown"}, 8, 1),
        ({}, 8, 1),
        (None, 8, 1),
        ({"_target_": f"{__name__}.ClusterLauncher"}, 8, 2),
        ({"_target_": f"{__name__}.ClusterLauncher"}, 1, 1),
    ],
)
def test_launcher_processes(launcher, cpus, expected):
    processes, why = launcher_processes(launcher, cpus)
    assert processes == expected
    assert why.strip()


def test_resolve_processes():
    assert resolve_processes(3) == (3, "")
    processes, why = resolve_processes("auto")
    assert processes == min(2, available_cpus()) and "single run" in why


# --- worker fallbacks --------------------------------------------------------------------------


def _pool_in_a_worker() -> tuple[int, str | None]:
    pool = WorkerPool(2)
    try:
        return pool.processes, pool.fallback
    finally:
        pool.close()


def test_a_pool_inside_a_worker_of_another_pool_runs_in_one_process():
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as executor:
        processes, fallback = executor.submit(_pool_in_a_worker).result(timeout=300)
    assert processes == 1
    assert "worker of another process pool" in fallback


_SCRIPT = """\
from hydra import compose, initialize_config_dir

from recourse_sim.__main__ import _CONFIG_DIR
from recourse_sim.run import run

print("top level of the script", flush=True)
with initialize_config_dir(config_dir=_CONFIG_DIR, version_base="1.3"):
    cfg = compose(config_name="config", overrides={overrides!r})
"""


def _script(tmp_path: Path, guarded: bool, processes: list[str]) -> subprocess.CompletedProcess:
    body = _SCRIPT.format(overrides=[*SMOKE, *processes, "report=none"])
    if guarded:
        body += 'if __name__ == "__main__":\n    run(cfg, "run")\n'
    else:
        body += 'run(cfg, "run")\n'
    script = tmp_path / "simulate.py"
    script.write_text(body)
    return subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )


def test_an_unguarded_script_runs_in_one_process_and_once(tmp_path):
    result = _script(tmp_path, guarded=False, processes=["processes=2"])
    assert result.returncode == 0, result.stderr
    assert "running in one process" in result.stderr and "__main__" in result.stderr
    assert "Traceback" not in result.stderr
    assert 1 <= result.stdout.count("top level of the script") <= 2
    assert result.stdout.count("results written") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "simulate.py"]
    assert [p.parent for p in tmp_path.rglob(DONE)] == [tmp_path / "run"]
    assert {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_dir()} == {
        Path("run"),
        Path("run/.hydra"),
    }


def test_a_guarded_script_uses_its_workers_and_records_the_processes_it_resolved(tmp_path):
    result = _script(tmp_path, guarded=True, processes=[])  # the default: processes=auto
    assert result.returncode == 0, result.stderr
    assert "running in one process" not in result.stderr
    resolved = min(2, available_cpus())  # a single run
    assert manifest(tmp_path / "run")["rounding_keys"]["processes"] == resolved
    # A worker imports the script again (spawn), and the guard keeps it from running.
    assert result.stdout.count("top level of the script") == resolved
    assert result.stdout.count("results written") == 1
    done = json.loads((tmp_path / "run" / DONE).read_text())
    assert done["fingerprint"] == manifest(tmp_path / "run")["fingerprint"]


# --- collecting a sweep ------------------------------------------------------------------------


def _sweep_command(sweep_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "recourse_sim",
        "-m",
        "seed=0,1,2",
        *SMOKE,
        "processes=1",
        "report=none",  # the callback still writes the tables and jobs.csv, fast
        f"hydra.sweep.dir={sweep_dir}",
    ]


def _job(seed: int) -> str:
    return job_key([f"seed={seed}", *SMOKE])


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    """A finished three-job sweep, run once; tests change copies of it."""
    directory = tmp_path_factory.mktemp("sweep") / "sweep"
    result = subprocess.run(
        _sweep_command(directory),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=directory.parent,
    )
    assert result.returncode == 0, result.stderr
    assert all((directory / _job(seed) / DONE).is_file() for seed in range(3))
    return directory


def _collect(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "recourse_sim.collect", *arguments],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _frame(path: Path) -> pd.DataFrame:
    keys = ["repetition", "round", "model", "generator", "metric", "scope"]
    return pd.read_csv(path).sort_values(keys).reset_index(drop=True)


def test_collect_lists_what_is_left_and_a_relaunch_finishes_the_sweep(sweep_dir, tmp_path):
    from recourse_sim.collect import main as collect_main

    sweep = _copy(sweep_dir, tmp_path / "sweep")
    done, unfinished, missing = (sweep / _job(seed) for seed in range(3))
    shutil.rmtree(missing)
    (unfinished / DONE).unlink()
    set_status(unfinished, "running")

    result = _collect(str(sweep), "--no-figures")  # figures: tests/test_report.py
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert f"missing {missing.name}" in out and f"unfinished {unfinished.name}" in out
    assert f"done {done.name}" not in out
    assert out.count("run alone: python -m recourse_sim") == 2
    assert "re-launch the sweep" in out and "Traceback" not in result.stderr
    assert "3 jobs" in out and "1 done" in out
    assert f"wrote {sweep / 'shift_report.html'}" in out

    jobs = pd.read_csv(sweep / "jobs.csv").set_index("job")
    assert jobs["state"].to_dict() == {
        done.name: "done",
        unfinished.name: "unfinished",
        missing.name: "missing",
    }
    summary = pd.read_csv(sweep / "summary.csv")
    assert list(summary.columns[:5]) == ["job", "seed", "model", "generator", "metric"]
    assert set(summary.job) == {done.name, unfinished.name}
    merged = pd.read_csv(sweep / "sweep_metrics.csv")
    assert set(merged.job) == {done.name, unfinished.name}
    for job in (done, unfinished):
        own = _frame(job / "metrics.csv")
        rows = merged[merged.job == job.name][list(own.columns)]
        assert len(rows) == len(own)
        pd.testing.assert_frame_equal(
            rows.sort_values(list(own.columns[:6])).reset_index(drop=True), own
        )

    before = snapshot(done)
    relaunch = subprocess.run(
        _sweep_command(sweep), capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert relaunch.returncode == 0, relaunch.stderr
    assert relaunch.stdout.count("recourse_sim: skipped:") == 1
    assert snapshot(done) == before
    assert (unfinished / DONE).is_file() and (missing / DONE).is_file()
    assert manifest(unfinished)["resumed"] is True and manifest(missing)["resumed"] is False
    assert "3 jobs in" in relaunch.stdout and "3 done" in relaunch.stdout

    (sweep / "shift_report.html").unlink()  # written by the first collect
    assert collect_main([str(sweep), "--no-report"]) == 0
    assert not (sweep / "shift_report.html").exists()
    assert set(pd.read_csv(sweep / "jobs.csv").state) == {"done"}
    assert len(pd.read_csv(sweep / "sweep_metrics.csv")) == sum(
        len(pd.read_csv(sweep / _job(seed) / "metrics.csv")) for seed in range(3)
    )


def test_collect_without_report_draws_no_figures(sweep_dir, tmp_path, monkeypatch):
    from recourse_sim.collect import main as collect_main
    from recourse_sim.report import figures

    drawn = []

    def not_drawn(*args, **kwargs):  # instead of seconds of matplotlib: note the call
        drawn.append(kwargs)
        raise RuntimeError("not drawn in this test")

    monkeypatch.setattr(figures, "sweep_bars", not_drawn)
    monkeypatch.setattr(figures, "metric_lines", not_drawn)
    sweep = _copy(sweep_dir, tmp_path / "sweep")
    shutil.rmtree(sweep / "figures", ignore_errors=True)
    assert collect_main([str(sweep), "--no-report"]) == 0
    assert (sweep / "summary.csv").is_file()
    assert drawn == []


def test_collect_refuses_a_directory_that_is_no_sweep(tmp_path, capsys):
    from recourse_sim.collect import main as collect_main

    assert collect_main([str(tmp_path / "nonexistent")]) == 2
    assert collect_main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a sweep directory" in err and "Traceback" not in err


def test_a_basic_sweep_shares_its_workers_between_jobs(tmp_path):
    # The basic launcher runs the jobs in turn in one process: the second job reuses the first
    # job's workers, and its results are those of a run in one process.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "recourse_sim",
            "-m",
            "seed=0,1",
            *SMOKE,
            "processes=2",
            "report=none",
            f"hydra.sweep.dir={tmp_path / 'two'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    logs = {
        seed: (tmp_path / "two" / job_key([f"seed={seed}", *SMOKE, "processes=2"]))
        for seed in (0, 1)
    }
    assert "previous job" not in (logs[0] / "__main__.log").read_text()
    assert "previous job" in (logs[1] / "__main__.log").read_text()
    alone = tmp_path / "alone"
    assert execute(compose_config([*SMOKE, "seed=1", "processes=1", "report=none"]), alone) == 0
    assert (logs[1] / "metrics.csv").read_bytes() == (alone / "metrics.csv").read_bytes()
