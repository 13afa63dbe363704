"""attnkit.plot (python/attnkit/plot.py): the matplotlib charts the C++ API also draws through."""

from __future__ import annotations

import math
import os

import pytest

pytest.importorskip("matplotlib", reason="matplotlib is in requirements.txt; scripts/setup.sh installs it")
from attnkit import plot  # noqa: E402


def _text(path):
    with open(path) as f:
        return f.read()


def test_heatmap_svg_has_labels_colorbar_and_values(tmp_path):
    path = tmp_path / "grid.svg"
    plot.heatmap(str(path), [[1.0, 0.5], [None, 0.25]], row_labels=["layer 0", "layer 1"], col_labels=["h0", "h1"],
                 xlabel="head", ylabel="layer", colorbar_label="retrieval score", title="Retrieval heads")
    svg = _text(path)
    for text in ["Retrieval heads", "head", "layer 1", "h1", "retrieval score", "0.50", "0.25"]:
        assert text in svg, text
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".attnkit-plot-")]


def test_lines_svg_has_legend(tmp_path):
    path = tmp_path / "curve.svg"
    plot.lines(str(path), [{"label": "exact", "x": [1, 2, 3], "y": [0.1, math.nan, 0.3]},
                           {"label": "window", "x": [1, 2, 3], "y": [0.2, 0.2, 0.2]}],
               xlabel="token", ylabel="loss")
    svg = _text(path)
    assert "exact" in svg and "window" in svg and "token" in svg and "loss" in svg


def test_bad_input_is_a_value_error_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "grid.png"
    path.write_bytes(b"previous")
    with pytest.raises(ValueError, match="different lengths"):
        plot.heatmap(str(path), [[1.0, 0.5], [1.0]])
    with pytest.raises(ValueError, match="col_labels has 1 entries; expected 2"):
        plot.heatmap(str(path), [[1.0, 0.5]], col_labels=["a"])
    with pytest.raises(ValueError, match="series 0"):
        plot.lines(str(path), [{"label": "a", "x": [1, 2], "y": [1]}])
    assert path.read_bytes() == b"previous"
