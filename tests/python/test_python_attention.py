"""attnkit.attention / decode / merge_states against a float64 numpy reference written here, and
attention against JAX's jax.nn.dot_product_attention (the version is printed in the test id).

The reference follows the semantics documented in include/attnkit/attention.h; it shares no code
with attnkit. Run after `pip install .`: these tests import the installed package.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

import attnkit

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)


# ---------------------------------------------------------------------------------------------
# float64 reference
# ---------------------------------------------------------------------------------------------
def _ref_one(q, k, v, *, causal, causal_align, window, sinks, sink_logits, mask, softcap, scale,
             alibi_slopes, ssmax, temperature, normalization, sigmoid_bias):
    """One sequence: q [Sq, Hq, D], k [Sk, Hkv, D], v [Sk, Hkv, Dv]; mask [Hq, Sq, Sk] or None.

    Returns out [Sq, Hq, Dv] and lse [Hq, Sq] (float64).
    """
    sq, hq, d = q.shape
    sk, hkv, dv = v.shape
    group = hq // hkv
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    diag = sk - sq if causal_align == "bottom_right" else 0
    pos = np.arange(sq)[:, None] + diag  # [Sq, 1] query position on the key axis
    j = np.arange(sk)[None, :]
    vis = np.ones((sq, sk), bool)
    causal_ok = j <= pos if causal else np.ones((sq, sk), bool)
    in_window = np.ones((sq, sk), bool)
    if window[0] >= 0:
        in_window &= j >= pos - window[0]
    if window[1] >= 0:
        in_window &= j <= pos + window[1]
    vis = causal_ok & (in_window | (j < sinks))
    n_visible = vis.sum(axis=1)  # before the custom mask: what Scalable-Softmax counts
    out = np.zeros((sq, hq, dv))
    lse = np.full((hq, sq), -np.inf)
    for h in range(hq):
        kh, vh = k[:, h // group], v[:, h // group]
        s = (q[:, h] @ kh.T) * scale
        if temperature is not None:
            s = s * temperature[h]
        if ssmax > 0:
            s = s * (ssmax * np.log(np.maximum(n_visible, 1)))[:, None]
        if softcap > 0:
            s = softcap * np.tanh(s / softcap)
        if alibi_slopes is not None:
            s = s - alibi_slopes[h] * np.abs(pos - j)
        vis_h = vis.copy()
        if mask is not None:
            if mask.dtype == np.float32:
                s = s + mask[h]
            else:
                vis_h &= mask[h] != 0
        s = np.where(vis_h, s, -np.inf)
        if normalization == "softmax":
            m = np.max(s, axis=1, keepdims=True)
            if sink_logits is not None:
                m = np.maximum(m, sink_logits[h])
            m = np.where(np.isfinite(m), m, 0.0)
            p = np.exp(s - m)
            denom = p.sum(axis=1, keepdims=True)
            if sink_logits is not None:
                denom = denom + np.exp(sink_logits[h] - m)
            with np.errstate(divide="ignore", invalid="ignore"):
                o = np.where(denom > 0, (p @ vh) / denom, 0.0)
                lse[h] = np.where(denom[:, 0] > 0, np.log(denom[:, 0]) + m[:, 0], -np.inf)
        elif normalization == "sigmoid":
            bias = -math.log(max(sk, 1)) if sigmoid_bias is None else sigmoid_bias
            p = np.where(vis_h, 1.0 / (1.0 + np.exp(-(np.where(vis_h, s, 0.0) + bias))), 0.0)
            o = p @ vh
        else:  # relu
            p = np.where(vis_h, np.maximum(np.where(vis_h, s, 0.0), 0.0), 0.0)
            o = (p @ vh) / sk
        out[:, h] = o
    return out, lse


def reference_attention(q, k, v, *, causal=False, causal_align="bottom_right", window=(-1, -1),
                        sinks=0, sink_logits=None, mask=None, softcap=0.0, scale=None,
                        alibi_slopes=None, ssmax=0.0, temperature=None, normalization="softmax",
                        sigmoid_bias=None, cu_seqlens_q=None, cu_seqlens_k=None):
    """float64 reference for attnkit.attention: returns (out, lse) shaped like attnkit's."""
    f64 = lambda x: None if x is None else np.asarray(x).astype(np.float64)  # noqa: E731
    q, k, v = f64(q), f64(k), f64(v)
    opts = dict(causal=causal, causal_align=causal_align, window=window, sinks=sinks,
                sink_logits=f64(sink_logits), softcap=softcap, scale=scale,
                alibi_slopes=f64(alibi_slopes), ssmax=ssmax, temperature=f64(temperature),
                normalization=normalization, sigmoid_bias=sigmoid_bias)
    if cu_seqlens_q is not None:
        squeeze = q.ndim == 3
        if squeeze:
            q, k, v = q[None], k[None], v[None]
        out = np.zeros(q.shape[:3] + (v.shape[3],))
        lse = np.full((q.shape[2], q.shape[1]), -np.inf)
        for s in range(len(cu_seqlens_q) - 1):
            a, b = cu_seqlens_q[s], cu_seqlens_q[s + 1]
            c, d = cu_seqlens_k[s], cu_seqlens_k[s + 1]
            m = None
            if mask is not None:
                mm = np.asarray(mask)
                m = np.broadcast_to(mm, (len(cu_seqlens_q) - 1,) + mm.shape[-3:])[s][..., : b - a, : d - c]
                m = np.broadcast_to(m, (q.shape[2], b - a, d - c))
            o, l = _ref_one(q[0, a:b], k[0, c:d], v[0, c:d], mask=m, **opts)
            out[0, a:b] = o
            lse[:, a:b] = l
        return (out[0] if squeeze else out), lse
    b, sq, hq, _ = q.shape
    sk = k.shape[1]
    full_mask = None
    if mask is not None:
        mm = np.asarray(mask)
        full_mask = np.broadcast_to(mm, (b, hq, sq, sk))
    outs, lses = [], []
    for i in range(b):
        o, l = _ref_one(q[i], k[i], v[i], mask=None if full_mask is None else full_mask[i], **opts)
        outs.append(o)
        lses.append(l)
    return np.stack(outs), np.stack(lses)


def rand(rng, shape, dtype=np.float32, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def assert_close(got, want, dtype=np.float32, what="out"):
    got = np.asarray(got).astype(np.float64)
    # Tolerances scale with the input precision: bf16 has 8 mantissa bits, f16 11, f32 24.
    tol = {np.dtype(np.float32): 2e-5, np.dtype(np.float16): 4e-3, BF16: 3e-2}[np.dtype(dtype)]
    assert np.all(np.isfinite(got) == np.isfinite(want)), f"{what}: NaN/inf pattern differs"
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=tol, atol=tol, err_msg=what)


# ---------------------------------------------------------------------------------------------
# attention vs the reference
# ---------------------------------------------------------------------------------------------
CASES = {
    "plain": {},
    "causal_bottom_right": dict(causal=True),
    "causal_top_left": dict(causal=True, causal_align="top_left"),
    "window": dict(window=(5, 3)),
    "causal_window_sinks": dict(causal=True, window=(4, 0), sinks=2),
    "sink_logits": dict(causal=True, sink_logits=[0.5, -1.0, 2.0, 0.0]),
    "softcap": dict(softcap=2.0, scale=0.9),
    "alibi": dict(causal=True, alibi_slopes=[0.5, 0.25, 0.125, 0.0625]),
    "ssmax": dict(causal=True, ssmax=0.4),
    "temperature": dict(temperature=[1.0, 0.5, 2.0, 1.5]),
    "sigmoid": dict(normalization="sigmoid"),
    "sigmoid_bias": dict(normalization="sigmoid", sigmoid_bias=-1.5, causal=True),
    "relu": dict(normalization="relu", causal=True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_attention_matches_reference(name):
    rng = np.random.default_rng(zlib.crc32(name.encode()))  # the same inputs in every process
    opts = CASES[name]
    # GQA 4:2, seq_q != seq_kv, head_dim_v != head_dim, odd sizes.
    q, k, v = rand(rng, (2, 13, 4, 24)), rand(rng, (2, 29, 2, 24)), rand(rng, (2, 29, 2, 20))
    want_out, want_lse = reference_attention(q, k, v, **opts)
    if opts.get("normalization", "softmax") == "softmax":
        out, lse = attnkit.attention(q, k, v, return_lse=True, **opts)
        assert lse.shape == (2, 4, 13) and lse.dtype == np.float32
        assert_close(lse, want_lse, what="lse")
    else:
        out = attnkit.attention(q, k, v, **opts)
    assert isinstance(out, np.ndarray) and out.shape == (2, 13, 4, 20) and out.dtype == np.float32
    assert_close(out, want_out)


@pytest.mark.parametrize("kind", ["bool", "uint8", "additive"])
def test_custom_masks_broadcast(kind):
    rng = np.random.default_rng(1)
    q, k, v = rand(rng, (2, 7, 4, 16)), rand(rng, (2, 11, 4, 16)), rand(rng, (2, 11, 4, 16))
    # A key-padding mask [batch, 1, 1, seq_kv] and a per-head [heads, seq_q, seq_kv] one.
    pad = rng.random((2, 1, 1, 11)) > 0.3
    per_head = rng.random((4, 7, 11)) > 0.2
    for m in (pad, per_head):
        if kind == "uint8":
            m = m.astype(np.uint8)
        elif kind == "additive":
            m = np.where(m, rng.standard_normal(m.shape), -np.inf).astype(np.float32)
        out, lse = attnkit.attention(q, k, v, mask=m, return_lse=True)
        want_out, want_lse = reference_attention(q, k, v, mask=m)
        assert_close(out, want_out)
        assert_close(lse, want_lse, what="lse")


def test_fully_masked_rows_give_zero_and_minus_inf():
    rng = np.random.default_rng(2)
    q, k, v = rand(rng, (1, 4, 2, 8)), rand(rng, (1, 6, 2, 8)), rand(rng, (1, 6, 2, 8))
    mask = np.ones((1, 2, 4, 6), bool)
    mask[0, 1, 2, :] = False  # head 1, row 2 sees nothing
    out, lse = attnkit.attention(q, k, v, mask=mask, return_lse=True)
    assert np.all(out[0, 2, 1] == 0.0)
    assert lse[0, 1, 2] == -np.inf
    assert np.all(np.isfinite(np.delete(lse.ravel(), 1 * 4 + 2)))


@pytest.mark.parametrize("three_d", [True, False])
def test_varlen_packed_batch(three_d):
    rng = np.random.default_rng(3)
    cu_q = np.array([0, 3, 3, 10, 17], np.int32)  # includes an empty sequence
    cu_k = np.array([0, 5, 9, 16, 30], np.int32)
    q, k, v = rand(rng, (17, 4, 16)), rand(rng, (30, 2, 16)), rand(rng, (30, 2, 16))
    if not three_d:
        q, k, v = q[None], k[None], v[None]
    out, lse = attnkit.attention(q, k, v, causal=True, cu_seqlens_q=cu_q, cu_seqlens_k=list(cu_k),
                                 return_lse=True)
    want_out, want_lse = reference_attention(q, k, v, causal=True, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k)
    assert out.shape == q.shape[:-1] + (16,)
    assert lse.shape == (4, 17)
    assert_close(out, want_out)
    assert_close(lse, want_lse, what="lse")


def test_varlen_with_mask():
    rng = np.random.default_rng(4)
    cu_q = np.array([0, 4, 9], np.int32)
    cu_k = np.array([0, 6, 13], np.int32)
    q, k, v = rand(rng, (9, 2, 8)), rand(rng, (13, 2, 8)), rand(rng, (13, 2, 8))
    mask = rng.random((2, 1, 5, 7)) > 0.3  # [n_seqs, 1, max_q, max_k]
    out = attnkit.attention(q, k, v, mask=mask, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k)
    want, _ = reference_attention(q, k, v, mask=mask, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k)
    assert_close(out, want)


@pytest.mark.parametrize("dtype", [np.float16, BF16], ids=["f16", "bf16"])
def test_half_precision_inputs(dtype):
    rng = np.random.default_rng(5)
    q, k, v = rand(rng, (1, 9, 4, 32), dtype), rand(rng, (1, 21, 2, 32), dtype), rand(rng, (1, 21, 2, 32), dtype)
    out, lse = attnkit.attention(q, k, v, causal=True, return_lse=True)
    assert out.dtype == np.dtype(dtype) and lse.dtype == np.float32
    # The reference sees the same rounded inputs; the output is rounded once more.
    want_out, want_lse = reference_attention(q, k, v, causal=True)
    assert_close(out, want_out, dtype)
    assert_close(lse, want_lse, np.float32 if dtype == np.float16 else dtype, what="lse")
    # An f32 out= receives the unrounded f32 result.
    out32 = np.empty(out.shape, np.float32)
    attnkit.attention(q, k, v, causal=True, out=out32)
    assert_close(out32, want_out, np.float16)


def test_decode_path_matches_reference_and_prefill():
    rng = np.random.default_rng(6)
    q, k, v = rand(rng, (3, 1, 8, 64)), rand(rng, (3, 777, 2, 64)), rand(rng, (3, 777, 2, 64))
    out, lse = attnkit.decode(q, k, v, causal=True, return_lse=True)
    want_out, want_lse = reference_attention(q, k, v, causal=True)
    assert_close(out, want_out)
    assert_close(lse, want_lse, what="lse")
    pre = attnkit.attention(q, k, v, causal=True, path="prefill")
    np.testing.assert_allclose(out, pre, rtol=1e-5, atol=1e-6)
    again = attnkit.attention(q, k, v, causal=True, path="decode", window=(100, 0), sinks=4)
    want, _ = reference_attention(q, k, v, causal=True, window=(100, 0), sinks=4)
    assert_close(again, want)


# ---------------------------------------------------------------------------------------------
# merge_states
# ---------------------------------------------------------------------------------------------
def reference_merge(o_a, lse_a, o_b, lse_b):
    o_a, o_b = o_a.astype(np.float64), o_b.astype(np.float64)
    la, lb = lse_a.astype(np.float64), lse_b.astype(np.float64)
    m = np.maximum(la, lb)
    safe_m = np.where(np.isfinite(m), m, 0.0)
    wa, wb = np.exp(la - safe_m), np.exp(lb - safe_m)
    tot = wa + wb
    with np.errstate(divide="ignore", invalid="ignore"):
        lse = np.where(tot > 0, safe_m + np.log(tot), -np.inf)
        wa_n = np.where(tot > 0, wa / tot, 0.0)  # [b, h, s]
        wb_n = np.where(tot > 0, wb / tot, 0.0)
    t = lambda w: np.transpose(w, (0, 2, 1))[..., None]  # noqa: E731  [b, s, h, 1]
    return o_a * t(wa_n) + o_b * t(wb_n), lse


def test_merge_states_matches_reference_with_empty_parts():
    rng = np.random.default_rng(7)
    o_a, o_b = rand(rng, (2, 5, 3, 16)), rand(rng, (2, 5, 3, 16))
    lse_a, lse_b = rand(rng, (2, 3, 5), scale=3.0), rand(rng, (2, 3, 5), scale=3.0)
    lse_a[0, 1, 2] = -np.inf  # a empty
    lse_b[1, 2, 4] = -np.inf  # b empty
    lse_a[1, 0, 0] = lse_b[1, 0, 0] = -np.inf  # both empty
    out, lse = attnkit.merge_states(o_a, lse_a, o_b, lse_b)
    want_out, want_lse = reference_merge(o_a, lse_a, o_b, lse_b)
    assert_close(lse, want_lse, what="lse")
    assert_close(out, want_out)
    assert lse[1, 0, 0] == -np.inf and np.all(out[1, 0, 0] == 0.0)


def test_merge_states_of_split_keys_equals_full_attention_in_place():
    rng = np.random.default_rng(8)
    q, k, v = rand(rng, (1, 6, 4, 32)), rand(rng, (1, 50, 4, 32)), rand(rng, (1, 50, 4, 32))
    o1, l1 = attnkit.attention(q, k[:, :17], v[:, :17], return_lse=True)
    o2, l2 = attnkit.attention(q, k[:, 17:], v[:, 17:], return_lse=True)
    out, lse = attnkit.merge_states(o1, l1, o2, l2, out=o1, lse_out=l1)  # accumulate in place
    assert out is o1 and lse is l1
    full, full_lse = attnkit.attention(q, k, v, return_lse=True)
    np.testing.assert_allclose(o1, full, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(l1, full_lse, rtol=1e-5, atol=1e-6)


def test_merge_states_packed_3d():
    rng = np.random.default_rng(9)
    o_a, o_b = rand(rng, (7, 2, 8)), rand(rng, (7, 2, 8))
    lse_a, lse_b = rand(rng, (2, 7)), rand(rng, (2, 7))
    out, lse = attnkit.merge_states(o_a, lse_a, o_b, lse_b)
    want_out, want_lse = reference_merge(o_a[None], lse_a[None], o_b[None], lse_b[None])
    assert out.shape == (7, 2, 8) and lse.shape == (2, 7)
    assert_close(out, want_out[0])
    assert_close(lse, want_lse[0], what="lse")


def test_merge_states_bf16():
    rng = np.random.default_rng(10)
    o_a, o_b = rand(rng, (1, 4, 2, 8), BF16), rand(rng, (1, 4, 2, 8), BF16)
    lse_a, lse_b = rand(rng, (1, 2, 4)), rand(rng, (1, 2, 4))
    out, lse = attnkit.merge_states(o_a, lse_a, o_b, lse_b)
    assert out.dtype == BF16
    want_out, _ = reference_merge(o_a, lse_a, o_b, lse_b)
    assert_close(out, want_out, BF16)


# ---------------------------------------------------------------------------------------------
# JAX
# ---------------------------------------------------------------------------------------------
try:
    import jax
    import jax.numpy as jnp
except ImportError:  # pragma: no cover - jax is in requirements.txt; skip only these tests
    jax = None
needs_jax = pytest.mark.skipif(jax is None, reason="jax is not installed")


@needs_jax
@pytest.mark.parametrize(
    "shape_q,shape_kv,opts",
    [
        ((2, 33, 4, 64), (2, 33, 4, 64), dict(causal=True)),
        ((1, 17, 8, 32), (1, 45, 2, 32), dict()),  # GQA 4:1, seq_q != seq_kv
        ((1, 64, 4, 16), (1, 64, 1, 16), dict(causal=True, window=(7, 0))),  # MQA + local window
        ((2, 9, 2, 128), (2, 70, 2, 128), dict(scale=0.3)),
        ((1, 20, 4, 32), (1, 20, 2, 32), dict(causal=True, mask="padding")),
    ],
    ids=["causal", "gqa", "window", "scale", "padding_mask"],
)
def test_attention_matches_jax(shape_q, shape_kv, opts):
    rng = np.random.default_rng(11)
    q, k, v = rand(rng, shape_q), rand(rng, shape_kv), rand(rng, shape_kv)
    opts = dict(opts)
    jax_kwargs = {"is_causal": opts.get("causal", False), "scale": opts.get("scale")}
    if "window" in opts:
        jax_kwargs["local_window_size"] = opts["window"]
    if opts.get("mask") == "padding":
        keep = np.ones((shape_q[0], 1, 1, shape_kv[1]), bool)
        keep[..., 15:] = False
        opts["mask"] = keep
        jax_kwargs["mask"] = jnp.asarray(keep)
    # JAX's causal mask is top-left aligned (tril over [seq_q, seq_kv]); with seq_q == seq_kv
    # (the causal cases here) both alignments agree.
    want = np.asarray(jax.nn.dot_product_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), **jax_kwargs))
    got = attnkit.attention(q, k, v, **opts)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5,
                               err_msg=f"jax {jax.__version__} dot_product_attention differs")


@needs_jax
def test_attention_matches_jax_bf16():
    rng = np.random.default_rng(12)
    q, k, v = (rand(rng, (1, 24, 4, 64)).astype(BF16) for _ in range(3))
    want = np.asarray(jax.nn.dot_product_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), is_causal=True))
    got = attnkit.attention(q, k, v, causal=True)
    assert got.dtype == BF16
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=3e-2, atol=3e-2)
