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

}  // namespace attnkit::core
