// analysis/act.h: the pieces of ACT (Yu et al. 2024, "Unveiling and Harnessing Hidden Attention
// Sinks: Training-Free Attention Calibration", ICML 2024) that run after the exact kernel: finding
// a call's sinks and rescaling the rows' attention to them. The `act` backend (calibration.cc)
// composes them; the tests call them directly.
//
// Definition (what is computed): with A the call's softmax attention, the sinks of a multi-row call
// on head h are the key slots j, other than the sequence's first token, that at least kMinRows rows
// of the call see and whose column mean over those rows exceeds the threshold. Each row then gets
//   o' = beta o_S + (1 - beta m_S) / (1 - m_S) (o - o_S),  m_S = sum_{j in S} A_ij,
//   o_S = sum_{j in S} A_ij v_j.
//
// How (no attention matrix is formed; the kernel's LSE turns a logit into a probability):
//   1. candidates: column means from sampled blocks of kBlockRows consecutive rows (one sgemm per
//      block and kv head); a key with at least kMinRows sampled rows and a sampled mean above
//      kCandidateFraction x threshold is a candidate (at most kMaxCandidates per head, the largest).
//      Blocks are evenly spaced, kSampleBlocks of them, and on a sliding-window call close enough
//      that every window holds a whole block, so each key is sampled by the rows that see it. The
//      keys that only the last kTailRows rows see (the call's last tokens, whose column means rest
//      on a few rows each) are scored by all of those rows instead.
//   2. key_probs: A_ij of every row on the candidate keys, from the rows' dot products with them
//      and the kernel's LSE.
//   3. select_sinks: the exact column means of the candidates from those probabilities; a candidate
//      above the threshold is a sink. A reported sink is therefore exact; a sink is missed only if
//      its sampled mean is below kCandidateFraction x threshold.
//   4. correct: the rescaling above, from the same probabilities, over the rows that see a sink.
#pragma once

#include <cstdint>
#include <vector>

#include "attnkit/model.h"

namespace attnkit::analysis::act {

inline constexpr int64_t kMinRows = 8;
inline constexpr int64_t kSampleBlocks = 8;
inline constexpr int64_t kBlockRows = 8;
inline constexpr double kCandidateFraction = 0.5;
inline constexpr int64_t kMaxCandidates = 64;
inline constexpr int64_t kTailRows = 64;

// Per head: key slots (ascending) and the probabilities of every row of the call on them.
struct KeyProbs {
  std::vector<std::vector<int32_t>> keys;  // [heads] slots
  std::vector<std::vector<float>> p;       // [heads][n * keys[h].size()], 0 where a row does not see the key
};

// Buffers that a backend keeps from call to call.
struct Scratch {
  std::vector<float> qpack, colsum, tailsum;
  std::vector<int64_t> sampled;
  KeyProbs probs;
};

// OK when the call is one whose logits ACT can recompute: batch 1, f32, causal bottom-right, no
// per-head or per-key logit changes beyond scale and softcap, unit stride in head_dim.
Status check_call(const model::AttentionCall& c);

// Step 1: candidate slots per head (empty for heads with on[h] == 0). lse: [heads, n] of the call.
void candidates(const model::AttentionCall& c, const float* lse, const std::vector<char>& on, double threshold,
                Scratch* sc, std::vector<std::vector<int32_t>>* out);
// Step 2: probabilities of every row on keys[h] (ascending slots).
void key_probs(const model::AttentionCall& c, const float* lse, std::vector<std::vector<int32_t>> keys, KeyProbs* out);
// Step 3: per head, the indices into probs.keys[h] of the sinks.
void select_sinks(const model::AttentionCall& c, const KeyProbs& probs, double threshold,
                  std::vector<std::vector<int32_t>>* sinks);
// Step 4: rescales c.out in place; sinks[h] indexes probs.keys[h].
void correct(const model::AttentionCall& c, const KeyProbs& probs, const std::vector<std::vector<int32_t>>& sinks,
             double beta);

// Steps 1-3: the sink slots per head of a multi-row call.
Status find_sinks(const model::AttentionCall& c, const float* lse, const std::vector<char>& on, double threshold,
                  Scratch* sc, std::vector<std::vector<int64_t>>* slots);

// SIMD helpers (act_simd.cc).
float dot(const float* a, const float* b, int64_t n);
// acc[j] += exp(f(s[j]) - shift) for j < n, f(x) = cap tanh(x / cap) when cap > 0, else x.
void add_exp(const float* s, int64_t n, float shift, float cap, float* acc);
// o = keep o + sum_k coef[k] v[k] over dv entries.
void rescale_row(float* o, int64_t dv, float keep, const float* coef, const float* const* v, int64_t nv);

}  // namespace attnkit::analysis::act
