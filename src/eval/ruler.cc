// RULER-style synthetic tasks: generators, sizing, scoring and the model loop (see ruler.h).
#include "eval/ruler.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <functional>
#include <random>
#include <set>

#include "attnkit/tokenizer.h"

namespace attnkit::eval {
namespace {

// RULER's templates (scripts/data/synthetic/constants.py), "base" model template: the task
// template followed by its answer prefix.
constexpr const char* kNiahTemplate =
    "Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. I will quiz "
    "you about the {type_needle_v} afterwards.\n{context}\nWhat are all the special magic {type_needle_v} for {query} "
    "mentioned in the provided text?";
constexpr const char* kNiahAnswerPrefix = " The special magic {type_needle_v} for {query} mentioned in the provided text are";
constexpr const char* kVtTemplate =
    "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\nQuestion: Find "
    "all variables that are assigned the value {query} in the text above.";
constexpr const char* kVtAnswerPrefix =
    " Answer: According to the chain(s) of variable assignment in the text above, {num_v} variables are assigned the "
    "value {query}, they are: ";
constexpr const char* kCweTemplate =
    "Below is a numbered list of words. In these words, some appear more often than others. Memorize the ones that "
    "appear most often.\n{context}\nQuestion: What are the 10 most common words in the above list?";
constexpr const char* kCweAnswerPrefix = " Answer: The top 10 words that appear most often in the list are:";
// RULER's "noise" haystack sentence (also the passkey filler of Mohtashami & Jaggi 2023).
constexpr const char* kNoise = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";

// RULER's tokens_to_generate per task.
constexpr int64_t kNiahAnswerTokens = 128;
constexpr int64_t kVtAnswerTokens = 30;
constexpr int64_t kCweAnswerTokens = 120;
constexpr int64_t kMinLength = 256;

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size())) s.replace(p, from.size(), to);
  return s;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Uniform integer in [lo, hi] (std::uniform_int_distribution is implementation-defined, so the
// same seed would give different samples on different standard libraries).
int64_t uniform(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  const uint64_t span = static_cast<uint64_t>(hi - lo) + 1;
  return lo + static_cast<int64_t>(rng() % span);
}

template <typename T>
void shuffle(std::vector<T>& v, std::mt19937_64& rng) {  // Fisher-Yates, portable
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[static_cast<size_t>(uniform(rng, 0, static_cast<int64_t>(i) - 1))]);
}

// k distinct indices of [0, n) in draw order.
std::vector<int64_t> sample_indices(std::mt19937_64& rng, int64_t n, int64_t k) {
  std::vector<int64_t> all(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) all[static_cast<size_t>(i)] = i;
  for (int64_t i = 0; i < k; ++i) std::swap(all[static_cast<size_t>(i)], all[static_cast<size_t>(uniform(rng, i, n - 1))]);
  all.resize(static_cast<size_t>(k));
  return all;
}

std::string random_number(std::mt19937_64& rng) { return std::to_string(uniform(rng, 1000000, 9999999)); }  // 7 digits

std::string random_key(std::mt19937_64& rng, const RulerCorpus& c) {
  const int64_t n = static_cast<int64_t>(c.words.size());
  return c.words[static_cast<size_t>(uniform(rng, 0, n - 1))] + "-" + c.words[static_cast<size_t>(uniform(rng, 0, n - 1))];
}

std::string random_var(std::mt19937_64& rng, int letters) {
  std::string s;
  for (int i = 0; i < letters; ++i) s += static_cast<char>('A' + uniform(rng, 0, 25));
  return s;
}

// 32-bit FNV-1a: a portable hash of a task name for seeding (std::hash differs between libraries).
uint32_t fnv1a(const std::string& s) {
  uint32_t h = 2166136261u;
  for (unsigned char c : s) h = (h ^ c) * 16777619u;
  return h;
}

// RULER's depth grid: round(linspace(0, 100, 40)) percent.
double grid_depth(int64_t i) { return std::round(static_cast<double>(i) * 100.0 / 39.0) / 100.0; }

// A context assembled from units (verses or noise lines, each followed by '\n') with inserts
// placed at unit boundaries nearest to their target token depths.
struct Assembly {
  std::string context;
  std::vector<RulerInsert> inserts;
};

// unit_tokens[i]: tokens of unit i with its newline. Each insert goes at the boundary whose token
// offset in the haystack is nearest to depth * total; the recorded depth counts the inserts' own
// tokens too: (haystack and insert tokens before it) / (all tokens of the context).
Assembly assemble(const Tokenizer& tok, const std::vector<std::string>& units, const std::vector<int64_t>& unit_tokens,
                  std::vector<std::pair<double, std::string>> inserts) {
  std::vector<int64_t> cum = {0};
  for (int64_t t : unit_tokens) cum.push_back(cum.back() + t);
  std::stable_sort(inserts.begin(), inserts.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::vector<std::string>> at(units.size() + 1);
  std::vector<size_t> where;
  for (const auto& [depth, text] : inserts) {
    const double target = depth * static_cast<double>(cum.back());
    size_t best = 0;
    for (size_t i = 0; i < cum.size(); ++i)
      if (std::fabs(static_cast<double>(cum[i]) - target) < std::fabs(static_cast<double>(cum[best]) - target)) best = i;
    at[best].push_back(text);
    where.push_back(best);
  }
  Assembly a;
  for (size_t i = 0; i <= units.size(); ++i) {
    for (const auto& t : at[i]) a.context += t + "\n";
    if (i < units.size()) a.context += units[i] + "\n";
  }
  if (!a.context.empty()) a.context.pop_back();
  std::vector<int64_t> ins_tokens;
  int64_t all = cum.back();
  for (const auto& in : inserts) {
    ins_tokens.push_back(static_cast<int64_t>(tok.encode(in.second).size()) + 1);
    all += ins_tokens.back();
  }
  int64_t ins_before = 0;
  for (size_t k = 0; k < inserts.size(); ++k) {
    a.inserts.push_back({inserts[k].second, static_cast<double>(cum[where[k]] + ins_before) / static_cast<double>(all)});
    ins_before += ins_tokens[k];
  }
  return a;
}

// What a generator returns for a given haystack size.
struct Built {
  std::string context, prompt;
  std::vector<std::string> answers;
  std::vector<RulerInsert> inserts;
};

// Builds the sample of one task with `n` haystack units; a pure function of (seed, n).
using Generator = std::function<Built(int64_t n)>;

Generator niah_generator(const Tokenizer& tok, const RulerCorpus& c, uint64_t seed, int n_keys, int n_values) {
  return [&tok, &c, seed, n_keys, n_values](int64_t n) {
    std::mt19937_64 rng(seed);
    std::vector<std::string> keys;
    std::vector<std::vector<std::string>> values;
    std::vector<std::string> needles;
    for (int k = 0; k < n_keys; ++k) {
      keys.push_back(random_key(rng, c));
      values.emplace_back();
      for (int v = 0; v < n_values; ++v) {
        values.back().push_back(random_number(rng));
        needles.push_back("One of the special magic numbers for " + keys.back() + " is: " + values.back().back() + ".");
      }
    }
    shuffle(needles, rng);
    const int64_t query = uniform(rng, 0, n_keys - 1);
    // Haystack: n consecutive verses from a start drawn from the seed (within the first half, so
    // any length up to half the text fits).
    const int64_t n_verses = static_cast<int64_t>(c.verses.size());
    const int64_t first = uniform(rng, 0, n_verses / 2);
    std::vector<std::string> units(c.verses.begin() + first, c.verses.begin() + std::min(n_verses, first + n));
    std::vector<int64_t> unit_tokens;
    for (const auto& u : units) unit_tokens.push_back(static_cast<int64_t>(tok.encode(u).size()) + 1);
    std::vector<int64_t> depth_idx = sample_indices(rng, 40, static_cast<int64_t>(needles.size()));
    std::vector<std::pair<double, std::string>> ins;
    for (size_t i = 0; i < needles.size(); ++i) ins.emplace_back(grid_depth(depth_idx[i]), needles[i]);
    Assembly a = assemble(tok, units, unit_tokens, ins);
    // RULER turns the plural template into the singular one when one value is asked for.
    std::string tmpl = std::string(kNiahTemplate) + kNiahAnswerPrefix;
    std::string type = "numbers";
    if (n_values == 1) {
      tmpl = replace_all(replace_all(replace_all(tmpl, "Some", "A"), "are all", "is"), "are", "is");
      type = "number";
    }
    Built b;
    b.context = a.context;
    b.inserts = a.inserts;
    b.answers = values[static_cast<size_t>(query)];
    b.prompt = replace_all(replace_all(replace_all(tmpl, "{type_needle_v}", type), "{query}", keys[static_cast<size_t>(query)]),
                           "{context}", a.context);
    return b;
  };
}

// One variable chain: "VAR X0 = value", "VAR X1 = VAR X0 ", ... (RULER's exact statement text,
// trailing space included).
std::vector<std::string> vt_chain(std::mt19937_64& rng, int hops, int letters, const std::string& value,
                                  std::vector<std::string>* vars) {
  std::set<std::string> seen;
  while (static_cast<int>(vars->size()) < hops + 1) {
    std::string v = random_var(rng, letters);
    if (seen.insert(v).second) vars->push_back(v);
  }
  std::vector<std::string> chain = {"VAR " + (*vars)[0] + " = " + value};
  for (int j = 0; j < hops; ++j) chain.push_back("VAR " + (*vars)[static_cast<size_t>(j + 1)] + " = VAR " + (*vars)[static_cast<size_t>(j)] + " ");
  return chain;
}

std::string vt_prompt(const std::string& context, const std::string& value, int hops) {
  return replace_all(replace_all(replace_all(std::string(kVtTemplate) + kVtAnswerPrefix, "{context}", context), "{query}", value),
                     "{num_v}", std::to_string(hops + 1));
}

// Noise lines with one chain spread over them, the chain's order kept (RULER inserts the
// statements at sorted random line positions).
Assembly vt_context(const Tokenizer& tok, std::mt19937_64& rng, int64_t n_noise, const std::vector<std::string>& chain) {
  std::vector<std::string> units(static_cast<size_t>(n_noise), kNoise);
  const int64_t noise_tokens = static_cast<int64_t>(tok.encode(kNoise).size()) + 1;
  std::vector<int64_t> unit_tokens(units.size(), noise_tokens);
  // Nondecreasing line boundaries in [0, n_noise] for the k statements: k distinct draws from
  // [0, n_noise + k) sorted, minus their rank (so several statements may share a boundary).
  const int64_t k = static_cast<int64_t>(chain.size());
  std::vector<int64_t> pos = sample_indices(rng, n_noise + k, k);
  std::sort(pos.begin(), pos.end());
  std::vector<std::pair<double, std::string>> ins;
  for (int64_t j = 0; j < k; ++j)
    // A boundary index as a depth; tiny offsets keep the chain's order when boundaries coincide.
    ins.emplace_back(static_cast<double>(pos[static_cast<size_t>(j)] - j) / static_cast<double>(std::max<int64_t>(n_noise, 1)) +
                         1e-9 * static_cast<double>(j),
                     chain[static_cast<size_t>(j)]);
  return assemble(tok, units, unit_tokens, ins);
}

Generator vt_generator(const Tokenizer& tok, uint64_t seed) {
  constexpr int kHops = 4;
  return [&tok, seed](int64_t n) {
    std::mt19937_64 rng(seed);
    // The worked example (RULER: a chain of 3-letter variables in a short noise haystack, with
    // its answer appended).
    std::vector<std::string> ex_vars;
    const std::string ex_value = std::to_string(uniform(rng, 10000, 99999));
    std::vector<std::string> ex_chain = vt_chain(rng, kHops, 3, ex_value, &ex_vars);
    Assembly ex = vt_context(tok, rng, 10, ex_chain);
    std::string example = vt_prompt(ex.context, ex_value, kHops);
    for (size_t i = 0; i < ex_vars.size(); ++i) example += (i ? " " : "") + ex_vars[i];
    std::vector<std::string> vars;
    const std::string value = std::to_string(uniform(rng, 10000, 99999));
    std::vector<std::string> chain = vt_chain(rng, kHops, 5, value, &vars);
    Assembly a = vt_context(tok, rng, n, chain);
    Built b;
    b.context = a.context;
    b.inserts = a.inserts;
    b.answers = vars;
    b.prompt = example + "\n" + vt_prompt(a.context, value, kHops);
    return b;
  };
}

// RULER's get_example: n_words distinct words, the first 10 repeated `common` times, the others
// `uncommon` times, shuffled, numbered "1. w 2. w ...".
std::pair<std::string, std::vector<std::string>> cwe_list(std::mt19937_64& rng, const RulerCorpus& c, int64_t n_words,
                                                         int common, int uncommon) {
  std::vector<int64_t> idx = sample_indices(rng, static_cast<int64_t>(c.words.size()), n_words);
  std::vector<std::string> words;
  for (int64_t i : idx) words.push_back(c.words[static_cast<size_t>(i)]);
  std::vector<std::string> answer(words.begin(), words.begin() + std::min<int64_t>(10, n_words));
  std::vector<std::string> list;
  for (size_t i = 0; i < words.size(); ++i)
    for (int r = 0; r < (i < 10 ? common : uncommon); ++r) list.push_back(words[i]);
  shuffle(list, rng);
  std::string s;
  for (size_t i = 0; i < list.size(); ++i) s += (i ? " " : "") + std::to_string(i + 1) + ". " + list[i];
  return {s, answer};
}

std::string cwe_prompt(const std::string& context) {
  return replace_all(std::string(kCweTemplate) + kCweAnswerPrefix, "{context}", context);
}

Generator cwe_generator(const RulerCorpus& c, uint64_t seed, int64_t length) {
  return [&c, seed, length](int64_t n) {
    std::mt19937_64 rng(seed);
    // RULER: below 4096 tokens the example has 20 words (3/1 repeats) and the task 6/1 repeats;
    // from 4096, 40 words (10/3) and 30/3.
    const bool small = length < 4096;
    auto [ex_ctx, ex_answer] = cwe_list(rng, c, small ? 20 : 40, small ? 3 : 10, small ? 1 : 3);
    std::string example = cwe_prompt(ex_ctx);
    for (size_t i = 0; i < ex_answer.size(); ++i) example += " " + std::to_string(i + 1) + ". " + ex_answer[i];
    auto [ctx, answer] = cwe_list(rng, c, std::max<int64_t>(n, 10), small ? 6 : 30, small ? 1 : 3);
    Built b;
    b.context = ctx;
    b.answers = answer;
    b.prompt = example + "\n" + cwe_prompt(ctx);
    return b;
  };
}

}  // namespace

std::vector<std::string> ruler_task_names() { return {"niah_single", "niah_multikey", "niah_multivalue", "vt", "cwe"}; }

Status make_ruler_corpus(const std::string& kjv, RulerCorpus* out) {
  if (out == nullptr) return Status::invalid_argument("make_ruler_corpus: out is null");
  RulerCorpus c;
  std::set<std::string> vocab;
  size_t s = 0;
  while (s < kjv.size()) {
    size_t e = kjv.find('\n', s);
    if (e == std::string::npos) e = kjv.size();
    if (e > s) c.verses.push_back(kjv.substr(s, e - s));
    s = e + 1;
  }
  for (const auto& v : c.verses) {
    size_t i = 0;
    while (i < v.size()) {
      while (i < v.size() && !std::isalpha(static_cast<unsigned char>(v[i]))) ++i;
      size_t j = i;
      while (j < v.size() && std::isalpha(static_cast<unsigned char>(v[j]))) ++j;
      // Only words written in lower case in the text (skips names and sentence-initial words).
      if (j - i >= 3 && std::islower(static_cast<unsigned char>(v[i]))) vocab.insert(v.substr(i, j - i));
      i = j;
    }
  }
  c.words.assign(vocab.begin(), vocab.end());
  if (c.verses.size() < 1000 || c.words.size() < 1000)
    return Status::invalid_argument("make_ruler_corpus: the text has " + std::to_string(c.verses.size()) + " lines and " +
                                    std::to_string(c.words.size()) + " words; expected the KJV text (kjv_text())");
  *out = std::move(c);
  return Status::ok_status();
}

Status ruler_sample(const Tokenizer& tok, const RulerCorpus& corpus, const std::string& task, int64_t length,
                    uint64_t seed, RulerSample* out) {
  if (out == nullptr) return Status::invalid_argument("ruler_sample: out is null");
  if (length < kMinLength)
    return Status::invalid_argument("ruler_sample: length " + std::to_string(length) + " is below " +
                                    std::to_string(kMinLength) + " tokens");
  if (corpus.verses.empty() || corpus.words.empty()) return Status::invalid_argument("ruler_sample: empty corpus");
  Generator gen;
  int64_t answer_tokens = 0;
  if (task == "niah_single") {
    gen = niah_generator(tok, corpus, seed, 1, 1);
    answer_tokens = kNiahAnswerTokens;
  } else if (task == "niah_multikey") {
    gen = niah_generator(tok, corpus, seed, 4, 1);
    answer_tokens = kNiahAnswerTokens;
  } else if (task == "niah_multivalue") {
    gen = niah_generator(tok, corpus, seed, 1, 4);
    answer_tokens = kNiahAnswerTokens;
  } else if (task == "vt") {
    gen = vt_generator(tok, seed);
    answer_tokens = kVtAnswerTokens;
  } else if (task == "cwe") {
    gen = cwe_generator(corpus, seed, length);
    answer_tokens = kCweAnswerTokens;
  } else {
    std::string names;
    for (const auto& n : ruler_task_names()) names += (names.empty() ? "" : ", ") + n;
    return Status::invalid_argument("ruler: task '" + task + "' is unknown; expected one of " + names);
  }
  const int64_t budget = length - answer_tokens;  // prompt tokens, BOS included
  EncodeOptions eo;
  eo.add_bos = true;
  auto prompt_tokens = [&](const Built& b) { return static_cast<int64_t>(tok.encode(b.prompt, eo).size()); };
  // Largest n whose prompt fits (prompt length grows with n), by doubling then bisection.
  const int64_t n_max = task == "cwe" ? static_cast<int64_t>(corpus.words.size()) : (task == "vt" ? int64_t{1} << 20 : static_cast<int64_t>(corpus.verses.size() / 2));
  int64_t lo = 0, hi = 1;
  while (hi < n_max && prompt_tokens(gen(hi)) <= budget) {
    lo = hi;
    hi = std::min(n_max, hi * 2);
  }
  if (hi == n_max && prompt_tokens(gen(hi)) <= budget) lo = hi;
  else {
    while (hi - lo > 1) {
      const int64_t mid = lo + (hi - lo) / 2;
      (prompt_tokens(gen(mid)) <= budget ? lo : hi) = mid;
    }
  }
  Built b = gen(std::max<int64_t>(lo, 1));
  std::vector<int32_t> ids = tok.encode(b.prompt, eo);
  if (static_cast<int64_t>(ids.size()) > budget)
    return Status::invalid_argument("ruler_sample: length " + std::to_string(length) + " leaves " + std::to_string(budget) +
                                    " prompt tokens, too few for task '" + task + "' (its smallest prompt has " +
                                    std::to_string(ids.size()) + ")");
  RulerSample s;
  s.task = task;
  s.length = length;
  s.answer_tokens = answer_tokens;
  s.context = std::move(b.context);
  s.prompt = std::move(b.prompt);
  s.ids = std::move(ids);
  s.answers = std::move(b.answers);
  s.inserts = std::move(b.inserts);
  *out = std::move(s);
  return Status::ok_status();
}

double ruler_score(const std::string& output, const std::vector<std::string>& answers) {
  if (answers.empty()) return 0.0;
  const std::string o = lower(output);
  int64_t hit = 0;
  for (const auto& a : answers) hit += o.find(lower(a)) != std::string::npos;
  return static_cast<double>(hit) / static_cast<double>(answers.size());
}

Status ruler(model::Model* m, const RulerCorpus& corpus, const RulerOptions& options, const ProgressFn& progress,
             std::vector<RulerTrial>* out) {
  if (m == nullptr || out == nullptr) return Status::invalid_argument("ruler: model or out is null");
  if (options.samples < 1) return Status::invalid_argument("ruler: samples " + std::to_string(options.samples) + " must be >= 1");
  if (options.lengths.empty()) return Status::invalid_argument("ruler: no lengths");
  const std::vector<std::string> tasks = options.tasks.empty() ? ruler_task_names() : options.tasks;
  const int64_t total = static_cast<int64_t>(tasks.size() * options.lengths.size()) * options.samples;
  int64_t done = 0;
  for (const auto& task : tasks) {
    for (int64_t len : options.lengths) {
      if (len > m->config().context_length)
        return Status::invalid_argument("ruler: length " + std::to_string(len) + " exceeds the model's context of " +
                                        std::to_string(m->config().context_length) + " tokens");
      for (int64_t s = 0; s < options.samples; ++s) {
        // One seed per (task, length, sample), independent of which other tasks run.
        std::seed_seq seq{static_cast<uint32_t>(options.seed), static_cast<uint32_t>(options.seed >> 32),
                          fnv1a(task), static_cast<uint32_t>(len),
                          static_cast<uint32_t>(s)};
        uint32_t words[2];
        seq.generate(words, words + 2);
        const uint64_t sample_seed = (static_cast<uint64_t>(words[0]) << 32) | words[1];
        RulerTrial t;
        ATTNKIT_RETURN_IF_ERROR(ruler_sample(m->tokenizer(), corpus, task, len, sample_seed, &t.sample));
        if (!options.prompts_only) {
          model::GenerateOptions go;
          go.max_tokens = options.max_answer_tokens > 0 ? std::min(options.max_answer_tokens, t.sample.answer_tokens)
                                                        : t.sample.answer_tokens;
          std::vector<int32_t> gen;
          const auto t0 = std::chrono::steady_clock::now();
          ATTNKIT_RETURN_IF_ERROR(m->generate(t.sample.ids, go, &gen));
          t.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          ATTNKIT_RETURN_IF_ERROR(m->tokenizer().decode(gen, &t.generated));
          t.score = ruler_score(t.generated, t.sample.answers);
        }
        out->push_back(std::move(t));
        if (progress) progress(++done, total);
      }
    }
  }
  return Status::ok_status();
}

}  // namespace attnkit::eval
