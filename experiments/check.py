"""Check that the committed experiment results are what the current code produces.

Usage:
    python experiments/check.py                        # every experiment, short versions
    python experiments/check.py --only credit centres/paper_seed0
    python experiments/check.py --full --only overlapping_logistic_generic
    python experiments/check.py --list                 # what would run, with the commands
    python experiments/check.py --out /tmp/check       # where the runs and the summary go

Every directory under ``experiments/results/`` is one experiment: a single run (its own
``.hydra/``), a group of runs (``centres/paper_seed0`` ...) or a hydra sweep (numbered job
directories with ``multirun.yaml``). For each run the command is rebuilt from its
``.hydra/overrides.yaml``: ``python -m recourse_sim <overrides> report=none progress=false
hydra.run.dir=<out>/runs/<run>`` (presentation keys only are replaced; the rounding key
``processes`` is kept as committed), shortened as below, run in a subprocess one at a time, and
the rows it writes are compared with the SAME rows of the committed ``metrics.csv`` and
``recourse.csv`` (and ``initial_population.csv`` where committed; plain or gzipped): numbers with
``numpy.isclose(rtol=1e-6, atol=1e-9)`` (cross-machine float rounding), empty cells equal only to
empty cells, text exactly, and no row may be missing or extra.

Shortening rules (measured on 2026-11-30, see experiments/README.md, "Checking the committed
results"):

* **Fewer rounds, all repetitions.** A run without newcomers is cut to its first evaluation
  round, ``simulation.n_rounds=<simulation.evaluate_every>`` read from its
  ``.hydra/config.yaml`` (rounds 0 and 10 of the metrics, rounds 1-10 of ``recourse.csv``), or
  to fewer rounds where ``RULES`` says so. The rows of rounds <= k of a k-round run are bit for
  bit those of the full run: every random stream is keyed by name, round and repetition, and
  nothing before round k looks at the horizon (measured on 2026-11-30: every short run of this
  check matched its committed rows with largest difference 0, and a full credit run matched
  byte for byte). Where k lies below ``evaluate_every``, the metric rows that the short run adds
  at its last round (the full run does not evaluate there) are left out, and so are their
  permutation tests (``simulation.n_permutations=0``; round 0, the only evaluated round
  compared then, has none).
* **Repetitions are never cut.** With fewer repetitions the systems are stacked differently and
  float rounding changes (up to 1e-11 in metrics; in a recourse-over-time job one convergence
  share moved by 1/99): not faithful.
* **Runs with newcomers run whole** (``dynamics.arrivals.per_round`` > 0): how many newcomers
  are drawn, and so their draws (and labels), depend on ``n_rounds`` (the domain MMD of a
  recourse-over-time job differed from round 10 on when cut to 10 rounds).
* The per-experiment table ``RULES`` below caps the rounds of the expensive runs and samples
  the runs of large sweeps and groups (the first and the last); each entry says why.
* **Script results**: ``counterfactual_training_claim/claim.csv`` is checked by re-running
  ``experiments/counterfactual_training_claim.py --seeds 0 --data circles`` (every (data, seed)
  pair is computed on its own, from generators seeded by the seed, so its rows are those of the
  full run; its ``--quick`` mode changes the settings and writes nothing), and ``summary.md`` by
  rebuilding it from the committed ``claim.csv`` with the script's own ``summarise``. The tables
  that ``summarise.py``, ``over_time.py``, ``paper_comparison.py`` and
  ``centres_sensitivity.py`` print are computed from the committed CSVs, so they are checked
  through the runs they read. ``run_paper_grids.py``'s outputs are not committed (the
  ``paper_synthetic_overlapping*`` and ``centres`` runs come from the README's commands).

A short check sees rounds 0 to k only: a change that acts only later in a run (a rule for
small candidate pools, say) is caught by ``--full``, which re-runs every run and the script
whole (every job of every sweep) and also compares the final tables that are committed
(``agents.csv``); that takes hours on 2 cores.

Exit status: 0 when every checked experiment is OK, 1 when any DIFFERS or hits an ERROR, 2 for
a usage error (unknown name, unusable output directory). The summary goes to
``<out>/summary.csv`` and ``<out>/summary.md``; ``--out`` defaults to a new temporary
directory, never the repository.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
RTOL, ATOL = 1e-6, 1e-9
MARKER = ".recourse_sim_check"
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml where there is one: 10x faster

#: Columns that identify a row, per file; a file not listed is compared row by row.
KEYS = {
    "metrics.csv": ["repetition", "round", "model", "generator", "metric", "scope"],
    "recourse.csv": ["repetition", "round", "model", "generator"],
    "agents.csv": ["repetition", "model", "generator", "agent"],
    "initial_population.csv": ["individual"],
    "final_population.csv": ["repetition", "model", "generator", "individual"],
    "claim.csv": ["data", "seed", "generator", "model", "target"],
}
#: Files whose rows of rounds <= k do not depend on the horizon (compared in short runs too).
PREFIX_FILES = ("metrics.csv", "recourse.csv", "initial_population.csv")
#: Keys a check sets itself or that change nothing in the CSVs (presentation keys).
REPLACED = ("hydra", "report", "progress", "overwrite", "resume")
#: Keys left out of the configuration comparison (rounding and presentation keys).
NOT_RESULT_KEYS = ("processes", "torch_threads", "device", *REPLACED)


@dataclass(frozen=True)
class Rule:
    """How one experiment is shortened beyond the general rules."""

    rounds: int | None = None  # cap on the short run's rounds
    jobs: int | None = None  # check only this many of its runs (first and last, spread evenly)
    why: str = ""


#: The small table of per-experiment shortenings (the general rules are in the docstring).
RULES: dict[str, Rule] = {
    # Newcomers: whole jobs (about 25 s each), so 2 of the 15: the grid's corners (adaptation 0.1
    # with 8 newcomers, 0.9 with 12).
    "recourse_over_time_grid": Rule(jobs=2, why="newcomers: 2 whole jobs, the grid's corners"),
    # Rounds 0-10 of 2 of the 4 cells: the reference cell and delay 2 with compliance 0.5.
    "delayed_compliance_overlapping": Rule(jobs=2, why="2 of 4 cells: the reference, both"),
    # 2 rounds: round 0's metrics, round 1's searches on the pre-trained models and round 2's on
    # the models retrained once. Where pre-training or a round costs tens of seconds.
    "centres": Rule(jobs=2, rounds=2, why="10 runs: paper_seed0 and random_seed4"),
    "credit": Rule(rounds=2, why="per-sample retraining of 15 MLP systems"),
    "credit_gbdt": Rule(rounds=2, why="15 tree ensembles refitted every round"),
    "delayed_compliance_credit": Rule(jobs=2, rounds=2, why="4 credit MLP jobs: 0 and 3"),
    "counterfactual_training_circles": Rule(rounds=2, why="counterfactual (re)training"),
    "mitigation_overlapping": Rule(rounds=2, why="75 systems, REVISE's VAEs"),
    "paper_synthetic_overlapping": Rule(rounds=2, why="75 systems, REVISE's VAEs"),
    "paper_synthetic_overlapping_seed1": Rule(rounds=2, why="60 systems, REVISE's VAEs"),
    "paper_synthetic_overlapping_seed2": Rule(rounds=2, why="60 systems, REVISE's VAEs"),
    # 1 round (round 0's metrics, round 1's searches): the models and the counterfactual
    # retraining of _circles (checked over 2 rounds) on other data or with other dynamics;
    # a round costs them about 15 s.
    "counterfactual_training_delayed_circles": Rule(rounds=1, why="as _circles, 1 round"),
    "counterfactual_training_moons": Rule(rounds=1, why="as _circles, 1 round"),
}


# --- discovery -------------------------------------------------------------------------------


def tracked_files(directory: Path) -> set[Path] | None:
    """The files git tracks in ``directory`` (None outside a git checkout: every file counts)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "."], cwd=directory, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return {(directory / name).resolve() for name in listed.decode().split("\0") if name}


@dataclass
class Run:
    """One committed run directory."""

    name: str  # relative to the results directory: "credit", "centres/paper_seed0", "sweep/3"
    path: Path
    overrides: list[str]
    config: dict

    def committed(self) -> dict[str, Path]:
        """The committed CSVs by plain name (``metrics.csv`` for ``metrics.csv.gz`` too).

        Only files git tracks: a run directory in a working tree may also hold the ignored
        outputs of the run that made it (``final_population.csv``, ``decision_grid.csv`` ...).
        """
        tracked = tracked_files(self.path)
        found = {}
        for path in sorted(self.path.iterdir()):
            if tracked is not None and path.resolve() not in tracked:
                continue
            if path.is_file() and path.name.endswith((".csv", ".csv.gz")):
                found[path.name.removesuffix(".gz")] = path
        return found


@dataclass
class Experiment:
    """A directory under ``experiments/results/``: a run, a group of runs, a sweep, a script's."""

    name: str
    path: Path
    runs: list[Run] = field(default_factory=list)
    script: str | None = None  # the script that wrote it, for script results

    @property
    def kind(self) -> str:
        if self.script:
            return "script"
        if (self.path / "multirun.yaml").exists():
            return "sweep"
        return "run" if len(self.runs) == 1 and self.runs[0].path == self.path else "group"


#: Results written by a script rather than by a run: directory -> script.
SCRIPTS = {"counterfactual_training_claim": "counterfactual_training_claim.py"}


def _natural(path: Path) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in path.parts)


def _load_run(root: Path, path: Path) -> Run:
    overrides = yaml.load((path / ".hydra" / "overrides.yaml").read_text(), LOADER) or []
    config_file = path / ".hydra" / "config.yaml"
    config = yaml.load(config_file.read_text(), LOADER) if config_file.exists() else {}
    return Run(str(path.relative_to(root)), path, [str(o) for o in overrides], config or {})


def discover(root: Path = RESULTS) -> list[Experiment]:
    """Every experiment under ``root``, with its runs in natural order.

    In a git checkout only what git tracks counts (a directory holding only ignored files, such
    as a run someone made there, is no experiment).
    """
    tracked = tracked_files(root)
    owners = None if tracked is None else {t.relative_to(root.resolve()).parts[0] for t in tracked}
    experiments = []
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        if owners is not None and path.name not in owners:
            continue
        experiment = Experiment(path.name, path)
        found = [
            h.parent.parent
            for h in path.rglob(".hydra/overrides.yaml")
            if tracked is None or h.resolve() in tracked
        ]
        experiment.runs = [_load_run(root, d) for d in sorted(set(found), key=_natural)]
        if path.name in SCRIPTS:
            experiment.script = SCRIPTS[path.name]
        experiments.append(experiment)
    return experiments


def select(experiments: list[Experiment], only: list[str] | None) -> list[Experiment]:
    """The experiments (or single runs, ``group/run``) named by ``--only``; KeyError if unknown."""
    if not only:
        return experiments
    chosen = []
    for name in only:
        name = name.rstrip("/")
        top, _, rest = name.partition("/")
        matches = [e for e in experiments if e.name == top]
        if not matches:
            raise KeyError(name)
        experiment = matches[0]
        if rest:
            runs = [r for r in experiment.runs if r.name == name]
            if not runs:
                raise KeyError(name)
            experiment = Experiment(name, runs[0].path, runs, None)
        chosen.append(experiment)
    return chosen


# --- planning ---------------------------------------------------------------------------------


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _get(config: dict, dotted: str, default=None):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


@dataclass
class Plan:
    """What a check runs for one committed run, and which rows it compares."""

    run: Run
    rounds: int  # rounds of the check's run
    n_rounds: int  # rounds of the committed run
    note: str
    command: list[str] = field(default_factory=list)
    shortened: tuple[str, ...] = ()  # the keys the check sets to shorten the run

    @property
    def whole(self) -> bool:
        return self.rounds >= self.n_rounds

    def is_evaluated(self, round_number: int) -> bool:
        """Whether the committed (full) run evaluates the metrics at this round."""
        every = int(_get(self.run.config, "simulation.evaluate_every", 0) or 0)
        if round_number in (0, self.n_rounds):
            return True
        return bool(every) and round_number % every == 0


def plan_run(run: Run, rule: Rule, full: bool, run_dir: Path) -> Plan:
    """The command for one run, shortened by the general rules and the experiment's rule."""
    n_rounds = int(_get(run.config, "simulation.n_rounds", 50))
    every = int(_get(run.config, "simulation.evaluate_every", 0) or 0)
    arrivals = float(_get(run.config, "dynamics.arrivals.per_round", 0) or 0)
    rounds, note = n_rounds, "whole run"
    if full:
        note = "whole run (--full)"
    elif arrivals:
        note = "whole run: newcomers' draws depend on n_rounds"
    else:
        rounds = min(n_rounds, every) if every else n_rounds
        if rule.rounds:
            rounds = min(rounds, rule.rounds)
        if rounds < n_rounds:
            note = f"rounds 0-{rounds} of {n_rounds}"
    plan = Plan(run, rounds, n_rounds, note)
    shorten = [] if plan.whole else [f"simulation.n_rounds={rounds}"]
    permutations = int(_get(run.config, "simulation.n_permutations", 0) or 0)
    if shorten and permutations and not any(plan.is_evaluated(r) for r in range(1, rounds + 1)):
        # Only round 0 (which has no permutation test) is compared: the short run's extra
        # evaluation at its last round needs no p-values.
        shorten.append("simulation.n_permutations=0")
    replaced = {_key(o) for o in shorten}
    plan.shortened = tuple(sorted(replaced))
    kept = [
        o
        for o in run.overrides
        if _key(o).split(".")[0] not in REPLACED and _key(o) not in replaced
    ]
    plan.command = [
        sys.executable,
        "-m",
        "recourse_sim",
        *kept,
        *shorten,
        "report=none",
        "progress=false",
        f"hydra.run.dir={run_dir}",
    ]
    return plan


def sample(runs: list[Run], n: int | None) -> list[Run]:
    """``n`` runs spread evenly over the list, the first and the last included."""
    if not n or n >= len(runs):
        return runs
    if n == 1:
        return runs[:1]
    picks = sorted({round(i * (len(runs) - 1) / (n - 1)) for i in range(n)})
    return [runs[i] for i in picks]


# --- comparison -------------------------------------------------------------------------------


@dataclass
class Comparison:
    """The outcome of comparing one file."""

    file: str
    ok: bool
    n_rows: int = 0
    n_differing: int = 0
    missing: int = 0  # committed rows the new run lacks
    extra: int = 0  # rows the new run has and the committed file lacks
    max_diff: float = 0.0  # largest absolute difference of a number in a compared row
    lines: list[str] = field(default_factory=list)  # the first differences, readable

    def summary(self) -> str:
        if self.ok:
            return f"{self.file}: {self.n_rows} rows equal (largest difference {self.max_diff:.3g})"
        parts = [f"{self.n_differing} of {self.n_rows} rows differ"]
        if self.missing:
            parts.append(f"{self.missing} committed rows missing")
        if self.extra:
            parts.append(f"{self.extra} extra rows")
        return f"{self.file}: " + ", ".join(parts) + f"; largest difference {self.max_diff:.3g}"


def _as_numbers(column: pd.Series) -> pd.Series | None:
    """The column as floats if every non-empty cell is a number, else None."""
    if column.dtype.kind in "fiub":
        return column.astype(float)
    numbers = pd.to_numeric(column, errors="coerce")
    if (numbers.isna() & column.notna()).any():
        return None
    return numbers.astype(float)


def _describe(row: pd.Series, keys: list[str]) -> str:
    order = ["metric", "model", "generator", "scope", "repetition", "round"]
    ordered = [k for k in order if k in keys] + [k for k in keys if k not in order]
    return " ".join(f"{k}={row[k]}" for k in ordered)


def compare_frames(
    committed: pd.DataFrame,
    now: pd.DataFrame,
    keys: list[str] | None,
    *,
    name: str = "",
    rtol: float = RTOL,
    atol: float = ATOL,
    limit: int = 5,
) -> Comparison:
    """Compare two tables row by row, matched on ``keys`` (by position if None).

    Numbers are equal when ``numpy.isclose`` holds; an empty cell equals only an empty cell;
    other cells must be equal as text. Every committed row must be in ``now`` and vice versa.
    """
    if list(committed.columns) != list(now.columns):
        return Comparison(
            name,
            False,
            lines=[f"columns differ: committed {list(committed.columns)}, now {list(now.columns)}"],
        )
    committed, now = committed.reset_index(drop=True), now.reset_index(drop=True)
    if keys is None or not set(keys) <= set(committed.columns):
        keys = ["_position"]
        committed, now = (
            committed.assign(_position=committed.index),
            now.assign(_position=now.index),
        )
    elif committed.duplicated(keys).any() or now.duplicated(keys).any():
        committed = committed.assign(_n=committed.groupby(keys).cumcount())
        now = now.assign(_n=now.groupby(keys).cumcount())
        keys = [*keys, "_n"]
    key_text = {k: (committed[k].astype(str), now[k].astype(str)) for k in keys}
    left = committed.assign(**{f"_k_{k}": v[0] for k, v in key_text.items()})
    right = now.assign(**{f"_k_{k}": v[1] for k, v in key_text.items()})
    on = [f"_k_{k}" for k in keys]
    merged = left.merge(
        right.drop(columns=keys), on=on, how="outer", suffixes=("", "_now"), indicator=True
    )
    result = Comparison(name, True)
    only_committed = merged["_merge"] == "left_only"
    only_now = merged["_merge"] == "right_only"
    result.missing, result.extra = int(only_committed.sum()), int(only_now.sum())
    both = merged[merged["_merge"] == "both"].reset_index(drop=True)
    result.n_rows = len(both)
    values = [c for c in committed.columns if c not in keys]
    bad = np.zeros(len(both), dtype=bool)
    cells: list[tuple[int, str, float]] = []  # (row, column, difference) of each differing cell
    for column in values:
        a, b = _as_numbers(both[column]), _as_numbers(both[f"{column}_now"])
        if a is not None and b is not None:
            empty_a, empty_b = a.isna().to_numpy(), b.isna().to_numpy()
            close = np.isclose(a.to_numpy(), b.to_numpy(), rtol=rtol, atol=atol)
            differs = (empty_a != empty_b) | (~close & ~empty_a & ~empty_b)
            diff = np.abs(a.to_numpy() - b.to_numpy())
            if np.isfinite(diff).any():
                result.max_diff = max(result.max_diff, float(np.nanmax(diff)))
        else:
            old, new = both[column].fillna("").astype(str), both[f"{column}_now"].fillna("")
            differs = (old != new.astype(str)).to_numpy()
            diff = np.full(len(both), np.nan)
        bad |= differs
        cells += [(int(i), column, float(diff[i])) for i in np.flatnonzero(differs)]
    result.n_differing = int(bad.sum())
    result.ok = not (result.n_differing or result.missing or result.extra)

    def line(i: int, column: str, diff: float) -> str:
        old, new = both[column].iloc[i], both[f"{column}_now"].iloc[i]
        shown = ["" if pd.isna(v) else getattr(v, "item", lambda v=v: v)() for v in (old, new)]
        gap = "" if np.isnan(diff) else f" (difference {diff:.3g})"
        described = _describe(both.iloc[i], keys)
        return f"{described}: {column} committed {shown[0]!r}, now {shown[1]!r}{gap}"

    # The first differences by round where there is one (the earliest divergence first), then
    # the largest one.
    sort_by = ["round", *[k for k in keys if k != "round"]] if "round" in keys else keys
    rank = {index: position for position, index in enumerate(both.sort_values(sort_by).index)}
    cells.sort(key=lambda cell: (rank[cell[0]], values.index(cell[1])))
    result.lines = [line(*cell) for cell in cells[:limit]]
    numeric = [cell for cell in cells if not np.isnan(cell[2])]
    if len(cells) > limit and numeric:
        result.lines.append("largest: " + line(*max(numeric, key=lambda cell: cell[2])))
    for flag, label in ((only_committed, "missing now"), (only_now, "extra now")):
        for _, row in merged[flag].head(max(0, limit - len(result.lines))).iterrows():
            described = _describe(row[[f"_k_{k}" for k in keys]].set_axis(keys), keys)
            result.lines.append(f"{described}: {label}")
    return result


def _rows(frame: pd.DataFrame, plan: Plan) -> pd.DataFrame:
    """The rows of rounds <= k of a short run (all rows of a whole one)."""
    if plan.whole or "round" not in frame.columns:
        return frame
    return frame[frame["round"] <= plan.rounds]


def compare_run(plan: Plan, run_dir: Path, full: bool) -> list[Comparison]:
    """Compare every committed CSV of the run that this check can reproduce."""
    results = []
    for name, path in plan.run.committed().items():
        if not full and not plan.whole and name not in PREFIX_FILES:
            continue
        if not full and plan.whole and name not in (*PREFIX_FILES, "agents.csv"):
            continue
        new = run_dir / name
        if not new.exists():
            results.append(Comparison(name, False, lines=[f"the run wrote no {name}"]))
            continue
        old_frame = _rows(pd.read_csv(path), plan)
        new_frame = _rows(pd.read_csv(new), plan)
        keys = KEYS.get(name)
        if not plan.whole and "round" in new_frame.columns and not plan.is_evaluated(plan.rounds):
            # The short run evaluates at its last round, the full run does not: drop those rows.
            known = old_frame[old_frame["round"] == plan.rounds][keys].astype(str)
            last = new_frame["round"] == plan.rounds
            tagged = (
                new_frame[keys]
                .astype(str)
                .merge(known.drop_duplicates(), how="left", indicator=True)
            )
            new_frame = new_frame[~last.to_numpy() | (tagged["_merge"] == "both").to_numpy()]
        results.append(compare_frames(old_frame, new_frame, keys, name=name))
    if not results:
        results.append(Comparison("(none)", False, lines=["no committed CSV to compare"]))
    return results


def config_notes(run: Run, run_dir: Path, plan: Plan) -> list[str]:
    """Result keys whose committed value differs from the value the current code composes."""
    path = run_dir / ".hydra" / "config.yaml"
    if not path.exists() or not run.config:
        return []
    now = yaml.load(path.read_text(), LOADER) or {}

    def flat(node, prefix=""):
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                out.update(flat(v, f"{prefix}{k}."))
            return out
        return {prefix[:-1]: node}

    old, new = flat(run.config), flat(now)
    notes, added = [], []
    for key in sorted(set(old) | set(new)):
        if key.split(".")[0] in NOT_RESULT_KEYS or key in plan.shortened:
            continue
        if key not in new:
            notes.append(f"config: {key} (committed {old[key]!r}) is no longer composed")
        elif key not in old:
            added.append(key)
        elif old[key] != new[key]:
            notes.append(f"config: {key} committed {old[key]!r}, now {new[key]!r}")
    if added:
        notes.append(f"config: {len(added)} keys new since the run (e.g. {', '.join(added[:3])})")
    return notes


# --- the script's results ---------------------------------------------------------------------

#: The short check of counterfactual_training_claim: one data set, one seed.
CLAIM_SHORT = {"data": "circles", "seed": 0}


def claim_command(out: Path, full: bool) -> list[str]:
    command = [sys.executable, str(HERE / SCRIPTS["counterfactual_training_claim"])]
    if not full:
        command += ["--seeds", str(CLAIM_SHORT["seed"]), "--data", CLAIM_SHORT["data"]]
    return [*command, "--out", str(out)]


def compare_claim(experiment: Experiment, out: Path, full: bool) -> list[Comparison]:
    """claim.csv against the re-run rows; summary.md against the committed claim.csv."""
    committed = pd.read_csv(experiment.path / "claim.csv")
    if not full:
        committed = committed[
            (committed["data"] == CLAIM_SHORT["data"]) & (committed["seed"] == CLAIM_SHORT["seed"])
        ]
    results = [
        compare_frames(
            committed, pd.read_csv(out / "claim.csv"), KEYS["claim.csv"], name="claim.csv"
        )
    ]
    sys.path.insert(0, str(HERE))
    try:
        from counterfactual_training_claim import summarise  # the script's own table
    finally:
        sys.path.remove(str(HERE))
    summary = summarise(pd.read_csv(experiment.path / "claim.csv"))
    text = (experiment.path / "summary.md").read_text()
    same = summary.strip() in text
    if full:  # the whole script wrote a summary of its own
        same = same and (out / "summary.md").read_text() == text
    results.append(
        Comparison(
            "summary.md",
            same,
            n_rows=len(summary.splitlines()),
            lines=[]
            if same
            else ["summary.md is not the script's summary of the committed claim.csv"],
        )
    )
    return results


# --- running ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One checked run (or script) of an experiment."""

    experiment: str
    run: str
    status: str  # OK | DIFFERS | ERROR
    seconds: float
    note: str
    command: str
    comparisons: list[Comparison] = field(default_factory=list)
    details: list[str] = field(default_factory=list)


def shown(command: list[str]) -> str:
    """A command as a person types it: ``python``, paths relative to the repository."""
    words = ["python", *command[1:]]
    return " ".join(w.replace(f"{REPO}/", "") for w in words)


def _execute(command: list[str], log: Path, timeout: float | None) -> tuple[int, str]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as file:
        try:
            code = subprocess.run(
                command, cwd=REPO, stdout=file, stderr=subprocess.STDOUT, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            return -1, f"stopped after {timeout:.0f} s"
    tail = log.read_text().strip().splitlines()[-5:]
    return code, "\n".join(tail)


def check_run(experiment: str, plan: Plan, run_dir: Path, log: Path, args) -> Outcome:
    if run_dir.exists():
        shutil.rmtree(run_dir)  # an earlier check's run in this --out
    start = time.perf_counter()
    code, tail = _execute(plan.command, log, args.timeout)
    seconds = time.perf_counter() - start
    outcome = Outcome(experiment, plan.run.name, "OK", seconds, plan.note, shown(plan.command))
    if code != 0:
        outcome.status = "ERROR"
        outcome.details = [f"exit status {code}; log {log}", *tail.splitlines()]
        return outcome
    try:
        outcome.comparisons = compare_run(plan, run_dir, args.full)
    except Exception as error:  # a malformed file: report it, go on with the next run
        outcome.status, outcome.details = "ERROR", [f"comparison failed: {error!r}"]
        return outcome
    if not all(c.ok for c in outcome.comparisons):
        outcome.status = "DIFFERS"
    outcome.details = config_notes(plan.run, run_dir, plan)
    return outcome


def check_script(experiment: Experiment, out: Path, args) -> Outcome:
    target = out / "runs" / experiment.name
    if target.exists():
        shutil.rmtree(target)
    command = claim_command(target, args.full)
    note = (
        "whole script (--full)"
        if args.full
        else (f"one (data, seed): {CLAIM_SHORT['data']}, seed {CLAIM_SHORT['seed']}")
    )
    start = time.perf_counter()
    code, tail = _execute(command, out / "logs" / f"{experiment.name}.log", args.timeout)
    outcome = Outcome(
        experiment.name,
        experiment.name,
        "OK",
        time.perf_counter() - start,
        note,
        shown(command),
    )
    if code != 0:
        outcome.status, outcome.details = "ERROR", [f"exit status {code}", *tail.splitlines()]
        return outcome
    try:
        outcome.comparisons = compare_claim(experiment, target, args.full)
    except Exception as error:
        outcome.status, outcome.details = "ERROR", [f"comparison failed: {error!r}"]
        return outcome
    if not all(c.ok for c in outcome.comparisons):
        outcome.status = "DIFFERS"
    return outcome


def plans(experiment: Experiment, out: Path, full: bool) -> list[Plan]:
    rule = RULES.get(experiment.name.split("/")[0], Rule())
    runs = experiment.runs if full else sample(experiment.runs, rule.jobs)
    return [plan_run(r, rule, full, out / "runs" / r.name) for r in runs]


def experiment_status(outcomes: list[Outcome]) -> str:
    statuses = {o.status for o in outcomes}
    for status in ("DIFFERS", "ERROR"):
        if status in statuses:
            return status
    return "OK"


def write_summary(out: Path, outcomes: list[Outcome]) -> None:
    rows = []
    for o in outcomes:
        rows.append(
            {
                "experiment": o.experiment,
                "run": o.run,
                "status": o.status,
                "seconds": round(o.seconds, 1),
                "check": o.note,
                "rows_compared": sum(c.n_rows for c in o.comparisons),
                "rows_differing": sum(c.n_differing + c.missing + c.extra for c in o.comparisons),
                "largest_difference": max((c.max_diff for c in o.comparisons), default=0.0),
                "first_differences": " | ".join(
                    line for c in o.comparisons if not c.ok for line in c.lines
                ),
                "notes": " | ".join(o.details),
                "command": o.command,
            }
        )
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "summary.csv", index=False)
    lines = ["# Check of the committed experiment results", ""]
    lines += ["| experiment | status | runs | seconds |", "|---|---|---|---|"]
    for name, group in frame.groupby("experiment", sort=False):
        status = experiment_status([o for o in outcomes if o.experiment == name])
        lines.append(f"| {name} | {status} | {len(group)} | {group.seconds.sum():.0f} |")
    lines.append("")
    for o in outcomes:
        lines.append(f"## {o.run}: {o.status} ({o.seconds:.0f} s, {o.note})")
        lines += ["", f"`{o.command}`", ""]
        for c in o.comparisons:
            lines.append(f"- {c.summary()}")
            lines += [f"  - {line}" for line in (c.lines if not c.ok else [])]
        lines += [f"- {d}" for d in o.details]
        lines.append("")
    (out / "summary.md").write_text("\n".join(lines))


def _prepare_out(path: str | None) -> Path:
    if path is None:
        out = Path(tempfile.mkdtemp(prefix="recourse_sim_check_"))
    else:
        out = Path(path).resolve()
        if out == REPO or RESULTS in (out, *out.parents):
            raise ValueError(f"--out {path}: not inside the repository's results")
        if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
            raise ValueError(f"--out {path}: exists, is not empty and is no earlier check's output")
        out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by experiments/check.py\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="experiments or group/run names")
    parser.add_argument("--list", action="store_true", help="print what would run, and stop")
    parser.add_argument("--full", action="store_true", help="re-run every experiment whole")
    parser.add_argument("--out", help="directory for the runs and summary (default: a new tmp dir)")
    parser.add_argument("--results", default=str(RESULTS), help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run (1800)")
    args = parser.parse_args(argv)
    root = Path(args.results)
    if not root.is_dir():
        print(f"check.py: no results directory {root}", file=sys.stderr)
        return 2
    try:
        experiments = select(discover(root), args.only)
    except KeyError as error:
        known = ", ".join(e.name for e in discover(root))
        print(
            f"check.py: --only {error.args[0]}: no such experiment or run; known: {known}",
            file=sys.stderr,
        )
        return 2
    if args.list:
        out = Path(args.out or "<out>")
        for experiment in experiments:
            rule = RULES.get(experiment.name.split("/")[0])
            why = f" [{rule.why}]" if rule and rule.why and not args.full else ""
            print(f"{experiment.name} ({experiment.kind}, {len(experiment.runs)} runs){why}")
            if experiment.script:
                print(f"  {shown(claim_command(out / 'runs' / experiment.name, args.full))}")
                continue
            for plan in plans(experiment, out, args.full):
                print(f"  {plan.run.name}: {plan.note}")
                print(f"    {shown(plan.command)}")
        return 0
    try:
        out = _prepare_out(args.out)
    except ValueError as error:
        print(f"check.py: {error}", file=sys.stderr)
        return 2
    print(f"check.py: runs and summary in {out}", flush=True)
    outcomes: list[Outcome] = []
    todo = [(e, p) for e in experiments for p in ([None] if e.script else plans(e, out, args.full))]
    for experiment in experiments:
        if not experiment.script and not experiment.runs:  # nothing this check knows how to run
            details = ["no run directory (.hydra/overrides.yaml) and no script known for it"]
            outcomes.append(
                Outcome(experiment.name, experiment.name, "ERROR", 0.0, "", "", [], details)
            )
            print(f"{experiment.name}: ERROR: {details[0]}")
    started = time.perf_counter()
    for i, (experiment, plan) in enumerate(todo, 1):
        label = experiment.name if plan is None else plan.run.name
        note = "script" if plan is None else plan.note
        print(f"[{i}/{len(todo)}] {label} ({note}) ...", end=" ", flush=True)
        if plan is None:
            outcome = check_script(experiment, out, args)
        else:
            run_dir = out / "runs" / plan.run.name
            log = out / "logs" / f"{plan.run.name.replace('/', '__')}.log"
            outcome = check_run(experiment.name.split("/")[0], plan, run_dir, log, args)
        outcomes.append(outcome)
        print(f"{outcome.status} in {outcome.seconds:.0f} s", flush=True)
        for c in outcome.comparisons:
            if not c.ok:
                print(f"    {c.summary()}")
                for line in c.lines:
                    print(f"      {line}")
        for line in outcome.details:
            if " keys new since the run" not in line:  # defaults of later features: summary only
                print(f"    {line}")
    write_summary(out, outcomes)
    print(f"\nTotal {time.perf_counter() - started:.0f} s. Per experiment:")
    names = list(dict.fromkeys(o.experiment for o in outcomes))
    for name in names:
        mine = [o for o in outcomes if o.experiment == name]
        seconds = sum(o.seconds for o in mine)
        print(f"  {experiment_status(mine):8} {name} ({len(mine)} runs, {seconds:.0f} s)")
    print(f"Summary: {out / 'summary.md'}, {out / 'summary.csv'}")
    return 0 if all(o.status == "OK" for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
