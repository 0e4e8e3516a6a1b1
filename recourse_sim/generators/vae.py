"""Variational autoencoders for latent-space counterfactual search, one per system.

Latent-space generators (REVISE, CLUE, and any gradient generator with ``latent_space=True``)
search in the latent space of a VAE (Kingma & Welling, ICLR 2014) fitted on the system's current
population. As in the reference study (reference-semantics §1.5, CounterfactualExplanations.jl
v0.1.5 defaults), the VAE of a system is trained for ``epochs`` the first time that system
searches, on its whole current population (both classes; with a ``population_mask``, the
present rows only), and then continues for
``retrain_epochs`` on the updated population before each later search (the reference retrains it
after every round, which is the same point in the schedule). Architecture and loss: encoder
``Dense(d, hidden, relu)`` with linear heads for ``μ`` and ``log σ``; decoder
``Dense(latent, hidden, relu) → Dense(hidden, d)``; loss = summed squared error / batch + KL /
batch + ``decoder_l2`` times the squared norm of the decoder's parameters; Adam, mini-batches of
``batch_size`` in a random order each epoch. The optimiser's moments persist across retraining.

The VAEs of all systems searched together are trained in one stack; their state is kept per
system key, so it survives between rounds and travels with checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

import torch

from recourse_sim import checks
from recourse_sim.errors import ConfigError
from recourse_sim.generators.base import population_rows
from recourse_sim.models.network import Architecture, StackedNetworks
from recourse_sim.models.training import adam_step
from recourse_sim.utils import counter_rng

_INIT_STREAM = 0x7AE1
_SHUFFLE_STREAM = 0x5AF7
_NOISE_STREAM = 0x5AF8


@dataclass(frozen=True)
class VAESettings:
    """Size and training schedule of the per-system VAEs."""

    latent_dim: int = 2
    hidden_dim: int = 32
    epochs: int = 100
    retrain_epochs: int = 10
    batch_size: int = 50
    learning_rate: float = 1e-3
    decoder_l2: float = 0.01

    def __post_init__(self) -> None:
        # Store every value in its checked, canonical type (the dataclass is frozen).
        def check(name: str, checker, **bounds) -> None:
            value = checker(f"generator.vae.{name}", getattr(self, name), **bounds)
            object.__setattr__(self, name, value)

        for name in ("latent_dim", "hidden_dim", "batch_size"):
            check(name, checks.integer, minimum=1)
        for name in ("epochs", "retrain_epochs"):  # 0: no (re)training
            check(name, checks.integer, minimum=0)
        check("learning_rate", checks.real, minimum=0, low_open=True)
        check("decoder_l2", checks.real, minimum=0)


def vae_settings(value: Mapping | VAESettings | None) -> VAESettings:
    """Settings from a YAML mapping (unknown keys name themselves in the error)."""
    if value is None:
        return VAESettings()
    if isinstance(value, VAESettings):
        return value
    known = set(VAESettings.__dataclass_fields__)
    if not isinstance(value, Mapping):
        raise ConfigError("generator.vae", value, f"a mapping with keys among {sorted(known)}")
    unknown = sorted(set(value) - known)
    if unknown:
        raise ConfigError("generator.vae", unknown, f"keys among {sorted(known)}")
    return VAESettings(**dict(value))


@dataclass
class _SystemVAE:
    """One system's VAE: parameters and Adam moments (as per-layer tensor lists) and its age."""

    encoder: list[torch.Tensor]
    decoder: list[torch.Tensor]
    moments: list[list[torch.Tensor]]  # exp_avg and exp_avg_sq of [encoder..., decoder...]
    steps: float
    trained_for_round: int


class StackedVAE:
    """The VAEs of ``S`` systems, evaluated and trained together."""

    def __init__(self, encoder: StackedNetworks, decoder: StackedNetworks, latent_dim: int):
        self.encoder = encoder
        self.decoder = decoder
        self.latent_dim = latent_dim

    def encode(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``μ`` and ``log σ``, each ``(S, n, latent)``, of rows ``X`` ``(S, n, d)``."""
        out = self.encoder.forward(X.to(torch.float32))
        return out[..., : self.latent_dim], out[..., self.latent_dim :]

    def decode(self, Z: torch.Tensor) -> torch.Tensor:
        """Reconstructions ``(S, n, d)`` of latent points ``Z`` ``(S, n, latent)``."""
        return self.decoder.forward(Z.to(torch.float32))


class VAEStore:
    """Per-system VAEs of one generator, created and retrained on demand."""

    def __init__(self, settings: VAESettings):
        self.settings = settings
        self._systems: dict[int, _SystemVAE] = {}

    def _architectures(self, d: int) -> tuple[Architecture, Architecture]:
        s = self.settings
        encoder = Architecture(d, (s.hidden_dim,), "relu", output_dim=2 * s.latent_dim)
        decoder = Architecture(s.latent_dim, (s.hidden_dim,), "relu", output_dim=d)
        return encoder, decoder

    def for_systems(self, problem) -> StackedVAE:
        """The VAEs of ``problem``'s systems, trained up to the current round."""
        keys = [int(k) for k in problem.system_keys]
        X = problem.population_X.to(torch.float32)
        d = X.shape[-1]
        enc_arch, dec_arch = self._architectures(d)
        fresh = [k for k in keys if k not in self._systems]
        for key in fresh:
            # A CPU generator on every device: the same initial VAE wherever the search runs.
            generator = torch.Generator().manual_seed(
                int(counter_rng.hash_keys(_INIT_STREAM, key).item())
            )
            encoder = StackedNetworks(enc_arch, 1, device=X.device).initialise(generator)
            decoder = StackedNetworks(dec_arch, 1, device=X.device).initialise(generator)
            params = encoder.parameters_of(0) + decoder.parameters_of(0)
            self._systems[key] = _SystemVAE(
                encoder=[t.clone() for t in encoder.parameters_of(0)],
                decoder=[t.clone() for t in decoder.parameters_of(0)],
                moments=[[torch.zeros_like(t) for t in params] for _ in range(2)],
                steps=0.0,
                trained_for_round=-1,
            )
        vae = StackedVAE(
            StackedNetworks.from_parameters(enc_arch, [self._systems[k].encoder for k in keys]),
            StackedNetworks.from_parameters(dec_arch, [self._systems[k].decoder for k in keys]),
            self.settings.latent_dim,
        )
        # The systems of one search share their history (they search in the same rounds), so
        # they always need the same number of epochs.
        ages = {self._systems[k].trained_for_round for k in keys}
        if len(ages) != 1:
            raise RuntimeError(f"systems searched together have VAEs of different ages: {ages}")
        (age,) = ages
        if age < 0:
            epochs = self.settings.epochs
        elif age < problem.round_key:
            epochs = self.settings.retrain_epochs
        else:
            return vae
        if problem.population_mask is None:
            self._train(vae, X, keys, epochs, problem.round_key)
            return vae
        self._train_present_rows(problem, keys, epochs, enc_arch, dec_arch)
        return StackedVAE(
            StackedNetworks.from_parameters(enc_arch, [self._systems[k].encoder for k in keys]),
            StackedNetworks.from_parameters(dec_arch, [self._systems[k].decoder for k in keys]),
            self.settings.latent_dim,
        )

    def _train_present_rows(self, problem, keys, epochs: int, enc_arch, dec_arch) -> None:
        """Train each system on its present rows only, as if the others were not there.

        The present rows are packed to the front in their order, so the shuffles and noise
        draws (keyed by position) are those of a population holding only them. Systems with as
        many present rows train together in one stack; each system's training is independent
        of the others' either way.
        """
        rows = [population_rows(problem, s)[0].to(torch.float32) for s in range(len(keys))]
        groups: dict[int, list[int]] = {}
        for s, X in enumerate(rows):
            groups.setdefault(X.shape[0], []).append(s)
        for members in groups.values():
            group_keys = [keys[s] for s in members]
            vae = StackedVAE(
                StackedNetworks.from_parameters(
                    enc_arch, [self._systems[k].encoder for k in group_keys]
                ),
                StackedNetworks.from_parameters(
                    dec_arch, [self._systems[k].decoder for k in group_keys]
                ),
                self.settings.latent_dim,
            )
            X = torch.stack([rows[s] for s in members])
            self._train(vae, X, group_keys, epochs, problem.round_key)

    def _train(self, vae: StackedVAE, X: torch.Tensor, keys, epochs: int, round_key: int) -> None:
        """Train the stacked VAEs in lockstep and store each system's result."""
        s = self.settings
        S, N, d = X.shape
        systems = [self._systems[k] for k in keys]
        split = 2 * vae.encoder.architecture.n_layers
        nets = (vae.encoder, vae.decoder)
        params = [net.flat for net in nets]
        moments = [
            [
                StackedNetworks.from_parameters(
                    net.architecture,
                    [
                        sys.moments[m][:split] if i == 0 else sys.moments[m][split:]
                        for sys in systems
                    ],
                ).flat
                for i, net in enumerate(nets)
            ]
            for m in range(2)
        ]
        # The step count lives with the parameters: torch's fused Adam kernel reads it there.
        steps = [torch.tensor(systems[0].steps, device=X.device) for _ in nets]
        key_column = torch.tensor(keys, device=X.device).view(S, 1)
        rows = torch.arange(N, device=X.device).view(1, N)
        for epoch in range(epochs):
            shuffle = counter_rng.uniform(_SHUFFLE_STREAM, round_key, key_column, epoch, rows)
            order = torch.argsort(shuffle, dim=1)
            for start in range(0, N, s.batch_size):
                index = order[:, start : start + s.batch_size]
                batch = torch.gather(X, 1, index.unsqueeze(-1).expand(-1, -1, d))
                n = batch.shape[1]
                for p in params:
                    p.requires_grad_(True)
                mu, log_sigma = vae.encode(batch)
                eps = counter_rng.normal(
                    _NOISE_STREAM,
                    round_key,
                    epoch,
                    start,
                    key_column.view(S, 1, 1),
                    torch.arange(n, device=X.device).view(1, n, 1),
                    torch.arange(s.latent_dim, device=X.device).view(1, 1, -1),
                    dtype=torch.float32,
                )
                recon = vae.decode(mu + torch.exp(log_sigma) * eps)
                mse = (recon - batch).pow(2).sum((1, 2)) / n
                kl = (torch.exp(2 * log_sigma) + mu.pow(2) - 1 - 2 * log_sigma).sum((1, 2)) / (
                    2 * n
                )
                l2 = sum(w.pow(2).sum((1, 2)) for w in vae.decoder.weights)
                l2 = l2 + sum(b.pow(2).sum(1) for b in vae.decoder.biases)
                loss = (mse + kl + s.decoder_l2 * l2).sum()  # sum: each system its own gradient
                grads = torch.autograd.grad(loss, params)
                with torch.no_grad():
                    for p, g, m1, m2, step in zip(params, grads, *moments, steps, strict=True):
                        p.requires_grad_(False)
                        step += 1  # adam_step reads this update's number t
                        adam_step(p, g, m1, m2, step, s.learning_rate)
        for i, system in enumerate(systems):
            system.encoder = [t.clone() for t in vae.encoder.parameters_of(i)]
            system.decoder = [t.clone() for t in vae.decoder.parameters_of(i)]
            for m in range(2):
                stacked = [
                    StackedNetworks(net.architecture, S, moments[m][j])
                    for j, net in enumerate(nets)
                ]
                system.moments[m] = [t.clone() for net in stacked for t in net.parameters_of(i)]
            system.steps = float(steps[0])
            system.trained_for_round = round_key

    def state_dict(self) -> dict:
        """Everything needed to continue, as tensors and plain containers (for checkpoints)."""
        return {
            "systems": {
                key: {f.name: getattr(system, f.name) for f in fields(system)}
                for key, system in self._systems.items()
            }
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self._systems = {key: _SystemVAE(**system) for key, system in state["systems"].items()}
