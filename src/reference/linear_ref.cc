// Double-precision references of the linear family; see linear_ref.h.
#include "reference/linear_ref.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace attnkit {
namespace reference {
namespace {

using Vec = std::vector<double>;

Vec row(const TensorView& t, int64_t b, int64_t s, int64_t h) {
  Vec x(static_cast<size_t>(t.head_dim()));
  for (int64_t i = 0; i < t.head_dim(); ++i) x[i] = t.get(b, s, h, i);
  return x;
}

Vec l2n(const Vec& x) {
  double ss = 0;
  for (double e : x) ss += e * e;
  const double inv = 1.0 / std::sqrt(ss + 1e-6);  // same eps as the engine (a definition, not a tolerance)
  Vec o(x.size());
  for (size_t i = 0; i < x.size(); ++i) o[i] = x[i] * inv;
  return o;
}

struct Maps {
  const LinearAttentionParams* p;
  int64_t d;
  std::vector<float> performer_w;
  double taylor_t;

  Vec phi(const Vec& x, int64_t h, int64_t pos, bool is_query) const {
    const int64_t dd = d;
    Vec o;
    switch (p->feature_map) {
      case FeatureMap::kIdentity: return x;
      case FeatureMap::kEluPlusOne:
        for (double e : x) o.push_back(e > 0 ? e + 1 : std::exp(e));
        return o;
      case FeatureMap::kRelu:
        for (double e : x) o.push_back(std::max(e, 0.0));
        return o;
      case FeatureMap::kL2Norm: return l2n(x);
      case FeatureMap::kCosine: {
        o = l2n(x);
        if (is_query) {
          const double c = p->maybe_cottention_c ? p->maybe_cottention_c[h] : 0.0;
          const double f = std::pow(static_cast<double>(pos + 1), -1.0 / (1.0 + std::exp(-c)));
          for (double& e : o) e *= f;
        }
        return o;
      }
      case FeatureMap::kLogNormal: {
        const double a = is_query ? p->lln_alpha : p->lln_beta;
        for (double e : x) o.push_back(std::exp(a * e));
        return o;
      }
      case FeatureMap::kPerformer: {
        const float* w = p->maybe_feature_weight ? p->maybe_feature_weight : performer_w.data();
        const int64_t m = static_cast<int64_t>(p->maybe_feature_weight ? p->performer_features : performer_w.size() / dd);
        const double xs = std::pow(static_cast<double>(dd), -0.25);
        double sq = 0;
        for (double e : x) sq += e * xs * e * xs;
        for (int64_t j = 0; j < m; ++j) {
          double acc = 0;
          for (int64_t i = 0; i < dd; ++i) acc += w[j * dd + i] * x[i] * xs;
          o.push_back(std::exp(acc - sq / 2) / std::sqrt(static_cast<double>(m)));
        }
        return o;
      }
      case FeatureMap::kCosformer: {
        const double th = M_PI * pos / (2.0 * p->cosformer_max_len);
        o.resize(2 * dd);
        for (int64_t i = 0; i < dd; ++i) {
          o[i] = std::max(x[i], 0.0) * std::cos(th);
          o[dd + i] = std::max(x[i], 0.0) * std::sin(th);
        }
        return o;
      }
      case FeatureMap::kTaylor2: {
        // Full d^2 outer product here (the engine keeps only i <= j): phi.phi = 1 + s + s^2/2.
        const Vec xn = p->taylor_l2_normalize ? l2n(x) : x;
        const double c = std::sqrt(taylor_t);
        o.push_back(1.0);
        for (double e : xn) o.push_back(c * e);
        for (int64_t i = 0; i < dd; ++i)
          for (int64_t j = 0; j < dd; ++j) o.push_back(taylor_t * xn[i] * xn[j] / std::sqrt(2.0));
        return o;
      }
      case FeatureMap::kHedgehog: {
        const int64_t pd = p->feature_proj_dim;
        const float* w = p->maybe_feature_weight + h * dd * pd;
        Vec z(static_cast<size_t>(pd));
        for (int64_t j = 0; j < pd; ++j) {
          double acc = p->maybe_feature_bias ? p->maybe_feature_bias[h * pd + j] : 0.0;
          for (int64_t i = 0; i < dd; ++i) acc += x[i] * w[i * pd + j];
          z[j] = acc;
        }
        double s1 = 0, s2 = 0;
        for (double e : z) {
          s1 += std::exp(e);
          s2 += std::exp(-e);
        }
        for (double e : z) o.push_back(std::exp(e) / s1);
        for (double e : z) o.push_back(std::exp(-e) / s2);
        return o;
      }
    }
    return x;
  }
};

}  // namespace

Status linear_attention_ref(const TensorView& q, const TensorView& k, const TensorView& v,
                            const LinearAttentionParams& p, std::vector<double>* out,
                            std::vector<double>* maybe_final_state, const std::vector<double>* maybe_initial) {
  const int64_t d = q.head_dim(), dv = v.head_dim(), H = q.heads();
  const int64_t group = H / v.heads();
  Maps maps{&p, d, {}, std::isnan(p.taylor_temperature) ? 1.0 / std::sqrt(static_cast<double>(d)) : p.taylor_temperature};
  if (p.feature_map == FeatureMap::kPerformer && !p.maybe_feature_weight) {
    int64_t m = 0;
    ATTNKIT_RETURN_IF_ERROR(linear_feature_dim(p, d, &m));
    maps.performer_w.resize(static_cast<size_t>(m * d));
    make_performer_projection(d, m, p.performer_seed, maps.performer_w.data());
  }
  int64_t f_engine = 0;
  ATTNKIT_RETURN_IF_ERROR(linear_feature_dim(p, d, &f_engine));
  const bool den = p.norm == LinearNorm::kDenominator;
  const int64_t dvp = dv + (den ? 1 : 0);
  double scale = p.scale;
  if (std::isnan(p.scale)) {
    const bool self_norm = p.feature_map == FeatureMap::kPerformer || p.feature_map == FeatureMap::kCosformer ||
                           p.feature_map == FeatureMap::kTaylor2 || p.feature_map == FeatureMap::kHedgehog ||
                           p.feature_map == FeatureMap::kLogNormal;
    scale = self_norm ? 1.0 : 1.0 / std::sqrt(static_cast<double>(d));
  }
  const int64_t n_states = p.maybe_cu_seqlens ? p.n_seqs : q.batch();
  out->assign(static_cast<size_t>(q.batch() * q.seq() * H * dv), 0.0);
  // The reference state is over the reference features; for Taylor2 these are d^2 wide, so the
  // final state is reported only for maps whose reference features equal the engine's.
  const bool same_features = p.feature_map != FeatureMap::kTaylor2;
  if (maybe_final_state) maybe_final_state->assign(static_cast<size_t>(n_states * H * f_engine * dvp), 0.0);
  for (int64_t si = 0; si < n_states; ++si) {
    const int64_t b = p.maybe_cu_seqlens ? 0 : si;
    const int64_t t0 = p.maybe_cu_seqlens ? p.maybe_cu_seqlens[si] : 0;
    const int64_t len = p.maybe_cu_seqlens ? p.maybe_cu_seqlens[si + 1] - t0 : q.seq();
    const int64_t pos0 = p.maybe_start_positions ? p.maybe_start_positions[si] : 0;
    for (int64_t h = 0; h < H; ++h) {
      const int64_t kvh = h / group;
      std::vector<Vec> S;  // [F][dvp], sized on the first token
      auto init_state = [&](int64_t F) {
        S.assign(static_cast<size_t>(F), Vec(static_cast<size_t>(dvp), 0.0));
        if (same_features) {
          const int64_t off = (si * H + h) * F * dvp;
          for (int64_t i = 0; i < F; ++i)
            for (int64_t j = 0; j < dvp; ++j) {
              if (maybe_initial) S[i][j] = (*maybe_initial)[off + i * dvp + j];
              else if (p.maybe_initial_state) S[i][j] = p.maybe_initial_state[off + i * dvp + j];
            }
        }
      };
      if (len == 0 && same_features) init_state(f_engine);
      for (int64_t s = 0; s < len; ++s) {
        const int64_t tok = t0 + s, pos = pos0 + s;
        const Vec qf = maps.phi(row(q, b, tok, h), h, pos, true);
        Vec g;  // log decays, size 1 or F
        switch (p.decay) {
          case DecayKind::kNone: g = {0.0}; break;
          case DecayKind::kPerHead: g = {p.maybe_head_log_decay[h]}; break;
          case DecayKind::kScalarGate: g = {p.gate.get(b, tok, h, 0)}; break;
          case DecayKind::kVectorGate: g = row(p.gate, b, tok, h); break;
        }
        Vec kf;
        if (p.tie_key_to_gate) {
          for (double e : g) kf.push_back(1.0 - std::exp(e));  // HGRN2: input gate = 1 - forget gate
        } else {
          kf = maps.phi(row(k, b, tok, kvh), h, pos, false);
        }
        const int64_t F = static_cast<int64_t>(kf.size());
        if (S.empty()) init_state(F);
        Vec vv = row(v, b, tok, kvh);
        if (den) vv.push_back(1.0);
        if (p.update == UpdateRule::kAdditive) {
          for (int64_t i = 0; i < F; ++i) {
            const double a = std::exp(g.size() == 1 ? g[0] : g[i]);
            for (int64_t j = 0; j < dvp; ++j) S[i][j] = a * S[i][j] + kf[i] * vv[j];
          }
        } else {
          // Gated delta rule: S <- a S; u = beta (v - S^T k); S <- S + k u^T.
          const double a = std::exp(g[0]);
          const double bt = p.beta.get(b, tok, h, 0);
          for (auto& r : S)
            for (double& e : r) e *= a;
          Vec u(static_cast<size_t>(dvp), 0.0);
          for (int64_t i = 0; i < F; ++i)
            for (int64_t j = 0; j < dvp; ++j) u[j] += S[i][j] * kf[i];
          for (int64_t j = 0; j < dvp; ++j) u[j] = bt * (vv[j] - u[j]);
          for (int64_t i = 0; i < F; ++i)
            for (int64_t j = 0; j < dvp; ++j) S[i][j] += kf[i] * u[j];
        }
        Vec y(static_cast<size_t>(dvp), 0.0);
        for (int64_t i = 0; i < F; ++i)
          for (int64_t j = 0; j < dvp; ++j) y[j] += qf[i] * S[i][j];
        double* o = out->data() + ((b * q.seq() + tok) * H + h) * dv;
        if (p.norm == LinearNorm::kDenominator) {
          for (int64_t j = 0; j < dv; ++j) o[j] = y[j] / (y[dv] + p.norm_eps);
        } else if (p.norm == LinearNorm::kOutputRms) {
          double ss = 0;
          for (int64_t j = 0; j < dv; ++j) ss += (scale * y[j]) * (scale * y[j]);
          const double inv = 1.0 / std::sqrt(ss / dv + p.norm_eps);
          for (int64_t j = 0; j < dv; ++j) o[j] = scale * y[j] * inv;
        } else {
          for (int64_t j = 0; j < dv; ++j) o[j] = scale * y[j];
        }
      }
      if (maybe_final_state && same_features && !S.empty()) {
        const int64_t off = (si * H + h) * f_engine * dvp;
        for (int64_t i = 0; i < f_engine; ++i)
          for (int64_t j = 0; j < dvp; ++j) (*maybe_final_state)[off + i * dvp + j] = S[i][j];
      }
    }
  }
  return Status::ok_status();
}

std::vector<double> softmax_attention_ref(const std::vector<double>& q, const std::vector<double>& k,
                                          const std::vector<double>& v, int64_t tq, int64_t tk, int64_t d,
                                          int64_t dv, double scale, bool causal, int64_t window) {
  std::vector<double> o(static_cast<size_t>(tq * dv), 0.0);
  for (int64_t i = 0; i < tq; ++i) {
    const int64_t pos = i + tk - tq;
    const int64_t hi = causal ? std::min(pos, tk - 1) : tk - 1;
    const int64_t lo = window >= 0 ? std::max<int64_t>(0, pos - window) : 0;
    if (hi < lo) continue;
    double mx = -std::numeric_limits<double>::infinity();
    std::vector<double> s(static_cast<size_t>(hi - lo + 1));
    for (int64_t j = lo; j <= hi; ++j) {
      double acc = 0;
      for (int64_t c = 0; c < d; ++c) acc += q[i * d + c] * k[j * d + c];
      s[j - lo] = acc * scale;
      mx = std::max(mx, s[j - lo]);
    }
    double den = 0;
    for (double& e : s) den += (e = std::exp(e - mx));
    for (int64_t j = lo; j <= hi; ++j)
      for (int64_t c = 0; c < dv; ++c) o[i * dv + c] += s[j - lo] / den * v[j * dv + c];
  }
  return o;
}

void aaren_ref(const float* query, const TensorView& k, const TensorView& v, double scale, std::vector<double>* out) {
  const int64_t B = k.batch(), T = k.seq(), H = k.heads(), d = k.head_dim(), dv = v.head_dim();
  out->assign(static_cast<size_t>(B * T * H * dv), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      // Feng et al. 2024, eq. for the many-to-many RNN: running max m, denominator c, numerator a.
      double m = -std::numeric_limits<double>::infinity(), c = 0;
      Vec a(static_cast<size_t>(dv), 0.0);
      for (int64_t t = 0; t < T; ++t) {
        double s = 0;
        for (int64_t i = 0; i < d; ++i) s += static_cast<double>(query[h * d + i]) * k.get(b, t, h, i);
        s *= scale;
        const double mn = std::max(m, s);
        const double ro = std::exp(m - mn), rn = std::exp(s - mn);
        c = c * ro + rn;
        for (int64_t j = 0; j < dv; ++j) a[j] = a[j] * ro + rn * v.get(b, t, h, j);
        m = mn;
        for (int64_t j = 0; j < dv; ++j) (*out)[((b * T + t) * H + h) * dv + j] = a[j] / c;
      }
    }
}

}  // namespace reference
}  // namespace attnkit
