"""attnkit.Model used from several Python threads at once. The bindings release the GIL, so the
threads really run together inside the engine: calls on one shared Model must be serialized by the
model's lock (no corrupted cache, no heap damage), and calls on separate models must still give
what a single thread gets. Skipped when the Gemma 3 270M GGUF is not installed."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import attnkit

try:
    MODEL = attnkit.default_model_path()
except ValueError:
    MODEL = None
needs_model = pytest.mark.skipif(MODEL is None, reason="Gemma 3 270M GGUF not installed (scripts/setup.sh)")

PROMPTS = [
    "The capital of France is",
    "In the beginning God created the heaven and the earth. And the earth was",
    "def fibonacci(n):",
    "Water boils at a temperature of",
]
N_THREADS = 4
ROUNDS = 3


def run_threads(work):
    """Runs work(i) in N_THREADS threads started together; re-raises the first failure."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(N_THREADS)

    def body(i):
        try:
            barrier.wait()
            work(i)
        except BaseException as e:  # noqa: BLE001 - reported to the test below
            errors.append(e)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


@pytest.fixture(scope="module")
def reference():
    m = attnkit.Model.load(MODEL, threads=1)
    logits = [m.last_logits(p) for p in PROMPTS]
    texts = [m.generate(p, max_tokens=6) for p in PROMPTS]
    ppl = m.perplexity(PROMPTS[1])["perplexity"]
    return m, logits, texts, ppl


@needs_model
def test_one_model_shared_by_threads_matches_a_single_thread(reference):
    m, want_logits, want_texts, want_ppl = reference
    got: dict[tuple[int, int], object] = {}

    def work(i):
        p = i % len(PROMPTS)
        for r in range(ROUNDS):
            # Mixed calls: each resets and refills the one cache another thread also uses.
            if (i + r) % 3 == 0:
                got[(i, r)] = ("logits", p, m.last_logits(PROMPTS[p]))
            elif (i + r) % 3 == 1:
                got[(i, r)] = ("text", p, m.generate(PROMPTS[p], max_tokens=6))
            else:
                got[(i, r)] = ("ppl", 1, m.perplexity(PROMPTS[1])["perplexity"])

    run_threads(work)
    assert len(got) == N_THREADS * ROUNDS
    for kind, p, value in got.values():
        if kind == "logits":
            np.testing.assert_array_equal(value, want_logits[p])
        elif kind == "text":
            assert value == want_texts[p]
        else:
            assert value == want_ppl


@needs_model
def test_separate_models_in_parallel_match_a_single_thread(reference):
    _, want_logits, want_texts, _ = reference
    models = [attnkit.Model.load(MODEL, threads=1) for _ in range(2)]
    got: dict[tuple[int, int], tuple[np.ndarray, str]] = {}

    def work(i):
        m = models[i % len(models)]
        for r in range(ROUNDS - 1):
            p = (i + r) % len(PROMPTS)
            got[(i, r)] = (p, m.last_logits(PROMPTS[p]), m.generate(PROMPTS[p], max_tokens=6))

    run_threads(work)
    assert len(got) == N_THREADS * (ROUNDS - 1)
    for p, logits, text in got.values():
        np.testing.assert_array_equal(logits, want_logits[p])
        assert text == want_texts[p]
