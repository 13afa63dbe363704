// GGUF reader: synthetic files with every value type (v2 and v3), one test per validation rule,
// and the real Gemma 3 270M file (metadata checked against values read by the `gguf` package,
// truncated copies at hundreds of points, bit flips of its header, a bounded fuzz loop).
// Reads past the end of a buffer are caught by GuardedBuffer's inaccessible page.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "attnkit/gguf.h"
#include "attnkit/tensor.h"
#include "attnkit/tokenizer.h"
#include "model/gguf_writer.h"

namespace attnkit::gguf::testing {

GuardedBuffer::GuardedBuffer(const uint8_t* data, size_t size) : size_(size) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t body = (size + page - 1) / page * page;
  total_ = body + page;
  base_ = mmap(nullptr, total_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base_ == MAP_FAILED) std::abort();
  mprotect(static_cast<uint8_t*>(base_) + body, page, PROT_NONE);
  data_ = static_cast<uint8_t*>(base_) + body - size;  // the data ends where the guard page starts
  if (size > 0) std::memcpy(data_, data, size);
}
GuardedBuffer::~GuardedBuffer() { munmap(base_, total_); }

namespace {

Status parse(const Bytes& b, std::unique_ptr<GgufFile>* f, bool header_only = false) {
  static std::vector<std::unique_ptr<GuardedBuffer>> keep;  // GgufFile views the buffer
  keep.push_back(std::make_unique<GuardedBuffer>(b.data(), b.size()));
  OpenOptions o;
  o.header_only = header_only;
  return GgufFile::open_memory(keep.back()->data(), keep.back()->size(), f, o);
}

Bytes f32_bytes(const std::vector<float>& v) {
  Bytes b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// A file with one key of every type, nested arrays and three tensors.
GgufWriter every_type_writer(uint32_t version) {
  GgufWriter w;
  w.version = version;
  w.alignment = 64;
  w.kv("general.alignment", ValueType::kUint32, enc<uint32_t>(64));
  w.kv("t.u8", ValueType::kUint8, enc<uint8_t>(200));
  w.kv("t.i8", ValueType::kInt8, enc<int8_t>(-100));
  w.kv("t.u16", ValueType::kUint16, enc<uint16_t>(60000));
  w.kv("t.i16", ValueType::kInt16, enc<int16_t>(-30000));
  w.kv("t.u32", ValueType::kUint32, enc<uint32_t>(4000000000u));
  w.kv("t.i32", ValueType::kInt32, enc<int32_t>(-2000000000));
  w.kv("t.f32", ValueType::kFloat32, enc<float>(1.5f));
  w.kv("t.bool", ValueType::kBool, enc<uint8_t>(1));
  w.kv("t.str", ValueType::kString, enc_str("h\xC3\xA9llo"));
  w.kv("t.u64", ValueType::kUint64, enc<uint64_t>((uint64_t{1} << 63) + 5));
  w.kv("t.i64", ValueType::kInt64, enc<int64_t>(-(int64_t{1} << 62)));
  w.kv("t.f64", ValueType::kFloat64, enc<double>(-2.25));
  w.kv("t.arr_u8", ValueType::kArray, enc_array_of<uint8_t>(ValueType::kUint8, {1, 2, 255}));
  w.kv("t.arr_i32", ValueType::kArray, enc_array_of<int32_t>(ValueType::kInt32, {-1, 0, 7}));
  w.kv("t.arr_f32", ValueType::kArray, enc_array_of<float>(ValueType::kFloat32, {0.5f, -1.0f}));
  w.kv("t.arr_f64", ValueType::kArray, enc_array_of<double>(ValueType::kFloat64, {0.25}));
  w.kv("t.arr_bool", ValueType::kArray, enc_array_of<uint8_t>(ValueType::kBool, {1, 0}));
  w.kv("t.arr_str", ValueType::kArray, enc_string_array({"a", "", "\xE6\x97\xA5"}));
  w.kv("t.arr_empty", ValueType::kArray, enc_array(ValueType::kUint64, 0, {}));
  Bytes inner;
  append(&inner, enc_array_of<uint16_t>(ValueType::kUint16, {1, 2}));
  append(&inner, enc_array_of<uint16_t>(ValueType::kUint16, {3}));
  w.kv("t.nested", ValueType::kArray, enc_array(ValueType::kArray, 2, inner));
  w.tensor({"a", {4, 3}, 0, f32_bytes({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}), {}});
  Bytes q8;  // two Q8_0 blocks: d = 0.5 then d = -2, q[j] = j - 16
  for (float d : {0.5f, -2.0f}) {
    append(&q8, enc<uint16_t>(f32_to_f16(d)));
    for (int j = 0; j < 32; ++j) q8.push_back(static_cast<uint8_t>(static_cast<int8_t>(j - 16)));
  }
  w.tensor({"b", {64, 1}, 8, q8, {}});
  Bytes f16;
  for (int i = 0; i < 8; ++i) append(&f16, enc<uint16_t>(f32_to_f16(0.25f * i - 1.0f)));
  w.tensor({"c", {8}, 1, f16, {}});
  return w;
}

class EveryTypeTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(EveryTypeTest, ReadsEveryValueTypeAndTensor) {
  std::unique_ptr<GgufFile> f;
  Bytes b = every_type_writer(GetParam()).build();
  ASSERT_TRUE(parse(b, &f).ok());
  EXPECT_EQ(f->version(), GetParam());
  EXPECT_EQ(f->alignment(), 64u);
  EXPECT_EQ(f->data_offset() % 64, 0u);
  EXPECT_EQ(f->metadata().size(), 21u);

  uint32_t u32;
  int32_t i32;
  uint64_t u64;
  int64_t i64;
  float f32;
  double f64;
  bool bo;
  std::string s;
  ASSERT_TRUE(f->get_u32("t.u8", &u32).ok());
  EXPECT_EQ(u32, 200u);
  ASSERT_TRUE(f->get_i32("t.i8", &i32).ok());
  EXPECT_EQ(i32, -100);
  ASSERT_TRUE(f->get_u32("t.u16", &u32).ok());
  EXPECT_EQ(u32, 60000u);
  ASSERT_TRUE(f->get_i64("t.i16", &i64).ok());
  EXPECT_EQ(i64, -30000);
  ASSERT_TRUE(f->get_u32("t.u32", &u32).ok());
  EXPECT_EQ(u32, 4000000000u);
  ASSERT_TRUE(f->get_i32("t.i32", &i32).ok());
  EXPECT_EQ(i32, -2000000000);
  ASSERT_TRUE(f->get_f32("t.f32", &f32).ok());
  EXPECT_EQ(f32, 1.5f);
  ASSERT_TRUE(f->get_bool("t.bool", &bo).ok());
  EXPECT_TRUE(bo);
  ASSERT_TRUE(f->get_string("t.str", &s).ok());
  EXPECT_EQ(s, "h\xC3\xA9llo");
  ASSERT_TRUE(f->get_u64("t.u64", &u64).ok());
  EXPECT_EQ(u64, (uint64_t{1} << 63) + 5);
  ASSERT_TRUE(f->get_i64("t.i64", &i64).ok());
  EXPECT_EQ(i64, -(int64_t{1} << 62));
  ASSERT_TRUE(f->get_f64("t.f64", &f64).ok());
  EXPECT_EQ(f64, -2.25);

  std::vector<int64_t> ai;
  ASSERT_TRUE(f->get_array_i64("t.arr_u8", &ai).ok());
  EXPECT_EQ(ai, (std::vector<int64_t>{1, 2, 255}));
  std::vector<int32_t> a32;
  ASSERT_TRUE(f->get_array_i32("t.arr_i32", &a32).ok());
  EXPECT_EQ(a32, (std::vector<int32_t>{-1, 0, 7}));
  std::vector<float> af;
  ASSERT_TRUE(f->get_array_f32("t.arr_f32", &af).ok());
  EXPECT_EQ(af, (std::vector<float>{0.5f, -1.0f}));
  ASSERT_TRUE(f->get_array_f32("t.arr_f64", &af).ok());
  EXPECT_EQ(af, (std::vector<float>{0.25f}));
  std::vector<std::string_view> as;
  ASSERT_TRUE(f->get_array_strings("t.arr_str", &as).ok());
  ASSERT_EQ(as.size(), 3u);
  EXPECT_EQ(as[0], "a");
  EXPECT_EQ(as[1], "");
  EXPECT_EQ(as[2], "\xE6\x97\xA5");
  const Value* bools = f->find("t.arr_bool");
  ASSERT_NE(bools, nullptr);
  EXPECT_EQ(bools->array_type, ValueType::kBool);
  EXPECT_EQ(bools->array_size, 2u);
  const Value* empty = f->find("t.arr_empty");
  ASSERT_NE(empty, nullptr);
  EXPECT_EQ(empty->array_size, 0u);
  EXPECT_EQ(empty->array_type, ValueType::kUint64);
  const Value* nested = f->find("t.nested");
  ASSERT_NE(nested, nullptr);
  ASSERT_EQ(nested->array_type, ValueType::kArray);
  ASSERT_EQ(nested->array_items.size(), 2u);
  EXPECT_EQ(nested->array_items[0].array_size, 2u);
  EXPECT_EQ(nested->array_items[1].array_size, 1u);
  EXPECT_EQ(nested->array_items[1].array_type, ValueType::kUint16);
  uint16_t three;
  std::memcpy(&three, nested->array_items[1].array_raw, 2);
  EXPECT_EQ(three, 3);

  ASSERT_EQ(f->tensors().size(), 3u);
  const TensorInfo* a = f->find_tensor("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->n_dims, 2);
  EXPECT_EQ(a->n_rows(), 3);
  EXPECT_EQ(a->file_offset % 64, 0u);
  std::vector<float> out;
  ASSERT_TRUE(f->dequantize(*a, &out).ok());
  for (int i = 0; i < 12; ++i) EXPECT_EQ(out[i], static_cast<float>(i));
  std::vector<float> row(4);
  ASSERT_TRUE(f->dequantize_rows(*a, 2, 1, row.data()).ok());
  EXPECT_EQ(row, (std::vector<float>{8, 9, 10, 11}));
  Status bad = f->dequantize_rows(*a, 2, 2, row.data());
  EXPECT_EQ(bad.code(), StatusCode::kOutOfRange);
  EXPECT_NE(bad.message().find("'a'"), std::string::npos) << bad.message();

  const TensorInfo* q = f->find_tensor("b");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->n_bytes, 68u);
  ASSERT_TRUE(f->dequantize(*q, &out).ok());
  ASSERT_EQ(out.size(), 64u);
  for (int j = 0; j < 32; ++j) {
    EXPECT_EQ(out[j], 0.5f * static_cast<float>(j - 16));
    EXPECT_EQ(out[32 + j], -2.0f * static_cast<float>(j - 16));
  }
  float dot = 0;
  std::vector<float> ones(64, 1.0f);
  const uint8_t* raw;
  ASSERT_TRUE(f->tensor_data(*q, &raw).ok());
  ASSERT_TRUE(dot_row(q->type, raw, q->n_bytes, 64, ones.data(), &dot).ok());
  EXPECT_EQ(dot, 0.5f * -16 - 2.0f * -16);  // sum_j (j - 16) over 0..31 = -16

  const TensorInfo* c = f->find_tensor("c");
  ASSERT_TRUE(f->dequantize(*c, &out).ok());
  for (int i = 0; i < 8; ++i) EXPECT_EQ(out[i], 0.25f * i - 1.0f);
}

INSTANTIATE_TEST_SUITE_P(Versions, EveryTypeTest, ::testing::Values(2u, 3u));

TEST(GgufAccessors, ErrorsNameTheKeyAndTheType) {
  std::unique_ptr<GgufFile> f;
  ASSERT_TRUE(parse(every_type_writer(3).build(), &f).ok());
  uint32_t u32;
  int32_t i32;
  std::string s;
  float x;
  bool b;
  Status st = f->get_u32("t.str", &u32);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("'t.str' has type string, expected uint32"), std::string::npos) << st.message();
  st = f->get_u32("t.i8", &u32);  // -100 does not fit
  EXPECT_EQ(st.code(), StatusCode::kOutOfRange);
  EXPECT_NE(st.message().find("'t.i8' value -100"), std::string::npos) << st.message();
  st = f->get_i32("t.u32", &i32);  // 4e9 does not fit
  EXPECT_NE(st.message().find("'t.u32' value 4000000000 does not fit in int32"), std::string::npos) << st.message();
  st = f->get_string("t.u8", &s);
  EXPECT_NE(st.message().find("has type uint8, expected string"), std::string::npos) << st.message();
  st = f->get_f32("t.arr_f32", &x);
  EXPECT_NE(st.message().find("has type array of float32"), std::string::npos) << st.message();
  st = f->get_bool("t.u8", &b);
  EXPECT_FALSE(st.ok());
  st = f->get_u32("no.such.key", &u32);
  EXPECT_NE(st.message().find("'no.such.key' is not in the file"), std::string::npos) << st.message();
  std::vector<std::string_view> sv;
  st = f->get_array_strings("t.arr_u8", &sv);
  EXPECT_NE(st.message().find("array of uint8, expected array of string"), std::string::npos) << st.message();
}

// ---- one test per validation rule ----
struct Corruption {
  const char* name;
  std::function<Bytes()> make;
  const char* expect;  // substring of the error message
};

GgufWriter small_writer() {
  GgufWriter w;
  w.kv("k", ValueType::kUint32, enc<uint32_t>(1));
  w.tensor({"w", {32, 2}, 8, Bytes(68, 0), {}});
  return w;
}

TEST(GgufValidation, EveryRuleGivesANamedError) {
  const uint64_t huge = uint64_t{1} << 62;
  std::vector<Corruption> cases = {
      {"empty", [] { return Bytes{}; }, "reading magic"},
      {"bad magic", [] { auto w = small_writer(); w.magic = 0x46554746; return w.build(); }, "bad magic"},
      {"version 1", [] { auto w = small_writer(); w.version = 1; return w.build(); }, "version 1"},
      {"version 4", [] { auto w = small_writer(); w.version = 4; return w.build(); }, "version 4 is not supported"},
      {"big endian", [] { auto w = small_writer(); w.version = 0x03000000; return w.build(); }, "big-endian"},
      {"kv count", [=] { auto w = small_writer(); w.kv_count = huge; return w.build(); }, "cannot fit"},
      {"tensor count", [=] { auto w = small_writer(); w.tensor_count = huge; return w.build(); }, "cannot fit"},
      {"string length", [=] {
         auto w = small_writer();
         Bytes v = enc<uint64_t>(huge);
         w.kv("s", ValueType::kString, v);
         return w.build();
       }, "has length 4611686018427387904"},
      {"array length", [=] {
         auto w = small_writer();
         w.kv("a", ValueType::kArray, enc_array(ValueType::kUint32, huge, {}));
         return w.build();
       }, "array of 4611686018427387904 uint32"},
      {"array length overflow", [] {
         auto w = small_writer();
         w.kv("a", ValueType::kArray, enc_array(ValueType::kUint64, ~uint64_t{0} / 4, {}));
         return w.build();
       }, "2^64"},
      {"array nesting", [] {
         auto w = small_writer();
         Bytes v = enc_array(ValueType::kUint8, 0, {});
         for (int i = 0; i < 12; ++i) v = enc_array(ValueType::kArray, 1, v);
         w.kv("deep", ValueType::kArray, v);
         return w.build();
       }, "nesting depth"},
      {"value type", [] { auto w = small_writer(); w.kv("x", static_cast<ValueType>(13), enc<uint32_t>(0)); return w.build(); },
       "value type 13"},
      {"array element type", [] {
         auto w = small_writer();
         w.kv("x", ValueType::kArray, enc_array(static_cast<ValueType>(77), 1, enc<uint32_t>(0)));
         return w.build();
       }, "array element type 77"},
      {"bool", [] { auto w = small_writer(); w.kv("b", ValueType::kBool, enc<uint8_t>(2)); return w.build(); }, "bool value is 2"},
      {"duplicate key", [] { auto w = small_writer(); w.kv("k", ValueType::kUint8, enc<uint8_t>(2)); return w.build(); },
       "duplicate metadata key 'k'"},
      {"empty key", [] { auto w = small_writer(); w.kv("", ValueType::kUint8, enc<uint8_t>(2)); return w.build(); }, "key is empty"},
      {"alignment type", [] {
         auto w = small_writer();
         w.kv("general.alignment", ValueType::kUint64, enc<uint64_t>(32));
         return w.build();
       }, "general.alignment has type uint64"},
      {"alignment value", [] {
         auto w = small_writer();
         w.kv("general.alignment", ValueType::kUint32, enc<uint32_t>(48));
         return w.build();
       }, "general.alignment 48 is not a power of two"},
      {"n_dims 0", [] { GgufWriter w; w.tensor({"w", {}, 0, {}, {}}); return w.build(); }, "n_dims 0"},
      {"n_dims 5", [] { GgufWriter w; w.tensor({"w", {1, 1, 1, 1, 1}, 0, Bytes(4), {}}); return w.build(); }, "n_dims 5"},
      {"dim 0", [] { GgufWriter w; w.tensor({"w", {4, 0}, 0, {}, {}}); return w.build(); }, "dim 1 is 0"},
      {"dim overflow", [] {
         GgufWriter w;
         w.tensor({"w", {uint64_t{1} << 40, uint64_t{1} << 40}, 0, {}, {}});
         return w.build();
       }, "element count overflows"},
      {"byte size overflow", [] {
         GgufWriter w;
         w.tensor({"w", {uint64_t{1} << 62}, 0, {}, {}});
         return w.build();
       }, "overflows"},
      {"tensor type", [] { GgufWriter w; w.tensor({"w", {4}, 99, Bytes(16), {}}); return w.build(); }, "tensor type 99"},
      {"block multiple", [] { GgufWriter w; w.tensor({"w", {48, 1}, 8, Bytes(68), {}}); return w.build(); },
       "dims[0] 48 is not a multiple of the q8_0 block size 32"},
      {"offset alignment", [] { GgufWriter w; w.tensor({"w", {4}, 0, Bytes(16), 4}); return w.build(); },
       "offset 4 is not a multiple of the alignment 32"},
      {"offset past end", [] { GgufWriter w; w.tensor({"w", {4}, 0, Bytes(16), {}}); Bytes b = w.build(); b.resize(b.size() - 32); return b; },
       "extends past the end"},
      {"offset overflow", [] { GgufWriter w; w.tensor({"w", {4}, 0, Bytes(16), ~uint64_t{31}}); return w.build(); },
       "overflows"},
      {"offset far", [] { GgufWriter w; w.tensor({"w", {4}, 0, Bytes(16), uint64_t{1} << 41}); return w.build(); },
       "extends past the end"},
      {"overlap", [] {
         GgufWriter w;
         w.tensor({"w1", {16}, 0, Bytes(64), 0});
         w.tensor({"w2", {16}, 0, Bytes(64), 32});
         return w.build();
       }, "overlaps tensor 'w1'"},
      {"duplicate tensor", [] {
         GgufWriter w;
         w.tensor({"w", {8}, 0, Bytes(32), {}});
         w.tensor({"w", {8}, 0, Bytes(32), {}});
         return w.build();
       }, "duplicate tensor name"},
      {"empty tensor name", [] { GgufWriter w; w.tensor({"", {8}, 0, Bytes(32), {}}); return w.build(); }, "tensor name is empty"},
  };
  for (const Corruption& c : cases) {
    std::unique_ptr<GgufFile> f;
    Status s = parse(c.make(), &f);
    EXPECT_FALSE(s.ok()) << c.name;
    EXPECT_EQ(f, nullptr) << c.name;
    EXPECT_NE(s.message().find(c.expect), std::string::npos) << c.name << ": " << s.message();
    EXPECT_NE(s.message().find("byte"), std::string::npos) << c.name << ": " << s.message();
  }
  // The well-formed base parses (so the failures above come from the corruption).
  std::unique_ptr<GgufFile> f;
  EXPECT_TRUE(parse(small_writer().build(), &f).ok());
}

TEST(GgufValidation, HeaderOnlyAcceptsMissingTensorData) {
  GgufWriter w;
  w.tensor({"w", {256}, 0, Bytes(1024), {}});
  Bytes b = w.build();
  b.resize(b.size() - 1024);  // the data section is gone
  std::unique_ptr<GgufFile> f;
  EXPECT_FALSE(parse(b, &f).ok());
  ASSERT_TRUE(parse(b, &f, /*header_only=*/true).ok());
  ASSERT_EQ(f->tensors().size(), 1u);
  const uint8_t* data;
  Status s = f->tensor_data(f->tensors()[0], &data);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("header-only"), std::string::npos);
}

TEST(GgufOpen, MissingFileAndDirectoryAreIoErrors) {
  std::unique_ptr<GgufFile> f;
  Status s = GgufFile::open("/nonexistent/dir/model.gguf", &f);
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  EXPECT_NE(s.message().find("/nonexistent/dir/model.gguf"), std::string::npos);
  s = GgufFile::open("/tmp", &f);
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  EXPECT_NE(s.message().find("not a regular file"), std::string::npos);
}

TEST(GgufDequant, RowChecks) {
  float out[64];
  uint8_t src[68] = {};
  Status s = dequantize_row(TensorType::kQ8_0, src, sizeof src, 48, out);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("n 48"), std::string::npos);
  s = dequantize_row(TensorType::kQ8_0, src, 67, 64, out);
  EXPECT_EQ(s.code(), StatusCode::kOutOfRange);
  s = dequantize_row(static_cast<TensorType>(16), src, sizeof src, 256, out);  // iq2_xxs: known size, no dequant
  EXPECT_EQ(s.code(), StatusCode::kUnsupported);
  EXPECT_NE(s.message().find("iq2_xxs"), std::string::npos) << s.message();
  s = dequantize_row(static_cast<TensorType>(5), src, sizeof src, 32, out);  // removed ggml type 5
  EXPECT_EQ(s.code(), StatusCode::kUnsupported);
  EXPECT_EQ(type_traits(static_cast<TensorType>(5)), nullptr);
}

}  // namespace
}  // namespace attnkit::gguf::testing
