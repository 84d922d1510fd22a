#!/usr/bin/env bash
# The GPU rows that wait for a lent device (issues 11, 13), as one prepared run for the device tool:
#   bash benchmarks/gpu_pending.sh DATA_DIR   (DATA_DIR holds pneumoniamnist.npz and cifar10-jpeg.zip)
# Each row runs under its own time limit (a leading number of seconds, else ROW_SECONDS, default 240)
# and writes its section to
# $OUT/gpu-RESULTS.md (OUT defaults to ./benchmarks/out); merge it here with
#   python -m benchmarks.run_all --merge benchmarks/out/gpu-RESULTS.md
# A row that runs out of time or fails is reported and the rest still run.
set -uo pipefail
data="${1:?usage: gpu_pending.sh DATA_DIR}"
out="${OUT:-benchmarks/out}"
limit="${ROW_SECONDS:-240}"
mkdir -p "$out"
results="$out/gpu-RESULTS.md"
status=0
row() {
  local seconds="$limit"
  if [[ "$1" =~ ^[0-9]+$ ]]; then seconds="$1"; shift; fi
  echo "== $* (limit ${seconds} s)" >&2
  timeout "$seconds" python -m "$@" --device cuda --results "$results" >>"$out/gpu-rows.log" 2>&1 || {
    echo "   row failed or timed out (rc $?): $*" >&2
    status=1
  }
}
row benchmarks.experiments --packing 8 --data "$data/pneumoniamnist.npz"
row benchmarks.experiments --variant small --trials 12 --data "$data/pneumoniamnist.npz"
row benchmarks.techniques --seeds 0 1 2 --data "$data/pneumoniamnist.npz"
row benchmarks.techniques --cifar-lt --cifar "$data/cifar10-jpeg.zip"
# Issue 11's dataset-aware defaults study: the cases whose recipe changes (500-1:50, the CIFAR-LT subset, the
# held-out case) train 2 recipes × 3 seeds × 40 epochs; the rest resolve to one recipe and are not trained.
row 300 benchmarks.defaults_study --group pneumonia --seeds 0 1 2 --data "$data"
row 300 benchmarks.defaults_study --group cifar --seeds 0 1 2 --data "$data"
row 200 benchmarks.defaults_study --group held-out --seeds 0 1 2 --data "$data"
exit "$status"
