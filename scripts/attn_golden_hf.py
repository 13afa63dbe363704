#!/usr/bin/env python3
"""Reference attention maps of Gemma 3 270M from Hugging Face transformers (not run by CI).
Writes tests/data/golden_attention.json, which tests/analysis/hf_attention_test.cc compares with the
attention the analysis instruments read (attnkit::analysis::stream_attention).

What it does
  Loads the GGUF attnkit uses into transformers (as scripts/golden_hf.py does: float32 weights) with
  eager attention, so that `output_attentions=True` returns the softmax probabilities
  [batch, heads, queries, keys] of every layer, and runs three short KJV prompts (64, 96 and 160
  tokens; all below the 512-position sliding window, so every layer is plain causal attention).

Prompts
  As scripts/kv_golden_hf.py builds them: the verses lines[first_verse:] of golden_hf.kjv_text()
  joined by '\\n', tokenized by SentencePiece with a model built from the GGUF's vocabulary
  (tests/python/test_gguf_common.py), truncated to n_tokens - 1 ids, BOS prepended. The ids are
  stored in the file.

Output format (JSON)
  {"model", "packages": {name: version}, "attention": "eager, float32", "tokenizer",
   "probs_encoding": how "probs" is stored,
   "prompts": [{"name", "first_verse", "n_tokens", "ids": [n ids],
                "rows": [query positions],
                "probs": base64 of little-endian float16 [n_layer, n_head, len(rows), n_tokens]
                         (each stored row is the full softmax row, zeros where masked),
                "alpha0": [n_layer][n_head] mean over all rows i of A[i, 0] (f64 over the full
                          map; the sinks instrument's alpha_0),
                "entropy": [n_layer][n_head] mean over rows i >= 1 of H_i / ln(i + 1) (the
                           entropy instrument's normalized entropy),
                "argmax_last": [n_layer][n_head] top-1 key of the last row}]}
  Float16 keeps the file small; its rounding (relative 2^-11 at most) is far below the tolerance
  the test states.

Setup: the separate virtual environment of scripts/kv_golden_hf.py (torch, transformers, gguf,
sentencepiece, protobuf):
  /work/venv-kvpress/bin/python scripts/attn_golden_hf.py [--model PATH] [--out FILE] [--threads 2]
"""
import argparse
import base64
import math
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "python"))
from golden_hf import default_model, kjv_text, write_json_atomic  # noqa: E402  (same model lookup, KJV extraction, output)

# (name, first verse, tokens): Genesis 1:1, Psalm 1:1 (verse 13940), Matthew 1:1 (verse 23145).
PROMPTS = [("genesis", 0, 64), ("psalms", 13940, 96), ("matthew", 23145, 160)]


def version(name):
    import importlib.metadata
    return importlib.metadata.version(name)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", default=os.path.join(HERE, "..", "tests", "data", "golden_attention.json"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import gguf
    import numpy as np
    import sentencepiece as spm
    import torch
    import transformers
    from test_gguf_common import sentencepiece_model_bytes
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    path = args.model or default_model()
    d, f = os.path.dirname(path), os.path.basename(path)
    sp = spm.SentencePieceProcessor(model_proto=sentencepiece_model_bytes(gguf.GGUFReader(path)))
    t0 = time.time()
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    print(f"loaded {f} in {time.time() - t0:.0f} s", file=sys.stderr)
    cfg = model.config.get_text_config(decoder=True)
    assert cfg.sliding_window >= max(n for _, _, n in PROMPTS), "prompts must fit the sliding window"

    result = {
        "model": f,
        "packages": {"transformers": transformers.__version__, "torch": torch.__version__, "gguf": version("gguf"),
                     "sentencepiece": spm.__version__, "python": platform.python_version()},
        "attention": "eager, float32",
        "tokenizer": "sentencepiece " + spm.__version__ + " with a model built from the GGUF vocabulary",
        "probs_encoding": "base64 of little-endian float16, [n_layer, n_head, len(rows), n_tokens]",
        "n_layer": cfg.num_hidden_layers,
        "n_head": cfg.num_attention_heads,
        "prompts": [],
    }
    lines = kjv_text().split("\n")
    with torch.no_grad():
        for name, first, n in PROMPTS:
            text = "\n".join(lines[first:first + n])
            ids = [sp.bos_id()] + sp.encode(text)[: n - 1]
            assert len(ids) == n
            out = model(input_ids=torch.tensor([ids]), output_attentions=True, use_cache=False)
            att = np.stack([a[0].double().numpy() for a in out.attentions])  # [L, H, n, n]
            L, H = att.shape[0], att.shape[1]
            sums = att.sum(-1)
            assert np.abs(sums - 1).max() < 1e-5, "rows must sum to 1"
            assert np.abs(np.triu(att, 1)).max() == 0, "attention must be causal"
            rows = [n // 2, n - 1]
            alpha0 = att[:, :, :, 0].mean(-1)
            ent = np.zeros((L, H))
            for i in range(1, n):
                r = att[:, :, i, : i + 1]
                h = -(np.where(r > 0, r * np.log(np.where(r > 0, r, 1)), 0)).sum(-1)
                ent += h / math.log(i + 1)
            ent /= n - 1
            probs = att[:, :, rows, :].astype("<f2")
            result["prompts"].append({
                "name": name, "first_verse": first, "n_tokens": n, "ids": ids, "rows": rows,
                "probs": base64.b64encode(probs.tobytes()).decode(),
                "alpha0": np.round(alpha0, 7).tolist(),
                "entropy": np.round(ent, 7).tolist(),
                "argmax_last": att[:, :, n - 1, :].argmax(-1).tolist(),
            })
            print(f"{name}: {n} tokens, layer 17 alpha0 {np.round(alpha0[17], 3).tolist()}", file=sys.stderr)

    write_json_atomic(args.out, result)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
