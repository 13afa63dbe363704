// Runs the built `attnkit` executable: the CLI contract (list --json, bench --json,
// clear errors with a non-zero exit for bad options).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "attnkit/attention.h"
#include "attnkit/bench.h"
#include "attnkit/gguf.h"
#include "attnkit/threads.h"
#include "testing/cli_runner.h"

namespace {

namespace fs = std::filesystem;

using attnkit::testing::build_root;
using attnkit::testing::cli_path;
using attnkit::testing::run_cli;
using attnkit::testing::run_command;
using Result = attnkit::testing::CommandResult;

class CliBinary : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(cli_path())) << cli_path() << " is missing; build the attnkit_cli target";
  }
  std::string temp_json(const char* tag) {
    return (fs::temp_directory_path() / ("attnkit_cli_test_" + std::to_string(getpid()) + "_" + tag + ".json")).string();
  }
};

TEST_F(CliBinary, ListJsonParsesAndIncludesExact) {
  const Result r = run_cli("list --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json j = nlohmann::json::parse(r.output);
  ASSERT_TRUE(j.is_array());
  bool found = false;
  for (const auto& m : j) {
    if (m["name"] != "exact") continue;
    found = true;
    EXPECT_EQ(m["family"], "exact");
    EXPECT_FALSE(m["description"].get<std::string>().empty());
    bool has_window = false;
    for (const auto& p : m["params"]) {
      if (p["name"] == "window_left") {
        has_window = true;
        EXPECT_EQ(p["default"], "-1");
      }
    }
    EXPECT_TRUE(has_window);
  }
  EXPECT_TRUE(found) << r.output;
}

TEST_F(CliBinary, ListTextShowsParametersWithDefaults) {
  const Result r = run_cli("list");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("exact"), std::string::npos);
  EXPECT_NE(r.output.find("normalization=softmax"), std::string::npos) << r.output;
}

TEST_F(CliBinary, BenchOneCaseWritesAValidRecord) {
  const std::string path = temp_json("one");
  const Result r = run_cli("bench --seq-q 64 --seq-kv 64 --heads-q 2 --heads-kv 1 --head-dim 16 --threads 1 --json " + path);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("GFLOP/s"), std::string::npos) << r.output;  // the table
  EXPECT_NE(r.output.find("sgemm"), std::string::npos) << r.output;    // the yardstick line
  std::ifstream f(path);
  ASSERT_TRUE(f.good());
  const nlohmann::json j = nlohmann::json::parse(f);
  fs::remove(path);
  ASSERT_TRUE(j.is_array());
  ASSERT_EQ(j.size(), 1u);
  const auto& rec = j[0];
  EXPECT_EQ(rec["mechanism"], "exact");
  EXPECT_EQ(rec["batch"], 1);
  EXPECT_EQ(rec["seq_q"], 64);
  EXPECT_EQ(rec["seq_kv"], 64);
  EXPECT_EQ(rec["heads_q"], 2);
  EXPECT_EQ(rec["heads_kv"], 1);
  EXPECT_EQ(rec["head_dim"], 16);
  EXPECT_EQ(rec["causal"], true);
  EXPECT_EQ(rec["dtype"], "f32");
  EXPECT_EQ(rec["threads"], 1);
  const double seconds = rec["seconds"];
  ASSERT_GT(seconds, 0.0);
  const double flops = attnkit::attention_flops(1, 64, 64, 2, 16, 16, true);
  EXPECT_DOUBLE_EQ(rec["flops"].get<double>(), flops);
  EXPECT_NEAR(rec["gflops"].get<double>(), flops / seconds / 1e9, 1e-9 * flops / seconds / 1e9);
  const double bytes = attnkit::attention_bytes(1, 64, 64, 2, 1, 16, 16, 4, 4);
  EXPECT_NEAR(rec["gbps"].get<double>(), bytes / seconds / 1e9, 1e-9 * bytes / seconds / 1e9);
  EXPECT_GE(rec["peak_extra_bytes"].get<int64_t>(), 0);
  EXPECT_GT(rec["sgemm_gflops"].get<double>(), 0.0);
  EXPECT_GT(rec["stream_gbps"].get<double>(), 0.0);
  EXPECT_GT(rec["stream_gbps_slowest"].get<double>(), 0.0);
  EXPECT_LE(rec["stream_gbps_slowest"].get<double>(), rec["stream_gbps"].get<double>());
  EXPECT_TRUE(rec.contains("gflops_vs_sgemm"));
  EXPECT_TRUE(rec.contains("gbps_vs_stream"));
  EXPECT_FALSE(rec["simd_target"].get<std::string>().empty());
}

TEST_F(CliBinary, BenchDecodeBf16WithMechanismParameters) {
  const std::string path = temp_json("decode");
  const Result r = run_cli(
      "bench --mechanism exact:window_left=31,sinks=2 --seq-q 1 --seq-kv 200 --heads-q 4 --heads-kv 1 --head-dim 32 "
      "--dtype bf16 --no-causal --json " + path);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream f(path);
  const nlohmann::json j = nlohmann::json::parse(f);
  fs::remove(path);
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0]["mechanism"], "exact:window_left=31,sinks=2");
  EXPECT_EQ(j[0]["phase"], "decode");
  EXPECT_EQ(j[0]["dtype"], "bf16");
  EXPECT_EQ(j[0]["causal"], false);
  // Query position 199 sees keys 168..199 (32) and the 2 sinks: 34 pairs x 4 heads x 4 x 32.
  EXPECT_DOUBLE_EQ(j[0]["flops"].get<double>(), 34.0 * 4 * 4 * 32);
  // Decode runs are paired with stream passes (the test environment runs one timed run).
  EXPECT_GE(j[0]["paired_runs"].get<int>(), 1);
  EXPECT_LE(j[0]["paired_runs"].get<int>(), j[0]["runs"].get<int>());
  EXPECT_GT(j[0]["stream_gbps_paired"].get<double>(), 0.0);
  EXPECT_GT(j[0]["gbps_vs_stream_paired"].get<double>(), 0.0);
}

// bench/attnkit_gbench (Google Benchmark) registers the same default suite as `attnkit bench` and
// reports through the shared record arithmetic: GFLOPS / GBps is exactly the ratio of the shared
// FLOP and byte formulas, and x_sgemm is GFLOPS over the yardstick in its context.
TEST_F(CliBinary, GoogleBenchmarkProgramSharesTheSuiteAndFormulas) {
#ifndef ATTNKIT_HAVE_GBENCH
  GTEST_SKIP() << "configured with ATTNKIT_BUILD_BENCH=OFF";
#endif
  const fs::path gbench = build_root() / "bench" / "attnkit_gbench";
  ASSERT_TRUE(fs::exists(gbench)) << gbench << " is missing; build the attnkit_gbench target";
  const auto run = [&](const std::string& args) {
    return run_command("ATTNKIT_BENCH_QUICK=1 '" + gbench.string() + "' --threads=2 " + args + " 2>/dev/null");
  };
  const Result list = run("--benchmark_list_tests=true");
  ASSERT_EQ(list.exit_code, 0) << list.output;
  const size_t listed = static_cast<size_t>(std::count(list.output.begin(), list.output.end(), '\n'));
  EXPECT_EQ(listed, attnkit::bench::default_suite("exact", 2).size()) << list.output;
  EXPECT_NE(list.output.find("exact/decode/sq1/skv131072/h32-8/d128/causal/bf16"), std::string::npos) << list.output;

  const Result r = run("--benchmark_filter='decode/sq1/skv4096/.*/f32' --benchmark_min_time=0.01 --benchmark_format=json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json j = nlohmann::json::parse(r.output);
  ASSERT_EQ(j["benchmarks"].size(), 1u) << r.output;
  const nlohmann::json& b = j["benchmarks"][0];
  const double gflops = b["GFLOPS"], gbps = b["GBps"];
  ASSERT_GT(gflops, 0.0);
  ASSERT_GT(gbps, 0.0);
  const double flops = attnkit::attention_flops(1, 1, 4096, 32, 128, 128, true);
  const double bytes = attnkit::attention_bytes(1, 1, 4096, 32, 8, 128, 128, 4, 4);
  EXPECT_NEAR(gflops / gbps, flops / bytes, 1e-9 * flops / bytes);
  const double sgemm = std::stod(j["context"]["sgemm_gflops"].get<std::string>());
  EXPECT_NEAR(b["x_sgemm"].get<double>(), gflops / sgemm, 1e-5 * gflops / sgemm);
}

void expect_failure(const Result& r, const std::vector<std::string>& fragments) {
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_LT(r.exit_code, 128) << "crashed: " << r.output;
  for (const auto& f : fragments) EXPECT_NE(r.output.find(f), std::string::npos) << r.output << " lacks " << f;
}

TEST_F(CliBinary, BenchVsDtypeRecordsTheInterleavedComparison) {
  const std::string path = temp_json("vs");
  const Result r = run_cli("bench --seq-q 1 --seq-kv 300 --heads-q 4 --heads-kv 1 --head-dim 32 --threads 1 --dtype bf16 "
                           "--vs-dtype f32 --quick --json " + path);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("vs f32: "), std::string::npos) << r.output;
  std::ifstream f(path);
  ASSERT_TRUE(f.good());
  const nlohmann::json j = nlohmann::json::parse(f);
  fs::remove(path);
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0]["dtype"], "bf16");
  EXPECT_EQ(j[0]["vs_dtype"], "f32");
  EXPECT_EQ(j[0]["vs_dtype_rounds"], 1);  // --quick: one timed run, so one round
  EXPECT_GT(j[0]["vs_dtype_seconds"].get<double>(), 0.0);
  EXPECT_GT(j[0]["speedup_vs_dtype"].get<double>(), 0.0);
}

// bench/ab/ab_builds.cc: the same build against itself gives identical outputs; a library that is
// truncated or not ELF is rejected with a message before dlopen (which could die of SIGBUS).
TEST_F(CliBinary, AbBuildsComparesTwoBuildsAndRejectsBadLibraries) {
#ifndef ATTNKIT_HAVE_GBENCH
  GTEST_SKIP() << "configured with ATTNKIT_BUILD_BENCH=OFF";
#endif
  const fs::path build = build_root();
  const fs::path tool = build / "bench" / "attnkit_ab_builds", lib = build / "libattnkit.so";
  ASSERT_TRUE(fs::exists(tool)) << tool << " is missing; build the attnkit_ab_builds target";
  ASSERT_TRUE(fs::exists(lib)) << lib;
  const auto ab = [&](const std::string& a, const std::string& b, const std::string& args) {
    return run_command("'" + tool.string() + "' '" + a + "' '" + b + "' " + args + " 2>&1");
  };
  const std::string small = "--seq-kv 300 --heads-q 4 --heads-kv 1 --head-dim 32 --threads 1 --rounds 2";
  for (const char* dtype : {"f32", "bf16"}) {
    const Result r = ab(lib.string(), lib.string(), small + " --dtype " + dtype);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find(std::string("d 32 ") + dtype + " threads 1, 2 rounds"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("max |out_old - out_new| 0\n"), std::string::npos) << r.output;
  }
  const fs::path cut = fs::temp_directory_path() / ("attnkit_ab_test_" + std::to_string(getpid()) + ".so");
  {
    std::ifstream in(lib, std::ios::binary);
    std::vector<char> head(4096);
    in.read(head.data(), static_cast<std::streamsize>(head.size()));
    std::ofstream(cut, std::ios::binary).write(head.data(), in.gcount());
  }
  expect_failure(ab(cut.string(), lib.string(), small), {cut.string(), "truncated"});
  std::ofstream(cut, std::ios::binary | std::ios::trunc) << "not a library\n";
  expect_failure(ab(lib.string(), cut.string(), small), {cut.string(), "not a 64-bit ELF"});
  fs::remove(cut);
  expect_failure(ab(lib.string(), "/nonexistent/lib.so", small), {"/nonexistent/lib.so"});
  expect_failure(ab(lib.string(), lib.string(), small + " --dtype f64"), {"f64"});
  expect_failure(ab(lib.string(), lib.string(), "--seq-kv 300 --heads-q 3 --heads-kv 2"), {"heads_q 3"});
}

// bench/ab/decode_reads.cc: three positive rates and ratios that agree with them; bad sizes and
// flags, and a case the kernel rejects, fail with a message naming them.
TEST_F(CliBinary, DecodeReadsReportsConsistentRatesAndRejectsBadInput) {
#ifndef ATTNKIT_HAVE_GBENCH
  GTEST_SKIP() << "configured with ATTNKIT_BUILD_BENCH=OFF";
#endif
  const fs::path tool = build_root() / "bench" / "attnkit_decode_reads";
  ASSERT_TRUE(fs::exists(tool)) << tool << " is missing; build the attnkit_decode_reads target";
  const auto run = [&](const std::string& args) { return run_command("'" + tool.string() + "' " + args + " 2>&1"); };
  const Result r = run("--seq-kv 1000 --heads-q 4 --heads-kv 2 --head-dim 40 --threads 2 --rounds 1 --stream-bytes 1048576");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("seq_kv 1000 heads 4/2 d 40 f32 threads 2, 1 rounds"), std::string::npos) << r.output;
  double stream = 0, read = 0, decode = 0, r_decode = 0, r_read = 0, r_both = 0;
  const size_t at = r.output.find("GB/s medians:");
  ASSERT_NE(at, std::string::npos) << r.output;
  ASSERT_EQ(std::sscanf(r.output.c_str() + at,
                        "GB/s medians: stream %lf, kv read %lf, decode %lf\nper-round medians: decode/stream %lf, "
                        "kv read/stream %lf, decode/kv read %lf",
                        &stream, &read, &decode, &r_decode, &r_read, &r_both),
            6)
      << r.output;
  EXPECT_GT(stream, 0.0);
  EXPECT_GT(read, 0.0);
  EXPECT_GT(decode, 0.0);
  // One round: each ratio is the quotient of the printed rates (to their printed precision).
  EXPECT_NEAR(r_decode, decode / stream, 0.06 * r_decode + 1e-3) << r.output;
  EXPECT_NEAR(r_read, read / stream, 0.06 * r_read + 1e-3) << r.output;
  EXPECT_NEAR(r_both, decode / read, 0.06 * r_both + 1e-3) << r.output;
  expect_failure(run("--rounds 0"), {"rounds 0"});
  expect_failure(run("--seq-kv abc"), {"--seq-kv", "abc"});
  expect_failure(run("--bogus 3"), {"--bogus"});
  expect_failure(run("--stream-bytes 5 --seq-kv 100"), {"stream_bytes 5"});
  expect_failure(run("--seq-kv 100 --heads-q 3 --heads-kv 2 --rounds 1 --stream-bytes 4096"), {"heads_q 3"});
}

TEST_F(CliBinary, BadOptionsFailWithAMessage) {
  expect_failure(run_cli("bench --seq-q 64 --bogus"), {"--bogus"});
  expect_failure(run_cli("bench --seq-q abc"), {"--seq-q"});
  expect_failure(run_cli("bench --seq-q 64 --dtype f64"), {"f64"});
  expect_failure(run_cli("bench --seq-q 0"), {"seq_q 0"});
  expect_failure(run_cli("bench --seq-q 8 --heads-q 3 --heads-kv 2"), {"heads_q 3"});
  expect_failure(run_cli("bench --seq-q 8 --head-dim 1000"), {"head_dim 1000"});
  expect_failure(run_cli("bench --seq-q 8 --threads -1"), {"threads -1"});
  expect_failure(run_cli("bench --seq-q 1 --seq-kv 300 --vs-dtype f64"), {"--vs-dtype", "f64"});
  expect_failure(run_cli("bench --vs-dtype f32"), {"--vs-dtype", "one case"});
  expect_failure(run_cli("bench --mechanism nope --seq-q 8"), {"'nope'", "exact"});
  expect_failure(run_cli("bench --mechanism exact:windw=3 --seq-q 8"), {"'windw'", "window_left"});
  expect_failure(run_cli("bench --mechanism exact:normalization=tanh --seq-q 8"), {"normalization=tanh"});
  expect_failure(run_cli("bench --seq-q 8 --json /nonexistent_dir/x.json"), {"/nonexistent_dir/x.json"});
  expect_failure(run_cli("frobnicate"), {"frobnicate"});
  expect_failure(run_cli(""), {"subcommand"});
}

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream os;
  os << f.rdbuf();
  return os.str();
}

// `attnkit run` writes the prompt and the generated text to stdout and nothing else; its timing
// statistics go to stderr on a line of their own, also when both streams share one pipe.
TEST_F(CliBinary, RunKeepsTextOnStdoutAndStatisticsOnTheirOwnLine) {
  std::string model;
  if (!attnkit::gguf::find_default_model(&model).ok()) GTEST_SKIP() << "Gemma 3 270M GGUF not installed";
  const std::string prompt = "The capital of France is";
  const std::string args = "run --prompt '" + prompt + "' --max-tokens 4 --threads 2";
  const std::string out_path = temp_json("run_stdout"), err_path = temp_json("run_stderr");
  const Result split = run_command("'" + cli_path() + "' " + args + " >'" + out_path + "' 2>'" + err_path + "'");
  ASSERT_EQ(split.exit_code, 0) << read_text(err_path);
  const std::string out = read_text(out_path), err = read_text(err_path);
  fs::remove(out_path);
  fs::remove(err_path);
  EXPECT_EQ(out.rfind(prompt, 0), 0u) << out;  // the text starts with the prompt
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out.back(), '\n');
  EXPECT_GT(out.size(), prompt.size() + 1) << "no text was generated";
  EXPECT_EQ(out.find("tok/s"), std::string::npos) << out;
  EXPECT_EQ(out.find("prompt tokens"), std::string::npos) << out;
  EXPECT_NE(err.find("prompt tokens"), std::string::npos) << err;
  EXPECT_NE(err.find("tok/s"), std::string::npos) << err;

  // Both streams into one pipe: the statistics start a line.
  const Result merged = run_command("'" + cli_path() + "' " + args + " 2>&1");
  ASSERT_EQ(merged.exit_code, 0) << merged.output;
  const size_t words = merged.output.find(" prompt tokens in ");
  ASSERT_NE(words, std::string::npos) << merged.output;
  const size_t stats = merged.output.rfind('[', words);
  ASSERT_NE(stats, std::string::npos) << merged.output;
  ASSERT_GT(stats, 0u);
  EXPECT_EQ(merged.output[stats - 1], '\n') << merged.output;
  EXPECT_EQ(merged.output.substr(0, stats), out) << "the text differs between the two runs (greedy decoding)";
}

// `attnkit eval niah --png` draws its depth x length map through the plotting path (plot.h).
TEST_F(CliBinary, NiahWritesItsHeatmap) {
  std::string model;
  if (!attnkit::gguf::find_default_model(&model).ok()) GTEST_SKIP() << "Gemma 3 270M GGUF not installed";
  const std::string png = temp_json("niah") + ".png", json = temp_json("niah");
  const Result r = run_cli("eval niah --length 256 --depths 0,1 --trials 1 --threads 2 --png " + png + " --json " + json);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string image = read_text(png);
  fs::remove(png);
  fs::remove(json);
  ASSERT_GT(image.size(), 1000u);
  EXPECT_EQ(image.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
}

// `eval perplexity --offset N` reads the text from its token N and numbers its windows in the
// whole text; a run that ignored the offset would score the opening of Genesis again.
TEST_F(CliBinary, PerplexityOffsetRecordsWhereTheTextStarts) {
  std::string model;
  if (!attnkit::gguf::find_default_model(&model).ok()) GTEST_SKIP() << "Gemma 3 270M GGUF not installed";
  nlohmann::json runs[2];
  for (int64_t offset : {0, 300}) {
    const std::string json = temp_json("ppl_offset");
    const Result r = run_cli("eval perplexity --length 41 --window 16 --threads 2 --offset " + std::to_string(offset) +
                             " --json " + json);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    runs[offset ? 1 : 0] = nlohmann::json::parse(read_text(json));
    fs::remove(json);
  }
  const nlohmann::json& j = runs[1];
  EXPECT_EQ(j["offset"], 300);
  EXPECT_EQ(j["predicted_text_tokens"], nlohmann::json::array({300, 340}));
  ASSERT_EQ(j["windows"].size(), 3u);
  EXPECT_EQ(j["windows"][0]["text_begin"], 300);
  EXPECT_EQ(j["windows"][2]["text_end"], 340);
  EXPECT_EQ(runs[0]["windows"][2]["text_end"], 40);
  EXPECT_NE(j["nll"].get<double>(), runs[0]["nll"].get<double>());
}

// Every command checks --threads while parsing: negative counts and counts past the cap
// (attnkit/threads.h) fail with the value named, before a model is loaded or a case runs.
TEST_F(CliBinary, EveryCommandRefusesBadThreadCounts) {
  const std::vector<std::string> commands = {"bench --seq-q 8",   "sparse-bench --seq 256", "fidelity",
                                             "run --prompt hi",   "eval perplexity",        "eval passkey",
                                             "eval niah"};
  const std::string too_many = std::to_string(attnkit::max_threads() + 1);
  for (const std::string& cmd : commands) {
    for (const std::string& bad : {std::string("-5"), too_many, std::string("100000")}) {
      SCOPED_TRACE(cmd + " --threads " + bad);
      expect_failure(run_cli(cmd + " --threads " + bad), {"threads " + bad, "1.." + std::to_string(attnkit::max_threads())});
    }
  }
}

TEST_F(CliBinary, HelpExitsZero) {
  const Result r = run_cli("bench --help");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("--seq-kv"), std::string::npos);
  EXPECT_NE(r.output.find("--no-causal"), std::string::npos);
}

}  // namespace
