"""Counter-based random numbers: a value is a pure function of its keys.

A batched counterfactual search draws noise for many individuals (and systems) at once. With a
sequential generator the draws an individual receives would depend on its position in the batch,
so its counterfactual would change with the company it keeps. Hashing ``(stream, system,
individual, ...)`` instead makes every draw a function of *who* it is for, which makes batched and
one-by-one searches agree exactly.

The mixing function is the PCG hash recommended by Jarzynski & Olano, "Hash Functions for GPU
Rendering", JCGT 9(3), 2020, computed on 32-bit values held in int64 tensors (so no product
overflows).
"""

from __future__ import annotations

import math

import torch

_MASK32 = 0xFFFF_FFFF


def _pcg_hash(value: torch.Tensor) -> torch.Tensor:
    state = (value * 747796405 + 2891336453) & _MASK32
    shift = (state >> 28) + 4
    word = ((torch.bitwise_right_shift(state, shift) ^ state) * 277803737) & _MASK32
    return (word >> 22) ^ word


def hash_keys(*keys: int | torch.Tensor) -> torch.Tensor:
    """Hash broadcastable integer keys into 32-bit values (as int64), order-sensitive.

    The result lives on the device of the tensor keys (the first one off the CPU, if any), so a
    stray CPU key such as ``torch.arange(K)`` cannot clash with keys on a GPU.
    """
    if not keys:
        raise ValueError("hash_keys needs at least one key")
    device = next(
        (k.device for k in keys if torch.is_tensor(k) and k.device.type != "cpu"),
        torch.device("cpu"),
    )
    state = None
    for key in keys:
        key = torch.as_tensor(key, dtype=torch.int64, device=device) & _MASK32
        state = _pcg_hash(key if state is None else state ^ key)
    return state


def uniform(*keys: int | torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Uniform numbers in the open interval (0, 1), one per broadcast key combination."""
    return (hash_keys(*keys).to(dtype) + 0.5) / 4294967296.0


def normal(*keys: int | torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Standard normal numbers (Box-Muller on two keyed uniforms)."""
    base = hash_keys(*keys)
    u1 = uniform(base, 0x1234, dtype=dtype)
    u2 = uniform(base, 0x5678, dtype=dtype)
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)
