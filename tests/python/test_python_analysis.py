"""attnkit.analysis (the attention instruments) from Python on the real Gemma 3 270M over KJV text:
the probability maps sum to 1 and are causal, sinks and entropy equal what the maps give when
recomputed here in numpy, massive activations meet their criteria, and retrieval heads equal the
C++ CLI's JSON and head map for the same prompts. Skipped when the GGUF is not installed
(scripts/setup.sh installs it); the retrieval test needs the CLI ($ATTNKIT_BUILD_DIR/tools/cli/attnkit)."""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess

import numpy as np
import pytest

import attnkit
from attnkit import analysis

try:
    MODEL = attnkit.default_model_path()
except ValueError:
    MODEL = None
pytestmark = pytest.mark.skipif(MODEL is None, reason="Gemma 3 270M GGUF not installed (scripts/setup.sh)")

REPO = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("ATTNKIT_BUILD_DIR", REPO / "build"))
N_LAYER, N_HEAD = 18, 4


@pytest.fixture(scope="module")
def model():
    return attnkit.Model.load(MODEL, threads=2)


@pytest.fixture(scope="module")
def ids(model):
    return analysis.kjv_tokens(model, 96, offset=2000)


@pytest.fixture(scope="module")
def maps(model, ids):
    return analysis.attention(model, ids)


def test_kjv_tokens_start_with_bos(model, ids):
    assert len(ids) == 96
    assert ids[0] == model.tokenizer.bos_id
    assert analysis.kjv_tokens(model, 40, offset=2000) == ids[:40]


def test_attention_maps_are_causal_probabilities(model, ids, maps):
    n = len(ids)
    assert maps.shape == (N_LAYER, N_HEAD, n, n)
    assert maps.dtype == np.float32
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-5)
    assert (maps >= 0).all()
    assert np.abs(np.triu(maps, 1)).max() == 0, "no attention to future keys"
    assert np.array_equal(maps[:, :, 0, 0], np.ones((N_LAYER, N_HEAD), np.float32))
    # Selecting layers and rows gives the same numbers as slicing the full maps.
    part = analysis.attention(model, ids, layers=[17, 5], rows=[n - 1, 10])
    np.testing.assert_array_equal(part, maps[[17, 5]][:, :, [n - 1, 10]])
    with pytest.raises(ValueError, match="layers: layer 18"):
        analysis.attention(model, ids, layers=[18])
    with pytest.raises(ValueError, match="rows: row 96"):
        analysis.attention(model, ids, rows=[96])


def test_sinks_equal_the_column_means_of_the_maps(model, ids, maps):
    s = analysis.sinks(model, ids)
    assert s["alpha"].shape == (N_LAYER, N_HEAD, 4)
    assert 0.0 <= s["sink_rate"] <= 1.0
    assert s["n_samples"] == 1 and s["n_tokens"] == len(ids)
    # alpha_k: mean over the rows that see token k (every row i >= k below the window).
    for k in range(4):
        np.testing.assert_allclose(s["alpha"][:, :, k], maps[:, :, k:, k].astype(np.float64).mean(-1), atol=1e-6)
    rate = (s["alpha"][:, :, 0] > 0.3).mean()
    assert s["sink_rate"] == pytest.approx(rate)
    assert s["sink_rate"] > 0, "Gemma 3 270M has first-token sinks"
    for key in ("mid_sinks", "key_norm_first", "key_norm_other", "cos_first", "cos_other"):
        assert s[key].shape == (N_LAYER, N_HEAD), key
    assert (s["key_norm_first"] > 0).all()
    # Two samples average: the rate is a mean over (sample, layer, head).
    two = analysis.sinks(model, [ids, analysis.kjv_tokens(model, 96, offset=50000)])
    assert two["n_samples"] == 2
    assert 0.0 <= two["sink_rate"] <= 1.0


def test_entropy_equals_the_maps_entropy(model, ids, maps):
    e = analysis.entropy(model, ids)
    assert e["entropy"].shape == (N_LAYER, N_HEAD)
    assert ((e["entropy"] >= 0) & (e["entropy"] <= 1 + 1e-9)).all()
    assert ((e["spectral_gap"] >= 0) & (e["spectral_gap"] <= 1)).all()
    assert (e["log_sigma"] > 0).all()
    a = maps.astype(np.float64)
    n = len(ids)
    want = np.zeros((N_LAYER, N_HEAD))
    for i in range(1, n):
        r = a[:, :, i, : i + 1]
        h = -np.where(r > 0, r * np.log(np.where(r > 0, r, 1.0)), 0.0).sum(-1)
        want += h / math.log(i + 1)
    want /= n - 1
    np.testing.assert_allclose(e["entropy"], want, atol=1e-5)


def test_massive_activations_meet_the_criteria(model):
    ids = analysis.kjv_tokens(model, 200, offset=3000)
    held_out = analysis.kjv_tokens(model, 160, offset=900000)
    r = analysis.massive_activations(model, ids, held_out)
    f = r["found"]
    assert len(f["value"]) > 0
    assert (np.abs(f["value"]) > 100).all()
    assert (np.abs(f["value"]) >= 1000 * f["row_median"]).all()
    assert (f["position"] == 0).any(), "the first token carries massive activations"
    assert r["max_abs"].shape == (N_LAYER,)
    assert r["massive_per_layer"].sum() == len(f["value"])
    assert r["ablation_layer"] >= 0
    assert r["ppl_zero"] > r["ppl_original"]
    assert abs(r["ppl_mean"] - r["ppl_original"]) < abs(r["ppl_zero"] - r["ppl_original"])
    with pytest.raises(ValueError, match="tokens"):
        analysis.massive_activations(model, [2])


def test_retrieval_heads_match_the_cli(model, tmp_path):
    cli = BUILD / "tools" / "cli" / "attnkit"
    if not cli.exists():
        pytest.fail(f"CLI not found at {cli}; build it (target attnkit_cli) or set ATTNKIT_BUILD_DIR")
    args = dict(lengths=[600], depths=[0.3, 0.7], segment=64, repeats=3)
    subprocess.run([str(cli), "analyze", "retrieval-heads", "--length", "600", "--depths", "0.3,0.7", "--segment", "64",
                    "--repeats", "3", "--no-plot", "--out", str(tmp_path / "cli")], check=True, capture_output=True)
    j = json.loads((tmp_path / "cli" / "retrieval_heads.json").read_text())
    r = analysis.retrieval_heads(model, **args, head_map=str(tmp_path / "map.json"), razor_map=str(tmp_path / "razor.json"))
    assert r["score"].shape == (N_LAYER, N_HEAD)
    assert ((r["score"] >= 0) & (r["score"] <= 1 + 1e-9)).all()
    assert r["counted"] == j["counted"] == 2
    np.testing.assert_allclose(r["score"].reshape(-1), j["score"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(r["induction"].reshape(-1), j["induction"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(r["echo"].reshape(-1), j["echo"], rtol=0, atol=1e-9)
    ranked = analysis.ranked(r["score"])
    assert [(x["layer"], x["head"]) for x in j["ranked"]] == [(l, h) for l, h, _ in ranked[: len(j["ranked"])]]
    top_layer = ranked[0][0]
    assert (top_layer + 1) % 6 == 0, f"the top retrieval head is in a global layer, got layer {top_layer}"
    # The head maps equal the CLI's, field by field.
    for mine, cli_map in (("map.json", "head_map_retrieval.json"), ("razor.json", "head_map_razor.json")):
        a = json.loads((tmp_path / mine).read_text())
        b = json.loads((tmp_path / "cli" / cli_map).read_text())
        assert a == b, mine
    assert [p["length"] for p in r["prompt_list"]] == [600, 600]
