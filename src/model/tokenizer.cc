// SentencePiece-style BPE tokenizer from a GGUF vocabulary (algorithm in attnkit/tokenizer.h).
#include "attnkit/tokenizer.h"

#include <cstring>
#include <queue>
#include <string>
#include <unordered_map>
#include <vector>

#include "attnkit/gguf.h"

namespace attnkit {
namespace {

constexpr std::string_view kSpaceMark = "\xE2\x96\x81";    // U+2581 LOWER ONE EIGHTH BLOCK '▁'
constexpr std::string_view kUnkSurface = " \xE2\x81\x87 ";  // SentencePiece's " ⁇ " for <unk>

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  std::string r;
  r.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    if (s.compare(i, from.size(), from) == 0) {
      r += to;
      i += from.size();
    } else {
      r += s[i++];
    }
  }
  return r;
}

// Length of the UTF-8 character at s[0] (1..4), or 1 for an invalid or truncated sequence, which
// then goes to byte fallback on its own.
size_t utf8_len(std::string_view s) {
  const unsigned char c = static_cast<unsigned char>(s[0]);
  size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
  if (n == 0 || n > s.size()) return 1;
  for (size_t i = 1; i < n; ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xc0) != 0x80) return 1;
  }
  return n;
}

// "<0x0A>" -> 10; -1 when the text is not a byte token.
int parse_byte_token(std::string_view t) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return -1;
  int v = 0;
  for (int i = 3; i < 5; ++i) {
    const char c = t[i];
    const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

}  // namespace

// Byte trie for longest-prefix matching of user-defined and control tokens.
struct Tokenizer::Trie {
  std::unordered_map<uint64_t, int32_t> edges;  // (node << 8 | byte) -> child node
  std::vector<int32_t> token{-1};               // token id ending at each node, or -1

  void insert(std::string_view text, int32_t id) {
    int32_t node = 0;
    for (unsigned char c : text) {
      const uint64_t key = (static_cast<uint64_t>(node) << 8) | c;
      auto it = edges.find(key);
      if (it == edges.end()) {
        const int32_t child = static_cast<int32_t>(token.size());
        token.push_back(-1);
        it = edges.emplace(key, child).first;
      }
      node = it->second;
    }
    // Two tokens with the same text: keep the lower id (the first).
    if (token[node] < 0) token[node] = id;
  }
  // Longest token that is a prefix of s: returns its length and sets *id; 0 when none.
  size_t longest(std::string_view s, int32_t* id) const {
    int32_t node = 0;
    size_t best = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      auto it = edges.find((static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(s[i]));
      if (it == edges.end()) break;
      node = it->second;
      if (token[node] >= 0) {
        best = i + 1;
        *id = token[node];
      }
    }
    return best;
  }
};

Tokenizer::~Tokenizer() = default;

Status Tokenizer::from_gguf(const gguf::GgufFile& f, std::unique_ptr<Tokenizer>* out) {
  if (out == nullptr) return Status::invalid_argument("tokenizer: out is null");
  out->reset();
  std::string model;
  ATTNKIT_RETURN_IF_ERROR(f.get_string("tokenizer.ggml.model", &model));
  if (model != "llama") {
    return Status::unsupported("tokenizer: tokenizer.ggml.model '" + model +
                               "' is not supported; expected 'llama' (SentencePiece BPE)");
  }
  std::vector<std::string_view> tokens;
  ATTNKIT_RETURN_IF_ERROR(f.get_array_strings("tokenizer.ggml.tokens", &tokens));
  const size_t n = tokens.size();
  if (n == 0 || n > static_cast<size_t>(INT32_MAX)) {
    return Status::corrupt_data("tokenizer: tokenizer.ggml.tokens has " + std::to_string(n) + " entries");
  }
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  if (f.has("tokenizer.ggml.scores")) {
    ATTNKIT_RETURN_IF_ERROR(f.get_array_f32("tokenizer.ggml.scores", &t->scores_));
    if (t->scores_.size() != n) {
      return Status::corrupt_data("tokenizer: tokenizer.ggml.scores has " + std::to_string(t->scores_.size()) +
                                  " entries but tokenizer.ggml.tokens has " + std::to_string(n));
    }
  } else {
    t->scores_.assign(n, 0.f);
  }
  std::vector<int32_t> types(n, static_cast<int32_t>(TokenType::kNormal));
  if (f.has("tokenizer.ggml.token_type")) {
    ATTNKIT_RETURN_IF_ERROR(f.get_array_i32("tokenizer.ggml.token_type", &types));
    if (types.size() != n) {
      return Status::corrupt_data("tokenizer: tokenizer.ggml.token_type has " + std::to_string(types.size()) +
                                  " entries but tokenizer.ggml.tokens has " + std::to_string(n));
    }
  }
  auto id_key = [&](const char* key, int32_t* id, bool required) -> Status {
    if (!f.has(key)) {
      if (required) return Status::corrupt_data(std::string("tokenizer: ") + key + " is missing");
      *id = -1;
      return Status::ok_status();
    }
    uint32_t v = 0;
    ATTNKIT_RETURN_IF_ERROR(f.get_u32(key, &v));
    if (v >= n) {
      return Status::corrupt_data(std::string("tokenizer: ") + key + " " + std::to_string(v) +
                                  " is outside the vocabulary (size " + std::to_string(n) + ")");
    }
    *id = static_cast<int32_t>(v);
    return Status::ok_status();
  };
  ATTNKIT_RETURN_IF_ERROR(id_key("tokenizer.ggml.bos_token_id", &t->bos_id_, false));
  ATTNKIT_RETURN_IF_ERROR(id_key("tokenizer.ggml.eos_token_id", &t->eos_id_, false));
  ATTNKIT_RETURN_IF_ERROR(id_key("tokenizer.ggml.unknown_token_id", &t->unk_id_, false));
  ATTNKIT_RETURN_IF_ERROR(id_key("tokenizer.ggml.padding_token_id", &t->pad_id_, false));
  auto flag = [&](const char* key, bool* v, bool dflt) -> Status {
    *v = dflt;
    return f.has(key) ? f.get_bool(key, v) : Status::ok_status();
  };
  ATTNKIT_RETURN_IF_ERROR(flag("tokenizer.ggml.add_bos_token", &t->add_bos_, t->bos_id_ >= 0));
  ATTNKIT_RETURN_IF_ERROR(flag("tokenizer.ggml.add_eos_token", &t->add_eos_, false));
  // SentencePiece's add_dummy_prefix; llama.cpp's default for "llama" vocabularies is true.
  ATTNKIT_RETURN_IF_ERROR(flag("tokenizer.ggml.add_space_prefix", &t->add_space_prefix_, true));

  // Fill the owned strings completely before taking views into them.
  t->pieces_.reserve(n);
  t->normalized_.reserve(n);
  t->types_.resize(n);
  t->byte_value_.assign(n, -1);
  for (size_t i = 0; i < n; ++i) {
    int32_t ty = types[i];
    if (ty < 0 || ty > static_cast<int32_t>(TokenType::kByte)) {
      return Status::corrupt_data("tokenizer: tokenizer.ggml.token_type[" + std::to_string(i) + "] is " +
                                  std::to_string(ty) + "; expected 0..6");
    }
    t->types_[i] = static_cast<TokenType>(ty);
    t->pieces_.emplace_back(tokens[i]);
    // llama.cpp's converter writes user-defined tokens with real spaces ("  "); SentencePiece
    // matches them on the escaped text ("▁▁"), so we keep an escaped copy for matching.
    t->normalized_.push_back(t->types_[i] == TokenType::kUserDefined ? replace_all(tokens[i], " ", kSpaceMark)
                                                                      : std::string(tokens[i]));
  }
  for (int& b : t->byte_ids_) b = -1;
  auto user = std::make_shared<Trie>();
  auto special = std::make_shared<Trie>();
  for (size_t i = 0; i < n; ++i) {
    const int32_t id = static_cast<int32_t>(i);
    t->all_.emplace(t->pieces_[i], id);  // first wins on duplicates
    switch (t->types_[i]) {
      case TokenType::kByte: {
        const int b = parse_byte_token(t->pieces_[i]);
        if (b < 0) {
          return Status::corrupt_data("tokenizer: byte token " + std::to_string(i) + " has text '" + t->pieces_[i] +
                                      "'; expected <0xNN>");
        }
        t->byte_value_[i] = static_cast<int16_t>(b);
        if (t->byte_ids_[b] < 0) t->byte_ids_[b] = id;
        break;
      }
      case TokenType::kUserDefined:
        if (!t->normalized_[i].empty()) {
          user->insert(t->normalized_[i], id);
          special->insert(t->normalized_[i], id);
        }
        t->mergeable_.emplace(t->normalized_[i], id);
        break;
      case TokenType::kControl:
      case TokenType::kUnknown:
        if (!t->pieces_[i].empty()) special->insert(t->normalized_[i], id);
        break;
      case TokenType::kNormal:
      case TokenType::kUnused:
      case TokenType::kUndefined:
        t->mergeable_.emplace(t->normalized_[i], id);
        // User-defined pieces never bridge: the trie always takes them whole before BPE runs.
        if (t->normalized_[i].find(kSpaceMark, 1) != std::string::npos) t->bridging_.push_back(t->normalized_[i]);
        break;
    }
  }
  t->user_trie_ = std::move(user);
  t->special_trie_ = std::move(special);
  *out = std::move(t);
  return Status::ok_status();
}

void Tokenizer::emit_piece(std::string_view piece, std::vector<int32_t>* ids) const {
  auto it = mergeable_.find(piece);
  if (it != mergeable_.end()) {
    ids->push_back(it->second);
    return;
  }
  // Byte fallback: the piece's UTF-8 bytes as <0xNN> tokens (unk when a byte token is missing).
  for (unsigned char c : piece) ids->push_back(byte_ids_[c] >= 0 ? byte_ids_[c] : unk_id_);
}

// BPE on one word (no frozen symbols inside): SentencePiece's bpe_model.cc Encode.
void Tokenizer::encode_word(std::string_view s, std::vector<int32_t>* ids) const {
  if (s.empty()) return;
  struct Symbol {
    int32_t prev, next;
    uint32_t start, len;
  };
  std::vector<Symbol> sym;
  sym.reserve(s.size());
  for (size_t pos = 0; pos < s.size();) {
    const size_t len = utf8_len(s.substr(pos));
    const int32_t idx = static_cast<int32_t>(sym.size());
    sym.push_back({idx - 1, -1, static_cast<uint32_t>(pos), static_cast<uint32_t>(len)});
    if (idx > 0) sym[idx - 1].next = idx;
    pos += len;
  }
  // Candidate merges, best first: highest score, then leftmost (SentencePiece's order).
  struct Cand {
    float score;
    int32_t left, right;
    uint32_t size;
  };
  auto worse = [](const Cand& a, const Cand& b) { return a.score < b.score || (a.score == b.score && a.left > b.left); };
  std::priority_queue<Cand, std::vector<Cand>, decltype(worse)> heap(worse);
  // Pieces of unused tokens that BPE passes through are split back into their halves at the end.
  std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>> rev_merge;

  auto try_pair = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    const std::string_view piece = s.substr(sym[l].start, sym[l].len + sym[r].len);
    auto it = mergeable_.find(piece);
    if (it == mergeable_.end()) return;
    heap.push({scores_[it->second], l, r, static_cast<uint32_t>(piece.size())});
    if (types_[it->second] == TokenType::kUnused) {
      rev_merge[piece] = {s.substr(sym[l].start, sym[l].len), s.substr(sym[r].start, sym[r].len)};
    }
  };
  for (size_t i = 1; i < sym.size(); ++i) try_pair(static_cast<int32_t>(i - 1), static_cast<int32_t>(i));

  while (!heap.empty()) {
    const Cand c = heap.top();
    heap.pop();
    Symbol& l = sym[c.left];
    Symbol& r = sym[c.right];
    // Stale candidate: one side was merged away or has grown since it was queued.
    if (l.len == 0 || r.len == 0 || l.len + r.len != c.size) continue;
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = c.left;
    try_pair(l.prev, c.left);
    try_pair(c.left, l.next);
  }

  std::vector<std::string_view> stack;
  for (int32_t i = 0; i >= 0; i = sym[i].next) {
    // Resegment unused pieces (depth-first, left half first), emit the rest.
    stack.assign(1, s.substr(sym[i].start, sym[i].len));
    while (!stack.empty()) {
      const std::string_view p = stack.back();
      stack.pop_back();
      auto it = mergeable_.find(p);
      if (it != mergeable_.end() && types_[it->second] == TokenType::kUnused) {
        auto rm = rev_merge.find(p);
        if (rm != rev_merge.end()) {
          stack.push_back(rm->second.second);
          stack.push_back(rm->second.first);
          continue;
        }
      }
      emit_piece(p, ids);
    }
  }
}

// Words already encoded during one encode() call: long texts repeat words, and BPE on a word does
// not depend on its neighbours once the split is exact (see bridged()).
struct Tokenizer::WordCache {
  std::unordered_map<std::string_view, std::pair<uint32_t, uint32_t>> words;  // -> [begin, end) in ids
  std::vector<int32_t> ids;
};

// True when a mergeable piece containing a '▁' after its first character occurs in `run` with that
// '▁' at `pos`: only then could BPE merge across the boundary before run[pos].
bool Tokenizer::bridged(std::string_view run, size_t pos) const {
  for (std::string_view b : bridging_) {
    for (size_t j = b.find(kSpaceMark, 1); j != std::string_view::npos; j = b.find(kSpaceMark, j + 1)) {
      if (j <= pos && pos - j + b.size() <= run.size() && run.compare(pos - j, b.size(), b) == 0) return true;
    }
  }
  return false;
}

// A run of text between frozen symbols: split before each '▁' that no piece can bridge, then BPE
// each word (SentencePiece runs BPE on the whole run; merges never cross these split points, so
// the result is the same).
void Tokenizer::encode_run(std::string_view run, WordCache* cache, std::vector<int32_t>* ids) const {
  size_t start = 0;
  while (start < run.size()) {
    size_t end = start + 1;
    for (;;) {
      end = run.find(kSpaceMark, end);
      if (end == std::string_view::npos) {
        end = run.size();
        break;
      }
      if (!bridged(run, end)) break;
      ++end;
    }
    const std::string_view word = run.substr(start, end - start);
    auto it = cache->words.find(word);
    if (it == cache->words.end()) {
      const uint32_t begin = static_cast<uint32_t>(cache->ids.size());
      encode_word(word, &cache->ids);
      it = cache->words.emplace(word, std::make_pair(begin, static_cast<uint32_t>(cache->ids.size()))).first;
    }
    ids->insert(ids->end(), cache->ids.begin() + it->second.first, cache->ids.begin() + it->second.second);
    start = end;
  }
}

void Tokenizer::encode_normalized(std::string_view s, bool parse_special, std::vector<int32_t>* ids) const {
  // Frozen symbols first: at each character position the longest user-defined token (and control
  // token with parse_special) is taken whole; the text between them is BPE'd.
  const Trie& trie = parse_special ? *special_trie_ : *user_trie_;
  WordCache cache;
  size_t run_start = 0;
  for (size_t pos = 0; pos < s.size();) {
    int32_t id = -1;
    const size_t len = trie.longest(s.substr(pos), &id);
    if (len == 0) {
      pos += utf8_len(s.substr(pos));
      continue;
    }
    encode_run(s.substr(run_start, pos - run_start), &cache, ids);
    ids->push_back(id);
    pos += len;
    run_start = pos;
  }
  encode_run(s.substr(run_start), &cache, ids);
}

Status Tokenizer::encode(std::string_view text, const EncodeOptions& options, std::vector<int32_t>* ids) const {
  if (ids == nullptr) return Status::invalid_argument("tokenizer: ids is null");
  ids->clear();
  if (options.add_bos) {
    if (bos_id_ < 0) return Status::invalid_argument("tokenizer: add_bos requested but the vocabulary has no bos id");
    ids->push_back(bos_id_);
  }
  std::string normalized;
  normalized.reserve(text.size() + text.size() / 2 + 3);
  if (add_space_prefix_ && !text.empty()) normalized += kSpaceMark;
  for (char c : text) {
    if (c == ' ') {
      normalized += kSpaceMark;
    } else {
      normalized += c;
    }
  }
  encode_normalized(normalized, options.parse_special, ids);
  if (options.add_eos) {
    if (eos_id_ < 0) return Status::invalid_argument("tokenizer: add_eos requested but the vocabulary has no eos id");
    ids->push_back(eos_id_);
  }
  return Status::ok_status();
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, const EncodeOptions& options) const {
  std::vector<int32_t> ids;
  throw_if_error(encode(text, options, &ids));
  return ids;
}

std::string Tokenizer::token_to_piece(int32_t id, bool first) const {
  if (id < 0 || id >= vocab_size()) return std::string();
  const TokenType ty = types_[id];
  if (ty == TokenType::kByte) return std::string(1, static_cast<char>(byte_value_[id]));
  if (ty == TokenType::kUnknown || id == unk_id_) return std::string(kUnkSurface);
  if (ty == TokenType::kControl) return std::string();
  std::string r = replace_all(pieces_[id], kSpaceMark, " ");
  if (first && add_space_prefix_ && !r.empty() && r[0] == ' ') r.erase(0, 1);
  return r;
}

Status Tokenizer::decode(const std::vector<int32_t>& ids, std::string* text) const {
  if (text == nullptr) return Status::invalid_argument("tokenizer: text is null");
  text->clear();
  bool first = true;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id < 0 || id >= vocab_size()) {
      return Status::out_of_range("tokenizer: token id " + std::to_string(id) + " at position " + std::to_string(i) +
                                  " is outside the vocabulary (size " + std::to_string(vocab_size()) + ")");
    }
    // The dummy prefix is stripped from the first piece that produces text (SentencePiece skips
    // control tokens such as <bos> before deciding what is first).
    const std::string piece = token_to_piece(id, first);
    if (!piece.empty()) first = false;
    *text += piece;
  }
  return Status::ok_status();
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  throw_if_error(decode(ids, &text));
  return text;
}

std::string_view Tokenizer::token_text(int32_t id) const {
  return id >= 0 && id < vocab_size() ? std::string_view(pieces_[id]) : std::string_view();
}
TokenType Tokenizer::token_type(int32_t id) const {
  return id >= 0 && id < vocab_size() ? types_[id] : TokenType::kUndefined;
}
float Tokenizer::token_score(int32_t id) const { return id >= 0 && id < vocab_size() ? scores_[id] : 0.f; }
int32_t Tokenizer::token_id(std::string_view text) const {
  auto it = all_.find(text);
  return it == all_.end() ? -1 : it->second;
}

std::string Utf8Stream::push(std::string_view bytes) {
  pending_ += bytes;
  // Find the start of the last (possibly incomplete) character in the final 4 bytes.
  size_t cut = pending_.size();
  for (size_t back = 1; back <= 4 && back <= pending_.size(); ++back) {
    const unsigned char c = static_cast<unsigned char>(pending_[pending_.size() - back]);
    if ((c & 0xc0) == 0x80) continue;  // continuation byte: keep looking for the lead
    const size_t need = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 1;
    if (need > back) cut = pending_.size() - back;  // incomplete: hold it back
    break;
  }
  std::string ready = pending_.substr(0, cut);
  pending_.erase(0, cut);
  return ready;
}

std::string Utf8Stream::flush() {
  std::string r;
  r.swap(pending_);
  return r;
}

}  // namespace attnkit
