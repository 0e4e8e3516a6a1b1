"""Build plain objects from a composed hydra configuration and run one simulation.

This and ``__main__`` are the only modules that know about hydra; everything they build (data
sets, classifier specifications, generators, metrics, the simulation) is usable from Python
without it.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from recourse_sim.data.base import Dataset, train_test_split
from recourse_sim.errors import ConfigError
from recourse_sim.simulation import Recorder, RecourseSimulation, SimulationConfig
from recourse_sim.utils import RandomStreams, WorkerPool

log = logging.getLogger(__name__)


def build(node: DictConfig, key: str, **kwargs):
    """Instantiate one ``_target_`` node, turning construction errors into :class:`ConfigError`.

    Every instantiation of the project goes through here, so a later ``_target_`` allow-list
    (hydra 1.4) is a one-line change.
    """
    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise ConfigError(
            key,
            OmegaConf.to_container(node) if isinstance(node, DictConfig) else node,
            "a config node with a _target_ (pick an option of the config group)",
        )
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        if isinstance(cause, TypeError):
            raise ConfigError(
                key, OmegaConf.to_container(node), f"valid arguments: {cause}"
            ) from None
        raise


def named_nodes(cfg: DictConfig, group: str) -> dict[str, DictConfig]:
    """The options of a grid group (``model``, ``generator``, ``metrics``) by name."""
    node = cfg.get(group)
    if not isinstance(node, DictConfig) or not node or "_target_" in node:
        raise ConfigError(
            group,
            None if node is None else OmegaConf.to_container(node),
            f"one or more named options of configs/{group}/, e.g. {group}=NAME or {group}=[A,B]",
        )
    return {str(name): value for name, value in node.items()}


def load_data(cfg: DictConfig, streams: RandomStreams) -> tuple[Dataset, Dataset]:
    """Load the data set and split it (stratified) into training and test sets."""
    node = OmegaConf.create(OmegaConf.to_container(cfg.data, resolve=True))
    test_size = node.pop("test_size", 0.2)
    data = build(node, "data", rng=streams.numpy("data"))
    if not isinstance(data, Dataset):
        raise ConfigError("data._target_", cfg.data._target_, "a loader returning a Dataset")
    return train_test_split(data, test_size, streams.numpy("split"))


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


def fingerprint(cfg: DictConfig) -> str:
    """A hash of everything that determines the results (to refuse resuming a different run).

    ``device`` is left out: a checkpoint holds CPU tensors, so a run may resume on another device
    (its later rounds then agree with an uninterrupted run to float tolerance, not bit for bit).
    """
    relevant = {
        k: v
        for k, v in OmegaConf.to_container(cfg, resolve=True).items()
        if k not in ("resume", "progress", "hydra", "processes", "device")
    }
    return hashlib.sha256(repr(sorted(relevant.items())).encode()).hexdigest()


def run(cfg: DictConfig, output_dir: str | Path | None = None) -> RecourseSimulation:
    """Run the simulation described by ``cfg`` and write its outputs to ``output_dir``.

    ``output_dir`` defaults to hydra's run directory.
    """
    if output_dir is None:
        output_dir = HydraConfig.get().runtime.output_dir
    output_dir = Path(output_dir)
    device = resolve_device(cfg.get("device", "cpu"))  # first: CUDA may be missing altogether
    streams = RandomStreams(cfg.seed)
    torch.set_num_threads(int(cfg.get("torch_threads", 1)))
    simulation_config = SimulationConfig(**OmegaConf.to_container(cfg.simulation, resolve=True))
    workers = WorkerPool(cfg.get("processes", 1))
    if device.type != "cpu":
        workers = WorkerPool(1)  # worker processes would copy the GPU's work back to the CPU
    # Build everything first, so that any bad value stops the run before work starts.
    models = {
        name: build(node, f"model.{name}") for name, node in named_nodes(cfg, "model").items()
    }
    generators = {
        name: build(node, f"generator.{name}")
        for name, node in named_nodes(cfg, "generator").items()
    }
    metrics = {
        name: build(node, f"metrics.{name}", name=name)
        for name, node in named_nodes(cfg, "metrics").items()
    }
    train, test = load_data(cfg, streams)
    log.info(
        "data: %d training and %d test rows, %d features; device %s",
        train.n_samples,
        test.n_samples,
        train.n_features,
        device,
    )
    simulation = RecourseSimulation(
        train=train,
        test=test,
        models=models,
        generators=generators,
        metrics=metrics,
        config=simulation_config,
        streams=streams,
        recorder=Recorder(output_dir, fingerprint=fingerprint(cfg)),
        progress=bool(cfg.get("progress", True)),
        workers=workers,
        device=device,
    )
    # Workers start now and import torch while the simulation pre-trains.
    with workers:
        simulation.run(resume=bool(cfg.get("resume", False)))
    report = cfg.get("report")
    if report is not None and report.enabled:
        from recourse_sim.report import build_run_report

        try:
            build_run_report(output_dir, figures=bool(report.figures))
        except Exception:  # a report must never cost a run its results
            log.exception(
                "report failed; rebuild with: python -m recourse_sim.report %s", output_dir
            )
    print(f"recourse_sim: results written to {output_dir.resolve()}")
    return simulation
