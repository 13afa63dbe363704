// core/bf16_dot.cc: see bf16_dot.h. Compiled for the base target; only the function body below is
// compiled for AVX512-BF16 (target attribute) and it is only reached when the CPU has it.

// GCC 12 reports its own _mm512_undefined_ps() inside the unpack intrinsics as uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "core/bf16_dot.h"

#include <immintrin.h>

#include <atomic>

namespace attnkit::core {
namespace {

bool cpu_has_bf16_dot() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512bf16");
}

std::atomic<bool>& enabled_flag() {
  static std::atomic<bool> flag{cpu_has_bf16_dot()};
  return flag;
}

}  // namespace

bool bf16_dot_enabled() { return enabled_flag().load(std::memory_order_relaxed); }

bool set_bf16_dot_enabled(bool on) { return enabled_flag().exchange(on && cpu_has_bf16_dot()); }

__attribute__((target("avx512f,avx512bw,avx512bf16"))) void bf16_dot_rows(const uint16_t* const* q, const float* mul,
                                                                           int M, const uint16_t* k, int64_t d,
                                                                           float* out) {
  int r = 0;
  for (; r + 4 <= M; r += 4) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t i = 0; i < d; i += 32) {
      const __m512bh kv = (__m512bh)_mm512_loadu_si512(k + i);
      a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(q[r] + i), kv);
      a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_loadu_si512(q[r + 1] + i), kv);
      a2 = _mm512_dpbf16_ps(a2, (__m512bh)_mm512_loadu_si512(q[r + 2] + i), kv);
      a3 = _mm512_dpbf16_ps(a3, (__m512bh)_mm512_loadu_si512(q[r + 3] + i), kv);
    }
    // Four horizontal sums at once: after two interleave rounds each 128-bit block holds partial
    // sums of rows r..r+3 side by side; then the four blocks are added.
    const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a0, a1), _mm512_unpackhi_ps(a0, a1));
    const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(a2, a3), _mm512_unpackhi_ps(a2, a3));
    const __m512d abd = _mm512_castps_pd(ab), cdd = _mm512_castps_pd(cd);
    const __m512 s = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(abd, cdd)),
                                   _mm512_castpd_ps(_mm512_unpackhi_pd(abd, cdd)));
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(s),
                                   _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(s), 1)));
    const __m128 x = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    _mm_storeu_ps(out + r, _mm_mul_ps(x, _mm_loadu_ps(mul + r)));
  }
  for (; r < M; ++r) {
    __m512 a = _mm512_setzero_ps();
    for (int64_t i = 0; i < d; i += 32)
      a = _mm512_dpbf16_ps(a, (__m512bh)_mm512_loadu_si512(q[r] + i), (__m512bh)_mm512_loadu_si512(k + i));
    out[r] = _mm512_reduce_add_ps(a) * mul[r];
  }
}

}  // namespace attnkit::core
