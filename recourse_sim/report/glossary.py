"""What every number of a report means: plain names, one-line definitions, units and ranges.

Reports show a section "Glossary" with an entry for every metric they contain and for the
statistics they print; figures label panels with the plain names and axes with the units. A
metric unknown here (a user's own) is listed by its key with the note that it has no entry.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from omegaconf import DictConfig, OmegaConf


@dataclass(frozen=True)
class Term:
    """One glossary entry: the plain name, a one-line definition, and the unit or range."""

    name: str
    definition: str
    unit: str
    axis: str = ""  # a figure's axis label; the unit when empty


_MMD_UNIT = "squared kernel distance: 0 = same distribution, at most 2; estimates can dip below 0"
_MMD_AXIS = "MMD²"

#: The metrics of ``metrics.csv``. Decisiveness and perturbation have two forms (the config's
#: ``form`` picks the entry: ``decisiveness`` is the reference code's, ``decisiveness@paper`` the
#: paper's).
METRICS: dict[str, Term] = {
    "mmd_domain": Term(
        "domain shift (MMD²)",
        "Squared maximum mean discrepancy (unbiased estimate, Gaussian kernel) between the "
        "favourable-class rows of the initial data and those of the current training data "
        "(Altmeyer et al. 2023, §IV-B).",
        _MMD_UNIT,
        _MMD_AXIS,
    ),
    "mmd_model": Term(
        "model shift (MMD² of predictions)",
        "Squared MMD between the initial and the current model's predicted probabilities on "
        "(a sample of) the initial data.",
        _MMD_UNIT,
        _MMD_AXIS,
    ),
    "mmd_model_grid": Term(
        "model shift on a grid (MMD²)",
        "The same, on random points of a regular grid over the data's bounding box, so that "
        "regions without data count too.",
        _MMD_UNIT,
        _MMD_AXIS,
    ),
    "disagreement": Term(
        "disagreement",
        "Share of the initial data whose predicted label differs between the initial and the "
        "current model.",
        "share, 0 … 1",
        "share of points",
    ),
    "decisiveness": Term(
        "change of decisiveness (reference form)",
        "|‖p₀ − ½‖ − ‖pₜ − ½‖| with the Euclidean norms over the N initial data points "
        "(the reference code's form): how much more or less confidently the model classifies; "
        "it grows with √N, see the normalised form.",
        "probability × √N: 0 … ½√N",
        "probability × √N",
    ),
    "decisiveness@paper": Term(
        "change of decisiveness (paper form)",
        "mean((pₜ − ½)²) − mean((p₀ − ½)²) over the initial data: positive when the model has "
        "become more decisive.",
        "squared probability: −¼ … ¼",
        "squared probability",
    ),
    "decisiveness_normalised": Term(
        "change of decisiveness, normalised",
        "Decisiveness divided by its largest possible value (½√N in the reference form, ¼ in "
        "the paper's), so data sets of any size compare; computed by the report only.",
        "share of the maximum: 0 … 1 (paper form: −1 … 1)",
        "share of the maximum",
    ),
    "perturbation": Term(
        "parameter perturbation (reference form)",
        "Mean over the model's weight tensors of ‖θₜ − θ₀‖ divided by the tensor's number of "
        "entries (the reference code's form); empty for models without parameters.",
        "parameter units, ≥ 0",
        "parameter units",
    ),
    "perturbation@paper": Term(
        "parameter perturbation (paper form)",
        "Squared Euclidean distance ‖θₜ − θ₀‖² of all parameters; empty for models without "
        "parameters.",
        "squared parameter units, ≥ 0",
        "squared parameter units",
    ),
    "f1_change": Term(
        "change of macro F1",
        "Macro-averaged F1 of the current model on the untouched test set minus the initial "
        "model's.",
        "−1 … 1 (× 100: points); negative = worse",
        "change of F1",
    ),
    "implausibility_distance": Term(
        "implausibility (distance)",
        "Mean distance of each individual who moved on advice since the previous evaluation to "
        "its nearest unmoved rows of the favourable class (Altmeyer et al. 2026).",
        "standardised feature units, ≥ 0",
        "standardised feature units",
    ),
    "implausibility_mmd": Term(
        "implausibility (MMD²)",
        "Squared MMD between the individuals who moved since the previous evaluation and the "
        "rest of the favourable class.",
        _MMD_UNIT,
        _MMD_AXIS,
    ),
    # Time-based dynamics (scope "dynamics").
    "n_active": Term("active agents", "Agents in the population this round.", "agents"),
    "n_arrivals": Term("arrivals", "Agents who entered the population this round.", "agents"),
    "n_exits": Term("exits", "Agents who left the population this round.", "agents"),
    "n_favourable": Term(
        "favourable decisions", "Agents given the favourable decision this round.", "agents"
    ),
    "n_advice": Term("advice given", "Agents who received a counterfactual this round.", "agents"),
    "n_failures": Term(
        "failures",
        "Agents who acted on advice and crossed the previous threshold but were rejected now.",
        "agents",
    ),
    "threshold": Term(
        "decision threshold", "The probability above which the lender accepts.", "probability"
    ),
    "threshold_drift": Term(
        "threshold drift",
        "The threshold minus its value at the previous decision.",
        "change of probability",
    ),
    "reliability": Term(
        "reliability",
        "Share of the agents who acted on advice and crossed the previous threshold that were "
        "accepted at this decision.",
        "share, 0 … 1",
    ),
    "time_to_recourse": Term(
        "time to recourse",
        "Rounds from an agent's entry to its first favourable decision, for agents rejected "
        "at least once before.",
        "rounds",
    ),
    "effort_to_recourse": Term(
        "effort to recourse",
        "Distance an agent moved until it was accepted.",
        "distance, standardised feature units",
    ),
    "effort_to_recourse_score": Term(
        "score gain to recourse",
        "Increase of the agent's predicted probability until it was accepted.",
        "probability",
    ),
    "time_to_recourse_difference": Term(
        "time to recourse, difference of groups",
        "The second group's mean time to recourse minus the first's (with more groups: the "
        "largest minus the smallest), per round.",
        "rounds",
    ),
    "effort_to_recourse_ratio": Term(
        "effort to recourse, ratio of groups",
        "The second group's mean effort to recourse over the first's (with more groups: the "
        "largest over the smallest), per round.",
        "ratio, 1 = equal",
    ),
}

#: The statistics a report prints.
STATISTICS: dict[str, Term] = {
    "mean, sd": Term(
        "mean and standard deviation",
        "Over the repetitions (and the jobs of a sweep) at the final evaluated round.",
        "the metric's unit",
    ),
    "95 % CI": Term(
        "95 % confidence interval of the mean",
        "mean ± t₀.₉₇₅,ₙ₋₁ · sd/√n, a t interval over the n repetitions; none for n = 1.",
        "the metric's unit",
    ),
    "p < 0.05 in": Term(
        "per-repetition significance",
        "In how many repetitions (in a sweep: runs) the permutation test of the MMD rejected "
        "'no shift' at the 5 % level.",
        "count of tests",
    ),
    "combined p": Term(
        "combined p-value (Fisher)",
        "Fisher's method over the repetitions' permutation p-values, each taken as "
        "(b + 1)/(P + 1) with b of P permutations at least as large as the observed MMD.",
        "probability, 0 … 1",
    ),
    "Holm p": Term(
        "Holm-adjusted p-value",
        "The combined p-values adjusted by Holm's step-down method over every test of the "
        "table, so a grid of many comparisons keeps its 5 % family-wise error rate.",
        "probability, 0 … 1",
    ),
    "< 1/P": Term(
        "bound of a permutation p-value",
        "No permutation of P reached the observed value: the p-value is below 1/P, not 0.",
        "probability",
    ),
    "control": Term(
        "no-recourse control",
        "Generator none: the system is retrained every round, but nobody moves.",
        "",
    ),
}


def _form(config: DictConfig | None, metric: str) -> str | None:
    if config is None:
        return None
    try:
        return OmegaConf.select(config, f"metrics.{metric}.form", default=None)
    except Exception:  # an unresolvable interpolation: the default entry
        return None


def metric_term(metric: str, config: DictConfig | None = None) -> Term | None:
    """The entry of ``metric`` for the form its configuration picked (None if unknown)."""
    base = metric.split("@", 1)[0]  # dynamics metrics of a group carry "@group"
    if _form(config, base) == "paper" and f"{base}@paper" in METRICS:
        return METRICS[f"{base}@paper"]
    return METRICS.get(base)


def plain_name(metric: str, config: DictConfig | None = None) -> str:
    """The plain name of ``metric`` (its key when it has no entry)."""
    term = metric_term(metric, config)
    if term is None:
        return metric
    if "@" in metric:
        return f"{term.name} ({metric.split('@', 1)[1]})"
    return term.name


def unit(metric: str, config: DictConfig | None = None) -> str:
    """The unit of ``metric`` for an axis label ('' when unknown)."""
    term = metric_term(metric, config)
    if term is None:
        return ""
    return term.axis or term.unit


def glossary_table(metrics: list[str], config: DictConfig | None = None) -> pd.DataFrame:
    """One row per metric of the report, then the statistics: term, key, definition, unit."""
    rows = []
    for metric in dict.fromkeys(m.split("@", 1)[0] for m in metrics):
        term = metric_term(metric, config)
        if term is None:
            rows.append((metric, metric, "A metric without a glossary entry.", ""))
        else:
            rows.append((term.name, metric, term.definition, term.unit))
    for key, term in STATISTICS.items():
        rows.append((term.name, key, term.definition, term.unit))
    return pd.DataFrame(rows, columns=["term", "key", "definition", "unit or range"])
