// The model on its quantized weights (the default: GGUF blocks read in place, int16 activations)
// against the f32-weight reference path and the Hugging Face golden logits
// (tests/data/golden_gemma3.json, written by scripts/golden_hf.py): the argmax at every golden
// position, perplexity on KJV tokens within 0.5% of the f32 path, decode against prefill, and the
// memory the weights take in each mode.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "attnkit/gguf.h"
#include "attnkit/model.h"
#include "model/quant_matmul.h"

namespace attnkit::model {
namespace {

nlohmann::json golden() {
  std::ifstream f(std::filesystem::path(__FILE__).parent_path().parent_path() / "data" / "golden_gemma3.json");
  EXPECT_TRUE(f) << "missing tests/data/golden_gemma3.json";
  return nlohmann::json::parse(f);
}

class GemmaQuantTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string path;
    if (!gguf::find_default_model(&path).ok()) return;
    for (auto [mode, out] : {std::pair{WeightFormat::kQuantized, &quant_}, std::pair{WeightFormat::kF32, &ref_}}) {
      LoadOptions lo;
      lo.threads = 2;
      lo.weights = mode;
      // f32 KV: the comparison isolates the weight format (tests/kv/ checks bf16 KV against f32).
      lo.kv_storage = kv::KvStorage::kF32;
      Status s = Model::load(path, lo, out);
      if (!s.ok()) load_error_ = s.message();
    }
  }
  static void TearDownTestSuite() {
    quant_.reset();
    ref_.reset();
  }
  void SetUp() override {
    if (!load_error_.empty()) FAIL() << "the model failed to load: " << load_error_;
    if (!quant_ || !ref_) GTEST_SKIP() << "Gemma 3 270M GGUF not installed (scripts/setup.sh installs it)";
    quant_->reset();
    ref_->reset();
  }
  // Perplexity of ids[1..n-1] after their prefixes.
  static double perplexity(Model* m, const std::vector<int32_t>& ids) {
    const int64_t n = static_cast<int64_t>(ids.size()) - 1;
    std::vector<float> lp(static_cast<size_t>(n));
    ForwardOutputs o;
    o.maybe_targets = ids.data() + 1;
    o.maybe_target_logprobs = lp.data();
    m->reset();
    EXPECT_TRUE(m->forward(ids.data(), n, o).ok());
    double nll = 0;
    for (float v : lp) nll -= v;
    return std::exp(nll / static_cast<double>(n));
  }
  static inline std::unique_ptr<Model> quant_, ref_;
  static inline std::string load_error_;
};

TEST_F(GemmaQuantTest, WeightsStayInTheirBlocks) {
  EXPECT_EQ(quant_->weight_format(), WeightFormat::kQuantized);
  EXPECT_EQ(ref_->weight_format(), WeightFormat::kF32);
  const WeightBytes q = quant_->weight_bytes(), r = ref_->weight_bytes();
  // Both read the Q8_0 embedding (262144 x 640, 170 MiB) in place from the mapping.
  EXPECT_EQ(q.mapped, r.mapped);
  EXPECT_GT(q.mapped, 160u << 20);
  EXPECT_LT(q.mapped, 180u << 20);
  // Quantized: the projections (100M weights) are unpacked to int8 values with f32 scales, 1.25 or
  // 1.375 bytes per weight; only the norm weights are f32.
  EXPECT_LT(q.f32, 1u << 20);
  EXPECT_EQ(r.packed, 0u);
  EXPECT_GT(q.packed, 120u << 20);
  EXPECT_LT(q.packed, 140u << 20);
  // f32: the projections are expanded to 4 bytes per weight (about 400 MB), close to 3x the packed rows.
  EXPECT_GT(r.f32, 350u << 20);
  EXPECT_LT(q.packed * 5 / 2, r.f32 - q.f32);
}

TEST_F(GemmaQuantTest, GoldenTop1AtEveryPosition) {
  const nlohmann::json g = golden();
  const int64_t V = quant_->config().n_vocab;
  for (const auto& p : g["prompts"]) {
    const std::vector<int32_t> ids = p["ids"].get<std::vector<int32_t>>();
    std::vector<float> lg(ids.size() * static_cast<size_t>(V));
    ForwardOutputs o;
    o.maybe_all_logits = lg.data();
    quant_->reset();
    ASSERT_TRUE(quant_->forward(ids.data(), static_cast<int64_t>(ids.size()), o).ok());
    float max_diff = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
      const float* row = lg.data() + i * static_cast<size_t>(V);
      EXPECT_EQ(std::max_element(row, row + V) - row, p["topk_ids"][i][0].get<int32_t>())
          << "prompt '" << p["text"] << "' position " << i;
      for (size_t k = 0; k < p["topk_ids"][i].size(); ++k)
        max_diff = std::max(max_diff, std::fabs(row[p["topk_ids"][i][k].get<int32_t>()] - p["topk_values"][i][k].get<float>()));
    }
    // int16 activations move logits of O(10..30) by about 1e-3; a wrong scale or format moves
    // them by whole units.
    EXPECT_LT(max_diff, 0.02f) << "prompt '" << p["text"] << "'";
    std::printf("quantized golden %-24.24s: max |top-10 logit diff| = %.4f\n", p["text"].get<std::string>().c_str(), max_diff);
  }
}

TEST_F(GemmaQuantTest, PerplexityWithinHalfPercentOfF32) {
  std::vector<int32_t> ids = golden()["perplexity"]["ids"].get<std::vector<int32_t>>();
  ASSERT_GE(ids.size(), 1025u);
  ids.resize(1025);  // 1024 scored tokens across two prefill chunks
  const double pq = perplexity(quant_.get(), ids), pr = perplexity(ref_.get(), ids);
  std::printf("perplexity of 1024 KJV tokens: quantized %.5f, f32 weights %.5f (%+.3f%%)\n", pq, pr, 100 * (pq / pr - 1));
  EXPECT_TRUE(std::isfinite(pq));
  EXPECT_NEAR(pq, pr, 0.005 * pr);
}

// Prefill's two products on the packed rows: the integer GEMM (int16 activations, exact integer
// sums) against f32 tiles + sgemm (f32 activations). The activation rounding is the only
// difference, and it must cost no more than 0.01% of perplexity over two 512-token chunks.
TEST_F(GemmaQuantTest, PrefillIntegerGemmMatchesSgemmTiles) {
  if (internal::quant_isa() == internal::QuantIsa::kScalar) GTEST_SKIP() << "no AVX2: prefill uses sgemm tiles only";
  std::vector<int32_t> ids = golden()["perplexity"]["ids"].get<std::vector<int32_t>>();
  ASSERT_GE(ids.size(), 1025u);
  ids.resize(1025);
  const internal::PrefillGemm saved = internal::set_prefill_gemm(internal::PrefillGemm::kSgemm);
  const double ps = perplexity(quant_.get(), ids);
  internal::set_prefill_gemm(internal::PrefillGemm::kInteger);
  const double pi = perplexity(quant_.get(), ids);
  internal::set_prefill_gemm(saved);
  std::printf("perplexity of 1024 KJV tokens: integer GEMM %.6f, sgemm tiles %.6f (%+.5f%%)\n", pi, ps, 100 * (pi / ps - 1));
  EXPECT_TRUE(std::isfinite(pi));
  EXPECT_NEAR(pi, ps, 1e-4 * ps);
  // The two paths are not the same code: if the setter did nothing the logits would be identical.
  EXPECT_NE(pi, ps);
}

TEST_F(GemmaQuantTest, DecodeAgreesWithPrefill) {
  const std::vector<int32_t> ids = golden()["prompts"][0]["ids"].get<std::vector<int32_t>>();
  const int64_t n = static_cast<int64_t>(ids.size()), V = quant_->config().n_vocab;
  ASSERT_GE(n, 3);
  std::vector<float> all(static_cast<size_t>(n * V)), d(static_cast<size_t>(V));
  ForwardOutputs o;
  o.maybe_all_logits = all.data();
  ASSERT_TRUE(quant_->forward(ids.data(), n, o).ok());
  quant_->reset();
  ASSERT_TRUE(quant_->forward(ids.data(), n - 1, ForwardOutputs{}).ok());
  ASSERT_TRUE(quant_->decode(ids[static_cast<size_t>(n - 1)], d.data()).ok());
  const float* last = all.data() + (n - 1) * V;
  float md = 0, ma = 0;
  for (int64_t j = 0; j < V; ++j) {
    md = std::max(md, std::fabs(d[static_cast<size_t>(j)] - last[j]));
    ma = std::max(ma, std::fabs(last[j]));
  }
  // Prefill scores logits with sgemm on dequantized embedding slices, decode with the int16-activation Q8_0 kernel.
  EXPECT_LT(md, 2e-3f * ma);
  EXPECT_EQ(std::max_element(d.begin(), d.end()) - d.begin(), std::max_element(last, last + V) - last);
}

}  // namespace
}  // namespace attnkit::model
