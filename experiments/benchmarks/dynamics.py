"""(g) Time-based dynamics: per-round cost up to 100,000 agents; the reference loop's speed.

Part ``scaling``: ``RecourseSimulation`` from plain objects, in the setting of Fonseca et al.
(EAAMO 2023) scaled up: ``n`` initial agents with two independent N(0.5, (1/3)²) features and
coin-flip labels, a logistic regression fitted once and not retrained, a top-k decision with k =
1 % of the agents, winners leave, 1 % newcomers per round, every rejected agent gets closed-form
two-feature advice (``n_feature``) each round and acts on it with ``continuous_flexible`` effort
(adaptation 0.5). One repetition, no shift metrics. Each phase is timed per round by wrapping the
simulation's phase methods. Target: per-round time at most linear in the number of agents.

Part ``reference``: the reference loop did not slow down. ``python -m recourse_sim
+experiment=credit`` (its defaults, report included) from this checkout and from the commit
before the dynamics issue (a temporary ``git worktree``), alternating, at least three times each;
target: the median of this checkout within 5 % of the earlier commit's.

    python experiments/benchmarks/dynamics.py [--quick] [--part scaling|reference|both]
        [--baseline REV] [--repeats N]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import (
    REPO_ROOT,
    git_worktree,
    load_1m,
    loglog_slope,
    parser,
    results_name,
    time_phases,
    write_results,
)

from recourse_sim.data import make_independent_normal
from recourse_sim.data.base import train_test_split
from recourse_sim.dynamics import ArrivalBatch, DynamicsConfig
from recourse_sim.dynamics.config import Advice, Arrivals, Decision, Retraining
from recourse_sim.generators import NFeatureGenerator
from recourse_sim.models import LogisticRegression
from recourse_sim.simulation import RecourseSimulation, SimulationConfig
from recourse_sim.utils import RandomStreams

PHASES = (
    "_advice_phase",
    "_implementation_phase",
    "_arrival_phase",
    "_retraining_phase",
    "_decision_phase",
)
#: The last commit before the time-based dynamics issue.
BASELINE = "da59836"


def build(n: int, n_rounds: int, seed: int = 0) -> RecourseSimulation:
    """The Fonseca et al. setting with ``n`` initial agents."""
    streams = RandomStreams(seed)
    data = make_independent_normal(n_samples=int(n / 0.8) + 2, rng=streams.numpy("data"))
    train, test = train_test_split(data, 0.2, streams.numpy("split"))
    per_round = max(1, n // 100)
    fresh = make_independent_normal(
        n_samples=max(4, per_round * n_rounds), rng=streams.numpy("arrivals", 0)
    )
    count = per_round * n_rounds
    arrivals = [
        ArrivalBatch(
            X=fresh.X[:count],
            y=fresh.y[:count],
            rounds=np.repeat(np.arange(1, n_rounds + 1), per_round),
            groups=np.full(count, -1),
        )
    ]
    dynamics = DynamicsConfig(
        arrivals=Arrivals("fixed", per_round),
        exits="favourable",
        decision=Decision(policy="top_k", k=per_round),
        advice=Advice(recipients="all", selection="per_system"),
        behaviour="continuous_flexible",
        adaptation=0.5,
        advice_expiry=1,
        retraining=Retraining(schedule="never"),
    )
    return RecourseSimulation(
        train,
        test,
        models={"logistic": LogisticRegression(pretrain={"epochs": 20, "batch_size": 500})},
        generators={"n_feature": NFeatureGenerator(n_features=2)},
        metrics={},
        config=SimulationConfig(
            n_rounds=n_rounds,
            n_repetitions=1,
            evaluate_every=n_rounds,
            n_permutations=0,
            checkpoint_every=0,
        ),
        streams=streams,
        progress=False,
        dynamics=dynamics,
        arrivals=arrivals,
    )


def measure(n: int, n_rounds: int) -> dict[str, object]:
    """Run one population size and summarise its rounds."""
    simulation = build(n, n_rounds)
    times = time_phases(simulation, PHASES)
    load_before = load_1m()
    start = time.perf_counter()
    simulation.run()
    total = time.perf_counter() - start
    rounds = range(1, n_rounds + 1)
    per_phase = {p: float(np.mean([times[p].get(r, 0.0) for r in rounds])) for p in PHASES}
    per_round = sum(per_phase.values())
    agents = simulation.state["logistic"].y.shape[1]
    return {
        "initial_agents": simulation.train.n_samples,
        "agent_rows": agents,
        "rounds": n_rounds,
        "round_s": round(per_round, 4),
        "round_ms_per_1000_agents": round(1e6 * per_round / agents, 3),
        "advice_s": round(per_phase["_advice_phase"], 4),
        "implementation_s": round(per_phase["_implementation_phase"], 4),
        "arrivals_s": round(per_phase["_arrival_phase"], 5),
        "decision_s": round(per_phase["_decision_phase"], 4),
        "run_s": round(total, 1),
        "load_1m_before": load_before,
        "load_1m_after": load_1m(),
    }


def scaling(quick: bool) -> None:
    plan = [(1000, 5), (10_000, 3)] if quick else [(1000, 10), (10_000, 5), (100_000, 3)]
    rows = []
    for n, n_rounds in plan:
        row = measure(n, n_rounds)
        print(row, flush=True)
        rows.append(row)
    slope = round(loglog_slope(rows, "agent_rows", "round_s"), 3)
    verdict = "met" if slope <= 1.05 else "missed"
    notes = [
        "Per round: advice (exits, eligibility, the closed-form n_feature search for every "
        "rejected agent, delays), implementation (continuous_flexible: a vectorised line search "
        "of the model's score), arrivals, retraining (never, as the setting's base environment) "
        "and the top-k decision with the round's time-based metrics. `agent_rows` counts the "
        "initial agents and every newcomer of the run (agents are rows of tensors with masks). "
        "`run_s` includes pre-training.",
        f"Target: per-round time at most linear in the agents. Fitted slope of log(round time) "
        f"on log(agent rows): {slope}: {verdict} (within 0.05 of 1 counts as linear; fixed "
        "per-call costs make small populations relatively dearer, which lowers the slope).",
    ]
    write_results(
        results_name("dynamics_scaling", quick),
        rows,
        title="(g) Time-based dynamics: per-round time versus agents" + (" (quick)" * quick),
        notes=notes,
    )


def _credit_run(tree: Path, quick: bool) -> float:
    """Wall time of the credit preset run from ``tree`` (its own package and configs)."""
    out = Path(tempfile.mkdtemp(prefix="recourse_credit_"))
    overrides = ["+experiment=credit", f"hydra.run.dir={out}", "progress=false"]
    if quick:
        overrides += ["simulation.n_rounds=5", "simulation.n_repetitions=2"]
    env = dict(os.environ, PYTHONPATH=str(tree))
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "recourse_sim", *overrides],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"the credit run in {tree} failed with status {proc.returncode}")
    return wall


def reference(quick: bool, baseline: str, repeats: int) -> None:
    rows = []
    with git_worktree(baseline) as old:
        for i in range(repeats):
            for label, tree in (("before (" + baseline + ")", old), ("this checkout", REPO_ROOT)):
                load = load_1m()
                wall = _credit_run(tree, quick)
                row = {"pair": i + 1, "code": label, "wall_s": round(wall, 1)}
                row.update(load_1m_before=load, load_1m_after=load_1m())
                print(row, flush=True)
                rows.append(row)
    before = statistics.median(r["wall_s"] for r in rows if r["code"] != "this checkout")
    now = statistics.median(r["wall_s"] for r in rows if r["code"] == "this checkout")
    change = 100.0 * (now - before) / before
    verdict = "met" if change <= 5.0 else "missed"
    summary = [
        {"code": "before", "median_wall_s": before},
        {"code": "this checkout", "median_wall_s": now},
        {"code": "change", "median_wall_s": f"{change:+.1f} %"},
    ]
    notes = [
        "`python -m recourse_sim +experiment=credit` with its defaults (two processes, report "
        f"included), run alternately from a worktree of {baseline} and from this checkout, "
        f"{repeats} times each; wall time of the whole command.",
        f"Target: the reference loop within 5 % of the commit before the dynamics issue. "
        f"Median change: {change:+.1f} %: {verdict}.",
    ]
    write_results(
        results_name("dynamics_reference_speed", quick),
        rows,
        title="(g) The reference loop's speed before and after the dynamics engine"
        + (" (quick)" * quick),
        notes=notes,
        extra_tables=[("Medians", summary)],
    )


def main() -> None:
    args = parser(__doc__.split("\n\n")[0])
    args.add_argument("--part", choices=("scaling", "reference", "both"), default="both")
    args.add_argument("--baseline", default=BASELINE, help="the earlier commit to compare with")
    args.add_argument("--repeats", type=int, default=3, help="runs of each code (at least 3)")
    opts = args.parse_args()
    import torch

    torch.set_num_threads(1)
    if opts.part in ("scaling", "both"):
        scaling(opts.quick)
    if opts.part in ("reference", "both"):
        reference(opts.quick, opts.baseline, max(1, opts.repeats))


if __name__ == "__main__":
    main()
