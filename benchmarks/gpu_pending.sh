#!/usr/bin/env bash
# The GPU rows that wait for a lent device (issues 11, 13), as one prepared run for the device tool:
#   bash benchmarks/gpu_pending.sh DATA_DIR   (DATA_DIR holds pneumoniamnist.npz and cifar10-jpeg.zip)
# Each row runs under its own time limit (ROW_SECONDS, default 240) and writes its section to
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
  echo "== $*" >&2
  timeout "$limit" python -m "$@" --device cuda --results "$results" >>"$out/gpu-rows.log" 2>&1 || {
    echo "   row failed or timed out (rc $?): $*" >&2
    status=1
  }
}
row benchmarks.experiments --packing 8 --data "$data/pneumoniamnist.npz"
row benchmarks.experiments --variant small --trials 12 --data "$data/pneumoniamnist.npz"
row benchmarks.techniques --seeds 0 1 2 --data "$data/pneumoniamnist.npz"
row benchmarks.techniques --cifar-lt --cifar "$data/cifar10-jpeg.zip"
exit "$status"
