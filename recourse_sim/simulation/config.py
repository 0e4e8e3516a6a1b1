"""Settings of the round loop, validated before any work starts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from recourse_sim import checks
from recourse_sim.errors import ConfigError


@dataclass(frozen=True)
class SimulationConfig:
    """Knobs of the recourse loop (defaults: AlgorithmicRecourseDynamics.jl v0.1.2).

    Attributes:
        n_rounds: Rounds of recourse and retraining (T in the paper).
        n_repetitions: Independent repetitions on the same train/test split ("folds" in the
            reference code).
        recourse_fraction: Share μ of the candidate pool that receives recourse each round.
        n_counterfactuals: Counterfactuals K searched per individual; one is implemented.
        evaluate_every: Metrics at round 0, every this many rounds, and at the last round.
        candidates: ``prediction`` (reference code: individuals every system currently predicts
            negative) or ``label`` (paper text: individuals whose current label is negative).
        n_permutations: Permutations for MMD p-values at evaluations after round 0; 0 disables.
        p_value: ``reference`` (``#{null >= observed} / P``, the reference code's form, which can
            be exactly 0) or ``corrected`` (``(#{null >= observed} + 1) / (P + 1)``, never 0;
            Phipson & Smyth 2010).
        round_length: Simulated time between rounds on the SimPy clock.
        checkpoint_every: Rounds between checkpoints that ``resume`` continues from (0 = never).
    """

    n_rounds: int = 50
    n_repetitions: int = 5
    recourse_fraction: float = 0.05
    n_counterfactuals: int = 5
    evaluate_every: int = 10
    candidates: str = "prediction"
    n_permutations: int = 100
    p_value: str = "reference"
    round_length: float = 1.0
    checkpoint_every: int = 1

    def __post_init__(self) -> None:
        def key(name: str) -> str:
            return f"simulation.{name}"

        checks.integer(key("n_rounds"), self.n_rounds, minimum=1)
        checks.integer(key("n_repetitions"), self.n_repetitions, minimum=1)
        checks.integer(key("n_counterfactuals"), self.n_counterfactuals, minimum=1)
        checks.integer(key("evaluate_every"), self.evaluate_every, minimum=1)
        checks.integer(key("n_permutations"), self.n_permutations, minimum=0)
        checks.integer(key("checkpoint_every"), self.checkpoint_every, minimum=0)
        checks.real(
            key("recourse_fraction"), self.recourse_fraction, minimum=0, maximum=1, low_open=True
        )
        checks.check_choice(key("candidates"), self.candidates, ("prediction", "label"))
        checks.check_choice(key("p_value"), self.p_value, ("reference", "corrected"))
        checks.real(key("round_length"), self.round_length, minimum=0, low_open=True)

    @classmethod
    def from_mapping(cls, values: dict) -> SimulationConfig:
        """Build from a config node, refusing keys the loop does not know (with the known ones)."""
        known = [f.name for f in fields(cls)]
        unknown = [name for name in values if name not in known]
        if unknown:
            raise ConfigError(
                f"simulation.{unknown[0]}",
                values[unknown[0]],
                "a known key of simulation: " + ", ".join(known),
            )
        return cls(**values)

    def is_evaluation_round(self, round_number: int) -> bool:
        """Whether metrics are computed after this round."""
        return (
            round_number == 0
            or round_number % self.evaluate_every == 0
            or round_number == self.n_rounds
        )

    def as_dict(self) -> dict:
        """Plain dictionary (for logs and checkpoints)."""
        return asdict(self)
