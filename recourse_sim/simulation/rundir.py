"""The run directory: one live run at a time, a manifest of the files each run wrote.

Two guarantees that a research tool owes its users (``CONVENTIONS.md`` rule 4):

* **No two runs write into one directory at once.** A run holds an exclusive ``flock`` on
  ``.recourse_sim.lock`` for as long as it lives; the operating system releases it when the
  process ends, however it ends, so a ``kill -9``-ed run can be resumed while a live one cannot
  be disturbed. The lock file itself is never removed (removing lock files races).
* **A run never deletes what it did not write.** ``manifest.json`` lists every file a run wrote
  (relative paths), with the run's result keys and its status. Starting afresh over an earlier
  run removes exactly the files of that run's manifest and nothing else, so ``hydra.run.dir=.``
  cannot cost a user their own files.
* **A finished run says so in one file.** ``done.json`` (the fingerprint and result keys of the
  run) is written atomically as the very last step, so its presence alone tells a re-launched
  sweep (``resume=auto``) to skip the job without touching any of its files.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from recourse_sim.errors import ConfigError, OutputError

log = logging.getLogger(__name__)

try:  # POSIX; on other systems the lock degrades to a no-op (documented in the README)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

MANIFEST = "manifest.json"
LOCK = ".recourse_sim.lock"
#: The done marker: written atomically once everything else of the run is written.
DONE = "done.json"
TOOL = "recourse_sim"
#: Files a run may write (besides figures/ and hydra's log): a directory that already holds one
#: that no recourse_sim manifest lists is refused, so a run never overwrites or later deletes a
#: file it did not write.
OUTPUT_NAMES = (
    "metrics.csv",
    "recourse.csv",
    "final_population.csv",
    "initial_population.csv",
    "decision_grid.csv",
    "agents.csv",
    "missing_values.csv",
    "kernel_warnings.csv",
    "final_population_original.csv",
    "checkpoint.pt",
    DONE,
    "report.html",
    "report.md",
    "summary_table.csv",
    "recourse_table.csv",
    "dynamics_table.csv",
    "dynamics_per_round.csv",
    "dynamics_groups_table.csv",
    "dynamics_group_comparison.csv",
    ".hydra/config.yaml",
    ".hydra/hydra.yaml",
    ".hydra/overrides.yaml",
)
DIRECTORY_KEY = "hydra.run.dir"


class RunDirectory:
    """A run's output directory, locked while the run lives, with the manifest of its files.

    Args:
        path: The directory (created on :meth:`acquire` if missing).
        key: The config key that chose the directory, named in error messages.
    """

    def __init__(self, path: str | Path, key: str = DIRECTORY_KEY):
        self.path = Path(path)
        self.key = key
        self._lock_fd: int | None = None
        self._manifest: dict | None = None

    # --- checks and lock ---------------------------------------------------------------------

    def check_usable(self) -> None:
        """Refuse a path that is a file, or a directory that cannot be created or written."""
        path = self.path
        if path.exists() and not path.is_dir():
            raise ConfigError(self.key, str(path), "a directory; this path is a file")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(
                self.key, str(path), f"a directory that can be created ({error.strerror})"
            ) from None
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(
                self.key, str(path), "a writable directory (no write permission here)"
            )

    def acquire(self) -> RunDirectory:
        """Take the directory's lock, or refuse naming the process that holds it."""
        self.check_usable()
        lock_path = self.path / LOCK
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise ConfigError(
                self.key, str(self.path), f"a writable directory ({error.strerror})"
            ) from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                raise ConfigError(
                    self.key,
                    str(self.path),
                    f"a directory no other run is using; the run with pid {holder} is writing "
                    "into it now (wait for it, or choose another hydra.run.dir or hydra.sweep.dir)",
                ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd
        return self

    def release(self) -> None:
        """Give the lock back (the process's end does the same)."""
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._lock_fd, 0)
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def __enter__(self) -> RunDirectory:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # --- the previous run ----------------------------------------------------------------------

    def previous(self) -> dict | None:
        """The manifest an earlier recourse_sim run left here, or None when there is none.

        A ``manifest.json`` that is not this tool's (unreadable, or written by something else)
        is refused: this run would overwrite it, and its list of files means nothing here.
        """
        manifest = self._own_file(MANIFEST)
        if manifest is not None and not isinstance(manifest.get("files"), list):
            manifest["files"] = []
        return manifest

    def done(self) -> dict | None:
        """The done marker of a finished run here (None when there is none).

        Read without the lock: the marker is written atomically, so it is either whole or absent.
        A marker that is not recourse_sim's, or is damaged, is refused like a foreign manifest.
        """
        return self._own_file(DONE)

    def _own_file(self, name: str) -> dict | None:
        """The JSON object of recourse_sim's file ``name`` here; None if absent, else refused."""
        path = self.path / name
        if not path.is_file():
            return None
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            content = None
        if not isinstance(content, dict) or content.get("tool") != TOOL:
            raise ConfigError(
                self.key,
                str(self.path),
                f"a directory whose {name} is recourse_sim's; this one is not (it belongs to "
                "something else, or is damaged): choose another directory",
            )
        return content

    def mark_done(self, **fields) -> None:
        """Write the done marker (listed in the manifest first): the last step of a run."""
        path = self.path / DONE
        self.register(path)
        payload = {"tool": TOOL, "finished": _now(), **fields}
        try:
            write_atomically(path, (json.dumps(payload, indent=2, default=str) + "\n").encode())
        except OSError as error:
            raise OutputError(path, error) from None

    def earlier_results(self) -> list[str]:
        """Files an earlier run listed in its manifest that are still here (and the manifest)."""
        manifest = self.previous()
        if manifest is None:
            return []
        listed = [f for f in manifest["files"] if self._inside(f)]
        return [f for f in listed if (self.path / f).is_file()] + [MANIFEST]

    def unrecorded_outputs(self) -> list[str]:
        """Files a run would write that are here but in no recourse_sim manifest.

        They may be a user's own files or those of a run from before manifests existed; either
        way this run must neither overwrite them nor, later, delete them.
        """
        manifest = self.previous()
        listed = set(manifest["files"]) if manifest else set()
        names = [n for n in OUTPUT_NAMES if (self.path / n).exists() and n not in listed]
        figures = self.path / "figures"
        if figures.is_dir():
            names += [
                str(f.relative_to(self.path))
                for f in sorted(figures.rglob("*"))
                if f.is_file() and str(f.relative_to(self.path)) not in listed
            ]
        return names

    def clear_earlier_results(self, keep: Iterable[str] = ()) -> list[str]:
        """Remove the earlier run's files (those of its manifest only); return what was removed.

        Files in ``keep`` (e.g. a log file this process already writes to) are emptied instead.
        """
        keep = set(keep)
        removed = []
        for name in self.earlier_results():
            target = self.path / name
            if name in keep:
                with contextlib.suppress(OSError), open(target, "r+b") as handle:
                    handle.truncate(0)
                continue
            try:
                target.unlink()
                removed.append(name)
            except FileNotFoundError:
                pass
            except OSError as error:
                raise ConfigError(
                    self.key,
                    str(self.path),
                    f"a directory whose earlier results can be removed; {name}: {error.strerror}",
                ) from None
            # Drop directories the run created (figures/) once they are empty.
            parent = target.parent
            while parent != self.path and self.path in parent.parents:
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent
        return removed

    def _inside(self, name: object) -> bool:
        """Whether a manifest entry names a file inside this directory (never outside it)."""
        if not isinstance(name, str) or not name or os.path.isabs(name):
            return False
        resolved = (self.path / name).resolve()
        root = self.path.resolve()
        return root in resolved.parents and resolved.name not in (LOCK,)

    # --- this run's manifest -----------------------------------------------------------------

    def start_manifest(self, **fields) -> None:
        """Begin this run's manifest (status ``running``), keeping files of a resumed run."""
        previous = self.previous() if fields.get("resumed") else None
        files = list(previous.get("files", [])) if previous else []
        self._manifest = {
            "tool": "recourse_sim",
            "status": "running",
            "pid": os.getpid(),
            "started": _now(),
            **fields,
            "files": files,
        }
        self._write_manifest()

    def register(self, *paths: str | Path) -> None:
        """Add files this run wrote (absolute or relative to the directory) to the manifest."""
        if self._manifest is None:
            return
        files = self._manifest["files"]
        changed = False
        for path in paths:
            relative = os.path.relpath(Path(path).resolve(), self.path.resolve())
            if relative.startswith("..") or relative in files:
                continue
            files.append(relative)
            changed = True
        if changed:
            self._write_manifest()

    def finish(self, status: str = "finished") -> None:
        """Mark the run's end in the manifest (best effort when the run failed)."""
        if self._manifest is None:
            return
        self._manifest["status"] = status
        self._manifest["finished"] = _now()
        try:
            self._write_manifest()
        except OutputError:
            if status == "finished":
                raise
            # The run is failing already (e.g. a full disk): its own error is the one to report.
            log.warning("could not mark the run as %s in %s", status, self.path / MANIFEST)

    def _write_manifest(self) -> None:
        path = self.path / MANIFEST
        payload = json.dumps(self._manifest, indent=2, sort_keys=False, default=str) + "\n"
        try:
            write_atomically(path, payload.encode())
        except OSError as error:
            raise OutputError(path, error) from None


def add_to_manifest(directory: str | Path, *paths: str | Path) -> None:
    """Add files written after a run (e.g. a rebuilt report) to its ``manifest.json``, if any.

    Best effort: a directory without a recourse_sim manifest, or one a live run holds, is left
    as it is.
    """
    run_dir = RunDirectory(directory)
    try:
        run_dir.acquire()
    except ConfigError:
        return  # a live run owns the directory and its manifest
    try:
        manifest = run_dir.previous()  # read under the lock: never a stale copy
        if manifest is not None:
            run_dir._manifest = manifest
            run_dir.register(*paths)
    except (ConfigError, OutputError) as error:
        log.warning("the rebuilt report's files were not added to the manifest: %s", error)
    finally:
        run_dir.release()


def write_atomically(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` through a temporary file, so a reader never sees half of it.

    A full disk or another write error removes the temporary file and raises :class:`OSError`
    naming ``path``; the previous version of the file stays intact.
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OSError(error.errno, error.strerror or str(error)) from None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
