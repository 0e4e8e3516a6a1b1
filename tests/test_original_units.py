"""The data's original units: decoding model space, and final_population_original.csv."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SMOKE
from hydra import compose, initialize_config_dir

from recourse_sim.__main__ import _CONFIG_DIR, execute
from recourse_sim.data import (
    Dataset,
    draw_fresh,
    hold_back,
    load_csv,
    make_independent_normal,
    make_moons,
    train_test_split,
)
from recourse_sim.data.credit import _CREDIT_FEATURES, _CREDIT_LEVELS, _credit_frame
from recourse_sim.data.encoding import Encoding, OneHot
from recourse_sim.errors import ConfigError
from recourse_sim.simulation.frames import (
    POPULATION_KEYS,
    POPULATION_TAIL,
    original_population_frame,
)

ORIGINAL = "final_population_original.csv"


def cli(*overrides: str, run_dir: Path) -> None:
    """The real entry point, as a user runs it."""
    args = [sys.executable, "-m", "recourse_sim", *overrides, f"hydra.run.dir={run_dir}"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"


def user_table(n: int = 80) -> pd.DataFrame:
    """A loan table: a float, a text and an integer column, and the target."""
    rng = np.random.default_rng(3)
    return pd.DataFrame(
        {
            "income": rng.normal(52_000, 9_000, n),
            "housing": rng.choice(["own", "rent", "free"], n),
            "age": rng.integers(18, 80, n),
            "approved": rng.choice(["yes", "no"], n),
        }
    )


def test_decode_round_trips_a_user_table(tmp_path):
    table = user_table()
    path = tmp_path / "loans.csv"
    table.to_csv(path, index=False)
    data = load_csv(path, "approved", positive_label="yes", rng=np.random.default_rng(0))
    # Model space is standardised and one-hot ...
    assert data.feature_names == ("income", "housing_free", "housing_own", "housing_rent", "age")
    assert abs(data.X[:, 0].mean()) < 1e-12 and abs(data.X[:, 0].std(ddof=1) - 1) < 1e-12
    # ... and decodes to the file's columns, in its order and units.
    decoded = data.decode()
    assert list(decoded.columns) == ["income", "housing", "age"]
    assert decoded["housing"].tolist() == table["housing"].tolist()
    for column in ("income", "age"):
        np.testing.assert_allclose(decoded[column], table[column], rtol=1e-12, atol=0)
    encoding = data.encoding
    assert encoding.features == ("income", "housing", "age")
    assert encoding.onehot == (OneHot("housing", (1, 2, 3), ("free", "own", "rent")),)
    assert encoding.continuous == ("income", "age")
    assert encoding.mean[0] == pytest.approx(table["income"].mean())
    assert encoding.scale[4] == pytest.approx(table["age"].std(ddof=1))

    # Every derived data set keeps the way back.
    rng = np.random.default_rng(1)
    rest, pool = hold_back(data, 10, rng)
    train, test = train_test_split(rest, 0.25, rng)
    derived = [
        data.subset([5, 2]),
        data.with_mutability(immutable=["housing"]),
        rest,
        pool,
        train,
        test,
        pickle.loads(pickle.dumps(train)),
    ]
    for part in derived:
        assert part.encoding == encoding
    pd.testing.assert_frame_equal(
        data.subset([5, 2]).decode(), decoded.iloc[[5, 2]].reset_index(drop=True)
    )
    # A one-hot group that is not (yet) one-hot decodes to its largest entry.
    row = data.X[:1].copy()
    row[0, 1:4] = (0.2, 0.1, 0.7)
    assert data.decode(row)["housing"].tolist() == ["rent"]


def test_a_mismatched_encoding_is_refused():
    encoding = Encoding.identity(("a", "b"))
    with pytest.raises(ConfigError, match=r"data\.encoding"):
        Dataset(np.zeros((2, 2)), np.array([0, 1]), ("a", "c"), encoding=encoding)
    with pytest.raises(ConfigError, match=r"data\.encoding"):
        Encoding(("a", "b"), ("a",), (0.0, 0.0), (1.0, 1.0))  # b belongs to no feature


def test_synthetic_data_decode_as_the_identity():
    moons = make_moons(n_samples=40, rng=np.random.default_rng(0))
    normal = make_independent_normal(n_samples=12, n_features=3, rng=np.random.default_rng(0))
    bare = Dataset(np.random.default_rng(0).normal(size=(6, 2)), np.array([0, 1] * 3), ("u", "v"))
    fresh = draw_fresh(make_moons, {}, 5, np.random.default_rng(1), like=moons)
    for data in (moons, normal, bare, fresh):
        decoded = data.decode()
        assert list(decoded.columns) == list(data.feature_names)
        assert np.array_equal(decoded.to_numpy(), data.X)
        assert data.decoding == Encoding.identity(data.feature_names)
    moved = moons.X[:3] + 0.25
    assert np.array_equal(moons.decoding.delta(moons.X[:3], moved).to_numpy(), moved - moons.X[:3])


def test_the_original_frame_reads_each_change_in_original_units():
    encoding = Encoding(
        ("income", "housing_own", "housing_rent", "owner"),
        ("income", "housing", "owner"),
        (50_000.0, 0.0, 0.0, 0.0),
        (10_000.0, 1.0, 1.0, 1.0),
        (OneHot("housing", (1, 2), ("own", "rent")),),
        binary=(3,),
    )
    initial = np.array([[0.0, 1, 0, 1], [0.0, 1, 0, 1], [-1.0, 0, 1, 0]])
    final = np.array([[0.0, 1, 0, 1], [0.12, 0, 1, 0], [-1.0, 0, 1, 0]])
    population = pd.DataFrame(final, columns=list(encoding.columns))
    for position, key in enumerate(POPULATION_KEYS):
        population.insert(position, key, [0, 0, 1] if key != "individual" else [0, 1, 0])
    for column in POPULATION_TAIL:
        population[column] = [0, 1, 0]
    frame = original_population_frame(population, initial, encoding)
    assert list(frame.columns) == [
        *POPULATION_KEYS,
        "income",
        "housing",
        "owner",
        *POPULATION_TAIL,
        "n_changed",
        "changes",
        "delta_income",
    ]
    assert frame["income"].tolist() == [50_000.0, 51_200.0, 40_000.0]
    assert frame["housing"].tolist() == ["own", "rent", "rent"]
    assert frame["owner"].tolist() == [1, 0, 0]
    moved = "income: +1200; housing: own -> rent; owner: 1 -> 0"
    assert frame["changes"].tolist() == ["", moved, ""]
    assert frame["n_changed"].tolist() == [0, 3, 0]
    assert frame["delta_income"].tolist() == [0.0, 1200.0, 0.0]
    # Without continuous features there are no delta columns, and the rows still line up.
    categorical = Encoding(
        ("housing_own", "housing_rent"),
        ("housing",),
        (0.0, 0.0),
        (1.0, 1.0),
        (OneHot("housing", (0, 1), ("own", "rent")),),
    )
    keys = population[[*POPULATION_KEYS]]
    only = pd.concat([keys, population[["housing_own", "housing_rent", *POPULATION_TAIL]]], axis=1)
    frame = original_population_frame(only, initial[:, 1:3], categorical)
    assert frame["changes"].tolist() == ["", "housing: own -> rent", ""]
    assert not [c for c in frame.columns if c.startswith("delta_")]


def moved_rows(run_dir: Path, features: list[str]) -> pd.Series:
    """Per row of final_population.csv: whether it left its initial position (model space)."""
    final = pd.read_csv(run_dir / "final_population.csv")
    initial = pd.read_csv(run_dir / "initial_population.csv").set_index("individual")
    start = initial.loc[final["individual"], features].to_numpy()
    return pd.Series((final[features].to_numpy() != start).any(axis=1))


def check_original_file(run_dir: Path) -> pd.DataFrame:
    """The checks every run's final_population_original.csv passes; returns it."""
    assert ORIGINAL in json.loads((run_dir / "manifest.json").read_text())["files"]
    original = pd.read_csv(run_dir / ORIGINAL, keep_default_na=False)
    final = pd.read_csv(run_dir / "final_population.csv")
    features = list(final.columns[len(POPULATION_KEYS) : -len(POPULATION_TAIL)])
    # Same rows, same identifying and outcome columns as final_population.csv.
    for column in (*POPULATION_KEYS, *POPULATION_TAIL):
        assert original[column].tolist() == final[column].tolist(), column
    moved = moved_rows(run_dir, features)
    assert moved.any()
    changed = original["changes"] != ""
    assert changed.tolist() == (moved & (final["n_recourse"] > 0)).tolist()
    assert ((original["n_changed"] > 0) == changed).all()
    deltas = original.filter(like="delta_")
    assert (deltas[~changed] == 0).all().all()
    assert ((deltas != 0).sum(axis=1) <= original["n_changed"]).all()
    return original


def test_a_credit_run_writes_the_final_population_in_original_units(tmp_path):
    run_dir = tmp_path / "credit"
    cli("+experiment=credit", *SMOKE, "data.n_samples=200", "report=none", run_dir=run_dir)
    original = check_original_file(run_dir)
    features = list(_CREDIT_FEATURES)
    continuous = [f for f in features if f not in _CREDIT_LEVELS]
    assert list(original.columns) == [
        *POPULATION_KEYS,
        *features,
        *POPULATION_TAIL,
        "n_changed",
        "changes",
        *(f"delta_{f}" for f in continuous),
    ]
    # Who never moved is a row of the embedded table, value for value.
    raw = _credit_frame()[features]
    still = original.loc[original["n_changed"] == 0, features].drop_duplicates()
    found = still.merge(raw.drop_duplicates(), how="left", indicator=True)["_merge"]
    assert len(still) > 50 and (found == "both").all()
    for column in continuous:  # and within the raw column's range
        assert raw[column].min() <= still[column].min() <= still[column].max() <= raw[column].max()
    # Categorical columns hold the raw table's levels, moved or not.
    for column, levels in _CREDIT_LEVELS.items():
        assert set(original[column]) <= set(levels)
        assert set(original[column]) <= set(raw[column])
    # The deltas are the model-space moves in the original units: fit each column's scale on
    # the rows that never moved, then check every row.
    final = pd.read_csv(run_dir / "final_population.csv")
    initial = pd.read_csv(run_dir / "initial_population.csv").set_index("individual")
    unmoved = original["n_changed"] == 0
    for column in continuous:
        z, x = final.loc[unmoved, column], original.loc[unmoved, column]
        scale, mean = np.polyfit(z, x, 1)
        tolerance = 1e-9 * (abs(scale) + abs(mean))  # the fit's own rounding
        expected = final[column] * scale + mean
        np.testing.assert_allclose(original[column], expected, rtol=1e-9, atol=tolerance)
        start = initial.loc[final["individual"], column].to_numpy()
        moves = (final[column] - start) * scale
        np.testing.assert_allclose(original[f"delta_{column}"], moves, rtol=1e-9, atol=tolerance)
    # The text names every changed feature with its signed change or its levels.
    row = original[original["changes"] != ""].iloc[0]
    parts = row["changes"].split("; ")
    assert len(parts) == row["n_changed"]
    for part in parts:
        name, change = part.split(": ", 1)
        assert name in features
        if name in _CREDIT_LEVELS:
            before, after = change.split(" -> ")
            assert int(before) != int(after) and int(after) == row[name]
        else:
            assert float(change) == pytest.approx(row[f"delta_{name}"], rel=1e-5)


def test_a_user_csv_run_writes_text_levels(tmp_path):
    table = user_table(120)
    path = tmp_path / "loans.csv"
    table.to_csv(path, index=False)
    run_dir = tmp_path / "run"
    overrides = [
        "data=csv",
        f"data.path={path}",
        "data.target=approved",
        "data.positive_label=yes",
        "data.immutable=[age]",
        *SMOKE,
        "report=none",
    ]
    with initialize_config_dir(config_dir=_CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    assert execute(cfg, output_dir=run_dir) == 0  # in this process: no second start-up
    original = check_original_file(run_dir)
    assert list(original.columns[4:7]) == ["income", "housing", "age"]
    assert set(original["housing"]) <= {"own", "rent", "free"}
    assert [c for c in original.columns if c.startswith("delta_")] == ["delta_income", "delta_age"]
    assert (original["delta_age"] == 0).all()  # immutable
    # Every row still at its start is a row of the file.
    still = original.loc[original["n_changed"] == 0, ["income", "housing", "age"]]
    for _, row in still.iterrows():
        match = table[(table["housing"] == row["housing"]) & (table["age"] == row["age"])]
        assert np.isclose(match["income"], row["income"], rtol=1e-12, atol=0).any()
