"""Rebuild reports from files: ``python -m recourse_sim.report PATH [PATH...]``.

Each PATH is a run directory (``report.html``, ``report.md``) or a sweep directory
(``summary.csv``, ``shift_report.html``, ``shift_report.md``). Nothing is re-run.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from recourse_sim.report import ReportError, build_report


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m recourse_sim.report",
        description="Rebuild the shift report of run or sweep directories from their files.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="a run or a sweep directory")
    parser.add_argument(
        "--no-figures", action="store_true", help="tables and text only (no figures)"
    )
    parser.add_argument(
        "--jobs", action="store_true", help="for a sweep, also rebuild every job's report"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Build every report asked for; exit status 2 if any path is not a run or sweep directory."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    status = 0
    for path in args.paths:
        try:
            report = build_report(path, figures=not args.no_figures, jobs=args.jobs)
        except ReportError as error:
            print(f"recourse_sim.report: {error}", file=sys.stderr)
            status = 2
            continue
        print(f"recourse_sim.report: wrote {report}")
    return status


if __name__ == "__main__":
    sys.exit(main())
