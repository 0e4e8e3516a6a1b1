"""Maximum mean discrepancy with a Gaussian kernel, its permutation test and subsampling.

The reference study (Altmeyer et al., SaTML 2023, Eq. 5; AlgorithmicRecourseDynamics.jl v0.1.2)
measures shift with the unbiased estimator of the squared MMD (Gretton et al., JMLR 2012, Eq. 3),
``k(x, y) = exp(−‖x − y‖² / (2ℓ²))`` with length-scale ℓ = 0.5 on raw inputs, each sample reduced
independently to at most ``n_samples`` random rows, and a permutation p-value
``#{null ≥ observed} / P``. The estimator is unbiased and so can be negative.

The permutation test computes the pooled kernel matrix once; the statistic of every permutation
is then a pair of quadratic forms in indicator vectors, evaluated for a chunk of permutations at a
time with one matrix product, so memory stays bounded whatever the number of permutations.
"""

from __future__ import annotations

import numpy as np

from recourse_sim.errors import ConfigError

#: Temporary memory one chunk of permutations may use (bytes).
CHUNK_BYTES = 64 * 2**20


def _as_points(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x[:, None] if x.ndim == 1 else x


def gaussian_kernel(x: np.ndarray, y: np.ndarray, length_scale: float = 0.5) -> np.ndarray:
    """Kernel matrix ``exp(−‖x_i − y_j‖² / (2ℓ²))`` between the rows of ``x`` and ``y``."""
    x, y = _as_points(x), _as_points(y)
    sq = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return np.exp(-np.maximum(sq, 0.0) / (2.0 * length_scale**2))


def _unbiased_from_blocks(sum_xx, sum_yy, sum_xy, m: int, n: int, trace_x, trace_y):
    return (
        (sum_xx - trace_x) / (m * (m - 1))
        + (sum_yy - trace_y) / (n * (n - 1))
        - 2.0 * sum_xy / (m * n)
    )


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, length_scale: float = 0.5) -> float:
    """Unbiased estimate of the squared MMD between samples ``x`` and ``y`` (rows = points)."""
    x, y = _as_points(x), _as_points(y)
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError("the unbiased MMD needs at least two points in each sample")
    kxx = gaussian_kernel(x, x, length_scale)
    kyy = gaussian_kernel(y, y, length_scale)
    kxy = gaussian_kernel(x, y, length_scale)
    value = _unbiased_from_blocks(
        kxx.sum(), kyy.sum(), kxy.sum(), m, n, np.trace(kxx), np.trace(kyy)
    )
    return float(value)


def mmd2_linear(x: np.ndarray, y: np.ndarray, length_scale: float = 0.5) -> float:
    """Linear-time unbiased estimate of the squared MMD (Gretton et al. 2012, Lemma 14).

    Averages ``h = k(x₁,x₂) + k(y₁,y₂) − k(x₁,y₂) − k(x₂,y₁)`` over disjoint consecutive pairs, so
    it needs O(n) memory and time; use it for very large populations.
    """
    x, y = _as_points(x), _as_points(y)
    n = min(len(x), len(y)) // 2 * 2
    if n < 2:
        raise ValueError("the linear MMD needs at least two points in each sample")
    x1, x2, y1, y2 = x[0:n:2], x[1:n:2], y[0:n:2], y[1:n:2]

    def k(a, b):
        return np.exp(-((a - b) ** 2).sum(1) / (2.0 * length_scale**2))

    return float(np.mean(k(x1, x2) + k(y1, y2) - k(x1, y2) - k(x2, y1)))


def subsample(
    x: np.ndarray, y: np.ndarray, n_samples: int | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Reduce ``x`` and ``y`` independently to ``min(len(x), n_samples)`` random rows each.

    The reference's rule: a sample with no more rows than that is kept whole; ``None`` disables
    subsampling.
    """
    if n_samples is None:
        return x, y
    n = min(len(x), int(n_samples))
    if len(x) > n:
        x = x[np.sort(rng.choice(len(x), size=n, replace=False))]
    if len(y) > n:
        y = y[np.sort(rng.choice(len(y), size=n, replace=False))]
    return x, y


def permutations(n_total: int, n_permutations: int, rng: np.random.Generator) -> np.ndarray:
    """The random permutations of the pooled sample used by the test, ``(P, n_total)``."""
    return np.argsort(rng.random((n_permutations, n_total)), axis=1)


def mmd_permutation_test(
    x: np.ndarray,
    y: np.ndarray,
    n_permutations: int,
    rng: np.random.Generator,
    length_scale: float = 0.5,
) -> tuple[float, float | None]:
    """Squared MMD and its permutation p-value, ``#{null ≥ observed} / P`` (None if P = 0)."""
    x, y = _as_points(x), _as_points(y)
    m, n = len(x), len(y)
    pooled = np.vstack([x, y])
    kernel = gaussian_kernel(pooled, pooled, length_scale)
    total = m + n
    trace = np.diag(kernel)
    observed = _unbiased_from_blocks(
        kernel[:m, :m].sum(),
        kernel[m:, m:].sum(),
        kernel[:m, m:].sum(),
        m,
        n,
        trace[:m].sum(),
        trace[m:].sum(),
    )
    if n_permutations == 0:
        return float(observed), None
    order = permutations(total, n_permutations, rng)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(total)[None, :].repeat(len(order), 0), axis=1)
    # After permuting, the first m positions are "x": point i is in x iff its rank is < m.
    kernel_sum = kernel.sum()
    trace_sum = trace.sum()
    chunk = max(1, CHUNK_BYTES // (8 * total * 2))
    null = np.empty(n_permutations)
    for start in range(0, n_permutations, chunk):
        a = (ranks[start : start + chunk] < m).astype(np.float64)  # (p, total) indicators
        ka = a @ kernel  # (p, total)
        sum_xx = (ka * a).sum(1)
        row_x = ka.sum(1)  # Σ_{i∈x} Σ_j K_ij = ΣKxx + ΣKxy
        sum_xy = row_x - sum_xx
        sum_yy = kernel_sum - sum_xx - 2.0 * sum_xy
        trace_x = a @ trace
        null[start : start + chunk] = _unbiased_from_blocks(
            sum_xx, sum_yy, sum_xy, m, n, trace_x, trace_sum - trace_x
        )
    p_value = float(np.mean(null >= observed))
    return float(observed), p_value


def check_samples(key: str, n_samples: int | None) -> int | None:
    """Validate an ``n_samples`` setting (``None`` = no subsampling)."""
    if n_samples is None:
        return None
    if isinstance(n_samples, bool) or int(n_samples) < 2:
        raise ConfigError(key, n_samples, "an integer >= 2, or null for no subsampling")
    return int(n_samples)


def check_length_scale(key: str, length_scale: float) -> float:
    """Validate a kernel length-scale."""
    if not float(length_scale) > 0:
        raise ConfigError(key, length_scale, "a positive number")
    return float(length_scale)
