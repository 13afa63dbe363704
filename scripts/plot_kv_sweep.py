#!/usr/bin/env python3
"""Renders a kv-sweep JSON (attnkit eval kv-sweep) as a PNG next to it: accuracy against KV budget,
one line per policy and per length, exact attention as a dashed ceiling per length, and each
point annotated with its KV bytes in use (MiB) and decode tokens/s. Needs matplotlib.

  python3 scripts/plot_kv_sweep.py out/kv_sweep/kv_sweep_passkey.json [--out FILE.png]
"""
import argparse
import json
import os


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("json")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(args.json) as f:
        d = json.load(f)
    fig, ax = plt.subplots(figsize=(9, 5.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["-", ":", "-."]
    for li, length in enumerate(d["lengths"]):
        for e in d["exact"]:
            if e["length"] == length:
                ax.axhline(e["accuracy"], color="black", linestyle="--", linewidth=1,
                           label=f"exact, {length} tokens ({e['kv_bytes_in_use'] / 2**20:.1f} MiB, "
                                 f"{e['decode_tokens_per_s']:.0f} tok/s)")
        for pi, policy in enumerate(d["policies"]):
            pts = sorted((p for p in d["points"] if p["policy"] == policy and p["length"] == length),
                         key=lambda p: p["budget"])
            if not pts:
                continue
            xs = [p["budget"] for p in pts]
            ys = [p["accuracy"] for p in pts]
            ax.plot(xs, ys, styles[li % len(styles)], marker="o", color=colors[pi % len(colors)],
                    label=f"{policy}, {length} tokens")
            for p in pts:
                ax.annotate(f"{p['kv_bytes_in_use'] / 2**20:.1f} MiB\n{p['decode_tokens_per_s']:.0f} tok/s",
                            (p["budget"], p["accuracy"]), fontsize=6, textcoords="offset points", xytext=(3, 3))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("KV budget per compressed layer (tokens)")
    ax.set_ylabel(d["metric"])
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(f"kv-sweep: {d['task']} ({d['trials']} prompts per point, KV {d['kv_dtype']})")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    out = args.out or os.path.splitext(args.json)[0] + ".png"
    tmp = out + ".tmp.png"
    fig.tight_layout()
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
