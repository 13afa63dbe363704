// Naive double-precision references of the linear family (attnkit/linear.h). Token-by-token
// recurrences written straight from the papers; never optimized, never used by the fast paths.
#pragma once

#include <cstdint>
#include <vector>

#include "attnkit/linear.h"

namespace attnkit {
namespace reference {

// The recurrence of linear.h in double: S_t = diag(a_t) S_{t-1} + phi(k_t) [v_t, 1]^T (or the delta
// rule), y_t = scale S_t^T phi(q_t), then the normalization. Feature maps are recomputed here in
// double (Katharopoulos et al. 2020; Choromanski et al. 2021; Qin et al. 2022; Arora et al. 2024;
// Zhang et al. 2024; Nauen et al. 2024; Mongaras et al. 2024; Nahshan et al. 2024; Sun et al. 2023;
// Qin et al. 2024; Yang et al. 2024 (GLA, DeltaNet); Qin et al. 2024 (HGRN2); Yang et al. 2025).
// out: [batch, seq, heads_q, head_dim_v] dense; final_state: [n_states, heads_q, F, Dv'] (optional).
// The initial state, when given, is params.maybe_initial_state (f32) or maybe_initial (double).
Status linear_attention_ref(const TensorView& q, const TensorView& k, const TensorView& v,
                            const LinearAttentionParams& params, std::vector<double>* out,
                            std::vector<double>* maybe_final_state = nullptr,
                            const std::vector<double>* maybe_initial = nullptr);

// Causal softmax attention of one sequence in double (for Aaren / Performer / Based checks):
// q [Tq, d], k [Tk, d], v [Tk, dv] row-major; query i sees keys j <= i + Tk - Tq and, when
// window >= 0, only j >= i + Tk - Tq - window. Returns [Tq, dv].
std::vector<double> softmax_attention_ref(const std::vector<double>& q, const std::vector<double>& k,
                                          const std::vector<double>& v, int64_t tq, int64_t tk, int64_t d,
                                          int64_t dv, double scale, bool causal, int64_t window = -1);

// Aaren (Feng et al. 2024): o_t = softmax_{j<=t}(scale q_h . k_j) v_j per head, by the sequential
// (m, c, a) recurrence in double. query [heads, d]; out [batch, seq, heads, dv] dense.
void aaren_ref(const float* query, const TensorView& k, const TensorView& v, double scale, std::vector<double>* out);

// Titans memory (Behrouz et al. 2025), in double, with the chunk rule of attnkit::TitansParams.
// state: [batch, heads, titans_state_floats] f32 initial weights; out dense [batch, seq, heads, dv].
void titans_ref(const TensorView& q, const TensorView& k, const TensorView& v, const TitansParams& params,
                const float* state, std::vector<double>* out, std::vector<double>* final_state);

// Infini-attention (Munkhdalai et al. 2024) for one sequence (batch 1) from an empty memory.
void infini_ref(const TensorView& q, const TensorView& k, const TensorView& v, const InfiniParams& params,
                std::vector<double>* out);

}  // namespace reference
}  // namespace attnkit
