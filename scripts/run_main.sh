#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs attnkit's main job: Gemma 3 270M (the GGUF
# installed by setup) running on attnkit (a short generation, passkey retrieval at 1K and 4K
# tokens, perplexity on 1K tokens of the King James Bible), then the benchmark suite of the exact
# attention engine against this machine's own yardsticks (sgemm GFLOP/s, streaming GB/s).
# Results are printed and written to out/*.json.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/scripts/setup.sh"
build="${ATTNKIT_BUILD_DIR:-$root/build}"
mkdir -p "$root/out"
cli="$build/tools/cli/attnkit"
"$cli" list
"$cli" run --prompt "The three primary colors are" -n 24
"$cli" eval passkey --length 1024,4096 --trials 1 --json "$root/out/passkey.json"
"$cli" eval perplexity --length 1024 --json "$root/out/perplexity.json"
"$cli" bench --json "$root/out/bench.json" "$@"
