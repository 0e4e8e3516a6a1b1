"""The Python API: run simulations from scripts and notebooks.

>>> from recourse_sim import simulate
>>> result = simulate("moons", model=["logistic", "mlp"], n_rounds=5, n_repetitions=2)
>>> result.metrics.head()  # doctest: +SKIP

Every argument of :func:`simulate` becomes an ordinary hydra override (``model=[logistic,mlp]``,
``simulation.n_rounds=5``); the configuration is composed with hydra's compose API from the
configuration tree the command line uses (``pkg://recourse_sim.configs``) and run by the function
the command line runs (:func:`recourse_sim.run.run`). The same settings therefore write
byte-identical CSVs from Python and from ``python -m recourse_sim``, every value is checked the
same way, and a bad one raises the :class:`~recourse_sim.errors.ConfigError` that names the key
(the command line prints it and exits with status 2). :func:`simulate_config` runs a
configuration the caller composed with hydra's compose API.

Scripts need no ``if __name__ == "__main__":`` guard: a worker process that re-imports such a
script leaves as soon as it reaches :func:`simulate`, and the run falls back to one process
(:mod:`recourse_sim.utils.workers`). The default is one process anyway (``processes=1``): a
notebook's own classes and functions cannot reach worker processes, starting them costs seconds,
and ``processes`` never changes the CSVs beyond float rounding (byte-identical for the built-in
options, ``CONVENTIONS.md`` rule 1).

This module imports nothing heavy at import time; torch and hydra are imported on the first call.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import pandas as pd

from recourse_sim.errors import ConfigError
from recourse_sim.keys import override_key

if TYPE_CHECKING:
    from omegaconf import DictConfig

__all__ = ["SimulationResult", "simulate", "simulate_config"]

#: The tables a run writes, by the :class:`SimulationResult` field that holds each.
TABLES = {
    "metrics": "metrics.csv",
    "recourse": "recourse.csv",
    "final_population": "final_population.csv",
    "final_population_original": "final_population_original.csv",
    "initial_population": "initial_population.csv",
    "decision_grid": "decision_grid.csv",
    "missing_values": "missing_values.csv",
    "agents": "agents.csv",
}
#: Prefix of the CSV file that a DataFrame given as ``data`` is written to (in the run directory).
FRAME_FILE_PREFIX = "dataframe-"
#: Option names of the config groups (``logistic``, ``wachter_mad``, ``credit``, ...).
_OPTION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]*")


@dataclass(frozen=True)
class SimulationResult:
    """The tables of one run, read into DataFrames, with its configuration.

    Attributes:
        metrics: ``metrics.csv``: ``repetition, round, model, generator, metric, scope, value,
            p_value`` (a missing value or p-value is NaN; only empty cells are read as missing,
            so a label such as ``none`` or ``null`` stays text).
        recourse: ``recourse.csv``: per round and system, candidates, chosen, success rate,
            cost, ...
        final_population: ``final_population.csv``: every system's final population (model
            space: z-scores and one-hot columns for real-world and CSV data).
        final_population_original: ``final_population_original.csv``: the same in the data's
            original units, with each individual's changes (the cost of recourse).
        initial_population: ``initial_population.csv``: the round-0 population.
        decision_grid: ``decision_grid.csv`` (two-feature data only), else None.
        missing_values: ``missing_values.csv`` (only when a metric could not be computed: the
            reason per row), else None.
        agents: ``agents.csv`` (only with time-based dynamics), else None.
        tables: Every CSV file the run wrote (listed in its manifest), by its path in the run
            directory without ``.csv`` (``metrics``, ``summary_table`` of a report, ...): the
            tables above and any others, read-only.
        config: The composed configuration that ran (read-only).
        directory: The run directory, or None when the run went into a temporary directory,
            which was removed once the tables were read.
    """

    metrics: pd.DataFrame = field(repr=False)
    recourse: pd.DataFrame = field(repr=False)
    final_population: pd.DataFrame = field(repr=False)
    final_population_original: pd.DataFrame = field(repr=False)
    initial_population: pd.DataFrame = field(repr=False)
    decision_grid: pd.DataFrame | None = field(repr=False)
    missing_values: pd.DataFrame | None = field(repr=False)
    agents: pd.DataFrame | None = field(repr=False)
    tables: Mapping[str, pd.DataFrame] = field(repr=False)
    config: DictConfig = field(repr=False)
    directory: Path | None

    def __repr__(self) -> str:
        if not {"model", "generator", "round", "repetition"} <= set(self.metrics.columns):
            return f"SimulationResult(no metrics, directory={self.directory})"
        systems = self.metrics[["model", "generator"]].drop_duplicates()
        pairs = ", ".join(f"{m}/{g}" for m, g in systems.itertuples(index=False))
        rounds = int(self.metrics["round"].max()) if len(self.metrics) else 0
        repetitions = self.metrics["repetition"].nunique()
        return (
            f"SimulationResult(systems=[{pairs}], rounds={rounds}, repetitions={repetitions}, "
            f"metric_rows={len(self.metrics)}, directory={self.directory})"
        )


def simulate(
    data: str | os.PathLike | pd.DataFrame | None = None,
    *,
    target: str | None = None,
    features: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    positive_label: object = None,
    model: str | Sequence[str] | None = None,
    generator: str | Sequence[str] | None = None,
    experiment: str | None = None,
    n_rounds: int | None = None,
    n_repetitions: int | None = None,
    seed: int | None = None,
    overrides: Sequence[str] = (),
    output_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    processes: int | str = 1,
    report: bool = False,
    progress: bool = False,
) -> SimulationResult:
    """Run one simulation (a grid of systems in one job, as one command line does).

    Each argument maps to a hydra override; None leaves the configuration's value (the default
    of ``recourse_sim/configs/config.yaml``, or a preset's, as on the command line). The
    overrides are composed in this order: ``experiment``, ``data`` and its columns, ``model``,
    ``generator``, the numbers, ``processes``, ``progress``, ``report``, ``overwrite``, then
    ``overrides``, so an entry of ``overrides`` wins over a keyword.

    Args:
        data: An option of the ``data`` config group (``"overlapping"``, ``"moons"``,
            ``"credit"``, ...: ``data=NAME``); a path of a CSV file (``data=csv
            data.path=PATH``); or a pandas DataFrame, one row per individual, which is written
            (without its index) to ``dataframe-<hash of its content>.csv`` in the run directory
            and loaded from there by the CSV loader, exactly as ``data=csv`` loads a file on the
            command line (the run's ``.hydra/config.yaml`` then names that file, so the run can
            be repeated from the command line). None: the configuration's default (overlapping
            blobs, or a preset's data).
        target: The label column (``data.target``): required with a DataFrame.
        features: Feature columns (``data.features``); None: every column but the target.
        categorical: Columns to one-hot encode (``data.categorical``); None: the text, category
            and boolean columns of the DataFrame (or, for a file, the text columns).
        positive_label: The label of the favourable outcome (``data.positive_label``); None:
            the option's default (1).
        model: A ``model`` option or a list of them (a grid: ``model=[logistic,mlp]``).
        generator: A ``generator`` option or a list of them (``"none"`` is the no-recourse
            control).
        experiment: A preset of ``recourse_sim/configs/experiment`` (``+experiment=NAME``).
        n_rounds: ``simulation.n_rounds``.
        n_repetitions: ``simulation.n_repetitions``.
        seed: ``seed``, the root of every random stream.
        overrides: More hydra overrides, as typed on the command line
            (``["simulation.n_permutations=0", "generator.generic.cost_weight=0.5"]``).
        output_dir: The run directory (as ``hydra.run.dir``); it keeps every file of the run,
            and the command line's rules apply: a directory holding another run's results is
            refused unless ``overwrite=True`` (which removes only the files that run wrote),
            one live run per directory. None: a new temporary directory, removed once the
            tables are read (the result's ``directory`` is then None).
        overwrite: Replace the results of an earlier run in ``output_dir`` (``overwrite=true``).
        processes: Processes sharing each round's work (an integer, or ``"auto"``: 2 for a
            single run). The default 1 suits notebooks (their own classes and functions cannot
            reach worker processes, and starting workers costs seconds); results do not depend
            on it beyond float rounding.
        report: Write ``report.html`` and ``report.md`` (``report=default``; kept only with an
            ``output_dir``); False: ``report=none``.
        progress: Show the progress bar over rounds (stderr).

    Returns:
        The run's tables as DataFrames, its configuration and directory.

    Raises:
        ConfigError: On any bad value, unknown key or option, bad column or unusable directory,
            before any work starts; its ``key`` names the config key
            (``simulation.n_rounds``, ``data.target``, ``overwrite``, ...).
        OutputError: If a result file could not be written (a full disk).
    """
    _leave_if_reimported_main()
    frame_csv: str | None = None
    data_overrides: list[str] = []
    if isinstance(data, pd.DataFrame):
        if target is None:
            raise ConfigError(
                "target",
                None,
                "the label column of the DataFrame given as data: one of "
                + ", ".join(map(str, data.columns)),
            )
        frame_csv, categorical = _frame_csv(data, target, features, categorical)
    elif isinstance(data, os.PathLike):
        data_overrides = ["data=csv", f"data.path={_literal('data.path', os.fspath(data))}"]
    elif data is not None:
        data_overrides = [f"data={_option('data', data)}"]
    columns = {
        "target": target,
        "features": features,
        "categorical": categorical,
        "positive_label": positive_label,
    }
    data_overrides += [
        f"data.{key}={_literal(f'data.{key}', value)}"
        for key, value in columns.items()
        if value is not None
    ]
    numbers = {"simulation.n_rounds": n_rounds, "simulation.n_repetitions": n_repetitions}
    head = [f"+experiment={_option('experiment', experiment)}"] if experiment is not None else []
    tail = [f"{key}={_literal(key, value)}" for key, value in numbers.items() if value is not None]
    if seed is not None:
        tail.append(f"seed={_literal('seed', seed)}")
    tail += [f"processes={_literal('processes', processes)}"]
    tail += [f"progress={_literal('progress', progress)}", f"report={_report_option(report)}"]
    if overwrite is not False:
        tail.append(f"overwrite={_literal('overwrite', overwrite)}")
    choices = [
        f"{group}={_choices(group, value)}"
        for group, value in (("model", model), ("generator", generator))
        if value is not None
    ]
    extra = _user_overrides(overrides)
    directory, temporary = _directory(output_dir)
    try:
        data_file = None
        if frame_csv is not None:
            digest = hashlib.sha256(frame_csv.encode()).hexdigest()[:16]
            data_file = directory.resolve() / f"{FRAME_FILE_PREFIX}{digest}.csv"
            data_overrides = [
                "data=csv",
                f"data.path={_literal('data.path', str(data_file))}",
                *data_overrides,
            ]
        cfg = _compose([*head, *data_overrides, *choices, *tail, *extra])
        return _run(cfg, directory, temporary, data_file, frame_csv)
    finally:
        if temporary:
            shutil.rmtree(directory, ignore_errors=True)


def simulate_config(
    config: DictConfig, *, output_dir: str | os.PathLike | None = None
) -> SimulationResult:
    """Run a configuration composed with hydra's compose API (the compose-API variant).

    >>> from hydra import compose, initialize_config_module
    >>> with initialize_config_module("recourse_sim.configs", version_base="1.3"):
    ...     cfg = compose("config", overrides=["debug=smoke", "model=[logistic,mlp]"])
    >>> result = simulate_config(cfg)  # doctest: +SKIP

    The configuration runs as it is: its own ``processes`` (``auto`` by default: 2),
    ``progress`` and ``report``. A ``hydra`` node (``compose(..., return_hydra_config=True)``)
    is left out; the run directory is ``output_dir``.

    Args:
        config: The composed configuration (``recourse_sim/configs/config.yaml`` with overrides).
        output_dir: The run directory, as for :func:`simulate`; None: a temporary directory,
            removed once the tables are read.

    Returns:
        The run's tables, as :func:`simulate` returns them.

    Raises:
        ConfigError: On any bad value or unusable directory (naming the key).
    """
    from omegaconf import DictConfig, OmegaConf, open_dict

    _leave_if_reimported_main()
    if not isinstance(config, DictConfig):
        raise ConfigError(
            "config",
            type(config).__name__,
            "a DictConfig composed with hydra's compose API, e.g. compose('config', "
            "overrides=[...]) inside initialize_config_module('recourse_sim.configs')",
        )
    if "hydra" in config:
        config = OmegaConf.create(OmegaConf.to_container(config, resolve=False))
        with open_dict(config):
            del config["hydra"]
    directory, temporary = _directory(output_dir)
    try:
        return _run(config, directory, temporary)
    finally:
        if temporary:
            shutil.rmtree(directory, ignore_errors=True)


# --- arguments as overrides ----------------------------------------------------------------


def _leave_if_reimported_main() -> None:
    """A worker re-importing a script that calls the API at top level leaves here, at once."""
    from recourse_sim.utils.workers import leave_if_reimported_main

    leave_if_reimported_main()


def _literal(key: str, value: object) -> str:
    """``value`` as a hydra override value: quoted text, so no character is read as syntax."""
    if hasattr(value, "item") and not isinstance(value, str | bytes | Sequence):
        value = value.item()  # a numpy scalar (numpy 2 writes np.float64(1.5) as its repr)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, Sequence) and not isinstance(value, bytes):
        return "[" + ",".join(_literal(key, item) for item in value) + "]"
    raise ConfigError(key, value, "text, a number, a boolean, None or a list of them")


def _quote(text: str) -> str:
    """``text`` in single quotes for hydra's override grammar (quotes and backslashes escaped).

    Hydra keeps a backslash as it is unless backslashes precede a quote (or the closing quote):
    those are doubled, and a quote in the text is escaped.
    """
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", text)
    escaped = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped)
    return f"'{escaped}'"


def _option(group: str, value: object) -> str:
    """An option name of a config group, checked before hydra sees it."""
    if not isinstance(value, str) or not _OPTION.fullmatch(value):
        raise ConfigError(group, value, _options_text(group))
    return value


def _choices(group: str, value: object) -> str:
    """One option (``logistic``) or a list (``[logistic,mlp]``) of ``model`` or ``generator``."""
    if isinstance(value, str):
        return _option(group, value)
    if isinstance(value, Sequence) and value and not isinstance(value, bytes):
        return "[" + ",".join(_option(group, item) for item in value) + "]"
    raise ConfigError(
        group,
        value,
        "an option name or a non-empty list of option names; " + (_options_text(group)),
    )


def _options(group: str) -> list[str]:
    """The options of a config group (the YAML files of ``recourse_sim/configs/<group>/``)."""
    root = Path(__file__).resolve().parent / "configs" / group
    return sorted(path.stem for path in root.glob("*.yaml"))


def _options_text(group: str) -> str:
    text = f"an option of recourse_sim/configs/{group}/: " + ", ".join(_options(group))
    if group == "data":
        text += "; or a CSV file as a pathlib.Path, or a pandas DataFrame (with target=...)"
    return text


def _report_option(report: object) -> str:
    if not isinstance(report, bool):
        raise ConfigError("report", report, "True (report=default) or False (report=none)")
    return "default" if report else "none"


def _user_overrides(overrides: object) -> list[str]:
    if isinstance(overrides, str) or not isinstance(overrides, Sequence):
        raise ConfigError(
            "overrides", overrides, "a list of hydra override strings, e.g. ['seed=1']"
        )
    for override in overrides:
        if not isinstance(override, str):
            raise ConfigError("overrides", override, "hydra override strings such as 'seed=1'")
        if override_key(override) in ("hydra.run.dir", "hydra.sweep.dir"):
            raise ConfigError(
                override_key(override), override, "output_dir=PATH (the API's run directory)"
            )
    return list(overrides)


def _frame_csv(
    frame: pd.DataFrame, target: str, features: object, categorical: object
) -> tuple[str, object]:
    """The DataFrame as CSV text (no index), and the categorical columns to name explicitly.

    The CSV loader takes the text columns of the file as categorical; a DataFrame says more
    (category and boolean columns, categories that are numbers), so unless ``categorical`` is
    given, the DataFrame's own non-numeric feature columns are named (None when there are
    none, which is what the loader finds in the file too).
    """
    from recourse_sim.data.groups import is_text

    if isinstance(frame.columns, pd.MultiIndex):
        raise ConfigError("data", "a DataFrame with MultiIndex columns", "one header row")
    names = [str(c) for c in frame.columns]
    repeated = sorted({c for c in names if names.count(c) > 1})
    if repeated:
        raise ConfigError("data", repeated, "a DataFrame whose columns are named once")
    frame = frame.set_axis(names, axis=1)
    if categorical is None and str(target) in names:
        chosen = features if isinstance(features, Sequence) and features else None
        used = [str(c) for c in chosen] if chosen else [c for c in names if c != str(target)]
        text = [c for c in used if c in names and is_text(frame[c])]
        categorical = text or None
    return frame.to_csv(index=False, lineterminator="\n"), categorical


# --- composing and running -------------------------------------------------------------------


def _compose(overrides: list[str]) -> DictConfig:
    """Compose ``config`` with ``overrides`` as the command line would; errors as ConfigError.

    Works inside a caller's own hydra context (an ``initialize`` block or a ``@hydra.main``
    app): hydra's global state is set aside for the composition and restored afterwards.
    """
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from recourse_sim.__main__ import CONFIG_PACKAGE

    outer = GlobalHydra.instance().hydra
    GlobalHydra.instance().hydra = None
    try:
        with initialize_config_module(CONFIG_PACKAGE.removeprefix("pkg://"), version_base="1.3"):
            return compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as error:
        raise _composition_error(error, overrides) from None
    finally:
        GlobalHydra.instance().hydra = outer


def _composition_error(error: Exception, overrides: list[str]) -> ConfigError:
    """Hydra's composition error as a :class:`ConfigError` naming the key of the override."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    message = str(error).split("\nConfig search path", 1)[0].strip()
    summary = " ".join(message.split())
    missing = re.search(r"Could not (?:find|load) '([^']+)/([^'/]+)'", message)
    if missing:
        group, option = missing.groups()
        return ConfigError(group.replace("/", "."), option, _options_text(group))
    parser = OverridesParser.create()
    unknown = re.search(r"Could not override '([^']+)'", message)
    if unknown:
        key = unknown.group(1)
        value = None
        for override in overrides:
            if override_key(override) == key:
                with contextlib.suppress(HydraException):
                    value = parser.parse_override(override).value()
        return ConfigError(
            key, value, f"a key the configuration has; {key} is not one of them ({summary})"
        )
    for override in overrides:
        try:
            parser.parse_override(override)
        except HydraException:
            return ConfigError(
                override_key(override), override, f"valid override syntax ({summary})"
            )
    return ConfigError("overrides", overrides, summary)


def _directory(output_dir: str | os.PathLike | None) -> tuple[Path, bool]:
    """The run directory, and whether it is a temporary one (created here, removed after)."""
    if output_dir is None:
        return Path(tempfile.mkdtemp(prefix="recourse_sim-")), True
    if not isinstance(output_dir, str | os.PathLike) or not os.fspath(output_dir):
        raise ConfigError("output_dir", output_dir, "a directory path, or None (temporary)")
    return Path(output_dir).expanduser(), False


def _run(
    cfg: DictConfig,
    directory: Path,
    temporary: bool,
    data_file: Path | None = None,
    frame_csv: str | None = None,
) -> SimulationResult:
    """Run ``cfg`` into ``directory`` (writing a DataFrame's CSV first) and read the tables."""
    from omegaconf import OmegaConf

    with warnings.catch_warnings():
        # tqdm.auto in a notebook without ipywidgets: it falls back to the text bar and says so.
        warnings.filterwarnings("ignore", message="IProgress not found")
        from recourse_sim.run import run
    from recourse_sim.simulation.rundir import RunDirectory, add_to_manifest

    wrote_data = False
    if data_file is not None:
        RunDirectory(directory).check_usable()  # refuses a file or an unwritable directory
        if not data_file.is_file():
            data_file.write_text(frame_csv, encoding="utf-8")
            wrote_data = True
    before = _manifest(directory)
    try:
        with _single_run(), _quiet_about(temporary):
            run(cfg, directory)
    except BaseException:
        after = _manifest(directory)
        started = after is not None and after != before and after.get("pid") == os.getpid()
        if data_file is not None and not temporary:
            if started:  # the run began (its manifest is this process's): the file is its own
                add_to_manifest(directory, data_file)
            elif wrote_data:  # refused before it began: leave the directory as it was
                with contextlib.suppress(OSError):
                    data_file.unlink()
        raise
    if data_file is not None and not temporary:
        if not data_file.is_file():  # overwrite=true removed the earlier run's copy
            data_file.write_text(frame_csv, encoding="utf-8")
        add_to_manifest(directory, data_file)
    manifest = _manifest(directory) or {}
    listed = [str(f) for f in manifest.get("files", []) if str(f).endswith(".csv")]
    files = [*TABLES.values(), *(f for f in listed if f not in TABLES.values())]
    every = {
        file.removesuffix(".csv"): table
        for file in files
        if not Path(file).name.startswith(FRAME_FILE_PREFIX)
        and (table := _read_table(directory / file)) is not None
    }
    named = {name: every.get(file.removesuffix(".csv")) for name, file in TABLES.items()}
    for name in (
        "metrics",
        "recourse",
        "final_population",
        "final_population_original",
        "initial_population",
    ):
        if named[name] is None:
            named[name] = pd.DataFrame()
    config = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    OmegaConf.set_readonly(config, True)
    return SimulationResult(
        **named,
        tables=MappingProxyType(every),
        config=config,
        directory=None if temporary else directory.resolve(),
    )


def _manifest(directory: Path) -> dict | None:
    """The run directory's manifest as it is now (None: none, or not recourse_sim's)."""
    from recourse_sim.simulation.rundir import RunDirectory

    try:
        return RunDirectory(directory).previous()
    except ConfigError:
        return None


@contextlib.contextmanager
def _single_run() -> Iterator[None]:
    """Run as a single run even inside a caller's hydra job; keep the caller's torch threads.

    Inside a job of the caller's own ``@hydra.main`` app, the run would otherwise take that
    job's hydra settings (a sweep's ``resume=auto`` and launcher) as its own.
    """
    import torch
    from hydra.core.hydra_config import HydraConfig

    instance = HydraConfig.instance()
    outer, instance.cfg = instance.cfg, None
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        instance.cfg = outer
        torch.set_num_threads(threads)


@contextlib.contextmanager
def _quiet_about(temporary: bool) -> Iterator[None]:
    """For a temporary directory, drop the line saying where results were written (removed)."""
    if not temporary:
        yield
        return
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        kept = [
            line
            for line in buffer.getvalue().splitlines(keepends=True)
            if not line.startswith("recourse_sim: results written to")
        ]
        sys.stdout.write("".join(kept))


def _read_table(path: Path) -> pd.DataFrame | None:
    """A run's CSV file; only empty cells are missing (``none`` is a label, not NaN)."""
    if not path.is_file():
        return None
    kinds: Mapping[str, Any] = {"group": str} if path.name == "agents.csv" else {}
    try:
        return pd.read_csv(path, keep_default_na=False, na_values=[""], dtype=kinds)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
