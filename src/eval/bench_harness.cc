// Benchmark harness: yardsticks, timing, the default suite and records (see include/attnkit/bench.h).
#include "attnkit/bench.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <thread>

#include "attnkit/attention.h"
#include "core/checked_size.h"
#include "attnkit/memory.h"
#include "attnkit/threads.h"

namespace attnkit::bench {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

float* alloc_floats(int64_t n) {
  const size_t bytes = ((static_cast<size_t>(n) * 4 + 63) / 64) * 64;
  return static_cast<float*>(std::aligned_alloc(64, bytes == 0 ? 64 : bytes));
}

}  // namespace

bool quick_mode_from_env() {
  const char* v = std::getenv("ATTNKIT_BENCH_QUICK");
  return v != nullptr && v[0] != '\0' && std::string(v) != "0";
}

YardstickOptions yardstick_options_from_env() {
  YardstickOptions o;
  if (quick_mode_from_env()) {
    o.sgemm_n = 256;
    o.stream_bytes = int64_t{16} << 20;
    o.repeats = 2;
  }
  return o;
}

TimingOptions timing_options_from_env() {
  TimingOptions o;
  if (quick_mode_from_env()) {
    o.warmup_runs = 0;
    o.min_runs = 1;
    o.min_seconds = 0;
    o.max_seconds = 0;
  }
  return o;
}

Status measure_sgemm_gflops(int threads, int64_t n, int repeats, double* gflops) {
  if (n < 1 || n > 32768) return Status::invalid_argument("sgemm_n " + std::to_string(n) + " is not supported; expected 1..32768");
  if (repeats < 1) return Status::invalid_argument("repeats " + std::to_string(repeats) + " is not supported; expected >= 1");
  std::unique_ptr<float, FreeDeleter> a(alloc_floats(n * n)), b(alloc_floats(n * n)), c(alloc_floats(n * n));
  if (!a || !b || !c) return Status::out_of_range("cannot allocate sgemm yardstick matrices of n " + std::to_string(n));
  for (int64_t i = 0; i < n * n; ++i) {
    // Small deterministic values; the numbers do not matter, only that they are not denormal.
    a.get()[i] = static_cast<float>((i * 7) % 13) * 0.01f + 0.5f;
    b.get()[i] = static_cast<float>((i * 5) % 11) * 0.01f + 0.5f;
    c.get()[i] = 0.0f;
  }
  int blas_threads = 0;
  ATTNKIT_RETURN_IF_ERROR(resolve_threads(threads, "threads", &blas_threads));
  const int previous = openblas_get_num_threads();
  openblas_set_num_threads(blas_threads);
  const int ni = static_cast<int>(n);
  auto call = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ni, ni, ni, 1.0f, a.get(), ni, b.get(), ni, 0.0f, c.get(), ni);
  };
  call();  // warmup: OpenBLAS thread start-up and page faults of C
  double best = 1e300;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = Clock::now();
    call();
    best = std::min(best, seconds_since(t0));
  }
  openblas_set_num_threads(previous);
  *gflops = 2.0 * static_cast<double>(n) * n * n / best / 1e9;
  return Status::ok_status();
}

namespace {
constexpr int64_t kStreamLanes = 32;  // independent accumulators, so adds never wait on each other
}  // namespace

StreamReader::StreamReader() = default;
StreamReader::~StreamReader() { std::free(buf_); }

Status StreamReader::init(int threads, int64_t bytes) {
  const int64_t n = (bytes / 4 / kStreamLanes) * kStreamLanes;
  if (n < kStreamLanes) return Status::invalid_argument("stream_bytes " + std::to_string(bytes) + " is too small; expected >= 128");
  std::free(buf_);
  buf_ = alloc_floats(n);
  n_ = buf_ ? n : 0;
  if (!buf_) return Status::out_of_range("cannot allocate stream yardstick buffer of " + std::to_string(bytes) + " bytes");
  ATTNKIT_RETURN_IF_ERROR(resolve_threads(threads, "threads", &threads_));
  float* p = buf_;
  // First touch by the same threads and schedule as the sum, so pages are local to their reader.
#pragma omp parallel for num_threads(threads_) schedule(static)
  for (int64_t blk = 0; blk < n / kStreamLanes; ++blk) {
    for (int64_t l = 0; l < kStreamLanes; ++l) p[blk * kStreamLanes + l] = 1.0f;
  }
  return Status::ok_status();
}

double StreamReader::pass_gbps() {
  const float* p = buf_;
  const int64_t n_blocks = n_ / kStreamLanes;
  const auto t0 = Clock::now();
  float total = 0.0f;
#pragma omp parallel num_threads(threads_) reduction(+ : total)
  {
    float acc[kStreamLanes] = {};
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < n_blocks; ++blk) {
      const float* q = p + blk * kStreamLanes;
#pragma omp simd
      for (int64_t l = 0; l < kStreamLanes; ++l) acc[l] += q[l];
    }
    for (int64_t l = 0; l < kStreamLanes; ++l) total += acc[l];
  }
  const double s = seconds_since(t0);
  sink_ = total;
  return static_cast<double>(n_) * 4.0 / s / 1e9;
}

Status measure_stream_gbps(int threads, int64_t bytes, int repeats, double* gbps, double* slowest_gbps) {
  if (repeats < 1) return Status::invalid_argument("repeats " + std::to_string(repeats) + " is not supported; expected >= 1");
  StreamReader reader;
  ATTNKIT_RETURN_IF_ERROR(reader.init(threads, bytes));
  double best = 0.0, worst = 1e300;
  for (int r = 0; r < repeats; ++r) {
    const double g = reader.pass_gbps();
    best = std::max(best, g);
    worst = std::min(worst, g);
  }
  *gbps = best;
  if (slowest_gbps) *slowest_gbps = worst;
  return Status::ok_status();
}

Status measure_yardsticks(int threads, const YardstickOptions& options, Yardsticks* out) {
  Yardsticks y;
  ATTNKIT_RETURN_IF_ERROR(resolve_threads(threads, "threads", &y.threads));
  y.sgemm_n = options.sgemm_n;
  y.stream_bytes = options.stream_bytes;
  // Stream first: OpenBLAS worker threads keep spinning for a while after a call and would
  // steal cores from the OpenMP threads of the stream sum.
  ATTNKIT_RETURN_IF_ERROR(measure_stream_gbps(y.threads, options.stream_bytes, options.repeats, &y.stream_gbps,
                                              &y.stream_gbps_slowest));
  ATTNKIT_RETURN_IF_ERROR(measure_sgemm_gflops(y.threads, options.sgemm_n, options.repeats, &y.sgemm_gflops));
  // ...and for the same reason give them time to go to sleep before the case itself runs.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  *out = y;
  return Status::ok_status();
}

Status YardstickCache::get(int threads, Yardsticks* out) {
  int t = 0;
  ATTNKIT_RETURN_IF_ERROR(resolve_threads(threads, "threads", &t));
  auto it = by_threads_.find(t);
  if (it == by_threads_.end()) {
    Yardsticks y;
    ATTNKIT_RETURN_IF_ERROR(measure_yardsticks(t, options_, &y));
    it = by_threads_.emplace(t, y).first;
  }
  *out = it->second;
  return Status::ok_status();
}

double median(std::vector<double> samples) {
  if (samples.empty()) return 0.0;
  std::sort(samples.begin(), samples.end());
  const size_t m = samples.size() / 2;
  return samples.size() % 2 ? samples[m] : 0.5 * (samples[m - 1] + samples[m]);
}

Status time_runs(PreparedRun& run, const TimingOptions& options, TimingResult* out,
                 const std::function<double()>& pair) {
  TimingResult r;
  double total = 0.0;
  double paired = 0.0;
  const auto before = [&] {
    if (pair) paired = pair();
  };
  const auto keep = [&](double s) {
    r.samples.push_back(s);
    if (pair) r.paired.push_back(paired);
    total += s;
    ++r.runs;
  };
  // Warmup absorbs first-call costs (page faults, thread start-up, cold caches), which are small
  // next to a run of max_seconds or more: such a warmup run is kept as the first sample instead
  // of being repeated, which halves the time of the largest suite cases.
  for (int i = 0; i < options.warmup_runs; ++i) {
    before();
    const auto t0 = Clock::now();
    ATTNKIT_RETURN_IF_ERROR(run.run());
    const double s = seconds_since(t0);
    if (options.max_seconds > 0 && s >= options.max_seconds) {
      keep(s);
      break;
    }
  }
  while (true) {
    const bool enough = r.runs >= options.min_runs && total >= options.min_seconds;
    const bool too_long = r.runs >= 1 && total >= options.max_seconds;
    if (enough || too_long) break;
    before();
    const auto t0 = Clock::now();
    ATTNKIT_RETURN_IF_ERROR(run.run());
    keep(seconds_since(t0));
  }
  r.median_seconds = median(r.samples);
  r.min_seconds = *std::min_element(r.samples.begin(), r.samples.end());
  *out = std::move(r);
  return Status::ok_status();
}

// Default suite sizes, chosen so the whole suite takes a few minutes on the 2-core target:
//  - prefill uses heads 8 / kv 2 (GQA 4), batch 1. Non-causal seq 16384 at head_dim 128 is
//    1.1 TFLOP per run, i.e. ~10-20 s at the expected 60-100 GFLOP/s; more heads would only
//    repeat the same per-head work. The timing policy runs such cases once (the warmup run
//    is the sample when it takes >= max_seconds).
//  - decode uses heads 32 / kv 8, head_dim 128 (a Llama-3-8B-like layer): at kv 131072 the f32
//    K and V are 1 GiB, far beyond the 32 MiB L3, so decode is a real memory-bandwidth test, and
//    the bf16 rows show the halved traffic.
std::vector<BenchCase> default_suite(const std::string& mechanism_spec, int threads) {
  std::vector<BenchCase> cases;
  for (int64_t d : {64, 128}) {
    for (bool causal : {true, false}) {
      for (int64_t s : {1024, 2048, 4096, 8192, 16384}) {
        BenchCase c;
        c.mechanism_spec = mechanism_spec;
        c.shape.batch = 1;
        c.shape.seq_q = s;
        c.shape.seq_kv = s;
        c.shape.heads_q = 8;
        c.shape.heads_kv = 2;
        c.shape.head_dim = d;
        c.shape.causal = causal;
        c.shape.dtype = DType::kF32;
        c.shape.threads = threads;
        cases.push_back(c);
      }
    }
  }
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (int64_t kv : {4096, 16384, 65536, 131072}) {
      BenchCase c;
      c.mechanism_spec = mechanism_spec;
      c.shape.batch = 1;
      c.shape.seq_q = 1;
      c.shape.seq_kv = kv;
      c.shape.heads_q = 32;
      c.shape.heads_kv = 8;
      c.shape.head_dim = 128;
      c.shape.causal = true;
      c.shape.dtype = dt;
      c.shape.threads = threads;
      cases.push_back(c);
    }
  }
  return cases;
}

void finish_record(Record* r) {
  r->gflops = r->seconds > 0 ? r->flops / r->seconds / 1e9 : 0.0;
  r->gbps = r->seconds > 0 ? r->bytes / r->seconds / 1e9 : 0.0;
  r->gflops_vs_sgemm = r->sgemm_gflops > 0 ? r->gflops / r->sgemm_gflops : 0.0;
  r->gbps_vs_stream = r->stream_gbps > 0 ? r->gbps / r->stream_gbps : 0.0;
}

nlohmann::json record_to_json(const Record& r) {
  nlohmann::json j;
  j["mechanism"] = r.mechanism;
  j["family"] = r.family;
  j["phase"] = r.phase;
  j["batch"] = r.batch;
  j["seq_q"] = r.seq_q;
  j["seq_kv"] = r.seq_kv;
  j["heads_q"] = r.heads_q;
  j["heads_kv"] = r.heads_kv;
  j["head_dim"] = r.head_dim;
  j["causal"] = r.causal;
  j["dtype"] = r.dtype;
  j["threads"] = r.threads;
  j["seconds"] = r.seconds;
  j["min_seconds"] = r.min_seconds;
  j["runs"] = r.runs;
  j["flops"] = r.flops;
  j["bytes"] = r.bytes;
  j["gflops"] = r.gflops;
  j["gbps"] = r.gbps;
  j["peak_extra_bytes"] = r.peak_extra_bytes;
  j["sgemm_gflops"] = r.sgemm_gflops;
  j["stream_gbps"] = r.stream_gbps;
  j["stream_gbps_slowest"] = r.stream_gbps_slowest;
  j["gflops_vs_sgemm"] = r.gflops_vs_sgemm;
  j["gbps_vs_stream"] = r.gbps_vs_stream;
  j["stream_gbps_paired"] = r.stream_gbps_paired;
  j["gbps_vs_stream_paired"] = r.gbps_vs_stream_paired;
  j["paired_runs"] = r.paired_runs;
  if (!r.vs_dtype.empty()) {
    j["vs_dtype"] = r.vs_dtype;
    j["vs_dtype_seconds"] = r.vs_dtype_seconds;
    j["speedup_vs_dtype"] = r.speedup_vs_dtype;
    j["vs_dtype_rounds"] = r.vs_dtype_rounds;
  }
  j["simd_target"] = r.simd_target;
  return j;
}

namespace {

// Record::speedup_vs_dtype: `run` (already timed) and the same shape in vs_dtype, one run of each
// per round, the first of the pair alternating between rounds. Rounds: as many as the case's
// timed runs, at most kMaxPairedRuns.
Status compare_dtypes(const Mechanism& mech, const MechanismParams& params, const ProblemShape& shape, DType vs_dtype,
                      PreparedRun& run, int timed_runs, Record* r) {
  ProblemShape other_shape = shape;
  other_shape.dtype = vs_dtype;
  std::unique_ptr<PreparedRun> other;
  ATTNKIT_RETURN_IF_ERROR(mech.prepare(other_shape, params, &other));
  if (!other) return Status::internal("mechanism '" + mech.name + "' prepared no run for vs_dtype");
  ATTNKIT_RETURN_IF_ERROR(other->run());  // first-call costs (page faults of its inputs)
  const int rounds = std::clamp(timed_runs, 1, kMaxPairedRuns);
  std::vector<double> other_seconds, ratios;
  for (int i = 0; i < rounds; ++i) {
    double s[2];
    for (int k = 0; k < 2; ++k) {
      const int which = (i % 2 == 0) ? k : 1 - k;  // 0: this dtype, 1: vs_dtype
      const auto t0 = Clock::now();
      ATTNKIT_RETURN_IF_ERROR(which == 0 ? run.run() : other->run());
      s[which] = seconds_since(t0);
    }
    other_seconds.push_back(s[1]);
    if (s[0] > 0) ratios.push_back(s[1] / s[0]);
  }
  r->vs_dtype = dtype_name(vs_dtype);
  r->vs_dtype_seconds = median(other_seconds);
  r->speedup_vs_dtype = median(ratios);
  r->vs_dtype_rounds = rounds;
  return Status::ok_status();
}

}  // namespace

Status run_case(const BenchCase& c, const TimingOptions& timing, YardstickCache* yardsticks, Record* out) {
  const Mechanism* mech = nullptr;
  MechanismParams params;
  ATTNKIT_RETURN_IF_ERROR(parse_mechanism_spec(c.mechanism_spec, &mech, &params));
  ProblemShape shape = c.shape;
  // Before the yardsticks: a shape too large to allocate fails at once, naming its sizes.
  ATTNKIT_RETURN_IF_ERROR(check_problem_shape(shape));
  ATTNKIT_RETURN_IF_ERROR(resolve_threads(shape.threads, "threads", &shape.threads));
  // Yardsticks first, so their buffers are freed before the case allocates its inputs.
  Yardsticks y;
  if (yardsticks) ATTNKIT_RETURN_IF_ERROR(yardsticks->get(shape.threads, &y));
  std::unique_ptr<PreparedRun> run;
  ATTNKIT_RETURN_IF_ERROR(mech->prepare(shape, params, &run));
  if (!run) return Status::internal("mechanism '" + mech->name + "' prepared no run");
  // Decode cases are compared with the stream yardstick; one stream pass just before each of
  // their first kMaxPairedRuns timed runs (and before the warmup runs, which may be kept as a
  // sample) measures the memory at the moment of that run.
  const bool paired = shape.seq_q == 1 && yardsticks != nullptr;
  StreamReader reader;
  if (paired) ATTNKIT_RETURN_IF_ERROR(reader.init(shape.threads, y.stream_bytes));
  int passes = 0;
  const auto pass = [&] { return passes++ < kMaxPairedRuns + timing.warmup_runs ? reader.pass_gbps() : 0.0; };
  // The harness also watches the tracked scratch counters, for mechanisms that do not report
  // extra_bytes() themselves; the larger of the two is recorded.
  const int64_t held_before = scratch_current_bytes();
  scratch_reset_peak();
  TimingResult t;
  ATTNKIT_RETURN_IF_ERROR(time_runs(*run, timing, &t, paired ? std::function<double()>(pass) : nullptr));
  const int64_t watched = scratch_peak_bytes() - held_before;

  Record r;
  r.mechanism = c.mechanism_spec;
  r.family = mech->family;
  r.phase = shape.seq_q == 1 ? "decode" : "prefill";
  r.batch = shape.batch;
  r.seq_q = shape.seq_q;
  r.seq_kv = shape.seq_kv;
  r.heads_q = shape.heads_q;
  r.heads_kv = shape.heads_kv;
  r.head_dim = shape.head_dim;
  r.causal = shape.causal;
  r.dtype = dtype_name(shape.dtype);
  r.threads = shape.threads;
  r.seconds = t.median_seconds;
  r.min_seconds = t.min_seconds;
  r.runs = t.runs;
  r.samples = t.samples;
  r.flops = run->flops();
  r.bytes = run->bytes();
  r.peak_extra_bytes = std::max(run->extra_bytes(), watched);
  r.sgemm_gflops = y.sgemm_gflops;
  r.stream_gbps = y.stream_gbps;
  r.stream_gbps_slowest = y.stream_gbps_slowest;
  r.simd_target = simd_target_name();
  finish_record(&r);
  std::vector<double> streams, ratios;
  for (size_t i = 0; i < t.paired.size(); ++i) {
    if (t.paired[i] <= 0 || t.samples[i] <= 0) continue;  // runs after the first kMaxPairedRuns
    streams.push_back(t.paired[i]);
    ratios.push_back(r.bytes / t.samples[i] / 1e9 / t.paired[i]);
  }
  r.paired_runs = static_cast<int>(ratios.size());
  r.stream_gbps_paired = median(streams);
  r.gbps_vs_stream_paired = median(ratios);
  if (c.compare_dtype) ATTNKIT_RETURN_IF_ERROR(compare_dtypes(*mech, params, shape, c.vs_dtype, *run, t.runs, &r));
  *out = r;
  return Status::ok_status();
}

std::string table_header() {
  char buf[256];
  std::snprintf(buf, sizeof(buf), "%-24s %-7s %2s %6s %7s %5s %4s %-3s %-4s %3s %10s %8s %7s %6s %6s %7s %9s",
                "mechanism", "phase", "B", "Sq", "Skv", "Hq/kv", "D", "cau", "dt", "thr", "median_ms", "GFLOP/s",
                "GB/s", "xsgemm", "xstrm", "xstrm@r", "extraMiB");
  return buf;
}

std::string table_row(const Record& r) {
  char heads[32];
  std::snprintf(heads, sizeof(heads), "%lld/%lld", static_cast<long long>(r.heads_q), static_cast<long long>(r.heads_kv));
  // xstrm@r: the ratio to stream passes paired with the runs (decode cases only).
  char paired[16] = "-";
  if (r.paired_runs > 0) std::snprintf(paired, sizeof(paired), "%.3f", r.gbps_vs_stream_paired);
  char buf[512];
  std::snprintf(buf, sizeof(buf), "%-24s %-7s %2lld %6lld %7lld %5s %4lld %-3s %-4s %3d %10.3f %8.2f %7.2f %6.3f %6.3f %7s %9.2f",
                r.mechanism.c_str(), r.phase.c_str(), static_cast<long long>(r.batch),
                static_cast<long long>(r.seq_q), static_cast<long long>(r.seq_kv), heads,
                static_cast<long long>(r.head_dim), r.causal ? "yes" : "no", r.dtype.c_str(), r.threads,
                r.seconds * 1e3, r.gflops, r.gbps, r.gflops_vs_sgemm, r.gbps_vs_stream, paired,
                static_cast<double>(r.peak_extra_bytes) / (1 << 20));
  return buf;
}

std::string yardstick_line(const Yardsticks& y) {
  char buf[256];
  std::snprintf(buf, sizeof(buf),
                "yardsticks (%d threads): OpenBLAS sgemm n=%lld %.2f GFLOP/s; stream read %lld MiB %.2f GB/s "
                "(slowest pass %.2f)",
                y.threads, static_cast<long long>(y.sgemm_n), y.sgemm_gflops,
                static_cast<long long>(y.stream_bytes >> 20), y.stream_gbps, y.stream_gbps_slowest);
  return buf;
}

}  // namespace attnkit::bench
