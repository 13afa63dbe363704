"""attnkit's charts, drawn with matplotlib: the one plotting path of the project.

The C++ side (include/attnkit/plot.h, used by `attnkit eval niah` and the other evaluations)
embeds this file and runs it as ``python plot.py SPEC.json``; Python users call the functions
directly. Two kinds of chart cover the evaluations:

  heatmap(path, values, ...)  a grid of values in [vmin, vmax] with row / column labels, axis
                              labels and a colorbar (NIAH depth x length, layer x head maps);
                              None or NaN cells are drawn grey ("not run").
  lines(path, series, ...)    one line per series with markers, axis labels and a legend
                              (accuracy against budget, per-token curves); a series with
                              "dashed": true is a black dashed reference line (a ceiling).

Every chart is written to a temporary file in the destination folder and renamed into place, so
a reader never sees a partial file and a failed run leaves the previous file intact. The format
follows the path's suffix (.png, .svg, .pdf).
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
matplotlib.rcParams["svg.fonttype"] = "none"  # SVG text stays text (searchable, editable)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: str) -> None:
    """Writes fig to path through a temporary file in the same folder and a rename."""
    folder = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1].lower() or ".png"
    fd, tmp = tempfile.mkstemp(prefix=".attnkit-plot-", suffix=suffix, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format=suffix[1:], dpi=120, bbox_inches="tight")
        # mkstemp creates the file 0600; a chart gets the mode any new file would (0666 - umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    finally:
        plt.close(fig)


def _grid(values) -> np.ndarray:
    rows = [[math.nan if v is None else float(v) for v in row] for row in values]
    if not rows or not rows[0]:
        raise ValueError("heatmap values are empty; expected at least one row and one column")
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise ValueError(f"heatmap rows have different lengths {sorted(widths)}; expected a rectangular grid")
    return np.array(rows, dtype=float)


def heatmap(path: str, values, *, row_labels=None, col_labels=None, title: str = "", xlabel: str = "",
            ylabel: str = "", colorbar_label: str = "", vmin: float = 0.0, vmax: float = 1.0,
            cmap: str = "RdYlGn", annotate: bool = True, fmt: str = "{:.2f}") -> None:
    """A grid of cells coloured by value (rows top to bottom, columns left to right)."""
    grid = _grid(values)
    n_rows, n_cols = grid.shape
    if row_labels is not None and len(row_labels) != n_rows:
        raise ValueError(f"row_labels has {len(row_labels)} entries; expected {n_rows} (one per row)")
    if col_labels is not None and len(col_labels) != n_cols:
        raise ValueError(f"col_labels has {len(col_labels)} entries; expected {n_cols} (one per column)")
    if not vmin < vmax:
        raise ValueError(f"vmin {vmin} must be below vmax {vmax}")
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * n_cols + 2.5), max(3.0, 0.5 * n_rows + 1.8)))
    colors = plt.get_cmap(cmap).with_extremes(bad="#bbbbbb")  # missing cells grey
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=colors, vmin=vmin, vmax=vmax, aspect="auto",
                      interpolation="nearest")
    ax.set_xticks(range(n_cols), labels=[str(c) for c in col_labels] if col_labels is not None else None)
    ax.set_yticks(range(n_rows), labels=[str(r) for r in row_labels] if row_labels is not None else None)
    if n_cols > 8:
        plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    bar = fig.colorbar(image, ax=ax)
    bar.set_label(colorbar_label)
    if annotate and n_rows * n_cols <= 400:
        for i in range(n_rows):
            for j in range(n_cols):
                if not math.isnan(grid[i, j]):
                    ax.text(j, i, fmt.format(grid[i, j]), ha="center", va="center", fontsize=8, color="black")
    _save(fig, path)


def lines(path: str, series, *, title: str = "", xlabel: str = "", ylabel: str = "", logx: bool = False,
          ylim=None) -> None:
    """One line per series; series is a list of {"label": str, "x": [...], "y": [...], "dashed": bool}."""
    if not series:
        raise ValueError("lines needs at least one series")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, s in enumerate(series):
        x = [float(v) for v in s["x"]]
        y = [math.nan if v is None else float(v) for v in s["y"]]
        if len(x) != len(y):
            raise ValueError(f"series {i} ({s.get('label', '')!r}) has {len(x)} x values and {len(y)} y values")
        if not x:
            raise ValueError(f"series {i} ({s.get('label', '')!r}) is empty")
        label = s.get("label", f"series {i}")
        if s.get("dashed", False):  # a reference line: a ceiling or a baseline
            ax.plot(x, y, linestyle="--", color="black", linewidth=1.2, label=label)
        else:
            ax.plot(x, y, marker="o" if len(x) <= 50 else None, markersize=4, label=label)
    if logx:
        ax.set_xscale("log", base=2)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    _save(fig, path)


def render(spec: dict) -> None:
    """Draws the chart a JSON spec describes: {"kind": "heatmap" | "lines", "path": ..., ...}."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    path = spec.pop("path", None)
    if not path:
        raise ValueError("the chart spec has no path")
    if kind == "heatmap":
        values = spec.pop("values")
        heatmap(path, values, **spec)
    elif kind == "lines":
        series = spec.pop("series")
        lines(path, series, **spec)
    else:
        raise ValueError(f"chart kind {kind!r} is not supported; expected 'heatmap' or 'lines'")


def main(argv) -> int:
    if len(argv) != 2:
        print("usage: plot.py SPEC.json", file=sys.stderr)
        return 2
    try:
        with open(argv[1]) as f:
            render(json.load(f))
    except Exception as e:  # reported to the C++ caller through stderr and the exit status
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
