// Google Benchmark cases of the linear family, in the attnkit_gbench program (bench/*.cc are one
// executable; main() is in exact_bench.cc). They are registered only when ATTNKIT_BENCH_LINEAR=1 so
// the exact suite's default run is unchanged:
//
//   ATTNKIT_BENCH_LINEAR=1 build/bench/attnkit_gbench --benchmark_filter='^Linear'
//     LinearPrefill/<mech>     chunked prefill, f32, head_dim 128, seq 16384, 8 heads: GFLOPS from
//                              the mechanism's flops() (linear_chunked_flops), x_sgemm = GFLOPS /
//                              OpenBLAS sgemm GFLOP/s measured in the same process and thread count
//     LinearDecodeFlat/<mech>  one decode step (1 thread) at position 1e3 and at 1e6, interleaved, medians;
//                              ratio_1e6_over_1e3 should be within [0.9, 1.1]
//     LinearCrossover/<mech>   smallest prefill length (doubling from 256) at which the mechanism
//                              is faster than exact causal attention (mechanism "exact") on the
//                              same shape, run and machine; crossover_len = 0 when none up to 32768
//   ATTNKIT_BENCH_LINEAR_MECHS=gla,simple_gla limits the mechanisms (default: every "linear" one).
#include <benchmark/benchmark.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "attnkit/bench.h"
#include "attnkit/registry.h"

namespace {

using attnkit::Mechanism;
using attnkit::MechanismParams;
using attnkit::PreparedRun;
using attnkit::ProblemShape;

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

double sgemm_gflops() {
  static double cached = -1;
  if (cached < 0) {
    const int threads = omp_get_max_threads();
    if (!attnkit::bench::measure_sgemm_gflops(threads, 2048, 3, &cached).ok()) cached = 0;
  }
  return cached;
}

bool prepare(const std::string& spec, const ProblemShape& s, std::unique_ptr<PreparedRun>* run, std::string* err) {
  const Mechanism* m = nullptr;
  MechanismParams p;
  attnkit::Status st = attnkit::parse_mechanism_spec(spec, &m, &p);
  if (st.ok()) st = m->prepare(s, p, run);
  if (!st.ok()) *err = st.message();
  return st.ok();
}

// Median seconds of `reps` runs after one warmup.
double time_median(PreparedRun& run, int reps) {
  (void)run.run();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const double t0 = now_s();
    (void)run.run();
    t.push_back(now_s() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void prefill(benchmark::State& state, std::string mech) {
  ProblemShape s;
  s.batch = 1;
  s.seq_q = s.seq_kv = 16384;
  s.heads_q = s.heads_kv = 8;
  s.head_dim = 128;
  std::unique_ptr<PreparedRun> run;
  std::string err;
  if (!prepare(mech, s, &run, &err)) {
    state.SkipWithError(err.c_str());
    return;
  }
  const double sg = sgemm_gflops();
  const double t0 = now_s();
  for (auto _ : state) benchmark::DoNotOptimize(run->run());
  const double per = (now_s() - t0) / static_cast<double>(state.iterations());
  const double gf = run->flops() / per / 1e9;
  state.counters["GFLOPS"] = gf;
  state.counters["sgemm_GFLOPS"] = sg;
  state.counters["x_sgemm"] = sg > 0 ? gf / sg : 0;
}

void decode_flat(benchmark::State& state, std::string mech) {
  std::unique_ptr<PreparedRun> near_run, far_run;
  std::string err;
  ProblemShape s;
  s.batch = 1;
  s.seq_q = 1;
  s.heads_q = s.heads_kv = 8;
  s.head_dim = 128;
  // One thread: the question is whether the step depends on the position, and on a shared machine
  // the wake-up of an OpenMP team costs more than the step itself and varies far more than 10%.
  s.threads = 1;
  s.seq_kv = 1000;
  if (!prepare(mech, s, &near_run, &err)) {
    state.SkipWithError(err.c_str());
    return;
  }
  s.seq_kv = 1000000;
  if (!prepare(mech, s, &far_run, &err)) {
    state.SkipWithError(err.c_str());
    return;
  }
  std::vector<double> tn, tf;
  for (auto _ : state) {
    // Interleaved so that machine noise hits both positions alike.
    for (int i = 0; i < 200; ++i) {
      // Alternate which position goes first so cache and frequency effects do not favor one.
      for (int j = 0; j < 2; ++j) {
        const bool far = (i + j) % 2 == 1;
        const double t0 = now_s();
        (void)(far ? far_run : near_run)->run();
        (far ? tf : tn).push_back(now_s() - t0);
      }
    }
  }
  std::sort(tn.begin(), tn.end());
  std::sort(tf.begin(), tf.end());
  const double mn = tn[tn.size() / 2], mf = tf[tf.size() / 2];
  state.counters["step_us_pos1e3"] = mn * 1e6;
  state.counters["step_us_pos1e6"] = mf * 1e6;
  state.counters["ratio_1e6_over_1e3"] = mf / mn;
}

void crossover(benchmark::State& state, std::string mech) {
  int64_t found = 0;
  double t_lin = 0, t_exact = 0;
  for (auto _ : state) {
    found = 0;
    for (int64_t L = 256; L <= 32768; L *= 2) {
      ProblemShape s;
      s.batch = 1;
      s.seq_q = s.seq_kv = L;
      s.heads_q = s.heads_kv = 4;
      s.head_dim = 128;
      s.causal = true;
      std::unique_ptr<PreparedRun> lin, ex;
      std::string err;
      if (!prepare(mech, s, &lin, &err) || !prepare("exact", s, &ex, &err)) {
        state.SkipWithError(err.c_str());
        return;
      }
      const int reps = L <= 2048 ? 5 : 1;
      t_lin = time_median(*lin, reps);
      t_exact = time_median(*ex, reps);
      if (t_lin < t_exact) {
        found = L;
        break;
      }
    }
  }
  state.counters["crossover_len"] = static_cast<double>(found);
  state.counters["linear_ms_at_crossover"] = t_lin * 1e3;
  state.counters["exact_ms_at_crossover"] = t_exact * 1e3;
}

std::vector<std::string> mechanisms() {
  std::vector<std::string> out;
  if (const char* env = std::getenv("ATTNKIT_BENCH_LINEAR_MECHS")) {
    std::stringstream ss(env);
    std::string item;
    while (std::getline(ss, item, ','))
      if (!item.empty()) out.push_back(item);
    return out;
  }
  for (const Mechanism* m : attnkit::list_mechanisms())
    if (m->family == "linear") out.push_back(m->name);
  return out;
}

// Registration runs after every mechanism registered itself (this object is constructed in this
// translation unit's static initialization, but the registry reads lazily at first call).
struct RegisterLinearBenchmarks {
  RegisterLinearBenchmarks() {
    const char* on = std::getenv("ATTNKIT_BENCH_LINEAR");
    if (on == nullptr || std::string(on) == "0") return;
    for (const std::string& m : mechanisms()) {
      benchmark::RegisterBenchmark(("LinearPrefill/" + m).c_str(), prefill, m)->UseRealTime()->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark(("LinearDecodeFlat/" + m).c_str(), decode_flat, m)->Iterations(1)->Unit(benchmark::kMicrosecond);
      benchmark::RegisterBenchmark(("LinearCrossover/" + m).c_str(), crossover, m)->Iterations(1)->Unit(benchmark::kMillisecond);
    }
  }
} g_register_linear;

}  // namespace
