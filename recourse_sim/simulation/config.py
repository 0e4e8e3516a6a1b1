"""Settings of the round loop, validated before any work starts."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from recourse_sim.errors import ConfigError, check_choice


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
    round_length: float = 1.0
    checkpoint_every: int = 1

    def __post_init__(self) -> None:
        def positive_int(key: str, value: object, minimum: int = 1) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"simulation.{key}", value, f"an integer >= {minimum}")

        positive_int("n_rounds", self.n_rounds)
        positive_int("n_repetitions", self.n_repetitions)
        positive_int("n_counterfactuals", self.n_counterfactuals)
        positive_int("evaluate_every", self.evaluate_every)
        positive_int("n_permutations", self.n_permutations, minimum=0)
        positive_int("checkpoint_every", self.checkpoint_every, minimum=0)
        fraction = self.recourse_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise ConfigError("simulation.recourse_fraction", fraction, "a number in (0, 1]")
        if not 0.0 < float(fraction) <= 1.0:
            raise ConfigError("simulation.recourse_fraction", fraction, "a number in (0, 1]")
        check_choice("simulation.candidates", self.candidates, ("prediction", "label"))
        if not float(self.round_length) > 0:
            raise ConfigError("simulation.round_length", self.round_length, "a positive number")

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
