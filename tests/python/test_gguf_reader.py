"""attnkit's GGUF reader and dequantizer against the `gguf` PyPI package (llama.cpp's reference
Python reader, GGUFReader, and its numpy dequantizer gguf.quants.dequantize) on the real
Gemma 3 270M file: every metadata key and value, every tensor info, and rows of every tensor
(all rows of every tensor but the 262144-row embedding, of which a few thousand), plus random
blocks of every type attnkit dequantizes. The C++ side runs through tests/tools/gguf_tool.
"""
import json
import subprocess

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V

from test_gguf_common import find_tool, model_path, reference_reader


@pytest.fixture(scope="module")
def ref():
    return reference_reader(model_path())


@pytest.fixture(scope="module")
def info():
    out = subprocess.run([find_tool(), "info", model_path()], check=True, capture_output=True).stdout
    return json.loads(out)


def test_version_and_layout(ref, info):
    assert info["version"] == int(ref.fields["GGUF.version"].contents())
    assert info["alignment"] == ref.alignment
    assert info["data_offset"] == ref.data_offset


def test_every_metadata_value_matches(ref, info):
    ours = {e["key"]: e for e in info["metadata"]}
    theirs = {k: f for k, f in ref.fields.items() if not k.startswith("GGUF.")}
    assert list(ours) == list(theirs)  # same keys, same order
    for key, f in theirs.items():
        e = ours[key]
        t = V(f.types[0])
        assert e["type"] == t.name.lower(), key
        want = f.contents()
        if t == V.ARRAY:
            assert e["array_type"] == V(f.types[1]).name.lower(), key
            got = e["value"]
            assert len(got) == len(want), key
            if f.types[1] in (V.FLOAT32, V.FLOAT64):
                np.testing.assert_array_equal(np.asarray(got, np.float64), np.asarray(want, np.float64), err_msg=key)
            else:
                assert got == list(want), key
        elif t in (V.FLOAT32, V.FLOAT64):
            assert e["value"] == float(want), key
        else:
            assert e["value"] == want, key


def test_every_tensor_info_matches(ref, info):
    ours = info["tensors"]
    assert len(ours) == len(ref.tensors) == 236
    for o, t in zip(ours, ref.tensors):
        assert o["name"] == t.name
        assert o["dims"] == [int(d) for d in t.shape]
        assert o["type"] == int(t.tensor_type)
        assert o["file_offset"] == t.data_offset
        assert o["n_bytes"] == t.n_bytes


def row_plan(t, rng):
    rows = int(np.prod(t.shape[1:])) if len(t.shape) > 1 else 1
    if rows <= 4096:
        return [(0, rows)]
    mid = int(rng.integers(256, rows - 512))
    return [(0, 256), (mid, 256), (rows - 256, 256)]


def test_dequantize_every_tensor_matches(ref, tmp_path):
    rng = np.random.default_rng(6)
    plan = [(t, b, c) for t in ref.tensors for b, c in row_plan(t, rng)]
    spec = tmp_path / "spec.txt"
    spec.write_text("".join(f"{t.name} {b} {c}\n" for t, b, c in plan))
    out = tmp_path / "out.f32"
    subprocess.run([find_tool(), "dequant-batch", model_path(), str(spec), str(out)], check=True)
    ours = np.fromfile(out, dtype=np.float32)
    pos = 0
    types_seen = set()
    raw_all = np.asarray(ref.data)
    for t, b, c in plan:
        ne0 = int(t.shape[0])
        bs, ts = gguf.GGML_QUANT_SIZES[t.tensor_type]
        row_bytes = ne0 // bs * ts
        raw = raw_all[t.data_offset + b * row_bytes: t.data_offset + (b + c) * row_bytes].reshape(c, row_bytes)
        want = gguf.quants.dequantize(raw, t.tensor_type).astype(np.float32).reshape(-1)
        got = ours[pos: pos + c * ne0]
        pos += c * ne0
        assert got.size == want.size, t.name
        # Same f32 operations in the same order: the results must be identical.
        np.testing.assert_array_equal(got, want, err_msg=f"{t.name} rows [{b}, {b + c})")
        assert np.isfinite(got).all(), t.name
        types_seen.add(t.tensor_type)
    assert pos == ours.size
    assert types_seen == {Q.F32, Q.Q5_0, Q.Q4_K, Q.Q8_0, Q.Q6_K}


# Byte offsets of the f16 scale fields in each block; random bytes elsewhere.
F16_FIELDS = {Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q8_0: [0], Q.Q2_K: [80, 82],
              Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208]}


@pytest.mark.parametrize("qtype", list(F16_FIELDS) + [Q.F32, Q.F16, Q.BF16])
def test_dequantize_random_blocks_matches(qtype, tmp_path):
    rng = np.random.default_rng(int(qtype))
    bs, ts = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = 2048 // bs * 7 + 3  # an odd number of blocks, not a multiple of anything
    if qtype == Q.F32:
        raw = rng.standard_normal(n_blocks).astype(np.float32).view(np.uint8)
    elif qtype == Q.F16:
        raw = (rng.standard_normal(n_blocks) * 100).astype(np.float16).view(np.uint8)
    elif qtype == Q.BF16:
        x = (rng.standard_normal(n_blocks) * 1e4).astype(np.float32)
        raw = (x.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    else:
        raw = rng.integers(0, 256, size=(n_blocks, ts), dtype=np.uint8)
        for off in F16_FIELDS[qtype]:
            scales = (rng.uniform(-2, 2, size=n_blocks) * 10.0 ** rng.integers(-4, 1, size=n_blocks)).astype(np.float16)
            raw[:, off:off + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
        raw = raw.reshape(-1)
    n = n_blocks * bs
    src = tmp_path / "in.bin"
    raw.tofile(src)
    out = tmp_path / "out.f32"
    subprocess.run([find_tool(), "dequant-raw", str(int(qtype)), str(src), str(n), str(out)], check=True)
    got = np.fromfile(out, dtype=np.float32)
    want = gguf.quants.dequantize(raw.reshape(n_blocks, -1) if bs > 1 else raw, qtype).astype(np.float32).reshape(-1)
    assert got.size == n
    np.testing.assert_array_equal(got, want)
    assert np.abs(got).max() > 0


def test_type_table_matches_gguf_sizes():
    out = json.loads(subprocess.run([find_tool(), "types"], check=True, capture_output=True).stdout)
    assert len(out) >= 30
    for tid, e in out.items():
        bs, ts = gguf.GGML_QUANT_SIZES[Q(int(tid))]
        assert (e["block_elems"], e["block_bytes"]) == (bs, ts), Q(int(tid)).name
        assert e["name"].lower() == Q(int(tid)).name.lower()
    # attnkit dequantizes every one of these types (float, legacy and k-quants), as the reference does.
    for q in (Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K):
        assert out[str(int(q))]["can_dequantize"], q.name


def test_truncated_and_garbage_files_fail_cleanly(tmp_path):
    # The tool must report an error (exit 1, message on stderr), not crash, on a bad file.
    with open(model_path(), "rb") as f:
        head = f.read(1 << 20)
    cases = {"empty": b"", "magic": b"GGUX" + head[4:], "truncated_1M": head, "truncated_17": head[:17],
             "garbage": np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()}
    for name, data in cases.items():
        p = tmp_path / f"{name}.gguf"
        p.write_bytes(data)
        r = subprocess.run([find_tool(), "info", str(p)], capture_output=True)
        assert r.returncode == 1, (name, r.returncode, r.stderr)
        assert b"gguf" in r.stderr, name
