// testing/plain_attention.h: a plain f32 implementation of attnkit::attention, the yardstick of
// the tolerance policy (FlashAttention's rule: an optimized kernel may be at most a few times
// less accurate than a straightforward implementation in the same working precision).
//
// Written independently of src/reference (different loop structure, f32 everywhere), so that the
// reference-vs-plain test also cross-checks the two readings of attention.h's semantics.
// No tiling, no online softmax: materialize the row's logits, take the max, exponentiate, sum.
#pragma once

#include <cstdint>
#include <vector>

#include "attnkit/attention.h"

namespace attnkit::testing {

struct PlainResult {
  std::vector<float> out;  // dense [batch, seq_q, heads_q, head_dim_v]
  std::vector<float> lse;  // dense [batch, heads_q, seq_q] (varlen: [heads_q, total_q]); softmax only
};

// Assumes a valid call (tests run the reference first, which checks it).
PlainResult attention_plain_f32(const TensorView& q, const TensorView& k, const TensorView& v,
                                const AttentionParams& params);

}  // namespace attnkit::testing
