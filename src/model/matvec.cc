// Matrix-vector products of f32 rows (the f32-weight reference path's decode) and, for any other
// GGUF type, the GGUF layer's block-by-block dot. The quantized path's products (the projections
// and the Q8_0 output projection) go through quant_matmul's integer kernels instead.
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
  static const bool v = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return v;
}

}  // namespace

Status quantized_matvec(gguf::TensorType type, const uint8_t* data, uint64_t row_bytes, int64_t rows, int64_t cols,
                        const float* x, float* y, int threads) {
  ATTNKIT_RETURN_IF_ERROR(resolve_threads(threads, "quantized_matvec: threads", &threads));
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
