"""Worker processes: they die with their parent, and a dead worker is a clear WorkerError."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from recourse_sim.utils.workers import WORKER_STOPPED, WorkerError, WorkerPool

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")

# A parent that starts a pool, reports its worker's and resource tracker's pids, then waits.
_PARENT = textwrap.dedent(
    """
    import os, time
    from multiprocessing import resource_tracker
    from recourse_sim.utils.workers import WorkerPool

    pool = WorkerPool(2).start()
    worker = pool.submit(os.getpid).result()
    print(worker, resource_tracker._resource_tracker._pid, flush=True)
    time.sleep(600)
    """
)


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a running (not zombie) process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pid reused by another user's process
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        # The state follows the parenthesised command name; Z is a zombie (exited, unreaped).
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return not stat.parent.parent.is_dir()  # no /proc (macOS): kill(0) succeeded


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    """The pids still alive after up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while (alive := [pid for pid in pids if _alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def test_workers_and_resource_tracker_exit_when_the_parent_is_killed():
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    pids: list[int] = []
    try:
        line = parent.stdout.readline()  # blocks until the worker has answered
        assert line, parent.stderr.read()
        pids = [int(pid) for pid in line.split() if pid != "None"]
        assert len(pids) == 2 and all(_alive(pid) for pid in pids)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        # The worker polls its parent every 0.5 s; the tracker exits once no process holds its pipe.
        assert _wait_gone(pids, 10.0) == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for pid in pids:  # never leave an orphan behind, even if the test failed
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_killed_worker_was_a_raw_broken_pool_and_is_now_a_worker_error():
    with WorkerPool(2) as pool:
        worker = pool.submit(os.getpid).result(timeout=60)
        future = pool.submit(time.sleep, 30)
        os.kill(worker, signal.SIGKILL)
        # What the executor itself reports: the raw BrokenProcessPool traceback of before.
        with pytest.raises(BrokenProcessPool):
            future.result(timeout=60)
        # What the pool reports.
        with pytest.raises(WorkerError) as error:
            pool.result(future)
        assert str(error.value) == WORKER_STOPPED
        assert "resume=true" in WORKER_STOPPED and "processes=1" in WORKER_STOPPED


def test_a_worker_killed_between_calls_gives_a_worker_error_from_run_all():
    with WorkerPool(2) as pool:
        worker = pool.submit(os.getpid).result(timeout=60)
        os.kill(worker, signal.SIGKILL)
        assert _wait_gone([worker], 10.0) == []
        with pytest.raises(WorkerError, match="stopped unexpectedly"):
            for _ in range(50):  # until the pool has noticed the death
                pool.run_all([(os.getpid, ()), (os.getpid, ())], movable=[True, True])
                time.sleep(0.1)


def test_a_worker_killed_during_run_all_gives_a_worker_error():
    with WorkerPool(2) as pool:
        worker = pool.submit(os.getpid).result(timeout=60)
        # The first call runs here and kills the worker while it runs the second.
        calls = [(_kill_after, (worker, 0.5)), (time.sleep, (30,))]
        with pytest.raises(WorkerError, match="stopped unexpectedly") as error:
            pool.run_all(calls, movable=[True, True])
        assert isinstance(error.value.__cause__, BrokenProcessPool)


def _kill_after(pid: int, seconds: float) -> None:
    time.sleep(seconds)
    os.kill(pid, signal.SIGKILL)
