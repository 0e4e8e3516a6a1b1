"""recourse_sim: simulate the macrodynamics of algorithmic recourse.

Altmeyer et al., "Endogenous Macrodynamics in Algorithmic Recourse", IEEE SaTML 2023. The
building blocks live in subpackages: :mod:`recourse_sim.data`, :mod:`recourse_sim.models`,
:mod:`recourse_sim.generators`, :mod:`recourse_sim.metrics` and :mod:`recourse_sim.simulation`;
:mod:`recourse_sim.run` composes them from a hydra configuration.
"""

__version__ = "0.1.0"
