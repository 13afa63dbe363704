// Internal SIMD helpers of the linear engine (Highway dynamic dispatch; see simd.cc).
#pragma once

#include <cstdint>

namespace attnkit {
namespace linear_internal {

// x = elu(x) + 1.
void elu1_inplace(float* x, int64_t n);
// x = exp(x - shift) * mul.
void exp_shift_inplace(float* x, int64_t n, float shift, float mul);
// out = x * exp(a - b); a or b may be null (= 0). out may alias x.
void mul_exp_diff(const float* x, const float* a, const float* b, float* out, int64_t n);

}  // namespace linear_internal
}  // namespace attnkit
