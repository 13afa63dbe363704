// Massive activations (Sun, Chen, Kolter, Liu 2024, "Massive Activations in Large Language
// Models", COLM 2024): residual-stream entries with |x| > 100 and at least 1000 times the median
// magnitude of their hidden state. They sit at fixed dimensions on the first token and the first
// delimiters, act as biases that create attention sinks, and the paper's ablation shows that
// setting them to their mean keeps perplexity while setting them to zero destroys it.
#include <chrono>
#include <cmath>
#include <map>

#include "attnkit/analysis.h"

namespace attnkit::analysis {
namespace {

double row_median_abs(const float* x, int64_t dim, std::vector<float>* scratch) {
  scratch->resize(static_cast<size_t>(dim));
  for (int64_t e = 0; e < dim; ++e) (*scratch)[static_cast<size_t>(e)] = std::fabs(x[e]);
  const size_t mid = static_cast<size_t>(dim / 2);
  std::nth_element(scratch->begin(), scratch->begin() + static_cast<std::ptrdiff_t>(mid), scratch->end());
  double med = (*scratch)[mid];
  if (dim % 2 == 0) {
    const float below = *std::max_element(scratch->begin(), scratch->begin() + static_cast<std::ptrdiff_t>(mid));
    med = 0.5 * (med + below);
  }
  return med;
}

bool is_massive(double v, double median, const MassiveOptions& o) {
  return std::fabs(v) > o.abs_threshold && std::fabs(v) >= o.median_ratio * median;
}

}  // namespace

std::vector<MassiveActivation> detect_massive(const float* x, int64_t n, int64_t dim, const MassiveOptions& o) {
  std::vector<MassiveActivation> found;
  std::vector<float> scratch;
  for (int64_t i = 0; i < n; ++i) {
    const float* row = x + i * dim;
    const double med = row_median_abs(row, dim, &scratch);
    for (int64_t e = 0; e < dim; ++e)
      if (is_massive(row[e], med, o)) {
        MassiveActivation a;
        a.position = i;
        a.dim = e;
        a.value = row[e];
        a.row_median = med;
        found.push_back(a);
      }
  }
  return found;
}

Status analyze_massive(model::Model* m, const std::vector<int32_t>& tokens, const std::vector<int32_t>& eval_tokens,
                       const MassiveOptions& o, MassiveReport* out) {
  if (m == nullptr || out == nullptr) return Status::invalid_argument("analyze_massive: model or out is null");
  if (tokens.empty()) return Status::invalid_argument("analyze_massive: no tokens");
  if (!(o.abs_threshold > 0) || !(o.median_ratio > 0))
    return Status::invalid_argument("analyze_massive: abs_threshold " + std::to_string(o.abs_threshold) + " and median_ratio " +
                                    std::to_string(o.median_ratio) + " must be > 0");
  const model::GemmaConfig& c = m->config();
  MassiveReport r;
  r.n_layer = c.n_layer;
  r.n_embd = c.n_embd;
  r.n_tokens = static_cast<int64_t>(tokens.size());
  r.options = o;
  r.layers.resize(static_cast<size_t>(c.n_layer));
  std::vector<std::vector<double>> medians(static_cast<size_t>(c.n_layer));
  model::Taps taps;
  std::vector<float> scratch;
  taps.on_residual = [&](int64_t layer, int64_t pos0, int64_t n, float* x) {
    LayerMagnitudes& lm = r.layers[static_cast<size_t>(layer)];
    lm.layer = layer;
    for (int64_t i = 0; i < n; ++i) {
      const float* row = x + i * c.n_embd;
      medians[static_cast<size_t>(layer)].push_back(row_median_abs(row, c.n_embd, &scratch));
      for (int64_t e = 0; e < c.n_embd; ++e)
        if (std::fabs(row[e]) > lm.max_abs) {
          lm.max_abs = std::fabs(row[e]);
          lm.max_position = pos0 + i;
          lm.max_dim = e;
        }
    }
    for (MassiveActivation a : detect_massive(x, n, c.n_embd, o)) {
      a.layer = layer;
      a.position += pos0;
      a.token = tokens[static_cast<size_t>(a.position)];
      r.found.push_back(a);
      lm.massive++;
    }
  };
  const auto t0 = std::chrono::steady_clock::now();
  m->reset();
  ATTNKIT_RETURN_IF_ERROR(m->reserve(r.n_tokens));
  m->set_taps(taps);
  Status st = m->forward(tokens.data(), r.n_tokens, model::ForwardOutputs{});
  m->clear_taps();
  ATTNKIT_RETURN_IF_ERROR(st);
  for (int64_t l = 0; l < c.n_layer; ++l) {
    std::vector<double>& md = medians[static_cast<size_t>(l)];
    std::nth_element(md.begin(), md.begin() + static_cast<std::ptrdiff_t>(md.size() / 2), md.end());
    r.layers[static_cast<size_t>(l)].median_abs = md[md.size() / 2];
  }
  r.seconds_detect = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  if (!eval_tokens.empty()) {
    r.eval_tokens = static_cast<int64_t>(eval_tokens.size());
    ATTNKIT_RETURN_IF_ERROR(perplexity(m, eval_tokens, &r.ppl_original));
    // The layer where the largest activation's dimension first turns massive on the first token
    // (the paper's "appear suddenly in one layer and stay"), and the dimensions massive there.
    int64_t top_dim = -1;
    double top = 0;
    for (const LayerMagnitudes& lm : r.layers)
      if (lm.max_abs > top) {
        top = lm.max_abs;
        top_dim = lm.max_dim;
      }
    for (const MassiveActivation& a : r.found)
      if (a.dim == top_dim && a.position == 0) {
        r.ablation_layer = a.layer;
        break;
      }
    if (r.ablation_layer >= 0) {
      std::map<int64_t, std::pair<double, int64_t>> mean;  // dim -> (sum, count) at the ablation layer
      for (const MassiveActivation& a : r.found)
        if (a.layer == r.ablation_layer && a.position == 0) mean[a.dim] = {0.0, 0};
      for (const MassiveActivation& a : r.found)
        if (a.layer == r.ablation_layer && mean.count(a.dim) != 0) {
          mean[a.dim].first += a.value;
          mean[a.dim].second++;
        }
      for (const auto& [d, sc] : mean) r.ablation_dims.push_back(d);
      for (int pass = 0; pass < 2; ++pass) {
        const bool to_zero = pass == 1;
        model::Taps ab;
        ab.layers = {r.ablation_layer};
        ab.on_residual = [&](int64_t, int64_t, int64_t n, float* x) {
          for (int64_t i = 0; i < n; ++i) {
            float* row = x + i * c.n_embd;
            const double med = row_median_abs(row, c.n_embd, &scratch);
            for (const auto& [d, sc] : mean)
              if (is_massive(row[d], med, o)) row[d] = to_zero ? 0.0f : static_cast<float>(sc.first / static_cast<double>(sc.second));
          }
        };
        m->set_taps(ab);
        st = perplexity(m, eval_tokens, to_zero ? &r.ppl_zero : &r.ppl_mean);
        m->clear_taps();
        ATTNKIT_RETURN_IF_ERROR(st);
      }
    }
  }
  *out = std::move(r);
  return Status::ok_status();
}

}  // namespace attnkit::analysis
