"""Sweeps through hydra's launchers, end to end: joblib, submitit (local, SLURM), Ray; a sweep
killed with SIGKILL and launched again; the package as a wheel and as a non-editable install."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import SMOKE

from recourse_sim.keys import job_key
from recourse_sim.run import available_cpus

#: The checkout this test file belongs to (not a hard-coded path).
REPO = Path(__file__).resolve().parents[1]
#: A second environment with hydra-ray-launcher, used when this interpreter has none.
RAY_PYTHON = Path(os.environ.get("RECOURSE_SIM_RAY_PYTHON", "/work/rayvenv/bin/python"))
#: The files a build of the package needs (the rest of the checkout stays out of the copy).
BUILD_INPUTS = ("pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in", "README.md", "LICENSE")


def recourse_sim(*args: str, python: str = sys.executable, **kwargs):
    """``python -m recourse_sim ARGS``, captured."""
    kwargs.setdefault("timeout", 600)
    return subprocess.run(
        [python, "-m", "recourse_sim", *args], capture_output=True, text=True, **kwargs
    )


def explain(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def keys(*job_overrides: list[str]) -> set[str]:
    return {job_key(overrides) for overrides in job_overrides}


def done_jobs(sweep_dir: Path) -> set[str]:
    if not sweep_dir.is_dir():
        return set()
    return {p.name for p in sweep_dir.iterdir() if (p / "done.json").is_file()}


def check_sweep(
    result: subprocess.CompletedProcess, sweep_dir: Path, expected: set[str], processes: int
) -> None:
    """A finished sweep: every job done, each with ``processes=auto: N``, collected at the end."""
    assert result.returncode == 0, explain(result)
    assert "Traceback" not in result.stdout, explain(result)
    assert "Traceback" not in result.stderr, explain(result)
    assert done_jobs(sweep_dir) == expected
    for name in expected:
        log = (sweep_dir / name / "__main__.log").read_text()
        assert f"processes=auto: {processes} (" in log, log
    with open(sweep_dir / "jobs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["job"] for row in rows) == sorted(expected)
    assert {row["state"] for row in rows} == {"done"}, rows
    for name in ("summary.csv", "sweep_metrics.csv", "shift_report.html"):
        assert (sweep_dir / name).is_file(), name
    n = len(expected)
    assert f"recourse_sim: {n} jobs in {sweep_dir}: {n} done" in result.stdout, explain(result)


def seeds(*values: int) -> tuple[str, set[str]]:
    """The override ``seed=0,1,...`` and the directory names of its smoke jobs."""
    return "seed=" + ",".join(map(str, values)), keys(*([f"seed={s}", *SMOKE] for s in values))


def test_joblib_sweep(tmp_path):
    sweep, expected = seeds(0, 1, 2)
    result = recourse_sim(
        "-m", "hydra/launcher=joblib", sweep, *SMOKE, f"hydra.sweep.dir={tmp_path}", cwd=tmp_path
    )
    check_sweep(result, tmp_path, expected, processes=1)


def test_submitit_local_sweep(tmp_path):
    sweep, expected = seeds(0, 1)
    result = recourse_sim(
        "-m",
        "hydra/launcher=submitit_local",
        sweep,
        *SMOKE,
        f"hydra.sweep.dir={tmp_path}",
        cwd=tmp_path,
    )
    check_sweep(result, tmp_path, expected, processes=1)
    # Each job's own stdout and stderr (what the terminal never shows).
    logs = sorted((tmp_path / ".submitit").rglob("*_log.*"))
    assert {log.suffix for log in logs} == {".out", ".err"}
    assert len(logs) == 2 * len(expected)
    for log in logs:
        assert "Traceback" not in log.read_text(), f"{log}:\n{log.read_text()}"


def test_slurm_example_config_composes():
    result = recourse_sim("hydra/launcher=slurm", "--cfg", "hydra", timeout=120)
    assert result.returncode == 0, explain(result)
    launcher = yaml.safe_load(result.stdout)["hydra"]["launcher"]
    assert launcher["_target_"].endswith(".SlurmLauncher"), launcher
    assert launcher["cpus_per_task"] == 2
    assert launcher["array_parallelism"] == 64
    assert launcher["max_num_timeout"] == 3
    assert launcher["timeout_min"] == 240
    assert launcher["mem_gb"] == 8
    assert launcher["partition"] is None


DEBUG_SLURM = '''
"""hydra's SLURM launcher with submitit's DebugExecutor: the jobs run in this process."""

import submitit
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher


class DebugSlurmLauncher(SlurmLauncher):
    def launch(self, job_overrides, initial_job_idx):
        auto = submitit.AutoExecutor

        def debug_executor(**kwargs):
            kwargs.pop("cluster", None)
            return auto(cluster="debug", **kwargs)

        submitit.AutoExecutor = debug_executor
        try:
            return super().launch(job_overrides, initial_job_idx)
        finally:
            submitit.AutoExecutor = auto
'''


@pytest.mark.slow  # 20 s; the default suite checks that the SLURM config composes
def test_slurm_sweep_with_debug_executor(tmp_path):
    plugins = tmp_path / "plugins"
    package = plugins / "hydra_plugins" / "debug_slurm"  # no __init__.py in hydra_plugins/
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(DEBUG_SLURM))
    python_path = os.pathsep.join(filter(None, [str(plugins), os.environ.get("PYTHONPATH")]))
    sweep_dir = tmp_path / "sweep"
    sweep, expected = seeds(0, 1)
    result = recourse_sim(
        "-m",
        "hydra/launcher=slurm",
        "hydra.launcher.partition=cpu",
        "hydra.launcher._target_=hydra_plugins.debug_slurm.DebugSlurmLauncher",
        sweep,
        *SMOKE,
        f"hydra.sweep.dir={sweep_dir}",
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": python_path},
    )
    # A subclass of SlurmLauncher counts as SLURM: each job has its own allocation.
    check_sweep(result, sweep_dir, expected, processes=min(2, available_cpus()))
    assert "DEBUG_" in " ".join(p.name for p in (sweep_dir / ".submitit").iterdir())


# --- a sweep killed with SIGKILL, then launched again -----------------------------------------


def _pgroup_alive(pgid: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _mtimes(job_dirs: list[Path]) -> dict[str, int]:
    return {
        str(path): path.stat().st_mtime_ns
        for job_dir in job_dirs
        for path in sorted(job_dir.rglob("*"))
        if path.is_file()
    }


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="reads process groups from /proc")
def test_killed_sweep_resumes_and_matches_an_uninterrupted_one(tmp_path):
    values = range(6)
    overrides = [*SMOKE, "simulation.n_rounds=8", "data.n_samples=200"]
    expected = keys(*([f"seed={s}", *overrides] for s in values))
    sweep = "seed=" + ",".join(map(str, values))

    def command(sweep_dir: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "recourse_sim",
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            *overrides,
            sweep,
            "report=none",
            f"hydra.sweep.dir={sweep_dir}",
        ]

    a, b = tmp_path / "a", tmp_path / "b"
    with open(tmp_path / "first.log", "w") as log:
        process = subprocess.Popen(
            command(a), cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

        def wait_for(condition, what: str) -> None:
            deadline = time.monotonic() + 300
            while not condition():
                assert process.poll() is None, (
                    f"the sweep ended (exit {process.returncode}) before {what}:\n"
                    + (tmp_path / "first.log").read_text()
                )
                assert time.monotonic() < deadline, f"not {what} after 300 s"
                time.sleep(0.05)

        def running_with_checkpoint() -> bool:
            return any(
                (a / name / "checkpoint.pt").is_file() and not (a / name / "done.json").is_file()
                for name in expected
            )

        try:
            wait_for(lambda: len(done_jobs(a)) >= 2, "2 jobs were done")
            # Into a later job's rounds (8 of them, a checkpoint after each): kill mid-job.
            wait_for(running_with_checkpoint, "an unfinished job had a checkpoint")
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    deadline = time.monotonic() + 30
    while _pgroup_alive(process.pid):  # the launcher's workers too
        assert time.monotonic() < deadline, "processes of the killed sweep are still running"
        time.sleep(0.05)

    finished = done_jobs(a)
    unfinished = expected - finished
    assert unfinished, (
        "the kill came after every job had finished: nothing to resume; make the jobs longer "
        "(simulation.n_rounds, data.n_samples)"
    )
    before = _mtimes([a / name for name in sorted(finished)])
    checkpointed = {name for name in unfinished if (a / name / "checkpoint.pt").is_file()}
    assert checkpointed, "no unfinished job has a checkpoint: the kill came too late"

    again = subprocess.run(command(a), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, explain(again)
    assert "Traceback" not in again.stdout + again.stderr, explain(again)
    assert done_jobs(a) == expected
    # The finished jobs were skipped: not one file added, removed or rewritten.
    assert _mtimes([a / name for name in sorted(finished)]) == before
    assert again.stdout.count("recourse_sim: skipped:") == len(finished), explain(again)
    for name in unfinished:
        manifest = json.loads((a / name / "manifest.json").read_text())
        assert manifest["resumed"] is (name in checkpointed), (name, manifest)

    whole = subprocess.run(command(b), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, explain(whole)
    assert done_jobs(b) == expected
    for name in ("summary.csv", "sweep_metrics.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    for name in expected:
        assert (a / name / "metrics.csv").read_bytes() == (b / name / "metrics.csv").read_bytes()
    print(f"killed after {sorted(finished)}; resumed from a checkpoint: {sorted(checkpointed)}")


# --- Ray -----------------------------------------------------------------------------------


def _ray_python() -> str | None:
    if importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is not None:
        return sys.executable
    return str(RAY_PYTHON) if RAY_PYTHON.is_file() else None


@pytest.mark.slow
@pytest.mark.skipif(_ray_python() is None, reason="needs pip install '.[ray]'")
def test_ray_sweep(tmp_path):
    sweep, expected = seeds(0, 1)
    result = recourse_sim(
        "-m",
        "hydra/launcher=ray",
        *SMOKE,
        sweep,
        "+hydra.launcher.ray.init.include_dashboard=false",
        f"hydra.sweep.dir={tmp_path}",
        python=_ray_python(),
        cwd=tmp_path,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
    )
    check_sweep(result, tmp_path, expected, processes=1)


# --- the package as it ships -----------------------------------------------------------------


def copy_sources(target: Path) -> Path:
    """What a build reads, copied out of the checkout (so that no build/ or egg-info there, and
    nothing a stale build/ holds, takes part)."""
    target.mkdir()
    for name in BUILD_INPUTS:
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, target / name)
    shutil.copytree(
        REPO / "recourse_sim",
        target / "recourse_sim",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    return target


def test_wheel_ships_configs_and_data(tmp_path):
    pytest.importorskip("setuptools", reason="pip wheel --no-build-isolation needs setuptools")
    source = copy_sources(tmp_path / "source")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, explain(result)
    (wheel,) = (tmp_path / "dist").glob("recourse_sim-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in (
        "recourse_sim/configs/config.yaml",
        "recourse_sim/configs/hydra/launcher/slurm.yaml",
        "recourse_sim/configs/experiment/credit.yaml",
    ):
        assert name in names
    package = REPO / "recourse_sim"
    configs = {p.relative_to(REPO).as_posix() for p in (package / "configs").rglob("*.yaml")}
    assert configs - names == set()  # every option of the checkout, at any depth
    data = {p.relative_to(REPO).as_posix() for p in (package / "data" / "files").iterdir()}
    assert data, "no data files in the checkout"
    assert data - names == set()


@pytest.mark.slow
def test_non_editable_install_runs_from_anywhere(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python, program = venv / "bin" / "python", venv / "bin" / "recourse-sim"
    source = copy_sources(tmp_path / "source")
    install = subprocess.run(
        [str(python), "-m", "pip", "install", str(source)],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert install.returncode == 0, explain(install)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    where = subprocess.run(
        [str(python), "-c", "import recourse_sim; print(recourse_sim.__file__)"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=env,
        timeout=120,
    )
    assert where.returncode == 0, explain(where)
    installed = Path(where.stdout.strip()).resolve()
    assert installed.is_relative_to(venv.resolve()), installed
    assert not installed.is_relative_to(REPO), installed

    run_dir = tmp_path / "run"
    result = recourse_sim(
        "+experiment=credit",
        "simulation.n_rounds=2",
        f"hydra.run.dir={run_dir}",
        python=str(python),
        cwd=elsewhere,
        env=env,
    )
    assert result.returncode == 0, explain(result)
    assert (run_dir / "metrics.csv").is_file()

    helped = subprocess.run(
        [str(program), "--help"], capture_output=True, text=True, cwd=elsewhere, env=env, timeout=60
    )
    assert helped.returncode == 0, explain(helped)
    (experiments,) = [line for line in helped.stdout.splitlines() if line.startswith("experiment:")]
    assert "credit" in experiments.split(":", 1)[1].replace(",", " ").split(), experiments

    completion = subprocess.run(
        [str(program), "-sc", "install=bash"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=env,
        timeout=120,
    )
    assert completion.returncode == 0, explain(completion)
    assert "complete" in completion.stdout, explain(completion)
    assert "recourse-sim" in completion.stdout, explain(completion)
