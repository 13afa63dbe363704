#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs attnkit's main job: the benchmark suite of the
# exact attention engine against this machine's own yardsticks (sgemm GFLOP/s, streaming GB/s).
# Results are printed and written to out/bench.json.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/scripts/setup.sh"
build="${ATTNKIT_BUILD_DIR:-$root/build}"
mkdir -p "$root/out"
"$build/tools/cli/attnkit" list
"$build/tools/cli/attnkit" bench --json "$root/out/bench.json" "$@"
