// Infini-attention (Munkhdalai et al. 2024, "Leave No Context Behind"): local causal softmax
// attention inside fixed segments plus a compressive linear-attention memory of all previous
// segments, mixed by a learned per-head gate:
//   A_mem = phi(q) M_{s-1} / (phi(q) z_{s-1}),  phi = elu + 1          (read before the update)
//   M_s = M_{s-1} + phi(K)^T V                                      (linear update), or
//   M_s = M_{s-1} + phi(K)^T (V - phi(K) M_{s-1} / (phi(K) z_{s-1}))  (delta update)
//   z_s = z_{s-1} + sum_t phi(k_t)
//   o = sigmoid(g_h) A_mem + (1 - sigmoid(g_h)) A_dot
// Streaming: tokens of the unfinished segment are kept in the state (at most segment_len), so a
// prefill can be continued token by token and gives the same result.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/linear.h"
#include "attnkit/registry.h"
#include "attnkit/threads.h"
#include "linear/mechanism_util.h"

namespace attnkit {
namespace {

inline float elu1(float x) { return x > 0 ? x + 1.0f : std::exp(x); }

}  // namespace

Status infini_attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                        const InfiniParams& p, InfiniState* st) {
  if (st == nullptr) return Status::invalid_argument("infini state is null");
  int nt = 1;
  ATTNKIT_RETURN_IF_ERROR(resolve_threads(p.num_threads, "num_threads", &nt));
  if (q.data == nullptr || k.data == nullptr || v.data == nullptr || out.data == nullptr)
    return Status::invalid_argument("infini q, k, v, out must not be null");
  if (q.batch() != 1) return Status::invalid_argument("infini batch " + std::to_string(q.batch()) + " is not supported; expected 1 (one state per sequence)");
  const int64_t T = q.seq(), H = q.heads(), d = q.head_dim(), dv = v.head_dim();
  if (p.segment_len < 1) return Status::invalid_argument("segment_len " + std::to_string(p.segment_len) + " must be >= 1");
  if (k.seq() != T || v.seq() != T || k.heads() != H || v.heads() != H || k.head_dim() != d || out.seq() != T ||
      out.heads() != H || out.head_dim() != dv)
    return Status::invalid_argument("infini q, k, v, out shapes disagree (heads of q, k, v must be equal)");
  if (st->heads == 0) {  // fresh state
    st->heads = H;
    st->head_dim = d;
    st->head_dim_v = dv;
    st->memory.assign(static_cast<size_t>(H * d * (dv + 1)), 0.0f);
    st->segment_k.clear();
    st->segment_v.clear();
    st->filled = 0;
  }
  if (st->heads != H || st->head_dim != d || st->head_dim_v != dv)
    return Status::invalid_argument("infini state was made for heads/head_dim/head_dim_v " + std::to_string(st->heads) + "/" +
                                    std::to_string(st->head_dim) + "/" + std::to_string(st->head_dim_v));
  const int64_t L = p.segment_len, dvp = dv + 1;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  st->segment_k.resize(static_cast<size_t>(L * H * d));
  st->segment_v.resize(static_cast<size_t>(L * H * dv));
  const int64_t filled0 = st->filled;

#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
  for (int64_t h = 0; h < H; ++h) {
    float* M = st->memory.data() + h * d * dvp;  // [d, dv + 1], last column z
    const float g = p.maybe_gate_logits ? p.maybe_gate_logits[h] : 0.0f;
    const float mix = 1.0f / (1.0f + std::exp(-g));
    std::vector<float> qr(d), fq(d), fk(d), sc(static_cast<size_t>(L)), o(dv), am(dvp), upd(static_cast<size_t>(L * dvp));
    int64_t filled = filled0;
    for (int64_t t = 0; t < T; ++t) {
      float* Kseg = st->segment_k.data();
      float* Vseg = st->segment_v.data();
      for (int64_t c = 0; c < d; ++c) Kseg[(filled * H + h) * d + c] = k.get(0, t, h, c);
      for (int64_t c = 0; c < dv; ++c) Vseg[(filled * H + h) * dv + c] = v.get(0, t, h, c);
      ++filled;
      for (int64_t c = 0; c < d; ++c) qr[c] = q.get(0, t, h, c);
      // A_dot: causal softmax over the segment so far.
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < filled; ++j) {
        float acc = 0.0f;
        for (int64_t c = 0; c < d; ++c) acc += qr[c] * Kseg[(j * H + h) * d + c];
        sc[j] = acc * scale;
        mx = std::max(mx, sc[j]);
      }
      float den = 0.0f;
      for (int64_t j = 0; j < filled; ++j) den += (sc[j] = std::exp(sc[j] - mx));
      std::fill(o.begin(), o.end(), 0.0f);
      for (int64_t j = 0; j < filled; ++j) {
        const float wj = sc[j] / den;
        for (int64_t c = 0; c < dv; ++c) o[c] += wj * Vseg[(j * H + h) * dv + c];
      }
      // A_mem from the memory of previous segments (0 while it is empty: phi > 0, so z = 0 only then).
      for (int64_t c = 0; c < d; ++c) fq[c] = elu1(qr[c]);
      std::fill(am.begin(), am.end(), 0.0f);
      for (int64_t c = 0; c < d; ++c)
        for (int64_t j = 0; j < dvp; ++j) am[j] += fq[c] * M[c * dvp + j];
      const float inv = am[dv] > 0 ? 1.0f / am[dv] : 0.0f;
      for (int64_t c = 0; c < dv; ++c) out.set(0, t, h, c, mix * am[c] * inv + (1.0f - mix) * o[c]);
      if (filled == L) {
        // Segment complete: compute all updates against M_{s-1} first, then apply them.
        for (int64_t j = 0; j < L; ++j) {
          float* u = &upd[j * dvp];
          for (int64_t c = 0; c < d; ++c) fk[c] = elu1(Kseg[(j * H + h) * d + c]);
          for (int64_t c = 0; c < dv; ++c) u[c] = Vseg[(j * H + h) * dv + c];
          u[dv] = 1.0f;
          if (p.delta_update) {
            std::vector<float> r(dvp, 0.0f);
            for (int64_t c = 0; c < d; ++c)
              for (int64_t jj = 0; jj < dvp; ++jj) r[jj] += fk[c] * M[c * dvp + jj];
            const float ri = r[dv] > 0 ? 1.0f / r[dv] : 0.0f;
            for (int64_t c = 0; c < dv; ++c) u[c] -= r[c] * ri;
          }
        }
        for (int64_t j = 0; j < L; ++j) {
          for (int64_t c = 0; c < d; ++c) fk[c] = elu1(Kseg[(j * H + h) * d + c]);
          const float* u = &upd[j * dvp];
          for (int64_t c = 0; c < d; ++c)
            for (int64_t jj = 0; jj < dvp; ++jj) M[c * dvp + jj] += fk[c] * u[jj];
        }
        filled = 0;
      }
    }
  }
  st->filled = (filled0 + T) % L;
  return Status::ok_status();
}

// ---- registry entry ----

namespace {

using namespace linear_internal;

Mechanism make_infini() {
  Mechanism m;
  m.name = "infini_attention";
  m.family = "linear";
  m.description = "Infini-attention (Munkhdalai et al. 2024): segment-local softmax + compressive memory + gate";
  m.params = {{"segment", "2048", "segment length"}, {"delta", "false", "delta-rule memory update"}};
  m.prepare = [](const ProblemShape& s, const MechanismParams& mp, std::unique_ptr<PreparedRun>* out) -> Status {
    ATTNKIT_RETURN_IF_ERROR(check_linear_shape(s));
    int64_t seg = 0;
    bool delta = false;
    ATTNKIT_RETURN_IF_ERROR(param_int(mp, "segment", &seg));
    ATTNKIT_RETURN_IF_ERROR(param_bool(mp, "delta", &delta));
    if (seg < 1) return Status::invalid_argument("parameter segment=" + mp.at("segment") + " must be >= 1");
    const int64_t B = s.batch, T = s.seq_q, H = s.heads_q, d = s.head_dim;
    auto in = std::make_shared<Inputs>();
    in->make(B, T, H, d, d);
    InfiniParams p;
    p.segment_len = seg;
    p.num_threads = s.threads;
    p.delta_update = delta;
    auto states = std::make_shared<std::vector<InfiniState>>(static_cast<size_t>(B));
    auto run = std::make_unique<FnRun>();
    const int64_t ctx = s.seq_kv - s.seq_q;
    run->fn = [in, p, states, B, T, H, d, ctx]() -> Status {
      for (int64_t b = 0; b < B; ++b) {
        InfiniState& st = (*states)[b];
        if (ctx > 0 && st.heads == 0) {  // decode: a memory and a partly filled segment as context
          st.heads = H;
          st.head_dim = st.head_dim_v = d;
          st.memory.assign(static_cast<size_t>(H * d * (d + 1)), 0.01f);
          st.filled = ctx % p.segment_len;
          st.segment_k.assign(static_cast<size_t>(p.segment_len * H * d), 0.1f);
          st.segment_v.assign(static_cast<size_t>(p.segment_len * H * d), 0.1f);
        }
        const int64_t before = st.filled;
        auto slice = [&](const TensorView& t) {
          TensorView r = t;
          r.data = static_cast<float*>(t.data) + b * t.stride[0];
          r.shape[0] = 1;
          return r;
        };
        ATTNKIT_RETURN_IF_ERROR(infini_attention(slice(in->qv), slice(in->kv), slice(in->vv), slice(in->ov), p, &st));
        if (ctx > 0) st.filled = before;  // timing repeats the same step
      }
      return Status::ok_status();
    };
    // Local causal pairs inside segments (counting the context's partial segment for decode).
    double pairs = 0;
    for (int64_t t = 0; t < T; ++t) pairs += static_cast<double>((ctx + t) % seg + 1);
    run->f = static_cast<double>(B * H) * (pairs * 2.0 * (d + d) + static_cast<double>(T) * 4.0 * d * (d + 1));
    run->b = in->io_bytes() + 8.0 * static_cast<double>(B * H * d * (d + 1));
    *out = std::move(run);
    return Status::ok_status();
  };
  return m;
}
ATTNKIT_REGISTER_MECHANISM(make_infini);

}  // namespace

}  // namespace attnkit
