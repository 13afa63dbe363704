// Fused dequantize-and-dot matvec for the tied embedding (logits of one token).
//
// The Gemma 3 270M output matrix is 262144 x 640. As f32 it is 671 MB, read once per decoded token;
// kept as Q8_0 it is 178 MB. Each Q8_0 block is 32 int8 values q and one f16 scale d (value = d q),
// so dot(row, x) = sum_blocks d_b * sum_i q_i x_i: the inner sum converts int8 -> f32 in registers
// and accumulates with FMA, the block scale is applied once per block. Summation is f32 throughout
// (a block has 32 terms, a row 20 blocks; the relative error stays ~1e-6 of sum |q x|).
#include "model/matvec.h"

#include <cblas.h>
#include <immintrin.h>
#include <omp.h>

#include <cstring>
#include <string>

#include "attnkit/tensor.h"
#include "attnkit/threads.h"

namespace attnkit::model::internal {
namespace {

constexpr int64_t kQ8Block = 32;
constexpr int64_t kQ8BlockBytes = 34;

float q8_0_dot_scalar(const uint8_t* row, int64_t cols, const float* x) {
  float acc = 0.f;
  for (int64_t b = 0; b < cols / kQ8Block; ++b) {
    const uint8_t* blk = row + b * kQ8BlockBytes;
    uint16_t dh;
    std::memcpy(&dh, blk, 2);
    const int8_t* q = reinterpret_cast<const int8_t*>(blk + 2);
    const float* xb = x + b * kQ8Block;
    float s = 0.f;
    for (int i = 0; i < kQ8Block; ++i) s += static_cast<float>(q[i]) * xb[i];
    acc += f16_to_f32(dh) * s;
  }
  return acc;
}

__attribute__((target("avx2,fma,f16c"))) float q8_0_dot_avx2(const uint8_t* row, int64_t cols, const float* x) {
  __m256 acc = _mm256_setzero_ps();
  const int64_t nb = cols / kQ8Block;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = row + b * kQ8BlockBytes;
    uint16_t dh;
    std::memcpy(&dh, blk, 2);
    const float d = _cvtsh_ss(dh);
    const uint8_t* q = blk + 2;
    const float* xb = x + b * kQ8Block;
    __m256 s = _mm256_setzero_ps();
    for (int j = 0; j < 4; ++j) {
      long long chunk;
      std::memcpy(&chunk, q + 8 * j, 8);
      const __m256 qf = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128(chunk)));
      s = _mm256_fmadd_ps(qf, _mm256_loadu_ps(xb + 8 * j), s);
    }
    acc = _mm256_fmadd_ps(s, _mm256_set1_ps(d), acc);
  }
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
  return _mm_cvtss_f32(h);
}

__attribute__((target("avx2,fma"))) float f32_dot_avx2(const float* a, int64_t n, const float* x) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(x + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(x + i + 8), acc1);
  }
  acc0 = _mm256_add_ps(acc0, acc1);
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc0), _mm256_extractf128_ps(acc0, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
  float s = _mm_cvtss_f32(h);
  for (; i < n; ++i) s += a[i] * x[i];
  return s;
}

bool has_avx2() {
  static const bool v = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                        __builtin_cpu_supports("f16c");
  return v;
}

}  // namespace

Status quantized_matvec(gguf::TensorType type, const uint8_t* data, uint64_t row_bytes, int64_t rows, int64_t cols,
                        const float* x, float* y, int threads) {
  ATTNKIT_RETURN_IF_ERROR(resolve_threads(threads, "quantized_matvec: threads", &threads));
  if (type == gguf::TensorType::kQ8_0) {
    if (cols % kQ8Block != 0) return Status::invalid_argument("quantized_matvec: cols " + std::to_string(cols) + " is not a multiple of 32");
    const bool simd = has_avx2();
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const uint8_t* row = data + static_cast<uint64_t>(r) * row_bytes;
      y[r] = simd ? q8_0_dot_avx2(row, cols, x) : q8_0_dot_scalar(row, cols, x);
    }
    return Status::ok_status();
  }
  if (type == gguf::TensorType::kF32) {
    const bool simd = has_avx2();
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = reinterpret_cast<const float*>(data + static_cast<uint64_t>(r) * row_bytes);
      if (simd) {
        y[r] = f32_dot_avx2(row, cols, x);
      } else {
        float s = 0.f;
        for (int64_t i = 0; i < cols; ++i) s += row[i] * x[i];
        y[r] = s;
      }
    }
    return Status::ok_status();
  }
  // Any other type: the GGUF layer's block-by-block dot.
  bool failed = false;
  std::string message;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    Status s = gguf::dot_row(type, data + static_cast<uint64_t>(r) * row_bytes, row_bytes, cols, x, &y[r]);
    if (!s.ok()) {
#pragma omp critical
      {
        failed = true;
        message = s.message();
      }
    }
  }
  if (failed) return Status::invalid_argument("quantized_matvec: " + message);
  return Status::ok_status();
}

void f32_matvec(const float* w, int64_t rows, int64_t cols, const float* x, float* y, int threads) {
  (void)threads;  // OpenBLAS uses its own thread count (set by the model)
  cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(rows), static_cast<int>(cols), 1.0f, w,
              static_cast<int>(cols), x, 1, 0.0f, y, 1);
}

}  // namespace attnkit::model::internal
