// attnkit/attention.h: exact (dense) attention on the CPU.
//
//   q:   [batch, seq_q,  heads_q,  head_dim]     any strides, f32 | f16 | bf16
//   k:   [batch, seq_kv, heads_kv, head_dim]     same dtype as q, or int8 (with k_scales)
//   v:   [batch, seq_kv, heads_kv, head_dim_v]   same dtype as k (head_dim_v may differ)
//   out: [batch, seq_q,  heads_q,  head_dim_v]   any dtype; written, never read
//   lse: [batch, heads_q, seq_q] f32 contiguous (optional; natural log)
//   broadcast: heads_q % heads_kv == 0; query head h reads kv head h / (heads_q / heads_kv)
//
// int8 K and V (symmetric quantization, one f32 scale per (token, kv head)): key j of kv head h is
// k_scales(b, j, h) * k[b, j, h, :], value j likewise with v_scales; q may be any float dtype. The
// kernel reads the int8 rows in place: the key scale multiplies the score (before the logit hooks),
// the value scale multiplies the softmax weight (after normalization). Both scale tensors are
// required and every scale must be finite and >= 0 (checked: the scan reads 8 bytes per key and
// kv head). The paged KV cache (kv_cache.h) quantizes with scale = max|x| / 127, round to nearest.
//
// Packed variable-length batches (FlashAttention convention): pass cu_seqlens_q / cu_seqlens_k
// (int32, n_seqs + 1 offsets), give q/k/v/out with batch = 1 and seq = total tokens; lse is then
// [heads_q, total_q]. Sequence i uses rows [cu[i], cu[i+1]).
//
// Logits, in this order, for query row i and key j of one sequence (Sq queries, Sk keys):
//   s  = (q_i . k_j) * scale * temperature[h] * ssmax_factor(i)     scale default 1/sqrt(head_dim)
//        ssmax_factor(i) = ssmax_s * ln(n_i), n_i = keys visible to row i (Scalable-Softmax)
//   s  = softcap * tanh(s / softcap)                                if softcap > 0
//   s -= alibi_slopes[h] * |pos_i - j|
//        pos_i = position of row i on the key axis: i + Sk - Sq with bottom-right alignment (the
//        default), i with top-left; the window below is anchored at the same pos_i
//   s += additive_mask[b, h, i, j]                                  custom additive mask
//   s += key_bias[h]                                                if j == key_bias_index
//        one key of every sequence (index on its key axis) gets a per-head logit bias; ZeroTuning
//        puts ln(gamma_h) on the first token this way
// Visibility of key j to row i (all must hold, except that sinks ignore the window):
//   causal:  j <= i + Sk - Sq (bottom-right, default) or j <= i (top-left)
//   window:  pos_i - left <= j <= pos_i + right (-1 = unbounded on that side)
//   sinks:   j < n_sink_tokens is visible whenever causality allows, whatever the window
//   boolean_mask[b, h, i, j] != 0
// Normalization (one kernel, selected variant):
//   softmax  (default): o_i = sum_j e^{s_ij} v_j / (sum_j e^{s_ij} + e^{sink_logit[h]})
//   sigmoid  (FlashSigmoid): o_i = sum_j sigmoid(s_ij + bias) v_j, bias default -ln(Sk)
//   relu:    o_i = sum_j relu(s_ij) v_j / Sk
// A row with no visible key has output 0 and LSE -inf (LSE = sink_logit when a sink logit is set).
// LSE is defined for softmax only.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>

#include "attnkit/status.h"
#include "attnkit/tensor.h"

namespace attnkit {

inline constexpr int kMaxHeadDim = 512;

enum class CausalAlign : uint8_t { kBottomRight = 0, kTopLeft = 1 };
template <>
struct EnumNames<CausalAlign> {
  static constexpr EnumName<CausalAlign> kTable[] = {{CausalAlign::kBottomRight, "bottom_right"},
                                                     {CausalAlign::kTopLeft, "top_left"}};
};

enum class Normalization : uint8_t { kSoftmax = 0, kSigmoid = 1, kRelu = 2 };
template <>
struct EnumNames<Normalization> {
  static constexpr EnumName<Normalization> kTable[] = {
      {Normalization::kSoftmax, "softmax"}, {Normalization::kSigmoid, "sigmoid"}, {Normalization::kRelu, "relu"}};
};
inline const char* normalization_name(Normalization n) { return enum_name(n); }

enum class MaskKind : uint8_t { kNone = 0, kBoolean = 1, kAdditive = 2 };
template <>
struct EnumNames<MaskKind> {
  static constexpr EnumName<MaskKind> kTable[] = {
      {MaskKind::kNone, "none"}, {MaskKind::kBoolean, "boolean"}, {MaskKind::kAdditive, "additive"}};
};

// A custom mask over [batch (or sequence), heads_q, seq_q, seq_kv], indexed with element strides
// (stride 0 broadcasts). kBoolean reads uint8 (nonzero = visible); kAdditive reads f32 added to
// the logits (-inf hides a key).
struct CustomMask {
  MaskKind kind = MaskKind::kNone;
  const void* data = nullptr;
  int64_t stride_batch = 0, stride_head = 0, stride_q = 0, stride_k = 1;
};

// How the call is executed. kAuto picks the decode (split-KV) path for short queries against
// long keys; the others force one path (tests use this to compare them).
enum class ExecPath : uint8_t { kAuto = 0, kPrefill = 1, kDecode = 2 };
template <>
struct EnumNames<ExecPath> {
  static constexpr EnumName<ExecPath> kTable[] = {
      {ExecPath::kAuto, "auto"}, {ExecPath::kPrefill, "prefill"}, {ExecPath::kDecode, "decode"}};
};

// Scales of int8 K or V: element (b, j, h) at data[b * stride_batch + j * stride_seq + h * stride_head]
// (elements, not bytes), for batch b (or 0 with cu_seqlens), key row j, kv head h.
struct KvScales {
  const float* data = nullptr;
  int64_t stride_batch = 0, stride_seq = 0, stride_head = 1;
  // Dense [batch, seq_kv, heads_kv].
  static KvScales contiguous(const float* data, int64_t seq_kv, int64_t heads_kv) {
    return KvScales{data, seq_kv * heads_kv, heads_kv, 1};
  }
  float at(int64_t b, int64_t j, int64_t h) const { return data[b * stride_batch + j * stride_seq + h * stride_head]; }
};

struct AttentionParams {
  // ---- masks ----
  bool causal = false;
  CausalAlign causal_align = CausalAlign::kBottomRight;
  int64_t window_left = -1;   // inclusive; -1 = unbounded
  int64_t window_right = -1;  // inclusive; -1 = unbounded; with causal it must be -1 or 0
  int64_t n_sink_tokens = 0;  // always-visible prefix
  const float* maybe_sink_logits = nullptr;  // [heads_q]; joins the softmax denominator only
  CustomMask mask;

  // ---- logits hooks ----
  std::optional<float> scale;                            // unset = 1/sqrt(head_dim)
  float softcap = 0.0f;                                  // 0 = off
  const float* maybe_alibi_slopes = nullptr;             // [heads_q]
  float ssmax_s = 0.0f;                                  // 0 = off; Scalable-Softmax s
  const float* maybe_head_temperature = nullptr;         // [heads_q] multiplier on the logits
  const float* maybe_key_bias = nullptr;                 // [heads_q] added to key key_bias_index's logit
  int64_t key_bias_index = 0;                            // >= 0; a sequence with fewer keys has none biased

  // ---- int8 K / V (required when k / v are int8, must be unset otherwise) ----
  KvScales k_scales, v_scales;

  // ---- normalization variant ----
  Normalization normalization = Normalization::kSoftmax;
  std::optional<float> sigmoid_bias;  // unset = -ln(seq_kv of the sequence)

  // ---- variable length ----
  const int32_t* maybe_cu_seqlens_q = nullptr;  // [n_seqs + 1]
  const int32_t* maybe_cu_seqlens_k = nullptr;  // [n_seqs + 1]
  int64_t n_seqs = 0;

  // ---- execution ----
  int num_threads = 0;  // 0 = OpenMP default
  ExecPath path = ExecPath::kAuto;
};

// Computes attention. out and maybe_lse are written; nothing else is touched. Returns a failed
// Status, and writes nothing, when the call is invalid.
Status attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                 float* maybe_lse, const AttentionParams& params);

// Checks a call without running it (attention() calls this first).
Status validate_attention(const TensorView& q, const TensorView& k, const TensorView& v,
                          const TensorView& out, float* maybe_lse, const AttentionParams& params);

// Combines two partial softmax attention results over disjoint key sets into the result over
// their union: with m = max(lse_a, lse_b),
//   lse = m + ln(e^{lse_a - m} + e^{lse_b - m}),  o = o_a e^{lse_a - lse} + o_b e^{lse_b - lse}.
// An empty part (lse -inf) contributes nothing; two empty parts give o = 0, lse = -inf.
// o_*: [batch, seq, heads, dim] views; lse_*: [batch, heads, seq] f32 contiguous.
// out / lse_out may alias o_a / lse_a (in-place accumulation).
Status merge_states(const TensorView& o_a, const float* lse_a, const TensorView& o_b, const float* lse_b,
                    const TensorView& out, float* lse_out);

// The per-row form used by every kernel: merges (o_b, lse_b) into (o_a, lse_a) in place.
inline void merge_state_row(float* o_a, float* lse_a, const float* o_b, float lse_b, int64_t dim) {
  const float la = *lse_a;
  if (lse_b == -std::numeric_limits<float>::infinity()) return;  // b empty: nothing to add
  if (la == -std::numeric_limits<float>::infinity()) {           // a empty: take b (avoids -inf - -inf)
    for (int64_t i = 0; i < dim; ++i) o_a[i] = o_b[i];
    *lse_a = lse_b;
    return;
  }
  const float m = la > lse_b ? la : lse_b;
  const float wa = std::exp(la - m), wb = std::exp(lse_b - m);
  const float inv = 1.0f / (wa + wb);
  for (int64_t i = 0; i < dim; ++i) o_a[i] = (o_a[i] * wa + o_b[i] * wb) * inv;
  *lse_a = m + std::log(wa + wb);
}

// FLOPs of exact attention on one (seq_q, seq_kv) problem counting only visible pairs:
// 2 * d (QK^T) + 2 * d_v (PV) per visible (i, j) pair, per query head. Shared by the CLI
// benchmark and bench/ so every GFLOP/s figure uses the same formula.
double attention_flops(int64_t batch, int64_t seq_q, int64_t seq_kv, int64_t heads_q, int64_t head_dim,
                       int64_t head_dim_v, bool causal);
// Minimum bytes moved: read Q, K, V once, write O once (element size of each).
double attention_bytes(int64_t batch, int64_t seq_q, int64_t seq_kv, int64_t heads_q, int64_t heads_kv,
                       int64_t head_dim, int64_t head_dim_v, size_t in_elem_bytes, size_t out_elem_bytes);

// Name of the SIMD target the kernels dispatch to on this machine (e.g. "AVX3", "AVX2").
std::string simd_target_name();

}  // namespace attnkit
