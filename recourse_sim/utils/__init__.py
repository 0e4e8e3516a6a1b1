"""Small shared utilities: named random streams."""

from recourse_sim.utils.rng import RandomStreams

__all__ = ["RandomStreams"]
