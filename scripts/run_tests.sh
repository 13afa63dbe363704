#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the whole test suite: every C++ test program
# through CTest, then the Python tests (JAX cross-check, reference packages, bindings) with pytest,
# then a bounded libFuzzer run of the GGUF reader.
#   ATTNKIT_LONG_TESTS=1   also run the long sweeps
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/scripts/setup.sh"
build="${ATTNKIT_BUILD_DIR:-$root/build}"
export ATTNKIT_BUILD_DIR="$build"
ctest --test-dir "$build" --output-on-failure -j"$(nproc)" --timeout 1500
"$root/.venv/bin/python" -m pytest -q "$root/tests/python"
"$root/scripts/fuzz_gguf.sh"
