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

from recourse_sim.keys import job_key

# The configuration tree ships inside the package (hydra's search path pkg://recourse_sim.configs),
# so every kind of install finds it; `--config-dir DIR` puts a user's own options in front of it.
CONFIG_PACKAGE = "pkg://recourse_sim.configs"
#: The same tree as a directory (for hydra's compose API: initialize_config_dir).
_CONFIG_DIR = str(Path(__file__).resolve().parent / "configs")
#: Exit status of a user error.
USAGE_ERROR = 2
#: Exit status after Ctrl-C (128 + SIGINT, as shells report it).
INTERRUPTED = 130

# `${pid:}` in the default run directories: two runs started in the same second never share one.
OmegaConf.register_new_resolver("pid", os.getpid, replace=True)
# `${job_key:${hydra.overrides.task}}`: sweep and job directories named by their result keys.
OmegaConf.register_new_resolver("job_key", lambda overrides: job_key(overrides), replace=True)


def execute(cfg: DictConfig, output_dir: str | Path | None = None) -> int:
    """Run one simulation from a composed configuration; return the CLI's exit status.

    User errors are reported on stderr in one paragraph (no traceback) and give status 2. In a
    sweep, a failure is also written into the job's log file, where collecting the sweep finds it.
    """
    from recourse_sim.errors import ConfigError, OutputError
    from recourse_sim.run import run  # imported here so that --help and --cfg stay fast
    from recourse_sim.utils.workers import WorkerError

    try:
        run(cfg, output_dir)
    except ConfigError as error:
        return _failed(USAGE_ERROR, f"configuration error: {error}")
    except OutputError as error:
        return _failed(
            USAGE_ERROR,
            f"cannot write results: {error} (check hydra.run.dir and free space; the results "
            "of finished rounds are kept and resume=true continues from them)",
        )
    except WorkerError as error:
        return _failed(1, str(error))
    except KeyboardInterrupt:
        return _failed(
            INTERRUPTED,
            "interrupted; the results of finished rounds are kept: continue with the same "
            "overrides and resume=true (or, if no round had finished, start again with "
            "overwrite=true)",
        )
    except Exception as error:
        _log_failure(1, f"{type(error).__name__}: {error}")
        raise
    return 0


def _failed(status: int, message: str) -> int:
    print(f"recourse_sim: {message}", file=sys.stderr)
    _log_failure(status, message)
    return status


def _log_failure(status: int, message: str) -> None:
    """In a sweep's job, write the failure into the job's log file, where collecting finds it.

    Only there: the terminal has the message already, and a single run refused for another
    run's directory must leave that directory as it was.
    """
    import logging

    from recourse_sim.run import in_sweep_job

    if not in_sweep_job():
        return
    record = logging.LogRecord(
        "recourse_sim", logging.ERROR, __file__, 0,
        "recourse_sim: job failed (exit status %d): %s", (status, " ".join(message.split())), None,
    )  # fmt: skip
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


_task_started = False
#: (job number, exit status) of the jobs of this sweep that failed.
_failed_jobs: list[tuple[int, int]] = []


@hydra.main(version_base="1.3", config_path=CONFIG_PACKAGE, config_name="config")
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
    except ValueError as error:
        # hydra's check of its own flags (-m with --cfg, --info, ...) raises before any task.
        if _task_started or not str(error).startswith("Only one of"):
            raise
        print(f"recourse_sim: command-line error: {error}", file=sys.stderr)
        sys.exit(USAGE_ERROR)
    except SystemExit as exit_:
        # hydra reports its own composition errors (unknown key or option, bad override syntax)
        # with status 1 before the task starts; they are user errors like any other.
        if exit_.code == 1 and not _task_started:
            _name_bad_override(sys.argv[1:])
            sys.exit(USAGE_ERROR)
        raise
    statuses = [status for _, status in _failed_jobs]
    if _failed_jobs:
        numbers = ", ".join(str(number) for number, _ in _failed_jobs)
        print(
            f"recourse_sim: {len(_failed_jobs)} job(s) of the sweep failed (job {numbers}; "
            "their messages are above); the other jobs finished",
            file=sys.stderr,
        )
    # Only a sweep loads its callbacks (a single run or --help does not pay for the import).
    callback = sys.modules.get("recourse_sim.sweep.callback")
    collection = getattr(callback, "LAST", None)
    if collection is not None:
        callback.LAST = None
        # Jobs that ran in other processes (joblib, submitit, Ray) report through their files.
        for job in collection.jobs:
            if job.planned and job.state == "failed":
                statuses.append(job.exit_status or 1)
            elif job.planned and job.state != "done":
                statuses.append(1)
    if statuses:
        sys.exit(max(statuses))


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
