// core/bf16_dot.h: bf16 dot products through the AVX512-BF16 instruction vdpbf16ps, which
// multiplies pairs of bf16 values exactly and accumulates them into f32 lanes. Highway 1.0.3 (the
// version Debian 12 ships) has no operation for it, so this file selects it at run time on its own:
// bf16_dot_enabled() is true only when the CPU reports avx512bf16 (and avx512bw).
#pragma once

#include <cstdint>

namespace attnkit::core {

// Whether bf16_dot_rows may be called (CPU support and not switched off).
bool bf16_dot_enabled();
// Switches the path off (false) or back on where the CPU has it (true); for tests that compare
// both paths. Returns the previous setting.
bool set_bf16_dot_enabled(bool on);

// out[r] = mul[r] * sum_i q[r][i] * k[i] for r < M, i < d; d must be a multiple of 32.
// Products of two bf16 values are exact in f32; the sums are f32, with inputs and results that
// are f32 denormals treated as zero (the instruction's rounding mode).
void bf16_dot_rows(const uint16_t* const* q, const float* mul, int M, const uint16_t* k, int64_t d, float* out);

// One kv head's part of a decode tile for bf16_score_tile: M query rows against the tile's keys.
struct Bf16ScoreHead {
  const uint16_t* const* q;  // M raw bf16 query rows of d elements
  const float* mul;          // M logit multipliers
  int M;                     // 1..8 rows
  const uint16_t* k;         // key row of the tile's first key; key c at k + c * k_stride
  float* out;                // scores of key c at out + c * out_stride, M of them
  const char* prefetch_k;    // nullptr, or K row to prefetch ahead for key c at + c * k_stride_bytes
  const char* prefetch_v;    // nullptr, or V row to prefetch for key c at + c * v_stride_bytes
};

// Scores of a decode tile of kc keys for n heads, key-major, two positions per step: every head's
// K rows at the two positions (the rows of a position are adjacent in BSHD memory) are read in one
// sweep. When all heads have 4 rows, each head scores both keys in one pass, so each query vector
// is loaded once for two keys and eight accumulation chains are in flight; otherwise, and for an
// odd last key, heads are scored one key at a time. Prefetches cover the K rows of key
// c + k_ahead for c < n_prefetch_k, and the V rows of key c (k_bytes and v_bytes long), issued
// for both positions of a step before its scores. d must be a multiple of 32.
struct Bf16ScoreTile {
  int64_t kc, d;
  int64_t k_stride;        // elements between consecutive keys' K rows
  int64_t out_stride;      // floats between consecutive keys' scores
  int64_t k_stride_bytes, v_stride_bytes, k_bytes, v_bytes;
  int64_t k_ahead, n_prefetch_k;
};
void bf16_score_tile(const Bf16ScoreHead* heads, int n, const Bf16ScoreTile& tile);

}  // namespace attnkit::core
