"""The recourse loop of the reference study, and its time-based generalisation, on a SimPy clock.

Altmeyer et al., "Endogenous Macrodynamics in Algorithmic Recourse" (IEEE SaTML 2023), as
implemented by AlgorithmicRecourseDynamics.jl v0.1.2; the time-based dynamics after Fonseca et
al., "Setting the Right Expectations: Algorithmic Recourse Over Time" (EAAMO 2023),
SimulatedRecourse.jl and Bell et al. (2024).

A *system* is one (model, generator) pair in one repetition; it owns a copy of the population and
its own classifier. Each round is a sequence of phases, each a SimPy process with its own place
on the clock (round ``t`` occupies ``[t, t + 1)`` times ``simulation.round_length``):

1. **advice** (t + 0.1): lapsed advice is dropped; agents favourable at the last decision leave
   (``dynamics.exits=favourable``); of the rejected agents without pending advice, a share
   ``recourse_fraction`` (or all) is chosen, and each system's generator searches ``K``
   counterfactuals per chosen agent against the current model and threshold; one, drawn at
   random, becomes the agent's advice, due after a delay (``dynamics.delay``);
2. **implementation** (t + 0.2): agents with due advice act on it (``dynamics.behaviour``), each
   recommended feature change carried out with probability ``dynamics.compliance``; an agent that
   moved takes the model's prediction at its new point as its label;
3. **arrivals** (t + 0.3): newcomers enter (only rounds with arrivals have an event);
4. **retraining** (t + 0.4, on ``dynamics.retraining.schedule``): each classifier continues
   training on its system's window of rows; a repetition in which no row changed since its last
   retraining is skipped, as the reference skips a system that chose nobody;
5. **decision** (t + 0.5): the decision policy scores the active agents and names the favourable
   ones; the time-based metrics of the round are computed here;
6. **evaluation** (t + 0.6; round 0, every ``evaluate_every`` rounds and the last): shift
   metrics comparing each system's current state with its initial one;
7. **close** (t + 0.9): the round is done; a checkpoint is written.

With the default dynamics this is exactly the reference loop: nobody arrives or leaves, the
candidates are the individuals that *every* system of a repetition predicts negative (an
intersection, so all systems treat the same people), ``round(recourse_fraction · |candidates|)``
are chosen, each implements its counterfactual at once and entirely and takes the model's
prediction there as its label, and every classifier retrains on its whole population.

The no-recourse control (a generator with ``moves_individuals = False``, ``generator=none``)
is retrained like every system but moves nobody; its systems never narrow the candidate pool and
keep a classifier stack of their own, so adding them leaves every other system's rows unchanged.
Agents are rows of ``(S, C)`` tensors with masks (see :mod:`recourse_sim.simulation.state`). The
core takes plain objects and knows nothing of hydra.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import simpy
import torch
from tqdm.auto import tqdm

from recourse_sim.data.base import Dataset
from recourse_sim.dynamics import BEHAVIOURS, ActionContext, ArrivalBatch, DynamicsConfig
from recourse_sim.dynamics.decision import decide
from recourse_sim.dynamics.delays import draw_delays
from recourse_sim.errors import ConfigError
from recourse_sim.generators.base import FeatureSpace, Generator, SearchProblem, check_pairs
from recourse_sim.metrics.base import EvaluationContext, Metric
from recourse_sim.models.base import Classifier, ModelSpec
from recourse_sim.models.training import train_jobs
from recourse_sim.simulation import frames
from recourse_sim.simulation.config import SimulationConfig
from recourse_sim.simulation.evaluation import CachedProba, evaluate
from recourse_sim.simulation.progress import Timings, log_evaluation
from recourse_sim.simulation.recorder import Recorder
from recourse_sim.simulation.state import NEVER, StackState
from recourse_sim.utils import RandomStreams, counter_rng
from recourse_sim.utils.device import to_device
from recourse_sim.utils.workers import WorkerPool

log = logging.getLogger(__name__)

_PICK_STREAM = 0x91C4
# Keyed draws of the dynamics: functions of (run, stream, round, repetition, agent), so an agent
# draws the same in every system of its repetition.
_SELECT, _DELAY, _COMPLY, _EFFORT = 0x5E1C, 0xDE1A, 0xC0A1, 0xEF0F
#: Where each phase sits within a round, as a share of ``round_length``.
PHASES = {
    "advice": 0.1,
    "implementation": 0.2,
    "arrivals": 0.3,
    "retraining": 0.4,
    "decision": 0.5,
    "evaluation": 0.6,
    "close": 0.9,
}


@dataclass(frozen=True)
class _Stack:
    """The systems whose classifiers share one stack: one model and some generators.

    The no-recourse control's systems get a stack of their own (trained, searched and evaluated
    apart), so adding the control leaves every computation of the other systems exactly as it
    was: float rounding of batched kernels can depend on how many networks share a stack.
    """

    model: str
    generators: tuple[str, ...]
    control: bool


@dataclass(frozen=True)
class System:
    """One cell of the grid: a (model, generator) pair in one repetition."""

    model: str
    generator: str
    repetition: int
    slot: int  # position among the systems sharing this model's stacked classifier

    @property
    def key(self) -> int:
        """Stable integer key of the system (keys its random draws)."""
        name = f"{self.model}/{self.generator}/{self.repetition}"
        return zlib.crc32(name.encode()) & 0x7FFF_FFFF


class RecourseSimulation:
    """Simulate repeated recourse and retraining for a grid of systems.

    Args:
        train: The initial training population (one copy per system).
        test: The untouched test set (performance metrics).
        models: Classifier specifications by name (grid rows).
        generators: Counterfactual generators by name (grid columns).
        metrics: Shift metrics by name (rows of ``metrics.csv``).
        config: Loop settings.
        streams: The run's named random streams.
        recorder: Where results go as they are produced (None: keep them in memory only).
        progress: Show a progress bar over rounds.
        workers: Processes that share each round's training, searches and evaluations (None:
            this process alone). Results do not depend on it beyond float rounding.
        device: Where the populations, classifiers and searches live (metrics always run on the
            CPU). Random draws do not depend on it.
        dynamics: The time-based dynamics (None: the reference loop).
        arrivals: Each repetition's newcomers (None: nobody arrives).
        group_levels: Names of the group codes in ``train.groups`` and the arrivals.

    Main API: :meth:`run` (optionally resuming from the recorder's checkpoint); afterwards
    :attr:`state` (and the views :attr:`populations`, :attr:`labels`) and :attr:`classifiers`
    hold the final state.
    """

    def __init__(
        self,
        train: Dataset,
        test: Dataset,
        models: Mapping[str, ModelSpec],
        generators: Mapping[str, Generator],
        metrics: Mapping[str, Metric],
        config: SimulationConfig,
        streams: RandomStreams,
        recorder: Recorder | None = None,
        progress: bool = True,
        workers: WorkerPool | None = None,
        device: str | torch.device = "cpu",
        dynamics: DynamicsConfig | None = None,
        arrivals: Sequence[ArrivalBatch] | None = None,
    ):
        if not models:
            raise ConfigError("model", dict(models), "at least one model")
        if not generators:
            raise ConfigError("generator", dict(generators), "at least one generator")
        if train.feature_names != test.feature_names:
            raise ConfigError("data", "train/test", "the same feature columns in both sets")
        check_pairs(models, generators)  # e.g. n_feature needs a linear model: refuse early
        self.dynamics = dynamics or DynamicsConfig()
        n_initial = self.dynamics.initial_agents
        if n_initial is not None:
            if n_initial > train.n_samples:
                raise ConfigError(
                    "dynamics.initial_agents",
                    n_initial,
                    f"at most the {train.n_samples} rows of the training split (or null)",
                )
            train = train.subset(np.arange(n_initial))
        self.train, self.test = train, test
        self.models = dict(models)
        self.generators = dict(generators)
        self.metrics = dict(metrics)
        self.config = config
        self.streams = streams
        self.recorder = recorder or Recorder(None)
        self.progress = progress
        self.timings = Timings()  # seconds per phase, logged by the caller at the end
        self.device = torch.device(device)
        # Worker processes compute on the CPU, so a run on another device keeps its work here.
        self.workers = workers if self.device.type == "cpu" else None
        self.space = FeatureSpace.from_data(train).to(self.device)
        self.reference_X = np.vstack([train.X, test.X])
        self.reference_y = np.concatenate([train.y, test.y])
        R = config.n_repetitions
        if arrivals is not None and len(arrivals) != R:
            raise ValueError(f"arrivals: one batch per repetition ({R}), got {len(arrivals)}")
        d = train.n_features
        empty = ArrivalBatch(
            np.zeros((0, d)), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
        )
        self.arrivals = list(arrivals) if arrivals is not None else [empty] * R
        self.group_levels = tuple(getattr(train, "group_levels", ()) or ())
        self.tracking = self.dynamics.tracks_agents or arrivals is not None
        self.behaviour = BEHAVIOURS[self.dynamics.behaviour]()
        # The run's own key in every keyed draw of the dynamics: other seeds, other draws.
        self.draw_key = int(streams.numpy("dynamics").integers(2**31))
        self.keep_probability = self._keep_probability()
        self.stacks: dict[str, _Stack] = {}
        for name in self.models:
            for control in (False, True):
                names = tuple(g for g, gen in self.generators.items() if _moves(gen) != control)
                if names:
                    key = f"{name}/control" if control else name
                    self.stacks[key] = _Stack(name, names, control)
        self.systems = {
            key: [
                System(stack.model, gen, rep, slot=g * R + rep)
                for g, gen in enumerate(stack.generators)
                for rep in range(R)
            ]
            for key, stack in self.stacks.items()
        }
        self.round = 0
        self.initial: dict[str, Classifier] = {}
        self.classifiers: dict[str, Classifier] = {}
        self.state: dict[str, StackState] = {}
        self._round_counts: dict[str, dict[str, torch.Tensor]] = {}

    # --- views of the state (the reference loop's names) -------------------------------------

    @property
    def populations(self) -> dict[str, torch.Tensor]:
        """Each stack's features ``(S, C, d)``."""
        return {name: state.X for name, state in self.state.items()}

    @property
    def labels(self) -> dict[str, torch.Tensor]:
        """Each stack's labels ``(S, C)``."""
        return {name: state.y for name, state in self.state.items()}

    @property
    def recourse_count(self) -> dict[str, torch.Tensor]:
        """Advice received per agent ``(S, C)``."""
        return {name: state.n_advice for name, state in self.state.items()}

    # --- set-up ----------------------------------------------------------------------------

    def _keep_probability(self) -> torch.Tensor:
        """Per feature, the probability that a recommended change is carried out in a round."""
        keep = np.full(self.train.n_features, float(self.dynamics.compliance))
        for name, skip in self.dynamics.difficulty.items():
            columns = self.train.columns_of(str(name), key="dynamics.difficulty")
            keep[columns] = 1.0 - float(skip)
        return torch.tensor(keep, dtype=torch.float64, device=self.device)

    def _units(self) -> torch.Tensor:
        """Each feature's compliance unit: a one-hot group is carried out as one change."""
        unit = np.arange(self.train.n_features)
        for group in self.train.categorical_groups:
            unit[list(group)] = group[0]
        return torch.tensor(unit, device=self.device)

    def _agent_rows(self) -> list[tuple[np.ndarray, ...]]:
        """Per repetition: features, labels, groups and entry rounds of all ``C`` agent rows."""
        train, n0 = self.train, self.train.n_samples
        capacity = n0 + max(len(batch) for batch in self.arrivals)
        groups = getattr(train, "groups", None)
        initial_groups = np.full(n0, -1) if groups is None else np.asarray(groups)
        rows = []
        for batch in self.arrivals:
            pad = capacity - n0 - len(batch)
            X = np.vstack([train.X, batch.X, np.zeros((pad, train.n_features))])
            y = np.concatenate([train.y, batch.y, np.zeros(pad, np.int64)])
            group = np.concatenate([initial_groups, batch.groups, np.full(pad, -1)])
            entered = np.concatenate([np.zeros(n0, np.int64), batch.rounds, np.full(pad, NEVER)])
            rows.append((X, y, group, entered))
        return rows

    def _pretrain(self) -> None:
        """Train each model once on the initial data; every system starts from that model."""
        device = self.device
        X = torch.tensor(self.train.X, dtype=torch.float64, device=device)
        y = torch.tensor(self.train.y, dtype=torch.int64, device=device)
        jobs = []
        for name, spec in self.models.items():
            init = self.streams.torch(f"init:{name}")  # a CPU stream: same weights on any device
            self.initial[name] = spec.initialise(self.train.n_features, init, device)
            generator = self.streams.torch(f"pretrain:{name}")
            jobs.append(
                self.initial[name].training_job(
                    X[None], y[None], spec.pretrain, generator, space=self.space
                )
            )
        train_jobs(jobs, self.workers)
        rows = self._agent_rows()
        capacity = len(rows[0][1])

        def tensor(part: int, dtype) -> torch.Tensor:
            return torch.stack([torch.as_tensor(r[part], dtype=dtype, device=device) for r in rows])

        by_rep = [tensor(0, torch.float64), tensor(1, torch.int64)]
        by_rep += [tensor(2, torch.int64), tensor(3, torch.int64)]
        agents = torch.arange(capacity, device=device)
        for name, stack in self.stacks.items():
            systems = self.systems[name]
            n = len(systems)
            self.classifiers[name] = self.initial[stack.model].replicate(n)
            reps = torch.tensor([s.repetition for s in systems], device=device)
            if capacity == self.train.n_samples:  # nobody arrives: one copy of the data each
                Xs, ys = X.unsqueeze(0).repeat(n, 1, 1), y.unsqueeze(0).repeat(n, 1)
            else:
                Xs, ys = by_rep[0][reps].clone(), by_rep[1][reps].clone()
            effort = counter_rng.uniform(
                self.draw_key, _EFFORT, reps.view(-1, 1), agents.view(1, -1)
            ) * (self.dynamics.adaptation / 20.0)  # recgame's continuous_constant effort
            self.state[name] = StackState.start(
                Xs, ys, by_rep[2][reps], by_rep[3][reps], effort.to(device)
            )
            self._round_counts[name] = self._fresh_counts(n)
            self._round_counts[name]["n_arrivals"] += self.state[name].active.sum(1)

    def _fresh_counts(self, n_systems: int) -> dict[str, torch.Tensor]:
        zeros = torch.zeros(n_systems, dtype=torch.int64, device=self.device)
        return {key: zeros.clone() for key in ("n_arrivals", "n_exits", "n_advice")}

    # --- the schedule ----------------------------------------------------------------------

    def run(self, resume: bool = False) -> RecourseSimulation:
        """Run all rounds (continuing from the last checkpoint when ``resume`` is set)."""
        checkpoint = self.recorder.load_checkpoint() if resume else None
        if resume and checkpoint is None:
            raise ConfigError(
                "resume",
                True,
                "a run directory holding the checkpoint.pt of an earlier run; there is none in "
                f"{self.recorder.directory} (start without resume=true)",
            )
        if checkpoint is not None:
            self._restore(checkpoint)
            self.recorder.truncate_after(self.round)
        else:
            self.recorder.reset()
            names = ", ".join(self.models)
            log.info("pre-training %d model(s) on the initial data: %s", len(self.models), names)
            with self.timings.phase("pre-training"):
                self._pretrain()
            log.info("pre-trained in %.1f s", self.timings.seconds["pre-training"])
        length = self.config.round_length
        env = simpy.Environment(initial_time=self.round * length)
        bar = tqdm(
            total=self.config.n_rounds,
            initial=self.round,
            desc="rounds",
            unit="round",
            disable=not self.progress,
        )
        self._start_processes(env, bar, fresh=checkpoint is None)
        with self.timings.phase("rounds"):
            env.run()
        bar.close()
        with self.timings.phase("tables"):
            self._write_tables()
        return self

    def _start_processes(self, env: simpy.Environment, bar, fresh: bool) -> None:
        """One SimPy process per phase, each waking at its own times."""
        T = self.config.n_rounds
        rounds = list(range(self.round + 1, T + 1))
        start = [0] if fresh else []
        schedule = self.dynamics.retraining
        if schedule.schedule == "every_n":
            retraining = [t for t in rounds if t % schedule.every == 0]
        elif schedule.schedule == "never":
            retraining = []
        else:  # every round; the labels schedule checks its counts each round
            retraining = rounds
        entries = {int(r) for batch in self.arrivals for r in batch.rounds}
        evaluations = [t for t in start + rounds if self.config.is_evaluation_round(t)]

        def phase(name: str, when: list[int], action) -> None:
            env.process(self._at_rounds(env, PHASES[name], when, action))

        phase("advice", rounds, self._advice_phase)
        phase("implementation", rounds, self._implementation_phase)
        phase("arrivals", [t for t in rounds if t in entries], self._arrival_phase)
        phase("retraining", retraining, self._retraining_phase)
        phase("decision", start + rounds, self._decision_phase)
        phase("evaluation", evaluations, self._timed_evaluation)
        phase("close", rounds, lambda t: self._close_round(t, bar))

    def _at_rounds(self, env: simpy.Environment, offset: float, rounds: list[int], action):
        """A process that runs ``action(t)`` at time ``(t + offset) · round_length``."""
        length = self.config.round_length
        for t in rounds:
            yield env.timeout(max(0.0, (t + offset) * length - env.now))
            action(t)

    def _timed_evaluation(self, round_number: int) -> None:
        """Evaluate, time it, and log each system's headline metrics."""
        first = len(self.recorder.metrics_rows)
        with self.timings.phase("evaluation"):
            self._evaluation_phase(round_number)
        log_evaluation(self.recorder.metrics_rows[first:], round_number)

    def _close_round(self, round_number: int, bar) -> None:
        self.round = round_number
        every = self.config.checkpoint_every
        if every and (round_number % every == 0 or round_number == self.config.n_rounds):
            self.recorder.save_checkpoint(self._state())
        bar.update(1)

    # --- phases ----------------------------------------------------------------------------

    def _advice_phase(self, round_number: int) -> None:
        """Lapses and exits, then who gets advice, then the searches."""
        for name, state in self.state.items():
            counts = self._round_counts[name] = self._fresh_counts(state.y.shape[0])
            expiry = self.dynamics.advice_expiry
            if expiry:
                state.pending &= ~(round_number - state.advice_round >= expiry)
            if self.dynamics.exits == "favourable":
                leaving = state.active & state.favourable
                state.active &= ~leaving
                state.left = torch.where(leaving, round_number, state.left)
                state.pending &= ~leaving
                counts["n_exits"] += leaving.sum(1)
                state.changed_since_retraining |= leaving.any(1)
        chosen, pool_sizes = self._selection(round_number)
        self._advise(round_number, chosen, pool_sizes)

    def _eligible(self, state: StackState) -> torch.Tensor:
        """Agents that may receive advice: present, rejected, no advice pending, not given up."""
        # The paper text's reading of a candidate (simulation.candidates=label): a negative label.
        rejected = ~state.favourable if self.config.candidates == "prediction" else state.y == 0
        eligible = state.active & rejected & ~state.pending
        if self.dynamics.give_up_after:
            eligible &= state.n_failures < self.dynamics.give_up_after
        return eligible

    def _share_of(self, n_pool: int) -> int:
        if self.dynamics.advice.recipients == "all":
            return n_pool
        # Python's round() rounds half to even, like Julia's round() in the reference.
        return round(self.config.recourse_fraction * n_pool)

    def _selection(self, round_number: int):
        """The agents chosen for advice, per stack and system, and the pool sizes they came from.

        ``shared`` (the reference): per repetition, the pool is the agents that every
        (non-control) system holding them finds eligible, and one draw chooses from it, so all
        systems advise the same people; ``per_system``: each system chooses among its own
        eligible agents those with the smallest keyed draw (the same draw in every system).
        """
        R = self.config.n_repetitions
        eligible = {name: self._eligible(state) for name, state in self.state.items()}
        chosen: dict[str, list[np.ndarray]] = {}
        pools: dict[str, list[int]] = {}
        if self.dynamics.advice.selection == "shared":
            C = next(iter(self.state.values())).y.shape[1]
            candidates = torch.ones(R, C, dtype=torch.bool, device=self.device)
            present = torch.zeros(R, C, dtype=torch.bool, device=self.device)
            # The no-recourse control never narrows the pool (unless it is all there is), so
            # adding it leaves every other system's candidates, and hence its rows, unchanged.
            deciding = [k for k, s in self.stacks.items() if not s.control] or list(self.stacks)
            for name in deciding:
                active = self.state[name].active
                blocked = active & ~eligible[name]
                candidates &= (~blocked).view(-1, R, C).all(dim=0)
                present |= active.view(-1, R, C).any(dim=0)
            candidates &= present
            by_rep, sizes = [], []
            for rep in range(R):
                pool = torch.nonzero(candidates[rep]).flatten().cpu().numpy()
                n_chosen = self._share_of(len(pool))
                if n_chosen == len(pool):
                    by_rep.append(pool)
                else:
                    rng = self.streams.numpy("selection", rep, round_number)
                    by_rep.append(np.sort(rng.choice(pool, size=n_chosen, replace=False)))
                sizes.append(len(pool))
            for name, systems in self.systems.items():
                mask = eligible[name].cpu().numpy()
                chosen[name] = [
                    _keep(by_rep[s.repetition], mask[s.slot], self.stacks[name].control)
                    for s in systems
                ]
                pools[name] = [sizes[s.repetition] for s in systems]
            return chosen, pools
        for name, systems in self.systems.items():
            mask = eligible[name]
            reps = torch.tensor([s.repetition for s in systems], device=self.device)
            agents = torch.arange(mask.shape[1], device=self.device)
            draw = counter_rng.uniform(
                self.draw_key, _SELECT, round_number, reps.view(-1, 1), agents.view(1, -1)
            )
            draw = torch.where(mask, draw, math.inf)
            order = torch.argsort(draw, dim=1, stable=True).cpu().numpy()
            sizes = mask.sum(1).tolist()
            chosen[name] = [
                np.sort(order[s, : self._share_of(int(sizes[s]))]) for s in range(len(systems))
            ]
            pools[name] = [int(n) for n in sizes]
        return chosen, pools

    def _advise(self, round_number: int, chosen, pool_sizes) -> None:
        """Search, pick and record one counterfactual per chosen agent in every system."""
        R = self.config.n_repetitions
        K = self.config.n_counterfactuals
        moving = [n for n, stack in self.stacks.items() if not stack.control]
        width = max((len(c) for n in moving for c in chosen[n]), default=0)
        rows, searches = [], []
        for name, classifier in self.classifiers.items():
            state = self.state[name]
            for g, label in enumerate(self.stacks[name].generators):
                generator = self.generators[label]
                slots = torch.arange(g * R, (g + 1) * R, device=self.device)
                systems = self.systems[name][g * R : (g + 1) * R]
                if width == 0 or not _moves(generator):
                    # The control searches nothing and moves nobody: its chosen stay as they are.
                    rows.extend(
                        frames.recourse_row(
                            s, round_number, pool_sizes[name][s.slot], len(chosen[name][s.slot])
                        )
                        for s in systems
                    )
                    continue
                # Pad every system's batch to the widest one; padded rows are searched and
                # discarded (keyed randomness makes the real rows independent of them).
                padded = np.zeros((R, width), dtype=np.int64)
                for i, s in enumerate(systems):
                    padded[i, : len(chosen[name][s.slot])] = chosen[name][s.slot]
                ids = torch.as_tensor(padded, device=self.device)
                population = state.X[slots]
                active = state.active[slots]
                threshold = None
                if self.tracking:
                    threshold = torch.nan_to_num(state.threshold[slots], nan=0.5)
                problem = SearchProblem(
                    factuals=torch.gather(
                        population, 1, ids.unsqueeze(-1).expand(-1, -1, population.shape[-1])
                    ),
                    individual_ids=ids,
                    system_keys=torch.tensor(
                        [s.key for s in systems], dtype=torch.int64, device=self.device
                    ),
                    model=classifier.select(slots.tolist()),
                    space=self.space,
                    population_X=population,
                    population_y=state.y[slots],
                    n_counterfactuals=K,
                    round_key=round_number,
                    population_mask=None if bool(active.all()) else active,
                    threshold=threshold,
                )
                searches.append((name, generator, systems, ids, problem))
        # The searches of different (model, generator) pairs are independent: share them out.
        results = self._run_searches([(gen, problem) for _, gen, _, _, problem in searches])
        for (name, generator, systems, ids, problem), result in zip(searches, results, strict=True):
            state = self.state[name]
            counts = self._round_counts[name]
            factuals, keys = problem.factuals, problem.system_keys
            pick = counter_rng.uniform(_PICK_STREAM, round_number, keys.view(-1, 1), ids)
            pick = (pick * K).long().clamp_max(K - 1)  # one of the K, uniformly at random
            implemented = torch.gather(
                result.counterfactuals,
                2,
                pick.view(R, width, 1, 1).expand(-1, -1, 1, factuals.shape[-1]),
            ).squeeze(2)
            probability = torch.gather(result.probabilities, 2, pick.unsqueeze(-1)).squeeze(-1)
            for i, system in enumerate(systems):
                n = len(chosen[name][system.slot])
                index = ids[i, :n]
                s = system.slot
                state.target[s, index] = implemented[i, :n]
                state.target_proba[s, index] = probability[i, :n].to(torch.float64)
                state.advice_round[s, index] = round_number
                delay = self.dynamics.delay
                if delay and self.dynamics.delay_distribution != "fixed":  # draws only if random
                    uniform = counter_rng.uniform(
                        self.draw_key, _DELAY, round_number, system.repetition, index
                    )
                    delay = draw_delays(uniform, delay, self.dynamics.delay_distribution)
                state.due[s, index] = round_number + delay
                state.pending[s, index] = True
                state.n_advice[s, index] += 1
                first = state.first_advice[s]
                first[index] = torch.where(first[index] < 0, round_number, first[index])
                state.last_advice[s, index] = round_number
                counts["n_advice"][s] += n
                rows.append(
                    frames.recourse_row(
                        system,
                        round_number,
                        pool_sizes[name][s],
                        n,
                        factual=factuals[i, :n],
                        implemented=implemented[i, :n],
                        probabilities=result.probabilities[i, :n],
                        converged=result.converged[i, :n],
                        n_iterations=result.n_iterations[i, :n],
                        threshold=generator.decision_threshold or 0.5,
                    )
                )
        self.recorder.append_recourse(rows)

    def _run_searches(self, searches: list[tuple[Generator, SearchProblem]]) -> list:
        """Every search's result, in order; workers take the searches that keep no state."""
        calls = [(_search, (generator, problem)) for generator, problem in searches]
        return self._share(calls, [not generator.keeps_state for generator, _ in searches])

    def _share(self, calls: list, movable: list[bool]) -> list:
        """Results of independent calls, in order, shared with the workers where there are any."""
        if self.workers is None:
            return [fn(*args) for fn, args in calls]
        return self.workers.run_all(calls, movable)

    def _implementation_phase(self, round_number: int) -> None:
        """Agents with due advice act on it; each change is carried out with its probability."""
        units = None
        for name, state in self.state.items():
            due = state.pending & state.active & (state.due <= round_number)
            if not bool(due.any()):
                continue
            classifier = self.classifiers[name]
            C = due.shape[1]
            reps = torch.tensor(
                [s.repetition for s in self.systems[name]], device=self.device
            ).view(-1, 1)
            agents = torch.arange(C, device=self.device).view(1, -1)

            def keyed(stream: int, draw=counter_rng.uniform, reps=reps, agents=agents):
                return draw(self.draw_key, stream, round_number, reps, agents)

            context = ActionContext(
                X=state.X,
                target=state.target,
                due=due,
                score=state.score,
                threshold=state.threshold.view(-1, 1),
                effort=state.constant_effort,
                adaptation=float(self.dynamics.adaptation),
                scale=self.space.scale,
                lower=self.space.lower,
                upper=self.space.upper,
                proba=lambda X, c=classifier: c.proba(X).to(torch.float64),
                uniform=keyed,
                normal=lambda stream: keyed(stream, counter_rng.normal),
            )
            proposed = self.behaviour.propose(context)
            if bool((self.keep_probability < 1).any()):
                units = self._units() if units is None else units
                draw = counter_rng.uniform(
                    self.draw_key,
                    _COMPLY,
                    round_number,
                    reps.unsqueeze(-1),
                    agents.unsqueeze(-1),
                    units.view(1, 1, -1),
                )
                proposed = torch.where(draw < self.keep_probability, proposed, state.X)
            new = torch.where(due.unsqueeze(-1), proposed, state.X)
            changed = (new != state.X).any(-1)
            complete = due & (new == state.target).all(-1)
            implemented = due & (changed | complete)
            immediate = complete & (state.advice_round == round_number)
            # The label an agent takes is the model's prediction at its new point: for advice
            # carried out whole in the round it was given, the searched probability itself.
            later = implemented & ~immediate
            labels = state.y
            if bool(later.any()):
                current = (classifier.proba(new) > 0.5).to(torch.int64)
                labels = torch.where(later, current, labels)
            labels = torch.where(immediate, (state.target_proba > 0.5).to(torch.int64), labels)
            distance = ((new - state.X) / self.space.scale).pow(2).sum(-1).sqrt()
            state.effort += torch.where(implemented, distance, 0.0)
            state.X, state.y = new, labels
            state.pending &= ~complete
            moved = due & changed
            state.n_adaptations += moved.to(torch.int64)
            state.acted_round = torch.where(moved, round_number, state.acted_round)
            state.changed_round = torch.where(implemented, round_number, state.changed_round)
            state.changed_since_retraining |= implemented.any(1)
            state.labels_since_retraining += implemented.sum(1)

    def _arrival_phase(self, round_number: int) -> None:
        """Newcomers of this round enter every system of their repetition."""
        for name, state in self.state.items():
            entering = state.entered == round_number
            state.active |= entering
            state.changed_round = torch.where(entering, round_number, state.changed_round)
            state.changed_since_retraining |= entering.any(1)
            state.labels_since_retraining += entering.sum(1)
            self._round_counts[name]["n_arrivals"] += entering.sum(1)

    def _retraining_phase(self, round_number: int) -> None:
        """Classifiers continue training on their systems' windows of rows.

        A repetition none of whose rows changed since its systems' last retraining keeps its
        classifiers unchanged, as the reference skips a system that chose nobody. A stack whose
        systems all train on all their rows trains in lockstep (the systems that skip are put
        back afterwards); otherwise systems with the same number of rows train together.
        """
        R = self.config.n_repetitions
        changed = torch.zeros(R, dtype=torch.bool, device=self.device)
        # As in the selection, the control never drives the others: adding it must leave their
        # schedule unchanged. Its own systems follow their repetition, or their own changes.
        deciding = [k for k, s in self.stacks.items() if not s.control] or list(self.stacks)
        for name in deciding:
            changed |= self.state[name].changed_since_retraining.view(-1, R).any(0)
        jobs = {False: [], True: []}
        restore, put_back = [], []
        for name, classifier in self.classifiers.items():
            stack, state = self.stacks[name], self.state[name]
            reps = torch.tensor([s.repetition for s in self.systems[name]], device=self.device)
            if self.dynamics.retraining.schedule == "labels":
                retrain = state.labels_since_retraining >= self.dynamics.retraining.labels
            else:
                retrain = changed[reps]
                if stack.control:
                    retrain |= state.changed_since_retraining
            if not bool(retrain.any()):
                continue
            schedule = self.models[stack.model].retrain
            stream = self.streams.torch(f"retrain:{name}", round_number)
            rows = self._training_rows(state, round_number, stack.control)
            if rows is None and not self.models[stack.model].trains_together:
                rows = [(state.X[s], state.y[s]) for s in range(state.y.shape[0])]
            if rows is None:
                idle = torch.nonzero(~retrain).flatten().tolist()
                restore.append((classifier, idle, classifier.select(idle) if idle else None))
                jobs[stack.control].append(
                    classifier.training_job(state.X, state.y, schedule, stream, space=self.space)
                )
            else:
                by_size: dict[int, list[int]] = {}
                for s in torch.nonzero(retrain).flatten().tolist():
                    by_size.setdefault(len(rows[s][1]), []).append(s)
                for size, slots in sorted(by_size.items()):
                    part = classifier.select(slots)
                    X = torch.stack([rows[s][0] for s in slots])
                    y = torch.stack([rows[s][1] for s in slots])
                    generator = self.streams.torch(f"retrain:{name}", round_number, size)
                    keys = [self.systems[name][s].key for s in slots]
                    jobs[stack.control].append(
                        part.training_job(X, y, schedule, generator, keys=keys, space=self.space)
                    )
                    put_back.append((classifier, slots, part))
            state.retrained_round = torch.where(retrain, round_number, state.retrained_round)
            state.changed_since_retraining &= ~retrain
            state.labels_since_retraining = torch.where(retrain, 0, state.labels_since_retraining)
        # The control's stacks train apart: the others' jobs are shared out as without them.
        for control_jobs in jobs.values():
            train_jobs(control_jobs, self.workers)
        for classifier, systems, saved in restore:
            if saved is not None:
                classifier.put(systems, saved)
        for classifier, systems, trained in put_back:
            classifier.put(systems, trained)

    def _training_rows(self, state: StackState, round_number: int, control: bool):
        """Each system's training rows ``[(X, y)]``, or None when every system uses all rows.

        The window is ``current`` (the agents present: the reference), ``recent`` (present
        agents whose row changed in the last ``window_rounds`` rounds) or ``all`` (every agent
        that has entered, including those that left). Counterfactual data augmentation adds the
        advice given since the system's last retraining as extra favourable rows.
        """
        settings = self.dynamics.retraining
        if settings.window == "current":
            window = state.active
        elif settings.window == "recent":
            window = state.active & (state.changed_round > round_number - settings.window_rounds)
        else:
            window = state.entered <= round_number
        extra = None
        if settings.augmentation and not control:
            extra = (state.advice_round >= 0) & (state.advice_round > state.retrained_round)
        if bool(window.all()) and (extra is None or not bool(extra.any())):
            return None
        rows = []
        for s in range(window.shape[0]):
            X, y = state.X[s, window[s]], state.y[s, window[s]]
            if extra is not None and bool(extra[s].any()):
                targets = state.target[s, extra[s]]
                X = torch.cat([X, targets])
                y = torch.cat([y, torch.ones(len(targets), dtype=y.dtype, device=y.device)])
            rows.append((X, y))
        return rows

    def _decision_phase(self, round_number: int) -> None:
        """The decision policy names the favourable agents; the round's time-based metrics."""
        rows = []
        for name, state in self.state.items():
            scores = self.classifiers[name].proba(state.X).to(torch.float64)
            favourable, threshold = decide(scores, state.active, self.dynamics.decision)
            previous = state.threshold
            # Reliability (Fonseca et al.): agents that acted this round after a rejection and
            # now score at least the previous threshold; how many of them are favourable.
            crossed = (
                (state.acted_round == round_number)
                & ~state.favourable
                & state.active
                & (state.entered < round_number)
                & (scores >= previous.view(-1, 1))
            )
            state.n_failures += (crossed & ~favourable).to(torch.int64)
            newly = favourable & (state.favourable_round < 0)
            waited = round_number - state.entered
            reached = newly & state.ever_rejected
            state.initial_score = torch.where(
                state.active & state.initial_score.isnan(), scores, state.initial_score
            )
            state.favourable_round = torch.where(newly, round_number, state.favourable_round)
            state.effort_to_favourable = torch.where(
                newly, state.effort, state.effort_to_favourable
            )
            state.ever_rejected |= state.active & ~favourable
            state.score = torch.where(state.active, scores, state.score)
            state.favourable, state.threshold = favourable, threshold
            if not self.tracking:
                continue
            counts = self._round_counts[name]
            for system in self.systems[name]:
                s = system.slot
                rows.extend(
                    frames.dynamics_rows(
                        system,
                        round_number,
                        {key: int(value[s]) for key, value in counts.items()},
                        float(threshold[s]),
                        float(previous[s]),
                        crossed[s],
                        favourable[s],
                        reached[s],
                        waited[s],
                        state.effort[s],
                        scores[s] - state.initial_score[s],
                        state.active[s],
                        state.group[s],
                        self.group_levels,
                    )
                )
        if rows:
            self.recorder.append_metrics(rows)

    def _evaluation_phase(self, round_number: int) -> None:
        """Every metric for every system, current state versus initial state.

        With arrivals and exits, a system's current population is every agent that has entered
        so far, at its current features (agents that left keep the features they left with).
        """
        n_permutations = self.config.n_permutations if round_number > 0 else 0
        # Plausibility metrics look at who moved on advice since the previous evaluation round.
        previous = max(
            (t for t in range(round_number) if self.config.is_evaluation_round(t)), default=None
        )
        scale = self.space.scale.cpu().numpy()
        calls = []
        for name, classifier in self.classifiers.items():
            state = self.state[name]
            acted = state.acted_round.cpu()
            initial = self.initial[self.stacks[name].model]
            initial_reference = initial.proba(self.reference_X)[0].cpu().numpy().astype(np.float64)
            current_reference = classifier.proba(self.reference_X).cpu().numpy().astype(np.float64)
            # The metrics work in numpy: one transfer per model, not one per system.
            populations = state.X.cpu()
            labels = state.y.cpu()
            initial_params = initial.parameters_of(0)
            initial_proba = CachedProba(self.reference_X, initial_reference, initial)
            for system in self.systems[name]:
                rows = state.rows_of(system.slot, round_number)
                train_X, train_y = populations[system.slot], labels[system.slot]
                moved = None if previous is None else acted[system.slot] > previous
                if rows is not None:
                    train_X, train_y = train_X[rows.cpu()], train_y[rows.cpu()]
                    moved = None if moved is None else moved[rows.cpu()]
                context = EvaluationContext(
                    reference_X=self.reference_X,
                    reference_y=self.reference_y,
                    train_X=train_X.numpy(),
                    train_y=train_y.numpy(),
                    test_X=self.test.X,
                    test_y=self.test.y,
                    proba_initial=initial_proba,
                    proba_current=CachedProba(
                        self.reference_X,
                        current_reference[system.slot],
                        classifier.select([system.slot]),
                    ),
                    params_initial=initial_params,
                    params_current=classifier.parameters_of(system.slot),
                    rng=np.random.default_rng(0),
                    n_permutations=n_permutations,
                    p_value_form=self.config.p_value,
                    moved=None if moved is None else moved.numpy(),
                    scale=scale,
                )
                streams = {
                    metric: self.streams.numpy(
                        f"metric:{metric}:{system.model}/{system.generator}",
                        system.repetition,
                        round_number,
                    )
                    for metric in self.metrics
                }
                args = (self.metrics, context, streams, system, round_number)
                calls.append((evaluate, args))
        # Systems are evaluated independently: share them out.
        results = self._share(calls, [True] * len(calls))
        rows = [row for system_rows, _, _ in results for row in system_rows]
        missing = [row for _, system_missing, _ in results for row in system_missing]
        kernel = [row for _, _, system_kernel in results for row in system_kernel]
        self.recorder.append_metrics(rows)
        if missing:  # empty cells in metrics.csv; the reasons go to the log and the reports
            self.recorder.note_missing(missing)
        if kernel:  # MMDs blind at their length scale: the log and kernel_warnings.csv
            self.recorder.note_kernel_checks(kernel)

    # --- records ---------------------------------------------------------------------------

    def _write_tables(self) -> None:
        recorder = self.recorder
        population = self._final_population_frame()
        recorder.write_table(recorder.population_file, population)
        recorder.write_table(recorder.initial_file, self._initial_population_frame())
        recorder.write_table(recorder.original_file, self._original_population_frame(population))
        if self.train.n_features == 2:
            recorder.write_table(recorder.grid_file, self._decision_grid_frame())
        if self.tracking:
            recorder.write_table(recorder.agents_file, self._agents_frame())

    def _initial_population_frame(self) -> pd.DataFrame:
        """The round-0 training population (the same for every system)."""
        frame = pd.DataFrame(self.train.X, columns=list(self.train.feature_names))
        frame.insert(0, "individual", np.arange(self.train.n_samples))
        frame["label"] = self.train.y
        return frame

    def _entered_rows(self, state: StackState, slot: int) -> torch.Tensor | None:
        return state.rows_of(slot, self.config.n_rounds)

    def _decision_grid_frame(self, resolution: int = 60) -> pd.DataFrame:
        """Initial and final probabilities on a grid over the data (two-feature data only).

        Reports draw the decision boundaries from it without reloading any model.
        """
        entered = []
        for state in self.state.values():
            mask = state.entered <= self.config.n_rounds
            entered.append(state.X[mask].reshape(-1, 2).cpu().numpy())
        X = np.vstack([self.reference_X, *entered])
        low, high = X.min(0), X.max(0)
        pad = 0.1 * (high - low)
        axes = [
            np.linspace(lo - p, hi + p, resolution)
            for lo, hi, p in zip(low, high, pad, strict=True)
        ]
        g0, g1 = np.meshgrid(*axes)
        grid = np.column_stack([g0.ravel(), g1.ravel()])
        names = list(self.train.feature_names)
        parts = []
        for name, classifier in self.classifiers.items():
            initial = self.initial[self.stacks[name].model].proba(grid)[0].cpu().numpy()
            final = classifier.proba(grid).cpu().numpy()
            for system in self.systems[name]:
                for stage, proba in (("initial", initial), ("final", final[system.slot])):
                    frame = pd.DataFrame(grid, columns=names)
                    frame.insert(0, "stage", stage)
                    frame.insert(0, "generator", system.generator)
                    frame.insert(0, "model", system.model)
                    frame.insert(0, "repetition", system.repetition)
                    frame["proba"] = proba.astype(np.float64)
                    parts.append(frame)
        return pd.concat(parts, ignore_index=True)

    def _initial_labels(self, repetition: int) -> np.ndarray:
        """Each agent row's label when it entered."""
        batch = self.arrivals[repetition]
        return np.concatenate([self.train.y, batch.y])

    def _final_population_frame(self) -> pd.DataFrame:
        parts = []
        names = list(self.train.feature_names)
        for name, systems in self.systems.items():
            state = self.state[name]
            X, y = state.X.cpu(), state.y.cpu()
            count = state.n_advice.cpu()
            first, last = state.first_advice.cpu(), state.last_advice.cpu()
            for system in systems:
                s = system.slot
                rows = self._entered_rows(state, s)
                index = np.arange(X.shape[1]) if rows is None else rows.cpu().numpy()
                initial_labels = self._initial_labels(system.repetition)
                parts.append(
                    frames.population_frame(
                        system,
                        index,
                        X[s, index].numpy(),
                        y[s, index].numpy(),
                        initial_labels[index],
                        count[s, index].numpy(),
                        first[s, index].numpy(),
                        last[s, index].numpy(),
                        names,
                    )
                )
        return pd.concat(parts, ignore_index=True)

    def _original_population_frame(self, population: pd.DataFrame) -> pd.DataFrame:
        """``final_population.csv`` in the data's original units, with each row's changes.

        Every row is compared with the individual's position when it entered: its row of the
        initial population, or its arrival row.
        """
        individual = population["individual"].to_numpy()
        repetition = population["repetition"].to_numpy()
        initial = np.zeros((len(population), self.train.n_features))
        for rep, batch in enumerate(self.arrivals):
            rows = repetition == rep
            initial[rows] = np.vstack([self.train.X, batch.X])[individual[rows]]
        return frames.original_population_frame(population, initial, self.train.decoding)

    def _agents_frame(self) -> pd.DataFrame:
        parts = []
        for name, systems in self.systems.items():
            state = self.state[name]
            for system in systems:
                rows = self._entered_rows(state, system.slot)
                if rows is None:
                    rows = torch.arange(state.y.shape[1], device=state.y.device)
                parts.append(
                    frames.agents_frame(system, state, system.slot, rows, self.group_levels)
                )
        return pd.concat(parts, ignore_index=True)

    # --- checkpoints -----------------------------------------------------------------------

    def _state(self) -> dict:
        """Everything a resumed run needs, as CPU tensors (loadable on any machine)."""
        state = {
            "round": self.round,
            "initial": {k: v.state() for k, v in self.initial.items()},
            "classifiers": {k: v.state() for k, v in self.classifiers.items()},
            "stacks": {k: v.as_dict() for k, v in self.state.items()},
            "generators": {name: g.state_dict() for name, g in self.generators.items()},
        }
        return to_device(state, "cpu")

    def _restore(self, state: dict) -> None:
        state = to_device(state, self.device)
        if set(state["classifiers"]) != set(self.stacks) or "stacks" not in state:
            raise ConfigError(
                "resume",
                sorted(state["classifiers"]),
                f"a checkpoint of the classifier stacks {list(self.stacks)}",
            )
        d = self.train.n_features
        for name, spec in self.models.items():
            self.initial[name] = spec.restore(d, 1, state["initial"][name], self.device)
        for name, stack in self.stacks.items():
            spec = self.models[stack.model]
            n = len(self.systems[name])
            self.classifiers[name] = spec.restore(d, n, state["classifiers"][name], self.device)
            self.state[name] = StackState.from_dict(state["stacks"][name])
            self._round_counts[name] = self._fresh_counts(n)
        for name, generator in self.generators.items():
            generator.load_state_dict(state["generators"].get(name, {}))
        self.round = int(state["round"])


def _keep(chosen: np.ndarray, eligible: np.ndarray, control: bool) -> np.ndarray:
    """The repetition's chosen agents this system can advise (all of them in the reference)."""
    if control or len(chosen) == 0 or bool(eligible[chosen].all()):
        return chosen
    return chosen[eligible[chosen]]


def _moves(generator: Generator) -> bool:
    """Whether the simulation implements this generator's counterfactuals (not the control)."""
    return bool(getattr(generator, "moves_individuals", True))


def _search(generator: Generator, problem: SearchProblem):
    """One generator's batched search (a module-level function, so a worker can run it)."""
    return generator.search(problem)
