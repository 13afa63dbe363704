#!/usr/bin/env python3
"""Cost of calling attnkit from Python, against the C++ time of the same work.

Two measurements (the targets of issue 5):
  1. tiny call: Python call time minus the C++ time of the very same call (the kernel run
     `repeat` times inside C++ through attnkit._time_cpp). Target: overhead < 5 us.
  2. seq 4096 (batch 1, heads 8/2, head_dim 128, causal, f32, as `attnkit bench` defaults):
     the Python call against three C++ timings of the same case: the same call looped in C++,
     the registry's exact mechanism timed in C++ (attnkit.bench_mechanism, what `attnkit bench`
     runs), and, with --cli, `attnkit bench --json` itself. Target: within 2%.
Rounds are interleaved (Python, C++, Python, ...) so that load from other processes on a shared
machine hits both sides alike; medians and minimums are reported.

usage: python bench/python_overhead.py [--threads 1] [--seq 4096] [--cli build/tools/cli/attnkit]
                                        [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import timeit

import numpy as np

import attnkit


def tiny(args):
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, 1, 1, 64), dtype=np.float32)
    k = rng.standard_normal((1, 16, 1, 64), dtype=np.float32)
    v = rng.standard_normal((1, 16, 1, 64), dtype=np.float32)
    out = np.empty_like(q)
    n = args.tiny_calls
    py, py_out, cpp = [], [], []
    g = {"attnkit": attnkit, "q": q, "k": k, "v": v, "out": out, "t": args.threads}
    for _ in range(args.rounds):
        py.append(timeit.timeit("attnkit.attention(q, k, v, threads=t)", globals=g, number=n) / n)
        py_out.append(timeit.timeit("attnkit.attention(q, k, v, threads=t, out=out)", globals=g, number=n) / n)
        cpp.append(attnkit._time_cpp(attnkit.attention, q, k, v, threads=args.threads, repeat=n))
    res = {
        "case": "tiny q[1,1,1,64] k/v[1,16,1,64] f32",
        "python_us_median": statistics.median(py) * 1e6,
        "python_us_min": min(py) * 1e6,
        "python_out_us_median": statistics.median(py_out) * 1e6,
        "cpp_us_median": statistics.median(cpp) * 1e6,
        "cpp_us_min": min(cpp) * 1e6,
    }
    res["overhead_us_median"] = res["python_us_median"] - res["cpp_us_median"]
    res["overhead_us_min"] = res["python_us_min"] - res["cpp_us_min"]
    res["overhead_out_us_median"] = res["python_out_us_median"] - res["cpp_us_median"]
    return res


def cli_time(args, shape):
    """Median and min seconds from `attnkit bench --json` for the same case (None without --cli)."""
    if not args.cli:
        return None
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "bench.json")
        cmd = [args.cli, "bench", "--mechanism", "exact", "--seq-q", str(shape["seq"]), "--seq-kv", str(shape["seq"]),
               "--heads-q", str(shape["hq"]), "--heads-kv", str(shape["hkv"]), "--head-dim", str(shape["d"]),
               "--batch", "1", "--causal", "--dtype", "f32", "--threads", str(args.threads), "--json", path]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        with open(path) as f:
            rec = json.load(f)[0]
    return {"command": " ".join(cmd[:-2]) + " --json FILE", "seconds": rec["seconds"], "min_seconds": rec["min_seconds"]}


def long(args):
    shape = {"seq": args.seq, "hq": 8, "hkv": 2, "d": 128}
    rng = np.random.default_rng(1)
    q = rng.standard_normal((1, args.seq, 8, 128), dtype=np.float32)
    k = rng.standard_normal((1, args.seq, 2, 128), dtype=np.float32)
    v = rng.standard_normal((1, args.seq, 2, 128), dtype=np.float32)
    out = np.empty_like(q)
    kw = dict(causal=True, threads=args.threads)
    attnkit.attention(q, k, v, out=out, **kw)  # warm up (pages of out, thread pool)
    py, py_out, cpp, mech = [], [], [], []
    for _ in range(args.long_rounds):
        t0 = time.perf_counter()
        attnkit.attention(q, k, v, **kw)  # as users call it: the output is allocated each call
        py.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        attnkit.attention(q, k, v, out=out, **kw)
        py_out.append(time.perf_counter() - t0)
        cpp.append(attnkit._time_cpp(attnkit.attention, q, k, v, out=out, repeat=1, **kw))
        r = attnkit.bench_mechanism("exact", batch=1, seq_q=args.seq, seq_kv=args.seq, heads_q=8, heads_kv=2,
                                    head_dim=128, causal=True, dtype="f32", threads=args.threads, warmup=0, iters=1)
        mech.append(r["seconds"][0])
    med = statistics.median
    res = {
        "case": f"batch 1, seq {args.seq}, heads 8/2, head_dim 128, causal, f32, threads {args.threads}",
        "python_s_median": med(py),
        "python_out_s_median": med(py_out),
        "cpp_same_call_s_median": med(cpp),
        "cpp_mechanism_s_median": med(mech),
        "python_s_min": min(py),
        "python_out_s_min": min(py_out),
        "cpp_same_call_s_min": min(cpp),
        "cpp_mechanism_s_min": min(mech),
    }
    res["python_vs_cpp_same_call_pct"] = 100 * (res["python_s_median"] / res["cpp_same_call_s_median"] - 1)
    res["python_out_vs_cpp_same_call_pct"] = 100 * (res["python_out_s_median"] / res["cpp_same_call_s_median"] - 1)
    res["python_vs_cpp_mechanism_pct"] = 100 * (res["python_s_median"] / res["cpp_mechanism_s_median"] - 1)
    cli = cli_time(args, shape)
    if cli:
        res["cli"] = cli
        res["python_vs_cli_pct"] = 100 * (res["python_s_median"] / cli["seconds"] - 1)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="kernel threads (default 1: shared machines)")
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=7, help="tiny-call rounds")
    ap.add_argument("--tiny-calls", type=int, default=20000, help="calls per tiny round")
    ap.add_argument("--long-rounds", type=int, default=5)
    ap.add_argument("--cli", help="path of the attnkit CLI binary, to also time `attnkit bench --json`")
    ap.add_argument("--skip-long", action="store_true")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    results = {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "simd_target": attnkit.simd_target(),
        "tiny": tiny(args),
    }
    if not args.skip_long:
        results["long"] = long(args)
    results["load_avg_after"] = os.getloadavg()
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
