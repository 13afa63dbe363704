#!/usr/bin/env python3
"""Reference KV-cache evictions of Gemma 3 270M from NVIDIA kvpress on Hugging Face transformers
(not run by CI). Writes tests/data/golden_kv.json, which tests/kv compares attnkit's policies with.

What it does
  Loads the GGUF attnkit uses into transformers (as scripts/golden_hf.py does: float32 weights,
  sdpa attention), prefills a few fixed KJV prompts, applies kvpress's StreamingLLMPress,
  SnapKVPress, TOVAPress and KnormPress at compression ratios 0.5 and 0.75 (kvpress's ratio: the
  fraction of the prompt's KV pairs removed) to the three global (full-attention) layers 5, 11
  and 17 only, and records which prompt positions each of those layers keeps and the first 16
  greedy tokens generated from the compressed cache.

Global layers only
  kvpress's BasePress.__call__ hooks every attention layer; it skips sliding-window layers only
  for Gemma3ForConditionalGeneration, and Gemma 3 270M loads as Gemma3ForCausalLM, so its 15
  sliding layers would be compressed too. This script never registers kvpress's hooks on the
  model. It runs one plain prefill per prompt while a recording hook (registered on the three
  global layers only) keeps each layer's forward-hook arguments (hidden_states,
  position_embeddings, cache_position, the attention output). Then, per press, it copies the
  prefilled cache and calls the press's own `forward_hook` with those arguments for layers
  5, 11 and 17, which is exactly the call kvpress's registered hook makes at the end of prefill
  (compression happens after the layer's attention, so the prefill itself does not depend on the
  press, and one prefill serves every press). `--verify` also runs one configuration through
  kvpress's context manager with the presses subclassed so that forward_hook returns early on
  sliding layers (GlobalOnly below), and checks both routes keep the same positions and generate
  the same tokens.

Decoding follows kvpress's pipeline (KVPressTextGenerationPipeline.generate_answer): the first
token is the argmax of the prefill's last logits (uncompressed attention); each later token is fed
with position_ids = its true position while the global layers' caches hold only the kept keys
(post-RoPE, not re-rotated).

Prompts
  The KJV text is golden_hf.kjv_text() (Debian bible-kjv; src/eval/model_eval.cc kjv_text()
  extracts the same). Prompt p is: the verses lines[first_verse:] joined by '\\n', tokenized by the
  GGUF's tokenizer without special tokens, truncated to n_tokens - 1 ids, with BOS prepended.
  The tokenizer is SentencePiece loaded with a model built from the GGUF's vocabulary
  (tests/python/test_gguf_common.py sentencepiece_model_bytes, the reference attnkit's tokenizer
  is tested against), not transformers' GGUF tokenizer: the transformers release kvpress accepts
  (5.2) converts Gemma's GGUF vocabulary into a tokenizer that splits words differently from
  SentencePiece (e.g. "The capital of France is" -> 818, 505, 670, ... instead of 818, 5279, ...),
  so the model would read other tokens than attnkit does.
  The file records the recipe, the sha256 of the ids (decimal ids joined by ',') and the first and
  last 8 ids, so a reader rebuilds and checks the very ids.

Output format (JSON)
  {"model": file name, "packages": {name: version} (kvpress, transformers, torch, gguf, python),
   "global_layers": [5, 11, 17], "ratios": [0.5, 0.75], "n_generate": 16,
   "presses": {name: {"class": kvpress class, "params": {...}}},
   "tokenizer": how the ids were made,
   "prompts": [{"name", "first_verse", "n_tokens", "ids_sha256", "ids_head", "ids_tail",
                "baseline_tokens": 16 greedy ids without compression, "baseline_text"}],
   "runs": [{"press", "ratio", "prompt" (index), "n_kept",
             "kept": {"5": KEPT, "11": KEPT, "17": KEPT}, "tokens": [16 ids], "text"}]}
  KEPT is the set of kept prompt positions in the shortest of three encodings:
    {"ranges": [[a, b], ...]}   half-open runs [a, b) of kept positions, ascending;
    {"dropped": [i, ...]}       every position in [0, n_tokens) not listed is kept;
    {"bitmap": base64}          bit i (byte i // 8, bit i % 8, least significant first) set when
                                position i is kept; n_tokens bits.

Setup (a separate virtual environment; kvpress pins its own transformers and torch):
  python3 -m venv /work/venv-kvpress
  /work/venv-kvpress/bin/pip install kvpress gguf sentencepiece protobuf pytest
  /work/venv-kvpress/bin/python scripts/kv_golden_hf.py [--model PATH] [--out FILE] [--verify]
"""
import argparse
import base64
import copy
import hashlib
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "python"))
from golden_hf import default_model, kjv_text, write_json_atomic  # noqa: E402  (same model lookup, KJV extraction, output)

GLOBAL_LAYERS = [5, 11, 17]
RATIOS = [0.5, 0.75]
N_GENERATE = 16
# (name, first verse, tokens): Genesis 1:1, Psalm 1:1 (verse 13940), Matthew 1:1 (verse 23145).
PROMPTS = [("genesis", 0, 2048), ("psalms", 13940, 3072), ("matthew", 23145, 4000)]


def press_specs():
    from kvpress import KnormPress, SnapKVPress, StreamingLLMPress, TOVAPress
    # kvpress defaults, written out so the golden file records them.
    return {
        "streaming": (StreamingLLMPress, {"n_sink": 4}),
        "snapkv": (SnapKVPress, {"window_size": 64, "kernel_size": 5}),
        "tova": (TOVAPress, {}),
        "knorm": (KnormPress, {}),
    }


def encode_kept(kept, n):
    """Shortest of the three KEPT encodings (see the module docstring)."""
    kept = sorted(set(int(i) for i in kept))
    ranges = []
    for i in kept:
        if ranges and ranges[-1][1] == i:
            ranges[-1][1] = i + 1
        else:
            ranges.append([i, i + 1])
    ks = set(kept)
    dropped = [i for i in range(n) if i not in ks]
    bits = bytearray((n + 7) // 8)
    for i in kept:
        bits[i // 8] |= 1 << (i % 8)
    options = [{"ranges": ranges}, {"dropped": dropped}, {"bitmap": base64.b64encode(bytes(bits)).decode()}]
    return min(options, key=lambda o: len(json.dumps(o, separators=(",", ":"))))


def kept_positions(full_keys, kept_keys):
    """Prompt positions whose key rows survived: each kept row equals exactly one full row (the
    presses gather rows without changing them). Keys are [1, kv_heads, n, d]; Gemma 3 270M has one
    KV head, and presses that select per head would give one set per head."""
    import torch
    assert full_keys.shape[1] == 1, "one KV head expected"
    full = full_keys[0, 0]
    kept = kept_keys[0, 0]
    # Match rows by exact equality through a hash of their bytes.
    index = {}
    for i, row in enumerate(full):
        index.setdefault(row.numpy().tobytes(), []).append(i)
    out = []
    for row in kept:
        hits = index.get(row.numpy().tobytes())
        if not hits:
            raise RuntimeError("a kept key matches no prompt key")
        out.append(hits.pop(0))
    assert torch.equal(full[out], kept)
    return out


def greedy(model, cache, first_token, start_pos, n):
    """kvpress's generate_answer loop: feed each token at its true position."""
    import torch
    toks = [int(first_token)]
    for i in range(n - 1):
        out = model(input_ids=torch.tensor([[toks[-1]]]), past_key_values=cache,
                    position_ids=torch.tensor([[start_pos + i]]))
        toks.append(int(out.logits[0, -1].argmax()))
    return toks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data",
                                                  "golden_kv.json"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--verify", action="store_true",
                    help="also run one configuration through kvpress's own hooks and compare")
    args = ap.parse_args()

    import gguf
    import kvpress
    import sentencepiece as spm
    from test_gguf_common import sentencepiece_model_bytes
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, DynamicCache

    torch.set_num_threads(args.threads)
    path = args.model or default_model()
    d, f = os.path.dirname(path), os.path.basename(path)
    sp = spm.SentencePieceProcessor(model_proto=sentencepiece_model_bytes(gguf.GGUFReader(path)))
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32, attn_implementation="sdpa")
    model.eval()
    layers = model.model.layers
    for li in range(len(layers)):
        assert layers[li].self_attn.is_sliding == (li not in GLOBAL_LAYERS), f"layer {li}: unexpected sliding flag"
    specs = press_specs()
    result = {
        "model": f,
        "packages": {"kvpress": kvpress.__version__ if hasattr(kvpress, "__version__") else
                     __import__("importlib.metadata").metadata.version("kvpress"),
                     "transformers": transformers.__version__, "torch": torch.__version__,
                     "gguf": __import__("importlib.metadata").metadata.version("gguf"),
                     "python": platform.python_version()},
        "attention": "sdpa, float32",
        "tokenizer": "sentencepiece " + spm.__version__ + " with a model built from the GGUF vocabulary",
        "global_layers": GLOBAL_LAYERS,
        "ratios": RATIOS,
        "n_generate": N_GENERATE,
        "presses": {name: {"class": cls.__name__, "params": params} for name, (cls, params) in specs.items()},
        "prompts": [],
        "runs": [],
    }
    lines = kjv_text().split("\n")
    prompts_ids = []
    for name, first, n in PROMPTS:
        text = "\n".join(lines[first:first + n])  # one verse has at least one token: enough text
        ids = [sp.bos_id()] + sp.encode(text)[: n - 1]
        assert len(ids) == n
        prompts_ids.append(ids)
        result["prompts"].append({
            "name": name, "first_verse": first, "n_tokens": n,
            "ids_sha256": hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest(),
            "ids_head": ids[:8], "ids_tail": ids[-8:],
        })

    with torch.no_grad():
        for pi, ids in enumerate(prompts_ids):
            n = len(ids)
            t0 = time.time()
            captured = {}

            def record(module, inputs, kwargs, output):
                captured[module.layer_idx] = (dict(kwargs), output)

            hooks = [layers[li].self_attn.register_forward_hook(record, with_kwargs=True) for li in GLOBAL_LAYERS]
            cache = DynamicCache()
            out = model(input_ids=torch.tensor([ids]), past_key_values=cache, logits_to_keep=1)
            for h in hooks:
                h.remove()
            first = int(out.logits[0, -1].argmax())
            base = greedy(model, copy.deepcopy(cache), first, n, N_GENERATE)
            result["prompts"][pi]["baseline_tokens"] = base
            result["prompts"][pi]["baseline_text"] = sp.decode(base)
            print(f"prompt {pi}: {n} tokens, prefill {time.time() - t0:.0f} s, baseline {sp.decode(base)!r}",
                  file=sys.stderr)
            for pname, (cls, params) in specs.items():
                for ratio in RATIOS:
                    press = cls(compression_ratio=ratio, **params)
                    press.post_init_from_model(model)
                    c = copy.deepcopy(cache)
                    kept = {}
                    for li in GLOBAL_LAYERS:
                        kwargs, output = captured[li]
                        full = c.layers[li].keys.clone()
                        kwargs = dict(kwargs, past_key_values=c)
                        press.forward_hook(layers[li].self_attn, [], kwargs, output)
                        kept[li] = kept_positions(full, c.layers[li].keys)
                    toks = greedy(model, c, first, n, N_GENERATE)
                    result["runs"].append({
                        "press": pname, "ratio": ratio, "prompt": pi, "n_kept": len(kept[GLOBAL_LAYERS[0]]),
                        "kept": {str(li): encode_kept(kept[li], n) for li in GLOBAL_LAYERS},
                        "tokens": toks, "text": sp.decode(toks),
                    })
                    print(f"  {pname} {ratio}: kept {len(kept[5])}, {sp.decode(toks)!r}", file=sys.stderr)
            if args.verify and pi == 0:
                verify(model, ids, specs, result)

    write_json_atomic(args.out, result)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)", file=sys.stderr)


def verify(model, ids, specs, result):
    """Runs every press at ratio 0.5 on prompt 0 through kvpress's context manager, with the
    press subclassed so forward_hook ignores sliding layers, and checks the recorded result."""
    import torch
    from transformers import DynamicCache

    for pname, (cls, params) in specs.items():
        class GlobalOnly(cls):
            def forward_hook(self, module, input, kwargs, output):
                if module.is_sliding:
                    return output
                full = kwargs["past_key_values"].layers[module.layer_idx].keys.clone()
                res = super().forward_hook(module, input, kwargs, output)
                self.kept[module.layer_idx] = kept_positions(full, kwargs["past_key_values"].layers[module.layer_idx].keys)
                return res

        press = GlobalOnly(compression_ratio=0.5, **params)
        press.kept = {}
        cache = DynamicCache()
        with press(model):
            out = model(input_ids=torch.tensor([ids]), past_key_values=cache, logits_to_keep=1)
        toks = greedy(model, cache, int(out.logits[0, -1].argmax()), len(ids), N_GENERATE)
        run = next(r for r in result["runs"] if r["press"] == pname and r["ratio"] == 0.5 and r["prompt"] == 0)
        for li in GLOBAL_LAYERS:
            assert encode_kept(press.kept[li], len(ids)) == run["kept"][str(li)], f"{pname} layer {li}: kept differs"
        assert toks == run["tokens"], f"{pname}: tokens differ {toks} vs {run['tokens']}"
        assert sorted(press.kept) == GLOBAL_LAYERS, f"{pname}: compressed layers {sorted(press.kept)}"
        print(f"verify {pname}: context-manager route matches", file=sys.stderr)


if __name__ == "__main__":
    main()
