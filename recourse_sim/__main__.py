"""Command-line entry point: ``python -m recourse_sim [hydra overrides]``.

Exit status (``CONVENTIONS.md`` rule 3): 0 on success; 2 for every user error (a bad value, an
unknown key or option, bad override syntax, a bad file or directory, a refused resume or
overwrite, a full disk), with a message naming the key and no traceback; 130 after Ctrl-C (the
finished rounds are kept for ``resume=true``); 1 when a run fails for another reason (a dead
worker process, a bug).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

# An absolute path works for `python -m recourse_sim` from any directory and for the console script.
_CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")
#: Exit status of a user error.
USAGE_ERROR = 2
#: Exit status after Ctrl-C (128 + SIGINT, as shells report it).
INTERRUPTED = 130

# `${pid:}` in the default run directories: two runs started in the same second never share one.
OmegaConf.register_new_resolver("pid", os.getpid, replace=True)


def execute(cfg: DictConfig, output_dir: str | Path | None = None) -> int:
    """Run one simulation from a composed configuration; return the CLI's exit status.

    User errors are reported on stderr in one paragraph (no traceback) and give status 2.
    """
    from recourse_sim.errors import ConfigError, OutputError
    from recourse_sim.run import run  # imported here so that --help and --cfg stay fast
    from recourse_sim.utils.workers import WorkerError

    try:
        run(cfg, output_dir)
    except ConfigError as error:
        print(f"recourse_sim: configuration error: {error}", file=sys.stderr)
        return USAGE_ERROR
    except OutputError as error:
        print(
            f"recourse_sim: cannot write results: {error} (check hydra.run.dir and free space; "
            "the results of finished rounds are kept and resume=true continues from them)",
            file=sys.stderr,
        )
        return USAGE_ERROR
    except WorkerError as error:
        print(f"recourse_sim: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "recourse_sim: interrupted; the results of finished rounds are kept: continue with "
            "the same overrides and resume=true (or, if no round had finished, start again with "
            "overwrite=true)",
            file=sys.stderr,
        )
        return INTERRUPTED
    return 0


_task_started = False
#: (job number, exit status) of the jobs of this sweep that failed.
_failed_jobs: list[tuple[int, int]] = []


@hydra.main(version_base="1.3", config_path=_CONFIG_DIR, config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    """Compose the configuration, run one simulation and write its outputs."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    global _task_started
    _task_started = True
    status = execute(cfg)
    if not status:
        return
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        # One bad job must not cost the sweep its other jobs: note it, exit at the end.
        _failed_jobs.append((HydraConfig.get().job.num, status))
        return
    sys.exit(status)


def main() -> None:
    """The console entry point (also ``python -m recourse_sim``)."""
    try:
        _hydra_main()
    except SystemExit as exit_:
        # hydra reports its own composition errors (unknown key or option, bad override syntax)
        # with status 1 before the task starts; they are user errors like any other.
        if exit_.code == 1 and not _task_started:
            _name_bad_override(sys.argv[1:])
            sys.exit(USAGE_ERROR)
        raise
    if _failed_jobs:
        numbers = ", ".join(str(number) for number, _ in _failed_jobs)
        print(
            f"recourse_sim: {len(_failed_jobs)} job(s) of the sweep failed (job {numbers}; "
            "their messages are above); the other jobs finished",
            file=sys.stderr,
        )
        sys.exit(max(status for _, status in _failed_jobs))


def _name_bad_override(arguments: list[str]) -> None:
    """Name the override whose syntax hydra could not parse (its message quotes only a token)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for argument in arguments:
        if argument.startswith("-"):
            continue
        try:
            parser.parse_override(argument)
        except HydraException as error:
            key = argument.split("=", 1)[0].lstrip("+~")
            print(
                f"recourse_sim: configuration error: <{argument}> is not valid override syntax "
                f"for the key {key} ({str(error).splitlines()[0]}); quote values with brackets "
                "or commas, e.g. '{key}=[a,b]'".replace("{key}", key),
                file=sys.stderr,
            )
            return


if __name__ == "__main__":
    main()
