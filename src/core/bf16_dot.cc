// core/bf16_dot.cc: see bf16_dot.h. Compiled for the base target; only the function body below is
// compiled for AVX512-BF16 (target attribute) and it is only reached when the CPU has it.

// GCC 12 reports its own _mm512_undefined_ps() inside the unpack intrinsics as uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include "core/bf16_dot.h"
#include "core/prefetch.h"

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

namespace {

#define ATTNKIT_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512bf16")))

// Per 128-bit block: [a0+a2, b0+b2, a1+a3, b1+b3] then the four row sums side by side, i.e. each
// block holds partial sums of rows 0..3 of one quarter of the lanes.
ATTNKIT_BF16_TARGET inline __m512 interleave_sums4(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
  const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a0, a1), _mm512_unpackhi_ps(a0, a1));
  const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(a2, a3), _mm512_unpackhi_ps(a2, a3));
  const __m512d abd = _mm512_castps_pd(ab), cdd = _mm512_castps_pd(cd);
  return _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(abd, cdd)), _mm512_castpd_ps(_mm512_unpackhi_pd(abd, cdd)));
}

// Sum of the four 128-bit blocks of s.
ATTNKIT_BF16_TARGET inline __m128 add_blocks(__m512 s) {
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(s),
                                 _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(s), 1)));
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

// One head of four rows against two keys' rows ka and kb: each query vector is loaded once for
// both keys, and eight accumulation chains are in flight. Each (row, key) score is summed in the
// same order as bf16_dot_rows sums it.
ATTNKIT_BF16_TARGET inline void dot_two_keys4(const Bf16ScoreHead& H, const uint16_t* ka, float* oa,
                                              const uint16_t* kb, float* ob, int64_t d) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
  for (int64_t i = 0; i < d; i += 32) {
    const __m512bh kva = (__m512bh)_mm512_loadu_si512(ka + i);
    const __m512bh kvb = (__m512bh)_mm512_loadu_si512(kb + i);
    const __m512bh q0 = (__m512bh)_mm512_loadu_si512(H.q[0] + i);
    a0 = _mm512_dpbf16_ps(a0, q0, kva);
    b0 = _mm512_dpbf16_ps(b0, q0, kvb);
    const __m512bh q1 = (__m512bh)_mm512_loadu_si512(H.q[1] + i);
    a1 = _mm512_dpbf16_ps(a1, q1, kva);
    b1 = _mm512_dpbf16_ps(b1, q1, kvb);
    const __m512bh q2 = (__m512bh)_mm512_loadu_si512(H.q[2] + i);
    a2 = _mm512_dpbf16_ps(a2, q2, kva);
    b2 = _mm512_dpbf16_ps(b2, q2, kvb);
    const __m512bh q3 = (__m512bh)_mm512_loadu_si512(H.q[3] + i);
    a3 = _mm512_dpbf16_ps(a3, q3, kva);
    b3 = _mm512_dpbf16_ps(b3, q3, kvb);
  }
  const __m512 sa = interleave_sums4(a0, a1, a2, a3), sb = interleave_sums4(b0, b1, b2, b3);
  // Blocks [A0 A1 B0 B1] + [A2 A3 B2 B3], then the two halves of each key: lanes 0..3 key a,
  // lanes 4..7 key b.
  const __m512 x = _mm512_add_ps(_mm512_shuffle_f32x4(sa, sb, 0x44), _mm512_shuffle_f32x4(sa, sb, 0xEE));
  const __m512 y = _mm512_add_ps(_mm512_shuffle_f32x4(x, x, 0x08), _mm512_shuffle_f32x4(x, x, 0x0D));
  const __m256 both = _mm512_castps512_ps256(y);
  const __m128 mul = _mm_loadu_ps(H.mul);
  _mm_storeu_ps(oa, _mm_mul_ps(_mm256_castps256_ps128(both), mul));
  _mm_storeu_ps(ob, _mm_mul_ps(_mm256_extractf128_ps(both, 1), mul));
}

// One head of four rows against four consecutive keys (key j's row at k + j * ks), scores stored
// packed: out[4 * j + r]. Sixteen accumulation chains; the sixteen row sums come out of one
// transposing reduction (two interleave rounds per key, then two rounds across 128-bit blocks)
// as one vector in the packed order, about 45 shuffles and adds instead of 56 for two two-key
// steps. Each score is summed in the same order as bf16_dot_rows sums it.
ATTNKIT_BF16_TARGET inline void dot_four_keys4(const Bf16ScoreHead& H, const uint16_t* k, int64_t ks, float* out,
                                               int64_t d) {
  __m512 a[4][4];  // [key][row]
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j)
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) a[j][r] = _mm512_setzero_ps();
  for (int64_t i = 0; i < d; i += 32) {
    __m512bh kv[4];
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) kv[j] = (__m512bh)_mm512_loadu_si512(k + j * ks + i);
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) {
      const __m512bh q = (__m512bh)_mm512_loadu_si512(H.q[r] + i);
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) a[j][r] = _mm512_dpbf16_ps(a[j][r], q, kv[j]);
    }
  }
  // Per key: each 128-bit block holds the four rows' partial sums of one quarter of the lanes.
  __m512 sk[4];
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) sk[j] = interleave_sums4(a[j][0], a[j][1], a[j][2], a[j][3]);
  // Blocks b0 + b2 and b1 + b3 of two keys side by side, then those two added: block j = key j.
  const __m512 u = _mm512_add_ps(_mm512_shuffle_f32x4(sk[0], sk[1], 0x44), _mm512_shuffle_f32x4(sk[0], sk[1], 0xEE));
  const __m512 v = _mm512_add_ps(_mm512_shuffle_f32x4(sk[2], sk[3], 0x44), _mm512_shuffle_f32x4(sk[2], sk[3], 0xEE));
  const __m512 w = _mm512_add_ps(_mm512_shuffle_f32x4(u, v, 0x88), _mm512_shuffle_f32x4(u, v, 0xDD));
  _mm512_storeu_ps(out, _mm512_mul_ps(w, _mm512_broadcast_f32x4(_mm_loadu_ps(H.mul))));
}

// A row of `bytes` from p: kLines > 0 says it is kLines lines, issued without a loop; 0 takes the
// length at run time. Always inlined, like every prefetch helper (see prefetch.h: GCC 12 deletes the
// calls to a plain inline function that only prefetches, and decode then waits on DRAM).
template <int kLines>
[[gnu::always_inline]] inline void prefetch_row(const char* p, int64_t bytes) {
  if constexpr (kLines > 0) {
#pragma GCC unroll 16
    for (int i = 0; i < kLines; ++i) __builtin_prefetch(p + 64 * i, 0, 2);
  } else {
    prefetch_bytes(p, bytes);
  }
}

// The prefetches of bf16_score_tile for key c of one head (see bf16_dot.h).
template <int kLines>
[[gnu::always_inline]] inline void prefetch_key(const Bf16ScoreHead& H, const Bf16ScoreTile& t, int64_t c) {
  if (H.prefetch_v) prefetch_row<kLines>(H.prefetch_v + c * t.v_stride_bytes, t.v_bytes);
  if (H.prefetch_k && c < t.n_prefetch_k) prefetch_row<kLines>(H.prefetch_k + (c + t.k_ahead) * t.k_stride_bytes, t.k_bytes);
}

// bf16_score_tile with K and V rows of kLines lines each (0: any length).
template <int kLines>
ATTNKIT_BF16_TARGET void score_tile(const Bf16ScoreHead* heads, int n, const Bf16ScoreTile& t) {
  bool all4 = true;
  for (int h = 0; h < n; ++h) all4 = all4 && heads[h].M == 4;
  int64_t c = 0;
  if (all4 && t.out_stride == 4) {
    // Packed scores: four keys per head step, stored as one vector.
    for (; c + 4 <= t.kc; c += 4) {
      const int64_t k0 = c * t.k_stride;
      for (int h = 0; h < n; ++h) {
        const Bf16ScoreHead& H = heads[h];
        prefetch_key<kLines>(H, t, c);
        prefetch_key<kLines>(H, t, c + 1);
        dot_four_keys4(H, H.k + k0, t.k_stride, H.out + 4 * c, t.d);
        prefetch_key<kLines>(H, t, c + 2);
        prefetch_key<kLines>(H, t, c + 3);
      }
    }
  }
  if (all4) {
    // Two keys per head step rather than two heads per key: each query vector is loaded once for
    // both keys, half the query loads. Each head issues its own prefetches, the first key's before
    // its scores and the second's after, so they are spread between the loads of the sweep rather
    // than issued for all heads in one burst (docs/design/decode.md).
    for (; c + 2 <= t.kc; c += 2) {
      const int64_t ka = c * t.k_stride, kb = ka + t.k_stride;
      for (int h = 0; h < n; ++h) {
        const Bf16ScoreHead& H = heads[h];
        prefetch_key<kLines>(H, t, c);
        dot_two_keys4(H, H.k + ka, H.out + c * t.out_stride, H.k + kb, H.out + (c + 1) * t.out_stride, t.d);
        prefetch_key<kLines>(H, t, c + 1);
      }
    }
  }
  for (; c < t.kc; ++c) {
    for (int h = 0; h < n; ++h) prefetch_key<kLines>(heads[h], t, c);
    for (int h = 0; h < n; ++h) {
      const Bf16ScoreHead& H = heads[h];
      bf16_dot_rows(H.q, H.mul, H.M, H.k + c * t.k_stride, t.d, H.out + c * t.out_stride);
    }
  }
}

}  // namespace

ATTNKIT_BF16_TARGET void bf16_score_tile(const Bf16ScoreHead* heads, int n, const Bf16ScoreTile& t) {
  // Rows of a whole number of lines get their prefetches unrolled: the sweep issues a few
  // prefetches per key between short runs of vdpbf16ps, and the run-time loop of prefetch_bytes
  // (counter, compare, branch per line) costs a visible share of it (docs/design/decode.md).
  if (t.k_bytes == t.v_bytes) {
    switch (t.k_bytes) {
      case 128: return score_tile<2>(heads, n, t);
      case 256: return score_tile<4>(heads, n, t);
      case 512: return score_tile<8>(heads, n, t);
      default: break;
    }
  }
  score_tile<0>(heads, n, t);
}

ATTNKIT_BF16_TARGET void bf16_dot_rows(const uint16_t* const* q, const float* mul, int M, const uint16_t* k,
                                         int64_t d, float* out) {
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
    _mm_storeu_ps(out + r, _mm_mul_ps(add_blocks(interleave_sums4(a0, a1, a2, a3)), _mm_loadu_ps(mul + r)));
  }
  for (; r < M; ++r) {
    __m512 a = _mm512_setzero_ps();
    for (int64_t i = 0; i < d; i += 32)
      a = _mm512_dpbf16_ps(a, (__m512bh)_mm512_loadu_si512(q[r] + i), (__m512bh)_mm512_loadu_si512(k + i));
    out[r] = _mm512_reduce_add_ps(a) * mul[r];
  }
}

}  // namespace attnkit::core
