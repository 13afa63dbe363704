// reference/attention_ref.h: naive double-precision exact attention, the ground truth that every
// optimized path in src/core is tested against.
//
// Same signature and semantics as attnkit::attention (include/attnkit/attention.h): logits order,
// visibility rules, sinks and sink logits, custom masks, ALiBi, Scalable-Softmax, temperature, the
// softmax / sigmoid / relu normalizations, packed variable-length batches, fully masked rows.
// Every loop is written for clarity: one query row, one key at a time, double accumulation.
// Never optimize this file; its only job is to be obviously right.
#pragma once

#include <cstdint>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/status.h"
#include "attnkit/tensor.h"

namespace attnkit::reference {

// Result of the reference before any rounding to the output dtype.
struct RefResult {
  int64_t batch = 0, seq_q = 0, heads_q = 0, head_dim_v = 0;
  // Dense [batch, seq_q, heads_q, head_dim_v] (varlen: batch 1, seq_q = total query tokens).
  std::vector<double> out;
  // Dense [batch, heads_q, seq_q] (varlen: [heads_q, total_q]). Softmax only; NaN otherwise.
  std::vector<double> lse;

  int64_t out_index(int64_t b, int64_t s, int64_t h, int64_t d) const {
    return ((b * seq_q + s) * heads_q + h) * head_dim_v + d;
  }
  int64_t lse_index(int64_t b, int64_t h, int64_t s) const { return (b * heads_q + h) * seq_q + s; }
};

// Computes attention in double and keeps the unrounded result. out is not needed here; maybe_lse
// only matters for the "LSE requires softmax" check.
Status attention_ref_f64(const TensorView& q, const TensorView& k, const TensorView& v, bool want_lse,
                         const AttentionParams& params, RefResult* result);

// Drop-in twin of attnkit::attention: computes in double, then writes out (rounded to its dtype)
// and maybe_lse (f32).
Status attention_ref(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                     float* maybe_lse, const AttentionParams& params);

// Twin of attnkit::merge_states in double: with m = max(lse_a, lse_b),
//   lse = m + ln(e^{lse_a - m} + e^{lse_b - m}),  o = o_a e^{lse_a - lse} + o_b e^{lse_b - lse};
// an empty part (lse -inf) contributes nothing, two empty parts give o = 0 and lse -inf.
Status merge_states_ref(const TensorView& o_a, const float* lse_a, const TensorView& o_b, const float* lse_b,
                        const TensorView& out, float* lse_out);

}  // namespace attnkit::reference
