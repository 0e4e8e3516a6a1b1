"""Lockstep training of stacked networks with the reference study's optimiser semantics.

AlgorithmicRecourseDynamics.jl (v0.1.2) trains every classifier with a *fresh* Adam optimiser
(η=1e-3, β=(0.9, 0.999), ε=1e-8) on each call, mean logit binary cross-entropy, and by default a
data loader with batch size 1 and no shuffling: the rows are visited in order, one optimiser step
per row (Altmeyer et al., SaTML 2023, section IV; reference-semantics §1.6). That is a long chain
of tiny sequential steps, so per-step overhead dominates. Here every network of a stack takes its
step at the same time: the forward and backward passes are hand-written batched matrix products
that write straight into one flat gradient buffer, and the Adam update is a handful of operations
on the flat parameter vector. Each network still sees only its own rows in its own order, so the
result equals training the networks one by one (``tests/test_models.py`` checks this against
``torch.optim.Adam`` with autograd).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recourse_sim.errors import ConfigError
from recourse_sim.models.network import StackedNetworks


@dataclass(frozen=True)
class TrainingSchedule:
    """How one ``fit`` call trains: epochs, mini-batch size and Adam's learning rate."""

    epochs: int = 10
    batch_size: int = 1
    learning_rate: float = 1e-3

    def validate(self, key: str) -> TrainingSchedule:
        """Raise :class:`ConfigError` (naming ``key``) for unusable values."""
        if int(self.epochs) < 0:
            raise ConfigError(f"{key}.epochs", self.epochs, "a non-negative integer")
        if int(self.batch_size) < 1:
            raise ConfigError(f"{key}.batch_size", self.batch_size, "a positive integer")
        if not float(self.learning_rate) > 0:
            raise ConfigError(f"{key}.learning_rate", self.learning_rate, "a positive number")
        return self


ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def train_lockstep(
    nets: StackedNetworks,
    X: torch.Tensor,
    y: torch.Tensor,
    schedule: TrainingSchedule,
    generator: torch.Generator,
) -> None:
    """Train every network on its own rows, in place, with a fresh Adam state.

    Args:
        nets: The stack to train (its flat parameters are updated in place).
        X: Features of shape ``(n_nets, N, d)``; network ``i`` trains on ``X[i]`` in row order.
        y: Labels in {0, 1} of shape ``(n_nets, N)``.
        schedule: Epochs, batch size (the last batch of an epoch may be smaller, as Flux's
            ``DataLoader``) and learning rate.
        generator: Random stream for dropout masks.
    """
    if schedule.epochs == 0 or X.shape[1] == 0:
        return
    X = X.to(torch.float32).contiguous()
    y = y.to(torch.float32).unsqueeze(-1).contiguous()  # (n_nets, N, 1), shaped like the logits
    n_rows = X.shape[1]
    arch = nets.architecture
    grad = torch.zeros_like(nets.flat)
    grad_weights, grad_biases = nets.views(grad)
    exp_avg = torch.zeros_like(nets.flat)
    exp_avg_sq = torch.zeros_like(nets.flat)
    step = torch.zeros((), dtype=torch.float32)
    batch = int(schedule.batch_size)
    lr = float(schedule.learning_rate)
    activate = _ACTIVATE_WITH_GRADIENT[arch.activation]
    n_hidden = len(arch.hidden_sizes)
    biases = [b.unsqueeze(1) for b in nets.biases]
    weights_t = [w.transpose(1, 2) for w in nets.weights]
    grad_biases = [g.unsqueeze(1) for g in grad_biases]
    with torch.no_grad():
        for _ in range(int(schedule.epochs)):
            masks = nets.dropout_masks(n_rows, generator)
            for start in range(0, n_rows, batch):
                stop = min(start + batch, n_rows)
                # Forward pass, keeping each layer's input and activation slope for the backward
                # pass. Every operation covers all networks at once; none allocates gradients.
                inputs = [X[:, start:stop]]
                gates = []
                for layer in range(n_hidden):
                    pre = torch.baddbmm(biases[layer], inputs[-1], nets.weights[layer])
                    mask = None if masks is None else masks[layer][:, start:stop]
                    act, gate = activate(pre, mask)
                    gates.append(gate)
                    inputs.append(act)
                logit = torch.baddbmm(biases[-1], inputs[-1], nets.weights[-1])
                # d(mean BCE-with-logits)/d(logit) = (sigmoid(logit) - y) / batch size.
                delta = torch.sigmoid(logit).sub_(y[:, start:stop])
                if stop - start > 1:
                    delta.div_(stop - start)
                for layer in range(n_hidden, -1, -1):
                    torch.bmm(inputs[layer].transpose(1, 2), delta, out=grad_weights[layer])
                    torch.sum(delta, dim=1, keepdim=True, out=grad_biases[layer])
                    if layer > 0:
                        delta = torch.bmm(delta, weights_t[layer]).mul_(gates[layer - 1])
                adam_step(nets.flat, grad, exp_avg, exp_avg_sq, step, lr)


def _adam_step_reference(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: torch.Tensor,
    lr: float,
) -> None:
    """One Adam update (Kingma & Ba 2015, in the form Flux and torch share), in place."""
    step += 1
    beta1, beta2 = ADAM_BETAS
    exp_avg.lerp_(grad, 1.0 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
    bias_correction1 = 1.0 - beta1 ** step.item()
    bias_correction2_sqrt = (1.0 - beta2 ** step.item()) ** 0.5
    denom = exp_avg_sq.sqrt().div_(bias_correction2_sqrt).add_(ADAM_EPS)
    param.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)


def _adam_step_fused(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: torch.Tensor,
    lr: float,
) -> None:
    """The same update through torch's fused kernel (one pass over memory; ~3x faster here)."""
    step += 1  # the kernel reads the step count; torch.optim increments it beforehand too
    torch._fused_adam_(
        [param],
        [grad],
        [exp_avg],
        [exp_avg_sq],
        [],
        [step],
        lr=lr,
        beta1=ADAM_BETAS[0],
        beta2=ADAM_BETAS[1],
        weight_decay=0.0,
        eps=ADAM_EPS,
        amsgrad=False,
        maximize=False,
    )


# The fused kernel is a private torch API: fall back to the reference form where it is missing.
adam_step = _adam_step_fused if hasattr(torch, "_fused_adam_") else _adam_step_reference


def _relu_with_gradient(pre, mask):
    # With dropout the slope is the mask where the unit is active, 0 elsewhere: one pass.
    gate = (pre > 0).to(pre.dtype) if mask is None else mask * (pre > 0)
    return pre * gate, gate


def _tanh_with_gradient(pre, mask):
    act = torch.tanh(pre)
    gate = 1.0 - act * act
    return (act, gate) if mask is None else (act * mask, gate * mask)


def _sigmoid_with_gradient(pre, mask):
    act = torch.sigmoid(pre)
    gate = act * (1.0 - act)
    return (act, gate) if mask is None else (act * mask, gate * mask)


#: Activation and its derivative at ``pre``, for the hand-written backward pass.
_ACTIVATE_WITH_GRADIENT = {
    "relu": _relu_with_gradient,
    "tanh": _tanh_with_gradient,
    "sigmoid": _sigmoid_with_gradient,
}
