// attnkit/analysis.h: instruments that measure attention in a real model, and calibration backends
// that edit it at inference.
//
// Instruments (each reads the model through taps, see attnkit/model.h, and returns a report that
// to_json() in the CLI and the Python package serialize):
//   sinks               attention each of the first k tokens receives, the sink rate Sink_1^eps
//                       (Gu et al. 2025, "When Attention Sink Emerges in Language Models"), sinks in
//                       mid-sequence (columns whose mean exceeds a threshold, as ACT finds them: Yu et
//                       al. 2024, "Unveiling and Harnessing Hidden Attention Sinks"), and the key norms
//                       and query-key cosines of the first token (the "key bias" finding).
//   entropy             per head, mean attention entropy normalized by ln(visible keys), the spectral
//                       gap of a short window's attention matrix, and the log-normal fit of the
//                       attention entries (Nahshan et al. 2024, "Linear Log-Normal Attention").
//   massive activations residual-stream entries with |x| > 100 and >= 1000x their row's median
//                       magnitude (Sun et al. 2024, "Massive Activations in Large Language Models"),
//                       and perplexity when they are set to their mean or to zero.
//   retrieval heads     the retrieval score (Wu et al. 2024, "Retrieval Head Mechanistically Explains
//                       Long-Context Factuality") and RazorAttention's induction and echo scores
//                       (Tang et al. 2024), written as head maps that the kv policies duo / razor read.
//
// Attention probabilities are recomputed from the tapped post-RoPE queries and the cache's keys
// (sgemm, then a softmax per row in f64 sums), chunk by chunk, so 4K tokens never hold more than
// one chunk's [heads, chunk, n_kv] block.
//
// Calibration backends (registered with model::register_attention_backend, so every
// `--attention` option accepts them; both run the exact tile kernel and fix its output up with
// O(n) work, no attention matrix):
//   act:heads=L.H+L.H|all|FILE,beta=0.4,threshold=0.1      ACT (Yu et al. 2024)
//   zerotuning:gamma=G,heads=L.H+...|all                   ZeroTuning (Han et al. 2025)
//   mask_heads:heads=L.H+...                               zero the attention output of heads
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "attnkit/model.h"
#include "attnkit/tokenizer.h"
#include "attnkit/status.h"
#include "attnkit/tokenizer.h"

namespace attnkit::analysis {

// ---- attention probabilities, block by block ----

// One layer's attention for n query rows at positions pos0 .. pos0 + n - 1 over keys 0 .. n_kv - 1.
struct AttentionBlock {
  int64_t layer = 0;
  int64_t pos0 = 0, n = 0, n_kv = 0;
  int64_t n_head = 0, n_head_kv = 0, head_dim = 0;
  int64_t window_left = -1;       // row at position p sees keys max(0, p - window_left) .. p; -1 = all
  const float* probs = nullptr;   // [n_head, n, n_kv], zero where masked; each row sums to 1
  const float* q_post = nullptr;  // [n, n_head, head_dim]
  const float* k_post = nullptr;  // [n_kv, n_head_kv, head_dim]
  const int32_t* tokens = nullptr;  // [n_kv] token ids of positions 0 .. n_kv - 1 (null if unknown)
};
using BlockVisitor = std::function<void(const AttentionBlock&)>;
// Something that produces blocks in order: layer-major within a chunk, chunks in position order.
using BlockSource = std::function<Status(const BlockVisitor&)>;

// Softmax probabilities of n query rows (causal, bottom-right: row i sits at q_pos0 + i) with the
// model's logit rules (scale, optional tanh softcap, sliding window). q: [n, n_head, head_dim],
// k: [n_kv, n_head_kv, head_dim]; probs: [n_head, n, n_kv].
Status attention_probs(const float* q, int64_t n, int64_t n_head, const float* k, int64_t n_kv, int64_t n_head_kv,
                       int64_t head_dim, int64_t q_pos0, float scale, float softcap, int64_t window_left, float* probs,
                       int threads);

// BOS + the first n - 1 tokens of text[offset..] (the instruments' KJV inputs in the CLI and Python).
Status text_tokens(const Tokenizer& tokenizer, const std::string& text, int64_t offset, int64_t n,
                   std::vector<int32_t>* ids);

// Resets the model, runs `tokens` through it and calls visit for every layer of every prefill chunk.
Status stream_attention(model::Model* m, const std::vector<int32_t>& tokens, const BlockVisitor& visit);
// The same, as a BlockSource.
BlockSource model_source(model::Model* m, const std::vector<int32_t>& tokens);

// Keys visible to the row at position p (causal, window_left as above).
inline int64_t visible_keys(int64_t p, int64_t window_left) { return window_left < 0 ? p + 1 : std::min(p, window_left) + 1; }

// ---- sinks ----
struct SinkOptions {
  int64_t first_k = 4;          // report alpha_k for k = 0 .. first_k - 1
  double eps = 0.3;             // Sink_1^eps threshold (Gu et al. 2025)
  double mid_threshold = 0.1;   // a later token is a sink when its column mean exceeds this (ACT)
  int64_t min_rows = 16;        // a column mean needs at least this many rows that see the token
};
struct HeadSinks {
  int64_t layer = 0, head = 0;
  std::vector<double> alpha;    // [first_k] mean attention token k receives from rows that see it
  int64_t mid_sinks = 0;        // tokens k >= 1 with column mean > mid_threshold
  double key_norm_first = 0;    // ||k_0|| (post-RoPE) of the head's kv head
  double key_norm_other = 0;    // mean ||k_j||, j >= 1
  double cos_first = 0;         // mean over rows of cos(q_i, k_0)
  double cos_other = 0;         // mean over rows of the mean over visible j >= 1 of cos(q_i, k_j)
};
struct MidSink {
  int64_t layer = 0, head = 0, position = 0;
  int32_t token = -1;
  double alpha = 0;             // column mean
};
struct SinkReport {
  int64_t n_layer = 0, n_head = 0, n_samples = 0, n_tokens = 0;
  SinkOptions options;
  std::vector<HeadSinks> heads;  // [n_layer * n_head], averaged over samples
  double sink_rate = 0;          // fraction of (sample, layer, head) with alpha_0 > eps, in [0, 1]
  double mid_sink_heads = 0;     // fraction of (sample, layer, head) with at least one mid-sequence sink
  std::vector<MidSink> mid;      // every mid-sequence sink of every sample
};
// One sample; call again per sample and combine with merge_sinks (analyze_sinks does both).
Status sinks_from_blocks(const BlockSource& source, int64_t n_layer, int64_t n_head, const SinkOptions& options,
                         SinkReport* out);
Status analyze_sinks(model::Model* m, const std::vector<std::vector<int32_t>>& samples, const SinkOptions& options,
                     SinkReport* out);

// ---- entropy and concentration ----
struct EntropyOptions {
  int64_t spectral_window = 64;  // rows and keys of the window matrix
  int64_t spectral_start = -1;   // first position of the window; -1 = the last window of the input
  int64_t lognormal_row_stride = 4;  // fit the log-normal on every this-many-th row
};
struct HeadEntropy {
  int64_t layer = 0, head = 0;
  double entropy = 0;          // mean over rows (with >= 2 visible keys) of H_i / ln(visible_i), in [0, 1]
  double entropy_nats = 0;     // mean H_i
  double spectral_gap = 0;     // 1 - |lambda_2| of the row-renormalized window matrix
  double log_mu = 0, log_sigma = 0;   // mean, standard deviation of ln(visible_i * A_ij)
  double log_skew = 0, log_kurtosis = 0;  // of the same; 0 and 0 for an exact log-normal
};
struct EntropyReport {
  int64_t n_layer = 0, n_head = 0, n_tokens = 0;
  EntropyOptions options;
  std::vector<HeadEntropy> heads;  // [n_layer * n_head]
};
Status entropy_from_blocks(const BlockSource& source, int64_t n_layer, int64_t n_head, int64_t n_tokens,
                           const EntropyOptions& options, EntropyReport* out);
Status analyze_entropy(model::Model* m, const std::vector<int32_t>& tokens, const EntropyOptions& options,
                       EntropyReport* out);
// Eigenvalue moduli of a causal (lower-triangular) row-stochastic matrix [w, w], sorted descending.
// A triangular matrix's eigenvalues are its diagonal; the general solver in the tests checks this.
std::vector<double> causal_window_spectrum(const std::vector<double>& a, int64_t w);

// ---- massive activations ----
struct MassiveOptions {
  double abs_threshold = 100;   // |x| > this
  double median_ratio = 1000;   // and |x| >= this * median(|row|)
};
struct MassiveActivation {
  int64_t layer = 0, position = 0, dim = 0;
  int32_t token = -1;
  double value = 0, row_median = 0;
};
struct LayerMagnitudes {
  int64_t layer = 0;
  double max_abs = 0;          // largest |x| in the layer's output
  double median_abs = 0;       // median over rows of the row's median |x|
  int64_t massive = 0;         // entries that meet both criteria
  int64_t max_position = 0, max_dim = 0;
};
struct MassiveReport {
  int64_t n_layer = 0, n_embd = 0, n_tokens = 0;
  MassiveOptions options;
  std::vector<MassiveActivation> found;  // every massive entry
  std::vector<LayerMagnitudes> layers;
  // The published ablation: at the layer where the dimension of the largest activation first turns
  // massive on the first token, every entry of the dimensions massive on the first token there that
  // meets the criteria is set to zero, or to the mean of that dimension's massive entries, and
  // held-out text is scored.
  double seconds_detect = 0;
  int64_t ablation_layer = -1;
  std::vector<int64_t> ablation_dims;
  int64_t eval_tokens = 0;
  double ppl_original = 0, ppl_mean = 0, ppl_zero = 0;
};
// Entries of rows x [n, dim] that meet the criteria (row_median is the median |x| of the row).
std::vector<MassiveActivation> detect_massive(const float* x, int64_t n, int64_t dim, const MassiveOptions& options);
Status analyze_massive(model::Model* m, const std::vector<int32_t>& tokens, const std::vector<int32_t>& eval_tokens,
                       const MassiveOptions& options, MassiveReport* out);
// Perplexity of ids[1..] given their prefixes (one forward; the model is reset first).
Status perplexity(model::Model* m, const std::vector<int32_t>& ids, double* out);

// ---- retrieval, induction and echo heads ----
struct NeedlePrompt {
  std::vector<int32_t> tokens;
  int64_t needle_begin = 0, needle_end = 0;  // token span of the needle (what must be copied)
  int64_t length = 0;
  double depth = 0;
};
struct RetrievalOptions {
  int64_t max_new_tokens = 10;
  double threshold = 0.1;     // a head with score > threshold is a retrieval head
  double min_recall = 0.5;    // samples whose answer recalls fewer needle tokens are not counted
};
struct RetrievalReport {
  int64_t n_layer = 0, n_head = 0, n_head_kv = 0;
  RetrievalOptions options;
  std::vector<double> score;      // [n_layer * n_head] retrieval score in [0, 1]
  int64_t prompts = 0, counted = 0;
  double answer_recall = 0;       // mean over prompts of the fraction of needle tokens answered
  std::vector<double> induction;  // [n_layer * n_head] RazorAttention induction score
  std::vector<double> echo;       // [n_layer * n_head] echo score
  int64_t copy_segment = 0, copy_repeats = 0;
};
// Greedy-decodes after each prompt; at every step a head scores 1/|needle| when its top-1 attended
// position lies in the needle and the generated token equals the token there (each needle position
// counts once per prompt). Averaged over the prompts whose answer recalls >= min_recall of the needle.
Status retrieval_scores(model::Model* m, const std::vector<NeedlePrompt>& prompts, const RetrievalOptions& options,
                        RetrievalReport* out);
// RazorAttention: a random token segment of `segment` tokens repeated `repeats` times; induction
// score = mean over rows i in later repeats of A[i, i - segment + 1], echo = mean A[i, i - segment].
Status induction_echo_from_blocks(const BlockSource& source, int64_t n_layer, int64_t n_head, int64_t segment,
                                  int64_t repeats, std::vector<double>* induction, std::vector<double>* echo);
Status induction_echo(model::Model* m, int64_t segment, int64_t repeats, uint64_t seed, RetrievalReport* out);
// The repeated random-token sequence induction_echo uses (token ids drawn from [lo, hi)).
std::vector<int32_t> repeated_random_tokens(int64_t segment, int64_t repeats, uint64_t seed, int32_t lo, int32_t hi);

// NIAH prompts (eval::niah_prompt, the needle "The secret number of the treasure is N.") at every
// (length, depth), lengths outer; each prompt's number and haystack start come from one generator
// seeded with `seed`, and the needle span is the number's tokens inside the prompt. The CLI's
// `analyze retrieval-heads` and the Python package build their prompts here.
Status needle_prompts(const Tokenizer& tokenizer, const std::string& haystack_text, const std::vector<int64_t>& lengths,
                      const std::vector<double>& depths, uint64_t seed, std::vector<NeedlePrompt>* out);

// Head-map files (docs/kv.md, "Head maps") that the kv policies duo and razor read. Query-head
// scores [n_layer * n_head] become kv-head scores by the maximum over each GQA group.
Status write_head_map_scores(const std::string& path, int64_t n_layer, int64_t n_head, int64_t n_head_kv,
                             const std::vector<double>& query_scores, const std::string& what);
// RazorAttention's rule: the top `induction_ratio` of kv heads by induction score and the top
// `echo_ratio` by echo score keep their whole cache (a "full" list).
Status write_razor_head_map(const std::string& path, int64_t n_layer, int64_t n_head, int64_t n_head_kv,
                            const std::vector<double>& induction, const std::vector<double>& echo,
                            double induction_ratio = 0.14, double echo_ratio = 0.01);

// ---- calibration ----
// Which (layer, query head) pairs a backend acts on: "all", "L.H+L.H+..." or a JSON file with
// {"heads": [[L, H], ...]}.
struct HeadSet {
  bool all = false;
  std::vector<std::pair<int64_t, int64_t>> heads;
  bool contains(int64_t layer, int64_t head) const;
  bool any_in_layer(int64_t layer) const;
};
Status parse_head_set(const std::string& value, const std::string& param, HeadSet* out);

// ZeroTuning: per head, log(gamma) added to token 0's logit. A per-head gamma table for fits.
struct ZeroTuningFit {
  std::vector<double> gammas;           // candidates tried
  std::vector<double> entropy;          // mean next-token entropy (nats) for each candidate
  std::vector<double> perplexity;       // perplexity on the same text (a check, not the objective)
  double best_gamma = 1;
  std::string heads;
};
// Unsupervised fit (Han et al. 2025): the gamma among `gammas` that minimizes the mean entropy of
// the next-token distribution over `tokens`, applied to `heads` of every layer.
Status zerotuning_fit(model::Model* m, const std::vector<int32_t>& tokens, const std::vector<double>& gammas,
                      const std::string& heads, ZeroTuningFit* out);

// ---- calibration evaluation (`attnkit analyze calibration-eval`) ----

// Accuracies get eval::wilson_interval (attnkit/eval.h).
// Percentile bootstrap interval (2.5% and 97.5% quantiles of `resamples` resampled means, fixed
// seed) of the mean of x. For paired comparisons pass the per-unit differences.
void bootstrap_mean_interval(const std::vector<double>& x, int64_t resamples, uint64_t seed, double* lo, double* hi);

// A 4-way next-word cloze item: after tokens[0 .. position], which of choices comes next?
// choices[0] is the true next token; the others are distractors.
struct ClozeItem {
  int64_t position = 0;
  int32_t choices[4] = {0, 0, 0, 0};
};
// Items from a tokenized passage: at every position p >= min_context (at least `stride` after the
// previous item) whose next token is a whole-word token (a space, then letters only), three
// distractors are drawn from the word tokens of `pool` (occurrences, so common words are drawn
// as often as they occur), distinct from each other and from the true token.
Status make_cloze_items(const Tokenizer& tok, const std::vector<int32_t>& tokens, const std::vector<int32_t>& pool,
                        int64_t min_context, int64_t stride, uint64_t seed, std::vector<ClozeItem>* out);
// 1 for each item whose true token has a higher logit than all three distractors, else 0.
Status score_cloze(model::Model* m, const std::vector<int32_t>& tokens, const std::vector<ClozeItem>& items,
                   std::vector<double>* correct);

}  // namespace attnkit::analysis
