// Internal: matrix products that read GGUF weight blocks directly (src/model/quant_matmul.cc).
//
//   y[t, r] = sum_i W[r, i] x[t, i]      W: [rows, cols] in a GGUF block format, row r at
//                                        w + r * row_bytes; x: [n, cols] f32; y: [n, ldy] f32
//
// Integer formats (Q4_0, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K) never go through f32 weights. Each row is
// unpacked, one 32-value group at a time, into int8 values s with a float scale per 16 values and,
// for the k-quants with a minimum, a float offset per 32 values (W = a * s - b). The activations
// are quantized once per call to int16 in blocks of 32 with their own f32 scale
// (d = max|x| / 32767, q = round(x / d)), so each group's dot product is an exact integer sum of
// 32 int8 x int16 products, scaled once.
//
// Why int16 and not int8 activations (llama.cpp's Q8_0 / Q8_K): Gemma's activations have large
// outliers, and with int8 blocks of 32 the model's perplexity on KJV text rose 1.1% over the
// f32-weight path (more than the 0.5% we allow); int16 blocks make the activation error about 258
// times smaller, and the product of a group still costs one vpdpwssd per token on AVX512-VNNI
// (32 int16 lanes), the same count as vpdpbusd on 256-bit int8 vectors.
//
// Error: apart from f32 rounding of the scaled partial sums, the result is exactly the dot product
// of the dequantized weights with the quantized activations x^, so
//   |y - W x| <= sum_i |W[r, i]| |x[t, i] - x^[t, i]|  (+ f32 rounding),  |x - x^| <= d / 2 per block.
// quant_activation_error() gives the per-element |x - x^| so tests can assert that bound.
//
// F32, F16 and BF16 weights are converted row by row to f32 and dotted in f32 (no activation
// quantization).
//
// The integer dot runs on AVX512-VNNI (vpdpwssd on 512-bit vectors), AVX2 (vpmaddwd) or portable
// C++, chosen at run time from the CPU. Highway 1.0.3 (Debian 12) has no widening int16 dot with
// accumulation into int32 lanes of a chosen grouping, so, like core/bf16_dot, the SIMD bodies use
// target attributes and are reached only when the CPU reports the instructions; the unpacking of
// Q5_0 / Q4_K / Q6_K blocks has AVX2 versions, the other formats use the portable one.
#pragma once

#include <cstdint>
#include <vector>

#include "attnkit/gguf.h"
#include "attnkit/status.h"

namespace attnkit::model::internal {

enum class QuantIsa { kScalar = 0, kAvx2 = 1, kAvx512Vnni = 2 };

// The best integer-dot path this CPU supports, or the one a test selected.
QuantIsa quant_isa();
// Selects a path for tests (clamped to what the CPU supports); returns the previous one.
QuantIsa set_quant_isa(QuantIsa isa);
const char* quant_isa_name(QuantIsa isa);

// Whether quant_matmul reads this type directly.
bool quant_matmul_supports(gguf::TensorType type);

// y[t * ldy + r] = dot(row r, x[t * cols ...]) for t < n, r < rows; threads over rows.
// cols must be a multiple of the type's block size; ldy >= rows.
Status quant_matmul(gguf::TensorType type, const uint8_t* w, uint64_t row_bytes, int64_t rows, int64_t cols,
                    const float* x, int64_t n, float* y, int64_t ldy, int threads);

// Rows of an integer format unpacked once (at load) into the layout the integer dots read: int8
// values s [rows, cols], an f32 scale per 16 values a [rows, cols / 16] and, for Q4_K / Q5_K, an
// f32 offset per 32 values b [rows, cols / 32], so W = a s - b exactly as the blocks dequantize.
// 1.25 bytes per weight (1.375 with offsets) against 0.69..1.06 in the blocks: decode skips the
// unpacking of every block on every token (on the shipped file it took about as long as the dots).
struct PackedRows {
  gguf::TensorType type = gguf::TensorType::kQ8_0;
  int64_t rows = 0, cols = 0;
  bool has_min = false;
  std::vector<int8_t> s;
  std::vector<float> a, b;
  uint64_t bytes() const;
};

// Unpacks rows x cols of an integer format (rows row_bytes apart) into *out.
Status pack_rows(gguf::TensorType type, const uint8_t* w, uint64_t row_bytes, int64_t rows, int64_t cols, int threads,
                 PackedRows* out);

// The same product as quant_matmul (same int16 activations, same integer sums, same error bound)
// for n_parts packed matrices of equal cols stacked by rows: part k's outputs follow part k - 1's
// in each row of y. The activations are quantized once for all parts.
Status packed_matmul(const PackedRows* const* parts, int n_parts, const float* x, int64_t n, float* y, int64_t ldy,
                     int threads);

// The argument checks of packed_matmul and packed_gemm (fn names the caller in the message);
// sets *rows to the stack's total rows.
Status check_packed_stack(const char* fn, const PackedRows* const* parts, int n_parts, const float* x, int64_t n,
                          const float* y, int64_t ldy, int64_t* rows);

// Prefill products (many tokens) on packed rows, src/model/packed_gemm.cc: the same product as
// packed_matmul (same int16 activations, same exact integer sums, so the same error bound), as a
// register-blocked GEMM. Each thread widens a panel of 32 rows to int16 pairs interleaved by row
// ([cols / 2][32][2], 64 bytes per pair of columns and 16 rows) and multiplies it with every
// token: vpdpwssd of 16 rows' pairs against one broadcast int16 pair of a token (AVX512-VNNI) or
// vpmaddwd + vpaddd on 8 rows (AVX2), int32 sums flushed to f32 once per scale span (16 values for
// Q6_K, 32 otherwise) with the weight scale times the activation scale. The portable path is
// packed_matmul itself.
Status packed_gemm(const PackedRows* const* parts, int n_parts, const float* x, int64_t n, float* y, int64_t ldy,
                   int threads);

// Which product the model uses for prefill on packed rows: the integer GEMM above (the default on
// AVX2 and AVX512-VNNI CPUs) or tiles dequantized to f32 and OpenBLAS sgemm (the default on other
// CPUs, and selectable for comparison: environment ATTNKIT_PREFILL_GEMM=sgemm, or the setter).
enum class PrefillGemm { kInteger = 0, kSgemm = 1 };
PrefillGemm prefill_gemm();
// Returns the previous choice. kInteger on a CPU without AVX2 still means sgemm tiles (see above).
PrefillGemm set_prefill_gemm(PrefillGemm g);

// f32 values of rows [r0, r0 + m) of a packed matrix into out [m, cols] (the same values as the
// blocks' dequantization).
void packed_dequantize(const PackedRows& p, int64_t r0, int64_t m, float* out);

// The activation quantization every integer product here applies: x [n, cols] to int16 q
// [n, cols] with a scale d [n, cols / 32] per 32 values (d = max|x| / 32767, q = round(x / d)) and
// sum [n, cols / 32] = d * (sum of the block's q), which the k-quant minimum multiplies.
void quantize_activations_int16(const float* x, int64_t n, int64_t cols, int threads, int16_t* q, float* d, float* sum);

// |x - x^| of the activation quantization quant_matmul applies to integer formats ([n, cols]).
void quant_activation_error(const float* x, int64_t n, int64_t cols, float* err);

}  // namespace attnkit::model::internal
