// core/tile_rows-inl.h: the state the tile kernel carries: a sequence's constants (SeqCtx), a block
// of query rows with its online-softmax statistics (RowBlock), the scratch a Workspace is cut into,
// and a tile of keys (TileKeys) with the test of what a block can see of it.
//
// Highway per-target header: included by core/tile_kernel.cc once per target (foreach_target.h),
// hence the toggling include guard instead of #pragma once.
#if defined(ATTNKIT_CORE_TILE_ROWS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef ATTNKIT_CORE_TILE_ROWS_INL_H_
#undef ATTNKIT_CORE_TILE_ROWS_INL_H_
#else
#define ATTNKIT_CORE_TILE_ROWS_INL_H_
#endif

#include <hwy/highway.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "core/tile_kernel.h"
#include "core/tile_microkernels-inl.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit::core::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Row blocks with at most this many rows (decode) use one dot product per (row, key).
constexpr int kDotRows = 8;
// Score tiles are stored transposed, key c's scores at st + c * ss. The row-block kernels use
// ss = kTileQ; decode tiles of blocks with <= 4 rows use the packed stride 4 (see
// softmax_tile_4rows), so a block's tile is 1 KiB instead of 16 KiB.
constexpr int64_t kPackedStride = 4;

// ---------------------------------------------------------------------------------------------
// One sequence of the call: constants shared by all row blocks of the sequence.

struct SeqCtx {
  const Call* c;
  SeqRange r;
  int64_t seq;
  int64_t diag;          // causal diagonal offset
  int64_t d, dv, dp, dvp;  // head dims and their padded sizes
  bool direct_k, direct_v;  // K/V rows usable in place as f32
  bool inline_k, inline_v;  // K/V rows readable in place by whole vectors (any dtype, widened in registers)
  bool int8_kv;              // K/V rows are int8: their scales apply to scores and weights (apply_kv_scales)
  bool has_hooks;            // softcap, ALiBi, additive mask or a key bias on one of this sequence's keys
  bool has_custom;           // any custom mask
};

template <typename T>
inline const T* k_row(const SeqCtx& s, int64_t hk, int64_t j) {
  const TensorView& k = s.c->k;
  return static_cast<const T*>(k.data) + k.offset(s.r.batch, s.r.k_begin + j, hk, 0);
}
template <typename T>
inline const T* v_row(const SeqCtx& s, int64_t hk, int64_t j) {
  const TensorView& v = s.c->v;
  return static_cast<const T*>(v.data) + v.offset(s.r.batch, s.r.k_begin + j, hk, 0);
}

template <typename T>
SeqCtx make_seq_ctx(const Call& c, int64_t seq) {
  SeqCtx s;
  s.c = &c;
  s.seq = seq;
  s.r = c.seq(seq);
  s.diag = c.diag_offset(s.r);
  s.d = c.head_dim;
  s.dv = c.head_dim_v;
  s.dp = round_up(s.d, kLanes);
  s.dvp = round_up(s.dv, kLanes);
  const bool f32 = std::is_same_v<T, float>;
  s.inline_k = c.k.stride[3] == 1 && s.d == s.dp;
  s.inline_v = c.v.stride[3] == 1 && s.dv == s.dvp;
  s.direct_k = f32 && s.inline_k;
  s.direct_v = f32 && s.inline_v;
  s.int8_kv = std::is_same_v<T, int8_t>;
  s.has_custom = c.p.mask.kind != MaskKind::kNone;
  s.has_hooks = c.p.softcap > 0.0f || c.p.maybe_alibi_slopes != nullptr || c.p.mask.kind == MaskKind::kAdditive ||
                (c.p.maybe_key_bias != nullptr && c.p.key_bias_index < s.r.k_len);
  return s;
}

// ---------------------------------------------------------------------------------------------
// A block of query rows and its running state. All pointers point into a Workspace.

struct RowBlock {
  int M = 0;            // rows
  int64_t hk = 0;       // kv head shared by all rows
  int64_t head[kTileQ];  // query head of each row
  int64_t pos[kTileQ];   // query index within the sequence
  int64_t lo[kTileQ], hi[kTileQ], sink_hi[kTileQ];  // visible keys: [lo, hi) U [0, sink_hi)
  int64_t min_lo, max_lo, min_hi, max_hi, min_sink_hi, max_sink_hi;
  float* q;   // [kTileQ][dp], pre-multiplied (rows >= M are zero)
  float mul[kTileQ];              // each row's logit multiplier (already folded into q)
  const uint16_t* qraw[kTileQ];   // bf16 queries read in place (unit stride), else nullptr
  float* qt;  // [d][kTileQ]: q transposed, built when M > kDotRows
  float* m;   // [kTileQ] running max (padding rows stay -inf)
  float* l;   // [kTileQ] running denominator
  float* o;   // [kTileQ][dvp] unnormalized output
};

// Scratch layout of one Workspace (floats). Tiles: S^T [kTileK][kTileQ], converted K rows
// [kTileK][dp], converted V rows [kTileK][dvp].
struct Scratch {
  float* s;
  float* kbuf;
  float* vbuf;
  float* rows;  // row blocks start here
  int64_t row_block_floats;
  float* extra;  // extra_floats after the row blocks (decode_tile's score tiles)
};

inline int64_t row_block_floats(int64_t dp, int64_t dvp) { return kTileQ * (2 * dp + dvp + 2); }

inline Scratch carve(Workspace* ws, int64_t dp, int64_t dvp, int64_t n_row_blocks, int64_t extra_floats = 0) {
  const int64_t rb = row_block_floats(dp, dvp);
  const int64_t need = kTileQ * kTileK + kTileK * dp + kTileK * dvp + rb * n_row_blocks + extra_floats + 64;
  ws->buf.ensure(static_cast<size_t>(need));
  Scratch sc;
  float* p = ws->buf.data();
  sc.s = p; p += kTileQ * kTileK;
  sc.kbuf = p; p += kTileK * dp;
  sc.vbuf = p; p += kTileK * dvp;
  sc.rows = p;
  sc.row_block_floats = rb;
  sc.extra = p + rb * n_row_blocks;
  return sc;
}

// Query row at element offset `off` of q, times mul, as f32 into dst (padded to dp); *qraw: the
// row in place when it is bf16 with unit stride (the bf16 dot-product scores read it raw). The
// query's dtype is read at run time: the kernel is instantiated per K/V element type, and int8
// K/V take queries of any float dtype.
inline void load_query_row(const TensorView& q, int64_t off, int64_t d, int64_t dp, float mul, float* dst,
                           const uint16_t** qraw) {
  switch (q.dtype) {
    case DType::kF32: load_row_f32(static_cast<const float*>(q.data) + off, q.stride[3], d, dp, mul, dst); break;
    case DType::kBF16: {
      const auto* src = static_cast<const hwy::bfloat16_t*>(q.data) + off;
      if (q.stride[3] == 1) *qraw = reinterpret_cast<const uint16_t*>(src);
      load_row_f32(src, q.stride[3], d, dp, mul, dst);
      break;
    }
    case DType::kF16: load_row_f32(static_cast<const hwy::float16_t*>(q.data) + off, q.stride[3], d, dp, mul, dst); break;
    case DType::kI8: ATTNKIT_ASSERT(false && "make_call rejects int8 queries"); break;
  }
}

// Sets up rows (head-major over heads [h0, h0+nh), queries [i0, i1)) of a row block.
template <typename T>
void init_rows(const SeqCtx& s, RowBlock* b, float* mem, int64_t h0, int64_t nh, int64_t i0, int64_t i1) {
  const Call& c = *s.c;
  b->M = static_cast<int>(nh * (i1 - i0));
  ATTNKIT_ASSERT(b->M <= kTileQ);
  b->hk = c.kv_head(h0);
  b->q = mem;
  b->qt = mem + kTileQ * s.dp;
  b->o = b->qt + kTileQ * s.dp;
  b->m = b->o + kTileQ * s.dvp;
  b->l = b->m + kTileQ;
  for (int r = 0; r < kTileQ; ++r) {
    b->m[r] = kNegInf;
    b->l[r] = 0.0f;
    b->lo[r] = b->hi[r] = b->sink_hi[r] = 0;  // padding rows see nothing
  }
  b->min_lo = b->min_hi = b->min_sink_hi = std::numeric_limits<int64_t>::max();
  b->max_lo = b->max_hi = b->max_sink_hi = std::numeric_limits<int64_t>::min();
  const TensorView& q = c.q;
  int r = 0;
  for (int64_t h = h0; h < h0 + nh; ++h) {
    for (int64_t i = i0; i < i1; ++i, ++r) {
      b->head[r] = h;
      b->pos[r] = i;
      int64_t lo, hi;
      c.key_range(s.r, i, i + 1, &lo, &hi);
      const int64_t causal_hi = c.p.causal ? std::min<int64_t>(s.r.k_len, i + s.diag + 1) : s.r.k_len;
      const int64_t shi = std::max<int64_t>(0, std::min<int64_t>(c.p.n_sink_tokens, causal_hi));
      b->lo[r] = lo;
      b->hi[r] = hi;
      b->sink_hi[r] = shi;
      b->min_lo = std::min(b->min_lo, lo);
      b->max_lo = std::max(b->max_lo, lo);
      b->min_hi = std::min(b->min_hi, hi);
      b->max_hi = std::max(b->max_hi, hi);
      b->min_sink_hi = std::min(b->min_sink_hi, shi);
      b->max_sink_hi = std::max(b->max_sink_hi, shi);
      // Logit multiplier folded into q: scale * temperature[h] * Scalable-Softmax factor.
      float mul = c.scale;
      if (c.p.maybe_head_temperature) mul *= c.p.maybe_head_temperature[h];
      if (c.p.ssmax_s > 0.0f) {
        const int64_t n = c.visible_count(s.r, i);
        if (n > 1) mul *= c.p.ssmax_s * std::log(static_cast<float>(n));
        else if (n == 1) mul = 0.0f;  // ln 1 = 0: the single visible key gets weight 1 anyway
      }
      b->mul[r] = mul;
      b->qraw[r] = nullptr;
      load_query_row(q, q.offset(s.r.batch, s.r.q_begin + i, h, 0), s.d, s.dp, mul, b->q + r * s.dp, &b->qraw[r]);
      std::memset(b->o + r * s.dvp, 0, sizeof(float) * s.dvp);
    }
  }
  if (b->M > kDotRows) {
    // q transposed once per row block, so the QK microkernel loads contiguous query vectors
    // and broadcasts key elements read in place (no per-tile transposition of K).
    for (int64_t k = 0; k < s.d; ++k) {
      float* dst = b->qt + k * kTileQ;
      for (int r2 = 0; r2 < kTileQ; ++r2) dst[r2] = r2 < b->M ? b->q[r2 * s.dp + k] : 0.0f;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// One tile of keys, and what a row block can see of it.

struct TileKeys {
  int64_t kc;              // keys in the tile (<= kTileK)
  int64_t pos[kTileK];     // key position of each column
  bool contiguous;         // pos[c] = pos[0] + c
  bool extra_needed;       // the job's extra mask must be evaluated
  const ElementMask* extra;
  int64_t key_end = 0;  // end of the keys read after this tile (prefetch bound; 0: none)
  bool v_ahead = false;  // decode: this tile's V rows were prefetched during the previous tile
};

// The next tile's V rows of kv head hk (keys t.pos[0] + kTileK up to t.key_end), for this tile's
// P V to prefetch; empty when there are none. The tile's keys must be contiguous.
template <typename T>
inline RowPrefetch next_tile_v_rows(const SeqCtx& s, int64_t hk, const TileKeys& t) {
  RowPrefetch pf;
  const int64_t next = t.pos[0] + kTileK;
  if (next < t.key_end) {
    pf.base = reinterpret_cast<const char*>(v_row<T>(s, hk, next));
    pf.stride = s.c->v.stride[1] * static_cast<int64_t>(sizeof(T));
    pf.n = std::min<int64_t>(kTileK, t.key_end - next);
  }
  return pf;
}

// Can any row of the block see any key of the tile (false: skip the tile)? *need_mask: some
// (row, key) pair may be invisible, so the mask pass must run.
inline bool tile_visible(const SeqCtx& s, const RowBlock& b, const TileKeys& t, bool* need_mask) {
  const int64_t j0 = t.pos[0], j1 = t.pos[t.kc - 1] + 1;
  bool all_visible = false;
  if (t.contiguous) {
    const bool any = (j0 < b.max_hi && j1 > b.min_lo) || j0 < b.max_sink_hi;
    if (!any) return false;
    all_visible = (j0 >= b.max_lo && j1 <= b.min_hi) || j1 <= b.min_sink_hi;
  }
  *need_mask = !all_visible || s.has_custom || t.extra_needed;
  return true;
}

// Whether finish_tile runs the softmax of a block of M rows through softmax_tile_4rows, the only
// normalization that reads scores stored with the packed stride.
template <class Variant>
constexpr bool packed_softmax_rows(int M) {
#if HWY_TARGET != HWY_SCALAR
  return Variant::kUseSoftmax && kLanes >= 8 && M <= 4;
#else
  (void)M;
  return false;
#endif
}

// Whether a decode of this sequence keeps bf16 outputs in pair layout (pv_cols_bf16_pairs).
template <typename T>
inline bool use_bf16_pairs(const SeqCtx& s) {
#if HWY_TARGET != HWY_SCALAR
  return std::is_same_v<T, hwy::bfloat16_t> && s.inline_v && s.dv % (2 * kLanes) == 0;
#else
  (void)s;
  return false;
#endif
}

// ---------------------------------------------------------------------------------------------
// int8 K/V: key j's row is scale_j * (stored integers). The tile widens the integers exactly, so
// q . k_j = scale_j * (q . int8 row): the key scale multiplies score column j before any logit
// hook, and sum_j p_j v_j = sum_j (p_j scale_j) * int8 row: the value scale multiplies weight
// column j after normalization (the denominator sums the unscaled weights).

// Column c of the tile's scores (rows [0, nrows), key c at st + c * ss) times scale[c].
HWY_INLINE void scale_columns(float* st, int64_t ss, int64_t kc, int nrows, const float* scale) {
#if HWY_TARGET != HWY_SCALAR
  if (ss == kPackedStride) {  // rows <= 4: one 128-bit vector per key
    const hn::Full128<float> d4;
    for (int64_t c = 0; c < kc; ++c) hn::StoreU(hn::Mul(hn::LoadU(d4, st + c * ss), hn::Set(d4, scale[c])), d4, st + c * ss);
    return;
  }
  const DF df;
  const int64_t n = round_up(nrows, kLanes);  // unpacked tiles hold whole query vectors
  for (int64_t c = 0; c < kc; ++c) {
    const VF f = hn::Set(df, scale[c]);
    for (int64_t r = 0; r < n; r += kLanes) hn::Store(hn::Mul(hn::Load(df, st + c * ss + r), f), df, st + c * ss + r);
  }
#else
  for (int64_t c = 0; c < kc; ++c)
    for (int r = 0; r < nrows; ++r) st[c * ss + r] *= scale[c];
#endif
}

// Multiplies the tile's columns by the K (which = 0) or V (which = 1) scales of kv head hk.
HWY_INLINE void apply_kv_scales(const SeqCtx& s, int64_t hk, const TileKeys& t, int which, float* st, int64_t ss,
                                int nrows) {
  const KvScales& sc = which == 0 ? s.c->p.k_scales : s.c->p.v_scales;
  const float* base = sc.data + s.r.batch * sc.stride_batch + s.r.k_begin * sc.stride_seq + hk * sc.stride_head;
  float scale[kTileK];
  for (int64_t c = 0; c < t.kc; ++c) scale[c] = base[t.pos[c] * sc.stride_seq];
  scale_columns(st, ss, t.kc, nrows, scale);
}

}  // namespace attnkit::core::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // ATTNKIT_CORE_TILE_ROWS_INL_H_
