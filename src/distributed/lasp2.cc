// LASP-2 (Sun et al. 2025, "LASP-2: Rethinking Sequence Parallelism for Linear Attention and Its
// Hybrid"): with the additive update S_t = diag(a_t) S_{t-1} + kf_t [v_t, 1]^T, the state after
// rank r's chunk is
//   S_r = diag(A_r) S_{r-1} + M_r,   A_r = prod_{t in chunk r} a_t,   M_r = the chunk run from S = 0,
// so every rank's starting state follows from the (M_j, A_j) of the ranks before it. One
// MPI_Allgather of (M_r, log A_r) replaces the ring of LASP-1; the chunk is then run from its
// starting state, which gives the intra-chunk part and the inter-chunk readout together. M_r comes
// from the engine's state-only call (linear_attention_state: the chunked form's K^T V updates
// without the intra-chunk block and the readout, about a third of a full pass).
//
// The delta rule (DeltaNet, Gated DeltaNet) is not a sum of decayed contributions: its chunk map
// is S -> P_r S + M_r with P_r = prod_t a_t (I - beta_t kf_t kf_t^T), a dense F x F matrix. The
// combination stays exact with P_r in place of the diagonal decay: every rank gathers (M_j, P_j)
// and composes S_r = P_r S_{r-1} + M_r. P_r comes from the state-only call run with v = 0 from
// identity columns (the value columns evolve independently, so each pass yields Dv columns of
// P_r), which costs ceil(F / Dv) extra state-only passes over the chunk and F^2 more floats per
// head in the all-gather.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "distributed/dist_internal.h"

namespace attnkit::dist {
namespace {

using internal::Comm;

Status check_lasp2(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                   const LinearAttentionParams& p) {
  if (p.maybe_cu_seqlens) return Status::unsupported("variable-length batches (maybe_cu_seqlens) are not supported by LASP-2");
  if (p.maybe_start_positions)
    return Status::invalid_argument("maybe_start_positions must be null for LASP-2 (set from the rank's offset)");
  if (q.seq() == 0) return Status::ok_status();
  ATTNKIT_RETURN_IF_ERROR(validate_linear_attention(q, k, v, out, p));
  // The chunk's decay product exp(sum g_t) is only a decay for log-decays g <= 0; a positive gate
  // would make the combined states grow without bound.
  if (p.decay == DecayKind::kScalarGate || p.decay == DecayKind::kVectorGate) {
    const TensorView& g = p.gate;
    for (int64_t b = 0; b < g.batch(); ++b)
      for (int64_t t = 0; t < g.seq(); ++t)
        for (int64_t h = 0; h < g.heads(); ++h)
          for (int64_t f = 0; f < g.head_dim(); ++f) {
            const float x = g.get(b, t, h, f);
            if (!(x <= 0.0f))
              return Status::invalid_argument("gate value " + std::to_string(x) + " at [" + std::to_string(b) + ", " +
                                              std::to_string(t) + ", " + std::to_string(h) + ", " + std::to_string(f) +
                                              "] must be <= 0 (a log-decay)");
          }
  }
  return Status::ok_status();
}

// The delta rule's chunk transition P [B, H, F, F] (row-major, P[f][g]): the chunk run with v = 0
// from a state whose value column c is the unit vector e_g ends with column c = P e_g. Each pass
// covers Dv of the F unit vectors.
Status delta_transition(const TensorView& q, const TensorView& k, const TensorView& v, const LinearAttentionParams& base,
                        int64_t F, int64_t dv, float* p_out) {
  const int64_t B = q.batch(), H = q.heads(), L = q.seq();
  std::vector<uint8_t> zeros(static_cast<size_t>(B * L * v.heads() * dv) * dtype_size(v.dtype), 0);
  const TensorView v0 = TensorView::contiguous(zeros.data(), v.dtype, B, L, v.heads(), dv);
  std::vector<float> init(static_cast<size_t>(B * H * F * dv)), fin(init.size());
  LinearAttentionParams pass = base;
  pass.maybe_initial_state = init.data();
  pass.maybe_final_state = fin.data();
  for (int64_t g0 = 0; g0 < F; g0 += dv) {
    const int64_t w = std::min(dv, F - g0);
    std::fill(init.begin(), init.end(), 0.0f);
    for (int64_t bh = 0; bh < B * H; ++bh)
      for (int64_t c = 0; c < w; ++c) init[(bh * F + g0 + c) * dv + c] = 1.0f;
    ATTNKIT_RETURN_IF_ERROR(linear_attention_state(q, k, v0, pass));
    for (int64_t bh = 0; bh < B * H; ++bh)
      for (int64_t f = 0; f < F; ++f)
        for (int64_t c = 0; c < w; ++c) p_out[(bh * F + f) * F + g0 + c] = fin[(bh * F + f) * dv + c];
  }
  return Status::ok_status();
}

}  // namespace

Status lasp2_linear_attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                              const Lasp2Params& params, CommStats* maybe_stats) {
  const double t_start = internal::now_seconds();
  Comm c;
  ATTNKIT_RETURN_IF_ERROR(internal::comm_info(params.comm, &c));
  const LinearAttentionParams& lp = params.linear;
  int64_t F = 0, state_floats = 0;
  Status st = check_lasp2(q, k, v, out, lp);
  if (st.ok()) st = linear_feature_dim(lp, q.head_dim(), &F);
  if (st.ok()) st = linear_state_floats(lp, q.head_dim(), v.head_dim(), &state_floats);
  ATTNKIT_RETURN_IF_ERROR(agree(st, c.comm));
  ATTNKIT_RETURN_IF_ERROR(internal::check_same_on_all_ranks(
      {{"batch", q.batch()}, {"heads_q", q.heads()}, {"heads_kv", k.heads()}, {"head_dim", q.head_dim()},
       {"head_dim_v", v.head_dim()}, {"feature_map", static_cast<int64_t>(lp.feature_map)},
       {"decay", static_cast<int64_t>(lp.decay)}, {"norm", static_cast<int64_t>(lp.norm)},
       {"update", static_cast<int64_t>(lp.update)},
       {"initial state given", lp.maybe_initial_state != nullptr}},
      c.comm));

  const int64_t B = q.batch(), H = q.heads(), L = q.seq();
  const int64_t dv_cols = state_floats / F;  // head_dim_v, +1 with the denominator column
  const int64_t n_state = B * H * state_floats;
  const bool delta = lp.update == UpdateRule::kDelta;
  // Additive: log A_r per (batch, head, feature), one value per head unless the gate is per
  // feature. Delta rule: the transition P_r [batch, head, F, F].
  const int64_t n_decay = delta ? B * H * F * F : B * H * (lp.decay == DecayKind::kVectorGate ? F : 1);
  const int64_t width = n_state + n_decay;
  CommStats stats;

  // The chunk's global offset (positions of cosFormer and Cottention continue across ranks).
  int64_t offset = 0, local_len = L;
  MPI_Exscan(&local_len, &offset, 1, MPI_INT64_T, MPI_SUM, c.comm);
  if (c.rank == 0) offset = 0;  // MPI_Exscan leaves rank 0's result undefined
  std::vector<int64_t> starts(static_cast<size_t>(B), offset);

  // Contribution M_r: the chunk's state from a zero state, without its outputs.
  std::vector<float> mine(static_cast<size_t>(width), 0.0f);
  LinearAttentionParams pass = lp;
  pass.maybe_start_positions = starts.data();
  if (L > 0) {
    pass.maybe_initial_state = nullptr;
    pass.maybe_final_state = mine.data();
    st = linear_attention_state(q, k, v, pass);
  }
  float* decay_part = mine.data() + n_state;  // log A_r, or P_r for the delta rule
  if (st.ok() && L > 0 && delta) st = delta_transition(q, k, v, pass, F, dv_cols, decay_part);
  if (st.ok() && L > 0 && !delta) {
    const int64_t per_head = n_decay / (B * H);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t f = 0; f < per_head; ++f) {
          double sum = 0;
          switch (lp.decay) {
            case DecayKind::kNone: break;
            case DecayKind::kPerHead: sum = static_cast<double>(L) * lp.maybe_head_log_decay[h]; break;
            case DecayKind::kScalarGate:
            case DecayKind::kVectorGate:
              for (int64_t t = 0; t < L; ++t) sum += lp.gate.get(b, t, h, f);
              break;
          }
          decay_part[(b * H + h) * per_head + f] = static_cast<float>(sum);
        }
  }
  if (delta && L == 0)  // an empty chunk's transition is the identity
    for (int64_t bh = 0; bh < B * H; ++bh)
      for (int64_t f = 0; f < F; ++f) decay_part[(bh * F + f) * F + f] = 1.0f;
  double t0 = internal::now_seconds();
  ATTNKIT_RETURN_IF_ERROR(agree(st, c.comm));

  std::vector<float> all(static_cast<size_t>(width * c.size));
  MPI_Allgather(mine.data(), static_cast<int>(width), MPI_FLOAT, all.data(), static_cast<int>(width), MPI_FLOAT, c.comm);
  stats.wait_seconds += internal::now_seconds() - t0;
  stats.bytes_sent += width * static_cast<int64_t>(sizeof(float)) * (c.size - 1);

  // Prefix: S = initial, then S = diag(A_j) S + M_j (delta rule: P_j S + M_j) for the ranks j
  // before this one (and, for the final state, for every rank).
  std::vector<double> S(static_cast<size_t>(n_state), 0.0);
  if (lp.maybe_initial_state)
    for (int64_t i = 0; i < n_state; ++i) S[i] = lp.maybe_initial_state[i];
  std::vector<float> start_state(static_cast<size_t>(n_state));
  const int64_t per_head = delta ? 0 : n_decay / (B * H);
  for (int j = 0; j <= c.size; ++j) {
    if (j == c.rank)
      for (int64_t i = 0; i < n_state; ++i) start_state[i] = static_cast<float>(S[i]);
    if (j == c.size) break;
    const float* m = all.data() + j * width;
    const float* la = m + n_state;
    for (int64_t bh = 0; bh < B * H; ++bh) {
      double* s_bh = S.data() + bh * F * dv_cols;
      const float* m_bh = m + bh * F * dv_cols;
      if (delta) {
        // S = P_j S + M_j
        const float* p_bh = la + bh * F * F;
        std::vector<double> next(static_cast<size_t>(F * dv_cols));
        for (int64_t f = 0; f < F; ++f)
          for (int64_t g = 0; g < F; ++g) {
            const double pfg = p_bh[f * F + g];
            if (pfg == 0.0) continue;
            for (int64_t x = 0; x < dv_cols; ++x) next[f * dv_cols + x] += pfg * s_bh[g * dv_cols + x];
          }
        for (int64_t i = 0; i < F * dv_cols; ++i) s_bh[i] = next[i] + m_bh[i];
      } else {
        // S = diag(A_j) S + M_j
        for (int64_t f = 0; f < F; ++f) {
          const double a = std::exp(static_cast<double>(la[bh * per_head + (per_head == 1 ? 0 : f)]));
          for (int64_t x = 0; x < dv_cols; ++x) s_bh[f * dv_cols + x] = a * s_bh[f * dv_cols + x] + m_bh[f * dv_cols + x];
        }
      }
    }
  }

  if (L > 0) {
    pass.maybe_initial_state = start_state.data();
    pass.maybe_final_state = nullptr;
    st = linear_attention(q, k, v, out, pass);
  }
  t0 = internal::now_seconds();
  ATTNKIT_RETURN_IF_ERROR(agree(st, c.comm));
  stats.wait_seconds += internal::now_seconds() - t0;
  if (lp.maybe_final_state)
    for (int64_t i = 0; i < n_state; ++i) lp.maybe_final_state[i] = static_cast<float>(S[i]);
  stats.total_seconds = internal::now_seconds() - t_start;
  stats.blocks_computed = L > 0 ? 2 + (delta ? (F + dv_cols - 1) / dv_cols : 0) : 0;  // passes over the chunk
  if (maybe_stats) *maybe_stats = stats;
  return Status::ok_status();
}

}  // namespace attnkit::dist
