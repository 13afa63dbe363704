// SIMD helpers of the linear engine (Highway, compiled for every target, dispatched at run time).
// The exponentials of the feature maps (elu+1, Performer, LLN) and of the per-feature decays (GLA)
// dominated the non-GEMM time when they went through scalar libm expf.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "linear/simd.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "hwy/contrib/math/math-inl.h"

#include <cmath>
#include <cstdint>

#include "linear/simd.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit {
namespace linear_internal {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

void Elu1Impl(float* HWY_RESTRICT x, int64_t n) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const auto one = hn::Set(d, 1.0f), zero = hn::Zero(d);
  int64_t i = 0;
  for (; i + N <= n; i += N) {
    const auto v = hn::LoadU(d, x + i);
    // exp of the clamped value: positive lanes take v + 1 and must not overflow exp.
    const auto e = hn::Exp(d, hn::Min(v, zero));
    hn::StoreU(hn::IfThenElse(hn::Gt(v, zero), hn::Add(v, one), e), d, x + i);
  }
  for (; i < n; ++i) x[i] = x[i] > 0 ? x[i] + 1.0f : std::exp(x[i]);
}

void ExpShiftImpl(float* HWY_RESTRICT x, int64_t n, float shift, float mul) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const auto s = hn::Set(d, shift), m = hn::Set(d, mul);
  int64_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(hn::Mul(hn::Exp(d, hn::Sub(hn::LoadU(d, x + i), s)), m), d, x + i);
  for (; i < n; ++i) x[i] = std::exp(x[i] - shift) * mul;
}

void MulExpDiffImpl(const float* x, const float* HWY_RESTRICT a, const float* HWY_RESTRICT b, float* out,
                    int64_t n) {  // out may alias x
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  int64_t i = 0;
  for (; i + N <= n; i += N) {
    const auto av = a ? hn::LoadU(d, a + i) : hn::Zero(d);
    const auto bv = b ? hn::LoadU(d, b + i) : hn::Zero(d);
    hn::StoreU(hn::Mul(hn::LoadU(d, x + i), hn::Exp(d, hn::Sub(av, bv))), d, out + i);
  }
  for (; i < n; ++i) out[i] = x[i] * std::exp((a ? a[i] : 0.0f) - (b ? b[i] : 0.0f));
}

void OneMinusExpImpl(const float* HWY_RESTRICT g, float* HWY_RESTRICT out, int64_t n) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  int64_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(hn::Neg(hn::Expm1(d, hn::LoadU(d, g + i))), d, out + i);
  for (; i < n; ++i) out[i] = -std::expm1(g[i]);
}

void ExpPairImpl(const float* HWY_RESTRICT q, const float* HWY_RESTRICT k, const float* HWY_RESTRICT b,
                 float* HWY_RESTRICT qd, float* HWY_RESTRICT kr, int64_t n) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  int64_t i = 0;
  for (; i + N <= n; i += N) {
    const auto e = hn::Exp(d, hn::LoadU(d, b + i));
    hn::StoreU(hn::Mul(hn::LoadU(d, q + i), e), d, qd + i);
    hn::StoreU(hn::Div(hn::LoadU(d, k + i), e), d, kr + i);
  }
  for (; i < n; ++i) {
    const float e = std::exp(b[i]);
    qd[i] = q[i] * e;
    kr[i] = k[i] / e;
  }
}

// Row i of U takes -M_il U_l for every earlier row l. Each pass keeps a block of kBlock vectors of
// row i in registers and streams the earlier rows (L1-resident at chunk sizes) past them, so
// every broadcast M_il feeds kBlock FMAs. OpenBLAS strsm on these chunk-sized problems (64 x 64,
// 128 right-hand sides) ran at a quarter of its GEMM rate.
void UnitLowerSolveImpl(const float* HWY_RESTRICT M, int64_t ldm, float* HWY_RESTRICT U, int64_t ldu, int64_t n,
                        int64_t m) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  constexpr int64_t kBlock = 4;
  int64_t c = 0;
  for (; c + kBlock * N <= m; c += kBlock * N) {
    for (int64_t i = 1; i < n; ++i) {
      float* ui = U + i * ldu + c;
      const float* mi = M + i * ldm;
      auto a0 = hn::LoadU(d, ui), a1 = hn::LoadU(d, ui + N), a2 = hn::LoadU(d, ui + 2 * N), a3 = hn::LoadU(d, ui + 3 * N);
      for (int64_t l = 0; l < i; ++l) {
        const auto ml = hn::Set(d, mi[l]);
        const float* ul = U + l * ldu + c;
        a0 = hn::NegMulAdd(ml, hn::LoadU(d, ul), a0);
        a1 = hn::NegMulAdd(ml, hn::LoadU(d, ul + N), a1);
        a2 = hn::NegMulAdd(ml, hn::LoadU(d, ul + 2 * N), a2);
        a3 = hn::NegMulAdd(ml, hn::LoadU(d, ul + 3 * N), a3);
      }
      hn::StoreU(a0, d, ui);
      hn::StoreU(a1, d, ui + N);
      hn::StoreU(a2, d, ui + 2 * N);
      hn::StoreU(a3, d, ui + 3 * N);
    }
  }
  for (; c + N <= m; c += N) {
    for (int64_t i = 1; i < n; ++i) {
      float* ui = U + i * ldu + c;
      const float* mi = M + i * ldm;
      auto a = hn::LoadU(d, ui);
      for (int64_t l = 0; l < i; ++l) a = hn::NegMulAdd(hn::Set(d, mi[l]), hn::LoadU(d, U + l * ldu + c), a);
      hn::StoreU(a, d, ui);
    }
  }
  for (; c < m; ++c)
    for (int64_t i = 1; i < n; ++i) {
      float a = U[i * ldu + c];
      for (int64_t l = 0; l < i; ++l) a -= M[i * ldm + l] * U[l * ldu + c];
      U[i * ldu + c] = a;
    }
}

}  // namespace HWY_NAMESPACE
}  // namespace linear_internal
}  // namespace attnkit
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attnkit {
namespace linear_internal {

HWY_EXPORT(Elu1Impl);
HWY_EXPORT(ExpShiftImpl);
HWY_EXPORT(MulExpDiffImpl);
HWY_EXPORT(OneMinusExpImpl);
HWY_EXPORT(ExpPairImpl);
HWY_EXPORT(UnitLowerSolveImpl);

void elu1_inplace(float* x, int64_t n) { HWY_DYNAMIC_DISPATCH(Elu1Impl)(x, n); }
void exp_shift_inplace(float* x, int64_t n, float shift, float mul) { HWY_DYNAMIC_DISPATCH(ExpShiftImpl)(x, n, shift, mul); }
void mul_exp_diff(const float* x, const float* a, const float* b, float* out, int64_t n) {
  HWY_DYNAMIC_DISPATCH(MulExpDiffImpl)(x, a, b, out, n);
}
void one_minus_exp(const float* g, float* out, int64_t n) { HWY_DYNAMIC_DISPATCH(OneMinusExpImpl)(g, out, n); }
void exp_pair(const float* q, const float* k, const float* b, float* qd, float* kr, int64_t n) {
  HWY_DYNAMIC_DISPATCH(ExpPairImpl)(q, k, b, qd, kr, n);
}
void unit_lower_solve(const float* M, int64_t ldm, float* U, int64_t ldu, int64_t n, int64_t m) {
  HWY_DYNAMIC_DISPATCH(UnitLowerSolveImpl)(M, ldm, U, ldu, n, m);
}

}  // namespace linear_internal
}  // namespace attnkit
#endif
