// The "exact" mechanism of the registry: dense attention through attnkit::attention, with the
// mask and normalization options exposed as spec parameters, e.g.
//   attnkit bench --mechanism exact:window_left=1024,sinks=4,normalization=sigmoid
#pragma once

#include <cstdint>

#include "attnkit/attention.h"

namespace attnkit {

// Number of visible (query row, key) pairs of one (seq_q, seq_kv) problem under the causal,
// window and sink rules of attention.h (one head, one sequence). O(seq_q), closed form per row.
int64_t count_visible_pairs(int64_t seq_q, int64_t seq_kv, bool causal, CausalAlign align, int64_t window_left,
                            int64_t window_right, int64_t n_sink_tokens);

// FLOPs of the exact mechanism: attention_flops() when no window/sink/top-left rule changes the
// visible set, else the same per-pair cost (taken from attention_flops on a single pair, so there
// is still one formula) times count_visible_pairs().
double exact_mechanism_flops(int64_t batch, int64_t seq_q, int64_t seq_kv, int64_t heads_q, int64_t head_dim,
                             const AttentionParams& params);

}  // namespace attnkit
