"""experiments/check.py: the comparison of re-run rows with committed ones, and its listing.

The full check (every committed experiment re-run in its short version) is slow; the default
tests exercise the comparison on small synthetic tables and ``--list``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "experiments"
sys.path.insert(0, str(EXPERIMENTS))
import check  # noqa: E402  (experiments/check.py)

KEYS = check.KEYS["metrics.csv"]


def metrics() -> pd.DataFrame:
    rows = []
    for repetition in (0, 1):
        for round_number in (0, 10):
            for metric in ("mmd_domain", "disagreement"):
                rows.append(
                    {
                        "repetition": repetition,
                        "round": round_number,
                        "model": "logistic",
                        "generator": "generic",
                        "metric": metric,
                        "scope": "domain" if metric == "mmd_domain" else "model",
                        "value": 0.1 * (repetition + 1) + round_number / 100,
                        "p_value": np.nan if round_number == 0 else 0.05,
                    }
                )
    return pd.DataFrame(rows)


def test_identical_frames_are_ok():
    result = check.compare_frames(metrics(), metrics(), KEYS, name="metrics.csv")
    assert result.ok and result.n_rows == 8 and result.n_differing == 0
    assert result.max_diff == 0


def test_row_order_and_float_rounding_do_not_matter():
    now = metrics().iloc[::-1].copy()
    now["value"] *= 1 + 1e-9
    assert check.compare_frames(metrics(), now, KEYS).ok


def test_a_changed_value_differs_and_names_the_row():
    now = metrics()
    changed = (now["repetition"] == 1) & (now["round"] == 10) & (now["metric"] == "mmd_domain")
    now.loc[changed, "value"] += 0.25
    result = check.compare_frames(metrics(), now, KEYS, name="metrics.csv")
    assert not result.ok and result.n_differing == 1
    assert result.max_diff == pytest.approx(0.25)
    (line,) = result.lines
    assert "metric=mmd_domain" in line and "repetition=1" in line and "round=10" in line
    assert "value committed" in line and "0.3" in line and "0.55" in line


def test_empty_cells_equal_empty_cells_only():
    assert check.compare_frames(metrics(), metrics(), KEYS).ok  # NaN p-values at round 0
    now = metrics()
    now.loc[0, "p_value"] = 0.0
    result = check.compare_frames(metrics(), now, KEYS)
    assert not result.ok and result.n_differing == 1
    assert "p_value committed ''" in result.lines[0]
    back = check.compare_frames(now, metrics(), KEYS)
    assert not back.ok and "now ''" in back.lines[0]


def test_missing_and_extra_rows_differ():
    result = check.compare_frames(metrics(), metrics().iloc[1:], KEYS)
    assert not result.ok and result.missing == 1 and "missing now" in result.lines[-1]
    extra = metrics().iloc[:1].assign(repetition=2)
    result = check.compare_frames(metrics(), pd.concat([metrics(), extra]), KEYS)
    assert not result.ok and result.extra == 1


def test_text_and_columns_are_compared():
    now = metrics()
    now.loc[3, "scope"] = "other"  # a key: the row is missing and another is extra
    assert not check.compare_frames(metrics(), now, KEYS).ok
    assert not check.compare_frames(metrics(), now.drop(columns="p_value"), KEYS).ok


def test_a_short_run_is_compared_on_the_rounds_it_has(tmp_path):
    """Rounds <= k only; the short run's own evaluation at round k (not one of the full run's
    evaluation rounds) is left out, its other rows at round k are compared."""
    committed_dir, now_dir = tmp_path / "committed", tmp_path / "now"
    committed_dir.mkdir()
    now_dir.mkdir()
    full = metrics()  # rounds 0 and 10
    later = full[full["round"] == 10].assign(round=20)
    dynamics = full[full["round"] == 0].assign(round=2, scope="dynamics", metric="reliability")
    pd.concat([full, later, dynamics]).to_csv(committed_dir / "metrics.csv", index=False)
    extra = full[full["round"] == 10].assign(round=2, value=99.0)  # the short run's evaluation
    short = pd.concat([full[full["round"] == 0], dynamics, extra])
    short.to_csv(now_dir / "metrics.csv", index=False)
    config = {"simulation": {"n_rounds": 20, "evaluate_every": 10, "n_permutations": 100}}
    run = check.Run("demo", committed_dir, ["model=logistic"], config)
    plan = check.plan_run(run, check.Rule(rounds=2), False, now_dir)
    assert "simulation.n_rounds=2" in plan.command and "simulation.n_permutations=0" in plan.command
    (result,) = check.compare_run(plan, now_dir, full=False)
    assert result.ok and result.n_rows == 4 + 4, result.lines  # round 0 and round 2's dynamics
    dynamics.assign(value=dynamics["value"] + 1).pipe(
        lambda changed: pd.concat([full[full["round"] == 0], changed, extra])
    ).to_csv(now_dir / "metrics.csv", index=False)
    (result,) = check.compare_run(plan, now_dir, full=False)
    assert not result.ok and "round=2" in result.lines[0] and "reliability" in result.lines[0]


def test_plan_keeps_the_committed_overrides():
    config = {"simulation": {"n_rounds": 50, "evaluate_every": 10}}
    overrides = ["+experiment=credit", "report=none", "progress=False", "processes=1"]
    run = check.Run("credit", Path("credit"), overrides, config)
    command = check.plan_run(run, check.Rule(), False, Path("/tmp/x")).command
    assert command[3:] == [
        "+experiment=credit",
        "processes=1",
        "simulation.n_rounds=10",  # an evaluation round: its permutation tests are kept
        "report=none",
        "progress=false",
        "hydra.run.dir=/tmp/x",
    ]
    arrivals = {**config, "dynamics": {"arrivals": {"per_round": 10}}}
    whole = check.plan_run(
        check.Run("g/0", Path("g/0"), [], arrivals), check.Rule(), False, Path("x")
    )
    assert whole.whole and not any("n_rounds" in word for word in whole.command)


def test_sample_keeps_first_and_last():
    assert check.sample(list(range(15)), 2) == [0, 14]
    assert check.sample(list(range(4)), None) == [0, 1, 2, 3]


def test_list_names_every_committed_experiment(capsys):
    assert check.main(["--list"]) == 0
    out = capsys.readouterr().out
    listed = subprocess.run(
        ["git", "ls-files", "experiments/results"], cwd=ROOT, capture_output=True, text=True
    )
    committed = {line.split("/")[2] for line in listed.stdout.splitlines() if line.count("/") > 2}
    if listed.returncode != 0:  # not a git checkout: every directory counts
        committed = {p.name for p in (EXPERIMENTS / "results").iterdir() if p.is_dir()}
    assert committed
    for name in sorted(committed):
        assert f"\n{name} (" in f"\n{out}", name
    assert "simulation.n_rounds=10" in out  # overlapping_logistic_generic, shortened
    assert "hydra.run.dir=" in out and "counterfactual_training_claim.py --seeds 0" in out


def test_list_of_one_run_and_usage_errors(capsys, tmp_path):
    assert check.main(["--list", "--only", "centres/random_seed1"]) == 0
    out = capsys.readouterr().out
    assert "data.centers=null" in out and "seed=1" in out and "runs/centres/paper" not in out
    assert check.main(["--only", "nosuch", "--list"]) == 2
    err = capsys.readouterr().err
    assert "nosuch" in err and "credit" in err
    (tmp_path / "mine.txt").write_text("not a check's output")
    assert check.main(["--only", "credit", "--out", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err


@pytest.mark.slow
def test_committed_results_are_reproduced(tmp_path):
    """Every committed experiment, short version (13-14 minutes on 2 shared cores)."""
    done = subprocess.run(
        [sys.executable, str(EXPERIMENTS / "check.py"), "--out", str(tmp_path / "check")],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
