// Internal SIMD helpers of the linear engine (Highway dynamic dispatch; see simd.cc).
#pragma once

#include <cstdint>

#include "core/vec_ops.h"

namespace attnkit {
namespace linear_internal {

// The elementwise products and the sum of squares are core's (shared with the model's RMSNorm).
using core::mul_vec;
using core::scale;
using core::sum_squares;

// x = elu(x) + 1.
void elu1_inplace(float* x, int64_t n);
// x = exp(x - shift) * mul.
void exp_shift_inplace(float* x, int64_t n, float shift, float mul);
// out = x * exp(a - b); a or b may be null (= 0). out may alias x.
void mul_exp_diff(const float* x, const float* a, const float* b, float* out, int64_t n);
// out = 1 - e^g (HGRN2's input gate from its log forget gate g <= 0; Expm1 keeps small g exact).
void one_minus_exp(const float* g, float* out, int64_t n);
// With e = e^b: qd = q * e and kr = k / e (one exp for both sides of the factorized pairwise
// decay e^{b_i} e^{-b_j}; the caller keeps b >= -kFactorLimit so 1/e stays finite).
void exp_pair(const float* q, const float* k, const float* b, float* qd, float* kr, int64_t n);
// Forward substitution U <- (I + L)^{-1} U, L the strictly lower triangle of M (n x n, rows ldm
// apart; the diagonal and upper triangle are not read), U n x m with rows ldu apart.
void unit_lower_solve(const float* M, int64_t ldm, float* U, int64_t ldu, int64_t n, int64_t m);

}  // namespace linear_internal
}  // namespace attnkit
