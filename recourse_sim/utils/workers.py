"""Worker processes that share a round's independent pieces of work with this process.

The reference loop's costs are long chains of tiny operations: batch-size-1 retraining
(reference-semantics §1.6) and iterative counterfactual searches. Their cost is per-operation
overhead held by the Python interpreter, so threads cannot share it (they queue on the GIL;
measured 2-4x *slower* here) but processes can. Two kinds of work are shared:

* training: the networks of a stack are independent, so each process trains a contiguous slice
  of them (:meth:`WorkerPool.shards`, used by :func:`recourse_sim.models.train_lockstep`);
* independent calls such as the searches of different (model, generator) pairs of a round
  (:meth:`WorkerPool.run_all`).

Results do not depend on the number of processes beyond float rounding: every network keeps its
own rows, Adam state and dropout stream, every search its keyed random draws.

Workers never outlive this process: each one watches its parent and exits as soon as the parent is
gone, even if it was killed outright (``kill -9``), so no orphaned worker (and, once they are
gone, no multiprocessing resource tracker) is left behind. A worker that stops unexpectedly (killed,
or out of memory) raises :class:`WorkerError` with a plain message instead of a traceback of the
process pool.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import torch

from recourse_sim.errors import ConfigError

#: Seconds between a worker's checks that its parent process is still alive.
PARENT_POLL_SECONDS = 0.5

WORKER_STOPPED = (
    "a worker process of recourse_sim stopped unexpectedly (killed, or out of memory); the "
    "results up to the last finished round are kept: resume with resume=true, or run with "
    "processes=1 to use one process"
)


class WorkerError(RuntimeError):
    """A worker process stopped unexpectedly (killed, or out of memory); the pool is unusable.

    The entry point prints its message without a traceback.
    """

    def __init__(self, message: str = WORKER_STOPPED):
        super().__init__(message)


def _initialise_worker(parent: int) -> None:
    # One intra-op thread per process: the processes themselves use the cores.
    torch.set_num_threads(1)
    # Exit with the parent, however it ends: a killed parent cannot shut its workers down, and a
    # worker blocked on its task queue would otherwise live on, reparented. Polling the parent's
    # pid is portable (PR_SET_PDEATHSIG is Linux-only); a daemon thread never delays an exit.
    watcher = threading.Thread(
        target=_exit_with_parent, args=(parent,), name="recourse_sim-parent-watch", daemon=True
    )
    watcher.start()


def _exit_with_parent(parent: int, interval: float = PARENT_POLL_SECONDS) -> None:
    """Poll until this process's parent is no longer ``parent``, then exit at once."""
    while os.getppid() == parent:
        time.sleep(interval)
    os._exit(1)


def _ready() -> bool:
    return True


class WorkerPool:
    """``processes - 1`` worker processes that share work with this one.

    Workers start on :meth:`start` (or the first job) with the ``spawn`` method, which is safe
    whatever threads torch has started here, and stop on :meth:`close` or at the end of a
    ``with`` block (or by themselves within about :data:`PARENT_POLL_SECONDS` if this process
    dies). A pool of one process never starts a worker and runs everything here. A worker that
    stops unexpectedly raises :class:`WorkerError` from :meth:`submit` and :meth:`run_all`.

    Args:
        processes: Processes that share the work, this one included.
    """

    def __init__(self, processes: int = 2):
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
            raise ConfigError("processes", processes, "an integer >= 1")
        self.processes = processes
        self._executor: ProcessPoolExecutor | None = None

    def shards(self, n_items: int) -> list[tuple[int, int]]:
        """Contiguous ``(start, stop)`` slices of ``n_items``, one per process, balanced."""
        return balanced_slices(n_items, self.processes)

    def start(self) -> WorkerPool:
        """Start the workers now (they import torch meanwhile, overlapping other work)."""
        if self.processes > 1 and self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.processes - 1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_initialise_worker,
                initargs=(os.getpid(),),
            )
            self._executor.submit(_ready)
        return self

    def submit(self, fn: Callable, /, *args) -> Future:
        """Run ``fn(*args)`` in a worker process (``fn`` and ``args`` must pickle).

        Raises :class:`WorkerError` if a worker has stopped unexpectedly; the returned future's
        ``result()`` raises ``BrokenProcessPool`` if one stops later (pass it to :meth:`result`
        to get a :class:`WorkerError` instead).
        """
        if self.processes == 1:
            raise RuntimeError("a pool of one process has no workers")
        self.start()
        try:
            return self._executor.submit(fn, *args)
        except BrokenProcessPool as error:
            self._discard_broken()
            raise WorkerError() from error

    def result(self, future: Future):
        """``future.result()``, with a worker that stopped unexpectedly as :class:`WorkerError`."""
        try:
            return future.result()
        except BrokenProcessPool as error:
            self._discard_broken()
            raise WorkerError() from error

    def _discard_broken(self) -> None:
        """Let go of a broken executor (its workers are already gone or being terminated)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def run_all(
        self,
        calls: Sequence[tuple[Callable, tuple]],
        movable: Sequence[bool],
        costs: Sequence[float] | None = None,
    ) -> list:
        """Run independent calls ``fn(*args)``, sharing them with the workers; results in order.

        Calls are spread over the processes, the costliest first, each to the least loaded one
        (without ``costs``: in turn); this process runs its share while the workers run
        theirs. A call that is not ``movable`` (it changes state of this process, such as a
        generator that keeps a model between rounds) always runs here.
        """
        here = self._assign(movable, costs)
        futures = {i: self.submit(fn, *args) for i, (fn, args) in enumerate(calls) if i not in here}
        results = [fn(*args) if i in here else None for i, (fn, args) in enumerate(calls)]
        for i, future in futures.items():
            results[i] = self.result(future)
        return results

    def _assign(self, movable: Sequence[bool], costs: Sequence[float] | None) -> set[int]:
        """Indices of the calls that run in this process (longest-processing-time-first)."""
        n = len(movable)
        if self.processes == 1:
            return set(range(n))
        costs = [1.0] * n if costs is None else list(costs)
        load = [0.0] * self.processes
        here = set()
        for i in sorted(range(n), key=lambda i: (-costs[i], i)):
            slot = 0 if not movable[i] else min(range(self.processes), key=lambda p: (load[p], p))
            load[slot] += costs[i]
            if slot == 0:
                here.add(i)
        return here

    def close(self) -> None:
        """Stop the workers."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> WorkerPool:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self):
        raise TypeError("a WorkerPool belongs to the process that started it")


def balanced_slices(n_items: int, n_parts: int) -> list[tuple[int, int]]:
    """Contiguous, balanced ``(start, stop)`` slices of ``n_items`` (at most ``n_parts``)."""
    parts = max(1, min(n_parts, n_items))
    bounds = [round(i * n_items / parts) for i in range(parts + 1)]
    return list(itertools.pairwise(bounds))
