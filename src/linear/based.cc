// Based (Arora et al. 2024, "Simple linear attention language models balance the recall-throughput
// tradeoff"): a Taylor-2 linear attention, phi(q).phi(k) = 1 + s + s^2/2 with s = q.k/sqrt(d),
// which approximates exp(s) for the global context, plus exact softmax attention over a small
// sliding window (64 tokens) for precise local recall. The window runs through the core exact
// kernel (attnkit::attention with window_left = window - 1, causal); the two outputs are mixed.
//
// Streaming: the state keeps the Taylor state and the last window - 1 keys/values. A continued
// call attends [recent keys ; new keys] with bottom-right causal alignment, so a decode step is
// the same computation as the corresponding prefill row.
#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/linear.h"
#include "attnkit/registry.h"
#include "linear/mechanism_util.h"

namespace attnkit {
namespace {

// Copies a [1, n, h, w] view into a dense buffer at row offset `row0` of a [rows, h, w] array.
void copy_rows(const TensorView& t, int64_t n, float* dst) {
  const int64_t h = t.heads(), w = t.head_dim();
  for (int64_t s = 0; s < n; ++s)
    for (int64_t i = 0; i < h; ++i)
      for (int64_t j = 0; j < w; ++j) dst[(s * h + i) * w + j] = t.get(0, s, i, j);
}

}  // namespace

Status based_attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                       const BasedParams& p, BasedState* st) {
  if (p.window < 1) return Status::invalid_argument("based window " + std::to_string(p.window) + " must be >= 1");
  if (!(p.mix >= 0.0f && p.mix <= 1.0f)) return Status::invalid_argument("based mix " + std::to_string(p.mix) + " must be in [0, 1]");
  if (out.data == nullptr) return Status::invalid_argument("based out is null");
  if (st && q.batch() != 1) return Status::invalid_argument("based with a state needs batch 1, got " + std::to_string(q.batch()));
  LinearAttentionParams lp;
  lp.feature_map = FeatureMap::kTaylor2;
  lp.norm = LinearNorm::kDenominator;
  lp.form = p.form;
  lp.chunk_size = p.chunk_size;
  lp.num_threads = p.num_threads;
  ATTNKIT_RETURN_IF_ERROR(validate_linear_attention(q, k, v, out, lp));
  const int64_t T = q.seq(), Hq = q.heads(), Hkv = k.heads(), d = q.head_dim(), dv = v.head_dim();
  const int64_t n = out.numel();
  std::vector<float> lin(static_cast<size_t>(n)), win(static_cast<size_t>(n));
  const TensorView lin_v = TensorView::contiguous(lin.data(), DType::kF32, out.shape[0], T, Hq, dv);
  const TensorView win_v = TensorView::contiguous(win.data(), DType::kF32, out.shape[0], T, Hq, dv);

  // Linear (Taylor) part, continuing the state when there is one.
  int64_t sf = 0;
  ATTNKIT_RETURN_IF_ERROR(linear_state_floats(lp, d, dv, &sf));
  if (st) {
    if (st->linear_state.empty()) st->linear_state.assign(static_cast<size_t>(Hq * sf), 0.0f);
    if (static_cast<int64_t>(st->linear_state.size()) != Hq * sf)
      return Status::invalid_argument("based state holds " + std::to_string(st->linear_state.size()) +
                                      " floats; expected heads_q * F * (head_dim_v + 1) = " + std::to_string(Hq * sf));
    lp.maybe_initial_state = st->linear_state.data();
    lp.maybe_final_state = st->linear_state.data();
  }
  ATTNKIT_RETURN_IF_ERROR(linear_attention(q, k, v, lin_v, lp));

  // Window part: [recent ; new] keys with the queries aligned to the end (bottom-right causal).
  AttentionParams ap;
  ap.causal = true;
  ap.window_left = p.window - 1;  // inclusive: the token itself and window - 1 before it
  ap.window_right = 0;
  ap.num_threads = p.num_threads;
  const int64_t nr = st ? st->n_recent : 0;
  if (nr == 0) {
    ATTNKIT_RETURN_IF_ERROR(attention(q, k, v, win_v, nullptr, ap));
  } else {
    std::vector<float> kk(static_cast<size_t>((nr + T) * Hkv * d)), vv(static_cast<size_t>((nr + T) * Hkv * dv));
    std::copy(st->recent_k.begin(), st->recent_k.begin() + nr * Hkv * d, kk.begin());
    std::copy(st->recent_v.begin(), st->recent_v.begin() + nr * Hkv * dv, vv.begin());
    copy_rows(k, T, kk.data() + nr * Hkv * d);
    copy_rows(v, T, vv.data() + nr * Hkv * dv);
    const TensorView kc = TensorView::contiguous(kk.data(), DType::kF32, 1, nr + T, Hkv, d);
    const TensorView vc = TensorView::contiguous(vv.data(), DType::kF32, 1, nr + T, Hkv, dv);
    ATTNKIT_RETURN_IF_ERROR(attention(q, kc, vc, win_v, nullptr, ap));
  }
  if (st) {
    // Keep the last window - 1 keys/values of [recent ; new].
    const int64_t keep = std::min(p.window - 1, nr + T);
    std::vector<float> kk(static_cast<size_t>((nr + T) * Hkv * d)), vv(static_cast<size_t>((nr + T) * Hkv * dv));
    std::copy(st->recent_k.begin(), st->recent_k.begin() + nr * Hkv * d, kk.begin());
    std::copy(st->recent_v.begin(), st->recent_v.begin() + nr * Hkv * dv, vv.begin());
    copy_rows(k, T, kk.data() + nr * Hkv * d);
    copy_rows(v, T, vv.data() + nr * Hkv * dv);
    st->recent_k.assign(kk.end() - keep * Hkv * d, kk.end());
    st->recent_v.assign(vv.end() - keep * Hkv * dv, vv.end());
    st->n_recent = keep;
  }
  for (int64_t b = 0; b < out.shape[0]; ++b)
    for (int64_t s = 0; s < T; ++s)
      for (int64_t h = 0; h < Hq; ++h)
        for (int64_t j = 0; j < dv; ++j)
          out.set(b, s, h, j, p.mix * win_v.get(b, s, h, j) + (1.0f - p.mix) * lin_v.get(b, s, h, j));
  return Status::ok_status();
}

// ---- registry entry ----

namespace {

using namespace linear_internal;

Mechanism make_based() {
  Mechanism m;
  m.name = "based";
  m.family = "linear";
  m.description = "Based (Arora et al. 2024): Taylor-2 linear attention + exact sliding window (core kernel)";
  m.params = {{"window", "64", "sliding window keys"}, {"mix", "0.5", "weight of the window output"},
              {"qk_dim", "16", "width of q and k (features 1 + d + d(d+1)/2)"}, {"chunk", "64", "chunk of the linear part"}};
  m.prepare = [](const ProblemShape& s, const MechanismParams& mp, std::unique_ptr<PreparedRun>* out) -> Status {
    ATTNKIT_RETURN_IF_ERROR(check_linear_shape(s));
    BasedParams p;
    int64_t qk = 0;
    double mix = 0;
    ATTNKIT_RETURN_IF_ERROR(param_int(mp, "window", &p.window));
    ATTNKIT_RETURN_IF_ERROR(param_float(mp, "mix", &mix));
    ATTNKIT_RETURN_IF_ERROR(read_qk_dim(mp, &qk));
    ATTNKIT_RETURN_IF_ERROR(param_int(mp, "chunk", &p.chunk_size));
    p.mix = static_cast<float>(mix);
    p.num_threads = s.threads;
    const int64_t B = s.batch, T = s.seq_q, H = s.heads_q, d = s.head_dim;
    auto in = std::make_shared<Inputs>();
    in->make(B, T, H, qk, d);
    // v is d wide, q/k qk wide: rebuild the views of k and v with their own widths.
    in->v.resize(static_cast<size_t>(B * T * H * d));
    in->o.resize(in->v.size());
    fill_uniform(in->v, 3);
    in->vv = TensorView::contiguous(in->v.data(), DType::kF32, B, T, H, d);
    in->ov = TensorView::contiguous(in->o.data(), DType::kF32, B, T, H, d);
    LinearAttentionParams lp;
    lp.feature_map = FeatureMap::kTaylor2;
    lp.norm = LinearNorm::kDenominator;
    ATTNKIT_RETURN_IF_ERROR(validate_linear_attention(in->qv, in->kv, in->vv, in->ov, lp));
    int64_t f = 0;
    ATTNKIT_RETURN_IF_ERROR(linear_feature_dim(lp, qk, &f));
    auto run = std::make_unique<FnRun>();
    const int64_t ctx = s.seq_kv - s.seq_q;
    if (ctx > 0) {
      // Decode: one state per batch row with a full window of recent keys as context.
      auto states = std::make_shared<std::vector<BasedState>>(static_cast<size_t>(B));
      for (BasedState& st : *states) {
        st.n_recent = std::min(p.window - 1, ctx);
        st.recent_k.resize(static_cast<size_t>(st.n_recent * H * qk));
        st.recent_v.resize(static_cast<size_t>(st.n_recent * H * d));
        fill_uniform(st.recent_k, 11);
        fill_uniform(st.recent_v, 12);
      }
      run->fn = [in, p, states, B]() -> Status {
        for (int64_t b = 0; b < B; ++b) {
          auto slice = [&](const TensorView& t) {
            TensorView r = t;
            r.data = static_cast<float*>(t.data) + b * t.stride[0];
            r.shape[0] = 1;
            return r;
          };
          ATTNKIT_RETURN_IF_ERROR(based_attention(slice(in->qv), slice(in->kv), slice(in->vv), slice(in->ov), p, &(*states)[b]));
        }
        return Status::ok_status();
      };
    } else {
      run->fn = [in, p]() { return based_attention(in->qv, in->kv, in->vv, in->ov, p); };
    }
    double pairs = 0;
    for (int64_t t = 0; t < T; ++t) pairs += static_cast<double>(std::min<int64_t>(ctx + t + 1, p.window));
    run->f = linear_chunked_flops(B, T, H, f, d + 1, ctx > 0 ? 1 : p.chunk_size, false) + static_cast<double>(B * H) * pairs * 2.0 * (qk + d);
    run->b = in->io_bytes();
    *out = std::move(run);
    return Status::ok_status();
  };
  return m;
}
ATTNKIT_REGISTER_MECHANISM(make_based);

}  // namespace

}  // namespace attnkit
