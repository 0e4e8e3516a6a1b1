"""Results written as the run goes, plus checkpoints to resume from.

``metrics.csv`` and ``recourse.csv`` are appended after every evaluation and every round, so a crash
loses at most the round in progress. A checkpoint (the whole simulation state; all randomness is
keyed by round, so no generator state is needed) is written atomically after each round; resuming
drops any rows of rounds after the checkpoint (and a row torn by the crash) and carries on from
there, giving the same files as an uninterrupted run.

Checkpoints hold tensors and plain containers only and are read with ``weights_only=True``: a
crafted file cannot run code (``CONVENTIONS.md`` rule 6).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from recourse_sim.errors import ConfigError, OutputError
from recourse_sim.metrics.mmd import DEGENERATE_KERNEL
from recourse_sim.simulation.rundir import write_atomically

log = logging.getLogger(__name__)

METRIC_COLUMNS = [
    "repetition",
    "round",
    "model",
    "generator",
    "metric",
    "scope",
    "value",
    "p_value",
]
MISSING_COLUMNS = ["repetition", "round", "model", "generator", "metric", "reason"]
KERNEL_COLUMNS = [
    "repetition",
    "round",
    "model",
    "generator",
    "metric",
    "length_scale",
    "median_kernel",
    "median_length_scale",
    "value_at_median",
]
RECOURSE_COLUMNS = [
    "repetition",
    "round",
    "model",
    "generator",
    "n_candidates",
    "n_chosen",
    "success_rate",
    "converged",
    "cost",
    "redundancy",
    "n_iterations",
]


class Recorder:
    """Appends result rows to CSV files in ``directory`` (or keeps them in memory if None)."""

    metrics_file = "metrics.csv"
    recourse_file = "recourse.csv"
    population_file = "final_population.csv"
    original_file = "final_population_original.csv"  # the final population in original units
    initial_file = "initial_population.csv"
    grid_file = "decision_grid.csv"
    agents_file = "agents.csv"  # time-based dynamics only: one row per agent and system
    checkpoint_file = "checkpoint.pt"
    missing_file = "missing_values.csv"  # written only when a metric could not be computed
    kernel_file = "kernel_warnings.csv"  # written only when an MMD's kernel was degenerate
    #: Files appended round by round; a checkpoint records their sizes for an exact resume.
    _appended_files = (metrics_file, recourse_file, missing_file, kernel_file)

    def __init__(
        self,
        directory: str | Path | None,
        fingerprint: str = "",
        identity: dict | None = None,
        on_write: Callable[[Path], None] | None = None,
    ):
        """Keep rows in memory and, with a ``directory``, in its CSV files.

        Args:
            directory: Where the files go (None: memory only).
            fingerprint: Hash of the result keys, checked on resume.
            identity: Plain data (e.g. the result keys) stored beside it in checkpoints.
            on_write: Called with the path of every file written (the run's manifest).
        """
        self.directory = None if directory is None else Path(directory)
        self.fingerprint = fingerprint
        self.identity = identity or {}
        self.on_write = on_write
        self._loaded: dict | None = None
        self.metrics_rows: list[dict] = []
        self.recourse_rows: list[dict] = []
        self.missing_rows: list[dict] = []
        self._logged_missing: set[tuple] = set()  # (metric, model, generator, reason) warned of
        self.kernel_rows: list[dict] = []
        self._logged_kernel: set[str] = set()  # metrics warned of a degenerate kernel
        self.tables: dict[str, pd.DataFrame] = {}
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        assert self.directory is not None
        return self.directory / name

    def reset(self) -> None:
        """Start fresh: forget rows and remove this recorder's files from an earlier run."""
        self.metrics_rows.clear()
        self.recourse_rows.clear()
        self.missing_rows.clear()
        self.kernel_rows.clear()
        if self.directory is not None:
            for name in (
                self.metrics_file,
                self.recourse_file,
                self.population_file,
                self.original_file,
                self.initial_file,
                self.grid_file,
                self.agents_file,
                self.missing_file,
                self.kernel_file,
            ):
                self._path(name).unlink(missing_ok=True)

    def _written(self, path: Path) -> None:
        if self.on_write is not None:
            self.on_write(path)

    def _append(self, name: str, rows: list[dict], columns: list[str]) -> None:
        if not rows or self.directory is None:
            return
        path = self._path(name)
        frame = pd.DataFrame(rows, columns=columns)
        self._written(path)
        try:
            frame.to_csv(path, mode="a", header=not path.exists(), index=False)
        except OSError as error:
            raise OutputError(path, error) from None

    def append_metrics(self, rows: list[dict]) -> None:
        """Record metric rows (long format)."""
        self.metrics_rows.extend(rows)
        self._append(self.metrics_file, rows, METRIC_COLUMNS)

    def append_recourse(self, rows: list[dict]) -> None:
        """Record per-round recourse statistics."""
        self.recourse_rows.extend(rows)
        self._append(self.recourse_file, rows, RECOURSE_COLUMNS)

    def note_missing(self, rows: list[dict]) -> None:
        """Record why metric values are missing (empty ``value`` in ``metrics.csv``; rule 2).

        Each row names ``repetition, round, model, generator, metric`` and a ``reason``; the reason
        also goes to the log (a warning the first time a metric is missing for a reason, at
        debug level after that, for any system: a non-parametric model has no perturbation in
        any round, no plausibility metric has a value at round 0), and the reports list these
        rows.
        """
        logged = self._logged_missing
        for row in rows:
            key = (row["metric"], row["reason"])
            level = logging.DEBUG if key in logged else logging.WARNING
            logged.add(key)
            first = level == logging.WARNING
            log.log(
                level,
                "%s is missing for %s/%s, repetition %s, round %s: %s"
                + (" (any other system with this reason: see missing_values.csv)" if first else ""),
                row["metric"],
                row["model"],
                row["generator"],
                row["repetition"],
                row["round"],
                row["reason"],
            )
        self.missing_rows.extend(rows)
        self._append(self.missing_file, rows, MISSING_COLUMNS)

    def note_kernel_checks(self, rows: list[dict]) -> None:
        """Record MMD evaluations whose Gaussian kernel was degenerate at their length scale.

        Each row names ``repetition, round, model, generator, metric`` and the
        :class:`~recourse_sim.metrics.base.KernelCheck` fields; the rows go to
        ``kernel_warnings.csv`` (written only when there are any) and to the log: a warning the
        first time per metric, at debug level after that.
        """
        logged = self._logged_kernel
        for row in rows:
            first = row["metric"] not in logged
            logged.add(row["metric"])
            log.log(
                logging.WARNING if first else logging.DEBUG,
                "%s cannot see anything at length scale %g (%s/%s, repetition %s, round %s): the "
                "median off-diagonal kernel value is %.2g < %g. The median heuristic gives "
                "ℓ = %.3g and an estimate of %.3g (metrics.%s.bandwidth=median)"
                + (f"; every evaluation is in {self.kernel_file}" if first else ""),
                row["metric"],
                row["length_scale"],
                row["model"],
                row["generator"],
                row["repetition"],
                row["round"],
                row["median_kernel"],
                DEGENERATE_KERNEL,
                row["median_length_scale"],
                row["value_at_median"],
                row["metric"],
            )
        self.kernel_rows.extend(rows)
        self._append(self.kernel_file, rows, KERNEL_COLUMNS)

    def write_table(self, name: str, frame: pd.DataFrame) -> None:
        """Write a whole table once (final and initial populations, decision grid)."""
        self.tables[name] = frame
        if self.directory is not None:
            path = self._path(name)
            self._written(path)
            try:
                write_atomically(path, frame.to_csv(index=False).encode())
            except OSError as error:
                raise OutputError(path, error) from None

    @property
    def metrics(self) -> pd.DataFrame:
        """All metric rows recorded by this process."""
        return pd.DataFrame(self.metrics_rows, columns=METRIC_COLUMNS)

    @property
    def recourse(self) -> pd.DataFrame:
        """All recourse rows recorded by this process."""
        return pd.DataFrame(self.recourse_rows, columns=RECOURSE_COLUMNS)

    # --- checkpoints -------------------------------------------------------------------------

    def save_checkpoint(self, state: dict) -> None:
        """Write the state atomically (a crash or a full disk leaves the previous one intact)."""
        if self.directory is None:
            return
        path = self._path(self.checkpoint_file)
        sizes = {}
        try:
            for name in self._appended_files:
                table = self._path(name)
                if table.exists():
                    # The rows up to this round are durable before the checkpoint says so.
                    with open(table, "rb+") as handle:
                        os.fsync(handle.fileno())
                    sizes[name] = table.stat().st_size
        except OSError as error:
            raise OutputError(path, error) from None
        buffer = io.BytesIO()
        torch.save(
            {
                "fingerprint": self.fingerprint,
                "identity": self.identity,
                "files": sizes,
                "state": state,
            },
            buffer,
        )
        self._written(path)
        try:
            write_atomically(path, buffer.getvalue())
        except OSError as error:
            raise OutputError(path, error) from None

    def read_checkpoint(self) -> dict | None:
        """The whole saved checkpoint (``fingerprint``, ``identity``, ``state``), or None.

        Loaded with ``weights_only=True``, so only tensors and plain containers are accepted; a
        truncated, corrupt or crafted file is a :class:`ConfigError` on ``resume``.
        """
        if self.directory is None or not self._path(self.checkpoint_file).exists():
            return None
        if self._loaded is None:
            path = self._path(self.checkpoint_file)
            try:
                # CPU tensors load on any machine; the simulation moves them to its device.
                saved = torch.load(path, map_location="cpu", weights_only=True)
            except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as error:
                reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
                raise ConfigError(
                    "resume",
                    True,
                    f"a directory whose {self.checkpoint_file} is a readable recourse_sim "
                    f"checkpoint; {path} could not be loaded safely ({reason}). Start afresh "
                    "with overwrite=true, or choose another hydra.run.dir (hydra.sweep.dir for "
                    "a sweep)",
                ) from None
            if not isinstance(saved, dict) or not isinstance(saved.get("state"), dict):
                raise ConfigError(
                    "resume", True, f"a recourse_sim checkpoint; {path} holds something else"
                )
            self._loaded = saved
        return self._loaded

    def load_checkpoint(self) -> dict | None:
        """The saved state, or None when there is nothing to resume from."""
        saved = self.read_checkpoint()
        if saved is None:
            return None
        if saved.get("fingerprint") != self.fingerprint:
            raise ConfigError(
                "resume",
                True,
                f"a directory whose checkpoint was written with the same result keys; "
                f"{self._path(self.checkpoint_file)} comes from a different configuration",
            )
        return saved["state"]

    def truncate_after(self, round_number: int) -> None:
        """Cut the appended files back to the checkpoint of ``round_number`` (after a crash).

        A checkpoint records each file's size, so the cut is byte-exact whatever the rows hold
        (a torn line, quoted newlines); a file shorter than recorded lost rows (e.g. to a power
        failure) and resuming is refused. Without recorded sizes (a checkpoint of an earlier
        version, or a recorder used directly) rows are filtered by their ``round``.
        """
        if self.directory is None:
            return
        sizes = (self._loaded or {}).get("files")
        try:
            for name in self._appended_files:
                path = self._path(name)
                if isinstance(sizes, dict):
                    self._cut_to_size(path, sizes.get(name))
                elif path.exists():
                    self._filter_rounds(path, round_number)
        except OSError as error:
            raise OutputError(self.directory, error) from None

    def _cut_to_size(self, path: Path, size: object) -> None:
        if size is None:
            path.unlink(missing_ok=True)  # written only after the checkpoint
            return
        if not isinstance(size, int) or not path.exists() or path.stat().st_size < size:
            raise ConfigError(
                "resume",
                True,
                f"result files at least as long as when the checkpoint was written; {path} "
                "lost rows since (start afresh with overwrite=true)",
            )
        os.truncate(path, size)

    def _filter_rounds(self, path: Path, round_number: int) -> None:
        data = path.read_bytes()
        data = data[: data.rfind(b"\n") + 1]  # a line torn by the crash is never a row of blanks
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            message = f"a readable {path.name}; {path} is damaged"
            raise ConfigError("resume", True, message) from None
        records = list(csv.reader(io.StringIO(text, newline="")))
        if not records or "round" not in records[0]:
            raise ConfigError("resume", True, f"a {path.name} with a header; {path} has none")
        header, column = records[0], records[0].index("round")
        kept = [header]
        for fields in records[1:]:
            valid = len(fields) == len(header) and fields[column].lstrip("-").isdigit()
            if valid and int(fields[column]) <= round_number:
                kept.append(fields)
        buffer = io.StringIO(newline="")
        csv.writer(buffer, lineterminator="\n").writerows(kept)
        write_atomically(path, buffer.getvalue().encode("utf-8"))
