"""The hydra callback that collects a sweep when a multirun ends (kept under its earlier name).

``ShiftReportCallback`` is :class:`recourse_sim.sweep.callback.CollectSweep`: configurations
written for earlier versions keep working.
"""

from recourse_sim.sweep.callback import CollectSweep as ShiftReportCallback

__all__ = ["ShiftReportCallback"]
