// Quantized-weight matrix products (see quant_matmul.h for the contract and the error bound).
//
// Layout of one unpacked row (cols values, G = cols / 32 groups):
//   s[cols]   int8 weight values; group g holds values 32 g .. 32 g + 31
//   a[2 G]    f32 scale of each 16 values (both halves equal except for Q6_K)
//   b[G]      f32 offset of each group (k-quants with a minimum only): W = a * s - b
// Block layouts are ggml's, as in gguf/dequant.cc; the unpacking below gives the same values.
//
// Integer dot of a group: 32 products of int8 weights and int16 activations, exact in int32
// (vpdpwssd on AVX512-VNNI, vpmaddwd on AVX2, plain C++ otherwise), then one f32 multiply-add per
// half group with the weight scale times the activation scale.
#include "model/quant_matmul.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <string>

#include "attnkit/tensor.h"

namespace attnkit::model::internal {
namespace {

using gguf::TensorType;

constexpr int64_t kGroup = 32;

// ---- ISA selection ----

QuantIsa cpu_isa() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512vnni"))
    return QuantIsa::kAvx512Vnni;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return QuantIsa::kAvx2;
  return QuantIsa::kScalar;
}

std::atomic<int>& isa_flag() {
  static std::atomic<int> flag{static_cast<int>(cpu_isa())};
  return flag;
}

#define ATTNKIT_AVX2_TARGET __attribute__((target("avx2,fma,f16c")))
#define ATTNKIT_VNNI_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))

// ---- format descriptions ----

struct Format {
  int64_t block_elems;
  int64_t block_bytes;
  bool has_min;
  // Unpacks one block into s (block_elems values), a (block_elems / 16), b (block_elems / 32).
  void (*unpack)(const uint8_t* blk, int8_t* s, float* a, float* b);
  // The same with AVX2 byte shuffles (nullptr: the portable one is used on every path).
  void (*unpack_avx2)(const uint8_t* blk, int8_t* s, float* a, float* b);
};

inline float load_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

void unpack_q8_0(const uint8_t* blk, int8_t* s, float* a, float*) {
  a[0] = a[1] = load_f16(blk);
  std::memcpy(s, blk + 2, 32);
}

void unpack_q4_0(const uint8_t* blk, int8_t* s, float* a, float*) {
  a[0] = a[1] = load_f16(blk);
  const uint8_t* qs = blk + 2;
  for (int j = 0; j < 16; ++j) {
    s[j] = static_cast<int8_t>((qs[j] & 0x0f) - 8);
    s[j + 16] = static_cast<int8_t>((qs[j] >> 4) - 8);
  }
}

void unpack_q5_0(const uint8_t* blk, int8_t* s, float* a, float*) {
  a[0] = a[1] = load_f16(blk);
  uint32_t qh;
  std::memcpy(&qh, blk + 2, 4);
  const uint8_t* qs = blk + 6;
  for (int j = 0; j < 16; ++j) {
    s[j] = static_cast<int8_t>(((qs[j] & 0x0f) | (((qh >> j) & 1u) << 4)) - 16);
    s[j + 16] = static_cast<int8_t>(((qs[j] >> 4) | (((qh >> (j + 16)) & 1u) << 4)) - 16);
  }
}

// 6-bit scale and min j of Q4_K / Q5_K (the packing dequant.cc documents).
inline void scale_min_k4(int j, const uint8_t* q, int* sc, int* mn) {
  if (j < 4) {
    *sc = q[j] & 63;
    *mn = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
    *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

void unpack_q4_k(const uint8_t* blk, int8_t* s, float* a, float* b) {
  const float d = load_f16(blk), dmin = load_f16(blk + 2);
  const uint8_t* scales = blk + 4;
  const uint8_t* q = blk + 16;
  for (int g = 0; g < 8; ++g) {
    int sc, mn;
    scale_min_k4(g, scales, &sc, &mn);
    a[2 * g] = a[2 * g + 1] = d * static_cast<float>(sc);
    b[g] = dmin * static_cast<float>(mn);
    const uint8_t* qq = q + 32 * (g / 2);
    const int shift = 4 * (g % 2);
    for (int l = 0; l < 32; ++l) s[32 * g + l] = static_cast<int8_t>((qq[l] >> shift) & 0x0f);
  }
}

void unpack_q5_k(const uint8_t* blk, int8_t* s, float* a, float* b) {
  const float d = load_f16(blk), dmin = load_f16(blk + 2);
  const uint8_t* scales = blk + 4;
  const uint8_t* qh = blk + 16;
  const uint8_t* ql = blk + 48;
  for (int g = 0; g < 8; ++g) {
    int sc, mn;
    scale_min_k4(g, scales, &sc, &mn);
    a[2 * g] = a[2 * g + 1] = d * static_cast<float>(sc);
    b[g] = dmin * static_cast<float>(mn);
    const uint8_t* qq = ql + 32 * (g / 2);
    const int shift = 4 * (g % 2);
    for (int l = 0; l < 32; ++l)
      s[32 * g + l] = static_cast<int8_t>(((qq[l] >> shift) & 0x0f) | (((qh[l] >> g) & 1) << 4));
  }
}

// Q6_K: each 128-value half has four groups of 32 (values l, l + 32, l + 64, l + 96 of the half
// come from ql[l], ql[l + 32] low / high nibbles and the 2-bit fields of qh[l]); every 16 values
// have their own int8 scale.
void unpack_q6_k(const uint8_t* blk, int8_t* s, float* a, float*) {
  const uint8_t* ql = blk;
  const uint8_t* qh = blk + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(blk + 192);
  const float d = load_f16(blk + 208);
  for (int half = 0; half < 2; ++half) {
    const uint8_t* l4 = ql + 64 * half;
    const uint8_t* h2 = qh + 32 * half;
    int8_t* o = s + 128 * half;
    for (int l = 0; l < 32; ++l) {
      o[l] = static_cast<int8_t>(((l4[l] & 0x0f) | (((h2[l] >> 0) & 3) << 4)) - 32);
      o[l + 32] = static_cast<int8_t>(((l4[l + 32] & 0x0f) | (((h2[l] >> 2) & 3) << 4)) - 32);
      o[l + 64] = static_cast<int8_t>(((l4[l] >> 4) | (((h2[l] >> 4) & 3) << 4)) - 32);
      o[l + 96] = static_cast<int8_t>(((l4[l + 32] >> 4) | (((h2[l] >> 6) & 3) << 4)) - 32);
    }
    for (int k = 0; k < 8; ++k) a[8 * half + k] = d * static_cast<float>(sc[8 * half + k]);
  }
}

// ---- AVX2 unpacking of the formats the shipped model uses (same values as the portable code) ----

ATTNKIT_AVX2_TARGET inline void store32(int8_t* s, __m256i v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(s), v); }

ATTNKIT_AVX2_TARGET void unpack_q5_0_avx2(const uint8_t* blk, int8_t* s, float* a, float*) {
  a[0] = a[1] = load_f16(blk);
  uint32_t qh;
  std::memcpy(&qh, blk + 2, 4);
  const __m128i qs = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 6));
  const __m128i m4 = _mm_set1_epi8(0x0f);
  const __m256i nib = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(qs, 4), m4), _mm_and_si128(qs, m4));
  // Byte j gets byte j / 8 of qh, then is tested against bit j % 8: the 5th bit of value j.
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(static_cast<int>(qh)),
      _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0));
  const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ull));
  const __m256i hi = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit), _mm256_set1_epi8(0x10));
  store32(s, _mm256_sub_epi8(_mm256_or_si256(nib, hi), _mm256_set1_epi8(16)));
}

ATTNKIT_AVX2_TARGET void unpack_q4_k_avx2(const uint8_t* blk, int8_t* s, float* a, float* b) {
  const float d = load_f16(blk), dmin = load_f16(blk + 2);
  for (int g = 0; g < 8; ++g) {
    int sc, mn;
    scale_min_k4(g, blk + 4, &sc, &mn);
    a[2 * g] = a[2 * g + 1] = d * static_cast<float>(sc);
    b[g] = dmin * static_cast<float>(mn);
  }
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  for (int p = 0; p < 4; ++p) {
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 16 + 32 * p));
    store32(s + 64 * p, _mm256_and_si256(q, m4));
    store32(s + 64 * p + 32, _mm256_and_si256(_mm256_srli_epi16(q, 4), m4));
  }
}

ATTNKIT_AVX2_TARGET void unpack_q6_k_avx2(const uint8_t* blk, int8_t* s, float* a, float*) {
  const float d = load_f16(blk + 208);
  const int8_t* sc = reinterpret_cast<const int8_t*>(blk + 192);
  for (int k = 0; k < 16; ++k) a[k] = d * static_cast<float>(sc[k]);
  const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(0x30), off = _mm256_set1_epi8(32);
  for (int half = 0; half < 2; ++half) {
    const __m256i la = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * half));
    const __m256i lb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * half + 32));
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 128 + 32 * half));
    // 16-bit shifts move bits across the byte boundary; the 0x30 mask keeps only each byte's own.
    int8_t* o = s + 128 * half;
    store32(o, _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(la, m4), _mm256_and_si256(_mm256_slli_epi16(h, 4), m2)), off));
    store32(o + 32, _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(lb, m4), _mm256_and_si256(_mm256_slli_epi16(h, 2), m2)), off));
    store32(o + 64, _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(la, 4), m4), _mm256_and_si256(h, m2)), off));
    store32(o + 96, _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(lb, 4), m4),
                                                    _mm256_and_si256(_mm256_srli_epi16(h, 2), m2)), off));
  }
}

const Format* integer_format(TensorType t) {
  static const Format q8_0{32, 34, false, unpack_q8_0, nullptr};
  static const Format q4_0{32, 18, false, unpack_q4_0, nullptr};
  static const Format q5_0{32, 22, false, unpack_q5_0, unpack_q5_0_avx2};
  static const Format q4_k{256, 144, true, unpack_q4_k, unpack_q4_k_avx2};
  static const Format q5_k{256, 176, true, unpack_q5_k, nullptr};
  static const Format q6_k{256, 210, false, unpack_q6_k, unpack_q6_k_avx2};
  switch (t) {
    case TensorType::kQ8_0: return &q8_0;
    case TensorType::kQ4_0: return &q4_0;
    case TensorType::kQ5_0: return &q5_0;
    case TensorType::kQ4_K: return &q4_k;
    case TensorType::kQ5_K: return &q5_k;
    case TensorType::kQ6_K: return &q6_k;
    default: return nullptr;
  }
}

// ---- activations ----

// One row of quantized activations: int16 q in blocks of 32 with scale d; sum = d * sum(q) per
// block (the k-quant minimum multiplies it).
struct QuantRow {
  const int16_t* q;
  const float* d;
  const float* sum;
};

constexpr float kQMax = 32767.f;

void quantize_row(const float* x, int64_t cols, int16_t* q, float* d, float* sum) {
  for (int64_t g = 0; g < cols / kGroup; ++g) {
    const float* xg = x + g * kGroup;
    float amax = 0.f;
    for (int i = 0; i < kGroup; ++i) amax = std::max(amax, std::fabs(xg[i]));
    const float dg = amax / kQMax;
    const float inv = dg > 0.f ? 1.f / dg : 0.f;
    int isum = 0;
    for (int i = 0; i < kGroup; ++i) {
      const float v = std::clamp(std::nearbyint(xg[i] * inv), -kQMax, kQMax);
      q[g * kGroup + i] = static_cast<int16_t>(v);
      isum += q[g * kGroup + i];
    }
    d[g] = dg;
    sum[g] = dg * static_cast<float>(isum);
  }
}

// The same quantization on AVX-512: _mm512_cvtps_epi32 rounds to nearest even in the default
// rounding mode, as std::nearbyint does, and the products x * inv are the same f32 values, so the
// result is bit for bit the portable one's (quant_activation_error describes both).
ATTNKIT_VNNI_TARGET void quantize_row_avx512(const float* x, int64_t cols, int16_t* q, float* d, float* sum) {
  const __m512 lim = _mm512_set1_ps(kQMax);
  for (int64_t g = 0; g < cols / kGroup; ++g) {
    const __m512 v0 = _mm512_loadu_ps(x + g * kGroup), v1 = _mm512_loadu_ps(x + g * kGroup + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    const float dg = amax / kQMax;
    const __m512 inv = _mm512_set1_ps(dg > 0.f ? 1.f / dg : 0.f);
    const __m512 neg = _mm512_sub_ps(_mm512_setzero_ps(), lim);
    const __m512i i0 = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(v0, inv), neg), lim));
    const __m512i i1 = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(v1, inv), neg), lim));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + g * kGroup), _mm512_cvtsepi32_epi16(i0));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + g * kGroup + 16), _mm512_cvtsepi32_epi16(i1));
    d[g] = dg;
    sum[g] = dg * static_cast<float>(_mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1)));
  }
}

// ---- integer dots of one unpacked row against up to 4 activation rows ----
// |s| <= 128 and |q| <= 32767, so a half-group sum (16 products) stays below 2^26: int32 is exact.

template <int T>
void dot_scalar(const int8_t* s, const float* a, int64_t groups, const QuantRow* x, float* out) {
  for (int t = 0; t < T; ++t) {
    float acc = 0.f;
    for (int64_t g = 0; g < groups; ++g) {
      int32_t lo = 0, hi = 0;
      for (int i = 0; i < 16; ++i) lo += s[g * kGroup + i] * x[t].q[g * kGroup + i];
      for (int i = 16; i < 32; ++i) hi += s[g * kGroup + i] * x[t].q[g * kGroup + i];
      acc += x[t].d[g] * (a[2 * g] * static_cast<float>(lo) + a[2 * g + 1] * static_cast<float>(hi));
    }
    out[t] = acc;
  }
}

ATTNKIT_AVX2_TARGET inline float hsum256(__m256 v) {
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
  return _mm_cvtss_f32(h);
}

// AVX2: the group's weights widened to two vectors of 16 int16 (values 0..15 and 16..31);
// vpmaddwd gives 8 int32 pair sums per half, each half scaled by its own a.
template <int T>
ATTNKIT_AVX2_TARGET void dot_avx2(const int8_t* s, const float* a, int64_t groups, const QuantRow* x, float* out) {
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + g * kGroup));
    const __m256i wlo = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(w));
    const __m256i whi = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(w, 1));
    const __m256 alo = _mm256_set1_ps(a[2 * g]), ahi = _mm256_set1_ps(a[2 * g + 1]);
    for (int t = 0; t < T; ++t) {
      const int16_t* q = x[t].q + g * kGroup;
      const __m256i plo = _mm256_madd_epi16(wlo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q)));
      const __m256i phi = _mm256_madd_epi16(whi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 16)));
      const __m256 d = _mm256_set1_ps(x[t].d[g]);
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(plo), _mm256_mul_ps(alo, d), acc[t]);
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(phi), _mm256_mul_ps(ahi, d), acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) out[t] = hsum256(acc[t]);
}

// AVX512-VNNI: the whole group as 32 int16 in one vector; vpdpwssd gives 16 int32 pair sums,
// lanes 0..7 from values 0..15 and lanes 8..15 from values 16..31. Even and odd groups accumulate
// in separate registers so consecutive FMAs do not wait on each other's latency.
template <int T>
ATTNKIT_VNNI_TARGET inline void group_vnni(const int8_t* s, const float* a, int64_t g, const QuantRow* x, __m512* acc) {
  const __m512i w = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + g * kGroup)));
  const __m512 scale = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(a[2 * g]), _mm512_set1_ps(a[2 * g + 1]));
  for (int t = 0; t < T; ++t) {
    const __m512i p = _mm512_dpwssd_epi32(_mm512_setzero_si512(), w, _mm512_loadu_si512(x[t].q + g * kGroup));
    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(scale, _mm512_set1_ps(x[t].d[g])), acc[t]);
  }
}

template <int T>
ATTNKIT_VNNI_TARGET void dot_vnni(const int8_t* s, const float* a, int64_t groups, const QuantRow* x, float* out) {
  __m512 acc0[T], acc1[T];
  for (int t = 0; t < T; ++t) acc0[t] = acc1[t] = _mm512_setzero_ps();
  int64_t g = 0;
  for (; g + 2 <= groups; g += 2) {
    group_vnni<T>(s, a, g, x, acc0);
    group_vnni<T>(s, a, g + 1, x, acc1);
  }
  if (g < groups) group_vnni<T>(s, a, g, x, acc0);
  for (int t = 0; t < T; ++t) out[t] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[t], acc1[t]));
}

// Q8_0 rows read in place (the tied embedding as the output projection: 262144 rows, too large
// to copy): each 34-byte block is its f16 scale and 32 int8 values, so no unpacking is needed.
template <int T>
ATTNKIT_VNNI_TARGET inline void q8_0_group_vnni(const uint8_t* row, int64_t g, const QuantRow* x, __m512* acc) {
  const uint8_t* blk = row + g * 34;
  const __m512i w = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2)));
  uint16_t h;
  std::memcpy(&h, blk, 2);
  const float dw = _cvtsh_ss(h);
  for (int t = 0; t < T; ++t) {
    const __m512i p = _mm512_dpwssd_epi32(_mm512_setzero_si512(), w, _mm512_loadu_si512(x[t].q + g * kGroup));
    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_set1_ps(dw * x[t].d[g]), acc[t]);
  }
}

template <int T>
ATTNKIT_VNNI_TARGET void dot_q8_0_vnni(const uint8_t* row, int64_t groups, const QuantRow* x, float* out) {
  __m512 acc0[T], acc1[T];
  for (int t = 0; t < T; ++t) acc0[t] = acc1[t] = _mm512_setzero_ps();
  int64_t g = 0;
  for (; g + 2 <= groups; g += 2) {
    q8_0_group_vnni<T>(row, g, x, acc0);
    q8_0_group_vnni<T>(row, g + 1, x, acc1);
  }
  if (g < groups) q8_0_group_vnni<T>(row, g, x, acc0);
  for (int t = 0; t < T; ++t) out[t] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[t], acc1[t]));
}

using DotFn = void (*)(const int8_t*, const float*, int64_t, const QuantRow*, float*);

// dots[isa][T - 1]
const DotFn kDots[3][4] = {
    {dot_scalar<1>, dot_scalar<2>, dot_scalar<3>, dot_scalar<4>},
    {dot_avx2<1>, dot_avx2<2>, dot_avx2<3>, dot_avx2<4>},
    {dot_vnni<1>, dot_vnni<2>, dot_vnni<3>, dot_vnni<4>},
};

Status check_args(TensorType type, int64_t block_elems, int64_t block_bytes, uint64_t row_bytes, int64_t rows,
                  int64_t cols, const uint8_t* w, const float* x, int64_t n, const float* y, int64_t ldy) {
  const std::string tn = gguf::tensor_type_name(type);
  if (rows < 0) return Status::invalid_argument("quant_matmul: rows " + std::to_string(rows) + " must be >= 0");
  if (n < 0) return Status::invalid_argument("quant_matmul: n " + std::to_string(n) + " must be >= 0");
  if (cols <= 0 || cols % block_elems != 0 || cols % kGroup != 0)
    return Status::invalid_argument("quant_matmul: cols " + std::to_string(cols) + " is not a positive multiple of the " + tn +
                                    " block size " + std::to_string(std::max<int64_t>(block_elems, kGroup)));
  if (row_bytes < static_cast<uint64_t>(cols / block_elems * block_bytes))
    return Status::invalid_argument("quant_matmul: row_bytes " + std::to_string(row_bytes) + " is less than a " + tn + " row of " +
                                    std::to_string(cols) + " values");
  if (ldy < rows) return Status::invalid_argument("quant_matmul: ldy " + std::to_string(ldy) + " is less than rows " + std::to_string(rows));
  if (rows > 0 && n > 0 && (w == nullptr || x == nullptr || y == nullptr))
    return Status::invalid_argument("quant_matmul: w, x or y is null");
  return Status::ok_status();
}

using Q8DotFn = void (*)(const uint8_t*, int64_t, const QuantRow*, float*);
const Q8DotFn kQ8Dots[4] = {dot_q8_0_vnni<1>, dot_q8_0_vnni<2>, dot_q8_0_vnni<3>, dot_q8_0_vnni<4>};

// The activations of one call, quantized once (int16 blocks of 32); the buffers are per thread and
// reused from call to call, so a decoded token allocates nothing here.
struct QuantActivations {
  std::vector<int16_t> q;
  std::vector<float> d, sum;
  std::vector<QuantRow> rows;

  void quantize(const float* x, int64_t n, int64_t cols, int threads) {
    const int64_t groups = cols / kGroup;
    q.resize(static_cast<size_t>(n * cols));
    d.resize(static_cast<size_t>(n * groups));
    sum.resize(static_cast<size_t>(n * groups));
    rows.resize(static_cast<size_t>(n));
    quantize_activations_int16(x, n, cols, threads, q.data(), d.data(), sum.data());
    for (int64_t t = 0; t < n; ++t) rows[static_cast<size_t>(t)] = {q.data() + t * cols, d.data() + t * groups, sum.data() + t * groups};
  }
};

QuantActivations& thread_activations() {
  static thread_local QuantActivations acts;
  return acts;
}

int current_isa() { return std::clamp(isa_flag().load(std::memory_order_relaxed), 0, 2); }

// y[t * ldy] for every token of one unpacked row (s, a, b as in the layout above).
inline void dot_row(int isa, const int8_t* s, const float* a, const float* b, int64_t groups, const QuantActivations& x,
                    float* y, int64_t ldy) {
  const int64_t n = static_cast<int64_t>(x.rows.size());
  float out[4];
  for (int64_t t = 0; t < n; t += 4) {
    const int T = static_cast<int>(std::min<int64_t>(4, n - t));
    kDots[isa][T - 1](s, a, groups, x.rows.data() + t, out);
    for (int u = 0; u < T; ++u) {
      float v = out[u];
      if (b != nullptr) {
        // The k-quant minimum: sum_g b_g * (d_g * sum of the block's q) over the row.
        const float* xs = x.rows[static_cast<size_t>(t + u)].sum;
        float m = 0.f;
        for (int64_t g = 0; g < groups; ++g) m += b[g] * xs[g];
        v -= m;
      }
      y[(t + u) * ldy] = v;
    }
  }
}

Status integer_matmul(const Format& f, TensorType type, const uint8_t* w, uint64_t row_bytes, int64_t rows, int64_t cols,
                      const float* x, int64_t n, float* y, int64_t ldy, int threads) {
  const int64_t groups = cols / kGroup;
  QuantActivations& xa = thread_activations();
  xa.quantize(x, n, cols, threads);
  const int isa = current_isa();
  if (type == TensorType::kQ8_0 && isa == static_cast<int>(QuantIsa::kAvx512Vnni)) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const uint8_t* row = w + static_cast<uint64_t>(r) * row_bytes;
      float out[4];
      for (int64_t t = 0; t < n; t += 4) {
        const int T = static_cast<int>(std::min<int64_t>(4, n - t));
        kQ8Dots[T - 1](row, groups, xa.rows.data() + t, out);
        for (int u = 0; u < T; ++u) y[(t + u) * ldy + r] = out[u];
      }
    }
    return Status::ok_status();
  }
  const int64_t blocks = cols / f.block_elems;
  const int64_t a_per_block = f.block_elems / 16, b_per_block = f.block_elems / kGroup;
  const auto unpack = isa >= static_cast<int>(QuantIsa::kAvx2) && f.unpack_avx2 != nullptr ? f.unpack_avx2 : f.unpack;
#pragma omp parallel num_threads(threads)
  {
    std::vector<int8_t> s(static_cast<size_t>(cols) + 64);
    std::vector<float> a(static_cast<size_t>(2 * groups)), b(static_cast<size_t>(groups));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const uint8_t* row = w + static_cast<uint64_t>(r) * row_bytes;
      for (int64_t k = 0; k < blocks; ++k)
        unpack(row + k * f.block_bytes, s.data() + k * f.block_elems, a.data() + k * a_per_block, b.data() + k * b_per_block);
      dot_row(isa, s.data(), a.data(), f.has_min ? b.data() : nullptr, groups, xa, y + r, ldy);
    }
  }
  return Status::ok_status();
}

// F32 / F16 / BF16 rows: converted to f32 and dotted in f32 (vectorized by the compiler).
Status float_matmul(TensorType type, const uint8_t* w, uint64_t row_bytes, int64_t rows, int64_t cols, const float* x,
                    int64_t n, float* y, int64_t ldy, int threads) {
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> row(static_cast<size_t>(cols));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const uint8_t* src = w + static_cast<uint64_t>(r) * row_bytes;
      if (type == TensorType::kF32) {
        std::memcpy(row.data(), src, static_cast<size_t>(cols) * 4);
      } else {
        for (int64_t i = 0; i < cols; ++i) {
          uint16_t h;
          std::memcpy(&h, src + 2 * i, 2);
          row[static_cast<size_t>(i)] = type == TensorType::kF16 ? f16_to_f32(h) : bf16_to_f32(h);
        }
      }
      for (int64_t t = 0; t < n; ++t) {
        const float* xt = x + t * cols;
        float acc = 0.f;
#pragma omp simd reduction(+ : acc)
        for (int64_t i = 0; i < cols; ++i) acc += row[static_cast<size_t>(i)] * xt[i];
        y[t * ldy + r] = acc;
      }
    }
  }
  return Status::ok_status();
}

bool is_float_type(TensorType t) { return t == TensorType::kF32 || t == TensorType::kF16 || t == TensorType::kBF16; }

}  // namespace

QuantIsa quant_isa() { return static_cast<QuantIsa>(isa_flag().load(std::memory_order_relaxed)); }

QuantIsa set_quant_isa(QuantIsa isa) {
  const int v = std::min(static_cast<int>(isa), static_cast<int>(cpu_isa()));
  return static_cast<QuantIsa>(isa_flag().exchange(v));
}

const char* quant_isa_name(QuantIsa isa) {
  switch (isa) {
    case QuantIsa::kAvx512Vnni: return "avx512vnni";
    case QuantIsa::kAvx2: return "avx2";
    default: return "scalar";
  }
}

bool quant_matmul_supports(TensorType type) { return integer_format(type) != nullptr || is_float_type(type); }

Status quant_matmul(TensorType type, const uint8_t* w, uint64_t row_bytes, int64_t rows, int64_t cols, const float* x,
                    int64_t n, float* y, int64_t ldy, int threads) {
  if (threads <= 0) threads = omp_get_max_threads();
  if (const Format* f = integer_format(type)) {
    ATTNKIT_RETURN_IF_ERROR(check_args(type, f->block_elems, f->block_bytes, row_bytes, rows, cols, w, x, n, y, ldy));
    if (rows == 0 || n == 0) return Status::ok_status();
    return integer_matmul(*f, type, w, row_bytes, rows, cols, x, n, y, ldy, threads);
  }
  if (is_float_type(type)) {
    ATTNKIT_RETURN_IF_ERROR(check_args(type, 1, type == TensorType::kF32 ? 4 : 2, row_bytes, rows, cols, w, x, n, y, ldy));
    if (rows == 0 || n == 0) return Status::ok_status();
    return float_matmul(type, w, row_bytes, rows, cols, x, n, y, ldy, threads);
  }
  return Status::unsupported("quant_matmul: weight type " + gguf::tensor_type_name(type) + " is not supported");
}

void quantize_activations_int16(const float* x, int64_t n, int64_t cols, int threads, int16_t* q, float* d, float* sum) {
  const int64_t groups = cols / kGroup;
  const auto row = current_isa() == static_cast<int>(QuantIsa::kAvx512Vnni) ? quantize_row_avx512 : quantize_row;
#pragma omp parallel for num_threads(threads) schedule(static) if (n > 1)
  for (int64_t t = 0; t < n; ++t) row(x + t * cols, cols, q + t * cols, d + t * groups, sum + t * groups);
}

uint64_t PackedRows::bytes() const { return s.size() + (a.size() + b.size()) * sizeof(float); }

Status pack_rows(TensorType type, const uint8_t* w, uint64_t row_bytes, int64_t rows, int64_t cols, int threads,
                 PackedRows* out) {
  const Format* f = integer_format(type);
  if (f == nullptr) return Status::unsupported("pack_rows: weight type " + gguf::tensor_type_name(type) + " is not an integer format");
  ATTNKIT_RETURN_IF_ERROR(check_args(type, f->block_elems, f->block_bytes, row_bytes, rows, cols, w, nullptr, 0, nullptr, rows));
  if (rows > 0 && w == nullptr) return Status::invalid_argument("pack_rows: w is null");
  if (threads <= 0) threads = omp_get_max_threads();
  const int64_t groups = cols / kGroup, blocks = cols / f->block_elems;
  const int64_t a_per_block = f->block_elems / 16, b_per_block = f->block_elems / kGroup;
  out->type = type;
  out->rows = rows;
  out->cols = cols;
  out->has_min = f->has_min;
  out->s.assign(static_cast<size_t>(rows * cols), 0);
  out->a.assign(static_cast<size_t>(rows * 2 * groups), 0.f);
  out->b.assign(f->has_min ? static_cast<size_t>(rows * groups) : 0, 0.f);
  const auto unpack = current_isa() >= static_cast<int>(QuantIsa::kAvx2) && f->unpack_avx2 != nullptr ? f->unpack_avx2 : f->unpack;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* row = w + static_cast<uint64_t>(r) * row_bytes;
    int8_t* s = out->s.data() + r * cols;
    float* a = out->a.data() + r * 2 * groups;
    float* b = f->has_min ? out->b.data() + r * groups : nullptr;
    for (int64_t k = 0; k < blocks; ++k)
      unpack(row + k * f->block_bytes, s + k * f->block_elems, a + k * a_per_block, b ? b + k * b_per_block : nullptr);
  }
  return Status::ok_status();
}

Status check_packed_stack(const char* fn, const PackedRows* const* parts, int n_parts, const float* x, int64_t n,
                          const float* y, int64_t ldy, int64_t* rows_out) {
  const std::string f = fn;
  if (n_parts <= 0) return Status::invalid_argument(f + ": n_parts " + std::to_string(n_parts) + " must be >= 1");
  const int64_t cols = parts[0]->cols;
  int64_t rows = 0;
  for (int k = 0; k < n_parts; ++k) {
    if (parts[k]->cols != cols)
      return Status::invalid_argument(f + ": part " + std::to_string(k) + " has cols " + std::to_string(parts[k]->cols) +
                                      ", expected " + std::to_string(cols) + " like part 0");
    rows += parts[k]->rows;
  }
  if (n < 0) return Status::invalid_argument(f + ": n " + std::to_string(n) + " must be >= 0");
  if (ldy < rows) return Status::invalid_argument(f + ": ldy " + std::to_string(ldy) + " is less than rows " + std::to_string(rows));
  if (rows > 0 && n > 0 && (x == nullptr || y == nullptr)) return Status::invalid_argument(f + ": x or y is null");
  *rows_out = rows;
  return Status::ok_status();
}

Status packed_matmul(const PackedRows* const* parts, int n_parts, const float* x, int64_t n, float* y, int64_t ldy,
                     int threads) {
  int64_t rows = 0;
  ATTNKIT_RETURN_IF_ERROR(check_packed_stack("packed_matmul", parts, n_parts, x, n, y, ldy, &rows));
  if (rows == 0 || n == 0) return Status::ok_status();
  const int64_t cols = parts[0]->cols;
  if (threads <= 0) threads = omp_get_max_threads();
  const int64_t groups = cols / kGroup;
  QuantActivations& xa = thread_activations();
  xa.quantize(x, n, cols, threads);
  const int isa = current_isa();
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    int k = 0;
    int64_t r0 = 0;
    while (r - r0 >= parts[k]->rows) r0 += parts[k++]->rows;
    const PackedRows& p = *parts[k];
    const int64_t i = r - r0;
    dot_row(isa, p.s.data() + i * cols, p.a.data() + i * 2 * groups, p.has_min ? p.b.data() + i * groups : nullptr, groups, xa,
            y + r, ldy);
  }
  return Status::ok_status();
}

void packed_dequantize(const PackedRows& p, int64_t r0, int64_t m, float* out) {
  const int64_t groups = p.cols / kGroup;
  for (int64_t r = 0; r < m; ++r) {
    const int8_t* s = p.s.data() + (r0 + r) * p.cols;
    const float* a = p.a.data() + (r0 + r) * 2 * groups;
    const float* b = p.has_min ? p.b.data() + (r0 + r) * groups : nullptr;
    float* o = out + r * p.cols;
    for (int64_t h = 0; h < 2 * groups; ++h) {
      const float ah = a[h], bh = b ? b[h / 2] : 0.f;
      for (int i = 0; i < 16; ++i) o[16 * h + i] = ah * static_cast<float>(s[16 * h + i]) - bh;
    }
  }
}

void quant_activation_error(const float* x, int64_t n, int64_t cols, float* err) {
  const int64_t groups = cols / kGroup;
  std::vector<int16_t> q(static_cast<size_t>(cols));
  std::vector<float> d(static_cast<size_t>(groups)), s(static_cast<size_t>(groups));
  for (int64_t t = 0; t < n; ++t) {
    quantize_row(x + t * cols, cols, q.data(), d.data(), s.data());
    for (int64_t i = 0; i < cols; ++i)
      err[t * cols + i] = std::fabs(x[t * cols + i] - d[static_cast<size_t>(i / kGroup)] * q[static_cast<size_t>(i)]);
  }
}

}  // namespace attnkit::model::internal
