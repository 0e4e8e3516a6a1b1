"""(b) One grid cell's retraining: a plain per-system, per-sample PyTorch loop versus lockstep.

The cell: overlapping data (800 training rows), 10 epochs of batch-1 retraining with a fresh
Adam(1e-3), rows in order, for the systems of one model column of the synthetic grid (4 generators
x 5 repetitions = 20 systems): logistic regression (20 networks), the MLP (32 ReLU units, 20
networks) and the deep ensemble (5 MLPs per system, 100 networks). This is one round's retraining
of one model column, the cost that dominates the simulation.

* plain: what one would write without this package: per network an ``nn.Sequential``,
  ``torch.optim.Adam`` and ``BCEWithLogitsLoss`` with autograd, one optimiser step per row, one
  network after another;
* lockstep: ``recourse_sim.models.training.train_lockstep`` on the stacked networks (hand-written
  batched forward and backward passes, fused Adam on the flat parameter vector).

Both start from the same initial weights and see each network's own rows in the same order, in one
process with the same torch thread count; the final parameters are compared. The lockstep loop is
also timed shared between two processes (``processes=2``, the CLI's default).

Target (2-core CPU): lockstep at least 50 times faster than the plain loop on the same cell.

    python experiments/benchmarks/training_loop.py                       # every network, both ways
    python experiments/benchmarks/training_loop.py --plain-networks 4    # extrapolated from 4
    python experiments/benchmarks/training_loop.py --quick
"""

from __future__ import annotations

import numpy as np
import torch
from common import Stopwatch, load_1m, parser, results_name, write_results

from recourse_sim.data import make_overlapping
from recourse_sim.data.base import train_test_split
from recourse_sim.models import Architecture, StackedNetworks, TrainingSchedule, train_lockstep
from recourse_sim.utils import WorkerPool

N_SYSTEMS = 20  # 4 generators x 5 repetitions
CASES = {  # model column: (hidden sizes, members per system)
    "logistic": ((), 1),
    "mlp": ((32,), 1),
    "deep_ensemble": ((32,), 5),
}


def cell_data(n_nets: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-network training rows: the 800 overlapping training rows, moved a little per system.

    After some rounds every system's population differs; a small per-system perturbation stands
    in for that (the cost does not depend on the values).
    """
    rng = np.random.default_rng(seed)
    train, _ = train_test_split(make_overlapping(rng=rng), 0.2, rng)
    X = torch.tensor(train.X, dtype=torch.float32)
    y = torch.tensor(train.y, dtype=torch.float32)
    noise = torch.randn(n_nets, *X.shape, generator=torch.Generator().manual_seed(seed)) * 0.05
    return X.unsqueeze(0) + noise, y.unsqueeze(0).expand(n_nets, -1).contiguous()


def plain_module(nets: StackedNetworks, index: int) -> torch.nn.Sequential:
    """An ``nn.Sequential`` holding a copy of network ``index`` of the stack."""
    sizes = nets.architecture.sizes
    layers: list[torch.nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    module = torch.nn.Sequential(*layers)
    linears = [m for m in module if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for linear, weight, bias in zip(linears, nets.weights, nets.biases, strict=True):
            linear.weight.copy_(weight[index].T)  # the stack stores (in, out)
            linear.bias.copy_(bias[index])
    return module


def train_plain(module: torch.nn.Module, X: torch.Tensor, y: torch.Tensor, epochs: int) -> None:
    """The textbook loop: one Adam step per row, rows in order."""
    optimiser = torch.optim.Adam(module.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for _ in range(epochs):
        for i in range(X.shape[0]):
            optimiser.zero_grad()
            loss = loss_fn(module(X[i : i + 1]).squeeze(-1), y[i : i + 1])
            loss.backward()
            optimiser.step()


def max_difference(nets: StackedNetworks, index: int, module: torch.nn.Module) -> float:
    """Largest absolute difference between a stacked network and its plain copy."""
    linears = [m for m in module if isinstance(m, torch.nn.Linear)]
    diff = 0.0
    for linear, weight, bias in zip(linears, nets.weights, nets.biases, strict=True):
        diff = max(diff, (linear.weight.detach().T - weight[index]).abs().max().item())
        diff = max(diff, (linear.bias.detach() - bias[index]).abs().max().item())
    return diff


def run_case(
    name: str, epochs: int, plain_networks: int | None, seed: int = 0
) -> dict[str, object]:
    """Time both loops on one model column; the plain loop on the first ``plain_networks``."""
    hidden, members = CASES[name]
    n_nets = N_SYSTEMS * members
    nets = StackedNetworks(Architecture(2, hidden, "relu"), n_nets)
    nets.initialise(torch.Generator().manual_seed(seed))
    X, y = cell_data(n_nets, seed)
    n_rows = X.shape[1]
    n_plain = n_nets if plain_networks is None else min(plain_networks, n_nets)
    modules = [plain_module(nets, i) for i in range(n_plain)]
    schedule = TrainingSchedule(epochs=epochs, batch_size=1, learning_rate=1e-3)

    # Warm-up (first autograd, optimiser and kernel calls pay one-off costs), on throwaway copies.
    train_plain(plain_module(nets, 0), X[0, :50], y[0, :50], 1)
    warm = TrainingSchedule(epochs=1, batch_size=1, learning_rate=1e-3)
    train_lockstep(nets.clone(), X[:, :50], y[:, :50], warm, torch.Generator().manual_seed(1))

    load_before = load_1m()
    shared = nets.clone()
    with Stopwatch() as lockstep:
        train_lockstep(nets, X, y, schedule, torch.Generator().manual_seed(1))
    # The same training shared between this process and one worker (the CLI's default).
    with WorkerPool(2) as pool:
        train_lockstep(shared.clone(), X[:, :50], y[:, :50], warm, torch.Generator(), pool)
        with Stopwatch() as two_processes:
            train_lockstep(shared, X, y, schedule, torch.Generator().manual_seed(1), pool)
    shared_diff = (shared.flat - nets.flat).abs().max().item()
    with Stopwatch() as plain:
        for i, module in enumerate(modules):
            train_plain(module, X[i], y[i], epochs)
    diff = max(max_difference(nets, i, m) for i, m in enumerate(modules))
    scale = max(p.abs().max().item() for p in nets.weights)

    plain_total = plain.wall * n_nets / n_plain
    steps = epochs * n_rows
    return {
        "model": name,
        "networks": n_nets,
        "architecture": "-".join(str(s) for s in nets.architecture.sizes),
        "rows": n_rows,
        "epochs": epochs,
        "plain_networks_timed": n_plain,
        "plain_s": round(plain.wall, 2),
        "plain_all_s": round(plain_total, 2),
        "plain_extrapolated": "yes" if n_plain < n_nets else "no",
        "lockstep_s": round(lockstep.wall, 2),
        "speed_up": round(plain_total / lockstep.wall, 1),
        "lockstep_2_processes_s": round(two_processes.wall, 2),
        "speed_up_2_processes": round(plain_total / two_processes.wall, 1),
        "max_abs_diff_1_vs_2_processes": float(f"{shared_diff:.3g}"),
        "plain_us_per_net_step": round(1e6 * plain.wall / (n_plain * steps), 1),
        "lockstep_us_per_step": round(1e6 * lockstep.wall / steps, 1),
        "max_abs_param_diff": float(f"{diff:.3g}"),
        "max_abs_param": round(scale, 3),
        "load_1m_before": load_before,
        "load_1m_after": load_1m(),
    }


def main() -> None:
    args = parser(__doc__.split("\n\n")[0])
    args.add_argument(
        "--plain-networks",
        type=int,
        default=None,
        help="time the plain loop on this many networks per column and extrapolate linearly "
        "(default: all networks; --quick: 2)",
    )
    args.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1, as the CLI)"
    )
    opts = args.parse_args()
    torch.set_num_threads(opts.threads)
    epochs = 1 if opts.quick else 10
    plain_networks = opts.plain_networks if opts.plain_networks is not None else None
    if opts.quick and plain_networks is None:
        plain_networks = 2
    rows = []
    for name in CASES:
        row = run_case(name, epochs, plain_networks)
        print(row, flush=True)
        rows.append(row)
    total_plain = sum(float(r["plain_all_s"]) for r in rows)
    total_lockstep = sum(float(r["lockstep_s"]) for r in rows)
    speedups = [float(r["speed_up"]) for r in rows]
    extrapolated = any(r["plain_extrapolated"] == "yes" for r in rows)
    notes = [
        f"One round's retraining of each model column of a synthetic grid cell: {N_SYSTEMS} "
        "systems (4 generators x 5 repetitions), 800 rows each, batch size 1, rows in order, "
        f"fresh Adam(1e-3), {epochs} epoch(s). torch threads: {opts.threads} for both loops. "
        "`plain_s` is the measured time of the plain loop on `plain_networks_timed` networks, "
        "one after another; `plain_all_s` is that time scaled to all networks"
        + (
            " (**extrapolated linearly** from the timed subset: networks are independent and "
            "equally costly, so the plain loop's time is proportional to their number)"
            if extrapolated
            else " (equal to `plain_s`: every network was timed)"
        )
        + ". `lockstep_s` trains all networks of the column at once in this process; "
        "`lockstep_2_processes_s` shares them between this process and one worker (the CLI's "
        "default `processes=2`; `speed_up` compares like with like, one process each, "
        "`speed_up_2_processes` uses both cores). `max_abs_param_diff` is the "
        "largest absolute difference of any final parameter between the two loops on the "
        "networks trained both ways (float32; the loops round differently, so agreement is to "
        "rounding, not bit-exact); `max_abs_param` is the largest final weight, for scale.",
        f"All three columns: plain {total_plain:.1f} s, lockstep {total_lockstep:.2f} s, "
        f"{total_plain / total_lockstep:.0f} times faster. Target: at least 50 times faster "
        f"on the same cell: {'met' if min(speedups) >= 50 else 'missed'} "
        f"(smallest ratio {min(speedups):.0f}x, largest {max(speedups):.0f}x).",
    ]
    if opts.quick:
        notes.append(
            "Smoke-test version (`--quick`): 1 epoch, plain loop on 2 networks per column."
        )
    write_results(
        results_name("training_loop", opts.quick),
        rows,
        title="(b) Retraining one grid cell: plain per-sample PyTorch loop vs lockstep"
        + (" (quick)" if opts.quick else ""),
        notes=notes,
    )


if __name__ == "__main__":
    main()
