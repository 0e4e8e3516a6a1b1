"""Settings of the time-based dynamics, checked before any work starts.

Every default is the reference study's loop (Altmeyer et al., SaTML 2023): nobody arrives or
leaves, a probability threshold of 0.5 decides, a share of the rejected get advice, everyone
implements it at once and entirely, and every classifier retrains each round on its whole
current population. Any other value turns on agent tracking: the run then also writes
``agents.csv`` and the time-based rows of ``metrics.csv``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from recourse_sim import checks
from recourse_sim.errors import ConfigError

ARRIVAL_KINDS = ("fixed", "relative", "poisson")
EXITS = ("stay", "favourable")
POLICIES = ("threshold", "top_k", "quantile")
RECIPIENTS = ("share", "all")
SELECTIONS = ("shared", "per_system")
DELAY_DISTRIBUTIONS = ("fixed", "geometric", "poisson")
SCHEDULES = ("every_round", "every_n", "never", "labels")
WINDOWS = ("current", "recent", "all")


def _refuse_unknown(prefix: str, values: dict, known: list[str]) -> None:
    unknown = [name for name in values if name not in known]
    if unknown:
        raise ConfigError(
            f"{prefix}.{unknown[0]}",
            values[unknown[0]],
            f"a known key of {prefix}: " + ", ".join(known),
        )


@dataclass(frozen=True)
class Arrivals:
    """New agents per round: ``fixed`` count, ``relative`` growth or ``poisson`` mean."""

    kind: str = "fixed"
    per_round: float = 0

    def __post_init__(self) -> None:
        checks.check_choice("dynamics.arrivals.kind", self.kind, ARRIVAL_KINDS)
        if self.kind == "fixed":
            value = checks.integer("dynamics.arrivals.per_round", self.per_round, minimum=0)
        else:
            value = checks.real("dynamics.arrivals.per_round", self.per_round, minimum=0)
        object.__setattr__(self, "per_round", value)


@dataclass(frozen=True)
class Decision:
    """Who is favourable at a decision (Fonseca et al. 2023's three policies)."""

    policy: str = "threshold"
    threshold: float = 0.5  # threshold: favourable when the probability exceeds it
    k: int = 10  # top_k: favourable decisions per round
    share: float = 0.1  # quantile: share of the active agents favourable per round

    def __post_init__(self) -> None:
        checks.check_choice("dynamics.decision.policy", self.policy, POLICIES)
        checks.probability("dynamics.decision.threshold", self.threshold)
        checks.integer("dynamics.decision.k", self.k, minimum=1)
        checks.real("dynamics.decision.share", self.share, minimum=0, maximum=1, low_open=True)


@dataclass(frozen=True)
class Advice:
    """Who among the rejected receives a counterfactual each round."""

    recipients: str = "share"  # share: simulation.recourse_fraction of the eligible | all
    selection: str = "shared"  # shared: one draw per repetition | per_system

    def __post_init__(self) -> None:
        checks.check_choice("dynamics.advice.recipients", self.recipients, RECIPIENTS)
        checks.check_choice("dynamics.advice.selection", self.selection, SELECTIONS)


@dataclass(frozen=True)
class Retraining:
    """When classifiers retrain and on which rows."""

    schedule: str = "every_round"
    every: int = 1  # every_n: retrain in rounds divisible by this
    labels: int = 1  # labels: retrain once this many new labels arrived since the last time
    window: str = "current"  # current | recent | all
    window_rounds: int = 1  # recent: rows whose data changed in the last this many rounds
    augmentation: bool = False  # counterfactual data augmentation (extra positives)

    def __post_init__(self) -> None:
        checks.check_choice("dynamics.retraining.schedule", self.schedule, SCHEDULES)
        checks.integer("dynamics.retraining.every", self.every, minimum=1)
        checks.integer("dynamics.retraining.labels", self.labels, minimum=1)
        checks.check_choice("dynamics.retraining.window", self.window, WINDOWS)
        checks.integer("dynamics.retraining.window_rounds", self.window_rounds, minimum=1)
        checks.flag("dynamics.retraining.augmentation", self.augmentation)


@dataclass(frozen=True)
class DynamicsConfig:
    """The population, decision, behaviour and retraining dynamics of a run.

    Attributes:
        initial_agents: Agents present at round 0: the first this many rows of the training
            split (``None``: all of it, the reference).
        arrivals: New agents per round, drawn from the data set's generating process.
        exits: ``stay`` (reference) or ``favourable`` (agents leave after a favourable decision).
        decision: The decision policy.
        advice: Who gets a counterfactual.
        behaviour: How agents act on advice: ``full`` (reference: at once and entirely) or a
            behaviour of Fonseca et al. (``binary_constant``, ``continuous_constant``,
            ``continuous_flexible``); see :mod:`recourse_sim.dynamics.behaviours`.
        adaptation: The behaviours' effort parameter (recgame's ``adaptation``).
        compliance: Per round, the probability that each recommended feature change is carried
            out (1: all at once). One-hot groups count as one feature.
        difficulty: Per feature (or one-hot group prefix), the probability of skipping its
            change in a round (SimulatedRecourse.jl); overrides ``compliance`` there.
        delay: Mean rounds between advice and its first effect.
        delay_distribution: ``fixed``, ``geometric`` (on 0, 1, 2, ...) or ``poisson``.
        advice_expiry: Rounds after which unfinished advice lapses (0: never).
        give_up_after: An agent stops seeking advice after this many failures (0: never).
        retraining: Retraining schedule, window and augmentation.
        record: Write ``agents.csv`` and the time-based rows even with reference values.
    """

    initial_agents: int | None = None
    arrivals: Arrivals = field(default_factory=Arrivals)
    exits: str = "stay"
    decision: Decision = field(default_factory=Decision)
    advice: Advice = field(default_factory=Advice)
    behaviour: str = "full"
    adaptation: float = 1.0
    compliance: float = 1.0
    difficulty: dict[str, float] = field(default_factory=dict)
    delay: int = 0
    delay_distribution: str = "fixed"
    advice_expiry: int = 0
    give_up_after: int = 0
    retraining: Retraining = field(default_factory=Retraining)
    record: bool = False

    def __post_init__(self) -> None:
        from recourse_sim.dynamics.behaviours import BEHAVIOURS

        checks.integer(
            "dynamics.initial_agents",
            self.initial_agents,
            minimum=1,
            optional=True,
            none_means="the whole training split",
        )
        checks.check_choice("dynamics.exits", self.exits, EXITS)
        checks.check_choice("dynamics.behaviour", self.behaviour, tuple(BEHAVIOURS))
        checks.real("dynamics.adaptation", self.adaptation, minimum=0)
        checks.real("dynamics.compliance", self.compliance, minimum=0, maximum=1, low_open=True)
        if not isinstance(self.difficulty, dict):
            raise ConfigError(
                "dynamics.difficulty", self.difficulty, "a mapping {feature: probability}"
            )
        for name, value in self.difficulty.items():
            checks.real(f"dynamics.difficulty.{name}", value, minimum=0, maximum=1, high_open=True)
        checks.integer("dynamics.delay", self.delay, minimum=0)
        checks.check_choice(
            "dynamics.delay_distribution", self.delay_distribution, DELAY_DISTRIBUTIONS
        )
        checks.integer("dynamics.advice_expiry", self.advice_expiry, minimum=0)
        checks.integer("dynamics.give_up_after", self.give_up_after, minimum=0)
        checks.flag("dynamics.record", self.record)

    @classmethod
    def from_mapping(cls, values: dict[str, Any] | None) -> DynamicsConfig:
        """Build from a config node, refusing unknown keys (naming the known ones)."""
        values = dict(values or {})
        _refuse_unknown("dynamics", values, [f.name for f in fields(cls)])
        nested = {"arrivals": Arrivals, "decision": Decision, "advice": Advice}
        nested["retraining"] = Retraining
        for name, kind in nested.items():
            node = values.get(name)
            if node is None:
                values.pop(name, None)
                continue
            if not isinstance(node, dict):
                raise ConfigError(f"dynamics.{name}", node, "a mapping of its keys")
            _refuse_unknown(f"dynamics.{name}", node, [f.name for f in fields(kind)])
            values[name] = kind(**node)
        if values.get("difficulty") is None:
            values.pop("difficulty", None)
        return cls(**values)

    @property
    def tracks_agents(self) -> bool:
        """Whether the run follows agents over time (anything but the reference, or ``record``)."""
        return self.record or self != DynamicsConfig()
