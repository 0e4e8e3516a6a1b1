"""Lockstep training of stacked networks with the reference study's optimiser semantics.

AlgorithmicRecourseDynamics.jl (v0.1.2) trains every classifier with a *fresh* Adam optimiser
(η=1e-3, β=(0.9, 0.999), ε=1e-8) on each call, mean logit binary cross-entropy, and by default a
data loader with batch size 1 and no shuffling: the rows are visited in order, one optimiser step
per row (Altmeyer et al., SaTML 2023, section IV; reference-semantics §1.6). That is a long chain
of tiny sequential steps, so per-step overhead dominates. Here every network of a stack takes its
step at the same time: the forward and backward passes are hand-written batched matrix products
that write straight into one flat gradient buffer (batch size 1 has a loop of its own that
allocates nothing per step), and the Adam update is one fused kernel on the flat parameter
vector. Each network still sees only its own rows in its own order, so the result equals training
the networks one by one (``tests/test_models.py`` checks this against ``torch.optim.Adam`` with
autograd). :func:`train_stacks` shares several stacks, or slices of one, between processes.

The hand-written backward pass covers only the activations with a derivative in
:data:`~recourse_sim.models.activations.ACTIVATIONS`; any other network (or one configured with
``training_path=autograd``) takes the autograd path, which has the same semantics (rows, batches,
dropout masks, Adam) with torch computing the gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

import torch
import torch.nn.functional as F

from recourse_sim import checks
from recourse_sim.models.activations import ACTIVATIONS
from recourse_sim.models.network import StackedNetworks, binary_logit
from recourse_sim.utils.workers import WorkerPool, balanced_slices


@dataclass(frozen=True)
class TrainingSchedule:
    """How one ``fit`` call trains: epochs, mini-batch size and Adam's learning rate."""

    epochs: int = 10
    batch_size: int = 1
    learning_rate: float = 1e-3

    def validate(self, key: str) -> TrainingSchedule:
        """This schedule with checked, canonical values; :class:`ConfigError` names ``key.X``.

        ``epochs`` may be 0 (no training: e.g. ``retrain.epochs=0`` keeps the model fixed).
        """
        return replace(
            self,
            epochs=checks.integer(f"{key}.epochs", self.epochs, minimum=0),
            batch_size=checks.integer(f"{key}.batch_size", self.batch_size, minimum=1),
            learning_rate=checks.real(
                f"{key}.learning_rate", self.learning_rate, minimum=0, low_open=True
            ),
        )


ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def train_lockstep(
    nets: StackedNetworks,
    X: torch.Tensor,
    y: torch.Tensor,
    schedule: TrainingSchedule,
    generator: torch.Generator,
    pool: WorkerPool | None = None,
) -> None:
    """Train every network on its own rows, in place, with a fresh Adam state.

    Args:
        nets: The stack to train (its flat parameters are updated in place).
        X: Features of shape ``(n_nets, N, d)``; network ``i`` trains on ``X[i]`` in row order.
        y: Labels in {0, 1} of shape ``(n_nets, N)``.
        schedule: Epochs, batch size (the last batch of an epoch may be smaller, as Flux's
            ``DataLoader``) and learning rate.
        generator: Random stream for dropout masks.
        pool: Processes to share the networks between (None: this process alone). The result
            does not depend on it beyond float rounding.
    """
    train_stacks([(nets, X, y, schedule, generator)], pool)


#: One training job of :func:`train_stacks`: ``(nets, X, y, schedule, generator)``.
TrainingJob = tuple[StackedNetworks, torch.Tensor, torch.Tensor, TrainingSchedule, torch.Generator]


def train_jobs(jobs: list, pool: WorkerPool | None = None) -> None:
    """Run training jobs of any model kind.

    Lockstep stacks go through :func:`train_stacks`; jobs that train themselves (torch modules,
    scikit-learn estimators) through their ``run``.
    """
    train_stacks([job for job in jobs if isinstance(job, tuple)], pool)
    for job in jobs:
        if not isinstance(job, tuple):
            job.run(pool)


def train_stacks(jobs: list[TrainingJob], pool: WorkerPool | None = None) -> None:
    """Train independent stacks (each as :func:`train_lockstep`), sharing them between processes.

    A single stack is cut into one slice of networks per process; several stacks are spread
    whole over the processes, the costliest first, each to the least loaded process.
    """
    tasks = []  # (nets, start, stop, arguments of _train_shard, estimated cost)
    for nets, X, y, schedule, generator in jobs:
        if schedule.epochs == 0 or X.shape[1] == 0:
            continue
        # One dropout stream per network, seeded from ``generator``: a network's masks then do
        # not depend on which other networks share its stack or its process.
        seeds = None
        if nets.architecture.dropout > 0:
            seeds = torch.randint(0, 2**62, (nets.n_nets,), generator=generator).tolist()
        # Worker processes compute on the CPU; with none, train in place without copies.
        on_cpu = nets.flat.device.type == "cpu"
        shared = pool is not None and pool.processes > 1 and on_cpu
        parts = [(0, nets.n_nets)]
        if len(jobs) == 1 and on_cpu:
            # A lone stack is cut into slices, one per process but never fewer than two, and
            # without workers the slices train one after the other: float rounding of the
            # vectorised kernels depends on a network's position in its slice, so the cut must
            # not depend on whether one process or two do the work (CONVENTIONS.md rule 1).
            processes = pool.processes if pool is not None else 1
            parts = balanced_slices(nets.n_nets, max(2, processes))
        steps = schedule.epochs * -(-X.shape[1] // schedule.batch_size)
        for start, stop in parts:
            if not shared:
                if (start, stop) == (0, nets.n_nets):
                    _train(nets, X, y, schedule, seeds)
                    continue
                part = nets.take(range(start, stop))
                part_seeds = None if seeds is None else seeds[start:stop]
                _train(part, X[start:stop], y[start:stop], schedule, part_seeds)
                nets.assign(start, part)
                continue
            arguments = (
                nets.architecture,
                nets.take(range(start, stop)).flat.numpy(),
                X[start:stop].to(torch.float32).numpy(),
                y[start:stop].to(torch.float32).numpy(),
                schedule,
                None if seeds is None else seeds[start:stop],
            )
            tasks.append((nets, start, stop, arguments, steps * _step_cost(nets, stop - start)))
    if not tasks:
        return
    results = pool.run_all(
        [(_train_shard, arguments) for *_, arguments, _ in tasks],
        movable=[True] * len(tasks),
        costs=[cost for *_, cost in tasks],
    )
    for (nets, start, stop, *_), flat in zip(tasks, results, strict=True):
        nets.assign(start, StackedNetworks(nets.architecture, stop - start, torch.from_numpy(flat)))


def _step_cost(nets: StackedNetworks, n_nets: int) -> float:
    """Rough microseconds per training step (measured here: per-operation overhead + Adam)."""
    return 6.0 + 5.0 * nets.architecture.n_layers + 0.0015 * n_nets * nets.architecture.n_parameters


def _train_shard(architecture, flat, X, y, schedule, seeds):
    """Train one slice of networks, numpy in, numpy out (so a worker process can run it)."""
    nets = StackedNetworks(architecture, len(X), torch.from_numpy(flat))
    _train(nets, torch.from_numpy(X), torch.from_numpy(y), schedule, seeds)
    return nets.flat.numpy()


def _train(
    nets: StackedNetworks,
    X: torch.Tensor,
    y: torch.Tensor,
    schedule: TrainingSchedule,
    seeds: list[int] | None,
) -> None:
    """The training loop of :func:`train_lockstep`, in this process."""
    # Adam's moment estimates decay geometrically wherever a gradient stays zero (dead ReLU
    # units, dropped units) and reach subnormal floats after some hundred steps; arithmetic on
    # those is over ten times slower here. Flushing them to zero changes updates by < 1e-30.
    torch.set_flush_denormal(True)
    try:
        if not nets.architecture.trains_fast:
            _train_autograd(nets, X, y, schedule, seeds)
        elif int(schedule.batch_size) == 1 and nets.architecture.output_dim == 1:
            _train_per_sample(nets, X, y, schedule, seeds)
        else:
            _train_batched(nets, X, y, schedule, seeds)
    finally:
        torch.set_flush_denormal(False)


class TrainingObjective(Protocol):
    """Extra loss terms of a training objective beyond the classification loss.

    The training loop calls :meth:`start_epoch` before each epoch's first step, then for each
    mini-batch asks :meth:`inputs` for the extra points its terms evaluate and passes the
    networks' outputs at them to :meth:`loss` (autograd) or :meth:`output_gradient` (the
    hand-written fast path).
    """

    #: Weight of the classification loss (mean binary cross-entropy over the batch).
    class_weight: float

    def start_epoch(self, epoch: int, n_epochs: int, n_batches: int) -> None:
        """Prepare the epoch (e.g. search counterfactuals with the current weights)."""

    def inputs(self, batch: int) -> torch.Tensor | None:
        """Extra points ``(n_nets, m, d)`` for batch ``batch`` of the epoch, or None."""

    def loss(self, batch: int, outputs: torch.Tensor) -> torch.Tensor:
        """Each network's extra loss ``(n_nets,)`` from its outputs ``(n_nets, m, k)`` there.

        ``k`` is 1 (one logit) or 2 (one logit per class).
        """

    def output_gradient(self, batch: int, outputs: torch.Tensor) -> torch.Tensor:
        """The derivative of :meth:`loss` with respect to those outputs ``(n_nets, m, k)``.

        The hand-written fast path back-propagates it.
        """


def train_with_objective(
    nets: StackedNetworks,
    X: torch.Tensor,
    y: torch.Tensor,
    schedule: TrainingSchedule,
    seeds: list[int] | None,
    objective: TrainingObjective,
) -> None:
    """Train every network of ``nets`` in place with ``objective``'s extra terms.

    The hand-written batched path back-propagates the objective's output gradients where it
    covers the activation (``training_path`` ``auto`` or ``fast``; batch size 1 included, as
    batches of one row plus the objective's points); autograd does otherwise. Both give the same
    steps up to float rounding.
    """
    torch.set_flush_denormal(True)  # as in _train
    try:
        if nets.architecture.trains_fast:
            _train_batched(nets, X, y, schedule, seeds, objective)
        else:
            _train_autograd(nets, X, y, schedule, seeds, objective)
    finally:
        torch.set_flush_denormal(False)


def _train_autograd(
    nets: StackedNetworks,
    X: torch.Tensor,
    y: torch.Tensor,
    schedule: TrainingSchedule,
    seeds: list[int] | None,
    objective: TrainingObjective | None = None,
) -> None:
    """Any architecture and batch size: the same steps as the fast paths, gradients by autograd.

    Each network's loss is the mean binary cross-entropy over its own batch; summing the
    networks' losses leaves each network's gradient its own. Dropout masks are drawn exactly as
    on the fast paths, so both paths agree even with dropout.

    An ``objective`` adds its terms to each network's loss. Their points are evaluated in the
    same forward pass as the batch, without dropout (deterministic terms; the batch's own rows
    keep their masks).
    """
    X = X.to(torch.float32).contiguous()
    y = y.to(torch.float32).contiguous()
    n_rows = X.shape[1]
    batch = int(schedule.batch_size)
    lr = float(schedule.learning_rate)
    n_batches = -(-n_rows // batch)
    class_weight = 1.0 if objective is None else float(objective.class_weight)
    exp_avg = torch.zeros_like(nets.flat)
    exp_avg_sq = torch.zeros_like(nets.flat)
    streams = None if seeds is None else [torch.Generator().manual_seed(s) for s in seeds]
    for epoch in range(int(schedule.epochs)):
        if objective is not None:
            objective.start_epoch(epoch, int(schedule.epochs), n_batches)
        masks = None if streams is None else nets.dropout_masks(n_rows, streams)
        steps = _step_counts(epoch, n_batches, nets.flat.device)
        for index, (step, start) in enumerate(zip(steps, range(0, n_rows, batch), strict=True)):
            stop = min(start + batch, n_rows)
            extra = None if objective is None else objective.inputs(index)
            with torch.enable_grad():
                flat = nets.flat.detach().requires_grad_(True)
                batch_masks = None if masks is None else [m[:, start:stop] for m in masks]
                points = X[:, start:stop]
                if extra is not None:
                    points = torch.cat([points, extra], dim=1)
                    if batch_masks is not None:
                        batch_masks = [_unmasked(m, extra.shape[1]) for m in batch_masks]
                outputs = nets.forward(points, batch_masks, flat=flat)
                logits = binary_logit(outputs)
                losses = F.binary_cross_entropy_with_logits(
                    logits[:, : stop - start], y[:, start:stop], reduction="none"
                )
                total = losses.mean(dim=1)
                if class_weight != 1.0:
                    total = class_weight * total
                if extra is not None:
                    total = total + objective.loss(index, outputs[:, stop - start :])
                (grad,) = torch.autograd.grad(total.sum(), flat)
            with torch.no_grad():
                adam_step(nets.flat, grad, exp_avg, exp_avg_sq, step, lr)


def _unmasked(mask: torch.Tensor, extra_rows: int) -> torch.Tensor:
    """A batch's dropout mask ``(n, b, h)`` followed by all-ones rows for ``extra_rows`` points."""
    ones = mask.new_ones(mask.shape[0], extra_rows, mask.shape[2])
    return torch.cat([mask, ones], dim=1)


def _train_batched(
    nets: StackedNetworks,
    X: torch.Tensor,
    y: torch.Tensor,
    schedule: TrainingSchedule,
    seeds: list[int] | None,
    objective: TrainingObjective | None = None,
) -> None:
    """Any batch size: forward and hand-written backward pass over all networks at once.

    An ``objective``'s points join the batch's rows in the same passes (without dropout), their
    gradients coming from :meth:`TrainingObjective.output_gradient`. Networks with two outputs
    (class logits) train on the binary logit ``o_1 − o_0``.
    """
    X = X.to(torch.float32).contiguous()
    y = y.to(torch.float32).unsqueeze(-1).contiguous()  # (n_nets, N, 1), shaped like the logits
    n_rows = X.shape[1]
    arch = nets.architecture
    grad = torch.zeros_like(nets.flat)
    grad_weights, grad_biases = nets.views(grad)
    exp_avg = torch.zeros_like(nets.flat)
    exp_avg_sq = torch.zeros_like(nets.flat)
    batch = int(schedule.batch_size)
    lr = float(schedule.learning_rate)
    activate = _with_gradient(arch.activation)
    n_hidden = len(arch.hidden_sizes)
    biases = [b.unsqueeze(1) for b in nets.biases]
    weights_t = [w.transpose(1, 2) for w in nets.weights]
    grad_biases = [g.unsqueeze(1) for g in grad_biases]
    streams = None if seeds is None else [torch.Generator().manual_seed(s) for s in seeds]
    n_batches = -(-n_rows // batch)
    class_weight = 1.0 if objective is None else float(objective.class_weight)
    two_outputs = None
    if arch.output_dim == 2:
        two_outputs = torch.tensor([-1.0, 1.0], device=nets.flat.device)
    with torch.no_grad():
        for epoch in range(int(schedule.epochs)):
            if objective is not None:
                objective.start_epoch(epoch, int(schedule.epochs), n_batches)
            masks = None if streams is None else nets.dropout_masks(n_rows, streams)
            steps = _step_counts(epoch, n_batches, nets.flat.device)
            for index, (step, start) in enumerate(zip(steps, range(0, n_rows, batch), strict=True)):
                stop = min(start + batch, n_rows)
                extra = None if objective is None else objective.inputs(index)
                # Forward pass, keeping each layer's input and activation slope for the backward
                # pass. Every operation covers all networks at once; none allocates gradients.
                inputs = [X[:, start:stop]]
                if extra is not None:
                    inputs = [torch.cat([inputs[0], extra.to(X.dtype)], dim=1)]
                gates = []
                for layer in range(n_hidden):
                    pre = torch.baddbmm(biases[layer], inputs[-1], nets.weights[layer])
                    mask = None if masks is None else masks[layer][:, start:stop]
                    if mask is not None and extra is not None:
                        mask = _unmasked(mask, extra.shape[1])
                    act, gate = activate(pre, mask)
                    gates.append(gate)
                    inputs.append(act)
                logit = torch.baddbmm(biases[-1], inputs[-1], nets.weights[-1])
                # d(mean BCE-with-logits)/d(logit) = (sigmoid(logit) - y) / batch size.
                if extra is None and two_outputs is None:
                    delta = torch.sigmoid(logit).sub_(y[:, start:stop])
                    if stop - start > 1:
                        delta.div_(stop - start)
                else:
                    rows = stop - start
                    z = logit[:, :rows] if two_outputs is None else binary_logit(logit[:, :rows])
                    if two_outputs is not None:
                        z = z.unsqueeze(-1)
                    delta = torch.sigmoid(z).sub_(y[:, start:stop]).mul_(class_weight / rows)
                    if two_outputs is not None:  # d z / d(o_0, o_1) = (-1, 1)
                        delta = delta * two_outputs
                    if extra is not None:
                        extra_delta = objective.output_gradient(index, logit[:, rows:])
                        delta = torch.cat([delta, extra_delta], dim=1)
                for layer in range(n_hidden, -1, -1):
                    torch.bmm(inputs[layer].transpose(1, 2), delta, out=grad_weights[layer])
                    torch.sum(delta, dim=1, keepdim=True, out=grad_biases[layer])
                    if layer > 0:
                        delta = torch.bmm(delta, weights_t[layer]).mul_(gates[layer - 1])
                adam_step(nets.flat, grad, exp_avg, exp_avg_sq, step, lr)


def _train_per_sample(
    nets: StackedNetworks,
    X: torch.Tensor,
    y: torch.Tensor,
    schedule: TrainingSchedule,
    seeds: list[int] | None,
) -> None:
    """Batch size 1 (the reference's default), with as few tensor operations per step as possible.

    A step's tensors are tiny, so its cost is the number of operations, not their size. With
    one row per step a row vector and a column vector share their memory, so every activation
    and gradient lives in a buffer allocated once and viewed both ways; the operations write into
    those buffers (``out=``), the bias gradients are the back-propagated deltas themselves, and
    no step allocates, reshapes or transposes anything.
    """
    arch = nets.architecture
    n, n_rows = nets.n_nets, X.shape[1]
    hidden = arch.hidden_sizes
    n_layers = arch.n_layers
    # Per-row views of the data, made once: rows (n, 1, d), columns (n, d, 1), labels (n, 1, 1).
    X = X.to(torch.float32).contiguous()
    x_rows = X.unsqueeze(2).unbind(1)
    x_cols = X.unsqueeze(3).unbind(1)
    y_rows = y.to(torch.float32).reshape(n, n_rows, 1, 1).unbind(1)
    # Row-vector times matrix is the fast orientation of batched products for these shapes.
    weights_t = [w.transpose(1, 2) for w in nets.weights]  # (n, out, in), for the backward pass
    bias_rows = [b.unsqueeze(1) for b in nets.biases]  # (n, 1, out)
    grad = torch.zeros_like(nets.flat)
    grad_weights, grad_biases = nets.views(grad)
    # The delta at layer l's output is its bias gradient: it is computed straight into that buffer.
    deltas = [g.unsqueeze(1) for g in grad_biases]  # (n, 1, out)
    device = nets.flat.device
    pre = [torch.empty(n, 1, h, device=device) for h in hidden]
    gate = [torch.empty(n, 1, h, device=device) for h in hidden]
    act = [torch.empty(n, 1, h, device=device) for h in hidden]
    act_cols = [a.view(n, h, 1) for a, h in zip(act, hidden, strict=True)]  # same memory
    logit = torch.empty(n, 1, 1, device=device)
    exp_avg = torch.zeros_like(nets.flat)
    exp_avg_sq = torch.zeros_like(nets.flat)
    lr = float(schedule.learning_rate)
    activation = ACTIVATIONS[arch.activation]
    # Slopes of smooth activations are kept from the forward pass; ReLU's is read off its output.
    smooth = activation.derivative == "output"
    last = n_layers - 1
    streams = None if seeds is None else [torch.Generator().manual_seed(s) for s in seeds]
    with torch.no_grad():
        for epoch in range(int(schedule.epochs)):
            steps = _step_counts(epoch, n_rows, nets.flat.device)
            masks = None
            if streams is not None:
                masks = [m.unsqueeze(2).unbind(1) for m in nets.dropout_masks(n_rows, streams)]
            for row in range(n_rows):
                inputs = [x_rows[row], *act]
                input_cols = [x_cols[row], *act_cols]
                for layer in range(last):
                    linear = pre[layer] if smooth else act[layer]
                    torch.baddbmm(bias_rows[layer], inputs[layer], nets.weights[layer], out=linear)
                    if smooth:
                        activation.function(pre[layer], out=act[layer])
                        activation.slope_into(act[layer], gate[layer])
                    else:
                        act[layer].clamp_min_(0.0)
                    if masks is not None:
                        act[layer].mul_(masks[layer][row])
                        if smooth:
                            gate[layer].mul_(masks[layer][row])
                torch.baddbmm(bias_rows[last], inputs[last], nets.weights[last], out=logit)
                # d(BCE-with-logits)/d(logit) = sigmoid(logit) - y.
                torch.sigmoid(logit, out=deltas[last]).sub_(y_rows[row])
                for layer in range(last, -1, -1):
                    # Outer product of the layer's input (column) and its output delta (row).
                    torch.mul(input_cols[layer], deltas[layer], out=grad_weights[layer])
                    if layer == 0:
                        continue
                    below = torch.bmm(deltas[layer], weights_t[layer], out=deltas[layer - 1])
                    if smooth:
                        below.mul_(gate[layer - 1])
                        continue
                    # ReLU: zero where the output is zero (inactive or dropped), then scale the
                    # kept units as the forward pass did.
                    _relu_backward(below, act[layer - 1], 0.0, grad_input=below)
                    if masks is not None:
                        below.mul_(masks[layer - 1][row])
                adam_step(nets.flat, grad, exp_avg, exp_avg_sq, steps[row], lr)


def _step_counts(epoch: int, steps_per_epoch: int, device) -> tuple[torch.Tensor, ...]:
    """Adam's step numbers t = 1, 2, ... for one epoch, as the 0-d tensors its kernel reads."""
    first = epoch * steps_per_epoch + 1
    counts = torch.arange(first, first + steps_per_epoch, dtype=torch.float32, device=device)
    return counts.unbind()


_relu_backward = torch.ops.aten.threshold_backward.grad_input


def _adam_step_reference(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: torch.Tensor,
    lr: float,
) -> None:
    """One Adam update (Kingma & Ba 2015, in the form Flux and torch share), in place.

    ``step`` holds this update's number t (1 for the first).
    """
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


def _with_gradient(name: str):
    """Activation ``name`` and its slope at ``pre`` (dropped units: 0), for the batched path."""
    activation = ACTIVATIONS[name]

    def relu(pre, mask):
        # With dropout the slope is the mask where the unit is active, 0 elsewhere: one pass.
        gate = (pre > 0).to(pre.dtype) if mask is None else mask * (pre > 0)
        return pre * gate, gate

    def smooth(pre, mask):
        act = activation.function(pre)
        gate = activation.slope(act)
        return (act, gate) if mask is None else (act * mask, gate * mask)

    return relu if activation.derivative == "relu" else smooth
