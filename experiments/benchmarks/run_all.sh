#!/usr/bin/env bash
# Every benchmark in turn; each writes results/<name>.csv and results/<name>.md (table, notes,
# machine). About 30 minutes on a 2-core machine; `--quick` runs the smoke-test versions.
# The dice-ml comparison needs the bench extra, the sweep benchmark the launchers:
#   pip install -e '.[bench,launchers]'
#
#   bash experiments/benchmarks/run_all.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/../.."
for name in synthetic_grid training_loop training_fast_path search_throughput mmd_scaling population_scaling credit_run dynamics counterfactual_training sweep_launchers; do
  echo "== $name"
  python "experiments/benchmarks/$name.py" "$@"
done
