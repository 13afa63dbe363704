// Tokenizer: hand-made vocabularies whose BPE results follow from the algorithm by hand (merge
// order by score, leftmost tie-break, frozen user-defined tokens, byte fallback, unk, unused-piece
// resegmentation, space prefix), vocabulary validation errors, and the real Gemma vocabulary
// (ids of "Hello world" as published for Gemma 3, special tokens, UTF-8 streaming). The corpus-level
// comparison with SentencePiece is tests/python/test_tokenizer_gemma.py.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "attnkit/gguf.h"
#include "attnkit/tokenizer.h"
#include "model/gguf_writer.h"

namespace attnkit {
namespace {

using gguf::GgufFile;
using gguf::ValueType;
using gguf::testing::Bytes;
using gguf::testing::enc;
using gguf::testing::enc_array_of;
using gguf::testing::enc_str;
using gguf::testing::enc_string_array;
using gguf::testing::GgufWriter;

struct Vocab {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
  int add(const std::string& t, float s, int type) {
    tokens.push_back(t);
    scores.push_back(s);
    types.push_back(type);
    return static_cast<int>(tokens.size()) - 1;
  }
};

// Ids of the toy vocabulary.
enum : int32_t { kPad, kEos, kBos, kUnk, kSot, kNl, kTwoSpaces, kByteC3, kByteA9, kA, kB, kC, kAB, kBC, kCB, kABC, kMark, kMarkA };

Vocab toy_vocab() {
  Vocab v;
  v.add("<pad>", 0, 3);
  v.add("<eos>", 0, 3);
  v.add("<bos>", 0, 3);
  v.add("<unk>", 0, 2);
  v.add("<start_of_turn>", 0, 3);
  v.add("\n", 0, 4);
  v.add("  ", 0, 4);  // stored with real spaces, as llama.cpp's converter writes it
  v.add("<0xC3>", 0, 6);
  v.add("<0xA9>", 0, 6);
  v.add("a", -10, 1);
  v.add("b", -10, 1);
  v.add("c", -10, 1);
  v.add("ab", -3, 1);
  v.add("bc", -2, 1);
  v.add("cb", -2, 1);
  v.add("abc", -5, 1);
  v.add("\xE2\x96\x81", -10, 1);       // ▁
  v.add("\xE2\x96\x81" "a", -1, 1);    // ▁a
  return v;
}

struct Built {
  Bytes bytes;
  std::unique_ptr<GgufFile> file;
  std::unique_ptr<Tokenizer> tok;
  Status status;
};

std::unique_ptr<Built> build(const Vocab& v, bool space_prefix = false, const std::string& model = "llama",
                             int64_t scores_len = -1) {
  GgufWriter w;
  w.kv("tokenizer.ggml.model", ValueType::kString, enc_str(model));
  w.kv("tokenizer.ggml.tokens", ValueType::kArray, enc_string_array(v.tokens));
  std::vector<float> scores = v.scores;
  if (scores_len >= 0) scores.resize(scores_len);
  w.kv("tokenizer.ggml.scores", ValueType::kArray, enc_array_of<float>(ValueType::kFloat32, scores));
  w.kv("tokenizer.ggml.token_type", ValueType::kArray, enc_array_of<int32_t>(ValueType::kInt32, v.types));
  w.kv("tokenizer.ggml.bos_token_id", ValueType::kUint32, enc<uint32_t>(kBos));
  w.kv("tokenizer.ggml.eos_token_id", ValueType::kUint32, enc<uint32_t>(kEos));
  w.kv("tokenizer.ggml.unknown_token_id", ValueType::kUint32, enc<uint32_t>(kUnk));
  w.kv("tokenizer.ggml.padding_token_id", ValueType::kUint32, enc<uint32_t>(kPad));
  w.kv("tokenizer.ggml.add_space_prefix", ValueType::kBool, enc<uint8_t>(space_prefix));
  auto b = std::make_unique<Built>();
  b->bytes = w.build();
  b->status = GgufFile::open_memory(b->bytes.data(), b->bytes.size(), &b->file);
  if (b->status.ok()) b->status = Tokenizer::from_gguf(*b->file, &b->tok);
  return b;
}

std::vector<int32_t> enc_ids(const Tokenizer& t, const std::string& s, bool special = false) {
  EncodeOptions o;
  o.parse_special = special;
  return t.encode(s, o);
}

TEST(TokenizerToy, MergesByScoreLeftmostFirst) {
  auto b = build(toy_vocab());
  ASSERT_TRUE(b->status.ok()) << b->status.message();
  const Tokenizer& t = *b->tok;
  // bc (-2) beats ab (-3); then a + bc = abc is a piece.
  EXPECT_EQ(enc_ids(t, "abc"), (std::vector<int32_t>{kABC}));
  // bc and cb tie at -2: the leftmost pair merges first, leaving b alone.
  EXPECT_EQ(enc_ids(t, "bcb"), (std::vector<int32_t>{kBC, kB}));
  EXPECT_EQ(enc_ids(t, "abab"), (std::vector<int32_t>{kAB, kAB}));
  // Spaces become ▁; "▁b" is not a piece.
  EXPECT_EQ(enc_ids(t, " a b"), (std::vector<int32_t>{kMarkA, kMark, kB}));
  // User-defined tokens are frozen symbols, matched on the escaped text ("  " == "▁▁").
  EXPECT_EQ(enc_ids(t, "a  b"), (std::vector<int32_t>{kA, kTwoSpaces, kB}));
  EXPECT_EQ(enc_ids(t, "a\nbc"), (std::vector<int32_t>{kA, kNl, kBC}));
  // Three spaces: the longest user-defined match ("▁▁"), then the third ▁ merges with a.
  EXPECT_EQ(enc_ids(t, "   a"), (std::vector<int32_t>{kTwoSpaces, kMarkA}));
  // Byte fallback for é (C3 A9); a byte without a byte token becomes unk.
  EXPECT_EQ(enc_ids(t, "\xC3\xA9" "a"), (std::vector<int32_t>{kByteC3, kByteA9, kA}));
  EXPECT_EQ(enc_ids(t, "Z"), (std::vector<int32_t>{kUnk}));
  // Control tokens only with parse_special.
  EXPECT_EQ(enc_ids(t, "<start_of_turn>ab", true), (std::vector<int32_t>{kSot, kAB}));
  std::vector<int32_t> plain = enc_ids(t, "<start_of_turn>ab", false);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), kSot), 0);
  EXPECT_EQ(plain.back(), kAB);
  // BOS / EOS.
  EncodeOptions o;
  o.add_bos = true;
  o.add_eos = true;
  EXPECT_EQ(t.encode("ab", o), (std::vector<int32_t>{kBos, kAB, kEos}));
  EXPECT_EQ(t.encode("", o), (std::vector<int32_t>{kBos, kEos}));
}

TEST(TokenizerToy, Decode) {
  auto b = build(toy_vocab());
  ASSERT_TRUE(b->status.ok());
  const Tokenizer& t = *b->tok;
  EXPECT_EQ(t.decode({kBos, kMarkA, kMark, kB, kTwoSpaces, kNl, kEos}), " a b  \n");
  EXPECT_EQ(t.decode({kByteC3, kByteA9}), "\xC3\xA9");
  EXPECT_EQ(t.decode({kUnk}), " \xE2\x81\x87 ");
  for (const std::string s : {"abc", " a b", "a  b", "\xC3\xA9" "a\n\nbcb   "}) EXPECT_EQ(t.decode(enc_ids(t, s)), s);
  std::string out;
  Status st = t.decode({kA, 99}, &out);
  EXPECT_EQ(st.code(), StatusCode::kOutOfRange);
  EXPECT_NE(st.message().find("token id 99 at position 1"), std::string::npos) << st.message();
  EXPECT_THROW(t.decode({-1}), Error);
  EXPECT_EQ(t.token_id("\xE2\x96\x81" "a"), kMarkA);
  EXPECT_EQ(t.token_id("nope"), -1);
  EXPECT_EQ(t.token_type(kByteC3), TokenType::kByte);
  EXPECT_EQ(t.token_text(kTwoSpaces), "  ");
}

TEST(TokenizerToy, SpacePrefix) {
  auto b = build(toy_vocab(), /*space_prefix=*/true);
  ASSERT_TRUE(b->status.ok());
  const Tokenizer& t = *b->tok;
  EXPECT_EQ(enc_ids(t, "a"), (std::vector<int32_t>{kMarkA}));
  EXPECT_EQ(enc_ids(t, ""), (std::vector<int32_t>{}));
  EXPECT_EQ(t.decode({kBos, kMarkA, kMarkA}), "a a");  // the prefix is removed once, after <bos>
}

TEST(TokenizerToy, UnusedPiecesAreSplitBack) {
  Vocab v = toy_vocab();
  v.types[kABC] = 5;  // "abc" becomes unused: BPE still merges through it, then it is split
  auto b = build(v);
  ASSERT_TRUE(b->status.ok());
  EXPECT_EQ(enc_ids(*b->tok, "abc"), (std::vector<int32_t>{kA, kBC}));
}

TEST(TokenizerToy, VocabularyErrorsNameTheKey) {
  auto b = build(toy_vocab(), false, "gpt2");
  EXPECT_EQ(b->status.code(), StatusCode::kUnsupported);
  EXPECT_NE(b->status.message().find("'gpt2'"), std::string::npos);
  b = build(toy_vocab(), false, "llama", 3);
  EXPECT_FALSE(b->status.ok());
  EXPECT_NE(b->status.message().find("tokenizer.ggml.scores has 3 entries"), std::string::npos) << b->status.message();
  Vocab v = toy_vocab();
  v.types[kA] = 9;
  b = build(v);
  EXPECT_NE(b->status.message().find("token_type[9] is 9"), std::string::npos) << b->status.message();
  v = toy_vocab();
  v.tokens[kByteC3] = "<0xZZ>";
  b = build(v);
  EXPECT_NE(b->status.message().find("expected <0xNN>"), std::string::npos) << b->status.message();
  // A file without a vocabulary.
  GgufWriter w;
  Bytes bytes = w.build();
  std::unique_ptr<GgufFile> f;
  ASSERT_TRUE(GgufFile::open_memory(bytes.data(), bytes.size(), &f).ok());
  std::unique_ptr<Tokenizer> tok;
  Status s = Tokenizer::from_gguf(*f, &tok);
  EXPECT_NE(s.message().find("tokenizer.ggml.model"), std::string::npos) << s.message();
}

TEST(Utf8Stream, HoldsBackIncompleteCharacters) {
  Utf8Stream s;
  const std::string text = "a\xE6\x97\xA5\xF0\x9F\x98\x80" "b";  // a 日 😀 b
  std::string out;
  std::vector<std::string> pushes;
  for (char c : text) {
    std::string r = s.push(std::string(1, c));
    // Every returned chunk ends on a character boundary.
    if (!r.empty()) {
      const unsigned char last = static_cast<unsigned char>(r.back());
      EXPECT_TRUE(last < 0x80 || (last & 0xC0) == 0x80);
    }
    out += r;
  }
  out += s.flush();
  EXPECT_EQ(out, text);
  Utf8Stream t;
  EXPECT_EQ(t.push("\xE6\x97"), "");
  EXPECT_EQ(t.push("\xA5z"), "\xE6\x97\xA5z");
  EXPECT_EQ(t.push("\xF0"), "");
  EXPECT_EQ(t.flush(), "\xF0");
}

// ---- the real Gemma 3 vocabulary ----
const Tokenizer& gemma() {
  static std::unique_ptr<GgufFile> file;
  static std::unique_ptr<Tokenizer> tok = [] {
    std::unique_ptr<Tokenizer> t;
    std::string path;
    Status s = gguf::find_default_model(&path);
    if (s.ok()) s = GgufFile::open(path, &file);
    if (s.ok()) s = Tokenizer::from_gguf(*file, &t);
    if (!s.ok()) {
      ADD_FAILURE() << s.message();
      std::abort();
    }
    return t;
  }();
  return *tok;
}

TEST(TokenizerGemma, KnownIdsAndSpecials) {
  const Tokenizer& t = gemma();
  EXPECT_EQ(t.vocab_size(), 262144);
  EXPECT_EQ(t.bos_id(), 2);
  EXPECT_EQ(t.eos_id(), 1);
  EXPECT_TRUE(t.add_bos_default());
  EXPECT_FALSE(t.add_space_prefix());
  EXPECT_EQ(t.encode("Hello world"), (std::vector<int32_t>{9259, 1902}));
  EncodeOptions o;
  o.add_bos = true;
  o.parse_special = true;
  const std::vector<int32_t> chat = t.encode("<start_of_turn>user\nHi<end_of_turn>", o);
  ASSERT_GE(chat.size(), 5u);
  EXPECT_EQ(chat[0], 2);
  EXPECT_EQ(chat[1], t.token_id("<start_of_turn>"));
  EXPECT_EQ(chat.back(), t.token_id("<end_of_turn>"));
  EXPECT_EQ(t.decode(chat), "user\nHi");
  // Characters outside the vocabulary go through byte tokens and come back intact.
  const std::string rare = "\xF0\x90\x80\x80\xF0\x9F\xAB\xA0 \xE2\x80\x8B";  // U+10000, U+1FAE0, ZWSP
  const std::vector<int32_t> ids = t.encode(rare);
  EXPECT_TRUE(std::any_of(ids.begin(), ids.end(), [&](int32_t id) { return t.token_type(id) == TokenType::kByte; }));
  EXPECT_EQ(t.decode(ids), rare);
  // Streaming decode piece by piece reassembles the same text.
  Utf8Stream stream;
  std::string streamed;
  for (size_t i = 0; i < ids.size(); ++i) streamed += stream.push(t.token_to_piece(ids[i], i == 0));
  streamed += stream.flush();
  EXPECT_EQ(streamed, rare);
  // Invalid UTF-8 input still encodes (as byte tokens) and decodes to the same bytes.
  const std::string bad = "ok\xFF\xC3(\x80";
  EXPECT_EQ(t.decode(t.encode(bad)), bad);
}

}  // namespace
}  // namespace attnkit
