"""(b) One grid cell's retraining: a plain PyTorch loop, lockstep, and the general training paths.

The cell: overlapping data (800 training rows), 10 epochs of batch-1 retraining with a fresh
Adam(1e-3), rows in order, for the systems of one model column of the synthetic grid (4 generators
x 5 repetitions = 20 systems): logistic regression (20 networks), the MLP (32 ReLU units, 20
networks) and the deep ensemble (5 MLPs per system, 100 networks; the members of a system train
on their system's rows, as in a simulation). This is one round's retraining of one model column,
the cost that dominates the simulation.

* plain: what one would write without this package: per network an ``nn.Sequential``,
  ``torch.optim.Adam`` and ``BCEWithLogitsLoss`` with autograd, one optimiser step per row, one
  network after another;
* lockstep (the fast path): ``recourse_sim.models.training.train_lockstep`` on the stacked
  networks (``training_path="auto"``: hand-written batched forward and backward passes, fused
  Adam on the flat parameter vector);
* autograd: the same ``train_lockstep`` on a stack with ``training_path="autograd"`` (torch
  autograd through the batched forward pass, the same fused Adam);
* torch module: ``recourse_sim.models.torch_module.TorchModule`` with the built-in factory
  ``recourse_sim.models.modules.mlp`` (same layers; ``hidden_sizes: []`` for the logistic
  column), ``n_members`` 1 or 5, initialised and replicated to 20 systems, trained by
  ``StackedModules.fit``: all networks in one ``torch.func.vmap`` call of ``functional_call``
  (``vectorise: auto``), and one network after another in a Python loop (``vectorise: never``;
  by default timed on 20 networks per column and extrapolated linearly).

All start from the same initial weights (the stack's, copied into the plain modules and the torch
modules) and see each network's own rows in the same order, in one process with the same torch
thread count; every path's final parameters are compared with the fast path's. The lockstep loop
is also timed shared between two processes (``processes=2``, the CLI's default).

Target (2-core CPU): lockstep at least 50 times faster than the plain loop on the same cell. The
general paths have no target; their columns say what they cost relative to the fast path.

    python experiments/benchmarks/training_loop.py                       # every path
    python experiments/benchmarks/training_loop.py --plain-networks 4    # plain loop from 4
    python experiments/benchmarks/training_loop.py --module-loop-networks 100  # loop on all
    python experiments/benchmarks/training_loop.py --quick
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import torch
from common import Stopwatch, load_1m, parser, results_name, write_results

from recourse_sim.data import make_overlapping
from recourse_sim.data.base import train_test_split
from recourse_sim.models import Architecture, StackedNetworks, TrainingSchedule, train_lockstep
from recourse_sim.models.torch_module import StackedModules, TorchModule
from recourse_sim.utils import WorkerPool

N_SYSTEMS = 20  # 4 generators x 5 repetitions
CASES = {  # model column: (hidden sizes, members per system)
    "logistic": ((), 1),
    "mlp": ((32,), 1),
    "deep_ensemble": ((32,), 5),
}
#: Rounds of timing the lockstep loop and the general vectorised paths one after the other, each
#: from the same initial weights (the table has medians; the ratios are per round).
ROUNDS = 3
#: The built-in factory of the torch-module kind (the same layers as the stack's networks).
FACTORY = "recourse_sim.models.modules.mlp"


def cell_data(n_nets: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``n_nets`` systems: the 800 overlapping training rows, moved a little per system.

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


def _linear_names(modules: StackedModules) -> list[str]:
    """Names of the template's ``Linear`` layers, input layer first."""
    template = modules.template
    return [name for name, m in template.named_modules() if isinstance(m, torch.nn.Linear)]


def torch_modules(
    nets: StackedNetworks, members: int, vectorise: str, seed: int = 0
) -> StackedModules:
    """The stack's networks as a torch-module classifier of ``N_SYSTEMS`` systems.

    Network ``s * members + m`` of the stack becomes member ``m`` of system ``s`` (the
    classifier's own layout), its weights copied over the module's default initialisation.
    """
    spec = TorchModule(
        module={
            "_target_": FACTORY,
            "hidden_sizes": list(nets.architecture.hidden_sizes),
            "activation": nets.architecture.activation,
        },
        n_members=members,
        vectorise=vectorise,
    )
    modules = spec.initialise(nets.architecture.input_dim, torch.Generator().manual_seed(seed))
    modules = modules.replicate(nets.n_nets // members)
    names = _linear_names(modules)
    with torch.no_grad():
        for name, weight, bias in zip(names, nets.weights, nets.biases, strict=True):
            modules.params[f"{name}.weight"].copy_(weight.transpose(1, 2))  # (n, out, in)
            modules.params[f"{name}.bias"].copy_(bias)
    return modules


def module_difference(nets: StackedNetworks, modules: StackedModules) -> float:
    """Largest absolute parameter difference of ``modules`` and the first networks of ``nets``."""
    n = modules.n_nets
    diff = 0.0
    for name, weight, bias in zip(_linear_names(modules), nets.weights, nets.biases, strict=True):
        mine = modules.params[f"{name}.weight"].detach()
        diff = max(diff, (mine - weight[:n].transpose(1, 2)).abs().max().item())
        diff = max(diff, (modules.params[f"{name}.bias"].detach() - bias[:n]).abs().max().item())
    return diff


def run_case(
    name: str,
    epochs: int,
    plain_networks: int | None,
    module_loop_networks: int | None,
    seed: int = 0,
) -> dict[str, object]:
    """Time every path on one model column; the loops on their first networks only, if asked."""
    hidden, members = CASES[name]
    n_nets = N_SYSTEMS * members
    nets = StackedNetworks(Architecture(2, hidden, "relu"), n_nets)
    nets.initialise(torch.Generator().manual_seed(seed))
    # One set of rows per system; the members of an ensemble share their system's rows.
    X_sys, y_sys = cell_data(N_SYSTEMS, seed)
    X = X_sys.repeat_interleave(members, dim=0)
    y = y_sys.repeat_interleave(members, dim=0)
    n_rows = X.shape[1]
    n_plain = n_nets if plain_networks is None else min(plain_networks, n_nets)
    modules = [plain_module(nets, i) for i in range(n_plain)]
    schedule = TrainingSchedule(epochs=epochs, batch_size=1, learning_rate=1e-3)
    # The general paths, from the same initial weights.
    autograd = StackedNetworks(Architecture(2, hidden, "relu", training_path="autograd"), n_nets)
    autograd.flat.copy_(nets.flat)
    vmapped = torch_modules(nets, members, "auto", seed)
    loop_systems = N_SYSTEMS
    if module_loop_networks is not None:
        loop_systems = max(1, min(N_SYSTEMS, math.ceil(module_loop_networks / members)))
    looped = torch_modules(nets, members, "never", seed).select(range(loop_systems))
    n_loop = looped.n_nets

    # Warm-up (first autograd, optimiser and kernel calls pay one-off costs; the torch module's
    # first training pass decides whether vmap runs it), on throwaway copies.
    train_plain(plain_module(nets, 0), X[0, :50], y[0, :50], 1)
    warm = TrainingSchedule(epochs=1, batch_size=1, learning_rate=1e-3)
    train_lockstep(nets.clone(), X[:, :50], y[:, :50], warm, torch.Generator().manual_seed(1))
    train_lockstep(autograd.clone(), X[:, :50], y[:, :50], warm, torch.Generator())
    vmapped.clone().fit(X_sys[:, :50], y_sys[:, :50], warm, torch.Generator())
    looped.select([0]).fit(X_sys[:1, :50], y_sys[:1, :50], warm, torch.Generator())

    load_before = load_1m()
    # Other work on a shared machine slows a process down for seconds to minutes at a time: the
    # fast path and the general vectorised paths are timed in rounds, one after the other, each
    # from the initial weights; a path's time is its median, its ratio to the fast path the
    # median of the rounds' ratios.
    initial, initial_autograd, initial_vmapped = nets.clone(), autograd.clone(), vmapped.clone()
    times: dict[str, list[float]] = {"fast": [], "autograd": [], "vmap": [], "shared": []}
    for _ in range(ROUNDS):
        nets, autograd, vmapped = initial.clone(), initial_autograd.clone(), initial_vmapped.clone()
        with Stopwatch() as lockstep:
            train_lockstep(nets, X, y, schedule, torch.Generator().manual_seed(1))
        with Stopwatch() as autograd_time:
            train_lockstep(autograd, X, y, schedule, torch.Generator().manual_seed(1))
        with Stopwatch() as vmap_time:
            vmapped.fit(X_sys, y_sys, schedule, torch.Generator().manual_seed(1))
        times["fast"].append(lockstep.wall)
        times["autograd"].append(autograd_time.wall)
        times["vmap"].append(vmap_time.wall)
    # The same training shared between this process and one worker (the CLI's default).
    with WorkerPool(2) as pool:
        train_lockstep(initial.clone(), X[:, :50], y[:, :50], warm, torch.Generator(), pool)
        for _ in range(ROUNDS):
            shared = initial.clone()
            with Stopwatch() as two_processes:
                train_lockstep(shared, X, y, schedule, torch.Generator().manual_seed(1), pool)
            times["shared"].append(two_processes.wall)
    fast = statistics.median(times["fast"])
    fast_shared = statistics.median(times["shared"])

    def versus_fast(path: str) -> float:
        ratios = [t / f for t, f in zip(times[path], times["fast"], strict=True)]
        return round(statistics.median(ratios), 1)

    shared_diff = (shared.flat - nets.flat).abs().max().item()
    with Stopwatch() as loop_time:
        looped.fit(X_sys[:loop_systems], y_sys[:loop_systems], schedule, torch.Generator())
    with Stopwatch() as plain:
        for i, module in enumerate(modules):
            train_plain(module, X[i], y[i], epochs)
    diff = max(max_difference(nets, i, m) for i, m in enumerate(modules))
    scale = max(p.abs().max().item() for p in nets.weights)
    if not vmapped.vectorised["train"]:
        raise SystemExit(f"{name}: torch.func.vmap did not run the torch module")

    plain_total = plain.wall * n_nets / n_plain
    loop_total = loop_time.wall * n_nets / n_loop
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
        "rounds": ROUNDS,
        "lockstep_s": round(fast, 3),
        "speed_up": round(plain_total / fast, 1),
        "lockstep_2_processes_s": round(fast_shared, 3),
        "speed_up_2_processes": round(plain_total / fast_shared, 1),
        "max_abs_diff_1_vs_2_processes": float(f"{shared_diff:.3g}"),
        "plain_us_per_net_step": round(1e6 * plain.wall / (n_plain * steps), 1),
        "lockstep_us_per_step": round(1e6 * fast / steps, 1),
        "max_abs_param_diff": float(f"{diff:.3g}"),
        "max_abs_param": round(scale, 3),
        "autograd_s": round(statistics.median(times["autograd"]), 2),
        "autograd_vs_fast": versus_fast("autograd"),
        "max_abs_param_diff_autograd": float(
            f"{(autograd.flat - nets.flat).abs().max().item():.3g}"
        ),
        "torch_module_s": round(statistics.median(times["vmap"]), 2),
        "torch_module_vs_fast": versus_fast("vmap"),
        "max_abs_param_diff_torch_module": float(f"{module_difference(nets, vmapped):.3g}"),
        "torch_module_loop_networks_timed": n_loop,
        "torch_module_loop_timed_s": round(loop_time.wall, 2),
        "torch_module_loop_s": round(loop_total, 2),
        "torch_module_loop_extrapolated": "yes" if n_loop < n_nets else "no",
        "torch_module_loop_vs_fast": round(loop_total / fast, 1),
        "max_abs_param_diff_torch_module_loop": float(f"{module_difference(nets, looped):.3g}"),
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
        "--module-loop-networks",
        type=int,
        default=20,
        help="time the torch module's loop (vectorise: never) on this many networks per column "
        "(whole systems) and extrapolate linearly (default 20: every network of the logistic and "
        "MLP columns, 4 of the 20 ensembles; --quick: 2)",
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
    loop_networks = min(opts.module_loop_networks, 2) if opts.quick else opts.module_loop_networks
    rows = []
    for name in CASES:
        row = run_case(name, epochs, plain_networks, loop_networks)
        print(row, flush=True)
        rows.append(row)
    total_plain = sum(float(r["plain_all_s"]) for r in rows)
    total_lockstep = sum(float(r["lockstep_s"]) for r in rows)
    speedups = [float(r["speed_up"]) for r in rows]
    extrapolated = any(r["plain_extrapolated"] == "yes" for r in rows)
    loop_extrapolated = [r["model"] for r in rows if r["torch_module_loop_extrapolated"] == "yes"]

    def total(key: str) -> float:
        return sum(float(r[key]) for r in rows)

    general_diff = max(
        float(r[k])
        for r in rows
        for k in (
            "max_abs_param_diff_autograd",
            "max_abs_param_diff_torch_module",
            "max_abs_param_diff_torch_module_loop",
        )
    )
    notes = [
        f"One round's retraining of each model column of a synthetic grid cell: {N_SYSTEMS} "
        "systems (4 generators x 5 repetitions), 800 rows each, batch size 1, rows in order, "
        f"fresh Adam(1e-3), {epochs} epoch(s); the 5 members of a deep ensemble train on their "
        f"system's rows. torch threads: {opts.threads} for every path. "
        "`plain_s` is the measured time of the plain loop on `plain_networks_timed` networks, "
        "one after another; `plain_all_s` is that time scaled to all networks"
        + (
            " (**extrapolated linearly** from the timed subset: networks are independent and "
            "equally costly, so the plain loop's time is proportional to their number)"
            if extrapolated
            else " (equal to `plain_s`: every network was timed)"
        )
        + ". `lockstep_s` (the fast path) trains all networks of the column at once in this "
        f"process (the median of `rounds` = {ROUNDS} runs from the same initial weights, as is "
        "`lockstep_2_processes_s`, which shares them between this process and one worker: the "
        "CLI's default `processes=2`; `speed_up` compares like with like, one process each, "
        "`speed_up_2_processes` uses both cores). `max_abs_param_diff` is the "
        "largest absolute difference of any final parameter between the plain loop and the fast "
        "path on the networks trained both ways (float32; the loops round differently, so "
        "agreement is to rounding, not bit-exact; on ReLU networks a rounding-level "
        "difference can switch a unit on or off for one row at one step, after which that "
        "network's parameters differ by more than rounding, up to the size of Adam steps, the "
        "learning rate being 1e-3); "
        "`max_abs_param` is the largest final weight, for scale.",
        "The general training paths, each measured on this cell in one process from the fast "
        "path's initial weights; every `*_vs_fast` says how many times slower than the fast "
        "path a path is. `autograd_s` is `train_lockstep` on "
        "the same stack with `training_path=autograd` (torch autograd through the batched "
        "forward pass of all networks, the same fused Adam), measured on all networks. "
        f"`torch_module_s` is `model=torch_module` with the built-in factory `{FACTORY}` (the "
        "same layers; `hidden_sizes: []` for the logistic column; `n_members: 5` for the deep "
        "ensemble, initialised once and replicated to 20 systems, then given the stack's "
        "weights), `StackedModules.fit` with `vectorise: auto` (all networks in one "
        "`torch.func.vmap` of `functional_call` per step), measured on all networks. Both are "
        f"timed in each of the {ROUNDS} rounds right after the fast path (their `*_s` is the "
        "median over the rounds, their `*_vs_fast` the median of the rounds' ratios to the fast "
        "path's run, which keeps out most of the slowdowns other work on the machine causes). "
        "`torch_module_loop_timed_s` is the same with `vectorise: never` (a Python loop over the "
        "networks each step), measured on `torch_module_loop_networks_timed` networks (whole "
        "systems); `torch_module_loop_s` is that time scaled to all networks"
        + (
            f" (**extrapolated linearly** for {', '.join(loop_extrapolated)}: the loop's cost is "
            "per network, plus per-step costs shared by all networks (Adam on the stacked "
            "tensors, the loss), so the extrapolation errs, if anything, on the high side; a "
            "one-epoch check of the ensemble column timed 0.30-0.33 s per network for 20 "
            "networks and 0.23-0.28 s for all 100)"
            if loop_extrapolated
            else " (equal to the measured time: every network was timed)"
        )
        + ", timed once, as the plain loop; `torch_module_loop_vs_fast` is "
        "`torch_module_loop_s` over `lockstep_s`. `max_abs_param_diff_*` is the largest absolute "
        "difference of any final parameter "
        "between that path and the fast path (on the networks it trained).",
        f"All three columns: plain {total_plain:.1f} s, lockstep {total_lockstep:.2f} s, "
        f"{total_plain / total_lockstep:.0f} times faster. Target: at least 50 times faster "
        f"on the same cell: {'met' if min(speedups) >= 50 else 'missed'} "
        f"(smallest ratio {min(speedups):.0f}x, largest {max(speedups):.0f}x). General paths, "
        f"all three columns: autograd over the stack {total('autograd_s'):.1f} s "
        f"({total('autograd_s') / total_lockstep:.0f} times the fast path), torch module with "
        f"vmap {total('torch_module_s'):.1f} s "
        f"({total('torch_module_s') / total_lockstep:.0f} times), torch module looping over "
        f"networks {total('torch_module_loop_s'):.1f} s "
        f"({total('torch_module_loop_s') / total_lockstep:.0f} times"
        + (", partly extrapolated" if loop_extrapolated else "")
        + f"). Largest final-parameter difference of any general path from the fast path: "
        f"{general_diff:.2g}.",
    ]
    busiest = max(max(float(r["load_1m_before"]), float(r["load_1m_after"])) for r in rows)
    if busiest > 1.5:
        notes.append(
            f"**Other work shared the machine** during this run (1-minute load average up to "
            f"{busiest:.2f}; this benchmark itself keeps one core busy, two while "
            "`lockstep_2_processes_s` is measured): the times of the rows with high load are "
            "inflated by an unknown amount, the ratios within a row less so."
        )
    if opts.quick:
        notes.append(
            "Smoke-test version (`--quick`): 1 epoch, plain loop and torch-module loop on 2 "
            "networks per column."
        )
    write_results(
        results_name("training_loop", opts.quick),
        rows,
        title="(b) Retraining one grid cell: plain per-sample PyTorch loop vs lockstep vs the "
        "general paths" + (" (quick)" if opts.quick else ""),
        notes=notes,
    )


if __name__ == "__main__":
    main()
