// core/vec_ops.h: small f32 vector operations shared by the layers above core (the linear engine's
// feature maps and decays, the model's RMSNorm); Highway, compiled per target and dispatched at
// run time (vec_ops.cc).
#pragma once

#include <cstdint>

namespace attnkit::core {

// out = x * s elementwise (s a vector); out may alias x.
void mul_vec(const float* x, const float* s, float* out, int64_t n);
// out = x * a (a scalar); out may alias x.
void scale(const float* x, float a, float* out, int64_t n);
// sum of x_i^2: each f32 vector lane sums n / lanes squares, the lanes are added as a tree
// (relative error below (n / lanes + log2(lanes) + 1) 2^-24) and the tail in double.
double sum_squares(const float* x, int64_t n);

}  // namespace attnkit::core
