"""Read what a run or a sweep left on disk: result tables, hydra's configuration, overrides.

A *run directory* holds ``metrics.csv`` (and usually ``recourse.csv``, the populations, a decision
grid for two-feature data and ``.hydra/``; ``missing_values.csv`` when a metric value could not be
computed; ``kernel_warnings.csv`` when an MMD's kernel was too narrow to see anything;
``agents.csv`` when the run had time-based dynamics). A *sweep directory* holds
hydra's ``multirun.yaml`` and one run directory per job (named by its result-key overrides).
Nothing here needs the simulation itself: reports are rebuilt from files alone.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from recourse_sim.report import ReportError

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.csv"
RECOURSE_FILE = "recourse.csv"
INITIAL_FILE = "initial_population.csv"
FINAL_FILE = "final_population.csv"
GRID_FILE = "decision_grid.csv"
MISSING_FILE = "missing_values.csv"
AGENTS_FILE = "agents.csv"
KERNEL_FILE = "kernel_warnings.csv"
MANIFEST_FILE = "manifest.json"
MULTIRUN_FILE = "multirun.yaml"


@dataclass
class RunFiles:
    """The files of one run directory, loaded.

    Attributes:
        directory: The run directory.
        metrics: ``metrics.csv`` (long format).
        recourse: ``recourse.csv``, or None when absent.
        initial_population: ``initial_population.csv``, or None.
        final_population: ``final_population.csv``, or None.
        decision_grid: ``decision_grid.csv`` (two-feature data only), or None.
        config: hydra's composed configuration (``.hydra/config.yaml``), or None.
        choices: The config-group options picked (``data: overlapping``, ...), possibly empty.
        overrides: The command-line overrides of the run, possibly empty.
        missing: ``missing_values.csv`` (why metric values are missing), or None when absent.
        agents: ``agents.csv`` (one row per agent and system, written by runs with time-based
            dynamics), or None when absent.
        kernel: ``kernel_warnings.csv`` (evaluations at which an MMD's kernel was degenerate),
            or None when absent.
        data_rows: Rows of the initial data (training plus test), from ``manifest.json``; None
            for runs that did not record it.
    """

    directory: Path
    metrics: pd.DataFrame
    recourse: pd.DataFrame | None = None
    initial_population: pd.DataFrame | None = None
    final_population: pd.DataFrame | None = None
    decision_grid: pd.DataFrame | None = None
    config: DictConfig | None = None
    choices: dict[str, str] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    missing: pd.DataFrame | None = None
    agents: pd.DataFrame | None = None
    kernel: pd.DataFrame | None = None
    data_rows: int | None = None

    @property
    def n_permutations(self) -> int | None:
        """``simulation.n_permutations`` of the run (P of its p-values), or None when unknown."""
        return config_n_permutations(self.config)

    @property
    def p_value_form(self) -> str:
        """``simulation.p_value`` of the run (``reference`` when unknown)."""
        return config_p_value_form(self.config)


def config_p_value_form(config: DictConfig | None) -> str:
    """``simulation.p_value`` of a composed configuration: ``reference`` or ``corrected``."""
    try:
        form = OmegaConf.select(config, "simulation.p_value", default=None) if config else None
    except Exception:  # an unresolvable interpolation: the reference form
        form = None
    return "corrected" if form == "corrected" else "reference"


def config_n_permutations(config: DictConfig | None) -> int | None:
    """``simulation.n_permutations`` of a composed configuration (None: absent or not a count)."""
    if config is None:
        return None
    try:
        value = OmegaConf.select(config, "simulation.n_permutations", default=None)
    except Exception:  # an unresolvable interpolation: P is unknown
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` is a run directory (it has ``metrics.csv``)."""
    return (Path(path) / METRICS_FILE).is_file()


def job_dirs(sweep_dir: str | Path) -> list[Path]:
    """The job directories of a sweep, in job order (numeric names sort as numbers).

    A job directory is a subdirectory with ``metrics.csv`` or hydra's ``.hydra/`` (a job that
    failed before writing results still counts, so reports can say so).
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        return []
    jobs = [
        child
        for child in sweep_dir.iterdir()
        if child.is_dir()
        and not child.name.startswith(".")
        and (is_run_dir(child) or (child / ".hydra" / "overrides.yaml").is_file())
    ]
    return sorted(jobs, key=lambda p: (0, int(p.name), "") if p.name.isdigit() else (1, 0, p.name))


def is_sweep_dir(path: str | Path) -> bool:
    """Whether ``path`` is a sweep directory (``multirun.yaml`` or finished job directories)."""
    path = Path(path)
    if (path / MULTIRUN_FILE).is_file():
        return True
    return any(is_run_dir(job) for job in job_dirs(path))


def _read_csv(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return None


def read_overrides(path: str | Path) -> list[str]:
    """The override strings of a hydra ``overrides.yaml`` (empty when missing or unreadable)."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        overrides = OmegaConf.load(path)
    except Exception as error:  # a report must not fail on a damaged side file
        log.warning("cannot read %s: %s", path, error)
        return []
    return override_strings(overrides)


def override_strings(node: object) -> list[str]:
    """A list node of override strings as text, never resolved (``${hydra.job.num}`` stays)."""
    if not OmegaConf.is_list(node):
        return []
    return [str(item) for item in OmegaConf.to_container(node, resolve=False)]


def _load_yaml(path: Path) -> DictConfig | None:
    if not path.is_file():
        return None
    try:
        node = OmegaConf.load(path)
    except Exception as error:
        log.warning("cannot read %s: %s", path, error)
        return None
    return node if isinstance(node, DictConfig) else None


def read_choices(hydra_dir: str | Path) -> dict[str, str]:
    """The config-group options picked for a run, from ``.hydra/hydra.yaml`` (not hydra's own)."""
    hydra_cfg = _load_yaml(Path(hydra_dir) / "hydra.yaml")
    if hydra_cfg is None:
        return {}
    choices = OmegaConf.select(hydra_cfg, "hydra.runtime.choices", default=None)
    if not isinstance(choices, DictConfig):
        return {}
    return {
        str(group): str(option)
        for group, option in choices.items()
        if not str(group).startswith("hydra/")
    }


def load_metrics(run_dir: str | Path) -> pd.DataFrame | None:
    """The ``metrics.csv`` of a run directory, or None when it is missing or empty."""
    return _read_csv(Path(run_dir) / METRICS_FILE)


def load_missing(run_dir: str | Path) -> pd.DataFrame | None:
    """The ``missing_values.csv`` of a run directory, or None when there is none."""
    return _read_csv(Path(run_dir) / MISSING_FILE)


def load_agents(run_dir: str | Path) -> pd.DataFrame | None:
    """The ``agents.csv`` of a run directory (``group`` read as text), or None when there is none.

    The group labels stay as written (``1`` is not read as the number 1.0), so they match the
    levels of the ``<metric>@<level>`` rows.
    """
    path = Path(run_dir) / AGENTS_FILE
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, dtype={"group": str})
    except pd.errors.EmptyDataError:
        return None


def load_kernel_warnings(run_dir: str | Path) -> pd.DataFrame | None:
    """The ``kernel_warnings.csv`` of a run directory, or None when there is none."""
    return _read_csv(Path(run_dir) / KERNEL_FILE)


def read_data_rows(run_dir: str | Path) -> int | None:
    """Rows of a run's initial data (training plus test), from its manifest (None: unknown)."""
    path = Path(run_dir) / MANIFEST_FILE
    try:
        rows = json.loads(path.read_text(encoding="utf-8")).get("data_rows") or {}
        total = int(rows["training"]) + int(rows["test"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return total if total > 0 else None


def read_config(run_dir: str | Path) -> DictConfig | None:
    """A run's composed configuration (``.hydra/config.yaml``), or None when unreadable."""
    return _load_yaml(Path(run_dir) / ".hydra" / "config.yaml")


def read_n_permutations(run_dir: str | Path) -> int | None:
    """P of a run's p-values, from its ``.hydra/config.yaml`` (None when unknown)."""
    return config_n_permutations(read_config(run_dir))


def load_run(run_dir: str | Path) -> RunFiles:
    """Load every file of a run directory that a report uses.

    Raises:
        ReportError: If the directory has no ``metrics.csv``.
    """
    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        raise ReportError(f"{run_dir} is not a run directory: it has no {METRICS_FILE}")
    metrics = _read_csv(run_dir / METRICS_FILE)
    if metrics is None:
        raise ReportError(f"{run_dir / METRICS_FILE} is empty")
    hydra_dir = run_dir / ".hydra"
    return RunFiles(
        directory=run_dir,
        metrics=metrics,
        recourse=_read_csv(run_dir / RECOURSE_FILE),
        initial_population=_read_csv(run_dir / INITIAL_FILE),
        final_population=_read_csv(run_dir / FINAL_FILE),
        decision_grid=_read_csv(run_dir / GRID_FILE),
        config=_load_yaml(hydra_dir / "config.yaml"),
        choices=read_choices(hydra_dir),
        overrides=read_overrides(hydra_dir / "overrides.yaml"),
        missing=load_missing(run_dir),
        agents=load_agents(run_dir),
        kernel=load_kernel_warnings(run_dir),
        data_rows=read_data_rows(run_dir),
    )


def read_multirun(sweep_dir: str | Path) -> DictConfig | None:
    """Hydra's ``multirun.yaml`` of a sweep (the configuration and the sweep's overrides)."""
    return _load_yaml(Path(sweep_dir) / MULTIRUN_FILE)
