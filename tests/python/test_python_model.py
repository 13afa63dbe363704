"""attnkit.Tokenizer (GGUF vocabulary) against the `gguf` package's reader of the same file, and
encode/decode round trips. Skipped when the Gemma 3 270M GGUF is not installed."""

from __future__ import annotations

import pytest

import attnkit

try:
    MODEL = attnkit.default_model_path()
except ValueError:
    MODEL = None
needs_model = pytest.mark.skipif(MODEL is None, reason="Gemma 3 270M GGUF not installed (scripts/setup.sh)")


@pytest.fixture(scope="module")
def tok():
    return attnkit.Tokenizer.from_gguf(MODEL)


@needs_model
def test_vocabulary_matches_the_gguf_package(tok):
    gguf = pytest.importorskip("gguf")
    reader = gguf.GGUFReader(MODEL)
    fields = reader.fields
    tokens = fields["tokenizer.ggml.tokens"]
    n = len(tokens.data)
    assert tok.vocab_size == n
    for i in list(range(0, 300)) + list(range(n - 50, n)) + [1000, 25000, 100000]:
        want = bytes(tokens.parts[tokens.data[i]]).decode("utf-8")
        assert tok.token_text(i) == want, i
    bos = int(fields["tokenizer.ggml.bos_token_id"].parts[-1][0])
    eos = int(fields["tokenizer.ggml.eos_token_id"].parts[-1][0])
    assert (tok.bos_id, tok.eos_id) == (bos, eos)


@needs_model
def test_encode_decode_round_trip(tok):
    for text in ["Hello world", "  leading spaces and\nnewlines\t", "naïve café 東京 🤖", "x" * 300, ""]:
        ids = tok.encode(text, add_bos=False)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text
    ids = tok.encode("Hi", add_bos=True)
    assert ids[0] == tok.bos_id
    # Control tokens are text unless parse_special is on.
    special = tok.encode("<start_of_turn>user", add_bos=False, parse_special=True)
    assert special[0] == tok.token_id("<start_of_turn>") and special[0] >= 0
    plain = tok.encode("<start_of_turn>user", add_bos=False)
    assert tok.token_id("<start_of_turn>") not in plain


@needs_model
def test_tokenizer_errors(tok):
    with pytest.raises(ValueError, match="token id -1 is out of range"):
        tok.token_text(-1)
    with pytest.raises(ValueError):
        attnkit.Tokenizer.from_gguf("/nonexistent/model.gguf")
