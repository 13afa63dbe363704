// The vectorized per-token operations of the Gemma forward pass (src/model/model_ops.cc) against
// plain scalar versions in f64: GELU(tanh) * up, RMSNorm, RoPE tables and rotation. Lengths sweep
// around the vector width; RoPE positions go past the 32K context to 2^24 and 2^30.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "model/model_ops.h"

namespace attnkit::model::internal {
namespace {

std::vector<float> randn(int64_t n, uint64_t seed, float scale = 1.f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = nd(rng);
  return v;
}

const int64_t kLengths[] = {1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 48, 130, 256, 640, 1025, 2048};

TEST(ModelOps, GeluTanhMulMatchesScalar) {
  for (int64_t n : kLengths) {
    // Inputs span the tanh's linear part, its knee and saturation (|x| up to ~20).
    std::vector<float> g = randn(n, 1 + n, 4.f), u = randn(n, 2 + n);
    std::vector<float> out(static_cast<size_t>(n));
    gelu_tanh_mul(g.data(), u.data(), out.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const double x = g[static_cast<size_t>(i)];
      const double want = 0.5 * x * (1.0 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))) * u[static_cast<size_t>(i)];
      // A few f32 ulp of the result, plus the absolute error of the vector tanh near zero crossings
      // of gelu (where 1 + tanh cancels), scaled by |x u|.
      const double tol = 8 * 6e-8 * std::fabs(want) + 4e-7 * std::fabs(x * u[static_cast<size_t>(i)]);
      ASSERT_NEAR(out[static_cast<size_t>(i)], want, tol) << "n " << n << " i " << i << " x " << x;
    }
    // In place (out aliases g).
    std::vector<float> g2 = g;
    gelu_tanh_mul(g2.data(), u.data(), g2.data(), n);
    EXPECT_EQ(g2, out) << n;
  }
}

TEST(ModelOps, RmsNormMatchesF64) {
  for (int64_t n : kLengths) {
    std::vector<float> x = randn(n, 10 + n, 3.f), w = randn(n, 20 + n);
    x[0] = 500.f;  // an outlier activation, like Gemma's residual stream has
    std::vector<float> y(static_cast<size_t>(n));
    rms_norm(x.data(), w.data(), n, 1e-6f, y.data());
    double ss = 0;
    for (float v : x) ss += static_cast<double>(v) * v;
    const double r = 1.0 / std::sqrt(ss / static_cast<double>(n) + 1e-6);
    for (int64_t i = 0; i < n; ++i) {
      const double want = x[static_cast<size_t>(i)] * r * w[static_cast<size_t>(i)];
      ASSERT_NEAR(y[static_cast<size_t>(i)], want, 4e-6 * std::fabs(want) + 1e-30) << "n " << n << " i " << i;
    }
    rms_norm(x.data(), w.data(), n, 1e-6f, x.data());
    EXPECT_EQ(x, y) << "in place, n " << n;
  }
}

TEST(ModelOps, RopeTableExactAtAnyPosition) {
  const int64_t head_dim = 256, half = head_dim / 2;
  for (double base : {1e4, 1e6}) {
    std::vector<double> inv(static_cast<size_t>(half));
    for (int64_t i = 0; i < half; ++i) inv[static_cast<size_t>(i)] = std::pow(base, -2.0 * i / head_dim);
    for (int64_t pos0 : {int64_t{0}, int64_t{511}, int64_t{32767}, int64_t{1} << 20, int64_t{1} << 24, int64_t{1} << 30}) {
      const int64_t n = 3;
      std::vector<float> c(static_cast<size_t>(n * half)), s(c.size());
      rope_table(inv.data(), half, pos0, n, c.data(), s.data());
      for (int64_t t = 0; t < n; ++t)
        for (int64_t i = 0; i < half; ++i) {
          const long double a = static_cast<long double>(pos0 + t) * inv[static_cast<size_t>(i)];
          // f64 angle: |error| <= (pos * 2^-53) rad relative to the exact one; at pos 2^30 that is
          // 1.2e-7, so the bound grows with the position past 2^24 and is 2^-24 before it.
          const double tol = 6e-8 + static_cast<double>(pos0 + t) * 1.2e-16;
          ASSERT_NEAR(c[static_cast<size_t>(t * half + i)], static_cast<double>(std::cos(a)), tol) << pos0 << " " << i;
          ASSERT_NEAR(s[static_cast<size_t>(t * half + i)], static_cast<double>(std::sin(a)), tol) << pos0 << " " << i;
        }
    }
  }
}

TEST(ModelOps, RopeApplyMatchesScalar) {
  for (int64_t half : {1, 4, 7, 8, 16, 17, 64, 128}) {
    const int64_t heads = 3;
    std::vector<float> v = randn(heads * 2 * half, 30 + half), c = randn(half, 40 + half), s = randn(half, 50 + half);
    std::vector<float> want = v;
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < half; ++i) {
        float* p = want.data() + h * 2 * half;
        const double x0 = p[i], x1 = p[i + half];
        p[i] = static_cast<float>(x0 * c[static_cast<size_t>(i)] - x1 * s[static_cast<size_t>(i)]);
        p[i + half] = static_cast<float>(x0 * s[static_cast<size_t>(i)] + x1 * c[static_cast<size_t>(i)]);
      }
    rope_apply(v.data(), heads, half, c.data(), s.data());
    for (size_t k = 0; k < v.size(); ++k) ASSERT_NEAR(v[k], want[k], 3e-7 * (std::fabs(want[k]) + 1.f)) << half << " " << k;
  }
}

}  // namespace
}  // namespace attnkit::model::internal
