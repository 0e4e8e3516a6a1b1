"""Command-line entry point: ``python -m recourse_sim [hydra overrides]``."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

# An absolute path works for `python -m recourse_sim` from any directory and for the console script.
_CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")


@hydra.main(version_base="1.3", config_path=_CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    """Compose the configuration, run one simulation and write its outputs."""
    from recourse_sim.errors import ConfigError
    from recourse_sim.run import run  # imported here so that --help and --cfg stay fast

    try:
        run(cfg)
    except ConfigError as error:
        # Bad input is the user's to fix: a clear message, no traceback, exit status 2.
        print(f"recourse_sim: configuration error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
