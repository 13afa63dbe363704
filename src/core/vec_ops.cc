// Small f32 vector operations shared above core (see vec_ops.h).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "core/vec_ops.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

#include <cstdint>

#include "core/vec_ops.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit {
namespace core_vec {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

void MulVecImpl(const float* x, const float* HWY_RESTRICT s, float* out, int64_t n) {  // out may alias x
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  int64_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(hn::Mul(hn::LoadU(d, x + i), hn::LoadU(d, s + i)), d, out + i);
  for (; i < n; ++i) out[i] = x[i] * s[i];
}

void ScaleImpl(const float* x, float a, float* out, int64_t n) {  // out may alias x
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const auto av = hn::Set(d, a);
  int64_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(hn::Mul(hn::LoadU(d, x + i), av), d, out + i);
  for (; i < n; ++i) out[i] = x[i] * a;
}

double SumSquaresImpl(const float* HWY_RESTRICT x, int64_t n) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  // Each lane sums n / N squares in f32 (a few dozen terms at the widths used: relative error
  // ~1e-6, far below what a normalization needs); the lanes and the tail are summed in double.
  auto acc = hn::Zero(d);
  int64_t i = 0;
  for (; i + N <= n; i += N) {
    const auto v = hn::LoadU(d, x + i);
    acc = hn::MulAdd(v, v, acc);
  }
  double s = static_cast<double>(hn::GetLane(hn::SumOfLanes(d, acc)));
  for (; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
  return s;
}

}  // namespace HWY_NAMESPACE
}  // namespace core_vec
}  // namespace attnkit
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attnkit {
namespace core_vec {
HWY_EXPORT(MulVecImpl);
HWY_EXPORT(ScaleImpl);
HWY_EXPORT(SumSquaresImpl);
}  // namespace core_vec

namespace core {
void mul_vec(const float* x, const float* s, float* out, int64_t n) { HWY_DYNAMIC_DISPATCH(core_vec::MulVecImpl)(x, s, out, n); }
void scale(const float* x, float a, float* out, int64_t n) { HWY_DYNAMIC_DISPATCH(core_vec::ScaleImpl)(x, a, out, n); }
double sum_squares(const float* x, int64_t n) { return HWY_DYNAMIC_DISPATCH(core_vec::SumSquaresImpl)(x, n); }
}  // namespace core
}  // namespace attnkit
#endif
