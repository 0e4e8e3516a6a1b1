"""Rounds between advice and its first effect: fixed, geometric or Poisson with mean ``delay``."""

from __future__ import annotations

import math

import torch


def draw_delays(uniform: torch.Tensor, mean: int, distribution: str) -> torch.Tensor:
    """Integer delays (same shape as ``uniform``, keyed uniforms in (0, 1)) with mean ``mean``.

    ``geometric`` counts the failures before a success of probability ``1 / (1 + mean)`` (support
    0, 1, 2, ...); ``poisson`` inverts the Poisson distribution function.
    """
    if mean == 0 or distribution == "fixed":
        return torch.full(uniform.shape, mean, dtype=torch.int64, device=uniform.device)
    if distribution == "geometric":
        success = 1.0 / (1.0 + mean)
        return torch.floor(torch.log(uniform) / math.log1p(-success)).to(torch.int64)
    # Poisson: the smallest n with F(n) >= u, F accumulated term by term.
    term = torch.full_like(uniform, math.exp(-mean))
    cumulative = term.clone()
    count = torch.zeros(uniform.shape, dtype=torch.int64, device=uniform.device)
    for n in range(1, 20 * mean + 50):
        below = cumulative < uniform
        if not bool(below.any()):
            break
        count += below.to(torch.int64)
        term = term * mean / n
        cumulative = cumulative + term
    return count
