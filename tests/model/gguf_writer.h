// A minimal GGUF writer for tests: builds well-formed files (and, through the overrides,
// deliberately malformed ones) in memory, independently of the reader under test.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "attnkit/gguf.h"

namespace attnkit::gguf::testing {

using Bytes = std::vector<uint8_t>;

// Little-endian encoders for values (without the u32 type tag of a kv).
template <typename T>
inline Bytes enc(T v) {
  Bytes b(sizeof(T));
  std::memcpy(b.data(), &v, sizeof(T));
  return b;
}
inline Bytes enc_str(const std::string& s) {
  Bytes b = enc<uint64_t>(s.size());
  b.insert(b.end(), s.begin(), s.end());
  return b;
}
inline void append(Bytes* dst, const Bytes& src) { dst->insert(dst->end(), src.begin(), src.end()); }
// Array value: u32 element type, u64 count, then the already-encoded items.
inline Bytes enc_array(ValueType et, uint64_t count, const Bytes& items) {
  Bytes b = enc<uint32_t>(static_cast<uint32_t>(et));
  append(&b, enc<uint64_t>(count));
  append(&b, items);
  return b;
}
template <typename T>
inline Bytes enc_array_of(ValueType et, const std::vector<T>& v) {
  Bytes items;
  for (const T& x : v) append(&items, enc<T>(x));
  return enc_array(et, v.size(), items);
}
inline Bytes enc_string_array(const std::vector<std::string>& v) {
  Bytes items;
  for (const auto& s : v) append(&items, enc_str(s));
  return enc_array(ValueType::kString, v.size(), items);
}

struct WriterTensor {
  std::string name;
  std::vector<uint64_t> dims;
  uint32_t type;
  Bytes data;
  std::optional<uint64_t> offset;  // default: packed, aligned; offsets >= 2^40 are written into
                                   // the tensor info but no data is placed there
};

class GgufWriter {
 public:
  uint32_t magic = 0x46554747u;
  uint32_t version = 3;
  uint64_t alignment = 32;               // used for layout; write general.alignment yourself
  std::optional<uint64_t> kv_count;      // overrides
  std::optional<uint64_t> tensor_count;

  void kv(const std::string& key, ValueType t, const Bytes& value) { kvs_.push_back({key, t, value}); }
  void tensor(WriterTensor t) { tensors_.push_back(std::move(t)); }

  Bytes build() const {
    Bytes b = enc<uint32_t>(magic);
    append(&b, enc<uint32_t>(version));
    append(&b, enc<uint64_t>(tensor_count.value_or(tensors_.size())));
    append(&b, enc<uint64_t>(kv_count.value_or(kvs_.size())));
    for (const auto& kv : kvs_) {
      append(&b, enc_str(kv.key));
      append(&b, enc<uint32_t>(static_cast<uint32_t>(kv.type)));
      append(&b, kv.value);
    }
    std::vector<uint64_t> offsets;
    uint64_t off = 0;
    for (const auto& t : tensors_) {
      const uint64_t o = t.offset.value_or(off);
      offsets.push_back(o);
      if (o < kFarOffset) off = round_up(o + t.data.size());
      append(&b, enc_str(t.name));
      append(&b, enc<uint32_t>(static_cast<uint32_t>(t.dims.size())));
      for (uint64_t d : t.dims) append(&b, enc<uint64_t>(d));
      append(&b, enc<uint32_t>(t.type));
      append(&b, enc<uint64_t>(o));
    }
    b.resize(round_up(b.size()), 0);
    const size_t data_start = b.size();
    for (size_t i = 0; i < tensors_.size(); ++i) {
      if (offsets[i] >= kFarOffset) continue;
      const size_t at = data_start + offsets[i];
      if (b.size() < at + tensors_[i].data.size()) b.resize(at + tensors_[i].data.size(), 0);
      // An empty tensor's data() may be null, and memcpy's pointers must never be (even for 0 bytes).
      if (!tensors_[i].data.empty()) std::memcpy(b.data() + at, tensors_[i].data.data(), tensors_[i].data.size());
    }
    b.resize(data_start + round_up(b.size() - data_start), 0);
    return b;
  }

 private:
  static constexpr uint64_t kFarOffset = uint64_t{1} << 40;
  struct Kv {
    std::string key;
    ValueType type;
    Bytes value;
  };
  uint64_t round_up(uint64_t x) const { return (x + alignment - 1) / alignment * alignment; }
  std::vector<Kv> kvs_;
  std::vector<WriterTensor> tensors_;
};

// Re-encodes a metadata value, keeping at most `keep` items of any array.
inline Bytes encode_value(const Value& v, uint64_t keep) {
  switch (v.type) {
    case ValueType::kString: return enc_str(std::string(v.str));
    case ValueType::kArray: {
      const uint64_t n = v.array_size < keep ? v.array_size : keep;
      Bytes items;
      if (v.array_type == ValueType::kString) {
        for (uint64_t i = 0; i < n; ++i) append(&items, enc_str(std::string(v.array_strings[i])));
      } else if (v.array_type == ValueType::kArray) {
        for (uint64_t i = 0; i < n; ++i) append(&items, encode_value(v.array_items[i], keep));
      } else {
        items.assign(v.array_raw, v.array_raw + n * value_scalar_size(v.array_type));
      }
      return enc_array(v.array_type, n, items);
    }
    default: {
      Bytes b(value_scalar_size(v.type));
      uint64_t u = 0;
      switch (v.type) {
        case ValueType::kFloat32: { float x = static_cast<float>(v.f64); std::memcpy(&u, &x, 4); break; }
        case ValueType::kFloat64: std::memcpy(&u, &v.f64, 8); break;
        case ValueType::kBool: u = v.b; break;
        case ValueType::kInt8: case ValueType::kInt16: case ValueType::kInt32: case ValueType::kInt64:
          u = static_cast<uint64_t>(v.i64); break;
        default: u = v.u64;
      }
      std::memcpy(b.data(), &u, b.size());
      return b;
    }
  }
}

// A small copy of a real file: every metadata key (arrays cut to `keep_items`) and, for each tensor
// type present, the first tensor of that type cut to `rows` rows. Used as the fuzz seed.
inline Status reduced_copy(const GgufFile& f, uint64_t keep_items, int64_t rows, Bytes* out) {
  GgufWriter w;
  w.version = f.version();
  w.alignment = f.alignment();
  for (const KeyValue& kv : f.metadata()) w.kv(std::string(kv.key), kv.value.type, encode_value(kv.value, keep_items));
  std::vector<TensorType> seen;
  for (const TensorInfo& t : f.tensors()) {
    bool dup = false;
    for (TensorType s : seen) dup = dup || s == t.type;
    if (dup) continue;
    seen.push_back(t.type);
    const int64_t r = t.n_rows() < rows ? t.n_rows() : rows;
    const uint8_t* data;
    ATTNKIT_RETURN_IF_ERROR(f.tensor_data(t, &data));
    std::vector<uint64_t> dims = {static_cast<uint64_t>(t.dims[0])};
    if (t.n_dims > 1) dims.push_back(static_cast<uint64_t>(r));
    w.tensor({std::string(t.name), dims, static_cast<uint32_t>(t.type), Bytes(data, data + r * t.row_bytes()), {}});
  }
  *out = w.build();
  return Status::ok_status();
}

// A buffer whose last byte is immediately followed by an inaccessible page, so any read past the
// end faults at once (the test then crashes instead of silently passing).
class GuardedBuffer {
 public:
  GuardedBuffer(const uint8_t* data, size_t size);
  ~GuardedBuffer();
  GuardedBuffer(const GuardedBuffer&) = delete;
  GuardedBuffer& operator=(const GuardedBuffer&) = delete;
  uint8_t* data() { return data_; }
  size_t size() const { return size_; }

 private:
  void* base_ = nullptr;
  size_t total_ = 0;
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace attnkit::gguf::testing
