// SIMD helpers of ACT's detection and correction (act.h), compiled per target by Highway.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "analysis/act_simd.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "hwy/contrib/math/math-inl.h"

#include <cmath>
#include <cstdint>

#include "analysis/act.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit {
namespace act_simd {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

float DotImpl(const float* HWY_RESTRICT a, const float* HWY_RESTRICT b, int64_t n) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  // Two accumulators hide the FMA latency at head_dim 64..256.
  auto acc0 = hn::Zero(d), acc1 = hn::Zero(d);
  int64_t i = 0;
  for (; i + 2 * N <= n; i += 2 * N) {
    acc0 = hn::MulAdd(hn::LoadU(d, a + i), hn::LoadU(d, b + i), acc0);
    acc1 = hn::MulAdd(hn::LoadU(d, a + i + N), hn::LoadU(d, b + i + N), acc1);
  }
  for (; i + N <= n; i += N) acc0 = hn::MulAdd(hn::LoadU(d, a + i), hn::LoadU(d, b + i), acc0);
  float s = hn::GetLane(hn::SumOfLanes(d, hn::Add(acc0, acc1)));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

void AddExpImpl(const float* HWY_RESTRICT s, int64_t n, float shift, float cap, float* HWY_RESTRICT acc) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const auto vs = hn::Set(d, shift);
  int64_t i = 0;
  if (cap > 0) {
    const auto vc = hn::Set(d, cap), inv = hn::Set(d, 1.0f / cap);
    for (; i + N <= n; i += N) {
      const auto x = hn::Mul(vc, hn::Tanh(d, hn::Mul(hn::LoadU(d, s + i), inv)));
      hn::StoreU(hn::Add(hn::LoadU(d, acc + i), hn::Exp(d, hn::Sub(x, vs))), d, acc + i);
    }
    for (; i < n; ++i) acc[i] += std::exp(cap * std::tanh(s[i] / cap) - shift);
    return;
  }
  for (; i + N <= n; i += N)
    hn::StoreU(hn::Add(hn::LoadU(d, acc + i), hn::Exp(d, hn::Sub(hn::LoadU(d, s + i), vs))), d, acc + i);
  for (; i < n; ++i) acc[i] += std::exp(s[i] - shift);
}

void RescaleRowImpl(float* HWY_RESTRICT o, int64_t dv, float keep, const float* HWY_RESTRICT coef,
                    const float* const* v, int64_t nv) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const auto vk = hn::Set(d, keep);
  int64_t t = 0;
  for (; t + N <= dv; t += N) {
    auto x = hn::Mul(vk, hn::LoadU(d, o + t));
    for (int64_t k = 0; k < nv; ++k) x = hn::MulAdd(hn::Set(d, coef[k]), hn::LoadU(d, v[k] + t), x);
    hn::StoreU(x, d, o + t);
  }
  for (; t < dv; ++t) {
    float x = keep * o[t];
    for (int64_t k = 0; k < nv; ++k) x += coef[k] * v[k][t];
    o[t] = x;
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace act_simd
}  // namespace attnkit
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attnkit {
namespace act_simd {
HWY_EXPORT(DotImpl);
HWY_EXPORT(AddExpImpl);
HWY_EXPORT(RescaleRowImpl);
}  // namespace act_simd

namespace analysis::act {
float dot(const float* a, const float* b, int64_t n) { return HWY_DYNAMIC_DISPATCH(act_simd::DotImpl)(a, b, n); }
void add_exp(const float* s, int64_t n, float shift, float cap, float* acc) {
  HWY_DYNAMIC_DISPATCH(act_simd::AddExpImpl)(s, n, shift, cap, acc);
}
void rescale_row(float* o, int64_t dv, float keep, const float* coef, const float* const* v, int64_t nv) {
  HWY_DYNAMIC_DISPATCH(act_simd::RescaleRowImpl)(o, dv, keep, coef, v, nv);
}
}  // namespace analysis::act
}  // namespace attnkit
#endif
