// `attnkit fidelity`: runs a sparse method next to dense exact attention on the same inputs and
// prints its fidelity metrics (attnkit/fidelity.h): density, attention-mass recall (mean and
// worst row), output relative L2 error, estimation time, attention time, dense time.
//
//   attnkit fidelity --mechanism vertical_slash:vertical=500,slash=1000 --seq-q 8192 --json out.json
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "attnkit/fidelity.h"
#include "attnkit/memory.h"
#include "attnkit/sparse.h"
#include "core/checked_size.h"
#include "core/output_file.h"
#include "commands.h"

namespace attnkit::cli {
namespace {

struct FidelityOptions {
  std::string mechanism;
  int64_t seq_q = 4096, seq_kv = 0, heads_q = 8, heads_kv = 2, head_dim = 128, batch = 1;
  bool causal = true;
  int threads = 0;
  int repeats = 1;
  int64_t seed = 1;
  std::string data = "planted";
  std::string json_path;
};

float uniform(uint64_t seed, int64_t i) {
  uint64_t z = seed * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(i) * 0xbf58476d1ce4e5b9ull + 1;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return 2.0f * static_cast<float>(z >> 40) * (1.0f / 16777216.0f) - 1.0f;
}

// Inputs: uniform [-1, 1) ("random": near-uniform attention, the hardest case for a sparse
// method), or "planted": in addition, per kv head 16 keys share a direction u that every query
// also carries, so those keys dominate (a sink/retrieval-like structure sparse methods should find).
void make_inputs(const FidelityOptions& o, std::vector<float>* q, std::vector<float>* k, std::vector<float>* v) {
  const int64_t d = o.head_dim;
  q->resize(o.batch * o.seq_q * o.heads_q * d);
  k->resize(o.batch * o.seq_kv * o.heads_kv * d);
  v->resize(k->size());
  for (size_t i = 0; i < q->size(); ++i) (*q)[i] = uniform(o.seed, static_cast<int64_t>(i));
  for (size_t i = 0; i < k->size(); ++i) (*k)[i] = uniform(o.seed + 1, static_cast<int64_t>(i));
  for (size_t i = 0; i < v->size(); ++i) (*v)[i] = uniform(o.seed + 2, static_cast<int64_t>(i));
  if (o.data != "planted") return;
  std::vector<float> u(d);
  double n2 = 0;
  for (int64_t c = 0; c < d; ++c) {
    u[c] = uniform(o.seed + 3, c);
    n2 += u[c] * u[c];
  }
  // q.k_planted ~ 0.5 * 0.5 * d with logits scaled by 1/sqrt(d): ~0.25 sqrt(d) nats (2.8 at d=128)
  // above a random key per planted key: dominant in aggregate, not a one-hot.
  for (auto& x : u) x = static_cast<float>(x / std::sqrt(n2) * std::sqrt(static_cast<double>(d)));
  for (int64_t b = 0; b < o.batch; ++b) {
    for (int64_t t = 0; t < 16; ++t) {
      const int64_t j = (t * 7919 + 13) % o.seq_kv;
      for (int64_t h = 0; h < o.heads_kv; ++h)
        for (int64_t c = 0; c < d; ++c) (*k)[((b * o.seq_kv + j) * o.heads_kv + h) * d + c] = 1.5f * u[c];
    }
    for (int64_t i = 0; i < o.seq_q; ++i)
      for (int64_t h = 0; h < o.heads_q; ++h)
        for (int64_t c = 0; c < d; ++c) (*q)[((b * o.seq_q + i) * o.heads_q + h) * d + c] += 0.5f * u[c];
  }
}

void run_fidelity(FidelityOptions o) {
  if (o.mechanism.empty()) fail("--mechanism is required (one of the sparse methods of `attnkit list`)");
  if (o.seq_kv == 0) o.seq_kv = o.seq_q;
  const std::pair<const char*, int64_t> dims[] = {{"seq_q", o.seq_q},     {"seq_kv", o.seq_kv},     {"heads_q", o.heads_q},
                                                  {"heads_kv", o.heads_kv}, {"head_dim", o.head_dim}, {"batch", o.batch},
                                                  {"repeats", o.repeats}};
  for (const auto& [name, value] : dims) {
    if (value < 1) fail(std::string(name) + " " + std::to_string(value) + " is not supported; expected >= 1");
  }
  if (o.heads_q % o.heads_kv != 0) {
    fail("heads_q " + std::to_string(o.heads_q) + " is not a multiple of heads_kv " + std::to_string(o.heads_kv));
  }
  if (o.data != "random" && o.data != "planted") fail("data '" + o.data + "' is not supported; expected random|planted");
  ProblemShape shape;
  shape.batch = o.batch;
  shape.seq_q = o.seq_q;
  shape.seq_kv = o.seq_kv;
  shape.heads_q = o.heads_q;
  shape.heads_kv = o.heads_kv;
  shape.head_dim = o.head_dim;
  check(check_problem_shape(shape));  // before make_inputs multiplies the sizes out
  if (!o.json_path.empty()) check(check_output_path(o.json_path, "--json"));
  {
    std::unique_ptr<SparseMethod> probe;
    check(make_sparse_method(o.mechanism, &probe));  // fail on a bad spec before building inputs
  }
  std::vector<float> q, k, v;
  make_inputs(o, &q, &k, &v);
  const TensorView qv = TensorView::contiguous(q.data(), DType::kF32, o.batch, o.seq_q, o.heads_q, o.head_dim);
  const TensorView kv = TensorView::contiguous(k.data(), DType::kF32, o.batch, o.seq_kv, o.heads_kv, o.head_dim);
  const TensorView vv = TensorView::contiguous(v.data(), DType::kF32, o.batch, o.seq_kv, o.heads_kv, o.head_dim);
  AttentionParams p;
  p.causal = o.causal;
  p.num_threads = o.threads;
  FidelityReport r;
  check(measure_sparse_fidelity(o.mechanism, qv, kv, vv, p, o.repeats, &r));
  std::printf("attnkit fidelity: %s  batch %lld seq_q %lld seq_kv %lld heads %lld/%lld head_dim %lld %s, data %s\n",
              r.mechanism.c_str(), static_cast<long long>(o.batch), static_cast<long long>(o.seq_q),
              static_cast<long long>(o.seq_kv), static_cast<long long>(o.heads_q), static_cast<long long>(o.heads_kv),
              static_cast<long long>(o.head_dim), o.causal ? "causal" : "non-causal", o.data.c_str());
  std::printf("  density          %.4f\n", r.density);
  if (r.has_recall) {
    std::printf("  recall mean      %.6f\n  recall worst     %.6f\n", r.recall_mean, r.recall_worst);
  } else {
    std::printf("  recall           n/a (no per-row key set)\n");
  }
  std::printf("  rel L2 error     %.3e\n", r.rel_l2_error);
  std::printf("  estimate         %.4f s (%.1f%% of dense)\n", r.estimate_seconds, 100.0 * r.estimate_seconds / r.dense_seconds);
  std::printf("  attention        %.4f s\n", r.attention_seconds);
  std::printf("  dense exact      %.4f s (speedup %.2fx attention only)\n", r.dense_seconds,
              r.dense_seconds / r.attention_seconds);
  if (!o.json_path.empty()) {
    nlohmann::json j = {{"mechanism", r.mechanism},
                        {"batch", o.batch},
                        {"seq_q", o.seq_q},
                        {"seq_kv", o.seq_kv},
                        {"heads_q", o.heads_q},
                        {"heads_kv", o.heads_kv},
                        {"head_dim", o.head_dim},
                        {"causal", o.causal},
                        {"data", o.data},
                        {"threads", o.threads},
                        {"density", r.density},
                        {"rel_l2_error", r.rel_l2_error},
                        {"estimate_seconds", r.estimate_seconds},
                        {"attention_seconds", r.attention_seconds},
                        {"dense_seconds", r.dense_seconds},
                        {"speedup_attention", r.dense_seconds / r.attention_seconds}};
    if (r.has_recall) {
      j["recall_mean"] = r.recall_mean;
      j["recall_worst"] = r.recall_worst;
    } else {
      j["recall_mean"] = nullptr;
      j["recall_worst"] = nullptr;
    }
    check(write_file_atomic(o.json_path, j.dump(2) + "\n", "--json"));
    std::printf("wrote %s\n", o.json_path.c_str());
  }
}

void add_fidelity(CLI::App& root) {
  CLI::App* cmd = root.add_subcommand(
      "fidelity", "Compare a sparse method with exact attention: density, mass recall, output error, times");
  auto o = std::make_shared<FidelityOptions>();
  cmd->add_option("--mechanism,-m", o->mechanism, "NAME[:key=value,...] of a sparse method (see `attnkit list`)")
      ->required();
  cmd->add_option("--seq-q", o->seq_q, "Query length")->capture_default_str();
  cmd->add_option("--seq-kv", o->seq_kv, "Key/value length (default: --seq-q)");
  cmd->add_option("--heads-q", o->heads_q, "Query heads")->capture_default_str();
  cmd->add_option("--heads-kv", o->heads_kv, "Key/value heads")->capture_default_str();
  cmd->add_option("--head-dim", o->head_dim, "Head dimension")->capture_default_str();
  cmd->add_option("--batch", o->batch, "Batch size")->capture_default_str();
  cmd->add_flag("--causal,!--no-causal", o->causal, "Causal mask (default) or none");
  add_threads_option(cmd, &o->threads, "Threads (0 = all)");
  cmd->add_option("--repeats", o->repeats, "Timed runs (best of)")->capture_default_str();
  cmd->add_option("--seed", o->seed, "Seed of the inputs")->capture_default_str();
  cmd->add_option("--data", o->data, "random|planted (planted: a few keys every query attends)")->capture_default_str();
  cmd->add_option("--json", o->json_path, "Write the metrics as a JSON object to FILE");
  cmd->callback([o] { run_fidelity(*o); });
}

}  // namespace
}  // namespace attnkit::cli

ATTNKIT_CLI_COMMAND("fidelity", attnkit::cli::add_fidelity);
