"""Checks the core targets of exact attention (docs/benchmarks.md) on the records written by
scripts/bench_targets.sh; exits 1 if any target is missed."""
import json
import pathlib
import sys

out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "out")


def rec(name):
    return json.loads((out / f"targets_{name}.json").read_text())[0]


rows = []


def check(label, value, bound, ok):
    rows.append((label, value, bound, ok))


for name in ("prefill_causal", "prefill_noncausal"):
    r = rec(name)
    ratio = r["gflops"] / r["sgemm_gflops"]
    check(f"{name} f32 seq 8192 d128: GFLOP/s / sgemm", f"{r['gflops']:.1f}/{r['sgemm_gflops']:.1f} = {ratio:.3f}",
          ">= 0.6", ratio >= 0.6)
for name in ("decode_65536_f32", "decode_131072_f32"):
    r = rec(name)
    ratio = r["gbps"] / r["stream_gbps"]
    slowest = r.get("stream_gbps_slowest")
    spread = f" (stream's slowest pass {slowest:.2f})" if slowest else ""
    check(f"{name}: GB/s / stream", f"{r['gbps']:.2f}/{r['stream_gbps']:.2f} = {ratio:.3f}{spread}", ">= 0.7", ratio >= 0.7)
    if r.get("paired_runs"):
        p = r["gbps_vs_stream_paired"]
        check(f"{name}: per run / stream pass before it", f"median of {r['paired_runs']} = {p:.3f} "
              f"(stream passes' median {r['stream_gbps_paired']:.2f})", ">= 0.7", p >= 0.7)
f32, bf = rec("decode_131072_f32"), rec("decode_131072_bf16")
speedup = f32["seconds"] / bf["seconds"]
check("bf16 vs f32 decode kv 131072: speedup", f"{speedup:.2f}x", ">= 1.6", speedup >= 1.6)
if bf.get("vs_dtype") == "f32":
    # The same comparison with one f32 run and one bf16 run per round (attnkit bench --vs-dtype f32),
    # so both dtypes are timed at the same memory speed.
    v = bf["speedup_vs_dtype"]
    check("bf16 vs f32 decode kv 131072: per round, alternating", f"median of {bf['vs_dtype_rounds']} = {v:.2f}x "
          f"(f32 median {bf['vs_dtype_seconds'] * 1e3:.1f} ms)", ">= 1.6", v >= 1.6)
check("bf16 vs f32 decode kv 131072: bytes ratio", f"{bf['gbps'] * bf['seconds'] / (f32['gbps'] * f32['seconds']):.3f}",
      "0.5", True)
i8 = rec("decode_131072_int8")
# int8 K/V against bf16 K/V, one run of each per round (attnkit bench --dtype int8 --vs-dtype bf16).
v = i8["speedup_vs_dtype"]
check("int8 vs bf16 decode kv 131072: per round, alternating", f"median of {i8['vs_dtype_rounds']} = {v:.2f}x "
      f"(bf16 median {i8['vs_dtype_seconds'] * 1e3:.1f} ms)", ">= 1.5", v >= 1.5)
check("int8 vs bf16 decode kv 131072: bytes ratio (int8 rows + scales)",
      f"{i8['gbps'] * i8['seconds'] / (bf['gbps'] * bf['seconds']):.3f}", "0.52 at d 128", True)
m = rec("memory_131072")
mib = m["peak_extra_bytes"] / 2**20
check("causal seq 131072 extra memory (MiB)", f"{mib:.2f}", "< 64", mib < 64)

width = max(len(r[0]) for r in rows)
for label, value, bound, ok in rows:
    print(f"{'PASS' if ok else 'FAIL'}  {label:<{width}}  {value}  (target {bound})")
sys.exit(0 if all(r[3] for r in rows) else 1)
