// The real Gemma 3 270M GGUF with metadata that is present but meaningless, counts that disagree
// with the tensors, changed tensor types and NaN weights: every such file must fail to load (or,
// for NaN inside a large quantized weight, fail the run) with an error that names the field, the
// tensor or the layer. One copy of the file is made per test program; each case patches a few
// bytes of it in place and puts them back afterwards, so the cases cost a load, not a copy.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/gguf.h"
#include "attnkit/model.h"

namespace attnkit::model {
namespace {

namespace fs = std::filesystem;

// The copy, and where things are in it (read from the original with the GGUF reader).
class CorruptGguf : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string original;
    if (!gguf::find_default_model(&original).ok()) return;
    dir_ = new fs::path(fs::temp_directory_path() / ("attnkit_corrupt_gguf_" + std::to_string(getpid())));
    fs::create_directories(*dir_);
    path_ = new std::string((*dir_ / "model.gguf").string());
    fs::copy_file(original, *path_, fs::copy_options::overwrite_existing);
    Status s = gguf::GgufFile::open(*path_, &file_);
    if (!s.ok()) ADD_FAILURE() << s.message();
  }
  static void TearDownTestSuite() {
    file_.reset();
    if (dir_ != nullptr) fs::remove_all(*dir_);
    delete dir_;
    delete path_;
    dir_ = nullptr;
    path_ = nullptr;
  }
  void SetUp() override {
    if (!file_) GTEST_SKIP() << "Gemma 3 270M GGUF not installed (scripts/setup.sh installs it)";
  }
  // Puts back every byte a case changed.
  void TearDown() override {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) write_at(it->first, it->second);
    saved_.clear();
  }

  // Byte offset of a metadata key's value (after the key string and the u32 type).
  static uint64_t value_offset(const std::string& key) {
    for (const gguf::KeyValue& kv : file_->metadata())
      if (kv.key == key) return kv.file_offset + 8 + kv.key.size() + 4;
    ADD_FAILURE() << "no metadata key " << key;
    return 0;
  }
  // Byte offset of a tensor's info record (its name's u64 length), found by scanning the header.
  static uint64_t tensor_info_offset(const std::string& name) {
    const uint8_t* d = file_->data();
    std::vector<uint8_t> needle(8 + name.size());
    const uint64_t len = name.size();
    std::memcpy(needle.data(), &len, 8);
    std::memcpy(needle.data() + 8, name.data(), name.size());
    for (uint64_t i = 0; i + needle.size() < file_->data_offset(); ++i)
      if (std::memcmp(d + i, needle.data(), needle.size()) == 0) return i;
    ADD_FAILURE() << "no tensor info for " << name;
    return 0;
  }
  static const gguf::TensorInfo& tensor(const std::string& name) {
    const gguf::TensorInfo* t = file_->find_tensor(name);
    if (t == nullptr) {
      ADD_FAILURE() << "no tensor " << name;
      std::abort();
    }
    return *t;
  }
  // Where a tensor info's type field sits: after the name, n_dims and the dims.
  static uint64_t type_field(const std::string& name) {
    return tensor_info_offset(name) + 8 + name.size() + 4 + 8 * static_cast<uint64_t>(tensor(name).n_dims);
  }

  static void write_at(uint64_t at, const std::vector<uint8_t>& bytes) {
    std::fstream f(*path_, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(at));
    f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    ASSERT_TRUE(f.good());
  }
  template <typename T>
  void patch(uint64_t at, T value) {
    std::vector<uint8_t> old(sizeof(T)), now(sizeof(T));
    std::memcpy(old.data(), file_->data() + at, sizeof(T));  // the mapping of the untouched copy
    std::memcpy(now.data(), &value, sizeof(T));
    saved_.emplace_back(at, old);
    write_at(at, now);
  }

  Status load(std::unique_ptr<Model>* m = nullptr) {
    std::unique_ptr<Model> local;
    LoadOptions o;
    o.threads = 2;
    return Model::load(*path_, o, m != nullptr ? m : &local);
  }
  // Loading must fail and the message must contain every fragment.
  void expect_load_error(const std::vector<std::string>& fragments) {
    const Status s = load();
    ASSERT_FALSE(s.ok()) << "the corrupted file loaded";
    for (const std::string& f : fragments) EXPECT_NE(s.message().find(f), std::string::npos) << s.message();
  }

  static inline fs::path* dir_ = nullptr;
  static inline std::string* path_ = nullptr;
  static inline std::unique_ptr<gguf::GgufFile> file_;
  std::vector<std::pair<uint64_t, std::vector<uint8_t>>> saved_;
};

TEST_F(CorruptGguf, UntouchedCopyLoads) { EXPECT_TRUE(load().ok()); }

TEST_F(CorruptGguf, MeaninglessFloatMetadataIsRefusedNamingTheKey) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::string eps = "gemma3.attention.layer_norm_rms_epsilon", base = "gemma3.rope.freq_base";
  for (float v : {nan, 0.0f, -1e-6f}) {
    patch(value_offset(eps), v);
    expect_load_error({eps});
    TearDown();
  }
  for (float v : {0.0f, nan, -10000.0f, std::numeric_limits<float>::infinity()}) {
    patch(value_offset(base), v);
    expect_load_error({base});
    TearDown();
  }
}

// block_count is a u32 in the shipped file; the reader converts any integer width.
TEST_F(CorruptGguf, BlockCountMustMatchTheTensors) {
  const uint64_t at = value_offset("gemma3.block_count");
  ASSERT_EQ(file_->find("gemma3.block_count")->type, gguf::ValueType::kUint32);
  patch<uint32_t>(at, 1);  // the file has tensors for 18 layers
  expect_load_error({"gemma3.block_count = 1", "blk.1."});
  TearDown();
  patch<uint32_t>(at, 20);  // more layers than tensors
  expect_load_error({"gemma3.block_count = 20", "18 layers"});
  TearDown();
  patch<uint32_t>(at, uint32_t{1} << 31);  // would ask for ~500 GB before the tensors were looked at
  expect_load_error({"gemma3.block_count = 2147483648", "18 layers"});
}

TEST_F(CorruptGguf, NormWeightTypeChangesAreRefusedNamingTheTensor) {
  const std::string name = "blk.3.attn_norm.weight";
  ASSERT_EQ(tensor(name).type, gguf::TensorType::kF32);
  for (gguf::TensorType t : {gguf::TensorType::kF16, gguf::TensorType::kQ4_0}) {
    patch<uint32_t>(type_field(name), static_cast<uint32_t>(t));
    expect_load_error({name, gguf::tensor_type_name(t), "F32"});
    TearDown();
  }
}

TEST_F(CorruptGguf, NonFiniteNormWeightIsFoundAtLoad) {
  const std::string name = "blk.7.ffn_norm.weight";
  const uint64_t at = tensor(name).file_offset + 5 * sizeof(float);
  patch(at, std::numeric_limits<float>::quiet_NaN());
  expect_load_error({name, "index 5"});
  TearDown();
  patch(at, -std::numeric_limits<float>::infinity());
  expect_load_error({name, "index 5"});
}

// A NaN scale in the first block of a large quantized matrix is not scanned for at load; the run
// must fail in that layer instead of producing tokens from NaN logits.
TEST_F(CorruptGguf, NanInQuantizedWeightFailsTheRunNamingTheLayer) {
  const std::string name = "blk.4.ffn_down.weight";
  const gguf::TensorInfo& t = tensor(name);
  // Offset of the f16 scale `d` in the first block, per ggml's block layouts.
  uint64_t d_at = 0;
  switch (t.type) {
    case gguf::TensorType::kQ8_0:
    case gguf::TensorType::kQ4_0:
    case gguf::TensorType::kQ4_K:
    case gguf::TensorType::kQ5_K: d_at = 0; break;
    case gguf::TensorType::kQ6_K: d_at = 128 + 64 + 16; break;  // ql, qh, scales, then d
    default: GTEST_SKIP() << name << " has type " << gguf::tensor_type_name(t.type) << ", not covered here";
  }
  patch<uint16_t>(t.file_offset + d_at, 0x7e00);  // f16 NaN
  std::unique_ptr<Model> m;
  const Status loaded = load(&m);
  ASSERT_TRUE(loaded.ok()) << loaded.message();
  const std::vector<int32_t> ids = {2, 651, 5279, 529, 9405};
  std::vector<float> logits(static_cast<size_t>(m->config().n_vocab));
  ForwardOutputs o;
  o.maybe_last_logits = logits.data();
  const Status s = m->forward(ids.data(), static_cast<int64_t>(ids.size()), o);
  ASSERT_FALSE(s.ok()) << "NaN weights ran without an error";
  EXPECT_NE(s.message().find("layer 4"), std::string::npos) << s.message();
}

TEST_F(CorruptGguf, TensorPastTheEndNamesTheByteOfItsOffsetField) {
  // The last tensor info's data offset, moved far past the end of the file (kept aligned).
  const gguf::TensorInfo& last = file_->tensors().back();
  const std::string name(last.name);
  const uint64_t offset_field = type_field(name) + 4;
  patch<uint64_t>(offset_field, uint64_t{1} << 40);
  expect_load_error({name, "past the end", "(at byte " + std::to_string(offset_field) + ")"});
}

TEST_F(CorruptGguf, ContextLengthIsEnforcedUnlessAllowed) {
  ASSERT_EQ(file_->find("gemma3.context_length")->type, gguf::ValueType::kUint32);
  patch<uint32_t>(value_offset("gemma3.context_length"), 64);
  std::unique_ptr<Model> m;
  ASSERT_TRUE(load(&m).ok());
  ASSERT_EQ(m->config().context_length, 64);
  std::vector<int32_t> ids(65, 651);
  ids[0] = 2;
  std::vector<float> logits(static_cast<size_t>(m->config().n_vocab));
  ForwardOutputs o;
  o.maybe_last_logits = logits.data();
  Status s = m->forward(ids.data(), 65, o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("context_length 64"), std::string::npos) << s.message();
  EXPECT_EQ(m->position(), 0) << "a refused call must not advance the cache";
  // Within the context, then one decode step past it.
  ASSERT_TRUE(m->forward(ids.data(), 64, o).ok());
  s = m->decode(651, logits.data());
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("context_length"), std::string::npos) << s.message();
  // generate checks prompt + max_tokens before running anything.
  GenerateOptions g;
  g.max_tokens = 8;
  s = m->generate(std::vector<int32_t>(ids.begin(), ids.begin() + 60), g, nullptr);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("max_tokens"), std::string::npos) << s.message();
  // Opting in runs past it.
  m->set_allow_past_context(true);
  m->reset();
  EXPECT_TRUE(m->forward(ids.data(), 65, o).ok());
  EXPECT_EQ(m->position(), 65);
  for (float v : logits) ASSERT_TRUE(std::isfinite(v));
}

}  // namespace
}  // namespace attnkit::model
