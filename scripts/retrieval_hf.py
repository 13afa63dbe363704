#!/usr/bin/env python3
"""Reference answers for attnkit's passkey / needle-in-a-haystack prompts from Hugging Face
transformers (not run by CI).

attnkit writes the prompts of a run with
  attnkit eval passkey --length 16384 --trials 5 --dump-prompts out/pk.json [--prompts-only]
  attnkit eval niah --length 16384 --depths 0,0.5,1 --dump-prompts out/niah.json [--prompts-only]
(--prompts-only builds the same prompts, same seed and keys, without running the model). This
script loads the same GGUF with transformers (see scripts/golden_hf.py), and for each chosen trial
  1. re-tokenizes the prompt text with the transformers tokenizer (BOS first) and compares the ids
     with attnkit's, reporting the first difference;
  2. feeds attnkit's ids (so both engines see the same input) through the model: prefill in chunks
     with a DynamicCache built from the model config (full cache on global layers, sliding-window
     cache on local ones), then greedy decoding of --answer-tokens tokens;
  3. prints the answer, whether its first number equals the key, and the top-5 next tokens after
     the prompt with their probabilities.

Chunked prefill keeps memory bounded at 32K: with SDPA on CPU a 2048-query chunk against 32K keys
needs a [4, 2048, 32768] f32 score block (1 GiB) where one pass would need 16 GiB. --check-chunking
first compares the last-position logits of a chunked and an unchunked forward on a short prompt.

Needs torch + transformers + gguf in a separate venv (not project requirements):
  python3 -m venv /tmp/hfenv && /tmp/hfenv/bin/pip install torch transformers gguf sentencepiece protobuf
  /tmp/hfenv/bin/python scripts/retrieval_hf.py --prompts out/pk.json [--select failed|all|0,3] [--out FILE]
"""
import argparse
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden_hf import default_model  # noqa: E402


def first_number(s):
    m = re.search(r"[0-9]+", s)
    return m.group(0) if m else ""


def load(path, threads, hf_dir):
    """The GGUF converted by transformers; with hf_dir, the conversion (minutes on 2 busy cores, mostly
    the 262K-entry tokenizer) is saved there once and later runs load the saved copy."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    # transformers refuses save_pretrained on a GGUF-loaded model, so the cache is a pickle of the
    # converted tokenizer and model (trusted: written by this script on this machine).
    cached = os.path.join(hf_dir, "converted.pt") if hf_dir else None
    if cached and os.path.exists(cached):
        obj = torch.load(cached, weights_only=False)
        tok, model = obj["tokenizer"], obj["model"]
    else:
        d, f = os.path.dirname(path), os.path.basename(path)
        tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
        model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32, attn_implementation="sdpa")
        if cached:
            os.makedirs(hf_dir, exist_ok=True)
            torch.save({"tokenizer": tok, "model": model}, cached)
    model.eval()
    return tok, model


def describe_config(model):
    c = model.config.get_text_config(decoder=True)
    types = list(c.layer_types)
    return {
        "max_position_embeddings": c.max_position_embeddings,
        "sliding_window": c.sliding_window,
        "global_layers": [i for i, t in enumerate(types) if t == "full_attention"],
        "rope_parameters": c.rope_parameters,
        "query_pre_attn_scalar": c.query_pre_attn_scalar,
        "attn_implementation": c._attn_implementation,
    }


def forward_chunked(model, ids, chunk):
    """Last-position logits of ids and the cache, prefilling `chunk` tokens at a time."""
    import torch
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    out = None
    for s in range(0, len(ids), chunk):
        piece = torch.tensor([ids[s:s + chunk]])
        pos = torch.arange(s, s + piece.shape[1])
        out = model(input_ids=piece, past_key_values=cache, cache_position=pos, use_cache=True,
                    logits_to_keep=1)
    return out.logits[0, -1].float(), cache


def greedy(model, ids, chunk, n_answer):
    import torch

    logits, cache = forward_chunked(model, ids, chunk)
    probs = torch.softmax(logits.double(), dim=-1)
    top = torch.topk(probs, 5)
    top5 = [(int(i), float(p)) for p, i in zip(top.values, top.indices)]
    gen = []
    pos = len(ids)
    for _ in range(n_answer):
        nxt = int(torch.argmax(logits))
        gen.append(nxt)
        out = model(input_ids=torch.tensor([[nxt]]), past_key_values=cache, cache_position=torch.tensor([pos]),
                    use_cache=True)
        logits = out.logits[0, -1].float()
        pos += 1
    return gen, top5


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", required=True, help="JSON from attnkit eval passkey|niah --dump-prompts")
    ap.add_argument("--select", default="failed", help="failed | all | comma-separated trial indices")
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--answer-tokens", type=int, default=None, help="default: 8 for passkey, 10 for niah (as attnkit)")
    ap.add_argument("--check-chunking", action="store_true", help="chunked vs one-pass logits on a 1500-token prefix first")
    ap.add_argument("--tokens-only", action="store_true", help="only compare the tokenizations, run no model")
    ap.add_argument("--hf-dir", default=None, help="cache of the converted model (saved on first use)")
    ap.add_argument("--out", default=None, help="append one JSON line per trial to this file")
    args = ap.parse_args()

    import torch
    import transformers

    dump = json.load(open(args.prompts))
    trials = dump["trials"]
    if args.select == "all":
        chosen = list(range(len(trials)))
    elif args.select == "failed":
        chosen = [i for i, t in enumerate(trials) if not dump.get("prompts_only") and not t["correct"]]
    else:
        chosen = [int(x) for x in args.select.split(",")]
    n_answer = args.answer_tokens or (8 if dump["eval"] == "passkey" else 10)

    t0 = time.time()
    tok, model = load(args.model or default_model(), args.threads, args.hf_dir)
    cfg = describe_config(model)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}; loaded in {time.time() - t0:.0f} s",
          file=sys.stderr)
    print("config: " + json.dumps(cfg), file=sys.stderr)

    with torch.no_grad():
        if args.check_chunking and chosen:
            ids = trials[chosen[0]]["ids"][:1500]
            one, _ = forward_chunked(model, ids, len(ids))
            many, _ = forward_chunked(model, ids, 512)
            print(f"chunking check, 1500 tokens: max |logit diff| one pass vs 512-token chunks = "
                  f"{float((one - many).abs().max()):.2e}; argmax {int(one.argmax())} vs {int(many.argmax())}",
                  file=sys.stderr)
        for i in chosen:
            t = trials[i]
            ids = t["ids"]
            hf_ids = tok(t["text"], add_special_tokens=True)["input_ids"]
            if hf_ids[0] != tok.bos_token_id:
                hf_ids = [tok.bos_token_id] + hf_ids
            same = hf_ids == ids
            first_diff = None
            if not same:
                first_diff = next((k for k in range(min(len(ids), len(hf_ids))) if ids[k] != hf_ids[k]),
                                  min(len(ids), len(hf_ids)))
            if args.tokens_only:
                print(json.dumps({"eval": dump["eval"], "trial": i, "length": t["length"], "depth": t["depth"],
                                  "prompt_tokens": len(ids), "hf_tokens": len(hf_ids), "tokens_identical": same,
                                  "first_token_diff": first_diff}), flush=True)
                continue
            t1 = time.time()
            gen, top5 = greedy(model, ids, args.chunk, n_answer)
            secs = time.time() - t1
            answer = tok.decode(gen)
            rec = {
                "eval": dump["eval"], "trial": i, "length": t["length"], "depth": t["depth"], "prompt_tokens": len(ids),
                "expected": t["expected"], "attnkit_generated": t["generated"], "attnkit_correct": t["correct"],
                "hf_generated": answer, "hf_correct": first_number(answer) == t["expected"],
                "hf_ids": gen, "hf_top5_next": [[tok.decode([k]), round(p, 4)] for k, p in top5],
                "tokens_identical": same, "hf_tokens": len(hf_ids), "first_token_diff": first_diff,
                "seconds": round(secs, 1), "transformers": transformers.__version__, "torch": torch.__version__,
                "attn_implementation": "sdpa", "chunk": args.chunk,
            }
            print(json.dumps(rec, ensure_ascii=False), flush=True)
            if args.out:
                with open(args.out, "a") as fh:
                    fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
