"""Built-in module factories for the ``torch_module`` model kind.

A factory is any callable ``factory(n_features=d, **arguments)`` returning a ``torch.nn.Module``
that maps ``(n, d)`` float32 features to one logit per row; ``configs/model/torch_module.yaml``
names one by its import path. :func:`mlp` is the default: a plain dense network built from
``torch.nn`` layers, so it also shows the form a factory of one's own takes.

A factory function may carry a ``recourse_sim_check`` attribute: a function of the node's keyword
arguments that raises :class:`~recourse_sim.errors.ConfigError` on a bad value (keys
``model.module.X``). :class:`~recourse_sim.models.torch_module.TorchModule` calls it when the
config is built, so a bad value stops a run before any work starts (the factory itself runs only
once the number of features is known).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from recourse_sim import checks
from recourse_sim.errors import ConfigError
from recourse_sim.models.activations import ACTIVATIONS
from recourse_sim.models.network import check_dropout, check_hidden_sizes

#: The config node of a factory's arguments (the entry point completes it to
#: ``model.<option>.module``).
_KEY = "model.module"


def _check_mlp(
    hidden_sizes: Sequence[int] = (32,), activation: str = "relu", dropout: float = 0.0
) -> tuple[tuple[int, ...], str, float]:
    """The arguments of :func:`mlp`, checked; :class:`ConfigError` names ``model.module.X``."""
    sizes = check_hidden_sizes(f"{_KEY}.hidden_sizes", hidden_sizes)
    allowed = "allowed values are " + ", ".join(map(repr, ACTIVATIONS))
    checks.text(f"{_KEY}.activation", activation, allowed)
    if activation not in ACTIVATIONS:
        raise ConfigError(f"{_KEY}.activation", activation, allowed)
    return sizes, activation, check_dropout(f"{_KEY}.dropout", dropout)


def mlp(
    n_features: int,
    hidden_sizes: Sequence[int] = (32,),
    activation: str = "relu",
    dropout: float = 0.0,
) -> nn.Sequential:
    """A dense network ``Linear → activation [→ Dropout] → ... → Linear(h, 1)``.

    The layers keep torch's default initialisation (the ``torch_module`` kind seeds it per
    network); the built-in ``mlp`` model kind instead uses Glorot-uniform weights and zero biases.

    Args:
        n_features: Input width (passed by recourse_sim; not a config key).
        hidden_sizes: Widths of the hidden layers (empty: logistic regression).
        activation: A name of :data:`~recourse_sim.models.activations.ACTIVATIONS`.
        dropout: Dropout probability after each hidden activation (0: no ``Dropout`` layers).

    Returns:
        A module mapping ``(n, n_features)`` to logits ``(n, 1)``.
    """
    sizes, activation, dropout = _check_mlp(hidden_sizes, activation, dropout)
    layers: list[nn.Module] = []
    width = int(n_features)
    for size in sizes:
        layers += [nn.Linear(width, size), ACTIVATIONS[activation].module()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


mlp.recourse_sim_check = _check_mlp
