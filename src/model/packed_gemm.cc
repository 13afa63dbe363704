// Integer GEMM for prefill on packed rows (contract in quant_matmul.h).
//
// y[t, r] = sum_spans (a[r, span] d[t, group]) * I[r, t, span]  -  sum_groups b[r, g] sum[t, g]
// where I is the exact int32 sum of a span's int8 x int16 products. |s| <= 128 and |q| <= 32767,
// so a 32-value span sums to at most 2^27 in magnitude: int32 is exact.
//
// Why this shape: decode's kernel (one weight row against up to 4 tokens) reloads and re-widens
// every weight group for each group of 4 tokens and reduces each token's vector horizontally; for
// 512 tokens that is far from the multiply rate. Here one weight vector (16 rows x one int16 pair)
// feeds T tokens from registers and one token pair, broadcast from memory, feeds 2 weight
// vectors, so the inner loop is almost only vpdpwssd (2 T per 2 loads + T broadcasts). The f32
// flush (convert, scale product, FMA) costs 3 instructions per 8 or 16 vpdpwssd of a span.
#include <immintrin.h>
#include <omp.h>

// GCC 12's AVX-512 headers pass _mm512_undefined_*() as the unused merge source of unmasked
// conversions and shifts, which -Wmaybe-uninitialized reports at every inlined use (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "model/quant_matmul.h"

namespace attnkit::model::internal {
namespace {

#define ATTNKIT_AVX2_TARGET __attribute__((target("avx2,fma,f16c")))
#define ATTNKIT_VNNI_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))

constexpr int64_t kGroup = 32;
constexpr int64_t kPanel = 32;  // rows a thread widens at a time: 2 zmm or 4 ymm of rows
constexpr int64_t kPairStride = 2 * kPanel;  // int16 values per column pair of a panel

// One panel of rows widened for the micro-kernels.
struct PanelTile {
  std::vector<int16_t> w;  // [cols / 2][32 rows][2]
  std::vector<float> a;    // [spans][32]: the weight scale of each span (0 past the last row)
  std::vector<float> b;    // [groups][32]: the k-quant minimum of each group (empty without)
};

int span_of(const PackedRows& p) { return p.type == gguf::TensorType::kQ6_K ? 16 : 32; }

// Scales and minima of rows [r0, r0 + m) of p into the tile's transposed layout.
void fill_scales(const PackedRows& p, int64_t r0, int64_t m, int span, PanelTile* tile) {
  const int64_t groups = p.cols / kGroup, spans = p.cols / span, per = span / 16;
  tile->a.assign(static_cast<size_t>(spans * kPanel), 0.f);
  tile->b.assign(p.has_min ? static_cast<size_t>(groups * kPanel) : 0, 0.f);
  for (int64_t r = 0; r < m; ++r) {
    const float* a = p.a.data() + (r0 + r) * 2 * groups;
    for (int64_t h = 0; h < spans; ++h) tile->a[static_cast<size_t>(h * kPanel + r)] = a[h * per];
    if (p.has_min) {
      const float* b = p.b.data() + (r0 + r) * groups;
      for (int64_t g = 0; g < groups; ++g) tile->b[static_cast<size_t>(g * kPanel + r)] = b[g];
    }
  }
}

// Portable widening (the AVX2 path): value k of row r goes to w[(k / 2) 64 + 2 r + k % 2].
void widen_panel(const int8_t* s, int64_t cols, int64_t m, int16_t* w) {
  std::fill(w, w + cols / 2 * kPairStride, int16_t{0});
  for (int64_t r = 0; r < m; ++r)
    for (int64_t k = 0; k < cols; ++k) w[(k / 2) * kPairStride + 2 * r + (k & 1)] = s[r * cols + k];
}

// AVX-512: one gather reads 4 int8 values (2 column pairs) from each of 16 rows; byte shifts
// sign-extend them and two word blends interleave them into the pair layout.
ATTNKIT_VNNI_TARGET void widen_panel_vnni(const int8_t* s, int64_t cols, int64_t m, int16_t* w) {
  const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                         _mm512_set1_epi32(static_cast<int>(cols)));
  for (int64_t j = 0; j < 2; ++j) {
    const int64_t here = std::clamp<int64_t>(m - 16 * j, 0, 16);
    const __mmask16 mask = static_cast<__mmask16>((1u << here) - 1u);
    const int8_t* base = s + 16 * j * cols;
    for (int64_t k4 = 0; k4 < cols / 4; ++k4) {
      const __m512i v = here == 0 ? _mm512_setzero_si512()
                                  : _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), mask, idx, base + 4 * k4, 1);
      const __m512i lo = _mm512_srai_epi16(_mm512_slli_epi16(v, 8), 8);  // words: b0, b2 of each row
      const __m512i hi = _mm512_srai_epi16(v, 8);                        // words: b1, b3
      const __m512i p0 = _mm512_mask_blend_epi16(0xAAAAAAAAu, lo, _mm512_slli_epi32(hi, 16));
      const __m512i p1 = _mm512_mask_blend_epi16(0x55555555u, hi, _mm512_srli_epi32(lo, 16));
      _mm512_storeu_si512(w + (2 * k4) * kPairStride + 16 * j * 2, p0);
      _mm512_storeu_si512(w + (2 * k4 + 1) * kPairStride + 16 * j * 2, p1);
    }
  }
}

inline int32_t load_pair(const int16_t* q) {
  int32_t v;
  std::memcpy(&v, q, 4);
  return v;
}

// Activations of one call: int16 [n, cols], scales and scaled sums [n, groups].
struct Acts {
  const int16_t* q;
  const float* d;
  const float* sum;
  int64_t cols, groups;
};

// T tokens x 32 rows (two zmm of 16 rows). y points at token 0, row 0 of the panel.
template <int kSpan, int T>
ATTNKIT_VNNI_TARGET void kernel_vnni(const PanelTile& tile, const Acts& x, int64_t t0, int64_t m, float* y, int64_t ldy) {
  constexpr int64_t kSteps = kSpan / 2;
  const int64_t spans = x.cols / kSpan;
  const int16_t* q[T];
  const float* d[T];
  const float* sm[T];
  #pragma GCC unroll 16
  for (int t = 0; t < T; ++t) {
    q[t] = x.q + (t0 + t) * x.cols;
    d[t] = x.d + (t0 + t) * x.groups;
    sm[t] = x.sum + (t0 + t) * x.groups;
  }
  const bool has_min = !tile.b.empty();
  __m512 f0[T], f1[T];
  #pragma GCC unroll 16
  for (int t = 0; t < T; ++t) f0[t] = f1[t] = _mm512_setzero_ps();
  const int16_t* w = tile.w.data();
  for (int64_t h = 0; h < spans; ++h) {
    __m512i i0[T], i1[T];
    #pragma GCC unroll 16
    for (int t = 0; t < T; ++t) i0[t] = i1[t] = _mm512_setzero_si512();
    #pragma GCC unroll 16
    for (int64_t k = 0; k < kSteps; ++k) {
      const int64_t c = (h * kSteps + k);
      const __m512i w0 = _mm512_loadu_si512(w + c * kPairStride);
      const __m512i w1 = _mm512_loadu_si512(w + c * kPairStride + 32);
      #pragma GCC unroll 16
      for (int t = 0; t < T; ++t) {
        const __m512i b = _mm512_set1_epi32(load_pair(q[t] + 2 * c));
        i0[t] = _mm512_dpwssd_epi32(i0[t], w0, b);
        i1[t] = _mm512_dpwssd_epi32(i1[t], w1, b);
      }
    }
    const int64_t g = h * kSpan / kGroup;
    const __m512 a0 = _mm512_loadu_ps(tile.a.data() + h * kPanel), a1 = _mm512_loadu_ps(tile.a.data() + h * kPanel + 16);
    #pragma GCC unroll 16
    for (int t = 0; t < T; ++t) {
      const __m512 dv = _mm512_set1_ps(d[t][g]);
      f0[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i0[t]), _mm512_mul_ps(a0, dv), f0[t]);
      f1[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i1[t]), _mm512_mul_ps(a1, dv), f1[t]);
    }
    if (has_min && ((h + 1) * kSpan) % kGroup == 0) {
      const __m512 b0 = _mm512_loadu_ps(tile.b.data() + g * kPanel), b1 = _mm512_loadu_ps(tile.b.data() + g * kPanel + 16);
      #pragma GCC unroll 16
      for (int t = 0; t < T; ++t) {
        const __m512 sv = _mm512_set1_ps(sm[t][g]);
        f0[t] = _mm512_fnmadd_ps(b0, sv, f0[t]);
        f1[t] = _mm512_fnmadd_ps(b1, sv, f1[t]);
      }
    }
  }
  const __mmask16 k0 = static_cast<__mmask16>((1u << std::min<int64_t>(m, 16)) - 1u);
  const __mmask16 k1 = static_cast<__mmask16>((1u << std::clamp<int64_t>(m - 16, 0, 16)) - 1u);
  #pragma GCC unroll 16
  for (int t = 0; t < T; ++t) {
    float* yt = y + (t0 + t) * ldy;
    _mm512_mask_storeu_ps(yt, k0, f0[t]);
    _mm512_mask_storeu_ps(yt + 16, k1, f1[t]);
  }
}

// AVX2: T tokens x 16 rows (two ymm of 8) at row offset 16 j of the panel.
template <int kSpan, int T>
ATTNKIT_AVX2_TARGET void kernel_avx2_half(const PanelTile& tile, int64_t j, const Acts& x, int64_t t0, int64_t m, float* y,
                                          int64_t ldy) {
  constexpr int64_t kSteps = kSpan / 2;
  const int64_t spans = x.cols / kSpan;
  const bool has_min = !tile.b.empty();
  __m256 f0[T], f1[T];
  #pragma GCC unroll 16
  for (int t = 0; t < T; ++t) f0[t] = f1[t] = _mm256_setzero_ps();
  const int16_t* w = tile.w.data() + 32 * j;
  const float* ta = tile.a.data() + 16 * j;
  const float* tb = has_min ? tile.b.data() + 16 * j : nullptr;
  for (int64_t h = 0; h < spans; ++h) {
    __m256i i0[T], i1[T];
    #pragma GCC unroll 16
    for (int t = 0; t < T; ++t) i0[t] = i1[t] = _mm256_setzero_si256();
    #pragma GCC unroll 16
    for (int64_t k = 0; k < kSteps; ++k) {
      const int64_t c = h * kSteps + k;
      const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + c * kPairStride));
      const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + c * kPairStride + 16));
      #pragma GCC unroll 16
      for (int t = 0; t < T; ++t) {
        const __m256i b = _mm256_set1_epi32(load_pair(x.q + (t0 + t) * x.cols + 2 * c));
        i0[t] = _mm256_add_epi32(i0[t], _mm256_madd_epi16(w0, b));
        i1[t] = _mm256_add_epi32(i1[t], _mm256_madd_epi16(w1, b));
      }
    }
    const int64_t g = h * kSpan / kGroup;
    const __m256 a0 = _mm256_loadu_ps(ta + h * kPanel), a1 = _mm256_loadu_ps(ta + h * kPanel + 8);
    #pragma GCC unroll 16
    for (int t = 0; t < T; ++t) {
      const __m256 dv = _mm256_set1_ps(x.d[(t0 + t) * x.groups + g]);
      f0[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i0[t]), _mm256_mul_ps(a0, dv), f0[t]);
      f1[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i1[t]), _mm256_mul_ps(a1, dv), f1[t]);
    }
    if (has_min && ((h + 1) * kSpan) % kGroup == 0) {
      const __m256 b0 = _mm256_loadu_ps(tb + g * kPanel), b1 = _mm256_loadu_ps(tb + g * kPanel + 8);
      #pragma GCC unroll 16
      for (int t = 0; t < T; ++t) {
        const __m256 sv = _mm256_set1_ps(x.sum[(t0 + t) * x.groups + g]);
        f0[t] = _mm256_fnmadd_ps(b0, sv, f0[t]);
        f1[t] = _mm256_fnmadd_ps(b1, sv, f1[t]);
      }
    }
  }
  const int64_t here = std::clamp<int64_t>(m - 16 * j, 0, 16);
  #pragma GCC unroll 16
  for (int t = 0; t < T; ++t) {
    float* yt = y + (t0 + t) * ldy + 16 * j;
    if (here == 16) {
      _mm256_storeu_ps(yt, f0[t]);
      _mm256_storeu_ps(yt + 8, f1[t]);
    } else {
      alignas(32) float buf[16];
      _mm256_store_ps(buf, f0[t]);
      _mm256_store_ps(buf + 8, f1[t]);
      std::memcpy(yt, buf, static_cast<size_t>(here) * sizeof(float));
    }
  }
}

template <int kSpan, int T>
ATTNKIT_AVX2_TARGET void kernel_avx2(const PanelTile& tile, const Acts& x, int64_t t0, int64_t m, float* y, int64_t ldy) {
  kernel_avx2_half<kSpan, T>(tile, 0, x, t0, m, y, ldy);
  if (m > 16) kernel_avx2_half<kSpan, T>(tile, 1, x, t0, m, y, ldy);
}

using KernelFn = void (*)(const PanelTile&, const Acts&, int64_t, int64_t, float*, int64_t);

// Tokens per micro-kernel call: 6 on AVX-512 (24 accumulators of 32 zmm), 4 on AVX2 (16 ymm).
constexpr int kTokensVnni = 6, kTokensAvx2 = 4;

template <int kSpan, int... Ts>
constexpr std::array<KernelFn, sizeof...(Ts)> vnni_table(std::integer_sequence<int, Ts...>) {
  return {kernel_vnni<kSpan, Ts + 1>...};
}
template <int kSpan, int... Ts>
constexpr std::array<KernelFn, sizeof...(Ts)> avx2_table(std::integer_sequence<int, Ts...>) {
  return {kernel_avx2<kSpan, Ts + 1>...};
}

// [span 16, span 32][T - 1]
const std::array<KernelFn, kTokensVnni> kVnni[2] = {vnni_table<16>(std::make_integer_sequence<int, kTokensVnni>{}),
                                                    vnni_table<32>(std::make_integer_sequence<int, kTokensVnni>{})};
const std::array<KernelFn, kTokensAvx2> kAvx2[2] = {avx2_table<16>(std::make_integer_sequence<int, kTokensAvx2>{}),
                                                    avx2_table<32>(std::make_integer_sequence<int, kTokensAvx2>{})};

struct Panel {
  const PackedRows* p;
  int64_t r0, m, ycol;
};

struct GemmBuffers {
  std::vector<int16_t> q;
  std::vector<float> d, sum;
  std::vector<Panel> panels;
};

PrefillGemm initial_prefill_gemm() {
  const char* env = std::getenv("ATTNKIT_PREFILL_GEMM");
  return env != nullptr && std::string(env) == "sgemm" ? PrefillGemm::kSgemm : PrefillGemm::kInteger;
}

std::atomic<int>& prefill_flag() {
  static std::atomic<int> flag{static_cast<int>(initial_prefill_gemm())};
  return flag;
}

}  // namespace

PrefillGemm prefill_gemm() { return static_cast<PrefillGemm>(prefill_flag().load(std::memory_order_relaxed)); }

PrefillGemm set_prefill_gemm(PrefillGemm g) { return static_cast<PrefillGemm>(prefill_flag().exchange(static_cast<int>(g))); }

Status packed_gemm(const PackedRows* const* parts, int n_parts, const float* x, int64_t n, float* y, int64_t ldy,
                   int threads) {
  const QuantIsa isa = quant_isa();
  if (isa == QuantIsa::kScalar) return packed_matmul(parts, n_parts, x, n, y, ldy, threads);
  int64_t rows = 0;
  ATTNKIT_RETURN_IF_ERROR(check_packed_stack("packed_gemm", parts, n_parts, x, n, y, ldy, &rows));
  if (rows == 0 || n == 0) return Status::ok_status();
  const int64_t cols = parts[0]->cols;
  if (threads <= 0) threads = omp_get_max_threads();

  static thread_local GemmBuffers buf;
  const int64_t groups = cols / kGroup;
  buf.q.resize(static_cast<size_t>(n * cols));
  buf.d.resize(static_cast<size_t>(n * groups));
  buf.sum.resize(static_cast<size_t>(n * groups));
  quantize_activations_int16(x, n, cols, threads, buf.q.data(), buf.d.data(), buf.sum.data());
  const Acts acts{buf.q.data(), buf.d.data(), buf.sum.data(), cols, groups};

  buf.panels.clear();
  int64_t ycol = 0;
  for (int k = 0; k < n_parts; ++k) {
    for (int64_t r0 = 0; r0 < parts[k]->rows; r0 += kPanel)
      buf.panels.push_back({parts[k], r0, std::min(kPanel, parts[k]->rows - r0), ycol + r0});
    ycol += parts[k]->rows;
  }
  const Panel* panels = buf.panels.data();
  const int64_t n_panels = static_cast<int64_t>(buf.panels.size());
  const bool vnni = isa == QuantIsa::kAvx512Vnni;
  const int64_t tmax = vnni ? kTokensVnni : kTokensAvx2;
  // Contiguous runs of panels per thread: each thread writes its own columns of y.
#pragma omp parallel num_threads(threads)
  {
    static thread_local PanelTile tile;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n_panels; ++i) {
      const Panel& pn = panels[i];
      const int span = span_of(*pn.p);
      tile.w.resize(static_cast<size_t>(cols / 2 * kPairStride));
      const int8_t* s = pn.p->s.data() + pn.r0 * cols;
      if (vnni)
        widen_panel_vnni(s, cols, pn.m, tile.w.data());
      else
        widen_panel(s, cols, pn.m, tile.w.data());
      fill_scales(*pn.p, pn.r0, pn.m, span, &tile);
      const int si = span == 32 ? 1 : 0;
      for (int64_t t0 = 0; t0 < n; t0 += tmax) {
        const int64_t T = std::min(tmax, n - t0);
        const KernelFn fn = vnni ? kVnni[si][static_cast<size_t>(T - 1)] : kAvx2[si][static_cast<size_t>(T - 1)];
        fn(tile, acts, t0, pn.m, y + pn.ycol, ldy);
      }
    }
  }
  return Status::ok_status();
}

}  // namespace attnkit::model::internal
