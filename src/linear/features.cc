// Feature maps of the linear family (see attnkit/linear.h for the list and the papers), the seeded
// Performer projection, and the per-head decay schedules of RetNet and Lightning.
#include "linear/features.h"
#include "linear/simd.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include <cblas.h>

namespace attnkit {
namespace linear_internal {

namespace {
// |x|^2 + eps under the square root: keeps an all-zero vector finite (it maps to 0).
constexpr float kL2Eps = 1e-6f;

void l2_normalize(const float* x, int64_t d, float* out) {
  // Highway sum of squares and scale: this runs twice per token for DeltaNet, and the double loop
  // the project's baseline ISA compiles was a visible share of its chunked prefill.
  const double ss = sum_squares(x, d);
  scale(x, static_cast<float>(1.0 / std::sqrt(ss + kL2Eps)), out, d);
}
}  // namespace

int64_t feature_dim_of(const LinearAttentionParams& p, int64_t d) {
  switch (p.feature_map) {
    case FeatureMap::kIdentity:
    case FeatureMap::kEluPlusOne:
    case FeatureMap::kRelu:
    case FeatureMap::kL2Norm:
    case FeatureMap::kCosine:
    case FeatureMap::kLogNormal:
      return d;
    case FeatureMap::kPerformer:
      return p.performer_features > 0
                 ? p.performer_features
                 : static_cast<int64_t>(std::ceil(static_cast<double>(d) * std::log(std::max<double>(d, 2))));
    case FeatureMap::kCosformer:
      return 2 * d;
    case FeatureMap::kTaylor2:
      return 1 + d + d * (d + 1) / 2;  // symmetric square: only i <= j pairs are kept
    case FeatureMap::kHedgehog:
      return 2 * p.feature_proj_dim;
  }
  return d;
}

void feature_row(const Resolved& r, int64_t h, const float* x, int64_t pos, bool is_query, float* out, float* tmp) {
  const int64_t d = r.d;
  const LinearAttentionParams& p = r.p;
  switch (p.feature_map) {
    case FeatureMap::kIdentity:
      std::memcpy(out, x, sizeof(float) * d);
      return;
    case FeatureMap::kEluPlusOne:
      std::memcpy(out, x, sizeof(float) * d);
      elu1_inplace(out, d);
      return;
    case FeatureMap::kRelu:
      for (int64_t i = 0; i < d; ++i) out[i] = x[i] > 0 ? x[i] : 0.0f;
      return;
    case FeatureMap::kL2Norm:
      l2_normalize(x, d, out);
      return;
    case FeatureMap::kCosine: {
      l2_normalize(x, d, out);
      if (is_query) {
        // Cottention divides by n^{sigmoid(c_h)}, n = keys seen; folding it into the query keeps
        // the state independent of the position.
        const float c = p.maybe_cottention_c ? p.maybe_cottention_c[h] : 0.0f;
        const double expo = 1.0 / (1.0 + std::exp(-static_cast<double>(c)));
        const float f = static_cast<float>(std::pow(static_cast<double>(pos + 1), -expo));
        for (int64_t i = 0; i < d; ++i) out[i] *= f;
      }
      return;
    }
    case FeatureMap::kLogNormal: {
      const float a = is_query ? p.lln_alpha : p.lln_beta;
      float mx = 0.0f;
      if (is_query && r.stabilize_query) {
        mx = -INFINITY;
        for (int64_t i = 0; i < d; ++i) mx = std::max(mx, a * x[i]);
      }
      for (int64_t i = 0; i < d; ++i) out[i] = a * x[i];
      exp_shift_inplace(out, d, mx, 1.0f);
      return;
    }
    case FeatureMap::kPerformer: {
      const int64_t m = r.f;
      const float* w = r.feature_w;
      const float xs = static_cast<float>(std::pow(static_cast<double>(d), -0.25));
      double sq = 0;
      for (int64_t i = 0; i < d; ++i) {
        tmp[i] = x[i] * xs;
        sq += static_cast<double>(tmp[i]) * tmp[i];
      }
      float mx = -INFINITY;
      for (int64_t j = 0; j < m; ++j) {
        const float* wr = w + j * d;
        float acc = 0.0f;
        for (int64_t i = 0; i < d; ++i) acc += wr[i] * tmp[i];
        out[j] = acc;
        mx = std::max(mx, acc);
      }
      // exp(w.x - |x|^2/2) is the positive random feature of e^{q.k}; a per-query shift cancels in
      // the denominator, so queries subtract their max (FAVOR+ stabilization); keys cannot.
      const float shift = static_cast<float>(sq * 0.5) + (is_query && r.stabilize_query ? mx : 0.0f);
      const float inv_sqrt_m = static_cast<float>(1.0 / std::sqrt(static_cast<double>(m)));
      exp_shift_inplace(out, m, shift, inv_sqrt_m);
      return;
    }
    case FeatureMap::kCosformer: {
      const double theta = M_PI * static_cast<double>(pos) / (2.0 * p.cosformer_max_len);
      const float c = static_cast<float>(std::cos(theta)), s = static_cast<float>(std::sin(theta));
      for (int64_t i = 0; i < d; ++i) {
        const float rx = x[i] > 0 ? x[i] : 0.0f;
        out[i] = rx * c;
        out[d + i] = rx * s;
      }
      return;
    }
    case FeatureMap::kTaylor2: {
      const float* xn = x;
      if (p.taylor_l2_normalize) {
        l2_normalize(x, d, tmp);
        xn = tmp;
      }
      const float c = r.taylor_c, c2 = r.taylor_c * r.taylor_c;
      const float inv_sqrt2 = static_cast<float>(1.0 / std::sqrt(2.0));
      out[0] = 1.0f;
      for (int64_t i = 0; i < d; ++i) out[1 + i] = c * xn[i];
      // (q.k)^2 / 2 = sum_i q_i^2 k_i^2 / 2 + sum_{i<j} q_i q_j k_i k_j: diagonal terms carry
      // 1/sqrt(2), off-diagonal ones weight 1, so F = 1 + d + d(d+1)/2 instead of 1 + d + d^2.
      float* o = out + 1 + d;
      for (int64_t i = 0; i < d; ++i) {
        const float xi = c2 * xn[i];
        *o++ = xi * xn[i] * inv_sqrt2;
        for (int64_t j = i + 1; j < d; ++j) *o++ = xi * xn[j];
      }
      return;
    }
    case FeatureMap::kHedgehog: {
      const int64_t pd = p.feature_proj_dim;
      const float* w = r.feature_w + h * d * pd;
      const float* b = p.maybe_feature_bias ? p.maybe_feature_bias + h * pd : nullptr;
      float mx = -INFINITY, mn = INFINITY;
      for (int64_t j = 0; j < pd; ++j) {
        float acc = b ? b[j] : 0.0f;
        for (int64_t i = 0; i < d; ++i) acc += x[i] * w[i * pd + j];
        tmp[j] = acc;
        mx = std::max(mx, acc);
        mn = std::min(mn, acc);
      }
      double s1 = 0, s2 = 0;
      for (int64_t j = 0; j < pd; ++j) {
        out[j] = std::exp(tmp[j] - mx);
        out[pd + j] = std::exp(mn - tmp[j]);
        s1 += out[j];
        s2 += out[pd + j];
      }
      const float i1 = static_cast<float>(1.0 / s1), i2 = static_cast<float>(1.0 / s2);
      for (int64_t j = 0; j < pd; ++j) {
        out[j] *= i1;
        out[pd + j] *= i2;
      }
      return;
    }
  }
}

void feature_rows(const Resolved& r, int64_t h, float* x, int64_t n, bool is_query, float* out, float* proj) {
  const int64_t d = r.d;
  const LinearAttentionParams& p = r.p;
  if (n == 0) return;
  if (p.feature_map == FeatureMap::kPerformer) {
    const int64_t m = r.f;
    const float xs = static_cast<float>(std::pow(static_cast<double>(d), -0.25));
    for (int64_t i = 0; i < n * d; ++i) x[i] *= xs;
    // out[n, m] = x[n, d] W^T, W [m, d].
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n), static_cast<int>(m), static_cast<int>(d),
                1.0f, x, static_cast<int>(d), r.feature_w, static_cast<int>(d), 0.0f, out, static_cast<int>(m));
    const float inv_sqrt_m = static_cast<float>(1.0 / std::sqrt(static_cast<double>(m)));
    for (int64_t i = 0; i < n; ++i) {
      const float* xi = x + i * d;
      float* oi = out + i * m;
      double sq = 0;
      for (int64_t c = 0; c < d; ++c) sq += static_cast<double>(xi[c]) * xi[c];
      float mx = 0.0f;
      if (is_query && r.stabilize_query) {  // see feature_row: a per-query shift cancels
        mx = -INFINITY;
        for (int64_t j = 0; j < m; ++j) mx = std::max(mx, oi[j]);
      }
      exp_shift_inplace(oi, m, static_cast<float>(sq * 0.5) + mx, inv_sqrt_m);
    }
    return;
  }
  // Hedgehog: proj[n, pd] = x W_h + b, then the two softmaxes per row.
  const int64_t pd = p.feature_proj_dim;
  const float* w = r.feature_w + h * d * pd;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(n), static_cast<int>(pd), static_cast<int>(d),
              1.0f, x, static_cast<int>(d), w, static_cast<int>(pd), 0.0f, proj, static_cast<int>(pd));
  const float* b = p.maybe_feature_bias ? p.maybe_feature_bias + h * pd : nullptr;
  for (int64_t i = 0; i < n; ++i) {
    float* z = proj + i * pd;
    float* o = out + i * 2 * pd;
    float mx = -INFINITY, mn = INFINITY;
    for (int64_t j = 0; j < pd; ++j) {
      if (b) z[j] += b[j];
      mx = std::max(mx, z[j]);
      mn = std::min(mn, z[j]);
    }
    for (int64_t j = 0; j < pd; ++j) {
      o[j] = z[j];
      o[pd + j] = -z[j];
    }
    exp_shift_inplace(o, pd, mx, 1.0f);
    exp_shift_inplace(o + pd, pd, -mn, 1.0f);
    double s1 = 0, s2 = 0;
    for (int64_t j = 0; j < pd; ++j) {
      s1 += o[j];
      s2 += o[pd + j];
    }
    const float i1 = static_cast<float>(1.0 / s1), i2 = static_cast<float>(1.0 / s2);
    for (int64_t j = 0; j < pd; ++j) {
      o[j] *= i1;
      o[pd + j] *= i2;
    }
  }
}

}  // namespace linear_internal

void make_performer_projection(int64_t d, int64_t m, uint64_t seed, float* out) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> block(static_cast<size_t>(d * d));
  for (int64_t r0 = 0; r0 < m; r0 += d) {
    // Gaussian d x d block, orthonormalized row by row (modified Gram-Schmidt == QR).
    for (auto& x : block) x = normal(rng);
    for (int64_t i = 0; i < d; ++i) {
      double* bi = &block[static_cast<size_t>(i * d)];
      for (int64_t j = 0; j < i; ++j) {
        const double* bj = &block[static_cast<size_t>(j * d)];
        double dot = 0;
        for (int64_t t = 0; t < d; ++t) dot += bi[t] * bj[t];
        for (int64_t t = 0; t < d; ++t) bi[t] -= dot * bj[t];
      }
      double nrm = 0;
      for (int64_t t = 0; t < d; ++t) nrm += bi[t] * bi[t];
      nrm = std::sqrt(std::max(nrm, 1e-300));
      for (int64_t t = 0; t < d; ++t) bi[t] /= nrm;
    }
    for (int64_t i = 0; i < d && r0 + i < m; ++i) {
      // Row norms follow the chi distribution of a Gaussian vector's norm, so that each row is
      // marginally N(0, I) while rows stay orthogonal (Choromanski et al. 2021, sec. 3.2).
      double g = 0;
      for (int64_t t = 0; t < d; ++t) {
        const double z = normal(rng);
        g += z * z;
      }
      const double s = std::sqrt(g);
      for (int64_t t = 0; t < d; ++t) out[(r0 + i) * d + t] = static_cast<float>(block[static_cast<size_t>(i * d + t)] * s);
    }
  }
}

void retnet_log_decays(int64_t heads, float* out) {
  for (int64_t h = 0; h < heads; ++h) out[h] = static_cast<float>(std::log1p(-std::exp2(-5.0 - static_cast<double>(h))));
}

void lightning_log_decays(int64_t heads, float* out) {
  for (int64_t h = 0; h < heads; ++h) {
    out[h] = static_cast<float>(-std::exp2(-8.0 * static_cast<double>(h + 1) / static_cast<double>(heads)));
  }
}

void lln_moment_match(double sigma_q, double sigma_k, float* alpha, float* beta) {
  // Fitted constants of the LLN paper's reference code: the variance of log softmax entries is
  // matched by a log-normal whose log-variance is sigma~^2 with 2 a sigma~^2 + b = sigma_q^2 sigma_k^2.
  const double a = 0.14855178144710912, b = -0.35487039130661086;
  const double v = std::max((sigma_q * sigma_q * sigma_k * sigma_k - b) / (2.0 * a), 1e-12);
  const double sig_tilde = std::sqrt(v);
  // Split the log-variance evenly between the query and key exponents.
  *alpha = static_cast<float>(sig_tilde / std::max(sigma_q, 1e-12) / std::sqrt(2.0));
  *beta = static_cast<float>(sig_tilde / std::max(sigma_k, 1e-12) / std::sqrt(2.0));
}

}  // namespace attnkit
