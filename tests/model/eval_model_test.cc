// Model evaluations: prompt construction, the KJV corpus, and a 1K-token
// passkey retrieval on the real model (asserted correct).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <filesystem>
#include <fstream>
#include <memory>

#include "attnkit/eval.h"
#include "attnkit/gguf.h"
#include "attnkit/model.h"
#include "attnkit/tokenizer.h"

namespace attnkit::eval {
namespace {

class EvalModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string path;
    if (!gguf::find_default_model(&path).ok()) return;
    model::LoadOptions lo;
    lo.threads = 2;
    if (!model::Model::load(path, lo, &model_).ok()) model_.reset();
  }
  static void TearDownTestSuite() { model_.reset(); }
  void SetUp() override {
    if (!model_) GTEST_SKIP() << "Gemma 3 270M GGUF not installed (scripts/setup.sh installs it)";
  }
  static inline std::unique_ptr<model::Model> model_;
};

TEST_F(EvalModelTest, PasskeyPromptHasTheRequestedLengthAndKey) {
  const Tokenizer& tok = model_->tokenizer();
  for (int64_t len : {256, 1024, 4096}) {
    std::vector<int32_t> ids;
    ASSERT_TRUE(passkey_prompt(tok, len, 54321, 0.3, &ids).ok());
    EXPECT_LE(static_cast<int64_t>(ids.size()), len);
    EXPECT_GE(static_cast<int64_t>(ids.size()), len - 40) << "length " << len;
    EXPECT_EQ(ids[0], tok.bos_id());
    const std::string text = tok.decode(ids);
    EXPECT_NE(text.find("The pass key is 54321. Remember it. 54321 is the pass key."), std::string::npos);
    EXPECT_EQ(text.substr(text.size() - 37), "What is the pass key? The pass key is");
  }
  std::vector<int32_t> ids;
  EXPECT_FALSE(passkey_prompt(tok, 10, 1, 0.5, &ids).ok());
  EXPECT_FALSE(passkey_prompt(tok, 1024, 1, 1.5, &ids).ok());
}

TEST_F(EvalModelTest, PasskeyAt1KIsRetrieved) {
  std::vector<RetrievalTrial> trials;
  ASSERT_TRUE(passkey(model_.get(), {1024}, 1, 7, nullptr, &trials).ok());
  ASSERT_EQ(trials.size(), 1u);
  EXPECT_TRUE(trials[0].correct) << "expected " << trials[0].expected << ", generated '" << trials[0].generated << "'";
  EXPECT_GT(trials[0].prompt_tokens, 900);
}

// A trial asked for more than the trained context keeps prompt + answer within it (8 answer tokens
// for passkey, 10 for niah), and prompts_only builds the prompts without running the model.
TEST_F(EvalModelTest, RetrievalPromptsStayWithinTheTrainedContext) {
  const int64_t ctx = model_->config().context_length;
  ASSERT_GT(ctx, 1024);
  std::vector<RetrievalTrial> trials;
  ASSERT_TRUE(passkey(model_.get(), {1024, ctx}, 1, 7, nullptr, &trials, /*prompts_only=*/true).ok());
  ASSERT_EQ(trials.size(), 2u);
  EXPECT_EQ(trials[0].prompt_tokens, static_cast<int64_t>(trials[0].prompt.size()));
  EXPECT_LE(trials[0].prompt_tokens, 1024);  // below the limit: as asked
  EXPECT_GE(trials[0].prompt_tokens, 1024 - 40);
  // The full context: the prompt leaves room for the 8 answer tokens.
  EXPECT_EQ(trials[1].length, ctx);
  EXPECT_LE(trials[1].prompt_tokens + 8, ctx);
  EXPECT_GE(trials[1].prompt_tokens + 8, ctx - 40);
  EXPECT_TRUE(trials[1].generated.empty());  // the model did not run
  EXPECT_EQ(trials[1].prompt[0], model_->tokenizer().bos_id());
  // Past the context: refused, never cut down to a prompt the results would misreport.
  std::vector<RetrievalTrial> past;
  const Status refused = passkey(model_.get(), {ctx + 5000}, 1, 7, nullptr, &past, /*prompts_only=*/true);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.message().find("context_length " + std::to_string(ctx)), std::string::npos) << refused.message();
  EXPECT_TRUE(past.empty());
  // With the opt-in, the prompt has the length asked for.
  model_->set_allow_past_context(true);
  const Status allowed = passkey(model_.get(), {ctx + 5000}, 1, 7, nullptr, &past, /*prompts_only=*/true);
  model_->set_allow_past_context(false);
  ASSERT_TRUE(allowed.ok()) << allowed.message();
  ASSERT_EQ(past.size(), 1u);
  EXPECT_LE(past[0].prompt_tokens, ctx + 5000);
  EXPECT_GE(past[0].prompt_tokens, ctx + 5000 - 40);
  std::string text;
  Status s = kjv_text("", &text);
  if (!s.ok()) GTEST_SKIP() << s.message();
  trials.clear();
  ASSERT_TRUE(niah(model_.get(), text, {ctx}, {0.0, 1.0}, 1, 3, nullptr, &trials, /*prompts_only=*/true).ok());
  ASSERT_EQ(trials.size(), 2u);
  for (const auto& t : trials) {
    EXPECT_LE(t.prompt_tokens + 10, ctx);
    EXPECT_GE(t.prompt_tokens + 10, ctx - 200);
    EXPECT_NE(model_->tokenizer().decode(t.prompt).find("The secret number of the treasure is " + t.expected + "."),
              std::string::npos);
  }
}

TEST_F(EvalModelTest, NiahPromptPlacesTheNeedleInKjvText) {
  std::string text;
  Status s = kjv_text("", &text);
  if (!s.ok()) GTEST_SKIP() << s.message();
  EXPECT_GT(text.size(), 4000000u);
  EXPECT_EQ(text.substr(0, 56), "In the beginning God created the heaven and the earth.\nA");
  const Tokenizer& tok = model_->tokenizer();
  for (double depth : {0.0, 0.5, 1.0}) {
    std::vector<int32_t> ids;
    ASSERT_TRUE(niah_prompt(tok, text, 1024, 7654321, depth, 3, &ids).ok());
    EXPECT_LE(static_cast<int64_t>(ids.size()), 1024 + 16);
    EXPECT_GE(static_cast<int64_t>(ids.size()), 900);
    const std::string p = tok.decode(ids);
    const size_t at = p.find("The secret number of the treasure is 7654321.");
    ASSERT_NE(at, std::string::npos);
    const double rel = static_cast<double>(at) / static_cast<double>(p.size());
    EXPECT_NEAR(rel, depth, 0.12) << "depth " << depth;
  }
}

}  // namespace
}  // namespace attnkit::eval

namespace attnkit::eval {
namespace {
// The perplexity evaluation tokenizes the KJV text itself; its ids must be the ones the
// transformers reference scored (tests/data/golden_gemma3.json), or the 1% comparison is moot.
TEST_F(EvalModelTest, KjvTokenizationMatchesTheReferenceIds) {
  std::string text;
  Status s = kjv_text("", &text);
  if (!s.ok()) GTEST_SKIP() << s.message();
  std::ifstream f(std::filesystem::path(__FILE__).parent_path().parent_path() / "data" / "golden_gemma3.json");
  ASSERT_TRUE(f);
  nlohmann::json g = nlohmann::json::parse(f);
  std::vector<int32_t> ref = g["perplexity"]["ids"].get<std::vector<int32_t>>();
  std::vector<int32_t> ids = model_->tokenizer().encode(text.substr(0, 60000));
  ids.insert(ids.begin(), model_->tokenizer().bos_id());
  ASSERT_GE(ids.size(), ref.size());
  ids.resize(ref.size());
  size_t first_diff = ref.size();
  for (size_t i = 0; i < ref.size(); ++i)
    if (ids[i] != ref[i]) { first_diff = i; break; }
  EXPECT_EQ(first_diff, ref.size()) << "first differing token at " << first_diff;
}
}  // namespace
}  // namespace attnkit::eval

namespace attnkit::eval {
namespace {

// A perplexity input read from an offset is the same run of text tokens as inside a longer input
// from the start: what lets a window of a long run be read again fresh and compared.
TEST_F(EvalModelTest, PerplexityIdsReadTheTextFromTheOffset) {
  std::string text;
  ASSERT_TRUE(kjv_text("", &text).ok());
  const Tokenizer& tok = model_->tokenizer();
  std::vector<int32_t> whole, part;
  ASSERT_TRUE(kjv_perplexity_ids(tok, text, 0, 701, &whole).ok());
  std::vector<int32_t> expected = tok.encode(text.substr(0, 6000));
  ASSERT_GE(expected.size(), 700u);
  expected.resize(700);
  expected.insert(expected.begin(), tok.bos_id());
  EXPECT_EQ(whole, expected);
  for (int64_t offset : {1, 250, 600}) {
    SCOPED_TRACE("offset " + std::to_string(offset));
    ASSERT_TRUE(kjv_perplexity_ids(tok, text, offset, 701 - offset, &part).ok());
    ASSERT_EQ(part.size(), static_cast<size_t>(701 - offset));
    EXPECT_EQ(part[0], tok.bos_id());
    EXPECT_TRUE(std::equal(part.begin() + 1, part.end(), whole.begin() + 1 + offset));
  }
  // The text's last tokens, where the prefix heuristic no longer applies.
  const std::vector<int32_t> all = tok.encode(text);
  const int64_t last = static_cast<int64_t>(all.size()) - 5;
  ASSERT_TRUE(kjv_perplexity_ids(tok, text, last, 6, &part).ok());
  EXPECT_TRUE(std::equal(part.begin() + 1, part.end(), all.begin() + last));
  struct Bad {
    int64_t offset, n;
    std::string says;
  };
  for (const Bad& b : {Bad{-1, 10, "offset -1 must be >= 0"}, Bad{0, 1, "length 1 must be >= 2"},
                       Bad{last, 7, "offset " + std::to_string(last) + " with length 7"},
                       Bad{int64_t{1} << 62, 10, "offset 4611686018427387904 with length 10"},
                       Bad{10, int64_t{1} << 62, "length 4611686018427387904"}}) {
    const Status s = kjv_perplexity_ids(tok, text, b.offset, b.n, &part);
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find(b.says), std::string::npos) << s.message();
  }
}

// Wilson 95% intervals from the formula, checked against values computed independently
// (statsmodels' proportion_confint(method="wilson") gives the same to 4 decimals).
TEST(WilsonInterval, MatchesKnownValues) {
  double lo = 0, hi = 0;
  wilson_interval(5, 10, 1.96, &lo, &hi);
  EXPECT_NEAR(lo, 0.2366, 1e-4);
  EXPECT_NEAR(hi, 0.7634, 1e-4);
  wilson_interval(0, 3, 1.96, &lo, &hi);  // never empty at 0 successes
  EXPECT_EQ(lo, 0.0);
  EXPECT_NEAR(hi, 0.5615, 1e-4);
  wilson_interval(3, 3, 1.96, &lo, &hi);
  EXPECT_NEAR(lo, 0.4385, 1e-4);
  EXPECT_EQ(hi, 1.0);
  wilson_interval(0, 0, 1.96, &lo, &hi);
  EXPECT_EQ(lo, 0.0);
  EXPECT_EQ(hi, 1.0);
}

// Per-window perplexity: the windows tile the predicted tokens and average back to the whole;
// with StreamingLLM on every layer the KV bytes are the same at the end of every window once the
// cache is full, and the pool does not grow; without a policy they grow with the context.
TEST_F(EvalModelTest, PerplexityWindowsTileTheTextAndShowConstantStreamingMemory) {
  std::string text;
  ASSERT_TRUE(kjv_text("", &text).ok());
  std::vector<int32_t> ids = model_->tokenizer().encode(text.substr(0, 4000));
  ids.insert(ids.begin(), model_->tokenizer().bos_id());
  ASSERT_GE(ids.size(), 401u);
  ids.resize(401);
  PerplexityOptions po;
  po.window = 100;
  for (bool streaming : {false, true}) {
    SCOPED_TRACE(streaming ? "token by token" : "chunked");
    po.streaming = streaming;
    ASSERT_TRUE(model_->set_kv_policy(streaming ? "streaming:sinks=4,window=60,shift=true,layers=all" : "").ok());
    PerplexityResult r;
    const Status s = perplexity(model_.get(), ids, po, nullptr, &r);
    ASSERT_TRUE(s.ok()) << s.message();
    ASSERT_EQ(r.windows.size(), 4u);
    double weighted = 0;
    int64_t next = 0;
    for (const auto& w : r.windows) {
      EXPECT_EQ(w.begin, next);
      next = w.end;
      weighted += w.nll * static_cast<double>(w.end - w.begin);
      EXPECT_NEAR(w.perplexity, std::exp(w.nll), 1e-9 * w.perplexity);
    }
    EXPECT_EQ(next, 400);
    EXPECT_NEAR(weighted / 400.0, r.nll, 1e-9);
    if (streaming) {
      for (const auto& w : r.windows) {
        EXPECT_EQ(w.kv_bytes_in_use, r.windows[0].kv_bytes_in_use) << "window ending at " << w.end;
        EXPECT_EQ(w.kv_bytes_allocated, r.windows[1].kv_bytes_allocated) << "window ending at " << w.end;
      }
      for (int64_t t : model_->kv_tokens()) EXPECT_EQ(t, 64);
    } else {
      EXPECT_GT(r.windows[3].kv_bytes_in_use, r.windows[0].kv_bytes_in_use);
    }
  }
  ASSERT_TRUE(model_->set_kv_policy("").ok());
  PerplexityOptions bad;
  bad.window = 0;
  PerplexityResult r;
  const Status refused = perplexity(model_.get(), ids, bad, nullptr, &r);
  EXPECT_NE(refused.message().find("window 0"), std::string::npos) << refused.message();
}

}  // namespace
}  // namespace attnkit::eval
