#!/usr/bin/env python3
"""Cost of calling attnkit from Python, against the C++ time of the same work.

Two measurements (the Python targets of docs/benchmarks.md):
  1. tiny call: the Python call's time minus the C++ time of one run of the same case, timed by
     the benchmark harness (attnkit.bench_mechanism, which calls run_case as `attnkit bench`
     does). Target: overhead < 5 us.
  2. seq 4096 (batch 1, heads 8/2, head_dim 128, causal, f32, as `attnkit bench` defaults):
     the Python call against the registry's exact mechanism timed in C++ by the same harness,
     and, with --cli, `attnkit bench --quick --json` itself (one timed run per round, against
     the same libattnkit). Target: within 2%.
Rounds are interleaved (Python, C++, Python, ...) so that load from other processes on a shared
machine hits both sides alike; medians and minimums are reported (wall time).

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


def _stats(prefix, py, cpp, unit=1e6):
    med = statistics.median
    return {
        f"{prefix}python_us_median": med(py) * unit,
        f"{prefix}python_us_min": min(py) * unit,
        f"{prefix}cpp_us_median": med(cpp) * unit,
        f"{prefix}cpp_us_min": min(cpp) * unit,
        f"{prefix}overhead_us_median": (med(py) - med(cpp)) * unit,
        f"{prefix}overhead_us_min": (min(py) - min(cpp)) * unit,
    }


def _cpp_seconds(args, seq_q, seq_kv, heads_q, heads_kv, head_dim, causal, iters):
    """Per-run seconds of the registry's exact mechanism on this case, timed in C++."""
    r = attnkit.bench_mechanism("exact", batch=1, seq_q=seq_q, seq_kv=seq_kv, heads_q=heads_q, heads_kv=heads_kv,
                                head_dim=head_dim, causal=causal, dtype="f32", threads=args.threads, warmup=1,
                                iters=iters)
    return r["seconds"]


def tiny(args):
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, 1, 1, 64), dtype=np.float32)
    k = rng.standard_normal((1, 16, 1, 64), dtype=np.float32)
    v = rng.standard_normal((1, 16, 1, 64), dtype=np.float32)
    out = np.empty_like(q)
    n = args.tiny_calls
    g = {"attnkit": attnkit, "q": q, "k": k, "v": v, "out": out, "t": args.threads}
    call = "attnkit.attention(q, k, v, threads=t)"
    call_out = "attnkit.attention(q, k, v, threads=t, out=out)"
    wall_py, wall_out, wall_cpp = [], [], []
    for _ in range(args.rounds):
        wall_py.append(timeit.timeit(call, globals=g, number=n) / n)
        wall_out.append(timeit.timeit(call_out, globals=g, number=n) / n)
        wall_cpp.append(statistics.median(_cpp_seconds(args, 1, 16, 1, 1, 64, False, n)))
    res = {"case": f"tiny q[1,1,1,64] k/v[1,16,1,64] f32, threads {args.threads}, {n} calls x {args.rounds} rounds"}
    res.update(_stats("wall_", wall_py, wall_cpp))
    res["wall_python_out_us_median"] = statistics.median(wall_out) * 1e6
    res["wall_out_overhead_us_median"] = (statistics.median(wall_out) - statistics.median(wall_cpp)) * 1e6
    return res


def cli_time(args, shape):
    """Seconds of one timed run of `attnkit bench --quick --json` for the same case (None without
    --cli). The CLI runs against the installed package's libattnkit (LD_LIBRARY_PATH; the CLI's
    RUNPATH yields to it), so both sides time the same library build."""
    if not args.cli:
        return None
    lib_dir = os.path.dirname(attnkit._C.__file__)
    env = dict(os.environ, LD_LIBRARY_PATH=lib_dir + os.pathsep + os.environ.get("LD_LIBRARY_PATH", ""))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "bench.json")
        cmd = [args.cli, "bench", "--mechanism", "exact", "--seq-q", str(shape["seq"]), "--seq-kv", str(shape["seq"]),
               "--heads-q", str(shape["hq"]), "--heads-kv", str(shape["hkv"]), "--head-dim", str(shape["d"]),
               "--batch", "1", "--causal", "--dtype", "f32", "--threads", str(args.threads), "--quick", "--json", path]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
        with open(path) as f:
            rec = json.load(f)[0]
    return " ".join(cmd[:-2]) + " --json FILE", rec["seconds"]


def long(args):
    shape = {"seq": args.seq, "hq": 8, "hkv": 2, "d": 128}
    rng = np.random.default_rng(1)
    q = rng.standard_normal((1, args.seq, 8, 128), dtype=np.float32)
    k = rng.standard_normal((1, args.seq, 2, 128), dtype=np.float32)
    v = rng.standard_normal((1, args.seq, 2, 128), dtype=np.float32)
    out = np.empty_like(q)
    kw = dict(causal=True, threads=args.threads)
    attnkit.attention(q, k, v, out=out, **kw)  # warm up (pages of out, thread pool)
    py, py_out, mech, cli = [], [], [], []
    cli_cmd = None
    for _ in range(args.long_rounds):
        c = cli_time(args, shape)
        if c:
            cli_cmd = c[0]
            cli.append(c[1])
        t0 = time.perf_counter()
        attnkit.attention(q, k, v, **kw)  # as users call it: the output is allocated each call
        py.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        attnkit.attention(q, k, v, out=out, **kw)
        py_out.append(time.perf_counter() - t0)
        mech.append(_cpp_seconds(args, args.seq, args.seq, 8, 2, 128, True, 1)[0])
    med = statistics.median
    res = {
        "case": f"batch 1, seq {args.seq}, heads 8/2, head_dim 128, causal, f32, threads {args.threads}, "
                f"{args.long_rounds} interleaved rounds",
        "wall_python_s_median": med(py),
        "wall_python_out_s_median": med(py_out),
        "wall_cpp_mechanism_s_median": med(mech),
        "wall_python_s_min": min(py),
        "wall_python_out_s_min": min(py_out),
        "wall_cpp_mechanism_s_min": min(mech),
    }
    pct = lambda a, b: 100 * (a / b - 1)  # noqa: E731
    res["wall_python_vs_cpp_mechanism_pct_median"] = pct(med(py), med(mech))
    res["wall_python_vs_cpp_mechanism_pct_min"] = pct(min(py), min(mech))
    res["wall_python_out_vs_cpp_mechanism_pct_median"] = pct(med(py_out), med(mech))
    if cli:
        res["cli_command"] = cli_cmd
        res["wall_cli_s_median"] = med(cli)
        res["wall_cli_s_min"] = min(cli)
        res["wall_python_vs_cli_pct_median"] = pct(med(py), med(cli))
        res["wall_python_vs_cli_pct_min"] = pct(min(py), min(cli))
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="kernel threads (default 1: shared machines)")
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=7, help="tiny-call rounds")
    ap.add_argument("--tiny-calls", type=int, default=20000, help="calls per tiny round")
    ap.add_argument("--long-rounds", type=int, default=7)
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
