"""Shared fixtures: small data sets built here, so unit tests need no loader."""

from __future__ import annotations

import os

import numpy as np
import pytest

from recourse_sim.data.base import Dataset

# Tests compare exact outputs; keep torch single-threaded like the CLI default.
os.environ.setdefault("OMP_NUM_THREADS", "1")

#: The smoke preset (configs/debug/smoke.yaml) as every CLI test starts from it.
SMOKE = ["debug=smoke", "progress=false"]
#: Smoke plus what the output checks need: two repetitions, p-values.
TINY = [*SMOKE, "simulation.n_repetitions=2", "simulation.n_permutations=10"]


def blobs(n_per_class: int = 60, std: float = 0.1, seed: int = 0, d: int = 2) -> Dataset:
    """Two Gaussian blobs: class 0 around +0.5, class 1 around -0.5 in every coordinate."""
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(0.5, std, (n_per_class, d)), rng.normal(-0.5, std, (n_per_class, d))])
    y = np.r_[np.zeros(n_per_class), np.ones(n_per_class)]
    order = rng.permutation(len(y))
    return Dataset(X[order], y[order], tuple(f"x{i}" for i in range(d)), name="blobs")


@pytest.fixture
def separable() -> Dataset:
    return blobs()
