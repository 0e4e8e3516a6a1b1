"""Real-world data sets of the reference study that cannot ship with the package.

Give Me Some Credit (Kaggle, 2011) may not be redistributed, and California Housing (Pace and
Barry, 1997) comes through scikit-learn's downloader. Both loaders read files the user supplies
and never download anything; a missing file is a :class:`ConfigError` that says how to obtain
it. Preprocessing as in the reference study (``sections/data_preprocessing/real_world_data.qmd``
of the paper repository): balance, standardise, then draw ``n_samples`` rows, half per class.
As for any user file, a column with non-finite values (or values whose standardisation
overflows) is refused by name on ``data.path``, and every feature is bounded at its observed
``[min, max]`` (model space) unless ``bounds="none"``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from recourse_sim.data.base import Dataset
from recourse_sim.data.groups import DEFAULT_BINS
from recourse_sim.data.tabular import prepare_table, read_table
from recourse_sim.errors import ConfigError

#: Environment variable naming a folder searched for user-supplied data files.
DATA_DIR_ENV = "RECOURSE_SIM_DATA_DIR"
#: Folder searched last for user-supplied data files.
CACHE_DIR = Path("~/.cache/recourse_sim")

GMSC_FILE = "cs-training.csv"
GMSC_TARGET = "SeriousDlqin2yrs"
GMSC_FEATURES = (
    "RevolvingUtilizationOfUnsecuredLines",
    "age",
    "NumberOfTime30-59DaysPastDueNotWorse",
    "DebtRatio",
    "MonthlyIncome",
    "NumberOfOpenCreditLinesAndLoans",
    "NumberOfTimes90DaysLate",
    "NumberRealEstateLoansOrLines",
    "NumberOfTime60-89DaysPastDueNotWorse",
    "NumberOfDependents",
)
GMSC_SOURCE = 'Kaggle competition "Give Me Some Credit" (2011), cs-training.csv, user-supplied'

CALIFORNIA_TARGET = "MedHouseVal"
CALIFORNIA_FEATURES = (
    "MedInc",
    "HouseAge",
    "AveRooms",
    "AveBedrms",
    "Population",
    "AveOccup",
    "Latitude",
    "Longitude",
)
CALIFORNIA_SOURCE = (
    'R. K. Pace and R. Barry (1997), "Sparse spatial autoregressions", Statistics & '
    "Probability Letters 33(3); scikit-learn's fetch_california_housing version, user-supplied"
)

_GMSC_HELP = (
    "the file cs-training.csv of the Kaggle competition 'Give Me Some Credit' "
    "(https://www.kaggle.com/c/GiveMeSomeCredit/data; it needs a Kaggle account and may not be "
    "redistributed, so recourse_sim never downloads it). Download cs-training.csv, then pass "
    "data.path=/path/to/cs-training.csv, or put the file in one of the searched places: {places}"
)
_CALIFORNIA_HELP = (
    "California housing from a CSV file with the columns "
    f"{', '.join((*CALIFORNIA_FEATURES, CALIFORNIA_TARGET))} passed as data.path, or from "
    "scikit-learn's local cache. recourse_sim never downloads data: on a machine with internet "
    "access and scikit-learn installed, run "
    '`python -c "from sklearn.datasets import fetch_california_housing as f; f()"` to fill the '
    "cache (copy ~/scikit_learn_data, or the folder $SCIKIT_LEARN_DATA names, to this machine), "
    "or save the frame of fetch_california_housing(as_frame=True) to a CSV and pass data.path"
)


def load_gmsc(
    path: str | Path | None = None,
    n_samples: int | None = 5000,
    immutable: Sequence[str] = (),
    increase_only: Sequence[str] = (),
    decrease_only: Sequence[str] = (),
    bounds: str = "observed",
    group: str | None = None,
    group_bins: int = DEFAULT_BINS,
    *,
    rng: np.random.Generator,
) -> Dataset:
    """Give Me Some Credit (d = 10), target 1 = no serious delinquency within two years.

    Rows with a missing value (MonthlyIncome, NumberOfDependents) are dropped, as in the
    reference study.

    Args:
        path: The Kaggle ``cs-training.csv``. ``None`` searches
            ``$RECOURSE_SIM_DATA_DIR/cs-training.csv``, then
            ``~/.cache/recourse_sim/cs-training.csv``.
        n_samples: Rows to keep after balancing, half per class; ``None`` keeps all.
        immutable: Features recourse must leave unchanged (e.g. ``["age"]``).
        increase_only: Features that may only increase.
        decrease_only: Features that may only decrease.
        bounds: ``"observed"``: each feature bounded at its observed ``[min, max]`` in the
            loaded data (model space); ``"none"``: unbounded.
        group: A raw column (before one-hot encoding and standardisation), e.g.
            ``age``, whose levels or quantile bins are the groups of fairness
            comparisons; ``None``: no groups.
        group_bins: Number of quantile bins of a numeric ``group`` column (>= 2).
        rng: Source of all randomness.

    Returns:
        The data set ``gmsc``.

    Raises:
        ConfigError: If the file is absent (the message says how to obtain it) or lacks a
            column of the Kaggle schema.
    """
    file = _find_gmsc(path)
    frame = read_table(file, _GMSC_HELP.format(places=" or ".join(map(str, _gmsc_places()))))
    _require_columns(frame, (GMSC_TARGET, *GMSC_FEATURES), file, "the Kaggle cs-training.csv")
    return prepare_table(
        frame,
        GMSC_TARGET,
        rng=rng,
        positive_label=0,
        features=GMSC_FEATURES,
        immutable=immutable,
        increase_only=increase_only,
        decrease_only=decrease_only,
        balance=True,
        n_samples=n_samples,
        group=group,
        group_bins=group_bins,
        dropna=True,
        bounds=bounds,
        name="gmsc",
        source=GMSC_SOURCE,
        columns_key="data.path",
    )


def load_california(
    path: str | Path | None = None,
    n_samples: int | None = 5000,
    immutable: Sequence[str] = (),
    increase_only: Sequence[str] = (),
    decrease_only: Sequence[str] = (),
    bounds: str = "observed",
    group: str | None = None,
    group_bins: int = DEFAULT_BINS,
    *,
    rng: np.random.Generator,
) -> Dataset:
    """California housing (d = 8), target 1 = median house value at or above its median.

    The median is taken over the whole table, before balancing.

    Args:
        path: A CSV with scikit-learn's column names (the 8 features and ``MedHouseVal``).
            ``None`` reads scikit-learn's local cache, if scikit-learn is installed.
        n_samples: Rows to keep after balancing, half per class; ``None`` keeps all.
        immutable: Features recourse must leave unchanged (e.g. ``["Latitude", "Longitude"]``).
        increase_only: Features that may only increase.
        decrease_only: Features that may only decrease.
        bounds: ``"observed"``: each feature bounded at its observed ``[min, max]`` in the
            loaded data (model space); ``"none"``: unbounded.
        group: A raw column (before one-hot encoding and standardisation), e.g.
            ``HouseAge``, whose levels or quantile bins are the groups of fairness
            comparisons; ``None``: no groups.
        group_bins: Number of quantile bins of a numeric ``group`` column (>= 2).
        rng: Source of all randomness.

    Returns:
        The data set ``california``.

    Raises:
        ConfigError: If neither the file nor the cache is there (the message says how to
            obtain the data) or the file lacks a column.
    """
    if path is None:
        frame = _california_from_sklearn()
    else:
        frame = read_table(path, _CALIFORNIA_HELP)
        _require_columns(
            frame, (*CALIFORNIA_FEATURES, CALIFORNIA_TARGET), path, "a California housing CSV"
        )
    value = frame[CALIFORNIA_TARGET]
    if not pd.api.types.is_numeric_dtype(value) or np.isinf(value.to_numpy(float)).any():
        raise ConfigError(f"data.path[{CALIFORNIA_TARGET}]", path, "finite numeric house values")
    # Missing values stay missing so that the preprocessing names the column.
    frame = frame.assign(
        **{CALIFORNIA_TARGET: (value >= value.median()).astype(float).where(value.notna())}
    )
    return prepare_table(
        frame,
        CALIFORNIA_TARGET,
        rng=rng,
        positive_label=1,
        features=CALIFORNIA_FEATURES,
        immutable=immutable,
        increase_only=increase_only,
        decrease_only=decrease_only,
        balance=True,
        n_samples=n_samples,
        group=group,
        group_bins=group_bins,
        bounds=bounds,
        name="california",
        source=CALIFORNIA_SOURCE,
        columns_key="data.path",
    )


def _gmsc_places() -> list[Path]:
    """Where ``cs-training.csv`` is looked for when no path is given, in order."""
    folder = os.environ.get(DATA_DIR_ENV)
    places = [Path(folder).expanduser() / GMSC_FILE] if folder else []
    return [*places, CACHE_DIR.expanduser() / GMSC_FILE]


def _find_gmsc(path: str | Path | None) -> str:
    """The explicit path, else the first searched place that holds the file."""
    if path is not None:
        return str(path)
    places = _gmsc_places()
    for place in places:
        if place.is_file():
            return str(place)
    searched = " or ".join(map(str, places))
    if DATA_DIR_ENV not in os.environ:
        searched += f" (set ${DATA_DIR_ENV} to search a folder of your choice first)"
    raise ConfigError("data.path", None, _GMSC_HELP.format(places=searched))


def _california_from_sklearn() -> pd.DataFrame:
    try:
        from sklearn.datasets import fetch_california_housing
    except ImportError:
        raise ConfigError(
            "data.path", None, f"{_CALIFORNIA_HELP} (scikit-learn is not installed here)"
        ) from None
    try:
        bunch = fetch_california_housing(download_if_missing=False, as_frame=True)
    except OSError as error:
        raise ConfigError(
            "data.path", None, f"{_CALIFORNIA_HELP} (scikit-learn's cache: {error})"
        ) from None
    return bunch.frame


def _require_columns(frame: pd.DataFrame, required: Sequence[str], path: object, what: str) -> None:
    absent = [c for c in required if c not in frame.columns]
    if absent:
        raise ConfigError(
            "data.path",
            str(path),
            f"{what} with the columns {', '.join(required)}; missing: {', '.join(absent)}",
        )
