// Internal: the per-token operations of the Gemma forward pass around the matrix products
// (src/model/model_ops.cc; Highway, compiled for every target and dispatched at run time).
#pragma once

#include <cstdint>
#include <vector>

namespace attnkit::model::internal {

// out[i] = gelu_tanh(g[i]) * u[i], gelu_tanh(x) = x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
// (Hendrycks & Gimpel 2016, the approximation Gemma is trained with). tanh is Highway's vector
// tanh (a few ulp in f32); out may alias g or u.
void gelu_tanh_mul(const float* g, const float* u, float* out, int64_t n);

// Gemma RMSNorm y = x / sqrt(mean(x^2) + eps) * w. The sum of squares runs in f32 vector lanes
// (core::sum_squares: each lane sums n / lanes terms, the lanes are added as a tree), so
// its relative error is below (n / lanes + log2(lanes) + 1) 2^-24: about 2e-6 at n = 640 on 16
// lanes, and the result is within a few f32 ulp of the f64-normalized one. y may alias x.
void rms_norm(const float* x, const float* w, int64_t n, float eps, float* y);

// cos / sin of the RoPE angles (pos0 + t) * inv_freq[i] for t < n_pos, i < half, row-major
// [n_pos, half]. The angle is formed and evaluated in f64 and rounded once, so every entry is the
// f32 nearest the true value (error <= 2^-25 absolute) at any position below 2^31: there is no
// drift with position, unlike an f32 angle or a rotation recurrence.
void rope_table(const double* inv_freq, int64_t half, int64_t pos0, int64_t n_pos, float* cos_out, float* sin_out);

// NeoX rotation of the two halves of each of n_heads head vectors of head_dim = 2 * half values:
// (x_i, x_{i+half}) -> (x_i c_i - x_{i+half} s_i, x_i s_i + x_{i+half} c_i) with c, s one row of
// rope_table.
void rope_apply(float* v, int64_t n_heads, int64_t half, const float* cos_row, const float* sin_row);

}  // namespace attnkit::model::internal
