// attnkit/linear.h: linear and recurrent attention (one state-space engine for the linear family).
//
// A mechanism is   feature map  x  decay  x  update rule  x  normalization.
// Per (sequence, query head) the engine keeps an f32 state S of [F, Dv'] where F is the feature
// dimension of the map (linear_feature_dim) and Dv' = head_dim_v (+1 with the denominator
// normalization: the running key-feature sum z is stored as one extra value column of ones, so the
// numerator and the denominator share every code path). With qf = phi_q(q_t), kf = phi_k(k_t):
//
//   additive rule:  S_t = diag(a_t) S_{t-1} + kf_t [v_t, 1]^T
//   delta rule:     S' = a_t S_{t-1};  u_t = beta_t (v_t - S'^T kf_t);  S_t = S' + kf_t u_t^T
//                   (DeltaNet, Schlag et al. 2021 / Yang et al. 2024; Gated DeltaNet, Yang et al. 2025)
//   readout:        y_t = scale * S_t^T qf_t          (inclusive: token t sees itself)
//   normalization:  none:        o_t = y_t[0:Dv]
//                   denominator: o_t = y_t[0:Dv] / (y_t[Dv] + eps)      (Katharopoulos et al. 2020)
//                   output_rms:  o_t = y_t / sqrt(mean(y_t^2) + eps)  (TransNormer NormAttention,
//                                Qin et al. 2022; the weightless SRMSNorm of TransNormerLLM)
//   decay a_t = e^{g_t}: none (g = 0); per head (g_t = log_decay[h], RetNet, Lightning); a scalar
//   log-gate per step (Simple GLA / Mamba2-like); a vector log-gate per step over the F features
//   (GLA, HGRN2). Gates are log-decays, g <= 0; they are never exponentiated cumulatively in a way
//   that can overflow (see docs/linear.md: every exp() is of a difference b_i - b_j <= 0).
//
// Three forms compute the same function and are tested against each other and against the
// double-precision reference in src/reference/linear_ref.h:
//   kParallel  quadratic in the sequence, pairwise decays e^{b_i - b_j}; for checking only;
//   kChunked   Lightning Attention-2 / fla-style: quadratic inside a chunk of chunk_size tokens,
//              a running state across chunks; the delta rule uses the UT (WY) transform per chunk;
//   kRecurrent one token at a time; a decode step is a call with seq = 1.
//
// Tensors (BSHD, any strides, f32 | f16 | bf16 for q, k, v):
//   q:   [batch, seq, heads_q,  head_dim]      k: [batch, seq, heads_kv, head_dim]
//   v:   [batch, seq, heads_kv, head_dim_v]    out: [batch, seq, heads_q, head_dim_v] (any dtype)
//   gate (f32): [batch, seq, heads_q, 1] for kScalarGate, [batch, seq, heads_q, F] for kVectorGate
//   beta (f32): [batch, seq, heads_q, 1] for the delta rule (typically sigmoid outputs in (0, 1))
//   broadcast: heads_q % heads_kv == 0; query head h reads kv head h / (heads_q / heads_kv); the
//   state is per query head.
// Packed variable length: maybe_cu_seqlens (int32, n_seqs + 1 offsets), batch = 1, seq = total.
// States: [n_states, heads_q, F, Dv'] f32 contiguous, n_states = n_seqs (varlen) or batch.
// maybe_initial_state may equal maybe_final_state (in-place decode).
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/status.h"
#include "attnkit/tensor.h"

namespace attnkit {

enum class FeatureMap : uint8_t {
  kIdentity = 0,   // phi(x) = x
  kEluPlusOne,     // phi(x) = elu(x) + 1                                  (Katharopoulos et al. 2020)
  kRelu,           // phi(x) = max(x, 0)
  kL2Norm,         // phi(x) = x / |x|                                      (DeltaNet q/k normalization)
  kPerformer,      // FAVOR+: exp(W x' - |x'|^2/2) / sqrt(m), x' = x d^{-1/4} (Choromanski et al. 2021)
  kCosformer,      // [relu(x) cos(pi i / 2M), relu(x) sin(pi i / 2M)]      (Qin et al. 2022)
  kTaylor2,        // [1, c x, c^2 vec(x (x) x)/sqrt(2)], phi(q).phi(k) = 1 + s + s^2/2, s = T q.k
                   // (Based, Arora et al. 2024; TaylorShift, Nauen et al. 2024 with l2-normalized x)
  kHedgehog,       // [softmax(W x + b), softmax(-(W x + b))], W, b caller-supplied (Zhang et al. 2024)
  kCosine,         // Cottention: x/|x|, output scaled by n^{-sigmoid(c_h)}  (Mongaras et al. 2024)
  kLogNormal,      // LLN: phi_q = exp(alpha q), phi_k = exp(beta k)        (Nahshan et al. 2024)
};

template <>
struct EnumNames<FeatureMap> {
  static constexpr EnumName<FeatureMap> kTable[] = {
      {FeatureMap::kIdentity, "identity"}, {FeatureMap::kEluPlusOne, "elu1"},   {FeatureMap::kRelu, "relu"},
      {FeatureMap::kL2Norm, "l2norm"},     {FeatureMap::kPerformer, "performer"}, {FeatureMap::kCosformer, "cosformer"},
      {FeatureMap::kTaylor2, "taylor2"},   {FeatureMap::kHedgehog, "hedgehog"}, {FeatureMap::kCosine, "cosine"},
      {FeatureMap::kLogNormal, "lognormal"},
      {FeatureMap::kEluPlusOne, "elu+1"},  {FeatureMap::kEluPlusOne, "elu"}};  // aliases
};

enum class DecayKind : uint8_t { kNone = 0, kPerHead, kScalarGate, kVectorGate };
template <>
struct EnumNames<DecayKind> {
  static constexpr EnumName<DecayKind> kTable[] = {{DecayKind::kNone, "none"},
                                                   {DecayKind::kPerHead, "per_head"},
                                                   {DecayKind::kScalarGate, "scalar_gate"},
                                                   {DecayKind::kVectorGate, "vector_gate"}};
};
enum class UpdateRule : uint8_t { kAdditive = 0, kDelta };
template <>
struct EnumNames<UpdateRule> {
  static constexpr EnumName<UpdateRule> kTable[] = {{UpdateRule::kAdditive, "additive"}, {UpdateRule::kDelta, "delta"}};
};
enum class LinearNorm : uint8_t { kNone = 0, kDenominator, kOutputRms };
template <>
struct EnumNames<LinearNorm> {
  static constexpr EnumName<LinearNorm> kTable[] = {
      {LinearNorm::kNone, "none"}, {LinearNorm::kDenominator, "denominator"}, {LinearNorm::kOutputRms, "output_rms"}};
};
enum class LinearForm : uint8_t { kAuto = 0, kParallel, kChunked, kRecurrent };
template <>
struct EnumNames<LinearForm> {
  static constexpr EnumName<LinearForm> kTable[] = {{LinearForm::kAuto, "auto"},
                                                    {LinearForm::kParallel, "parallel"},
                                                    {LinearForm::kChunked, "chunked"},
                                                    {LinearForm::kRecurrent, "recurrent"}};
};

inline const char* feature_map_name(FeatureMap f) { return enum_name(f); }
// Accepts the canonical names and the aliases "elu+1" and "elu" for elu1.
inline bool parse_feature_map(const std::string& s, FeatureMap* out) { return parse_enum(s, out); }

struct LinearAttentionParams {
  // ---- feature map ----
  FeatureMap feature_map = FeatureMap::kIdentity;
  // Multiplies the readout y_t. NaN = 1/sqrt(head_dim) for kIdentity, kRelu, kEluPlusOne, kL2Norm
  // and kCosine (fla's convention), 1 for the maps that normalize themselves.
  float scale = std::numeric_limits<float>::quiet_NaN();
  // kPerformer: m random features (0 = ceil(d ln d)); the projection [m, head_dim] is taken from
  // maybe_feature_weight or, when null, generated from performer_seed (make_performer_projection).
  int64_t performer_features = 0;
  uint64_t performer_seed = 0;
  // kPerformer: [m, head_dim] row-major. kHedgehog: [heads_q, head_dim, feature_proj_dim] with
  // maybe_feature_bias [heads_q, feature_proj_dim] (optional).
  const float* maybe_feature_weight = nullptr;
  const float* maybe_feature_bias = nullptr;
  int64_t feature_proj_dim = 0;
  // kTaylor2: s = taylor_temperature * q.k (NaN = 1/sqrt(head_dim)); taylor_l2_normalize = true
  // normalizes q and k first (TaylorShift).
  float taylor_temperature = std::numeric_limits<float>::quiet_NaN();
  bool taylor_l2_normalize = false;
  // kCosformer: the horizon M of cos(pi (i - j) / 2M); positions must stay below it.
  double cosformer_max_len = 0;
  // kCosine: per-head c_h (output scaled by (position + 1)^{-sigmoid(c_h)}); null = c_h = 0.
  const float* maybe_cottention_c = nullptr;
  // kLogNormal: exponents (see lln_moment_match for the paper's choice).
  float lln_alpha = 1.0f, lln_beta = 1.0f;

  // ---- decay ----
  DecayKind decay = DecayKind::kNone;
  const float* maybe_head_log_decay = nullptr;  // [heads_q], kPerHead, values <= 0
  TensorView gate;                              // kScalarGate / kVectorGate log-decays, f32, <= 0
  bool tie_key_to_gate = false;                 // HGRN2: kf_t = 1 - e^{g_t} (k is then ignored)

  // ---- update rule ----
  UpdateRule update = UpdateRule::kAdditive;
  TensorView beta;  // delta rule write strength, f32 [batch, seq, heads_q, 1]

  // ---- normalization ----
  LinearNorm norm = LinearNorm::kNone;
  float norm_eps = 1e-6f;

  // ---- execution ----
  LinearForm form = LinearForm::kAuto;  // kAuto: recurrent for seq <= 8, else chunked
  int64_t chunk_size = 64;
  const int32_t* maybe_cu_seqlens = nullptr;
  int64_t n_seqs = 0;
  // Absolute position of each sequence's first token (cosFormer, Cottention); null = 0.
  const int64_t* maybe_start_positions = nullptr;
  const float* maybe_initial_state = nullptr;
  float* maybe_final_state = nullptr;
  int num_threads = 0;  // 0 = OpenMP default
};

// Feature dimension F of the map for this head_dim.
Status linear_feature_dim(const LinearAttentionParams& params, int64_t head_dim, int64_t* out);
// Floats of one (sequence, head) state: F * Dv'.
Status linear_state_floats(const LinearAttentionParams& params, int64_t head_dim, int64_t head_dim_v,
                           int64_t* out);

Status validate_linear_attention(const TensorView& q, const TensorView& k, const TensorView& v,
                                 const TensorView& out, const LinearAttentionParams& params);
Status linear_attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                        const LinearAttentionParams& params);
// The state after the sequence alone (params.maybe_final_state, required), without the outputs:
// the chunked form's state updates only, S = diag(e^{b_n}) S + (Kf * e^{b_n - b})^T V per chunk (the
// delta rule keeps its UT solve, whose pseudo-values the state needs), skipping the intra-chunk
// Q K^T block and the Q S readout: about a third of the chunked FLOPs at C = 64, F = Dv = 128.
// Equals linear_attention's final state up to rounding; params.form is ignored. LASP-2 uses it for
// each rank's chunk contribution (distributed.h).
Status linear_attention_state(const TensorView& q, const TensorView& k, const TensorView& v,
                              const LinearAttentionParams& params);

// The one FLOP formula of the chunked form (what `attnkit bench` and bench/ count), per sequence of
// seq tokens, one head, chunk C, feature dim F, value width Dv' (incl. the denominator column):
//   per full chunk: Q K^T 2C^2F + (A) V 2C^2Dv' + Q S 2CFDv' + K^T V 2CFDv'  (dense C x C blocks:
//   the chunked algorithm computes the whole block and masks it); the delta rule adds the UT
//   solve C^2 Dv' and K S 2CFDv'. Feature maps and elementwise work are not counted.
double linear_chunked_flops(int64_t batch, int64_t seq, int64_t heads, int64_t feature_dim, int64_t dv_cols,
                            int64_t chunk, bool delta_rule);

// FAVOR+ projection [m, d]: blocks of d orthogonal rows (QR of Gaussian blocks), each row scaled to
// the norm of an independent Gaussian vector (Choromanski et al. 2021, section 3.2). Seeded.
void make_performer_projection(int64_t head_dim, int64_t m, uint64_t seed, float* out);
// RetNet per-head log-decays: log(1 - 2^{-5-h}) (Sun et al. 2023).
void retnet_log_decays(int64_t heads, float* out);
// Lightning / TransNormerLLM per-head log-decays: -slope_h with ALiBi-style slopes 2^{-8(h+1)/H}.
void lightning_log_decays(int64_t heads, float* out);
// LLN moment matching (Nahshan et al. 2024): from the std of q and k entries returns alpha = beta
// such that the log of the LLN attention entries has the variance of the softmax ones, using the
// paper's fitted relation sigma_sm^2 ~ 2 a sigma~^2 + b (a = 0.1486, b = -0.3549).
void lln_moment_match(double sigma_q, double sigma_k, float* alpha, float* beta);

// ---------------------------------------------------------------------------------------------
// Attention as an RNN (Aaren, Feng et al. 2024): softmax attention of one query per head (learned,
// shared by every step) over the prefix, o_t = sum_{j<=t} e^{s_j} v_j / sum_{j<=t} e^{s_j},
// s_j = scale q_h . k_j, computed as a parallel prefix scan over (m, c, a) with max rescaling.
//   query: [heads, head_dim] f32;  k: [batch, seq, heads, head_dim];  v: [.., head_dim_v]
//   state: [n_states, heads, 2 + head_dim_v] f32 = (m, c, a[0..dv)) with c, a relative to e^m;
//   an empty state has m = -inf, c = 0, a = 0 (aaren_init_state).
struct AarenParams {
  float scale = std::numeric_limits<float>::quiet_NaN();  // NaN = 1/sqrt(head_dim)
  bool sequential = false;  // true: one step at a time (the O(1)-memory RNN form)
  int64_t scan_block = 256; // tokens per block of the two-level parallel scan
  const int32_t* maybe_cu_seqlens = nullptr;
  int64_t n_seqs = 0;
  const float* maybe_initial_state = nullptr;
  float* maybe_final_state = nullptr;
  int num_threads = 0;  // 0 = OpenMP default
};
void aaren_init_state(int64_t n_states, int64_t heads, int64_t head_dim_v, float* state);
Status aaren_attention(const float* query, const TensorView& k, const TensorView& v, const TensorView& out,
                       const AarenParams& params);

// ---------------------------------------------------------------------------------------------
// Infini-attention (Munkhdalai et al. 2024): the sequence is cut into segments of segment_len; each
// token attends causally (softmax, scale 1/sqrt(d)) inside its segment, and reads a compressive
// memory of all previous segments, A_mem = phi(q) M / (phi(q) z), phi = elu+1 (memory read before
// the segment is written; M += phi(K)^T V, or the delta form M += phi(K)^T (V - phi(K) M / phi(K) z)).
// o = sigmoid(g_h) A_mem + (1 - sigmoid(g_h)) A_dot. Heads of q, k, v are equal. An empty memory
// reads 0. Decoding keeps the current segment's keys and values (at most segment_len) in the state.
struct InfiniState {
  int64_t heads = 0, head_dim = 0, head_dim_v = 0;
  std::vector<float> memory;      // [heads, head_dim, head_dim_v + 1] (last column = z)
  std::vector<float> segment_k;   // [filled, heads, head_dim]
  std::vector<float> segment_v;   // [filled, heads, head_dim_v]
  int64_t filled = 0;             // tokens of the current, unfinished segment
};
struct InfiniParams {
  int64_t segment_len = 2048;
  const float* maybe_gate_logits = nullptr;  // [heads]; null = 0 (an even mix)
  bool delta_update = false;
  int num_threads = 0;  // 0 = OpenMP default
};
// Runs seq tokens of one sequence (batch must be 1) continuing from *state (which is updated).
Status infini_attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                        const InfiniParams& params, InfiniState* state);

// ---------------------------------------------------------------------------------------------
// Titans neural memory, inference form (Behrouz et al. 2025): a memory M (linear: W [d, dv]; or a
// 2-layer MLP: W1 [d, hidden], SiLU, W2 [hidden, dv]) trained at test time on l = |M(k_t) - v_t|^2:
//   S_t = eta_t S_{t-1} - theta_t grad l(M_{t'}; k_t, v_t)      (momentum, "surprise")
//   M_t = (1 - alpha_t) M_{t-1} + S_t                            (forgetting)
//   y_t = M_t(q_t)
// where t' is the start of t's chunk (the paper's chunked parallel training: gradients of a chunk
// are taken against the weights at the chunk start; chunk_size 1 is the exact per-token rule).
// alpha/eta/theta: f32 [batch, seq, heads, 1] views or, when data is null, the constants below.
struct TitansParams {
  bool mlp = false;
  int64_t hidden = 0;  // MLP hidden width (0 = 2 * head_dim)
  int64_t chunk_size = 16;
  float alpha = 0.01f, eta = 0.9f, theta = 0.1f;
  TensorView alpha_t, eta_t, theta_t;
  int num_threads = 0;  // 0 = OpenMP default
};
// Memory weights + momentum per (batch, head), all f32: linear W[d*dv] then S[d*dv]; MLP W1, W2,
// S1, S2. titans_state_floats gives the size; titans_init_state seeds small random weights.
int64_t titans_state_floats(const TitansParams& params, int64_t head_dim, int64_t head_dim_v);
void titans_init_state(const TitansParams& params, int64_t head_dim, int64_t head_dim_v, uint64_t seed,
                       float* state);
// q, k: [batch, seq, heads, head_dim], v/out: [.., head_dim_v]; state: [batch, heads, floats],
// updated in place.
Status titans_memory(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                     const TitansParams& params, float* state);

// ---------------------------------------------------------------------------------------------
// Based (Arora et al. 2024): Taylor-2 linear attention (denominator-normalized, on the first
// qk_dim features of q and k) mixed with exact causal softmax over a sliding window of `window`
// keys through attnkit::attention: o = mix * o_window + (1 - mix) * o_taylor.
struct BasedParams {
  int64_t window = 64;
  float mix = 0.5f;
  LinearForm form = LinearForm::kAuto;
  int64_t chunk_size = 64;
  int num_threads = 0;
};
// Streaming state of one sequence: the Taylor state [heads_q, F, head_dim_v + 1] and the last
// `window - 1` keys/values (what the next token's window can still see). Empty = fresh sequence.
struct BasedState {
  std::vector<float> linear_state;
  std::vector<float> recent_k, recent_v;  // [n_recent, heads_kv, head_dim] / [.., head_dim_v]
  int64_t n_recent = 0;
};
// With maybe_state (batch must be 1) the call continues the sequence held in the state and
// updates it, so prefill(N) == prefill(N1) + single-token calls; without it, each batch row is a
// fresh sequence.
Status based_attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                       const BasedParams& params, BasedState* maybe_state = nullptr);

}  // namespace attnkit
