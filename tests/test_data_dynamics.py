"""Data for time-based simulations: signal-free data, fresh and held-back arrivals, groups."""

from __future__ import annotations

import inspect
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from recourse_sim.data import (
    Dataset,
    draw_fresh,
    generative,
    hold_back,
    is_generative,
    load_california,
    load_credit,
    load_csv,
    load_german,
    load_gmsc,
    make_circles,
    make_independent_normal,
    make_linearly_separable,
    make_moons,
    make_overlapping,
    prepare_table,
    train_test_split,
)
from recourse_sim.data.external import CALIFORNIA_FEATURES, GMSC_FEATURES
from recourse_sim.data.groups import MAX_LEVELS, group_codes
from recourse_sim.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "recourse_sim" / "configs" / "data"
MAKERS = [
    make_linearly_separable,
    make_overlapping,
    make_circles,
    make_moons,
    make_independent_normal,
]


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def state(generator: np.random.Generator) -> dict:
    return generator.bit_generator.state


# --- independent_normal ------------------------------------------------------------------------


def test_independent_normal_defaults():
    data = make_independent_normal(rng=rng())
    assert data.X.shape == (125, 2)
    assert data.name == "independent_normal"
    assert data.feature_names == ("x1", "x2")
    assert data.mutability == ("both", "both")
    assert data.categorical_groups == () and data.groups is None
    # Observed bounds: the sample's own minimum and maximum.
    np.testing.assert_array_equal(data.lower, data.X.min(axis=0))
    np.testing.assert_array_equal(data.upper, data.X.max(axis=0))
    assert set(np.unique(data.y)) == {0, 1}


def test_independent_normal_draws_features_then_fair_coin_labels():
    data = make_independent_normal(n_samples=50, n_features=3, mean=1.0, std=2.0, rng=rng(7))
    again = rng(7)
    # Raw (unstandardised) features first, then the labels, independently of them.
    np.testing.assert_array_equal(data.X, again.normal(1.0, 2.0, size=(50, 3)))
    np.testing.assert_array_equal(data.y, again.integers(0, 2, size=50))
    assert data.feature_names == ("x1", "x2", "x3")


def test_independent_normal_has_no_signal():
    data = make_independent_normal(n_samples=20000, n_features=3, rng=rng(1))
    np.testing.assert_allclose(data.X.mean(axis=0), 0.5, atol=0.01)
    np.testing.assert_allclose(data.X.std(axis=0), 1 / 3, atol=0.01)
    assert abs(data.y.mean() - 0.5) < 0.02
    for j in range(3):
        assert abs(np.corrcoef(data.X[:, j], data.y)[0, 1]) < 0.03


def test_independent_normal_always_has_both_classes():
    for seed in range(300):
        assert len(np.unique(make_independent_normal(n_samples=4, rng=rng(seed)).y)) == 2


def test_independent_normal_unbounded_and_deterministic():
    data = make_independent_normal(bounds="none", rng=rng(3))
    assert np.all(np.isneginf(data.lower)) and np.all(np.isposinf(data.upper))
    again = make_independent_normal(bounds="none", rng=rng(3))
    np.testing.assert_array_equal(data.X, again.X)
    np.testing.assert_array_equal(data.y, again.y)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"n_samples": 3}, "data.n_samples"),
        ({"n_samples": 10.0}, "data.n_samples"),
        ({"n_samples": True}, "data.n_samples"),
        ({"n_features": 0}, "data.n_features"),
        ({"n_features": "2"}, "data.n_features"),
        ({"mean": float("nan")}, "data.mean"),
        ({"mean": "0.5"}, "data.mean"),
        ({"std": 0.0}, "data.std"),
        ({"std": -1.0}, "data.std"),
        ({"bounds": "maybe"}, "data.bounds"),
        ({"group": "x3"}, "data.group"),
        ({"group": 1}, "data.group"),
        ({"group_bins": 1}, "data.group_bins"),
        ({"group_bins": 2.0}, "data.group_bins"),
    ],
)
def test_independent_normal_rejects_bad_arguments(kwargs, key):
    generator = rng()
    before = state(generator)
    with pytest.raises(ConfigError) as error:
        make_independent_normal(**kwargs, rng=generator)
    assert error.value.key == key
    assert state(generator) == before  # refused before drawing anything


def test_independent_normal_config_instantiates_and_splits():
    from hydra.utils import instantiate

    node = OmegaConf.load(CONFIGS / "independent_normal.yaml")
    assert node.pop("test_size") == 0.2
    data = instantiate(node, rng=rng())
    assert data.X.shape == (125, 2)
    assert np.isclose(node.std, 1 / 3)
    train, test = train_test_split(data, 0.2, rng(1))
    assert 100 <= train.n_samples <= 102 and train.n_samples + test.n_samples == 125


# --- generative makers and fresh draws ---------------------------------------------------------


@pytest.mark.parametrize("make", MAKERS)
def test_synthetic_makers_are_generative(make):
    assert is_generative(make)
    assert is_generative(f"recourse_sim.data.{make.__name__}")
    assert is_generative(f"{make.__module__}.{make.__name__}")


@pytest.mark.parametrize(
    "target",
    [
        load_credit,
        load_german,
        load_csv,
        load_gmsc,
        load_california,
        "recourse_sim.data.load_credit",
        "recourse_sim.data.nothing_here",
        "no_such_module.make",
        "numpy.random.default_rng",
    ],
)
def test_tables_are_not_generative(target):
    assert not is_generative(target)


def test_generative_marks_without_wrapping():
    def maker(n_samples=4, *, rng):
        return None

    signature = inspect.signature(maker)
    assert generative(maker) is maker
    assert generative(minimum=6, even=True)(maker) is maker
    assert inspect.signature(maker) == signature
    assert is_generative(maker)


@pytest.mark.parametrize("make", MAKERS)
@pytest.mark.parametrize("n", [1, 3, 5, 8, 11])
def test_draw_fresh_gives_exactly_n_rows(make, n):
    fresh = draw_fresh(make, {}, n, rng(2))
    assert fresh.n_samples == n and fresh.n_features == make(rng=rng()).n_features
    # The smallest admissible size, then the first n rows of the maker's own shuffle.
    size = max(n, 4) + (max(n, 4) % 2 if make is not make_independent_normal else 0)
    whole = make(n_samples=size, rng=rng(2))
    np.testing.assert_array_equal(fresh.X, whole.X[:n])
    np.testing.assert_array_equal(fresh.y, whole.y[:n])


def test_draw_fresh_uses_the_config_and_ignores_runner_keys():
    node = OmegaConf.to_container(OmegaConf.load(CONFIGS / "overlapping.yaml"))
    fresh = draw_fresh(node["_target_"], node, 10, rng(4))
    expected = make_overlapping(n_samples=10, centers=node["centers"], cluster_std=0.5, rng=rng(4))
    np.testing.assert_array_equal(fresh.X, expected.X)
    wide = draw_fresh(make_overlapping, {**node, "cluster_std": 3.0}, 400, rng(4))
    assert wide.X.std() > 2.0


@pytest.mark.parametrize("make", MAKERS)
def test_draw_fresh_of_nothing_is_empty_and_draws_nothing(make):
    generator = rng(5)
    before = state(generator)
    empty = draw_fresh(make, {}, 0, generator)
    assert state(generator) == before
    assert empty.X.shape == (0, make(rng=rng()).n_features)
    assert empty.y.shape == (0,) and empty.y.dtype == np.int64
    assert empty.feature_names == make(rng=rng()).feature_names
    assert empty.name == make(rng=rng()).name


def test_draw_fresh_refuses_tables_and_bad_counts():
    with pytest.raises(ConfigError) as error:
        draw_fresh(load_credit, {}, 5, rng())
    assert error.value.key == "data._target_" and "hold" in str(error.value)
    with pytest.raises(ConfigError, match=r"data\._target_"):
        draw_fresh("recourse_sim.data.load_german", {}, 5, rng())
    for bad in (-1, 2.5, True, "3"):
        with pytest.raises(ConfigError) as error:
            draw_fresh(make_moons, {}, bad, rng())
        assert error.value.key == "dynamics.arrivals.per_round"


def test_draw_fresh_codes_groups_with_the_starting_data():
    start = make_independent_normal(n_features=3, group="x2", group_bins=3, rng=rng(0))
    kwargs = {"n_features": 3, "group": "x2", "group_bins": 3}
    with pytest.raises(ValueError, match="like="):
        draw_fresh(make_independent_normal, kwargs, 5, rng(1))
    fresh = draw_fresh(make_independent_normal, kwargs, 1, rng(1), like=start)
    assert fresh.n_samples == 1
    many = draw_fresh(make_independent_normal, kwargs, 300, rng(1), like=start)
    # The starting data's cut points and levels, not cut points of the fresh batch's own.
    assert many.group_levels == start.group_levels and many.group_column == "x2"
    np.testing.assert_array_equal(
        many.groups, np.searchsorted(start.group_edges, many.X[:, 1], side="left")
    )
    # The fresh rows are the draw without groups; they take the starting data's metadata.
    plain = draw_fresh(make_independent_normal, {"n_features": 3}, 300, rng(1))
    np.testing.assert_array_equal(many.X, plain.X)
    np.testing.assert_array_equal(many.lower, start.lower)
    assert fresh.feature_names == start.feature_names
    with pytest.raises(ValueError, match="features"):
        draw_fresh(make_independent_normal, {"n_features": 2}, 3, rng(), like=start)
    with pytest.raises(ValueError, match="group"):
        draw_fresh(make_independent_normal, {**kwargs, "group": "x1"}, 3, rng(), like=start)


# --- held-back arrivals ------------------------------------------------------------------------


def grouped_credit(n_samples: int = 200) -> Dataset:
    return load_credit(n_samples=n_samples, group="SEX", rng=rng())


def test_hold_back_splits_off_a_random_pool():
    data = grouped_credit()
    rest, pool = hold_back(data, 30, rng(1))
    assert pool.n_samples == 30 and rest.n_samples == 170
    rows = {tuple(r) for r in data.X}
    assert {tuple(r) for r in rest.X} | {tuple(r) for r in pool.X} == rows
    assert not {tuple(r) for r in rest.X} & {tuple(r) for r in pool.X}
    # The rest keeps the original order; the groups travel with their rows.
    positions = [np.flatnonzero((r == data.X).all(axis=1))[0] for r in rest.X]
    assert positions == sorted(positions)
    np.testing.assert_array_equal(rest.groups, data.groups[positions])
    again_rest, again_pool = hold_back(data, 30, rng(1))
    np.testing.assert_array_equal(again_pool.X, pool.X)
    np.testing.assert_array_equal(again_rest.y, rest.y)


def test_hold_back_nothing_draws_nothing():
    data = grouped_credit()
    generator = rng(2)
    before = state(generator)
    rest, pool = hold_back(data, 0, generator)
    assert state(generator) == before
    assert rest is data and pool.n_samples == 0 and pool.groups.shape == (0,)
    assert pool.feature_names == data.feature_names
    tiny = make_moons(n_samples=4, rng=rng()).subset([0, 1, 2])
    assert hold_back(tiny, 0, rng())[0] is tiny


def test_hold_back_leaves_at_least_four_rows():
    data = make_independent_normal(n_samples=20, rng=rng())
    rest, pool = hold_back(data, 16, rng())
    assert rest.n_samples == 4 and pool.n_samples == 16
    with pytest.raises(ConfigError) as error:
        hold_back(data, 17, rng(), per_round=17)
    message = str(error.value)
    assert error.value.key == "dynamics.arrivals.per_round"
    assert "17 arriving rows" in message and "20 rows" in message
    assert "data.n_samples" in message and "lower dynamics.arrivals.per_round" in message
    for bad in (-1, 1.5, None):
        with pytest.raises(ConfigError, match=r"dynamics\.arrivals\.per_round"):
            hold_back(data, bad, rng())


def test_a_dataset_may_be_empty():
    data = make_moons(n_samples=8, rng=rng())
    for index in ([], np.array([], dtype=int), np.zeros(0)):
        empty = data.subset(index)
        assert empty.X.shape == (0, 2) and empty.y.shape == (0,)
    Dataset(np.zeros((0, 3)), np.zeros(0), ("a", "b", "c"))


# --- groups ------------------------------------------------------------------------------------


def people() -> pd.DataFrame:
    """A tiny hand-made table: a text column, an integer code, a numeric age."""
    return pd.DataFrame(
        {
            "colour": [
                "red",
                "blue",
                "green",
                "blue",
                "red",
                "red",
                "green",
                "blue",
                "red",
                "blue",
            ],
            "sex": [0, 1, 1, 0, 0, 1, 0, 1, 1, 0],
            "age": [20, 35, 41, 28, 63, 34, 50, 19, 34, 45],
            "income": [1.0, 2.5, 3.0, 1.5, 4.0, 2.0, 3.5, 0.5, 2.2, 3.1],
            "approved": ["no", "yes", "yes", "no", "yes", "no", "yes", "no", "no", "yes"],
        }
    )


@pytest.fixture
def people_csv(tmp_path):
    path = tmp_path / "people.csv"
    people().to_csv(path, index=False)
    return path


def load_people(path, **kwargs) -> Dataset:
    return load_csv(path, "approved", positive_label="yes", **kwargs, rng=rng())


def test_text_column_groups_by_level(people_csv):
    data = load_people(people_csv, group="colour")
    assert data.group_column == "colour"
    assert data.group_levels == ("colour=blue", "colour=green", "colour=red")
    expected = {"blue": 0, "green": 1, "red": 2}
    np.testing.assert_array_equal(data.groups, [expected[c] for c in people().colour])
    assert data.groups.dtype == np.int64 and data.group_edges == ()
    # The group column stays a feature (one-hot).
    assert "colour_red" in data.feature_names


def test_integer_column_with_few_values_groups_by_level(people_csv):
    data = load_people(people_csv, group="sex", group_bins=5)
    assert data.group_levels == ("sex=0", "sex=1")
    np.testing.assert_array_equal(data.groups, people().sex)


@pytest.mark.parametrize(
    ("bins", "levels", "codes"),
    [
        (2, ("income<=2.2", "income>2.2"), [0, 1, 1, 0, 1, 0, 1, 0, 0, 1]),
        (3, ("income<=2", "2<income<=3", "income>3"), [0, 1, 1, 0, 2, 0, 2, 0, 1, 2]),
    ],
)
def test_numeric_column_is_cut_into_quantile_bins(people_csv, bins, levels, codes):
    data = load_people(people_csv, group="income", group_bins=bins)
    assert data.group_levels == levels
    np.testing.assert_array_equal(data.groups, codes)
    assert len(data.group_edges) == bins - 1


def test_numeric_bins_collapse_on_ties_and_never_come_out_empty():
    values = pd.Series([0.0] * 6 + [1.0, 1.5, 2.0, 2.5])
    codes, levels, edges = group_codes(values, "debt", 4)
    assert levels == ("debt<=0", "0<debt<=1.5", "debt>1.5") and edges == (0.0, 1.5)
    np.testing.assert_array_equal(np.bincount(codes), [6, 2, 2])
    # A median at the maximum would leave the top bin empty: the cut moves down.
    codes, levels, _ = group_codes(pd.Series([0.5, 1.5, 1.5, 1.5, 1.5]), "debt", 2)
    assert levels == ("debt<=0.5", "debt>0.5") and codes.tolist() == [0, 1, 1, 1, 1]
    # Integers with few values are levels, with many values bins.
    assert group_codes(pd.Series([3, 1, 3, 2]), "n", 2)[1] == ("n=1", "n=2", "n=3")
    assert group_codes(pd.Series(np.arange(11)), "n", 2)[1] == ("n<=5", "n>5")
    codes, levels, _ = group_codes(pd.Series([0.1234567, 0.1234568, 0.9]), "x", 3)
    assert len(set(levels)) == 3  # cut points printed exactly when the short form would clash


def test_groups_survive_train_test_split(people_csv, tmp_path):
    frame = pd.concat([people()] * 6, ignore_index=True)
    frame["age"] += np.arange(len(frame)) % 7
    path = tmp_path / "more.csv"
    frame.to_csv(path, index=False)
    data = load_csv(
        path, "approved", positive_label="yes", standardize=False, group="age", rng=rng()
    )
    train, test = train_test_split(data, 0.25, rng(3))
    age = data.feature_names.index("age")
    for part in (data, train, test):
        np.testing.assert_array_equal(
            part.groups, (part.X[:, age] > data.group_edges[0]).astype(int)
        )
        assert part.group_levels == data.group_levels and part.group_column == "age"
    colour = load_csv(path, "approved", positive_label="yes", group="colour", rng=rng())
    train, test = train_test_split(colour, 0.25, rng(3))
    block = [colour.feature_names.index(f"colour_{c}") for c in ("blue", "green", "red")]
    for part in (train, test):
        np.testing.assert_array_equal(part.groups, part.X[:, block].argmax(axis=1))


def test_unknown_group_column_names_the_key_and_the_raw_columns(people_csv):
    with pytest.raises(ConfigError) as error:
        load_people(people_csv, group="colour_red")
    assert error.value.key == "data.group"
    assert "colour, sex, age, income; or null" in str(error.value)
    with pytest.raises(ConfigError, match=r"data\.group.*target"):
        load_people(people_csv, group="approved")
    for bad in (1, True, 2.5):
        with pytest.raises(ConfigError, match=r"data\.group_bins"):
            load_people(people_csv, group="age", group_bins=bad)


def test_unusable_group_columns_are_refused(tmp_path):
    frame = pd.concat([people(), people().iloc[:2]], ignore_index=True)
    frame["id"] = [f"person{i}" for i in range(len(frame))]
    frame["constant"] = 7
    path = tmp_path / "p.csv"
    frame.to_csv(path, index=False)
    assert frame["id"].nunique() > MAX_LEVELS
    for column in ("id", "constant"):
        with pytest.raises(ConfigError) as error:
            load_csv(
                path, "approved", positive_label="yes", features=["income"], group=column, rng=rng()
            )
        assert error.value.key == "data.group"


def test_group_column_outside_the_features(tmp_path):
    frame = people().astype({"colour": object})
    frame.loc[3, "colour"] = None
    path = tmp_path / "p.csv"
    frame.to_csv(path, index=False)
    kwargs = {"features": ["age", "income"], "positive_label": "yes", "rng": rng()}
    with pytest.raises(ConfigError) as error:
        load_csv(path, "approved", group="colour", **kwargs)
    assert error.value.key == "data.group"
    data = prepare_table(frame, "approved", group="colour", dropna=True, **kwargs)
    assert data.n_samples == 9 and data.feature_names == ("age", "income")
    assert data.group_levels == ("colour=blue", "colour=green", "colour=red")


@pytest.mark.parametrize("standardize", [True, False])
def test_a_group_changes_no_data(people_csv, standardize):
    plain = load_people(people_csv, standardize=standardize, balance=True, n_samples=6)
    grouped = load_people(
        people_csv, standardize=standardize, balance=True, n_samples=6, group="age"
    )
    assert plain.groups is None and plain.group_levels == () and plain.group_column == ""
    np.testing.assert_array_equal(plain.X, grouped.X)
    np.testing.assert_array_equal(plain.y, grouped.y)
    np.testing.assert_array_equal(plain.lower, grouped.lower)
    assert plain.feature_names == grouped.feature_names


def test_credit_grouped_by_sex():
    plain = load_credit(n_samples=400, rng=rng())
    data = load_credit(n_samples=400, group="SEX", rng=rng())
    assert data.group_levels == ("SEX=0", "SEX=1")
    # The codes follow the rows through balancing and subsampling: they match SEX_1.
    np.testing.assert_array_equal(data.groups, data.X[:, data.feature_names.index("SEX_1")])
    np.testing.assert_array_equal(plain.X, data.X)
    np.testing.assert_array_equal(plain.y, data.y)
    aged = load_credit(n_samples=400, group="AGE", group_bins=3, rng=rng())
    assert len(aged.group_levels) == 3 and aged.group_levels[0].startswith("AGE<=")
    with pytest.raises(ConfigError) as error:
        load_credit(group="SEX_1", rng=rng())
    assert error.value.key == "data.group" and "EDUCATION" in str(error.value)


def test_german_grouped_by_a_text_column():
    data = load_german(group="personal_status_and_sex", rng=rng())
    assert len(data.group_levels) == 4
    assert all(level.startswith("personal_status_and_sex=") for level in data.group_levels)
    assert np.bincount(data.groups).min() > 0


def test_external_loaders_take_groups(tmp_path):
    frame = pd.DataFrame({name: rng(1).normal(size=120) for name in CALIFORNIA_FEATURES})
    frame["MedHouseVal"] = frame["MedInc"] + 0.1 * rng(2).normal(size=120)
    path = tmp_path / "california.csv"
    frame.to_csv(path, index=False)
    data = load_california(path, n_samples=40, group="HouseAge", rng=rng())
    assert len(data.group_levels) == 2 and data.groups.shape == (40,)
    with pytest.raises(ConfigError, match=r"data\.group"):
        load_california(path, group="MedHouseVal", rng=rng())
    gmsc = pd.DataFrame({name: rng(3).integers(0, 90, 60) for name in GMSC_FEATURES})
    gmsc["SeriousDlqin2yrs"] = np.arange(60) % 2
    gmsc.to_csv(tmp_path / "cs-training.csv")
    data = load_gmsc(tmp_path / "cs-training.csv", n_samples=20, group="age", rng=rng())
    assert data.group_column == "age" and len(data.group_levels) == 2


@pytest.mark.parametrize("make", MAKERS)
def test_synthetic_groups_from_a_feature(make):
    plain = make(rng=rng(4))
    data = make(group="x1", group_bins=4, rng=rng(4))
    np.testing.assert_array_equal(plain.X, data.X)
    np.testing.assert_array_equal(plain.y, data.y)
    assert plain.groups is None
    assert len(data.group_levels) == 4 and data.group_column == "x1"
    np.testing.assert_array_equal(
        data.groups, np.searchsorted(data.group_edges, data.X[:, 0], side="left")
    )
    assert np.bincount(data.groups).min() >= data.n_samples // 4 - 1
    with pytest.raises(ConfigError) as error:
        make(group="x9", rng=rng())
    assert error.value.key == "data.group" and "x1, x2" in str(error.value)


def test_dataset_checks_its_groups():
    X, y = np.zeros((4, 1)), np.array([0, 1, 0, 1])
    ok = Dataset(X, y, ("a",), groups=[0, 1, 1, 0], group_levels=("a<=0", "a>0"))
    assert ok.groups.dtype == np.int64 and not ok.groups.flags.writeable
    bad = [
        {"groups": [0, 1, 1], "group_levels": ("p", "q")},
        {"groups": [0, 1, 2, 0], "group_levels": ("p", "q")},
        {"groups": [0, -1, 1, 0], "group_levels": ("p", "q")},
        {"groups": [0.0, 1.0, 1.0, 0.0], "group_levels": ("p", "q")},
        {"groups": [0, 0, 0, 0], "group_levels": ()},
        {"groups": [0, 1, 1, 0], "group_levels": ("p", "p")},
        {"group_levels": ("p", "q")},
        {"group_column": "a"},
    ]
    for kwargs in bad:
        with pytest.raises(ConfigError, match=r"data\.group"):
            Dataset(X, y, ("a",), **kwargs)
    with pytest.raises(ConfigError, match=r"data\.groups"):
        replace(ok, X=np.zeros((3, 1)), y=np.array([0, 1, 0]))
    assert ok.subset([3, 1]).groups.tolist() == [0, 1]


@pytest.mark.parametrize("option", sorted(p.stem for p in CONFIGS.glob("*.yaml")))
def test_every_data_config_declares_groups(option):
    node = OmegaConf.load(CONFIGS / f"{option}.yaml")
    assert node.group is None and node.group_bins == 2


def test_a_bad_group_through_the_runner_names_data_group():
    from recourse_sim.run import build

    node = OmegaConf.load(CONFIGS / "credit.yaml")
    node.pop("test_size")
    node.group = "GENDER"
    with pytest.raises(ConfigError) as error:
        build(node, "data", rng=rng())
    assert error.value.key == "data.group" and "SEX" in str(error.value)
