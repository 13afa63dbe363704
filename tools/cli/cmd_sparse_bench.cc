// `attnkit sparse-bench`: the sparse family's benchmark targets, measured in one process through the
// shared benchmark harness (same timing, FLOP counts and yardsticks as `attnkit bench`):
//   - dense exact attention vs block-sparse attention at densities 5/10/25/50% (random causal
//     blocks, attention time only: block_random:density=D,phase=attend);
//   - estimation time of vertical-slash and block top-k (phase=estimate) as a share of dense;
//   - time against density: each density's time against a line through the origin fitted to the
//     four points, and against density x dense time.
//
//   attnkit sparse-bench --seq 32768 --head-dim 128 --heads-q 1 --heads-kv 1 --json sparse.json
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "attnkit/attention.h"
#include "attnkit/bench.h"
#include "commands.h"
#include "core/checked_size.h"
#include "core/output_file.h"

namespace attnkit::cli {
namespace {

struct SparseBenchOptions {
  int64_t seq = 32768, heads_q = 1, heads_kv = 1, head_dim = 128;
  int threads = 0;
  int runs = 1;
  std::string vertical_slash = "vertical_slash";
  std::string block_topk = "block_topk:topk=51";
  std::string json_path;
};

void run_sparse_bench(const SparseBenchOptions& o) {
  if (o.seq < 64 || o.seq > kMaxDim)
    fail("seq " + std::to_string(o.seq) + " is not supported; expected 64.." + std::to_string(kMaxDim));
  if (o.runs < 1) fail("runs " + std::to_string(o.runs) + " is not supported; expected >= 1");
  if (o.heads_q < 1 || o.heads_kv < 1 || o.heads_q % o.heads_kv != 0 || o.head_dim < 1) {
    fail("heads_q " + std::to_string(o.heads_q) + " / heads_kv " + std::to_string(o.heads_kv) + " / head_dim " +
         std::to_string(o.head_dim) + " is not a valid shape");
  }
  ProblemShape shape;
  shape.seq_q = shape.seq_kv = o.seq;
  shape.heads_q = o.heads_q;
  shape.heads_kv = o.heads_kv;
  shape.head_dim = o.head_dim;
  shape.causal = true;
  shape.threads = o.threads;
  check(check_problem_shape(shape));  // before the yardsticks and the first case
  if (!o.json_path.empty()) check(check_output_path(o.json_path, "--json"));
  const std::vector<double> densities = {0.05, 0.10, 0.25, 0.50};
  std::vector<std::string> specs = {"exact"};
  for (double d : densities) {
    char buf[96];
    std::snprintf(buf, sizeof(buf), "block_random:density=%.2f,phase=attend", d);
    specs.push_back(buf);
  }
  specs.push_back(o.vertical_slash + (o.vertical_slash.find(':') == std::string::npos ? ":" : ",") + "phase=estimate");
  specs.push_back(o.block_topk + (o.block_topk.find(':') == std::string::npos ? ":" : ",") + "phase=estimate");
  specs.push_back(o.block_topk + (o.block_topk.find(':') == std::string::npos ? ":" : ",") + "phase=attend");

  bench::TimingOptions timing{0, o.runs, 0.0, 0.0};
  bench::YardstickCache yardsticks(bench::yardstick_options_from_env());
  bench::Yardsticks y;
  check(yardsticks.get(o.threads, &y));
  std::printf("attnkit sparse-bench: seq %lld, heads %lld/%lld, head_dim %lld, causal, f32, SIMD %s\n%s\n%s\n",
              static_cast<long long>(o.seq), static_cast<long long>(o.heads_q), static_cast<long long>(o.heads_kv),
              static_cast<long long>(o.head_dim), simd_target_name().c_str(), bench::yardstick_line(y).c_str(),
              bench::table_header().c_str());
  std::fflush(stdout);
  std::vector<bench::Record> recs;
  nlohmann::json out = {{"records", nlohmann::json::array()}};
  for (const std::string& spec : specs) {
    bench::BenchCase c;
    c.mechanism_spec = spec;
    c.shape = shape;
    bench::Record r;
    check(bench::run_case(c, timing, &yardsticks, &r));
    std::printf("%s\n", bench::table_row(r).c_str());
    std::fflush(stdout);
    recs.push_back(r);
    out["records"].push_back(bench::record_to_json(r));
  }
  const double dense = recs[0].seconds;
  const double t10 = recs[2].seconds;
  std::printf("\nblock-sparse at 10%% density: %.2fx faster than dense (target >= 7x)\n", dense / t10);
  out["speedup_10pct"] = dense / t10;
  // Proportionality: each density's time against c * density, with c the least-squares slope
  // through the origin of the four points (and, second column, against density x dense time).
  double num = 0, den = 0;
  for (size_t i = 0; i < densities.size(); ++i) {
    num += recs[1 + i].seconds * densities[i];
    den += densities[i] * densities[i];
  }
  const double slope = num / den;
  std::printf("time vs density (target: within 25%% of proportional):\n");
  std::printf("  density  time_ms  vs fitted c*density  vs density*dense  time/time(10%%)\n");
  nlohmann::json scaling = nlohmann::json::array();
  for (size_t i = 0; i < densities.size(); ++i) {
    const double t = recs[1 + i].seconds;
    const double dev_fit = t / (slope * densities[i]) - 1.0, dev_dense = t / (densities[i] * dense) - 1.0;
    std::printf("  %7.2f %8.1f %+19.1f%% %+16.1f%% %14.3f\n", densities[i], 1e3 * t, 100.0 * dev_fit, 100.0 * dev_dense,
                t / t10);
    scaling.push_back({{"density", densities[i]}, {"seconds", t}, {"deviation_from_fit", dev_fit},
                       {"deviation_from_dense_scaled", dev_dense}, {"time_ratio_to_10pct", t / t10}});
  }
  out["scaling"] = scaling;
  const double vs = recs[5].seconds / dense, bt = recs[6].seconds / dense;
  std::printf("estimation / dense: %s %.2f%%, %s %.2f%% (target <= 10%%)\n", o.vertical_slash.c_str(), 100.0 * vs,
              o.block_topk.c_str(), 100.0 * bt);
  std::printf("%s attention: %.2fx faster than dense\n", o.block_topk.c_str(), dense / recs[7].seconds);
  out["estimate_share_vertical_slash"] = vs;
  out["estimate_share_block_topk"] = bt;
  if (!o.json_path.empty()) {
    check(write_file_atomic(o.json_path, out.dump(2) + "\n", "--json"));
    std::printf("wrote %s\n", o.json_path.c_str());
  }
}

void add_sparse_bench(CLI::App& root) {
  CLI::App* cmd = root.add_subcommand(
      "sparse-bench", "Sparse targets in one run: block-sparse vs dense at 5/10/25/50% density, estimation share");
  auto o = std::make_shared<SparseBenchOptions>();
  cmd->add_option("--seq", o->seq, "Sequence length (queries = keys)")->capture_default_str();
  cmd->add_option("--heads-q", o->heads_q, "Query heads")->capture_default_str();
  cmd->add_option("--heads-kv", o->heads_kv, "Key/value heads")->capture_default_str();
  cmd->add_option("--head-dim", o->head_dim, "Head dimension")->capture_default_str();
  add_threads_option(cmd, &o->threads, "Threads (0 = all)");
  cmd->add_option("--runs", o->runs, "Timed runs per case (median)")->capture_default_str();
  cmd->add_option("--vertical-slash", o->vertical_slash, "vertical-slash spec to time")->capture_default_str();
  cmd->add_option("--block-topk", o->block_topk, "block top-k spec to time")->capture_default_str();
  cmd->add_option("--json", o->json_path, "Write the records and ratios to FILE");
  cmd->callback([o] { run_sparse_bench(*o); });
}

}  // namespace
}  // namespace attnkit::cli

ATTNKIT_CLI_COMMAND("sparse-bench", attnkit::cli::add_sparse_bench);
