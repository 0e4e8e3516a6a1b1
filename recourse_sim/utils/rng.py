"""One seed, many named random streams.

Every consumer of randomness (data generation, the train/test split, model initialisation,
individual selection, counterfactual search, metric subsampling, ...) draws from its own stream,
derived from the run's single ``seed`` and the stream's name (plus optional integer keys such as
the repetition). Adding a new consumer therefore never shifts the draws of an existing one, and no
global random state (``np.random.seed``, ``torch.manual_seed``) is touched.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch


class RandomStreams:
    """Factory of independent, reproducible random generators keyed by name.

    Example:
        >>> streams = RandomStreams(seed=0)
        >>> rng = streams.numpy("selection", 3)      # repetition 3's selection stream
        >>> gen = streams.torch("search", 3)         # a torch.Generator for the same repetition
    """

    def __init__(self, seed: int):
        if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or seed < 0:
            from recourse_sim.errors import ConfigError

            raise ConfigError("seed", seed, "a non-negative integer")
        self.seed = int(seed)

    def sequence(self, name: str, *keys: int) -> np.random.SeedSequence:
        """The seed sequence of stream ``name`` (and sub-keys such as a repetition index)."""
        # crc32 is stable across processes and Python versions (unlike hash()).
        spawn_key = (zlib.crc32(name.encode()), *(int(k) for k in keys))
        return np.random.SeedSequence(entropy=self.seed, spawn_key=spawn_key)

    def numpy(self, name: str, *keys: int) -> np.random.Generator:
        """A fresh numpy generator for stream ``name``."""
        return np.random.default_rng(self.sequence(name, *keys))

    def torch(self, name: str, *keys: int, device: str | torch.device = "cpu") -> torch.Generator:
        """A fresh torch generator for stream ``name`` on ``device``."""
        state = self.sequence(name, *keys).generate_state(1, dtype=np.uint64)[0]
        generator = torch.Generator(device=device)
        generator.manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)
        return generator
