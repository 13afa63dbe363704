// Bindings of include/attnkit/analysis.h: the attention instruments on a loaded Model, returning
// dicts of numpy arrays shaped [n_layer, n_head] (the public wrappers are attnkit/analysis.py).
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "attnkit/analysis.h"
#include "attnkit/eval.h"
#include "attnkit/model.h"
#include "attnkit/tokenizer.h"
#include "convert.h"

namespace attnkit::python {
namespace {

namespace an = attnkit::analysis;
using model::Model;

// A numpy array that owns `values` (moved in), with the given shape.
template <typename T>
nb::object to_numpy(std::vector<T> values, std::vector<size_t> shape) {
  size_t count = 1;
  for (size_t d : shape) count *= d;
  if (count != values.size()) throw std::runtime_error("to_numpy: shape does not match the values");
  auto* buf = new std::vector<T>(std::move(values));
  nb::capsule owner(buf, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
  return nb::cast(nb::ndarray<nb::numpy, T>(buf->data(), shape.size(), shape.data(), owner));
}

// [n_layer, n_head] array of field f of every per-head record.
template <typename R, typename F>
nb::object per_head(const std::vector<R>& heads, int64_t L, int64_t H, F f) {
  std::vector<double> v;
  v.reserve(heads.size());
  for (const R& h : heads) v.push_back(static_cast<double>(f(h)));
  return to_numpy(std::move(v), {static_cast<size_t>(L), static_cast<size_t>(H)});
}

// Runs f (returning Status) without the GIL, holding the model's lock so that a model shared
// between threads runs no other call in between; raises on error.
template <typename F>
void run_locked(Model& m, F f) {
  Status s;
  {
    nb::gil_scoped_release release;
    const auto hold = m.lock();
    s = f();
  }
  raise_if_error(s);
}

std::vector<int32_t> checked_ids(const Model& m, const std::vector<int32_t>& ids, const char* name) {
  if (ids.size() < 2) throw nb::value_error((std::string(name) + " has " + std::to_string(ids.size()) + " tokens; need at least 2").c_str());
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= m.config().n_vocab)
      throw nb::value_error((std::string(name) + "[" + std::to_string(i) + "] = " + std::to_string(ids[i]) +
                             " is outside the vocabulary [0, " + std::to_string(m.config().n_vocab) + ")")
                                .c_str());
  return ids;
}

std::string kjv() {
  std::string text;
  Status s;
  {
    nb::gil_scoped_release release;
    s = eval::kjv_text("", &text);
  }
  raise_if_error(s);
  return text;
}

std::vector<int32_t> kjv_tokens_py(const Model& m, int64_t n, int64_t offset) {
  const std::string text = kjv();
  std::vector<int32_t> ids;
  raise_if_error(an::text_tokens(m.tokenizer(), text, offset, n, &ids));
  return ids;
}

// Probabilities [len(layers), n_head, len(rows), n] of the rows the instruments read.
nb::object attention_py(Model& m, const std::vector<int32_t>& tokens, std::optional<std::vector<int64_t>> layers,
                        std::optional<std::vector<int64_t>> rows) {
  const std::vector<int32_t> ids = checked_ids(m, tokens, "tokens");
  const int64_t n = static_cast<int64_t>(ids.size()), L = m.config().n_layer, H = m.config().n_head;
  std::vector<int64_t> ls = layers ? *layers : std::vector<int64_t>{};
  if (!layers)
    for (int64_t l = 0; l < L; ++l) ls.push_back(l);
  std::vector<int64_t> rs = rows ? *rows : std::vector<int64_t>{};
  if (!rows)
    for (int64_t r = 0; r < n; ++r) rs.push_back(r);
  for (int64_t l : ls)
    if (l < 0 || l >= L) throw nb::value_error(("layers: layer " + std::to_string(l) + " is outside [0, " + std::to_string(L) + ")").c_str());
  for (int64_t r : rs)
    if (r < 0 || r >= n) throw nb::value_error(("rows: row " + std::to_string(r) + " is outside [0, " + std::to_string(n) + ")").c_str());
  const size_t bytes = ls.size() * static_cast<size_t>(H) * rs.size() * static_cast<size_t>(n) * sizeof(float);
  if (bytes > (size_t{4} << 30))
    throw nb::value_error(("the maps would take " + std::to_string(bytes >> 20) + " MiB; pass fewer layers or rows").c_str());
  std::vector<float> out(bytes / sizeof(float), 0.0f);
  std::vector<int64_t> slot(static_cast<size_t>(L), -1);
  for (size_t i = 0; i < ls.size(); ++i) slot[static_cast<size_t>(ls[i])] = static_cast<int64_t>(i);
  run_locked(m, [&] {
    return an::stream_attention(&m, ids, [&](const an::AttentionBlock& b) {
      const int64_t li = slot[static_cast<size_t>(b.layer)];
      if (li < 0) return;
      for (size_t ri = 0; ri < rs.size(); ++ri) {
        const int64_t p = rs[ri];
        if (p < b.pos0 || p >= b.pos0 + b.n) continue;
        for (int64_t h = 0; h < H; ++h) {
          const float* row = b.probs + (h * b.n + p - b.pos0) * b.n_kv;
          float* dst = out.data() + ((static_cast<size_t>(li) * H + h) * rs.size() + ri) * n;
          std::copy(row, row + b.n_kv, dst);
        }
      }
    });
  });
  return to_numpy(std::move(out), {ls.size(), static_cast<size_t>(H), rs.size(), static_cast<size_t>(n)});
}

nb::dict sinks_py(Model& m, const std::vector<std::vector<int32_t>>& samples, int64_t first_k, double eps,
                  double mid_threshold, int64_t min_rows) {
  if (samples.empty()) throw nb::value_error("samples is empty");
  for (const auto& s : samples) checked_ids(m, s, "samples");
  an::SinkOptions o;
  o.first_k = first_k;
  o.eps = eps;
  o.mid_threshold = mid_threshold;
  o.min_rows = min_rows;
  an::SinkReport r;
  run_locked(m, [&] { return an::analyze_sinks(&m, samples, o, &r); });
  const int64_t L = r.n_layer, H = r.n_head;
  std::vector<double> alpha;
  for (const auto& h : r.heads) alpha.insert(alpha.end(), h.alpha.begin(), h.alpha.end());
  nb::dict d;
  d["alpha"] = to_numpy(std::move(alpha), {static_cast<size_t>(L), static_cast<size_t>(H), static_cast<size_t>(o.first_k)});
  d["mid_sinks"] = per_head(r.heads, L, H, [](const an::HeadSinks& h) { return h.mid_sinks; });
  d["key_norm_first"] = per_head(r.heads, L, H, [](const an::HeadSinks& h) { return h.key_norm_first; });
  d["key_norm_other"] = per_head(r.heads, L, H, [](const an::HeadSinks& h) { return h.key_norm_other; });
  d["cos_first"] = per_head(r.heads, L, H, [](const an::HeadSinks& h) { return h.cos_first; });
  d["cos_other"] = per_head(r.heads, L, H, [](const an::HeadSinks& h) { return h.cos_other; });
  d["sink_rate"] = r.sink_rate;
  d["mid_sink_heads"] = r.mid_sink_heads;
  d["n_samples"] = r.n_samples;
  d["n_tokens"] = r.n_tokens;
  nb::list mid;
  for (const auto& x : r.mid) {
    nb::dict e;
    e["layer"] = x.layer;
    e["head"] = x.head;
    e["position"] = x.position;
    e["token"] = x.token;
    e["alpha"] = x.alpha;
    mid.append(e);
  }
  d["mid"] = mid;
  return d;
}

nb::dict entropy_py(Model& m, const std::vector<int32_t>& tokens, int64_t spectral_window, int64_t spectral_start,
                    int64_t lognormal_row_stride) {
  const std::vector<int32_t> ids = checked_ids(m, tokens, "tokens");
  an::EntropyOptions o;
  o.spectral_window = spectral_window;
  o.spectral_start = spectral_start;
  o.lognormal_row_stride = lognormal_row_stride;
  an::EntropyReport r;
  run_locked(m, [&] { return an::analyze_entropy(&m, ids, o, &r); });
  const int64_t L = r.n_layer, H = r.n_head;
  nb::dict d;
  d["entropy"] = per_head(r.heads, L, H, [](const an::HeadEntropy& h) { return h.entropy; });
  d["entropy_nats"] = per_head(r.heads, L, H, [](const an::HeadEntropy& h) { return h.entropy_nats; });
  d["spectral_gap"] = per_head(r.heads, L, H, [](const an::HeadEntropy& h) { return h.spectral_gap; });
  d["log_mu"] = per_head(r.heads, L, H, [](const an::HeadEntropy& h) { return h.log_mu; });
  d["log_sigma"] = per_head(r.heads, L, H, [](const an::HeadEntropy& h) { return h.log_sigma; });
  d["log_skew"] = per_head(r.heads, L, H, [](const an::HeadEntropy& h) { return h.log_skew; });
  d["log_kurtosis"] = per_head(r.heads, L, H, [](const an::HeadEntropy& h) { return h.log_kurtosis; });
  d["n_tokens"] = r.n_tokens;
  return d;
}

nb::dict massive_py(Model& m, const std::vector<int32_t>& tokens, std::optional<std::vector<int32_t>> eval_tokens,
                    double abs_threshold, double median_ratio) {
  const std::vector<int32_t> ids = checked_ids(m, tokens, "tokens");
  const std::vector<int32_t> ev = eval_tokens ? checked_ids(m, *eval_tokens, "eval_tokens") : std::vector<int32_t>{};
  an::MassiveOptions o;
  o.abs_threshold = abs_threshold;
  o.median_ratio = median_ratio;
  an::MassiveReport r;
  run_locked(m, [&] { return an::analyze_massive(&m, ids, ev, o, &r); });
  std::vector<int64_t> layer, position, dim;
  std::vector<int32_t> token;
  std::vector<double> value, median;
  for (const auto& a : r.found) {
    layer.push_back(a.layer);
    position.push_back(a.position);
    dim.push_back(a.dim);
    token.push_back(a.token);
    value.push_back(a.value);
    median.push_back(a.row_median);
  }
  const size_t nf = r.found.size();
  nb::dict found;
  found["layer"] = to_numpy(std::move(layer), {nf});
  found["position"] = to_numpy(std::move(position), {nf});
  found["dim"] = to_numpy(std::move(dim), {nf});
  found["token"] = to_numpy(std::move(token), {nf});
  found["value"] = to_numpy(std::move(value), {nf});
  found["row_median"] = to_numpy(std::move(median), {nf});
  std::vector<double> max_abs, median_abs;
  std::vector<int64_t> count;
  for (const auto& l : r.layers) {
    max_abs.push_back(l.max_abs);
    median_abs.push_back(l.median_abs);
    count.push_back(l.massive);
  }
  const size_t nl = r.layers.size();
  nb::dict d;
  d["found"] = found;
  d["max_abs"] = to_numpy(std::move(max_abs), {nl});
  d["median_abs"] = to_numpy(std::move(median_abs), {nl});
  d["massive_per_layer"] = to_numpy(std::move(count), {nl});
  d["ablation_layer"] = r.ablation_layer;
  d["ablation_dims"] = r.ablation_dims;
  d["eval_tokens"] = r.eval_tokens;
  d["ppl_original"] = r.ppl_original;
  d["ppl_mean"] = r.ppl_mean;
  d["ppl_zero"] = r.ppl_zero;
  return d;
}

nb::dict retrieval_py(Model& m, const std::vector<int64_t>& lengths, const std::vector<double>& depths, uint64_t seed,
                      int64_t max_new_tokens, double threshold, double min_recall, int64_t segment, int64_t repeats,
                      std::optional<std::string> head_map, std::optional<std::string> razor_map) {
  const std::string text = kjv();
  std::vector<an::NeedlePrompt> prompts;
  an::RetrievalOptions o;
  o.max_new_tokens = max_new_tokens;
  o.threshold = threshold;
  o.min_recall = min_recall;
  an::RetrievalReport r;
  run_locked(m, [&] {
    ATTNKIT_RETURN_IF_ERROR(an::needle_prompts(m.tokenizer(), text, lengths, depths, seed, &prompts));
    ATTNKIT_RETURN_IF_ERROR(an::retrieval_scores(&m, prompts, o, &r));
    ATTNKIT_RETURN_IF_ERROR(an::induction_echo(&m, segment, repeats, seed, &r));
    if (head_map)
      ATTNKIT_RETURN_IF_ERROR(an::write_head_map_scores(*head_map, r.n_layer, r.n_head, r.n_head_kv, r.score, "retrieval score"));
    if (razor_map)
      ATTNKIT_RETURN_IF_ERROR(an::write_razor_head_map(*razor_map, r.n_layer, r.n_head, r.n_head_kv, r.induction, r.echo));
    return Status::ok_status();
  });
  const size_t L = static_cast<size_t>(r.n_layer), H = static_cast<size_t>(r.n_head);
  nb::dict d;
  d["score"] = to_numpy(r.score, {L, H});
  d["induction"] = to_numpy(r.induction, {L, H});
  d["echo"] = to_numpy(r.echo, {L, H});
  d["prompts"] = r.prompts;
  d["counted"] = r.counted;
  d["answer_recall"] = r.answer_recall;
  d["threshold"] = r.options.threshold;
  nb::list pl;
  for (const auto& p : prompts) {
    nb::dict e;
    e["length"] = p.length;
    e["depth"] = p.depth;
    e["tokens"] = static_cast<int64_t>(p.tokens.size());
    e["needle"] = nb::make_tuple(p.needle_begin, p.needle_end);
    pl.append(e);
  }
  d["prompt_list"] = pl;
  return d;
}

}  // namespace

void bind_analysis(nb::module_& m) {
  m.def("_analysis_kjv_tokens", &kjv_tokens_py, nb::arg("model"), nb::arg("n"), nb::arg("offset"));
  m.def("_analysis_attention", &attention_py, nb::arg("model"), nb::arg("tokens"), nb::arg("layers").none(),
        nb::arg("rows").none());
  m.def("_analysis_sinks", &sinks_py, nb::arg("model"), nb::arg("samples"), nb::arg("first_k"), nb::arg("eps"),
        nb::arg("mid_threshold"), nb::arg("min_rows"));
  m.def("_analysis_entropy", &entropy_py, nb::arg("model"), nb::arg("tokens"), nb::arg("spectral_window"),
        nb::arg("spectral_start"), nb::arg("lognormal_row_stride"));
  m.def("_analysis_massive", &massive_py, nb::arg("model"), nb::arg("tokens"), nb::arg("eval_tokens").none(),
        nb::arg("abs_threshold"), nb::arg("median_ratio"));
  m.def("_analysis_retrieval_heads", &retrieval_py, nb::arg("model"), nb::arg("lengths"), nb::arg("depths"),
        nb::arg("seed"), nb::arg("max_new_tokens"), nb::arg("threshold"), nb::arg("min_recall"), nb::arg("segment"),
        nb::arg("repeats"), nb::arg("head_map").none(), nb::arg("razor_map").none());
}

}  // namespace attnkit::python
