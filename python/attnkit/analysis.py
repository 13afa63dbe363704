"""Attention instruments on a loaded model (include/attnkit/analysis.h, docs/analysis.md).

Each function runs the C++ instrument that ``attnkit analyze ...`` runs and returns a dict whose
per-head fields are numpy arrays shaped ``[n_layer, n_head]`` (float64). The model's lock is held
for the whole call, so a model shared between threads is not run by another call in between.

    from attnkit import Model, analysis
    m = Model.load()
    ids = analysis.kjv_tokens(m, 512)              # BOS + KJV text, as the CLI reads it
    p = analysis.attention(m, ids, layers=[5])     # [1, n_head, 512, 512] softmax rows
    s = analysis.sinks(m, ids)                     # s["alpha"][l, h, k], s["sink_rate"]
    e = analysis.entropy(m, ids)                   # e["entropy"][l, h] in [0, 1]
    a = analysis.massive_activations(m, ids)       # a["found"]["value"], a["ppl_zero"]
    r = analysis.retrieval_heads(m, lengths=[1024], head_map="map.json")   # r["score"][l, h]

Errors raise ValueError with the C++ message naming the parameter and its value.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from . import _attnkit as _C

__all__ = ["kjv_tokens", "attention", "sinks", "entropy", "massive_activations", "retrieval_heads", "ranked"]


def _ids(tokens, name="tokens"):
    ids = [int(t) for t in tokens]
    if not ids:
        raise ValueError(f"{name} is empty")
    return ids


def kjv_tokens(model, n: int, offset: int = 0) -> list[int]:
    """BOS + the first n - 1 tokens of the King James Bible text from character ``offset``: the
    input ``attnkit analyze sinks|entropy|massive-activations --length n --offset offset`` reads."""
    return _C._analysis_kjv_tokens(model, int(n), int(offset))


def attention(model, tokens: Sequence[int], layers: Iterable[int] | None = None,
              rows: Iterable[int] | None = None) -> np.ndarray:
    """Softmax probabilities the instruments read, float32 ``[len(layers), n_head, len(rows), n]``
    (default: every layer and row). Row i covers keys 0..n-1, zero where masked (future keys, and
    keys outside the sliding window on local layers); every row sums to 1. Recomputed from the
    model's tapped post-RoPE queries and keys (sgemm logits, f64 softmax sums)."""
    return _C._analysis_attention(model, _ids(tokens), None if layers is None else [int(x) for x in layers],
                                  None if rows is None else [int(x) for x in rows])


def sinks(model, samples, *, first_k: int = 4, eps: float = 0.3, mid_threshold: float = 0.1,
          min_rows: int = 16) -> dict:
    """Attention sinks (Gu et al. 2025; ACT's mid-sequence sinks). ``samples``: one token list or a
    list of them (averaged). Returns ``alpha`` [n_layer, n_head, first_k] (mean attention token k
    receives), ``mid_sinks``, ``key_norm_first``, ``key_norm_other``, ``cos_first``, ``cos_other``
    [n_layer, n_head], ``sink_rate`` (Sink_1^eps in [0, 1]), ``mid_sink_heads``, ``mid`` (list of
    {layer, head, position, token, alpha}), ``n_samples``, ``n_tokens``."""
    samples = list(samples)
    if samples and not isinstance(samples[0], (list, tuple, np.ndarray)):
        samples = [samples]
    return _C._analysis_sinks(model, [_ids(s, "samples") for s in samples], int(first_k), float(eps),
                              float(mid_threshold), int(min_rows))


def entropy(model, tokens: Sequence[int], *, spectral_window: int = 64, spectral_start: int = -1,
            lognormal_row_stride: int = 4) -> dict:
    """Per-head ``entropy`` (mean H_i / ln(visible keys), in [0, 1]), ``entropy_nats``,
    ``spectral_gap`` of the last ``spectral_window`` rows, and the log-normal fit ``log_mu``,
    ``log_sigma``, ``log_skew``, ``log_kurtosis`` (Nahshan et al. 2024), each [n_layer, n_head]."""
    return _C._analysis_entropy(model, _ids(tokens), int(spectral_window), int(spectral_start),
                                int(lognormal_row_stride))


def massive_activations(model, tokens: Sequence[int], eval_tokens: Sequence[int] | None = None, *,
                        abs_threshold: float = 100.0, median_ratio: float = 1000.0) -> dict:
    """Residual-stream entries with |x| > abs_threshold and >= median_ratio x their row's median
    |x| (Sun et al. 2024): ``found`` {layer, position, dim, token, value, row_median} (arrays),
    ``max_abs``, ``median_abs``, ``massive_per_layer`` [n_layer]; with ``eval_tokens``, the
    ablation's ``ppl_original``, ``ppl_mean``, ``ppl_zero`` at ``ablation_layer``."""
    return _C._analysis_massive(model, _ids(tokens), None if eval_tokens is None else _ids(eval_tokens, "eval_tokens"),
                                float(abs_threshold), float(median_ratio))


def retrieval_heads(model, *, lengths: Sequence[int] = (1024, 2048, 4096), depths: Sequence[float] = (0.1, 0.5, 0.9),
                    seed: int = 1, max_new_tokens: int = 10, threshold: float = 0.1, min_recall: float = 0.5,
                    segment: int = 400, repeats: int = 4, head_map: str | None = None,
                    razor_map: str | None = None) -> dict:
    """Retrieval scores (Wu et al. 2024) on NIAH prompts at every (length, depth) and RazorAttention's
    induction and echo scores on a random segment repeated ``repeats`` times, as
    ``attnkit analyze retrieval-heads`` computes them with the same seed. Returns ``score``,
    ``induction``, ``echo`` [n_layer, n_head], ``prompts``, ``counted`` (answered prompts),
    ``answer_recall``, ``prompt_list``. ``head_map`` / ``razor_map``: write the head maps the kv
    policies ``duo:map=...`` and ``razor:map=...`` read."""
    return _C._analysis_retrieval_heads(model, [int(x) for x in lengths], [float(x) for x in depths], int(seed),
                                        int(max_new_tokens), float(threshold), float(min_recall), int(segment),
                                        int(repeats), head_map, razor_map)


def ranked(scores: np.ndarray) -> list[tuple[int, int, float]]:
    """(layer, head, score) of every head, highest score first; ties keep (layer, head) order, as the
    CLI's "ranked" lists do."""
    s = np.asarray(scores)
    flat = s.reshape(-1)
    order = np.argsort(-flat, kind="stable")
    n_head = s.shape[1]
    return [(int(i) // n_head, int(i) % n_head, float(flat[i])) for i in order]
