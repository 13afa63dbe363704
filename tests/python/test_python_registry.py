"""attnkit.simd_target, list_mechanisms, bench_mechanism and attention_flops."""

from __future__ import annotations

import numpy as np
import pytest

import attnkit


def test_simd_target_is_a_highway_target_name():
    name = attnkit.simd_target()
    assert isinstance(name, str)
    known = {"AVX3_SPR", "AVX3_ZEN4", "AVX3_DL", "AVX3", "AVX2", "SSE4", "SSSE3", "SSE2", "EMU128", "SCALAR",
             "AVX10_2", "AVX3_ZEN4", "NEON", "SVE", "SVE2", "NEON_BF16", "SVE_256", "SVE2_128"}
    assert name in known, name


def test_list_mechanisms_has_exact_with_its_parameters():
    mechs = attnkit.list_mechanisms()
    by_name = {m["name"]: m for m in mechs}
    assert "exact" in by_name
    exact = by_name["exact"]
    assert exact["family"] == "exact" and exact["description"]
    for p in exact["params"]:
        assert set(p) == {"name", "default", "help"} and p["name"]
    # Sorted by family, then name (the registry's documented order).
    keys = [(m["family"], m["name"]) for m in mechs]
    assert keys == sorted(keys)


def test_attention_flops_formula():
    # 2*d + 2*dv per visible pair and head; causal with seq_q == seq_kv sees n(n+1)/2 pairs.
    assert attnkit.attention_flops(1, 8, 8, 2, 16, 16, False) == 2 * 8 * 8 * (2 * 16 + 2 * 16)
    assert attnkit.attention_flops(2, 8, 8, 1, 16, 8, True) == 2 * (8 * 9 // 2) * (2 * 16 + 2 * 8)


def test_bench_mechanism_times_the_exact_mechanism():
    r = attnkit.bench_mechanism("exact", batch=1, seq_q=64, seq_kv=64, heads_q=2, heads_kv=1, head_dim=32,
                                causal=False, dtype="f32", threads=1, warmup=1, iters=3)
    assert r["name"] == "exact"
    assert len(r["seconds"]) == 3 and all(s > 0 for s in r["seconds"])
    assert r["flops"] == pytest.approx(attnkit.attention_flops(1, 64, 64, 2, 32, 32, False))
    assert r["bytes"] > 0


def test_bench_mechanism_rejects_unknown_names_and_dtypes():
    with pytest.raises(ValueError, match="no_such_mechanism"):
        attnkit.bench_mechanism("no_such_mechanism")
    with pytest.raises(TypeError, match="dtype 'f64'"):
        attnkit.bench_mechanism("exact", dtype="f64")


def test_help_shows_shapes():
    doc = attnkit.attention.__doc__
    assert "[batch, seq_q,  heads_q,  head_dim]" in doc and "return_lse" in doc
    assert "lse_a" in attnkit.merge_states.__doc__
    assert "decode" in attnkit.decode.__doc__
