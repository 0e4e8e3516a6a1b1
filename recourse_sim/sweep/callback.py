"""Hydra callbacks of a sweep: pin its directory for every job; collect it at the end.

Registered in ``recourse_sim/configs/config.yaml`` under ``hydra.callbacks``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from recourse_sim.sweep.jobs import hydra_quoted

log = logging.getLogger(__name__)


class PinSweepDirectory(Callback):
    """Resolve ``hydra.sweep.dir`` once, in the launching process, and hand it to every job.

    The default sweep directory is named by the sweep's own overrides
    (``${job_key:${hydra.overrides.task}}``); a job composes its configuration again from its
    own overrides, where the same expression would name a different directory. Adding the
    resolved, absolute directory to the sweep's hydra overrides makes every job, on any
    launcher and machine, write below the one sweep directory.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Append ``hydra.sweep.dir=<absolute directory>`` to the sweep's hydra overrides."""
        directory = str(Path(str(config.hydra.sweep.dir)).absolute())
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.sweep.dir = directory
            config.hydra.overrides.hydra.append(f"hydra.sweep.dir={hydra_quoted(directory)}")


class CollectSweep(Callback):
    """After a multirun: collect the sweep (``recourse_sim.sweep.collect``) and say what is left.

    It reads the ``report`` group (``enabled``: the HTML report; ``figures``) of the composed
    configuration; the tables and ``jobs.csv`` are written with ``report=none`` too. It never
    fails the sweep: an error is logged and the jobs' results stay as they are. The outcome is
    kept in :data:`LAST` for the entry point's exit status.
    """

    def __init__(self, enabled: bool = True, figures: bool = True):
        self.enabled = enabled
        self.figures = figures
        self.sweep_dir: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Remember the sweep directory as the jobs see it."""
        try:
            self.sweep_dir = str(config.hydra.sweep.dir)
        except Exception as error:  # resolved again at the end
            log.debug("sweep directory not resolvable yet: %s", error)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Collect the sweep; log and carry on if anything goes wrong."""
        global LAST
        try:
            html = bool(OmegaConf.select(config, "report.enabled", default=self.enabled))
            figures = bool(OmegaConf.select(config, "report.figures", default=self.figures))
            from recourse_sim.sweep.collect import collect

            collection = collect(self.sweep_dir or str(config.hydra.sweep.dir), html, figures)
            LAST = collection
            for line in collection.lines():
                print(f"recourse_sim: {line}")
            if collection.report is not None:
                print(f"recourse_sim: sweep report written to {collection.report.resolve()}")
        except Exception:
            log.exception("the sweep could not be collected (the jobs' results are intact)")


#: The last sweep collected in this process (read by ``recourse_sim.__main__`` for its exit status).
LAST = None
