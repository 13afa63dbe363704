// Per-token operations of the Gemma forward pass (see model_ops.h).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "model/model_ops.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "hwy/contrib/math/math-inl.h"

#include <cmath>
#include <cstdint>

#include "core/vec_ops.h"
#include "model/model_ops.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit {
namespace model_internal {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

constexpr float kGeluC = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluA = 0.044715f;

void GeluMulImpl(const float* g, const float* u, float* out, int64_t n) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const auto c = hn::Set(d, kGeluC), a = hn::Set(d, kGeluA), half = hn::Set(d, 0.5f), one = hn::Set(d, 1.0f);
  int64_t i = 0;
  for (; i + N <= n; i += N) {
    const auto x = hn::LoadU(d, g + i);
    const auto inner = hn::Mul(c, hn::MulAdd(hn::Mul(a, x), hn::Mul(x, x), x));
    const auto gl = hn::Mul(hn::Mul(half, x), hn::Add(one, hn::Tanh(d, inner)));
    hn::StoreU(hn::Mul(gl, hn::LoadU(d, u + i)), d, out + i);
  }
  for (; i < n; ++i) {
    const float x = g[i];
    out[i] = 0.5f * x * (1.0f + std::tanh(kGeluC * (x + kGeluA * x * x * x))) * u[i];
  }
}

void RopeApplyImpl(float* v, int64_t n_heads, int64_t half, const float* cs, const float* sn) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  for (int64_t h = 0; h < n_heads; ++h) {
    float* p0 = v + h * 2 * half;
    float* p1 = p0 + half;
    int64_t i = 0;
    for (; i + N <= half; i += N) {
      const auto x0 = hn::LoadU(d, p0 + i), x1 = hn::LoadU(d, p1 + i);
      const auto c = hn::LoadU(d, cs + i), s = hn::LoadU(d, sn + i);
      hn::StoreU(hn::NegMulAdd(x1, s, hn::Mul(x0, c)), d, p0 + i);
      hn::StoreU(hn::MulAdd(x1, c, hn::Mul(x0, s)), d, p1 + i);
    }
    for (; i < half; ++i) {
      const float x0 = p0[i], x1 = p1[i];
      p0[i] = x0 * cs[i] - x1 * sn[i];
      p1[i] = x0 * sn[i] + x1 * cs[i];
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace model_internal
}  // namespace attnkit
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attnkit {
namespace model_internal {
HWY_EXPORT(GeluMulImpl);
HWY_EXPORT(RopeApplyImpl);
}  // namespace model_internal

namespace model::internal {

void gelu_tanh_mul(const float* g, const float* u, float* out, int64_t n) {
  HWY_DYNAMIC_DISPATCH(model_internal::GeluMulImpl)(g, u, out, n);
}

void rms_norm(const float* x, const float* w, int64_t n, float eps, float* y) {
  const double ss = core::sum_squares(x, n);
  const float r = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
  core::mul_vec(x, w, y, n);
  core::scale(y, r, y, n);
}

void rope_table(const double* inv_freq, int64_t half, int64_t pos0, int64_t n_pos, float* cos_out, float* sin_out) {
  for (int64_t t = 0; t < n_pos; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      const double a = static_cast<double>(pos0 + t) * inv_freq[i];
      cos_out[t * half + i] = static_cast<float>(std::cos(a));
      sin_out[t * half + i] = static_cast<float>(std::sin(a));
    }
  }
}

void rope_apply(float* v, int64_t n_heads, int64_t half, const float* cos_row, const float* sin_row) {
  HWY_DYNAMIC_DISPATCH(model_internal::RopeApplyImpl)(v, n_heads, half, cos_row, sin_row);
}

}  // namespace model::internal
}  // namespace attnkit
#endif
