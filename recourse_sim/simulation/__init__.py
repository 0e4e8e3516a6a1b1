"""The round loop: decisions, recourse, retraining and evaluation on a SimPy clock."""

from recourse_sim.simulation.config import SimulationConfig
from recourse_sim.simulation.recorder import Recorder
from recourse_sim.simulation.simulation import RecourseSimulation, System

__all__ = ["Recorder", "RecourseSimulation", "SimulationConfig", "System"]
