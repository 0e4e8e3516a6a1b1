"""REVISE: counterfactuals searched in the latent space of a generative model.

Joshi et al., "Towards Realistic Individual Recourse and Actionable Explanations in Black-Box
Decision Making Systems", 2019: descend on ``BCE(M(dec(z)), target) + λ·‖x − dec(z)‖`` over the
latent code ``z`` of a VAE fitted on the data, so counterfactuals stay close to the data manifold.
As in the reference study (labelled "Latent" in its figures): λ = 0.1, ``Descent(0.01)``, the
Frobenius distance of the generic generator, and a VAE per system fitted on its current
population and retrained every round (see :mod:`recourse_sim.generators.vae`).
"""

from __future__ import annotations

from recourse_sim.generators.generic import GenericGenerator


class ReviseGenerator(GenericGenerator):
    """The generic objective, searched in a VAE's latent space."""

    def __init__(self, *args, latent_space: bool = True, **kwargs):
        super().__init__(*args, latent_space=latent_space, **kwargs)
