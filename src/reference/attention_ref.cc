// Naive double-precision attention (see attention_ref.h). The math follows attention.h line by
// line; FlashAttention's conventions (Dao et al., 2022) for bottom-right causal alignment and
// varlen packing, Press et al. (2022) for ALiBi, Nakanishi (2025) for Scalable-Softmax,
// Ramapuram et al. (2024) for sigmoid attention with bias -ln(n).
#include "reference/attention_ref.h"

#include <cmath>
#include <limits>
#include <string>

#include "core/util.h"

namespace attnkit::reference {
namespace {

using core::shape_str;

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// One sequence of the call: a batch element or one piece of a packed varlen batch.
struct Seq {
  int64_t batch = 0;    // batch index into the views
  int64_t index = 0;    // sequence index (custom-mask batch index)
  int64_t q_begin = 0, q_len = 0;
  int64_t k_begin = 0, k_len = 0;
};

// Minimal argument checks; enough to never read out of bounds. The library's own validation
// (attnkit::validate_attention) is tested separately against the error-message contract.
Status check_call(const TensorView& q, const TensorView& k, const TensorView& v, const AttentionParams& p,
                  std::vector<Seq>* seqs) {
  if (!q.data) return Status::invalid_argument("q.data is null");
  if (!k.data) return Status::invalid_argument("k.data is null");
  if (!v.data) return Status::invalid_argument("v.data is null");
  const int64_t d = q.head_dim();
  if (d < 1 || d > kMaxHeadDim) return Status::invalid_argument("head_dim " + std::to_string(d) + " is not supported");
  if (v.head_dim() < 1 || v.head_dim() > kMaxHeadDim) {
    return Status::invalid_argument("head_dim_v " + std::to_string(v.head_dim()) + " is not supported");
  }
  if (k.head_dim() != d) return Status::invalid_argument("k shape " + shape_str(k) + " does not match q " + shape_str(q));
  if (k.batch() != q.batch() || v.batch() != q.batch() || k.heads() != v.heads() || k.seq() != v.seq()) {
    return Status::invalid_argument("k/v shapes " + shape_str(k) + " " + shape_str(v) + " do not match q " + shape_str(q));
  }
  if (k.heads() < 1 || q.heads() % k.heads() != 0) {
    return Status::invalid_argument("heads_q " + std::to_string(q.heads()) + " is not a multiple of heads_kv " +
                                    std::to_string(k.heads()));
  }
  if (p.mask.kind != MaskKind::kNone && !p.mask.data) return Status::invalid_argument("mask.data is null");
  seqs->clear();
  const bool varlen = p.maybe_cu_seqlens_q || p.maybe_cu_seqlens_k;
  if (!varlen) {
    for (int64_t b = 0; b < q.batch(); ++b) seqs->push_back({b, b, 0, q.seq(), 0, k.seq()});
    return Status::ok_status();
  }
  if (!p.maybe_cu_seqlens_q || !p.maybe_cu_seqlens_k) {
    return Status::invalid_argument("varlen needs both cu_seqlens_q and cu_seqlens_k");
  }
  if (q.batch() != 1) return Status::invalid_argument("varlen batch " + std::to_string(q.batch()) + " must be 1");
  const int32_t* cq = p.maybe_cu_seqlens_q;
  const int32_t* ck = p.maybe_cu_seqlens_k;
  if (p.n_seqs < 1) return Status::invalid_argument("n_seqs " + std::to_string(p.n_seqs) + " must be >= 1");
  if (cq[0] != 0 || ck[0] != 0) return Status::invalid_argument("cu_seqlens must start at 0");
  for (int64_t s = 0; s < p.n_seqs; ++s) {
    if (cq[s + 1] < cq[s] || ck[s + 1] < ck[s]) {
      return Status::invalid_argument("cu_seqlens not monotonic at " + std::to_string(s));
    }
    seqs->push_back({0, s, cq[s], cq[s + 1] - cq[s], ck[s], ck[s + 1] - ck[s]});
  }
  if (cq[p.n_seqs] > q.seq() || ck[p.n_seqs] > k.seq()) {
    return Status::invalid_argument("cu_seqlens exceed the tensors' sequence length");
  }
  return Status::ok_status();
}

// Position of query row i on the key axis (the causal alignment also anchors window and ALiBi).
int64_t query_pos(const AttentionParams& p, const Seq& s, int64_t i) {
  return p.causal_align == CausalAlign::kBottomRight ? i + s.k_len - s.q_len : i;
}

// Visibility of key j to row i from causality, the window and the sink prefix (no custom mask).
bool visible_by_rules(const AttentionParams& p, const Seq& s, int64_t i, int64_t j) {
  const int64_t pos = query_pos(p, s, i);
  if (p.causal && j > pos) return false;
  if (j < p.n_sink_tokens) return true;  // sinks ignore the window
  if (p.window_left >= 0 && j < pos - p.window_left) return false;
  if (p.window_right >= 0 && j > pos + p.window_right) return false;
  return true;
}

int64_t mask_offset(const CustomMask& m, const Seq& s, int64_t h, int64_t i, int64_t j) {
  return s.index * m.stride_batch + h * m.stride_head + i * m.stride_q + j * m.stride_k;
}

}  // namespace

Status attention_ref_f64(const TensorView& q, const TensorView& k, const TensorView& v, bool want_lse,
                         const AttentionParams& p, RefResult* r) {
  std::vector<Seq> seqs;
  ATTNKIT_RETURN_IF_ERROR(check_call(q, k, v, p, &seqs));
  if (want_lse && p.normalization != Normalization::kSoftmax) {
    return Status::invalid_argument("lse requested with normalization " +
                                    std::string(normalization_name(p.normalization)));
  }
  const int64_t d = q.head_dim(), dv = v.head_dim(), hq = q.heads(), group = q.heads() / k.heads();
  r->batch = q.batch();
  r->seq_q = q.seq();
  r->heads_q = hq;
  r->head_dim_v = dv;
  r->out.assign(static_cast<size_t>(r->batch * r->seq_q * hq * dv), 0.0);
  r->lse.assign(static_cast<size_t>(r->batch * hq * r->seq_q), std::numeric_limits<double>::quiet_NaN());
  const double scale = p.scale ? static_cast<double>(*p.scale) : 1.0 / std::sqrt(static_cast<double>(d));

  std::vector<double> logit;
  std::vector<char> vis;
  for (const Seq& s : seqs) {
    for (int64_t h = 0; h < hq; ++h) {
      const int64_t hk = h / group;
      for (int64_t i = 0; i < s.q_len; ++i) {
        const int64_t qrow = s.q_begin + i;
        const int64_t pos = query_pos(p, s, i);
        logit.assign(static_cast<size_t>(s.k_len), kNegInf);
        vis.assign(static_cast<size_t>(s.k_len), 0);
        // n_i for Scalable-Softmax: keys visible by the rules, before any custom mask.
        int64_t n_i = 0;
        for (int64_t j = 0; j < s.k_len; ++j) n_i += visible_by_rules(p, s, i, j) ? 1 : 0;
        double factor = scale;
        if (p.maybe_head_temperature) factor *= p.maybe_head_temperature[h];
        if (p.ssmax_s != 0.0f) factor *= static_cast<double>(p.ssmax_s) * std::log(static_cast<double>(n_i));

        for (int64_t j = 0; j < s.k_len; ++j) {
          if (!visible_by_rules(p, s, i, j)) continue;
          if (p.mask.kind == MaskKind::kBoolean &&
              static_cast<const uint8_t*>(p.mask.data)[mask_offset(p.mask, s, h, i, j)] == 0) {
            continue;
          }
          const int64_t krow = s.k_begin + j;
          double dot = 0.0;
          for (int64_t c = 0; c < d; ++c) {
            dot += static_cast<double>(q.get(s.batch, qrow, h, c)) * static_cast<double>(k.get(s.batch, krow, hk, c));
          }
          double x = dot * factor;
          if (p.softcap > 0.0f) x = p.softcap * std::tanh(x / p.softcap);
          if (p.maybe_alibi_slopes) x -= p.maybe_alibi_slopes[h] * std::fabs(static_cast<double>(pos - j));
          if (p.mask.kind == MaskKind::kAdditive) {
            x += static_cast<const float*>(p.mask.data)[mask_offset(p.mask, s, h, i, j)];
          }
          if (p.maybe_key_bias && j == p.key_bias_index) x += p.maybe_key_bias[h];
          // An additive -inf hides the key like a boolean mask would.
          if (x == kNegInf) continue;
          logit[j] = x;
          vis[j] = 1;
        }

        double* o = &r->out[r->out_index(s.batch, qrow, h, 0)];
        double lse = kNegInf;
        if (p.normalization == Normalization::kSoftmax) {
          const bool has_sink_logit = p.maybe_sink_logits != nullptr;
          const double sink = has_sink_logit ? p.maybe_sink_logits[h] : kNegInf;
          double m = kNegInf;
          for (int64_t j = 0; j < s.k_len; ++j) {
            if (vis[j] && logit[j] > m) m = logit[j];
          }
          bool any = false;
          for (int64_t j = 0; j < s.k_len; ++j) any = any || vis[j];
          // A NaN logit must poison the row (never be skipped silently).
          for (int64_t j = 0; j < s.k_len; ++j) {
            if (vis[j] && std::isnan(logit[j])) m = logit[j];
          }
          if (!any) {
            lse = has_sink_logit ? sink : kNegInf;  // output stays 0
          } else {
            if (has_sink_logit && sink > m) m = sink;  // shift by the largest term, sink included
            double denom = has_sink_logit ? std::exp(sink - m) : 0.0;
            for (int64_t j = 0; j < s.k_len; ++j) {
              if (!vis[j]) continue;
              const double w = std::exp(logit[j] - m);
              denom += w;
              for (int64_t c = 0; c < dv; ++c) o[c] += w * static_cast<double>(v.get(s.batch, s.k_begin + j, hk, c));
            }
            for (int64_t c = 0; c < dv; ++c) o[c] /= denom;
            lse = m + std::log(denom);
          }
          r->lse[r->lse_index(s.batch, h, qrow)] = lse;
        } else if (p.normalization == Normalization::kSigmoid) {
          const double bias = p.sigmoid_bias ? static_cast<double>(*p.sigmoid_bias)
                                             : -std::log(static_cast<double>(s.k_len));
          for (int64_t j = 0; j < s.k_len; ++j) {
            if (!vis[j]) continue;
            const double w = 1.0 / (1.0 + std::exp(-(logit[j] + bias)));
            for (int64_t c = 0; c < dv; ++c) o[c] += w * static_cast<double>(v.get(s.batch, s.k_begin + j, hk, c));
          }
        } else {  // kRelu
          const double inv_n = 1.0 / static_cast<double>(s.k_len);
          for (int64_t j = 0; j < s.k_len; ++j) {
            if (!vis[j]) continue;
            const double w = (std::isnan(logit[j]) ? logit[j] : (logit[j] > 0.0 ? logit[j] : 0.0)) * inv_n;
            for (int64_t c = 0; c < dv; ++c) o[c] += w * static_cast<double>(v.get(s.batch, s.k_begin + j, hk, c));
          }
        }
      }
    }
  }
  return Status::ok_status();
}

Status attention_ref(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                     float* maybe_lse, const AttentionParams& params) {
  if (!out.data) return Status::invalid_argument("out.data is null");
  if (out.batch() != q.batch() || out.seq() != q.seq() || out.heads() != q.heads() || out.head_dim() != v.head_dim()) {
    return Status::invalid_argument("out shape " + shape_str(out) + " does not match q/v");
  }
  RefResult r;
  ATTNKIT_RETURN_IF_ERROR(attention_ref_f64(q, k, v, maybe_lse != nullptr, params, &r));
  for (int64_t b = 0; b < r.batch; ++b) {
    for (int64_t s = 0; s < r.seq_q; ++s) {
      for (int64_t h = 0; h < r.heads_q; ++h) {
        for (int64_t c = 0; c < r.head_dim_v; ++c) {
          out.set(b, s, h, c, static_cast<float>(r.out[r.out_index(b, s, h, c)]));
        }
      }
    }
  }
  if (maybe_lse) {
    for (size_t i = 0; i < r.lse.size(); ++i) maybe_lse[i] = static_cast<float>(r.lse[i]);
  }
  return Status::ok_status();
}

Status merge_states_ref(const TensorView& o_a, const float* lse_a, const TensorView& o_b, const float* lse_b,
                        const TensorView& out, float* lse_out) {
  if (!o_a.data || !o_b.data || !out.data || !lse_a || !lse_b || !lse_out) {
    return Status::invalid_argument("merge_states_ref: null pointer");
  }
  if (o_a.shape != o_b.shape || o_a.shape != out.shape) {
    return Status::invalid_argument("merge_states_ref: shapes " + shape_str(o_a) + " " + shape_str(o_b) + " " +
                                    shape_str(out) + " differ");
  }
  const int64_t B = o_a.batch(), S = o_a.seq(), H = o_a.heads(), D = o_a.head_dim();
  std::vector<double> row(static_cast<size_t>(D));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t s = 0; s < S; ++s) {
        const int64_t li = (b * H + h) * S + s;
        const double la = lse_a[li], lb = lse_b[li];
        double lse = kNegInf;
        for (int64_t c = 0; c < D; ++c) row[c] = 0.0;
        if (la == kNegInf && lb == kNegInf) {
          // both parts empty: o = 0, lse = -inf
        } else if (lb == kNegInf) {
          lse = la;
          for (int64_t c = 0; c < D; ++c) row[c] = o_a.get(b, s, h, c);
        } else if (la == kNegInf) {
          lse = lb;
          for (int64_t c = 0; c < D; ++c) row[c] = o_b.get(b, s, h, c);
        } else {
          const double m = la > lb ? la : lb;
          lse = m + std::log(std::exp(la - m) + std::exp(lb - m));
          const double wa = std::exp(la - lse), wb = std::exp(lb - lse);
          for (int64_t c = 0; c < D; ++c) row[c] = wa * o_a.get(b, s, h, c) + wb * o_b.get(b, s, h, c);
        }
        // Written after every read of this row, so out may alias o_a.
        for (int64_t c = 0; c < D; ++c) out.set(b, s, h, c, static_cast<float>(row[c]));
        lse_out[li] = static_cast<float>(lse);
      }
    }
  }
  return Status::ok_status();
}

}  // namespace attnkit::reference
