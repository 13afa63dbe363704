// testing/attn_case.h: the shared case generator for attention tests.
//
// An AttnCase describes one call without pointers (shapes, dtypes, which masks and hooks are on,
// layout quirks, seed); make_case_data() materializes it into guarded tensors and an
// AttentionParams pointing at owned arrays. The sweeps below are the default suite (pruned to stay
// fast: the double reference is O(Sq Sk d)); ATTNKIT_LONG_TESTS=1 switches to an exhaustive sweep.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "attnkit/attention.h"
#include "testing/tensor_buffer.h"

namespace attnkit::testing {

struct AttnCase {
  // ---- shapes (varlen: `batch` sequences of lengths up to seq_q / seq_kv, packed) ----
  int64_t batch = 1, seq_q = 1, seq_kv = 1, heads_q = 1, heads_kv = 1, head_dim = 64, head_dim_v = 64;
  DType dtype = DType::kF32;      // q, k, v
  DType out_dtype = DType::kF32;  // out
  // k and v stored as int8 with one f32 scale per (token, kv head), quantized from uniform f32
  // values by the paged KV cache's rule (quantize_int8_row); q stays in `dtype`.
  bool int8_kv = false;
  // ---- masks ----
  bool causal = false;
  CausalAlign causal_align = CausalAlign::kBottomRight;
  int64_t window_left = -1, window_right = -1, n_sink_tokens = 0;
  bool sink_logits = false;
  MaskKind mask = MaskKind::kNone;
  bool mask_broadcast_heads = false;  // custom mask with head stride 0
  // ---- hooks ----
  std::optional<float> scale;  // unset = the library default
  float softcap = 0.0f;
  bool alibi = false;
  float ssmax_s = 0.0f;
  bool temperature = false;
  int64_t key_bias_index = -1;  // >= 0: a per-head logit bias on this key of every sequence
  Normalization normalization = Normalization::kSoftmax;
  std::optional<float> sigmoid_bias;
  bool varlen = false;
  // ---- memory quirks ----
  Layout layout = Layout::kContiguous;  // of q, k, v and out
  bool misaligned = false;              // q, k, v, out start one element past 64-byte alignment
  // ---- execution ----
  bool want_lse = true;  // ignored (no LSE) for non-softmax normalizations
  ExecPath path = ExecPath::kAuto;
  int num_threads = 0;
  uint64_t seed = 1;
  float input_range = 1.0f;  // q, k, v uniform in [-range, range)

  bool lse_enabled() const { return want_lse && normalization == Normalization::kSoftmax; }
  // Identifier-safe description, usable as a GoogleTest parameter name.
  std::string name() const;
  // Rough count of multiply-adds the reference performs (for pruning).
  double cost() const;
};

// Everything one call needs, owned. params points into this object: do not copy it.
struct CaseData {
  AttnCase c;
  TestTensor q, k, v, out;
  TestTensor lse;  // f32 [1, 1, heads_q, total_q rows] viewed contiguous (B * H * Sq floats); canary-filled
  std::vector<float> sink_logits, alibi_slopes, temperature, key_bias, additive_mask;
  std::vector<uint8_t> boolean_mask;
  std::vector<int32_t> cu_q, cu_k;
  // int8_kv: K/V before quantization and dequantized (scale * stored integer), dense
  // [batch, rows_k, heads_kv, dim], and the scales [batch, rows_k, heads_kv] params points at.
  std::vector<float> k_f32, v_f32, k_deq, v_deq, k_scales, v_scales;
  AttentionParams params;

  CaseData() = default;
  CaseData(const CaseData&) = delete;
  CaseData& operator=(const CaseData&) = delete;

  float* maybe_lse() const {
    return c.lse_enabled() ? static_cast<float*>(lse.view().data) : nullptr;
  }
  // Resets out and lse to the canary pattern (before calling a kernel again).
  void reset_outputs();
};

std::unique_ptr<CaseData> make_case_data(const AttnCase& c);

// Symmetric int8 quantization of one row of n values, the paged KV cache's rule: scale =
// max |x| / 127, q = round-to-nearest(x / scale) clamped to [-127, 127]; an all-zero row gets
// scale 0. Each |x - scale * q| <= scale / 2. Returns the scale.
float quantize_int8_row(const float* x, int64_t n, int8_t* q);

// GoogleTest prints parameters with this (test names and failure messages show the case name).
void PrintTo(const AttnCase& c, std::ostream* os);

// True when ATTNKIT_LONG_TESTS=1 is set: sweeps become exhaustive.
bool long_tests_enabled();

// Sweeps of the default suite (each a few seconds at most in total, more when long tests are on).
std::vector<AttnCase> head_dim_cases();     // every head dim, even and odd, 1..512
std::vector<AttnCase> length_cases();       // 1, 37, 113, 501, 1023, 4097 and tile-edge lengths
std::vector<AttnCase> gqa_cases();          // GQA 1/2/4/8 and MQA
std::vector<AttnCase> mask_hook_cases();    // every mask, hook, normalization, varlen
std::vector<AttnCase> dtype_cases();        // f16 / bf16 inputs and outputs
std::vector<AttnCase> layout_cases();       // non-contiguous strides, misaligned pointers
std::vector<AttnCase> path_cases();         // forced decode / prefill paths, thread counts
std::vector<AttnCase> int8_kv_cases();      // int8 K/V: decode and prefill, GQA, masks, softcap, split KV

// The lengths around the kernel tiles (kTileQ / kTileK of src/core/tile_kernel.h).
std::vector<int64_t> tile_edge_lengths();

}  // namespace attnkit::testing
