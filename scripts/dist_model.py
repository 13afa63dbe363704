#!/usr/bin/env python3
"""Alpha-beta model of context parallelism at scale, fed by a measured `attnkit dist-bench` record.

A message of m bytes costs alpha + m / beta. A rank is one machine of --cores cores, each running
at the per-core rate measured by dist-bench (the record's gflops / (ranks x threads_per_rank)).
Schemes (formulas in docs/distributed.md):
  ring   causal exact attention, zig-zag blocks: R steps; each step computes 1/R^2 of the causal
         FLOPs while the next K/V block (2 (N/R) Hkv d bytes) travels; a step takes the longer of
         the two (the transfer overlaps the compute).
  lasp2  additive linear attention (chunk C, feature dim F = d): two local passes over N/R tokens,
         one ring all-gather of the H x F x d state and H decay sums per rank; efficiency is against
         one pass over N/R tokens (the single-process work divided by R), so at most 0.5.
  star   phase 1 only (the query phase is small): each rank its block causally plus the anchor
         block in full, after a tree broadcast of the anchor's K/V.

  dist_model.py --record out/dist_ring.json [--cores 32 --alpha-us 5 --beta-gbs 25 --tokens 1048576]
"""
import argparse
import json
import math


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--record", help="JSON from `attnkit dist-bench --mechanism ring --json FILE`")
    ap.add_argument("--core-gflops", type=float, help="per-core GFLOP/s (instead of --record)")
    ap.add_argument("--cores", type=int, default=32, help="cores per rank (machine)")
    ap.add_argument("--alpha-us", type=float, default=5.0, help="per-message latency, microseconds")
    ap.add_argument("--beta-gbs", type=float, default=25.0, help="link bandwidth, GB/s (25 = 200 Gb/s)")
    ap.add_argument("--tokens", type=int, default=1 << 20)
    ap.add_argument("--heads-q", type=int, default=8)
    ap.add_argument("--heads-kv", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--elem-bytes", type=int, default=4, help="bytes per K/V element sent (f32 4, bf16 2)")
    ap.add_argument("--chunk", type=int, default=64, help="LASP-2 chunk size")
    ap.add_argument("--ranks", default="8,16,32,64")
    a = ap.parse_args()

    if a.core_gflops is None:
        if not a.record:
            ap.error("give --record or --core-gflops")
        with open(a.record) as f:
            rec = json.load(f)[0]
        a.core_gflops = rec["gflops"] / (rec["ranks"] * rec["threads_per_rank"])
        print(f"per-core rate {a.core_gflops:.1f} GFLOP/s from {a.record} "
              f"({rec['mechanism']}, seq {rec['seq_q']}, {rec['ranks']} ranks x {rec['threads_per_rank']} threads)")
    G = a.core_gflops * 1e9 * a.cores
    alpha, beta = a.alpha_us * 1e-6, a.beta_gbs * 1e9
    N, H, Hkv, d, es = a.tokens, a.heads_q, a.heads_kv, a.head_dim, a.elem_bytes
    print(f"rank = {a.cores} cores ({G / 1e12:.2f} TFLOP/s); alpha {a.alpha_us} us, beta {a.beta_gbs} GB/s; "
          f"N = {N}, heads {H}/{Hkv}, d {d}, K/V {es} bytes/element\n")

    # attention_flops (causal): visible pairs x heads x (2d + 2d).
    causal_flops = N * (N + 1) / 2 * H * 4 * d
    print("| ranks | ring step compute | ring step message | ring step transfer | ring total | ring efficiency "
          "| LASP-2 compute | LASP-2 all-gather | LASP-2 comm share | LASP-2 efficiency | Star phase 1 | Star anchor bcast |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for R in (int(x) for x in a.ranks.split(",")):
        # Ring
        step_c = causal_flops / R**2 / G
        msg = 2 * (N / R) * Hkv * d * es
        step_m = alpha + msg / beta
        total = (R - 1) * max(step_c, step_m) + step_c
        eff = (causal_flops / R / G) / total
        # LASP-2 (linear_chunked_flops, F = Dv = d, two passes over the local chunk)
        n_local = N / R
        per_chunk = 2 * a.chunk**2 * d + 2 * a.chunk**2 * d + 4 * a.chunk * d * d
        lasp_c = 2 * (n_local / a.chunk) * per_chunk * H / G
        lasp_msg = (H * d * d + H) * 4
        lasp_m = (R - 1) * (alpha + lasp_msg / beta)
        # Star phase 1: block causal + anchor (same length) in full
        star_c = (n_local * (n_local + 1) / 2 + n_local * n_local) * H * 4 * d / G
        anchor = 2 * n_local * Hkv * d * es
        star_m = math.ceil(math.log2(R)) * (alpha + anchor / beta)
        print(f"| {R} | {step_c * 1e3:.1f} ms | {msg / 1e6:.1f} MB | {step_m * 1e3:.2f} ms | {total:.1f} s | "
              f"{eff:.3f} | {lasp_c * 1e3:.1f} ms | {lasp_m * 1e3:.2f} ms | {lasp_m / (lasp_c + lasp_m):.3f} | "
              f"{(lasp_c / 2) / (lasp_c + lasp_m):.3f} | "
              f"{star_c:.1f} s | {star_m * 1e3:.1f} ms |")


if __name__ == "__main__":
    main()
