// attnkit/eval.h: long-context evaluations of a model (implemented in src/eval/): perplexity
// (full-sequence and streaming), passkey retrieval, needle in a haystack. Used by `attnkit eval`,
// the Python package and the tests.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "attnkit/kv_cache.h"
#include "attnkit/model.h"
#include "attnkit/status.h"

namespace attnkit::eval {

// progress(done, total) after each unit of work (for a progress bar).
using ProgressFn = std::function<void(int64_t done, int64_t total)>;

// A text progress bar on stderr: "label [#####.....] 12/40 3.1 s".
ProgressFn stderr_progress(const std::string& label);

// The King James Bible as one string: every verse printed by Debian's `bible` program
// (`bible -f -l100000 Gen1:1-Rev22:21`), its reference ("Ge1:1 ") stripped, joined with '\n'.
// scripts/golden_hf.py extracts the same text. When cache_path is non-empty the text is read from
// there if present and written there otherwise. The cache starts with a header line holding the
// text's hash; a file without it, whose text does not match it, or (when `bible` is installed)
// that differs from the text `bible` gives, is refused with an error naming the path.
Status kjv_text(const std::string& cache_path, std::string* out);

// The input of a perplexity run over the KJV text: BOS, then tokens [offset, offset + n - 1) of the
// tokenized text (token 0 is the text's first token), n ids in all; the run predicts exactly those
// n - 1 text tokens. The text is tokenized from its start (a prefix of (offset + n) * 8 + 1000
// characters, the whole text when that is too short), so a run at offset N reads token for token
// what the predictions [N, N + n - 1) of a longer run from offset 0 read. A negative offset, n < 2,
// or a range past the end of the text is refused naming the value.
Status kjv_perplexity_ids(const Tokenizer& tok, const std::string& text, int64_t offset, int64_t n,
                          std::vector<int32_t>* ids);

// Perplexity of one window of predicted tokens, and the KV cache right after its last token.
struct PerplexityWindow {
  int64_t begin = 0, end = 0;  // predicted tokens [begin, end): targets ids[begin + 1 .. end]
  double nll = 0;              // mean over the window, nats
  double perplexity = 0;       // exp(nll)
  int64_t kv_bytes_in_use = 0, kv_bytes_allocated = 0;
};

struct PerplexityResult {
  int64_t n_tokens = 0;     // tokens fed (the first is only context)
  int64_t n_predicted = 0;  // n_tokens - 1
  double nll = 0;           // mean negative log-likelihood, nats
  double perplexity = 0;    // exp(nll)
  double seconds = 0;
  std::vector<PerplexityWindow> windows;  // consecutive windows covering every predicted token
};

struct PerplexityOptions {
  // false: one forward over the whole sequence (chunked prefill, the cache carrying context across
  // chunks); true: token by token through the decode path (StreamingLLM's evaluation).
  bool streaming = false;
  // Predicted tokens per window of PerplexityResult::windows (the last may be shorter); the KV
  // bytes are read at the end of each window, which shows whether a policy keeps memory constant.
  int64_t window = 4096;
};

// Scores ids[1..n-1] given their prefixes. The cache is reserved for the whole sequence up front,
// except on the layers a KV policy acts on (Model::reserve), so the KV bytes allocated there are
// what the policy really needs (StreamingLLM can then run far past the memory of a full cache).
Status perplexity(model::Model* m, const std::vector<int32_t>& ids, const PerplexityOptions& options,
                  const ProgressFn& progress, PerplexityResult* out);
Status perplexity(model::Model* m, const std::vector<int32_t>& ids, bool streaming, const ProgressFn& progress,
                  PerplexityResult* out);

struct RetrievalTrial {
  int64_t length = 0;        // requested prompt length (tokens)
  int64_t prompt_tokens = 0; // actual
  double depth = 0;          // where the key/needle sits, 0 = start .. 1 = end
  std::string expected, generated;
  bool correct = false;
  double seconds = 0;
  double decode_tokens_per_s = 0;  // of the answer's generation (prefill excluded)
  std::vector<int32_t> prompt;  // the prompt's token ids (BOS first), for reference runs
};

// Passkey prompt (Mohtashami & Jaggi 2023, "Landmark Attention"): the filler "The grass is green.
// The sky is blue. The sun is yellow. Here we go. There and back again." repeated around the key
// line "The pass key is {n}. Remember it. {n} is the pass key." at `depth`, ending "What is the
// pass key? The pass key is". The prompt is close to `length` tokens (BOS included).
Status passkey_prompt(const Tokenizer& tok, int64_t length, int64_t passkey, double depth, std::vector<int32_t>* ids);
// The first run of decimal digits in an answer ("" when none): a passkey or needle trial is
// correct when it equals the key.
std::string first_number(const std::string& answer);
// Greedy-decodes `answer_tokens` tokens after the prompt; correct when the first number in the
// answer equals the key.
Status run_retrieval(model::Model* m, const std::vector<int32_t>& prompt, const std::string& expected,
                     int64_t answer_tokens, RetrievalTrial* trial);
// Prompt and answer together stay within the model's trained context (config().context_length):
// a length above context_length fails naming it (unless Model::allow_past_context); a length
// between context_length - answer tokens and context_length asks for a prompt that leaves room for
// the answer. Each trial records the requested length and the prompt's real size (prompt_tokens).
// prompts_only = true builds the same prompts (same seed, same keys)
// without running the model, for dumping them to a reference implementation.
Status passkey(model::Model* m, const std::vector<int64_t>& lengths, int64_t trials, uint64_t seed,
               const ProgressFn& progress, std::vector<RetrievalTrial>* out, bool prompts_only = false);

// Needle in a haystack: the needle "The secret number of the treasure is {n}." placed after the
// verse nearest to `depth` of a haystack of consecutive KJV verses (starting at a verse chosen by
// the seed), then "\nWhat is the secret number of the treasure? The secret number of the treasure is".
Status niah_prompt(const Tokenizer& tok, const std::string& haystack_text, int64_t length, int64_t number, double depth,
                   uint64_t seed, std::vector<int32_t>* ids);
Status niah(model::Model* m, const std::string& haystack_text, const std::vector<int64_t>& lengths,
            const std::vector<double>& depths, int64_t trials, uint64_t seed, const ProgressFn& progress,
            std::vector<RetrievalTrial>* out, bool prompts_only = false);

// Wilson score interval (Wilson 1927) of a binomial proportion: `successes` of `n` trials, z
// standard normal quantiles wide (1.96: 95%). Unlike the normal approximation it stays inside
// [0, 1] and is not empty at 0 or n successes, which matters for the few prompts per point that an
// evaluation on CPU can afford. n = 0 gives [0, 1].
void wilson_interval(int64_t successes, int64_t n, double z, double* lo, double* hi);

// ---- KV cache figures of the CLI's outputs ----

// Parses the --kv-dtype option (f32 | bf16 | int8), naming the bad value.
Status kv_storage_option(const std::string& dtype, kv::KvStorage* out);
// Peak resident set size of this process so far (getrusage ru_maxrss), in bytes.
int64_t peak_rss_bytes();
// {kv_policy, kv_dtype, kv_bytes_allocated, kv_bytes_in_use, kv_bytes_in_use_per_layer,
//  kv_tokens_per_layer, peak_rss_bytes} of a model, for JSON outputs.
nlohmann::json kv_report(const model::Model& m);

}  // namespace attnkit::eval
