// MInference vertical-slash (Jiang et al. 2024, "MInference 1.0"): from the softmax of the last
// queries against every key, keep the heaviest key columns (vertical lines) and diagonals (slash
// lines); the diagonals become key ranges per query block, the columns are gathered.
#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/registry.h"
#include "attnkit/sparse.h"
#include "sparse/estimator_common.h"
#include "sparse/methods.h"

namespace attnkit {

using namespace sparse_internal;

Status estimate_vertical_slash(const TensorView& q, const TensorView& k, const AttentionParams& params,
                               const VerticalSlashConfig& cfg, BlockMask* out) {
  const char* what = "vertical_slash";
  int threads = 1;
  ATTNKIT_RETURN_IF_ERROR(check_estimator_inputs(q, k, params, cfg.block, what, &threads));
  ATTNKIT_RETURN_IF_ERROR(check_positive(what, "last_q", cfg.last_q));
  ATTNKIT_RETURN_IF_ERROR(check_nonneg(what, "vertical", cfg.vertical));
  ATTNKIT_RETURN_IF_ERROR(check_nonneg(what, "slash", cfg.slash));
  ATTNKIT_RETURN_IF_ERROR(check_nonneg(what, "force_first", cfg.force_first));
  ATTNKIT_RETURN_IF_ERROR(check_nonneg(what, "force_last", cfg.force_last));
  const BlockMaskShape s = square_block_shape(q, k, params, cfg.block);
  const int64_t sk = s.seq_kv;
  const int64_t last = std::min(cfg.last_q, s.seq_q);
  const float scale = resolve_scale(params, q.head_dim());
  BlockMask probe;
  probe.shape = s;
  std::vector<std::vector<int32_t>> sel(probe.n_lists()), cols(probe.n_lists());
  for_each_head(q, k, cfg.block, threads, [&](int64_t b, int64_t h, const KvHeadData& kv) {
    std::vector<float> probs;
    std::vector<int64_t> pos;
    std::vector<double> vert, slash;
    last_rows_probs(q, kv, s, b, h, last, scale, &probs, &pos);
    vertical_slash_sums(probs, pos, sk, &vert, &slash);
    // Forced lines (MInference): the first columns (attention sinks) and the diagonals
    // nearest the main one (the local window).
    std::vector<float> vs(vert.begin(), vert.end()), ss(slash.begin(), slash.end());
    for (int64_t j = 0; j < std::min(cfg.force_first, sk); ++j) vs[j] = std::numeric_limits<float>::infinity();
    for (int64_t dlt = 0; dlt < cfg.force_last; ++dlt) {
      if (dlt + sk < static_cast<int64_t>(ss.size())) ss[dlt + sk] = std::numeric_limits<float>::infinity();
    }
    std::vector<int32_t> vcols, sidx;
    top_k_indices(vs.data(), sk, cfg.vertical, &vcols);
    top_k_indices(ss.data(), static_cast<int64_t>(ss.size()), cfg.slash, &sidx);
    vertical_slash_lists(s, b, h, sidx, std::move(vcols), &sel, &cols);
  });
  return block_mask_from_selection(s, sel, &cols, out);
}

namespace {

// Registry entry (methods.h).
Mechanism make_vertical_slash_mechanism() {
  return sparse_mechanism(
      {"vertical_slash", "MInference vertical-slash: columns and diagonals from the last queries' attention",
       {{"last_q", "64", "queries used for the estimate"}, {"vertical", "1000", "vertical lines kept"},
        {"slash", "6096", "slash lines kept"}, {"force_first", "30", "first columns always kept"},
        {"force_last", "100", "diagonals nearest the main one always kept"}, kBlockParam},
       [](const MechanismParams& p, std::unique_ptr<SparseMethod>* out) -> Status {
         VerticalSlashConfig c;
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "last_q", &c.last_q));
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "vertical", &c.vertical));
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "slash", &c.slash));
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "force_first", &c.force_first));
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "force_last", &c.force_last));
         ATTNKIT_RETURN_IF_ERROR(read_block(p, &c.block));
         *out = estimator_method(estimate_vertical_slash, c);
         return Status::ok_status();
       }});
}
ATTNKIT_REGISTER_MECHANISM(make_vertical_slash_mechanism);

}  // namespace

}  // namespace attnkit
