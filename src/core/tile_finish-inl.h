// core/tile_finish-inl.h: what a tile does once its scores are in, the same for the prefill and the
// decode tiles: the variant's logit hooks and masks, the normalization (the online softmax of
// Milakov & Gimelshein and Rabe & Staats, in FlashAttention-2's order: the output is rescaled when
// a row's max moves and divided by the denominator only at the end), and O += P V.
//
// Highway per-target header: included by core/tile_kernel.cc once per target (foreach_target.h),
// hence the toggling include guard instead of #pragma once.
#if defined(ATTNKIT_CORE_TILE_FINISH_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef ATTNKIT_CORE_TILE_FINISH_INL_H_
#undef ATTNKIT_CORE_TILE_FINISH_INL_H_
#else
#define ATTNKIT_CORE_TILE_FINISH_INL_H_
#endif

#include <hwy/highway.h>

#include <type_traits>

#include "core/tile_kernel.h"
#include "core/tile_microkernels-inl.h"
#include "core/tile_rows-inl.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit::core::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Online softmax: row r's unnormalized output times alpha = e^{m_old - m_new} when its max moved.
HWY_INLINE void rescale_output_row(const SeqCtx& s, RowBlock* b, int r, float alpha) {
  if (alpha == 1.0f) return;
  const DF df;
  float* orow = b->o + r * s.dvp;
  const VF va = hn::Set(df, alpha);
  for (int64_t k = 0; k < s.dvp; k += kLanes) hn::Store(hn::Mul(hn::Load(df, orow + k), va), df, orow + k);
}

#if HWY_TARGET != HWY_SCALAR
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

#endif

// The general online-softmax step for the query vector of rows [g, g + kLanes), lane-wise over
// rows: new max, e^{s - m} in place of the scores, the denominator and the output rescaled by
// e^{m_old - m_new}.
HWY_INLINE void softmax_rows(const SeqCtx& s, RowBlock* b, float* st, int64_t ss, int64_t kc, int64_t g) {
  const DF df;
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
    if (r < b->M) rescale_output_row(s, b, static_cast<int>(r), a[lane]);
  }
}

// A variant without softmax: each score of rows [g, g + kLanes) becomes its weight.
template <class Variant>
HWY_INLINE void weight_rows(const Variant& var, float* st, int64_t ss, int64_t kc, int64_t g) {
  const DF df;
  for (int64_t cidx = 0; cidx < kc; ++cidx) {
    float* p = st + cidx * ss + g;
    const VF x = hn::Load(df, p);
    hn::Store(hn::IfThenElse(hn::IsNaN(x), x, var.Weight(df, x)), df, p);  // NaN stays NaN
  }
}

// Turns a masked tile of scores into weights: the online softmax (packed for blocks of <= 4 rows,
// else per query vector), or the variant's own weight.
template <class Variant>
HWY_INLINE void normalize_tile(const SeqCtx& s, RowBlock* b, float* st, int64_t ss, int64_t kc, const Variant& var) {
#if HWY_TARGET != HWY_SCALAR
  if (packed_softmax_rows<Variant>(b->M)) {
    softmax_tile_4rows(s, b, st, ss, kc);
    return;
  }
#endif
  const int64_t n_groups = (b->M + kLanes - 1) / kLanes;  // query vectors holding the M rows
  for (int64_t g = 0; g < n_groups * static_cast<int64_t>(kLanes); g += kLanes) {
    if constexpr (Variant::kUseSoftmax) {
      softmax_rows(s, b, st, ss, kc, g);
    } else {
      weight_rows(var, st, ss, kc, g);
    }
  }
}

// O += P V in row groups of kR, 2 and 1 rows; the first row group also issues the prefetches of
// pf. V rows are read through vrow (f32, or bf16/f16 widened in registers); bf16_pairs: o is in
// pair layout (pv_cols_bf16_pairs).
template <typename TV>
HWY_INLINE void accumulate_pv(const SeqCtx& s, RowBlock* b, const float* st, int64_t ss, const TV* const* vrow,
                              int64_t kc, bool bf16_pairs, const RowPrefetch& pf) {
  const int M = b->M;
  // Always inlined: as ordinary lambdas, shared by the finish_tile of every variant, GCC would
  // call them out of line instead of keeping the P V loops inside each finish_tile.
  const auto row_groups = [&](const auto& pv) __attribute__((always_inline)) {
    int r = 0;
    for (; r + kR <= M; r += kR) pv(std::integral_constant<int, kR>(), r, r ? RowPrefetch() : pf);
    for (; r + 2 <= M; r += 2) pv(std::integral_constant<int, 2>(), r, r ? RowPrefetch() : pf);
    for (; r < M; ++r) pv(std::integral_constant<int, 1>(), r, r ? RowPrefetch() : pf);
  };
#if HWY_TARGET != HWY_SCALAR
  if constexpr (std::is_same_v<TV, hwy::bfloat16_t>) {
    if (bf16_pairs) {
      row_groups([&](auto rows, int r, const RowPrefetch& p) __attribute__((always_inline)) {
        pv_rows_bf16_pairs<decltype(rows)::value>(st + r, ss, vrow, kc, b->o + r * s.dvp, s.dvp, p);
      });
      return;
    }
  }
#else
  (void)bf16_pairs;
#endif
  row_groups([&](auto rows, int r, const RowPrefetch& p) __attribute__((always_inline)) {
    pv_rows<decltype(rows)::value>(st + r, ss, vrow, kc, b->o + r * s.dvp, s.dvp, p);
  });
}

// A tile's scores st (key c's scores at st + c * ss) made into the weights that multiply the V
// rows: the int8 key scales, the variant's logit hooks and masks, the normalization, the int8
// value scales.
template <class Variant>
HWY_INLINE void tile_weights(const SeqCtx& s, RowBlock* b, const TileKeys& t, float* st, int64_t ss, bool need_mask,
                             const Variant& var) {
  const int M = b->M;
  const int64_t kc = t.kc;
  const int64_t n_groups = (M + kLanes - 1) / kLanes;  // query vectors holding the M rows
  // Packed scores (ss == kPackedStride) hold the M rows only; others hold whole query vectors.
  const bool packed = ss == kPackedStride;
  ATTNKIT_ASSERT(packed ? packed_softmax_rows<Variant>(M) : ss >= n_groups * static_cast<int64_t>(kLanes));
  if (s.int8_kv) apply_kv_scales(s, b->hk, t, 0, st, ss, M);  // key scales: before any hook sees a logit
  var.LogitsTransform(s, *b, t, st, ss);
  if (need_mask) var.LogitsMask(s, *b, t, st, ss, packed ? M : static_cast<int>(n_groups * kLanes));
  normalize_tile(s, b, st, ss, kc, var);
  if (s.int8_kv) apply_kv_scales(s, b->hk, t, 1, st, ss, M);  // value scales: into the weights
}

// The rest of a tile once its scores st are in: tile_weights, then O += P V. Shared by the
// prefill and decode tiles.
template <typename TV, class Variant>
void finish_tile(const SeqCtx& s, RowBlock* b, const TileKeys& t, float* st, int64_t ss, const TV* const* vrow,
                 bool need_mask, const Variant& var, bool bf16_pairs = false, const RowPrefetch& pf = RowPrefetch()) {
  tile_weights(s, b, t, st, ss, need_mask, var);
  accumulate_pv(s, b, st, ss, vrow, t.kc, bf16_pairs, pf);
}

}  // namespace attnkit::core::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // ATTNKIT_CORE_TILE_FINISH_INL_H_
