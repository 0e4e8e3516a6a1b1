"""Many small feed-forward networks of one architecture, stored and evaluated as one stack.

A recourse simulation runs a grid of systems (generators x repetitions, ensemble members inside
each) whose classifiers share an architecture but not their weights. Keeping all their parameters
in one flat tensor lets one batched matrix product evaluate, and one optimiser step update, every
network at once; the per-network semantics stay exactly those of training each on its own.

Initialisation follows Flux's defaults used by the reference implementation
(AlgorithmicRecourseDynamics.jl v0.1.2): Glorot-uniform weights, zero biases, float32.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from recourse_sim import checks
from recourse_sim.errors import ConfigError
from recourse_sim.models.activations import ACTIVATIONS


def check_activation(key: str, value: object) -> str:
    """``value`` if it names a hidden activation of :data:`~.activations.ACTIVATIONS`."""
    checks.text(key, value, "allowed values are " + ", ".join(map(repr, ACTIVATIONS)))
    checks.check_choice(key, value, tuple(ACTIVATIONS))
    return value


def check_dropout(key: str, value: object) -> float:
    """``value`` as a dropout probability in [0, 1)."""
    return checks.real(key, value, minimum=0, maximum=1, high_open=True)


def check_hidden_sizes(key: str, value: object) -> tuple[int, ...]:
    """``value`` as a tuple of hidden-layer widths, each an integer >= 1 (empty: none)."""
    allowed = "a list of integers >= 1, the hidden-layer widths ([] for none)"
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ConfigError(key, value, allowed)
    sizes = list(value)
    try:
        return tuple(checks.integer(key, size, minimum=1) for size in sizes)
    except ConfigError:
        raise ConfigError(key, sizes, allowed) from None


#: How a stack of networks is trained: ``fast`` (the hand-written batched backward pass),
#: ``autograd`` (torch's), or ``auto`` (fast where it covers the activation, else autograd).
TRAINING_PATHS = ("auto", "fast", "autograd")


def check_training_path(key: str, value: object, activation: str) -> str:
    """``value`` if it names a training path that can train ``activation``."""
    checks.text(key, value, "allowed values are " + ", ".join(map(repr, TRAINING_PATHS)))
    checks.check_choice(key, value, TRAINING_PATHS)
    if value == "fast" and ACTIVATIONS[activation].derivative is None:
        covered = ", ".join(n for n, a in ACTIVATIONS.items() if a.derivative is not None)
        raise ConfigError(
            key,
            value,
            f"auto or autograd: the fast path has no hand-written derivative of {activation!r} "
            f"(it covers {covered})",
        )
    return value


def binary_logit(outputs: torch.Tensor) -> torch.Tensor:
    """The logit of class 1 from a classifier's outputs ``(..., k)``.

    One logit (k = 1) is returned as it is; of two class logits (k = 2), their difference.
    """
    if outputs.shape[-1] == 2:
        return outputs[..., 1] - outputs[..., 0]
    return outputs.squeeze(-1)


@dataclass(frozen=True)
class Architecture:
    """Layer sizes ``(d, h_1, ..., h_k, output_dim)``.

    Classifiers emit one logit (``output_dim=1``, the reference study's networks) or one logit
    per class (``output_dim=2``, softmax: the counterfactual-training paper's networks).
    """

    input_dim: int
    hidden_sizes: tuple[int, ...] = ()
    activation: str = "relu"
    dropout: float = 0.0
    output_dim: int = 1
    training_path: str = "auto"

    def __post_init__(self) -> None:
        check_activation("model.activation", self.activation)
        check_dropout("model.dropout", self.dropout)
        check_hidden_sizes("model.hidden_sizes", self.hidden_sizes)
        check_training_path("model.training_path", self.training_path, self.activation)

    @property
    def trains_fast(self) -> bool:
        """Whether the hand-written fast path trains these networks (else autograd does)."""
        covered = ACTIVATIONS[self.activation].derivative is not None
        return covered and self.training_path != "autograd"

    @property
    def sizes(self) -> tuple[int, ...]:
        """All layer widths, input and output included."""
        return (self.input_dim, *self.hidden_sizes, self.output_dim)

    @property
    def n_layers(self) -> int:
        """Number of affine layers."""
        return len(self.sizes) - 1

    @property
    def n_parameters(self) -> int:
        """Parameters of one network."""
        s = self.sizes
        return sum(s[i] * s[i + 1] + s[i + 1] for i in range(self.n_layers))


class StackedNetworks:
    """``n_nets`` networks of one :class:`Architecture` with parameters in one flat tensor.

    The flat tensor holds, layer by layer, the weights of all networks as ``(n_nets, in, out)``
    followed by their biases as ``(n_nets, out)``, so each block is a contiguous view and
    whole-model operations (optimiser steps, copies, differences) are single tensor operations.
    """

    def __init__(
        self,
        architecture: Architecture,
        n_nets: int,
        flat: torch.Tensor | None = None,
        device: str | torch.device | None = None,
    ):
        self.architecture = architecture
        self.n_nets = int(n_nets)
        total = self.n_nets * architecture.n_parameters
        if flat is None:  # ``device`` only places a new buffer; a given one stays where it is
            flat = torch.zeros(total, dtype=torch.float32, device=device)
        if flat.shape != (total,):
            raise ValueError(f"flat parameters must have shape ({total},), got {tuple(flat.shape)}")
        self.flat = flat
        self.weights, self.biases = self.views(self.flat)

    def views(self, flat: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-layer weight and bias views into a flat buffer laid out like :attr:`flat`."""
        weights, biases, offset = [], [], 0
        sizes, n = self.architecture.sizes, self.n_nets
        for fan_in, fan_out in itertools.pairwise(sizes):
            weights.append(flat[offset : offset + n * fan_in * fan_out].view(n, fan_in, fan_out))
            offset += n * fan_in * fan_out
            biases.append(flat[offset : offset + n * fan_out].view(n, fan_out))
            offset += n * fan_out
        return weights, biases

    def initialise(self, generator: torch.Generator) -> StackedNetworks:
        """Glorot-uniform weights and zero biases (Flux's ``Dense`` defaults), in place.

        The draws are made on ``generator``'s device and copied over, so a CPU generator gives
        the same initial weights whichever device the stack lives on.
        """
        with torch.no_grad():
            for weight, bias in zip(self.weights, self.biases, strict=True):
                fan_in, fan_out = weight.shape[1:]
                limit = (6.0 / (fan_in + fan_out)) ** 0.5
                draw = torch.empty(weight.shape, dtype=weight.dtype, device=generator.device)
                weight.copy_(draw.uniform_(-limit, limit, generator=generator))
                bias.zero_()
        return self

    def clone(self) -> StackedNetworks:
        """An independent copy."""
        return StackedNetworks(self.architecture, self.n_nets, self.flat.clone())

    def take(self, nets: Sequence[int] | torch.Tensor) -> StackedNetworks:
        """A new stack holding copies of the networks ``nets`` (in that order)."""
        nets = torch.as_tensor(nets, dtype=torch.long, device=self.flat.device)
        out = StackedNetworks(self.architecture, len(nets), device=self.flat.device)
        with torch.no_grad():
            for dst, src in zip(out.weights + out.biases, self.weights + self.biases, strict=True):
                dst.copy_(src[nets])
        return out

    @classmethod
    def from_parameters(
        cls, architecture: Architecture, parameters: Sequence[Sequence[torch.Tensor]]
    ) -> StackedNetworks:
        """Stack per-network parameter lists (as :meth:`parameters_of` returns them).

        The stack lives on the device of the first network's parameters.
        """
        device = parameters[0][0].device if parameters and parameters[0] else None
        out = cls(architecture, len(parameters), device=device)
        with torch.no_grad():
            for i, tensors in enumerate(parameters):
                for dst, src in zip(out.parameters_of(i), tensors, strict=True):
                    dst.copy_(src)
        return out

    def parameters_of(self, net: int) -> list[torch.Tensor]:
        """The parameter tensors (weight, bias per layer) of network ``net``."""
        tensors = []
        for weight, bias in zip(self.weights, self.biases, strict=True):
            tensors.extend([weight[net], bias[net]])
        return tensors

    def put(self, nets: Sequence[int], part: StackedNetworks) -> None:
        """Overwrite networks ``nets`` (in that order) with the networks of ``part``."""
        index = torch.as_tensor(nets, dtype=torch.long, device=self.flat.device)
        with torch.no_grad():
            for dst, src in zip(
                self.weights + self.biases, part.weights + part.biases, strict=True
            ):
                dst[index] = src

    def assign(self, start: int, part: StackedNetworks) -> None:
        """Overwrite networks ``start, start + 1, ...`` with the networks of ``part``."""
        with torch.no_grad():
            for dst, src in zip(
                self.weights + self.biases, part.weights + part.biases, strict=True
            ):
                dst[start : start + part.n_nets].copy_(src)

    def dropout_masks(
        self, n_rows: int, streams: Sequence[torch.Generator]
    ) -> list[torch.Tensor] | None:
        """Inverted-dropout masks (0 or ``1/(1-p)``) per hidden layer; None without dropout.

        Network ``i`` draws its masks from ``streams[i]`` alone, so they do not depend on which
        other networks share the stack.
        """
        p = self.architecture.dropout
        if p == 0.0:
            return None
        if len(streams) != self.n_nets:
            raise ValueError(f"need one stream per network ({self.n_nets}), got {len(streams)}")
        keep = 1.0 - p
        masks = [[] for _ in self.architecture.hidden_sizes]
        for stream in streams:
            for layer, width in enumerate(self.architecture.hidden_sizes):
                masks[layer].append(torch.rand(n_rows, width, generator=stream) < keep)
        # Drawn from the (CPU) streams, then moved: the same masks on every device.
        return [torch.stack(layer).to(self.flat.device).float().div_(keep) for layer in masks]

    def logits(
        self,
        X: torch.Tensor,
        masks: Sequence[torch.Tensor] | None = None,
        flat: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``(n_nets, n)`` of each network on its own rows ``X`` of shape ``(n_nets, n, d)``.

        Differentiable with respect to ``X`` (used by the counterfactual search). ``masks`` applies
        dropout after each hidden activation; ``flat`` evaluates other parameters of this layout.
        A network with two outputs emits one logit per class; its logit is their difference
        (the softmax probability of class 1 is the sigmoid of it).
        """
        return binary_logit(self.forward(X, masks, flat))

    def forward(
        self,
        X: torch.Tensor,
        masks: Sequence[torch.Tensor] | None = None,
        flat: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Outputs ``(n_nets, n, output_dim)`` of each network on its own rows ``X``."""
        weights, biases = (self.weights, self.biases) if flat is None else self.views(flat)
        activation = ACTIVATIONS[self.architecture.activation].function
        hidden = X
        last = len(weights) - 1
        for layer, (weight, bias) in enumerate(zip(weights, biases, strict=True)):
            hidden = torch.baddbmm(bias.unsqueeze(1), hidden, weight)
            if layer < last:
                hidden = activation(hidden)
                if masks is not None:
                    hidden = hidden * masks[layer]
        return hidden
