"""Shared helpers of the benchmark scripts: machine description, timing, results tables.

Every benchmark writes ``results/<name>.csv`` (the table) and ``results/<name>.md`` (the same table
in Markdown, the notes and a description of the machine it ran on) beside this file. Run the
scripts from the repository root, e.g. ``python experiments/benchmarks/mmd_scaling.py --quick``;
they put the repository root on ``sys.path`` themselves, so the package need not be installed.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as _dt
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent.parent
RESULTS_DIR = BENCH_DIR / "results"

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages (zeros where the OS does not report them)."""
    try:
        return os.getloadavg()
    except OSError:
        return (0.0, 0.0, 0.0)


def load_1m() -> float:
    """The 1 minute load average, rounded for tables."""
    return round(load_average()[0], 2)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _git_revision() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return head + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_description() -> dict[str, str]:
    """What the numbers were measured on: CPU, cores, memory, library versions, load, date."""
    import numpy
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    one, five, fifteen = load_average()
    return {
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": _cpu_model(),
        "cores": f"{os.cpu_count()} logical, {usable} usable by this process",
        "memory": f"{_memory_gib()} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": str(torch.get_num_threads()),
        "numpy": numpy.__version__,
        "load_average": f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min, at the end)",
        "git": _git_revision(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return ""
        if value == 0.0:
            return "0"
        magnitude = abs(value)
        if magnitude >= 1000:
            return f"{value:,.0f}"
        if magnitude >= 100:
            return f"{value:.1f}"
        if magnitude >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    if value is None:
        return ""
    return str(value).replace("|", "\\|")


def markdown_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str]) -> str:
    """A Markdown table of ``rows`` with the given column order."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def write_results(
    name: str,
    rows: Sequence[Mapping[str, object]],
    *,
    title: str,
    notes: Iterable[str] = (),
    columns: Sequence[str] | None = None,
    extra_tables: Iterable[tuple[str, Sequence[Mapping[str, object]]]] = (),
    results_dir: Path = RESULTS_DIR,
) -> tuple[Path, Path]:
    """Write ``<name>.csv`` and ``<name>.md`` (table, notes, machine block) and print the latter.

    Args:
        name: File stem, e.g. ``"mmd_scaling"``.
        rows: The table, one mapping per row.
        title: Heading of the Markdown file.
        notes: Paragraphs printed under the table (what was measured, caveats).
        columns: Column order (default: the keys of the first row, then any new ones).
        extra_tables: ``(heading, rows)`` of further small Markdown-only tables.
        results_dir: Where the files go.

    Returns:
        The paths of the CSV and the Markdown file.
    """
    if columns is None:
        columns = []
        for row in rows:
            columns.extend(k for k in row if k not in columns)
    results_dir.mkdir(parents=True, exist_ok=True)
    csv_path = results_dir / f"{name}.csv"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in columns})
    machine = machine_description()
    parts = [f"# {title}", "", markdown_table(rows, columns), ""]
    for heading, table in extra_tables:
        keys: list[str] = []
        for row in table:
            keys.extend(k for k in row if k not in keys)
        parts += [f"**{heading}**", "", markdown_table(table, keys), ""]
    for note in notes:
        parts += [note, ""]
    parts += ["Machine:", ""]
    parts += [f"- {key}: {value}" for key, value in machine.items()]
    md_path = results_dir / f"{name}.md"
    md_path.write_text("\n".join(parts) + "\n")
    print("\n".join(parts))
    print(f"\nwrote {csv_path.relative_to(REPO_ROOT)} and {md_path.relative_to(REPO_ROOT)}")
    return csv_path, md_path


def parser(description: str | None) -> argparse.ArgumentParser:
    """An argument parser with the ``--quick`` switch every benchmark has."""
    result = argparse.ArgumentParser(description=description)
    result.add_argument(
        "--quick",
        action="store_true",
        help="a small version (under a minute) for smoke tests; writes <name>_quick files",
    )
    return result


def results_name(name: str, quick: bool) -> str:
    """``name`` for the full benchmark, ``name_quick`` for the smoke-test version."""
    return f"{name}_quick" if quick else name


class Stopwatch:
    """Wall and process CPU time of a ``with`` block (``.wall``, ``.cpu`` in seconds)."""

    def __enter__(self) -> Stopwatch:
        self._wall = time.perf_counter()
        self._cpu = time.process_time()
        self.wall = self.cpu = 0.0
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (MiB, Linux ``ru_maxrss``)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


TIME_BIN = "/usr/bin/time"


def _parse_time_v(text: str) -> dict[str, float]:
    """Peak RSS and CPU seconds from GNU time's ``-v`` report."""
    out = {}
    patterns = {
        "peak_rss_mib": r"Maximum resident set size \(kbytes\): (\d+)",
        "user_s": r"User time \(seconds\): ([\d.]+)",
        "system_s": r"System time \(seconds\): ([\d.]+)",
    }
    for key, pattern in patterns.items():
        match = re.search(pattern, text)
        if match:
            out[key] = float(match.group(1))
    if "peak_rss_mib" in out:
        out["peak_rss_mib"] /= 1024
    return out


def run_cli(overrides: Sequence[str], label: str) -> dict[str, object]:
    """Run ``python -m recourse_sim OVERRIDES`` as a user would; wall time, CPU time, memory.

    CPU time and peak memory cover the job and its worker processes (``/usr/bin/time -v`` where
    present, else ``getrusage(RUSAGE_CHILDREN)``). Exits with the job's output if it fails.
    """
    cmd = [sys.executable, "-m", "recourse_sim", *overrides]
    use_time = os.access(TIME_BIN, os.X_OK)
    if use_time:
        cmd = [TIME_BIN, "-v", *cmd]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    load_before = load_1m()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-5000:] + proc.stderr[-5000:])
        raise SystemExit(f"{label}: the job failed with exit status {proc.returncode}")
    measured = _parse_time_v(proc.stderr) if use_time else {}
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return {
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        # ru_maxrss of RUSAGE_CHILDREN is the largest child so far, not this job's own peak.
        "peak_rss_mib": round(measured.get("peak_rss_mib", after.ru_maxrss / 1024), 0),
        "rss_source": "time -v" if "peak_rss_mib" in measured else "getrusage (max so far)",
        "load_1m_before": load_before,
        "load_1m_after": load_1m(),
    }


def time_phases(simulation, phases: Sequence[str]) -> dict[str, dict[int, float]]:
    """Wrap a simulation's phase methods so that each records its wall time per round."""
    times: dict[str, dict[int, float]] = {phase: {} for phase in phases}
    for phase in phases:
        original = getattr(simulation, phase)

        def wrapper(round_number, _original=original, _phase=phase):
            start = time.perf_counter()
            _original(round_number)
            times[_phase][round_number] = time.perf_counter() - start

        setattr(simulation, phase, wrapper)
    return times


def loglog_slope(rows: Sequence[Mapping[str, object]], x: str, y: str) -> float:
    """Least-squares slope of log(y) on log(x) over the rows (a scaling exponent)."""
    import numpy as np

    return float(np.polyfit(np.log([r[x] for r in rows]), np.log([r[y] for r in rows]), 1)[0])


@contextlib.contextmanager
def git_worktree(revision: str) -> Iterator[Path]:
    """A temporary detached ``git worktree`` of ``revision`` (removed again on exit)."""
    path = Path(tempfile.mkdtemp(prefix="recourse_baseline_")) / "tree"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(path), revision],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(path)],
            cwd=REPO_ROOT,
            check=False,
            capture_output=True,
        )
        shutil.rmtree(path.parent, ignore_errors=True)
