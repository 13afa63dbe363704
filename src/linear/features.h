// Internal: per-token feature maps and resolved parameters of one linear_attention call.
#pragma once

#include <cstdint>
#include <vector>

#include "attnkit/linear.h"

namespace attnkit {
namespace linear_internal {

// Everything a (sequence, head) task needs, resolved once per call.
struct Resolved {
  LinearAttentionParams p;
  int64_t d = 0, dv = 0, f = 0, dvp = 0;  // head dims, feature dim, value columns incl. denominator
  int64_t heads_q = 0, group = 1;
  float scale = 1.0f;
  int threads = 1;                       // resolved p.num_threads (attnkit/threads.h)
  float taylor_c = 1.0f;                 // sqrt(taylor_temperature)
  std::vector<float> performer_w;        // [m, d] when generated here
  const float* feature_w = nullptr;      // performer [m, d] or hedgehog [heads, d, p]
  bool stabilize_query = false;          // subtract a per-query max (only valid with a denominator)
};

// Fills out[0..f) with phi(x) for query (is_query) or key x[0..d) of head h at absolute position
// pos. tmp must hold at least max(d, 2 * feature_proj_dim, m) floats.
void feature_row(const Resolved& r, int64_t h, const float* x, int64_t pos, bool is_query, float* out, float* tmp);

// The same for n rows x[n, d] (modified in place) into out[n, f], with the Performer / Hedgehog
// projections as one GEMM; proj must hold n * max(f, feature_proj_dim) floats. Only for kPerformer
// and kHedgehog (which do not depend on the position).
void feature_rows(const Resolved& r, int64_t h, float* x, int64_t n, bool is_query, float* out, float* proj);

// Feature dimension of a map (no validation beyond the map's own parameters).
int64_t feature_dim_of(const LinearAttentionParams& p, int64_t d);

}  // namespace linear_internal
}  // namespace attnkit
