// Projection matrices in their stored format or as f32 copies (see weights.h).
#include "model/weights.h"

#include <cblas.h>
#include <omp.h>
#include <sys/mman.h>
#include <unistd.h>

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

namespace {

bool is_float_type(gguf::TensorType t) {
  return t == gguf::TensorType::kF32 || t == gguf::TensorType::kF16 || t == gguf::TensorType::kBF16;
}

// Drops this process's resident copy of the whole pages inside [p, p + bytes) of the read-only file
// mapping once the blocks are packed; the mapping stays valid (a later read faults the page in
// again from the file), so nothing else that reads the tensor breaks.
void release_pages(const uint8_t* p, uint64_t bytes) {
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t lo = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
  const uintptr_t hi = (reinterpret_cast<uintptr_t>(p) + bytes) / page * page;
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

}  // namespace

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
    const uint8_t* data = nullptr;
    ATTNKIT_RETURN_IF_ERROR(file.tensor_data(*t, &data));
    if (is_float_type(t->type)) {
      p.data = data;
      mapped_bytes_ += p.row_bytes * static_cast<uint64_t>(rows);
    } else {
      ATTNKIT_RETURN_IF_ERROR(pack_rows(t->type, data, p.row_bytes, rows, cols, 0, &p.packed));
      release_pages(data, p.row_bytes * static_cast<uint64_t>(rows));
    }
  } else {
    p.f32.resize(static_cast<size_t>(rows * cols));
    ATTNKIT_RETURN_IF_ERROR(file.dequantize_rows(*t, 0, rows, p.f32.data()));
  }
  parts_.push_back(std::move(p));
  rows_ += rows;
  cols_ = cols;
  return Status::ok_status();
}

uint64_t StackedWeights::packed_bytes() const {
  uint64_t b = 0;
  for (const Part& p : parts_) b += p.packed.bytes();
  return b;
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

// The same tiling for packed rows: a tile is dequantized as a s - b (see quant_matmul.h).
void packed_tiled_sgemm(const PackedRows& p, const float* x, int64_t n, float* y, int64_t ldy, int threads) {
  const int64_t cols = p.cols;
  const int64_t tile = std::clamp<int64_t>(65536 / cols / 16 * 16, 16, 256);
  const int64_t tiles = (p.rows + tile - 1) / tile;
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> buf(static_cast<size_t>(tile * cols));
#pragma omp for schedule(static)
    for (int64_t k = 0; k < tiles; ++k) {
      const int64_t r0 = k * tile, m = std::min(tile, p.rows - r0);
      packed_dequantize(p, r0, m, buf.data());
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n), static_cast<int>(m), static_cast<int>(cols),
                  1.0f, x, static_cast<int>(cols), buf.data(), static_cast<int>(cols), 0.0f, y + r0, static_cast<int>(ldy));
    }
  }
}

}  // namespace

Status StackedWeights::apply(const float* x, int64_t n, float* y, int64_t ldy, int threads) const {
  if (ldy < rows_) return Status::invalid_argument("StackedWeights::apply: ldy " + std::to_string(ldy) + " < rows " + std::to_string(rows_));
  const bool all_packed =
      std::all_of(parts_.begin(), parts_.end(), [](const Part& p) { return p.packed.rows == p.rows && p.rows > 0; });
  const bool integer_gemm = prefill_gemm() == PrefillGemm::kInteger && quant_isa() != QuantIsa::kScalar;
  if (all_packed && parts_.size() <= 8 && (n < kTiledSgemmMinTokens || integer_gemm)) {
    // One activation quantization and one parallel loop over the whole stack: the integer dots
    // for a few tokens (decode), the integer GEMM for many (prefill).
    const PackedRows* packed[8];
    for (size_t k = 0; k < parts_.size(); ++k) packed[k] = &parts_[k].packed;
    return n < kTiledSgemmMinTokens ? packed_matmul(packed, static_cast<int>(parts_.size()), x, n, y, ldy, threads)
                                    : packed_gemm(packed, static_cast<int>(parts_.size()), x, n, y, ldy, threads);
  }
  int64_t r0 = 0;
  for (const Part& p : parts_) {
    if (p.packed.rows > 0 && n >= kTiledSgemmMinTokens) {
      packed_tiled_sgemm(p.packed, x, n, y + r0, ldy, threads);
    } else if (p.packed.rows > 0) {
      const PackedRows* one = &p.packed;
      ATTNKIT_RETURN_IF_ERROR(packed_matmul(&one, 1, x, n, y + r0, ldy, threads));
    } else if (p.data != nullptr && n >= kTiledSgemmMinTokens) {
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
