// GGUF parsing and validation (format summary in include/attnkit/gguf.h).
//
// The parser walks the header with a bounds-checked cursor. Every length read from the file is
// compared with the bytes left before anything is allocated or read, and every size is computed
// with overflow checks, so a hostile file can neither make us read outside the buffer nor allocate
// more than a small multiple of its own size.
#include "attnkit/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <string>
#include <unordered_map>

namespace attnkit::gguf {
namespace {

constexpr uint32_t kMagic = 0x46554747u;  // "GGUF" read as a little-endian u32
constexpr uint64_t kDefaultAlignment = 32;

// Smallest encodings, used to bound counts by the bytes left before allocating:
// a kv is a key (u64 length, may be empty) + u32 type + at least a 1-byte value;
// a tensor info is a name (u64) + u32 n_dims + one u64 dim + u32 type + u64 offset.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;
constexpr uint64_t kMaxNestedItems = uint64_t{1} << 20;

std::string quoted(std::string_view s) {
  // Keys and names come from the file: show at most 80 bytes and escape non-printables.
  std::string r = "'";
  size_t n = std::min<size_t>(s.size(), 80);
  for (size_t i = 0; i < n; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\'') {
      r += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      r += buf;
    }
  }
  if (s.size() > n) r += "...";
  return r + "'";
}

bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_mul_overflow(a, b, out); }
bool add_overflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_add_overflow(a, b, out); }

}  // namespace

std::string value_type_name(ValueType t) {
  switch (t) {
    case ValueType::kUint8: return "uint8";
    case ValueType::kInt8: return "int8";
    case ValueType::kUint16: return "uint16";
    case ValueType::kInt16: return "int16";
    case ValueType::kUint32: return "uint32";
    case ValueType::kInt32: return "int32";
    case ValueType::kFloat32: return "float32";
    case ValueType::kBool: return "bool";
    case ValueType::kString: return "string";
    case ValueType::kArray: return "array";
    case ValueType::kUint64: return "uint64";
    case ValueType::kInt64: return "int64";
    case ValueType::kFloat64: return "float64";
  }
  return "invalid(" + std::to_string(static_cast<uint32_t>(t)) + ")";
}

size_t value_scalar_size(ValueType t) {
  switch (t) {
    case ValueType::kUint8:
    case ValueType::kInt8:
    case ValueType::kBool: return 1;
    case ValueType::kUint16:
    case ValueType::kInt16: return 2;
    case ValueType::kUint32:
    case ValueType::kInt32:
    case ValueType::kFloat32: return 4;
    case ValueType::kUint64:
    case ValueType::kInt64:
    case ValueType::kFloat64: return 8;
    default: return 0;
  }
}

uint64_t TensorInfo::row_bytes() const {
  const TypeTraits* tr = type_traits(type);
  if (tr == nullptr) return 0;
  return static_cast<uint64_t>(dims[0] / tr->block_elems) * static_cast<uint64_t>(tr->block_bytes);
}

// ---------------------------------------------------------------------------------------------
// Bounds-checked little-endian cursor.
class Parser {
 public:
  Parser(GgufFile* f, const OpenOptions& o) : f_(f), opt_(o), p_(f->data_), size_(f->size_) {}

  Status run();

 private:
  uint64_t left() const { return size_ - pos_; }

  Status need(uint64_t n, const char* what) {
    if (n > left()) {
      return Status::corrupt_data("gguf: truncated at byte " + std::to_string(pos_) + " reading " + what +
                                  context_ + ": need " + std::to_string(n) + " bytes, " +
                                  std::to_string(left()) + " left (file size " + std::to_string(size_) + ")");
    }
    return Status::ok_status();
  }
  template <typename T>
  Status read(T* out, const char* what) {
    ATTNKIT_RETURN_IF_ERROR(need(sizeof(T), what));
    std::memcpy(out, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return Status::ok_status();
  }
  Status read_string(std::string_view* out, const char* what) {
    uint64_t start = pos_;
    uint64_t len = 0;
    ATTNKIT_RETURN_IF_ERROR(read(&len, what));
    if (len > left()) {
      return Status::corrupt_data("gguf: " + std::string(what) + context_ + " at byte " + std::to_string(start) +
                                  " has length " + std::to_string(len) + " but only " + std::to_string(left()) +
                                  " bytes are left in the file");
    }
    *out = std::string_view(reinterpret_cast<const char*>(p_ + pos_), len);
    pos_ += len;
    return Status::ok_status();
  }
  Status fail(uint64_t at, const std::string& msg) {
    return Status::corrupt_data("gguf: " + msg + context_ + " (at byte " + std::to_string(at) + ")");
  }

  Status read_value(ValueType type, int depth, Value* v);
  Status read_array(int depth, Value* v);
  Status read_kv(uint64_t index);
  Status read_tensor_info(uint64_t index);
  Status finish_tensors();

  GgufFile* f_;
  const OpenOptions& opt_;
  const uint8_t* p_;
  uint64_t size_;
  uint64_t pos_ = 0;
  std::string context_;  // " in key 'x'" etc., appended to messages
  uint64_t nested_items_ = 0;
  // Per tensor: where its info starts and where its data-offset field sits in the file, so that
  // errors found after all infos are read point at the bytes that caused them.
  std::vector<uint64_t> info_at_, offset_at_;
};

Status Parser::read_value(ValueType type, int depth, Value* v) {
  v->type = type;
  switch (type) {
    case ValueType::kUint8: { uint8_t x{}; ATTNKIT_RETURN_IF_ERROR(read(&x, "uint8 value")); v->u64 = x; return {}; }
    case ValueType::kInt8: { int8_t x{}; ATTNKIT_RETURN_IF_ERROR(read(&x, "int8 value")); v->i64 = x; return {}; }
    case ValueType::kUint16: { uint16_t x{}; ATTNKIT_RETURN_IF_ERROR(read(&x, "uint16 value")); v->u64 = x; return {}; }
    case ValueType::kInt16: { int16_t x{}; ATTNKIT_RETURN_IF_ERROR(read(&x, "int16 value")); v->i64 = x; return {}; }
    case ValueType::kUint32: { uint32_t x{}; ATTNKIT_RETURN_IF_ERROR(read(&x, "uint32 value")); v->u64 = x; return {}; }
    case ValueType::kInt32: { int32_t x{}; ATTNKIT_RETURN_IF_ERROR(read(&x, "int32 value")); v->i64 = x; return {}; }
    case ValueType::kUint64: { uint64_t x{}; ATTNKIT_RETURN_IF_ERROR(read(&x, "uint64 value")); v->u64 = x; return {}; }
    case ValueType::kInt64: { int64_t x{}; ATTNKIT_RETURN_IF_ERROR(read(&x, "int64 value")); v->i64 = x; return {}; }
    case ValueType::kFloat32: { float x{}; ATTNKIT_RETURN_IF_ERROR(read(&x, "float32 value")); v->f64 = x; return {}; }
    case ValueType::kFloat64: { double x{}; ATTNKIT_RETURN_IF_ERROR(read(&x, "float64 value")); v->f64 = x; return {}; }
    case ValueType::kBool: {
      uint64_t at = pos_;
      uint8_t x = 0;
      ATTNKIT_RETURN_IF_ERROR(read(&x, "bool value"));
      if (x > 1) return fail(at, "bool value is " + std::to_string(x) + ", expected 0 or 1");
      v->b = x != 0;
      return {};
    }
    case ValueType::kString: return read_string(&v->str, "string value");
    case ValueType::kArray: return read_array(depth + 1, v);
  }
  return fail(pos_, "unknown value type " + std::to_string(static_cast<uint32_t>(type)));
}

Status Parser::read_array(int depth, Value* v) {
  const uint64_t start = pos_;
  if (depth > opt_.max_array_depth) {
    return fail(start, "array nesting depth " + std::to_string(depth) + " exceeds the limit " +
                           std::to_string(opt_.max_array_depth));
  }
  uint32_t raw_type = 0;
  ATTNKIT_RETURN_IF_ERROR(read(&raw_type, "array element type"));
  if (raw_type > static_cast<uint32_t>(ValueType::kFloat64)) {
    return fail(start, "array element type " + std::to_string(raw_type) + " is not a GGUF value type (0..12)");
  }
  const ValueType et = static_cast<ValueType>(raw_type);
  uint64_t count = 0;
  ATTNKIT_RETURN_IF_ERROR(read(&count, "array length"));
  v->type = ValueType::kArray;
  v->array_type = et;
  v->array_size = count;
  // Smallest encoding of one element bounds the count before we allocate anything.
  const uint64_t elem = et == ValueType::kString ? 8 : et == ValueType::kArray ? 12 : value_scalar_size(et);
  uint64_t total = 0;
  if (mul_overflows(count, elem, &total) || total > left()) {
    return fail(start, "array of " + std::to_string(count) + " " + value_type_name(et) + " needs at least " +
                           (mul_overflows(count, elem, &total) ? std::string("2^64") : std::to_string(total)) +
                           " bytes but only " + std::to_string(left()) + " are left");
  }
  if (et == ValueType::kString) {
    v->array_strings.resize(count);
    for (uint64_t i = 0; i < count; ++i) ATTNKIT_RETURN_IF_ERROR(read_string(&v->array_strings[i], "array string"));
  } else if (et == ValueType::kArray) {
    // A nested-array Value is ~20x larger than its 12-byte minimum encoding: cap the total so a
    // hostile file cannot make us allocate gigabytes.
    nested_items_ += count;
    if (nested_items_ > kMaxNestedItems) {
      return fail(start, "more than " + std::to_string(kMaxNestedItems) + " nested array items in total");
    }
    v->array_items.resize(count);
    for (uint64_t i = 0; i < count; ++i) ATTNKIT_RETURN_IF_ERROR(read_array(depth + 1, &v->array_items[i]));
  } else {
    v->array_raw = p_ + pos_;
    if (et == ValueType::kBool) {
      for (uint64_t i = 0; i < count; ++i) {
        if (p_[pos_ + i] > 1) return fail(pos_ + i, "bool array item " + std::to_string(i) + " is " + std::to_string(p_[pos_ + i]));
      }
    }
    pos_ += total;
  }
  return Status::ok_status();
}

Status Parser::read_kv(uint64_t index) {
  KeyValue kv;
  kv.file_offset = pos_;
  context_ = " in metadata entry " + std::to_string(index);
  ATTNKIT_RETURN_IF_ERROR(read_string(&kv.key, "metadata key"));
  if (kv.key.empty()) return fail(kv.file_offset, "metadata key is empty");
  context_ = " in metadata key " + quoted(kv.key);
  const uint64_t type_at = pos_;
  uint32_t raw_type = 0;
  ATTNKIT_RETURN_IF_ERROR(read(&raw_type, "value type"));
  if (raw_type > static_cast<uint32_t>(ValueType::kFloat64)) {
    return fail(type_at, "value type " + std::to_string(raw_type) + " is not a GGUF value type (0..12)");
  }
  ATTNKIT_RETURN_IF_ERROR(read_value(static_cast<ValueType>(raw_type), 0, &kv.value));
  f_->kv_.push_back(std::move(kv));
  context_.clear();
  return Status::ok_status();
}

Status Parser::read_tensor_info(uint64_t index) {
  TensorInfo t;
  const uint64_t start = pos_;
  context_ = " in tensor info " + std::to_string(index);
  ATTNKIT_RETURN_IF_ERROR(read_string(&t.name, "tensor name"));
  if (t.name.empty()) return fail(start, "tensor name is empty");
  context_ = " in tensor " + std::to_string(index) + " " + quoted(t.name);
  uint32_t n_dims = 0;
  const uint64_t dims_at = pos_;
  ATTNKIT_RETURN_IF_ERROR(read(&n_dims, "n_dims"));
  if (n_dims < 1 || n_dims > static_cast<uint32_t>(kMaxDims)) {
    return fail(dims_at, "n_dims " + std::to_string(n_dims) + " is not supported; expected 1.." + std::to_string(kMaxDims));
  }
  t.n_dims = static_cast<int>(n_dims);
  uint64_t n_elements = 1;
  for (uint32_t d = 0; d < n_dims; ++d) {
    const uint64_t at = pos_;
    uint64_t dim = 0;
    ATTNKIT_RETURN_IF_ERROR(read(&dim, "tensor dim"));
    if (dim == 0 || dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return fail(at, "dim " + std::to_string(d) + " is " + std::to_string(dim) + "; expected 1..2^63-1");
    }
    if (mul_overflows(n_elements, dim, &n_elements) ||
        n_elements > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return fail(at, "element count overflows at dim " + std::to_string(d) + " (" + std::to_string(dim) + ")");
    }
    t.dims[d] = static_cast<int64_t>(dim);
  }
  t.n_elements = static_cast<int64_t>(n_elements);
  const uint64_t type_at = pos_;
  uint32_t raw_type = 0;
  ATTNKIT_RETURN_IF_ERROR(read(&raw_type, "tensor type"));
  t.type = static_cast<TensorType>(raw_type);
  const TypeTraits* tr = type_traits(t.type);
  if (tr == nullptr) return fail(type_at, "tensor type " + std::to_string(raw_type) + " is not a known ggml type");
  if (t.dims[0] % tr->block_elems != 0) {
    return fail(dims_at, "row length dims[0] " + std::to_string(t.dims[0]) + " is not a multiple of the " +
                             tr->name + " block size " + std::to_string(tr->block_elems));
  }
  // n_elements / block_elems * block_bytes cannot overflow u64 for block_bytes <= 292 < 2^9 and
  // n_elements < 2^63 when block_elems >= 32; for plain types block_bytes <= 8 and we check anyway.
  if (mul_overflows(n_elements / tr->block_elems, tr->block_bytes, &t.n_bytes)) {
    return fail(type_at, "byte size of " + std::to_string(n_elements) + " " + tr->name + " values overflows");
  }
  const uint64_t off_at = pos_;
  ATTNKIT_RETURN_IF_ERROR(read(&t.offset, "tensor data offset"));
  f_->tensors_.push_back(t);
  info_at_.push_back(start);
  offset_at_.push_back(off_at);
  context_.clear();
  return Status::ok_status();
}

Status Parser::finish_tensors() {
  const uint64_t align = f_->alignment_;
  // Data section starts at the next multiple of the alignment after the tensor infos.
  uint64_t data_offset = 0;
  if (add_overflows(pos_, align - 1, &data_offset)) return fail(pos_, "data offset overflows");
  data_offset -= data_offset % align;
  f_->data_offset_ = data_offset;
  const bool have_data_section = data_offset <= size_;
  if (!opt_.header_only && !have_data_section && !f_->tensors_.empty()) {
    return Status::corrupt_data("gguf: truncated: tensor data section would start at byte " +
                                std::to_string(data_offset) + " but the file has " + std::to_string(size_) + " bytes");
  }
  const uint64_t data_size = have_data_section ? size_ - data_offset : 0;

  std::unordered_map<std::string_view, size_t> names;
  names.reserve(f_->tensors_.size());
  for (size_t i = 0; i < f_->tensors_.size(); ++i) {
    TensorInfo& t = f_->tensors_[i];
    context_ = " in tensor " + std::to_string(i) + " " + quoted(t.name);
    if (!names.emplace(t.name, i).second) {
      return fail(info_at_[i], "duplicate tensor name (first seen as tensor " + std::to_string(names[t.name]) + ")");
    }
    if (t.offset % align != 0) {
      return fail(offset_at_[i], "data offset " + std::to_string(t.offset) + " is not a multiple of the alignment " +
                         std::to_string(align));
    }
    uint64_t end = 0;
    if (add_overflows(t.offset, t.n_bytes, &end) || add_overflows(data_offset, end, &end)) {
      return fail(offset_at_[i], "data offset " + std::to_string(t.offset) + " + size " + std::to_string(t.n_bytes) + " overflows");
    }
    t.file_offset = data_offset + t.offset;
    if (!opt_.header_only && t.offset + t.n_bytes > data_size) {
      return fail(offset_at_[i], "tensor data [" + std::to_string(t.file_offset) + ", " + std::to_string(end) +
                         ") extends past the end of the file (" + std::to_string(size_) + " bytes)");
    }
  }
  // Tensors must not overlap (llama.cpp writes them back to back, padded to the alignment).
  std::vector<const TensorInfo*> by_offset;
  by_offset.reserve(f_->tensors_.size());
  for (const TensorInfo& t : f_->tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo* a = by_offset[i - 1];
    const TensorInfo* b = by_offset[i];
    if (a->offset + a->n_bytes > b->offset) {
      context_.clear();
      return fail(b->file_offset, "tensor " + quoted(b->name) + " at data offset " + std::to_string(b->offset) +
                                      " overlaps tensor " + quoted(a->name) + " [" + std::to_string(a->offset) + ", " +
                                      std::to_string(a->offset + a->n_bytes) + ")");
    }
  }
  context_.clear();
  return Status::ok_status();
}

Status Parser::run() {
  uint32_t magic = 0;
  ATTNKIT_RETURN_IF_ERROR(read(&magic, "magic"));
  if (magic != kMagic) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "0x%08x", magic);
    return fail(0, std::string("bad magic ") + buf + "; expected \"GGUF\" (0x46554747)");
  }
  uint32_t version = 0;
  ATTNKIT_RETURN_IF_ERROR(read(&version, "version"));
  if (version == 1) return Status::unsupported("gguf: version 1 files are not supported; expected version 2 or 3 (at byte 4)");
  if (version != 2 && version != 3) {
    // A byte-swapped small number means a big-endian file.
    const uint32_t swapped = __builtin_bswap32(version);
    if (swapped == 2 || swapped == 3) {
      return Status::unsupported("gguf: big-endian GGUF (version " + std::to_string(swapped) + ") is not supported (at byte 4)");
    }
    return fail(4, "version " + std::to_string(version) + " is not supported; expected 2 or 3");
  }
  f_->version_ = version;
  uint64_t n_tensors = 0, n_kv = 0;
  ATTNKIT_RETURN_IF_ERROR(read(&n_tensors, "tensor count"));
  ATTNKIT_RETURN_IF_ERROR(read(&n_kv, "metadata count"));
  // Counts are bounded by what could possibly fit in the rest of the file.
  uint64_t min_bytes = 0, t_bytes = 0;
  if (mul_overflows(n_kv, kMinKvBytes, &min_bytes) || mul_overflows(n_tensors, kMinTensorInfoBytes, &t_bytes) ||
      add_overflows(min_bytes, t_bytes, &min_bytes) || min_bytes > left()) {
    return fail(8, "tensor count " + std::to_string(n_tensors) + " and metadata count " + std::to_string(n_kv) +
                       " cannot fit in the " + std::to_string(left()) + " bytes after the header");
  }
  f_->kv_.reserve(n_kv);
  std::unordered_map<std::string_view, uint64_t> keys;
  keys.reserve(n_kv);
  for (uint64_t i = 0; i < n_kv; ++i) {
    ATTNKIT_RETURN_IF_ERROR(read_kv(i));
    const KeyValue& kv = f_->kv_.back();
    if (!keys.emplace(kv.key, i).second) return fail(kv.file_offset, "duplicate metadata key " + quoted(kv.key));
  }
  // general.alignment: a u32 power of two.
  if (const Value* a = f_->find("general.alignment")) {
    const uint64_t at = f_->kv_[keys["general.alignment"]].file_offset;
    if (a->type != ValueType::kUint32) {
      return fail(at, "general.alignment has type " + value_type_name(a->type) + ", expected uint32");
    }
    if (a->u64 == 0 || (a->u64 & (a->u64 - 1)) != 0) {
      return fail(at, "general.alignment " + std::to_string(a->u64) + " is not a power of two");
    }
    f_->alignment_ = a->u64;
  } else {
    f_->alignment_ = kDefaultAlignment;
  }
  f_->tensors_.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) ATTNKIT_RETURN_IF_ERROR(read_tensor_info(i));
  return finish_tensors();
}

// ---------------------------------------------------------------------------------------------

GgufFile::~GgufFile() {
  if (mapping_ != nullptr) munmap(mapping_, mapping_size_);
}

Status GgufFile::parse(const OpenOptions& options) {
  header_only_ = options.header_only;
  Parser p(this, options);
  return p.run();
}

Status GgufFile::open_memory(const uint8_t* data, size_t size, std::unique_ptr<GgufFile>* out,
                             const OpenOptions& options) {
  if (out == nullptr) return Status::invalid_argument("gguf: open_memory: out is null");
  out->reset();
  if (data == nullptr && size != 0) return Status::invalid_argument("gguf: open_memory: data is null with size " + std::to_string(size));
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->data_ = data;
  f->size_ = size;
  ATTNKIT_RETURN_IF_ERROR(f->parse(options));
  *out = std::move(f);
  return Status::ok_status();
}

Status GgufFile::open(const std::string& path, std::unique_ptr<GgufFile>* out, const OpenOptions& options) {
  if (out == nullptr) return Status::invalid_argument("gguf: open: out is null");
  out->reset();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::io_error("gguf: cannot open '" + path + "': " + std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    return Status::io_error("gguf: cannot stat '" + path + "': " + std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Status::io_error("gguf: '" + path + "' is not a regular file");
  }
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = path;
  const size_t size = static_cast<size_t>(st.st_size);
  if (size > 0) {
    void* m = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      const int e = errno;
      ::close(fd);
      return Status::io_error("gguf: cannot mmap '" + path + "' (" + std::to_string(size) + " bytes): " + std::strerror(e));
    }
    f->mapping_ = m;
    f->mapping_size_ = size;
    f->data_ = static_cast<const uint8_t*>(m);
  }
  ::close(fd);  // the mapping keeps the file alive
  f->size_ = size;
  Status s = f->parse(options);
  if (!s.ok()) return Status(s.code(), s.message() + " [file '" + path + "']");
  *out = std::move(f);
  return Status::ok_status();
}

const Value* GgufFile::find(std::string_view key) const {
  for (const KeyValue& kv : kv_) {
    if (kv.key == key) return &kv.value;
  }
  return nullptr;
}

const TensorInfo* GgufFile::find_tensor(std::string_view name) const {
  for (const TensorInfo& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

// ---- typed accessors ----
namespace {

bool is_unsigned(ValueType t) {
  return t == ValueType::kUint8 || t == ValueType::kUint16 || t == ValueType::kUint32 || t == ValueType::kUint64;
}
bool is_signed(ValueType t) {
  return t == ValueType::kInt8 || t == ValueType::kInt16 || t == ValueType::kInt32 || t == ValueType::kInt64;
}
bool is_float(ValueType t) { return t == ValueType::kFloat32 || t == ValueType::kFloat64; }

Status type_error(std::string_view key, const Value& v, const char* expected) {
  std::string found = value_type_name(v.type);
  if (v.type == ValueType::kArray) found = "array of " + value_type_name(v.array_type);
  return Status::invalid_argument("gguf: key '" + std::string(key) + "' has type " + found + ", expected " + expected);
}

// Reads an integer-typed scalar into [lo, hi] as i128-free logic: unsigned values compare as u64,
// signed as i64.
template <typename T>
Status int_value(std::string_view key, const Value& v, const char* expected, T* out) {
  using L = std::numeric_limits<T>;
  if (is_unsigned(v.type)) {
    if (v.u64 > static_cast<uint64_t>(L::max())) {
      return Status::out_of_range("gguf: key '" + std::string(key) + "' value " + std::to_string(v.u64) +
                                  " does not fit in " + expected);
    }
    *out = static_cast<T>(v.u64);
    return Status::ok_status();
  }
  if (is_signed(v.type)) {
    const bool fits = v.i64 >= 0 ? static_cast<uint64_t>(v.i64) <= static_cast<uint64_t>(L::max())
                                 : (L::is_signed && v.i64 >= static_cast<int64_t>(L::min()));
    if (!fits) {
      return Status::out_of_range("gguf: key '" + std::string(key) + "' value " + std::to_string(v.i64) +
                                  " does not fit in " + expected);
    }
    *out = static_cast<T>(v.i64);
    return Status::ok_status();
  }
  return type_error(key, v, expected);
}

// Item i of a scalar array as the widened Value fields.
Value array_item(const Value& a, uint64_t i) {
  Value v;
  v.type = a.array_type;
  const size_t es = value_scalar_size(a.array_type);
  const uint8_t* p = a.array_raw + i * es;
  switch (a.array_type) {
    case ValueType::kUint8: v.u64 = p[0]; break;
    case ValueType::kInt8: v.i64 = static_cast<int8_t>(p[0]); break;
    case ValueType::kBool: v.b = p[0] != 0; break;
    case ValueType::kUint16: { uint16_t x{}; std::memcpy(&x, p, 2); v.u64 = x; break; }
    case ValueType::kInt16: { int16_t x{}; std::memcpy(&x, p, 2); v.i64 = x; break; }
    case ValueType::kUint32: { uint32_t x{}; std::memcpy(&x, p, 4); v.u64 = x; break; }
    case ValueType::kInt32: { int32_t x{}; std::memcpy(&x, p, 4); v.i64 = x; break; }
    case ValueType::kFloat32: { float x{}; std::memcpy(&x, p, 4); v.f64 = x; break; }
    case ValueType::kUint64: { uint64_t x{}; std::memcpy(&x, p, 8); v.u64 = x; break; }
    case ValueType::kInt64: { int64_t x{}; std::memcpy(&x, p, 8); v.i64 = x; break; }
    case ValueType::kFloat64: { double x{}; std::memcpy(&x, p, 8); v.f64 = x; break; }
    default: break;
  }
  return v;
}

}  // namespace

Status GgufFile::typed_value(std::string_view key, const Value** v) const {
  *v = find(key);
  if (*v == nullptr) return Status::invalid_argument("gguf: key '" + std::string(key) + "' is not in the file");
  return Status::ok_status();
}

Status GgufFile::get_u32(std::string_view key, uint32_t* out) const {
  const Value* v;
  ATTNKIT_RETURN_IF_ERROR(typed_value(key, &v));
  return int_value(key, *v, "uint32", out);
}
Status GgufFile::get_i32(std::string_view key, int32_t* out) const {
  const Value* v;
  ATTNKIT_RETURN_IF_ERROR(typed_value(key, &v));
  return int_value(key, *v, "int32", out);
}
Status GgufFile::get_u64(std::string_view key, uint64_t* out) const {
  const Value* v;
  ATTNKIT_RETURN_IF_ERROR(typed_value(key, &v));
  return int_value(key, *v, "uint64", out);
}
Status GgufFile::get_i64(std::string_view key, int64_t* out) const {
  const Value* v;
  ATTNKIT_RETURN_IF_ERROR(typed_value(key, &v));
  return int_value(key, *v, "int64", out);
}
Status GgufFile::get_f64(std::string_view key, double* out) const {
  const Value* v;
  ATTNKIT_RETURN_IF_ERROR(typed_value(key, &v));
  if (!is_float(v->type)) return type_error(key, *v, "float32 or float64");
  *out = v->f64;
  return Status::ok_status();
}
Status GgufFile::get_f32(std::string_view key, float* out) const {
  double d = 0;
  ATTNKIT_RETURN_IF_ERROR(get_f64(key, &d));
  *out = static_cast<float>(d);
  return Status::ok_status();
}
Status GgufFile::get_bool(std::string_view key, bool* out) const {
  const Value* v;
  ATTNKIT_RETURN_IF_ERROR(typed_value(key, &v));
  if (v->type != ValueType::kBool) return type_error(key, *v, "bool");
  *out = v->b;
  return Status::ok_status();
}
Status GgufFile::get_string(std::string_view key, std::string* out) const {
  const Value* v;
  ATTNKIT_RETURN_IF_ERROR(typed_value(key, &v));
  if (v->type != ValueType::kString) return type_error(key, *v, "string");
  out->assign(v->str);
  return Status::ok_status();
}

namespace {
template <typename T>
Status int_array(std::string_view key, const Value& v, const char* expected, std::vector<T>* out) {
  if (v.type != ValueType::kArray || !(is_unsigned(v.array_type) || is_signed(v.array_type))) {
    return type_error(key, v, expected);
  }
  out->resize(v.array_size);
  for (uint64_t i = 0; i < v.array_size; ++i) {
    Status s = int_value(key, array_item(v, i), expected, &(*out)[i]);
    if (!s.ok()) return Status(s.code(), s.message() + " (array item " + std::to_string(i) + ")");
  }
  return Status::ok_status();
}
}  // namespace

Status GgufFile::get_array_i64(std::string_view key, std::vector<int64_t>* out) const {
  const Value* v;
  ATTNKIT_RETURN_IF_ERROR(typed_value(key, &v));
  return int_array(key, *v, "array of integers (int64)", out);
}
Status GgufFile::get_array_i32(std::string_view key, std::vector<int32_t>* out) const {
  const Value* v;
  ATTNKIT_RETURN_IF_ERROR(typed_value(key, &v));
  return int_array(key, *v, "array of integers (int32)", out);
}
Status GgufFile::get_array_f32(std::string_view key, std::vector<float>* out) const {
  const Value* v;
  ATTNKIT_RETURN_IF_ERROR(typed_value(key, &v));
  if (v->type != ValueType::kArray || !is_float(v->array_type)) return type_error(key, *v, "array of float32");
  out->resize(v->array_size);
  for (uint64_t i = 0; i < v->array_size; ++i) (*out)[i] = static_cast<float>(array_item(*v, i).f64);
  return Status::ok_status();
}
Status GgufFile::get_array_strings(std::string_view key, std::vector<std::string_view>* out) const {
  const Value* v;
  ATTNKIT_RETURN_IF_ERROR(typed_value(key, &v));
  if (v->type != ValueType::kArray || v->array_type != ValueType::kString) return type_error(key, *v, "array of string");
  *out = v->array_strings;
  return Status::ok_status();
}

// ---- tensor data ----
Status GgufFile::tensor_data(const TensorInfo& t, const uint8_t** out) const {
  if (header_only_) {
    return Status::invalid_argument("gguf: tensor '" + std::string(t.name) + "': file was opened header-only, no data");
  }
  // Re-check against the mapping: `t` may be a copy the caller edited.
  if (t.file_offset > size_ || t.n_bytes > size_ - t.file_offset) {
    return Status::out_of_range("gguf: tensor '" + std::string(t.name) + "' data [" + std::to_string(t.file_offset) +
                                ", +" + std::to_string(t.n_bytes) + ") is outside the file (" + std::to_string(size_) +
                                " bytes)");
  }
  *out = data_ + t.file_offset;
  return Status::ok_status();
}

Status GgufFile::dequantize_rows(const TensorInfo& t, int64_t row_begin, int64_t row_count, float* out) const {
  const int64_t rows = t.n_rows();
  if (row_begin < 0 || row_count < 0 || row_begin > rows || row_count > rows - row_begin) {
    return Status::out_of_range("gguf: tensor '" + std::string(t.name) + "': rows [" + std::to_string(row_begin) + ", +" +
                                std::to_string(row_count) + ") are outside 0.." + std::to_string(rows));
  }
  if (row_count == 0) return Status::ok_status();
  if (out == nullptr) return Status::invalid_argument("gguf: dequantize_rows: out is null");
  const uint8_t* base = nullptr;
  ATTNKIT_RETURN_IF_ERROR(tensor_data(t, &base));
  const uint64_t rb = t.row_bytes();
  const uint64_t begin = static_cast<uint64_t>(row_begin) * rb;
  Status s = dequantize_row(t.type, base + begin, t.n_bytes - begin, row_count * t.dims[0], out);
  if (!s.ok()) return Status(s.code(), s.message() + " (tensor '" + std::string(t.name) + "')");
  return Status::ok_status();
}

Status GgufFile::dequantize(const TensorInfo& t, std::vector<float>* out) const {
  out->resize(static_cast<size_t>(t.n_elements));
  return dequantize_rows(t, 0, t.n_rows(), out->data());
}

}  // namespace attnkit::gguf
