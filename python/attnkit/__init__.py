"""attnkit: CPU attention kernels for long-context transformers.

Tensors use the layout [batch, seq, heads, head_dim] (BSHD), as the C++ API does
(include/attnkit/attention.h). Inputs may be numpy arrays, torch CPU tensors or any other CPU
DLPack producer (a JAX CPU array, ...), in float32, float16 or bfloat16 (``ml_dtypes.bfloat16``
for numpy, ``torch.bfloat16`` for torch), with any strides: the kernels read them in place,
without copies. Outputs are numpy arrays, or torch tensors when ``q`` is a torch tensor; pass
``out=`` to write into an array of your own. The GIL is released while a kernel runs, so calls
from several Python threads run in parallel.

Errors raise ``ValueError`` (bad shapes, values or options) or ``TypeError`` (unsupported
dtypes or objects), carrying the C++ message that names the parameter and its value.

Functions:
    attention(q, k, v, *, causal=False, window=(-1, -1), sinks=0, ...) -> out | (out, lse)
    decode(q, k, v, ...)                 the split-KV decode path of attention()
    merge_states(o_a, lse_a, o_b, lse_b) -> (out, lse)
    attention_flops(...)                 the FLOP formula of the benchmarks
    sparse_attention(q, k, v, "moba:topk=8", causal=True) -> (out, info)   named sparse methods
    sparse_fidelity(q, k, v, method) -> dict    density, mass recall, error vs exact attention
    linear_attention(q, k, v, feature_map=..., decay=..., update=..., norm=...) -> out [, state]
    Tokenizer.from_gguf(path=None)       the GGUF model's tokenizer (encode / decode)
    Model.load(path=None, threads=2)     Gemma 3 on attnkit: generate, last_logits, perplexity,
                                         passkey, set_attention("a_shape:sinks=4,window=256")
    simd_target() -> str                 SIMD target the kernels dispatch to ("AVX3", ...)
    max_threads() -> int                 the largest threads= a call accepts (4 per processor)
    list_mechanisms() -> list[dict]      the registry of mechanisms (exact, sparse, linear, ...)
    bench_mechanism(spec, ...) -> dict   time a registered mechanism through the C++ benchmark harness

Attention instruments on the model (``attnkit.analysis``, docs/analysis.md): analysis.sinks,
analysis.entropy, analysis.massive_activations, analysis.retrieval_heads (writes the head maps of
the kv policies duo / razor) and analysis.attention (the probability rows they read), each
returning numpy arrays shaped [n_layer, n_head].

Charts (needs matplotlib, listed in requirements.txt): ``from attnkit import plot``;
plot.heatmap(path, values, ...) and plot.lines(path, series, ...), the same renderer the C++ API
(include/attnkit/plot.h) uses.
"""

from __future__ import annotations

from . import _attnkit as _C

try:  # numpy has no bfloat16 of its own; ml_dtypes provides the one JAX and others use.
    import ml_dtypes as _ml_dtypes
    import numpy as _np

    _C._set_bfloat16_dtype(_np.dtype(_ml_dtypes.bfloat16))
except ImportError:  # pragma: no cover - ml_dtypes is a dependency; float32/float16 still work
    pass

from ._attnkit import (  # noqa: E402
    Model,
    Tokenizer,
    attention,
    attention_flops,
    bench_mechanism,
    decode,
    default_model_path,
    lightning_log_decays,
    linear_attention,
    list_mechanisms,
    max_threads,
    merge_states,
    relative_l2_error,
    retnet_log_decays,
    simd_target,
    sparse_attention,
    sparse_fidelity,
    sparse_method_names,
)

__all__ = [
    "attention",
    "decode",
    "merge_states",
    "attention_flops",
    "sparse_attention",
    "sparse_fidelity",
    "sparse_method_names",
    "relative_l2_error",
    "linear_attention",
    "retnet_log_decays",
    "lightning_log_decays",
    "Tokenizer",
    "Model",
    "default_model_path",
    "simd_target",
    "max_threads",
    "list_mechanisms",
    "bench_mechanism",
]

from . import analysis  # noqa: E402  (attnkit.analysis.sinks(model, ids), ...)

__version__ = "0.1.0"


def _debug_view(x):
    """Debug: (data pointer, dtype, shape, strides in elements) of x as the C++ side sees it."""
    return _C._debug_view(x)


def _debug_data_ptr(x):
    """Debug: the data pointer the C++ side receives for x (equal to x's own when not copied)."""
    return _C._debug_view(x)[0]
