// core/tile_microkernels-inl.h: the SIMD building blocks of the tile kernel, free of any notion of
// calls, masks or variants: element widening, the score products (S^T = K Q^T for blocks of many
// query rows, dot products for decode's few rows), O += P V, and the exp and lane reductions of
// the online softmax. Names say what they compute and on which shape: qk_keys<R, NG> scores R keys
// against NG query vectors, pv_cols<R, NV> accumulates R output rows over NV vectors of columns.
//
// Highway per-target header: included by core/tile_kernel.cc once per target (foreach_target.h),
// hence the toggling include guard instead of #pragma once.
#if defined(ATTNKIT_CORE_TILE_MICROKERNELS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef ATTNKIT_CORE_TILE_MICROKERNELS_INL_H_
#undef ATTNKIT_CORE_TILE_MICROKERNELS_INL_H_
#else
#define ATTNKIT_CORE_TILE_MICROKERNELS_INL_H_
#endif

#include <hwy/highway.h>

#include <cstring>
#include <limits>
#include <type_traits>

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
inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// ---------------------------------------------------------------------------------------------
// Source element access: f32 rows, or bf16/f16 rows widened to f32.

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
// int8 K/V rows widen to their stored integers; the per-row scale is applied to the score (K) or
// the softmax weight (V) by the tile, not here (see apply_kv_scales).
template <>
inline float to_f32<int8_t>(int8_t x) { return static_cast<float>(x); }

// One vector of f32 from kLanes elements of T at p (bf16/f16 widened in registers; int8 sign-
// extended to int32 and converted, exact).
template <typename T>
HWY_INLINE VF load_f32(DF df, const T* HWY_RESTRICT p) {
  if constexpr (std::is_same_v<T, float>) {
    return hn::LoadU(df, p);
  } else if constexpr (std::is_same_v<T, int8_t>) {
    const hn::RebindToSigned<DF> di;
    return hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(hn::Rebind<int8_t, DF>(), p)));
  } else {
    return hn::PromoteTo(df, hn::LoadU(hn::Rebind<T, DF>(), p));
  }
}

// Loads n elements with element stride `stride` as f32 into dst, zero-padding to n_pad.
template <typename T>
inline void load_row_f32(const T* src, int64_t stride, int64_t n, int64_t n_pad, float mul, float* HWY_RESTRICT dst) {
  const DF df;
  int64_t i = 0;
  if (stride == 1) {
    for (; i + static_cast<int64_t>(kLanes) <= n; i += kLanes)
      hn::StoreU(hn::Mul(load_f32(df, src + i), hn::Set(df, mul)), df, dst + i);
  }
  for (; i < n; ++i) dst[i] = to_f32(src[i * stride]) * mul;
  for (; i < n_pad; ++i) dst[i] = 0.0f;
}

// ---------------------------------------------------------------------------------------------
// Scores: S^T = K Q^T for row blocks of many rows (register-blocked over a transposed Q).

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
// per 16 / R steps of the d loop. A separate instantiation rather than a run-time test: a step of
// the d loop is a handful of instructions, so even an untaken branch in it shows in the scores.
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

// ---------------------------------------------------------------------------------------------
// O += P V: output rows accumulated over a tile's weights, V rows read in place or from scratch.

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

// Copies a pair-layout row (see pv_cols_bf16_pairs) to dst in column order.
inline void unpair_row(const float* src, int64_t dv, float* dst) {
  const int64_t L = static_cast<int64_t>(kLanes);
  for (int64_t g = 0; g < dv; g += 2 * L)
    for (int64_t i = 0; i < L; ++i) {
      dst[g + 2 * i] = src[g + i];
      dst[g + 2 * i + 1] = src[g + L + i];
    }
}

// ---------------------------------------------------------------------------------------------
// Online-softmax arithmetic: the exponential and the lane reductions.

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

// out[i] = sum of the lanes of a[i], i < 4: two interleave rounds leave, in each 128-bit block,
// the four partial sums side by side; the blocks are then added. About a third of the shuffles
// of four separate horizontal reductions (which decode pays for every key and row). Any 32-bit
// lane type (f32 scores, int32 sums of the int8 decode).
template <class D>
HWY_INLINE void sum4_lanes(D d, const hn::Vec<D>* a, hn::TFromD<D>* out) {
  using V = hn::Vec<D>;
  const hn::Repartition<uint64_t, D> du;
  // Per block: [a0+a2, b0+b2, a1+a3, b1+b3].
  const V ab = hn::Add(hn::InterleaveLower(d, a[0], a[1]), hn::InterleaveUpper(d, a[0], a[1]));
  const V cd = hn::Add(hn::InterleaveLower(d, a[2], a[3]), hn::InterleaveUpper(d, a[2], a[3]));
  // Per block: [a02, b02, c02, d02] + [a13, b13, c13, d13].
  const V lo = hn::BitCast(d, hn::InterleaveLower(du, hn::BitCast(du, ab), hn::BitCast(du, cd)));
  const V hi = hn::BitCast(d, hn::InterleaveUpper(du, hn::BitCast(du, ab), hn::BitCast(du, cd)));
  hn::StoreU(fold_to_128(d, hn::Add(lo, hi), AddOp()), hn::Full128<hn::TFromD<D>>(), out);
}
HWY_INLINE void sum4_lanes(const VF* a, float* out) { sum4_lanes(DF(), a, out); }
#endif

// ---------------------------------------------------------------------------------------------
// Scores for blocks of few rows (decode): one dot product per (row group, key).

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

}  // namespace attnkit::core::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // ATTNKIT_CORE_TILE_MICROKERNELS_INL_H_
