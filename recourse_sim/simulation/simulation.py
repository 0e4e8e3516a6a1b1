"""The recourse loop of the reference study, on a SimPy clock.

Altmeyer et al., "Endogenous Macrodynamics in Algorithmic Recourse" (IEEE SaTML 2023), as
implemented by AlgorithmicRecourseDynamics.jl v0.1.2.

A *system* is one (model, generator) pair in one repetition; it owns a copy of the training
population and its own classifier. Every round, for every repetition:

1. **decide**: the candidates are the individuals that *every* system of the repetition currently
   predicts negative (an intersection, so all systems treat the same people);
2. **recourse**: ``round(recourse_fraction · |candidates|)`` of them are drawn; each system's
   generator searches ``K`` counterfactuals per individual, one is picked at random, and the
   individual's features are overwritten with it (valid or not) and its label set to the
   pre-retraining model's prediction there;
3. **retrain**: every classifier continues training on its system's current population (a
   system whose repetition chose nobody this round is skipped, as in the reference);
4. **evaluate** (round 0, every ``evaluate_every`` rounds and the last): shift metrics comparing
   each system's current state with its initial one.

The no-recourse control (a generator with ``moves_individuals = False``, ``generator=none``)
is retrained like every system but moves nobody; its systems never narrow the candidate pool and
keep a classifier stack of their own, so adding them leaves every other system's rows unchanged.

The schedule runs as SimPy processes on one clock (Matloff's process-interaction view of
discrete-event simulation), so time-based dynamics (implementation delays, partial compliance,
arrivals, retraining schedules) can be added as processes rather than by rewriting the loop. The
core takes plain objects and knows nothing of hydra.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import simpy
import torch
from tqdm.auto import tqdm

from recourse_sim.data.base import Dataset
from recourse_sim.errors import ConfigError
from recourse_sim.generators.base import FeatureSpace, Generator, SearchProblem
from recourse_sim.metrics.base import EvaluationContext, Metric
from recourse_sim.models.classifier import ClassifierSpec, StackedClassifier
from recourse_sim.models.network import StackedNetworks
from recourse_sim.models.training import train_stacks
from recourse_sim.simulation.config import SimulationConfig
from recourse_sim.simulation.recorder import Recorder
from recourse_sim.utils import RandomStreams, counter_rng
from recourse_sim.utils.device import to_device
from recourse_sim.utils.workers import WorkerPool

_PICK_STREAM = 0x91C4


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

    Main API: :meth:`run` (optionally resuming from the recorder's checkpoint); afterwards
    :attr:`populations`, :attr:`labels` and :attr:`classifiers` hold the final state.
    """

    def __init__(
        self,
        train: Dataset,
        test: Dataset,
        models: Mapping[str, ClassifierSpec],
        generators: Mapping[str, Generator],
        metrics: Mapping[str, Metric],
        config: SimulationConfig,
        streams: RandomStreams,
        recorder: Recorder | None = None,
        progress: bool = True,
        workers: WorkerPool | None = None,
        device: str | torch.device = "cpu",
    ):
        if not models:
            raise ConfigError("model", dict(models), "at least one model")
        if not generators:
            raise ConfigError("generator", dict(generators), "at least one generator")
        if train.feature_names != test.feature_names:
            raise ConfigError("data", "train/test", "the same feature columns in both sets")
        self.train, self.test = train, test
        self.models = dict(models)
        self.generators = dict(generators)
        self.metrics = dict(metrics)
        self.config = config
        self.streams = streams
        self.recorder = recorder or Recorder(None)
        self.progress = progress
        self.device = torch.device(device)
        # Worker processes compute on the CPU, so a run on another device keeps its work here.
        self.workers = workers if self.device.type == "cpu" else None
        self.space = FeatureSpace.from_data(train).to(self.device)
        self.reference_X = np.vstack([train.X, test.X])
        self.reference_y = np.concatenate([train.y, test.y])
        R = config.n_repetitions
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
        self.initial: dict[str, StackedClassifier] = {}
        self.classifiers: dict[str, StackedClassifier] = {}
        self.populations: dict[str, torch.Tensor] = {}
        self.labels: dict[str, torch.Tensor] = {}
        self.recourse_count: dict[str, torch.Tensor] = {}
        self.first_recourse: dict[str, torch.Tensor] = {}
        self.last_recourse: dict[str, torch.Tensor] = {}

    # --- set-up ----------------------------------------------------------------------------

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
            jobs.append(self.initial[name].training_job(X[None], y[None], spec.pretrain, generator))
        train_stacks(jobs, self.workers)
        for name, stack in self.stacks.items():
            model = self.initial[stack.model]
            n = len(self.systems[name])
            self.classifiers[name] = model.replicate(n)
            self.populations[name] = X.unsqueeze(0).repeat(n, 1, 1)
            self.labels[name] = y.unsqueeze(0).repeat(n, 1)
            never = torch.full((n, len(y)), -1, dtype=torch.int64, device=device)
            self.recourse_count[name] = torch.zeros(n, len(y), dtype=torch.int64, device=device)
            self.first_recourse[name] = never
            self.last_recourse[name] = never.clone()

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
            self._pretrain()
        env = simpy.Environment(initial_time=self.round * self.config.round_length)
        bar = tqdm(
            total=self.config.n_rounds,
            initial=self.round,
            desc="rounds",
            unit="round",
            disable=not self.progress,
        )
        env.process(self._clock(env, bar, evaluate_start=checkpoint is None))
        env.run()
        bar.close()
        self.recorder.write_table(self.recorder.population_file, self._final_population_frame())
        self.recorder.write_table(self.recorder.initial_file, self._initial_population_frame())
        if self.train.n_features == 2:
            self.recorder.write_table(self.recorder.grid_file, self._decision_grid_frame())
        return self

    def _clock(self, env: simpy.Environment, bar, evaluate_start: bool):
        """The round schedule: decisions, recourse, retraining and evaluation, in that order."""
        if evaluate_start:
            yield env.process(self._evaluation_phase(env, 0))
        while self.round < self.config.n_rounds:
            yield env.timeout(self.config.round_length)
            round_number = self.round + 1
            chosen, pool_sizes = yield env.process(self._decision_phase(env, round_number))
            yield env.process(self._recourse_phase(env, round_number, chosen, pool_sizes))
            # The reference skips a system's update in a round in which it chose nobody.
            if any(len(c) for c in chosen):
                yield env.process(self._retraining_phase(env, round_number, chosen))
            if self.config.is_evaluation_round(round_number):
                yield env.process(self._evaluation_phase(env, round_number))
            self.round = round_number
            every = self.config.checkpoint_every
            if every and (round_number % every == 0 or round_number == self.config.n_rounds):
                self.recorder.save_checkpoint(self._state())
            bar.update(1)

    # --- phases ----------------------------------------------------------------------------

    def _decision_phase(self, env: simpy.Environment, round_number: int):
        """Candidates (intersection over all systems of a repetition) and the chosen individuals."""
        R, N = self.config.n_repetitions, self.train.n_samples
        candidates = torch.ones(R, N, dtype=torch.bool, device=self.device)
        # The no-recourse control never narrows the pool (unless it is all there is), so adding
        # it leaves every other system's candidates, and hence its rows, unchanged.
        deciding = [k for k, stack in self.stacks.items() if not stack.control] or list(self.stacks)
        for name in deciding:
            classifier = self.classifiers[name]
            if self.config.candidates == "prediction":
                # A probability of exactly 0.5 counts as negative (Julia's round-half-to-even).
                positive = classifier.proba(self.populations[name]) > 0.5
            else:
                positive = self.labels[name] == 1
            candidates &= (~positive).view(-1, R, N).all(dim=0)
        chosen, pool_sizes = [], []
        for rep in range(R):
            pool = torch.nonzero(candidates[rep]).flatten().cpu().numpy()
            # Python's round() rounds half to even, like Julia's round() in the reference.
            n_chosen = round(self.config.recourse_fraction * len(pool))
            rng = self.streams.numpy("selection", rep, round_number)
            chosen.append(np.sort(rng.choice(pool, size=n_chosen, replace=False)))
            pool_sizes.append(len(pool))
        yield env.timeout(0)
        return chosen, pool_sizes

    def _recourse_phase(self, env, round_number: int, chosen: list[np.ndarray], pool_sizes):
        """Search, pick and implement one counterfactual per chosen individual in every system."""
        R = self.config.n_repetitions
        K = self.config.n_counterfactuals
        width = max(len(c) for c in chosen)
        # Pad every repetition's batch to the widest one; padded rows are searched and discarded
        # (keyed randomness makes the real rows independent of them).
        padded = np.zeros((R, width), dtype=np.int64)
        for rep, c in enumerate(chosen):
            padded[rep, : len(c)] = c
        ids = torch.as_tensor(padded, device=self.device)
        rows, searches = [], []
        for name, classifier in self.classifiers.items():
            for g, label in enumerate(self.stacks[name].generators):
                generator = self.generators[label]
                slots = torch.arange(g * R, (g + 1) * R, device=self.device)
                systems = self.systems[name][g * R : (g + 1) * R]
                if width == 0 or not _moves(generator):
                    # The control searches nothing and moves nobody: its chosen stay as they are.
                    rows.extend(
                        self._recourse_row(s, round_number, pool_sizes, chosen) for s in systems
                    )
                    continue
                population = self.populations[name][slots]
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
                    population_y=self.labels[name][slots],
                    n_counterfactuals=K,
                    round_key=round_number,
                )
                searches.append((name, generator, systems, problem))
        # The searches of different (model, generator) pairs are independent: share them out.
        results = self._run_searches(
            [(generator, problem) for _, generator, _, problem in searches]
        )
        for (name, generator, systems, problem), result in zip(searches, results, strict=True):
            factuals, keys = problem.factuals, problem.system_keys
            pick = counter_rng.uniform(_PICK_STREAM, round_number, keys.view(-1, 1), ids)
            pick = (pick * K).long().clamp_max(K - 1)  # one of the K, uniformly at random
            implemented = torch.gather(
                result.counterfactuals,
                2,
                pick.view(R, width, 1, 1).expand(-1, -1, 1, factuals.shape[-1]),
            ).squeeze(2)
            probability = torch.gather(result.probabilities, 2, pick.unsqueeze(-1)).squeeze(-1)
            new_labels = (probability > 0.5).long()  # the model's own prediction, pre-retraining
            for rep, system in enumerate(systems):
                n = len(chosen[rep])
                index = ids[rep, :n]
                self.populations[name][system.slot, index] = implemented[rep, :n]
                self.labels[name][system.slot, index] = new_labels[rep, :n]
                self.recourse_count[name][system.slot, index] += 1
                first = self.first_recourse[name][system.slot]
                first[index] = torch.where(first[index] < 0, round_number, first[index])
                self.last_recourse[name][system.slot, index] = round_number
                rows.append(
                    self._recourse_row(
                        system,
                        round_number,
                        pool_sizes,
                        chosen,
                        factual=factuals[rep, :n],
                        implemented=implemented[rep, :n],
                        probabilities=result.probabilities[rep, :n],
                        converged=result.converged[rep, :n],
                        n_iterations=result.n_iterations[rep, :n],
                        threshold=generator.decision_threshold or 0.5,
                    )
                )
        self.recorder.append_recourse(rows)
        yield env.timeout(0)

    def _run_searches(self, searches: list[tuple[Generator, SearchProblem]]) -> list:
        """Every search's result, in order; workers take the searches that keep no state."""
        calls = [(_search, (generator, problem)) for generator, problem in searches]
        return self._share(calls, [not generator.keeps_state for generator, _ in searches])

    def _share(self, calls: list, movable: list[bool]) -> list:
        """Results of independent calls, in order, shared with the workers where there are any."""
        if self.workers is None:
            return [fn(*args) for fn, args in calls]
        return self.workers.run_all(calls, movable)

    def _retraining_phase(self, env, round_number: int, chosen: list[np.ndarray]):
        """Every classifier continues training on its system's current population.

        A system whose repetition chose nobody this round keeps its classifier unchanged, as the
        reference skips that system's update. The stack still trains it in lockstep (each
        network's update is independent of the others') and its weights are put back.
        """
        R = self.config.n_repetitions
        idle = [rep for rep in range(R) if len(chosen[rep]) == 0]
        jobs = {False: [], True: []}
        kept = []
        for name, classifier in self.classifiers.items():
            stack = self.stacks[name]
            m, G = classifier.n_members, len(stack.generators)
            nets = [(g * R + rep) * m + j for g in range(G) for rep in idle for j in range(m)]
            kept.append((classifier.nets, nets, classifier.nets.take(nets) if nets else None))
            jobs[stack.control].append(
                classifier.training_job(
                    self.populations[name],
                    self.labels[name],
                    self.models[stack.model].retrain,
                    self.streams.torch(f"retrain:{name}", round_number),
                )
            )
        # The control's stacks train apart: the others' jobs are shared out as without them.
        for control_jobs in jobs.values():
            train_stacks(control_jobs, self.workers)
        for stack, nets, saved in kept:
            if saved is not None:
                stack.put(nets, saved)
        yield env.timeout(0)

    def _evaluation_phase(self, env, round_number: int):
        """Every metric for every system, current state versus initial state."""
        n_permutations = self.config.n_permutations if round_number > 0 else 0
        calls = []
        for name, classifier in self.classifiers.items():
            initial = self.initial[self.stacks[name].model]
            initial_reference = initial.proba(self.reference_X)[0].cpu().numpy().astype(np.float64)
            current_reference = classifier.proba(self.reference_X).cpu().numpy().astype(np.float64)
            # The metrics work in numpy: one transfer per model, not one per system.
            populations = self.populations[name].cpu()
            labels = self.labels[name].cpu()
            initial_params = initial.parameters_of(0)
            initial_proba = _CachedProba(self.reference_X, initial_reference, initial)
            for system in self.systems[name]:
                context = EvaluationContext(
                    reference_X=self.reference_X,
                    reference_y=self.reference_y,
                    train_X=populations[system.slot].numpy(),
                    train_y=labels[system.slot].numpy(),
                    test_X=self.test.X,
                    test_y=self.test.y,
                    proba_initial=initial_proba,
                    proba_current=_CachedProba(
                        self.reference_X,
                        current_reference[system.slot],
                        classifier.select([system.slot]),
                    ),
                    params_initial=initial_params,
                    params_current=classifier.parameters_of(system.slot),
                    rng=np.random.default_rng(0),
                    n_permutations=n_permutations,
                    p_value_form=self.config.p_value,
                )
                streams = {
                    metric: self.streams.numpy(
                        f"metric:{metric}:{system.model}/{system.generator}",
                        system.repetition,
                        round_number,
                    )
                    for metric in self.metrics
                }
                calls.append((_evaluate, (self.metrics, context, streams, system, round_number)))
        # Systems are evaluated independently: share them out.
        results = self._share(calls, [True] * len(calls))
        rows = [row for system_rows, _ in results for row in system_rows]
        missing = [row for _, system_missing in results for row in system_missing]
        self.recorder.append_metrics(rows)
        if missing:  # empty cells in metrics.csv; the reasons go to the log and the reports
            self.recorder.note_missing(missing)
        yield env.timeout(0)

    # --- records ---------------------------------------------------------------------------

    def _recourse_row(
        self,
        system: System,
        round_number: int,
        pool_sizes: list[int],
        chosen: list[np.ndarray],
        factual=None,
        implemented=None,
        probabilities=None,
        converged=None,
        n_iterations=None,
        threshold: float = 0.5,
    ) -> dict:
        row = {
            "repetition": system.repetition,
            "round": round_number,
            "model": system.model,
            "generator": system.generator,
            "n_candidates": pool_sizes[system.repetition],
            # The control's chosen count too: they were offered nothing, so the rest stays empty.
            "n_chosen": len(chosen[system.repetition]),
            "success_rate": np.nan,
            "converged": np.nan,
            "cost": np.nan,
            "redundancy": np.nan,
            "n_iterations": np.nan,
        }
        if factual is not None and len(factual):
            change = (implemented - factual).abs()
            row.update(
                # Share of the K counterfactuals that reach the generator's threshold (CE.jl).
                success_rate=float((probabilities >= threshold).double().mean()),
                converged=float(converged.double().mean()),
                # L2 distance between factual and implemented counterfactual (model space).
                cost=float(change.pow(2).sum(-1).sqrt().mean()),
                # Share of features the implemented counterfactual leaves unchanged.
                redundancy=float((change <= 1e-12).double().mean()),
                n_iterations=float(n_iterations.double().mean()),
            )
        return row

    def _initial_population_frame(self) -> pd.DataFrame:
        """The round-0 training population (the same for every system)."""
        frame = pd.DataFrame(self.train.X, columns=list(self.train.feature_names))
        frame.insert(0, "individual", np.arange(self.train.n_samples))
        frame["label"] = self.train.y
        return frame

    def _decision_grid_frame(self, resolution: int = 60) -> pd.DataFrame:
        """Initial and final probabilities on a grid over the data (two-feature data only).

        Reports draw the decision boundaries from it without reloading any model.
        """
        X = np.vstack(
            [self.reference_X] + [p.reshape(-1, 2).cpu().numpy() for p in self.populations.values()]
        )
        low, high = X.min(0), X.max(0)
        pad = 0.1 * (high - low)
        axes = [
            np.linspace(lo - p, hi + p, resolution)
            for lo, hi, p in zip(low, high, pad, strict=True)
        ]
        g0, g1 = np.meshgrid(*axes)
        grid = np.column_stack([g0.ravel(), g1.ravel()])
        names = list(self.train.feature_names)
        frames = []
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
                    frames.append(frame)
        return pd.concat(frames, ignore_index=True)

    def _final_population_frame(self) -> pd.DataFrame:
        frames = []
        names = list(self.train.feature_names)
        for name, systems in self.systems.items():
            populations, labels = self.populations[name].cpu(), self.labels[name].cpu()
            count = self.recourse_count[name].cpu()
            first, last = self.first_recourse[name].cpu(), self.last_recourse[name].cpu()
            for system in systems:
                s = system.slot
                frame = pd.DataFrame(populations[s].numpy(), columns=names)
                frame.insert(0, "individual", np.arange(self.train.n_samples))
                frame.insert(0, "generator", system.generator)
                frame.insert(0, "model", system.model)
                frame.insert(0, "repetition", system.repetition)
                frame["label"] = labels[s].numpy()
                frame["initial_label"] = self.train.y
                frame["n_recourse"] = count[s].numpy()
                frame["first_recourse_round"] = first[s].numpy()
                frame["last_recourse_round"] = last[s].numpy()
                frames.append(frame)
        return pd.concat(frames, ignore_index=True)

    # --- checkpoints -----------------------------------------------------------------------

    def _state(self) -> dict:
        """Everything a resumed run needs, as CPU tensors (loadable on any machine)."""
        state = {
            "round": self.round,
            "initial": {k: v.nets.flat for k, v in self.initial.items()},
            "classifiers": {k: v.nets.flat for k, v in self.classifiers.items()},
            "populations": self.populations,
            "labels": self.labels,
            "recourse_count": self.recourse_count,
            "first_recourse": self.first_recourse,
            "last_recourse": self.last_recourse,
            "generators": {name: g.state_dict() for name, g in self.generators.items()},
        }
        return to_device(state, "cpu")

    def _restore(self, state: dict) -> None:
        state = to_device(state, self.device)
        if set(state["classifiers"]) != set(self.stacks):
            raise ConfigError(
                "resume",
                sorted(state["classifiers"]),
                f"a checkpoint of the classifier stacks {list(self.stacks)}",
            )
        for name, spec in self.models.items():
            architecture = spec.architecture(self.train.n_features)
            self.initial[name] = StackedClassifier(
                spec, StackedNetworks(architecture, spec.n_members, state["initial"][name]), 1
            )
        for name, stack in self.stacks.items():
            spec = self.models[stack.model]
            architecture = spec.architecture(self.train.n_features)
            n = len(self.systems[name])
            self.classifiers[name] = StackedClassifier(
                spec,
                StackedNetworks(architecture, n * spec.n_members, state["classifiers"][name]),
                n,
            )
        self.populations = state["populations"]
        self.labels = state["labels"]
        self.recourse_count = state["recourse_count"]
        self.first_recourse = state["first_recourse"]
        self.last_recourse = state["last_recourse"]
        for name, generator in self.generators.items():
            generator.load_state_dict(state["generators"].get(name, {}))
        self.round = int(state["round"])


def _moves(generator: Generator) -> bool:
    """Whether the simulation implements this generator's counterfactuals (not the control)."""
    return bool(getattr(generator, "moves_individuals", True))


def _search(generator: Generator, problem: SearchProblem):
    """One generator's batched search (a module-level function, so a worker can run it)."""
    return generator.search(problem)


class _CachedProba:
    """One system's probabilities, answering the reference rows from a precomputed vector.

    Several metrics ask for the reference rows; a class rather than a closure, so that a worker
    process can evaluate.
    """

    def __init__(self, reference_X: np.ndarray, reference_proba: np.ndarray, model):
        self.reference_X = reference_X
        self.reference_proba = reference_proba
        self.model = model  # a single-system StackedClassifier

    def __call__(self, X: np.ndarray) -> np.ndarray:
        if X is self.reference_X:
            return self.reference_proba
        return self.model.proba(X)[0].cpu().numpy().astype(np.float64)


def _evaluate(
    metrics: Mapping[str, Metric],
    context: EvaluationContext,
    streams: Mapping[str, np.random.Generator],
    system: System,
    round_number: int,
) -> tuple[list[dict], list[dict]]:
    """Every metric of one system: ``metrics.csv`` rows, and why values are missing.

    A value that cannot be computed (the metric says why, or it is not finite) is missing
    (CONVENTIONS rule 2): NaN value and no p-value, i.e. two empty cells in ``metrics.csv``, and
    a ``repetition, round, model, generator, metric, reason`` row for the recorder's
    ``note_missing``. Module level: workers run it.
    """
    rows, missing = [], []
    for metric_name, metric in metrics.items():
        context.rng = streams[metric_name]
        result = metric(context)
        value = float(result.value)
        p_value = None if result.p_value is None else float(result.p_value)
        reason = getattr(result, "reason", None)
        if reason is None and not np.isfinite(value):
            reason = "the value is not finite"
        elif reason is None and p_value is not None and not np.isfinite(p_value):
            reason = "the p-value is not finite"
        system_keys = {
            "repetition": system.repetition,
            "round": round_number,
            "model": system.model,
            "generator": system.generator,
            "metric": metric_name,
        }
        if reason is not None:
            value, p_value = np.nan, None
            missing.append({**system_keys, "reason": reason})
        rows.append(
            {
                **system_keys,
                "scope": metric.scope,
                "value": value,
                "p_value": np.nan if p_value is None else p_value,
            }
        )
    return rows, missing
