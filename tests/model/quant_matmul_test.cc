// Quantized-weight matrix products (src/model/quant_matmul.cc) on the real Gemma 3 270M tensors:
// every weight format the shipped GGUF holds (Q5_0, Q8_0, Q4_K, Q6_K) and F32 / F16 / BF16 copies
// of a real tensor, on every integer-dot path this CPU has, read in place (quant_matmul) and from
// packed rows stacked in two parts (packed_matmul), 1 and 2 threads, odd row and token counts. The reference is the `gguf` layer's dequantization followed by a double-precision dot.
//
// Bound asserted per output (see quant_matmul.h): the kernel computes the exact dot of the
// dequantized weights with the int16-quantized activations x^, so
//   |y - W x| <= sum_i |W_i| |x_i - x^_i| + 4e-6 sum_i |W_i x_i| + 1e-30
// where the second term covers the f32 rounding of per-group partial sums. Float weights have no
// activation quantization, so only the rounding term applies.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "attnkit/gguf.h"
#include "attnkit/tensor.h"
#include "model/quant_matmul.h"

namespace attnkit::model::internal {
namespace {

using gguf::TensorType;

const gguf::GgufFile& real_file() {
  static std::unique_ptr<gguf::GgufFile> f = [] {
    std::string path;
    Status s = gguf::find_default_model(&path);
    if (!s.ok()) {
      ADD_FAILURE() << s.message();
      std::abort();
    }
    std::unique_ptr<gguf::GgufFile> file;
    s = gguf::GgufFile::open(path, &file);
    if (!s.ok()) {
      ADD_FAILURE() << s.message();
      std::abort();
    }
    return file;
  }();
  return *f;
}

// Activations shaped like the model's: mostly N(0, 1) with a few large outliers per row, so some
// quantization blocks have a coarse scale.
std::vector<float> activations(int64_t n, int64_t cols, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(static_cast<size_t>(n * cols));
  for (float& v : x) v = nd(rng);
  for (int64_t t = 0; t < n; ++t)
    for (int k = 0; k < 3; ++k) x[static_cast<size_t>(t * cols + (rng() % cols))] *= 40.f;
  return x;
}

class QuantIsaGuard {
 public:
  QuantIsaGuard() : saved_(quant_isa()) {}
  ~QuantIsaGuard() { set_quant_isa(saved_); }

 private:
  QuantIsa saved_;
};

std::vector<QuantIsa> available_isas() {
  QuantIsaGuard guard;
  std::vector<QuantIsa> out;
  for (QuantIsa isa : {QuantIsa::kScalar, QuantIsa::kAvx2, QuantIsa::kAvx512Vnni}) {
    set_quant_isa(isa);
    if (quant_isa() == isa) out.push_back(isa);
  }
  return out;
}

// Checks quant_matmul on rows [row0, row0 + rows) of a matrix against dequantize-then-dot.
void check_matrix(const std::string& what, TensorType type, const uint8_t* data, uint64_t row_bytes, const float* w_f32,
                  int64_t rows, int64_t cols, bool quantized_activations) {
  QuantIsaGuard guard;
  for (int64_t n : {1, 3, 7}) {
    const std::vector<float> x = activations(n, cols, static_cast<uint64_t>(rows * 31 + n));
    std::vector<float> xerr(x.size(), 0.f);
    if (quantized_activations) quant_activation_error(x.data(), n, cols, xerr.data());
    std::vector<double> ref(static_cast<size_t>(n * rows)), bound(ref.size());
    double ref_energy = 0;
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t r = 0; r < rows; ++r) {
        double s = 0, abs_wx = 0, werr = 0;
        for (int64_t i = 0; i < cols; ++i) {
          const double wv = w_f32[r * cols + i], xv = x[static_cast<size_t>(t * cols + i)];
          s += wv * xv;
          abs_wx += std::fabs(wv * xv);
          werr += std::fabs(wv) * xerr[static_cast<size_t>(t * cols + i)];
        }
        ref[static_cast<size_t>(t * rows + r)] = s;
        bound[static_cast<size_t>(t * rows + r)] = werr + 4e-6 * abs_wx + 1e-30;
        ref_energy += s * s;
      }
    }
    // Integer formats also go through their packed rows, split into two stacked parts.
    PackedRows lo, hi;
    if (quantized_activations) {
      ASSERT_TRUE(pack_rows(type, data, row_bytes, rows / 2, cols, 2, &lo).ok()) << what;
      ASSERT_TRUE(pack_rows(type, data + (rows / 2) * row_bytes, row_bytes, rows - rows / 2, cols, 1, &hi).ok()) << what;
      // Packed rows dequantize to the blocks' values.
      std::vector<float> wp(static_cast<size_t>(rows * cols));
      packed_dequantize(lo, 0, lo.rows, wp.data());
      packed_dequantize(hi, 0, hi.rows, wp.data() + lo.rows * cols);
      for (size_t i = 0; i < wp.size(); ++i)
        ASSERT_NEAR(wp[i], w_f32[i], 1e-6f * std::fabs(w_f32[i]) + 1e-7f) << what << " packed value " << i;
    }
    std::vector<float> first;
    for (QuantIsa isa : available_isas()) {
      set_quant_isa(isa);
      for (int variant = 0; variant < (quantized_activations ? 4 : 2); ++variant) {
        const int threads = 1 + variant % 2;
        const bool packed = variant >= 2;
        // One guard column each side of the rows (ldy = rows + 2) must stay untouched.
        const int64_t ldy = rows + 2;
        std::vector<float> y(static_cast<size_t>(n * ldy), 12345.f);
        const PackedRows* parts[2] = {&lo, &hi};
        Status s = packed ? packed_matmul(parts, 2, x.data(), n, y.data() + 1, ldy, threads)
                          : quant_matmul(type, data, row_bytes, rows, cols, x.data(), n, y.data() + 1, ldy, threads);
        ASSERT_TRUE(s.ok()) << what << ": " << s.message();
        double err_energy = 0;
        std::vector<float> got;
        for (int64_t t = 0; t < n; ++t) {
          EXPECT_EQ(y[static_cast<size_t>(t * ldy)], 12345.f) << what << " guard before token " << t;
          if (t + 1 < n) EXPECT_EQ(y[static_cast<size_t>(t * ldy + rows + 1)], 12345.f) << what << " guard after token " << t;
          for (int64_t r = 0; r < rows; ++r) {
            const float v = y[static_cast<size_t>(t * ldy + 1 + r)];
            const double e = std::fabs(v - ref[static_cast<size_t>(t * rows + r)]);
            ASSERT_TRUE(std::isfinite(v)) << what;
            ASSERT_LE(e, bound[static_cast<size_t>(t * rows + r)])
                << what << " " << quant_isa_name(isa) << (packed ? " packed" : "") << " threads " << threads << " n " << n
                << " token " << t << " row " << r
                << ": got " << v << " want " << ref[static_cast<size_t>(t * rows + r)];
            err_energy += e * e;
            got.push_back(v);
          }
        }
        // Relative squared error of the whole product: int16 activations (step max|x| / 32767 per
        // 32 values) keep it below 1e-8; float weights are exact up to rounding.
        EXPECT_LT(err_energy / ref_energy, quantized_activations ? 1e-8 : 1e-10) << what << " " << quant_isa_name(isa);
        // Every path computes the same integer sums; only the f32 order of the scaled sums differs.
        if (first.empty()) {
          first = got;
        } else {
          for (size_t k = 0; k < got.size(); ++k)
            ASSERT_NEAR(got[k], first[k], 1e-4 * (std::fabs(first[k]) + 1.f)) << what << " " << quant_isa_name(isa);
        }
      }
    }
  }
}

void check_tensor(const std::string& name, TensorType expected_type, int64_t max_rows) {
  const gguf::GgufFile& f = real_file();
  const gguf::TensorInfo* t = f.find_tensor(name);
  ASSERT_NE(t, nullptr) << name;
  ASSERT_EQ(t->type, expected_type) << name << " is " << gguf::tensor_type_name(t->type);
  const uint8_t* data = nullptr;
  ASSERT_TRUE(f.tensor_data(*t, &data).ok());
  // An odd number of rows starting at an odd row.
  const int64_t row0 = 1, rows = std::min<int64_t>(max_rows, t->n_rows() - 1) | 1;
  const int64_t cols = t->row_elems();
  std::vector<float> w(static_cast<size_t>(rows * cols));
  ASSERT_TRUE(f.dequantize_rows(*t, row0, rows, w.data()).ok());
  check_matrix(name, t->type, data + row0 * t->row_bytes(), t->row_bytes(), w.data(), rows, cols, true);
}

TEST(QuantMatmul, RealQ5_0) { check_tensor("blk.0.attn_q.weight", TensorType::kQ5_0, 301); }
TEST(QuantMatmul, RealQ8_0) { check_tensor("blk.0.attn_v.weight", TensorType::kQ8_0, 255); }
TEST(QuantMatmul, RealQ8_0Embedding) { check_tensor("token_embd.weight", TensorType::kQ8_0, 515); }
TEST(QuantMatmul, RealQ4_K) { check_tensor("blk.0.attn_output.weight", TensorType::kQ4_K, 201); }
TEST(QuantMatmul, RealQ6_K) { check_tensor("blk.0.ffn_down.weight", TensorType::kQ6_K, 133); }

// F32, F16 and BF16 weights: the real Q5_0 gate matrix converted to each.
TEST(QuantMatmul, RealFloatFormats) {
  const gguf::GgufFile& f = real_file();
  const gguf::TensorInfo* t = f.find_tensor("blk.3.ffn_gate.weight");
  ASSERT_NE(t, nullptr);
  const int64_t rows = 77, cols = t->row_elems();
  std::vector<float> w(static_cast<size_t>(rows * cols));
  ASSERT_TRUE(f.dequantize_rows(*t, 0, rows, w.data()).ok());
  std::vector<uint16_t> h16(w.size()), b16(w.size());
  std::vector<float> w16(w.size()), wb16(w.size());
  for (size_t i = 0; i < w.size(); ++i) {
    h16[i] = f32_to_f16(w[i]);
    w16[i] = f16_to_f32(h16[i]);
    b16[i] = f32_to_bf16(w[i]);
    wb16[i] = bf16_to_f32(b16[i]);
  }
  check_matrix("f32", TensorType::kF32, reinterpret_cast<const uint8_t*>(w.data()), cols * 4, w.data(), rows, cols, false);
  check_matrix("f16", TensorType::kF16, reinterpret_cast<const uint8_t*>(h16.data()), cols * 2, w16.data(), rows, cols, false);
  check_matrix("bf16", TensorType::kBF16, reinterpret_cast<const uint8_t*>(b16.data()), cols * 2, wb16.data(), rows, cols, false);
}

// Q4_0 and Q5_K are not in the shipped file: random blocks (with finite f16 scales) against the
// gguf layer's dequantizer.
void check_random_blocks(TensorType type, int64_t block_elems, int64_t block_bytes, std::vector<int> scale_offsets) {
  std::mt19937_64 rng(static_cast<uint64_t>(type));
  const int64_t rows = 19, cols = 512;
  const uint64_t row_bytes = static_cast<uint64_t>(cols / block_elems * block_bytes);
  std::vector<uint8_t> data(rows * row_bytes);
  for (uint8_t& b : data) b = static_cast<uint8_t>(rng());
  std::uniform_real_distribution<float> ud(1e-3f, 2e-2f);
  for (int64_t k = 0; k < rows * cols / block_elems; ++k)
    for (int off : scale_offsets) {
      const uint16_t h = f32_to_f16(ud(rng));
      std::memcpy(data.data() + k * block_bytes + off, &h, 2);
    }
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    ASSERT_TRUE(gguf::dequantize_row(type, data.data() + r * row_bytes, row_bytes, cols, w.data() + r * cols).ok());
  check_matrix(gguf::tensor_type_name(type), type, data.data(), row_bytes, w.data(), rows, cols, true);
}

TEST(QuantMatmul, RandomQ4_0) { check_random_blocks(TensorType::kQ4_0, 32, 18, {0}); }
TEST(QuantMatmul, RandomQ5_K) { check_random_blocks(TensorType::kQ5_K, 256, 176, {0, 2}); }

TEST(QuantMatmul, BadArgumentsNameTheParameter) {
  std::vector<uint8_t> w(34 * 4, 0);
  std::vector<float> x(64, 1.f), y(8, 0.f);
  Status s = quant_matmul(TensorType::kQ8_0, w.data(), 34, 2, 48, x.data(), 1, y.data(), 2, 1);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("cols 48"), std::string::npos) << s.message();
  s = quant_matmul(TensorType::kQ8_0, w.data(), 34, 2, 32, x.data(), 1, y.data(), 1, 1);
  EXPECT_NE(s.message().find("ldy 1"), std::string::npos) << s.message();
  s = quant_matmul(TensorType::kQ8_0, w.data(), 20, 2, 32, x.data(), 1, y.data(), 2, 1);
  EXPECT_NE(s.message().find("row_bytes 20"), std::string::npos) << s.message();
  s = quant_matmul(TensorType::kQ2_K, w.data(), 84, 1, 256, x.data(), 1, y.data(), 1, 1);
  EXPECT_EQ(s.code(), StatusCode::kUnsupported);
  EXPECT_NE(s.message().find("q2_K"), std::string::npos) << s.message();
  EXPECT_FALSE(quant_matmul_supports(TensorType::kQ2_K));
  EXPECT_TRUE(quant_matmul_supports(TensorType::kQ6_K));
}

TEST(QuantMatmul, PackedBadArgumentsNameTheParameter) {
  const gguf::GgufFile& f = real_file();
  PackedRows q, down;
  for (auto [name, out] : {std::pair{"blk.0.attn_q.weight", &q}, std::pair{"blk.0.ffn_down.weight", &down}}) {
    const gguf::TensorInfo* t = f.find_tensor(name);
    ASSERT_NE(t, nullptr);
    const uint8_t* data = nullptr;
    ASSERT_TRUE(f.tensor_data(*t, &data).ok());
    ASSERT_TRUE(pack_rows(t->type, data, t->row_bytes(), 3, t->row_elems(), 1, out).ok());
  }
  std::vector<float> x(2048, 1.f), y(8, 0.f);
  const PackedRows* parts[2] = {&q, &down};
  Status s = packed_matmul(parts, 2, x.data(), 1, y.data(), 6, 1);
  EXPECT_NE(s.message().find("part 1 has cols 2048"), std::string::npos) << s.message();
  s = packed_matmul(parts, 1, x.data(), 1, y.data(), 2, 1);
  EXPECT_NE(s.message().find("ldy 2"), std::string::npos) << s.message();
  std::vector<uint8_t> w(84, 0);
  s = pack_rows(TensorType::kQ2_K, w.data(), 84, 1, 256, 1, &q);
  EXPECT_EQ(s.code(), StatusCode::kUnsupported);
  EXPECT_NE(s.message().find("q2_K"), std::string::npos) << s.message();
}

// An all-zero activation block has scale 0 and must give exact zeros, not NaN.
TEST(QuantMatmul, ZeroActivations) {
  const gguf::GgufFile& f = real_file();
  const gguf::TensorInfo* t = f.find_tensor("blk.0.attn_output.weight");
  ASSERT_NE(t, nullptr);
  const uint8_t* data = nullptr;
  ASSERT_TRUE(f.tensor_data(*t, &data).ok());
  std::vector<float> x(static_cast<size_t>(t->row_elems()), 0.f), y(5, 1.f);
  ASSERT_TRUE(quant_matmul(t->type, data, t->row_bytes(), 5, t->row_elems(), x.data(), 1, y.data(), 5, 2).ok());
  for (float v : y) EXPECT_EQ(v, 0.f);
}

}  // namespace
}  // namespace attnkit::model::internal

namespace attnkit::model::internal {
namespace {

// packed_gemm (the prefill product) on rows [1, 1 + rows) of a real tensor, stacked as two parts,
// on every integer path this CPU has (the portable one is packed_matmul itself), for token counts
// around the micro-kernels' 4 and 6 tokens and row counts that leave partial 16- and 32-row
// panels. Asserted per output: the bound of the header, |y - W x| <= sum |W| |x - x^| plus f32
// rounding, against dequantize-then-double-dot; and agreement with packed_matmul (the same
// integer sums, only the f32 order of the scaled sums differs).
void check_gemm(const std::string& name, TensorType expected_type, int64_t rows) {
  QuantIsaGuard guard;
  const gguf::GgufFile& f = real_file();
  const gguf::TensorInfo* t = f.find_tensor(name);
  ASSERT_NE(t, nullptr) << name;
  ASSERT_EQ(t->type, expected_type) << name;
  const uint8_t* data = nullptr;
  ASSERT_TRUE(f.tensor_data(*t, &data).ok());
  const int64_t cols = t->row_elems();
  data += t->row_bytes();
  std::vector<float> w(static_cast<size_t>(rows * cols));
  ASSERT_TRUE(f.dequantize_rows(*t, 1, rows, w.data()).ok());
  // Part 0 ends in a partial 32-row panel whose last 16-row vector is partial too (rows 0..40).
  const int64_t rows0 = std::min<int64_t>(41, rows - 1);
  PackedRows lo, hi;
  ASSERT_TRUE(pack_rows(t->type, data, t->row_bytes(), rows0, cols, 2, &lo).ok());
  ASSERT_TRUE(pack_rows(t->type, data + rows0 * t->row_bytes(), t->row_bytes(), rows - rows0, cols, 2, &hi).ok());
  const PackedRows* parts[2] = {&lo, &hi};
  for (int64_t n : {1, 5, 8, 13, 37}) {
    const std::vector<float> x = activations(n, cols, static_cast<uint64_t>(rows * 7 + n));
    std::vector<float> xerr(x.size());
    quant_activation_error(x.data(), n, cols, xerr.data());
    const int64_t ldy = rows + 2;
    std::vector<float> dots(static_cast<size_t>(n * ldy), 0.f);
    ASSERT_TRUE(packed_matmul(parts, 2, x.data(), n, dots.data() + 1, ldy, 1).ok());
    for (QuantIsa isa : available_isas()) {
      set_quant_isa(isa);
      for (int threads : {1, 2}) {
        std::vector<float> y(static_cast<size_t>(n * ldy), 12345.f);
        const Status s = packed_gemm(parts, 2, x.data(), n, y.data() + 1, ldy, threads);
        ASSERT_TRUE(s.ok()) << s.message();
        for (int64_t tk = 0; tk < n; ++tk) {
          ASSERT_EQ(y[static_cast<size_t>(tk * ldy)], 12345.f) << name << " guard before token " << tk;
          if (tk + 1 < n) ASSERT_EQ(y[static_cast<size_t>(tk * ldy + rows + 1)], 12345.f) << name << " guard after token " << tk;
          for (int64_t r = 0; r < rows; ++r) {
            double ref = 0, abs_wx = 0, werr = 0;
            for (int64_t i = 0; i < cols; ++i) {
              const double wv = w[static_cast<size_t>(r * cols + i)], xv = x[static_cast<size_t>(tk * cols + i)];
              ref += wv * xv;
              abs_wx += std::fabs(wv * xv);
              werr += std::fabs(wv) * xerr[static_cast<size_t>(tk * cols + i)];
            }
            const float v = y[static_cast<size_t>(tk * ldy + 1 + r)];
            ASSERT_TRUE(std::isfinite(v)) << name;
            ASSERT_LE(std::fabs(v - ref), werr + 4e-6 * abs_wx + 1e-30)
                << name << " " << quant_isa_name(isa) << " threads " << threads << " n " << n << " token " << tk << " row "
                << r << ": got " << v << " want " << ref;
            const float dv = dots[static_cast<size_t>(tk * ldy + 1 + r)];
            ASSERT_NEAR(v, dv, 4e-6 * abs_wx + 1e-30) << name << " " << quant_isa_name(isa) << " vs packed_matmul, row " << r;
          }
        }
      }
    }
  }
}

TEST(PackedGemm, RealQ5_0) { check_gemm("blk.0.attn_q.weight", TensorType::kQ5_0, 77); }
TEST(PackedGemm, RealQ8_0) { check_gemm("blk.0.attn_v.weight", TensorType::kQ8_0, 99); }
TEST(PackedGemm, RealQ4_K) { check_gemm("blk.0.attn_output.weight", TensorType::kQ4_K, 67); }
TEST(PackedGemm, RealQ6_K) { check_gemm("blk.0.ffn_down.weight", TensorType::kQ6_K, 53); }

// The activation quantization is bit for bit the same on every path (the AVX-512 one rounds with
// cvtps2dq, the portable one with nearbyint), including values at the clamp and exact halves.
TEST(PackedGemm, ActivationQuantizationSameOnEveryPath) {
  QuantIsaGuard guard;
  const int64_t n = 5, cols = 640, groups = cols / 32;
  std::vector<float> x = activations(n, cols, 99);
  for (int64_t i = 0; i < 32; ++i) x[static_cast<size_t>(i)] = static_cast<float>(i) + 0.5f;  // halves after scaling
  x[40] = -1e30f;
  std::vector<int16_t> q0(static_cast<size_t>(n * cols)), q1(q0.size());
  std::vector<float> d0(static_cast<size_t>(n * groups)), d1(d0.size()), s0(d0.size()), s1(d0.size());
  set_quant_isa(QuantIsa::kScalar);
  quantize_activations_int16(x.data(), n, cols, 2, q0.data(), d0.data(), s0.data());
  for (QuantIsa isa : available_isas()) {
    set_quant_isa(isa);
    quantize_activations_int16(x.data(), n, cols, 2, q1.data(), d1.data(), s1.data());
    EXPECT_EQ(q0, q1) << quant_isa_name(isa);
    EXPECT_EQ(d0, d1) << quant_isa_name(isa);
    EXPECT_EQ(s0, s1) << quant_isa_name(isa);
  }
  EXPECT_EQ(q0[40], -32767);
}

TEST(PackedGemm, BadArguments) {
  const gguf::GgufFile& f = real_file();
  const gguf::TensorInfo* q = f.find_tensor("blk.0.attn_q.weight");
  const gguf::TensorInfo* d = f.find_tensor("blk.0.ffn_down.weight");
  ASSERT_NE(q, nullptr);
  ASSERT_NE(d, nullptr);
  const uint8_t *qd = nullptr, *dd = nullptr;
  ASSERT_TRUE(f.tensor_data(*q, &qd).ok());
  ASSERT_TRUE(f.tensor_data(*d, &dd).ok());
  PackedRows a, b;
  ASSERT_TRUE(pack_rows(q->type, qd, q->row_bytes(), 16, q->row_elems(), 1, &a).ok());
  ASSERT_TRUE(pack_rows(d->type, dd, d->row_bytes(), 16, d->row_elems(), 1, &b).ok());
  ASSERT_NE(a.cols, b.cols);
  std::vector<float> x(static_cast<size_t>(8 * a.cols), 1.f), y(static_cast<size_t>(8 * 32));
  const PackedRows* mixed[2] = {&a, &b};
  Status s = packed_gemm(mixed, 2, x.data(), 8, y.data(), 32, 1);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("cols"), std::string::npos) << s.message();
  const PackedRows* one[1] = {&a};
  s = packed_gemm(one, 1, x.data(), 8, y.data(), 15, 1);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("ldy 15"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace attnkit::model::internal
