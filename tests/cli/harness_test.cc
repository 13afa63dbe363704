// Benchmark harness: FLOP/byte formulas on tiny cases counted by hand, the visible-pair count
// against a brute-force reading of attention.h's rules, timing policy, records and JSON fields.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <set>
#include <thread>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/bench.h"
#include "attnkit/memory.h"
#include "attnkit/registry.h"
#include "core/exact_mechanism.h"

namespace attnkit {
namespace {

TEST(Formulas, AttentionFlopsCountsVisiblePairs) {
  const int64_t d = 16;
  // Causal Sq = Sk = 4: rows see 1 + 2 + 3 + 4 = 10 keys; each pair costs 2d (QK) + 2d (PV).
  EXPECT_DOUBLE_EQ(attention_flops(1, 4, 4, 1, d, d, true), 10.0 * 4 * d);
  EXPECT_DOUBLE_EQ(attention_flops(1, 4, 4, 1, d, d, false), 16.0 * 4 * d);
  // Bottom-right alignment, Sq = 2 < Sk = 4: rows see 3 and 4 keys.
  EXPECT_DOUBLE_EQ(attention_flops(1, 2, 4, 1, d, d, true), 7.0 * 4 * d);
  // Sq = 5 > Sk = 3: the first two rows see nothing, then 1, 2, 3 keys.
  EXPECT_DOUBLE_EQ(attention_flops(1, 5, 3, 1, d, d, true), 6.0 * 4 * d);
  // Decode: one row sees every key.
  EXPECT_DOUBLE_EQ(attention_flops(1, 1, 1000, 1, d, d, true), 1000.0 * 4 * d);
  // Batch and query heads multiply; head_dim_v enters the PV half only.
  EXPECT_DOUBLE_EQ(attention_flops(3, 4, 4, 2, d, d, true), 6 * 10.0 * 4 * d);
  EXPECT_DOUBLE_EQ(attention_flops(1, 4, 4, 1, 16, 8, false), 16.0 * (2 * 16 + 2 * 8));
}

TEST(Formulas, AttentionBytesReadsInputsOnceAndWritesOutputOnce) {
  // q 1*4*4*16 = 256, k = v = 1*8*2*16 = 256 elements of 2 bytes; out 256 elements of 4 bytes.
  EXPECT_DOUBLE_EQ(attention_bytes(1, 4, 8, 4, 2, 16, 16, 2, 4), 3 * 256 * 2 + 256 * 4);
  // Decode, GQA 4, f32: K and V dominate.
  EXPECT_DOUBLE_EQ(attention_bytes(1, 1, 1024, 8, 2, 64, 64, 4, 4), (8 * 64 + 2 * 1024 * 2 * 64 + 8 * 64) * 4.0);
}

// Visibility straight from the comment block of attention.h.
int64_t brute_force_pairs(int64_t sq, int64_t sk, bool causal, CausalAlign align, int64_t wl, int64_t wr,
                          int64_t sinks) {
  int64_t n = 0;
  for (int64_t i = 0; i < sq; ++i) {
    const int64_t pos = i + (align == CausalAlign::kBottomRight ? sk - sq : 0);
    for (int64_t j = 0; j < sk; ++j) {
      const bool causal_ok = !causal || j <= pos;
      const bool in_window = (wl < 0 || j >= pos - wl) && (wr < 0 || j <= pos + wr);
      if (causal_ok && (in_window || j < sinks)) ++n;
    }
  }
  return n;
}

TEST(Formulas, VisiblePairsByHand) {
  const auto br = CausalAlign::kBottomRight;
  EXPECT_EQ(count_visible_pairs(4, 4, true, br, -1, -1, 0), 10);
  EXPECT_EQ(count_visible_pairs(4, 4, false, br, -1, -1, 0), 16);
  // Causal with window_left 1: rows see 1, 2, 2, 2 keys.
  EXPECT_EQ(count_visible_pairs(4, 4, true, br, 1, -1, 0), 7);
  // ...plus one sink: rows 2 and 3 also see key 0.
  EXPECT_EQ(count_visible_pairs(4, 4, true, br, 1, -1, 1), 9);
  // Non-causal window (1, 1) on 4 keys: 2 + 3 + 3 + 2.
  EXPECT_EQ(count_visible_pairs(4, 4, false, br, 1, 1, 0), 10);
  // Top-left causal, Sq = 2, Sk = 4: rows see 1 and 2 keys.
  EXPECT_EQ(count_visible_pairs(2, 4, true, CausalAlign::kTopLeft, -1, -1, 0), 3);
}

TEST(Formulas, VisiblePairsMatchBruteForce) {
  for (int64_t sq : {1, 3, 7}) {
    for (int64_t sk : {1, 4, 9}) {
      for (bool causal : {false, true}) {
        for (auto align : {CausalAlign::kBottomRight, CausalAlign::kTopLeft}) {
          for (int64_t wl : {-1, 0, 2}) {
            for (int64_t wr : {-1, 0, 3}) {
              for (int64_t sinks : {0, 1, 5}) {
                EXPECT_EQ(count_visible_pairs(sq, sk, causal, align, wl, wr, sinks),
                          brute_force_pairs(sq, sk, causal, align, wl, wr, sinks))
                    << sq << " " << sk << " " << causal << " " << int(align) << " " << wl << " " << wr << " " << sinks;
              }
            }
          }
        }
      }
    }
  }
}

TEST(Formulas, ExactMechanismFlopsUsesTheSharedPerPairCost) {
  AttentionParams p;
  p.causal = true;
  // No window: exactly attention_flops.
  EXPECT_DOUBLE_EQ(exact_mechanism_flops(2, 64, 64, 4, 32, p), attention_flops(2, 64, 64, 4, 32, 32, true));
  // Window: 4d per visible pair, 7 pairs (see VisiblePairsByHand), times heads and batch.
  p.window_left = 1;
  EXPECT_DOUBLE_EQ(exact_mechanism_flops(2, 4, 4, 3, 16, p), 7.0 * 4 * 16 * 3 * 2);
}

TEST(Harness, Median) {
  EXPECT_DOUBLE_EQ(bench::median({}), 0.0);
  EXPECT_DOUBLE_EQ(bench::median({3, 1, 2}), 2.0);
  EXPECT_DOUBLE_EQ(bench::median({4, 1, 3, 2}), 2.5);
}

class CountingRun : public PreparedRun {
 public:
  explicit CountingRun(double sleep_s = 0, int fail_at = -1) : sleep_s_(sleep_s), fail_at_(fail_at) {}
  Status run() override {
    ++calls;
    if (calls == fail_at_) return Status::internal("planned failure");
    if (sleep_s_ > 0) std::this_thread::sleep_for(std::chrono::duration<double>(sleep_s_));
    return Status::ok_status();
  }
  double flops() const override { return 1e6; }
  double bytes() const override { return 2e6; }
  int calls = 0;

 private:
  double sleep_s_;
  int fail_at_;
};

TEST(Harness, TimingHonoursWarmupAndMinimumRuns) {
  CountingRun run;
  bench::TimingOptions o{2, 3, 0.0, 100.0};
  bench::TimingResult t;
  ASSERT_TRUE(bench::time_runs(run, o, &t).ok());
  EXPECT_EQ(run.calls, 5);  // 2 warmup + 3 timed
  EXPECT_EQ(t.runs, 3);
  EXPECT_EQ(t.samples.size(), 3u);
  EXPECT_LE(t.min_seconds, t.median_seconds);
}

TEST(Harness, TimingRepeatsUntilMinimumTime) {
  CountingRun run(0.005);
  bench::TimingOptions o{0, 1, 0.04, 100.0};
  bench::TimingResult t;
  ASSERT_TRUE(bench::time_runs(run, o, &t).ok());
  EXPECT_GE(t.runs, 5);  // 0.04 s of 5 ms runs needs at least 8, sleep may overshoot
  EXPECT_GE(t.median_seconds, 0.005);
}

TEST(Harness, TimingStopsAtMaximumTime) {
  CountingRun run(0.02);
  bench::TimingOptions o{0, 1000, 1000.0, 0.05};
  bench::TimingResult t;
  ASSERT_TRUE(bench::time_runs(run, o, &t).ok());
  EXPECT_GE(t.runs, 1);
  EXPECT_LE(t.runs, 3);  // 3 runs of >= 20 ms pass 0.05 s
}

TEST(Harness, LongWarmupRunIsKeptAsTheSample) {
  CountingRun run(0.03);
  bench::TimingOptions o{1, 3, 0.0, 0.02};
  bench::TimingResult t;
  ASSERT_TRUE(bench::time_runs(run, o, &t).ok());
  EXPECT_EQ(run.calls, 1);
  EXPECT_EQ(t.runs, 1);
  EXPECT_GE(t.median_seconds, 0.03);
  // A short warmup is discarded.
  CountingRun quick;
  ASSERT_TRUE(bench::time_runs(quick, {1, 2, 0.0, 10.0}, &t).ok());
  EXPECT_EQ(quick.calls, 3);
  EXPECT_EQ(t.runs, 2);
}

TEST(Harness, TimingPairsEachSampleWithTheCallJustBeforeIt) {
  int k = 0;
  const auto pair = [&] { return static_cast<double>(++k); };
  CountingRun run;
  bench::TimingResult t;
  ASSERT_TRUE(bench::time_runs(run, {1, 3, 0.0, 100.0}, &t, pair).ok());
  EXPECT_EQ(k, 4);  // before the warmup and before each timed run
  EXPECT_EQ(t.paired, (std::vector<double>{2, 3, 4}));
  // A long warmup kept as the sample is paired with the call before it.
  CountingRun slow(0.03);
  k = 0;
  ASSERT_TRUE(bench::time_runs(slow, {1, 3, 0.0, 0.02}, &t, pair).ok());
  EXPECT_EQ(t.paired, (std::vector<double>{1}));
  // No callback, nothing paired.
  ASSERT_TRUE(bench::time_runs(run, {0, 2, 0.0, 100.0}, &t).ok());
  EXPECT_TRUE(t.paired.empty());
}

TEST(Harness, StreamReaderKeepsItsBufferBetweenPasses) {
  bench::StreamReader reader;
  Status s = reader.init(1, 100);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("stream_bytes 100"), std::string::npos);
  ASSERT_TRUE(reader.init(1, (int64_t{2} << 20) + 100).ok());
  EXPECT_EQ(reader.bytes(), int64_t{2} << 20);  // whole blocks of 32 floats
  for (int i = 0; i < 3; ++i) {
    const double g = reader.pass_gbps();
    EXPECT_TRUE(std::isfinite(g) && g > 0) << g;
  }
}

TEST(Harness, TimingReportsAFailedRun) {
  CountingRun run(0, 2);
  bench::TimingOptions o{1, 3, 0.0, 100.0};
  bench::TimingResult t;
  Status s = bench::time_runs(run, o, &t);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("planned failure"), std::string::npos);
}

TEST(Harness, FinishRecordComputesRatesAndRatios) {
  bench::Record r;
  r.seconds = 2.0;
  r.flops = 4e9;
  r.bytes = 1e9;
  r.sgemm_gflops = 4.0;
  r.stream_gbps = 1.0;
  bench::finish_record(&r);
  EXPECT_DOUBLE_EQ(r.gflops, 2.0);
  EXPECT_DOUBLE_EQ(r.gbps, 0.5);
  EXPECT_DOUBLE_EQ(r.gflops_vs_sgemm, 0.5);
  EXPECT_DOUBLE_EQ(r.gbps_vs_stream, 0.5);
}

TEST(Harness, RecordJsonHasEveryContractField) {
  bench::Record r;
  r.mechanism = "exact:sinks=4";
  r.seq_q = 17;
  r.causal = true;
  r.dtype = "bf16";
  r.peak_extra_bytes = 12345;
  const nlohmann::json j = bench::record_to_json(r);
  for (const char* key : {"mechanism", "batch", "seq_q", "seq_kv", "heads_q", "heads_kv", "head_dim", "causal", "dtype",
                          "threads", "seconds", "gflops", "gbps", "peak_extra_bytes", "sgemm_gflops", "stream_gbps",
                          "stream_gbps_slowest", "gflops_vs_sgemm", "gbps_vs_stream", "stream_gbps_paired",
                          "gbps_vs_stream_paired", "paired_runs", "simd_target"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j["mechanism"], "exact:sinks=4");
  EXPECT_EQ(j["seq_q"], 17);
  EXPECT_EQ(j["causal"], true);
  EXPECT_EQ(j["dtype"], "bf16");
  EXPECT_EQ(j["peak_extra_bytes"], 12345);
  // Round trip through text.
  EXPECT_EQ(nlohmann::json::parse(j.dump()), j);
  // The dtype comparison's fields appear only when it ran.
  EXPECT_FALSE(j.contains("vs_dtype"));
  r.vs_dtype = "f32";
  r.vs_dtype_seconds = 0.04;
  r.speedup_vs_dtype = 1.8;
  r.vs_dtype_rounds = 15;
  const nlohmann::json k = bench::record_to_json(r);
  EXPECT_EQ(k["vs_dtype"], "f32");
  EXPECT_DOUBLE_EQ(k["vs_dtype_seconds"].get<double>(), 0.04);
  EXPECT_DOUBLE_EQ(k["speedup_vs_dtype"].get<double>(), 1.8);
  EXPECT_EQ(k["vs_dtype_rounds"], 15);
}

TEST(Harness, DefaultSuiteCoversTheContract) {
  const auto cases = bench::default_suite("exact", 2);
  int prefill = 0, decode = 0, decode_bf16 = 0;
  std::set<int64_t> prefill_seqs, decode_kvs, dims;
  std::set<bool> causal;
  for (const auto& c : cases) {
    EXPECT_EQ(c.mechanism_spec, "exact");
    EXPECT_EQ(c.shape.threads, 2);
    EXPECT_EQ(c.shape.heads_q, 4 * c.shape.heads_kv);  // GQA 4 everywhere
    if (c.shape.seq_q == 1) {
      ++decode;
      decode_kvs.insert(c.shape.seq_kv);
      decode_bf16 += c.shape.dtype == DType::kBF16;
    } else {
      ++prefill;
      EXPECT_EQ(c.shape.seq_q, c.shape.seq_kv);
      prefill_seqs.insert(c.shape.seq_q);
      dims.insert(c.shape.head_dim);
      causal.insert(c.shape.causal);
    }
  }
  EXPECT_EQ(prefill, 20);
  EXPECT_EQ(decode, 8);
  EXPECT_EQ(decode_bf16, 4);
  EXPECT_EQ(prefill_seqs, (std::set<int64_t>{1024, 2048, 4096, 8192, 16384}));
  EXPECT_EQ(decode_kvs, (std::set<int64_t>{4096, 16384, 65536, 131072}));
  EXPECT_EQ(dims, (std::set<int64_t>{64, 128}));
  EXPECT_EQ(causal.size(), 2u);
}

TEST(Harness, YardsticksArePositiveAndValidated) {
  double g = 0, b = 0;
  ASSERT_TRUE(bench::measure_sgemm_gflops(1, 128, 1, &g).ok());
  ASSERT_TRUE(bench::measure_stream_gbps(1, int64_t{4} << 20, 1, &b).ok());
  EXPECT_TRUE(std::isfinite(g) && g > 0) << g;
  EXPECT_TRUE(std::isfinite(b) && b > 0) << b;
  // Best and slowest of several passes: both positive, the slowest never above the best.
  double best = 0, slowest = 0;
  ASSERT_TRUE(bench::measure_stream_gbps(1, int64_t{4} << 20, 3, &best, &slowest).ok());
  EXPECT_GT(slowest, 0.0);
  EXPECT_LE(slowest, best);
  Status s = bench::measure_sgemm_gflops(1, 0, 1, &g);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("sgemm_n 0"), std::string::npos);
  s = bench::measure_stream_gbps(1, 4, 1, &b);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("stream_bytes 4"), std::string::npos);
  bench::YardstickCache cache({64, int64_t{1} << 20, 1});
  bench::Yardsticks y1, y2;
  ASSERT_TRUE(cache.get(1, &y1).ok());
  ASSERT_TRUE(cache.get(1, &y2).ok());
  EXPECT_EQ(y1.sgemm_gflops, y2.sgemm_gflops);  // measured once, reused
  EXPECT_EQ(y1.threads, 1);
}

// A fake mechanism that holds 4096 bytes of tracked scratch during run() but reports only 123
// itself: the harness must record the larger, watched value.
class ScratchRun : public PreparedRun {
 public:
  Status run() override {
    ScratchArray<uint8_t> scratch(4096);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    return Status::ok_status();
  }
  double flops() const override { return 1e6; }
  double bytes() const override { return 3e6; }
  int64_t extra_bytes() const override { return 123; }
};
// A test-only mechanism of family zz_test.
Mechanism fake_mechanism(const char* name, decltype(Mechanism::prepare) prepare) {
  Mechanism m;
  m.name = name;
  m.family = "zz_test";
  m.description = "test-only";
  m.prepare = std::move(prepare);
  return m;
}

Mechanism make_scratch_fake() {
  Mechanism m = fake_mechanism("zz_scratch", [](const ProblemShape&, const MechanismParams&, std::unique_ptr<PreparedRun>* out) {
    *out = std::make_unique<ScratchRun>();
    return Status::ok_status();
  });
  m.params = {{"unused", "1", "nothing"}};
  return m;
}
ATTNKIT_REGISTER_MECHANISM(make_scratch_fake);

// A fake mechanism that logs the dtype of every prepare() and run(), to check the order in which
// the harness runs the two dtypes of a comparison.
std::vector<std::string>& dtype_log() {
  static std::vector<std::string> log;
  return log;
}
class DtypeLogRun : public PreparedRun {
 public:
  explicit DtypeLogRun(DType dt) : dt_(dt) {}
  Status run() override {
    dtype_log().push_back(std::string("run ") + dtype_name(dt_));
    std::this_thread::sleep_for(std::chrono::microseconds(dt_ == DType::kF32 ? 400 : 200));
    return Status::ok_status();
  }
  double flops() const override { return 1e6; }
  double bytes() const override { return 1e6; }

 private:
  DType dt_;
};
Mechanism make_dtype_log_fake() {
  return fake_mechanism("zz_dtype_log", [](const ProblemShape& shape, const MechanismParams&, std::unique_ptr<PreparedRun>* out) {
    dtype_log().push_back(std::string("prepare ") + dtype_name(shape.dtype));
    *out = std::make_unique<DtypeLogRun>(shape.dtype);
    return Status::ok_status();
  });
}
ATTNKIT_REGISTER_MECHANISM(make_dtype_log_fake);

TEST(Harness, CompareDtypeAlternatesOneRunOfEachPerRound) {
  bench::BenchCase c;
  c.mechanism_spec = "zz_dtype_log";
  c.shape.seq_q = 5;  // prefill: no stream passes between the runs
  c.shape.seq_kv = 64;
  c.shape.threads = 1;
  c.shape.dtype = DType::kBF16;
  c.compare_dtype = true;
  c.vs_dtype = DType::kF32;
  bench::YardstickCache cache({64, int64_t{1} << 20, 1});
  bench::Record r;
  dtype_log().clear();
  ASSERT_TRUE(bench::run_case(c, {0, 3, 0.0, 100.0}, &cache, &r).ok());
  // The case's three timed runs, then the f32 case (one untimed run), then three rounds: this
  // dtype first in even rounds, the other first in odd ones.
  const std::vector<std::string> want = {"prepare bf16", "run bf16", "run bf16", "run bf16", "prepare f32",
                                         "run f32",      "run bf16", "run f32",  "run f32",  "run bf16",
                                         "run bf16",     "run f32"};
  EXPECT_EQ(dtype_log(), want);
  EXPECT_EQ(r.dtype, "bf16");
  EXPECT_EQ(r.vs_dtype, "f32");
  EXPECT_EQ(r.vs_dtype_rounds, 3);
  EXPECT_GE(r.vs_dtype_seconds, 400e-6);  // the f32 runs, not the bf16 ones
  EXPECT_TRUE(std::isfinite(r.speedup_vs_dtype) && r.speedup_vs_dtype > 0) << r.speedup_vs_dtype;
  // More timed runs than kMaxPairedRuns: the comparison stops at kMaxPairedRuns rounds.
  dtype_log().clear();
  ASSERT_TRUE(bench::run_case(c, {0, bench::kMaxPairedRuns + 2, 0.0, 100.0}, &cache, &r).ok());
  EXPECT_EQ(r.vs_dtype_rounds, bench::kMaxPairedRuns);
  // Without compare_dtype nothing else is prepared.
  c.compare_dtype = false;
  dtype_log().clear();
  ASSERT_TRUE(bench::run_case(c, {0, 2, 0.0, 100.0}, &cache, &r).ok());
  EXPECT_EQ(dtype_log(), (std::vector<std::string>{"prepare bf16", "run bf16", "run bf16"}));
  EXPECT_TRUE(r.vs_dtype.empty());
  EXPECT_EQ(r.vs_dtype_rounds, 0);
}

TEST(Harness, RunCaseFillsARecord) {
  bench::BenchCase c;
  c.mechanism_spec = "zz_scratch:unused=2";
  c.shape.seq_q = 1;
  c.shape.seq_kv = 77;
  c.shape.threads = 1;
  bench::YardstickCache cache({64, int64_t{1} << 20, 1});
  bench::Record r;
  ASSERT_TRUE(bench::run_case(c, {0, 2, 0.0, 100.0}, &cache, &r).ok());
  EXPECT_EQ(r.mechanism, "zz_scratch:unused=2");
  EXPECT_EQ(r.family, "zz_test");
  EXPECT_EQ(r.phase, "decode");
  EXPECT_EQ(r.seq_kv, 77);
  EXPECT_EQ(r.threads, 1);
  EXPECT_EQ(r.runs, 2);
  EXPECT_GE(r.seconds, 0.002);
  EXPECT_DOUBLE_EQ(r.gflops, 1e6 / r.seconds / 1e9);
  EXPECT_DOUBLE_EQ(r.gbps, 3e6 / r.seconds / 1e9);
  EXPECT_EQ(r.peak_extra_bytes, 4096);
  EXPECT_GT(r.sgemm_gflops, 0);
  EXPECT_GT(r.stream_gbps, 0);
  EXPECT_DOUBLE_EQ(r.gflops_vs_sgemm, r.gflops / r.sgemm_gflops);
  EXPECT_FALSE(r.simd_target.empty());
  // A decode case: each timed run follows a stream pass, and both runs are paired.
  EXPECT_EQ(r.paired_runs, 2);
  EXPECT_GT(r.stream_gbps_paired, 0);
  EXPECT_TRUE(std::isfinite(r.gbps_vs_stream_paired) && r.gbps_vs_stream_paired > 0) << r.gbps_vs_stream_paired;
  char shown[32];
  std::snprintf(shown, sizeof(shown), " %.3f ", r.gbps_vs_stream_paired);
  EXPECT_NE(bench::table_row(r).find(shown), std::string::npos) << bench::table_row(r);
  // A prefill case is not paired.
  c.shape.seq_q = 5;
  ASSERT_TRUE(bench::run_case(c, {0, 2, 0.0, 100.0}, &cache, &r).ok());
  EXPECT_EQ(r.phase, "prefill");
  EXPECT_EQ(r.paired_runs, 0);
  EXPECT_EQ(r.gbps_vs_stream_paired, 0);
  EXPECT_NE(bench::table_row(r).find(" - "), std::string::npos);
  // At most kMaxPairedRuns runs are paired.
  c.shape.seq_q = 1;
  ASSERT_TRUE(bench::run_case(c, {0, bench::kMaxPairedRuns + 3, 0.0, 100.0}, &cache, &r).ok());
  EXPECT_EQ(r.runs, bench::kMaxPairedRuns + 3);
  EXPECT_EQ(r.paired_runs, bench::kMaxPairedRuns);
  // A warmup run (discarded) does not use up one of them.
  ASSERT_TRUE(bench::run_case(c, {1, bench::kMaxPairedRuns + 3, 0.0, 100.0}, &cache, &r).ok());
  EXPECT_EQ(r.paired_runs, bench::kMaxPairedRuns);
  // A bad spec fails before anything runs.
  c.mechanism_spec = "zz_scratch:nope=1";
  Status s = bench::run_case(c, {0, 1, 0.0, 0.0}, &cache, &r);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("'nope'"), std::string::npos);
}

}  // namespace
}  // namespace attnkit
