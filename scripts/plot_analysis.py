#!/usr/bin/env python3
"""Draws the pictures of `attnkit analyze` from its JSON files (matplotlib, no display needed).

Usage: plot_analysis.py DIR   -- reads DIR/{sinks,entropy,massive_activations,retrieval_heads}.json
(whichever exist) and writes DIR/<name>.png next to them.
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def grid(heads, key, n_layer, n_head, pick=lambda v: v):
    g = np.full((n_layer, n_head), np.nan)
    for h in heads:
        g[h["layer"], h["head"]] = pick(h[key])
    return g


def heatmaps(path, panels, n_layer, n_head, title, globals_=()):
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 1, 6), squeeze=False)
    for ax, (name, g, vmin, vmax, cmap) in zip(axes[0], panels):
        im = ax.imshow(g, aspect="auto", vmin=vmin, vmax=vmax, cmap=cmap, origin="upper")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("head")
        ax.set_xticks(range(n_head))
        ax.set_yticks(range(n_layer))
        ax.set_yticklabels([f"{l}{' (global)' if l in globals_ else ''}" for l in range(n_layer)], fontsize=7)
        ax.set_ylabel("layer")
        for l in range(n_layer):
            for h in range(n_head):
                if not np.isnan(g[l, h]):
                    ax.text(h, l, f"{g[l, h]:.2f}", ha="center", va="center", fontsize=6, color="black")
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def save(fig, path):
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def plot_sinks(d, j):
    L, H, gl = j["n_layer"], j["n_head"], set(j["global_layers"])
    heatmaps(os.path.join(d, "sinks_alpha.png"),
             [("alpha_0 (first token)", grid(j["heads"], "alpha", L, H, lambda a: a[0]), 0, 1, "viridis"),
              ("mid-sequence sinks", grid(j["heads"], "mid_sinks", L, H), 0, None, "magma")],
             L, H, f"Attention sinks, {j['n_tokens']} tokens x {j['samples']}: Sink_1^{j['eps']} = {j['sink_rate']:.3f}", gl)
    layers = range(L)
    by = lambda k: [np.mean([h[k] for h in j["heads"] if h["layer"] == l]) for l in layers]
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    ax[0].plot(layers, by("key_norm_first"), "o-", label="|k| of the first token")
    ax[0].plot(layers, by("key_norm_other"), "s--", label="mean |k| of the others")
    ax[0].set_xlabel("layer"); ax[0].set_ylabel("post-RoPE key norm"); ax[0].legend()
    ax[1].plot(layers, by("cos_first"), "o-", label="cos(q, k_first)")
    ax[1].plot(layers, by("cos_other"), "s--", label="mean cos(q, k_other)")
    ax[1].set_xlabel("layer"); ax[1].set_ylabel("query-key cosine (mean over heads)"); ax[1].legend()
    fig.suptitle("The first token as a key bias: direction, not norm")
    fig.tight_layout()
    save(fig, os.path.join(d, "sinks_keys.png"))


def plot_entropy(d, j):
    L, H, gl = j["n_layer"], j["n_head"], set(j["global_layers"])
    heatmaps(os.path.join(d, "entropy_heads.png"),
             [("entropy / ln(visible)", grid(j["heads"], "entropy", L, H), 0, 1, "viridis"),
              (f"spectral gap ({j['spectral_window']}-token window)", grid(j["heads"], "spectral_gap", L, H), 0, 1, "cividis"),
              ("log-normal sigma", grid(j["heads"], "log_sigma", L, H), 0, None, "plasma")],
             L, H, f"Attention concentration, {j['n_tokens']} tokens", gl)


def plot_massive(d, j):
    ls = j["layers"]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.semilogy([l["layer"] for l in ls], [l["max_abs"] for l in ls], "o-", label="largest |x|")
    ax.semilogy([l["layer"] for l in ls], [l["median_abs"] for l in ls], "s--", label="median |x|")
    ax.axhline(j["abs_threshold"], color="grey", lw=0.8, ls=":", label=f"|x| = {j['abs_threshold']:g}")
    for l in ls:
        ax.annotate(f"d{l['max_dim']}@{l['max_position']}", (l["layer"], l["max_abs"]), fontsize=6,
                    textcoords="offset points", xytext=(0, 5), ha="center")
    a = j["ablation"]
    ax.set_title(f"Residual stream magnitudes ({j['n_tokens']} tokens); ablation at layer {a['layer']}: "
                 f"ppl {a['ppl_original']:.2f} / mean {a['ppl_mean']:.2f} / zero {a['ppl_zero']:.2f}", fontsize=9)
    ax.set_xlabel("layer (output)"); ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, os.path.join(d, "massive_layers.png"))


def plot_retrieval(d, j):
    L, H, gl = j["n_layer"], j["n_head"], set(j["global_layers"])
    g = lambda v: np.array(v).reshape(L, H)
    heatmaps(os.path.join(d, "retrieval_heads.png"),
             [("retrieval score", g(j["score"]), 0, 1, "viridis"),
              ("induction score", g(j["induction"]), 0, 1, "viridis"),
              ("echo score", g(j["echo"]), 0, 1, "viridis")],
             L, H, f"Retrieval heads ({len(j['prompts'])} NIAH prompts; {j['retrieval_heads']} above {j['threshold']})", gl)


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "out/analysis"
    for name, fn in [("sinks", plot_sinks), ("entropy", plot_entropy), ("massive_activations", plot_massive),
                     ("retrieval_heads", plot_retrieval)]:
        p = os.path.join(d, name + ".json")
        if os.path.exists(p):
            with open(p) as f:
                fn(d, json.load(f))
            print(f"plot_analysis: drew {name}")


if __name__ == "__main__":
    main()
