"""recourse_sim: simulate the macrodynamics of algorithmic recourse.

Altmeyer et al., "Endogenous Macrodynamics in Algorithmic Recourse", IEEE SaTML 2023. The
building blocks live in subpackages: :mod:`recourse_sim.data`, :mod:`recourse_sim.models`,
:mod:`recourse_sim.generators`, :mod:`recourse_sim.metrics` and :mod:`recourse_sim.simulation`;
:mod:`recourse_sim.run` composes them from a hydra configuration. :func:`simulate` (and
:func:`simulate_config`, :class:`SimulationResult`) of :mod:`recourse_sim.api` run simulations
from Python; they are imported on first use, so ``import recourse_sim`` stays light (no torch,
no hydra).
"""

__version__ = "0.1.0"

__all__ = ["SimulationResult", "__version__", "simulate", "simulate_config"]

#: Names of :mod:`recourse_sim.api` exported here, imported on first access.
_API = ("SimulationResult", "simulate", "simulate_config")


def __getattr__(name: str):
    """Import the Python API (torch, hydra) only when it is first used."""
    if name in _API:
        from recourse_sim import api

        return getattr(api, name)
    raise AttributeError(f"module 'recourse_sim' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
