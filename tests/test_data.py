"""Data loaders: synthetic geometry, tabular preprocessing, embedded and user-supplied tables."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recourse_sim.data import (
    Dataset,
    load_california,
    load_credit,
    load_csv,
    load_german,
    load_gmsc,
    make_circles,
    make_linearly_separable,
    make_moons,
    make_overlapping,
    prepare_table,
    train_test_split,
)
from recourse_sim.data import credit as credit_module
from recourse_sim.data.external import CALIFORNIA_FEATURES, GMSC_FEATURES
from recourse_sim.errors import ConfigError

GENERATORS = [make_linearly_separable, make_overlapping, make_circles, make_moons]


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def assert_valid_groups(data: Dataset) -> None:
    for group in data.categorical_groups:
        block = data.X[:, list(group)]
        assert set(np.unique(block)) <= {0.0, 1.0}
        np.testing.assert_array_equal(block.sum(axis=1), 1.0)


def assert_balanced(data: Dataset, per_class: int) -> None:
    np.testing.assert_array_equal(np.bincount(data.y, minlength=2), [per_class, per_class])


# --- synthetic ---------------------------------------------------------------------------------


@pytest.mark.parametrize("make", GENERATORS)
def test_synthetic_shape_balance_and_metadata(make):
    data = make(rng=rng())
    assert data.X.shape == (1000, 2)
    assert_balanced(data, 500)
    assert data.mutability == ("both", "both")
    assert np.all(np.isinf(data.lower)) and np.all(np.isinf(data.upper))
    assert data.categorical_groups == ()
    # Rows are shuffled, so the first half is not one class.
    assert 0 < data.y[:500].sum() < 500


@pytest.mark.parametrize("make", GENERATORS)
def test_synthetic_is_deterministic_per_seed(make):
    first, again, other = make(rng=rng(1)), make(rng=rng(1)), make(rng=rng(2))
    np.testing.assert_array_equal(first.X, again.X)
    np.testing.assert_array_equal(first.y, again.y)
    assert not np.allclose(first.X, other.X)


@pytest.mark.parametrize("make", GENERATORS)
@pytest.mark.parametrize("n_samples", [3, 2, 999, 10.0, True, "1000", None])
def test_synthetic_rejects_bad_sizes(make, n_samples):
    with pytest.raises(ConfigError, match=r"data\.n_samples"):
        make(n_samples=n_samples, rng=rng())


@pytest.mark.parametrize("make", GENERATORS)
def test_synthetic_small_even_size(make):
    data = make(n_samples=6, rng=rng())
    assert data.X.shape == (6, 2)
    assert_balanced(data, 3)


def bisector_side(data: Dataset, centers) -> np.ndarray:
    """Signed side of each point w.r.t. the perpendicular bisector of the centres (>0: class 1)."""
    c0, c1 = np.asarray(centers, dtype=float)
    return (data.X - (c0 + c1) / 2) @ (c1 - c0)


def test_linearly_separable_is_split_by_the_bisector_of_its_centres():
    centers = ((0.523, -0.094), (-0.191, 0.815))  # the defaults: the reference data's class means
    data = make_linearly_separable(rng=rng())
    side = bisector_side(data, centers)
    assert np.all(side[data.y == 1] > 0) and np.all(side[data.y == 0] < 0)
    for label in (0, 1):
        np.testing.assert_allclose(data.X[data.y == label].mean(0), centers[label], atol=0.02)
        np.testing.assert_allclose(data.X[data.y == label].std(0), 0.1, atol=0.015)


def test_overlapping_is_not_split_by_the_bisector_of_its_centres():
    centers = ((0.433, -0.314), (1.976, 0.162))  # the defaults
    data = make_overlapping(rng=rng())
    side = bisector_side(data, centers)
    wrong = np.sum(side[data.y == 1] < 0) + np.sum(side[data.y == 0] > 0)
    assert 20 < wrong < 100  # about 5% of the points lie beyond the bisector (Bayes error)
    np.testing.assert_allclose(data.X[data.y == 1].mean(0), centers[1], atol=0.08)


def test_blob_centres_drawn_from_the_box_when_not_given():
    data = make_linearly_separable(centers=None, cluster_std=0.0, center_box=(1.0, 1.5), rng=rng())
    for label in (0, 1):
        points = data.X[data.y == label]
        assert np.all(points == points[0])
        assert np.all((points[0] >= 1.0) & (points[0] <= 1.5))
    assert not np.array_equal(data.X[data.y == 0][0], data.X[data.y == 1][0])


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"centers": [[0, 0]]}, "data.centers"),
        ({"centers": [[0, 0], [1, "x"]]}, "data.centers"),
        ({"centers": [[0, 0], [1, np.nan]]}, "data.centers"),
        ({"center_box": (2, -2)}, "data.center_box"),
        ({"center_box": 3}, "data.center_box"),
        ({"cluster_std": -0.1}, "data.cluster_std"),
    ],
)
def test_blobs_reject_bad_arguments(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        make_overlapping(rng=rng(), **kwargs)


def test_circles_geometry():
    data = make_circles(rng=rng())
    radius = np.linalg.norm(data.X, axis=1)
    assert radius[data.y == 0].mean() < 0.25  # factor 0.01: a noisy blob at the origin
    assert abs(np.median(radius[data.y == 1]) - 1.0) < 0.03
    exact = make_circles(noise=0.0, factor=0.5, rng=rng())
    radius = np.linalg.norm(exact.X, axis=1)
    np.testing.assert_allclose(radius[exact.y == 0], 0.5)
    np.testing.assert_allclose(radius[exact.y == 1], 1.0)
    # Random angles, not a grid: the first coordinate's values are not evenly spaced.
    assert np.ptp(np.diff(np.sort(exact.X[exact.y == 1, 0]))) > 1e-3


@pytest.mark.parametrize(("kwargs", "key"), [({"factor": 1.0}, "factor"), ({"noise": -1}, "noise")])
def test_circles_reject_bad_arguments(kwargs, key):
    with pytest.raises(ConfigError, match=rf"data\.{key}"):
        make_circles(rng=rng(), **kwargs)


def test_moons_geometry():
    data = make_moons(rng=rng())
    assert data.X[data.y == 0, 1].mean() > data.X[data.y == 1, 1].mean()
    assert data.X[data.y == 1, 0].mean() > data.X[data.y == 0, 0].mean() + 0.8
    exact = make_moons(noise=0.0, rng=rng())
    upper, lower = exact.X[exact.y == 0], exact.X[exact.y == 1] - (1.0, 0.3)
    np.testing.assert_allclose(np.linalg.norm(upper, axis=1), 1.0)
    np.testing.assert_allclose(np.linalg.norm(lower, axis=1), 1.0)
    assert np.all(upper[:, 1] >= 0) and np.all(lower[:, 1] <= 0)


# --- tabular preprocessing ---------------------------------------------------------------------


def small_frame(n_pos: int = 30, n_neg: int = 50, seed: int = 0) -> pd.DataFrame:
    gen = np.random.default_rng(seed)
    n = n_pos + n_neg
    return pd.DataFrame(
        {
            "income": gen.normal(50.0, 10.0, n),
            "color": gen.choice(["red", "blue", "green"], n),
            "age": gen.integers(18, 80, n),
            "flat": np.full(n, 7.0),
            "approved": np.r_[np.full(n_pos, "yes"), np.full(n_neg, "no")],
        }
    )


def test_prepare_table_balances_then_standardises():
    data = prepare_table(small_frame(), "approved", positive_label="yes", balance=True, rng=rng())
    assert data.feature_names == (
        "income",
        "color_blue",
        "color_green",
        "color_red",
        "age",
        "flat",
    )
    assert data.categorical_groups == ((1, 2, 3),)
    assert_balanced(data, 30)
    assert_valid_groups(data)
    continuous = data.X[:, data.continuous_features]
    np.testing.assert_allclose(continuous[:, :2].mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(continuous[:, :2].std(0, ddof=1), 1.0)
    np.testing.assert_array_equal(continuous[:, 2], 0.0)  # constant column: centred, std 1
    assert data.mutability == ("both",) * 6


def test_prepare_table_subsamples_half_per_class_after_standardising():
    frame = small_frame()
    full = prepare_table(frame, "approved", positive_label="yes", balance=True, rng=rng(3))
    data = prepare_table(
        frame, "approved", positive_label="yes", balance=True, n_samples=20, rng=rng(3)
    )
    assert_balanced(data, 10)
    # Every subsampled row is a row of the standardised balanced table.
    rows = {tuple(r) for r in full.X.round(12)}
    assert all(tuple(r) in rows for r in data.X.round(12))
    with pytest.raises(ConfigError, match=r"data\.n_samples.*at most 60"):
        prepare_table(
            frame, "approved", positive_label="yes", balance=True, n_samples=62, rng=rng()
        )
    with pytest.raises(ConfigError, match=r"data\.n_samples.*even"):
        prepare_table(
            frame, "approved", positive_label="yes", balance=True, n_samples=21, rng=rng()
        )


def test_prepare_table_without_balance_or_standardisation():
    frame = small_frame()
    data = prepare_table(frame, "approved", positive_label="yes", standardize=False, rng=rng())
    assert data.n_samples == 80 and data.y.sum() == 30
    np.testing.assert_array_equal(data.X[:, 0], frame["income"])
    sub = prepare_table(frame, "approved", positive_label="yes", n_samples=79, rng=rng())
    assert sub.n_samples == 79
    with pytest.raises(ConfigError, match=r"data\.n_samples.*at most 80"):
        prepare_table(frame, "approved", positive_label="yes", n_samples=81, rng=rng())


def test_prepare_table_explicit_categorical_and_levels():
    frame = small_frame()
    data = prepare_table(
        frame,
        "approved",
        positive_label="yes",
        features=["age", "color"],
        categorical=["color", "age"],
        levels={"color": ["red", "green", "blue", "purple"]},
        rng=rng(),
    )
    ages = sorted(frame["age"].unique())
    assert data.feature_names[: len(ages)] == tuple(f"age_{a}" for a in ages)
    assert data.feature_names[len(ages) :] == (
        "color_red",
        "color_green",
        "color_blue",
        "color_purple",
    )
    assert_valid_groups(data)
    np.testing.assert_array_equal(data.X[:, -1], 0.0)  # a declared level absent from the data
    with pytest.raises(ConfigError, match=r"data\.categorical.*'color'"):
        prepare_table(frame, "approved", positive_label="yes", categorical=["age"], rng=rng())
    with pytest.raises(ConfigError, match=r"data\.categorical\[color\]"):
        prepare_table(frame, "approved", positive_label="yes", levels={"color": ["red"]}, rng=rng())


def test_prepare_table_is_deterministic_per_seed():
    frame = small_frame()
    a, b, c = (
        prepare_table(frame, "approved", positive_label="yes", balance=True, rng=rng(s))
        for s in (5, 5, 6)
    )
    np.testing.assert_array_equal(a.X, b.X)
    assert not np.array_equal(a.X, c.X)


@pytest.mark.parametrize(
    ("label", "values"), [("1", [0, 1]), (1, ["0", "1"]), (1.0, [0, 1]), (True, [False, True])]
)
def test_positive_label_matches_across_types(label, values):
    frame = pd.DataFrame({"x": np.arange(6.0), "t": [values[0]] * 2 + [values[1]] * 4})
    data = prepare_table(frame, "t", positive_label=label, rng=rng())
    np.testing.assert_array_equal(data.y, [0, 0, 1, 1, 1, 1])


def test_prepare_table_drops_missing_rows_on_request():
    frame = small_frame()
    frame.loc[[0, 40, 41], "income"] = np.nan
    with pytest.raises(ConfigError, match=r"data\.features.*income"):
        prepare_table(frame, "approved", positive_label="yes", rng=rng())
    data = prepare_table(frame, "approved", positive_label="yes", dropna=True, rng=rng())
    assert data.n_samples == 77 and data.y.sum() == 29


@settings(max_examples=25, deadline=None)
@given(
    n_pos=st.integers(2, 40),
    n_neg=st.integers(2, 40),
    fraction=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_balanced_subsample_property(n_pos, n_neg, fraction, seed):
    per_class = max(1, int(fraction * min(n_pos, n_neg)))
    data = prepare_table(
        small_frame(n_pos, n_neg, seed),
        "approved",
        positive_label="yes",
        balance=True,
        n_samples=2 * per_class,
        rng=rng(seed),
    )
    assert_balanced(data, per_class)
    assert_valid_groups(data)
    assert np.all(np.isfinite(data.X))


# --- CSV files ---------------------------------------------------------------------------------


@pytest.fixture
def csv_file(tmp_path):
    path = tmp_path / "loans.csv"
    small_frame().to_csv(path, index=False)
    return path


def test_load_csv_happy_path(csv_file):
    data = load_csv(
        str(csv_file),
        "approved",
        positive_label="yes",
        immutable=["age"],
        increase_only=["color"],
        balance=True,
        n_samples=40,
        rng=rng(),
    )
    assert data.name == "loans"
    assert "loans.csv" in data.source
    assert_balanced(data, 20)
    assert_valid_groups(data)
    assert dict(zip(data.feature_names, data.mutability, strict=True)) == {
        "income": "both",
        "color_blue": "increase",
        "color_green": "increase",
        "color_red": "increase",
        "age": "none",
        "flat": "both",
    }


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"target": "approval"}, r"data\.target='approval'.*approved"),
        ({"features": ["income", "salary"]}, r"data\.features.*salary"),
        ({"features": ["income", "approved"]}, r"data\.features.*approved"),
        ({"target": "color"}, r"data\.target='color'.*3 distinct"),
        ({"positive_label": "maybe"}, r"data\.positive_label='maybe'.*'yes'"),
        ({"n_samples": 500}, r"data\.n_samples=500.*at most 80"),
        ({"categorical": ["nope"]}, r"data\.categorical.*nope"),
        ({"immutable": ["height"]}, r"data\.immutable.*height"),
        ({"immutable": ["age"], "increase_only": ["age"]}, r"data\.increase_only.*age"),
    ],
)
def test_load_csv_rejects_bad_inputs(csv_file, kwargs, pattern):
    arguments = {"path": str(csv_file), "target": "approved", "positive_label": "yes"}
    with pytest.raises(ConfigError, match=pattern):
        load_csv(**{**arguments, **kwargs}, rng=rng())


def test_load_csv_rejects_missing_values_naming_the_column(tmp_path):
    frame = small_frame()
    frame.loc[3, "age"] = None
    path = tmp_path / "holes.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(ConfigError, match=r"data\.features.*'age': 1"):
        load_csv(path, "approved", positive_label="yes", rng=rng())


def test_load_csv_rejects_missing_or_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.path.*no\.csv.*existing CSV file"):
        load_csv(tmp_path / "no.csv", "approved", rng=rng())
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ConfigError, match=r"data\.path.*reading it failed"):
        load_csv(empty, "approved", rng=rng())


def test_load_csv_reads_integer_targets_with_string_label(tmp_path):
    frame = small_frame().assign(approved=lambda f: (f.approved == "yes").astype(int))
    path = tmp_path / "numeric.csv.gz"
    frame.to_csv(path, index=False)
    data = load_csv(path, "approved", positive_label="1", rng=rng())
    assert data.name == "numeric" and data.y.sum() == 30


# --- embedded credit data ----------------------------------------------------------------------


CREDIT_GROUPS = {"SEX": 2, "EDUCATION": 7, "MARRIAGE": 4}


def test_credit_matches_the_reference_layout():
    data = load_credit(rng=rng())
    assert data.X.shape == (5000, 33)
    assert_balanced(data, 2500)
    assert_valid_groups(data)
    # One-hot groups in the original columns' places: 2-3, 4-10, 11-14 counting from 1.
    assert data.categorical_groups == ((1, 2), tuple(range(3, 10)), tuple(range(10, 14)))
    for prefix, size in CREDIT_GROUPS.items():
        assert [n for n in data.feature_names if n.startswith(prefix + "_")] == [
            f"{prefix}_{level}" for level in range(size)
        ]
    assert int(data.continuous_features.sum()) == 20
    assert data.mutability == ("both",) * 33
    assert "CC BY 4.0" in data.source


def test_credit_standardises_the_balanced_table():
    data = load_credit(n_samples=None, rng=rng())
    assert_balanced(data, 6636)
    continuous = data.X[:, data.continuous_features]
    np.testing.assert_allclose(continuous.mean(0), 0.0, atol=1e-9)
    np.testing.assert_allclose(continuous.std(0, ddof=1), 1.0)


def test_credit_target_is_no_default():
    raw = pd.read_csv(credit_module.FILES / "uci_credit_default.csv.gz")
    data = load_credit(n_samples=None, rng=rng())
    # Balancing keeps every defaulter, so class 0 must be exactly the defaulters, up to the
    # (increasing affine) standardisation of each column.
    column = data.feature_names.index("LIMIT_BAL")
    standardised = np.sort(data.X[data.y == 0, column])
    original = np.sort(raw.loc[raw["default-payment-next-month"] == 1, "LIMIT_BAL"].to_numpy())
    slope, intercept = np.polyfit(original, standardised, 1)
    assert slope > 0
    np.testing.assert_allclose(slope * original + intercept, standardised, atol=1e-9)


def test_credit_immutable_prefixes_expand_to_groups():
    data = load_credit(n_samples=100, immutable=["SEX", "AGE", "EDUCATION", "MARRIAGE"], rng=rng())
    frozen = {n for n, m in zip(data.feature_names, data.mutability, strict=True) if m == "none"}
    expected = {"AGE"} | {f"{p}_{i}" for p, size in CREDIT_GROUPS.items() for i in range(size)}
    assert frozen == expected
    single = load_credit(n_samples=100, increase_only="LIMIT_BAL", rng=rng())
    assert single.mutability[0] == "increase"
    with pytest.raises(ConfigError, match=r"data\.immutable.*GENDER"):
        load_credit(n_samples=100, immutable=["GENDER"], rng=rng())


def test_credit_is_deterministic_and_leaves_the_cache_intact():
    before = credit_module._credit_frame().copy()
    a, b = load_credit(n_samples=200, rng=rng(7)), load_credit(n_samples=200, rng=rng(7))
    np.testing.assert_array_equal(a.X, b.X)
    assert credit_module._credit_frame() is credit_module._credit_frame()
    pd.testing.assert_frame_equal(credit_module._credit_frame(), before)
    with pytest.raises(ConfigError, match=r"data\.n_samples.*at most 13272"):
        load_credit(n_samples=20000, rng=rng())


def test_german_loads_with_one_hot_groups():
    data = load_german(rng=rng())
    assert data.X.shape == (600, 61)
    assert_balanced(data, 300)
    assert len(data.categorical_groups) == 13
    assert_valid_groups(data)
    assert int(data.continuous_features.sum()) == 7
    assert "foreign_worker_yes" in data.feature_names
    unbalanced = load_german(balance=False, rng=rng())
    assert unbalanced.n_samples == 1000 and unbalanced.y.sum() == 700
    frozen = load_german(immutable=["personal_status_and_sex"], n_samples=100, rng=rng())
    assert frozen.mutability.count("none") == 4


# --- user-supplied real-world data -------------------------------------------------------------


def write_gmsc(path, n: int = 200, seed: int = 0) -> None:
    """A small file in the schema of Kaggle's cs-training.csv (unnamed index, NA markers)."""
    gen = np.random.default_rng(seed)
    delinquent = (np.arange(n) % 4 == 0).astype(int)
    frame = pd.DataFrame({"SeriousDlqin2yrs": delinquent})
    for name in GMSC_FEATURES:
        frame[name] = gen.integers(0, 10, n).astype(float)
    frame["age"] = np.where(delinquent == 1, 30, 60) + gen.integers(0, 5, n)
    frame.loc[[1, 2, 4], "MonthlyIncome"] = np.nan
    frame.loc[[5], "NumberOfDependents"] = np.nan
    frame.index += 1
    frame.to_csv(path, na_rep="NA")


def test_gmsc_from_a_file_in_the_kaggle_schema(tmp_path):
    path = tmp_path / "cs-training.csv"
    write_gmsc(path)
    data = load_gmsc(path, n_samples=40, immutable=["age"], rng=rng())
    assert data.feature_names == GMSC_FEATURES
    assert_balanced(data, 20)
    assert data.mutability[1] == "none"
    # Target 1 = no serious delinquency (the older individuals of the generated file).
    age = data.X[:, 1]
    assert age[data.y == 1].min() > age[data.y == 0].max()
    full = load_gmsc(path, n_samples=None, rng=rng())
    assert_balanced(full, 49)  # 50 delinquent rows, one of them (row 4) incomplete


def test_gmsc_searches_the_data_dir_then_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RECOURSE_SIM_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    with pytest.raises(ConfigError) as error:
        load_gmsc(rng=rng())
    message = str(error.value)
    assert "data.path" in message and "GiveMeSomeCredit" in message
    assert "cs-training.csv" in message and str(tmp_path / "data") in message
    assert ".cache/recourse_sim" in message
    cache = tmp_path / "home" / ".cache" / "recourse_sim"
    cache.mkdir(parents=True)
    write_gmsc(cache / "cs-training.csv")
    assert load_gmsc(n_samples=10, rng=rng()).n_samples == 10
    write_gmsc(tmp_path / "data" / "cs-training.csv", n=100)
    assert load_gmsc(n_samples=None, rng=rng()).n_samples == 48


def test_gmsc_missing_or_wrong_file(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.path.*GiveMeSomeCredit"):
        load_gmsc(tmp_path / "cs-training.csv", rng=rng())
    wrong = tmp_path / "other.csv"
    small_frame().to_csv(wrong, index=False)
    with pytest.raises(ConfigError, match=r"data\.path.*missing: SeriousDlqin2yrs"):
        load_gmsc(wrong, rng=rng())


def california_frame(n: int = 120, seed: int = 0) -> pd.DataFrame:
    gen = np.random.default_rng(seed)
    frame = pd.DataFrame({name: gen.normal(0.0, 1.0, n) for name in CALIFORNIA_FEATURES})
    frame["MedHouseVal"] = 2.0 + frame["MedInc"] + 0.1 * gen.normal(size=n)
    return frame


def test_california_from_a_csv(tmp_path):
    path = tmp_path / "california.csv"
    california_frame().to_csv(path, index=False)
    data = load_california(path, n_samples=40, rng=rng())
    assert data.feature_names == CALIFORNIA_FEATURES
    assert_balanced(data, 20)
    assert data.X[data.y == 1, 0].mean() > data.X[data.y == 0, 0].mean() + 1.0
    assert_balanced(load_california(path, n_samples=None, rng=rng()), 60)


def test_california_from_scikit_learns_cache(monkeypatch):
    calls = []

    def fetch(**kwargs):
        calls.append(kwargs)
        return types.SimpleNamespace(frame=california_frame())

    fake = types.ModuleType("sklearn.datasets")
    fake.fetch_california_housing = fetch
    monkeypatch.setitem(sys.modules, "sklearn", types.ModuleType("sklearn"))
    monkeypatch.setitem(sys.modules, "sklearn.datasets", fake)
    data = load_california(n_samples=20, rng=rng())
    assert data.n_samples == 20
    assert calls[0]["download_if_missing"] is False

    def empty_cache(**kwargs):
        raise OSError("Data not found and `download_if_missing` is False")

    fake.fetch_california_housing = empty_cache
    with pytest.raises(ConfigError, match=r"data\.path.*fetch_california_housing"):
        load_california(rng=rng())


def test_california_absent_says_how_to_obtain_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import fails: not installed
    with pytest.raises(ConfigError) as error:
        load_california(rng=rng())
    message = str(error.value)
    assert "data.path" in message and "fetch_california_housing" in message
    assert "not installed" in message
    with pytest.raises(ConfigError, match=r"data\.path.*fetch_california_housing"):
        load_california(tmp_path / "missing.csv", rng=rng())
    frame = california_frame().drop(columns="Latitude")
    frame.to_csv(tmp_path / "partial.csv", index=False)
    with pytest.raises(ConfigError, match=r"data\.path.*missing: Latitude"):
        load_california(tmp_path / "partial.csv", rng=rng())


# --- split -------------------------------------------------------------------------------------


def test_train_test_split_is_stratified_and_disjoint():
    data = make_moons(rng=rng())
    train, test = train_test_split(data, 0.2, rng(1))
    assert_balanced(test, 100)
    assert_balanced(train, 400)
    train_rows = {tuple(r) for r in train.X}
    test_rows = {tuple(r) for r in test.X}
    assert not train_rows & test_rows
    assert train_rows | test_rows == {tuple(r) for r in data.X}
    again, _ = train_test_split(data, 0.2, rng(1))
    np.testing.assert_array_equal(train.X, again.X)
    for bad in (0.0, 1.0, "a fifth", None):
        with pytest.raises(ConfigError, match=r"data\.test_size"):
            train_test_split(data, bad, rng())


# --- the shipped data configs ------------------------------------------------------------------

CONFIGS = Path(__file__).resolve().parents[1] / "recourse_sim" / "configs" / "data"


@pytest.mark.parametrize(
    ("option", "shape"),
    [
        ("linearly_separable", (1000, 2)),
        ("overlapping", (1000, 2)),
        ("circles", (1000, 2)),
        ("moons", (1000, 2)),
        ("credit", (5000, 33)),
        ("german", (600, 61)),
        ("csv", (80, 6)),
    ],
)
def test_data_configs_instantiate(option, shape, csv_file):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    node = OmegaConf.load(CONFIGS / f"{option}.yaml")
    node.pop("test_size")
    if option == "csv":
        node.merge_with({"path": str(csv_file), "target": "approved", "positive_label": "yes"})
    data = instantiate(node, rng=rng())
    assert isinstance(data, Dataset) and data.X.shape == shape


# --- hardening: finite values, repeated column names, default bounds ----------------------------


@pytest.mark.parametrize(
    ("value", "problem"),
    [("1e300", "standardising them overflows"), ("inf", "infinite"), ("-inf", "infinite")],
)
def test_load_csv_refuses_values_that_are_or_turn_non_finite(tmp_path, value, problem):
    frame = small_frame().astype({"income": object})
    frame.loc[7, "income"] = value
    path = tmp_path / "huge.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(ConfigError, match=rf"data\.features=\['income'\].*{problem}"):
        load_csv(path, "approved", positive_label="yes", rng=rng())
    # Leaving the column out (or not standardising a merely large one) makes the file usable.
    data = load_csv(path, "approved", positive_label="yes", features=["age", "color"], rng=rng())
    assert np.all(np.isfinite(data.X))
    if value == "1e300":
        with pytest.raises(ConfigError, match=r"data\.features=\['income'\].*float32"):
            load_csv(path, "approved", positive_label="yes", standardize=False, rng=rng())


def test_huge_values_are_refused_whatever_the_seed(tmp_path):
    # Balancing could drop the row by chance; the check runs on the whole table first.
    frame = small_frame().astype({"age": float})
    frame.loc[frame.index[frame.approved == "no"][0], "age"] = 1e300
    for seed in range(5):
        with pytest.raises(ConfigError, match=r"data\.features=\['age'\]"):
            prepare_table(
                frame, "approved", positive_label="yes", balance=True, n_samples=10, rng=rng(seed)
            )


def test_gmsc_and_california_refuse_non_finite_values_on_data_path(tmp_path):
    path = tmp_path / "cs-training.csv"
    write_gmsc(path)
    frame = pd.read_csv(path, index_col=0)
    frame.loc[frame.index[0], "DebtRatio"] = 1e300
    frame.to_csv(path, na_rep="NA")
    with pytest.raises(ConfigError, match=r"data\.path=\['DebtRatio'\].*overflows"):
        load_gmsc(path, n_samples=40, rng=rng())
    ca = california_frame()
    ca.loc[3, "AveRooms"] = np.inf
    ca.to_csv(tmp_path / "ca.csv", index=False)
    with pytest.raises(ConfigError, match=r"data\.path=\['AveRooms'\].*infinite"):
        load_california(tmp_path / "ca.csv", n_samples=40, rng=rng())
    ca = california_frame()
    ca.loc[3, "MedHouseVal"] = np.inf
    ca.to_csv(tmp_path / "ca.csv", index=False)
    with pytest.raises(ConfigError, match=r"data\.path\[MedHouseVal\].*finite"):
        load_california(tmp_path / "ca.csv", n_samples=40, rng=rng())


@pytest.mark.parametrize("repeated", ["income", "approved"])
def test_load_csv_refuses_a_header_that_names_a_column_twice(tmp_path, repeated):
    frame = small_frame()
    lines = frame.to_csv(index=False).splitlines()
    columns = lines[0].split(",")
    lines[0] = ",".join(repeated if c == "age" else c for c in columns)
    path = tmp_path / "twice.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as error:
        load_csv(path, "approved", positive_label="yes", rng=rng())
    message = str(error.value)
    assert "data.path" in message and f"'{repeated}' more than once" in message
    assert f"{repeated}.1" not in message and "distinct values" not in message
    # The same file compressed, and the Kaggle layout with an unnamed index column, are fine
    # when no name repeats.
    frame.to_csv(tmp_path / "fine.csv.gz")
    assert load_csv(tmp_path / "fine.csv.gz", "approved", positive_label="yes", rng=rng())


def test_csv_bounds_default_to_the_observed_range(csv_file):
    data = load_csv(csv_file, "approved", positive_label="yes", n_samples=50, rng=rng())
    continuous = data.continuous_features
    np.testing.assert_array_equal(data.lower[continuous], data.X[:, continuous].min(0))
    np.testing.assert_array_equal(data.upper[continuous], data.X[:, continuous].max(0))
    np.testing.assert_array_equal(data.lower[~continuous], 0.0)
    np.testing.assert_array_equal(data.upper[~continuous], 1.0)
    same = load_csv(
        csv_file, "approved", positive_label="yes", n_samples=50, bounds="observed", rng=rng()
    )
    np.testing.assert_array_equal(same.lower, data.lower)
    free = load_csv(
        csv_file, "approved", positive_label="yes", n_samples=50, bounds="none", rng=rng()
    )
    np.testing.assert_array_equal(free.X, data.X)
    assert np.all(free.lower == -np.inf) and np.all(free.upper == np.inf)


def test_gmsc_and_california_bounds(tmp_path):
    write_gmsc(tmp_path / "cs-training.csv")
    california_frame().to_csv(tmp_path / "ca.csv", index=False)
    for load, path in ((load_gmsc, "cs-training.csv"), (load_california, "ca.csv")):
        data = load(tmp_path / path, n_samples=40, rng=rng())
        np.testing.assert_array_equal(data.lower, data.X.min(0))
        np.testing.assert_array_equal(data.upper, data.X.max(0))
        free = load(tmp_path / path, n_samples=40, bounds="none", rng=rng())
        assert np.all(np.isinf(free.lower)) and np.all(np.isinf(free.upper))
        with pytest.raises(ConfigError, match=r"data\.bounds='min'.*'observed', 'none'"):
            load(tmp_path / path, bounds="min", rng=rng())


@pytest.mark.parametrize("bad", ["observe", "None", None, True, 1, ["observed"]])
def test_bad_bounds_are_refused(csv_file, bad):
    with pytest.raises(ConfigError, match=r"data\.bounds.*'observed', 'none'"):
        load_csv(csv_file, "approved", positive_label="yes", bounds=bad, rng=rng())


def test_embedded_data_stays_unbounded():
    assert np.all(np.isinf(load_german(rng=rng()).lower))
    assert np.all(np.isinf(make_moons(rng=rng()).upper))


def test_csv_config_bounds_key(csv_file):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    node = OmegaConf.load(CONFIGS / "csv.yaml")
    node.pop("test_size")
    node.merge_with({"path": str(csv_file), "target": "approved", "positive_label": "yes"})
    assert node.bounds == "observed"
    assert np.all(np.isfinite(instantiate(node, rng=rng()).lower))
    node.bounds = "none"
    assert np.all(np.isinf(instantiate(node, rng=rng()).lower))


@pytest.mark.parametrize("key", ["standardize", "balance"])
@pytest.mark.parametrize("bad", ["maybe", 1, "true", None])
def test_load_csv_switches_are_true_or_false(csv_file, key, bad):
    with pytest.raises(ConfigError, match=rf"data\.{key}.*true or false"):
        load_csv(csv_file, "approved", positive_label="yes", **{key: bad}, rng=rng())
