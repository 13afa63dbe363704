// Bad input a user can give, through the `attnkit` executable and the C++ API: every case must
// end with a clear error that names the parameter (exit code 1, never a crash, a hang, a huge
// allocation or a silently wrong result), and no output file may be lost or half written.
// Cases that need the model are skipped when the Gemma 3 270M GGUF is not installed; every model
// case fails before the model runs, so each costs a model load at most.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/gguf.h"
#include "attnkit/model.h"
#include "core/checked_size.h"
#include "core/output_file.h"
#include "testing/cli_runner.h"

namespace attnkit {
namespace {

namespace fs = std::filesystem;
using testing::expect_cli_failure;
using testing::run_cli;

constexpr const char* k2Pow61 = "2305843009213693952";

bool have_model() {
  std::string p;
  return gguf::find_default_model(&p).ok();
}

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

class BadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("attnkit_bad_input_" + std::to_string(getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

// ---- sizes ----

TEST_F(BadInput, HugeSizesFailBeforeAllocatingNamingTheParameter) {
  expect_cli_failure(run_cli(std::string("fidelity -m block_topk --seq-q ") + k2Pow61), {"seq_q", k2Pow61});
  expect_cli_failure(run_cli(std::string("fidelity -m block_topk --heads-q 65536 --heads-kv 1 --seq-q 1048576")),
                     {"more than 2^40 elements", "heads_q 65536"});
  const testing::CommandResult bench = run_cli(std::string("bench --seq-q ") + k2Pow61);
  expect_cli_failure(bench, {"seq_q", k2Pow61});
  EXPECT_EQ(bench.output.find("yardsticks"), std::string::npos) << "measured the machine before refusing the shape";
  expect_cli_failure(run_cli(std::string("sparse-bench --seq ") + k2Pow61), {"seq", k2Pow61, "expected 64.."});
  // Inside the element limit (2^38 per tensor) but 4 TiB in all: refused up front, naming the memory.
  expect_cli_failure(run_cli("bench --seq-q 16777216 --heads-q 64 --heads-kv 64 --head-dim 256"),
                     {"16777216", "machine's memory"});
}

TEST(CheckedSize, ProductsOverflowAndLimits) {
  int64_t out = 0;
  EXPECT_TRUE(checked_mul(int64_t{1} << 31, int64_t{1} << 31, &out));
  EXPECT_EQ(out, int64_t{1} << 62);
  EXPECT_FALSE(checked_mul(int64_t{1} << 32, int64_t{1} << 32, &out));
  EXPECT_FALSE(checked_mul(-1, 5, &out));
  Status s = checked_elements("q", {{"batch", 1}, {"heads", (int64_t{1} << 31) + 8}}, &out);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("heads 2147483656"), std::string::npos) << s.message();
  s = checked_elements("k", {{"seq", int64_t{1} << 30}, {"heads", int64_t{1} << 11}}, &out);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("2^40"), std::string::npos) << s.message();
  s = checked_bytes("the cache", int64_t{1} << 39, 8, &out);
  if (physical_memory_bytes() > 0 && physical_memory_bytes() < (int64_t{1} << 42)) {
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find("the cache"), std::string::npos) << s.message();
  }
}

// A broadcast (stride-0) view with 2^31 + 8 query heads takes 1 KiB of memory but describes a
// tensor attnkit cannot index: refused before any scratch is sized from it.
TEST(BadInputApi, StrideZeroViewWithTooManyHeadsIsRefused) {
  std::vector<float> q(64, 0.5f), k(64, 0.5f), v(64, 0.5f), o(64, 0.0f);
  const int64_t heads = (int64_t{1} << 31) + 8;
  TensorView qv = TensorView::contiguous(q.data(), DType::kF32, 1, 1, heads, 64);
  qv.stride[2] = 0;
  TensorView ov = TensorView::contiguous(o.data(), DType::kF32, 1, 1, heads, 64);
  ov.stride[2] = 0;
  const TensorView kv = TensorView::contiguous(k.data(), DType::kF32, 1, 1, 1, 64);
  const TensorView vv = TensorView::contiguous(v.data(), DType::kF32, 1, 1, 1, 64);
  const Status s = attention(qv, kv, vv, ov, nullptr, AttentionParams());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("heads 2147483656"), std::string::npos) << s.message();
}

// ---- packed batches ----

TEST(BadInputApi, PackedQueriesMustCoverEveryRow) {
  std::vector<float> q(10 * 2 * 16, 0.1f), k(10 * 2 * 16, 0.2f), v(10 * 2 * 16, 0.3f), o(10 * 2 * 16, 7.0f);
  const TensorView qv = TensorView::contiguous(q.data(), DType::kF32, 1, 10, 2, 16);
  const TensorView kv = TensorView::contiguous(k.data(), DType::kF32, 1, 10, 2, 16);
  const TensorView vv = TensorView::contiguous(v.data(), DType::kF32, 1, 10, 2, 16);
  const TensorView ov = TensorView::contiguous(o.data(), DType::kF32, 1, 10, 2, 16);
  const std::vector<int32_t> cu_q = {0, 4, 8}, cu_k = {0, 5, 10};  // rows 8 and 9 in no sequence
  AttentionParams p;
  p.maybe_cu_seqlens_q = cu_q.data();
  p.maybe_cu_seqlens_k = cu_k.data();
  p.n_seqs = 2;
  const Status s = attention(qv, kv, vv, ov, nullptr, p);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("cu_seqlens_q[2] = 8"), std::string::npos) << s.message();
  for (float x : o) ASSERT_EQ(x, 7.0f) << "a refused call wrote its output";
}

// ---- model options ----

TEST_F(BadInput, RunValuesAreCheckedBeforeTheModelLoads) {
  expect_cli_failure(run_cli("run -p hi --temperature nan --model /nonexistent.gguf"), {"--temperature nan"});
  expect_cli_failure(run_cli("run -p hi --top-p nan --model /nonexistent.gguf"), {"--top-p nan"});
  expect_cli_failure(run_cli("run -p hi --top-p 0 --model /nonexistent.gguf"), {"--top-p 0"});
  expect_cli_failure(run_cli("run --bench --decode-tokens -5 --model /nonexistent.gguf"), {"--decode-tokens -5"});
  expect_cli_failure(run_cli("eval perplexity --length 64,128 --model /nonexistent.gguf"), {"--length", "one length"});
  expect_cli_failure(run_cli("eval perplexity --length 64 --offset -5 --model /nonexistent.gguf"), {"--offset -5", ">= 0"});
  // Not a number: CLI11's own conversion error (its exit code, not 1), naming the option and value.
  const testing::CommandResult not_number = run_cli("eval perplexity --length 64 --offset many --model /nonexistent.gguf");
  EXPECT_NE(not_number.exit_code, 0);
  EXPECT_NE(not_number.output.find("--offset = many"), std::string::npos) << not_number.output;
}

TEST_F(BadInput, ModelCasesNameTheParameter) {
  if (!have_model()) GTEST_SKIP() << "Gemma 3 270M GGUF not installed";
  expect_cli_failure(run_cli("run -p hi --capture " + (dir_ / "cap").string() + " --capture-layers 0,99"),
                     {"layer 99", "[0, 18)"});
  // Past the trained context: refused, not cut down while the results claim the asked length.
  expect_cli_failure(run_cli("eval passkey --length 40000 --trials 1"), {"length 40000", "context_length 32768",
                                                                        "--allow-past-context"});
  expect_cli_failure(run_cli("eval niah --length 40000 --trials 1 --png ''"), {"length 40000", "context_length 32768"});
  expect_cli_failure(run_cli("run --bench --length 32769 --decode-tokens 1"), {"context_length 32768"});
  // Past the end of the KJV text.
  expect_cli_failure(run_cli("eval perplexity --length 64 --offset 9000000"), {"offset 9000000", "--offset", "KJV text has"});
}

TEST_F(BadInput, GenerateRejectsNonFiniteSampling) {
  if (!have_model()) GTEST_SKIP() << "Gemma 3 270M GGUF not installed";
  std::unique_ptr<model::Model> m;
  ASSERT_TRUE(model::Model::load(gguf::default_model_path(), model::LoadOptions(), &m).ok());
  model::GenerateOptions g;
  g.max_tokens = 2;
  g.sample.temperature = std::numeric_limits<float>::quiet_NaN();
  Status s = m->generate({2, 651}, g, nullptr);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("temperature nan"), std::string::npos) << s.message();
  g.sample.temperature = 1.0f;
  g.sample.top_p = std::numeric_limits<float>::quiet_NaN();
  s = m->generate({2, 651}, g, nullptr);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("top_p nan"), std::string::npos) << s.message();
  std::vector<int32_t> layers = {0, 99};
  s = model::capture_activations(m.get(), {2, 651}, {0, 99}, (dir_ / "cap").string());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("layer 99"), std::string::npos) << s.message();
}

TEST_F(BadInput, CorpusCacheIsVerifiedBeforeItIsTrusted) {
  if (!have_model()) GTEST_SKIP() << "Gemma 3 270M GGUF not installed";
  const fs::path bogus = dir_ / "bogus.txt";
  std::ofstream(bogus) << "not the King James Bible\n";
  expect_cli_failure(run_cli("eval perplexity --length 64 --corpus-cache " + bogus.string()),
                     {bogus.string(), "not an attnkit KJV cache"});
  // A genuine cache, then the same cache with one verse edited.
  const fs::path good = dir_ / "kjv.cache";
  const testing::CommandResult ok = run_cli("eval perplexity --length 64 --corpus-cache " + good.string());
  ASSERT_EQ(ok.exit_code, 0) << ok.output;
  std::string text = read_file(good);
  const size_t at = text.find("God created");
  ASSERT_NE(at, std::string::npos);
  text[at] = 'g';
  std::ofstream(good, std::ios::binary | std::ios::trunc) << text;
  expect_cli_failure(run_cli("eval perplexity --length 64 --corpus-cache " + good.string()), {good.string(), "modified"});
}

// ---- outputs ----

TEST_F(BadInput, FailedWritesExitNonZero) {
  expect_cli_failure(run_cli("fidelity -m block_topk --seq-q 128 --json /dev/full"), {"/dev/full", "No space left"});
  expect_cli_failure(run_cli("bench --seq-q 64 --head-dim 64 --json /dev/full"), {"/dev/full"});
  if (have_model()) {
    expect_cli_failure(run_cli("run --bench --length 8 --decode-tokens 1 --json /dev/full"), {"/dev/full"});
    expect_cli_failure(run_cli("eval perplexity --length 16 --json /dev/full"), {"/dev/full"});
  }
}

TEST_F(BadInput, UnwritableDestinationsFailBeforeTheWork) {
  const std::string missing = (dir_ / "no_such_folder" / "out.json").string();
  for (const std::string& cmd : {"fidelity -m block_topk --seq-q 128", "bench --seq-q 64", "sparse-bench --seq 64"}) {
    const testing::CommandResult r = run_cli(cmd + " --json " + missing);
    expect_cli_failure(r, {"no_such_folder", "does not exist"});
    EXPECT_EQ(r.output.find("yardsticks"), std::string::npos) << cmd << " did its work first:\n" << r.output;
  }
  expect_cli_failure(run_cli("eval niah --length 64 --png " + (dir_ / "dir_png").string() + "/ --model /nonexistent.gguf"),
                     {"--png"});
  expect_cli_failure(run_cli("run --bench --json " + dir_.string() + " --model /nonexistent.gguf"), {"is a directory"});
}

TEST_F(BadInput, AFailingBenchKeepsThePreviousResults) {
  const fs::path out = dir_ / "bench.json";
  std::ofstream(out) << "[{\"previous\": true}]\n";
  expect_cli_failure(run_cli("bench --seq-q 64 --head-dim 999 --json " + out.string()), {"head_dim 999"});
  EXPECT_EQ(read_file(out), "[{\"previous\": true}]\n");
}

TEST_F(BadInput, OutputsReplaceSymlinksWithoutFollowingThem) {
  const fs::path target = dir_ / "target.txt", link = dir_ / "out.json";
  std::ofstream(target) << "keep";
  fs::create_symlink(target, link);
  const testing::CommandResult r = run_cli("fidelity -m block_topk --seq-q 128 --json " + link.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(read_file(target), "keep") << "the write followed the symlink";
  EXPECT_FALSE(fs::is_symlink(link));
  EXPECT_NE(read_file(link).find("\"mechanism\""), std::string::npos);
}

TEST_F(BadInput, AtomicWriterLeavesNoTemporaryAndKeepsTheOldFileOnFailure) {
  const fs::path out = dir_ / "a.json";
  ASSERT_TRUE(write_file_atomic(out.string(), "first\n", "test").ok());
  ASSERT_TRUE(write_file_atomic(out.string(), {"sec", "ond\n"}, "test").ok());
  EXPECT_EQ(read_file(out), "second\n");
  int entries = 0;
  for (const auto& e : fs::directory_iterator(dir_)) entries += e.is_regular_file() || e.is_symlink();
  EXPECT_EQ(entries, 1) << "a temporary file was left behind";
  // A read-only folder: the write fails, naming the path, and the old content stays.
  if (geteuid() != 0) {
    fs::permissions(dir_, fs::perms::owner_read | fs::perms::owner_exec);
    const Status s = write_file_atomic(out.string(), "third\n", "test");
    fs::permissions(dir_, fs::perms::owner_all);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find(out.string()), std::string::npos) << s.message();
    EXPECT_EQ(read_file(out), "second\n");
  }
  const Status full = write_file_atomic("/dev/full", "x", "test");
  ASSERT_FALSE(full.ok());
  EXPECT_NE(full.message().find("/dev/full"), std::string::npos);
}

}  // namespace
}  // namespace attnkit
