// RULER-style synthetic long-context tasks (src/eval/ruler.cc).
//
// The tasks follow the definitions of RULER (Hsieh et al. 2024, "RULER: What's the Real Context
// Size of Your Long-Context Language Models?", arXiv:2404.06654; task generators in NVIDIA/RULER
// scripts/data/synthetic/, prompt templates in constants.py, metric string_match_all), generated
// here from local material only:
//
//   niah_single      one needle "One of the special magic numbers for {key} is: {value}." in a
//                    haystack of consecutive KJV verses (RULER's essay haystack); key = two words
//                    joined by '-' (RULER: adjective-noun), value = a 7-digit number.
//   niah_multikey    four needles with different keys, one of them asked for (RULER niah_multikey_1).
//   niah_multivalue  four needles with the same key and different values, all asked for.
//   vt               variable tracking: one chain "VAR AAAAA = 12345", "VAR BBBBB = VAR AAAAA ", ...
//                    of 4 hops inserted into the repeated noise sentences; the answer is every
//                    variable of the chain. One worked example (a short chain with its answer)
//                    precedes the task, as in RULER.
//   cwe              common-word extraction: a numbered list in which 10 words appear freq_cw times
//                    and the others freq_ucw times (30/3 from 4096 tokens, 6/1 below, as RULER);
//                    the answer is the 10 common words. One worked example precedes the task.
//
// Words (keys, cwe lists) come from the KJV text's vocabulary: lower-case alphabetic words of at
// least 3 letters, sorted. Every sample is a pure function of (task, length, seed, tokenizer,
// text): the same inputs give the same prompt, ids and answers.
//
// Sizing: the largest haystack (verses, noise lines, list words) such that prompt tokens (BOS
// included) + the task's answer tokens <= length, found by binary search with the model's
// tokenizer, as RULER does. Prompts end with RULER's answer prefix (the "base" template).
//
// Scoring (RULER string_match_all): the fraction of expected strings that occur in the output,
// compared case-insensitively. A sample scores 1 only when every expected string is there.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "attnkit/model.h"
#include "attnkit/status.h"
#include "attnkit/eval.h"

namespace attnkit {
class Tokenizer;
}

namespace attnkit::eval {

// Task names in the order `attnkit eval ruler` runs them by default.
std::vector<std::string> ruler_task_names();

// Material for the generators, built once from the KJV text (see kjv_text()).
struct RulerCorpus {
  std::vector<std::string> verses;  // one per line of the text, in order
  std::vector<std::string> words;   // vocabulary, sorted, unique
};
Status make_ruler_corpus(const std::string& kjv, RulerCorpus* out);

// A piece of the context the answer depends on (a needle, a chain statement).
struct RulerInsert {
  std::string text;
  // Fraction of the context's tokens (the part between the task's instruction and its question)
  // that come before this insert, in [0, 1].
  double depth = 0;
};

struct RulerSample {
  std::string task;
  int64_t length = 0;          // requested length: prompt tokens + answer_tokens <= length
  int64_t answer_tokens = 0;   // tokens to generate (RULER's tokens_to_generate)
  std::string context;         // the haystack with the inserts
  std::string prompt;          // the whole prompt text: example, instruction, context, question, answer prefix
  std::vector<int32_t> ids;    // tokens of prompt, BOS first
  std::vector<std::string> answers;  // every one must occur in the output
  std::vector<RulerInsert> inserts;  // needles / chain statements, in context order (empty for cwe)
};

// Builds one sample. Fails naming the parameter for an unknown task, a length too small for the
// task's fixed text (below 256 tokens) or a seed that cannot fit a haystack.
Status ruler_sample(const Tokenizer& tok, const RulerCorpus& corpus, const std::string& task, int64_t length,
                    uint64_t seed, RulerSample* out);

// RULER's string_match_all for one output: matched answers / answers, case-insensitive.
double ruler_score(const std::string& output, const std::vector<std::string>& answers);

struct RulerTrial {
  RulerSample sample;
  std::string generated;
  double score = 0;
  double seconds = 0;
};

struct RulerOptions {
  std::vector<std::string> tasks;  // empty = ruler_task_names()
  std::vector<int64_t> lengths;
  int64_t samples = 1;             // per task and length
  uint64_t seed = 1;
  int64_t max_answer_tokens = 0;   // > 0: generate at most this many tokens (caps the task's own count)
  bool prompts_only = false;       // build the samples without running the model
};

// Runs every task x length x sample: greedy generation after the prompt, scored by ruler_score.
// Sample s of a (task, length) uses a seed derived from options.seed, the task's name, the length
// and s, so adding a task or a length leaves the other samples unchanged.
Status ruler(model::Model* m, const RulerCorpus& corpus, const RulerOptions& options, const ProgressFn& progress,
             std::vector<RulerTrial>* out);

}  // namespace attnkit::eval
