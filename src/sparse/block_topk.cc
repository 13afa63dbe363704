// Pooled-QK block top-k: the block-sparse pattern of MInference (Jiang et al. 2024) and
// SeerAttention's block scores (Gao et al. 2024) without its learned gate: mean-pooled query and
// key blocks score every key block, and each query block keeps its top k.
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

Status estimate_block_topk(const TensorView& q, const TensorView& k, const AttentionParams& params,
                           const BlockTopKConfig& cfg, BlockMask* out) {
  const char* what = "block_topk";
  int threads = 1;
  ATTNKIT_RETURN_IF_ERROR(check_estimator_inputs(q, k, params, cfg.block, what, &threads));
  ATTNKIT_RETURN_IF_ERROR(check_positive(what, "topk", cfg.topk));
  const BlockMaskShape s = square_block_shape(q, k, params, cfg.block);
  BlockMask probe;
  probe.shape = s;
  const int64_t nqb = probe.n_q_blocks(), nkb = probe.n_k_blocks(), d = q.head_dim();
  const float scale = resolve_scale(params, d);
  std::vector<std::vector<int32_t>> sel(probe.n_lists());
  for_each_head(q, k, cfg.block, threads, [&](int64_t b, int64_t h, const KvHeadData& kv) {
    std::vector<float> scores;
    pooled_block_scores(q, kv, s, b, h, nqb, nkb, scale, &scores);
    for (int64_t qb = 0; qb < nqb; ++qb) {
      const int64_t reach = reachable_k_blocks(s, qb);
      std::vector<int32_t>& l = sel[probe.list_index(b, h, qb)];
      top_k_indices(scores.data() + qb * nkb, reach, cfg.topk, &l);
      if (reach > 0) l.push_back(0);  // the sink block
      add_diagonal(s, qblock(s, qb), &l);
    }
  });
  return block_mask_from_selection(s, sel, nullptr, out);
}

namespace {

// Registry entry (methods.h).
Mechanism make_block_topk_mechanism() {
  return sparse_mechanism(
      {"block_topk", "Pooled-QK block top-k (MInference block-sparse; SeerAttention without a learned gate)",
       {{"topk", "100", "key blocks kept per query block"}, kBlockParam},
       topk_estimator_factory<BlockTopKConfig>(estimate_block_topk)});
}
ATTNKIT_REGISTER_MECHANISM(make_block_topk_mechanism);

}  // namespace

}  // namespace attnkit
