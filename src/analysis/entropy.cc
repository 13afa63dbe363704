// Attention concentration: entropy, spectral gap, log-normality of the entries.
//
// Entropy per row H_i = -sum_j A_ij ln A_ij (Zhai et al. 2023, "Stabilizing Transformer Training by
// Preventing Attention Entropy Collapse"), divided by ln(visible keys) so 1 is uniform and 0 is one
// key; rows that see one key carry no information and are skipped.
// Spectral gap and log-normality follow Nahshan et al. 2024 ("Linear Log-Normal Attention with
// Unbiased Concentration"): the gap 1 - |lambda_2| of the row-stochastic attention matrix measures
// how fast repeated attention mixes, and softmax entries are close to log-normal, with sigma growing
// as attention concentrates. Causal attention restricted to a window of W positions (rows
// renormalized over the window's keys) is lower triangular, so its eigenvalues are its diagonal: the
// weight each row gives itself. The first row of the window sees only itself, so lambda_1 = 1.
// The log-normal fit uses ln(visible_i * A_ij), which is 0 for uniform attention whatever the row's
// length, so rows of different lengths share one distribution.
#include <cmath>

#include "attnkit/analysis.h"

namespace attnkit::analysis {
namespace {

struct HeadAcc {
  double ent = 0, ent_nats = 0;
  int64_t rows = 0;
  double m1 = 0, m2 = 0, m3 = 0, m4 = 0;
  int64_t entries = 0;
  double diag_max = 0;  // max over window rows after the first of the renormalized self-weight
  int64_t window_rows = 0;
};

}  // namespace

std::vector<double> causal_window_spectrum(const std::vector<double>& a, int64_t w) {
  std::vector<double> ev;
  for (int64_t i = 0; i < w; ++i) ev.push_back(std::fabs(a[static_cast<size_t>(i * w + i)]));
  std::sort(ev.rbegin(), ev.rend());
  return ev;
}

Status entropy_from_blocks(const BlockSource& source, int64_t n_layer, int64_t n_head, int64_t n_tokens,
                           const EntropyOptions& o, EntropyReport* out) {
  if (out == nullptr) return Status::invalid_argument("entropy: out is null");
  if (o.spectral_window < 2)
    return Status::invalid_argument("entropy: spectral_window " + std::to_string(o.spectral_window) + " must be >= 2");
  if (o.lognormal_row_stride < 1)
    return Status::invalid_argument("entropy: lognormal_row_stride " + std::to_string(o.lognormal_row_stride) + " must be >= 1");
  const int64_t W = std::min(o.spectral_window, n_tokens);
  const int64_t ws = o.spectral_start >= 0 ? o.spectral_start : n_tokens - W;
  if (ws < 0 || ws + W > n_tokens)
    return Status::invalid_argument("entropy: spectral_start " + std::to_string(o.spectral_start) + " leaves no window of " +
                                    std::to_string(W) + " in " + std::to_string(n_tokens) + " tokens");
  std::vector<HeadAcc> acc(static_cast<size_t>(n_layer * n_head));
  ATTNKIT_RETURN_IF_ERROR(source([&](const AttentionBlock& b) {
    for (int64_t h = 0; h < b.n_head; ++h) {
      HeadAcc& a = acc[static_cast<size_t>(b.layer * n_head + h)];
      for (int64_t r = 0; r < b.n; ++r) {
        const int64_t p = b.pos0 + r;
        const int64_t lo = b.window_left < 0 ? 0 : std::max<int64_t>(0, p - b.window_left);
        const int64_t vis = p - lo + 1;
        const float* row = b.probs + (h * b.n + r) * b.n_kv;
        if (vis >= 2) {
          double e = 0;
          for (int64_t j = lo; j <= p; ++j)
            if (row[j] > 0) e -= static_cast<double>(row[j]) * std::log(static_cast<double>(row[j]));
          a.ent_nats += e;
          a.ent += e / std::log(static_cast<double>(vis));
          a.rows++;
          if (p % o.lognormal_row_stride == 0) {
            for (int64_t j = lo; j <= p; ++j) {
              if (row[j] <= 0) continue;
              const double x = std::log(static_cast<double>(vis) * row[j]);
              a.m1 += x;
              a.m2 += x * x;
              a.m3 += x * x * x;
              a.m4 += x * x * x * x;
              a.entries++;
            }
          }
        }
        if (p > ws && p < ws + W) {
          double s = 0;
          for (int64_t j = std::max(ws, lo); j <= p; ++j) s += row[j];
          if (s > 0) a.diag_max = std::max(a.diag_max, row[p] / s);
          a.window_rows++;
        }
      }
    }
  }));
  EntropyReport r;
  r.n_layer = n_layer;
  r.n_head = n_head;
  r.n_tokens = n_tokens;
  r.options = o;
  for (int64_t l = 0; l < n_layer; ++l)
    for (int64_t h = 0; h < n_head; ++h) {
      const HeadAcc& a = acc[static_cast<size_t>(l * n_head + h)];
      HeadEntropy he;
      he.layer = l;
      he.head = h;
      if (a.rows > 0) {
        he.entropy = a.ent / static_cast<double>(a.rows);
        he.entropy_nats = a.ent_nats / static_cast<double>(a.rows);
      }
      he.spectral_gap = a.window_rows > 0 ? 1.0 - a.diag_max : std::nan("");
      if (a.entries > 1) {
        const double n = static_cast<double>(a.entries);
        const double mu = a.m1 / n;
        const double var = std::max(0.0, a.m2 / n - mu * mu);
        const double sd = std::sqrt(var);
        he.log_mu = mu;
        he.log_sigma = sd;
        if (sd > 0) {
          const double c3 = a.m3 / n - 3 * mu * a.m2 / n + 2 * mu * mu * mu;
          const double c4 = a.m4 / n - 4 * mu * a.m3 / n + 6 * mu * mu * a.m2 / n - 3 * mu * mu * mu * mu;
          he.log_skew = c3 / (var * sd);
          he.log_kurtosis = c4 / (var * var) - 3.0;
        }
      }
      r.heads.push_back(he);
    }
  *out = std::move(r);
  return Status::ok_status();
}

Status analyze_entropy(model::Model* m, const std::vector<int32_t>& tokens, const EntropyOptions& o, EntropyReport* out) {
  if (m == nullptr || out == nullptr) return Status::invalid_argument("analyze_entropy: model or out is null");
  const model::GemmaConfig& c = m->config();
  return entropy_from_blocks(model_source(m, tokens), c.n_layer, c.n_head, static_cast<int64_t>(tokens.size()), o, out);
}

}  // namespace attnkit::analysis
