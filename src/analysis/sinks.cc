// Attention sinks: how much attention the first tokens and later "hidden" sinks receive.
//
// alpha_k^{l,h} = mean over the rows that can see token k of A^{l,h}[i, k] (Gu et al. 2025, "When
// Attention Sink Emerges in Language Models: An Empirical View", ICLR 2025; their sink rate
// Sink_1^eps counts the (layer, head) pairs whose alpha of the first token exceeds eps = 0.3).
// Mid-sequence sinks are later tokens whose column mean exceeds 0.1 (ACT, Yu et al. 2024). The
// "key bias" finding compares the first token's key with the others: its norm is often smaller
// while its cosine with the queries is larger, so the sink comes from direction, not magnitude.
#include <cmath>

#include "attnkit/analysis.h"

namespace attnkit::analysis {
namespace {

double norm(const float* v, int64_t d) {
  double s = 0;
  for (int64_t i = 0; i < d; ++i) s += static_cast<double>(v[i]) * v[i];
  return std::sqrt(s);
}

struct HeadAcc {
  std::vector<double> colsum;  // [T] attention received by each key
  double cos_first = 0, cos_other = 0;
  int64_t rows_first = 0, rows_other = 0;
};

}  // namespace

Status sinks_from_blocks(const BlockSource& source, int64_t n_layer, int64_t n_head, const SinkOptions& o,
                         SinkReport* out) {
  if (out == nullptr) return Status::invalid_argument("sinks: out is null");
  if (o.first_k < 1) return Status::invalid_argument("sinks: first_k " + std::to_string(o.first_k) + " must be >= 1");
  if (!(o.eps > 0 && o.eps < 1)) return Status::invalid_argument("sinks: eps " + std::to_string(o.eps) + " must be in (0, 1)");
  if (!(o.mid_threshold > 0 && o.mid_threshold < 1))
    return Status::invalid_argument("sinks: mid_threshold " + std::to_string(o.mid_threshold) + " must be in (0, 1)");
  std::vector<HeadAcc> acc(static_cast<size_t>(n_layer * n_head));
  std::vector<int64_t> window(static_cast<size_t>(n_layer), -1);
  std::vector<double> knorm_first(static_cast<size_t>(n_layer * n_head)), knorm_other(knorm_first.size());
  std::vector<int32_t> tokens;
  int64_t T = 0;
  std::vector<double> prefix;  // [n_kv + 1, n_head_kv, D] sums of unit keys
  ATTNKIT_RETURN_IF_ERROR(source([&](const AttentionBlock& b) {
    const int64_t D = b.head_dim, HK = b.n_head_kv, group = b.n_head / HK;
    T = std::max(T, b.n_kv);
    window[static_cast<size_t>(b.layer)] = b.window_left;
    if (b.tokens != nullptr) tokens.assign(b.tokens, b.tokens + b.n_kv);
    prefix.assign(static_cast<size_t>((b.n_kv + 1) * HK * D), 0.0);
    std::vector<double> knorms(static_cast<size_t>(b.n_kv * HK));
    for (int64_t j = 0; j < b.n_kv; ++j)
      for (int64_t g = 0; g < HK; ++g) {
        const float* kv = b.k_post + (j * HK + g) * D;
        const double nk = norm(kv, D);
        knorms[static_cast<size_t>(j * HK + g)] = nk;
        double* dst = prefix.data() + ((j + 1) * HK + g) * D;
        const double* src = prefix.data() + (j * HK + g) * D;
        for (int64_t t = 0; t < D; ++t) dst[t] = src[t] + (nk > 0 ? kv[t] / nk : 0.0);
      }
    for (int64_t h = 0; h < b.n_head; ++h) {
      HeadAcc& a = acc[static_cast<size_t>(b.layer * n_head + h)];
      const int64_t g = h / group;
      a.colsum.resize(static_cast<size_t>(b.n_kv), 0.0);
      double other = 0;
      for (int64_t j = 1; j < b.n_kv; ++j) other += knorms[static_cast<size_t>(j * HK + g)];
      knorm_first[static_cast<size_t>(b.layer * n_head + h)] = knorms[static_cast<size_t>(g)];
      knorm_other[static_cast<size_t>(b.layer * n_head + h)] = b.n_kv > 1 ? other / static_cast<double>(b.n_kv - 1) : 0.0;
      for (int64_t r = 0; r < b.n; ++r) {
        const int64_t p = b.pos0 + r;
        const int64_t lo = b.window_left < 0 ? 0 : std::max<int64_t>(0, p - b.window_left);
        const float* row = b.probs + (h * b.n + r) * b.n_kv;
        for (int64_t j = lo; j <= p; ++j) a.colsum[static_cast<size_t>(j)] += row[j];
        const float* qv = b.q_post + (r * b.n_head + h) * D;
        const double nq = norm(qv, D);
        if (nq == 0) continue;
        if (lo == 0) {
          const double* k0 = prefix.data() + (1 * HK + g) * D;  // unit k_0
          double dot = 0;
          for (int64_t t = 0; t < D; ++t) dot += qv[t] * k0[t];
          a.cos_first += dot / nq;
          a.rows_first++;
        }
        const int64_t jlo = std::max<int64_t>(1, lo);
        if (p >= jlo) {
          const double* hi = prefix.data() + ((p + 1) * HK + g) * D;
          const double* lw = prefix.data() + (jlo * HK + g) * D;
          double dot = 0;
          for (int64_t t = 0; t < D; ++t) dot += qv[t] * (hi[t] - lw[t]);
          a.cos_other += dot / nq / static_cast<double>(p - jlo + 1);
          a.rows_other++;
        }
      }
    }
  }));
  if (T == 0) return Status::invalid_argument("sinks: the source produced no attention");
  SinkReport r;
  r.n_layer = n_layer;
  r.n_head = n_head;
  r.n_samples = 1;
  r.n_tokens = T;
  r.options = o;
  int64_t sinks = 0, mid_heads = 0;
  for (int64_t l = 0; l < n_layer; ++l) {
    const int64_t wl = window[static_cast<size_t>(l)];
    for (int64_t h = 0; h < n_head; ++h) {
      const HeadAcc& a = acc[static_cast<size_t>(l * n_head + h)];
      HeadSinks hs;
      hs.layer = l;
      hs.head = h;
      std::vector<double> alpha(static_cast<size_t>(T), 0.0);
      for (int64_t k = 0; k < T && k < static_cast<int64_t>(a.colsum.size()); ++k) {
        const int64_t last = wl < 0 ? T - 1 : std::min(T - 1, k + wl);
        alpha[static_cast<size_t>(k)] = a.colsum[static_cast<size_t>(k)] / static_cast<double>(last - k + 1);
      }
      for (int64_t k = 0; k < o.first_k; ++k) hs.alpha.push_back(k < T ? alpha[static_cast<size_t>(k)] : 0.0);
      for (int64_t k = 1; k < T; ++k) {
        const int64_t rows = (wl < 0 ? T - 1 : std::min(T - 1, k + wl)) - k + 1;
        if (rows >= o.min_rows && alpha[static_cast<size_t>(k)] > o.mid_threshold) {
          hs.mid_sinks++;
          MidSink ms;
          ms.layer = l;
          ms.head = h;
          ms.position = k;
          ms.token = k < static_cast<int64_t>(tokens.size()) ? tokens[static_cast<size_t>(k)] : -1;
          ms.alpha = alpha[static_cast<size_t>(k)];
          r.mid.push_back(ms);
        }
      }
      hs.key_norm_first = knorm_first[static_cast<size_t>(l * n_head + h)];
      hs.key_norm_other = knorm_other[static_cast<size_t>(l * n_head + h)];
      hs.cos_first = a.rows_first ? a.cos_first / static_cast<double>(a.rows_first) : 0.0;
      hs.cos_other = a.rows_other ? a.cos_other / static_cast<double>(a.rows_other) : 0.0;
      sinks += hs.alpha[0] > o.eps;
      mid_heads += hs.mid_sinks > 0;
      r.heads.push_back(std::move(hs));
    }
  }
  r.sink_rate = static_cast<double>(sinks) / static_cast<double>(n_layer * n_head);
  r.mid_sink_heads = static_cast<double>(mid_heads) / static_cast<double>(n_layer * n_head);
  *out = std::move(r);
  return Status::ok_status();
}

Status analyze_sinks(model::Model* m, const std::vector<std::vector<int32_t>>& samples, const SinkOptions& o,
                     SinkReport* out) {
  if (m == nullptr || out == nullptr) return Status::invalid_argument("analyze_sinks: model or out is null");
  if (samples.empty()) return Status::invalid_argument("analyze_sinks: no samples");
  const model::GemmaConfig& c = m->config();
  SinkReport total;
  for (size_t s = 0; s < samples.size(); ++s) {
    SinkReport one;
    ATTNKIT_RETURN_IF_ERROR(sinks_from_blocks(model_source(m, samples[s]), c.n_layer, c.n_head, o, &one));
    if (s == 0) {
      total = std::move(one);
      continue;
    }
    // Running mean over samples of every per-head number and of both rates.
    const double w = 1.0 / static_cast<double>(s + 1);
    auto mix = [w](double& acc, double v) { acc += (v - acc) * w; };
    for (size_t i = 0; i < total.heads.size(); ++i) {
      HeadSinks& t = total.heads[i];
      const HeadSinks& n = one.heads[i];
      for (size_t k = 0; k < t.alpha.size(); ++k) mix(t.alpha[k], n.alpha[k]);
      t.mid_sinks += n.mid_sinks;
      mix(t.key_norm_first, n.key_norm_first);
      mix(t.key_norm_other, n.key_norm_other);
      mix(t.cos_first, n.cos_first);
      mix(t.cos_other, n.cos_other);
    }
    mix(total.sink_rate, one.sink_rate);
    mix(total.mid_sink_heads, one.mid_sink_heads);
    total.mid.insert(total.mid.end(), one.mid.begin(), one.mid.end());
    total.n_tokens += one.n_tokens;
    total.n_samples = static_cast<int64_t>(s + 1);
  }
  *out = std::move(total);
  return Status::ok_status();
}

}  // namespace attnkit::analysis
