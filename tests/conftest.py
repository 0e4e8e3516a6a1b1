"""Shared fixtures: small data sets built here, so unit tests need no loader."""

from __future__ import annotations

import math
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


def direct_mmd2(x, y, length_scale=0.5):
    """The unbiased estimator written out as double loops over points."""
    x = np.asarray(x, float).reshape(len(x), -1)
    y = np.asarray(y, float).reshape(len(y), -1)

    def k(a, b):
        return math.exp(-float(((a - b) ** 2).sum()) / (2 * length_scale**2))

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy
