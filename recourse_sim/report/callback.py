"""The hydra callback that writes a sweep's shift report when a multirun ends.

Registered in ``configs/config.yaml`` under ``hydra.callbacks.shift_report``. It reads the
``report`` config group (``enabled``, ``figures``) of the composed configuration, and it never
fails the sweep: any error is logged and the sweep's results stay as they are.
"""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class ShiftReportCallback(Callback):
    """Build ``summary.csv`` and ``shift_report.html`` in the sweep directory after a multirun.

    Args:
        enabled: Default when the configuration has no ``report.enabled``.
        figures: Default when the configuration has no ``report.figures``.
    """

    def __init__(self, enabled: bool = True, figures: bool = True):
        self.enabled = enabled
        self.figures = figures
        self.sweep_dir: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Remember the sweep directory as the jobs see it (``${now:...}`` resolved once)."""
        try:
            self.sweep_dir = str(config.hydra.sweep.dir)
        except Exception as error:  # resolved again at the end
            log.debug("sweep directory not resolvable yet: %s", error)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Build the sweep report; log and carry on if anything goes wrong."""
        try:
            enabled = OmegaConf.select(config, "report.enabled", default=self.enabled)
            if not enabled:
                return
            figures = bool(OmegaConf.select(config, "report.figures", default=self.figures))
            sweep_dir = self.sweep_dir or str(config.hydra.sweep.dir)
            from recourse_sim.report import build_sweep_report

            path = build_sweep_report(sweep_dir, figures=figures)
            log.debug("shift report of the sweep: %s", path)
            print(f"recourse_sim: sweep report written to {path.resolve()}")
        except Exception:
            log.exception("the sweep report could not be built (the sweep's results are intact)")
