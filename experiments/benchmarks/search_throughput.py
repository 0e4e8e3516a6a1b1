"""(c) Counterfactual throughput: our batched generic search versus the dice-ml package.

One MLP (32 ReLU units) trained on the overlapping data (800 training rows, 100 epochs, batch 1);
the individuals are the first training rows the model predicts negative (100 in the full version).
Both tools search K = 5 counterfactuals per individual towards the positive class with the same
torch model:

* ours: ``GenericGenerator`` (the reference study's generic search: gradient descent on
  BCE + 0.1 x Frobenius distance in z-score space, step 0.01 x K, stop when all K are valid,
  at most 100 steps), batched over all individuals (and, in one row, over 5 systems, as a round
  of the simulation calls it), and once one individual per call;
* dice-ml (Mothilal et al. 2020; ``pip install dice-ml``, optional): ``method="gradient"``, its
  PyTorch implementation of gradient DiCE, with its defaults (Adam 0.05 in min-max space, hinge
  y-loss, proximity 0.5, DPP diversity 1.0, at least 500 and at most 5,000 steps with a
  loss-change stopping rule, post-hoc sparsity enhancement), one individual after another;
  also ``method="random"`` (model-agnostic random sampling) for scale.

The model is wrapped as an ``nn.Module`` for dice-ml: it receives dice-ml's min-max normalised
inputs, maps them back to the model's feature space, and returns our classifier's probability.

    python experiments/benchmarks/search_throughput.py [--quick] [--dice-individuals N]
"""

from __future__ import annotations

import contextlib
import io
import logging
import random
import warnings

import numpy as np
import torch
from common import Stopwatch, load_1m, parser, results_name, write_results

from recourse_sim.data import make_overlapping
from recourse_sim.data.base import train_test_split
from recourse_sim.generators import FeatureSpace, GenericGenerator, SearchProblem
from recourse_sim.models import MLP

K = 5
REPEATS = 3  # timed runs of our (sub-second) searches; the best counts


class DiceWrapper(torch.nn.Module):
    """Our classifier as dice-ml's PyTorch model: min-max inputs in, probability ``(n, 1)`` out."""

    def __init__(self, classifier, lower: np.ndarray, upper: np.ndarray):
        super().__init__()
        self.classifier = classifier
        self.register_buffer("lower", torch.tensor(lower, dtype=torch.float32))
        self.register_buffer("span", torch.tensor(upper - lower, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, self.lower.shape[0]) * self.span + self.lower
        return torch.sigmoid(self.classifier.logits(x.unsqueeze(0))[0]).unsqueeze(-1)


def setup(quick: bool):
    """Data, the trained MLP and the negatives to explain."""
    rng = np.random.default_rng(0)
    train, _ = train_test_split(make_overlapping(rng=rng), 0.2, rng)
    spec = MLP(hidden_sizes=(32,), pretrain={"epochs": 10 if quick else 100})
    model = spec.initialise(train.n_features, torch.Generator().manual_seed(0))
    X = torch.tensor(train.X, dtype=torch.float64)
    model.fit(X[None], torch.tensor(train.y)[None], spec.pretrain, torch.Generator())
    negatives = np.flatnonzero(model.proba(train.X)[0].numpy() <= 0.5)
    return train, model, negatives


def ours(train, model, rows: np.ndarray, n_systems: int = 1, per_individual: bool = False):
    """Time our batched search; return the row of the table and the counterfactuals."""
    generator = GenericGenerator()
    space = FeatureSpace.from_data(train)
    X = torch.tensor(train.X, dtype=torch.float64)
    y = torch.tensor(train.y, dtype=torch.int64)
    stacked = model.replicate(n_systems)
    batches = [rows[i : i + 1] for i in range(len(rows))] if per_individual else [rows]
    best = float("inf")
    for _ in range(REPEATS):  # the searches are deterministic: keep the best time
        with Stopwatch() as watch:
            results = _search_all(generator, batches, stacked, space, X, y, n_systems)
        best = min(best, watch.wall)
    cfs = torch.cat([r.counterfactuals for r in results], dim=1)  # (S, B, K, d)
    iterations = torch.cat([r.n_iterations for r in results], dim=1).double()
    label = (
        "ours: GenericGenerator, one individual per call"
        if per_individual
        else f"ours: GenericGenerator, batched ({n_systems} system{'s' if n_systems > 1 else ''})"
    )
    factuals = X[torch.as_tensor(rows)].unsqueeze(1).numpy()
    return _row(
        label,
        model,
        cfs.reshape(-1, K, X.shape[1]).numpy(),
        np.tile(factuals, (n_systems, 1, 1)),
        best,
        f"{iterations.mean().item():.1f}",
    )


def _search_all(generator, batches, stacked, space, X, y, n_systems: int):
    """One search per batch of individuals, every system at once."""
    results = []
    for batch in batches:
        ids = torch.as_tensor(batch, dtype=torch.int64).expand(n_systems, -1)
        problem = SearchProblem(
            factuals=X[ids],
            individual_ids=ids,
            system_keys=torch.arange(n_systems, dtype=torch.int64),
            model=stacked,
            space=space,
            population_X=X.expand(n_systems, -1, -1),
            population_y=y.expand(n_systems, -1),
            n_counterfactuals=K,
            round_key=1,
        )
        results.append(generator.search(problem))
    return results


def _row(label, model, cfs: np.ndarray, factuals: np.ndarray, wall: float, steps: str):
    """Throughput, validity (by our model, threshold 0.5) and distance of a set of results."""
    n_individuals = cfs.shape[0]
    n_cfs = int(np.isfinite(cfs).all(-1).sum())
    flat = cfs.reshape(-1, cfs.shape[-1])
    finite = np.isfinite(flat).all(-1)
    valid = model.proba(flat[finite])[0].numpy() >= 0.5
    distance = np.linalg.norm((cfs - factuals).reshape(-1, cfs.shape[-1])[finite], axis=1)
    return {
        "method": label,
        "individuals": n_individuals,
        "counterfactuals": n_cfs,
        "wall_s": round(wall, 3),
        "cf_per_s": round(n_cfs / wall, 1),
        "individuals_per_s": round(n_individuals / wall, 2),
        "valid_share": round(float(valid.mean()), 3) if valid.size else float("nan"),
        "mean_l2_distance": round(float(distance.mean()), 3) if distance.size else float("nan"),
        "mean_steps": steps,
        "load_1m": load_1m(),
    }


def dice(train, model, rows: np.ndarray, method: str, quick: bool = False, sparsity: bool = True):
    """Time dice-ml on the same model and individuals (one individual after another)."""
    import dice_ml
    import pandas as pd

    names = list(train.feature_names)
    frame = pd.DataFrame(train.X, columns=names)
    frame["y"] = train.y.astype(int)
    data = dice_ml.Data(dataframe=frame, continuous_features=names, outcome_name="y")
    lower, upper = train.X.min(0), train.X.max(0)
    wrapper = DiceWrapper(model, lower, upper).eval()
    if method == "gradient":
        backend = dice_ml.Model(model=wrapper, backend="PYT", func="ohe-min-max")
    else:  # model-agnostic methods call predict_proba on data frames in the original space
        backend = dice_ml.Model(model=_SklearnLike(model), backend="sklearn")
    explainer = dice_ml.Dice(data, backend, method=method)
    queries = frame.iloc[rows][names]
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    cfs = np.full((len(rows), K, len(names)), np.nan)
    steps = []
    quiet = contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO())
    with Stopwatch() as watch, quiet[0], quiet[1]:
        for i in range(len(rows)):
            if method == "random":
                kwargs = {"random_seed": i}
            else:  # the smoke test shortens dice-ml's search (defaults: 500 to 5,000 steps)
                kwargs = {"min_iter": 20, "max_iter": 50} if quick else {}
                if not sparsity:
                    kwargs["posthoc_sparsity_param"] = None
            try:
                result = explainer.generate_counterfactuals(
                    queries.iloc[[i]], total_CFs=K, desired_class=1, verbose=False, **kwargs
                )
            except Exception as error:  # dice-ml raises when it finds nothing
                logging.getLogger(__name__).warning("dice-ml %s, row %d: %s", method, i, error)
                continue
            steps.append(getattr(explainer, "max_iterations_run", np.nan))
            example = result.cf_examples_list[0]
            found = example.final_cfs_df_sparse
            if found is None:
                found = example.final_cfs_df
            if found is not None and len(found):
                values = found[names].to_numpy(dtype=np.float64)[:K]
                cfs[i, : len(values)] = values
    factuals = train.X[rows][:, None, :]
    label = f"dice-ml {method}"
    if method == "gradient":
        label += ", defaults" if sparsity else ", search only (no post-hoc sparsity)"
    mean_steps = f"{np.mean(steps):.0f}" if method == "gradient" and steps else ""
    return _row(label, model, cfs, factuals, watch.wall, mean_steps)


class _SklearnLike:
    """``predict_proba`` on data frames, for dice-ml's model-agnostic methods."""

    def __init__(self, model):
        self.model = model

    def predict_proba(self, X):
        p = self.model.proba(np.asarray(X, dtype=np.float64))[0].numpy().astype(np.float64)
        return np.stack([1.0 - p, p], axis=1)

    def predict(self, X):
        return (self.predict_proba(X)[:, 1] > 0.5).astype(int)


def main() -> None:
    args = parser(__doc__.split("\n\n")[0])
    args.add_argument("--individuals", type=int, default=100, help="negatives explained")
    args.add_argument(
        "--dice-individuals",
        type=int,
        default=None,
        help="how many of them dice-ml explains (default 5, up to a minute each; --quick: 2); "
        "rates are per individual explained, so a subset gives the rate with less waiting",
    )
    args.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1, as the CLI)"
    )
    opts = args.parse_args()
    torch.set_num_threads(opts.threads)
    warnings.filterwarnings("ignore")
    n_individuals = 20 if opts.quick else opts.individuals
    train, model, negatives = setup(opts.quick)
    rows = negatives[:n_individuals]
    table = [
        ours(train, model, rows),
        ours(train, model, rows, n_systems=5),
        ours(train, model, rows, per_individual=True),
    ]
    notes = []
    n_dice = opts.dice_individuals or (2 if opts.quick else 5)
    try:
        import dice_ml  # noqa: F401
    except ImportError:
        notes.append(
            "dice-ml is not installed (`pip install dice-ml`, an optional benchmark dependency): "
            "only our numbers are shown."
        )
    else:
        for method, sparsity in (("gradient", True), ("gradient", False), ("random", True)):
            table.append(dice(train, model, rows[:n_dice], method, opts.quick, sparsity))
    for row in table:
        print(row, flush=True)
    base = next((r for r in table if r["method"] == "dice-ml gradient, defaults"), None)
    for row in table:
        row["vs_dice_gradient"] = (
            round(float(row["cf_per_s"]) / float(base["cf_per_s"]), 1) if base else ""
        )
    notes.insert(
        0,
        f"Same torch model (MLP 2-32-1 trained on 800 overlapping training rows), same "
        f"individuals (the first {len(rows)} training rows it predicts negative; dice-ml "
        f"explains the first {min(n_dice, len(rows))} of them), K = {K} counterfactuals each, "
        f"target: the positive class; torch threads: {opts.threads}. `cf_per_s` counts returned "
        "counterfactuals per second of wall time (ours: best of 3 identical runs, the first one "
        "included; dice-ml: one run; a batched row of 5 systems searches every "
        "individual for each system); `valid_share` is the share with our model's "
        "p(positive) >= 0.5 (dice-ml's post-hoc sparsity output where it gives one); "
        "`mean_l2_distance` is in feature space; `mean_steps` is the mean number of search steps "
        "per individual (dice-ml: `max_iterations_run`); `vs_dice_gradient` is the throughput "
        "ratio to dice-ml's gradient DiCE with its defaults. dice-ml explains "
        + (
            "**a subset** of the individuals (it takes tens of seconds each); its rates are per "
            "individual explained."
            if min(n_dice, len(rows)) < len(rows)
            else "all of them."
        ),
    )
    notes.append(
        "The algorithms differ, so this compares tools, not identical computations: ours is the "
        "reference study's generic search (plain gradient descent from the factual plus "
        "N(0, 0.1²) noise in z-score space, cost weight 0.1, step 0.01 x K, stops as soon as "
        "all K counterfactuals are valid, at most 100 steps, all individuals and systems in one "
        "tensor). dice-ml's gradient DiCE optimises the K counterfactuals jointly with a DPP "
        "diversity term and a hinge loss with Adam in min-max space, runs at least 500 steps and "
        "then stops on a small loss change with all K valid (at most 5,000), re-evaluating each "
        "counterfactual separately in Python loops every step (about 6 ms per step here), then "
        "post-processes for sparsity: a linear search per feature in steps of the data's decimal "
        "precision (10-11 digits for these floats, capped at 10,000 steps), one data-frame "
        "prediction per step, which takes most of its time here; the search-only row switches "
        "that off (`posthoc_sparsity_param=None`). It explains one individual per call. dice-ml "
        "random samples feature values at random (no gradients) and is shown for scale."
    )
    if opts.quick:
        notes.append(
            "Smoke-test version (`--quick`): 10 pre-training epochs, 20 individuals, dice-ml on 2 "
            "with its gradient search cut to 20-50 steps (not its defaults)."
        )
    write_results(
        results_name("search_throughput", opts.quick),
        table,
        title="(c) Counterfactual search throughput: batched generic search vs dice-ml"
        + (" (quick)" if opts.quick else ""),
        notes=notes,
    )


if __name__ == "__main__":
    main()
