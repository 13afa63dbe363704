"""attnkit.linear_attention and attnkit.sparse_attention / sparse_fidelity against numpy
references written here (and, for sparse patterns, against attnkit.attention with the same
visibility rule, itself checked against numpy in test_python_attention.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import attnkit
from test_python_attention import assert_close, rand, reference_attention


# ---------------------------------------------------------------------------------------------
# linear attention: a recurrent float64 reference (include/attnkit/linear.h)
# ---------------------------------------------------------------------------------------------
def elu1(x):
    return np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0.0)))


def reference_linear(q, k, v, *, feature_map="identity", log_decay=None, gate=None, update="additive",
                     beta=None, norm="none", eps=1e-6, state=None):
    """Token-by-token recurrence. q/k [B, S, H(kv), D], v [B, S, Hkv, Dv]; returns (out, state)."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    b, s, hq, d = q.shape
    dv = v.shape[3]
    group = hq // k.shape[2]
    phi = {"identity": lambda x: x, "elu1": elu1, "relu": lambda x: np.maximum(x, 0)}[feature_map]
    scale = 1.0 / math.sqrt(d)
    cols = dv + (1 if norm == "denominator" else 0)
    S = np.zeros((b, hq, d, cols)) if state is None else np.array(state, np.float64)
    out = np.zeros((b, s, hq, dv))
    for bi in range(b):
        for h in range(hq):
            for t in range(s):
                qf, kf = phi(q[bi, t, h]), phi(k[bi, t, h // group])
                vv = v[bi, t, h // group]
                if norm == "denominator":
                    vv = np.append(vv, 1.0)
                a = np.ones(d)
                if log_decay is not None:
                    a = np.full(d, math.exp(log_decay[h]))
                if gate is not None:
                    g = np.asarray(gate[bi, t, h], np.float64)
                    a = np.exp(g) * np.ones(d)
                St = a[:, None] * S[bi, h]
                if update == "delta":
                    u = beta[bi, t, h, 0] * (vv - St.T @ kf)
                    St = St + np.outer(kf, u)
                else:
                    St = St + np.outer(kf, vv)
                S[bi, h] = St
                y = scale * (St.T @ qf)
                if norm == "denominator":
                    out[bi, t, h] = y[:dv] / (y[dv] + eps)
                elif norm == "output_rms":
                    out[bi, t, h] = y / np.sqrt(np.mean(y * y) + eps)
                else:
                    out[bi, t, h] = y
    return out, S


LINEAR_CASES = {
    "identity": dict(),
    "elu1_denominator": dict(feature_map="elu1", norm="denominator"),
    "relu_rms": dict(feature_map="relu", norm="output_rms"),
    "per_head_decay": dict(decay="per_head"),
    "scalar_gate": dict(decay="scalar_gate"),
    "vector_gate": dict(decay="vector_gate"),
    "delta": dict(update="delta", feature_map="identity"),
}


@pytest.mark.parametrize("name", sorted(LINEAR_CASES))
@pytest.mark.parametrize("form", ["chunked", "recurrent", "parallel"])
def test_linear_attention_matches_recurrent_reference(name, form):
    rng = np.random.default_rng(20)
    opts = dict(LINEAR_CASES[name])
    b, s, hq, hkv, d = 2, 37, 4, 2, 16
    q, k, v = rand(rng, (b, s, hq, d), scale=0.5), rand(rng, (b, s, hkv, d), scale=0.5), rand(rng, (b, s, hkv, 12))
    ref_kw = {k_: v_ for k_, v_ in opts.items() if k_ in ("feature_map", "update", "norm")}
    if opts.get("decay") == "per_head":
        opts["log_decay"] = ref_kw["log_decay"] = attnkit.retnet_log_decays(hq)
    if opts.get("decay") == "scalar_gate":
        opts["gate"] = ref_kw["gate"] = -rng.random((b, s, hq, 1)).astype(np.float32) * 0.3
    if opts.get("decay") == "vector_gate":
        opts["gate"] = ref_kw["gate"] = -rng.random((b, s, hq, d)).astype(np.float32) * 0.3
    if opts.get("update") == "delta":
        k = k / np.linalg.norm(k, axis=-1, keepdims=True)  # DeltaNet uses unit keys
        opts["beta"] = ref_kw["beta"] = rng.random((b, s, hq, 1)).astype(np.float32)
    out, state = attnkit.linear_attention(q, k, v, form=form, chunk_size=16, return_state=True, **opts)
    want, want_state = reference_linear(q, k, v, **ref_kw)
    assert out.shape == (b, s, hq, 12) and state.shape == want_state.shape
    np.testing.assert_allclose(out, want, rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(state, want_state, rtol=2e-4, atol=2e-4)


def test_linear_state_continues_across_calls_and_decode_in_place():
    rng = np.random.default_rng(21)
    q, k, v = rand(rng, (1, 40, 2, 8), scale=0.5), rand(rng, (1, 40, 2, 8), scale=0.5), rand(rng, (1, 40, 2, 8))
    opts = dict(feature_map="elu1", norm="denominator", decay="per_head", log_decay=attnkit.lightning_log_decays(2))
    full = attnkit.linear_attention(q, k, v, **opts)
    o1, st = attnkit.linear_attention(q[:, :31], k[:, :31], v[:, :31], return_state=True, **opts)
    outs = [o1]
    for t in range(31, 40):  # one-token decode steps, the state updated in place
        o, st2 = attnkit.linear_attention(q[:, t:t + 1], k[:, t:t + 1], v[:, t:t + 1], initial_state=st,
                                          state_out=st, **opts)
        assert st2 is st
        outs.append(o)
    np.testing.assert_allclose(np.concatenate(outs, axis=1), full, rtol=1e-4, atol=1e-5)


def test_linear_varlen_equals_separate_calls():
    rng = np.random.default_rng(22)
    cu = np.array([0, 5, 23, 30], np.int32)
    q, k, v = rand(rng, (30, 2, 8), scale=0.5), rand(rng, (30, 2, 8), scale=0.5), rand(rng, (30, 2, 8))
    out, st = attnkit.linear_attention(q, k, v, cu_seqlens=cu, feature_map="relu", return_state=True)
    assert out.shape == (30, 2, 8) and st.shape[0] == 3
    for i in range(3):
        a, b_ = cu[i], cu[i + 1]
        o = attnkit.linear_attention(q[None, a:b_], k[None, a:b_], v[None, a:b_], feature_map="relu")
        np.testing.assert_allclose(out[a:b_], o[0], rtol=1e-5, atol=1e-6)


def test_linear_errors():
    rng = np.random.default_rng(23)
    q = rand(rng, (1, 4, 2, 8))
    with pytest.raises(ValueError, match="feature_map 'softmax'"):
        attnkit.linear_attention(q, q, q, feature_map="softmax")
    with pytest.raises(ValueError, match="decay 'exp'"):
        attnkit.linear_attention(q, q, q, decay="exp")
    with pytest.raises(ValueError, match="log_decay has length 3"):
        attnkit.linear_attention(q, q, q, decay="per_head", log_decay=[-0.1, -0.1, -0.1])
    with pytest.raises(ValueError, match="initial_state has shape"):
        attnkit.linear_attention(q, q, q, initial_state=np.zeros((1, 2, 8, 9), np.float32))


def test_decay_helpers_match_their_formulas():
    h = 6
    np.testing.assert_allclose(attnkit.retnet_log_decays(h), np.log(1 - 2.0 ** (-5 - np.arange(h))), rtol=1e-6)
    np.testing.assert_allclose(attnkit.lightning_log_decays(h), -(2.0 ** (-8 * (np.arange(h) + 1) / h)), rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# sparse methods
# ---------------------------------------------------------------------------------------------
def test_sparse_window_pattern_equals_windowed_exact_attention():
    rng = np.random.default_rng(30)
    q, k, v = rand(rng, (1, 200, 4, 32)), rand(rng, (1, 200, 2, 32)), rand(rng, (1, 200, 2, 32))
    out, lse, info = attnkit.sparse_attention(q, k, v, "sliding_window:left=40,right=0", causal=True, return_lse=True)
    want, want_lse = reference_attention(q, k, v, causal=True, window=(40, 0))
    assert_close(out, want)
    assert_close(lse, want_lse, what="lse")
    # The kernel visits whole 64-key blocks: density counts the causal pairs inside them.
    assert info["causal_pairs"] == 200 * 201 // 2 * 4
    assert info["computed_pairs"] == pytest.approx(block_window_pairs(200, 40, 64) * 4)
    assert info["density"] == pytest.approx(info["computed_pairs"] / info["causal_pairs"])
    assert info["density"] < 1.0


def block_window_pairs(n, left, block):
    """Causal pairs inside the key blocks a causal sliding window touches, per query block."""
    total = 0
    for qb in range(0, n, block):
        rows = range(qb, min(qb + block, n))
        lo = max(0, qb - left) // block * block  # first key block any row of the block reaches
        total += sum(min(i + 1, n) - lo for i in rows)
    return total


def test_sparse_dense_blocks_equal_exact_attention():
    rng = np.random.default_rng(31)
    q, k, v = rand(rng, (2, 130, 2, 16)), rand(rng, (2, 130, 2, 16)), rand(rng, (2, 130, 2, 16))
    out, info = attnkit.sparse_attention(q, k, v, "block_dense", causal=True)
    want, _ = reference_attention(q, k, v, causal=True)
    assert_close(out, want)
    assert info["density"] == pytest.approx(1.0)


def test_sparse_fidelity_of_a_dense_mask_is_perfect_and_window_loses_mass():
    rng = np.random.default_rng(32)
    q, k, v = rand(rng, (1, 256, 2, 32)), rand(rng, (1, 256, 2, 32)), rand(rng, (1, 256, 2, 32))
    dense = attnkit.sparse_fidelity(q, k, v, "block_dense", causal=True)
    assert dense["density"] == pytest.approx(1.0)
    assert dense["recall_mean"] == pytest.approx(1.0) and dense["rel_l2_error"] < 1e-5
    win = attnkit.sparse_fidelity(q, k, v, "sliding_window:left=16,right=0", causal=True)
    assert win["density"] == pytest.approx(block_window_pairs(256, 16, 64) / (256 * 257 / 2))
    assert win["recall_worst"] < win["recall_mean"] < 1.0
    exact = attnkit.attention(q, k, v, causal=True)
    approx, _ = attnkit.sparse_attention(q, k, v, "sliding_window:left=16,right=0", causal=True)
    want_err = np.linalg.norm(approx - exact) / np.linalg.norm(exact)
    assert win["rel_l2_error"] == pytest.approx(want_err, rel=1e-3)
    assert attnkit.relative_l2_error(approx, exact) == pytest.approx(want_err, rel=1e-4)


def test_sparse_methods_listed_and_bad_specs_rejected():
    names = attnkit.sparse_method_names()
    assert {"sliding_window", "vertical_slash", "moba"} <= set(names)
    rng = np.random.default_rng(33)
    q = rand(rng, (1, 64, 2, 16))
    with pytest.raises(ValueError, match="nope"):
        attnkit.sparse_attention(q, q, q, "nope")
    with pytest.raises(ValueError, match="bogus"):
        attnkit.sparse_attention(q, q, q, "sliding_window:bogus=1")


@pytest.mark.parametrize("method", ["vertical_slash:vertical=64,slash=64,last_q=64", "block_topk:topk=2", "moba:topk=2"])
def test_dynamic_estimators_run_and_keep_the_diagonal(method):
    rng = np.random.default_rng(34)
    q, k, v = rand(rng, (1, 256, 2, 32)), rand(rng, (1, 256, 2, 32)), rand(rng, (1, 256, 2, 32))
    out, info = attnkit.sparse_attention(q, k, v, method, causal=True)
    assert np.all(np.isfinite(out))
    assert 0 < info["density"] <= 1.0
    # Row 0 only sees key 0 under causality, and every estimator keeps the diagonal block.
    want0, _ = reference_attention(q[:, :1], k[:, :1], v[:, :1], causal=True)
    assert_close(out[:, :1], want0)
