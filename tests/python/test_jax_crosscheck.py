"""Cross-check of attnkit's exact attention against a third-party implementation:
``jax.nn.dot_product_attention`` on CPU (PyPI package ``jax``; the version in use is printed in
every failure message and was 0.10.2 when this test was written).

The attnkit side runs through ``tests/tools/attention_driver`` (built by CMake) on .npy files.
The driver is looked up in ``$ATTNKIT_BUILD_DIR/tests/attention_driver`` (default
``<repo>/build``).

Conventions that differ and how the cases handle them:
- Layout: both use [batch, seq, heads, head_dim]; JAX supports GQA/MQA through K/V with fewer
  heads (query head h reads kv head h // (Hq // Hkv), the same rule as attnkit).
- Causal alignment: JAX's ``is_causal`` is top-left (query i sees keys j <= i) and its
  ``local_window_size=(left, right)`` is also anchored at query position i. attnkit defaults to
  bottom-right (FlashAttention); for Sq == Sk the two agree, for Sq != Sk the driver is run with
  ``--top-left`` (which also anchors attnkit's window at position i).
- JAX gives a fully masked row a uniform average (it masks with a large negative number) where
  attnkit gives 0; no case here has a fully masked row.

Tolerance: both sides compute in f32, so each is compared with a float64 numpy computation of the
same math, and attnkit's error must be at most 4x JAX's error plus 2e-6 (the project's tolerance
rule: FlashAttention's "no worse than a plain implementation in the same precision"), and attnkit
must agree with JAX directly within 2e-5. The LSE the driver writes is checked against the float64
log-sum-exp.
"""

import os
import pathlib
import subprocess
import zlib

import numpy as np
import pytest

import jax  # noqa: E402  (required: scripts/setup.sh installs it; a missing jax must fail, not skip)
import jax.numpy as jnp  # noqa: E402

jax.config.update("jax_platforms", "cpu")

REPO = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("ATTNKIT_BUILD_DIR", REPO / "build"))
DRIVER = BUILD / "tests" / "attention_driver"
JAX_VERSION = jax.__version__


def _write_npy(path, a):
    np.save(path, np.ascontiguousarray(a, dtype="<f4"))


def run_attnkit(tmp_path, q, k, v, *, causal=False, top_left=False, window=None, scale=None, threads=None):
    if not DRIVER.exists():
        pytest.fail(
            f"attention driver not found at {DRIVER}; build it (cmake --build <build> --target attention_driver) "
            f"and/or set ATTNKIT_BUILD_DIR to the CMake build folder"
        )
    paths = {n: tmp_path / f"{n}.npy" for n in ("q", "k", "v", "out", "lse")}
    for n, a in (("q", q), ("k", k), ("v", v)):
        _write_npy(paths[n], a)
    cmd = [str(DRIVER)] + [str(paths[n]) for n in ("q", "k", "v", "out", "lse")]
    if causal:
        cmd.append("--causal")
    if top_left:
        cmd.append("--top-left")
    if window is not None:
        cmd += ["--window", str(window[0]), str(window[1])]
    if scale is not None:
        cmd += ["--scale", repr(float(scale))]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"driver failed ({' '.join(cmd)}): {res.stderr}"
    return np.load(paths["out"]), np.load(paths["lse"])


def reference_f64(q, k, v, *, causal, window, scale):
    """Float64 attention with top-left positions (the convention shared by every case here)."""
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    b, sq, hq, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    g = hq // hkv
    k = np.repeat(k, g, axis=2)
    v = np.repeat(v, g, axis=2)
    s = np.einsum("bqhd,bkhd->bhqk", q, k) * (scale if scale is not None else 1.0 / np.sqrt(d))
    i = np.arange(sq)[:, None]
    j = np.arange(sk)[None, :]
    visible = np.ones((sq, sk), dtype=bool)
    if causal:
        visible &= j <= i
    if window is not None:
        left, right = window
        if left >= 0:
            visible &= j >= i - left
        if right >= 0:
            visible &= j <= i + right
    assert visible.any(axis=1).all(), "cases must not have fully masked rows (JAX and attnkit differ there)"
    s = np.where(visible, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    p = np.exp(s - m)
    denom = p.sum(axis=-1, keepdims=True)
    out = np.einsum("bhqk,bkhd->bqhd", p / denom, v)
    lse = (m + np.log(denom))[..., 0]  # [b, h, q]
    return out, lse


def run_jax(q, k, v, *, causal, window, scale):
    kwargs = {"is_causal": causal, "implementation": "xla"}
    if window is not None:
        # JAX takes (left, right) with no "unbounded" sentinel; a bound as long as the keys is the same.
        sk = k.shape[1]
        kwargs["local_window_size"] = tuple(sk if w < 0 else w for w in window)
    if scale is not None:
        kwargs["scale"] = float(scale)
    out = jax.nn.dot_product_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), **kwargs)
    return np.asarray(out)


CASES = [
    # name, batch, seq_q, seq_kv, heads_q, heads_kv, head_dim, causal, window (left, right), scale
    ("noncausal", 2, 97, 97, 4, 4, 64, False, None, None),
    ("noncausal_rect", 1, 37, 300, 2, 2, 32, False, None, None),
    ("causal", 2, 130, 130, 4, 4, 64, True, None, None),
    ("causal_d128_long", 1, 600, 600, 2, 2, 128, True, None, None),
    ("causal_topleft_rect", 1, 80, 200, 2, 2, 48, True, None, None),
    ("gqa2_causal", 1, 129, 129, 8, 4, 64, True, None, None),
    ("gqa4_noncausal", 2, 65, 65, 8, 2, 40, False, None, None),
    ("gqa8_causal", 1, 100, 100, 8, 1, 64, True, None, None),  # MQA
    ("window_causal", 1, 300, 300, 4, 2, 64, True, (32, 0), None),
    ("window_both_sides", 1, 200, 200, 2, 2, 64, False, (16, 8), None),
    ("window_rect_topleft", 1, 90, 160, 2, 1, 32, False, (20, 20), None),
    ("scale", 1, 64, 64, 2, 2, 16, True, None, 0.7),
    ("decode_gqa", 1, 1, 2048, 8, 2, 128, False, None, None),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matches_jax(tmp_path, case):
    name, b, sq, sk, hq, hkv, d, causal, window, scale = case
    rng = np.random.default_rng(zlib.crc32(name.encode()))  # reproducible across runs
    q = rng.uniform(-1, 1, (b, sq, hq, d)).astype(np.float32)
    k = rng.uniform(-1, 1, (b, sk, hkv, d)).astype(np.float32)
    v = rng.uniform(-1, 1, (b, sk, hkv, d)).astype(np.float32)
    # Every case is checked in top-left positions (JAX's convention); for Sq == Sk that is also
    # attnkit's default bottom-right alignment, so only rectangular cases pass --top-left.
    top_left = sq != sk
    ours, lse = run_attnkit(tmp_path, q, k, v, causal=causal, top_left=top_left, window=window, scale=scale)
    theirs = run_jax(q, k, v, causal=causal, window=window, scale=scale)
    ref, ref_lse = reference_f64(q, k, v, causal=causal, window=window, scale=scale)

    ctx = f"[{name}, jax {JAX_VERSION}]"
    assert ours.shape == theirs.shape == ref.shape, ctx
    assert np.isfinite(ours).all(), f"{ctx} attnkit produced NaN/Inf"
    err_ours = float(np.abs(ours - ref).max())
    err_jax = float(np.abs(theirs - ref).max())
    diff = float(np.abs(ours - theirs).max())
    assert err_ours <= 4 * err_jax + 2e-6, f"{ctx} attnkit max err {err_ours:.3g} vs JAX's {err_jax:.3g} (float64 ref)"
    assert diff <= 2e-5, f"{ctx} attnkit and JAX differ by {diff:.3g}"
    nmse = float(((ours - ref) ** 2).sum() / (ref**2).sum())
    assert nmse < 1e-11, f"{ctx} NMSE {nmse:.3g}"
    lse_err = float(np.abs(lse - ref_lse).max())
    assert lse_err <= 1e-5 * max(1.0, float(np.abs(ref_lse).max())), f"{ctx} LSE max err {lse_err:.3g}"


def test_default_causal_is_bottom_right_for_rect(tmp_path):
    """Without --top-left attnkit aligns causality bottom-right: query i of Sq sees keys
    j <= i + Sk - Sq. That equals JAX's top-left result on the last Sq rows of a square problem."""
    rng = np.random.default_rng(7)
    sq, sk, h, d = 40, 150, 2, 32
    q_full = rng.uniform(-1, 1, (1, sk, h, d)).astype(np.float32)
    k = rng.uniform(-1, 1, (1, sk, h, d)).astype(np.float32)
    v = rng.uniform(-1, 1, (1, sk, h, d)).astype(np.float32)
    ours, _ = run_attnkit(tmp_path, q_full[:, sk - sq :], k, v, causal=True)
    theirs = run_jax(q_full, k, v, causal=True, window=None, scale=None)[:, sk - sq :]
    diff = float(np.abs(ours - theirs).max())
    assert diff <= 2e-5, f"[jax {JAX_VERSION}] bottom-right causal differs from JAX's square-causal tail by {diff:.3g}"
