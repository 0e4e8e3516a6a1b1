"""Data sets: synthetic generators, embedded real-world data and user files.

Every loader is called as ``loader(**config, rng=generator)`` and returns a :class:`Dataset` in
model space. The synthetic makers are marked :func:`generative`: they can draw fresh arrivals
(:func:`draw_fresh`); a table's arrivals are held back from its rows (:func:`hold_back`).
"""

from recourse_sim.data.arrivals import draw_fresh, generative, hold_back, is_generative
from recourse_sim.data.base import MUTABILITY, Dataset, train_test_split
from recourse_sim.data.credit import load_credit, load_german
from recourse_sim.data.external import load_california, load_gmsc
from recourse_sim.data.independent import make_independent_normal
from recourse_sim.data.synthetic import (
    make_circles,
    make_linearly_separable,
    make_moons,
    make_overlapping,
)
from recourse_sim.data.tabular import load_csv, prepare_table

__all__ = [
    "MUTABILITY",
    "Dataset",
    "draw_fresh",
    "generative",
    "hold_back",
    "is_generative",
    "load_california",
    "load_credit",
    "load_csv",
    "load_german",
    "load_gmsc",
    "make_circles",
    "make_independent_normal",
    "make_linearly_separable",
    "make_moons",
    "make_overlapping",
    "prepare_table",
    "train_test_split",
]
