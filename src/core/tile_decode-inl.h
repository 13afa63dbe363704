// core/tile_decode-inl.h: split-KV decode (few query rows per kv head, many keys). Decode reads
// every K and V row once and does little arithmetic per byte, so memory bounds it: the walk takes
// keys outermost and all kv heads inside, scores one position of every head in one sweep of
// adjacent memory, and prefetches K ahead and the next tile's V during P V. When the blocks do
// not fit that scheme (more than kDotRows rows, or K/V rows not readable in place), every block
// goes through the prefill tile instead.
//
// Highway per-target header: included by core/tile_kernel.cc once per target (foreach_target.h),
// hence the toggling include guard instead of #pragma once.
#if defined(ATTNKIT_CORE_TILE_DECODE_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef ATTNKIT_CORE_TILE_DECODE_INL_H_
#undef ATTNKIT_CORE_TILE_DECODE_INL_H_
#else
#define ATTNKIT_CORE_TILE_DECODE_INL_H_
#endif

#include <hwy/highway.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "core/bf16_dot.h"
#include "core/prefetch.h"
#include "core/tile_finish-inl.h"
#include "core/tile_kernel.h"
#include "core/tile_microkernels-inl.h"
#include "core/tile_prefill-inl.h"
#include "core/tile_rows-inl.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit::core::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Blocks scored together by decode_tile: their K rows at one position are read in one sweep.
constexpr int kDecodeGroup = 8;
// K is prefetched this many positions ahead of the score sweep (64 KiB for 8 heads of 128 f32):
// the hardware stream prefetcher alone leaves the loads of a long sweep waiting on DRAM, and the
// distance matters little between 4 and 64 keys (docs/design/decode.md).
constexpr int64_t kPrefetchKeys = 16;

// The row blocks of one decode tile and where their scores go. first_of_head: the first block of
// its kv head, which issues that head's prefetches.
template <typename T>
struct DecodeGroup {
  RowBlock* blocks;
  int nb;
  bool active[kDecodeGroup], need_mask[kDecodeGroup], first_of_head[kDecodeGroup];
  const T* k0[kDecodeGroup];      // each block's K row at the tile's first key
  float* st_block[kDecodeGroup];  // each block's score tile, key c at st_block + c * ss
  int64_t ss;                     // score stride
  int64_t kstep;                  // elements between consecutive keys' K rows
  int64_t k_bytes, v_bytes;       // bytes of one K row and one V row
};

// Fills g for nb blocks and tile t: which blocks see the tile (and need its mask), which issue
// prefetches, and where each block's K rows and scores are.
template <typename T, class Variant>
HWY_INLINE void make_decode_group(const SeqCtx& s, RowBlock* blocks, int nb, const TileKeys& t, float* st_base,
                                  DecodeGroup<T>* g) {
  g->blocks = blocks;
  g->nb = nb;
  // Packed score tiles where every block's softmax reads them (kPackedStride): the group's tiles
  // then take 8 KiB of L1 instead of 128 KiB, and softmax_tile_4rows works on them in place.
  bool packed = true;
  for (int bi = 0; bi < nb; ++bi) {
    g->active[bi] = tile_visible(s, blocks[bi], t, &g->need_mask[bi]);
    g->first_of_head[bi] = bi == 0 || blocks[bi].hk != blocks[bi - 1].hk;
    g->k0[bi] = k_row<T>(s, blocks[bi].hk, t.pos[0]);
    packed = packed && packed_softmax_rows<Variant>(blocks[bi].M);
  }
  g->ss = packed ? kPackedStride : kTileQ;
  for (int bi = 0; bi < nb; ++bi) g->st_block[bi] = st_base + bi * kTileK * g->ss;
  g->kstep = s.c->k.stride[1];
  g->k_bytes = s.d * static_cast<int64_t>(sizeof(T));
  g->v_bytes = s.dv * static_cast<int64_t>(sizeof(T));
}

// Whether the scores of a bf16 decode tile go through vdpbf16ps (bf16_dot.h): the raw bf16 query
// times the bf16 key (exact products, f32 sums), then the row's multiplier. It halves the
// multiply-adds of the scores and needs no widening of K.
template <typename T>
HWY_INLINE bool use_bf16_dot(const SeqCtx& s) {
#if HWY_TARGET <= HWY_AVX3 && HWY_ARCH_X86
  if constexpr (std::is_same_v<T, hwy::bfloat16_t>) return s.d % 32 == 0 && s.c->q.dtype == DType::kBF16 && s.c->q.stride[3] == 1 && bf16_dot_enabled();
#endif
  (void)s;
  return false;
}

// The key-major score sweep of use_bf16_dot, in bf16_dot.cc (compiled for AVX512-BF16).
template <typename T>
HWY_INLINE void score_decode_bf16_dot(const SeqCtx& s, const DecodeGroup<T>& g, const TileKeys& t) {
  Bf16ScoreHead heads[kDecodeGroup];
  int n = 0;
  for (int bi = 0; bi < g.nb; ++bi) {
    if (!g.active[bi]) continue;
    const RowBlock& b = g.blocks[bi];
    Bf16ScoreHead& h = heads[n++];
    h.q = b.qraw;
    h.mul = b.mul;
    h.M = b.M;
    h.k = reinterpret_cast<const uint16_t*>(g.k0[bi]);
    h.out = g.st_block[bi];
    h.prefetch_k = g.first_of_head[bi] ? reinterpret_cast<const char*>(g.k0[bi]) : nullptr;
    h.prefetch_v = g.first_of_head[bi] && !t.v_ahead ? reinterpret_cast<const char*>(v_row<T>(s, b.hk, t.pos[0]))
                                                     : nullptr;
  }
  Bf16ScoreTile tile;
  tile.kc = t.kc;
  tile.d = s.d;
  tile.k_stride = g.kstep;
  tile.out_stride = g.ss;
  tile.k_stride_bytes = g.kstep * static_cast<int64_t>(sizeof(T));
  tile.v_stride_bytes = s.c->v.stride[1] * static_cast<int64_t>(sizeof(T));
  tile.k_bytes = g.k_bytes;
  tile.v_bytes = g.v_bytes;
  tile.k_ahead = kPrefetchKeys;
  tile.n_prefetch_k = std::clamp<int64_t>(t.key_end - kPrefetchKeys - t.pos[0], 0, t.kc);
  bf16_score_tile(heads, n, tile);
}

// The dot products of score_decode_sweep with K widened to f32 in registers (any dtype) against
// each block's f32 query rows. A Dots type gives, for block bi of the group, the scores of its 4
// rows against two keys (two_keys4, blocks of 4 rows only, with dot_rows4_two_keys's prefetch
// contract) and of all its rows against one key (one_key).
template <typename T>
struct WidenedDots {
  const RowBlock* blocks;
  int64_t dp;
#if HWY_TARGET != HWY_SCALAR
  HWY_INLINE void two_keys4(int bi, const T* ka, const T* kb, float* oa, float* ob, const char* pfa,
                            const char* pfb) const {
    dot_rows4_two_keys(blocks[bi].q, dp, ka, kb, oa, ob, pfa, pfb);
  }
#endif
  HWY_INLINE void one_key(int bi, const T* k, float* out) const { dot_block_rows(blocks[bi].q, dp, blocks[bi].M, k, out); }
};

// The key-major score sweep (scores from dots, see WidenedDots), issuing the group's prefetches
// as it goes: for each key, the V row (first tile only; later tiles' V rows come during the
// previous tile's P V) and the K row kPrefetchKeys ahead, one block per kv head.
template <typename T, class Dots>
HWY_INLINE void score_decode_sweep(const SeqCtx& s, const DecodeGroup<T>& g, const TileKeys& t, const Dots& dots) {
  const int nb = g.nb;
  const int64_t kc = t.kc, kstep = g.kstep, ss = g.ss;
  // Always inlined: GCC 12 deletes calls to a function that only prefetches (see core/prefetch.h).
  const auto prefetch_v = [&](int bi, int64_t cidx) __attribute__((always_inline)) {
    if (!t.v_ahead) prefetch_bytes(reinterpret_cast<const char*>(v_row<T>(s, g.blocks[bi].hk, t.pos[cidx])), g.v_bytes);
  };
  const auto prefetch_k_ahead = [&](int bi, int64_t cidx) __attribute__((always_inline)) {
    const int64_t jk = t.pos[cidx] + kPrefetchKeys;
    if (jk < t.key_end) prefetch_bytes(reinterpret_cast<const char*>(k_row<T>(s, g.blocks[bi].hk, jk)), g.k_bytes);
  };
  // Key cidx's prefetches for all blocks, issued by the first block of each kv head.
  const auto prefetch_key = [&](int64_t cidx) __attribute__((always_inline)) {
    for (int bi = 0; bi < nb; ++bi) {
      if (!g.active[bi] || !g.first_of_head[bi]) continue;
      prefetch_v(bi, cidx);
      prefetch_k_ahead(bi, cidx);
    }
  };
  // Blocks of 4 rows (GQA groups of 4, one query) score two keys per step, so each query vector
  // is loaded once for two keys. Each kv head's K rows kPrefetchKeys ahead are prefetched inside
  // its dot product, a line per line of K read, which spreads the prefetches between the loads
  // instead of issuing them in a burst per key (docs/design/decode.md).
  int64_t c2 = 0;
#if HWY_TARGET != HWY_SCALAR
  bool all4 = true;
  for (int bi = 0; bi < nb; ++bi) all4 = all4 && g.blocks[bi].M == 4;
  const int64_t k_step_bytes = kstep * static_cast<int64_t>(sizeof(T));
  const bool whole_lines = g.k_bytes == s.dp * static_cast<int64_t>(sizeof(T));  // a K row is whole loop lines
  for (; all4 && c2 + 2 <= kc; c2 += 2) {
    const bool spread = whole_lines && t.pos[c2] + kPrefetchKeys + 1 < t.key_end;  // both keys ahead exist
    for (int bi = 0; bi < nb; ++bi) {
      if (!g.active[bi]) continue;
      const T* kr = g.k0[bi] + c2 * kstep;
      float* o = g.st_block[bi] + c2 * ss;
      const bool issues = g.first_of_head[bi];  // one block per kv head issues its prefetches
      if (issues) {
        prefetch_v(bi, c2);
        prefetch_v(bi, c2 + 1);
      }
      // The row pointers ahead are formed only for keys that exist.
      const bool inside = issues && spread;
      const char* k_next = inside ? reinterpret_cast<const char*>(kr + kPrefetchKeys * kstep) : nullptr;
      dots.two_keys4(bi, kr, kr + kstep, o, o + ss, k_next, inside ? k_next + k_step_bytes : nullptr);
      if (issues && !spread) {
        prefetch_k_ahead(bi, c2);
        prefetch_k_ahead(bi, c2 + 1);
      }
    }
  }
#endif
  for (int64_t cidx = c2; cidx < kc; ++cidx) {
    prefetch_key(cidx);
    for (int bi = 0; bi < nb; ++bi) {
      if (!g.active[bi]) continue;
      dots.one_key(bi, g.k0[bi] + cidx * kstep, g.st_block[bi] + cidx * ss);
    }
  }
}

// Decode tile for up to kDecodeGroup row blocks of <= kDotRows rows each (the heads of one or more
// GQA groups), K/V read in place. The scores are computed key-major: for each key position, the
// K rows of all the blocks' kv heads, which are adjacent in BSHD memory, are read in one
// ascending sweep, and the same position's V rows are prefetched in the same order. Visiting one
// kv head at a time instead reads rows heads_kv * head_dim apart (a page apart for 8 heads of
// 128 floats), which the hardware prefetchers do not follow, so decode would wait on DRAM latency
// for every row. The rest of each block's tile (softmax, P V) then reads its V rows from L2.
// score(g, t, b0) fills the group's score tiles (b0: index of the group's first block), and
// score.finish(...) takes each block's tile from there (finish_tile's arguments, and the block's index).
template <typename T, class Variant, class Score>
void decode_tile(const SeqCtx& s, RowBlock* blocks, int nb, int b0, const TileKeys& t, float* st_base,
                 const Variant& var, bool bf16_pairs, Score& score) {
  DecodeGroup<T> g;
  make_decode_group<T, Variant>(s, blocks, nb, t, st_base, &g);
  score(g, t, b0);
  const T* vrow[kTileK];
  for (int bi = 0; bi < nb; ++bi) {
    if (!g.active[bi]) continue;
    for (int64_t cidx = 0; cidx < t.kc; ++cidx) vrow[cidx] = v_row<T>(s, blocks[bi].hk, t.pos[cidx]);
    // The next tile's V rows of this kv head (once per head), fetched while this tile's P V runs.
    const RowPrefetch pf = g.first_of_head[bi] ? next_tile_v_rows<T>(s, blocks[bi].hk, t) : RowPrefetch();
    score.finish(&blocks[bi], b0 + bi, t, g.st_block[bi], g.ss, vrow, g.need_mask[bi], var, bf16_pairs, pf);
  }
}

// A row block of decode_keys: heads [h0, h0 + nh) of one kv group, queries [i0, i1).
struct DecodeBlockDef {
  int64_t h0, nh, i0, i1;
};

// Per kv head, its group's heads x queries, cut into blocks of <= kTileQ rows.
HWY_INLINE std::vector<DecodeBlockDef> decode_block_defs(const Call& c, int64_t nq) {
  std::vector<DecodeBlockDef> defs;
  const int64_t g = c.group;
  const int64_t q_per_block = std::max<int64_t>(1, kTileQ / g);
  const int64_t heads_per_block = std::min<int64_t>(g, kTileQ);
  for (int64_t hk = 0; hk < c.heads_kv; ++hk)
    for (int64_t h0 = hk * g; h0 < (hk + 1) * g; h0 += heads_per_block)
      for (int64_t i0 = 0; i0 < nq; i0 += q_per_block)
        defs.push_back({h0, std::min(heads_per_block, (hk + 1) * g - h0), i0, std::min(nq, i0 + q_per_block)});
  return defs;
}

// Calls visit(t) for each tile of keys [key_begin, key_end), kTileK keys at a time, in order.
// Every tile after the first finds its V rows prefetched during the previous tile's P V
// (t.v_ahead).
template <class Visit>
HWY_INLINE void for_each_key_tile(int64_t key_begin, int64_t key_end, Visit&& visit) {
  TileKeys t;
  t.contiguous = true;
  t.extra_needed = false;
  t.extra = nullptr;
  t.key_end = key_end;
  for (int64_t t0 = key_begin; t0 < key_end; t0 += kTileK) {
    t.kc = std::min<int64_t>(kTileK, key_end - t0);
    for (int64_t cidx = 0; cidx < t.kc; ++cidx) t.pos[cidx] = t0 + cidx;
    t.v_ahead = t0 != key_begin;
    visit(t);
  }
}

// The blocks' rows as partial states: row (head, query) of the sequence at out.o + (head * nq +
// query) * dv and out.lse[head * nq + query]. pairs: the outputs are in pair layout.
template <class Variant>
HWY_INLINE void write_partial_rows(const SeqCtx& s, std::vector<RowBlock>& blocks, bool pairs, PartialOut out,
                                   const Variant& var) {
  const int64_t nq = s.r.q_len;
  for (auto& b : blocks) {
    for (int r = 0; r < b.M; ++r) {
      const int64_t row = b.head[r] * nq + b.pos[r];
      const float lse = var.OutputTransform(b, r, s.dvp);
      if (pairs) unpair_row(b.o + r * s.dvp, s.dv, out.o + row * s.dv);
      else std::memcpy(out.o + row * s.dv, b.o + r * s.dvp, sizeof(float) * s.dv);
      out.lse[row] = lse;
    }
  }
}

// The arithmetic of decode_tile for any K dtype: scores by vdpbf16ps for bf16 where it applies,
// else K widened to f32 against the f32 queries; then finish_tile. A scorer's init(blocks, ws) runs
// once the row blocks are set up and may turn the call down (false: nothing was written); its
// operator() scores a group, finish() ends one block's tile, and done(blocks) runs after the last
// tile, before the rows are written.
template <typename T>
struct DefaultDecodeScorer {
  const SeqCtx& s;
  bool init(std::vector<RowBlock>& /*blocks*/, Workspace* /*ws*/) { return true; }
  HWY_INLINE void operator()(const DecodeGroup<T>& g, const TileKeys& t, int /*b0*/) {
    if (use_bf16_dot<T>(s)) score_decode_bf16_dot<T>(s, g, t);
    else score_decode_sweep<T>(s, g, t, WidenedDots<T>{g.blocks, s.dp});
  }
  template <class Variant>
  HWY_INLINE void finish(RowBlock* b, int /*bi*/, const TileKeys& t, float* st, int64_t ss, const T* const* vrow,
                         bool need_mask, const Variant& var, bool bf16_pairs, const RowPrefetch& pf) {
    finish_tile<T>(s, b, t, st, ss, vrow, need_mask, var, bf16_pairs, pf);
  }
  void done(std::vector<RowBlock>& /*blocks*/) {}
};

// Whether every decode block of the call fits decode_tile (<= kDotRows rows, K/V read in place).
HWY_INLINE bool decode_grouped(const SeqCtx& s, const std::vector<DecodeBlockDef>& defs) {
  bool grouped = s.inline_k && s.inline_v;
  for (const auto& d : defs) grouped = grouped && d.nh * (d.i1 - d.i0) <= kDotRows;
  return grouped;
}

// Split-KV decode over all heads of one sequence: tiles of keys outermost, kv heads inside, so
// the K/V rows of all heads at a position (adjacent in BSHD memory) are read together, once.
// Returns false, having written nothing, when the scorer turns the call down.
template <typename T, class Variant, class Scorer>
bool decode_keys_scored(const SeqCtx& s, int64_t key_begin, int64_t key_end, PartialOut out, Workspace* ws,
                        const Variant& var, Scorer& scorer) {
  const std::vector<DecodeBlockDef> defs = decode_block_defs(*s.c, s.r.q_len);
  // Blocks of <= kDotRows rows with K/V readable in place take decode_tile (its own score tile per
  // block of a group, after the row blocks in scratch); others take process_tile one by one.
  const bool grouped = decode_grouped(s, defs);
  // bf16 outputs of grouped decode accumulate in pair layout (pv_cols_bf16_pairs).
  const bool pairs = grouped && use_bf16_pairs<T>(s);
  const int64_t n_blocks = static_cast<int64_t>(defs.size());
  const Scratch sc = carve(ws, s.dp, s.dvp, n_blocks, grouped ? kDecodeGroup * kTileK * kTileQ : 0);
  float* st_group = sc.extra;
  std::vector<RowBlock> blocks(defs.size());
  for (size_t bi = 0; bi < defs.size(); ++bi)
    init_rows<T>(s, &blocks[bi], sc.rows + bi * sc.row_block_floats, defs[bi].h0, defs[bi].nh, defs[bi].i0,
                 defs[bi].i1);
  if (!scorer.init(blocks, ws)) return false;
  for_each_key_tile(key_begin, key_end, [&](const TileKeys& t) __attribute__((always_inline)) {
    if (grouped) {
      for (int64_t b0 = 0; b0 < n_blocks; b0 += kDecodeGroup)
        decode_tile<T>(s, blocks.data() + b0, static_cast<int>(std::min<int64_t>(kDecodeGroup, n_blocks - b0)),
                       static_cast<int>(b0), t, st_group, var, pairs, scorer);
    } else {
      for (auto& b : blocks) process_tile<T>(s, &b, t, sc, var);
    }
  });
  scorer.done(blocks);
  write_partial_rows(s, blocks, pairs, out, var);
  return true;
}

template <typename T, class Variant>
void decode_keys(const SeqCtx& s, int64_t key_begin, int64_t key_end, PartialOut out, Workspace* ws,
                 const Variant& var) {
  DefaultDecodeScorer<T> scorer{s};
  decode_keys_scored<T>(s, key_begin, key_end, out, ws, var, scorer);
}

}  // namespace attnkit::core::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // ATTNKIT_CORE_TILE_DECODE_INL_H_
