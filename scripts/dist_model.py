#!/usr/bin/env python3
"""Alpha-beta model of context parallelism at scale, fed by measured `attnkit dist-bench` records.

A message of m bytes costs alpha + m / beta. A rank is one machine of --cores cores, each computing
at the per-core rate a dist-bench record measured while its ranks were computing:
  rate = flops / (ranks x threads_per_rank x seconds x (1 - wait_share))
(the record's useful FLOPs over the time the ranks were not blocked in MPI). Give one record per
mechanism (--record out/dist_ring.json out/dist_lasp2.json out/dist_star.json); a mechanism without
a record uses the ring record's rate, and the table says so. For LASP-2 the record counts the
single-process chunked form, while each rank also ran a state-only pass; the rate is scaled up by
that extra work so that it is the engine's own rate.
Schemes (formulas in docs/distributed.md):
  ring   causal exact attention, zig-zag blocks: R steps; each step computes 1/R^2 of the causal
         FLOPs while the next K/V block (2 (N/R) Hkv d bytes) travels; a step takes the longer of
         the two (the transfer overlaps the compute).
  lasp2  additive linear attention (chunk C, feature dim F = d): one state-only pass (K^T V per
         chunk) and one full chunked pass over N/R tokens, one ring all-gather of the H x F x d
         state and H decay sums per rank; efficiency is against the full pass alone (the
         single-process work divided by R), at most full / (full + state-only) = 0.75 at C = 64,
         F = d = 128.
  star   phase 1 only (the query phase is small): each rank its block causally plus the anchor
         block in full, after a tree broadcast of the anchor's K/V.

  dist_model.py --record out/dist_ring.json [out/dist_lasp2.json ...] [--cores 32 --alpha-us 5
                --beta-gbs 25 --tokens 1048576]
"""
import argparse
import json
import math


def chunked_flops(C, F, dvp):
    """One full chunk of the chunked form (attnkit linear_chunked_flops): Q K^T, (A) V, Q S, K^T V."""
    return 2 * C * C * F + 2 * C * C * dvp + 4 * C * F * dvp


def state_only_flops(C, F, dvp):
    """One chunk of linear_attention_state: the K^T V update alone."""
    return 2 * C * F * dvp


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--record", nargs="+", default=[],
                    help="JSON files from `attnkit dist-bench --json FILE` (ring, lasp2, star)")
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

    rates = {}  # mechanism family -> per-core GFLOP/s while computing
    for path in a.record:
        with open(path) as f:
            rec = json.load(f)[0]
        fam = rec["mechanism"].split(":")[0]
        busy = rec["seconds"] * (1.0 - rec.get("wait_share", 0.0))
        rate = rec["flops"] / (rec["ranks"] * rec["threads_per_rank"] * busy) / 1e9
        if fam == "lasp2":
            C, F = rec["chunk"], rec["feature_dim"]
            dvp = rec["state_floats_per_head"] // F
            rate *= 1.0 + state_only_flops(C, F, dvp) / chunked_flops(C, F, dvp)
        rates[fam] = rate
        print(f"per-core rate {rate:.1f} GFLOP/s ({fam}) from {path}: seq {rec['seq_q']}, {rec['ranks']} ranks x "
              f"{rec['threads_per_rank']} threads, {rec['seconds'] * 1e3:.1f} ms, wait share {rec.get('wait_share', 0):.3f}")
    if a.core_gflops is not None:
        rates = {k: a.core_gflops for k in ("ring", "lasp2", "star")}
    if "ring" not in rates:
        ap.error("give a ring record (--record) or --core-gflops")
    for fam in ("lasp2", "star"):
        if fam not in rates:
            rates[fam] = rates["ring"]
            print(f"{fam}: no record, the ring rate is used")
    G = rates["ring"] * 1e9 * a.cores
    G_lin = rates["lasp2"] * 1e9 * a.cores
    G_star = rates["star"] * 1e9 * a.cores
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
        # LASP-2 (linear_chunked_flops, F = Dv = d): a state-only pass and a full pass over the chunk
        n_local = N / R
        chunks = n_local / a.chunk
        lasp_full = chunks * chunked_flops(a.chunk, d, d) * H / G_lin
        lasp_c = lasp_full + chunks * state_only_flops(a.chunk, d, d) * H / G_lin
        lasp_msg = (H * d * d + H) * 4
        lasp_m = (R - 1) * (alpha + lasp_msg / beta)
        # Star phase 1: block causal + anchor (same length) in full
        star_c = (n_local * (n_local + 1) / 2 + n_local * n_local) * H * 4 * d / G_star
        anchor = 2 * n_local * Hkv * d * es
        star_m = math.ceil(math.log2(R)) * (alpha + anchor / beta)
        print(f"| {R} | {step_c * 1e3:.1f} ms | {msg / 1e6:.1f} MB | {step_m * 1e3:.2f} ms | {total:.1f} s | "
              f"{eff:.3f} | {lasp_c * 1e3:.1f} ms | {lasp_m * 1e3:.2f} ms | {lasp_m / (lasp_c + lasp_m):.3f} | "
              f"{lasp_full / (lasp_c + lasp_m):.3f} | "
              f"{star_c:.1f} s | {star_m * 1e3:.1f} ms |")


if __name__ == "__main__":
    main()
