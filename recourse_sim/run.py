"""Build plain objects from a composed hydra configuration and run one simulation.

This and ``__main__`` are the only modules that know about hydra; everything they build (data
sets, classifier specifications, generators, metrics, the simulation) is usable from Python
without it.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import inspect
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from recourse_sim import checks
from recourse_sim.data.arrivals import draw_fresh, hold_back, is_generative
from recourse_sim.data.base import Dataset, train_test_split
from recourse_sim.dynamics import ArrivalBatch, DynamicsConfig, arrival_counts, entry_rounds
from recourse_sim.errors import ConfigError, OutputError
from recourse_sim.generators.base import check_pairs
from recourse_sim.keys import PRESENTATION_KEYS, RESULT_KEYS, ROUNDING_KEYS
from recourse_sim.simulation import Recorder, RecourseSimulation, SimulationConfig
from recourse_sim.simulation.rundir import RunDirectory
from recourse_sim.utils import RandomStreams, WorkerPool
from recourse_sim.utils.workers import leave_if_reimported_main

log = logging.getLogger(__name__)


def build(node: DictConfig, key: str, **kwargs):
    """Instantiate one ``_target_`` node, turning construction errors into :class:`ConfigError`.

    Errors name the key in full, as the user typed it: a constructor's ``generator.max_iter``
    becomes ``generator.wachter_mad.max_iter`` when ``key`` is ``generator.wachter_mad``. Every
    instantiation of the project goes through here, so a later ``_target_`` allow-list
    (hydra 1.4) is a one-line change.
    """
    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise ConfigError(
            key,
            OmegaConf.to_container(node) if isinstance(node, DictConfig) else node,
            "a config node with a _target_ (pick an option of the config group)",
        )
    unknown = _unknown_arguments(node, kwargs)
    if unknown:
        name, allowed = unknown
        raise ConfigError(f"{key}.{name}", node[name], f"a known key of {key}: {allowed}")
    try:
        return instantiate(node, **kwargs)
    except ConfigError as error:
        raise complete_key(error, key) from None
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, ConfigError):
            raise complete_key(cause, key) from None
        if isinstance(cause, TypeError):
            raise ConfigError(
                key, OmegaConf.to_container(node), f"valid arguments: {cause}"
            ) from None
        raise


def complete_key(error: ConfigError, path: str) -> ConfigError:
    """``error`` with its key completed to the full path of the node that raised it."""
    group = path.split(".")[0]
    key = error.key
    if key == path or key.startswith(path + ".") or (path == group and key.startswith(group)):
        return error
    if key.startswith(group + "."):
        key = path + key[len(group) :]
    elif key != group:
        key = f"{path}.{key}"
    else:
        key = path
    return ConfigError(key, error.value, error.allowed)


def _unknown_arguments(node: DictConfig, kwargs: dict) -> tuple[str, str] | None:
    """The first key of ``node`` that its target does not accept, with the accepted ones."""
    try:
        target = get_object(node._target_)
    except Exception:  # hydra reports a target it cannot locate itself
        return None
    accepted, open_ended = _parameters(target)
    if open_ended:
        return None
    for name in node:
        if name.startswith("_") or name in kwargs:
            continue
        if name not in accepted:
            return str(name), ", ".join(k for k in accepted if k not in kwargs)
    return None


def _parameters(target) -> tuple[list[str], bool]:
    """Keyword parameters of a callable (following ``**kwargs`` up a class's MRO)."""
    functions = (
        [c.__init__ for c in target.__mro__ if "__init__" in vars(c)]
        if (inspect.isclass(target))
        else [target]
    )
    accepted: list[str] = []
    for function in functions:
        try:
            parameters = inspect.signature(function).parameters.values()
        except (TypeError, ValueError):
            return accepted, True
        forwards = False
        for parameter in parameters:
            if parameter.name == "self" or parameter.kind is parameter.VAR_POSITIONAL:
                continue
            if parameter.kind is parameter.VAR_KEYWORD:
                forwards = True
                continue
            if parameter.name not in accepted:
                accepted.append(parameter.name)
        if not forwards:
            return accepted, False
    return accepted, True


#: The generator label reserved for the no-recourse control (CONVENTIONS.md rule 9).
CONTROL = "none"
_CONTROL_TARGETS = (
    "recourse_sim.generators.NoRecourseGenerator",
    "recourse_sim.generators.none.NoRecourseGenerator",
)
#: Options that were renamed, with what to type instead (``configs/generator/wachter.yaml``).
RENAMED_GENERATORS = {
    "wachter": "`wachter` was renamed: use generator=wachter_mad (Wachter et al. 2018, "
    "MAD-weighted L1 distance; what `wachter` ran before) or generator=generic (the reference "
    "study's 'Wachter' cell: the generic generator, L2 distance)",
}


def _checked_label(node: DictConfig, name: str) -> DictConfig:
    """``node``, unless it is a renamed option's stub or misuses the reserved label ``none``."""
    if isinstance(node, DictConfig) and "_target_" not in node and "renamed_to" in node:
        raise ConfigError("generator", name, RENAMED_GENERATORS.get(name, str(node.renamed_to)))
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    if name == CONTROL and target not in (None, *_CONTROL_TARGETS):
        raise ConfigError(
            f"generator.{name}._target_",
            target,
            f"{_CONTROL_TARGETS[0]}: the label `none` is reserved for the no-recourse control; "
            "give your generator another name",
        )
    return node


#: Where the options of every config group live.
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def working_generators(model_name: str, spec) -> list[str]:
    """The ``generator`` options (``configs/generator``) that can search on model ``spec``.

    Each option is built with its defaults and asked (:meth:`Generator.works_with`); options
    that cannot be built here are left out.
    """
    names = []
    for path in sorted((CONFIG_DIR / "generator").glob("*.yaml")):
        try:
            node = OmegaConf.load(path).get(path.stem)
            generator = build(node, f"generator.{path.stem}") if node is not None else None
        except Exception:  # a stub (renamed option) or an option needing more than defaults
            continue
        if generator is not None and generator.works_with(spec):
            names.append(path.stem)
    return names


def named_nodes(cfg: DictConfig, group: str) -> dict[str, DictConfig]:
    """The options of a grid group (``model``, ``generator``, ``metrics``) by name."""
    node = cfg.get(group)
    if not isinstance(node, DictConfig) or not node or "_target_" in node:
        raise ConfigError(
            group,
            None if node is None else OmegaConf.to_container(node),
            f"one or more named options of recourse_sim/configs/{group}/, e.g. {group}=NAME or "
            f"{group}=[A,B]",
        )
    return {str(name): value for name, value in node.items()}


def load_data(
    cfg: DictConfig, streams: RandomStreams, pool_size: int = 0, per_round: object = None
) -> tuple[Dataset, Dataset, Dataset | None]:
    """Load the data set and split it (stratified) into training and test sets.

    With ``pool_size`` rows wanted for arrivals, a data set that cannot draw fresh points (a
    table) first holds back a random pool of that many rows, which never enters the initial
    population or the test set; the pool is returned third (None otherwise).
    """
    node = _data_node(cfg)
    test_size = checks.real(
        "data.test_size",
        node.pop("test_size", 0.2),
        minimum=0,
        maximum=1,
        low_open=True,
        high_open=True,
    )
    data = build(node, "data", rng=streams.numpy("data"))
    if not isinstance(data, Dataset):
        raise ConfigError("data._target_", cfg.data._target_, "a loader returning a Dataset")
    pool = None
    if pool_size and not is_generative(node.get("_target_")):
        rng = streams.numpy("arrivals:pool")
        data, pool = hold_back(data, pool_size, rng, per_round=per_round)
    train, test = train_test_split(data, test_size, streams.numpy("split"))
    return train, test, pool


def _data_node(cfg: DictConfig) -> DictConfig:
    return OmegaConf.create(OmegaConf.to_container(cfg.data, resolve=True))


def plan_arrivals(
    dynamics: DynamicsConfig,
    simulation: SimulationConfig,
    n_initial: int,
    streams: RandomStreams,
) -> tuple[list, int]:
    """Each repetition's arrival rounds, and the most newcomers any repetition needs."""
    counts = [
        arrival_counts(
            dynamics.arrivals,
            n_initial,
            simulation.n_rounds,
            streams.numpy("arrivals:count", rep),
        )
        for rep in range(simulation.n_repetitions)
    ]
    rounds = [entry_rounds(c) for c in counts]
    return rounds, max((len(r) for r in rounds), default=0)


def draw_arrivals(
    cfg: DictConfig, rounds: list, pool: Dataset | None, like: Dataset, streams: RandomStreams
) -> list[ArrivalBatch]:
    """Each repetition's newcomers: fresh draws of a generating process, or rows of the pool."""
    batches = []
    node = _data_node(cfg)
    node.pop("test_size", None)
    for rep, entry in enumerate(rounds):
        rng = streams.numpy("arrivals", rep)
        if pool is None:
            target = get_object(node["_target_"])
            kwargs = {k: v for k, v in node.items() if k != "_target_"}
            drawn = draw_fresh(target, kwargs, len(entry), rng, like=like)
        else:
            drawn = pool.subset(np.sort(rng.permutation(pool.n_samples)[: len(entry)]))
        groups = getattr(drawn, "groups", None)
        batches.append(
            ArrivalBatch(
                X=np.asarray(drawn.X, dtype=np.float64),
                y=np.asarray(drawn.y, dtype=np.int64),
                rounds=np.asarray(entry, dtype=np.int64),
                groups=np.full(len(entry), -1) if groups is None else np.asarray(groups),
            )
        )
    return batches


def _data_and_arrivals(
    cfg: DictConfig,
    dynamics: DynamicsConfig,
    simulation: SimulationConfig,
    streams: RandomStreams,
) -> tuple[Dataset, Dataset, list[ArrivalBatch] | None]:
    """Training and test sets, and the newcomers of each repetition (None: nobody arrives)."""
    if dynamics.arrivals.per_round == 0:
        train, test, _ = load_data(cfg, streams)
        return train, test, None
    if dynamics.arrivals.kind == "fixed":
        needed = int(dynamics.arrivals.per_round) * simulation.n_rounds
        per_round = dynamics.arrivals.per_round
        train, test, pool = load_data(cfg, streams, pool_size=needed, per_round=per_round)
        n_initial = dynamics.initial_agents or train.n_samples
        rounds, _ = plan_arrivals(dynamics, simulation, n_initial, streams)
    else:  # how many arrive depends on the initial population: count first, then hold back
        probe, _, _ = load_data(cfg, streams)
        n_initial = dynamics.initial_agents or probe.n_samples
        rounds, needed = plan_arrivals(dynamics, simulation, n_initial, streams)
        per_round = dynamics.arrivals.per_round
        train, test, pool = load_data(cfg, streams, pool_size=needed, per_round=per_round)
        if pool is not None:
            # Holding rows back shrank the training split, so relative growth needs fewer
            # newcomers than the pool holds: count again on the actual initial population.
            n_initial = dynamics.initial_agents or train.n_samples
            rounds, _ = plan_arrivals(dynamics, simulation, n_initial, streams)
    return train, test, draw_arrivals(cfg, rounds, pool, train, streams)


DEVICES = "'cpu', 'cuda', 'cuda:N' (N a GPU index) or 'auto' (cuda if available, else cpu)"


def resolve_device(value: object) -> torch.device:
    """The torch device named by the ``device`` key, or :class:`ConfigError` if it is unusable."""
    if not isinstance(value, str):
        raise ConfigError("device", value, DEVICES)
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        raise ConfigError("device", value, DEVICES) from None
    if device.type == "cpu":
        return torch.device("cpu")  # one CPU device, whatever index was given
    if device.type != "cuda":
        raise ConfigError("device", value, DEVICES)
    if not torch.cuda.is_available():
        raise ConfigError(
            "device",
            value,
            "CUDA is not available on this machine (torch.cuda.is_available() is False); "
            "use device=cpu, or device=auto to take a GPU only where there is one",
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ConfigError("device", value, f"a GPU index below {count}, the GPUs on this machine")
    return device


# --- config keys by kind (CONVENTIONS.md rule 5; recourse_sim.keys) ---------------------------
TOP_LEVEL_KEYS = RESULT_KEYS + ROUNDING_KEYS + PRESENTATION_KEYS
REPORT_KEYS = ("enabled", "figures")
#: The value of ``processes`` and ``resume`` that lets the run decide (see the README).
AUTO = "auto"
#: Upper bounds that keep a typo from asking for millions of threads or processes.
MAX_THREADS = 256
MAX_PROCESSES = 256


def plain_config(cfg: DictConfig) -> dict:
    """The configuration as plain data, every interpolation resolved and every value given.

    A required value left out (``???``, e.g. ``data.path`` of ``data=csv``) or an interpolation
    that cannot be resolved is a :class:`ConfigError` naming the key.
    """
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as error:
        key = error.full_key or "config"
        raise ConfigError(key, "???", f"a value: {key} is required ({key}=...)") from None
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or "config"
        message = str(error).splitlines()[0]
        raise ConfigError(key, None, f"a resolvable value ({message})") from None


def check_top_level(values: dict) -> None:
    """Check the keys and values of the top level and of ``report`` (strict types)."""
    for key in values:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(
                str(key), values[key], "a known top-level key: " + ", ".join(TOP_LEVEL_KEYS)
            )
    checks.integer("seed", values.get("seed", 0), minimum=0)
    for key in ("overwrite", "progress"):
        if key in values:
            checks.flag(key, values[key])
    resume = values.get("resume")
    if resume is not None and resume != AUTO and not isinstance(resume, bool):
        raise ConfigError(
            "resume",
            resume,
            "true, false or auto (auto: skip a finished run, resume an unfinished one, start "
            "afresh in an empty directory; the default of a sweep's jobs)",
        )
    checks.integer("torch_threads", values.get("torch_threads", 1), minimum=1, maximum=MAX_THREADS)
    if values.get("processes") != AUTO:
        try:
            checks.integer(
                "processes", values.get("processes", 1), minimum=1, maximum=MAX_PROCESSES
            )
        except ConfigError as error:
            raise ConfigError(
                "processes",
                error.value,
                f"{error.allowed}, or auto (2 for a single run; 1 per job where a launcher runs "
                "several jobs at once on one machine)",
            ) from None
    report = values.get("report")
    if report is not None:
        if not isinstance(report, dict):
            raise ConfigError(
                "report", report, "an option of recourse_sim/configs/report/: default or none"
            )
        for key, value in report.items():
            if key not in REPORT_KEYS:
                raise ConfigError(
                    f"report.{key}", value, "a known key of report: " + ", ".join(REPORT_KEYS)
                )
            checks.flag(f"report.{key}", value)
    if values.get("resume") is True and values.get("overwrite"):
        raise ConfigError(
            "overwrite", True, "false when resume=true (resuming keeps the earlier results)"
        )


def result_keys(values: dict) -> dict:
    """The part of the configuration that determines the results."""
    return {k: values[k] for k in RESULT_KEYS if k in values}


def rounding_keys(values: dict) -> dict:
    """The keys that may change float rounding (compared on resume with a warning)."""
    return {k: values.get(k) for k in ROUNDING_KEYS}


def fingerprint(cfg: DictConfig | dict) -> str:
    """A hash of the result keys (rule 5): resuming with other result keys is refused.

    Rounding keys (``processes``, ``torch_threads``, ``device``) and presentation keys are left
    out: a checkpoint holds CPU tensors, so a run may resume in another process layout or on
    another device (its later rounds then agree with an uninterrupted run to float tolerance).
    """
    values = plain_config(cfg) if isinstance(cfg, DictConfig) else cfg
    canonical = json.dumps(result_keys(values), sort_keys=True, default=repr)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _flatten(values: object, prefix: str = "") -> dict[str, object]:
    if isinstance(values, dict):
        flat: dict[str, object] = {}
        for key, value in values.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): values}


def _differences(before: dict, now: dict) -> list[str]:
    """Keys whose values differ, compared as the fingerprint sees them (1 and 1.0 differ)."""
    old, new = _flatten(before), _flatten(now)

    def canonical(values: dict, key: str) -> str:
        return json.dumps(values[key], sort_keys=True, default=repr) if key in values else ""

    return [
        f"{key} (checkpoint: {old.get(key, '(absent)')!r}, now: {new.get(key, '(absent)')!r})"
        for key in sorted(set(old) | set(new))
        if canonical(old, key) != canonical(new, key)
    ]


def check_resume(recorder: Recorder, values: dict) -> None:
    """Refuse a resume whose result keys differ from the checkpoint's, naming each one.

    A difference in rounding keys is accepted with a warning; presentation keys are ignored.
    """
    saved = recorder.read_checkpoint()
    if saved is None:  # checked before the directory was locked; removed since
        raise ConfigError("resume", True, f"a checkpoint.pt in {recorder.directory}")
    identity = saved.get("identity") or {}
    if not isinstance(identity, dict) or not isinstance(saved["state"].get("round"), int):
        raise ConfigError(
            "resume", True, f"a recourse_sim checkpoint; {recorder.directory} holds a malformed one"
        )
    if "result_keys" not in identity:
        if saved.get("fingerprint") != recorder.fingerprint:
            raise ConfigError(
                "resume",
                True,
                "a checkpoint written with the same result keys; this one was written by an "
                "earlier version of recourse_sim or another configuration (start afresh with "
                "overwrite=true)",
            )
        return
    differences = _differences(identity["result_keys"], result_keys(values))
    if differences:
        raise ConfigError(
            "resume",
            True,
            "the result keys of the run that wrote the checkpoint; these differ: "
            + "; ".join(differences),
        )
    rounding = _differences(identity.get("rounding_keys", {}), rounding_keys(values))
    if rounding:
        message = (
            "resuming with other rounding keys: " + "; ".join(rounding) + ". Results agree with "
            "an uninterrupted run to float rounding; byte identity is not guaranteed"
        )
        log.warning(message)
        print(f"recourse_sim: warning: {message}", file=sys.stderr)


def _log_files(directory: Path) -> list[Path]:
    """Log files that logging handlers of this process write inside ``directory``."""
    files = []
    for handler in logging.getLogger().handlers:
        name = getattr(handler, "baseFilename", None)
        if name and directory.resolve() in Path(name).resolve().parents:
            files.append(Path(name))
    return files


def _hydra_files(cfg: DictConfig, directory: Path) -> list[Path]:
    """Write ``.hydra/`` (config, hydra config, overrides) once the directory is this run's.

    hydra's own copy is switched off (``hydra.output_subdir: null``): it is written before the
    task starts, so a refused run would overwrite the ``.hydra/`` of the run it was refused for.
    """
    target = directory / ".hydra"
    written = [target / "config.yaml"]
    try:
        target.mkdir(exist_ok=True)
        OmegaConf.save(cfg, written[0])
        if HydraConfig.initialized():
            hydra_cfg = HydraConfig.instance().cfg
            OmegaConf.save(hydra_cfg, target / "hydra.yaml")
            OmegaConf.save(hydra_cfg.hydra.overrides.task, target / "overrides.yaml")
            written += [target / "hydra.yaml", target / "overrides.yaml"]
    except OSError as error:
        raise OutputError(target, error) from None
    return written


# --- sweeps: processes=auto and resume=auto ----------------------------------------------------
#: ``_auto_resume``'s verdict for a directory holding this configuration's finished results.
SKIP = "skip"


def in_sweep_job() -> bool:
    """Whether this process runs a job of a hydra sweep (``-m``), whichever launcher started it."""
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def available_cpus() -> int:
    """CPUs this process may use (its affinity mask: a SLURM allocation, a container's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (not Linux)
        return os.cpu_count() or 1


def launcher_processes(launcher: dict | None, cpus: int) -> tuple[int, str]:
    """``processes=auto`` in a job started by ``launcher`` (hydra's launcher config): how many, why.

    Launcher parallelism and ``processes`` multiply: a launcher that runs several jobs at once
    on this machine gets one process per job, so that jobs do not fight over the cores; a
    launcher that runs jobs one at a time, or each on its own allocation (SLURM), gets up to 2.
    """
    target = str((launcher or {}).get("_target_", ""))
    kinds = _class_names(target)
    alone = min(2, cpus)
    if "BasicLauncher" in kinds:
        return alone, f"the basic launcher runs one job at a time; {cpus} CPUs available"
    if "JoblibLauncher" in kinds:
        n_jobs = (launcher or {}).get("n_jobs", -1)
        if n_jobs == 1:
            return alone, f"the joblib launcher runs one job at a time; {cpus} CPUs available"
        return 1, f"the joblib launcher runs several jobs at once (n_jobs={n_jobs})"
    if "SlurmLauncher" in kinds:
        return alone, f"each SLURM job has its own allocation; {cpus} CPUs available to it"
    if "LocalLauncher" in kinds:
        return 1, "the submitit_local launcher runs every job at once on this machine"
    if "RayLauncher" in kinds:
        return 1, "the Ray launcher runs several jobs at once on each machine"
    return 1, f"the launcher {target or '(unknown)'} may run several jobs at once on this machine"


def _class_names(target: str) -> set[str]:
    """The class names of a launcher and its bases (a subclass of a known launcher is known)."""
    names = {target.rsplit(".", 1)[-1]}
    with contextlib.suppress(Exception):  # not importable here: its own name is all there is
        names |= {cls.__name__ for cls in get_object(target).__mro__}
    return names


def resolve_processes(value: object) -> tuple[int, str]:
    """The processes a run uses: ``value``, or for ``auto`` a safe number and the reason."""
    if value != AUTO:
        return int(value), ""
    cpus = available_cpus()
    if not in_sweep_job():
        return min(2, cpus), f"a single run; {cpus} CPUs available"
    launcher = OmegaConf.to_container(HydraConfig.get().launcher, resolve=True)
    return launcher_processes(launcher, cpus)


#: Workers kept for the next job while a sweep runs its jobs one after another in this process.
_kept_pool: WorkerPool | None = None


def _worker_pool(processes: int) -> WorkerPool:
    """The pool of a run: a new one, or the kept one in a sweep's later job.

    The basic launcher runs a sweep's jobs one after another in one process; its jobs share
    their workers instead of each paying for starting them (a few seconds, most of a small
    job). Elsewhere every run has its own pool, closed at its end.
    """
    global _kept_pool
    if not (in_sweep_job() and _runs_jobs_in_turn()):
        return WorkerPool(processes)
    if _kept_pool is not None and _kept_pool.requested != processes:
        _kept_pool.close()
        _kept_pool = None
    if _kept_pool is None:
        _kept_pool = WorkerPool(processes)
        atexit.register(_kept_pool.close)
    elif processes > 1:
        log.info("workers: those of this sweep's previous job (already started)")
    return _kept_pool


def _runs_jobs_in_turn() -> bool:
    """Whether this sweep's jobs run one after another in this process (the basic launcher)."""
    launcher = HydraConfig.get().launcher
    return "BasicLauncher" in _class_names(str(launcher.get("_target_", "")))


def _release(workers: WorkerPool, broken: bool = False) -> None:
    """Close a run's pool, unless the sweep keeps it for its next job (and it is whole)."""
    global _kept_pool
    if workers is _kept_pool and not broken:
        return
    if workers is _kept_pool:
        _kept_pool = None
    workers.close()


def _auto_resume(output_dir: Path, values: dict) -> tuple[bool | str, bool]:
    """``resume=auto``: ``(resume, overwrite)`` for this directory, or ``(SKIP, False)``.

    Finished results of the same result keys: skip. A checkpoint: resume (refused later,
    naming the keys, if its result keys differ). An unfinished run of the same result keys
    without a checkpoint: start afresh over it. Another run's results: refused (status 2).
    An empty or new directory: start afresh.
    """
    directory = RunDirectory(output_dir)
    ours = fingerprint(values)
    if not output_dir.is_dir():
        return False, False
    done = directory.done()
    if done is not None:
        if done.get("fingerprint") == ours:
            return SKIP, False
        _refuse_other_run(output_dir, "finished", done.get("result_keys"), values)
    if (output_dir / Recorder.checkpoint_file).is_file():
        return True, False
    previous = directory.previous()
    if previous is not None:
        if previous.get("fingerprint") != ours:
            _refuse_other_run(output_dir, "unfinished", previous.get("result_keys"), values)
        return False, True  # the same configuration, stopped before its first checkpoint
    return False, False


def _refuse_other_run(output_dir: Path, state: str, keys: object, values: dict) -> None:
    differences = _differences(keys, result_keys(values)) if isinstance(keys, dict) else []
    raise ConfigError(
        "resume",
        AUTO,
        f"a directory holding this configuration's results or none; {output_dir} holds the "
        f"{state} run of other result keys"
        + (f" ({'; '.join(differences[:6])})" if differences else "")
        + ": choose another hydra.sweep.dir (hydra.run.dir), or replace it with overwrite=true",
    )


def run(cfg: DictConfig, output_dir: str | Path | None = None) -> RecourseSimulation | None:
    """Run the simulation described by ``cfg`` and write its outputs to ``output_dir``.

    ``output_dir`` defaults to hydra's run directory. Every value is checked, the directory is
    locked and an earlier run's results are protected before any work starts. Returns None when
    ``resume=auto`` found the finished results of the same configuration there (nothing is run
    or touched).
    """
    leave_if_reimported_main()  # a worker importing a script without a __main__ guard: leave
    values = plain_config(cfg)
    check_top_level(values)
    if output_dir is None:
        output_dir = HydraConfig.get().runtime.output_dir
    output_dir = Path(output_dir)
    device = resolve_device(values.get("device", "cpu"))  # early: CUDA may be missing altogether
    overwrite = values.get("overwrite", False)
    resume = values.get("resume")
    if resume is None:  # unset: auto in a sweep's job, false in a single run
        resume = AUTO if in_sweep_job() else False
    if resume == AUTO:
        if overwrite:  # asked to replace: start afresh (only the earlier run's files go)
            resume = False
        else:
            resume, overwrite = _auto_resume(output_dir, values)
            if resume == SKIP:
                print(
                    f"recourse_sim: skipped: {output_dir.resolve()} holds the finished results "
                    "of this configuration (done.json); nothing was touched"
                )
                return None
    streams = RandomStreams(values["seed"])
    simulation_config = SimulationConfig.from_mapping(values.get("simulation") or {})
    dynamics = DynamicsConfig.from_mapping(values.get("dynamics"))
    processes, why = resolve_processes(values.get("processes", 1))
    values["processes"] = processes  # the manifest and checkpoint record what ran
    # Build everything first, so that any bad value stops the run before work starts.
    models = {
        name: build(node, f"model.{name}") for name, node in named_nodes(cfg, "model").items()
    }
    generators = {
        name: build(_checked_label(node, name), f"generator.{name}")
        for name, node in named_nodes(cfg, "generator").items()
    }
    metrics = {
        name: build(node, f"metrics.{name}", name=name)
        for name, node in named_nodes(cfg, "metrics").items()
    }
    check_pairs(models, generators, working=working_generators)
    for spec in models.values():
        refusal = spec.resume_refusal() if resume else None
        if refusal:
            raise ConfigError("resume", True, f"a run whose model can be rebuilt; {refusal}")
    if resume and not (output_dir / Recorder.checkpoint_file).is_file():
        # Refused before the directory is touched (a mistyped directory is not created).
        raise ConfigError(
            "resume",
            True,
            "a run directory holding the checkpoint.pt of an earlier run; there is none in "
            f"{output_dir} (start without resume=true)",
        )
    torch.set_num_threads(values.get("torch_threads", 1))
    directory = RunDirectory(output_dir)
    with directory:
        recorder = Recorder(
            output_dir,
            fingerprint=fingerprint(values),
            identity={"result_keys": result_keys(values), "rounding_keys": rounding_keys(values)},
            on_write=directory.register,
        )
        earlier = directory.earlier_results()
        unrecorded = [] if resume else directory.unrecorded_outputs()
        if resume:
            check_resume(recorder, values)
        elif unrecorded:
            shown = ", ".join(unrecorded[:6]) + (", ..." if len(unrecorded) > 6 else "")
            raise ConfigError(
                "hydra.run.dir",
                str(output_dir),
                f"a directory where this run's output files do not exist yet; {shown} "
                "are there but in no recourse_sim manifest (your own files, or a run of an older "
                "version): move them, or choose another hydra.run.dir (hydra.sweep.dir for a "
                "sweep). overwrite=true only removes files a manifest lists",
            )
        elif earlier and not overwrite:
            previous = directory.previous() or {}
            state = previous.get("status", "unknown")
            raise ConfigError(
                "overwrite",
                False,
                f"true to replace the results of the earlier run in {output_dir} (status: "
                f"{state}; files: {', '.join(earlier[:6])}{', ...' if len(earlier) > 6 else ''})"
                "; only the files that run wrote are removed. Or resume it with resume=true, or "
                "choose another hydra.run.dir (hydra.sweep.dir for a sweep)",
            )
        started = time.perf_counter()
        train, test, arrivals = _data_and_arrivals(cfg, dynamics, simulation_config, streams)
        data_seconds = time.perf_counter() - started
        if not resume and earlier:
            logs = [str(f.relative_to(output_dir)) for f in _log_files(output_dir)]
            removed = directory.clear_earlier_results(keep=logs)
            log.info("overwrite=true: removed %d files of the earlier run", len(removed))
        directory.start_manifest(
            resumed=bool(resume),
            fingerprint=recorder.fingerprint,
            result_keys=result_keys(values),
            rounding_keys=rounding_keys(values),
            # N of the reference-form decisiveness, which reports normalise by ½√N.
            data_rows={"training": train.n_samples, "test": test.n_samples},
        )
        directory.register(*_log_files(output_dir), *_hydra_files(cfg, output_dir))
        if why:
            log.info("processes=auto: %d (%s)", processes, why)
        log.info(
            "data: %d training and %d test rows, %d features; device %s",
            train.n_samples,
            test.n_samples,
            train.n_features,
            device,
        )
        workers = _worker_pool(processes if device.type == "cpu" else 1)
        simulation = RecourseSimulation(
            train=train,
            test=test,
            models=models,
            generators=generators,
            metrics=metrics,
            config=simulation_config,
            streams=streams,
            recorder=recorder,
            progress=values.get("progress", True),
            workers=workers,
            device=device,
            dynamics=dynamics,
            arrivals=arrivals,
        )
        try:
            # Workers start now and import torch while the simulation pre-trains.
            workers.start()
            simulation.run(resume=bool(resume))
        except KeyboardInterrupt:
            _release(workers, broken=True)
            directory.finish("interrupted")
            raise
        except BaseException:
            _release(workers, broken=True)
            directory.finish("failed")
            raise
        _release(workers)
        report = values.get("report") or {}
        html = None
        report_seconds = None
        if report.get("enabled", False):
            from recourse_sim.report import build_run_report

            figures = bool(report.get("figures", True))
            log.info("building the report%s ...", " and its figures" if figures else "")
            started = time.perf_counter()
            try:
                html = build_run_report(output_dir, figures=figures, register=directory.register)
            except Exception:  # a report must never cost a run its results
                log.exception(
                    "report failed; rebuild with: python -m recourse_sim.report %s", output_dir
                )
                # What it wrote before failing is this run's too (an overwrite removes it).
                directory.register(*[output_dir / f for f in directory.unrecorded_outputs()])
            report_seconds = time.perf_counter() - started
        directory.finish()
        directory.mark_done(fingerprint=recorder.fingerprint, result_keys=result_keys(values))
        log.info("timings: %s", _timings(data_seconds, simulation.timings, report_seconds))
    print(f"recourse_sim: results written to {output_dir.resolve()}")
    if html is not None:
        _print_headline(html)
    return simulation


def _timings(data_seconds: float, timings, report_seconds: float | None) -> str:
    """The phases of a run in seconds, for its log."""
    seconds = dict(timings.seconds)
    parts = [f"data {data_seconds:.1f} s"]
    if "pre-training" in seconds:
        parts.append(f"pre-training {seconds['pre-training']:.1f} s")
    if "rounds" in seconds:
        evaluation = seconds.get("evaluation", 0.0)
        parts.append(f"rounds {seconds['rounds']:.1f} s (of which evaluation {evaluation:.1f} s)")
    if "tables" in seconds:
        parts.append(f"tables {seconds['tables']:.1f} s")
    if report_seconds is not None:
        parts.append(f"report {report_seconds:.1f} s")
    return ", ".join(parts)


def _print_headline(html: Path, bullets: int = 3) -> None:
    """The report to open and its first sentences, on the terminal."""
    from recourse_sim.report import headline

    print(f"recourse_sim: report: {html.resolve()}")
    try:
        sentences = headline(html.parent, bullets)
    except Exception:  # the sentences are a courtesy; the report itself was written
        log.debug("no headline", exc_info=True)
        return
    for sentence in sentences:
        print(f"  - {sentence}")
