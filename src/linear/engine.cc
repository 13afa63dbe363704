// The linear attention engine: validation, the per-(sequence, head group) task loop and the three forms
// (parallel, chunked, recurrent) of attnkit/linear.h.
//
// Numerics. b_i denotes the running sum of log-decays. Every exponential taken here is of a
// difference b_i - b_j with j <= i (so <= 0) or of b inside one chunk (also <= 0): decays can be
// arbitrarily strong and sequences arbitrarily long without overflow; contributions that decay
// below f32 range underflow to 0, which is their correct value to working precision. While a
// chunk's total log-decay stays above -kFactorLimit the pairwise factor is split as
// e^{b_i} e^{-b_j} (both inside f32 range), which turns the GLA block into one GEMM. Stronger
// decays take one exp per pair (scalar gates) or, for the vector gate, sub-blocks of kSub tokens:
// between sub-blocks the query side is rescaled by e^{b_i - r} and the key side by e^{r - b_j}
// with r the log-decay at the sub-block boundary (both factors <= 1; fla's secondary chunking),
// inside a sub-block the pairwise factor e^{b_i - b_j} is taken per feature.
//
// Performance. The chunked form is four GEMMs per chunk (OpenBLAS, kept on one thread inside each
// task: the (sequence, head group) tasks are the parallelism), so the code around them keeps the
// GEMMs' operands dense and the work between them per row rather than per element: one exp per
// row for scalar decays, the factorized in-chunk decay above (GLA as one GEMM), Highway for the
// element-wise maps, heads grouped per task with their chunk staged contiguously (run_chunked),
// prefetched strided rows (load_tokens) and a SIMD forward substitution for the delta rule's
// triangular solve. The current rates against sgemm are in docs/benchmarks.md.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "attnkit/linear.h"
#include "attnkit/threads.h"
#include "core/util.h"
#include "linear/features.h"
#include "linear/simd.h"

extern "C" {
int openblas_get_num_threads(void);
void openblas_set_num_threads(int);
}

namespace attnkit {
namespace linear_internal {
namespace {

using core::check_view;
using core::shape_str;

constexpr int64_t kSub = 16;  // sub-block of the vector-gate chunk path
constexpr int64_t kMaxHeadGroup = 8;  // heads per task of the chunked form
// Above this in-chunk log-decay the factorized decay e^{b_i} e^{-b_j} is used (e^{60} ~ 1e26 stays
// far from the f32 limit e^{88} even multiplied by the features).
constexpr float kFactorLimit = 60.0f;

inline bool has(const TensorView& t) { return t.data != nullptr; }

// Reads n consecutive head_dim elements of (b, s, h) as f32.
inline void load_row(const TensorView& t, int64_t b, int64_t s, int64_t h, int64_t n, float* dst) {
  const int64_t off = t.offset(b, s, h, 0);
  if (t.dtype == DType::kF32 && t.stride[3] == 1) {
    std::memcpy(dst, static_cast<const float*>(t.data) + off, sizeof(float) * n);
    return;
  }
  for (int64_t i = 0; i < n; ++i) dst[i] = load_as_f32(t.data, t.dtype, off + i * t.stride[3]);
}

inline void store_row(const TensorView& t, int64_t b, int64_t s, int64_t h, int64_t n, const float* src) {
  const int64_t off = t.offset(b, s, h, 0);
  if (t.dtype == DType::kF32 && t.stride[3] == 1) {
    std::memcpy(static_cast<float*>(t.data) + off, src, sizeof(float) * n);
    return;
  }
  for (int64_t i = 0; i < n; ++i) store_from_f32(t.data, t.dtype, off + i * t.stride[3], src[i]);
}

// Row-major C (m x n) = alpha op(A) op(B) + beta C.
inline void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                 const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
    return;
  }
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<int>(m),
              static_cast<int>(n), static_cast<int>(k), alpha, a, static_cast<int>(lda), b, static_cast<int>(ldb),
              beta, c, static_cast<int>(ldc));
}

// One (sequence, head) problem: where its tokens are and how to turn them into features.
struct Task {
  int64_t batch = 0, t0 = 0, len = 0, h = 0, start_pos = 0, state_index = 0;
};

struct Io {
  const TensorView *q, *k, *v, *out;  // out is null when only the state is wanted
  bool state_only = false;
  // A head group's chunk staged by run_chunked for the current group head j: the row of token
  // s0 + i lies at base + i * cols (q, k, v, the vector gate); the output row at
  // so + (j * c + i) * Dv, scattered afterwards. Null: the tensors are read and written in place.
  // The *_in flags: the staged rows already are the scratch rows (w.qf, w.kf, w.vp, w.g).
  const float *sq = nullptr, *sk = nullptr, *sv = nullptr, *sg = nullptr;
  float* so = nullptr;
  int64_t s0 = 0, j = 0, c = 0;
  bool q_in = false, k_in = false, v_in = false, g_in = false;
  // Staged row i (of the chunk starting at s0), or null when not staged.
  const float* staged(const float* base, int64_t i, int64_t cols) const { return base ? base + i * cols : nullptr; }
};

// Per-thread scratch of the chunk and recurrent paths.
struct Scratch {
  std::vector<float> qf, kf, vp, a, y, qd, kd, g, bsum, beta, tmp, row, ks, kr, rawq, rawk, proj, m, ex;
  std::vector<float> stage;  // run_chunked's staged chunk of a head group
  std::vector<std::vector<float>> hq, hk, hv, hg;  // its per-head rows swapped in as qf, kf, vp, g
  void ensure(const Resolved& r, int64_t c) {
    const int64_t f = r.f, dvp = r.dvp;
    auto grow = [](std::vector<float>& v, int64_t n) {
      if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
    };
    grow(qf, c * f);
    grow(kf, c * f);
    grow(qd, c * f);
    grow(kd, c * f);
    grow(kr, c * std::max<int64_t>(f, 2));
    grow(vp, c * dvp);
    grow(y, c * dvp);
    grow(ks, c * dvp);
    grow(a, c * c);
    grow(m, c * c);
    grow(ex, 3 * c + r.f);
    grow(g, c * f);
    grow(bsum, c * f);
    grow(beta, c);
    grow(tmp, std::max<int64_t>({r.d, 2 * r.p.feature_proj_dim, r.f, r.dv}) + 8);
    grow(row, std::max(r.d, r.dv) + 8);
    grow(rawq, c * r.d);
    grow(rawk, c * r.d);
    grow(proj, c * std::max(r.f, r.p.feature_proj_dim));
  }
};

bool vector_gate(const Resolved& r) { return r.p.decay == DecayKind::kVectorGate; }
int64_t gate_cols(const Resolved& r) { return vector_gate(r) ? r.f : 1; }

// Loads n tokens [s0, s0 + n) of a task into features, value columns (with the ones column of the
// denominator) and log-decays (g: n x gate_cols, 0 when there is no decay).
void load_tokens(const Resolved& r, const Io& io, const Task& t, int64_t s0, int64_t n, Scratch& w) {
  const int64_t kvh = t.h / r.group;
  const int64_t gc = gate_cols(r);
  // Rows of one head are H * d apart, so the hardware prefetcher restarts at every page; fetch a
  // few tokens ahead explicitly (f32 inputs).
  constexpr int64_t kAhead = 4;
  // The key rows (absent for HGRN2, which derives its key from the gate) and the vector gate's rows
  // are fetched the same way.
  const bool pf = io.sq == nullptr && io.q->dtype == DType::kF32 && io.v->dtype == DType::kF32 &&
                  (r.p.tie_key_to_gate || io.k->dtype == DType::kF32);
  const bool pf_gate = vector_gate(r);  // the gate is f32 (resolve checks it)
  // Projection feature maps run as one GEMM over the block of rows (feature_rows).
  const bool batched = r.p.feature_map == FeatureMap::kPerformer || r.p.feature_map == FeatureMap::kHedgehog;
  // Row readers: from the staged chunk when there is one (i counts from its start), else in place.
  auto load_q = [&](int64_t i, int64_t s, float* dst) {
    if (const float* src = io.staged(io.sq, s0 + i - io.s0, r.d)) std::memcpy(dst, src, sizeof(float) * r.d);
    else load_row(*io.q, t.batch, s, t.h, r.d, dst);
  };
  auto load_k = [&](int64_t i, int64_t s, float* dst) {
    if (const float* src = io.staged(io.sk, s0 + i - io.s0, r.d)) std::memcpy(dst, src, sizeof(float) * r.d);
    else load_row(*io.k, t.batch, s, kvh, r.d, dst);
  };
  for (int64_t i = 0; i < n; ++i) {
    const int64_t s = t.t0 + s0 + i;
    const int64_t pos = t.start_pos + s0 + i;
    if (pf && s0 + i + kAhead < t.len) {
      const float* qa = static_cast<const float*>(io.q->data) + io.q->offset(t.batch, s + kAhead, t.h, 0);
      const float* va = static_cast<const float*>(io.v->data) + io.v->offset(t.batch, s + kAhead, kvh, 0);
      for (int64_t c = 0; c < r.d; c += 16) __builtin_prefetch(qa + c);
      if (!r.p.tie_key_to_gate) {
        const float* ka = static_cast<const float*>(io.k->data) + io.k->offset(t.batch, s + kAhead, kvh, 0);
        for (int64_t c = 0; c < r.d; c += 16) __builtin_prefetch(ka + c);
      }
      if (pf_gate) {
        const float* ga = static_cast<const float*>(r.p.gate.data) + r.p.gate.offset(t.batch, s + kAhead, t.h, 0);
        for (int64_t c = 0; c < r.f; c += 16) __builtin_prefetch(ga + c);
      }
      for (int64_t c = 0; c < r.dv; c += 16) __builtin_prefetch(va + c);
    }
    const bool identity = r.p.feature_map == FeatureMap::kIdentity;  // load straight into the features
    if (batched) {
      load_q(i, s, &w.rawq[i * r.d]);
    } else if (identity) {
      if (!io.q_in) load_q(i, s, &w.qf[i * r.f]);
    } else {
      // A staged row is read by the feature map where it lies.
      const float* src = io.staged(io.sq, s0 + i - io.s0, r.d);
      if (!src) {
        load_q(i, s, w.row.data());
        src = w.row.data();
      }
      feature_row(r, t.h, src, pos, true, &w.qf[i * r.f], w.tmp.data());
    }
    // Gates first: HGRN2 derives the key from them.
    float* gi = &w.g[i * gc];
    switch (r.p.decay) {
      case DecayKind::kNone: gi[0] = 0.0f; break;
      case DecayKind::kPerHead: gi[0] = r.p.maybe_head_log_decay[t.h]; break;
      case DecayKind::kScalarGate: gi[0] = r.p.gate.get(t.batch, s, t.h, 0); break;
      case DecayKind::kVectorGate:
        if (io.g_in) break;
        if (const float* src = io.staged(io.sg, s0 + i - io.s0, r.f)) std::memcpy(gi, src, sizeof(float) * r.f);
        else load_row(r.p.gate, t.batch, s, t.h, r.f, gi);
        break;
    }
    if (r.p.tie_key_to_gate) {
      one_minus_exp(gi, &w.kf[i * r.f], r.f);  // 1 - e^g, exact for small g
    } else {
      if (batched) {
        load_k(i, s, &w.rawk[i * r.d]);
      } else if (identity) {
        if (!io.k_in) load_k(i, s, &w.kf[i * r.f]);
      } else {
        const float* src = io.staged(io.sk, s0 + i - io.s0, r.d);
        if (!src) {
          load_k(i, s, w.row.data());
          src = w.row.data();
        }
        feature_row(r, t.h, src, pos, false, &w.kf[i * r.f], w.tmp.data());
      }
    }
    float* vr = &w.vp[i * r.dvp];
    if (io.v_in) {
    } else if (const float* src = io.staged(io.sv, s0 + i - io.s0, r.dv)) std::memcpy(vr, src, sizeof(float) * r.dv);
    else load_row(*io.v, t.batch, s, kvh, r.dv, vr);
    if (r.dvp > r.dv) vr[r.dv] = 1.0f;
    if (r.p.update == UpdateRule::kDelta) w.beta[i] = r.p.beta.get(t.batch, s, t.h, 0);
  }
  if (batched) {
    feature_rows(r, t.h, w.rawq.data(), n, true, w.qf.data(), w.proj.data());
    feature_rows(r, t.h, w.rawk.data(), n, false, w.kf.data(), w.proj.data());
  }
}

// y (Dv' values of one token) -> normalization -> out.
void finish_row(const Resolved& r, const Io& io, const Task& t, int64_t s_local, const float* y, float* tmp) {
  const int64_t dv = r.dv;
  switch (r.p.norm) {
    case LinearNorm::kNone:
      scale(y, r.scale, tmp, dv);
      break;
    case LinearNorm::kDenominator: {
      // The readout scale cancels in the ratio; eps guards an all-zero feature row.
      const float inv = 1.0f / (y[dv] + r.p.norm_eps);
      for (int64_t i = 0; i < dv; ++i) tmp[i] = y[i] * inv;
      break;
    }
    case LinearNorm::kOutputRms: {
      double ss = 0;
      for (int64_t i = 0; i < dv; ++i) ss += static_cast<double>(y[i]) * y[i];
      // RMSNorm is invariant to the readout scale except through eps; apply it for consistency.
      const double sc = r.scale;
      const float inv = static_cast<float>(sc / std::sqrt(sc * sc * ss / static_cast<double>(dv) + r.p.norm_eps));
      for (int64_t i = 0; i < dv; ++i) tmp[i] = y[i] * inv;
      break;
    }
  }
  if (io.so) std::memcpy(io.so + (io.j * io.c + s_local - io.s0) * dv, tmp, sizeof(float) * dv);
  else store_row(*io.out, t.batch, t.t0 + s_local, t.h, dv, tmp);
}

// ---------------------------------------------------------------------------------------------
// Recurrent form: one token at a time, state S [F, Dv'].
void run_recurrent(const Resolved& r, const Io& io, const Task& t, float* S, Scratch& w) {
  const int64_t f = r.f, dvp = r.dvp, gc = gate_cols(r);
  std::vector<float> y(static_cast<size_t>(dvp)), u(static_cast<size_t>(dvp));
  for (int64_t s = 0; s < t.len; ++s) {
    load_tokens(r, io, t, s, 1, w);
    const float* qf = w.qf.data();
    const float* kf = w.kf.data();
    const float* vp = w.vp.data();
    if (r.p.update == UpdateRule::kAdditive) {
      for (int64_t i = 0; i < f; ++i) {
        const float a = r.p.decay == DecayKind::kNone ? 1.0f : std::exp(w.g[gc == 1 ? 0 : i]);
        const float ki = kf[i];
        float* Si = S + i * dvp;
        for (int64_t j = 0; j < dvp; ++j) Si[j] = a * Si[j] + ki * vp[j];
      }
    } else {
      const float a = r.p.decay == DecayKind::kNone ? 1.0f : std::exp(w.g[0]);
      std::fill(u.begin(), u.end(), 0.0f);
      for (int64_t i = 0; i < f; ++i) {
        float* Si = S + i * dvp;
        for (int64_t j = 0; j < dvp; ++j) {
          Si[j] *= a;
          u[j] += Si[j] * kf[i];
        }
      }
      const float bt = w.beta[0];
      for (int64_t j = 0; j < dvp; ++j) u[j] = bt * (vp[j] - u[j]);
      for (int64_t i = 0; i < f; ++i) {
        float* Si = S + i * dvp;
        for (int64_t j = 0; j < dvp; ++j) Si[j] += kf[i] * u[j];
      }
    }
    std::fill(y.begin(), y.end(), 0.0f);
    for (int64_t i = 0; i < f; ++i) {
      const float qi = qf[i];
      const float* Si = S + i * dvp;
      for (int64_t j = 0; j < dvp; ++j) y[j] += qi * Si[j];
    }
    finish_row(r, io, t, s, y.data(), w.tmp.data());
  }
}

// ---------------------------------------------------------------------------------------------
// Chunked form.
//
// Per chunk of n tokens with inclusive in-chunk log-decay sums b_i (S_prev the state before it):
//   A_ij = (qf_i . kf_j) e^{b_i - b_j} for j <= i (per feature for vector gates), else 0
//   additive: Y = A Vp + (Qf * e^{b}) S_prev;  S = e^{b_n} S_prev + (Kf * e^{b_n - b})^T Vp
//   delta:    U solves (I + L) U = diag(beta) (Vp - (Kf * e^{b}) S_prev), with the strictly lower
//             L_jl = beta_j e^{b_j - b_l} kf_j . kf_l (the UT transform of the WY representation,
//             Yang et al. 2024), then Y = A U + (Qf * e^b) S_prev, S = e^{b_n} S_prev + (Kf * e^{b_n - b})^T U.
void build_decay_sums(const Resolved& r, int64_t n, Scratch& w) {
  // Row by row (the same additions in the same order as a per-column running sum, but contiguous).
  const int64_t gc = gate_cols(r);
  const float* g = w.g.data();
  float* b = w.bsum.data();
  for (int64_t c = 0; c < gc; ++c) b[c] = g[c];
  for (int64_t i = 1; i < n; ++i)
    for (int64_t c = 0; c < gc; ++c) b[i * gc + c] = b[(i - 1) * gc + c] + g[i * gc + c];
}

// A (n x n, ld n) with decays; only j <= i is meaningful, the rest is set to 0.
// Returns true when it left Qf * e^{b} in qd and Kf * e^{-b} in kr (the factorized vector-gate
// path), which the caller reuses.
bool build_intra(const Resolved& r, int64_t n, Scratch& w) {
  const int64_t f = r.f;
  float* A = w.a.data();
  if (!vector_gate(r)) {
    gemm(false, true, n, n, f, 1.0f, w.qf.data(), f, w.kf.data(), f, 0.0f, A, n);
    const bool decays = r.p.decay != DecayKind::kNone;
    // e^{b_i - b_j} = e^{b_i} e^{-b_j}: both factors stay inside f32 range while the chunk's total
    // log-decay is above -kFactorLimit, and the product then has the same relative accuracy as
    // one exp; stronger decays take one exp per pair.
    const bool factor = decays && w.bsum[n - 1] > -kFactorLimit;
    float* e_pos = w.kr.data();
    float* e_neg = w.kr.data() + n;
    if (factor)
      for (int64_t j = 0; j < n; ++j) {
        e_pos[j] = std::exp(w.bsum[j]);
        e_neg[j] = std::exp(-w.bsum[j]);
      }
    for (int64_t i = 0; i < n; ++i) {
      float* Ai = A + i * n;
      if (factor) {
        const float ei = e_pos[i];
        for (int64_t j = 0; j <= i; ++j) Ai[j] *= ei * e_neg[j];
      } else if (decays) {
        const float bi = w.bsum[i];
        for (int64_t j = 0; j <= i; ++j) Ai[j] *= std::exp(bi - w.bsum[j]);
      }
      for (int64_t j = i + 1; j < n; ++j) Ai[j] = 0.0f;
    }
    return false;
  }
  const float* B = w.bsum.data();
  // Vector gate, moderate decays: A = (Qf * e^{b}) (Kf * e^{-b})^T as one GEMM (same argument as
  // above, per feature), then the causal mask.
  float bmin = 0.0f;
  for (int64_t c = 0; c < f; ++c) bmin = std::min(bmin, B[(n - 1) * f + c]);
  if (bmin > -kFactorLimit) {
    for (int64_t i = 0; i < n; ++i) exp_pair(&w.qf[i * f], &w.kf[i * f], B + i * f, &w.qd[i * f], &w.kr[i * f], f);
    gemm(false, true, n, n, f, 1.0f, w.qd.data(), f, w.kr.data(), f, 0.0f, A, n);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = i + 1; j < n; ++j) A[i * n + j] = 0.0f;
    return true;
  }
  // Vector gate, strong decays: sub-blocks of kSub rows.
  for (int64_t i0 = 0; i0 < n; i0 += kSub) {
    const int64_t i1 = std::min(n, i0 + kSub), ni = i1 - i0;
    // Reference r = b_{i0 - 1} (0 before the chunk): rows scaled by e^{b_i - r}, keys by e^{r - b_j}.
    const float* rr = i0 > 0 ? B + (i0 - 1) * f : nullptr;
    if (i0 > 0) {
      for (int64_t i = i0; i < i1; ++i) mul_exp_diff(&w.qf[i * f], B + i * f, rr, &w.qd[(i - i0) * f], f);
      for (int64_t j = 0; j < i0; ++j) mul_exp_diff(&w.kf[j * f], rr, B + j * f, &w.kr[j * f], f);
      gemm(false, true, ni, i0, f, 1.0f, w.qd.data(), f, w.kr.data(), f, 0.0f, A + i0 * n, n);
    }
    for (int64_t i = i0; i < i1; ++i) {
      float* Ai = A + i * n;
      const float* qi = &w.qf[i * f];
      const float* bi = B + i * f;
      for (int64_t j = i0; j <= i; ++j) {
        const float* kj = &w.kf[j * f];
        const float* bj = B + j * f;
        float acc = 0.0f;
        for (int64_t c = 0; c < f; ++c) acc += qi[c] * kj[c] * std::exp(bi[c] - bj[c]);
        Ai[j] = acc;
      }
      for (int64_t j = i + 1; j < n; ++j) Ai[j] = 0.0f;
    }
  }
  return false;
}

// One chunk [s0, s0 + n) of one (sequence, head): reads S_prev from S and leaves the new state.
void chunk_step(const Resolved& r, const Io& io, const Task& t, int64_t s0, int64_t n, float* S, Scratch& w) {
  const int64_t f = r.f, dvp = r.dvp, gc = gate_cols(r), C = r.p.chunk_size;
  const bool delta = r.p.update == UpdateRule::kDelta;
  const bool decays = r.p.decay != DecayKind::kNone;
  float* epos = w.ex.data();         // e^{b_i} per row (scalar decays)
  float* eneg = w.ex.data() + C;     // e^{-b_i}
  float* ebn = w.ex.data() + 3 * C;  // e^{b_n} per state row (gc of them)
  {
    load_tokens(r, io, t, s0, n, w);
    build_decay_sums(r, n, w);
    const float* B = w.bsum.data();
    const float* bn = B + (n - 1) * gc;
    // first: the vector-gate path uses qd/kr as scratch. The state alone needs no intra-chunk block.
    const bool have_qd = !io.state_only && build_intra(r, n, w);
    for (int64_t c = 0; c < gc; ++c) ebn[c] = decays ? bn[c] : 0.0f;
    if (decays) exp_shift_inplace(ebn, gc, 0.0f, 1.0f);
    // Qd = Qf * e^{b_i};  Kd = Kf * e^{b_n - b_j}  (both factors <= 1). Without decay they are the
    // features themselves.
    const float* qd = w.qd.data();
    const float* kd = w.kd.data();
    if (!decays) {
      qd = w.qf.data();
      kd = w.kf.data();
    } else if (have_qd) {
      // Factorized GLA block: Qd is already there and Kd = (Kf * e^{-b}) * e^{b_n}, one multiply.
      for (int64_t i = 0; i < n; ++i) mul_vec(&w.kr[i * f], ebn, &w.kd[i * f], f);
    } else if (gc == 1) {  // one factor per row
      for (int64_t i = 0; i < n; ++i) {
        scale(&w.qf[i * f], std::exp(B[i]), &w.qd[i * f], f);
        scale(&w.kf[i * f], std::exp(bn[0] - B[i]), &w.kd[i * f], f);
      }
    } else {
      for (int64_t i = 0; i < n; ++i) {
        mul_exp_diff(&w.qf[i * f], B + i * f, nullptr, &w.qd[i * f], f);
        mul_exp_diff(&w.kf[i * f], bn, B + i * f, &w.kd[i * f], f);
      }
    }
    const float* vals = w.vp.data();
    if (delta) {
      // The UT transform (Yang et al. 2024, "Parallelizing Linear Transformers with the Delta Rule
      // over Sequence Length"): with R = diag(beta) (Vp - (Kf * e^{b}) S_prev) the chunk's
      // pseudo-values solve (I + L) U = R, L strictly lower with L_il = beta_i e^{b_i - b_l} kf_i . kf_l.
      // That is one unit-lower triangular solve on the n x n matrix with Dv' right-hand sides
      // (unit_lower_solve, a SIMD forward substitution; cblas_strsm is slower on chunk-sized systems),
      // after two GEMMs for Kf Kf^T and Kf S_prev.
      float* U = w.ks.data();
      const float* kr = w.kf.data();
      float bmin = 0.0f, bmax = 0.0f;
      if (decays) {
        for (int64_t i = 0; i < n; ++i) {
          epos[i] = std::exp(B[i]);
          bmin = std::min(bmin, B[i]);
          bmax = std::max(bmax, B[i]);
          scale(&w.kf[i * f], epos[i], &w.kr[i * f], f);
        }
        kr = w.kr.data();
      }
      gemm(false, false, n, dvp, f, -1.0f, kr, f, S, dvp, 0.0f, U, dvp);
      for (int64_t i = 0; i < n; ++i) {
        const float bt = w.beta[i];
        float* Ui = U + i * dvp;
        const float* Vi = &w.vp[i * dvp];
        for (int64_t j = 0; j < dvp; ++j) Ui[j] = bt * (Vi[j] + Ui[j]);
      }
      float* M = w.m.data();
      gemm(false, true, n, n, f, 1.0f, w.kf.data(), f, w.kf.data(), f, 0.0f, M, n);
      // The pairwise decay e^{b_i - b_l} <= 1 as e^{b_i} e^{-b_l} while both stay in f32 range
      // (as in build_intra), otherwise one exp per pair. Only the strict lower triangle is read.
      const bool factor = bmin > -kFactorLimit && bmax < kFactorLimit;
      if (decays && factor)
        for (int64_t i = 0; i < n; ++i) eneg[i] = 1.0f / epos[i];
      for (int64_t i = 1; i < n; ++i) {
        float* Mi = M + i * n;
        const float bt = w.beta[i];
        if (!decays) {
          for (int64_t l = 0; l < i; ++l) Mi[l] *= bt;
        } else if (factor) {
          const float ci = bt * epos[i];
          for (int64_t l = 0; l < i; ++l) Mi[l] *= ci * eneg[l];
        } else {
          for (int64_t l = 0; l < i; ++l) Mi[l] *= bt * std::exp(B[i] - B[l]);
        }
      }
      unit_lower_solve(M, n, U, dvp, n, dvp);
      vals = U;
    }
    // Y = A vals + Qd S_prev. Without a normalization the GEMMs write the (scaled) output rows
    // straight into an f32 output (its rows are ld = H * Dv apart), which saves a pass over Y.
    const bool direct = !io.state_only && r.p.norm == LinearNorm::kNone && dvp == r.dv &&
                        io.out->dtype == DType::kF32 && io.out->stride[3] == 1;
    float* Y = w.y.data();
    int64_t ldy = dvp;
    float alpha = 1.0f;
    if (direct) {
      if (io.so) {
        Y = io.so + (io.j * io.c + s0 - io.s0) * dvp;
      } else {
        Y = static_cast<float*>(io.out->data) + io.out->offset(t.batch, t.t0 + s0, t.h, 0);
        ldy = io.out->stride[1];
      }
      alpha = r.scale;
    }
    if (!io.state_only) {
      gemm(false, false, n, dvp, n, alpha, w.a.data(), n, vals, dvp, 0.0f, Y, ldy);
      gemm(false, false, n, dvp, f, alpha, qd, f, S, dvp, 1.0f, Y, ldy);
    }
    // S = e^{b_n} S + Kd^T vals.
    if (decays) {
      if (gc == 1) {
        if (ebn[0] != 1.0f) scale(S, ebn[0], S, f * dvp);
      } else {
        for (int64_t c = 0; c < f; ++c)
          if (ebn[c] != 1.0f) scale(S + c * dvp, ebn[c], S + c * dvp, dvp);
      }
    }
    gemm(true, false, f, dvp, n, 1.0f, kd, f, vals, dvp, 1.0f, S, dvp);
    if (!direct && !io.state_only)
      for (int64_t i = 0; i < n; ++i) finish_row(r, io, t, s0 + i, Y + i * dvp, w.tmp.data());
  }
}

// Whether a tensor's heads lie side by side in f32 (a group's rows of one token are one block).
bool stageable(const TensorView& t, int64_t cols) {
  return t.dtype == DType::kF32 && t.stride[3] == 1 && t.stride[2] == cols;
}

// The chunked form for a group of heads of one sequence (tasks[j], state S + j * F * Dv'), chunk
// by chunk and, inside a chunk, head by head. A head's token rows are H * d floats apart: at
// H * d = 1024 that is exactly 4 KiB, so all rows of a chunk fall into the same few cache sets and
// one head alone walks a new page per row, which prefetching cannot cure (the lines evict each
// other). When the heads of the group lie side by side (f32, no
// GQA), each token's rows of all the group's heads are copied as one contiguous block into a
// staging buffer laid out head by head (and the output goes the other way at the end of the chunk).
void run_chunked(const Resolved& r, const Io& io, const Task* tasks, int64_t n_heads, float* S, Scratch& w) {
  const int64_t C = r.p.chunk_size, len = tasks[0].len, sf = r.f * r.dvp;
  const bool stage = !io.state_only && n_heads > 1 && r.group == 1 && stageable(*io.q, r.d) && stageable(*io.v, r.dv) &&
                     stageable(*io.out, r.dv) && (r.p.tie_key_to_gate || stageable(*io.k, r.d)) &&
                     (!vector_gate(r) || stageable(r.p.gate, r.f));
  Io sio = io;
  // Per tensor and group head, where its staged rows go: a slice of w.stage, or (in place, when
  // the rows need no transformation) a buffer of its own that is swapped with the scratch rows
  // while that head computes, so load_tokens copies nothing.
  const bool identity = r.p.feature_map == FeatureMap::kIdentity;
  const bool in_q = identity, in_k = identity && !r.p.tie_key_to_gate, in_v = r.dvp == r.dv, in_g = vector_gate(r);
  std::vector<float*> bq(n_heads), bk(n_heads), bv(n_heads), bg(n_heads);
  if (stage) {
    const int64_t per = C * n_heads;
    if (static_cast<int64_t>(w.stage.size()) < per * (2 * r.d + 2 * r.dv)) w.stage.resize(static_cast<size_t>(per * (2 * r.d + 2 * r.dv)));
    sio.so = w.stage.data() + per * (2 * r.d + r.dv);
    sio.c = C;
    sio.q_in = in_q;
    sio.k_in = in_k;
    sio.v_in = in_v;
    sio.g_in = in_g;
    auto place = [&](std::vector<std::vector<float>>& own, const std::vector<float>& like, bool in, float* shared,
                     int64_t cols, std::vector<float*>& base) {
      if (in && static_cast<int64_t>(own.size()) < n_heads) own.resize(static_cast<size_t>(n_heads));
      for (int64_t j = 0; j < n_heads; ++j) {
        if (in) {
          if (own[j].size() < like.size()) own[j].resize(like.size());
          base[j] = own[j].data();
        } else {
          base[j] = shared + j * C * cols;
        }
      }
    };
    place(w.hq, w.qf, in_q, w.stage.data(), r.d, bq);
    if (!r.p.tie_key_to_gate) place(w.hk, w.kf, in_k, w.stage.data() + per * r.d, r.d, bk);
    place(w.hv, w.vp, in_v, w.stage.data() + 2 * per * r.d, r.dv, bv);
    if (vector_gate(r)) place(w.hg, w.g, true, nullptr, r.f, bg);
  }
  const Task& t0 = tasks[0];
  // Copies tokens [s0, s0 + n) of the group's heads from a tensor into base[j] + i * cols.
  auto gather = [&](const TensorView& tv, const std::vector<float*>& base, int64_t cols, int64_t s0, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      const float* row = static_cast<const float*>(tv.data) + tv.offset(t0.batch, t0.t0 + s0 + i, t0.h, 0);
      for (int64_t j = 0; j < n_heads; ++j) std::memcpy(base[j] + i * cols, row + j * cols, sizeof(float) * cols);
    }
  };
  for (int64_t s0 = 0; s0 < len; s0 += C) {
    const int64_t n = std::min(C, len - s0);
    if (stage) {
      sio.s0 = s0;
      gather(*io.q, bq, r.d, s0, n);
      if (!r.p.tie_key_to_gate) gather(*io.k, bk, r.d, s0, n);
      gather(*io.v, bv, r.dv, s0, n);
      if (vector_gate(r)) gather(r.p.gate, bg, r.f, s0, n);
    }
    for (int64_t j = 0; j < n_heads; ++j) {
      if (!stage) {
        chunk_step(r, sio, tasks[j], s0, n, S + j * sf, w);
        continue;
      }
      sio.j = j;
      sio.sq = bq[j];
      sio.sk = bk[j];
      sio.sv = bv[j];
      sio.sg = bg[j];
      if (in_q) std::swap(w.qf, w.hq[j]);
      if (in_k) std::swap(w.kf, w.hk[j]);
      if (in_v) std::swap(w.vp, w.hv[j]);
      if (in_g) std::swap(w.g, w.hg[j]);
      chunk_step(r, sio, tasks[j], s0, n, S + j * sf, w);
      if (in_q) std::swap(w.qf, w.hq[j]);
      if (in_k) std::swap(w.kf, w.hk[j]);
      if (in_v) std::swap(w.vp, w.hv[j]);
      if (in_g) std::swap(w.g, w.hg[j]);
    }
    if (stage)
      for (int64_t i = 0; i < n; ++i) {
        float* row = static_cast<float*>(io.out->data) + io.out->offset(t0.batch, t0.t0 + s0 + i, t0.h, 0);
        for (int64_t j = 0; j < n_heads; ++j)
          std::memcpy(row + j * r.dv, sio.so + (j * C + i) * r.dv, sizeof(float) * r.dv);
      }
  }
}

// ---------------------------------------------------------------------------------------------
// Parallel (quadratic) form, for checking: the whole sequence at once with pairwise decays.
void run_parallel(const Resolved& r, const Io& io, const Task& t, float* S, Scratch& w) {
  const int64_t T = t.len, f = r.f, dvp = r.dvp, gc = gate_cols(r);
  if (T == 0) return;
  Scratch all;
  all.ensure(r, T);
  load_tokens(r, io, t, 0, T, all);
  // Global running sums of log-decays (double: T can be long and the differences must stay exact).
  std::vector<double> b(static_cast<size_t>(T * gc));
  for (int64_t c = 0; c < gc; ++c) {
    double acc = 0;
    for (int64_t i = 0; i < T; ++i) b[i * gc + c] = (acc += all.g[i * gc + c]);
  }
  auto decay = [&](int64_t i, int64_t j, int64_t c) {  // e^{b_i - b_j}; j = -1 means before the sequence
    const double bj = j < 0 ? 0.0 : b[j * gc + (gc == 1 ? 0 : c)];
    return std::exp(b[i * gc + (gc == 1 ? 0 : c)] - bj);
  };
  std::vector<double> vals(static_cast<size_t>(T * dvp));
  for (int64_t i = 0; i < T * dvp; ++i) vals[i] = all.vp[i];
  if (r.p.update == UpdateRule::kDelta) {
    // U = (I + L)^{-1} diag(beta) (Vp - e^{b} Kf S0) over the whole sequence.
    for (int64_t i = 0; i < T; ++i) {
      const double e = decay(i, -1, 0);
      for (int64_t j = 0; j < dvp; ++j) {
        double ks = 0;
        for (int64_t c = 0; c < f; ++c) ks += static_cast<double>(all.kf[i * f + c]) * S[c * dvp + j];
        vals[i * dvp + j] = all.beta[i] * (all.vp[i * dvp + j] - e * ks);
      }
      for (int64_t l = 0; l < i; ++l) {
        double kk = 0;
        for (int64_t c = 0; c < f; ++c) kk += static_cast<double>(all.kf[i * f + c]) * all.kf[l * f + c];
        const double coef = all.beta[i] * decay(i, l, 0) * kk;
        for (int64_t j = 0; j < dvp; ++j) vals[i * dvp + j] -= coef * vals[l * dvp + j];
      }
    }
  }
  std::vector<float> y(static_cast<size_t>(dvp));
  std::vector<double> acc(static_cast<size_t>(dvp));
  for (int64_t i = 0; i < T; ++i) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t c = 0; c < f; ++c) {
      const double qc = all.qf[i * f + c] * decay(i, -1, c);
      for (int64_t j = 0; j < dvp; ++j) acc[j] += qc * S[c * dvp + j];
    }
    for (int64_t l = 0; l <= i; ++l) {
      double wgt = 0;
      for (int64_t c = 0; c < f; ++c) wgt += static_cast<double>(all.qf[i * f + c]) * all.kf[l * f + c] * decay(i, l, c);
      for (int64_t j = 0; j < dvp; ++j) acc[j] += wgt * vals[l * dvp + j];
    }
    for (int64_t j = 0; j < dvp; ++j) y[j] = static_cast<float>(acc[j]);
    finish_row(r, io, t, i, y.data(), all.tmp.data());
  }
  // Final state: e^{b_T} S0 + sum_l e^{b_T - b_l} kf_l vals_l^T.
  std::vector<double> Sn(static_cast<size_t>(f * dvp));
  for (int64_t c = 0; c < f; ++c) {
    const double e = decay(T - 1, -1, c);
    for (int64_t j = 0; j < dvp; ++j) Sn[c * dvp + j] = e * S[c * dvp + j];
  }
  for (int64_t l = 0; l < T; ++l)
    for (int64_t c = 0; c < f; ++c) {
      const double kc = all.kf[l * f + c] * decay(T - 1, l, c);
      for (int64_t j = 0; j < dvp; ++j) Sn[c * dvp + j] += kc * vals[l * dvp + j];
    }
  for (int64_t i = 0; i < f * dvp; ++i) S[i] = static_cast<float>(Sn[i]);
}

// The tensors: present, of supported head dims, and of matching shapes (GQA on the heads).
Status check_shapes(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView* maybe_out,
                    const LinearAttentionParams& p) {
  ATTNKIT_RETURN_IF_ERROR(check_view(q, "q"));
  if (!p.tie_key_to_gate) ATTNKIT_RETURN_IF_ERROR(check_view(k, "k"));
  ATTNKIT_RETURN_IF_ERROR(check_view(v, "v"));
  if (maybe_out) ATTNKIT_RETURN_IF_ERROR(check_view(*maybe_out, "out"));
  const int64_t d = q.head_dim(), dv = v.head_dim();
  if (d < 1 || d > 512) return Status::invalid_argument("head_dim " + std::to_string(d) + " is not supported; expected 1..512");
  if (dv < 1 || dv > 1024) return Status::invalid_argument("head_dim_v " + std::to_string(dv) + " is not supported; expected 1..1024");
  const TensorView& kk = p.tie_key_to_gate ? v : k;
  if (!p.tie_key_to_gate && (k.head_dim() != d))
    return Status::invalid_argument("k head_dim " + std::to_string(k.head_dim()) + " differs from q head_dim " + std::to_string(d));
  if (kk.batch() != q.batch() || kk.seq() != q.seq() || v.batch() != q.batch() || v.seq() != q.seq())
    return Status::invalid_argument("k/v shape " + shape_str(kk) + " / " + shape_str(v) + " does not match q " + shape_str(q) +
                                    " in batch and seq");
  if (!p.tie_key_to_gate && k.heads() != v.heads())
    return Status::invalid_argument("k heads " + std::to_string(k.heads()) + " differ from v heads " + std::to_string(v.heads()));
  if (v.heads() < 1 || q.heads() % v.heads() != 0)
    return Status::invalid_argument("heads_q " + std::to_string(q.heads()) + " is not a multiple of heads_kv " +
                                    std::to_string(v.heads()));
  if (!maybe_out) return Status::ok_status();
  const TensorView& out = *maybe_out;
  if (out.batch() != q.batch() || out.seq() != q.seq() || out.heads() != q.heads() || out.head_dim() != dv)
    return Status::invalid_argument("out shape " + shape_str(out) + " must be [batch, seq, heads_q, head_dim_v] = [" +
                                    std::to_string(q.batch()) + ", " + std::to_string(q.seq()) + ", " +
                                    std::to_string(q.heads()) + ", " + std::to_string(dv) + "]");
  return Status::ok_status();
}

// The chunk size and the normalization's epsilon.
Status check_chunk_and_eps(const LinearAttentionParams& p) {
  if (p.chunk_size < 1 || p.chunk_size > 1024)
    return Status::invalid_argument("chunk_size " + std::to_string(p.chunk_size) + " is not supported; expected 1..1024");
  if (!(p.norm_eps >= 0.0f)) return Status::invalid_argument("norm_eps " + std::to_string(p.norm_eps) + " must be >= 0");
  return Status::ok_status();
}

// The parameters that the chosen feature map needs for head dim d.
Status check_feature_map(const LinearAttentionParams& p, int64_t d) {
  switch (p.feature_map) {
    case FeatureMap::kPerformer:
      if (p.performer_features < 0 || p.performer_features > 16384)
        return Status::invalid_argument("performer_features " + std::to_string(p.performer_features) +
                                        " is not supported; expected 0 (= d ln d) .. 16384");
      break;
    case FeatureMap::kHedgehog:
      if (p.maybe_feature_weight == nullptr)
        return Status::invalid_argument("hedgehog feature map needs maybe_feature_weight [heads_q, head_dim, feature_proj_dim]");
      if (p.feature_proj_dim < 1 || p.feature_proj_dim > 4096)
        return Status::invalid_argument("feature_proj_dim " + std::to_string(p.feature_proj_dim) + " is not supported; expected 1..4096");
      break;
    case FeatureMap::kCosformer:
      if (!(p.cosformer_max_len > 0))
        return Status::invalid_argument("cosformer_max_len " + std::to_string(p.cosformer_max_len) +
                                        " must be > 0 (the horizon M; positions must stay below it)");
      break;
    case FeatureMap::kTaylor2:
      if (d > 64) return Status::invalid_argument("taylor2 feature map head_dim " + std::to_string(d) +
                                                  " is not supported; expected 1..64 (F = 1 + d + d(d+1)/2)");
      break;
    default:
      break;
  }
  return Status::ok_status();
}

// The readout scale: params.scale, or by default 1/sqrt(d) for the maps that do not normalize
// their features themselves (fla's convention) and 1 for those that do.
float resolve_scale(const LinearAttentionParams& p, int64_t d) {
  if (!std::isnan(p.scale)) return p.scale;
  const bool self_normalized = p.feature_map == FeatureMap::kPerformer || p.feature_map == FeatureMap::kCosformer ||
                               p.feature_map == FeatureMap::kTaylor2 || p.feature_map == FeatureMap::kHedgehog ||
                               p.feature_map == FeatureMap::kLogNormal;
  return self_normalized ? 1.0f : static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
}

// Feature dimension, value columns, scale, the Taylor map's constant and the projection weights
// (a Performer projection is generated here when none is given).
Status resolve_features(const LinearAttentionParams& p, int64_t d, Resolved* r) {
  r->f = feature_dim_of(p, d);
  r->dvp = r->dv + (p.norm == LinearNorm::kDenominator ? 1 : 0);
  r->stabilize_query = p.norm == LinearNorm::kDenominator;
  r->scale = resolve_scale(p, d);
  const float temp = std::isnan(p.taylor_temperature) ? static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)))
                                                      : p.taylor_temperature;
  if (p.feature_map == FeatureMap::kTaylor2 && !(temp > 0))
    return Status::invalid_argument("taylor_temperature " + std::to_string(temp) + " must be > 0");
  r->taylor_c = std::sqrt(temp);
  if (p.feature_map == FeatureMap::kPerformer) {
    if (p.maybe_feature_weight) {
      r->feature_w = p.maybe_feature_weight;
    } else {
      r->performer_w.resize(static_cast<size_t>(r->f * d));
      make_performer_projection(d, r->f, p.performer_seed, r->performer_w.data());
      r->feature_w = r->performer_w.data();
    }
  } else if (p.feature_map == FeatureMap::kHedgehog) {
    r->feature_w = p.maybe_feature_weight;
  }
  return Status::ok_status();
}

// The decay's inputs (per-head log-decays <= 0, or a gate tensor of f features per token), and
// HGRN2's tied key, which is computed from a vector gate on the identity map.
Status check_decay(const TensorView& q, const LinearAttentionParams& p, int64_t f) {
  switch (p.decay) {
    case DecayKind::kNone: break;
    case DecayKind::kPerHead:
      if (p.maybe_head_log_decay == nullptr) return Status::invalid_argument("decay kPerHead needs maybe_head_log_decay [heads_q]");
      for (int64_t h = 0; h < q.heads(); ++h)
        if (!(p.maybe_head_log_decay[h] <= 0.0f))
          return Status::invalid_argument("maybe_head_log_decay[" + std::to_string(h) + "] = " +
                                          std::to_string(p.maybe_head_log_decay[h]) + " must be <= 0 (a log-decay)");
      break;
    case DecayKind::kScalarGate:
    case DecayKind::kVectorGate: {
      const int64_t want = p.decay == DecayKind::kScalarGate ? 1 : f;
      if (!has(p.gate)) return Status::invalid_argument("decay gate needs params.gate [batch, seq, heads_q, " + std::to_string(want) + "]");
      if (p.gate.dtype != DType::kF32) return Status::invalid_argument(std::string("gate dtype ") + dtype_name(p.gate.dtype) + " is not supported; expected f32");
      if (p.gate.batch() != q.batch() || p.gate.seq() != q.seq() || p.gate.heads() != q.heads() || p.gate.head_dim() != want)
        return Status::invalid_argument("gate shape " + shape_str(p.gate) + " must be [" + std::to_string(q.batch()) + ", " +
                                        std::to_string(q.seq()) + ", " + std::to_string(q.heads()) + ", " + std::to_string(want) + "]");
      break;
    }
  }
  if (p.tie_key_to_gate && p.decay != DecayKind::kVectorGate)
    return Status::invalid_argument("tie_key_to_gate (HGRN2) needs decay kVectorGate");
  if (p.tie_key_to_gate && p.feature_map != FeatureMap::kIdentity)
    return Status::invalid_argument(std::string("tie_key_to_gate (HGRN2) needs the identity feature map, not ") + feature_map_name(p.feature_map));
  return Status::ok_status();
}

// The delta rule's combinations and its write strength beta.
Status check_update_rule(const TensorView& q, const LinearAttentionParams& p) {
  if (p.update != UpdateRule::kDelta) return Status::ok_status();
  if (p.decay == DecayKind::kVectorGate) return Status::unsupported("the delta rule with a vector gate is not supported; use a scalar gate");
  if (p.norm == LinearNorm::kDenominator) return Status::unsupported("the delta rule with the denominator normalization is not supported");
  if (!has(p.beta)) return Status::invalid_argument("the delta rule needs params.beta [batch, seq, heads_q, 1]");
  if (p.beta.dtype != DType::kF32) return Status::invalid_argument(std::string("beta dtype ") + dtype_name(p.beta.dtype) + " is not supported; expected f32");
  if (p.beta.batch() != q.batch() || p.beta.seq() != q.seq() || p.beta.heads() != q.heads() || p.beta.head_dim() != 1)
    return Status::invalid_argument("beta shape " + shape_str(p.beta) + " must be [batch, seq, heads_q, 1]");
  return Status::ok_status();
}

// Packed variable-length sequences (cu_seqlens), and cosFormer's positions, which must stay below
// its horizon in every sequence.
Status check_sequences(const TensorView& q, const LinearAttentionParams& p) {
  if (p.maybe_cu_seqlens) {
    if (q.batch() != 1) return Status::invalid_argument("with cu_seqlens the batch must be 1, got " + std::to_string(q.batch()));
    if (p.n_seqs < 1) return Status::invalid_argument("n_seqs " + std::to_string(p.n_seqs) + " must be >= 1 with cu_seqlens");
    if (p.maybe_cu_seqlens[0] != 0) return Status::invalid_argument("cu_seqlens[0] = " + std::to_string(p.maybe_cu_seqlens[0]) + " must be 0");
    for (int64_t i = 0; i < p.n_seqs; ++i)
      if (p.maybe_cu_seqlens[i + 1] < p.maybe_cu_seqlens[i])
        return Status::invalid_argument("cu_seqlens is not non-decreasing at index " + std::to_string(i + 1));
    if (p.maybe_cu_seqlens[p.n_seqs] != q.seq())
      return Status::invalid_argument("cu_seqlens[n_seqs] = " + std::to_string(p.maybe_cu_seqlens[p.n_seqs]) +
                                      " must equal the total tokens " + std::to_string(q.seq()));
  }
  if (p.feature_map == FeatureMap::kCosformer) {
    const int64_t n_states = p.maybe_cu_seqlens ? p.n_seqs : q.batch();
    for (int64_t i = 0; i < n_states; ++i) {
      const int64_t len = p.maybe_cu_seqlens ? p.maybe_cu_seqlens[i + 1] - p.maybe_cu_seqlens[i] : q.seq();
      const int64_t last = (p.maybe_start_positions ? p.maybe_start_positions[i] : 0) + len - 1;
      if (static_cast<double>(last) >= p.cosformer_max_len)
        return Status::out_of_range("cosformer position " + std::to_string(last) + " reaches cosformer_max_len " +
                                    std::to_string(p.cosformer_max_len));
    }
  }
  return Status::ok_status();
}

// Validates a call and resolves its defaults into r. The checks run in this order, so a call with
// several faults reports the first: tensors, threads, chunk/eps, feature map, decay, update rule, sequences.
Status resolve(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView* maybe_out,
               const LinearAttentionParams& p, Resolved* r) {
  ATTNKIT_RETURN_IF_ERROR(check_shapes(q, k, v, maybe_out, p));
  ATTNKIT_RETURN_IF_ERROR(resolve_threads(p.num_threads, "num_threads", &r->threads));
  ATTNKIT_RETURN_IF_ERROR(check_chunk_and_eps(p));
  const int64_t d = q.head_dim();
  r->p = p;
  r->d = d;
  r->dv = v.head_dim();
  r->heads_q = q.heads();
  r->group = q.heads() / v.heads();
  ATTNKIT_RETURN_IF_ERROR(check_feature_map(p, d));
  ATTNKIT_RETURN_IF_ERROR(resolve_features(p, d, r));
  ATTNKIT_RETURN_IF_ERROR(check_decay(q, p, r->f));
  ATTNKIT_RETURN_IF_ERROR(check_update_rule(q, p));
  return check_sequences(q, p);
}

}  // namespace

}  // namespace linear_internal

using namespace linear_internal;

Status linear_feature_dim(const LinearAttentionParams& params, int64_t head_dim, int64_t* out) {
  if (head_dim < 1 || head_dim > 512)
    return Status::invalid_argument("head_dim " + std::to_string(head_dim) + " is not supported; expected 1..512");
  if (params.feature_map == FeatureMap::kHedgehog && params.feature_proj_dim < 1)
    return Status::invalid_argument("feature_proj_dim " + std::to_string(params.feature_proj_dim) + " must be >= 1 for hedgehog");
  *out = feature_dim_of(params, head_dim);
  return Status::ok_status();
}

Status linear_state_floats(const LinearAttentionParams& params, int64_t head_dim, int64_t head_dim_v, int64_t* out) {
  int64_t f = 0;
  ATTNKIT_RETURN_IF_ERROR(linear_feature_dim(params, head_dim, &f));
  *out = f * (head_dim_v + (params.norm == LinearNorm::kDenominator ? 1 : 0));
  return Status::ok_status();
}

Status validate_linear_attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                                 const LinearAttentionParams& params) {
  Resolved r;
  return resolve(q, k, v, &out, params, &r);
}

double linear_chunked_flops(int64_t batch, int64_t seq, int64_t heads, int64_t feature_dim, int64_t dv_cols,
                            int64_t chunk, bool delta_rule) {
  const double F = static_cast<double>(feature_dim), D = static_cast<double>(dv_cols);
  double per_seq = 0;
  for (int64_t s0 = 0; s0 < seq; s0 += chunk) {
    const double n = static_cast<double>(std::min(chunk, seq - s0));
    per_seq += 2 * n * n * F + 2 * n * n * D + 4 * n * F * D;
    if (delta_rule) per_seq += 2 * n * n * F + n * n * D + 2 * n * F * D;  // K K^T, UT solve, K S
  }
  return per_seq * static_cast<double>(batch) * static_cast<double>(heads);
}

namespace {

// linear_attention and linear_attention_state after validation; maybe_out null = the state alone
// (chunked form, no outputs).
void run_linear(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView* maybe_out,
                const LinearAttentionParams& params, const Resolved& r) {
  const int64_t n_states = params.maybe_cu_seqlens ? params.n_seqs : q.batch();
  const int64_t heads = q.heads();
  const int64_t state_floats = r.f * r.dvp;
  LinearForm form = params.form;
  if (form == LinearForm::kAuto) form = q.seq() <= 8 ? LinearForm::kRecurrent : LinearForm::kChunked;
  if (!maybe_out) form = LinearForm::kChunked;
  Io io{&q, &k, &v, maybe_out};
  io.state_only = maybe_out == nullptr;
  const int nt = r.threads;
  // The chunked form runs heads in groups (see run_chunked): as many heads per group as keep every
  // thread busy, at most kMaxHeadGroup so that the group's states (64 KiB each at F = Dv' = 128)
  // stay in L2. The other forms take one head per task.
  const int64_t group = form == LinearForm::kChunked ? std::clamp<int64_t>(heads / nt, 1, kMaxHeadGroup) : 1;
  const int64_t groups_per_state = (heads + group - 1) / group;
  const int64_t n_tasks = n_states * groups_per_state;
  // OpenBLAS runs inside our OpenMP tasks: keep it on one thread there (restored afterwards) so the
  // machine is not oversubscribed; the parallelism is over (sequence, head).
  const int blas_threads = openblas_get_num_threads();
  openblas_set_num_threads(1);
#pragma omp parallel num_threads(nt)
  {
    Scratch w;
    w.ensure(r, form == LinearForm::kChunked ? params.chunk_size : 1);
    std::vector<float> S(static_cast<size_t>(state_floats * group));
    std::vector<Task> ts(static_cast<size_t>(group));
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < n_tasks; ++task) {
      Task t;
      const int64_t si = task / groups_per_state;
      const int64_t h0 = (task % groups_per_state) * group, h1 = std::min(heads, h0 + group);
      t.state_index = si;
      if (params.maybe_cu_seqlens) {
        t.batch = 0;
        t.t0 = params.maybe_cu_seqlens[si];
        t.len = params.maybe_cu_seqlens[si + 1] - t.t0;
      } else {
        t.batch = si;
        t.t0 = 0;
        t.len = q.seq();
      }
      t.start_pos = params.maybe_start_positions ? params.maybe_start_positions[si] : 0;
      const int64_t nh = h1 - h0;
      const int64_t soff = (si * heads + h0) * state_floats;  // the group's heads are consecutive
      if (params.maybe_initial_state) {
        std::memcpy(S.data(), params.maybe_initial_state + soff, sizeof(float) * state_floats * nh);
      } else {
        std::fill(S.begin(), S.end(), 0.0f);
      }
      for (int64_t j = 0; j < nh; ++j) {
        ts[j] = t;
        ts[j].h = h0 + j;
      }
      for (int64_t j = 0; j < nh && form != LinearForm::kChunked; ++j) {
        float* Sj = S.data() + j * state_floats;
        if (form == LinearForm::kParallel) run_parallel(r, io, ts[j], Sj, w);
        else run_recurrent(r, io, ts[j], Sj, w);
      }
      if (form == LinearForm::kChunked) run_chunked(r, io, ts.data(), nh, S.data(), w);
      if (params.maybe_final_state)
        std::memcpy(params.maybe_final_state + soff, S.data(), sizeof(float) * state_floats * nh);
    }
  }
  openblas_set_num_threads(blas_threads);
}

}  // namespace

Status linear_attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                        const LinearAttentionParams& params) {
  Resolved r;
  ATTNKIT_RETURN_IF_ERROR(resolve(q, k, v, &out, params, &r));
  run_linear(q, k, v, &out, params, r);
  return Status::ok_status();
}

Status linear_attention_state(const TensorView& q, const TensorView& k, const TensorView& v,
                              const LinearAttentionParams& params) {
  if (params.maybe_final_state == nullptr)
    return Status::invalid_argument("linear_attention_state: maybe_final_state is null (it is the only output)");
  Resolved r;
  ATTNKIT_RETURN_IF_ERROR(resolve(q, k, v, nullptr, params, &r));
  run_linear(q, k, v, nullptr, params, r);
  return Status::ok_status();
}

}  // namespace attnkit
