// HiP-style hierarchical top-k (Lee et al. 2024, "HiP Attention"): the causal key blocks of a
// query block are split into k chunks, every chunk halved and scored by its best probe block,
// the top k halves kept, until the chunks are single blocks.
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

Status estimate_hip(const TensorView& q, const TensorView& k, const AttentionParams& params, const HipConfig& cfg,
                    BlockMask* out) {
  const char* what = "hip";
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
    // Block-level scores pooled-q . pooled-k; the hierarchy below reads only the
    // representatives it needs (O(k log n) of them per query block).
    std::vector<float> scores;
    pooled_block_scores(q, kv, s, b, h, nqb, nkb, scale, &scores);
    for (int64_t qb = 0; qb < nqb; ++qb) {
      const int64_t reach = reachable_k_blocks(s, qb);
      const float* sc = scores.data() + qb * nkb;
      std::vector<int32_t>& l = sel[probe.list_index(b, h, qb)];
      // HiP (Lee et al. 2024): chunks of key blocks, each represented by probe blocks;
      // keep the top-k chunks, halve them, repeat until chunks are single blocks.
      std::vector<std::pair<int64_t, int64_t>> chunks;  // [begin, end) in key blocks
      const int64_t n0 = std::min<int64_t>(cfg.topk, reach);
      for (int64_t c = 0; c < n0; ++c) chunks.push_back({c * reach / n0, (c + 1) * reach / n0});
      bool split = true;
      while (split) {
        split = false;
        std::vector<std::pair<int64_t, int64_t>> next;
        for (auto [a, e] : chunks) {
          if (e - a > 1) {
            next.push_back({a, (a + e) / 2});
            next.push_back({(a + e) / 2, e});
            split = true;
          } else {
            next.push_back({a, e});
          }
        }
        if (static_cast<int64_t>(next.size()) > cfg.topk) {
          std::vector<float> rep(next.size());
          // Representative score of a chunk: the best of a few probe blocks (first, middle,
          // last), exact for chunks of up to three blocks.
          for (size_t c = 0; c < next.size(); ++c) {
            const int64_t a = next[c].first, e = next[c].second;
            rep[c] = std::max({sc[a], sc[(a + e - 1) / 2], sc[e - 1]});
          }
          std::vector<int32_t> keep;
          top_k_indices(rep.data(), static_cast<int64_t>(rep.size()), cfg.topk, &keep);
          std::sort(keep.begin(), keep.end());
          chunks.clear();
          for (int32_t c : keep) chunks.push_back(next[c]);
        } else {
          chunks = next;
        }
      }
      for (auto [a, e] : chunks)
        for (int64_t kb = a; kb < e; ++kb) l.push_back(static_cast<int32_t>(kb));
      if (reach > 0) l.push_back(0);
      add_diagonal(s, qblock(s, qb), &l);
    }
  });
  return block_mask_from_selection(s, sel, nullptr, out);
}

namespace {

// Registry entry (methods.h).
Mechanism make_hip_mechanism() {
  return sparse_mechanism(
      {"hip", "HiP-style hierarchical top-k over key blocks",
       {{"topk", "16", "key blocks kept per query block"}, kBlockParam},
       topk_estimator_factory<HipConfig>(estimate_hip)});
}
ATTNKIT_REGISTER_MECHANISM(make_hip_mechanism);

}  // namespace

}  // namespace attnkit
