"""threads= on every binding: 0 (the OpenMP default) or 1..attnkit.max_threads(); anything else
raises ValueError naming threads and the value, before any OpenMP thread is created."""

from __future__ import annotations

import os

import numpy as np
import pytest

import attnkit


def _qkv(seq=32, heads=2, dim=16):
    rng = np.random.default_rng(0)
    return [rng.standard_normal((1, seq, heads, dim), dtype=np.float32) for _ in range(3)]


def test_cap_is_four_per_available_processor():
    assert attnkit.max_threads() == 4 * len(os.sched_getaffinity(0))


BAD = [-5, -1, None, 100000]  # None: one past the cap


def _bad_values():
    return [attnkit.max_threads() + 1 if b is None else b for b in BAD]


def _refused(call):
    for bad in _bad_values():
        with pytest.raises(ValueError, match=rf"threads {bad} is not supported; expected 0 .* or 1\.\.{attnkit.max_threads()}"):
            call(bad)


def test_attention_and_decode_refuse_bad_counts():
    q, k, v = _qkv()
    _refused(lambda t: attnkit.attention(q, k, v, causal=True, threads=t))
    _refused(lambda t: attnkit.decode(q[:, :1], k, v, threads=t))


def test_sparse_and_linear_refuse_bad_counts():
    q, k, v = _qkv(seq=128)
    _refused(lambda t: attnkit.sparse_attention(q, k, v, "sliding_window:left=40,right=0", threads=t))
    _refused(lambda t: attnkit.linear_attention(q, k, v, threads=t))


def test_bench_mechanism_refuses_bad_counts():
    _refused(lambda t: attnkit.bench_mechanism("exact", seq_q=16, seq_kv=16, heads_q=2, heads_kv=1, head_dim=16,
                                               threads=t, warmup=0, iters=1))


def test_model_load_refuses_bad_counts():
    try:
        path = attnkit.default_model_path()
    except Exception:
        pytest.skip("Gemma 3 270M GGUF not installed")
    for bad in [attnkit.max_threads() + 1, 100000]:
        with pytest.raises(ValueError, match=rf"threads {bad}"):
            attnkit.Model.load(path, threads=bad)


def test_the_cap_runs_and_matches_one_thread():
    q, k, v = _qkv(seq=70)
    one = attnkit.attention(q, k, v, causal=True, threads=1)
    many = attnkit.attention(q, k, v, causal=True, threads=attnkit.max_threads())
    np.testing.assert_array_equal(one, many)
