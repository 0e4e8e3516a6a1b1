"""The example notebook runs from top to bottom, shows the metrics table and draws its figure.

Executed with nbclient on the ``python3`` kernel of this interpreter, in a temporary working
directory (the notebook runs into a temporary run directory of its own and writes nothing).
Slow (a kernel start and a small grid): ``python -m pytest -m slow tests/test_notebook.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

#: The name of the kernel spec written for the test (this interpreter).
KERNEL = "recourse_sim_tests"
NOTEBOOK = Path(__file__).resolve().parents[1] / "experiments" / "notebooks" / "small_grid.ipynb"


def _outputs(notebook, kind: str) -> list:
    return [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if kind in output.get("data", {})
    ]


def test_the_notebook_is_committed_without_outputs():
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (.[test])")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.slow
def test_the_notebook_runs_and_shows_a_table_and_a_figure(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (.[test])")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (.[test])")
    pytest.importorskip("ipykernel", reason="ipykernel is not installed (.[test])")

    # A kernel of this interpreter, found first (JUPYTER_PATH), whatever kernels are installed.
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "recourse_sim tests", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    work = tmp_path / "work"
    work.mkdir()
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name=KERNEL, resources={"metadata": {"path": str(work)}}
    )
    client.execute()
    errors = [
        output
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors, errors
    tables = [o["data"]["text/html"] for o in _outputs(notebook, "text/html")]
    assert any("<table" in table and "generator" in table for table in tables)
    assert any("mmd_domain" in table and "disagreement" in table for table in tables)
    assert _outputs(notebook, "image/png"), "no figure was drawn"
    assert list(work.iterdir()) == []  # the run went into a temporary directory, now removed
