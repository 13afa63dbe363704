// Google Benchmark program for exact attention: the default suite of the shared harness
// (prefill and decode rows), with the same FLOP/byte formulas (the mechanism's flops()/bytes(),
// i.e. attention_flops/attention_bytes) and the same yardsticks as `attnkit bench`.
//
//   build/bench/attnkit_gbench [--threads=N] [--mechanism=SPEC] [--benchmark_filter=decode] ...
//
// Counters per case: GFLOPS, GBps, x_sgemm (GFLOPS / sgemm GFLOP/s), x_stream (GBps / stream
// GB/s), extra_MiB (peak scratch). The yardsticks are measured once at start (with the case
// thread count) and printed in the context block.
#include <benchmark/benchmark.h>

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/bench.h"
#include "attnkit/registry.h"
#include "attnkit/threads.h"

namespace {

using attnkit::bench::BenchCase;

attnkit::bench::Yardsticks g_yardsticks;

// Google Benchmark may call a benchmark function several times (to pick the iteration count);
// the latest prepared case is kept so the 1 GiB decode K/V are filled once, and freed as soon
// as the next case starts.
struct PreparedSlot {
  size_t index = static_cast<size_t>(-1);
  std::unique_ptr<attnkit::PreparedRun> run;
} g_slot;

std::string case_name(const BenchCase& c) {
  const attnkit::ProblemShape& s = c.shape;
  char buf[256];
  std::snprintf(buf, sizeof(buf), "%s/%s/sq%lld/skv%lld/h%lld-%lld/d%lld/%s/%s", c.mechanism_spec.c_str(),
                s.seq_q == 1 ? "decode" : "prefill", static_cast<long long>(s.seq_q),
                static_cast<long long>(s.seq_kv), static_cast<long long>(s.heads_q), static_cast<long long>(s.heads_kv),
                static_cast<long long>(s.head_dim), s.causal ? "causal" : "full", attnkit::dtype_name(s.dtype));
  return buf;
}

void run_case(benchmark::State& state, size_t index, BenchCase c) {
  if (g_slot.index != index) {
    g_slot.run.reset();  // free the previous case first
    const attnkit::Mechanism* mech = nullptr;
    attnkit::MechanismParams params;
    attnkit::Status s = attnkit::parse_mechanism_spec(c.mechanism_spec, &mech, &params);
    if (s.ok()) s = mech->prepare(c.shape, params, &g_slot.run);
    if (!s.ok()) {
      g_slot.run.reset();
      state.SkipWithError(s.message().c_str());
      return;
    }
    g_slot.index = index;
  }
  attnkit::PreparedRun& run = *g_slot.run;
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    attnkit::Status s = run.run();
    if (!s.ok()) {
      state.SkipWithError(s.message().c_str());
      return;
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double per_run = secs / static_cast<double>(state.iterations());
  // The same record arithmetic as the CLI (finish_record), so the two cannot disagree.
  attnkit::bench::Record r;
  r.seconds = per_run;
  r.flops = run.flops();
  r.bytes = run.bytes();
  r.sgemm_gflops = g_yardsticks.sgemm_gflops;
  r.stream_gbps = g_yardsticks.stream_gbps;
  r.stream_gbps_slowest = g_yardsticks.stream_gbps_slowest;
  attnkit::bench::finish_record(&r);
  state.counters["GFLOPS"] = r.gflops;
  state.counters["GBps"] = r.gbps;
  state.counters["x_sgemm"] = r.gflops_vs_sgemm;
  state.counters["x_stream"] = r.gbps_vs_stream;
  state.counters["extra_MiB"] = static_cast<double>(run.extra_bytes()) / (1 << 20);
}

// Takes "--name=value" out of argv (Google Benchmark rejects flags it does not know).
bool take_flag(int* argc, char** argv, const char* name, std::string* value) {
  const size_t n = std::strlen(name);
  for (int i = 1; i < *argc; ++i) {
    if (std::strncmp(argv[i], name, n) == 0 && argv[i][n] == '=') {
      *value = argv[i] + n + 1;
      for (int j = i; j + 1 < *argc; ++j) argv[j] = argv[j + 1];
      --*argc;
      return true;
    }
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  std::string threads_arg = "0", mechanism = "exact";
  take_flag(&argc, argv, "--threads", &threads_arg);
  take_flag(&argc, argv, "--mechanism", &mechanism);
  char* end = nullptr;
  const long threads_value = std::strtol(threads_arg.c_str(), &end, 10);
  int threads = 0;
  if (threads_arg.empty() || *end != '\0' || threads_value < INT_MIN || threads_value > INT_MAX) {
    std::fprintf(stderr, "attnkit_gbench: --threads=%s is not an integer\n", threads_arg.c_str());
    return 1;
  }
  if (const attnkit::Status s = attnkit::resolve_threads(static_cast<int>(threads_value), "--threads", &threads); !s.ok()) {
    std::fprintf(stderr, "attnkit_gbench: %s\n", s.message().c_str());
    return 1;
  }
  {
    const attnkit::Mechanism* mech = nullptr;
    attnkit::MechanismParams params;
    attnkit::Status s = attnkit::parse_mechanism_spec(mechanism, &mech, &params);
    if (!s.ok()) {
      std::fprintf(stderr, "attnkit_gbench: %s\n", s.message().c_str());
      return 1;
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

  attnkit::Status s =
      attnkit::bench::measure_yardsticks(threads, attnkit::bench::yardstick_options_from_env(), &g_yardsticks);
  if (!s.ok()) {
    std::fprintf(stderr, "attnkit_gbench: yardsticks failed: %s\n", s.message().c_str());
    return 1;
  }
  benchmark::AddCustomContext("attnkit_threads", std::to_string(threads));
  benchmark::AddCustomContext("attnkit_simd_target", attnkit::simd_target_name());
  benchmark::AddCustomContext("sgemm_gflops", std::to_string(g_yardsticks.sgemm_gflops));
  benchmark::AddCustomContext("sgemm_n", std::to_string(g_yardsticks.sgemm_n));
  benchmark::AddCustomContext("stream_gbps", std::to_string(g_yardsticks.stream_gbps));
  benchmark::AddCustomContext("stream_bytes", std::to_string(g_yardsticks.stream_bytes));

  const std::vector<BenchCase> cases = attnkit::bench::default_suite(mechanism, threads);
  for (size_t i = 0; i < cases.size(); ++i) {
    benchmark::RegisterBenchmark(case_name(cases[i]).c_str(), run_case, i, cases[i])
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  g_slot.run.reset();
  return 0;
}
