// attnkit/fidelity.h: how much an approximate attention loses against exact attention.
//
// Metrics (shared by the sparse, KV-cache and analysis work):
//   density       fraction of the causal score matrix that is computed (computed pairs / causally
//                 visible pairs); 1 for exact attention.
//   mass recall   per query row, the share of the exact softmax probability mass that falls on the
//                 keys the approximation attends: sum_{j in S_i} p_ij with p = softmax of the exact
//                 logits. Reported as the mean over rows and the worst row.
//   rel L2 error  ||O_approx - O_exact||_F / ||O_exact||_F over the whole output.
//   time          estimation (choosing keys) and attention (the kernel) separately, and the dense
//                 exact attention time of the same run for the ratio.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "attnkit/attention.h"
#include "attnkit/status.h"
#include "attnkit/tensor.h"

namespace attnkit {

struct FidelityReport {
  std::string mechanism;
  double density = 1.0;
  double recall_mean = 1.0, recall_worst = 1.0;
  bool has_recall = false;  // false when the method has no per-row key set
  double rel_l2_error = 0.0;
  double estimate_seconds = 0.0, attention_seconds = 0.0, dense_seconds = 0.0;
};

// Marks the keys row `row` of (batch b, query head h) attends: visited[j] = 1 (length seq_kv,
// zeroed by the caller).
using VisitedFn = std::function<void(int64_t b, int64_t h, int64_t row, uint8_t* visited)>;

// Exact softmax mass recall under params (causal, scale, softcap are honoured). Rows with no
// visible key are skipped. Uses sgemm on 64-row blocks: cost about that of dense attention.
Status attention_mass_recall(const TensorView& q, const TensorView& k, const AttentionParams& params,
                             const VisitedFn& visited, double* mean, double* worst);

// ||a - b|| / ||b|| over all elements (same shape required); 0 when both are zero.
Status relative_l2_error(const TensorView& approx, const TensorView& exact, double* out);

}  // namespace attnkit
