// Internal: the model's projection matrices as they are stored (src/model/weights.cc).
//
// A StackedWeights is one or more GGUF tensors of the same width stacked by rows (Q, K and V make
// one QKV projection; gate and up one FFN input projection), applied as y = x W^T.
//   kQuantized (default): each integer-format tensor is unpacked once at load into PackedRows
//     (int8 values and f32 scales, 1.25..1.375 bytes per weight; see quant_matmul.h) and its
//     blocks' pages of the mapping are released. A few tokens (decode) are multiplied by
//     packed_matmul (int16 activations, integer dots, one activation quantization for the whole
//     stack); many tokens (prefill) by packed_gemm, the integer GEMM with the same activations and
//     sums, on AVX2 / AVX512-VNNI CPUs, else (or with ATTNKIT_PREFILL_GEMM=sgemm) by tiles
//     dequantized from the packed rows and sgemm. F32 / F16
//     / BF16 tensors stay in the mapping (quant_matmul); a type quant_matmul does not read (Q2_K,
//     Q3_K, ...) is dequantized to f32 at load instead.
//   kF32: every tensor is dequantized once to an f32 copy and applied with OpenBLAS sgemm (several
//     tokens) or an f32 matvec (one token): the accuracy reference for the quantized path.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "attnkit/gguf.h"
#include "attnkit/status.h"
#include "model/quant_matmul.h"

namespace attnkit::model::internal {

enum class WeightMode { kQuantized, kF32 };

// From this many tokens on, packed rows are multiplied as a GEMM (packed_gemm, or dequantized
// tiles + sgemm where selected); below it by the row-at-a-time integer dots, which are bound by
// the bytes of weights read and reach no GEMM's compute rate (each row is re-read per 4 tokens).
constexpr int64_t kTiledSgemmMinTokens = 8;

class StackedWeights {
 public:
  // Appends tensor `name`, which must be [rows, cols] (cols equal to earlier parts').
  Status add(const gguf::GgufFile& file, const std::string& name, int64_t rows, int64_t cols, WeightMode mode);

  // y[t * ldy + r] = sum_i W[r, i] x[t * cols + i] for t < n, r < rows(); ldy >= rows().
  Status apply(const float* x, int64_t n, float* y, int64_t ldy, int threads) const;

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  // Bytes this matrix occupies: the mapped GGUF data it reads, its packed rows, its f32 copies.
  uint64_t mapped_bytes() const { return mapped_bytes_; }
  uint64_t packed_bytes() const;
  uint64_t f32_bytes() const;

 private:
  struct Part {
    gguf::TensorType type = gguf::TensorType::kF32;
    const uint8_t* data = nullptr;  // float rows read in the mapping, else null
    uint64_t row_bytes = 0;
    int64_t rows = 0;
    PackedRows packed;       // integer formats in quantized mode (packed.rows == rows), else empty
    std::vector<float> f32;  // dequantized rows (f32 mode, or a type quant_matmul does not read)
  };
  std::vector<Part> parts_;
  int64_t rows_ = 0, cols_ = 0;
  uint64_t mapped_bytes_ = 0;
};

// Y[n, out] (row stride ldc) = X[n, in] W^T with W row-major [out, in] in f32, split over `threads`
// OpenMP threads by rows of W, OpenBLAS single-threaded inside each slice (mixing OpenBLAS's own
// pthreads with OpenMP's spinning workers on 2 cores made decode 3x slower).
void parallel_sgemm_nt(const float* x, int64_t n, int64_t in, const float* w, int64_t out, float* y, int64_t ldc,
                       int threads);

}  // namespace attnkit::model::internal
