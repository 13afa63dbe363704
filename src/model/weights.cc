// Projection matrices in their stored format or as f32 copies (see weights.h).
#include "model/weights.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>

#include "attnkit/model.h"
#include "model/matvec.h"
#include "model/quant_matmul.h"

namespace attnkit::model {

Status parse_weight_format(const std::string& name, WeightFormat* out) {
  if (name == "quantized") {
    *out = WeightFormat::kQuantized;
  } else if (name == "f32") {
    *out = WeightFormat::kF32;
  } else {
    return Status::invalid_argument("weights '" + name + "' is not supported; expected quantized or f32");
  }
  return Status::ok_status();
}

const char* weight_format_name(WeightFormat format) { return format == WeightFormat::kF32 ? "f32" : "quantized"; }

}  // namespace attnkit::model

namespace attnkit::model::internal {

void parallel_sgemm_nt(const float* x, int64_t n, int64_t in, const float* w, int64_t out, float* y, int64_t ldc,
                       int threads) {
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(threads, out / 64));
#pragma omp parallel for num_threads(static_cast<int>(parts)) schedule(static)
  for (int64_t t = 0; t < parts; ++t) {
    const int64_t r0 = out * t / parts / 16 * 16;
    const int64_t r1 = t + 1 == parts ? out : out * (t + 1) / parts / 16 * 16;
    if (r1 <= r0) continue;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n), static_cast<int>(r1 - r0),
                static_cast<int>(in), 1.0f, x, static_cast<int>(in), w + r0 * in, static_cast<int>(in), 0.0f, y + r0,
                static_cast<int>(ldc));
  }
}

Status StackedWeights::add(const gguf::GgufFile& file, const std::string& name, int64_t rows, int64_t cols,
                           WeightMode mode) {
  const gguf::TensorInfo* t = file.find_tensor(name);
  if (t == nullptr) return Status::corrupt_data("gemma: tensor " + name + " is missing");
  if (t->row_elems() != cols || t->n_rows() != rows)
    return Status::corrupt_data("gemma: tensor " + name + " is " + std::to_string(t->n_rows()) + " x " +
                                std::to_string(t->row_elems()) + ", expected " + std::to_string(rows) + " x " +
                                std::to_string(cols));
  if (!parts_.empty() && cols != cols_)
    return Status::corrupt_data("gemma: tensor " + name + " has " + std::to_string(cols) + " columns, expected " +
                                std::to_string(cols_) + " like the tensors it is stacked with");
  Part p;
  p.type = t->type;
  p.rows = rows;
  p.row_bytes = t->row_bytes();
  if (mode == WeightMode::kQuantized && quant_matmul_supports(t->type)) {
    ATTNKIT_RETURN_IF_ERROR(file.tensor_data(*t, &p.data));
    mapped_bytes_ += p.row_bytes * static_cast<uint64_t>(rows);
  } else {
    p.f32.resize(static_cast<size_t>(rows * cols));
    ATTNKIT_RETURN_IF_ERROR(file.dequantize_rows(*t, 0, rows, p.f32.data()));
  }
  parts_.push_back(std::move(p));
  rows_ += rows;
  cols_ = cols;
  return Status::ok_status();
}

uint64_t StackedWeights::f32_bytes() const {
  uint64_t b = 0;
  for (const Part& p : parts_) b += p.f32.size() * sizeof(float);
  return b;
}

namespace {

// Y[n, rows] (row stride ldy) = X W^T for GGUF-block rows: each thread dequantizes a tile of rows
// (about 256 KiB of f32) into its own buffer and multiplies it with sgemm, so the dequantization
// is amortized over the n tokens and no more than a tile per thread is ever expanded.
Status tiled_dequant_sgemm(gguf::TensorType type, const uint8_t* w, uint64_t row_bytes, int64_t rows, int64_t cols,
                           const float* x, int64_t n, float* y, int64_t ldy, int threads) {
  const int64_t tile = std::clamp<int64_t>(65536 / cols / 16 * 16, 16, 256);
  const int64_t tiles = (rows + tile - 1) / tile;
  bool failed = false;
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> buf(static_cast<size_t>(tile * cols));
#pragma omp for schedule(static)
    for (int64_t k = 0; k < tiles; ++k) {
      const int64_t r0 = k * tile, m = std::min(tile, rows - r0);
      for (int64_t r = 0; r < m; ++r)
        if (!gguf::dequantize_row(type, w + static_cast<uint64_t>(r0 + r) * row_bytes, row_bytes, cols, buf.data() + r * cols).ok())
          failed = true;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n), static_cast<int>(m), static_cast<int>(cols),
                  1.0f, x, static_cast<int>(cols), buf.data(), static_cast<int>(cols), 0.0f, y + r0, static_cast<int>(ldy));
    }
  }
  if (failed) return Status::corrupt_data("StackedWeights: a " + gguf::tensor_type_name(type) + " row could not be dequantized");
  return Status::ok_status();
}

}  // namespace

Status StackedWeights::apply(const float* x, int64_t n, float* y, int64_t ldy, int threads) const {
  if (ldy < rows_) return Status::invalid_argument("StackedWeights::apply: ldy " + std::to_string(ldy) + " < rows " + std::to_string(rows_));
  int64_t r0 = 0;
  for (const Part& p : parts_) {
    if (p.data != nullptr && n >= kTiledSgemmMinTokens) {
      ATTNKIT_RETURN_IF_ERROR(tiled_dequant_sgemm(p.type, p.data, p.row_bytes, p.rows, cols_, x, n, y + r0, ldy, threads));
    } else if (p.data != nullptr) {
      ATTNKIT_RETURN_IF_ERROR(quant_matmul(p.type, p.data, p.row_bytes, p.rows, cols_, x, n, y + r0, ldy, threads));
    } else if (n == 1) {
      // Decode: a bandwidth-bound matvec, rows split over OpenMP threads.
      ATTNKIT_RETURN_IF_ERROR(quantized_matvec(gguf::TensorType::kF32, reinterpret_cast<const uint8_t*>(p.f32.data()),
                                               static_cast<uint64_t>(cols_) * sizeof(float), p.rows, cols_, x, y + r0,
                                               threads));
    } else {
      parallel_sgemm_nt(x, n, cols_, p.f32.data(), p.rows, y + r0, ldy, threads);
    }
    r0 += p.rows;
  }
  return Status::ok_status();
}

}  // namespace attnkit::model::internal
