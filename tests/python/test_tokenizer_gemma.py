"""attnkit's GGUF tokenizer against SentencePiece on real text.

Reference: the `sentencepiece` PyPI package (version printed in the test ids' module docstring at
run time via sentencepiece.__version__), loading a BPE model that we build from the GGUF's own
vocabulary with `sentencepiece_model_pb2` (needs `protobuf`). The model settings are Gemma's:
BPE with byte fallback, identity normalization, whitespace escaped to U+2581, no dummy prefix
(GGUF tokenizer.ggml.add_space_prefix = false), no extra-whitespace removal. llama.cpp's converter
stores user-defined tokens with real spaces ("  ") where Gemma's tokenizer.model has "▁▁"; we undo
that when building the reference, so the reference is the original SentencePiece model.

Corpus: the King James Bible (Debian bible-kjv, every verse, ASCII), plus every line containing
non-ASCII text found in real text files on the system (Debian copyright files and changelogs,
glibc locale sources, X11 Compose tables), plus multi-line chunks encoded as one string.
The C++ side runs through tests/tools/gguf_tool (built by CMake).
"""
import glob
import gzip
import json
import shutil
import subprocess

import numpy as np
import pytest
import sentencepiece as spm

from test_gguf_common import find_tool, model_path, reference_reader, sentencepiece_model_bytes


@pytest.fixture(scope="module")
def sp_reference(tmp_path_factory):
    r = reference_reader(model_path())
    path = tmp_path_factory.mktemp("sp") / "gemma_from_gguf.model"
    path.write_bytes(sentencepiece_model_bytes(r))
    sp = spm.SentencePieceProcessor(model_file=str(path))
    assert sp.vocab_size() == len(r.fields["tokenizer.ggml.tokens"].contents())
    return sp


def kjv_lines():
    exe = shutil.which("bible")
    if exe is None:
        pytest.fail("the `bible` program (Debian bible-kjv) is not installed: run scripts/setup.sh")
    out = subprocess.run([exe, "-f", "Gen1:1-Rev22:21"], check=True, capture_output=True).stdout.decode("utf-8")
    lines = [l for l in out.split("\n") if l]
    assert len(lines) > 30000
    return lines


def non_ascii_lines(limit=6000):
    """Real lines with non-ASCII characters from text files shipped by Debian packages."""
    sources = sorted(glob.glob("/usr/share/doc/*/copyright")) + sorted(glob.glob("/usr/share/doc/*/changelog.Debian.gz"))
    sources += sorted(glob.glob("/usr/share/i18n/locales/*")) + sorted(glob.glob("/usr/share/X11/locale/*/Compose"))
    seen, lines = set(), []
    for src in sources:
        try:
            raw = gzip.open(src).read() if src.endswith(".gz") else open(src, "rb").read()
            text = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError, EOFError):
            continue
        for l in text.split("\n"):
            if any(ord(c) > 127 for c in l) and l not in seen:
                seen.add(l)
                lines.append(l)
                if len(lines) >= limit:
                    return lines
    return lines


def run_tool(lines, tmp_path, *flags):
    """Encodes and decodes every record with the C++ tokenizer (records are NUL-separated)."""
    assert not any("\0" in l for l in lines)
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(("\0".join(lines) + "\0").encode("utf-8"))
    flags = flags + ("--nul",)
    out = tmp_path / "out.jsonl"
    subprocess.run([find_tool(), "tokenize", model_path(), str(corpus), str(out), *flags], check=True)
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(rows) == len(lines)
    return rows


def compare(lines, rows, sp, add_bos):
    mismatches = []
    for i, (line, row) in enumerate(zip(lines, rows)):
        want = sp.encode(line)
        if add_bos:
            want = [sp.bos_id()] + want
        if row["ids"] != want:
            mismatches.append((i, line, row["ids"][:20], want[:20]))
        decoded = bytes(row["decoded"]).decode("utf-8")
        assert decoded == line, f"round trip failed on line {i}: {line!r} -> {decoded!r}"
    assert not mismatches, f"{len(mismatches)} of {len(lines)} lines differ; first: {mismatches[:3]}"


def test_kjv_every_verse_matches_sentencepiece(sp_reference, tmp_path):
    lines = kjv_lines()
    rows = run_tool(lines, tmp_path, "--bos")
    compare(lines, rows, sp_reference, add_bos=True)


def test_non_ascii_real_text_matches_sentencepiece(sp_reference, tmp_path):
    lines = non_ascii_lines()
    assert len(lines) >= 200, f"only {len(lines)} non-ASCII lines found on this system"
    # Byte fallback must actually be exercised: some characters are not in the vocabulary.
    ids = [i for l in lines for i in sp_reference.encode(l)]
    assert any(sp_reference.is_byte(i) for i in ids)
    rows = run_tool(lines, tmp_path)
    compare(lines, rows, sp_reference, add_bos=False)


def test_generated_scripts_and_whitespace_match_sentencepiece(sp_reference, tmp_path):
    import unicodedata

    rng = np.random.default_rng(6)
    lines = []
    # Words from many scripts, built from code point ranges with named characters.
    ranges = [(0x00C0, 0x024F), (0x0370, 0x03FF), (0x0400, 0x04FF), (0x0590, 0x05FF), (0x0600, 0x06FF),
              (0x0900, 0x097F), (0x0E00, 0x0E7F), (0x3040, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3),
              (0x1F300, 0x1F6FF), (0x2000, 0x206F), (0x10000, 0x1007F)]
    for k in range(1500):
        words = []
        for _ in range(int(rng.integers(1, 8))):
            lo, hi = ranges[int(rng.integers(len(ranges)))]
            cps = [int(c) for c in rng.integers(lo, hi + 1, size=int(rng.integers(1, 6)))]
            words.append("".join(chr(c) for c in cps if unicodedata.name(chr(c), "")))
        seps = [" ", "  ", "   ", "\t", " \t ", "", "    "]
        line = ""
        for w in words:
            line += w + seps[int(rng.integers(len(seps)))]
        lines.append(line)
    lines += ["", " ", "  leading", "trailing  ", "<table><tr><td>x</td></tr></table>", "a" * 300, " " * 40,
              "<start_of_turn>user", "naïve café <b>bold</b> 12345678 3.14159"]
    rows = run_tool(lines, tmp_path)
    compare(lines, rows, sp_reference, add_bos=False)


def test_multiline_chunks_match_sentencepiece(sp_reference, tmp_path):
    # Whole paragraphs with newlines inside, each encoded as one string: "\n", "\n\n", ... are
    # user-defined tokens that must be matched (longest first) inside longer text.
    verses = kjv_lines()[:600]
    seps = ["\n", "\n\n", "\n\n\n", " \n", "\n  "]
    chunks = [seps[k % len(seps)].join(verses[i:i + 20]) for k, i in enumerate(range(0, 600, 20))]
    rows = run_tool(chunks, tmp_path)
    compare(chunks, rows, sp_reference, add_bos=False)


def test_parse_special_control_tokens(sp_reference, tmp_path):
    # With --special, control-token texts become their ids; SentencePiece never parses control
    # tokens from text, so the reference is built piecewise: control id + encode(rest).
    lines = ["<start_of_turn>user\nWho begat Enos?<end_of_turn>\n<start_of_turn>model\n",
             "<bos>In the beginning<eos>", "no specials here", "<start_of_turn><start_of_turn>x<end_of_turn>"]
    rows = run_tool(lines, tmp_path, "--special")
    specials = {"<start_of_turn>": sp_reference.piece_to_id("<start_of_turn>"),
                "<end_of_turn>": sp_reference.piece_to_id("<end_of_turn>"),
                "<bos>": sp_reference.bos_id(), "<eos>": sp_reference.eos_id()}
    assert specials["<start_of_turn>"] == 105 and specials["<end_of_turn>"] == 106
    for line, row in zip(lines, rows):
        want, rest = [], line
        while rest:
            hit = min(((rest.find(s), s) for s in specials if rest.find(s) >= 0), default=None)
            if hit is None:
                want += sp_reference.encode(rest)
                break
            pos, s = hit
            want += sp_reference.encode(rest[:pos]) + [specials[s]]
            rest = rest[pos + len(s):]
        assert row["ids"] == want, line
        # Control tokens decode to nothing.
        stripped = line
        for s in specials:
            stripped = stripped.replace(s, "")
        assert bytes(row["decoded"]).decode("utf-8") == stripped
