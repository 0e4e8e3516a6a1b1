"""The Python API (``from recourse_sim import simulate``): the same runs as the command line.

Every argument becomes a hydra override composed from the same configuration tree and run by
the same function, so the API and the CLI write byte-identical CSVs; bad values raise the
project's ConfigError naming the key; the run directory's safety rules hold; a script without a
``__main__`` guard runs; ``import recourse_sim`` stays light.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recourse_sim import SimulationResult, simulate, simulate_config
from recourse_sim.errors import ConfigError
from recourse_sim.simulation.rundir import LOCK

REPO = Path(__file__).resolve().parents[1]
#: A tiny run: 100 rows, 2 rounds, 1 repetition, no permutations (one process: the default).
SMALL = ["data.n_samples=100", "simulation.n_permutations=0"]
TINY = {"n_rounds": 2, "n_repetitions": 1, "overrides": SMALL}
#: The CSVs that must agree byte for byte between runs of the same settings.
#: The same for a user's table (data=csv has no data.n_samples default to shrink).
UNSAMPLED = TINY | {"overrides": ["simulation.n_permutations=0"]}
CSVS = (
    "metrics.csv",
    "recourse.csv",
    "final_population.csv",
    "initial_population.csv",
    "decision_grid.csv",
)


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """Temporary run directories go below ``tmp_path``, so the test sees them come and go."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


def loans(rows: int = 120, seed: int = 0) -> pd.DataFrame:
    """A loan table with a categorical text column and a text label."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "income": rng.normal(50, 10, rows).round(2),
            "debt": rng.normal(10, 3, rows).round(2),
            "region": rng.choice(["north", "south", "east"], rows),
            "approved": np.tile(["no", "yes"], rows // 2),
        }
    )


def snapshot(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != LOCK
    }


# --- inputs ------------------------------------------------------------------------------------


def test_an_option_name_runs_in_a_temporary_directory_that_is_removed(private_tmp):
    result = simulate("overlapping", **TINY)
    assert isinstance(result, SimulationResult)
    assert result.directory is None
    assert list(private_tmp.iterdir()) == []  # the temporary run directory is gone
    metrics = result.metrics
    assert list(metrics.columns) == [
        "repetition", "round", "model", "generator", "metric", "scope", "value", "p_value",
    ]  # fmt: skip
    assert sorted(metrics["round"].unique()) == [0, 2]  # round 0 and the last
    assert set(metrics["model"]) == {"logistic"} and set(metrics["generator"]) == {"generic"}
    assert metrics["p_value"].isna().all()  # n_permutations=0: empty cells, read as missing
    assert len(result.recourse) == 2 and len(result.initial_population) == 80
    assert result.decision_grid is not None  # two-feature data
    assert result.config.simulation.n_rounds == 2 and result.config.data.n_samples == 100
    with pytest.raises(Exception, match="read-only"):
        result.config.seed = 1
    assert "logistic/generic" in repr(result)


def test_a_list_of_generators_gives_both_systems_with_the_control_kept_as_text(private_tmp):
    result = simulate(generator=["generic", "none"], **TINY)
    metrics = result.metrics
    assert set(metrics["generator"]) == {"generic", "none"}  # "none" is a label, not NaN
    assert set(result.recourse["generator"]) == {"generic", "none"}
    # Paired design: the generic system's rows are those of a run without the control.
    alone = simulate(generator="generic", **TINY).metrics
    pd.testing.assert_frame_equal(
        metrics[metrics["generator"] == "generic"].reset_index(drop=True), alone
    )


def test_a_dataframe_with_a_categorical_text_column(tmp_path):
    frame = loans()
    result = simulate(
        frame,
        target="approved",
        positive_label="yes",
        output_dir=tmp_path / "run",
        **UNSAMPLED,
    )
    population = result.final_population
    assert {"region_east", "region_north", "region_south"} <= set(population.columns)
    assert "region" not in population.columns
    one_hot = population[["region_east", "region_north", "region_south"]].to_numpy()
    assert np.allclose(one_hot.sum(axis=1), 1)
    data = result.config.data
    assert data.target == "approved" and list(data.categorical) == ["region"]
    # The frame went to a CSV in the run directory, listed in its manifest (rule 4).
    data_file = Path(data.path)
    assert data_file.parent == (tmp_path / "run").resolve() and data_file.is_file()
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert data_file.name in manifest["files"]
    assert pd.read_csv(data_file).equals(frame)
    # Every table the run wrote, the input table not among them.
    assert result.tables["metrics"] is result.metrics
    assert {"recourse", "final_population", "initial_population"} <= set(result.tables)
    assert not [name for name in result.tables if name.startswith("dataframe-")]
    # The same table as a file (data=csv, as the command line loads it) gives the same results.
    csv = tmp_path / "loans.csv"
    frame.to_csv(csv, index=False)
    from_file = simulate(
        csv, target="approved", positive_label="yes", n_rounds=2, n_repetitions=1,
        overrides=["simulation.n_permutations=0"],
    )  # fmt: skip
    pd.testing.assert_frame_equal(result.metrics, from_file.metrics)
    pd.testing.assert_frame_equal(result.final_population, from_file.final_population)


def test_the_api_and_the_command_line_write_byte_identical_csvs(tmp_path):
    overrides = [
        "data=overlapping",
        "data.n_samples=100",
        "simulation.n_rounds=2",
        "simulation.n_repetitions=1",
        "simulation.n_permutations=0",
        "generator=[generic,none]",
    ]
    cli = tmp_path / "cli"
    command = [sys.executable, "-m", "recourse_sim", *overrides, "processes=1", "progress=false"]
    done = subprocess.run(
        [*command, "report=none", f"hydra.run.dir={cli}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    api = tmp_path / "api"
    result = simulate("overlapping", generator=["generic", "none"], output_dir=api, **TINY)
    assert result.directory == api.resolve()
    for name in CSVS:
        assert (api / name).read_bytes() == (cli / name).read_bytes(), name
    # The compose-API variant: the configuration composed by the caller, run as it is.
    from hydra import compose, initialize_config_module

    with initialize_config_module("recourse_sim.configs", version_base="1.3"):
        cfg = compose(
            "config", overrides=[*overrides, "processes=1", "progress=false", "report=none"]
        )
        # Inside the caller's own hydra context, simulate composes on its own and restores it.
        inside = simulate("overlapping", generator=["generic", "none"], **TINY)
        assert compose("config").data.n_samples == 1000  # the caller's context still works
    composed = simulate_config(cfg, output_dir=tmp_path / "composed")
    assert (tmp_path / "composed" / "metrics.csv").read_bytes() == (
        cli / "metrics.csv"
    ).read_bytes()
    pd.testing.assert_frame_equal(composed.metrics, result.metrics)
    pd.testing.assert_frame_equal(inside.metrics, result.metrics)


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "key"),
    [
        ({"n_rounds": -1}, "simulation.n_rounds"),
        ({"n_rounds": 1.5}, "simulation.n_rounds"),
        ({"data": "nosuch"}, "data"),
        ({"model": ["logistic", "nosuch"]}, "model"),
        ({"generator": []}, "generator"),
        ({"overrides": ["simulation.nosuch=1"]}, "simulation.nosuch"),
        ({"overrides": ["simulation.n_rounds=[1"]}, "simulation.n_rounds"),
        ({"overrides": "seed=1"}, "overrides"),
        ({"processes": 0}, "processes"),
        ({"progress": "yes"}, "progress"),
        ({"overrides": ["+colour=red"]}, "colour"),
        ({"data": "moons", "target": "y"}, "data.target"),
        ({"overrides": ["hydra.run.dir=elsewhere"]}, "hydra.run.dir"),
    ],
)
def test_a_bad_value_raises_config_error_naming_the_key(arguments, key, tmp_path):
    with pytest.raises(ConfigError) as caught:
        simulate(**{"n_rounds": 2, "n_repetitions": 1, **arguments}, output_dir=tmp_path / "run")
    assert caught.value.key == key
    assert f"<{key}=" in str(caught.value)
    assert not (tmp_path / "run").exists()  # refused before the directory was touched


def test_a_bad_dataframe_column_names_it_and_leaves_no_file(tmp_path):
    with pytest.raises(ConfigError, match="the label column") as caught:
        simulate(loans(), output_dir=tmp_path / "run")
    assert caught.value.key == "target"
    with pytest.raises(ConfigError, match="income, debt, region, approved") as caught:
        simulate(loans(), target="nope", output_dir=tmp_path / "run", **TINY)
    assert caught.value.key == "data.target"
    assert list((tmp_path / "run").glob("*.csv")) == []


def test_a_second_run_into_the_same_directory_is_refused_and_changes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    first = simulate(loans(seed=0), target="approved", positive_label="yes", output_dir=run_dir,
                     **UNSAMPLED)  # fmt: skip
    before = snapshot(run_dir)
    with pytest.raises(ConfigError, match="earlier run") as caught:
        simulate(loans(seed=1), target="approved", positive_label="yes", output_dir=run_dir,
                 **UNSAMPLED)  # fmt: skip
    assert caught.value.key == "overwrite"
    assert snapshot(run_dir) == before  # not even the second table's CSV was left behind
    second = simulate(loans(seed=1), target="approved", positive_label="yes", output_dir=run_dir,
                      overwrite=True, **UNSAMPLED)  # fmt: skip
    assert not first.metrics.equals(second.metrics)
    files = json.loads((run_dir / "manifest.json").read_text())["files"]
    tables = sorted(p.name for p in run_dir.glob("dataframe-*.csv"))
    assert tables == [Path(second.config.data.path).name]  # the first table went with its run
    assert tables[0] in files


# --- scripts, imports, the README --------------------------------------------------------------


def test_a_script_without_a_main_guard_runs_once_and_in_one_process(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from recourse_sim import simulate

            result = simulate("overlapping", n_rounds=2, n_repetitions=1, processes=2,
                              overrides={SMALL!r})
            print("METRICS")
            print(result.metrics.to_csv(index=False), end="")
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "running in one process" in done.stderr  # the worker pool's fallback, logged
    assert done.stdout.count("METRICS") == 1
    printed = done.stdout.split("METRICS\n", 1)[1]
    assert printed == simulate("overlapping", **TINY).metrics.to_csv(index=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unguarded.py"]


def test_importing_the_package_stays_light():
    code = (
        "import sys, recourse_sim; "
        "print('torch' in sys.modules, 'hydra' in sys.modules, 'simulate' in recourse_sim.__all__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["False", "False", "True"], done.stderr
    import recourse_sim
    from recourse_sim import api

    assert recourse_sim.simulate is api.simulate and "simulate" in dir(recourse_sim)
    with pytest.raises(AttributeError):
        recourse_sim.no_such_name  # noqa: B018


def readme_example() -> str:
    """The first ```python block of the README's section "Python API and notebooks"."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Python API and notebooks\n", 1)
    if len(section) != 2:
        pytest.fail("README.md has no section '## Python API and notebooks'")
    section = section[1].split("\n## ", 1)[0]  # up to the next section
    block = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert block is not None, "no ```python block in the README's API section"
    return block.group(1)


def test_the_readme_example_runs(tmp_path):
    script = tmp_path / "readme_example.py"
    script.write_text(readme_example())
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and done.stdout.strip()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["readme_example.py"]
