"""attnkit.Model (Gemma 3 270M on attnkit) from Python: logits against the Hugging Face
transformers reference in tests/data/golden_gemma3.json (written by scripts/golden_hf.py), greedy
generation consistent with the logits, full vs streaming perplexity, attention swapping, passkey,
and errors. Skipped when the GGUF is not installed (scripts/setup.sh installs it)."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

import attnkit

try:
    MODEL = attnkit.default_model_path()
except ValueError:
    MODEL = None
pytestmark = pytest.mark.skipif(MODEL is None, reason="Gemma 3 270M GGUF not installed (scripts/setup.sh)")

GOLDEN = json.loads((pathlib.Path(__file__).resolve().parents[1] / "data" / "golden_gemma3.json").read_text())
TEXT = ("In the beginning God created the heaven and the earth. And the earth was without form, and void; "
        "and darkness was upon the face of the deep.")


@pytest.fixture(scope="module")
def model():
    # f32 KV: the logit comparisons are set by f32 rounding (the KV tests cover the bf16 default).
    return attnkit.Model.load(MODEL, threads=2, kv_dtype="f32")


def test_last_logits_match_transformers(model):
    for prompt in GOLDEN["prompts"][:2]:
        logits = model.last_logits(prompt["ids"])
        assert logits.shape == (model.n_vocab,) and logits.dtype == np.float32
        want_ids = prompt["topk_ids"][-1]
        want_vals = np.array(prompt["topk_values"][-1], dtype=np.float32)
        assert int(np.argmax(logits)) == want_ids[0]
        # Same weights, f32 accumulation in another order: the C++ golden test's tolerance.
        np.testing.assert_allclose(logits[want_ids], want_vals, atol=1e-2)


def test_greedy_generation_follows_the_logits(model):
    logits = model.last_logits("The capital of France is")
    text = model.generate("The capital of France is", max_tokens=4)
    first = model.tokenizer.decode([int(np.argmax(logits))])
    assert text.startswith(first)
    # Greedy is deterministic; sampling with a seed is reproducible.
    assert model.generate("The capital of France is", max_tokens=4) == text
    a = model.generate("Once upon a time", max_tokens=6, temperature=0.9, top_p=0.9, seed=3)
    b = model.generate("Once upon a time", max_tokens=6, temperature=0.9, top_p=0.9, seed=3)
    assert a == b


def test_perplexity_full_equals_streaming_and_restricted_attention_costs(model):
    model.set_attention("exact")
    full = model.perplexity(TEXT)
    stream = model.perplexity(TEXT, streaming=True)
    assert 1.0 < full["perplexity"] < 20.0
    assert abs(full["perplexity"] - stream["perplexity"]) < 1e-3 * full["perplexity"]
    model.set_attention("streaming:sinks=4,window=8")
    restricted = model.perplexity(TEXT)
    model.set_attention("exact")
    assert restricted["perplexity"] > full["perplexity"] * 1.05
    assert abs(model.perplexity(TEXT)["perplexity"] - full["perplexity"]) < 1e-4 * full["perplexity"]


def test_passkey_at_1k(model):
    model.set_attention("exact")
    trials = model.passkey([1024], trials=1)
    assert len(trials) == 1 and trials[0]["correct"], trials


def test_errors(model):
    with pytest.raises(ValueError, match="token id -5"):
        model.last_logits([2, -5])
    with pytest.raises(ValueError, match="top_p"):
        model.generate("x", top_p=0.0)
    with pytest.raises(ValueError):
        model.set_attention("no_such_backend")
    with pytest.raises(ValueError, match="layer"):
        model.set_attention("exact", layer=999)
    with pytest.raises(ValueError):
        attnkit.Model.load("/nonexistent/model.gguf")


def test_weights_f32_reference_and_quantized_default(model):
    assert model.weights == "quantized"
    ref = attnkit.Model.load(MODEL, threads=2, weights="f32", kv_dtype="f32")
    assert ref.weights == "f32"
    mapped_q, packed_q, f32_q = model.weight_bytes
    mapped_r, packed_r, f32_r = ref.weight_bytes
    # The projections: unpacked to int8 values with f32 scales (1.25..1.375 bytes per weight) for
    # the default, f32 copies (4 bytes per weight) for the reference; both map the embedding.
    assert mapped_q == mapped_r and packed_r == 0
    assert f32_q < 2**20 and f32_r - f32_q > 2.5 * packed_q > 0
    prompt = GOLDEN["prompts"][1]["ids"]
    a, b = model.last_logits(prompt), ref.last_logits(prompt)
    assert int(np.argmax(a)) == int(np.argmax(b))
    np.testing.assert_allclose(a, b, atol=1e-2)
    with pytest.raises(ValueError, match="weights 'int4'"):
        attnkit.Model.load(MODEL, threads=2, weights="int4")
