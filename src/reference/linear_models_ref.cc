// Double-precision references of the stateful models of the linear family: Titans memory
// (Behrouz et al. 2025) and Infini-attention (Munkhdalai et al. 2024). See linear_ref.h.
#include <algorithm>
#include <cmath>
#include <limits>

#include "reference/linear_ref.h"

namespace attnkit {
namespace reference {
namespace {

using Vec = std::vector<double>;
using Mat = std::vector<Vec>;  // row-major rows

Mat mat(int64_t r, int64_t c) { return Mat(static_cast<size_t>(r), Vec(static_cast<size_t>(c), 0.0)); }
double silu(double h) { return h / (1 + std::exp(-h)); }
double dsilu(double h) {
  const double s = 1 / (1 + std::exp(-h));
  return s * (1 + h * (1 - s));
}

// Titans memory as two matrices (the linear memory uses only W1 = W [d, dv]).
struct Mem {
  bool mlp;
  Mat W1, W2;
  Vec fwd(const Vec& x, Vec* h = nullptr, Vec* a = nullptr) const {
    if (!mlp) {
      Vec y(W1[0].size(), 0.0);
      for (size_t i = 0; i < x.size(); ++i)
        for (size_t j = 0; j < y.size(); ++j) y[j] += x[i] * W1[i][j];
      return y;
    }
    Vec hh(W1[0].size(), 0.0);
    for (size_t i = 0; i < x.size(); ++i)
      for (size_t j = 0; j < hh.size(); ++j) hh[j] += x[i] * W1[i][j];
    Vec aa(hh.size());
    for (size_t j = 0; j < hh.size(); ++j) aa[j] = silu(hh[j]);
    Vec y(W2[0].size(), 0.0);
    for (size_t i = 0; i < aa.size(); ++i)
      for (size_t j = 0; j < y.size(); ++j) y[j] += aa[i] * W2[i][j];
    if (h) *h = hh;
    if (a) *a = aa;
    return y;
  }
  // Gradient of |M(k) - v|^2, returned as a Mem-shaped pair.
  Mem grad(const Vec& k, const Vec& v) const {
    Mem g{mlp, W1, W2};
    Vec h, a;
    const Vec y = fwd(k, &h, &a);
    Vec e(y.size());
    for (size_t j = 0; j < y.size(); ++j) e[j] = 2 * (y[j] - v[j]);
    if (!mlp) {
      for (size_t i = 0; i < k.size(); ++i)
        for (size_t j = 0; j < e.size(); ++j) g.W1[i][j] = k[i] * e[j];
      return g;
    }
    Vec dh(h.size());
    for (size_t i = 0; i < a.size(); ++i) {
      double da = 0;
      for (size_t j = 0; j < e.size(); ++j) {
        g.W2[i][j] = a[i] * e[j];
        da += e[j] * W2[i][j];
      }
      dh[i] = da * dsilu(h[i]);
    }
    for (size_t i = 0; i < k.size(); ++i)
      for (size_t j = 0; j < dh.size(); ++j) g.W1[i][j] = k[i] * dh[j];
    return g;
  }
};

Vec row(const TensorView& t, int64_t b, int64_t s, int64_t h) {
  Vec x(static_cast<size_t>(t.head_dim()));
  for (int64_t i = 0; i < t.head_dim(); ++i) x[i] = t.get(b, s, h, i);
  return x;
}

}  // namespace

void titans_ref(const TensorView& q, const TensorView& k, const TensorView& v, const TitansParams& p,
                const float* state, std::vector<double>* out, std::vector<double>* final_state) {
  const int64_t B = q.batch(), T = q.seq(), H = q.heads(), d = q.head_dim(), dv = v.head_dim();
  const int64_t hid = p.hidden > 0 ? p.hidden : 2 * d;
  const int64_t sf = titans_state_floats(p, d, dv), w = sf / 2;
  out->assign(static_cast<size_t>(B * T * H * dv), 0.0);
  final_state->assign(static_cast<size_t>(B * H * sf), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const float* st = state + (b * H + h) * sf;
      // Unpack W (and momentum S) in the layout of titans_state_floats.
      auto unpack = [&](const float* src) {
        Mem m{p.mlp, {}, {}};
        if (!p.mlp) {
          m.W1 = mat(d, dv);
          for (int64_t i = 0; i < d; ++i)
            for (int64_t j = 0; j < dv; ++j) m.W1[i][j] = src[i * dv + j];
        } else {
          m.W1 = mat(d, hid);
          m.W2 = mat(hid, dv);
          for (int64_t i = 0; i < d; ++i)
            for (int64_t j = 0; j < hid; ++j) m.W1[i][j] = src[i * hid + j];
          for (int64_t i = 0; i < hid; ++i)
            for (int64_t j = 0; j < dv; ++j) m.W2[i][j] = src[d * hid + i * dv + j];
        }
        return m;
      };
      Mem M = unpack(st), S = unpack(st + w);
      auto gate = [&](const TensorView& t, float dflt, int64_t s) { return t.data ? static_cast<double>(t.get(b, s, h, 0)) : dflt; };
      for (int64_t s0 = 0; s0 < T; s0 += p.chunk_size) {
        const int64_t n = std::min(p.chunk_size, T - s0);
        const Mem M0 = M;  // the paper's chunk rule: gradients at the chunk-start weights
        for (int64_t i = 0; i < n; ++i) {
          const int64_t t = s0 + i;
          const Mem G = M0.grad(row(k, b, t, h), row(v, b, t, h));
          const double eta = gate(p.eta_t, p.eta, t), theta = gate(p.theta_t, p.theta, t),
                       keep = 1 - gate(p.alpha_t, p.alpha, t);
          auto upd = [&](Mat& Mw, Mat& Sw, const Mat& Gw) {
            for (size_t r = 0; r < Mw.size(); ++r)
              for (size_t c = 0; c < Mw[r].size(); ++c) {
                Sw[r][c] = eta * Sw[r][c] - theta * Gw[r][c];
                Mw[r][c] = keep * Mw[r][c] + Sw[r][c];
              }
          };
          upd(M.W1, S.W1, G.W1);
          if (p.mlp) upd(M.W2, S.W2, G.W2);
          const Vec y = M.fwd(row(q, b, t, h));
          for (int64_t j = 0; j < dv; ++j) (*out)[((b * T + t) * H + h) * dv + j] = y[j];
        }
      }
      double* fs = final_state->data() + (b * H + h) * sf;
      auto pack = [&](const Mem& m, double* dst) {
        int64_t o = 0;
        for (const Vec& r : m.W1)
          for (double x : r) dst[o++] = x;
        if (p.mlp)
          for (const Vec& r : m.W2)
            for (double x : r) dst[o++] = x;
      };
      pack(M, fs);
      pack(S, fs + w);
    }
}

void infini_ref(const TensorView& q, const TensorView& k, const TensorView& v, const InfiniParams& p,
                std::vector<double>* out) {
  const int64_t T = q.seq(), H = q.heads(), d = q.head_dim(), dv = v.head_dim(), L = p.segment_len;
  out->assign(static_cast<size_t>(T * H * dv), 0.0);
  auto elu1 = [](double x) { return x > 0 ? x + 1 : std::exp(x); };
  for (int64_t h = 0; h < H; ++h) {
    const double beta = p.maybe_gate_logits ? p.maybe_gate_logits[h] : 0.0;
    const double mix = 1 / (1 + std::exp(-beta));
    Mat M = mat(d, dv);
    Vec z(static_cast<size_t>(d), 0.0);
    for (int64_t s0 = 0; s0 < T; s0 += L) {
      const int64_t n = std::min(L, T - s0);
      Mat Q, K, V, FQ, FK;
      for (int64_t i = 0; i < n; ++i) {
        Q.push_back(row(q, 0, s0 + i, h));
        K.push_back(row(k, 0, s0 + i, h));
        V.push_back(row(v, 0, s0 + i, h));
        Vec fq = Q.back(), fk = K.back();
        for (double& x : fq) x = elu1(x);
        for (double& x : fk) x = elu1(x);
        FQ.push_back(fq);
        FK.push_back(fk);
      }
      // Local causal softmax + memory read (memory of the previous segments only).
      Vec qf, kf, vf;
      for (int64_t i = 0; i < n; ++i) {
        for (double x : Q[i]) qf.push_back(x);
        for (double x : K[i]) kf.push_back(x);
        for (double x : V[i]) vf.push_back(x);
      }
      const Vec local = softmax_attention_ref(qf, kf, vf, n, n, d, dv, 1 / std::sqrt(static_cast<double>(d)), true);
      for (int64_t i = 0; i < n; ++i) {
        double den = 0;
        for (int64_t c = 0; c < d; ++c) den += FQ[i][c] * z[c];
        for (int64_t j = 0; j < dv; ++j) {
          double num = 0;
          for (int64_t c = 0; c < d; ++c) num += FQ[i][c] * M[c][j];
          const double amem = den > 0 ? num / den : 0.0;
          (*out)[((s0 + i) * H + h) * dv + j] = mix * amem + (1 - mix) * local[i * dv + j];
        }
      }
      if (n < L) break;  // an unfinished segment never writes the memory
      Mat dM = mat(d, dv);
      for (int64_t i = 0; i < n; ++i) {
        Vec u = V[i];
        if (p.delta_update) {
          double den = 0;
          for (int64_t c = 0; c < d; ++c) den += FK[i][c] * z[c];
          for (int64_t j = 0; j < dv; ++j) {
            double num = 0;
            for (int64_t c = 0; c < d; ++c) num += FK[i][c] * M[c][j];
            u[j] -= den > 0 ? num / den : 0.0;
          }
        }
        for (int64_t c = 0; c < d; ++c)
          for (int64_t j = 0; j < dv; ++j) dM[c][j] += FK[i][c] * u[j];
      }
      for (int64_t c = 0; c < d; ++c) {
        for (int64_t j = 0; j < dv; ++j) M[c][j] += dM[c][j];
        for (int64_t i = 0; i < n; ++i) z[c] += FK[i][c];
      }
    }
  }
}

}  // namespace reference
}  // namespace attnkit
