"""Maximum mean discrepancy with a Gaussian kernel: estimators, subsampling, permutation test.

Definitions of the reference study (Altmeyer et al., SaTML 2023, §IV-B and Eq. 5;
AlgorithmicRecourseDynamics.jl v0.1.2, ``src/evaluation/mmd.jl``):

* kernel ``k(x, y) = exp(−‖x − y‖² / (2ℓ²))`` on raw inputs, ℓ = 0.5 (KernelFunctions'
  ``with_lengthscale(GaussianKernel(), 0.5)``, i.e. ``exp(−2‖x − y‖²)``);
* the unbiased estimator of the squared MMD (Gretton et al., JMLR 2012, Eq. 3), which can be
  negative and is not clipped;
* subsampling: ``n = min(len(x), n_samples)``, and each sample independently reduced to ``n``
  random rows (without replacement) when it has more;
* permutation p-value ``#{null ≥ observed} / P`` over ``P`` random splits of the pooled sample
  (no +1 correction; it is exactly 0 when no split reaches the observed value). The corrected
  form ``(#{null ≥ observed} + 1) / (P + 1)`` (Phipson & Smyth 2010), never 0, is a switch
  (``simulation.p_value=corrected``).

A sample holding NaN or inf has no estimate: the permutation test then returns NaN and no p-value
(comparing NaN with the null would count no exceedance and give a p-value of 0).

The linear-time estimator is Gretton et al. 2012, Lemma 14.

ℓ may instead follow the median heuristic (Gretton et al. 2012): the median distance between the
points of the pooled sample, computed without random numbers (:func:`median_heuristic`). Whatever
ℓ, :func:`choose_bandwidth` gives the median off-diagonal kernel value, which shows a test that is
blind at its ℓ (below :data:`DEGENERATE_KERNEL`).

The permutation test never builds a permuted sample: the statistic of a split is a set of block
sums of the pooled kernel matrix, and for a 0/1 assignment vector ``a`` of the ``x`` side the
``x``-block sum is the quadratic form ``aᵀKa``. A chunk of permutations is one matrix product
``A @ K``, so the kernel is computed once and memory is bounded by :data:`KERNEL_BYTES` and
:data:`CHUNK_BYTES` whatever ``P`` and the sample sizes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

#: The forms of the permutation p-value: ``b / P`` (reference) and ``(b + 1) / (P + 1)``.
P_VALUE_FORMS = ("reference", "corrected")

#: Memory for the pooled kernel matrix (bytes). Up to about 5,800 pooled points the whole matrix
#: fits and is computed once; larger samples are processed in column blocks, each computed once.
KERNEL_BYTES = 256 * 2**20

#: Memory for the temporaries of one chunk of permutations (bytes).
CHUNK_BYTES = 64 * 2**20


def _as_points(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        return x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{name} must be 1-D (one feature) or 2-D (rows = points), not {x.shape}")
    return x


def _as_samples(x: np.ndarray, y: np.ndarray, minimum: int = 1) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_points(x, "x"), _as_points(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x has {x.shape[1]} features but y has {y.shape[1]}")
    if len(x) < minimum or len(y) < minimum:
        raise ValueError(
            f"this MMD estimate needs at least {minimum} points in each sample, "
            f"got {len(x)} and {len(y)}"
        )
    return x, y


def gaussian_kernel(x: np.ndarray, y: np.ndarray, length_scale: float = 0.5) -> np.ndarray:
    """Kernel matrix between the points of two samples.

    Args:
        x: ``(m, d)`` points, or ``(m,)`` values of a single feature.
        y: ``(n, d)`` points, or ``(n,)`` values.
        length_scale: ℓ in ``exp(−‖x − y‖² / (2ℓ²))``.

    Returns:
        The ``(m, n)`` matrix ``k(x_i, y_j)``.
    """
    x, y = _as_samples(x, y, minimum=0)
    # Centring limits the cancellation in ‖x‖² + ‖y‖² − 2x·y for points far from the origin.
    centre = x.mean(0) if len(x) else 0.0
    x, y = x - centre, y - centre
    sq = x @ y.T
    sq *= -2.0
    sq += (x * x).sum(1)[:, None]
    sq += (y * y).sum(1)[None, :]
    np.maximum(sq, 0.0, out=sq)
    sq *= -0.5 / length_scale**2
    return np.exp(sq, out=sq)


def _kernel_blocks(
    z: np.ndarray, length_scale: float, width: int
) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield ``(columns, K[:, columns])`` of the pooled kernel matrix, ``width`` columns each."""
    z = z - z.mean(0)
    norms = (z * z).sum(1)
    for start in range(0, len(z), width):
        cols = slice(start, min(start + width, len(z)))
        sq = z @ z[cols].T
        sq *= -2.0
        sq += norms[:, None]
        sq += norms[None, cols]
        np.maximum(sq, 0.0, out=sq)
        # A point's distance to itself is exactly 0, so the traces are exactly m and n; rounding
        # in the expansion above would otherwise leak into the diagonal correction.
        rows = np.arange(cols.start, cols.stop)
        sq[rows, rows - cols.start] = 0.0
        sq *= -0.5 / length_scale**2
        yield cols, np.exp(sq, out=sq)
        del sq  # so that only one block is alive while the next one is computed


def _block_width(total: int) -> int:
    return int(max(1, min(total, KERNEL_BYTES // (8 * total))))


def _chunk_size(total: int, width: int) -> int:
    # Per permutation: its index row (int64), its assignment row and its row of A @ K_block.
    return int(max(1, CHUNK_BYTES // (8 * (2 * total + width))))


def _split_sums(block: np.ndarray, cols: slice, m: int) -> np.ndarray:
    """``(Σ K_xx, Σ K_yy, Σ K_xy)`` over one column block, the first ``m`` rows being ``x``."""
    from_x, from_y = block[:m].sum(0), block[m:].sum(0)
    k = int(np.clip(m - cols.start, 0, block.shape[1]))  # block columns that belong to x
    return np.array([from_x[:k].sum(), from_y[k:].sum(), from_x[k:].sum()])


def _mmd2_from_sums(sum_xx, sum_yy, sum_xy, m: int, n: int):
    # The kernel's diagonal is exactly one, so tr K_xx = m and tr K_yy = n.
    return (sum_xx - m) / (m * (m - 1)) + (sum_yy - n) / (n * (n - 1)) - 2.0 * sum_xy / (m * n)


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, length_scale: float = 0.5) -> float:
    """Unbiased estimate of the squared MMD (Gretton et al. 2012, Eq. 3; paper Eq. 5).

    ``(ΣK_xx − tr K_xx)/(m² − m) + (ΣK_yy − tr K_yy)/(n² − n) − 2ΣK_xy/(mn)``; it can be negative.

    Args:
        x: ``(m, d)`` points (or ``(m,)`` values of one feature), ``m >= 2``.
        y: ``(n, d)`` points (or ``(n,)`` values), ``n >= 2``.
        length_scale: ℓ of the Gaussian kernel.

    Returns:
        The estimate as a float.
    """
    value, _ = mmd_permutation_test(x, y, 0, None, length_scale)
    return value


def mmd2_linear(x: np.ndarray, y: np.ndarray, length_scale: float = 0.5) -> float:
    """Linear-time unbiased estimate of the squared MMD (Gretton et al. 2012, Lemma 14).

    The mean over disjoint consecutive pairs ``i`` of
    ``k(x₂ᵢ₋₁, x₂ᵢ) + k(y₂ᵢ₋₁, y₂ᵢ) − k(x₂ᵢ₋₁, y₂ᵢ) − k(x₂ᵢ, y₂ᵢ₋₁)``, using the first
    ``2⌊min(m, n)/2⌋`` rows of each sample: O(n) time and memory, for very large populations, at
    the price of a much larger variance than :func:`mmd2_unbiased`. Pairs are taken in row order,
    so rows must be in random order (shuffle them first if they are not).

    Args:
        x: ``(m, d)`` points (or ``(m,)`` values), ``m >= 2``.
        y: ``(n, d)`` points (or ``(n,)`` values), ``n >= 2``.
        length_scale: ℓ of the Gaussian kernel.

    Returns:
        The estimate as a float.
    """
    x, y = _as_samples(x, y, minimum=2)
    n = min(len(x), len(y)) // 2 * 2
    x1, x2, y1, y2 = x[0:n:2], x[1:n:2], y[0:n:2], y[1:n:2]
    scale = -0.5 / length_scale**2

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.exp(scale * ((a - b) ** 2).sum(1))

    return float(np.mean(k(x1, x2) + k(y1, y2) - k(x1, y2) - k(x2, y1)))


def subsample(
    x: np.ndarray, y: np.ndarray, n_samples: int | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Reduce two samples independently to ``min(len(x), n_samples)`` random rows each.

    The reference's rule (``mmd(x, y, n)``): a sample with no more rows than that is kept whole
    and in order; larger ones lose rows at random, without replacement.

    Args:
        x: The first sample (rows = points).
        y: The second sample.
        n_samples: The cap on the sample size; ``None`` keeps both samples whole.
        rng: The source of the random rows.

    Returns:
        The (possibly) reduced ``x`` and ``y``.
    """
    if n_samples is None:
        return x, y
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1 or None, got {n_samples}")
    n = min(len(x), int(n_samples))
    if len(x) > n:
        x = x[rng.choice(len(x), size=n, replace=False)]
    if len(y) > n:
        y = y[rng.choice(len(y), size=n, replace=False)]
    return x, y


def permutation_chunks(
    n_total: int, n_permutations: int, rng: np.random.Generator, chunk_size: int
) -> Iterator[np.ndarray]:
    """The random permutations of the permutation test, in chunks.

    Permutation ``p`` splits the pooled sample into its rows ``perm[p, :m]`` (the ``x`` side) and
    the rest. The draws form one sequence, whatever ``chunk_size``: concatenating the chunks
    gives the same permutations for any chunk size (so p-values do not depend on memory limits).

    Args:
        n_total: Rows of the pooled sample.
        n_permutations: How many permutations to draw.
        rng: The source of the permutations.
        chunk_size: Permutations per chunk (the last chunk may be shorter).

    Yields:
        ``(c, n_total)`` integer arrays, each row a permutation of ``range(n_total)``.
    """
    identity = np.broadcast_to(np.arange(n_total), (chunk_size, n_total))
    for start in range(0, n_permutations, chunk_size):
        yield rng.permuted(identity[: min(chunk_size, n_permutations - start)], axis=1)


def mmd_permutation_test(
    x: np.ndarray,
    y: np.ndarray,
    n_permutations: int,
    rng: np.random.Generator | None,
    length_scale: float = 0.5,
    chunk_size: int | None = None,
    p_value_form: str = "reference",
) -> tuple[float, float | None]:
    """Unbiased squared MMD and its permutation p-value.

    The null distribution is the estimate over ``n_permutations`` random splits of the pooled
    sample into ``len(x)`` and ``len(y)`` rows (drawn by :func:`permutation_chunks`). With
    ``b`` of them at least as large as the observed estimate, the p-value is ``b / P``
    (``p_value_form="reference"``, the reference code's form, which is 0 when ``b = 0``) or
    ``(b + 1) / (P + 1)`` (``"corrected"``, never 0).

    When either sample holds NaN or inf, or the estimate is not finite, nothing is permuted and
    the result is ``(nan, None)``: there is no estimate and no p-value.

    Args:
        x: ``(m, d)`` points (or ``(m,)`` values of one feature), ``m >= 2``.
        y: ``(n, d)`` points (or ``(n,)`` values), ``n >= 2``.
        n_permutations: ``P``; 0 computes the estimate only.
        rng: The source of the permutations (unused when ``P = 0``).
        length_scale: ℓ of the Gaussian kernel.
        chunk_size: Permutations evaluated per matrix product; by default as many as fit in
            :data:`CHUNK_BYTES`. It changes memory and speed, never the result.
        p_value_form: ``"reference"`` or ``"corrected"`` (see above).

    Returns:
        ``(mmd², p_value)``, with ``p_value`` None when ``P = 0`` or the estimate is not finite.
    """
    x, y = _as_samples(x, y, minimum=2)
    if n_permutations < 0:
        raise ValueError(f"n_permutations must be >= 0, got {n_permutations}")
    if p_value_form not in P_VALUE_FORMS:
        raise ValueError(f"p_value_form must be one of {P_VALUE_FORMS}, got {p_value_form!r}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return math.nan, None
    m, n = len(x), len(y)
    total = m + n
    width = _block_width(total)
    if chunk_size is None:
        chunk_size = _chunk_size(total, width)
    elif chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")

    observed = np.zeros(3)
    kernel_sum = 0.0
    null_xx = np.zeros(n_permutations)  # Σ_{i,j ∈ x side} K_ij per permutation
    null_x_rows = np.zeros(n_permutations)  # Σ_{i ∈ x side} Σ_j K_ij per permutation
    state = rng.bit_generator.state if n_permutations else None
    for cols, block in _kernel_blocks(np.vstack([x, y]), length_scale, width):
        observed += _split_sums(block, cols, m)
        kernel_sum += block.sum()
        if n_permutations:
            # Every column block needs the same permutations: replay the draws, don't keep them.
            rng.bit_generator.state = state
            start = 0
            for perms in permutation_chunks(total, n_permutations, rng, chunk_size):
                stop = start + len(perms)
                assign = np.zeros(perms.shape)
                np.put_along_axis(assign, perms[:, :m], 1.0, axis=1)
                weighted = assign @ block  # Σ_{i ∈ x side} K_ij for the block's columns j
                null_x_rows[start:stop] += weighted.sum(1)
                null_xx[start:stop] += np.einsum("pj,pj->p", weighted, assign[:, cols])
                start = stop
        del block

    value = float(_mmd2_from_sums(*observed, m, n))
    if not math.isfinite(value):
        return math.nan, None
    if not n_permutations:
        return value, None
    null_xy = null_x_rows - null_xx
    null_yy = kernel_sum - null_xx - 2.0 * null_xy
    null = _mmd2_from_sums(null_xx, null_yy, null_xy, m, n)
    if p_value_form == "corrected":
        return value, float((np.count_nonzero(null >= value) + 1) / (n_permutations + 1))
    return value, float(np.mean(null >= value))


# --- bandwidth ------------------------------------------------------------------------------

#: The choices of ℓ: the configured ``length_scale`` (reference) or the median heuristic.
BANDWIDTHS = ("fixed", "median")

#: Below this median off-diagonal kernel value the test is blind at its ℓ: almost every pair of
#: points looks infinitely far apart, so the unbiased estimate is about 0 whatever the shift.
DEGENERATE_KERNEL = 1e-6

#: Most rows whose pairwise distances enter a median: a larger pooled sample is thinned to this
#: many rows, evenly spaced over it (deterministic, no random numbers).
MEDIAN_ROWS = 2000

#: Memory for the temporaries of one chunk of pairwise differences (bytes).
DISTANCE_BYTES = 16 * 2**20


def _pair_sq_distances(z: np.ndarray) -> np.ndarray:
    """``‖z_i − z_j‖²`` over all pairs ``i < j`` of (at most :data:`MEDIAN_ROWS` rows of) ``z``.

    Differences are taken directly, not through ``‖a‖² + ‖b‖² − 2a·b``, so that tied points
    are exactly 0 apart.
    """
    z = _as_points(z, "z")
    if len(z) < 2:
        raise ValueError(f"a median distance needs at least 2 points, got {len(z)}")
    if len(z) > MEDIAN_ROWS:
        z = z[np.linspace(0, len(z) - 1, MEDIAN_ROWS).astype(np.int64)]
    n, d = z.shape
    rows = int(max(1, DISTANCE_BYTES // (8 * n * max(d, 1))))
    parts = []
    for start in range(0, n - 1, rows):
        stop = min(start + rows, n - 1)
        diff = z[start:stop, None, :] - z[None, start + 1 :, :]
        sq = np.einsum("ijk,ijk->ij", diff, diff)
        # Row start + r keeps the columns j > start + r, i.e. local columns >= r.
        keep = np.arange(n - start - 1)[None, :] >= np.arange(stop - start)[:, None]
        parts.append(sq[keep])
    return np.concatenate(parts)


def _medians(z: np.ndarray) -> tuple[float, float]:
    """(median squared distance of all pairs, median of the non-zero ones; 0 if there are none)."""
    sq = _pair_sq_distances(z)
    median = float(np.median(sq))
    if median > 0:
        return median, median
    positive = sq[sq > 0]
    return median, float(np.median(positive)) if len(positive) else 0.0


def median_sq_distance(z: np.ndarray) -> float:
    """Median squared Euclidean distance between the distinct points of a sample.

    The median of ``‖z_i − z_j‖²`` over all pairs ``i < j``; with more than
    :data:`MEDIAN_ROWS` rows, over the pairs of that many rows evenly spaced over ``z``
    (``np.linspace`` indices), so the result is deterministic and draws no random numbers.
    The median of the off-diagonal Gaussian kernel values at ℓ is
    ``exp(−median_sq_distance(z) / (2ℓ²))``, as the kernel decreases with the distance.

    Args:
        z: ``(n, d)`` points (or ``(n,)`` values of one feature), ``n >= 2``.

    Returns:
        The median squared distance (0 when at least half the pairs are tied points).
    """
    return _medians(z)[0]


def _heuristic_scale(positive_median: float) -> float:
    # Every distance 0: two identical point masses, where any ℓ gives MMD 0.
    return math.sqrt(positive_median) if positive_median > 0 else 1.0


def median_heuristic(x: np.ndarray, y: np.ndarray) -> float:
    """The median heuristic's ℓ for comparing two samples (Gretton et al., JMLR 2012).

    ℓ is the median Euclidean distance between distinct points of the pooled sample ``[x; y]``,
    computed as the root of :func:`median_sq_distance` (for an even number of pairs, the root of
    the mean of the two middle squared distances; samples over :data:`MEDIAN_ROWS` rows are
    thinned as described there). When
    that median is 0 (many tied points, e.g. identical probabilities) the median of the non-zero
    distances is used; when every distance is 0 the samples are one and the same point mass and
    ℓ = 1 (any ℓ gives MMD 0). Deterministic: no random numbers.

    Args:
        x: ``(m, d)`` points (or ``(m,)`` values).
        y: ``(n, d)`` points (or ``(n,)`` values); ``m + n >= 2``.

    Returns:
        ℓ > 0.
    """
    x, y = _as_samples(x, y, minimum=0)
    return _heuristic_scale(_medians(np.vstack([x, y]))[1])


@dataclass(frozen=True)
class Bandwidth:
    """The ℓ an unbiased MMD evaluation uses, and how its pooled sample looks at that ℓ.

    Attributes:
        length_scale: ℓ of the test.
        median_kernel: Median off-diagonal kernel value of the pooled sample at ℓ.
        median_length_scale: The median heuristic's ℓ for the same pooled sample.
    """

    length_scale: float
    median_kernel: float
    median_length_scale: float

    @property
    def degenerate(self) -> bool:
        """Whether the test is blind at ℓ (:data:`DEGENERATE_KERNEL`)."""
        return self.median_kernel < DEGENERATE_KERNEL


def choose_bandwidth(
    x: np.ndarray, y: np.ndarray, bandwidth: str, length_scale: float
) -> Bandwidth:
    """ℓ for comparing ``x`` with ``y``: ``length_scale`` (``"fixed"``) or the median heuristic.

    One median of the pooled sample's squared distances gives ℓ, the median kernel value and
    the heuristic's ℓ; no random numbers are drawn.
    """
    if bandwidth not in BANDWIDTHS:
        raise ValueError(f"bandwidth must be one of {BANDWIDTHS}, got {bandwidth!r}")
    x, y = _as_samples(x, y, minimum=2)
    median, positive = _medians(np.vstack([x, y]))
    heuristic = _heuristic_scale(positive)
    scale = heuristic if bandwidth == "median" else float(length_scale)
    return Bandwidth(scale, math.exp(-median / (2.0 * scale**2)), heuristic)
