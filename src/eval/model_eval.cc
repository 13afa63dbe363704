// Perplexity, passkey and needle-in-a-haystack evaluations of the Gemma model.
#include "attnkit/eval.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>

#include "attnkit/tokenizer.h"
#include "core/output_file.h"

namespace attnkit::eval {
namespace {

using clock_type = std::chrono::steady_clock;

double since(clock_type::time_point t0) { return std::chrono::duration<double>(clock_type::now() - t0).count(); }


int64_t count_tokens(const Tokenizer& tok, const std::string& text) {
  return static_cast<int64_t>(tok.encode(text).size());
}

// Most prompt tokens a trial may have so that prompt + answer stay within the trained context
// (Gemma 3 270M: 32768). Positions past it were never trained; a "32K" trial with a 32768-token
// prompt would put its answer at positions 32768.. (the last answer token is never fed back, but
// we keep the plain bound prompt + answer <= context_length).
int64_t context_limit(const model::Model& m, int64_t answer_tokens) {
  const int64_t ctx = m.config().context_length;
  if (m.allow_past_context()) return std::numeric_limits<int64_t>::max();
  return ctx > answer_tokens ? ctx - answer_tokens : std::numeric_limits<int64_t>::max();
}

// A length past the context is refused, not cut down to fit: results would otherwise be reported
// under a length that was never run. Up to context_length itself a trial is "the full context": its
// prompt leaves room for the answer, and the trial records the prompt's real size (prompt_tokens).
Status check_length(const model::Model& m, const char* eval, int64_t len) {
  const int64_t ctx = m.config().context_length;
  if (len <= ctx || m.allow_past_context()) return Status::ok_status();
  return Status::out_of_range(std::string(eval) + ": length " + std::to_string(len) + " is past the model's context_length " +
                              std::to_string(ctx) + " (gemma3.context_length); use lengths <= " + std::to_string(ctx) +
                              ", or opt in with allow_past_context (CLI --allow-past-context)");
}

}  // namespace

ProgressFn stderr_progress(const std::string& label) {
  auto t0 = std::make_shared<clock_type::time_point>(clock_type::now());
  return [label, t0](int64_t done, int64_t total) {
    const int width = 30;
    const int filled = total > 0 ? static_cast<int>(width * done / total) : width;
    std::string bar(static_cast<size_t>(filled), '#');
    bar += std::string(static_cast<size_t>(width - filled), '.');
    std::fprintf(stderr, "\r%s [%s] %lld/%lld %.1f s", label.c_str(), bar.c_str(), static_cast<long long>(done),
                 static_cast<long long>(total), since(*t0));
    if (done >= total) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  };
}

namespace {

constexpr const char* kKjvCommand = "bible -f -l100000 Gen1:1-Rev22:21 2>/dev/null";
constexpr const char* kKjvCacheTag = "attnkit-kjv-cache v1 fnv1a64=";

// FNV-1a, 64 bit (Fowler, Noll, Vo): detects a cache that was edited, truncated or is some other
// file; not meant against deliberate forgery.
uint64_t fnv1a64(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// The text from Debian's `bible` program (fast: well under a second), or an error.
Status extract_kjv(std::string* text) {
  FILE* p = popen(kKjvCommand, "r");
  if (p == nullptr) return Status::io_error("kjv_text: cannot run `bible` (install Debian's bible-kjv)");
  std::string raw;
  char buf[65536];
  size_t got;
  while ((got = fread(buf, 1, sizeof(buf), p)) > 0) raw.append(buf, got);
  const int rc = pclose(p);
  if (rc != 0 || raw.size() < 1000000)
    return Status::io_error("kjv_text: `bible -f -l100000 Gen1:1-Rev22:21` failed (exit " + std::to_string(rc) + ", " +
                            std::to_string(raw.size()) + " bytes); install Debian's bible-kjv");
  text->clear();
  text->reserve(raw.size());
  size_t start = 0;
  while (start < raw.size()) {
    size_t end = raw.find('\n', start);
    if (end == std::string::npos) end = raw.size();
    std::string line = raw.substr(start, end - start);
    start = end + 1;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const size_t sp = line.find(' ');
    if (!text->empty()) *text += '\n';
    *text += sp == std::string::npos ? line : line.substr(sp + 1);
  }
  return Status::ok_status();
}

// Reads a cache written by kjv_text: a header line with the hash of the text, then the text. A
// file without that header, or whose text does not hash to it, is refused; so is one that differs
// from what `bible` gives now (when `bible` is there to compare with).
Status read_kjv_cache(const std::string& path, const std::string* maybe_fresh, std::string* out) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string all = ss.str();
  const std::string fix = " (delete it to rebuild, or pass another --corpus-cache)";
  const size_t nl = all.find('\n');
  if (all.rfind(kKjvCacheTag, 0) != 0 || nl == std::string::npos)
    return Status::corrupt_data("corpus cache '" + path + "' is not an attnkit KJV cache (no '" + kKjvCacheTag + "' header)" + fix);
  const std::string stored = all.substr(std::string(kKjvCacheTag).size(), nl - std::string(kKjvCacheTag).size());
  std::string text = all.substr(nl + 1);
  const std::string actual = hex64(fnv1a64(text));
  if (stored != actual)
    return Status::corrupt_data("corpus cache '" + path + "' was modified: its text hashes to " + actual +
                                ", the header says " + stored + fix);
  if (maybe_fresh != nullptr && *maybe_fresh != text)
    return Status::corrupt_data("corpus cache '" + path + "' (" + std::to_string(text.size()) +
                                " bytes) differs from the KJV text `bible` gives now (" + std::to_string(maybe_fresh->size()) +
                                " bytes)" + fix);
  *out = std::move(text);
  return Status::ok_status();
}

}  // namespace

Status kjv_text(const std::string& cache_path, std::string* out) {
  if (out == nullptr) return Status::invalid_argument("kjv_text: out is null");
  std::string fresh;
  const Status extracted = extract_kjv(&fresh);
  const bool cached = !cache_path.empty() && std::filesystem::exists(cache_path);
  if (cached) return read_kjv_cache(cache_path, extracted.ok() ? &fresh : nullptr, out);
  ATTNKIT_RETURN_IF_ERROR(extracted);
  if (!cache_path.empty()) {
    const std::string header = kKjvCacheTag + hex64(fnv1a64(fresh)) + "\n";
    (void)write_file_atomic(cache_path, {header, fresh}, "corpus cache");  // a cache that cannot be written is not an error
  }
  *out = std::move(fresh);
  return Status::ok_status();
}

Status kjv_perplexity_ids(const Tokenizer& tok, const std::string& text, int64_t offset, int64_t n,
                          std::vector<int32_t>* ids) {
  if (ids == nullptr) return Status::invalid_argument("kjv_perplexity_ids: ids is null");
  if (offset < 0) return Status::invalid_argument("perplexity: offset " + std::to_string(offset) + " must be >= 0");
  if (n < 2) return Status::invalid_argument("perplexity: length " + std::to_string(n) + " must be >= 2");
  const int64_t bytes = static_cast<int64_t>(text.size());
  auto past_end = [&](const std::string& have) {
    return Status::out_of_range("perplexity: offset " + std::to_string(offset) + " with length " + std::to_string(n) +
                                " needs text tokens up to " + std::to_string(offset) + " + " + std::to_string(n - 1) +
                                "; the KJV text has " + have);
  };
  // Every token covers at least one byte of the text: a range past the byte count is refused
  // without tokenizing (and without overflowing offset + n).
  if (offset > bytes || n - 1 > bytes - offset) return past_end(std::to_string(bytes) + " bytes");
  const int64_t need = offset + n - 1;
  // KJV averages about 4 characters per token; offset + n <= bytes + 1 here, so this cannot overflow.
  const int64_t prefix = std::min(bytes, (offset + n) * 8 + 1000);
  std::vector<int32_t> toks = tok.encode(text.substr(0, static_cast<size_t>(prefix)));
  if (static_cast<int64_t>(toks.size()) < need && prefix < bytes) toks = tok.encode(text);
  if (static_cast<int64_t>(toks.size()) < need) return past_end(std::to_string(toks.size()) + " tokens");
  ids->assign(1, tok.bos_id());
  ids->insert(ids->end(), toks.begin() + offset, toks.begin() + need);
  return Status::ok_status();
}

Status perplexity(model::Model* m, const std::vector<int32_t>& ids, const PerplexityOptions& options,
                  const ProgressFn& progress, PerplexityResult* out) {
  if (m == nullptr || out == nullptr) return Status::invalid_argument("perplexity: model or out is null");
  const int64_t n = static_cast<int64_t>(ids.size());
  if (n < 2) return Status::invalid_argument("perplexity: " + std::to_string(n) + " tokens; need at least 2");
  if (options.window < 1)
    return Status::invalid_argument("perplexity: window " + std::to_string(options.window) + " must be >= 1");
  const auto hold = m->lock();  // the chunks share one cache: no other thread may reset it between them
  m->reset();
  ATTNKIT_RETURN_IF_ERROR(m->reserve(n));  // layers under a KV policy grow on demand instead
  std::vector<float> lp(static_cast<size_t>(n - 1));
  auto t0 = clock_type::now();
  const int64_t step = options.streaming ? 1 : 512;  // tokens per forward call
  out->windows.clear();
  int64_t window_begin = 0;
  for (int64_t s = 0; s < n - 1;) {
    const int64_t window_end = std::min(n - 1, window_begin + options.window);
    const int64_t k = std::min(step, window_end - s);  // a forward never straddles a window's end
    model::ForwardOutputs o;
    o.maybe_targets = ids.data() + s + 1;
    o.maybe_target_logprobs = lp.data() + s;
    ATTNKIT_RETURN_IF_ERROR(m->forward(ids.data() + s, k, o));
    s += k;
    if (s == window_end) {
      PerplexityWindow w;
      w.begin = window_begin;
      w.end = window_end;
      for (int64_t t = window_begin; t < window_end; ++t) w.nll -= lp[static_cast<size_t>(t)];
      w.nll /= static_cast<double>(window_end - window_begin);
      w.perplexity = std::exp(w.nll);
      const kv::KvBytes b = m->kv_bytes_total();
      w.kv_bytes_in_use = b.in_use;
      w.kv_bytes_allocated = b.allocated;
      out->windows.push_back(w);
      window_begin = window_end;
    }
    if (progress && (!options.streaming || s % 64 == 0 || s == n - 1)) progress(s, n - 1);
  }
  double nll = 0;
  for (float v : lp) nll -= v;
  out->n_tokens = n;
  out->n_predicted = n - 1;
  out->nll = nll / static_cast<double>(n - 1);
  out->perplexity = std::exp(out->nll);
  out->seconds = since(t0);
  return Status::ok_status();
}

Status perplexity(model::Model* m, const std::vector<int32_t>& ids, bool streaming, const ProgressFn& progress,
                  PerplexityResult* out) {
  PerplexityOptions o;
  o.streaming = streaming;
  return perplexity(m, ids, o, progress, out);
}

Status passkey_prompt(const Tokenizer& tok, int64_t length, int64_t passkey, double depth, std::vector<int32_t>* ids) {
  if (ids == nullptr) return Status::invalid_argument("passkey_prompt: ids is null");
  if (length < 64) return Status::invalid_argument("passkey_prompt: length " + std::to_string(length) + " must be >= 64");
  if (!(depth >= 0 && depth <= 1)) return Status::invalid_argument("passkey_prompt: depth " + std::to_string(depth) + " must be in [0, 1]");
  const std::string head =
      "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. I will quiz you "
      "about the important information there.";
  const std::string filler = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
  const std::string key = " The pass key is " + std::to_string(passkey) + ". Remember it. " + std::to_string(passkey) +
                          " is the pass key.";
  const std::string tail = " What is the pass key? The pass key is";
  // Tokens per filler repeat, measured on 10 repeats (the tokenizer merges across repeats the same
  // way every time, so the count is additive to within a token).
  std::string ten;
  for (int i = 0; i < 10; ++i) ten += filler;
  const double per = static_cast<double>(count_tokens(tok, ten)) / 10.0;
  const int64_t fixed = 1 + count_tokens(tok, head + key + tail);
  const int64_t repeats = std::max<int64_t>(0, static_cast<int64_t>((static_cast<double>(length - fixed)) / per));
  const int64_t before = static_cast<int64_t>(std::llround(depth * static_cast<double>(repeats)));
  std::string text = head;
  for (int64_t i = 0; i < before; ++i) text += filler;
  text += key;
  for (int64_t i = before; i < repeats; ++i) text += filler;
  text += tail;
  EncodeOptions eo;
  eo.add_bos = true;
  return tok.encode(text, eo, ids);
}

std::string first_number(const std::string& s) {
  size_t i = 0;
  while (i < s.size() && !(s[i] >= '0' && s[i] <= '9')) ++i;
  size_t j = i;
  while (j < s.size() && s[j] >= '0' && s[j] <= '9') ++j;
  return s.substr(i, j - i);
}

Status run_retrieval(model::Model* m, const std::vector<int32_t>& prompt, const std::string& expected,
                     int64_t answer_tokens, RetrievalTrial* trial) {
  if (m == nullptr || trial == nullptr) return Status::invalid_argument("run_retrieval: model or trial is null");
  model::GenerateOptions go;
  go.max_tokens = answer_tokens;
  std::vector<int32_t> gen;
  model::GenerateStats st;
  auto t0 = clock_type::now();
  ATTNKIT_RETURN_IF_ERROR(m->generate(prompt, go, &gen, &st));
  trial->seconds = since(t0);
  // The first answer token comes out of the prefill; decode_seconds covers the tokens after it.
  trial->decode_tokens_per_s = st.decode_seconds > 0 ? static_cast<double>(st.generated - 1) / st.decode_seconds : 0.0;
  trial->prompt_tokens = static_cast<int64_t>(prompt.size());
  trial->expected = expected;
  std::string text;
  ATTNKIT_RETURN_IF_ERROR(m->tokenizer().decode(gen, &text));
  trial->generated = text;
  trial->correct = first_number(text) == expected;
  return Status::ok_status();
}

namespace {
// Appends one retrieval trial for a built prompt: the model's answer, or (prompts_only) just the
// prompt and the expected answer.
Status add_trial(model::Model* m, std::vector<int32_t> ids, const std::string& expected, int64_t answer_tokens,
                 int64_t len, double depth, bool prompts_only, std::vector<RetrievalTrial>* out) {
  RetrievalTrial tr;
  tr.length = len;
  tr.depth = depth;
  if (prompts_only) {
    tr.prompt_tokens = static_cast<int64_t>(ids.size());
    tr.expected = expected;
  } else {
    ATTNKIT_RETURN_IF_ERROR(run_retrieval(m, ids, expected, answer_tokens, &tr));
  }
  tr.prompt = std::move(ids);
  out->push_back(std::move(tr));
  return Status::ok_status();
}
}  // namespace

Status passkey(model::Model* m, const std::vector<int64_t>& lengths, int64_t trials, uint64_t seed,
               const ProgressFn& progress, std::vector<RetrievalTrial>* out, bool prompts_only) {
  if (m == nullptr || out == nullptr) return Status::invalid_argument("passkey: model or out is null");
  if (trials < 1) return Status::invalid_argument("passkey: trials " + std::to_string(trials) + " must be >= 1");
  std::mt19937_64 rng(seed);
  const int64_t total = static_cast<int64_t>(lengths.size()) * trials;
  int64_t done = 0;
  for (int64_t len : lengths) {
    for (int64_t t = 0; t < trials; ++t) {
      const int64_t key = 10000 + static_cast<int64_t>(rng() % 90000);
      // Depths spread evenly over the trials (one trial: the middle).
      const double depth = trials == 1 ? 0.5 : static_cast<double>(t) / static_cast<double>(trials - 1);
      constexpr int64_t kAnswerTokens = 8;
      std::vector<int32_t> ids;
      // passkey_prompt never exceeds the length it is given.
      ATTNKIT_RETURN_IF_ERROR(check_length(*m, "passkey", len));
      ATTNKIT_RETURN_IF_ERROR(
          passkey_prompt(m->tokenizer(), std::min(len, context_limit(*m, kAnswerTokens)), key, depth, &ids));
      ATTNKIT_RETURN_IF_ERROR(
          add_trial(m, std::move(ids), std::to_string(key), kAnswerTokens, len, depth, prompts_only, out));
      if (progress) progress(++done, total);
    }
  }
  return Status::ok_status();
}

Status niah_prompt(const Tokenizer& tok, const std::string& haystack_text, int64_t length, int64_t number, double depth,
                   uint64_t seed, std::vector<int32_t>* ids) {
  if (ids == nullptr) return Status::invalid_argument("niah_prompt: ids is null");
  if (length < 64) return Status::invalid_argument("niah_prompt: length " + std::to_string(length) + " must be >= 64");
  if (!(depth >= 0 && depth <= 1)) return Status::invalid_argument("niah_prompt: depth " + std::to_string(depth) + " must be in [0, 1]");
  // Split the haystack into verses (lines).
  std::vector<std::string_view> lines;
  std::string_view hv(haystack_text);
  size_t s = 0;
  while (s < hv.size()) {
    size_t e = hv.find('\n', s);
    if (e == std::string_view::npos) e = hv.size();
    lines.push_back(hv.substr(s, e - s));
    s = e + 1;
  }
  if (lines.size() < 100) return Status::invalid_argument("niah_prompt: the haystack has only " + std::to_string(lines.size()) + " lines");
  const std::string needle = "The secret number of the treasure is " + std::to_string(number) + ".";
  const std::string question = "\nWhat is the secret number of the treasure? The secret number of the treasure is";
  const int64_t budget = length - 1 - count_tokens(tok, needle + "\n" + question);
  // A start verse from the seed (in the first half of the text, so any length fits), then verses
  // until the budget, counting tokens per verse (+1 for the newline, which is its own token).
  std::mt19937_64 rng(seed);
  size_t first = static_cast<size_t>(rng() % (lines.size() / 2));
  std::vector<std::string_view> chosen;
  std::vector<int64_t> cum = {0};  // tokens before verse i
  int64_t used = 0;
  for (size_t i = first; i < lines.size(); ++i) {
    const int64_t c = count_tokens(tok, std::string(lines[i])) + 1;
    if (used + c > budget) break;
    chosen.push_back(lines[i]);
    used += c;
    cum.push_back(used);
  }
  // Depth is a fraction of the haystack's tokens: the needle goes at the verse boundary nearest to it.
  const double target = depth * static_cast<double>(used);
  size_t at = 0;
  for (size_t i = 0; i < cum.size(); ++i)
    if (std::fabs(static_cast<double>(cum[i]) - target) < std::fabs(static_cast<double>(cum[at]) - target)) at = i;
  std::string text;
  for (size_t i = 0; i <= chosen.size(); ++i) {
    if (i == at) text += needle + "\n";
    if (i < chosen.size()) {
      text += chosen[i];
      text += '\n';
    }
  }
  if (!text.empty() && text.back() == '\n') text.pop_back();
  text += question;
  EncodeOptions eo;
  eo.add_bos = true;
  return tok.encode(text, eo, ids);
}

Status niah(model::Model* m, const std::string& haystack_text, const std::vector<int64_t>& lengths,
            const std::vector<double>& depths, int64_t trials, uint64_t seed, const ProgressFn& progress,
            std::vector<RetrievalTrial>* out, bool prompts_only) {
  if (m == nullptr || out == nullptr) return Status::invalid_argument("niah: model or out is null");
  if (trials < 1) return Status::invalid_argument("niah: trials " + std::to_string(trials) + " must be >= 1");
  std::mt19937_64 rng(seed);
  const int64_t total = static_cast<int64_t>(lengths.size() * depths.size()) * trials;
  int64_t done = 0;
  for (int64_t len : lengths) {
    for (double d : depths) {
      for (int64_t t = 0; t < trials; ++t) {
        constexpr int64_t kAnswerTokens = 10;
        const int64_t number = 1000000 + static_cast<int64_t>(rng() % 9000000);
        const uint64_t hay_seed = rng();
        // niah_prompt counts verse tokens one verse at a time, and the joined text can come out a
        // few tokens longer than asked; near the context limit, ask again for less by the excess.
        ATTNKIT_RETURN_IF_ERROR(check_length(*m, "niah", len));
        const int64_t limit = context_limit(*m, kAnswerTokens);
        int64_t ask = std::min(len, limit);
        std::vector<int32_t> ids;
        for (int attempt = 0; attempt < 4; ++attempt) {
          ATTNKIT_RETURN_IF_ERROR(niah_prompt(m->tokenizer(), haystack_text, ask, number, d, hay_seed, &ids));
          const int64_t over = static_cast<int64_t>(ids.size()) - limit;
          if (over <= 0) break;
          ask -= over + 4;
        }
        if (static_cast<int64_t>(ids.size()) > limit)
          return Status::invalid_argument("niah: could not fit a prompt for length " + std::to_string(len) + " in " +
                                          std::to_string(limit) + " tokens (got " + std::to_string(ids.size()) + ")");
        ATTNKIT_RETURN_IF_ERROR(
            add_trial(m, std::move(ids), std::to_string(number), kAnswerTokens, len, d, prompts_only, out));
        if (progress) progress(++done, total);
      }
    }
  }
  return Status::ok_status();
}

void wilson_interval(int64_t successes, int64_t n, double z, double* lo, double* hi) {
  if (n <= 0) {
    *lo = 0.0;
    *hi = 1.0;
    return;
  }
  const double nn = static_cast<double>(n), p = static_cast<double>(successes) / nn, z2 = z * z;
  const double center = (p + z2 / (2 * nn)) / (1 + z2 / nn);
  const double half = z / (1 + z2 / nn) * std::sqrt(p * (1 - p) / nn + z2 / (4 * nn * nn));
  *lo = std::max(0.0, center - half);
  *hi = std::min(1.0, center + half);
}

Status kv_storage_option(const std::string& dtype, kv::KvStorage* out) {
  if (!kv::parse_kv_storage(dtype, out))
    return Status::invalid_argument("--kv-dtype " + dtype + " is not one of f32, bf16, int8");
  return Status::ok_status();
}

int64_t peak_rss_bytes() {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0) return -1;
  return static_cast<int64_t>(ru.ru_maxrss) * 1024;  // Linux reports KiB
}

nlohmann::json kv_report(const model::Model& m) {
  const auto per = m.kv_bytes();
  const kv::KvBytes total = m.kv_bytes_total();
  nlohmann::json in_use = nlohmann::json::array();
  for (const auto& b : per) in_use.push_back(b.in_use);
  const auto policy = m.kv_policy();
  return {{"kv_policy", policy ? policy->name() : std::string("none")},
          {"kv_dtype", kv::kv_storage_name(m.kv_storage())},
          {"kv_bytes_allocated", total.allocated},
          {"kv_bytes_in_use", total.in_use},
          {"kv_bytes_in_use_per_layer", in_use},
          {"kv_tokens_per_layer", m.kv_tokens()},
          {"peak_rss_bytes", peak_rss_bytes()}};
}

}  // namespace attnkit::eval
