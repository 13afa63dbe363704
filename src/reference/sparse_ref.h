// reference/sparse_ref.h: dense double-precision attention under an explicit element mask.
//
// The ground truth for sparse attention: every (query, key) pair is evaluated in double, the
// pair enters the softmax iff causality (attention.h's rule, bottom-right or top-left) and the
// given predicate both allow it. Never optimized.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/tensor.h"

namespace attnkit::reference {

// visible(b, h, i, j): query row i of batch b, query head h, key j (i, j are sequence indices).
using ElementPredicate = std::function<bool(int64_t b, int64_t h, int64_t i, int64_t j)>;

struct SparseRefOptions {
  bool causal = false;
  CausalAlign causal_align = CausalAlign::kBottomRight;
  double scale = 0.0;  // 0 = 1/sqrt(head_dim)
  // Extra additive log-weight per key (HyperAttention's sampled keys carry ln(n/m)); optional.
  std::function<double(int64_t b, int64_t h, int64_t i, int64_t j)> maybe_log_weight;
};

// out: [batch, seq_q, heads_q, head_dim_v] row-major; lse: [batch, heads_q, seq_q].
// A row with no visible key gets output 0 and LSE -inf. GQA: head h reads kv head h / (Hq / Hkv).
void masked_attention_ref(const TensorView& q, const TensorView& k, const TensorView& v,
                          const SparseRefOptions& options, const ElementPredicate& maybe_visible,
                          std::vector<double>* out, std::vector<double>* lse);

// The exact softmax probabilities of one row (causal rule only), for mass-recall checks.
void softmax_row_ref(const TensorView& q, const TensorView& k, const SparseRefOptions& options, int64_t b,
                     int64_t h, int64_t i, std::vector<double>* probs);

}  // namespace attnkit::reference
