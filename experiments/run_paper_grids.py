"""Run the paper presets' grids behind "Side by side with the paper" in experiments/README.md.

Usage:
    python experiments/run_paper_grids.py OUT_DIR [--parallel N] [--only NAME ...]

Jobs (each one ``python -m recourse_sim`` run, ``processes=1 report=none``, into OUT_DIR/NAME):

* ``overlapping_seed{0..4}``: ``+experiment=paper_synthetic`` on overlapping data with the
  paper's centres (read off its data figure) and the no-recourse control, seeds 0-4;
* ``random_centres_seed{0..4}``: the same grid with both centres drawn at random
  (``data.centers=null``), seeds 0-4: how much the comparison depends on the centres;
* ``{linearly_separable,circles,moons}_seed0``: the grid on the other synthetic data sets;
* ``real_world_credit_seed0``: ``+experiment=paper_real_world`` with the control
  (``processes=3``), only with ``--real-world``.

Runs ``--parallel`` jobs at once (default: the number of CPUs) and writes ``wall_times.csv``
(job, seconds, exit status) to OUT_DIR as jobs finish.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

SYNTHETIC = ["+experiment=paper_synthetic"]
WITH_CONTROL = ["generator=[none,generic,greedy,revise,dice]"]


def jobs(real_world: bool) -> dict[str, list[str]]:
    """Job name -> overrides."""
    grid: dict[str, list[str]] = {}
    for seed in range(5):
        grid[f"overlapping_seed{seed}"] = [*SYNTHETIC, *WITH_CONTROL, f"seed={seed}"]
        grid[f"random_centres_seed{seed}"] = [*SYNTHETIC, "data.centers=null", f"seed={seed}"]
    for data in ("linearly_separable", "circles", "moons"):
        grid[f"{data}_seed0"] = [*SYNTHETIC, f"data={data}", "seed=0"]
    if real_world:
        grid["real_world_credit_seed0"] = [
            "+experiment=paper_real_world",
            "generator=[none,generic,greedy,revise,dice]",
            "seed=0",
            "processes=3",
        ]
    return grid


def run(name: str, overrides: list[str], out_dir: Path) -> tuple[str, float, int]:
    """One job; its stderr goes to OUT_DIR/NAME.stderr."""
    processes = [] if any(o.startswith("processes=") for o in overrides) else ["processes=1"]
    command = [
        sys.executable,
        "-m",
        "recourse_sim",
        *overrides,
        *processes,
        "progress=false",
        "report=none",
        f"hydra.run.dir={out_dir / name}",
    ]
    start = time.perf_counter()
    with open(out_dir / f"{name}.stderr", "w") as log:
        status = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=log).returncode
    return name, time.perf_counter() - start, status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--parallel", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--real-world", action="store_true")
    parser.add_argument("--only", nargs="*", help="job names to run (default: all)")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    grid = jobs(args.real_world)
    if args.only:
        grid = {k: v for k, v in grid.items() if k in args.only}
    # The longest job first, so it is not left running alone at the end.
    order = sorted(grid, key=lambda k: not k.startswith("real_world"))
    times = args.out_dir / "wall_times.csv"
    with open(times, "a", newline="") as file, ThreadPoolExecutor(args.parallel) as pool:
        writer = csv.writer(file)
        if file.tell() == 0:
            writer.writerow(["job", "wall_s", "exit_status"])
        futures = [pool.submit(run, name, grid[name], args.out_dir) for name in order]
        for future in as_completed(futures):
            name, seconds, status = future.result()
            writer.writerow([name, f"{seconds:.1f}", status])
            file.flush()
            print(f"{name}: {seconds:.0f} s, exit {status}", flush=True)


if __name__ == "__main__":
    main()
