#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the whole test suite: every C++ test program
# through CTest, the core, model and CLI test programs again built with
# -DATTNKIT_SANITIZE=address,undefined, then the Python tests (JAX cross-check, reference packages, bindings) with pytest,
# then a bounded libFuzzer run of the GGUF reader.
#   ATTNKIT_LONG_TESTS=1   also run the long sweeps
#   ATTNKIT_SKIP_SANITIZE=1  skip the sanitized run
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/scripts/setup.sh"
build="${ATTNKIT_BUILD_DIR:-$root/build}"
export ATTNKIT_BUILD_DIR="$build"
ctest --test-dir "$build" --output-on-failure -j"$(nproc)" --timeout 1500
# The core, model and CLI test programs once more under AddressSanitizer and UndefinedBehaviorSanitizer,
# in their own build folder (no Python extension, no benchmarks). These cover the kernels' shared
# pieces, the GGUF reader and model, the evaluations and every CLI command, and their sanitized run
# takes about 2.5 minutes on 2 cores (core and model 120 s, CLI 17 s) after a build of the library
# and the three programs; the linear and sparse programs stay unsanitized to keep CI's sanitizer
# build within budget. ATTNKIT_SKIP_SANITIZE=1 skips it.
if [[ "${ATTNKIT_SKIP_SANITIZE:-0}" != 1 ]]; then
  sbuild="${ATTNKIT_SANITIZE_BUILD_DIR:-$root/build-sanitize}"
  cmake -S "$root" -B "$sbuild" -DCMAKE_BUILD_TYPE=Release -DATTNKIT_SANITIZE=address,undefined \
    -DATTNKIT_BUILD_PYTHON=OFF -DATTNKIT_BUILD_BENCH=OFF >/dev/null
  cmake --build "$sbuild" -j"$(nproc)" --target attnkit_cli attnkit_core_tests attnkit_model_tests attnkit_cli_tests
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir "$sbuild" -L 'core|model|cli' --output-on-failure -j"$(nproc)" --timeout 3000
fi
"$root/.venv/bin/python" -m pytest -q "$root/tests/python"
"$root/scripts/fuzz_gguf.sh"
