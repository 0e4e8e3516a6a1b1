"""Results written as the run goes, plus checkpoints to resume from.

``metrics.csv`` and ``recourse.csv`` are appended after every evaluation and every round, so a crash
loses at most the round in progress. A checkpoint (the whole simulation state; all randomness is
keyed by round, so no generator state is needed) is written atomically after each round; resuming
drops any rows of rounds after the checkpoint and carries on from there, giving the same files as
an uninterrupted run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import torch

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
    initial_file = "initial_population.csv"
    grid_file = "decision_grid.csv"
    checkpoint_file = "checkpoint.pt"

    def __init__(self, directory: str | Path | None, fingerprint: str = ""):
        self.directory = None if directory is None else Path(directory)
        self.fingerprint = fingerprint
        self.metrics_rows: list[dict] = []
        self.recourse_rows: list[dict] = []
        self.tables: dict[str, pd.DataFrame] = {}
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        assert self.directory is not None
        return self.directory / name

    def reset(self) -> None:
        """Start fresh: forget rows and remove files of an earlier run in the same directory."""
        self.metrics_rows.clear()
        self.recourse_rows.clear()
        if self.directory is not None:
            for name in (
                self.metrics_file,
                self.recourse_file,
                self.population_file,
                self.initial_file,
                self.grid_file,
            ):
                self._path(name).unlink(missing_ok=True)

    def _append(self, name: str, rows: list[dict], columns: list[str]) -> None:
        if not rows or self.directory is None:
            return
        path = self._path(name)
        frame = pd.DataFrame(rows, columns=columns)
        frame.to_csv(path, mode="a", header=not path.exists(), index=False)

    def append_metrics(self, rows: list[dict]) -> None:
        """Record metric rows (long format)."""
        self.metrics_rows.extend(rows)
        self._append(self.metrics_file, rows, METRIC_COLUMNS)

    def append_recourse(self, rows: list[dict]) -> None:
        """Record per-round recourse statistics."""
        self.recourse_rows.extend(rows)
        self._append(self.recourse_file, rows, RECOURSE_COLUMNS)

    def write_table(self, name: str, frame: pd.DataFrame) -> None:
        """Write a whole table once (final and initial populations, decision grid)."""
        self.tables[name] = frame
        if self.directory is not None:
            frame.to_csv(self._path(name), index=False)

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
        """Write the state atomically (a crash mid-write leaves the previous checkpoint intact)."""
        if self.directory is None:
            return
        path = self._path(self.checkpoint_file)
        tmp = path.with_suffix(".tmp")
        torch.save({"fingerprint": self.fingerprint, "state": state}, tmp)
        os.replace(tmp, path)

    def load_checkpoint(self) -> dict | None:
        """The saved state, or None when there is nothing to resume from."""
        if self.directory is None or not self._path(self.checkpoint_file).exists():
            return None
        # The simulation moves the state to its own device; CPU tensors load on any machine.
        saved = torch.load(self._path(self.checkpoint_file), map_location="cpu", weights_only=False)
        if saved.get("fingerprint") != self.fingerprint:
            from recourse_sim.errors import ConfigError

            raise ConfigError(
                "resume",
                True,
                f"a directory whose checkpoint was written with the same configuration; "
                f"{self._path(self.checkpoint_file)} comes from a different one",
            )
        return saved["state"]

    def truncate_after(self, round_number: int) -> None:
        """Drop rows of rounds after ``round_number`` (written before a crash)."""
        if self.directory is None:
            return
        for name in (self.metrics_file, self.recourse_file):
            path = self._path(name)
            if path.exists():
                frame = pd.read_csv(path)
                frame[frame["round"] <= round_number].to_csv(path, index=False)
