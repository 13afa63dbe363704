// Attention as an RNN (Aaren; Feng et al. 2024, "Attention as an RNN"): softmax attention of one
// fixed query per head over every prefix, as a parallel prefix scan over the associative operator
//   (m_a, c_a, a_a) (+) (m_b, c_b, a_b) = (m, c_a e^{m_a - m} + c_b e^{m_b - m}, a_a e^{m_a - m} + a_b e^{m_b - m}),
// m = max(m_a, m_b), where a token contributes (s_t, 1, v_t). The identity element is
// (-inf, 0, 0); combining with it must not form -inf - -inf, so an empty side is skipped.
//
// Parallel form: a two-level (reduce-then-scan) prefix scan. Each block of scan_block tokens is
// reduced to one summary (in parallel), an exclusive scan over the few summaries gives every
// block its carry-in, and each block is rescanned from its carry-in (in parallel). The sequential
// form is the O(1)-memory RNN step.
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

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// (m, c, a[dv]) accumulated relative to e^m.
struct ScanState {
  float m = kNegInf;
  float c = 0.0f;
  std::vector<float> a;
};

// x <- x (+) (m, c, a).
void combine(ScanState& x, float m, float c, const float* a, int64_t dv) {
  if (m == kNegInf) return;
  if (x.m == kNegInf) {
    x.m = m;
    x.c = c;
    std::copy(a, a + dv, x.a.begin());
    return;
  }
  const float mn = std::max(x.m, m);
  const float ro = std::exp(x.m - mn), rn = std::exp(m - mn);
  x.c = x.c * ro + c * rn;
  for (int64_t j = 0; j < dv; ++j) x.a[j] = x.a[j] * ro + a[j] * rn;
  x.m = mn;
}

// x <- x (+) one token with score s and value row v (the RNN step).
inline void step(ScanState& x, float s, const float* v, int64_t dv) {
  if (x.m == kNegInf) {
    x.m = s;
    x.c = 1.0f;
    std::copy(v, v + dv, x.a.begin());
    return;
  }
  if (s <= x.m) {
    const float rn = std::exp(s - x.m);
    x.c += rn;
    for (int64_t j = 0; j < dv; ++j) x.a[j] += rn * v[j];
  } else {
    const float ro = std::exp(x.m - s);
    x.c = x.c * ro + 1.0f;
    for (int64_t j = 0; j < dv; ++j) x.a[j] = x.a[j] * ro + v[j];
    x.m = s;
  }
}

}  // namespace

void aaren_init_state(int64_t n_states, int64_t heads, int64_t dv, float* state) {
  for (int64_t i = 0; i < n_states * heads; ++i) {
    float* s = state + i * (2 + dv);
    s[0] = kNegInf;
    std::fill(s + 1, s + 2 + dv, 0.0f);
  }
}

Status aaren_attention(const float* query, const TensorView& k, const TensorView& v, const TensorView& out,
                       const AarenParams& p) {
  if (query == nullptr) return Status::invalid_argument("aaren query is null; expected [heads, head_dim] f32");
  if (k.data == nullptr || v.data == nullptr || out.data == nullptr)
    return Status::invalid_argument("aaren k, v and out must not be null");
  const int64_t d = k.head_dim(), dv = v.head_dim(), H = k.heads();
  if (d < 1 || d > 512) return Status::invalid_argument("head_dim " + std::to_string(d) + " is not supported; expected 1..512");
  if (v.batch() != k.batch() || v.seq() != k.seq() || v.heads() != H)
    return Status::invalid_argument("aaren v must match k in batch, seq and heads");
  if (out.batch() != k.batch() || out.seq() != k.seq() || out.heads() != H || out.head_dim() != dv)
    return Status::invalid_argument("aaren out must be [batch, seq, heads, head_dim_v]");
  if (p.scan_block < 1) return Status::invalid_argument("scan_block " + std::to_string(p.scan_block) + " must be >= 1");
  if (p.maybe_cu_seqlens && (k.batch() != 1 || p.n_seqs < 1 || p.maybe_cu_seqlens[p.n_seqs] != k.seq()))
    return Status::invalid_argument("aaren cu_seqlens needs batch 1, n_seqs >= 1 and cu_seqlens[n_seqs] = seq");
  const float scale = std::isnan(p.scale) ? static_cast<float>(1.0 / std::sqrt(static_cast<double>(d))) : p.scale;
  const int64_t n_states = p.maybe_cu_seqlens ? p.n_seqs : k.batch();
  const int64_t sf = 2 + dv;
  int nt = 1;
  ATTNKIT_RETURN_IF_ERROR(resolve_threads(p.num_threads, "num_threads", &nt));

  auto score = [&](int64_t b, int64_t t, int64_t h) {
    float acc = 0.0f;
    for (int64_t i = 0; i < d; ++i) acc += query[h * d + i] * k.get(b, t, h, i);
    return acc * scale;
  };
  auto load_v = [&](int64_t b, int64_t t, int64_t h, float* dst) {
    for (int64_t j = 0; j < dv; ++j) dst[j] = v.get(b, t, h, j);
  };

  // One long sequence and head: the outer loop stays serial so the block loops below can use the
  // threads; otherwise the (sequence, head) tasks are the parallel unit.
#pragma omp parallel for schedule(dynamic, 1) if (n_states * H > 1) num_threads(nt)
  for (int64_t task = 0; task < n_states * H; ++task) {
    const int64_t si = task / H, h = task % H;
    const int64_t b = p.maybe_cu_seqlens ? 0 : si;
    const int64_t t0 = p.maybe_cu_seqlens ? p.maybe_cu_seqlens[si] : 0;
    const int64_t len = p.maybe_cu_seqlens ? p.maybe_cu_seqlens[si + 1] - t0 : k.seq();
    ScanState carry;
    carry.a.assign(static_cast<size_t>(dv), 0.0f);
    if (p.maybe_initial_state) {
      const float* s = p.maybe_initial_state + task * sf;
      carry.m = s[0];
      carry.c = s[1];
      std::copy(s + 2, s + 2 + dv, carry.a.begin());
    }
    std::vector<float> vrow(static_cast<size_t>(dv)), orow(static_cast<size_t>(dv));
    auto emit = [&](const ScanState& x, int64_t t) {
      const float inv = x.c > 0 ? 1.0f / x.c : 0.0f;
      for (int64_t j = 0; j < dv; ++j) orow[j] = x.a[j] * inv;
      for (int64_t j = 0; j < dv; ++j) out.set(b, t, h, j, orow[j]);
    };
    if (p.sequential || len <= p.scan_block) {
      for (int64_t t = t0; t < t0 + len; ++t) {
        load_v(b, t, h, vrow.data());
        step(carry, score(b, t, h), vrow.data(), dv);
        emit(carry, t);
      }
    } else {
      const int64_t nb = (len + p.scan_block - 1) / p.scan_block;
      std::vector<ScanState> sums(static_cast<size_t>(nb));
      // Reduce: one summary per block (independent; runs in parallel when this task is alone).
#pragma omp parallel for schedule(static) if (n_states * H == 1) num_threads(nt)
      for (int64_t bi = 0; bi < nb; ++bi) {
        ScanState& x = sums[bi];
        x.a.assign(static_cast<size_t>(dv), 0.0f);
        std::vector<float> vr(static_cast<size_t>(dv));
        const int64_t lo = t0 + bi * p.scan_block, hi = std::min(t0 + len, lo + p.scan_block);
        for (int64_t t = lo; t < hi; ++t) {
          load_v(b, t, h, vr.data());
          step(x, score(b, t, h), vr.data(), dv);
        }
      }
      // Exclusive scan of the summaries, seeded with the initial state.
      std::vector<ScanState> carry_in(static_cast<size_t>(nb));
      for (int64_t bi = 0; bi < nb; ++bi) {
        carry_in[bi] = carry;
        combine(carry, sums[bi].m, sums[bi].c, sums[bi].a.data(), dv);
      }
      // Rescan each block from its carry-in and write the outputs.
#pragma omp parallel for schedule(static) if (n_states * H == 1) num_threads(nt)
      for (int64_t bi = 0; bi < nb; ++bi) {
        ScanState x = carry_in[bi];
        std::vector<float> vr(static_cast<size_t>(dv)), orw(static_cast<size_t>(dv));
        const int64_t lo = t0 + bi * p.scan_block, hi = std::min(t0 + len, lo + p.scan_block);
        for (int64_t t = lo; t < hi; ++t) {
          load_v(b, t, h, vr.data());
          step(x, score(b, t, h), vr.data(), dv);
          const float inv = x.c > 0 ? 1.0f / x.c : 0.0f;
          for (int64_t j = 0; j < dv; ++j) out.set(b, t, h, j, x.a[j] * inv);
        }
      }
    }
    if (p.maybe_final_state) {
      float* s = p.maybe_final_state + task * sf;
      s[0] = carry.m;
      s[1] = carry.c;
      std::copy(carry.a.begin(), carry.a.end(), s + 2);
    }
  }
  return Status::ok_status();
}

// ---- registry entry ----

namespace {

using namespace linear_internal;

Mechanism make_aaren() {
  Mechanism m;
  m.name = "aaren";
  m.family = "linear";
  m.description = "Attention as an RNN (Feng et al. 2024): softmax with one learned query per head, parallel prefix scan";
  m.params = {{"block", "256", "tokens per block of the two-level scan"}, {"sequential", "false", "run the O(1)-memory RNN step instead"}};
  m.prepare = [](const ProblemShape& s, const MechanismParams& mp, std::unique_ptr<PreparedRun>* out) -> Status {
    ATTNKIT_RETURN_IF_ERROR(check_linear_shape(s));
    int64_t block = 0;
    bool seq = false;
    ATTNKIT_RETURN_IF_ERROR(param_int(mp, "block", &block));
    ATTNKIT_RETURN_IF_ERROR(param_bool(mp, "sequential", &seq));
    if (block < 1) return Status::invalid_argument("parameter block=" + mp.at("block") + " must be >= 1");
    auto in = std::make_shared<Inputs>();
    const int64_t B = s.batch, T = s.seq_q, H = s.heads_q, d = s.head_dim;
    in->make(B, T, H, d, d);
    auto query = std::make_shared<std::vector<float>>(static_cast<size_t>(H * d));
    fill_uniform(*query, 9);
    auto st = std::make_shared<std::vector<float>>(static_cast<size_t>(B * H * (2 + d)));
    aaren_init_state(B, H, d, st->data());
    AarenParams p;
    p.scan_block = block;
    p.num_threads = s.threads;
    p.sequential = seq || s.seq_q < s.seq_kv;
    if (s.seq_q < s.seq_kv) {
      p.maybe_initial_state = st->data();
      p.maybe_final_state = st->data();
    }
    auto run = std::make_unique<FnRun>();
    run->fn = [in, query, st, p]() { return aaren_attention(query->data(), in->kv, in->vv, in->ov, p); };
    run->f = static_cast<double>(B * T * H) * 2.0 * (d + d) * (p.sequential ? 1 : 2);
    run->b = in->io_bytes();
    *out = std::move(run);
    return Status::ok_status();
  };
  return m;
}
ATTNKIT_REGISTER_MECHANISM(make_aaren);

}  // namespace

}  // namespace attnkit
