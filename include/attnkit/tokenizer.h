// attnkit/tokenizer.h: the SentencePiece-style tokenizer stored in a GGUF file.
//
// Supported: tokenizer.ggml.model == "llama", i.e. a SentencePiece BPE vocabulary with scores and
// byte fallback (Gemma, Llama 1/2, Mistral). Encoding follows SentencePiece's BPE model
// (Kudo & Richardson 2018, "SentencePiece", arXiv:1808.06226; bpe_model.cc):
//   1. normalize: escape every ' ' as U+2581 '▁' (and prepend one when add_space_prefix is set);
//   2. split into symbols: at each position the longest user-defined token (e.g. Gemma's "\n\n",
//      runs of spaces, "<table>") is one frozen symbol; with parse_special the control tokens
//      ("<start_of_turn>", "<bos>", ...) are matched the same way; otherwise one UTF-8 character;
//   3. repeatedly merge the adjacent pair whose concatenation is a vocabulary piece with the
//      highest score (ties: leftmost first);
//   4. every remaining piece not in the vocabulary is emitted as its UTF-8 bytes, <0xNN> tokens.
// Decoding maps '▁' back to ' ', byte tokens back to raw bytes (so split UTF-8 sequences
// reassemble), and drops control tokens. decode(encode(text)) == text for any valid UTF-8 text.
//
// Typical use:
//   std::unique_ptr<Tokenizer> tok;
//   throw_if_error(Tokenizer::from_gguf(*file, &tok));
//   std::vector<int32_t> ids = tok->encode("<start_of_turn>user\nHi", {.add_bos = true, .parse_special = true});
//   std::string text = tok->decode(ids);
// The Tokenizer copies what it needs: it does not keep the GgufFile alive.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "attnkit/status.h"

namespace attnkit {

namespace gguf {
class GgufFile;
}

// tokenizer.ggml.token_type values (SentencePiece's piece types).
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

struct EncodeOptions {
  bool add_bos = false;        // prepend bos_id() (see Tokenizer::add_bos_default())
  bool add_eos = false;        // append eos_id()
  bool parse_special = false;  // control-token texts in the input become their ids
};

class Tokenizer {
 public:
  // Reads tokenizer.ggml.{model, tokens, scores, token_type, bos/eos/unknown/padding_token_id,
  // add_bos_token, add_eos_token, add_space_prefix}. Fails with a message naming the key when the
  // vocabulary is missing, inconsistent (array lengths differ, ids out of range) or not "llama".
  static Status from_gguf(const gguf::GgufFile& file, std::unique_ptr<Tokenizer>* out);
  ~Tokenizer();

  // text -> ids. Never fails for any byte string (invalid UTF-8 bytes become byte tokens).
  Status encode(std::string_view text, const EncodeOptions& options, std::vector<int32_t>* ids) const;
  std::vector<int32_t> encode(std::string_view text, const EncodeOptions& options = {}) const;

  // ids -> text. Fails on an id outside [0, vocab_size()) naming the id and its position.
  Status decode(const std::vector<int32_t>& ids, std::string* text) const;
  std::string decode(const std::vector<int32_t>& ids) const;  // throws attnkit::Error
  // Bytes one token contributes to decode() (may be part of a UTF-8 character for byte tokens;
  // empty for control tokens). `first` applies add_space_prefix stripping. For streaming output,
  // feed pieces to Utf8Stream below.
  std::string token_to_piece(int32_t id, bool first = false) const;

  int32_t vocab_size() const { return static_cast<int32_t>(pieces_.size()); }
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t pad_id() const { return pad_id_; }
  int32_t unk_id() const { return unk_id_; }
  bool add_bos_default() const { return add_bos_; }  // tokenizer.ggml.add_bos_token
  bool add_eos_default() const { return add_eos_; }
  bool add_space_prefix() const { return add_space_prefix_; }

  // Vocabulary text of a token exactly as stored in the GGUF ("▁the", "<0x0A>", "<start_of_turn>");
  // empty for an out-of-range id.
  std::string_view token_text(int32_t id) const;
  TokenType token_type(int32_t id) const;
  float token_score(int32_t id) const;
  // Id of a vocabulary text (as token_text returns it), or -1.
  int32_t token_id(std::string_view text) const;

 private:
  Tokenizer() = default;
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;
  struct Trie;
  struct WordCache;
  void encode_normalized(std::string_view normalized, bool parse_special, std::vector<int32_t>* ids) const;
  void encode_run(std::string_view run, WordCache* cache, std::vector<int32_t>* ids) const;
  void encode_word(std::string_view word, std::vector<int32_t>* ids) const;
  bool bridged(std::string_view run, size_t pos) const;
  void emit_piece(std::string_view piece, std::vector<int32_t>* ids) const;

  // The maps hold views into pieces_ / normalized_, which are filled once and never resized.
  std::vector<std::string> pieces_;      // as stored in the file
  std::vector<std::string> normalized_;  // user-defined tokens with ' ' written as '▁' (as in
                                         // SentencePiece's own vocabulary); others as stored
  std::vector<float> scores_;
  std::vector<TokenType> types_;
  std::vector<int16_t> byte_value_;      // 0..255 for <0xNN> byte tokens, -1 otherwise
  // Pieces BPE may produce (normal, user-defined, unused), by normalized text.
  std::unordered_map<std::string_view, int32_t> mergeable_;
  std::unordered_map<std::string_view, int32_t> all_;  // every token by stored text (token_id)
  int32_t byte_ids_[256];
  std::shared_ptr<const Trie> user_trie_;      // user-defined tokens (normalized text)
  std::shared_ptr<const Trie> special_trie_;   // user-defined + control tokens
  // Mergeable pieces with a '▁' after their first character (Gemma has one: ">▁</"). Only these
  // can join text across a '▁', so a run splits into independent words before every other '▁'.
  std::vector<std::string_view> bridging_;
  int32_t bos_id_ = -1, eos_id_ = -1, pad_id_ = -1, unk_id_ = -1;
  bool add_bos_ = false, add_eos_ = false, add_space_prefix_ = false;
};

// Turns a stream of decoded token bytes into complete UTF-8 text: push() returns the longest
// prefix that ends on a character boundary and keeps the rest (at most 3 bytes) for the next call.
// flush() returns what is left (possibly an incomplete character) at the end of the stream.
class Utf8Stream {
 public:
  std::string push(std::string_view bytes);
  std::string flush();

 private:
  std::string pending_;
};

}  // namespace attnkit
