"""How attnkit takes arrays: zero copies, strides, read-only inputs, DLPack producers (JAX,
torch when installed), dtype/shape errors with messages, and calls from many threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import attnkit
from test_python_attention import BF16, assert_close, rand, reference_attention

try:
    import torch
except ImportError:
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed (optional)")


def qkv(seed=0, b=2, sq=9, sk=15, hq=4, hkv=2, d=16, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return rand(rng, (b, sq, hq, d), dtype), rand(rng, (b, sk, hkv, d), dtype), rand(rng, (b, sk, hkv, d), dtype)


# ---------------------------------------------------------------------------------------------
# zero copy and strides
# ---------------------------------------------------------------------------------------------
def test_numpy_inputs_are_not_copied():
    q, _, _ = qkv()
    ptr, dtype, shape, strides = attnkit._debug_view(q)
    assert ptr == q.ctypes.data
    assert (dtype, shape, strides) == ("float32", q.shape, tuple(s // 4 for s in q.strides))
    # A strided view (every other head, a slice of the sequence) is seen in place, strides kept.
    view = q[:, 2:, ::2, :]
    ptr, _, shape, strides = attnkit._debug_view(view)
    assert ptr == view.ctypes.data and ptr == q.ctypes.data + 2 * q.strides[1]
    assert shape == view.shape and strides == tuple(s // 4 for s in view.strides)
    # bfloat16 (ml_dtypes) arrays too.
    qb = q.astype(BF16)
    assert attnkit._debug_data_ptr(qb) == qb.ctypes.data
    assert attnkit._debug_view(qb)[1] == "bfloat16"


def test_out_is_written_in_place():
    q, k, v = qkv()
    out = np.full((2, 9, 4, 16), np.nan, np.float32)
    lse = np.full((2, 4, 9), np.nan, np.float32)
    res, res_lse = attnkit.attention(q, k, v, out=out, lse=lse)
    assert res is out and res_lse is lse
    want, want_lse = reference_attention(q, k, v)
    assert_close(out, want)
    assert_close(lse, want_lse, what="lse")


def test_out_may_be_a_strided_view():
    q, k, v = qkv()
    big = np.zeros((2, 4, 9, 16), np.float32)  # BHSD storage, written through a BSHD view
    view = big.transpose(0, 2, 1, 3)
    attnkit.attention(q, k, v, out=view)
    want, _ = reference_attention(q, k, v)
    assert_close(view, want)
    assert np.shares_memory(view, big)


def test_non_contiguous_inputs_match_contiguous():
    rng = np.random.default_rng(1)
    # Stored as [batch, heads, seq, dim] (BHSD) and viewed as BSHD: a transposed layout.
    qh = rand(rng, (2, 4, 9, 16)).transpose(0, 2, 1, 3)
    kh = rand(rng, (2, 2, 15, 16)).transpose(0, 2, 1, 3)
    # Every other element of a wider head dimension, and reversed along the sequence.
    v_wide = rand(rng, (2, 15, 2, 32))
    vh = v_wide[:, ::-1, :, ::2]
    assert not (qh.flags.c_contiguous or kh.flags.c_contiguous or vh.flags.c_contiguous)
    got = attnkit.attention(qh, kh, vh, causal=True)
    want = attnkit.attention(*(np.ascontiguousarray(x) for x in (qh, kh, vh)), causal=True)
    np.testing.assert_array_equal(got, want)
    ref, _ = reference_attention(qh, kh, vh, causal=True)
    assert_close(got, ref)


def test_broadcast_inputs_with_zero_strides():
    q, k, v = qkv(b=1)
    k3 = np.broadcast_to(k[:, :1], k.shape)  # every key the same row: stride 0 on seq
    assert k3.strides[1] == 0
    got = attnkit.attention(q, k3, v)
    want, _ = reference_attention(q, k3, v)
    assert_close(got, want)


def test_read_only_inputs_are_accepted_but_not_as_out():
    q, k, v = qkv()
    for x in (q, k, v):
        x.flags.writeable = False
    out = attnkit.attention(q, k, v)
    want, _ = reference_attention(q, k, v)
    assert_close(out, want)
    ro = np.zeros_like(out)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only"):
        attnkit.attention(q, k, v, out=ro)


def test_jax_arrays_via_dlpack():
    jax = pytest.importorskip("jax")
    q, k, v = qkv(3)
    jq, jk, jv = (jax.numpy.asarray(x) for x in (q, k, v))
    assert attnkit._debug_data_ptr(jq) == jq.unsafe_buffer_pointer()  # read in place
    out = attnkit.attention(jq, jk, jv, causal=True)
    assert isinstance(out, np.ndarray)  # JAX arrays are immutable: the result comes as numpy
    np.testing.assert_array_equal(out, attnkit.attention(q, k, v, causal=True))


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
def test_wrong_dtypes_raise_type_error():
    q, k, v = qkv()
    with pytest.raises(TypeError, match="q dtype float64 is not supported"):
        attnkit.attention(q.astype(np.float64), k, v)
    with pytest.raises(TypeError, match="k dtype int32 is not supported"):
        attnkit.attention(q, k.astype(np.int32), v)
    with pytest.raises(TypeError, match="v dtype f16 does not match q dtype f32"):
        attnkit.attention(q, k, v.astype(np.float16))
    with pytest.raises(TypeError, match="mask dtype float64"):
        attnkit.attention(q, k, v, mask=np.zeros((9, 15)))
    with pytest.raises(TypeError, match="q must be a numpy array"):
        attnkit.attention([[1.0]], k, v)
    with pytest.raises(TypeError, match="lse dtype float16"):
        attnkit.attention(q, k, v, lse=np.zeros((2, 4, 9), np.float16))


def test_wrong_shapes_and_values_raise_value_error_with_cpp_message():
    q, k, v = qkv()
    with pytest.raises(ValueError, match=r"q has 3 dimensions .*expected 4"):
        attnkit.attention(q[0], k, v)
    with pytest.raises(ValueError, match="head_dim"):  # from the C++ validation
        attnkit.attention(q, k[..., :8], v)
    with pytest.raises(ValueError, match="heads"):  # 4 query heads over 3 kv heads
        attnkit.attention(q, *(np.concatenate([x, x[:, :, :1]], axis=2) for x in (k, v)))
    with pytest.raises(ValueError, match="batch sizes differ"):
        attnkit.attention(q, k[:1], v[:1])
    with pytest.raises(ValueError, match=r"out shape \[2, 9, 4, 8\] does not match"):
        attnkit.attention(q, k, v, out=np.zeros((2, 9, 4, 8), np.float32))
    with pytest.raises(ValueError, match="causal_align 'middle'"):
        attnkit.attention(q, k, v, causal=True, causal_align="middle")
    with pytest.raises(ValueError, match="normalization 'tanh'"):
        attnkit.attention(q, k, v, normalization="tanh")
    with pytest.raises(ValueError, match="path 'gpu'"):
        attnkit.attention(q, k, v, path="gpu")
    with pytest.raises(ValueError, match="sink_logits has length 3; expected heads_q = 4"):
        attnkit.attention(q, k, v, sink_logits=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="mask shape"):
        attnkit.attention(q, k, v, mask=np.ones((2, 4, 9, 14), bool))
    with pytest.raises(ValueError, match="cu_seqlens_q and cu_seqlens_k must be given together"):
        attnkit.attention(q, k, v, cu_seqlens_q=[0, 9])
    with pytest.raises(ValueError, match="cu_seqlens_k ends at 99"):
        attnkit.attention(q[:1], k[:1], v[:1], cu_seqlens_q=[0, 9], cu_seqlens_k=[0, 99])
    with pytest.raises(ValueError, match="cu_seqlens_q decreases"):
        attnkit.attention(q[:1], k[:1], v[:1], cu_seqlens_q=[0, 5, 3, 9], cu_seqlens_k=[0, 5, 10, 15])
    with pytest.raises(ValueError, match="lse is only defined for softmax"):
        attnkit.attention(q, k, v, normalization="sigmoid", return_lse=True)
    with pytest.raises(ValueError, match="lse has shape"):
        attnkit.attention(q, k, v, lse=np.zeros((2, 9, 4), np.float32))
    with pytest.raises(ValueError, match="out overlaps q, k or v"):
        attnkit.attention(q, q, q, out=q)
    with pytest.raises(ValueError, match="threads"):
        attnkit.attention(q, k, v, threads=-2)
    with pytest.raises(ValueError, match="o_a shape .* and o_b shape .* must be equal"):
        attnkit.merge_states(q, np.zeros((2, 4, 9), np.float32), q[:, :8], np.zeros((2, 4, 8), np.float32))
    with pytest.raises(ValueError, match="lse_b has shape"):
        attnkit.merge_states(q, np.zeros((2, 4, 9), np.float32), q, np.zeros((2, 9, 4), np.float32))


def test_keyword_only_options():
    q, k, v = qkv()
    with pytest.raises(TypeError):
        attnkit.attention(q, k, v, True)  # causal must be passed by name


# ---------------------------------------------------------------------------------------------
# threads
# ---------------------------------------------------------------------------------------------
def test_calls_from_many_python_threads():
    cases = [qkv(seed, b=1, sq=33, sk=97, d=32) for seed in range(12)]
    wants = [attnkit.attention(q, k, v, causal=True, threads=1) for q, k, v in cases]
    refs = [reference_attention(q, k, v, causal=True)[0] for q, k, v in cases]
    for got, ref in zip(wants, refs):
        assert_close(got, ref)

    def work(i):
        q, k, v = cases[i % len(cases)]
        out = attnkit.attention(q, k, v, causal=True, threads=1 + i % 2)
        return i, out

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(work, range(96)))
    for i, out in results:
        # The kernel is deterministic for a given thread count; allow for a different split.
        np.testing.assert_allclose(out, wants[i % len(cases)], rtol=1e-5, atol=1e-6)


def test_gil_is_released_during_the_kernel():
    import threading
    import time

    q, k, v = qkv(b=1, sq=1024, sk=1024, hq=4, hkv=4, d=64)
    ticks = []
    done = threading.Event()

    def ticker():
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.0005)

    t = threading.Thread(target=ticker)
    t.start()
    try:
        start = time.perf_counter()
        for _ in range(3):
            attnkit.attention(q, k, v, threads=1)
        end = time.perf_counter()
    finally:
        done.set()
        t.join()
    # With the GIL held for the whole kernel, the ticker could not run during the calls.
    inside = [x for x in ticks if start < x < end]
    assert len(inside) >= 3, f"ticker ran {len(inside)} times during {end - start:.3f}s of kernels"


# ---------------------------------------------------------------------------------------------
# torch (optional)
# ---------------------------------------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("dtype_name", ["float32", "float16", "bfloat16"])
def test_torch_tensors_in_and_out(dtype_name):
    tdt = getattr(torch, dtype_name)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 9, 4, 16, generator=g).to(tdt)
    k = torch.randn(2, 15, 2, 16, generator=g).to(tdt)
    v = torch.randn(2, 15, 2, 16, generator=g).to(tdt)
    assert attnkit._debug_data_ptr(q) == q.data_ptr()
    out, lse = attnkit.attention(q, k, v, causal=True, return_lse=True)
    assert isinstance(out, torch.Tensor) and out.dtype == tdt and out.shape == (2, 9, 4, 16)
    assert isinstance(lse, torch.Tensor) and lse.dtype == torch.float32
    np_dtype = {"float32": np.float32, "float16": np.float16, "bfloat16": BF16}[dtype_name]
    to_np = lambda t: t.float().numpy().astype(np_dtype)  # noqa: E731
    want, want_lse = reference_attention(to_np(q), to_np(k), to_np(v), causal=True)
    assert_close(out.float().numpy(), want, np_dtype)
    assert_close(lse.numpy(), want_lse, np.float32 if dtype_name != "bfloat16" else BF16, what="lse")


@needs_torch
def test_torch_non_contiguous_and_out():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, 4, 9, 16, generator=g).transpose(1, 2)  # BHSD storage viewed as BSHD
    k = torch.randn(2, 2, 15, 16, generator=g).transpose(1, 2)
    v = torch.randn(2, 2, 15, 16, generator=g).transpose(1, 2)
    assert not q.is_contiguous()
    assert attnkit._debug_data_ptr(q) == q.data_ptr()
    assert attnkit._debug_view(q)[3] == tuple(q.stride())
    out = torch.empty(2, 9, 4, 16)
    res = attnkit.attention(q, k, v, causal=True, out=out)
    assert res is out
    want, _ = reference_attention(q.numpy(), k.numpy(), v.numpy(), causal=True)
    assert_close(out.numpy(), want)
    # torch's own SDPA (BHSD layout) as a second opinion.
    sdpa = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.repeat_interleave(2, dim=2).transpose(1, 2),
        v.repeat_interleave(2, dim=2).transpose(1, 2), is_causal=True).transpose(1, 2)
    np.testing.assert_allclose(out.numpy(), sdpa.numpy(), rtol=1e-4, atol=1e-5)
