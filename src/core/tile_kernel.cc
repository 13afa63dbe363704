// core/tile_kernel.cc: the tiled online-softmax attention kernel (Highway, compiled per target).
//
// Structure (FlashAttention-2 order, Rabe & Staats' online softmax):
//   a RowBlock holds up to kTileQ query rows (f32 copies of q pre-multiplied by their logit
//   multiplier, and the running max m, denominator l and unnormalized output O of each row);
//   process_tile() visits one tile of up to kTileK keys:
//     S = Q K^T            register-blocked microkernel on a transposed K tile (many rows), or
//                          one dot product per (row, key) when the block has <= 8 rows (decode)
//     hooks and masks      softcap, ALiBi, additive mask, then -inf for invisible keys; only on
//                          tiles that need them
//     variant              softmax: rescale by e^{m_old - m_new}, P = e^{S - m_new}
//                          others (sigmoid, relu): P = weight(S), no running statistics
//     O += P V             register-blocked microkernel reading V rows in place when possible
//   finish() divides by l, adds the sink logit to the denominator and writes out/LSE.
//
// Versions measured while writing it (2 threads, f32, d=128, seq 8192 causal; see docs/benchmarks.md
// for the current numbers): v1 per-row dot products for every block; v2 transposed-K microkernel for
// blocks of many rows, which is what makes prefill compute-bound instead of shuffle-bound.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "core/tile_kernel.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>
#include <hwy/contrib/math/math-inl.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "core/bf16_dot.h"
#include "core/prefetch.h"
#include "core/tile_kernel.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit::core::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Lanes per vector and the microkernel shape: R rows x NV vectors of accumulators. With 32
// registers (AVX-512) a 4x4 block uses 16 accumulators; narrower targets use 4x2.
constexpr size_t kLanes = hn::MaxLanes(DF());
constexpr int kNV = kLanes >= 16 ? 4 : 2;
constexpr int kR = 4;
// Row blocks with at most this many rows (decode) use one dot product per (row, key).
constexpr int kDotRows = 8;
// Score tiles are stored transposed, key c's scores at st + c * ss. The row-block kernels use
// ss = kTileQ; decode tiles of blocks with <= 4 rows use the packed stride 4 (see
// softmax_tile_4rows), so a block's tile is 1 KiB instead of 16 KiB.
constexpr int64_t kPackedStride = 4;

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// ---------------------------------------------------------------------------------------------
// Normalization variants. A variant says whether it is softmax (running max and denominator) and,
// if not, how a logit becomes a weight. Adding one (e.g. softplus) is a struct with Weight().

struct SoftmaxVariant {
  static constexpr bool kUseSoftmax = true;
  VF Weight(DF, VF s) const { return s; }  // unused
};

// FlashSigmoid (Ramapuram et al., "Theory, Analysis, and Best Practices for Sigmoid
// Self-Attention"): weight = sigmoid(s + b), no normalization.
struct SigmoidVariant {
  static constexpr bool kUseSoftmax = false;
  float bias;
  VF Weight(DF d, VF s) const {
    const VF one = hn::Set(d, 1.0f);
    // e^{-(s+b)} is +inf for masked keys (s = -inf), giving weight 0.
    return hn::Div(one, hn::Add(one, hn::Exp(d, hn::Neg(hn::Add(s, hn::Set(d, bias))))));
  }
};

// ReLU attention: weight = relu(s) / Sk.
struct ReluVariant {
  static constexpr bool kUseSoftmax = false;
  float inv_len;
  VF Weight(DF d, VF s) const { return hn::Mul(hn::Max(s, hn::Zero(d)), hn::Set(d, inv_len)); }
};

// ---------------------------------------------------------------------------------------------
// Source element access.

template <typename T>
inline float to_f32(T x);
template <>
inline float to_f32<float>(float x) { return x; }
template <>
inline float to_f32<hwy::bfloat16_t>(hwy::bfloat16_t x) {
  uint16_t b;
  std::memcpy(&b, &x, 2);
  return bf16_to_f32(b);
}
template <>
inline float to_f32<hwy::float16_t>(hwy::float16_t x) {
  uint16_t b;
  std::memcpy(&b, &x, 2);
  return f16_to_f32(b);
}

// Loads n elements with element stride `stride` as f32 into dst, zero-padding to n_pad.
template <typename T>
inline void load_row_f32(const T* src, int64_t stride, int64_t n, int64_t n_pad, float mul, float* HWY_RESTRICT dst) {
  const DF df;
  int64_t i = 0;
  if (stride == 1) {
    const hn::Rebind<T, DF> dt;
    for (; i + static_cast<int64_t>(kLanes) <= n; i += kLanes) {
      VF v;
      if constexpr (std::is_same_v<T, float>) {
        v = hn::LoadU(df, src + i);
      } else {
        v = hn::PromoteTo(df, hn::LoadU(dt, src + i));
      }
      hn::StoreU(hn::Mul(v, hn::Set(df, mul)), df, dst + i);
    }
  }
  for (; i < n; ++i) dst[i] = to_f32(src[i * stride]) * mul;
  for (; i < n_pad; ++i) dst[i] = 0.0f;
}

// One vector of f32 from kLanes elements of T at p (bf16/f16 widened in registers).
template <typename T>
HWY_INLINE VF load_f32(DF df, const T* HWY_RESTRICT p) {
  if constexpr (std::is_same_v<T, float>) {
    return hn::LoadU(df, p);
  } else {
    return hn::PromoteTo(df, hn::LoadU(hn::Rebind<T, DF>(), p));
  }
}

// ---------------------------------------------------------------------------------------------
// Per-call constants for one sequence, shared by all row blocks of that sequence.

struct SeqCtx {
  const Call* c;
  SeqRange r;
  int64_t seq;
  int64_t diag;          // causal diagonal offset
  int64_t d, dv, dp, dvp;  // head dims and their padded sizes
  bool direct_k, direct_v;  // K/V rows usable in place as f32
  bool inline_k, inline_v;  // K/V rows readable in place by whole vectors (any dtype, widened in registers)
  bool has_hooks;            // softcap, ALiBi or additive mask
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
      const T* src = static_cast<const T*>(q.data) + q.offset(s.r.batch, s.r.q_begin + i, h, 0);
      b->mul[r] = mul;
      b->qraw[r] = nullptr;
      if constexpr (std::is_same_v<T, hwy::bfloat16_t>) {
        if (q.stride[3] == 1) b->qraw[r] = reinterpret_cast<const uint16_t*>(src);
      }
      load_row_f32<T>(src, q.stride[3], s.d, s.dp, mul, b->q + r * s.dp);
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
// Microkernels.

// Score tiles are stored transposed, st[c * kTileQ + r] for key c and query row r: softmax
// statistics of a query row are then lane-wise over key rows (no horizontal reductions).

// One step k of qk_keys: acc[r][v] += K_r[k] * Q^T[k][v-th vector].
template <int R, int NG>
HWY_INLINE void qk_step(const float* const* krow, const float* HWY_RESTRICT qp, int64_t k, VF (&acc)[R][NG]) {
  const DF df;
  VF qv[NG];
#pragma GCC unroll 16
  for (int v = 0; v < NG; ++v) qv[v] = hn::Load(df, qp + v * kLanes);
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    const VF kb = hn::Set(df, krow[r][k]);
#pragma GCC unroll 16
    for (int v = 0; v < NG; ++v) acc[r][v] = hn::MulAdd(kb, qv[v], acc[r][v]);
  }
}

// st[c..c+R)[rows] = K_c . Q^T for R keys, over NG query vectors starting at row group g0.
// kPrefetch: pf holds R rows of d floats to prefetch (the next tile's K rows), one 64-byte line
// per 16 / R steps of the d loop. A separate instantiation: a test for it inside the loop made
// the scores 11% slower even with nothing to prefetch.
template <int R, int NG, bool kPrefetch = false>
HWY_INLINE void qk_keys(const float* const* krow, const float* HWY_RESTRICT qt, int64_t d, int64_t g0,
                        float* HWY_RESTRICT st, const char* const* pf = nullptr) {
  static_assert(16 % R == 0, "R rows of 16 floats per line share the d loop's steps");
  const DF df;
  VF acc[R][NG];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < NG; ++v) acc[r][v] = hn::Zero(df);
  const float* qp = qt + g0;
  int64_t k = 0;
  if constexpr (kPrefetch) {
    constexpr int64_t kSteps = 16 / R;  // steps per prefetched line
    for (int64_t line = 0; k + kSteps <= d; ++line) {
      __builtin_prefetch(pf[line % R] + (line / R) * 64, 0, 2);  // line `line / R` of row `line % R`
#pragma GCC unroll 16
      for (int64_t i = 0; i < kSteps; ++i, ++k, qp += kTileQ) qk_step<R, NG>(krow, qp, k, acc);
    }
  }
  for (; k < d; ++k, qp += kTileQ) qk_step<R, NG>(krow, qp, k, acc);
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < NG; ++v) hn::Store(acc[r][v], df, st + r * kTileQ + g0 + v * kLanes);
}

#if HWY_TARGET != HWY_SCALAR
// Keeps v in a register from here on. GCC folds a loaded vector that feeds two instructions into
// both of them as a memory operand, so it is loaded twice: the query vectors of decode's f32
// two-key score step, the bf16 pair of the P V widening.
template <class V>
HWY_INLINE void keep_in_register(V& v) {
#if HWY_ARCH_X86 && HWY_TARGET != HWY_EMU128
  asm("" : "+v"(v.raw));
#else
  (void)v;
#endif
}
#endif

// Rows to prefetch while P V runs over the current ones (decode: the next tile's V rows, so V
// streams in during P V instead of in a burst with K during the score sweep). Row j at
// base + j * stride, for j < n (n = 0: nothing); each column pass fetches its own columns of the row.
struct RowPrefetch {
  const char* base = nullptr;
  int64_t stride = 0;
  int64_t n = 0;
};

template <typename TV>
HWY_INLINE void prefetch_cols(const RowPrefetch& pf, int64_t j, int64_t c0, int64_t ncols) {
  if (j >= pf.n) return;
  prefetch_bytes(pf.base + j * pf.stride + c0 * static_cast<int64_t>(sizeof(TV)), ncols * static_cast<int64_t>(sizeof(TV)));
}

// O[r][c0 .. c0 + NV*L) += sum_j P[j][r] * V_j[...] for R rows (P is the transposed tile, key j's
// weights at pt + j * ss).
template <int R, int NV, typename TV>
HWY_INLINE void pv_cols(const float* HWY_RESTRICT pt, int64_t ss, const TV* const* vrow, int64_t kc,
                        float* HWY_RESTRICT o, int64_t dvp, int64_t c0, const RowPrefetch& pf) {
  const DF df;
  VF acc[R][NV];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[r][v] = hn::Load(df, o + r * dvp + c0 + v * kLanes);
  for (int64_t j = 0; j < kc; ++j) {
    prefetch_cols<TV>(pf, j, c0, NV * kLanes);
    VF vv[NV];
    const TV* vr = vrow[j] + c0;
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) vv[v] = load_f32(df, vr + v * kLanes);
    const float* pj = pt + j * ss;
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const VF pb = hn::Set(df, pj[r]);
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) acc[r][v] = hn::MulAdd(pb, vv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) hn::Store(acc[r][v], df, o + r * dvp + c0 + v * kLanes);
}

template <int R, typename TV>
HWY_INLINE void pv_rows(const float* pt, int64_t ss, const TV* const* vrow, int64_t kc, float* o, int64_t dvp,
                        const RowPrefetch& pf = RowPrefetch()) {
  constexpr int64_t kGroup = kNV * kLanes;
  int64_t c0 = 0;
  for (; c0 + kGroup <= dvp; c0 += kGroup) pv_cols<R, kNV>(pt, ss, vrow, kc, o, dvp, c0, pf);
  for (; c0 < dvp; c0 += kLanes) pv_cols<R, 1>(pt, ss, vrow, kc, o, dvp, c0, pf);
}

#if HWY_TARGET != HWY_SCALAR
// bf16 V rows with the output in pair layout: within each group of 2 * kLanes columns, the first
// kLanes floats of o hold the even columns and the next kLanes the odd ones. A bf16 pair shares
// one 32-bit lane, so widening is a shift (even element) and a mask (odd element) instead of a
// widening shuffle per kLanes columns: shuffles compete with the multiply-adds for the same
// ports, and decode in bf16 is bound by this loop once K and V are halved. decode_keys restores
// column order once per row at the end (unpair_row).
template <int R, int NP>
HWY_INLINE void pv_cols_bf16_pairs(const float* HWY_RESTRICT pt, int64_t ss, const hwy::bfloat16_t* const* vrow,
                                   int64_t kc, float* HWY_RESTRICT o, int64_t dvp, int64_t c0,
                                   const RowPrefetch& pf) {
  const DF df;
  const hn::RebindToUnsigned<DF> du;
  const auto odd_mask = hn::Set(du, 0xFFFF0000u);
  VF acc[R][2 * NP];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < 2 * NP; ++v) acc[r][v] = hn::Load(df, o + r * dvp + c0 + v * kLanes);
  for (int64_t j = 0; j < kc; ++j) {
    prefetch_cols<hwy::bfloat16_t>(pf, j, c0, 2 * NP * kLanes);
    VF vv[2 * NP];
    const uint32_t* vr = reinterpret_cast<const uint32_t*>(vrow[j] + c0);
#pragma GCC unroll 16
    for (int p = 0; p < NP; ++p) {
      auto raw = hn::LoadU(du, vr + p * kLanes);
      keep_in_register(raw);
      vv[2 * p] = hn::BitCast(df, hn::ShiftLeft<16>(raw));
      vv[2 * p + 1] = hn::BitCast(df, hn::And(raw, odd_mask));
    }
    const float* pj = pt + j * ss;
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const VF pb = hn::Set(df, pj[r]);
#pragma GCC unroll 16
      for (int v = 0; v < 2 * NP; ++v) acc[r][v] = hn::MulAdd(pb, vv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < 2 * NP; ++v) hn::Store(acc[r][v], df, o + r * dvp + c0 + v * kLanes);
}

template <int R>
HWY_INLINE void pv_rows_bf16_pairs(const float* pt, int64_t ss, const hwy::bfloat16_t* const* vrow, int64_t kc,
                                   float* o, int64_t dvp, const RowPrefetch& pf) {
  constexpr int kNP = kNV / 2 > 0 ? kNV / 2 : 1;
  constexpr int64_t kGroup = 2 * kNP * kLanes;
  int64_t c0 = 0;
  for (; c0 + kGroup <= dvp; c0 += kGroup) pv_cols_bf16_pairs<R, kNP>(pt, ss, vrow, kc, o, dvp, c0, pf);
  for (; c0 < dvp; c0 += 2 * kLanes) pv_cols_bf16_pairs<R, 1>(pt, ss, vrow, kc, o, dvp, c0, pf);
}
#endif

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

// Copies a pair-layout row (see pv_cols_bf16_pairs) to dst in column order.
inline void unpair_row(const float* src, int64_t dv, float* dst) {
  const int64_t L = static_cast<int64_t>(kLanes);
  for (int64_t g = 0; g < dv; g += 2 * L)
    for (int64_t i = 0; i < L; ++i) {
      dst[g + 2 * i] = src[g + i];
      dst[g + 2 * i + 1] = src[g + L + i];
    }
}

// e^x for the softmax's exponents x = score - running max <= 0 (NaN is handled by the callers).
// The argument reduction and the polynomial are those of Highway's Exp (contrib/math, within a
// few ulp), but n = round(x / ln 2) comes from adding 1.5 * 2^23, whose float bits then hold n,
// so neither float/int conversion of Exp is needed, and 2^n is one shift and one add. Below
// -87.3 (2^n would leave the normal range) and at -inf the result is 0: those weights are under
// 2^-126 against the row's largest weight of 1. About 30% fewer operations than Exp.
template <class D>
HWY_INLINE hn::Vec<D> exp_nonpositive(D d, hn::Vec<D> x) {
  using V = hn::Vec<D>;
  const hn::RebindToSigned<D> di;
  const V magic = hn::Set(d, 12582912.0f);  // 1.5 * 2^23
  const V t = hn::MulAdd(x, hn::Set(d, 1.44269504088896341f), magic);
  const V n = hn::Sub(t, magic);
  // r = x - n ln 2 in two parts (the constants of Highway's ExpReduce).
  V r = hn::MulAdd(n, hn::Set(d, -0.693145751953125f), x);
  r = hn::MulAdd(n, hn::Set(d, -1.428606765330187045e-6f), r);
  // e^r - 1 = r + r^2 (k0 + k1 r + ... + k5 r^5), Estrin's scheme.
  const V r2 = hn::Mul(r, r), r4 = hn::Mul(r2, r2);
  const V a = hn::MulAdd(hn::Set(d, 0.166666671633720397949219f), r, hn::Set(d, 0.5f));
  const V b = hn::MulAdd(hn::Set(d, 0.00833336077630519866943359f), r, hn::Set(d, 0.0416664853692054748535156f));
  const V c = hn::MulAdd(hn::Set(d, 0.000198527617612853646278381f), r, hn::Set(d, 0.00139304355252534151077271f));
  const V poly = hn::MulAdd(c, r4, hn::MulAdd(b, r2, a));
  const V er = hn::Add(hn::MulAdd(poly, r2, r), hn::Set(d, 1.0f));
  // 2^n: t's low bits are n, so t << 23 is n << 23; adding the bits of 1.0f biases the exponent.
  const V pow2 = hn::BitCast(d, hn::Add(hn::ShiftLeft<23>(hn::BitCast(di, t)), hn::Set(di, 0x3F800000)));
  return hn::IfThenZeroElse(hn::Lt(x, hn::Set(d, -87.3f)), hn::Mul(er, pow2));
}

// Online softmax: row r's unnormalized output times alpha = e^{m_old - m_new} when its max moved.
HWY_INLINE void rescale_output_row(const SeqCtx& s, RowBlock* b, int r, float alpha) {
  if (alpha == 1.0f) return;
  const DF df;
  float* orow = b->o + r * s.dvp;
  const VF va = hn::Set(df, alpha);
  for (int64_t k = 0; k < s.dvp; k += kLanes) hn::Store(hn::Mul(hn::Load(df, orow + k), va), df, orow + k);
}

#if HWY_TARGET != HWY_SCALAR
// Halves a vector down to 128 bits, combining the halves with op (the lanes of each 128-bit block
// reduced position-wise across blocks).
template <class D, class Op>
HWY_INLINE auto fold_to_128(D d, hn::Vec<D> v, Op op) {
  if constexpr (hn::MaxLanes(d) <= 4) {
    return v;
  } else {
    const hn::Half<D> dh;
    return fold_to_128(dh, op(hn::LowerHalf(dh, v), hn::UpperHalf(dh, v)), op);
  }
}
struct AddOp {
  template <class V>
  HWY_INLINE V operator()(V a, V b) const { return hn::Add(a, b); }
};
struct MaxOp {
  template <class V>
  HWY_INLINE V operator()(V a, V b) const { return hn::Max(a, b); }
};

// Online softmax of one tile for a block of at most 4 rows (decode, GQA groups of <= 4), with
// kLanes / 4 keys per vector instead of one key per vector with 4 of kLanes lanes in use: the
// scores are packed [key][4 rows] (lane = 4 * key + row), so each exp and max covers kLanes / 4
// keys. Same operations per element as the general path (NaN kept, empty rows give 0). Key c's
// scores are at st + c * ss; with ss == kPackedStride the tile is used in place (it must have
// room for kTileK keys), else it is copied into the packed layout and back.
HWY_INLINE void softmax_tile_4rows(const SeqCtx& s, RowBlock* b, float* st, int64_t ss, int64_t kc) {
  const DF df;
  const hn::Full128<float> d4;
  constexpr int64_t kKeysPerVec = kLanes / 4;
  static_assert(kTileK % kKeysPerVec == 0, "a packed tile holds its padding keys");
  alignas(64) float copy[kTileK * kPackedStride];
  const bool in_place = ss == kPackedStride;
  float* packed = in_place ? st : copy;
  const int64_t kc_pad = (kc + kKeysPerVec - 1) / kKeysPerVec * kKeysPerVec;
  if (!in_place)
    for (int64_t c = 0; c < kc; ++c) hn::Store(hn::LoadU(d4, st + c * ss), d4, packed + 4 * c);
  for (int64_t c = kc; c < kc_pad; ++c) hn::StoreU(hn::Set(d4, kNegInf), d4, packed + 4 * c);
  const int64_t n = kc_pad * 4;
  VF vmax = hn::Set(df, kNegInf);
  for (int64_t i = 0; i < n; i += kLanes) vmax = hn::Max(vmax, hn::LoadU(df, packed + i));
  const auto m_old = hn::LoadU(d4, b->m);
  const auto m_new = hn::Max(m_old, fold_to_128(df, vmax, MaxOp()));
  const auto m_use = hn::IfThenZeroElse(hn::Eq(m_new, hn::Set(d4, kNegInf)), m_new);
  alignas(64) float rep[kLanes];
  for (int64_t k = 0; k < kKeysPerVec; ++k) hn::Store(m_use, d4, rep + 4 * k);
  const VF m_rep = hn::Load(df, rep);
  VF vsum = hn::Zero(df);
  for (int64_t i = 0; i < n; i += kLanes) {
    const VF x = hn::Sub(hn::LoadU(df, packed + i), m_rep);
    const VF e = hn::IfThenElse(hn::IsNaN(x), x, exp_nonpositive(df, x));
    vsum = hn::Add(vsum, e);
    hn::StoreU(e, df, packed + i);
  }
  const auto alpha = exp_nonpositive(d4, hn::Sub(m_old, m_use));
  hn::StoreU(hn::MulAdd(hn::LoadU(d4, b->l), alpha, fold_to_128(df, vsum, AddOp())), d4, b->l);
  hn::StoreU(m_new, d4, b->m);
  if (!in_place)
    for (int64_t c = 0; c < kc; ++c) hn::StoreU(hn::Load(d4, packed + 4 * c), d4, st + c * ss);
  alignas(16) float a[4];
  hn::Store(alpha, d4, a);
  for (int r = 0; r < b->M; ++r) rescale_output_row(s, b, r, a[r]);
}

// out[i] = sum of the lanes of a[i], i < 4: two interleave rounds leave, in each 128-bit block,
// the four partial sums side by side; the blocks are then added. About a third of the shuffles
// of four separate horizontal reductions (which decode pays for every key and row).
HWY_INLINE void sum4_lanes(const VF* a, float* out) {
  const DF df;
  const hn::Repartition<uint64_t, DF> du;
  // Per block: [a0+a2, b0+b2, a1+a3, b1+b3].
  const VF ab = hn::Add(hn::InterleaveLower(df, a[0], a[1]), hn::InterleaveUpper(df, a[0], a[1]));
  const VF cd = hn::Add(hn::InterleaveLower(df, a[2], a[3]), hn::InterleaveUpper(df, a[2], a[3]));
  // Per block: [a02, b02, c02, d02] + [a13, b13, c13, d13].
  const VF lo = hn::BitCast(df, hn::InterleaveLower(du, hn::BitCast(du, ab), hn::BitCast(du, cd)));
  const VF hi = hn::BitCast(df, hn::InterleaveUpper(du, hn::BitCast(du, ab), hn::BitCast(du, cd)));
  hn::StoreU(fold_to_128(df, hn::Add(lo, hi), AddOp()), hn::Full128<float>(), out);
}
#endif

// R query rows (stride dp) against one key row: the key vectors are loaded once for all rows
// (decode blocks hold the heads of one GQA group). out[r] receives row r's score.
template <int R, typename TK>
HWY_INLINE void dot_rows(const float* HWY_RESTRICT q, int64_t dp, const TK* HWY_RESTRICT k, float* out) {
  const DF df;
  VF acc[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) acc[r] = hn::Zero(df);
  for (int64_t i = 0; i < dp; i += kLanes) {
    const VF kv = load_f32(df, k + i);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) acc[r] = hn::MulAdd(hn::Load(df, q + r * dp + i), kv, acc[r]);
  }
#if HWY_TARGET != HWY_SCALAR
  if constexpr (R == 4) {
    sum4_lanes(acc, out);
    return;
  }
#endif
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) out[r] = hn::GetLane(hn::SumOfLanes(df, acc[r]));
}

#if HWY_TARGET != HWY_SCALAR
// Four query rows (stride dp) against two key rows ka and kb: each query vector is loaded once for
// both keys (keep_in_register: with the query folded into both multiply-adds, the loop issued 10
// loads per 8 multiply-adds, and the core's load port, one 512-bit load per cycle on Zen 4, bound
// it). Each score is summed in the same order as dot_rows<4> sums it. pfa and pfb (both or
// neither): rows of dp elements to prefetch, one 64-byte line per 64 bytes of ka read.
template <typename TK>
HWY_INLINE void dot_rows4_two_keys(const float* HWY_RESTRICT q, int64_t dp, const TK* HWY_RESTRICT ka,
                                   const TK* HWY_RESTRICT kb, float* oa, float* ob, const char* pfa = nullptr,
                                   const char* pfb = nullptr) {
  const DF df;
  VF a[4], b[4];
#pragma GCC unroll 4
  for (int r = 0; r < 4; ++r) a[r] = b[r] = hn::Zero(df);
  for (int64_t i = 0; i < dp; i += kLanes) {
    if (pfa != nullptr && i * static_cast<int64_t>(sizeof(TK)) % 64 == 0) {
      __builtin_prefetch(pfa + i * static_cast<int64_t>(sizeof(TK)), 0, 2);
      __builtin_prefetch(pfb + i * static_cast<int64_t>(sizeof(TK)), 0, 2);
    }
    const VF xa = load_f32(df, ka + i), xb = load_f32(df, kb + i);
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) {
      VF qv = hn::Load(df, q + r * dp + i);
      keep_in_register(qv);
      a[r] = hn::MulAdd(qv, xa, a[r]);
      b[r] = hn::MulAdd(qv, xb, b[r]);
    }
  }
  sum4_lanes(a, oa);
  sum4_lanes(b, ob);
}
#endif

// Scores of all M (<= kDotRows) rows of a block against one key row, into out[0..M).
template <typename TK>
HWY_INLINE void dot_block_rows(const float* q, int64_t dp, int M, const TK* k, float* out) {
  int r = 0;
  for (; r + 4 <= M; r += 4) dot_rows<4>(q + r * dp, dp, k, out + r);
  for (; r + 2 <= M; r += 2) dot_rows<2>(q + r * dp, dp, k, out + r);
  for (; r < M; ++r) dot_rows<1>(q + r * dp, dp, k, out + r);
}

inline float dot(const float* HWY_RESTRICT a, const float* HWY_RESTRICT b, int64_t n) {
  const DF df;
  VF a0 = hn::Zero(df), a1 = hn::Zero(df);
  int64_t i = 0;
  for (; i + 2 * static_cast<int64_t>(kLanes) <= n; i += 2 * kLanes) {
    a0 = hn::MulAdd(hn::LoadU(df, a + i), hn::LoadU(df, b + i), a0);
    a1 = hn::MulAdd(hn::LoadU(df, a + i + kLanes), hn::LoadU(df, b + i + kLanes), a1);
  }
  for (; i < n; i += kLanes) a0 = hn::MulAdd(hn::LoadU(df, a + i), hn::LoadU(df, b + i), a0);
  return hn::GetLane(hn::SumOfLanes(df, hn::Add(a0, a1)));
}

// ---------------------------------------------------------------------------------------------
// One tile of keys against one row block.

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

template <typename TV, class Variant>
void finish_tile(const SeqCtx& s, RowBlock* b, const TileKeys& t, float* st, int64_t ss, const TV* const* vrow,
                 bool need_mask, const Variant& var, bool bf16_pairs = false, const RowPrefetch& pf = RowPrefetch());

template <typename T, class Variant>
void process_tile(const SeqCtx& s, RowBlock* b, const TileKeys& t, const Scratch& sc, const Variant& var) {
  const Call& c = *s.c;
  const int M = b->M;
  const int64_t kc = t.kc;
  bool need_mask;
  if (!tile_visible(s, *b, t, &need_mask)) return;

  // Key and value rows as f32 pointers (in place when possible, else converted into scratch).
  const float* krow[kTileK];
  const float* vrow[kTileK];
  for (int64_t cidx = 0; cidx < kc; ++cidx) {
    const int64_t j = t.pos[cidx];
    const T* kp = k_row<T>(s, b->hk, j);
    const T* vp = v_row<T>(s, b->hk, j);
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

  // S^T = K Q^T, stored st[c * kTileQ + r].
  float* st = sc.s;
  RowPrefetch v_ahead;  // the next tile's V rows, prefetched during P V (set below)
  const int64_t n_groups = (M + kLanes - 1) / kLanes;  // query vectors holding the M rows
  if (M <= kDotRows) {
    // Scores land in st[c * kTileQ + r]: rows of one key are adjacent.
    for (int64_t cidx = 0; cidx < kc; ++cidx) dot_block_rows(b->q, s.dp, M, krow[cidx], st + cidx * kTileQ);
  } else {
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
          pf_k[r] = reinterpret_cast<const char*>(k_row<T>(s, b->hk, next + std::min(cidx + r, n_next - 1)));
        if (ahead) qk_keys<kR, kNG, true>(krow + cidx, b->qt, s.d, g0, st + cidx * kTileQ, pf_k);
        else qk_keys<kR, kNG>(krow + cidx, b->qt, s.d, g0, st + cidx * kTileQ);
      }
      for (; cidx < kc; ++cidx) qk_keys<1, kNG>(krow + cidx, b->qt, s.d, g0, st + cidx * kTileQ);
    }
    if (n_next > 0) v_ahead = next_tile_v_rows<T>(s, b->hk, t);
  }
  finish_tile<float>(s, b, t, st, kTileQ, vrow, need_mask, var, false, v_ahead);
}

// The rest of a tile once its scores st are in: logit hooks, masks, the normalization variant and
// O += P V. V rows are read through vrow (f32, or bf16/f16 widened in registers).
template <typename TV, class Variant>
void finish_tile(const SeqCtx& s, RowBlock* b, const TileKeys& t, float* st, int64_t ss, const TV* const* vrow,
                 bool need_mask, const Variant& var, bool bf16_pairs, const RowPrefetch& pf) {
  const Call& c = *s.c;
  const int M = b->M;
  const int64_t kc = t.kc;
  const int64_t n_groups = (M + kLanes - 1) / kLanes;  // query vectors holding the M rows
  // Packed scores (ss == kPackedStride) hold the M rows only; others hold whole query vectors.
  const bool packed = ss == kPackedStride;
  ATTNKIT_ASSERT(packed ? packed_softmax_rows<Variant>(M) : ss >= n_groups * static_cast<int64_t>(kLanes));
  const int stored_rows = packed ? M : static_cast<int>(n_groups * kLanes);

  // Logit hooks, in the order of attention.h: softcap, ALiBi, additive mask.
  if (s.has_hooks) {
    const float cap = c.p.softcap;
    if (cap > 0.0f) {
      const DF df;
      const VF vcap = hn::Set(df, cap), inv = hn::Set(df, 1.0f / cap);
      const auto softcap = [&](float* p) { hn::StoreU(hn::Mul(vcap, hn::Tanh(df, hn::Mul(hn::LoadU(df, p), inv))), df, p); };
      if (packed) {
        // The whole tile as one run of floats; the padding keys up to a whole vector are zeroed
        // first (softmax_tile_4rows sets them to -inf afterwards).
        const int64_t n = round_up(kc * kPackedStride, kLanes);
        std::fill(st + kc * kPackedStride, st + n, 0.0f);
        for (int64_t i = 0; i < n; i += kLanes) softcap(st + i);
      } else {
        for (int64_t cidx = 0; cidx < kc; ++cidx)
          for (int64_t g = 0; g < n_groups * static_cast<int64_t>(kLanes); g += kLanes) softcap(st + cidx * ss + g);
      }
    }
    for (int r = 0; r < M; ++r) {
      const int64_t h = b->head[r];
      if (c.p.maybe_alibi_slopes) {
        const float slope = c.p.maybe_alibi_slopes[h];
        const int64_t qpos = b->pos[r] + s.diag;
        for (int64_t cidx = 0; cidx < kc; ++cidx)
          st[cidx * ss + r] -= slope * static_cast<float>(std::llabs(qpos - t.pos[cidx]));
      }
      if (c.p.mask.kind == MaskKind::kAdditive) {
        const CustomMask& mk = c.p.mask;
        const float* base = static_cast<const float*>(mk.data) + s.seq * mk.stride_batch + h * mk.stride_head +
                            b->pos[r] * mk.stride_q;
        for (int64_t cidx = 0; cidx < kc; ++cidx) st[cidx * ss + r] += base[t.pos[cidx] * mk.stride_k];
      }
    }
  }

  // Masks: -inf for invisible keys (padding rows see nothing).
  if (need_mask) {
    const CustomMask& mk = c.p.mask;
    for (int r = 0; r < stored_rows; ++r) {
      if (r >= M) {
        for (int64_t cidx = 0; cidx < kc; ++cidx) st[cidx * ss + r] = kNegInf;
        continue;
      }
      const int64_t lo = b->lo[r], hi = b->hi[r], shi = b->sink_hi[r];
      const uint8_t* mrow = nullptr;
      if (mk.kind == MaskKind::kBoolean) {
        mrow = static_cast<const uint8_t*>(mk.data) + s.seq * mk.stride_batch + b->head[r] * mk.stride_head +
               b->pos[r] * mk.stride_q;
      }
      for (int64_t cidx = 0; cidx < kc; ++cidx) {
        const int64_t j = t.pos[cidx];
        bool vis = (j >= lo && j < hi) || j < shi;
        if (vis && mrow) vis = mrow[j * mk.stride_k] != 0;
        if (vis && t.extra_needed) vis = t.extra->fn(t.extra->ctx, s.seq, b->head[r], b->pos[r], j);
        if (!vis) st[cidx * ss + r] = kNegInf;
      }
    }
  }

  // Normalization variant, lane-wise over query rows.
  const DF df;
  bool packed_softmax = false;
#if HWY_TARGET != HWY_SCALAR
  if (packed_softmax_rows<Variant>(M)) {
    softmax_tile_4rows(s, b, st, ss, kc);
    packed_softmax = true;
  }
#endif
  for (int64_t g = 0; !packed_softmax && g < n_groups * static_cast<int64_t>(kLanes); g += kLanes) {
    if constexpr (Variant::kUseSoftmax) {
      VF vmax = hn::Set(df, kNegInf);
      for (int64_t cidx = 0; cidx < kc; ++cidx) vmax = hn::Max(vmax, hn::Load(df, st + cidx * ss + g));
      const VF m_old = hn::Load(df, b->m + g);
      const VF m_new = hn::Max(m_old, vmax);
      // Rows with nothing visible yet keep m = -inf; subtracting 0 instead gives e^{-inf} = 0
      // (never -inf - -inf).
      const VF m_use = hn::IfThenZeroElse(hn::Eq(m_new, hn::Set(df, kNegInf)), m_new);
      VF vsum = hn::Zero(df);
      for (int64_t cidx = 0; cidx < kc; ++cidx) {
        float* p = st + cidx * ss + g;
        const VF x = hn::Sub(hn::Load(df, p), m_use);
        // Keep a NaN exponent NaN (Exp would map it to 0) so a NaN input poisons its row.
        const VF e = hn::IfThenElse(hn::IsNaN(x), x, exp_nonpositive(df, x));
        vsum = hn::Add(vsum, e);
        hn::Store(e, df, p);
      }
      const VF alpha = exp_nonpositive(df, hn::Sub(m_old, m_use));
      hn::Store(hn::MulAdd(hn::Load(df, b->l + g), alpha, vsum), df, b->l + g);
      hn::Store(m_new, df, b->m + g);
      // Rescale the output rows whose max moved (alpha < 1).
      alignas(64) float a[kLanes];
      hn::Store(alpha, df, a);
      for (size_t lane = 0; lane < kLanes; ++lane) {
        const int64_t r = g + static_cast<int64_t>(lane);
        if (r < M) rescale_output_row(s, b, static_cast<int>(r), a[lane]);
      }
    } else {
      for (int64_t cidx = 0; cidx < kc; ++cidx) {
        float* p = st + cidx * ss + g;
        const VF x = hn::Load(df, p);
        hn::Store(hn::IfThenElse(hn::IsNaN(x), x, var.Weight(df, x)), df, p);  // NaN stays NaN
      }
    }
  }

  // O += P V in row groups of kR, 2 and 1 rows; the first row group also issues the prefetches of pf.
  const auto row_groups = [&](const auto& pv) {
    int r = 0;
    for (; r + kR <= M; r += kR) pv(std::integral_constant<int, kR>(), r, r ? RowPrefetch() : pf);
    for (; r + 2 <= M; r += 2) pv(std::integral_constant<int, 2>(), r, r ? RowPrefetch() : pf);
    for (; r < M; ++r) pv(std::integral_constant<int, 1>(), r, r ? RowPrefetch() : pf);
  };
#if HWY_TARGET != HWY_SCALAR
  if constexpr (std::is_same_v<TV, hwy::bfloat16_t>) {
    if (bf16_pairs) {
      row_groups([&](auto rows, int r, const RowPrefetch& p) {
        pv_rows_bf16_pairs<decltype(rows)::value>(st + r, ss, vrow, kc, b->o + r * s.dvp, s.dvp, p);
      });
      return;
    }
  }
#else
  (void)bf16_pairs;
#endif
  row_groups([&](auto rows, int r, const RowPrefetch& p) {
    pv_rows<decltype(rows)::value>(st + r, ss, vrow, kc, b->o + r * s.dvp, s.dvp, p);
  });
}

// Row r's state as a partial result: o normalized by its own denominator, LSE without sinks.
// Non-softmax variants have no denominator: o is the weighted sum and lse is 0 (parts add).
template <class Variant>
inline float row_partial(const RowBlock& b, int r, int64_t dvp) {
  float* o = b.o + r * dvp;
  if constexpr (!Variant::kUseSoftmax) {
    return 0.0f;
  } else {
    if (b.l[r] == 0.0f) {
      std::memset(o, 0, sizeof(float) * dvp);
      return kNegInf;
    }
    const float inv = 1.0f / b.l[r];
    for (int64_t k = 0; k < dvp; ++k) o[k] *= inv;
    return b.m[r] + std::log(b.l[r]);
  }
}

template <typename T, class Variant>
void run_job(const SeqCtx& s, const BlockJob& job, Workspace* ws, const Variant& var) {
  const int64_t nrows_q = job.row_end - job.row_begin;
  if (nrows_q <= 0) return;
  const Scratch sc = carve(ws, s.dp, s.dvp, 1);
  const bool extra = job.maybe_extra_mask && job.maybe_extra_mask->fn;
  // Row blocks of at most kTileQ rows: split queries, keep heads together when they fit.
  const int64_t q_per_block = std::max<int64_t>(1, kTileQ / job.n_heads);
  const int64_t heads_per_block = job.n_heads <= kTileQ ? job.n_heads : kTileQ;
  TileKeys t;
  t.extra = job.maybe_extra_mask;
  for (int64_t h0 = job.head_q; h0 < job.head_q + job.n_heads; h0 += heads_per_block) {
    const int64_t nh = std::min(heads_per_block, job.head_q + job.n_heads - h0);
    for (int64_t i0 = job.row_begin; i0 < job.row_end; i0 += q_per_block) {
      const int64_t i1 = std::min(job.row_end, i0 + q_per_block);
      RowBlock b;
      init_rows<T>(s, &b, sc.rows, h0, nh, i0, i1);
      for (int sp = 0; sp < job.n_spans; ++sp) {
        const KvSpan& span = job.spans[sp];
        t.extra_needed = extra && !span.full;
        for (int64_t t0 = span.begin; t0 < span.end; t0 += kTileK) {
          t.kc = std::min<int64_t>(kTileK, span.end - t0);
          if (job.maybe_kv_indices) {
            t.contiguous = false;
            for (int64_t cidx = 0; cidx < t.kc; ++cidx) t.pos[cidx] = job.maybe_kv_indices[t0 + cidx];
          } else {
            t.contiguous = true;
            for (int64_t cidx = 0; cidx < t.kc; ++cidx) t.pos[cidx] = t0 + cidx;
          }
          t.key_end = t.contiguous ? span.end : 0;
          process_tile<T>(s, &b, t, sc, var);
        }
      }
      for (int r = 0; r < b.M; ++r) {
        const int64_t h = b.head[r], i = b.pos[r];
        const float lse = row_partial<Variant>(b, r, s.dvp);
        if (job.maybe_partial) {
          const int64_t row = (h - job.head_q) * nrows_q + (i - job.row_begin);
          std::memcpy(job.maybe_partial->o + row * s.dv, b.o + r * s.dvp, sizeof(float) * s.dv);
          if (job.maybe_partial->lse) job.maybe_partial->lse[row] = lse;
        } else {
          write_final_row(*s.c, s.r, h, i, b.o + r * s.dvp, lse, job.include_sink_logit);
        }
      }
    }
  }
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
  s.has_custom = c.p.mask.kind != MaskKind::kNone;
  s.has_hooks = c.p.softcap > 0.0f || c.p.maybe_alibi_slopes != nullptr || c.p.mask.kind == MaskKind::kAdditive;
  return s;
}

// Calls f(variant) with the call's normalization variant.
template <class F>
void with_variant(const Call& c, const SeqRange& r, F&& f) {
  switch (c.p.normalization) {
    case Normalization::kSoftmax: f(SoftmaxVariant{}); break;
    case Normalization::kSigmoid: f(SigmoidVariant{c.sigmoid_bias(r)}); break;
    case Normalization::kRelu: f(ReluVariant{r.k_len > 0 ? 1.0f / static_cast<float>(r.k_len) : 0.0f}); break;
  }
}

template <typename T>
void attend_block_t(const Call& c, const BlockJob& job, Workspace* ws) {
  const SeqCtx s = make_seq_ctx<T>(c, job.seq);
  with_variant(c, s.r, [&](const auto& var) { run_job<T>(s, job, ws, var); });
}

void AttendBlock(const Call& c, const BlockJob& job, Workspace* ws) {
  switch (c.q.dtype) {
    case DType::kF32: attend_block_t<float>(c, job, ws); break;
    case DType::kBF16: attend_block_t<hwy::bfloat16_t>(c, job, ws); break;
    case DType::kF16: attend_block_t<hwy::float16_t>(c, job, ws); break;
  }
}

// Blocks scored together by decode_tile: their K rows at one position are read in one sweep.
constexpr int kDecodeGroup = 8;

// Decode tile for up to kDecodeGroup row blocks of <= kDotRows rows each (the heads of one or more
// GQA groups), K/V read in place. The scores are computed key-major: for each key position, the
// K rows of all the blocks' kv heads, which are adjacent in BSHD memory, are read in one
// ascending sweep, and the same position's V rows are prefetched in the same order. Visiting one
// kv head at a time instead reads rows heads_kv * head_dim apart (a page apart for 8 heads of
// 128 floats), which the hardware prefetchers do not follow: decode then waits on DRAM latency
// (measured 150 ns per key and kv head against 70 ns for the same bytes laid out per head).
// The rest of each block's tile (softmax, P V) then reads its V rows from L2.
template <typename T, class Variant>
void decode_tile(const SeqCtx& s, RowBlock* blocks, int nb, const TileKeys& t, float* st_base, const Variant& var,
                 bool bf16_pairs) {
  const Call& c = *s.c;
  const int64_t kc = t.kc;
  // first_of_head: the first block of its kv head, which issues that head's prefetches.
  bool active[kDecodeGroup], need_mask[kDecodeGroup], first_of_head[kDecodeGroup];
  const T* k0[kDecodeGroup];
  // Packed score tiles where every block's softmax reads them (kPackedStride): the group's tiles
  // then take 8 KiB of L1 instead of 128 KiB, and softmax_tile_4rows works on them in place.
  bool packed = true;
  for (int bi = 0; bi < nb; ++bi) {
    active[bi] = tile_visible(s, blocks[bi], t, &need_mask[bi]);
    first_of_head[bi] = bi == 0 || blocks[bi].hk != blocks[bi - 1].hk;
    k0[bi] = k_row<T>(s, blocks[bi].hk, t.pos[0]);
    packed = packed && packed_softmax_rows<Variant>(blocks[bi].M);
  }
  const int64_t ss = packed ? kPackedStride : kTileQ;  // score stride: key c at st + c * ss
  float* st_block[kDecodeGroup];                        // block bi's score tile
  for (int bi = 0; bi < nb; ++bi) st_block[bi] = st_base + bi * kTileK * ss;
  const int64_t kstep = c.k.stride[1];
  const int64_t v_step_bytes = c.v.stride[1] * static_cast<int64_t>(sizeof(T));
  // bf16 scores through vdpbf16ps where the CPU has it: the raw bf16 query times the bf16 key
  // (exact products, f32 sums), then the row's multiplier. It halves the multiply-adds of the
  // scores and needs no widening of K.
  bool dp = false;
#if HWY_TARGET <= HWY_AVX3 && HWY_ARCH_X86
  if constexpr (std::is_same_v<T, hwy::bfloat16_t>) dp = s.d % 32 == 0 && c.q.stride[3] == 1 && bf16_dot_enabled();
#endif
  const int64_t k_bytes = s.d * static_cast<int64_t>(sizeof(T)), v_bytes = s.dv * static_cast<int64_t>(sizeof(T));
  // K is prefetched kPrefetchKeys positions ahead of the sweep (64 KiB for 8 heads of 128 f32):
  // the stream prefetcher alone left the loads waiting on DRAM (measured 16 to 25% slower at kv
  // 131072; the distance mattered little between 4 and 64).
  constexpr int64_t kPrefetchKeys = 16;
  if (dp) {
    // The same sweep in bf16_dot.cc, compiled for AVX512-BF16.
    Bf16ScoreHead heads[kDecodeGroup];
    int n = 0;
    for (int bi = 0; bi < nb; ++bi) {
      if (!active[bi]) continue;
      Bf16ScoreHead& h = heads[n++];
      h.q = blocks[bi].qraw;
      h.mul = blocks[bi].mul;
      h.M = blocks[bi].M;
      h.k = reinterpret_cast<const uint16_t*>(k0[bi]);
      h.out = st_block[bi];
      h.prefetch_k = first_of_head[bi] ? reinterpret_cast<const char*>(k0[bi]) : nullptr;
      h.prefetch_v = first_of_head[bi] && !t.v_ahead
                         ? reinterpret_cast<const char*>(v_row<T>(s, blocks[bi].hk, t.pos[0]))
                         : nullptr;
    }
    Bf16ScoreTile tile;
    tile.kc = kc;
    tile.d = s.d;
    tile.k_stride = kstep;
    tile.out_stride = ss;
    tile.k_stride_bytes = kstep * static_cast<int64_t>(sizeof(T));
    tile.v_stride_bytes = v_step_bytes;
    tile.k_bytes = k_bytes;
    tile.v_bytes = v_bytes;
    tile.k_ahead = kPrefetchKeys;
    tile.n_prefetch_k = std::clamp<int64_t>(t.key_end - kPrefetchKeys - t.pos[0], 0, kc);
    bf16_score_tile(heads, n, tile);
  }
  // Block bi's prefetches for key cidx: its V row (first tile only; later tiles' V rows come
  // during the previous tile's P V) and its K row kPrefetchKeys ahead, if that key exists. Always
  // inlined: GCC 12 deletes calls to a function that only prefetches (see core/prefetch.h).
  const auto prefetch_v = [&](int bi, int64_t cidx) __attribute__((always_inline)) {
    if (!t.v_ahead) prefetch_bytes(reinterpret_cast<const char*>(v_row<T>(s, blocks[bi].hk, t.pos[cidx])), v_bytes);
  };
  const auto prefetch_k_ahead = [&](int bi, int64_t cidx) __attribute__((always_inline)) {
    const int64_t jk = t.pos[cidx] + kPrefetchKeys;
    if (jk < t.key_end) prefetch_bytes(reinterpret_cast<const char*>(k_row<T>(s, blocks[bi].hk, jk)), k_bytes);
  };
  // Key cidx's prefetches for all blocks, issued by the first block of each kv head.
  const auto prefetch_key = [&](int64_t cidx) __attribute__((always_inline)) {
    for (int bi = 0; bi < nb; ++bi) {
      if (!active[bi] || !first_of_head[bi]) continue;
      prefetch_v(bi, cidx);
      prefetch_k_ahead(bi, cidx);
    }
  };
  // Blocks of 4 rows score two keys per step, loading each query vector once for both: 5% faster
  // in cache, 0-9% (median 4%) at kv 131072 (docs/benchmarks.md, step 7). Each kv head's K rows
  // kPrefetchKeys ahead are prefetched inside its dot product, a line per line of K read: 7-10%
  // faster in cache than a burst per key, the same from DRAM (step 11).
  int64_t c2 = 0;
#if HWY_TARGET != HWY_SCALAR
  bool all4 = true;
  for (int bi = 0; bi < nb; ++bi) all4 = all4 && blocks[bi].M == 4;
  const int64_t k_step_bytes = kstep * static_cast<int64_t>(sizeof(T));
  const bool whole_lines = k_bytes == s.dp * static_cast<int64_t>(sizeof(T));  // a K row is whole loop lines
  for (; !dp && all4 && c2 + 2 <= kc; c2 += 2) {
    const bool spread = whole_lines && t.pos[c2] + kPrefetchKeys + 1 < t.key_end;  // both keys ahead exist
    for (int bi = 0; bi < nb; ++bi) {
      if (!active[bi]) continue;
      const T* kr = k0[bi] + c2 * kstep;
      float* o = st_block[bi] + c2 * ss;
      const bool issues = first_of_head[bi];  // one block per kv head issues its prefetches
      if (issues) {
        prefetch_v(bi, c2);
        prefetch_v(bi, c2 + 1);
      }
      // The row pointers ahead are formed only for keys that exist.
      const bool inside = issues && spread;
      const char* k_next = inside ? reinterpret_cast<const char*>(kr + kPrefetchKeys * kstep) : nullptr;
      dot_rows4_two_keys(blocks[bi].q, s.dp, kr, kr + kstep, o, o + ss, k_next,
                         inside ? k_next + k_step_bytes : nullptr);
      if (issues && !spread) {
        prefetch_k_ahead(bi, c2);
        prefetch_k_ahead(bi, c2 + 1);
      }
    }
  }
#endif
  for (int64_t cidx = c2; !dp && cidx < kc; ++cidx) {
    prefetch_key(cidx);
    for (int bi = 0; bi < nb; ++bi) {
      if (!active[bi]) continue;
      dot_block_rows(blocks[bi].q, s.dp, blocks[bi].M, k0[bi] + cidx * kstep, st_block[bi] + cidx * ss);
    }
  }
  const T* vrow[kTileK];
  for (int bi = 0; bi < nb; ++bi) {
    if (!active[bi]) continue;
    for (int64_t cidx = 0; cidx < kc; ++cidx) vrow[cidx] = v_row<T>(s, blocks[bi].hk, t.pos[cidx]);
    // The next tile's V rows of this kv head (once per head), fetched while this tile's P V runs.
    const RowPrefetch pf = first_of_head[bi] ? next_tile_v_rows<T>(s, blocks[bi].hk, t) : RowPrefetch();
    finish_tile<T>(s, &blocks[bi], t, st_block[bi], ss, vrow, need_mask[bi], var, bf16_pairs, pf);
  }
}

// Split-KV decode over all heads of one sequence: tiles of keys outermost, kv heads inside, so
// the K/V rows of all heads at a position (adjacent in BSHD memory) are read together, once.
template <typename T, class Variant>
void decode_keys(const SeqCtx& s, int64_t key_begin, int64_t key_end, PartialOut out, Workspace* ws,
                 const Variant& var) {
  const Call& c = *s.c;
  const int64_t nq = s.r.q_len;
  // Row blocks: per kv head, its group's heads x queries, cut into blocks of <= kTileQ rows.
  struct BlockDef { int64_t h0, nh, i0, i1; };
  std::vector<BlockDef> defs;
  const int64_t g = c.group;
  const int64_t q_per_block = std::max<int64_t>(1, kTileQ / g);
  const int64_t heads_per_block = std::min<int64_t>(g, kTileQ);
  for (int64_t hk = 0; hk < c.heads_kv; ++hk)
    for (int64_t h0 = hk * g; h0 < (hk + 1) * g; h0 += heads_per_block)
      for (int64_t i0 = 0; i0 < nq; i0 += q_per_block)
        defs.push_back({h0, std::min(heads_per_block, (hk + 1) * g - h0), i0, std::min(nq, i0 + q_per_block)});
  // Blocks of <= kDotRows rows with K/V readable in place take decode_tile (its own score tile per
  // block of a group, after the row blocks in scratch); others take process_tile one by one.
  bool grouped = s.inline_k && s.inline_v;
  for (const auto& d : defs) grouped = grouped && d.nh * (d.i1 - d.i0) <= kDotRows;
  // bf16 outputs of grouped decode accumulate in pair layout (pv_cols_bf16_pairs).
  const bool pairs = grouped && use_bf16_pairs<T>(s);
  const int64_t n_blocks = static_cast<int64_t>(defs.size());
  const Scratch sc = carve(ws, s.dp, s.dvp, n_blocks, grouped ? kDecodeGroup * kTileK * kTileQ : 0);
  float* st_group = sc.extra;
  std::vector<RowBlock> blocks(defs.size());
  for (size_t bi = 0; bi < defs.size(); ++bi)
    init_rows<T>(s, &blocks[bi], sc.rows + bi * sc.row_block_floats, defs[bi].h0, defs[bi].nh, defs[bi].i0,
                 defs[bi].i1);
  TileKeys t;
  t.contiguous = true;
  t.extra_needed = false;
  t.extra = nullptr;
  t.key_end = key_end;
  for (int64_t t0 = key_begin; t0 < key_end; t0 += kTileK) {
    t.kc = std::min<int64_t>(kTileK, key_end - t0);
    for (int64_t cidx = 0; cidx < t.kc; ++cidx) t.pos[cidx] = t0 + cidx;
    t.v_ahead = t0 != key_begin;
    if (grouped) {
      for (int64_t b0 = 0; b0 < n_blocks; b0 += kDecodeGroup)
        decode_tile<T>(s, blocks.data() + b0, static_cast<int>(std::min<int64_t>(kDecodeGroup, n_blocks - b0)), t,
                       st_group, var, pairs);
    } else {
      for (auto& b : blocks) process_tile<T>(s, &b, t, sc, var);
    }
  }
  for (auto& b : blocks) {
    for (int r = 0; r < b.M; ++r) {
      const int64_t row = b.head[r] * nq + b.pos[r];
      const float lse = row_partial<Variant>(b, r, s.dvp);
      if (pairs) unpair_row(b.o + r * s.dvp, s.dv, out.o + row * s.dv);
      else std::memcpy(out.o + row * s.dv, b.o + r * s.dvp, sizeof(float) * s.dv);
      out.lse[row] = lse;
    }
  }
}

template <typename T>
void decode_t(const Call& c, int64_t seq, int64_t kb, int64_t ke, PartialOut out, Workspace* ws) {
  const SeqCtx s = make_seq_ctx<T>(c, seq);
  with_variant(c, s.r, [&](const auto& var) { decode_keys<T>(s, kb, ke, out, ws, var); });
}

void AttendKeysAllHeads(const Call& c, int64_t seq, int64_t kb, int64_t ke, PartialOut out, Workspace* ws) {
  switch (c.q.dtype) {
    case DType::kF32: decode_t<float>(c, seq, kb, ke, out, ws); break;
    case DType::kBF16: decode_t<hwy::bfloat16_t>(c, seq, kb, ke, out, ws); break;
    case DType::kF16: decode_t<hwy::float16_t>(c, seq, kb, ke, out, ws); break;
  }
}

const char* TargetName() { return hwy::TargetName(HWY_TARGET); }

}  // namespace attnkit::core::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attnkit::core {
HWY_EXPORT(AttendBlock);
HWY_EXPORT(AttendKeysAllHeads);
HWY_EXPORT(TargetName);

void attend_block(const Call& call, const BlockJob& job, Workspace* ws) {
  HWY_DYNAMIC_DISPATCH(AttendBlock)(call, job, ws);
}
void attend_keys_all_heads(const Call& call, int64_t seq, int64_t key_begin, int64_t key_end, PartialOut partial,
                           Workspace* ws) {
  HWY_DYNAMIC_DISPATCH(AttendKeysAllHeads)(call, seq, key_begin, key_end, partial, ws);
}
const char* dispatched_target_name() { return HWY_DYNAMIC_DISPATCH(TargetName)(); }
}  // namespace attnkit::core
#endif
