"""(b') The fast training path did not slow down: this checkout versus the commit before.

The cell of ``training_loop.py``: overlapping data (800 training rows per system), 10 epochs of
batch-1 retraining with a fresh Adam(1e-3), rows in order, 20 systems per model column (logistic
regression: 20 networks; MLP with 32 ReLU units: 20; deep ensemble of 5 MLPs: 100, the members of
a system on their system's rows), trained by ``train_lockstep`` on ``StackedNetworks`` (the
hand-written fast path), in one process with one torch thread.

Each measurement is a separate Python process whose ``PYTHONPATH`` is one tree: this checkout, or
a temporary ``git worktree`` of the baseline commit (default ``f5424a1``, the commit before the
activation table and the autograd training path). The two alternate, the baseline first in odd
pairs and this checkout first in even ones, at least 3 times each. A process warms up, then
trains every column ``--inner`` times from the same initial weights; its time per column is the
median of those, and the table compares the medians over processes. The final parameters of both
trees are compared too (a digest of their bytes).

Processes of the same code differ by far more than a few per cent on a shared virtual machine, so
one more process imports both trees' packages side by side and alternates them training by
training (``--rounds`` trainings per column and tree): other work then slows both alike.

    python experiments/benchmarks/training_fast_path.py [--quick] [--baseline REV]
        [--repeats N] [--inner K] [--rounds R]

The script imports ``common`` (which puts this checkout first on ``sys.path``) only in the parent
process: a measuring process (``--child``) must import the package of the tree it is given.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

#: The commit before the activation table and the autograd training path.
BASELINE = "f5424a1"
N_SYSTEMS = 20
CASES = {  # model column: (hidden sizes, members per system), as training_loop.py
    "logistic": ((), 1),
    "mlp": ((32,), 1),
    "deep_ensemble": ((32,), 5),
}


# --- the measuring process (imports only the package of the tree on PYTHONPATH) ---------------


def _cell_data(n_systems: int, seed: int = 0):
    """Per-system training rows, as ``training_loop.cell_data``."""
    import numpy as np
    import torch

    from recourse_sim.data import make_overlapping
    from recourse_sim.data.base import train_test_split

    rng = np.random.default_rng(seed)
    train, _ = train_test_split(make_overlapping(rng=rng), 0.2, rng)
    X = torch.tensor(train.X, dtype=torch.float32)
    y = torch.tensor(train.y, dtype=torch.float32)
    noise = torch.randn(n_systems, *X.shape, generator=torch.Generator().manual_seed(seed)) * 0.05
    return X.unsqueeze(0) + noise, y.unsqueeze(0).expand(n_systems, -1).contiguous()


def _cases(models, epochs: int) -> dict:
    """Per column: the initial stack, its rows and labels, after one warm-up training."""
    import torch

    warm = models.TrainingSchedule(epochs=1, batch_size=1, learning_rate=1e-3)
    X_sys, y_sys = _cell_data(N_SYSTEMS)
    cases = {}
    for name, (hidden, members) in CASES.items():
        nets = models.StackedNetworks(models.Architecture(2, hidden, "relu"), N_SYSTEMS * members)
        nets.initialise(torch.Generator().manual_seed(0))
        X = X_sys.repeat_interleave(members, dim=0)
        y = y_sys.repeat_interleave(members, dim=0)
        models.train_lockstep(nets.clone(), X[:, :50], y[:, :50], warm, torch.Generator())
        cases[name] = (nets, X, y)
    return cases


def _time(models, case, epochs: int) -> tuple[float, str]:
    """Wall time of one training of ``case`` from its initial weights; final parameters' digest."""
    import torch

    nets, X, y = case
    schedule = models.TrainingSchedule(epochs=epochs, batch_size=1, learning_rate=1e-3)
    trained = nets.clone()
    start = time.perf_counter()
    models.train_lockstep(trained, X, y, schedule, torch.Generator().manual_seed(1))
    wall = time.perf_counter() - start
    return wall, hashlib.sha256(trained.flat.numpy().tobytes()).hexdigest()[:16]


def child(epochs: int, inner: int) -> None:
    """Time the fast path of the package on ``PYTHONPATH`` on every column; print one JSON line."""
    import torch

    import recourse_sim
    import recourse_sim.models as models

    torch.set_num_threads(1)
    cases = _cases(models, epochs)
    times: dict[str, list[float]] = {name: [] for name in CASES}
    digests = {}
    for _ in range(inner):
        for name, case in cases.items():
            wall, digests[name] = _time(models, case, epochs)
            times[name].append(wall)
    print(json.dumps({"package": recourse_sim.__file__, "times": times, "digests": digests}))


def _load(tree: str):
    """``recourse_sim.models`` of the package in ``tree``, apart from any other tree's copy.

    Modules already imported keep references to their own tree's modules, so the functions of
    two trees can run side by side in one process once each was imported with its tree first.
    """
    import importlib

    for name in [m for m in sys.modules if m == "recourse_sim" or m.startswith("recourse_sim.")]:
        del sys.modules[name]
    sys.path.insert(0, tree)
    try:
        importlib.import_module("recourse_sim.data.base")
        return importlib.import_module("recourse_sim.models")
    finally:
        sys.path.remove(tree)


def interleaved_child(trees: list[str], epochs: int, rounds: int) -> None:
    """Both trees' fast paths in one process, alternating training by training; one JSON line."""
    import torch

    torch.set_num_threads(1)
    api = {}
    for tree in trees:
        models = _load(tree)
        api[tree] = (models, _cases(models, epochs))
    times = {tree: {name: [] for name in CASES} for tree in trees}
    digests = {tree: {} for tree in trees}
    for round_ in range(rounds):
        for name in CASES:
            for tree in trees if round_ % 2 == 0 else trees[::-1]:
                models, cases = api[tree]
                wall, digests[tree][name] = _time(models, cases[name], epochs)
                times[tree][name].append(wall)
    packages = {tree: api[tree][0].__file__ for tree in trees}
    print(json.dumps({"packages": packages, "times": times, "digests": digests}))


# --- the parent ---------------------------------------------------------------------------------


def measure(tree: Path, epochs: int, inner: int) -> dict:
    """Run one measuring process with ``tree``'s package; its JSON result."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    command = [sys.executable, str(Path(__file__).resolve()), "--child"]
    command += ["--epochs", str(epochs), "--inner", str(inner)]
    proc = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"the measuring process in {tree} failed with status {proc.returncode}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if not Path(result["package"]).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"the measuring process for {tree} imported {result['package']}")
    return result


def measure_interleaved(baseline: Path, current: Path, epochs: int, rounds: int) -> dict:
    """Run the interleaved process (both trees in one process); its JSON result by tree."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    command = [sys.executable, str(Path(__file__).resolve()), "--interleaved"]
    command += ["--trees", str(baseline), str(current)]
    command += ["--epochs", str(epochs), "--rounds", str(rounds)]
    proc = subprocess.run(command, cwd=current, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"the interleaved process failed with status {proc.returncode}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for tree in (baseline, current):
        if not Path(result["packages"][str(tree)]).resolve().is_relative_to(tree.resolve()):
            raise SystemExit(f"the interleaved process imported {result['packages']}")
    return result


def main() -> None:
    from common import REPO_ROOT, git_worktree, load_1m, parser, results_name, write_results

    args = parser(__doc__.split("\n\n")[0])
    args.add_argument("--baseline", default=BASELINE, help="the earlier commit to compare with")
    args.add_argument(
        "--repeats", type=int, default=10, help="processes of each tree (at least 3; default 10)"
    )
    args.add_argument(
        "--inner", type=int, default=5, help="timed trainings per column and process (default 5)"
    )
    args.add_argument(
        "--rounds",
        type=int,
        default=15,
        help="trainings per column and tree in the interleaved process (default 15; 0: none)",
    )
    opts = args.parse_args()
    epochs = 1 if opts.quick else 10
    repeats = 3 if opts.quick else max(3, opts.repeats)
    inner = max(1, opts.inner)
    revision = subprocess.run(
        ["git", "rev-parse", opts.baseline], cwd=REPO_ROOT, capture_output=True, text=True
    ).stdout.strip()
    baseline_label = f"baseline ({opts.baseline})"
    current_label = "this checkout"
    runs = []
    results: dict[str, list[dict]] = {baseline_label: [], current_label: []}
    with git_worktree(opts.baseline) as old:
        trees = {baseline_label: old, current_label: REPO_ROOT}
        for pair in range(repeats):
            order = [baseline_label, current_label]
            if pair % 2:
                order.reverse()
            for label in order:
                load = load_1m()
                result = measure(trees[label], epochs, inner)
                results[label].append(result)
                row = {"pair": pair + 1, "code": label}
                for name in CASES:
                    row[f"{name}_s"] = round(statistics.median(result["times"][name]), 4)
                row.update(load_1m_before=load, load_1m_after=load_1m())
                print(row, flush=True)
                runs.append(row)
        interleaved = None
        if opts.rounds > 0:
            load = load_1m()
            interleaved = measure_interleaved(old, REPO_ROOT, epochs, opts.rounds)
            after = load_1m()
            for label, tree in ((baseline_label, old), (current_label, REPO_ROOT)):
                row = {"pair": "one process, interleaved", "code": label}
                for name in CASES:
                    times = interleaved["times"][str(tree)][name]
                    row[f"{name}_s"] = round(statistics.median(times), 4)
                row.update(load_1m_before=load, load_1m_after=after)
                print(row, flush=True)
                runs.append(row)

    summary = []
    for name, (hidden, members) in CASES.items():
        medians = {
            label: [statistics.median(r["times"][name]) for r in found]
            for label, found in results.items()
        }
        best = {
            label: statistics.median(min(r["times"][name]) for r in found)
            for label, found in results.items()
        }
        digests = {label: {r["digests"][name] for r in found} for label, found in results.items()}
        before = statistics.median(medians[baseline_label])
        now = statistics.median(medians[current_label])
        paired = {}
        if interleaved is not None:
            a = interleaved["times"][str(old)][name]
            b = interleaved["times"][str(REPO_ROOT)][name]
            paired = {
                "interleaved_baseline_median_s": round(statistics.median(a), 4),
                "interleaved_current_median_s": round(statistics.median(b), 4),
                "interleaved_current_vs_baseline": round(
                    statistics.median(b) / statistics.median(a), 3
                ),
                "interleaved_median_paired_ratio": round(
                    statistics.median(y / x for x, y in zip(a, b, strict=True)), 3
                ),
            }
            digests[baseline_label].add(interleaved["digests"][str(old)][name])
            digests[current_label].add(interleaved["digests"][str(REPO_ROOT)][name])
        summary.append(
            {
                "model": name,
                "networks": N_SYSTEMS * members,
                "architecture": "-".join(str(s) for s in (2, *hidden, 1)),
                "epochs": epochs,
                "baseline_median_s": round(before, 4),
                "current_median_s": round(now, 4),
                "current_vs_baseline": round(now / before, 3),
                "change_percent": round(100.0 * (now - before) / before, 1),
                "baseline_best_median_s": round(best[baseline_label], 4),
                "current_best_median_s": round(best[current_label], 4),
                "best_current_vs_baseline": round(best[current_label] / best[baseline_label], 3),
                "baseline_spread_s": f"{min(medians[baseline_label]):.4f}-"
                f"{max(medians[baseline_label]):.4f}",
                "current_spread_s": f"{min(medians[current_label]):.4f}-"
                f"{max(medians[current_label]):.4f}",
                **paired,
                "same_final_parameters": "yes"
                if len(digests[baseline_label] | digests[current_label]) == 1
                else "no",
            }
        )
    worst = max(float(r["change_percent"]) for r in summary)
    verdict = "met" if worst <= 5.0 else "missed"
    outcome = (
        f"Separate processes: largest change of the medians over the columns {worst:+.1f} %: "
        f"{verdict}."
    )
    if interleaved is not None:
        ratios = [float(r["interleaved_current_vs_baseline"]) for r in summary]
        paired_ratios = [float(r["interleaved_median_paired_ratio"]) for r in summary]
        worst_interleaved = 100.0 * (max(ratios) - 1.0)
        outcome += (
            f" One process, interleaved: largest change of the medians {worst_interleaved:+.1f} "
            f"% ({'met' if worst_interleaved <= 5.0 else 'missed'}); median paired ratios "
            f"{min(paired_ratios):.3f} to {max(paired_ratios):.3f}."
        )
    notes = [
        f"The fast path (`train_lockstep` on `StackedNetworks`, batch size 1, the hand-written "
        f"backward pass) on the cell of `training_loop.py`: 20 systems per column, 800 rows, "
        f"{epochs} epoch(s), one process, one torch thread. Separate Python processes with "
        f"`PYTHONPATH` set to a `git worktree` of {opts.baseline} ({revision}) or to this "
        f"checkout, alternating ({repeats} processes each; the baseline first in odd pairs, "
        f"this checkout first in even ones). Each process warms up and then trains every column "
        f"{inner} times from the same initial weights; `*_s` in the runs table and "
        "`*_median_s` here are the median over processes of each process's median; "
        "`*_best_median_s` is the median over processes of each process's fastest training (less "
        "sensitive to other work slowing part of a process down); `*_spread_s` is the "
        "range of the per-process medians. `current_vs_baseline` is this checkout's median "
        "divided by the baseline's (below 1: faster now). `same_final_parameters`: every "
        "training of both trees ended with bit-identical parameters (a digest of their bytes).",
        f"`interleaved_*`: one more process imports both trees' packages (each with its own tree "
        f"first on `sys.path`; imported modules keep their own tree's references) and alternates "
        f"them training by training, {opts.rounds} trainings per column and tree, the order "
        "flipping every round, so that other work on the machine slows both alike: the medians "
        "of each tree's trainings, their ratio, and `interleaved_median_paired_ratio`, the "
        "median over rounds of the ratio of the two adjacent trainings (this checkout's over "
        "the baseline's).",
        "Target: the fast path no slower than before, within 5 %. " + outcome,
    ]
    busiest = max(max(float(r["load_1m_before"]), float(r["load_1m_after"])) for r in runs)
    if busiest > 1.5:
        notes.append(
            f"**Other work shared the machine** during this run (1-minute load average up to "
            f"{busiest:.2f}; the measuring process itself keeps one core busy): the times of "
            "either tree are inflated by an unknown amount; the alternation spreads that over "
            "both trees but does not remove it."
        )
    if opts.quick:
        notes.append("Smoke-test version (`--quick`): 1 epoch, 3 processes of each tree.")
    write_results(
        results_name("training_fast_path", opts.quick),
        summary,
        title="(b') The fast training path before and after the autograd path"
        + " (quick)" * opts.quick,
        notes=notes,
        extra_tables=[("Each process (median of its trainings per column)", runs)],
    )


if __name__ == "__main__":
    if "--interleaved" in sys.argv:
        options = argparse.ArgumentParser()
        options.add_argument("--interleaved", action="store_true")
        options.add_argument("--trees", nargs=2, required=True)
        options.add_argument("--epochs", type=int, required=True)
        options.add_argument("--rounds", type=int, required=True)
        parsed = options.parse_args()
        interleaved_child(parsed.trees, parsed.epochs, parsed.rounds)
    elif "--child" in sys.argv:
        options = argparse.ArgumentParser()
        options.add_argument("--child", action="store_true")
        options.add_argument("--epochs", type=int, required=True)
        options.add_argument("--inner", type=int, required=True)
        parsed = options.parse_args()
        child(parsed.epochs, parsed.inner)
    else:
        main()
