// Star Attention inside Gemma 3 270M (attnkit/distributed_model.h), on the real GGUF model and a
// KJV needle-in-a-haystack prompt:
//  - phase 1 leaves each rank's cache holding its own block only (the anchor is not duplicated);
//  - on one rank Star Attention is exact prefill; on two ranks too (the anchor is the whole first
//    block, so the second block sees everything before it), which checks the cross-rank merge of
//    phase 2 against a single process attending over the concatenated blocks;
//  - on three ranks or more block r does not see blocks 1 .. r-1, so the logits must differ;
//  - inputs that differ between ranks fail on every rank with the same message.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/distributed_model.h"
#include "attnkit/eval.h"
#include "attnkit/gguf.h"
#include "attnkit/model.h"
#include "dist_test_util.h"

namespace attnkit {
namespace {

constexpr int64_t kQueryTokens = 16, kMaxTokens = 4;

class StarModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string path;
    if (!gguf::find_default_model(&path).ok()) return;
    model::LoadOptions lo;
    lo.threads = 1;
    lo.kv_storage = kv::KvStorage::kF32;  // compare attention paths, not bf16 rounding
    ASSERT_TRUE(model::Model::load(path, lo, &model_).ok());
    std::string text;
    const Status st = eval::kjv_text("", &text);
    ASSERT_TRUE(st.ok()) << st.message();  // the model is installed, so the text must be too
    std::vector<int32_t> ids;
    ASSERT_TRUE(eval::niah_prompt(model_->tokenizer(), text, 200, 4718253, 0.3, 11, &ids).ok());
    context_.assign(ids.begin(), ids.end() - kQueryTokens);
    query_.assign(ids.end() - kQueryTokens, ids.end());
  }
  static void TearDownTestSuite() { model_.reset(); }
  void SetUp() override {
    if (!model_) GTEST_SKIP() << "Gemma 3 270M GGUF not installed (scripts/setup.sh installs it)";
  }

  // Single-process exact prefill of context + query: logits after the last query token and the
  // greedy continuation.
  static void exact(std::vector<float>* logits, std::vector<int32_t>* tokens) {
    std::vector<int32_t> prompt = context_;
    prompt.insert(prompt.end(), query_.begin(), query_.end());
    model_->reset();
    logits->resize(static_cast<size_t>(model_->config().n_vocab));
    model::ForwardOutputs fo;
    fo.maybe_last_logits = logits->data();
    ASSERT_TRUE(model_->forward(prompt.data(), static_cast<int64_t>(prompt.size()), fo).ok());
    model::GenerateOptions go;
    go.max_tokens = kMaxTokens;
    ASSERT_TRUE(model_->generate(prompt, go, tokens).ok());
  }

  static double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
    double d = 0;
    for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(static_cast<double>(a[i]) - b[i]));
    return d;
  }

  static std::unique_ptr<model::Model> model_;
  static std::vector<int32_t> context_, query_;
};
std::unique_ptr<model::Model> StarModelTest::model_;
std::vector<int32_t> StarModelTest::context_, StarModelTest::query_;

// Logits of this model are O(10); rounding of a different merge order stays far below this.
constexpr double kLogitTol = 2e-3;

TEST_F(StarModelTest, ContextPhaseKeepsOnlyTheRanksBlock) {
  const int rank = disttest::world_rank(), ranks = disttest::world_size();
  dist::StarModelOptions o;
  dist::StarModelResult r;
  const Status st = dist::star_model_context(model_.get(), context_, o, &r);
  ASSERT_TRUE(st.ok()) << st.message();
  const int64_t n = static_cast<int64_t>(context_.size());
  const dist::Segment blk = dist::block_segments(n, ranks, rank, dist::BlockLayout::kContiguous)[0];
  EXPECT_EQ(r.block.start, blk.start);
  EXPECT_EQ(r.block.len, blk.len);
  EXPECT_EQ(r.anchor_len, rank == 0 ? 0 : dist::block_len(n, ranks, 0, dist::BlockLayout::kContiguous));
  EXPECT_EQ(model_->position(), blk.start + blk.len);
  const model::GemmaConfig& cfg = model_->config();
  int64_t global_tokens = 0;
  for (int64_t l = 0; l < cfg.n_layer; ++l) {
    std::vector<int64_t> pos;
    ASSERT_TRUE(model_->kv_positions(l, &pos).ok());
    for (int64_t p : pos) {
      ASSERT_GE(p, blk.start) << "layer " << l << " still holds an anchor token";
      ASSERT_LT(p, blk.start + blk.len) << "layer " << l;
    }
    if (cfg.is_global(l)) {
      ASSERT_EQ(static_cast<int64_t>(pos.size()), blk.len) << "layer " << l;
      if (global_tokens == 0) global_tokens = static_cast<int64_t>(pos.size());
    } else if (blk.len > 0) {
      ASSERT_FALSE(pos.empty());
      EXPECT_EQ(pos.back(), blk.start + blk.len - 1) << "layer " << l;
    }
  }
  // Across ranks the global layers hold the context exactly once.
  int64_t total = 0;
  MPI_Allreduce(&global_tokens, &total, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
  EXPECT_EQ(total, n);
}

TEST_F(StarModelTest, OneRankIsExactPrefill) {
  MPI_Comm self;
  MPI_Comm_split(MPI_COMM_WORLD, disttest::world_rank(), 0, &self);
  dist::StarModelOptions o;
  o.max_tokens = kMaxTokens;
  o.comm = self;
  dist::StarModelResult r;
  const Status st = dist::star_model_generate(model_.get(), context_, query_, o, &r);
  MPI_Comm_free(&self);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(r.anchor_len, 0);
  std::vector<float> logits;
  std::vector<int32_t> tokens;
  exact(&logits, &tokens);
  EXPECT_LT(max_abs_diff(r.first_logits, logits), kLogitTol);
  EXPECT_EQ(r.tokens, tokens);
}

TEST_F(StarModelTest, QueryPhaseMergesRanksLikeOneProcess) {
  const int ranks = disttest::world_size();
  dist::StarModelOptions o;
  o.max_tokens = kMaxTokens;
  dist::StarModelResult r;
  const Status st = dist::star_model_generate(model_.get(), context_, query_, o, &r);
  ASSERT_TRUE(st.ok()) << st.message();
  ASSERT_EQ(r.tokens.size(), static_cast<size_t>(kMaxTokens));
  // Every rank generated the same tokens from (nearly) the same logits.
  std::vector<int32_t> t0 = r.tokens;
  MPI_Bcast(t0.data(), static_cast<int>(t0.size()), MPI_INT32_T, 0, MPI_COMM_WORLD);
  EXPECT_EQ(r.tokens, t0);
  if (ranks > 1) EXPECT_GT(r.query_comm.bytes_sent, 0);
  std::vector<float> logits;
  std::vector<int32_t> tokens;
  exact(&logits, &tokens);
  const double diff = max_abs_diff(r.first_logits, logits);
  if (ranks <= 2) {
    // Blocks [0, b) and [b, n): the second block saw the first as its anchor, so the ranks' caches
    // together are exact prefill's, and the merged query phase must match one process.
    EXPECT_LT(diff, kLogitTol);
    EXPECT_EQ(r.tokens, tokens);
  } else {
    // Block 2 never saw block 1: Star Attention's approximation must show.
    EXPECT_GT(diff, 50 * kLogitTol);
  }
}

TEST_F(StarModelTest, InputsThatDifferAcrossRanksFailOnEveryRank) {
  const int rank = disttest::world_rank(), ranks = disttest::world_size();
  if (ranks < 2) GTEST_SKIP() << "needs two ranks";
  std::vector<int32_t> query = query_;
  if (rank == ranks - 1) query.back() = query.back() == 1000 ? 1001 : 1000;
  dist::StarModelOptions o;
  o.max_tokens = 2;
  Status st = dist::star_model_generate(model_.get(), context_, query, o, nullptr);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("query token hash differs across ranks"), std::string::npos) << st.message();
  EXPECT_EQ(st.message(), disttest::bcast_string(st.message()));

  o.anchor_len = rank == 0 ? 100000 : 0;  // too long on rank 0 only
  st = dist::star_model_generate(model_.get(), context_, query_, o, nullptr);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("rank 0: star: anchor_len 100000"), std::string::npos) << st.message();
  EXPECT_EQ(st.message(), disttest::bcast_string(st.message()));
}

}  // namespace
}  // namespace attnkit
