"""Hidden activations: the one table that every code path reads.

The built-in networks' forward pass, the modules built for them (``torch_module``), and the
hand-written training path all look an activation up here. The hand-written backward pass covers
only the activations with a ``derivative`` entry; a network with any other activation is trained
by autograd, so adding an activation can never silently train with another one's gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Activation:
    """One hidden activation.

    Attributes:
        function: The activation on a tensor.
        module: A ``torch.nn.Module`` class computing the same (for built modules).
        derivative: How the hand-written backward pass gets the slope: ``"relu"`` (from the
            sign of the output), ``"output"`` (a function of the output, :attr:`slope_into`),
            or ``None``: not covered, autograd trains it.
        slope_into: For ``derivative="output"``: writes the derivative at output ``act`` into
            ``gate`` without allocating (the per-sample path's inner loop).
    """

    function: Callable[..., torch.Tensor]
    module: type[nn.Module]
    derivative: str | None = None
    slope_into: Callable[[torch.Tensor, torch.Tensor], None] | None = None

    def slope(self, act: torch.Tensor) -> torch.Tensor:
        """The derivative at output ``act`` (``derivative="output"`` only)."""
        gate = torch.empty_like(act)
        self.slope_into(act, gate)
        return gate


def _tanh_slope(act: torch.Tensor, gate: torch.Tensor) -> None:
    torch.mul(act, act, out=gate).neg_().add_(1.0)  # 1 - tanh²


def _sigmoid_slope(act: torch.Tensor, gate: torch.Tensor) -> None:
    torch.sub(1.0, act, out=gate).mul_(act)  # sigmoid (1 - sigmoid)


ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation(torch.relu, nn.ReLU, derivative="relu"),
    # Both derivatives are functions of the output alone, kept from the forward pass.
    "tanh": Activation(torch.tanh, nn.Tanh, derivative="output", slope_into=_tanh_slope),
    "sigmoid": Activation(
        torch.sigmoid, nn.Sigmoid, derivative="output", slope_into=_sigmoid_slope
    ),
    "silu": Activation(F.silu, nn.SiLU),
    "gelu": Activation(F.gelu, nn.GELU),
    "elu": Activation(F.elu, nn.ELU),
    "softplus": Activation(F.softplus, nn.Softplus),
    "leaky_relu": Activation(F.leaky_relu, nn.LeakyReLU),
}

#: The activations the hand-written training path covers.
FAST_ACTIVATIONS = tuple(name for name, a in ACTIVATIONS.items() if a.derivative is not None)
