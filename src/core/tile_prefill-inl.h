// core/tile_prefill-inl.h: the tile for row blocks of any size (prefill, block-sparse and gather
// jobs, and decode blocks that decode_tile does not take), and run_job, which walks a BlockJob's
// spans tile by tile for each of its row blocks. In FlashAttention-2's order: a block of query rows
// stays in registers and scratch while the keys stream past it.
//
// Highway per-target header: included by core/tile_kernel.cc once per target (foreach_target.h),
// hence the toggling include guard instead of #pragma once.
#if defined(ATTNKIT_CORE_TILE_PREFILL_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef ATTNKIT_CORE_TILE_PREFILL_INL_H_
#undef ATTNKIT_CORE_TILE_PREFILL_INL_H_
#else
#define ATTNKIT_CORE_TILE_PREFILL_INL_H_
#endif

#include <hwy/highway.h>

#include <algorithm>
#include <cstring>

#include "core/tile_finish-inl.h"
#include "core/tile_kernel.h"
#include "core/tile_microkernels-inl.h"
#include "core/tile_rows-inl.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit::core::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// The tile's key and value rows as f32 pointers: in place when they are f32 with unit stride,
// else converted into the scratch rows.
template <typename T>
HWY_INLINE void tile_rows_f32(const SeqCtx& s, int64_t hk, const TileKeys& t, const Scratch& sc, const float** krow,
                              const float** vrow) {
  const Call& c = *s.c;
  for (int64_t cidx = 0; cidx < t.kc; ++cidx) {
    const int64_t j = t.pos[cidx];
    const T* kp = k_row<T>(s, hk, j);
    const T* vp = v_row<T>(s, hk, j);
    if (s.direct_k) {
      krow[cidx] = reinterpret_cast<const float*>(kp);
    } else {
      float* dst = sc.kbuf + cidx * s.dp;
      load_row_f32<T>(kp, c.k.stride[3], s.d, s.dp, 1.0f, dst);
      krow[cidx] = dst;
    }
    if (s.direct_v) {
      vrow[cidx] = reinterpret_cast<const float*>(vp);
    } else {
      float* dst = sc.vbuf + cidx * s.dvp;
      load_row_f32<T>(vp, c.v.stride[3], s.dv, s.dvp, 1.0f, dst);
      vrow[cidx] = dst;
    }
  }
}

// S^T = K Q^T of block b against the tile, stored st[c * kTileQ + r]: one dot product per (row, key)
// for blocks of <= kDotRows rows, else the register-blocked kernel over the transposed queries.
// Returns the next tile's V rows, for P V to prefetch (none unless K and V are f32 read in place).
template <typename T>
HWY_INLINE RowPrefetch score_block_tile(const SeqCtx& s, const RowBlock& b, const TileKeys& t, const float* const* krow,
                                        float* st) {
  const int M = b.M;
  const int64_t kc = t.kc;
  RowPrefetch v_ahead;
  if (M <= kDotRows) {
    // Scores land in st[c * kTileQ + r]: rows of one key are adjacent.
    for (int64_t cidx = 0; cidx < kc; ++cidx) dot_block_rows(b.q, s.dp, M, krow[cidx], st + cidx * kTileQ);
    return v_ahead;
  }
  const int64_t n_groups = (M + kLanes - 1) / kLanes;  // query vectors holding the M rows
  constexpr int64_t kGroups = kTileQ / kLanes;  // query vectors in a full row block
  constexpr int kNG = kGroups < kNV ? static_cast<int>(kGroups) : kNV;
  // f32 K and V read in place: the next tile's K rows are prefetched during these scores, a
  // group of kR rows per group of kR keys, and its V rows during this tile's P V.
  const int64_t next = t.pos[0] + kTileK;
  const int64_t n_next = s.direct_k && s.direct_v && t.contiguous ? std::min(kTileK, t.key_end - next) : 0;
  const char* pf_k[kR];
  for (int64_t g0 = 0; g0 < n_groups * static_cast<int64_t>(kLanes); g0 += kNG * kLanes) {
    int64_t cidx = 0;
    for (; cidx + kR <= kc; cidx += kR) {
      const bool ahead = g0 == 0 && cidx < n_next;
      for (int r = 0; ahead && r < kR; ++r)
        pf_k[r] = reinterpret_cast<const char*>(k_row<T>(s, b.hk, next + std::min(cidx + r, n_next - 1)));
      if (ahead) qk_keys<kR, kNG, true>(krow + cidx, b.qt, s.d, g0, st + cidx * kTileQ, pf_k);
      else qk_keys<kR, kNG>(krow + cidx, b.qt, s.d, g0, st + cidx * kTileQ);
    }
    for (; cidx < kc; ++cidx) qk_keys<1, kNG>(krow + cidx, b.qt, s.d, g0, st + cidx * kTileQ);
  }
  if (n_next > 0) v_ahead = next_tile_v_rows<T>(s, b.hk, t);
  return v_ahead;
}

// One tile of keys against one row block of any size: rows, scores, then finish_tile.
template <typename T, class Variant>
void process_tile(const SeqCtx& s, RowBlock* b, const TileKeys& t, const Scratch& sc, const Variant& var) {
  bool need_mask;
  if (!tile_visible(s, *b, t, &need_mask)) return;
  const float* krow[kTileK];
  const float* vrow[kTileK];
  tile_rows_f32<T>(s, b->hk, t, sc, krow, vrow);
  const RowPrefetch v_ahead = score_block_tile<T>(s, *b, t, krow, sc.s);
  finish_tile<float>(s, b, t, sc.s, kTileQ, vrow, need_mask, var, false, v_ahead);
}

// Calls visit(t) for each tile of the job's key spans, in order: kTileK keys at a time, or kTileK
// entries of the job's index list. t is reused from tile to tile.
template <class Visit>
HWY_INLINE void for_each_job_tile(const BlockJob& job, TileKeys* t, Visit&& visit) {
  const bool extra = job.maybe_extra_mask && job.maybe_extra_mask->fn;
  t->extra = job.maybe_extra_mask;
  for (int sp = 0; sp < job.n_spans; ++sp) {
    const KvSpan& span = job.spans[sp];
    t->extra_needed = extra && !span.full;
    for (int64_t t0 = span.begin; t0 < span.end; t0 += kTileK) {
      t->kc = std::min<int64_t>(kTileK, span.end - t0);
      if (job.maybe_kv_indices) {
        t->contiguous = false;
        for (int64_t cidx = 0; cidx < t->kc; ++cidx) t->pos[cidx] = job.maybe_kv_indices[t0 + cidx];
      } else {
        t->contiguous = true;
        for (int64_t cidx = 0; cidx < t->kc; ++cidx) t->pos[cidx] = t0 + cidx;
      }
      t->key_end = t->contiguous ? span.end : 0;
      visit(*t);
    }
  }
}

// The finished rows of block b: into the job's partial state, or as final rows into out and LSE.
template <class Variant>
HWY_INLINE void write_job_rows(const SeqCtx& s, const BlockJob& job, const RowBlock& b, const Variant& var) {
  const int64_t nrows_q = job.row_end - job.row_begin;
  for (int r = 0; r < b.M; ++r) {
    const int64_t h = b.head[r], i = b.pos[r];
    const float lse = var.OutputTransform(b, r, s.dvp);
    if (job.maybe_partial) {
      const int64_t row = (h - job.head_q) * nrows_q + (i - job.row_begin);
      std::memcpy(job.maybe_partial->o + row * s.dv, b.o + r * s.dvp, sizeof(float) * s.dv);
      if (job.maybe_partial->lse) job.maybe_partial->lse[row] = lse;
    } else {
      write_final_row(*s.c, s.r, h, i, b.o + r * s.dvp, lse, job.include_sink_logit);
    }
  }
}

// Calls visit(b) for each row block of the job: its rows in blocks of at most kTileQ (queries
// split, heads kept together when they fit), each set up in the scratch's first row block.
template <typename T, class Visit>
HWY_INLINE void for_each_row_block(const SeqCtx& s, const BlockJob& job, const Scratch& sc, Visit&& visit) {
  const int64_t q_per_block = std::max<int64_t>(1, kTileQ / job.n_heads);
  const int64_t heads_per_block = job.n_heads <= kTileQ ? job.n_heads : kTileQ;
  for (int64_t h0 = job.head_q; h0 < job.head_q + job.n_heads; h0 += heads_per_block) {
    const int64_t nh = std::min(heads_per_block, job.head_q + job.n_heads - h0);
    for (int64_t i0 = job.row_begin; i0 < job.row_end; i0 += q_per_block) {
      const int64_t i1 = std::min(job.row_end, i0 + q_per_block);
      RowBlock b;
      init_rows<T>(s, &b, sc.rows, h0, nh, i0, i1);
      visit(b);
    }
  }
}

// One BlockJob: each row block attends to every tile of the job's spans.
template <typename T, class Variant>
void run_job(const SeqCtx& s, const BlockJob& job, Workspace* ws, const Variant& var) {
  if (job.row_end <= job.row_begin) return;
  const Scratch sc = carve(ws, s.dp, s.dvp, 1);
  TileKeys t;
  for_each_row_block<T>(s, job, sc, [&](RowBlock& b) __attribute__((always_inline)) {
    for_each_job_tile(job, &t, [&](const TileKeys& tile) __attribute__((always_inline)) {
      process_tile<T>(s, &b, tile, sc, var);
    });
    write_job_rows(s, job, b, var);
  });
}

}  // namespace attnkit::core::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // ATTNKIT_CORE_TILE_PREFILL_INL_H_
