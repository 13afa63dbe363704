// Internal: matrix-vector products for the model (src/model/matvec.cc).
#pragma once

#include <cstdint>

#include "attnkit/gguf.h"
#include "attnkit/status.h"

namespace attnkit::model::internal {

// y[r] = dot(row r of a quantized matrix, x) for r in [0, rows): rows of `cols` values of type
// `type`, `row_bytes` apart, starting at `data`. The row is decoded block by block in registers
// and never written out (F32 has a SIMD path; other types go through gguf::dot_row).
// Runs on `threads` OpenMP threads over rows.
Status quantized_matvec(gguf::TensorType type, const uint8_t* data, uint64_t row_bytes, int64_t rows, int64_t cols,
                        const float* x, float* y, int threads);

// y = W x for a row-major f32 W [rows, cols], multithreaded over rows.
void f32_matvec(const float* w, int64_t rows, int64_t cols, const float* x, float* y, int threads);

}  // namespace attnkit::model::internal
