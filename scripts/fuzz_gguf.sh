#!/usr/bin/env bash
# Bounded libFuzzer run (ASan + UBSan) of the GGUF reader, dequantizer and tokenizer, seeded with
# a reduced copy of the real model's header. Called by run_tests.sh; needs clang (setup.sh
# installs it) and the build's gguf_tool.
#   ATTNKIT_FUZZ_SECONDS  time budget (default 60)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${ATTNKIT_BUILD_DIR:-$root/build}"
fuzz_build="$root/build-fuzz"
cmake -S "$root/tools/fuzz" -B "$fuzz_build" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$fuzz_build" -j"$(nproc)" >/dev/null
corpus="$fuzz_build/corpus"
mkdir -p "$corpus"
"$build/tests/gguf_tool" reduce "$("$build/tests/gguf_tool" model-path)" "$corpus/real.gguf" >/dev/null
"$fuzz_build/gguf_fuzz" -max_total_time="${ATTNKIT_FUZZ_SECONDS:-60}" -rss_limit_mb=2048 -print_final_stats=1 \
  "$corpus" 2>&1 | tail -n 12
