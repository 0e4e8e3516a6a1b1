"""The examples of README's "Your own model" and "Counterfactual training" sections, run as a user
runs them.

Each ``python`` block starting with ``# <file>.py`` is written to a scratch directory, and each
``python -m recourse_sim`` line of the section's ``bash`` blocks runs there through the real
entry point, shrunk with ``debug=smoke`` (presets are run by their own tests).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).parents[1]


#: The README sections whose examples run here.
SECTIONS = ("## Your own model\n", "## Counterfactual training\n")


def _section() -> str:
    text = (ROOT / "README.md").read_text()
    parts = []
    for heading in SECTIONS:
        start = text.index(heading)
        parts.append(text[start : text.index("\n## ", start + 1)])
    return "\n".join(parts)


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", _section(), flags=re.S)


def _files() -> dict[str, str]:
    files = {}
    for block in _blocks("python"):
        first = block.splitlines()[0]
        match = re.fullmatch(r"# (\w+\.py)", first.strip())
        assert match, f"a README example module must start with '# name.py': {first!r}"
        files[match.group(1)] = block
    return files


def _commands() -> list[str]:
    lines = [line for block in _blocks("bash") for line in block.splitlines()]
    return [
        line.split("#")[0].strip()
        for line in lines
        if line.startswith("python -m recourse_sim") and "+experiment=" not in line
    ]


def test_the_section_has_a_torch_and_a_scikit_learn_example():
    commands = _commands()
    assert any("model=torch_module" in c for c in commands)
    assert any("model=sklearn" in c for c in commands)
    assert len(_files()) >= 2


def _slow(command: str) -> bool:
    # A random forest with FeatureTweak costs most (every leaf of 50 trees is a candidate); the
    # scikit-learn kind is also run through the CLI by test_sklearn_model.py. Counterfactual
    # training on credit searches 33-dimensional counterfactuals every epoch; the preset's test
    # (test_counterfactual_training.py) runs the same code on circles.
    return "RandomForest" in command or ("data=credit" in command and "counterfactual" in command)


def _cases() -> list:
    return [
        pytest.param(c, marks=pytest.mark.slow) if _slow(c) else pytest.param(c)
        for c in _commands()
    ]


@pytest.mark.parametrize("command", _cases())
def test_readme_example_runs(command, tmp_path):
    for name, source in _files().items():
        (tmp_path / name).write_text(source)
    run_dir = tmp_path / "run"
    args = shlex.split(command)[1:]  # the "python" of the README is this interpreter
    args += ["debug=smoke", "progress=false", "report=none", f"hydra.run.dir={run_dir}"]
    result = subprocess.run(
        [sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = pd.read_csv(run_dir / "metrics.csv")
    model = next(a.split("=")[1] for a in args if a.startswith("model="))
    assert set(metrics.model) == {model.strip("[]")}
    # Every shift metric has a value, except perturbation of a model without parameters.
    shift = metrics[metrics.metric != "perturbation"]
    assert shift.value.notna().all(), shift[shift.value.isna()]
