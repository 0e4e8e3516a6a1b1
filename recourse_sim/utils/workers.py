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

Workers start only where starting them is safe (:func:`worker_refusal`): never from a process
that is itself a worker of another pool (a joblib/loky or multiprocessing worker, as in a hydra
launcher's job), and not when the workers cannot finish starting because the main module runs a
simulation as it is imported (a script without an ``if __name__ == "__main__":`` guard: ``spawn``
imports the main module again in every worker). In both cases the pool falls back to this process
alone and says so in the log; results are the same, only slower.

Workers never outlive this process: each one watches its parent and exits as soon as the parent is
gone, even if it was killed outright (``kill -9``), so no orphaned worker (and, once they are
gone, no multiprocessing resource tracker) is left behind. A worker that stops unexpectedly (killed,
or out of memory) raises :class:`WorkerError` with a plain message instead of a traceback of the
process pool.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import torch

from recourse_sim.errors import ConfigError

log = logging.getLogger(__name__)

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


#: Exit status of a worker whose start imported a main module that starts a simulation.
REIMPORTED_MAIN = 86


def worker_refusal() -> str | None:
    """Why this process must not start worker processes (None: it may).

    A process that is itself a worker of another pool (multiprocessing, joblib's loky, as in a
    hydra launcher's job) cannot start ``spawn`` workers reliably (loky's start method is
    unknown to them) and already shares the machine's cores with its siblings.
    """
    current = multiprocessing.current_process()
    if multiprocessing.parent_process() is not None or current.daemon:
        return (
            f"this process ({current.name}) is itself a worker of another process pool, such "
            "as a job of hydra's joblib launcher"
        )
    return None


def leave_if_reimported_main() -> None:
    """End a starting worker at once if its import of the main module started a simulation.

    ``spawn`` imports the main module of the parent again in each worker. A script that runs a
    simulation at top level, without an ``if __name__ == "__main__":`` guard, would run it
    again in every worker (and start workers of its own). Called by every entry point
    (:func:`recourse_sim.run.run`): the worker exits quietly, and the parent's pool sees that
    its workers could not start and runs everything in its own process.
    """
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        # Quietly: the parent logs why it runs alone; a traceback here would only confuse.
        sys.stdout.flush()
        os._exit(REIMPORTED_MAIN)


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
        #: The processes asked for; :attr:`processes` is how many share the work.
        self.requested = processes
        self._processes = processes
        self._executor: ProcessPoolExecutor | None = None
        self._warm_up: Future | None = None
        #: Why the pool runs in this process alone although more were asked for (or None).
        self.fallback: str | None = None

    @property
    def processes(self) -> int:
        """Processes that share the work, this one included (1 after a fallback).

        Reading it starts no worker; it waits for started workers to be ready, so that a
        fallback is known before work is divided.
        """
        self._confirm()
        return self._processes

    def shards(self, n_items: int) -> list[tuple[int, int]]:
        """Contiguous ``(start, stop)`` slices of ``n_items``, one per process, balanced."""
        return balanced_slices(n_items, self.processes)

    def start(self) -> WorkerPool:
        """Start the workers now (they import torch meanwhile, overlapping other work).

        Where workers must not start (:func:`worker_refusal`), the pool falls back to this
        process alone and logs why.
        """
        if self._processes > 1 and self._executor is None and not self._refused():
            self._executor = ProcessPoolExecutor(
                max_workers=self._processes - 1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_initialise_worker,
                initargs=(os.getpid(),),
            )
            self._warm_up = self._executor.submit(_ready)
        return self

    def _confirm(self) -> None:
        """Before work is divided: fall back where workers must not start, or could not."""
        if self._processes > 1 and self._executor is None:
            self._refused()
        if self._warm_up is None:
            return
        warm_up, self._warm_up = self._warm_up, None
        try:
            warm_up.result()
        except BrokenProcessPool:
            self._discard_broken()
            main = getattr(sys.modules.get("__main__"), "__file__", None) or "the main module"
            self._fall_back(
                "its worker processes could not start: most likely the main module "
                f"({main}) starts a simulation when it is imported (a script without an "
                '`if __name__ == "__main__":` guard; spawn imports it again in every worker)'
            )

    def _refused(self) -> bool:
        """Fall back to this process if workers must not start here (:func:`worker_refusal`)."""
        refusal = worker_refusal()
        if refusal is not None:
            self._fall_back(refusal)
        return refusal is not None

    def _fall_back(self, reason: str) -> None:
        self.fallback = reason
        log.warning(
            "processes=%d: running in one process, because %s. Results are the same, only slower",
            self._processes,
            reason,
        )
        self._processes = 1

    def submit(self, fn: Callable, /, *args) -> Future:
        """Run ``fn(*args)`` in a worker process (``fn`` and ``args`` must pickle).

        Raises :class:`WorkerError` if a worker has stopped unexpectedly; the returned future's
        ``result()`` raises ``BrokenProcessPool`` if one stops later (pass it to :meth:`result`
        to get a :class:`WorkerError` instead).
        """
        self.start()
        if self.processes == 1:
            # A pool that fell back (or has one process) runs the call here: the caller's
            # division of work stays valid, only nothing runs in parallel.
            future: Future = Future()
            try:
                future.set_result(fn(*args))
            except Exception as error:  # handed over like a worker's exception
                future.set_exception(error)
            return future
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
