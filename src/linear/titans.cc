// Titans neural long-term memory, inference form (Behrouz et al. 2025, "Titans: Learning to
// Memorize at Test Time", sec. 3.1-3.2). The memory is trained online on the associative loss
// l(M; k, v) = |M(k) - v|^2 with momentum ("surprise") and forgetting:
//   S_t = eta_t S_{t-1} - theta_t grad l(M_{t'}; k_t, v_t),   M_t = (1 - alpha_t) M_{t-1} + S_t,
//   y_t = M_t(q_t).
// Chunked as in the paper's parallel training (sec. 3.2): inside a chunk all gradients are taken
// against the weights M_{t'} at the chunk start, so they are independent (one batched pass per
// chunk: E = M_{t'}(K) - V for the whole chunk); the momentum and decay recurrences are then cheap
// elementwise scans. chunk_size 1 is the exact per-token rule.
//
// Memory forms (weights row-major, x a row vector):
//   linear: M(x) = x W, W [d, dv];             dl/dW = 2 x^T (x W - v)
//   MLP:    M(x) = silu(x W1) W2, W1 [d, hid], W2 [hid, dv];
//           e = 2 (y - v), dW2 = a^T e, da = e W2^T, dh = da * silu'(h), dW1 = x^T dh.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "attnkit/linear.h"
#include "attnkit/registry.h"
#include "attnkit/threads.h"
#include "linear/mechanism_util.h"

namespace attnkit {
namespace {

struct Dims {
  int64_t d, dv, hid;
  bool mlp;
  int64_t weights() const { return mlp ? d * hid + hid * dv : d * dv; }
};

Dims dims_of(const TitansParams& p, int64_t d, int64_t dv) {
  return Dims{d, dv, p.hidden > 0 ? p.hidden : 2 * d, p.mlp};
}

inline float silu(float h) { return h / (1.0f + std::exp(-h)); }
inline float silu_grad(float h) {
  const float s = 1.0f / (1.0f + std::exp(-h));
  return s * (1.0f + h * (1.0f - s));
}

// y = M(x); when hbuf is given it receives the hidden pre-activations (MLP).
void forward(const Dims& m, const float* W, const float* x, float* y, float* hbuf, float* abuf) {
  if (!m.mlp) {
    std::fill(y, y + m.dv, 0.0f);
    for (int64_t i = 0; i < m.d; ++i) {
      const float xi = x[i];
      const float* wr = W + i * m.dv;
      for (int64_t j = 0; j < m.dv; ++j) y[j] += xi * wr[j];
    }
    return;
  }
  const float* W1 = W;
  const float* W2 = W + m.d * m.hid;
  std::fill(hbuf, hbuf + m.hid, 0.0f);
  for (int64_t i = 0; i < m.d; ++i) {
    const float xi = x[i];
    const float* wr = W1 + i * m.hid;
    for (int64_t j = 0; j < m.hid; ++j) hbuf[j] += xi * wr[j];
  }
  for (int64_t j = 0; j < m.hid; ++j) abuf[j] = silu(hbuf[j]);
  std::fill(y, y + m.dv, 0.0f);
  for (int64_t i = 0; i < m.hid; ++i) {
    const float ai = abuf[i];
    const float* wr = W2 + i * m.dv;
    for (int64_t j = 0; j < m.dv; ++j) y[j] += ai * wr[j];
  }
}

// G = grad of |M(k) - v|^2 at weights W.
void gradient(const Dims& m, const float* W, const float* k, const float* v, float* G, std::vector<float>& tmp) {
  tmp.resize(static_cast<size_t>(2 * m.hid + 2 * m.dv + m.hid));
  float* y = tmp.data();
  float* e = y + m.dv;
  float* h = e + m.dv;
  float* a = h + m.hid;
  float* dh = a + m.hid;
  forward(m, W, k, y, h, a);
  for (int64_t j = 0; j < m.dv; ++j) e[j] = 2.0f * (y[j] - v[j]);
  if (!m.mlp) {
    for (int64_t i = 0; i < m.d; ++i)
      for (int64_t j = 0; j < m.dv; ++j) G[i * m.dv + j] = k[i] * e[j];
    return;
  }
  const float* W2 = W + m.d * m.hid;
  float* G1 = G;
  float* G2 = G + m.d * m.hid;
  for (int64_t i = 0; i < m.hid; ++i) {
    float da = 0.0f;
    for (int64_t j = 0; j < m.dv; ++j) {
      G2[i * m.dv + j] = a[i] * e[j];
      da += e[j] * W2[i * m.dv + j];
    }
    dh[i] = da * silu_grad(h[i]);
  }
  for (int64_t i = 0; i < m.d; ++i)
    for (int64_t j = 0; j < m.hid; ++j) G1[i * m.hid + j] = k[i] * dh[j];
}

float gate_at(const TensorView& t, float dflt, int64_t b, int64_t s, int64_t h) {
  return t.data ? t.get(b, s, h, 0) : dflt;
}

}  // namespace

int64_t titans_state_floats(const TitansParams& p, int64_t d, int64_t dv) { return 2 * dims_of(p, d, dv).weights(); }

void titans_init_state(const TitansParams& p, int64_t d, int64_t dv, uint64_t seed, float* state) {
  const Dims m = dims_of(p, d, dv);
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> n(0.0, 1.0);
  const int64_t w = m.weights();
  if (!m.mlp) {
    const double sd = 1.0 / std::sqrt(static_cast<double>(d));
    for (int64_t i = 0; i < w; ++i) state[i] = static_cast<float>(n(rng) * sd);
  } else {
    const double s1 = 1.0 / std::sqrt(static_cast<double>(d)), s2 = 1.0 / std::sqrt(static_cast<double>(m.hid));
    for (int64_t i = 0; i < d * m.hid; ++i) state[i] = static_cast<float>(n(rng) * s1);
    for (int64_t i = d * m.hid; i < w; ++i) state[i] = static_cast<float>(n(rng) * s2);
  }
  std::fill(state + w, state + 2 * w, 0.0f);  // momentum starts at rest
}

Status titans_memory(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                     const TitansParams& p, float* state) {
  if (q.data == nullptr || k.data == nullptr || v.data == nullptr || out.data == nullptr || state == nullptr)
    return Status::invalid_argument("titans q, k, v, out and state must not be null");
  const int64_t B = q.batch(), T = q.seq(), H = q.heads(), d = q.head_dim(), dv = v.head_dim();
  if (d < 1 || d > 512) return Status::invalid_argument("head_dim " + std::to_string(d) + " is not supported; expected 1..512");
  if (k.batch() != B || k.seq() != T || k.heads() != H || k.head_dim() != d || v.batch() != B || v.seq() != T ||
      v.heads() != H || out.batch() != B || out.seq() != T || out.heads() != H || out.head_dim() != dv)
    return Status::invalid_argument("titans q, k, v, out shapes disagree (need equal batch, seq, heads; k head_dim = q head_dim)");
  if (p.chunk_size < 1) return Status::invalid_argument("chunk_size " + std::to_string(p.chunk_size) + " must be >= 1");
  if (p.mlp && p.hidden < 0) return Status::invalid_argument("hidden " + std::to_string(p.hidden) + " must be >= 0");
  for (const TensorView* g : {&p.alpha_t, &p.eta_t, &p.theta_t})
    if (g->data && (g->dtype != DType::kF32 || g->batch() != B || g->seq() != T || g->heads() != H || g->head_dim() != 1))
      return Status::invalid_argument("titans gate views must be f32 [batch, seq, heads, 1]");
  const Dims m = dims_of(p, d, dv);
  const int64_t w = m.weights();
  const int64_t C = p.chunk_size;
  int nt = 1;
  ATTNKIT_RETURN_IF_ERROR(resolve_threads(p.num_threads, "num_threads", &nt));

#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
  for (int64_t task = 0; task < B * H; ++task) {
    const int64_t b = task / H, h = task % H;
    float* W = state + task * 2 * w;
    float* S = W + w;
    std::vector<float> W0(static_cast<size_t>(w)), G(static_cast<size_t>(C * w)), tmp, kr(d), vr(dv), qr(d), y(dv),
        hb(static_cast<size_t>(m.hid)), ab(static_cast<size_t>(m.hid));
    for (int64_t s0 = 0; s0 < T; s0 += C) {
      const int64_t n = std::min(C, T - s0);
      std::copy(W, W + w, W0.begin());
      // All gradients of the chunk against the chunk-start weights W0 (independent of each other).
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t c = 0; c < d; ++c) kr[c] = k.get(b, s0 + i, h, c);
        for (int64_t c = 0; c < dv; ++c) vr[c] = v.get(b, s0 + i, h, c);
        gradient(m, W0.data(), kr.data(), vr.data(), G.data() + i * w, tmp);
      }
      for (int64_t i = 0; i < n; ++i) {
        const int64_t t = s0 + i;
        const float eta = gate_at(p.eta_t, p.eta, b, t, h);
        const float theta = gate_at(p.theta_t, p.theta, b, t, h);
        const float keep = 1.0f - gate_at(p.alpha_t, p.alpha, b, t, h);
        const float* Gi = G.data() + i * w;
        for (int64_t j = 0; j < w; ++j) {
          S[j] = eta * S[j] - theta * Gi[j];
          W[j] = keep * W[j] + S[j];
        }
        for (int64_t c = 0; c < d; ++c) qr[c] = q.get(b, t, h, c);
        forward(m, W, qr.data(), y.data(), hb.data(), ab.data());
        for (int64_t c = 0; c < dv; ++c) out.set(b, t, h, c, y[c]);
      }
    }
  }
  return Status::ok_status();
}

// ---- registry entry ----

namespace {

using namespace linear_internal;

Mechanism make_titans() {
  Mechanism m;
  m.name = "titans";
  m.family = "linear";
  m.description = "Titans neural memory (Behrouz et al. 2025): test-time gradient memory with momentum and forgetting";
  m.params = {{"mlp", "false", "2-layer MLP memory instead of linear"},
              {"hidden", "0", "MLP hidden width (0 = 2 * head_dim)"},
              {"chunk", "16", "tokens whose gradients share the chunk-start weights"}};
  m.prepare = [](const ProblemShape& s, const MechanismParams& mp, std::unique_ptr<PreparedRun>* out) -> Status {
    ATTNKIT_RETURN_IF_ERROR(check_linear_shape(s));
    TitansParams p;
    ATTNKIT_RETURN_IF_ERROR(param_bool(mp, "mlp", &p.mlp));
    ATTNKIT_RETURN_IF_ERROR(param_int(mp, "hidden", &p.hidden));
    ATTNKIT_RETURN_IF_ERROR(param_int(mp, "chunk", &p.chunk_size));
    if (p.hidden < 0) return Status::invalid_argument("parameter hidden=" + mp.at("hidden") + " must be >= 0");
    if (p.chunk_size < 1) return Status::invalid_argument("parameter chunk=" + mp.at("chunk") + " must be >= 1");
    p.num_threads = s.threads;
    const int64_t B = s.batch, T = s.seq_q, H = s.heads_q, d = s.head_dim;
    auto in = std::make_shared<Inputs>();
    in->make(B, T, H, d, d);
    const int64_t sf = titans_state_floats(p, d, d);
    auto st = std::make_shared<std::vector<float>>(static_cast<size_t>(B * H * sf));
    for (int64_t i = 0; i < B * H; ++i) titans_init_state(p, d, d, 100 + i, st->data() + i * sf);
    auto run = std::make_unique<FnRun>();
    run->fn = [in, st, p]() { return titans_memory(in->qv, in->kv, in->vv, in->ov, p, st->data()); };
    // Per token: gradient ~3 forward passes (2P each), momentum + decay 4P, readout 2P; P = weights.
    const double P = static_cast<double>(sf / 2);
    run->f = static_cast<double>(B * T * H) * (p.mlp ? 12.0 : 9.0) * P;
    run->b = in->io_bytes() + 8.0 * static_cast<double>(B * H * sf);
    *out = std::move(run);
    return Status::ok_status();
  };
  return m;
}
ATTNKIT_REGISTER_MECHANISM(make_titans);

}  // namespace

}  // namespace attnkit
