// attnkit/bench.h: the benchmark harness shared by `attnkit bench` (tools/cli), bench/ (Google
// Benchmark) and Python's bench_mechanism. Implemented in src/eval/bench_harness.cc.
//
// For every case it reports time, GFLOP/s from the mechanism's flops() (exact attention:
// attention_flops), GB/s from its bytes() (attention_bytes), peak extra memory, and the ratio of
// those rates to the machine's own limits measured in the same process with the same thread
// count ("yardsticks"):
//   - sgemm: OpenBLAS cblas_sgemm on square n x n matrices, 2 n^3 FLOPs, best of several calls;
//   - stream: an OpenMP sum over a buffer far larger than the last-level cache, best of several.
// The machines are shared and noisy, so ratios, not absolute times, are what results compare.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "attnkit/registry.h"
#include "attnkit/status.h"

namespace attnkit::bench {

// ---- yardsticks ----

struct YardstickOptions {
  int64_t sgemm_n = 2048;                   // 17.2 GFLOP per call
  int64_t stream_bytes = int64_t{512} << 20;  // 512 MiB: 16x the 32 MiB L3 of the target machine
  int repeats = 5;                          // best of
};
// Defaults, or small sizes (sgemm 256, stream 16 MiB, 2 repeats) when the environment variable
// ATTNKIT_BENCH_QUICK is set to a non-empty value other than "0" (tests use this).
YardstickOptions yardstick_options_from_env();
bool quick_mode_from_env();

struct Yardsticks {
  int threads = 0;
  double sgemm_gflops = 0;
  int64_t sgemm_n = 0;
  double stream_gbps = 0;          // best pass
  double stream_gbps_slowest = 0;  // slowest pass: how much the memory moved while measuring
  int64_t stream_bytes = 0;
};

// OpenBLAS sgemm GFLOP/s with `threads` threads (openblas_set_num_threads; restored afterwards).
Status measure_sgemm_gflops(int threads, int64_t n, int repeats, double* gflops);
// A streaming-read buffer that stays allocated, so that single passes can be timed between the
// runs of a case (run_case pairs one pass with each timed run of a decode case).
class StreamReader {
 public:
  StreamReader();
  ~StreamReader();
  StreamReader(const StreamReader&) = delete;
  StreamReader& operator=(const StreamReader&) = delete;
  // Allocates and first-touches `bytes` (>= 128) for `threads` OpenMP threads (0: all).
  Status init(int threads, int64_t bytes);
  // One pass: the sum of the whole buffer; returns its GB/s (1e9 bytes/s). Requires init.
  double pass_gbps();
  int64_t bytes() const { return n_ * 4; }

 private:
  float* buf_ = nullptr;
  int64_t n_ = 0;
  int threads_ = 0;
  volatile float sink_ = 0.0f;  // keeps the sums alive
};

// Streaming read GB/s (1e9 bytes/s): sum of a `bytes`-sized f32 buffer with `threads` OpenMP threads.
// *gbps is the best of `repeats` passes; *slowest_gbps (optional) the slowest pass.
Status measure_stream_gbps(int threads, int64_t bytes, int repeats, double* gbps, double* slowest_gbps = nullptr);
Status measure_yardsticks(int threads, const YardstickOptions& options, Yardsticks* out);

// Measures each thread count once per process and then reuses the result.
class YardstickCache {
 public:
  explicit YardstickCache(YardstickOptions options) : options_(options) {}
  Status get(int threads, Yardsticks* out);

 private:
  YardstickOptions options_;
  std::map<int, Yardsticks> by_threads_;
};

// ---- timing ----

struct TimingOptions {
  int warmup_runs = 1;
  int min_runs = 3;           // at least this many timed runs...
  double min_seconds = 0.5;   // ...and at least this much timed time,
  double max_seconds = 3.0;   // unless the timed runs already took this long (big cases: >= 1 run);
                              // a warmup run this long is kept as the only sample (0 = never)
};
// Quick options for tests: no warmup, one timed run.
TimingOptions timing_options_from_env();

struct TimingResult {
  double median_seconds = 0;
  double min_seconds = 0;
  int runs = 0;
  std::vector<double> samples;
  std::vector<double> paired;  // with a pairing callback: its value just before each sample
};

// Median of the samples (mean of the two middle ones for an even count); 0 for none.
double median(std::vector<double> samples);

// Times run->run() under the options. A failed run stops timing and returns its Status. With
// `pair`, it is called just before every run (warmup included) and the value it returned before
// each kept sample goes to out->paired (same index as out->samples).
Status time_runs(PreparedRun& run, const TimingOptions& options, TimingResult* out,
                 const std::function<double()>& pair = {});

// ---- cases and records ----

struct BenchCase {
  std::string mechanism_spec = "exact";  // NAME[:key=value,...]
  ProblemShape shape;
  // Also time the same case with Q/K/V in vs_dtype, alternating the two run by run (see
  // Record::speedup_vs_dtype).
  bool compare_dtype = false;
  DType vs_dtype = DType::kF32;
};

// The default suite (see bench_harness.cc for the reasoning behind the sizes):
//   prefill: seq 1024..16384 (x2), head_dim 64 and 128, causal and non-causal, heads 8 / kv 2,
//            batch 1, f32;
//   decode:  seq_q 1, kv 4096, 16384, 65536, 131072, heads 32 / kv 8, head_dim 128, f32 and bf16.
std::vector<BenchCase> default_suite(const std::string& mechanism_spec, int threads);

struct Record {
  std::string mechanism;  // the full spec string as given
  std::string family;
  std::string phase;      // "prefill" or "decode" (seq_q == 1)
  int64_t batch = 0, seq_q = 0, seq_kv = 0, heads_q = 0, heads_kv = 0, head_dim = 0;
  bool causal = false;
  std::string dtype;
  int threads = 0;
  double seconds = 0;      // median of the timed runs
  double min_seconds = 0;
  int runs = 0;
  std::vector<double> samples;  // seconds of each timed run, in order (not written to JSON)
  double flops = 0;        // per run
  double bytes = 0;        // per run
  double gflops = 0;       // flops / seconds / 1e9
  double gbps = 0;         // bytes / seconds / 1e9
  int64_t peak_extra_bytes = 0;
  double sgemm_gflops = 0;
  double stream_gbps = 0;
  double stream_gbps_slowest = 0;  // the yardstick's slowest pass (the ratio uses the best)
  double gflops_vs_sgemm = 0;  // gflops / sgemm_gflops
  double gbps_vs_stream = 0;   // gbps / stream_gbps
  // Decode cases: one stream pass runs just before each of the first kMaxPairedRuns timed runs.
  // Median of those passes' GB/s, and median over those runs of (run GB/s / its pass's GB/s):
  // the memory's speed at the moment of each run, where the yardstick above is measured once,
  // before the case, and this machine's memory speed can change between the two. 0: not paired.
  double stream_gbps_paired = 0;
  double gbps_vs_stream_paired = 0;
  int paired_runs = 0;
  // With BenchCase::compare_dtype: the same case in vs_dtype, run in kMaxPairedRuns rounds that
  // time one run of each (which goes first alternates). Median of the vs_dtype runs, and median
  // over rounds of (vs_dtype run's time / this dtype's run's time): two dtypes compared at the
  // same moment, where two separate cases can land in different memory speeds. Empty / 0: none.
  std::string vs_dtype;
  double vs_dtype_seconds = 0;
  double speedup_vs_dtype = 0;
  int vs_dtype_rounds = 0;
  std::string simd_target;
};

// Fills the rate and ratio fields from seconds, flops, bytes and the yardsticks.
void finish_record(Record* r);
nlohmann::json record_to_json(const Record& r);

inline constexpr int kMaxPairedRuns = 15;

// Parses the spec, prepares the case, times it and fills a record. With yardsticks null the case
// runs without them: no yardstick is measured and the ratio fields stay 0.
Status run_case(const BenchCase& c, const TimingOptions& timing, YardstickCache* yardsticks, Record* out);

// Human-readable table.
std::string table_header();
std::string table_row(const Record& r);
std::string yardstick_line(const Yardsticks& y);

}  // namespace attnkit::bench
