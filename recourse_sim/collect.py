"""Collect a sweep from its files: ``python -m recourse_sim.collect SWEEP_DIR [SWEEP_DIR...]``.

Merges every job's results (``summary.csv``, ``sweep_metrics.csv``), writes the sweep report and
``jobs.csv``, and lists the failed, missing and unfinished jobs with the command that runs each
(see :mod:`recourse_sim.sweep.collect`). Nothing is run. Exit status: 0 when every job is done,
1 when some are not, 2 when a path is not a sweep directory.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m recourse_sim.collect",
        description="Merge a sweep's results, write its report and list the jobs left to run.",
    )
    parser.add_argument("paths", nargs="+", metavar="SWEEP_DIR", help="a sweep directory")
    parser.add_argument("--no-report", action="store_true", help="tables only (no HTML report)")
    parser.add_argument("--no-figures", action="store_true", help="a report without figures")
    parser.add_argument(
        "--all", action="store_true", help="list every job that is not done (default: 20)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Collect every sweep asked for; the exit status says whether all their jobs are done."""
    from recourse_sim.report import ReportError
    from recourse_sim.sweep import collect

    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    status = 0
    for path in args.paths:
        try:
            collection = collect(path, html=not args.no_report, figures=not args.no_figures)
        except ReportError as error:
            print(f"recourse_sim.collect: {error}", file=sys.stderr)
            status = 2
            continue
        for line in collection.lines(shown=len(collection.jobs) if args.all else 20):
            print(f"recourse_sim.collect: {line}")
        if collection.report is not None:
            print(f"recourse_sim.collect: wrote {collection.report}")
        if not collection.complete and status == 0:
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
