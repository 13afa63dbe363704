// core/decode_int8.cc: split-KV decode over int8 K with int16 queries and int32 score sums (see
// decode_int8.h). The walk, the prefetches, the online softmax and P V are the tile kernel's
// (tile_decode-inl.h, tile_finish-inl.h); this file brings the query and weight rounding and the
// integer products, and instantiates them for int8 K/V and the softmax variant only.
//
// Why integers: a decode step reads each K element once and multiplies it by the few query rows
// of its GQA group. Widened to f32, an int8 element costs a sign extension and a conversion per 16
// lanes before 4 multiply-adds, which makes the loop compute-bound below the memory bandwidth that
// bf16 reaches with half the bytes per element more. Widened to int16, 32 elements take one
// sign extension, and vpdpwssd multiplies and sums them in pairs for each query row. P V has the
// same cost structure over V, and the same remedy (pv_pairs).

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "core/decode_int8.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "core/decode_int8.h"
#include "core/tile_decode-inl.h"
#include "core/tile_finish-inl.h"
#include "core/tile_microkernels-inl.h"
#include "core/tile_rows-inl.h"
#include "core/tile_variants-inl.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit::core::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DI32 = hn::ScalableTag<int32_t>;
#if HWY_TARGET == HWY_SCALAR
using DI16 = hn::Rebind<int16_t, DI32>;  // one lane: one product per int32 lane
#else
using DI16 = hn::Repartition<int16_t, DI32>;  // pairs of int16 per int32 lane
#endif
using DI8 = hn::Rebind<int8_t, DI16>;
using VI32 = hn::Vec<DI32>;
using VI16 = hn::Vec<DI16>;
constexpr int64_t kLanes16 = static_cast<int64_t>(hn::MaxLanes(DI16()));
// |q16| <= 32767 and |k| <= 128: a sum over 512 elements stays below 2^31.
constexpr int64_t kMaxHeadDim = 512;

// sum + the products of a and b summed in adjacent pairs into 32-bit lanes. kVnni: one vpdpwssd,
// written as asm because Highway's AVX-512 target is compiled without avx512vnni (the caller
// checks the CPU, int8_vnni_enabled). Otherwise vpmaddwd and an add on x86; targets whose
// widening multiply-add keeps odd pairs apart add them here. Returned by value so the
// accumulators stay in registers.
template <bool kVnni>
HWY_INLINE VI32 mul_acc_pairs(VI16 a, VI16 b, VI32 sum) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
  if constexpr (kVnni) {
    asm("vpdpwssd %2, %1, %0" : "+v"(sum.raw) : "v"(a.raw), "v"(b.raw));
    return sum;
  }
#endif
  VI32 odd = hn::Zero(DI32());
  sum = hn::ReorderWidenMulAccumulate(DI32(), a, b, sum, odd);
  return hn::Add(sum, odd);
}

HWY_INLINE VI16 load_k_i16(const int8_t* HWY_RESTRICT k) { return hn::PromoteTo(DI16(), hn::LoadU(DI8(), k)); }

// A row block's queries rounded to int16: row r is q + r * d, and its f32 row (times its logit
// multiplier) is scale[r] * q16 to within half a step.
struct Int16Rows {
  const int16_t* q;
  float scale[kDotRows];
};

// Rounds n values x (f32, the logit multiplier folded in) to int16 with one scale, max |x| / 32767.
// False for a row this cannot represent (a value not finite, or a max so small that 32767 / max
// overflows); the call then takes the f32 path.
inline bool round_row_i16(const float* x, int64_t n, int16_t* q, float* scale) {
  float amax = 0.0f;
  bool finite = true;
  for (int64_t i = 0; i < n; ++i) {
    finite = finite && std::isfinite(x[i]);
    amax = std::max(amax, std::fabs(x[i]));
  }
  if (!finite) return false;
  if (amax == 0.0f) {
    std::fill(q, q + n, int16_t{0});
    *scale = 0.0f;
    return true;
  }
  const float inv = 32767.0f / amax;
  if (!std::isfinite(inv)) return false;
  for (int64_t i = 0; i < n; ++i)
    q[i] = static_cast<int16_t>(std::clamp<long>(std::lrint(x[i] * inv), -32767L, 32767L));
  *scale = amax / 32767.0f;
  return true;
}

// The int16 dot products of score_decode_sweep (the interface of WidenedDots): each widened K vector
// is loaded once for all rows of its block; scores are the int32 sums times each row's scale.
template <bool kVnni>
struct Int16Dots {
  const Int16Rows* rows;  // the group's blocks
  const RowBlock* blocks;
  int64_t d;

  // R rows of q (stride d) against one key: out[r] = sum of q[r] . k.
  template <int R>
  HWY_INLINE void rows_one_key(const int16_t* HWY_RESTRICT q, const int8_t* HWY_RESTRICT k, int32_t* out) const {
    const DI32 di;
    VI32 acc[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) acc[r] = hn::Zero(di);
    for (int64_t i = 0; i < d; i += kLanes16) {
      const VI16 kv = load_k_i16(k + i);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r] = mul_acc_pairs<kVnni>(hn::LoadU(DI16(), q + r * d + i), kv, acc[r]);
    }
#if HWY_TARGET != HWY_SCALAR
    if constexpr (R == 4) {
      sum4_lanes(di, acc, out);
      return;
    }
#endif
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) out[r] = hn::GetLane(hn::SumOfLanes(di, acc[r]));
  }

  HWY_INLINE void one_key(int bi, const int8_t* k, float* out) const {
    const Int16Rows& qr = rows[bi];
    const int M = blocks[bi].M;
    int32_t sums[kDotRows];
    int r = 0;
    for (; r + 4 <= M; r += 4) rows_one_key<4>(qr.q + r * d, k, sums + r);
    for (; r + 2 <= M; r += 2) rows_one_key<2>(qr.q + r * d, k, sums + r);
    for (; r < M; ++r) rows_one_key<1>(qr.q + r * d, k, sums + r);
    for (r = 0; r < M; ++r) out[r] = static_cast<float>(sums[r]) * qr.scale[r];
  }

#if HWY_TARGET != HWY_SCALAR
  // Four rows against keys ka and kb: each query vector is loaded once for both keys. pfa, pfb:
  // rows to prefetch, one 64-byte line per 64 bytes of ka read (see dot_rows4_two_keys).
  HWY_INLINE void two_keys4(int bi, const int8_t* HWY_RESTRICT ka, const int8_t* HWY_RESTRICT kb, float* oa,
                            float* ob, const char* pfa, const char* pfb) const {
    const DI32 di;
    const Int16Rows& qr = rows[bi];
    VI32 a[4], b[4];
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) a[r] = b[r] = hn::Zero(di);
    for (int64_t i = 0; i < d; i += kLanes16) {
      if (pfa != nullptr && i % 64 == 0) {
        __builtin_prefetch(pfa + i, 0, 2);
        __builtin_prefetch(pfb + i, 0, 2);
      }
      const VI16 xa = load_k_i16(ka + i), xb = load_k_i16(kb + i);
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) {
        VI16 qv = hn::LoadU(DI16(), qr.q + r * d + i);
        keep_in_register(qv);
        a[r] = mul_acc_pairs<kVnni>(qv, xa, a[r]);
        b[r] = mul_acc_pairs<kVnni>(qv, xb, b[r]);
      }
    }
    // The four sums of each key side by side, to f32 and times the rows' scales in one vector.
    const hn::Full128<int32_t> d4i;
    const hn::Full128<float> d4;
    alignas(16) int32_t sums[4];
    const auto scale = hn::LoadU(d4, qr.scale);
    sum4_lanes(di, a, sums);
    hn::StoreU(hn::Mul(hn::ConvertTo(d4, hn::Load(d4i, sums)), scale), d4, oa);
    sum4_lanes(di, b, sums);
    hn::StoreU(hn::Mul(hn::ConvertTo(d4, hn::Load(d4i, sums)), scale), d4, ob);
  }
#endif
};

#if HWY_TARGET != HWY_SCALAR
// ---------------------------------------------------------------------------------------------
// P V in integers, for blocks of <= 4 rows (packed weight tiles, softmax_tile_4rows): each row's
// weights of a tile (softmax weight times value scale, in [0, max]) are rounded to int16 with one
// step per row and tile, max / 32767, and two keys' weights share one 32-bit word. Two keys' V rows
// widened to int16 and interleaved give (v_j[c], v_j+1[c]) pairs, so one vpdpwssd against the
// broadcast word (w_j, w_j+1) adds both keys' products for 16 columns. The int32 sums of a tile
// times the step go into the f32 output. The interleave works within 128-bit blocks, so each chunk
// of kLanes16 columns of the output is kept permuted (lo: columns 8b + 0..3 of block b, hi:
// 8b + 4..7) until unpermute_row.

constexpr int64_t kLanes32 = kLanes16 / 2;

// Weight words of a packed tile (key c, row r at st[4 c + r], keys past kc zero): w[4 p + r] holds
// rows r's weights of keys 2p (low half) and 2p + 1 (high half) in steps of scale[r].
HWY_INLINE void weight_pairs(const float* st, int64_t kc, int M, uint32_t* w, float* scale) {
  const hn::Full128<float> d4;
  const hn::Full128<int32_t> d4i;
  auto vmax = hn::Zero(d4);
  auto nan = hn::Zero(d4);
  for (int64_t c = 0; c < kc; ++c) {
    const auto x = hn::LoadU(d4, st + 4 * c);
    nan = hn::Or(nan, hn::VecFromMask(d4, hn::IsNaN(x)));
    vmax = hn::Max(vmax, hn::IfThenZeroElse(hn::IsNaN(x), x));
  }
  alignas(16) float mx[4], isnan[4], inv[4];
  hn::Store(vmax, d4, mx);
  hn::Store(nan, d4, isnan);
  for (int r = 0; r < 4; ++r) {
    // Below 32767 / FLT_MAX a step would not be finite: such weights (< 1e-34) count as 0.
    const bool usable = r < M && mx[r] >= 32767.0f / std::numeric_limits<float>::max();
    inv[r] = usable ? 32767.0f / mx[r] : 0.0f;
    scale[r] = isnan[r] != 0.0f ? std::numeric_limits<float>::quiet_NaN() : (usable ? mx[r] / 32767.0f : 0.0f);
  }
  const auto vinv = hn::Load(d4, inv);
  const auto low = hn::Set(d4i, 0xFFFF);
  for (int64_t c = 0; c < kc; c += 2) {
    const auto a = hn::NearestInt(hn::Mul(hn::IfThenZeroElse(hn::IsNaN(hn::LoadU(d4, st + 4 * c)), hn::LoadU(d4, st + 4 * c)), vinv));
    auto b = hn::Zero(d4i);
    if (c + 1 < kc) {
      const auto xb = hn::LoadU(d4, st + 4 * c + 4);
      b = hn::NearestInt(hn::Mul(hn::IfThenZeroElse(hn::IsNaN(xb), xb), vinv));
    }
    hn::StoreU(hn::BitCast(hn::Full128<uint32_t>(), hn::Or(hn::And(a, low), hn::ShiftLeft<16>(b))),
               hn::Full128<uint32_t>(), w + 2 * c);
  }
}

// O[r][c0 .. c0 + NC * kLanes16) (permuted chunks) += scale[r] * sum over the tile's key pairs of
// (w_j, w_j+1) . (V_j, V_j+1), for R rows; pf: the next tile's V rows, fetched here.
template <int R, int NC, bool kVnni>
HWY_INLINE void pv_pairs(const uint32_t* w, const float* scale, const int8_t* const* vrow, int64_t kc, float* o,
                         int64_t dvp, int64_t c0, const RowPrefetch& pf) {
  const DI32 di;
  const DI16 d16;
  const DF df;
  VI32 acc[R][2 * NC];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < 2 * NC; ++v) acc[r][v] = hn::Zero(di);
  for (int64_t j = 0; j < kc; j += 2) {
    const int8_t* va = vrow[j] + c0;
    const int8_t* vb = (j + 1 < kc ? vrow[j + 1] : vrow[j]) + c0;  // an odd last key has weight 0
    prefetch_cols<int8_t>(pf, j, c0, NC * kLanes16);
    prefetch_cols<int8_t>(pf, j + 1, c0, NC * kLanes16);
    VI16 pv[2 * NC];
#pragma GCC unroll 8
    for (int ch = 0; ch < NC; ++ch) {
      const VI16 a = load_k_i16(va + ch * kLanes16), b = load_k_i16(vb + ch * kLanes16);
      pv[2 * ch] = hn::InterleaveLower(d16, a, b);
      pv[2 * ch + 1] = hn::InterleaveUpper(d16, a, b);
    }
    const uint32_t* wj = w + 2 * j;  // the pair's words, rows 0..3
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const VI16 wv = hn::BitCast(d16, hn::Set(hn::RebindToUnsigned<DI32>(), wj[r]));
#pragma GCC unroll 8
      for (int v = 0; v < 2 * NC; ++v) acc[r][v] = mul_acc_pairs<kVnni>(pv[v], wv, acc[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const VF sv = hn::Set(df, scale[r]);
    float* orow = o + r * dvp + c0;
#pragma GCC unroll 8
    for (int v = 0; v < 2 * NC; ++v)
      hn::Store(hn::MulAdd(hn::ConvertTo(df, acc[r][v]), sv, hn::Load(df, orow + v * kLanes32)), df, orow + v * kLanes32);
  }
}

template <int R, bool kVnni>
HWY_INLINE void pv_pairs_rows(const uint32_t* w, const float* scale, const int8_t* const* vrow, int64_t kc, float* o,
                              int64_t dvp, const RowPrefetch& pf) {
  int64_t c0 = 0;
  for (; c0 + 2 * kLanes16 <= dvp; c0 += 2 * kLanes16) pv_pairs<R, 2, kVnni>(w, scale, vrow, kc, o, dvp, c0, pf);
  for (; c0 < dvp; c0 += kLanes16) pv_pairs<R, 1, kVnni>(w, scale, vrow, kc, o, dvp, c0, pf);
}

// One output row from the permuted chunks of pv_pairs back to column order.
inline void unpermute_row(float* o, int64_t dv) {
  float tmp[kLanes16];
  for (int64_t c0 = 0; c0 < dv; c0 += kLanes16) {
    for (int64_t j = 0; j < kLanes32; ++j) {
      const int64_t col = 8 * (j / 4) + j % 4;
      tmp[col] = o[c0 + j];
      tmp[col + 4] = o[c0 + kLanes32 + j];
    }
    std::copy(tmp, tmp + kLanes16, o + c0);
  }
}
#endif

// decode_keys_scored's scorer: rounds every block's query rows once, then scores with Int16Dots;
// blocks of <= 4 rows accumulate P V in integers too (pv_pairs).
template <bool kVnni>
struct Int8Scorer {
  const SeqCtx& s;
  std::vector<Int16Rows> rows;
  bool int_pv = false;

  bool init(std::vector<RowBlock>& blocks, Workspace* ws) {
    const int64_t per_block = kDotRows * s.d;  // int16 per block
    ws->ibuf.ensure(static_cast<size_t>((static_cast<int64_t>(blocks.size()) * per_block + 3) / 4 + 1));
    int16_t* mem = reinterpret_cast<int16_t*>(ws->ibuf.data());
    rows.resize(blocks.size());
#if HWY_TARGET != HWY_SCALAR
    int_pv = s.dv % kLanes16 == 0;
#endif
    for (size_t bi = 0; bi < blocks.size(); ++bi) {
      int16_t* q = mem + static_cast<int64_t>(bi) * per_block;
      rows[bi].q = q;
      int_pv = int_pv && packed_softmax_rows<SoftmaxVariant>(blocks[bi].M);
      for (int r = 0; r < blocks[bi].M; ++r)
        if (!round_row_i16(blocks[bi].q + r * s.dp, s.d, q + r * s.d, &rows[bi].scale[r])) return false;
    }
    return true;
  }
  HWY_INLINE void operator()(const DecodeGroup<int8_t>& g, const TileKeys& t, int b0) {
    score_decode_sweep<int8_t>(s, g, t, Int16Dots<kVnni>{rows.data() + b0, g.blocks, s.d});
  }
  template <class Variant>
  HWY_INLINE void finish(RowBlock* b, int /*bi*/, const TileKeys& t, float* st, int64_t ss, const int8_t* const* vrow,
                         bool need_mask, const Variant& var, bool bf16_pairs, const RowPrefetch& pf) {
#if HWY_TARGET != HWY_SCALAR
    if (int_pv) {
      tile_weights(s, b, t, st, ss, need_mask, var);
      alignas(16) uint32_t w[kTileK * kPackedStride / 2 + 4];
      alignas(16) float scale[4];
      weight_pairs(st, t.kc, b->M, w, scale);
      switch (b->M) {
        case 4: pv_pairs_rows<4, kVnni>(w, scale, vrow, t.kc, b->o, s.dvp, pf); break;
        case 3: pv_pairs_rows<3, kVnni>(w, scale, vrow, t.kc, b->o, s.dvp, pf); break;
        case 2: pv_pairs_rows<2, kVnni>(w, scale, vrow, t.kc, b->o, s.dvp, pf); break;
        default: pv_pairs_rows<1, kVnni>(w, scale, vrow, t.kc, b->o, s.dvp, pf); break;
      }
      return;
    }
#endif
    finish_tile<int8_t>(s, b, t, st, ss, vrow, need_mask, var, bf16_pairs, pf);
  }
  void done(std::vector<RowBlock>& blocks) {
#if HWY_TARGET != HWY_SCALAR
    if (!int_pv) return;
    for (auto& b : blocks)
      for (int r = 0; r < b.M; ++r) unpermute_row(b.o + r * s.dvp, s.dv);
#else
    (void)blocks;
#endif
  }
};

template <bool kVnni>
bool attend_keys_int8_t(const Call& c, int64_t seq, int64_t kb, int64_t ke, PartialOut out, Workspace* ws) {
  const SeqCtx s = make_seq_ctx<int8_t>(c, seq);
  if (c.p.normalization != Normalization::kSoftmax || s.d > kMaxHeadDim || s.d % kLanes16 != 0 ||
      !decode_grouped(s, decode_block_defs(c, s.r.q_len)))
    return false;
  Int8Scorer<kVnni> scorer{s, {}};
  return decode_keys_scored<int8_t>(s, kb, ke, out, ws, SoftmaxVariant{}, scorer);
}

bool AttendKeysInt8(const Call& c, int64_t seq, int64_t kb, int64_t ke, PartialOut out, Workspace* ws) {
  if (c.k.dtype != DType::kI8) return false;
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
  if (int8_vnni_enabled()) return attend_keys_int8_t<true>(c, seq, kb, ke, out, ws);
#endif
  return attend_keys_int8_t<false>(c, seq, kb, ke, out, ws);
}

}  // namespace attnkit::core::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attnkit::core {
namespace {

bool cpu_has_vnni() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vnni");
#else
  return false;
#endif
}

std::atomic<bool>& vnni_flag() {
  static std::atomic<bool> flag{cpu_has_vnni()};
  return flag;
}

}  // namespace

bool int8_vnni_enabled() { return vnni_flag().load(std::memory_order_relaxed); }
bool set_int8_vnni_enabled(bool on) { return vnni_flag().exchange(on && cpu_has_vnni()); }

HWY_EXPORT(AttendKeysInt8);

bool attend_keys_int8(const Call& call, int64_t seq, int64_t key_begin, int64_t key_end, PartialOut partial,
                      Workspace* ws) {
  return HWY_DYNAMIC_DISPATCH(AttendKeysInt8)(call, seq, key_begin, key_end, partial, ws);
}

}  // namespace attnkit::core
#endif
