// Gemma 3 270M on the paged KV cache: bf16 KV against f32 KV, window-sized local layers, policies
// that keep everything equal exact attention, eviction during chunked prefill bounds memory.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/gguf.h"
#include "attnkit/kv_cache.h"
#include "attnkit/model.h"
#include "attnkit/tokenizer.h"
#include "attnkit/eval.h"

namespace attnkit::kv {
namespace {

class ModelKvTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string path;
    if (!gguf::find_default_model(&path).ok()) return;
    model::LoadOptions lo;
    lo.threads = 2;
    lo.kv_storage = KvStorage::kF32;
    if (!model::Model::load(path, lo, &model_).ok()) model_.reset();
    std::string text;
    if (model_ && eval::kjv_text("", &text).ok()) {
      EncodeOptions eo;
      eo.add_bos = true;
      ids_ = model_->tokenizer().encode(text.substr(0, 40000), eo);
    }
  }
  static void TearDownTestSuite() { model_.reset(); }
  void SetUp() override {
    if (!model_ || ids_.size() < 8193) GTEST_SKIP() << "Gemma 3 270M GGUF or the KJV text is not installed";
    ASSERT_TRUE(model_->set_kv_storage(KvStorage::kF32).ok());
    model_->set_kv_policy(std::shared_ptr<KvPolicy>());
    model_->set_prefill_chunk(512);
  }
  // Mean negative log-likelihood of ids[1..n-1] with one forward (chunked prefill).
  static double nll(int64_t n) {
    std::vector<float> lp(static_cast<size_t>(n - 1));
    model::ForwardOutputs o;
    o.maybe_targets = ids_.data() + 1;
    o.maybe_target_logprobs = lp.data();
    model_->reset();
    EXPECT_TRUE(model_->forward(ids_.data(), n - 1, o).ok());
    double s = 0;
    for (float v : lp) s -= v;
    return s / static_cast<double>(n - 1);
  }
  static std::vector<float> last_logits(int64_t n) {
    std::vector<float> lg(static_cast<size_t>(model_->config().n_vocab));
    model::ForwardOutputs o;
    o.maybe_last_logits = lg.data();
    model_->reset();
    EXPECT_TRUE(model_->forward(ids_.data(), n, o).ok());
    return lg;
  }
  static inline std::unique_ptr<model::Model> model_;
  static inline std::vector<int32_t> ids_;
};

// The target is stated on 8K tokens. Shorter texts are not a fair test of a 0.1% bound: the first
// KJV tokens are so predictable that a few near-tied tokens, flipped by bf16's rounding of the
// keys, move the perplexity of 1K tokens by 0.1-0.4% either way.
TEST_F(ModelKvTest, Bf16KvPerplexityWithinATenthOfAPercentOfF32) {
  const double f32 = std::exp(nll(8192));
  const auto f = model_->kv_bytes();
  ASSERT_TRUE(model_->set_kv_storage(KvStorage::kBF16).ok());
  const double bf16 = std::exp(nll(8192));
  const auto b = model_->kv_bytes();
  std::printf("perplexity over 8191 KJV tokens: f32 KV %.5f, bf16 KV %.5f (%+.4f%%)\n", f32, bf16, 100 * (bf16 / f32 - 1));
  EXPECT_LT(std::fabs(bf16 / f32 - 1), 1e-3);
  EXPECT_NE(bf16, f32) << "bf16 storage should round something";
  // Half the bytes per token.
  for (size_t l = 0; l < b.size(); ++l) EXPECT_EQ(2 * b[l].in_use, f[l].in_use) << "layer " << l;
}

// int8 KV (per-(token, kv head) scales, read in place by the attention kernel, rows smoothed per
// channel: KvSmoothing): the perplexity of the first 2K KJV tokens within 0.5% of f32 KV (measured
// +0.13%; without smoothing the same rows cost about 3%, docs/kv.md), the passkey still found, and
// about a quarter of the f32 bytes per token (int8 rows plus one f32 scale per row of K and of V).
TEST_F(ModelKvTest, Int8KvPerplexityNearF32AndPasskeyFound) {
  const double f32 = std::exp(nll(2048));
  const auto f = model_->kv_bytes();
  ASSERT_TRUE(model_->set_kv_storage(KvStorage::kInt8).ok());
  const double int8 = std::exp(nll(2048));
  const auto b = model_->kv_bytes();
  std::printf("perplexity over 2047 KJV tokens: f32 KV %.5f, int8 KV %.5f (%+.4f%%)\n", f32, int8, 100 * (int8 / f32 - 1));
  EXPECT_LT(std::fabs(int8 / f32 - 1), 5e-3);
  EXPECT_NE(int8, f32) << "int8 storage should round something";
  const int64_t hd = model_->config().head_dim;
  for (size_t l = 0; l < b.size(); ++l)  // per row: 4 * head_dim bytes in f32, head_dim + 4 in int8
    EXPECT_EQ(b[l].in_use * 4 * hd, f[l].in_use * (hd + 4)) << "layer " << l;
  std::vector<eval::RetrievalTrial> trials;
  ASSERT_TRUE(eval::passkey(model_.get(), {1024}, 2, 7, eval::ProgressFn(), &trials).ok());
  for (const auto& t : trials) EXPECT_TRUE(t.correct) << "expected " << t.expected << ", generated \"" << t.generated << "\"";
}

TEST_F(ModelKvTest, LocalLayersStayWindowSizedGlobalLayersGrow) {
  const auto& c = model_->config();
  std::vector<int64_t> local_bytes(static_cast<size_t>(c.n_layer), -1);
  for (int64_t n : {1200, 2100}) {
    (void)last_logits(n);
    const auto tokens = model_->kv_tokens();
    const auto bytes = model_->kv_bytes();
    for (int64_t l = 0; l < c.n_layer; ++l) {
      if (c.is_global(l)) {
        EXPECT_EQ(tokens[static_cast<size_t>(l)], n) << "layer " << l;
      } else {
        // The last 511 positions a later query sees, plus the page they start in.
        EXPECT_LE(tokens[static_cast<size_t>(l)], c.sliding_window + 16) << "layer " << l;
        EXPECT_GE(tokens[static_cast<size_t>(l)], c.sliding_window - 1) << "layer " << l;
        // Constant in the context length, up to the page the window starts in.
        const int64_t page_bytes = 16 * 2 * c.n_head_kv * c.head_dim * 4;
        if (local_bytes[static_cast<size_t>(l)] >= 0)
          EXPECT_LE(std::abs(bytes[static_cast<size_t>(l)].in_use - local_bytes[static_cast<size_t>(l)]), page_bytes) << "layer " << l;
        local_bytes[static_cast<size_t>(l)] = bytes[static_cast<size_t>(l)].in_use;
      }
    }
  }
}

TEST_F(ModelKvTest, PoliciesWithRoomForEverythingEqualExact) {
  const std::vector<float> exact = last_logits(700);
  for (const char* spec : {"h2o:budget=4096", "tova:budget=4096", "snapkv:budget=4096", "knorm:ratio=0",
                           "streaming:sinks=4,window=4096,shift=true"}) {
    ASSERT_TRUE(model_->set_kv_policy(spec).ok()) << spec;
    const std::vector<float> got = last_logits(700);
    EXPECT_EQ(got, exact) << spec;
  }
}

TEST_F(ModelKvTest, EvictionDuringChunkedPrefillBoundsTheGlobalLayers) {
  const auto& c = model_->config();
  for (const char* spec : {"snapkv:budget=256", "h2o:budget=256", "tova:budget=256", "knorm:budget=256", "streaming:budget=256"}) {
    ASSERT_TRUE(model_->set_kv_policy(spec).ok()) << spec;
    int64_t peak_tokens = 0;
    model_->reset();
    // After every chunk the layer holds at most budget + slack (snapkv's window); within the step
    // it held at most that plus the chunk.
    std::vector<float> lg(static_cast<size_t>(c.n_vocab));
    model::ForwardOutputs o;
    o.maybe_last_logits = lg.data();
    for (int64_t s = 0; s < 2000; s += 500) {
      ASSERT_TRUE(model_->forward(ids_.data() + s, 500, o).ok()) << spec;
      for (int64_t l = 0; l < c.n_layer; ++l)
        if (c.is_global(l)) peak_tokens = std::max(peak_tokens, model_->kv_tokens()[static_cast<size_t>(l)]);
    }
    EXPECT_LE(peak_tokens, 256 + 32) << spec;
    EXPECT_GE(peak_tokens, 256) << spec;
    for (int i = 0; i < 40; ++i) {
      const int32_t t = static_cast<int32_t>(std::max_element(lg.begin(), lg.end()) - lg.begin());
      ASSERT_TRUE(model_->decode(t, lg.data()).ok()) << spec;
    }
    for (int64_t l = 0; l < c.n_layer; ++l)
      if (c.is_global(l)) {
        EXPECT_LE(model_->kv_tokens()[static_cast<size_t>(l)], 256 + 32) << spec << " layer " << l;
        EXPECT_LE(model_->kv_bytes()[static_cast<size_t>(l)].in_use, (256 + 32 + 16) / 16 * 16 * 2 * 256 * 4) << spec;
      }
    EXPECT_TRUE(std::isfinite(lg[0])) << spec;
  }
}

}  // namespace
}  // namespace attnkit::kv
