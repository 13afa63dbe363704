"""Bad input through the Python bindings: each case raises ValueError naming the parameter, before
any large allocation or any model work, and nothing is returned half computed. Model cases are
skipped when the Gemma 3 270M GGUF is not installed."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided

import attnkit

try:
    MODEL = attnkit.default_model_path()
except ValueError:
    MODEL = None
needs_model = pytest.mark.skipif(MODEL is None, reason="Gemma 3 270M GGUF not installed (scripts/setup.sh)")


def test_stride_zero_view_with_too_many_heads_is_refused_before_allocating():
    # 1 KiB of memory describing [1, 1, 2^31 + 8, 64]: the output alone would be 512 GiB.
    heads = 2**31 + 8
    base = np.ones(64, np.float32)
    q = as_strided(base, shape=(1, 1, heads, 64), strides=(0, 0, 0, 4))
    k = np.ones((1, 1, 1, 64), np.float32)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="2147483656"):
        attnkit.attention(q, k, k)
    assert time.perf_counter() - t0 < 5.0


def test_broadcast_view_larger_than_memory_is_refused_naming_the_size():
    # Within the per-dimension limit, but the output would need 2^36 floats (256 GiB).
    base = np.ones(64, np.float32)
    q = as_strided(base, shape=(1, 2**20, 2**10, 64), strides=(0, 0, 0, 4))
    k = np.ones((1, 4, 1, 64), np.float32)
    with pytest.raises(ValueError, match="machine's memory|2\\^40"):
        attnkit.attention(q, k, k)


def test_packed_queries_must_cover_every_row():
    q = np.random.default_rng(0).standard_normal((10, 2, 16)).astype(np.float32)
    with pytest.raises(ValueError, match=r"cu_seqlens_q\[2\] = 8 must equal the packed length 10"):
        attnkit.attention(q, q, q, cu_seqlens_q=[0, 4, 8], cu_seqlens_k=[0, 5, 10])


@pytest.fixture(scope="module")
def model():
    return attnkit.Model.load(MODEL, threads=2)


@needs_model
@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"temperature": math.nan}, "temperature nan"),
        ({"temperature": -1.0}, "temperature -1"),
        ({"top_p": math.nan}, "top_p nan"),
        ({"top_p": 0.0}, "top_p 0"),
        ({"max_tokens": -5}, "max_tokens -5"),
    ],
)
def test_generate_values(model, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        model.generate("Hello", **kwargs)


@needs_model
def test_context_length_is_enforced_unless_allowed(model):
    assert model.context_length == 32768
    assert model.allow_past_context is False
    too_long = [2] + [651] * model.context_length  # one position past the context
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="context_length 32768"):
        model.last_logits(too_long)
    with pytest.raises(ValueError, match="context_length 32768"):
        model.passkey([40000])
    with pytest.raises(ValueError, match="prompt \\+ max_tokens"):
        model.generate([2] + [651] * 32760, max_tokens=64)
    assert time.perf_counter() - t0 < 30.0, "refusals must come before the work"


@needs_model
def test_allow_past_context_opt_in():
    m = attnkit.Model.load(MODEL, threads=2, allow_past_context=True)
    assert m.allow_past_context is True
    m.allow_past_context = False
    assert m.allow_past_context is False


@needs_model
def test_token_ids_and_layers(model):
    with pytest.raises(ValueError, match="token id -1"):
        model.last_logits([2, -1])
    with pytest.raises(ValueError, match="layer 99"):
        model.set_attention("exact", layer=99)
