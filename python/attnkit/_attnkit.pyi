"""Type stubs for the attnkit C++ extension (the functions re-exported by attnkit)."""

from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, TypedDict, Union, overload

import numpy as np
import numpy.typing as npt

# numpy arrays, torch CPU tensors or any CPU DLPack producer (JAX arrays, ...).
ArrayLike = Any
# Small per-head / offset vectors: arrays or plain sequences.
VectorLike = Union[npt.ArrayLike, Sequence[float]]

class ParamSpec(TypedDict):
    name: str
    default: str
    help: str

class MechanismInfo(TypedDict):
    name: str
    family: str
    description: str
    params: list[ParamSpec]

class BenchResult(TypedDict):
    name: str
    seconds: list[float]
    flops: float
    bytes: float
    extra_bytes: int

_CausalAlign = Literal["bottom_right", "top_left"]
_Normalization = Literal["softmax", "sigmoid", "relu"]
_Path = Literal["auto", "prefill", "decode"]

def attention(
    q: ArrayLike,
    k: ArrayLike,
    v: ArrayLike,
    *,
    causal: bool = False,
    causal_align: _CausalAlign = "bottom_right",
    window: Tuple[int, int] = (-1, -1),
    sinks: int = 0,
    sink_logits: Optional[VectorLike] = None,
    mask: Optional[ArrayLike] = None,
    softcap: float = 0.0,
    scale: Optional[float] = None,
    alibi_slopes: Optional[VectorLike] = None,
    ssmax: float = 0.0,
    temperature: Optional[VectorLike] = None,
    normalization: _Normalization = "softmax",
    sigmoid_bias: Optional[float] = None,
    cu_seqlens_q: Optional[VectorLike] = None,
    cu_seqlens_k: Optional[VectorLike] = None,
    return_lse: bool = False,
    threads: int = 0,
    out: Optional[ArrayLike] = None,
    lse: Optional[ArrayLike] = None,
    path: _Path = "auto",
) -> Any:
    """Exact attention. q [batch, seq_q, heads_q, head_dim], k [batch, seq_kv, heads_kv, head_dim],
    v [batch, seq_kv, heads_kv, head_dim_v] -> out [batch, seq_q, heads_q, head_dim_v], or
    (out, lse [batch, heads_q, seq_q] float32) when return_lse or lse= is given."""

def decode(
    q: ArrayLike,
    k: ArrayLike,
    v: ArrayLike,
    *,
    causal: bool = False,
    causal_align: _CausalAlign = "bottom_right",
    window: Tuple[int, int] = (-1, -1),
    sinks: int = 0,
    sink_logits: Optional[VectorLike] = None,
    mask: Optional[ArrayLike] = None,
    softcap: float = 0.0,
    scale: Optional[float] = None,
    alibi_slopes: Optional[VectorLike] = None,
    ssmax: float = 0.0,
    temperature: Optional[VectorLike] = None,
    normalization: _Normalization = "softmax",
    sigmoid_bias: Optional[float] = None,
    cu_seqlens_q: Optional[VectorLike] = None,
    cu_seqlens_k: Optional[VectorLike] = None,
    return_lse: bool = False,
    threads: int = 0,
    out: Optional[ArrayLike] = None,
    lse: Optional[ArrayLike] = None,
) -> Any:
    """attention() through the split-KV decode path; q is typically [batch, 1, heads_q, head_dim]."""

def merge_states(
    o_a: ArrayLike,
    lse_a: ArrayLike,
    o_b: ArrayLike,
    lse_b: ArrayLike,
    *,
    out: Optional[ArrayLike] = None,
    lse_out: Optional[ArrayLike] = None,
) -> Tuple[Any, Any]:
    """o_* [batch, seq, heads, dim], lse_* [batch, heads, seq] float32 -> (out, lse_out)."""

def attention_flops(
    batch: int, seq_q: int, seq_kv: int, heads_q: int, head_dim: int, head_dim_v: int, causal: bool
) -> float: ...
def simd_target() -> str: ...
def max_threads() -> int: ...
def list_mechanisms() -> list[MechanismInfo]: ...
def bench_mechanism(
    spec: str,
    batch: int = 1,
    seq_q: int = 1024,
    seq_kv: int = 1024,
    heads_q: int = 8,
    heads_kv: int = 2,
    head_dim: int = 128,
    causal: bool = True,
    dtype: Literal["f32", "f16", "bf16"] = "f32",
    threads: int = 0,
    warmup: int = 1,
    iters: int = 5,
) -> BenchResult: ...

def sparse_attention(
    q: ArrayLike,
    k: ArrayLike,
    v: ArrayLike,
    method: str,
    *,
    causal: bool = True,
    causal_align: _CausalAlign = "bottom_right",
    scale: Optional[float] = None,
    softcap: float = 0.0,
    return_lse: bool = False,
    threads: int = 0,
    out: Optional[ArrayLike] = None,
) -> Tuple[Any, ...]:
    """(out, info) or (out, lse, info); out [batch, seq_q, heads_q, head_dim_v]."""

def sparse_fidelity(
    q: ArrayLike,
    k: ArrayLike,
    v: ArrayLike,
    method: str,
    *,
    causal: bool = True,
    causal_align: _CausalAlign = "bottom_right",
    scale: Optional[float] = None,
    softcap: float = 0.0,
    repeats: int = 1,
    threads: int = 0,
) -> dict[str, Any]: ...
def sparse_method_names() -> list[str]: ...
def relative_l2_error(approx: ArrayLike, exact: ArrayLike) -> float: ...
def linear_attention(
    q: ArrayLike,
    k: ArrayLike,
    v: ArrayLike,
    *,
    feature_map: str = "identity",
    scale: Optional[float] = None,
    decay: Literal["none", "per_head", "scalar_gate", "vector_gate"] = "none",
    log_decay: Optional[VectorLike] = None,
    gate: Optional[ArrayLike] = None,
    tie_key_to_gate: bool = False,
    update: Literal["additive", "delta"] = "additive",
    beta: Optional[ArrayLike] = None,
    norm: Literal["none", "denominator", "output_rms"] = "none",
    norm_eps: float = 1e-6,
    form: Literal["auto", "parallel", "chunked", "recurrent"] = "auto",
    chunk_size: int = 64,
    performer_features: int = 0,
    performer_seed: int = 0,
    feature_weight: Optional[ArrayLike] = None,
    feature_bias: Optional[ArrayLike] = None,
    taylor_temperature: Optional[float] = None,
    taylor_l2_normalize: bool = False,
    cosformer_max_len: float = 0.0,
    cottention_c: Optional[VectorLike] = None,
    lln_alpha: float = 1.0,
    lln_beta: float = 1.0,
    cu_seqlens: Optional[VectorLike] = None,
    start_positions: Optional[VectorLike] = None,
    initial_state: Optional[ArrayLike] = None,
    return_state: bool = False,
    state_out: Optional[ArrayLike] = None,
    threads: int = 0,
    out: Optional[ArrayLike] = None,
) -> Any:
    """out [batch, seq, heads_q, head_dim_v], or (out, state [n_states, heads_q, F, Dv'])."""

def retnet_log_decays(heads: int) -> npt.NDArray[np.float32]: ...
def lightning_log_decays(heads: int) -> npt.NDArray[np.float32]: ...
def default_model_path() -> str: ...

class Tokenizer:
    @staticmethod
    def from_gguf(path: Optional[str] = None) -> Tokenizer: ...
    def encode(
        self, text: str, *, add_bos: Optional[bool] = None, add_eos: bool = False, parse_special: bool = False
    ) -> list[int]: ...
    def decode(self, ids: Sequence[int]) -> str: ...
    def decode_bytes(self, ids: Sequence[int]) -> bytes: ...
    def token_text(self, id: int) -> str: ...
    def token_id(self, text: str) -> int: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def bos_id(self) -> int: ...
    @property
    def eos_id(self) -> int: ...
    @property
    def pad_id(self) -> int: ...
    @property
    def unk_id(self) -> int: ...
    @property
    def add_bos_default(self) -> bool: ...

class Model:
    """Gemma 3 (e.g. the installed 270M GGUF) running on attnkit's attention."""
    @staticmethod
    def load(
        path: Optional[str] = None, threads: int = 2, *, allow_past_context: bool = False, kv_dtype: str = "bf16",
        weights: str = "quantized"
    ) -> Model:
        """kv_dtype: the KV cache's element type; weights: "quantized" (GGUF blocks read in place) or "f32"
        (dequantized copies, the reference)."""
    @property
    def weights(self) -> str: ...
    @property
    def weight_bytes(self) -> tuple[int, int, int]:
        """(bytes of GGUF blocks read in place, bytes of projections unpacked to int8 at load, bytes of f32 copies made at load)."""
    def generate(
        self, prompt: Union[str, Sequence[int]], *, max_tokens: int = 64, temperature: float = 0.0,
        top_p: float = 1.0, seed: int = 0
    ) -> str: ...
    def last_logits(self, prompt: Union[str, Sequence[int]]) -> npt.NDArray[np.float32]:
        """Logits [n_vocab] after the prompt."""
    def perplexity(self, text: Union[str, Sequence[int]], *, streaming: bool = False) -> dict: ...
    def passkey(self, lengths: Sequence[int], *, trials: int = 1, seed: int = 1) -> list[dict]: ...
    def set_attention(self, spec: str, *, layer: Optional[int] = None) -> None: ...
    def set_kv_policy(self, spec: Optional[str]) -> None:
        """KV-cache policy 'NAME[:key=value,...]' (family 'kv'); None removes it; resets the cache."""
    def kv_bytes(self) -> dict:
        """{'allocated', 'in_use', 'allocated_per_layer', 'in_use_per_layer', 'tokens_per_layer'}."""
    def kv_positions(self, layer: int) -> list[int]:
        """Absolute positions of the tokens layer `layer`'s KV cache holds."""
    def set_prefill_chunk(self, chunk: int) -> None: ...
    @property
    def kv_dtype(self) -> str: ...
    def reset(self) -> None: ...
    @property
    def allow_past_context(self) -> bool: ...
    @allow_past_context.setter
    def allow_past_context(self, value: bool) -> None: ...
    @property
    def context_length(self) -> int: ...
    @property
    def n_layer(self) -> int: ...
    @property
    def n_vocab(self) -> int: ...
    @property
    def tokenizer(self) -> Tokenizer: ...

# private helpers (tests and benchmarks)
def _set_bfloat16_dtype(dtype: Optional[np.dtype]) -> None: ...
def _debug_view(x: ArrayLike) -> Tuple[int, str, Tuple[int, ...], Tuple[int, ...]]: ...
# attnkit.analysis (python/src/analysis.cc); use the wrappers in attnkit/analysis.py.
def _analysis_kjv_tokens(model: Model, n: int, offset: int) -> List[int]: ...
def _analysis_attention(model: Model, tokens: Sequence[int], layers: Optional[Sequence[int]],
                        rows: Optional[Sequence[int]]) -> np.ndarray: ...
def _analysis_sinks(model: Model, samples: Sequence[Sequence[int]], first_k: int, eps: float, mid_threshold: float,
                    min_rows: int) -> Dict[str, Any]: ...
def _analysis_entropy(model: Model, tokens: Sequence[int], spectral_window: int, spectral_start: int,
                      lognormal_row_stride: int) -> Dict[str, Any]: ...
def _analysis_massive(model: Model, tokens: Sequence[int], eval_tokens: Optional[Sequence[int]], abs_threshold: float,
                      median_ratio: float) -> Dict[str, Any]: ...
def _analysis_retrieval_heads(model: Model, lengths: Sequence[int], depths: Sequence[float], seed: int,
                              max_new_tokens: int, threshold: float, min_recall: float, segment: int, repeats: int,
                              head_map: Optional[str], razor_map: Optional[str]) -> Dict[str, Any]: ...
