// read_config refuses GGUF files that ask for RoPE scaling (not implemented) instead of running
// them with unscaled positions; files without scaling, or with the no-op values, pass that check.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "attnkit/gguf.h"
#include "attnkit/model.h"
#include "model/gguf_writer.h"

namespace attnkit::gguf::testing {
namespace {

// Gemma 3 metadata up to the RoPE keys (no tensors: read_config then stops at token_embd.weight).
GgufWriter gemma_metadata() {
  GgufWriter w;
  w.kv("general.architecture", ValueType::kString, enc_str("gemma3"));
  for (auto [key, v] : std::vector<std::pair<std::string, uint32_t>>{{"block_count", 18},
                                                                     {"embedding_length", 640},
                                                                     {"feed_forward_length", 2048},
                                                                     {"attention.head_count", 4},
                                                                     {"attention.head_count_kv", 1},
                                                                     {"attention.key_length", 256},
                                                                     {"attention.value_length", 256},
                                                                     {"context_length", 32768},
                                                                     {"attention.sliding_window", 512}})
    w.kv("gemma3." + key, ValueType::kUint32, enc<uint32_t>(v));
  w.kv("gemma3.attention.layer_norm_rms_epsilon", ValueType::kFloat32, enc<float>(1e-6f));
  w.kv("gemma3.rope.freq_base", ValueType::kFloat32, enc<float>(1e6f));
  return w;
}

Status config_of(const GgufWriter& w) {
  static std::vector<Bytes> keep;  // the file views its buffer
  keep.push_back(w.build());
  std::unique_ptr<GgufFile> f;
  const Status s = GgufFile::open_memory(keep.back().data(), keep.back().size(), &f);
  if (!s.ok()) return s;
  model::GemmaConfig c;
  return model::read_config(*f, &c);
}

TEST(GemmaConfig, RefusesRopeScaling) {
  // Without scaling keys the config reads up to the missing embedding tensor.
  Status base = config_of(gemma_metadata());
  ASSERT_FALSE(base.ok());
  EXPECT_NE(base.message().find("token_embd"), std::string::npos) << base.message();

  GgufWriter linear = gemma_metadata();
  linear.kv("gemma3.rope.scaling.type", ValueType::kString, enc_str("linear"));
  linear.kv("gemma3.rope.scaling.factor", ValueType::kFloat32, enc<float>(8.0f));
  Status s = config_of(linear);
  EXPECT_EQ(s.code(), StatusCode::kUnsupported) << s.message();
  EXPECT_NE(s.message().find("rope.scaling.type 'linear'"), std::string::npos) << s.message();

  GgufWriter factor_only = gemma_metadata();
  factor_only.kv("gemma3.rope.scaling.factor", ValueType::kFloat32, enc<float>(4.0f));
  s = config_of(factor_only);
  EXPECT_EQ(s.code(), StatusCode::kUnsupported) << s.message();
  EXPECT_NE(s.message().find("rope.scaling.factor"), std::string::npos) << s.message();

  GgufWriter old_key = gemma_metadata();
  old_key.kv("gemma3.rope.scale_linear", ValueType::kFloat32, enc<float>(2.0f));
  s = config_of(old_key);
  EXPECT_EQ(s.code(), StatusCode::kUnsupported) << s.message();
  EXPECT_NE(s.message().find("rope.scale_linear"), std::string::npos) << s.message();

  // The no-op values are accepted (the error is again the missing tensor).
  GgufWriter none = gemma_metadata();
  none.kv("gemma3.rope.scaling.type", ValueType::kString, enc_str("none"));
  none.kv("gemma3.rope.scaling.factor", ValueType::kFloat32, enc<float>(1.0f));
  s = config_of(none);
  EXPECT_NE(s.message().find("token_embd"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace attnkit::gguf::testing
