// core/tile_mass-inl.h: the attention mass per key of a job's rows, a second pass over the keys
// once each row's final LSE is known. For row i and key j, p_ij = exp(s_ij - lse_i) with s_ij the
// same logit the attention pass computed (same scores, hooks and masks); the pass adds p_ij over
// the job's rows and heads into mass[j], j on the call's key axis. KV-cache policies that rank keys
// by the attention they receive (H2O, TOVA, SnapKV) read this instead of recomputing attention.
// Softmax only. Costs the score half of an attention pass (no P V).
//
// Highway per-target header: included by core/tile_kernel.cc once per target (foreach_target.h),
// hence the toggling include guard instead of #pragma once.
#if defined(ATTNKIT_CORE_TILE_MASS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef ATTNKIT_CORE_TILE_MASS_INL_H_
#undef ATTNKIT_CORE_TILE_MASS_INL_H_
#else
#define ATTNKIT_CORE_TILE_MASS_INL_H_
#endif

#include <hwy/highway.h>

#include <cmath>

#include "core/tile_kernel.h"
#include "core/tile_prefill-inl.h"
#include "core/tile_rows-inl.h"
#include "core/tile_variants-inl.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit::core::HWY_NAMESPACE {

// row_lse: [n_heads, row_end - row_begin] (the job's partial-output row order), the rows' final
// LSE; a row with LSE -inf adds nothing.
template <typename T>
void mass_job(const SeqCtx& s, const BlockJob& job, const float* row_lse, float* mass, Workspace* ws) {
  if (job.row_end <= job.row_begin) return;
  const SoftmaxVariant var;
  const Scratch sc = carve(ws, s.dp, s.dvp, 1);
  const int64_t nrows_q = job.row_end - job.row_begin;
  TileKeys t;
  float lse[kTileQ];
  for_each_row_block<T>(s, job, sc, [&](RowBlock& b) {
    for (int r = 0; r < b.M; ++r) lse[r] = row_lse[(b.head[r] - job.head_q) * nrows_q + (b.pos[r] - job.row_begin)];
    for_each_job_tile(job, &t, [&](const TileKeys& tile) {
      bool need_mask;
      if (!tile_visible(s, b, tile, &need_mask)) return;
      const float* krow[kTileK];
      const float* vrow[kTileK];
      tile_rows_f32<T>(s, b.hk, tile, sc, krow, vrow);
      (void)score_block_tile<T>(s, b, tile, krow, sc.s);
      const int64_t n_groups = (b.M + kLanes - 1) / kLanes;
      if (s.int8_kv) apply_kv_scales(s, b.hk, tile, 0, sc.s, kTileQ, b.M);
      var.LogitsTransform(s, b, tile, sc.s, kTileQ);
      if (need_mask) var.LogitsMask(s, b, tile, sc.s, kTileQ, static_cast<int>(n_groups * kLanes));
      for (int64_t cidx = 0; cidx < tile.kc; ++cidx) {
        const float* col = sc.s + cidx * kTileQ;
        float acc = 0.0f;
        for (int r = 0; r < b.M; ++r)
          if (lse[r] != kNegInf && col[r] != kNegInf) acc += std::exp(col[r] - lse[r]);
        mass[tile.pos[cidx]] += acc;
      }
    });
  });
}

}  // namespace attnkit::core::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // ATTNKIT_CORE_TILE_MASS_INL_H_
