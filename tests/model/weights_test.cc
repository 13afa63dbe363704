// StackedWeights (src/model/weights.cc) on the real model: the QKV and gate/up stacks of a layer in
// their GGUF formats against the f32 reference copies, and what each mode keeps in memory.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "attnkit/gguf.h"
#include "model/weights.h"

namespace attnkit::model::internal {
namespace {

const gguf::GgufFile& real_file() {
  static std::unique_ptr<gguf::GgufFile> f = [] {
    std::string path;
    std::unique_ptr<gguf::GgufFile> file;
    if (!gguf::find_default_model(&path).ok() || !gguf::GgufFile::open(path, &file).ok()) {
      ADD_FAILURE() << "the Gemma GGUF is not installed";
      std::abort();
    }
    return file;
  }();
  return *f;
}

void check_stack(const std::vector<std::pair<std::string, int64_t>>& tensors, int64_t cols) {
  const gguf::GgufFile& f = real_file();
  StackedWeights wq, wf;
  uint64_t gguf_bytes = 0;
  for (const auto& [name, rows] : tensors) {
    ASSERT_TRUE(wq.add(f, name, rows, cols, WeightMode::kQuantized).ok()) << name;
    ASSERT_TRUE(wf.add(f, name, rows, cols, WeightMode::kF32).ok()) << name;
    gguf_bytes += f.find_tensor(name)->row_bytes() * static_cast<uint64_t>(rows);
  }
  // The quantized stack holds its rows unpacked to int8 values plus an f32 scale per 16 values
  // (and an f32 offset per 32 for Q4_K / Q5_K); the reference holds 4 bytes per weight.
  const uint64_t weights = static_cast<uint64_t>(wq.rows() * cols);
  EXPECT_EQ(wq.mapped_bytes(), 0u);
  EXPECT_GE(wq.packed_bytes(), weights * 5 / 4);
  EXPECT_LE(wq.packed_bytes(), weights * 11 / 8);
  EXPECT_GT(wq.packed_bytes(), gguf_bytes);
  EXPECT_EQ(wq.f32_bytes(), 0u);
  EXPECT_EQ(wf.mapped_bytes(), 0u);
  EXPECT_EQ(wf.packed_bytes(), 0u);
  EXPECT_EQ(wf.f32_bytes(), weights * 4);
  std::mt19937_64 rng(7);
  std::normal_distribution<float> nd;
  // 1 and 5 tokens go through packed_matmul, 9 through the dequantized tiles and sgemm.
  static_assert(kTiledSgemmMinTokens > 5 && kTiledSgemmMinTokens <= 9);
  for (int64_t n : {1, 5, 9}) {
    std::vector<float> x(static_cast<size_t>(n * cols));
    for (float& v : x) v = nd(rng);
    const int64_t ldy = wq.rows() + 3;
    std::vector<float> yq(static_cast<size_t>(n * ldy)), yf(yq.size());
    ASSERT_TRUE(wq.apply(x.data(), n, yq.data(), ldy, 2).ok());
    ASSERT_TRUE(wf.apply(x.data(), n, yf.data(), ldy, 2).ok());
    double num = 0, den = 0;
    for (int64_t t = 0; t < n; ++t)
      for (int64_t r = 0; r < wq.rows(); ++r) {
        const double d = yq[static_cast<size_t>(t * ldy + r)] - yf[static_cast<size_t>(t * ldy + r)];
        num += d * d;
        den += static_cast<double>(yf[static_cast<size_t>(t * ldy + r)]) * yf[static_cast<size_t>(t * ldy + r)];
      }
    // int16 activations per 32 values: relative squared error ~1e-10 on Gaussian inputs; the
    // tiled path differs from the f32 copies only by the order of f32 sums.
    EXPECT_LT(num / den, 1e-8) << tensors[0].first << " n " << n;
    EXPECT_GT(den, 0);
  }
}

TEST(StackedWeights, QkvStackOfMixedFormats) {
  // Q5_0, Q5_0 and Q8_0 in the shipped file.
  check_stack({{"blk.0.attn_q.weight", 1024}, {"blk.0.attn_k.weight", 256}, {"blk.0.attn_v.weight", 256}}, 640);
}

TEST(StackedWeights, GateUpAndDown) {
  check_stack({{"blk.1.ffn_gate.weight", 2048}, {"blk.1.ffn_up.weight", 2048}}, 640);
  check_stack({{"blk.1.ffn_down.weight", 640}}, 2048);
}

TEST(StackedWeights, WrongShapeNamesTheTensor) {
  StackedWeights w;
  Status s = w.add(real_file(), "blk.0.attn_q.weight", 1000, 640, WeightMode::kQuantized);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("blk.0.attn_q.weight"), std::string::npos) << s.message();
  s = w.add(real_file(), "blk.0.no_such.weight", 1, 640, WeightMode::kQuantized);
  EXPECT_NE(s.message().find("no_such"), std::string::npos) << s.message();
  ASSERT_TRUE(w.add(real_file(), "blk.0.attn_q.weight", 1024, 640, WeightMode::kQuantized).ok());
  s = w.add(real_file(), "blk.0.ffn_down.weight", 640, 2048, WeightMode::kQuantized);
  EXPECT_NE(s.message().find("2048 columns"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace attnkit::model::internal
