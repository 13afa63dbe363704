// `attnkit bench`: one case when any shape option is given, else the default suite, through the
// shared harness (include/attnkit/bench.h). Prints a table with the yardsticks and ratios and
// writes a JSON array with one record per case to --json FILE (rewritten after every case, so an
// interrupted suite keeps the finished records).
#include <cstdio>
#include <iostream>
#include <memory>
#include <set>
#include <algorithm>

#include <nlohmann/json.hpp>

#include "attnkit/attention.h"
#include "attnkit/bench.h"
#include "attnkit/registry.h"
#include "attnkit/threads.h"
#include "commands.h"
#include "core/checked_size.h"
#include "core/output_file.h"

namespace attnkit::cli {
namespace {

struct BenchOptions {
  std::string mechanism = "exact";
  int64_t seq_q = 0, seq_kv = 0, heads_q = 0, heads_kv = 0, head_dim = 0, batch = 0;
  bool causal = true;
  std::string dtype;
  std::string vs_dtype;  // --vs-dtype: also time the case in this dtype, alternating run by run
  int threads = 0;
  std::string json_path;
  bool quick = false;
  // Which shape options were given (CLI11 options, read in the callback).
  std::vector<CLI::Option*> shape_options;
  CLI::Option* dtype_option = nullptr;
};

Status check_positive(const char* name, int64_t value) {
  if (value < 1) {
    return Status::invalid_argument(std::string(name) + " " + std::to_string(value) + " is not supported; expected >= 1");
  }
  return Status::ok_status();
}

// Builds the single case from the options given; an option not given keeps ProblemShape's
// default, except that a lone --seq-q or --seq-kv sets both (a square prefill problem).
Status single_case(const BenchOptions& o, bench::BenchCase* out) {
  bench::BenchCase c;
  c.mechanism_spec = o.mechanism;
  ProblemShape& s = c.shape;
  const bool has_q = o.shape_options[0]->count() > 0, has_kv = o.shape_options[1]->count() > 0;
  if (has_q) s.seq_q = o.seq_q;
  if (has_kv) s.seq_kv = o.seq_kv;
  if (has_q && !has_kv) s.seq_kv = o.seq_q;
  if (has_kv && !has_q) s.seq_q = o.seq_kv;
  if (o.shape_options[2]->count()) s.heads_q = o.heads_q;
  if (o.shape_options[3]->count()) s.heads_kv = o.heads_kv;
  if (o.shape_options[4]->count()) s.head_dim = o.head_dim;
  if (o.shape_options[5]->count()) s.batch = o.batch;
  s.causal = o.causal;
  if (!o.dtype.empty()) ATTNKIT_RETURN_IF_ERROR(parse_enum_param("dtype", o.dtype, &s.dtype));
  s.threads = o.threads;
  if (!o.vs_dtype.empty()) {
    ATTNKIT_RETURN_IF_ERROR(parse_enum_param("--vs-dtype", o.vs_dtype, &c.vs_dtype));
    c.compare_dtype = true;
  }
  ATTNKIT_RETURN_IF_ERROR(check_positive("seq_q", s.seq_q));
  ATTNKIT_RETURN_IF_ERROR(check_positive("seq_kv", s.seq_kv));
  ATTNKIT_RETURN_IF_ERROR(check_positive("heads_q", s.heads_q));
  ATTNKIT_RETURN_IF_ERROR(check_positive("heads_kv", s.heads_kv));
  ATTNKIT_RETURN_IF_ERROR(check_positive("head_dim", s.head_dim));
  ATTNKIT_RETURN_IF_ERROR(check_positive("batch", s.batch));
  if (s.heads_q % s.heads_kv != 0) {
    return Status::invalid_argument("heads_q " + std::to_string(s.heads_q) + " is not a multiple of heads_kv " +
                                    std::to_string(s.heads_kv));
  }
  ATTNKIT_RETURN_IF_ERROR(check_problem_shape(s));  // before the yardsticks take their time
  *out = c;
  return Status::ok_status();
}

// The default suite with the mechanism, thread count and (if given) dtype applied; a dtype
// override collapses cases that then become identical.
std::vector<bench::BenchCase> suite_cases(const BenchOptions& o, DType dtype, bool dtype_given) {
  std::vector<bench::BenchCase> out;
  for (bench::BenchCase c : bench::default_suite(o.mechanism, o.threads)) {
    if (dtype_given) c.shape.dtype = dtype;
    const bool dup = std::any_of(out.begin(), out.end(), [&](const bench::BenchCase& e) {
      const ProblemShape &a = e.shape, &b = c.shape;
      return a.seq_q == b.seq_q && a.seq_kv == b.seq_kv && a.head_dim == b.head_dim && a.causal == b.causal &&
             a.dtype == b.dtype && a.heads_q == b.heads_q && a.heads_kv == b.heads_kv;
    });
    if (!dup) out.push_back(c);
  }
  return out;
}


void run_bench(const BenchOptions& o) {
  // Check the mechanism spec before measuring anything.
  const Mechanism* mech = nullptr;
  MechanismParams params;
  check(parse_mechanism_spec(o.mechanism, &mech, &params));

  bool single = false;
  for (CLI::Option* opt : o.shape_options) single = single || opt->count() > 0;
  std::vector<bench::BenchCase> cases;
  if (single) {
    bench::BenchCase c;
    check(single_case(o, &c));
    cases.push_back(c);
  } else {
    if (!o.vs_dtype.empty()) fail("--vs-dtype compares one case; give the case's shape options (e.g. --seq-q 1 --seq-kv N)");
    DType dt = DType::kF32;
    if (!o.dtype.empty()) check(parse_enum_param("dtype", o.dtype, &dt));
    cases = suite_cases(o, dt, !o.dtype.empty());
  }

  nlohmann::json records = nlohmann::json::array();
  // Fail early on a path that cannot be written; the file itself is only replaced once a case is done.
  if (!o.json_path.empty()) check(check_output_path(o.json_path, "--json"));

  bench::YardstickOptions yopt = bench::yardstick_options_from_env();
  bench::TimingOptions topt = bench::timing_options_from_env();
  if (o.quick) {
    yopt = bench::YardstickOptions{256, int64_t{16} << 20, 2};
    topt = bench::TimingOptions{0, 1, 0.0, 0.0};
  }
  bench::YardstickCache yardsticks(yopt);
  std::set<int> announced;
  std::printf("attnkit bench: %zu case%s, SIMD target %s\n", cases.size(), cases.size() == 1 ? "" : "s",
              simd_target_name().c_str());
  bool header_printed = false;
  for (const bench::BenchCase& c : cases) {
    int threads = 0;
    check(resolve_threads(c.shape.threads, "threads", &threads));
    if (!announced.count(threads)) {
      bench::Yardsticks y;
      check(yardsticks.get(threads, &y));
      std::printf("%s\n", bench::yardstick_line(y).c_str());
      announced.insert(threads);
    }
    if (!header_printed) {
      std::printf("%s\n", bench::table_header().c_str());
      header_printed = true;
    }
    std::fflush(stdout);
    bench::Record r;
    check(bench::run_case(c, topt, &yardsticks, &r));
    std::printf("%s\n", bench::table_row(r).c_str());
    if (!r.vs_dtype.empty()) {
      std::printf("  vs %s: %.2fx the time of %s (median over %d rounds alternating one run of each; %s median %.3f ms)\n",
                  r.vs_dtype.c_str(), r.speedup_vs_dtype, r.dtype.c_str(), r.vs_dtype_rounds, r.vs_dtype.c_str(),
                  r.vs_dtype_seconds * 1e3);
    }
    std::fflush(stdout);
    records.push_back(bench::record_to_json(r));
    if (!o.json_path.empty()) check(write_file_atomic(o.json_path, records.dump(2) + "\n", "--json"));
  }
  if (!o.json_path.empty()) std::printf("wrote %zu record%s to %s\n", records.size(), records.size() == 1 ? "" : "s", o.json_path.c_str());
}

void add_bench(CLI::App& root) {
  CLI::App* cmd = root.add_subcommand(
      "bench",
      "Benchmark a mechanism: one case when any shape option is given, else the default suite "
      "(prefill seq 1024..16384 x head_dim 64/128 x causal/non-causal, heads 8/2; decode kv 4096..131072, "
      "heads 32/8, head_dim 128, f32 and bf16)");
  auto o = std::make_shared<BenchOptions>();
  cmd->add_option("--mechanism,-m", o->mechanism, "NAME[:key=value,...] (see `attnkit list`)")->capture_default_str();
  o->shape_options.push_back(cmd->add_option("--seq-q", o->seq_q, "Query length (1 = decode); alone, also sets --seq-kv"));
  o->shape_options.push_back(cmd->add_option("--seq-kv", o->seq_kv, "Key/value length; alone, also sets --seq-q"));
  o->shape_options.push_back(cmd->add_option("--heads-q", o->heads_q, "Query heads (default 8)"));
  o->shape_options.push_back(cmd->add_option("--heads-kv", o->heads_kv, "Key/value heads (default 2)"));
  o->shape_options.push_back(cmd->add_option("--head-dim", o->head_dim, "Head dimension (default 128)"));
  o->shape_options.push_back(cmd->add_option("--batch", o->batch, "Batch size (default 1)"));
  o->shape_options.push_back(cmd->add_flag("--causal,!--no-causal", o->causal, "Causal mask (default) or none; like the shape options, selects a single case"));
  cmd->add_option("--dtype", o->dtype, "Q/K/V dtype (default f32; int8: K/V int8 with per-(token, head) scales, Q f32; with the suite, "
                  "overrides every case)")
      ->check(enum_validator<DType>("dtype"));
  cmd->add_option("--vs-dtype", o->vs_dtype,
                  "Also time the case with Q/K/V in this dtype, alternating one run of each, and record the time "
                  "ratio (one case only)");
  add_threads_option(cmd, &o->threads, "Threads for the mechanism and the yardsticks (0 = all)");
  cmd->add_option("--json", o->json_path, "Write a JSON array with one record per case to FILE");
  cmd->add_flag("--quick", o->quick, "Small yardsticks and one timed run (smoke test; same as ATTNKIT_BENCH_QUICK=1)");
  cmd->callback([o] { run_bench(*o); });
}

}  // namespace
}  // namespace attnkit::cli

ATTNKIT_CLI_COMMAND("bench", attnkit::cli::add_bench);
