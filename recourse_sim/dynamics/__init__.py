"""Time-based recourse dynamics: arrivals, decisions, behaviours, delays, retraining schedules.

After Fonseca et al., "Setting the Right Expectations: Algorithmic Recourse Over Time" (EAAMO
2023), SimulatedRecourse.jl and Bell et al. (2024). The reference loop is the default.
"""

from recourse_sim.dynamics.arrivals import ArrivalBatch, arrival_counts, entry_rounds
from recourse_sim.dynamics.behaviours import BEHAVIOURS, ActionContext, Behaviour
from recourse_sim.dynamics.config import DynamicsConfig

__all__ = [
    "BEHAVIOURS",
    "ActionContext",
    "ArrivalBatch",
    "Behaviour",
    "DynamicsConfig",
    "arrival_counts",
    "entry_rounds",
]
