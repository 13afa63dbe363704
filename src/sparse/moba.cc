// MoBA, Mixture of Block Attention (Lu et al. 2025): a query's gate on a key block is its dot
// product with the block's mean key; it attends its own block and its top-(k-1) earlier blocks.
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

Status estimate_moba(const TensorView& q, const TensorView& k, const AttentionParams& params, const MobaConfig& cfg,
                     BlockMask* out) {
  const char* what = "moba";
  int threads = 1;
  ATTNKIT_RETURN_IF_ERROR(check_estimator_inputs(q, k, params, cfg.block, what, &threads));
  ATTNKIT_RETURN_IF_ERROR(check_positive(what, "topk", cfg.topk));
  const BlockMaskShape s = square_block_shape(q, k, params, cfg.block);
  BlockMask probe;
  probe.shape = s;
  const int64_t nqb = probe.n_q_blocks(), nkb = probe.n_k_blocks(), d = q.head_dim();
  const int64_t off = diag_offset(s);
  const float scale = resolve_scale(params, d);
  std::vector<std::vector<int32_t>> sel(probe.n_lists());
  // Gates in chunks of query blocks to bound memory: rows x nkb floats.
  const int64_t chunk_blocks = std::max<int64_t>(1, (int64_t{1} << 22) / std::max<int64_t>(1, nkb * s.block_q));
  for_each_head(q, k, cfg.block, threads, [&](int64_t b, int64_t h, const KvHeadData& kv) {
    std::vector<float> qf, gate;
    for (int64_t c0 = 0; c0 < nqb; c0 += chunk_blocks) {
      const int64_t c1 = std::min(nqb, c0 + chunk_blocks);
      const int64_t r0 = c0 * s.block_q, r1 = std::min(s.seq_q, c1 * s.block_q);
      qf.resize((r1 - r0) * d);
      gate.resize((r1 - r0) * nkb);
      copy_rows(q, b, h, r0, r1, qf.data());
      gemm_abt(qf.data(), kv.pooled.data(), gate.data(), r1 - r0, nkb, d, scale);
      for (int64_t qb = c0; qb < c1; ++qb) {
        const QBlock blk = qblock(s, qb);
        // Each query's choice (MoBA): its own block plus the top-(k-1) blocks wholly before
        // it (all blocks when not causal). The kernel shares one list per 64-row block, so
        // the rows vote and the block keeps the k-1 most voted past blocks (ties by gate sum).
        std::vector<double> votes(nkb, 0.0), gsum(nkb, 0.0);
        std::vector<int32_t> top;
        for (int64_t r = blk.r0; r < blk.r1; ++r) {
          const int64_t p = r + off;
          const int64_t own = std::clamp<int64_t>(p, 0, s.seq_kv - 1) / s.block_k;
          const int64_t cand = s.causal ? std::min(own, nkb) : nkb;
          const float* g = gate.data() + (r - r0) * nkb;
          top_k_indices(g, cand, cfg.topk - 1, &top);
          for (int32_t kb : top) {
            if (!s.causal && kb == own) continue;
            votes[kb] += 1.0;
          }
          for (int64_t kb = 0; kb < cand; ++kb) gsum[kb] += g[kb];
        }
        std::vector<float> rank(nkb);
        for (int64_t kb = 0; kb < nkb; ++kb) {
          // Votes dominate; the gate sum (bounded by |q||k| scale) only breaks ties.
          rank[kb] = votes[kb] > 0 ? static_cast<float>(votes[kb] * 1e6 + gsum[kb]) : -1e30f;
        }
        std::vector<int32_t>& l = sel[probe.list_index(b, h, qb)];
        top_k_indices(rank.data(), nkb, cfg.topk - 1, &l);
        l.erase(std::remove_if(l.begin(), l.end(), [&](int32_t kb) { return votes[kb] <= 0; }), l.end());
        add_diagonal(s, blk, &l);
      }
    }
  });
  return block_mask_from_selection(s, sel, nullptr, out);
}

namespace {

// Registry entry (methods.h).
Mechanism make_moba_mechanism() {
  return sparse_mechanism(
      {"moba", "MoBA gating: q . mean(K_block), top-k blocks, own block always",
       {{"topk", "8", "blocks per query (own block included)"}, kBlockParam},
       topk_estimator_factory<MobaConfig>(estimate_moba)});
}
ATTNKIT_REGISTER_MECHANISM(make_moba_mechanism);

}  // namespace

}  // namespace attnkit
