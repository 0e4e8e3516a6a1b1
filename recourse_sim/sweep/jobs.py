"""The state of every job of a sweep, read from its files alone (nothing is run or changed).

States: ``done`` (its done marker is there), ``running`` (a live process holds its lock),
``unfinished`` (started, then stopped: killed, interrupted, a dead node; ``resume=auto``
continues it), ``failed`` (stopped with an error, named from its log or manifest), ``missing``
(planned by the sweep, never started).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from recourse_sim.keys import job_key
from recourse_sim.report.files import override_strings, read_overrides
from recourse_sim.simulation.rundir import DONE, LOCK, MANIFEST

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

MULTIRUN_FILE = "multirun.yaml"
#: The line a failed job writes into its log (``recourse_sim.__main__.execute``).
FAILURE_LINE = re.compile(r"recourse_sim: job failed \(exit status (\d+)\): (.*)")
STATES = ("done", "running", "unfinished", "failed", "missing")


@dataclass
class JobState:
    """One job of a sweep.

    Attributes:
        name: The job's directory name (its result-key overrides, :func:`job_key`).
        directory: The job's directory (it may not exist: a missing job).
        overrides: The job's overrides, as launched or as planned.
        state: One of :data:`STATES`.
        detail: Why: the error of a failed job, whether an unfinished one has a checkpoint.
        exit_status: The exit status a failed job recorded (None when unknown).
        planned: Whether the sweep of ``multirun.yaml`` plans this job (False: a directory of
            an earlier launch with other overrides, or a plan that cannot be read).
    """

    name: str
    directory: Path
    overrides: list[str] = field(default_factory=list)
    state: str = "missing"
    detail: str = ""
    exit_status: int | None = None
    planned: bool = False

    def command(self, program: str = "python -m recourse_sim") -> str:
        """The command that runs (or continues) this job alone, into its own directory."""
        directory = hydra_quoted(str(self.directory.absolute()))
        words = [*self.overrides, f"hydra.run.dir={directory}", "resume=auto"]
        return " ".join([program, *(shlex.quote(w) for w in words)])


def hydra_quoted(value: str) -> str:
    """``value`` as a quoted string of hydra's override grammar (commas, ``=``, brackets kept).

    In that grammar a backslash is an escape only before a quote or at the end of the string,
    so only those runs of backslashes are doubled; quotes are escaped.
    """
    doubled = re.sub(r"(\\+)(?='|$)", lambda match: match.group(1) * 2, value)
    return "'" + doubled.replace("'", "\\'") + "'"


def _load(path: Path) -> DictConfig | None:
    try:
        node = OmegaConf.load(path)
    except Exception:  # a damaged side file: the job's state is told by its other files
        return None
    return node if isinstance(node, DictConfig) else None


def _overrides(job_dir: Path) -> list[str]:
    return read_overrides(job_dir / ".hydra" / "overrides.yaml") if job_dir.is_dir() else []


def planned_jobs(sweep_dir: str | Path) -> list[list[str]] | None:
    """Every job's overrides as the sweep in ``multirun.yaml`` plans them (None: unknown).

    Known for hydra's basic sweeper (the one every launcher uses unless another sweeper is
    configured) with jobs named by their overrides (the default ``hydra.sweep.subdir``); a grid
    of ``-m`` overrides and ``hydra.sweeper.params`` is expanded as the sweeper does.
    """
    multirun = _load(Path(sweep_dir) / MULTIRUN_FILE)
    if multirun is None:
        return None
    sweeper = str(OmegaConf.select(multirun, "hydra.sweeper._target_", default="") or "")
    if not sweeper.endswith("BasicSweeper"):
        return None
    sweep = OmegaConf.select(multirun, "hydra.sweep", default=None)
    subdir = OmegaConf.to_container(sweep, resolve=False).get("subdir") if sweep else None
    if subdir is not None and "job_key" not in str(subdir):
        return None  # jobs named otherwise (e.g. by number): their directories cannot be told
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    arguments = []
    params = OmegaConf.select(multirun, "hydra.sweeper.params", default=None)
    if isinstance(params, DictConfig):
        arguments += [f"{k}={v}" for k, v in params.items()]
    arguments += override_strings(OmegaConf.select(multirun, "hydra.overrides.task", default=None))
    try:
        parsed = OverridesParser.create().parse_overrides(arguments)
        batches = BasicSweeper.split_arguments(parsed, None)
    except Exception:  # overrides this hydra cannot parse any more: the plan is unknown
        return None
    return [list(job) for batch in batches for job in batch]


def _lock_held(job_dir: Path) -> bool:
    """Whether a live run holds the job's lock (probed without writing anything)."""
    path = job_dir / LOCK
    if fcntl is None or not path.is_file():
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _failure(job_dir: Path) -> tuple[int | None, str] | None:
    """The last failure a job's log records (exit status, message), or None."""
    found = None
    for log_file in sorted(job_dir.glob("*.log")):
        with contextlib.suppress(OSError):
            for line in log_file.read_text(encoding="utf-8", errors="replace").splitlines():
                match = FAILURE_LINE.search(line)
                if match:
                    found = (int(match.group(1)), match.group(2).strip())
    return found


def job_state(job_dir: Path, overrides: list[str] | None = None) -> JobState:
    """The state of the job in ``job_dir`` (see the module docstring)."""
    job = JobState(job_dir.name, job_dir, overrides or _overrides(job_dir))
    if not job_dir.is_dir():
        return job  # missing
    if (job_dir / DONE).is_file():
        job.state = "done"
        return job
    if _lock_held(job_dir):
        job.state, job.detail = "running", "a live process holds its lock"
        return job
    manifest = None
    with contextlib.suppress(OSError, ValueError):
        manifest = json.loads((job_dir / MANIFEST).read_text(encoding="utf-8"))
    status = manifest.get("status") if isinstance(manifest, dict) else None
    failure = _failure(job_dir)
    resumable = (job_dir / "checkpoint.pt").is_file()
    if failure is not None and status in (None, "failed"):
        job.state, job.exit_status, job.detail = "failed", failure[0], failure[1]
    elif status == "failed":
        job.state, job.detail = "failed", "its manifest says failed (see its log)"
    else:
        job.state = "unfinished"
        job.detail = (
            "stopped after a checkpoint: resume=auto continues it"
            if resumable
            else "stopped before its first checkpoint: resume=auto starts it afresh"
        )
    return job


def sweep_jobs(sweep_dir: str | Path) -> list[JobState]:
    """Every job of a sweep: those planned by ``multirun.yaml`` and those found on disk.

    Planned jobs come first in the sweep's order; a directory that no plan names (a job of an
    earlier launch with other overrides) follows.
    """
    sweep_dir = Path(sweep_dir)
    jobs: list[JobState] = []
    seen: set[str] = set()
    for overrides in planned_jobs(sweep_dir) or []:
        name = job_key(overrides)
        if name in seen:
            continue
        seen.add(name)
        job = job_state(sweep_dir / name, overrides)
        job.planned = True
        jobs.append(job)
    if sweep_dir.is_dir():
        for child in sorted(sweep_dir.iterdir()):
            if child.name in seen or not child.is_dir() or child.name.startswith("."):
                continue
            if (
                (child / MANIFEST).is_file()
                or (child / ".hydra").is_dir()
                or any(child.glob("*.log"))
            ):
                jobs.append(job_state(child))
    return jobs
