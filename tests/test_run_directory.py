"""The run directory: locks, manifests, overwrite and resume rules, safe writes (issue 9)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import SMOKE
from hydra import compose, initialize_config_dir

from recourse_sim.__main__ import _CONFIG_DIR, execute
from recourse_sim.errors import ConfigError, OutputError
from recourse_sim.keys import job_key
from recourse_sim.simulation.recorder import Recorder
from recourse_sim.simulation.rundir import LOCK, MANIFEST, RunDirectory

ONE_PROCESS = [*SMOKE, "processes=1"]


def compose_config(overrides: list[str]):
    with initialize_config_dir(config_dir=_CONFIG_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def run_in_process(overrides: list[str], run_dir: Path) -> int:
    return execute(compose_config(overrides), output_dir=run_dir)


def _default_sigint() -> None:
    # A suite started in the background of a non-interactive shell (`cmd &`) ignores SIGINT,
    # and children inherit that: Python then installs no KeyboardInterrupt handler, and a run
    # that should be interrupted goes on to finish. Give each run the default, as in a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(*overrides: str, cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "recourse_sim", *overrides],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        preexec_fn=_default_sigint,
    )


# --- item 1: concurrent runs ------------------------------------------------------------------


def test_second_run_into_a_live_directory_is_refused_and_the_first_is_intact(tmp_path):
    run_dir = tmp_path / "run"
    # Far more rounds than the test waits for: the first run must still be alive when the
    # second one checks the lock, however slow the machine; it is interrupted afterwards.
    first = _cli(*SMOKE, "simulation.n_rounds=2000", "seed=1", f"hydra.run.dir={run_dir}")
    deadline = time.time() + 120
    while time.time() < deadline and not (run_dir / "metrics.csv").exists():
        time.sleep(0.1)  # it holds the lock from its manifest on; metrics follow pre-training
    assert first.poll() is None, first.communicate()
    second = _cli(*SMOKE, "seed=2", f"hydra.run.dir={run_dir}")
    _, second_err = second.communicate(timeout=120)
    assert first.poll() is None, "the first run ended before the second was refused"
    first.send_signal(signal.SIGINT)
    _, first_err = first.communicate(timeout=300)
    assert second.returncode == 2, second_err
    assert f"pid {first.pid}" in second_err
    assert "Traceback" not in second_err
    assert first.returncode == 130, first_err
    metrics = pd.read_csv(run_dir / "metrics.csv")
    keys = ["repetition", "round", "model", "generator", "metric"]
    assert not metrics.duplicated(keys).any()
    assert "seed=1" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert json.loads((run_dir / MANIFEST).read_text())["status"] == "interrupted"


def test_two_runs_started_together_get_their_own_default_directories(tmp_path):
    runs = [_cli(*SMOKE, cwd=tmp_path) for _ in range(2)]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
    directories = sorted(p.parent for p in (tmp_path / "outputs").rglob("metrics.csv"))
    assert len(directories) == 2
    assert {d.name.rsplit("_", 1)[1] for d in directories} == {str(r.pid) for r in runs}


def test_lock_of_a_killed_run_is_released(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from recourse_sim.simulation.rundir import RunDirectory;"
            f"RunDirectory({str(tmp_path)!r}).acquire(); print('locked', flush=True); "
            "time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(ConfigError, match=f"pid {holder.pid}"):
        RunDirectory(tmp_path).acquire()
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    with RunDirectory(tmp_path):  # the operating system released the lock
        assert (tmp_path / LOCK).read_text() == str(os.getpid())


# --- item 2: existing results -------------------------------------------------------------------


def test_overwrite_removes_exactly_the_earlier_runs_files(tmp_path):
    run_dir = tmp_path / "run"
    assert run_in_process([*ONE_PROCESS, "report.figures=true"], run_dir) == 0
    first = json.loads((run_dir / MANIFEST).read_text())
    assert "report.html" in first["files"]
    assert any(f.startswith("figures/") for f in first["files"])
    (run_dir / "notes.txt").write_text("mine")
    old_metrics = (run_dir / "metrics.csv").read_bytes()

    # Refused without overwrite=true: nothing changes.
    assert run_in_process([*ONE_PROCESS, "seed=5", "report=none"], run_dir) == 2
    assert (run_dir / "metrics.csv").read_bytes() == old_metrics

    assert run_in_process([*ONE_PROCESS, "seed=5", "report=none", "overwrite=true"], run_dir) == 0
    # The earlier run's report no longer describes a run that is not there.
    for name in ("report.html", "report.md", "summary_table.csv", "recourse_table.csv"):
        assert not (run_dir / name).exists(), name
    assert not [f for f in first["files"] if f.startswith("figures/") and (run_dir / f).exists()]
    assert (run_dir / "notes.txt").read_text() == "mine"
    second = json.loads((run_dir / MANIFEST).read_text())
    assert second["result_keys"]["seed"] == 5
    assert "notes.txt" not in second["files"]
    assert (run_dir / "metrics.csv").read_bytes() != old_metrics


def test_run_into_the_current_directory_never_deletes_user_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "metrics_notes.csv").write_text("mine")
    (tmp_path / "data.csv").write_text("x,y\n1,0\n")
    assert run_in_process(ONE_PROCESS, Path(".")) == 0
    assert run_in_process([*ONE_PROCESS, "overwrite=true"], Path(".")) == 0
    assert (tmp_path / "metrics_notes.csv").read_text() == "mine"
    assert (tmp_path / "data.csv").read_text() == "x,y\n1,0\n"


UNRECORDED = [
    "metrics.csv",
    "report.md",
    "missing_values.csv",
    "figures/a.png",
    ".hydra/config.yaml",
]


@pytest.mark.parametrize("name", UNRECORDED)
def test_files_no_manifest_lists_are_never_overwritten_or_removed(name, tmp_path, capsys):
    mine = tmp_path / name
    mine.parent.mkdir(exist_ok=True)
    mine.write_text("from another tool\n")
    for extra in ([], ["overwrite=true"]):
        assert run_in_process([*ONE_PROCESS, *extra], tmp_path) == 2
        assert name in capsys.readouterr().err
        assert mine.read_text() == "from another tool\n"
    assert not (tmp_path / "metrics.csv").exists() or name == "metrics.csv"


@pytest.mark.parametrize("content", ['{"name": "my project", "files": ["data.csv"]}', "{oops"])
def test_a_foreign_manifest_is_refused_and_kept(content, tmp_path, capsys):
    (tmp_path / "manifest.json").write_text(content)
    (tmp_path / "data.csv").write_text("x\n1\n")
    for extra in ([], ["overwrite=true"]):
        assert run_in_process([*ONE_PROCESS, *extra], tmp_path) == 2
        assert "manifest.json" in capsys.readouterr().err
    assert (tmp_path / "manifest.json").read_text() == content
    assert (tmp_path / "data.csv").read_text() == "x\n1\n"


# --- item 9: resume compares result keys only --------------------------------------------------


def test_resume_ignores_presentation_keys_and_warns_on_rounding_keys(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run_in_process(ONE_PROCESS, run_dir) == 0
    metrics = (run_dir / "metrics.csv").read_bytes()
    capsys.readouterr()
    overrides = [*ONE_PROCESS, "resume=true", "report=none", "progress=true"]
    assert run_in_process(overrides, run_dir) == 0
    assert "warning" not in capsys.readouterr().err
    assert run_in_process([*overrides, "torch_threads=2", "processes=2"], run_dir) == 0
    err = capsys.readouterr().err
    assert "torch_threads" in err and "processes" in err and "byte identity" in err
    assert (run_dir / "metrics.csv").read_bytes() == metrics


def test_resume_compares_values_as_the_fingerprint_does(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run_in_process([*ONE_PROCESS, "simulation.round_length=1"], run_dir) == 0
    capsys.readouterr()
    assert run_in_process([*ONE_PROCESS, "resume=true"], run_dir) == 2
    assert "simulation.round_length (checkpoint: 1, now: 1.0)" in capsys.readouterr().err


def test_resume_refusal_names_the_differing_key(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run_in_process(ONE_PROCESS, run_dir) == 0
    capsys.readouterr()
    assert run_in_process([*ONE_PROCESS, "resume=true", "simulation.n_rounds=3"], run_dir) == 2
    err = capsys.readouterr().err
    assert "simulation.n_rounds (checkpoint: 2, now: 3)" in err


# --- item 7: torn rows, full disks ----------------------------------------------------------------


def test_resume_drops_a_torn_last_line(tmp_path):
    recorder = Recorder(tmp_path)
    rows = [
        {"repetition": 0, "round": r, "model": "m", "generator": "g", "metric": "x", "scope": ""}
        for r in range(3)
    ]
    recorder.append_metrics([dict(row, value=0.5, p_value=None) for row in rows])
    intact = (tmp_path / "metrics.csv").read_text()
    with open(tmp_path / "metrics.csv", "a") as handle:
        handle.write("0,3,m,g,x,,0.12")  # the crash came mid-line
    recorder.truncate_after(2)
    assert (tmp_path / "metrics.csv").read_text() == intact
    recorder.truncate_after(1)
    frame = pd.read_csv(tmp_path / "metrics.csv")
    assert list(frame["round"]) == [0, 1]


def test_resume_cuts_files_back_to_the_checkpoint_byte_for_byte(tmp_path):
    recorder = Recorder(tmp_path, fingerprint="f")
    keys = {"repetition": 0, "model": "m", "generator": "g", "metric": "x"}
    recorder.note_missing([{**keys, "round": 1, "reason": 'a "quoted"\nreason, with a comma'}])
    recorder.save_checkpoint({"round": 1})
    at_checkpoint = (tmp_path / "missing_values.csv").read_bytes()
    recorder.note_missing([{**keys, "round": 2, "reason": "later\x0c"}])
    with open(tmp_path / "missing_values.csv", "ab") as handle:
        handle.write(b'0,3,m,g,x,"torn \xc3')  # the crash came mid-row, mid-character
    resumed = Recorder(tmp_path, fingerprint="f")
    assert resumed.load_checkpoint() == {"round": 1}
    resumed.truncate_after(1)
    assert (tmp_path / "missing_values.csv").read_bytes() == at_checkpoint


def test_resume_refuses_files_shorter_than_at_the_checkpoint(tmp_path):
    recorder = Recorder(tmp_path, fingerprint="f")
    row = {"repetition": 0, "round": 1, "model": "m", "generator": "g", "metric": "x"}
    recorder.append_metrics([dict(row, scope="", value=0.5, p_value=None)])
    recorder.save_checkpoint({"round": 1})
    (tmp_path / "metrics.csv").write_text("repetition,round\n")  # rows lost after the checkpoint
    resumed = Recorder(tmp_path, fingerprint="f")
    resumed.load_checkpoint()
    with pytest.raises(ConfigError, match="lost rows"):
        resumed.truncate_after(1)


def test_one_bad_job_does_not_stop_a_sweep(tmp_path):
    sweep = _cli(
        "-m",
        *ONE_PROCESS,
        "generator.generic.learning_rate=0.1,-1",
        f"hydra.sweep.dir={tmp_path}",
    )
    _, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 2, err
    assert "generator.generic.learning_rate" in err and "job 1" in err
    assert "Traceback" not in err
    good = tmp_path / job_key(["generator.generic.learning_rate=0.1", *ONE_PROCESS])
    assert (good / "metrics.csv").exists() and (good / "done.json").exists()
    assert (tmp_path / "summary.csv").exists()  # the sweep was still collected
    # The failed job is listed with its state, its error and the command that runs it alone.
    jobs = pd.read_csv(tmp_path / "jobs.csv").set_index("job")
    bad = jobs.loc[job_key(["generator.generic.learning_rate=-1", *ONE_PROCESS])]
    assert bad["state"] == "failed" and bad["exit_status"] == 2
    assert "generator.generic.learning_rate" in bad["detail"]
    assert "resume=auto" in bad["command"]


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    recorder = Recorder(tmp_path, fingerprint="f")
    recorder.save_checkpoint({"round": 1, "x": torch.ones(3)})
    good = (tmp_path / "checkpoint.pt").read_bytes()

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OutputError, match=r"checkpoint\.pt: No space left on device"):
        recorder.save_checkpoint({"round": 2, "x": torch.zeros(3)})
    assert (tmp_path / "checkpoint.pt").read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_full_disk_during_a_run_exits_2_with_the_path(tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    real_fsync = os.fsync

    def fills_up(fd):
        calls["n"] += 1
        if calls["n"] > 6:  # after the manifest and the first files
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fills_up)
    assert run_in_process(ONE_PROCESS, tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and str(tmp_path / "run") in err
    assert "Traceback" not in err
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_a_rebuilt_report_joins_the_manifest_and_goes_with_an_overwrite(tmp_path):
    from recourse_sim.report.__main__ import main as rebuild

    run_dir = tmp_path / "run"
    assert run_in_process([*ONE_PROCESS, "report=none"], run_dir) == 0
    assert "report.html" not in json.loads((run_dir / MANIFEST).read_text())["files"]
    assert rebuild([str(run_dir), "--no-figures"]) == 0
    assert "report.html" in json.loads((run_dir / MANIFEST).read_text())["files"]
    assert run_in_process([*ONE_PROCESS, "report=none", "overwrite=true"], run_dir) == 0
    assert not (run_dir / "report.html").exists()


def test_ctrl_c_is_reported_without_a_traceback(tmp_path, monkeypatch, capsys):
    import recourse_sim.run

    def interrupted(cfg, output_dir=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(recourse_sim.run, "run", interrupted)
    assert run_in_process(ONE_PROCESS, tmp_path) == 130
    err = capsys.readouterr().err
    assert "resume=true" in err and "Traceback" not in err
