#!/usr/bin/env bash
# Runs the benchmark cases behind the core targets of docs/benchmarks.md and checks them as
# ratios to the yardsticks measured in the same run. Writes out/targets_*.json.
#   usage: scripts/bench_targets.sh [threads]   (default 2, the CI machine's size)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${ATTNKIT_BUILD_DIR:-$root/build}"
cli="$build/tools/cli/attnkit"
t="${1:-2}"
mkdir -p "$root/out"
common=(--heads-q 8 --heads-kv 2 --head-dim 128 --threads "$t")
"$cli" bench "${common[@]}" --seq-q 8192 --seq-kv 8192 --causal --json "$root/out/targets_prefill_causal.json"
"$cli" bench "${common[@]}" --seq-q 8192 --seq-kv 8192 --no-causal --json "$root/out/targets_prefill_noncausal.json"
dec=(--heads-q 32 --heads-kv 8 --head-dim 128 --threads "$t" --seq-q 1 --causal)
"$cli" bench "${dec[@]}" --seq-kv 65536 --dtype f32 --json "$root/out/targets_decode_65536_f32.json"
"$cli" bench "${dec[@]}" --seq-kv 131072 --dtype f32 --json "$root/out/targets_decode_131072_f32.json"
"$cli" bench "${dec[@]}" --seq-kv 131072 --dtype bf16 --vs-dtype f32 --json "$root/out/targets_decode_131072_bf16.json"
"$cli" bench "${dec[@]}" --seq-kv 131072 --dtype int8 --vs-dtype bf16 --json "$root/out/targets_decode_131072_int8.json"
"$cli" bench --heads-q 1 --heads-kv 1 --head-dim 64 --threads "$t" --seq-q 131072 --seq-kv 131072 --causal \
  --json "$root/out/targets_memory_131072.json"
"$root/.venv/bin/python" "$root/scripts/check_targets.py" "$root/out"
