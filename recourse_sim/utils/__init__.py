"""Small shared utilities: named random streams, worker processes."""

from recourse_sim.utils.rng import RandomStreams
from recourse_sim.utils.workers import WorkerPool

__all__ = ["RandomStreams", "WorkerPool"]
