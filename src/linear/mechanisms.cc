// Registers every mechanism of the linear family (family "linear") with the registry, so that
// `attnkit bench --mechanism gla`, `--mechanism performer:features=256` and bench/ find them.
//
// A prepared run allocates random inputs for the problem shape and times one call. For engine
// mechanisms, seq_q == seq_kv is a prefill (chunked unless form= says otherwise) and seq_q < seq_kv
// is decoding seq_q tokens recurrently from a state that stands for the seq_kv - seq_q tokens of
// context (a linear state has the same size whatever the context: that is the point).
// FLOPs come from linear_chunked_flops (linear.h); a recurrent step is counted as chunk 1 and the
// parallel form as one chunk of the whole sequence, so every form uses the same formula.
#include <omp.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/linear.h"
#include "attnkit/registry.h"

namespace attnkit {
namespace {

void fill_uniform(std::vector<float>& v, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (float& x : v) x = u(rng);
}

// The common checks, and the linear mechanisms' own: queries are the last seq_q of seq_kv tokens.
Status check_shape(const ProblemShape& s) {
  ATTNKIT_RETURN_IF_ERROR(check_problem_shape(s));
  if (s.seq_q > s.seq_kv)
    return Status::invalid_argument("seq_q " + std::to_string(s.seq_q) + " > seq_kv " + std::to_string(s.seq_kv) +
                                    " is not supported by linear mechanisms (queries are the last seq_q tokens)");
  return Status::ok_status();
}

// How a named engine mechanism sets up its parameters and inputs.
struct EngineSpec {
  std::string name, description;
  std::vector<ParamSpec> extra;
  // Sets feature map, decay kind, update rule and normalization; may change the q/k width.
  std::function<Status(const ProblemShape&, const MechanismParams&, LinearAttentionParams*, int64_t* qk_dim)> configure;
};

class EngineRun final : public PreparedRun {
 public:
  Status init(const ProblemShape& s, LinearAttentionParams p, int64_t qk_dim, LinearForm form, bool hedgehog_weights) {
    shape_ = s;
    p_ = p;
    const int64_t B = s.batch, T = s.seq_q, Hq = s.heads_q, Hkv = s.heads_kv, d = qk_dim, dv = s.head_dim;
    decode_ = s.seq_q < s.seq_kv;
    p_.form = decode_ ? LinearForm::kRecurrent : form;
    p_.num_threads = s.threads;
    q_.resize(static_cast<size_t>(B * T * Hq * d));
    k_.resize(static_cast<size_t>(B * T * Hkv * d));
    v_.resize(static_cast<size_t>(B * T * Hkv * dv));
    o_.resize(static_cast<size_t>(B * T * Hq * dv));
    fill_uniform(q_, 1);
    fill_uniform(k_, 2);
    fill_uniform(v_, 3);
    if (hedgehog_weights) {
      weight_.resize(static_cast<size_t>(Hq * d * p_.feature_proj_dim));
      fill_uniform(weight_, 7);
      for (float& w : weight_) w /= std::sqrt(static_cast<float>(d));
      p_.maybe_feature_weight = weight_.data();
    }
    if (p_.feature_map == FeatureMap::kPerformer) {
      int64_t m = 0;
      ATTNKIT_RETURN_IF_ERROR(linear_feature_dim(p_, d, &m));
      p_.performer_features = m;
      weight_.resize(static_cast<size_t>(m * d));
      make_performer_projection(d, m, p_.performer_seed, weight_.data());
      p_.maybe_feature_weight = weight_.data();
    }
    if (p_.feature_map == FeatureMap::kCosformer && p_.cosformer_max_len <= 0) p_.cosformer_max_len = 2.0 * static_cast<double>(s.seq_kv);
    if (p_.feature_map == FeatureMap::kLogNormal) {
      // Moment matching on the actual inputs (uniform [-1, 1): std 1/sqrt(3)).
      lln_moment_match(1.0 / std::sqrt(3.0), 1.0 / std::sqrt(3.0), &p_.lln_alpha, &p_.lln_beta);
    }
    int64_t f = 0;
    ATTNKIT_RETURN_IF_ERROR(linear_feature_dim(p_, d, &f));
    f_ = f;
    dvp_ = dv + (p_.norm == LinearNorm::kDenominator ? 1 : 0);
    if (p_.decay == DecayKind::kPerHead) {
      head_decay_.resize(static_cast<size_t>(Hq));
      if (retnet_) retnet_log_decays(Hq, head_decay_.data());
      else lightning_log_decays(Hq, head_decay_.data());
      p_.maybe_head_log_decay = head_decay_.data();
    }
    if (p_.decay == DecayKind::kScalarGate || p_.decay == DecayKind::kVectorGate) {
      const int64_t gc = p_.decay == DecayKind::kScalarGate ? 1 : f;
      gate_.resize(static_cast<size_t>(B * T * Hq * gc));
      fill_uniform(gate_, 4);
      // log-sigmoid(3x) / 16: fla's gate normalizer, decays in about (0.93, 1).
      for (float& g : gate_) g = -std::log1p(std::exp(-3.0f * g)) / 16.0f;
      p_.gate = TensorView::contiguous(gate_.data(), DType::kF32, B, T, Hq, gc);
    }
    if (p_.update == UpdateRule::kDelta) {
      beta_.resize(static_cast<size_t>(B * T * Hq));
      fill_uniform(beta_, 5);
      for (float& b : beta_) b = 1.0f / (1.0f + std::exp(-b));
      p_.beta = TensorView::contiguous(beta_.data(), DType::kF32, B, T, Hq, 1);
    }
    qv_ = TensorView::contiguous(q_.data(), DType::kF32, B, T, Hq, d);
    kv_ = TensorView::contiguous(k_.data(), DType::kF32, B, T, Hkv, d);
    vv_ = TensorView::contiguous(v_.data(), DType::kF32, B, T, Hkv, dv);
    ov_ = TensorView::contiguous(o_.data(), DType::kF32, B, T, Hq, dv);
    if (decode_) {
      state_.assign(static_cast<size_t>(B * Hq * f * dvp_), 0.0f);
      fill_uniform(state_, 6);
      for (float& x : state_) x = std::abs(x) * 0.01f;  // positive: a valid denominator column
      p_.maybe_initial_state = state_.data();
      p_.maybe_final_state = state_.data();
      starts_.assign(static_cast<size_t>(B), s.seq_kv - s.seq_q);
      p_.maybe_start_positions = starts_.data();
    }
    return validate_linear_attention(qv_, kv_, vv_, ov_, p_);
  }
  Status run() override { return linear_attention(qv_, kv_, vv_, ov_, p_); }
  double flops() const override {
    const int64_t chunk = p_.form == LinearForm::kRecurrent ? 1 : p_.form == LinearForm::kParallel ? shape_.seq_q : p_.chunk_size;
    return linear_chunked_flops(shape_.batch, shape_.seq_q, shape_.heads_q, f_, dvp_, chunk, p_.update == UpdateRule::kDelta);
  }
  double bytes() const override {
    // Read q, k, v, write o (f32), plus reading and writing the state once per call.
    const double io = 4.0 * static_cast<double>(q_.size() + k_.size() + v_.size() + o_.size() + gate_.size() + beta_.size());
    const double state = 8.0 * static_cast<double>(shape_.batch * shape_.heads_q * f_ * dvp_);
    return io + state;
  }
  int64_t extra_bytes() const override {
    // Per thread: one state and the chunk buffers (features, values, the C x C block).
    const int64_t C = p_.form == LinearForm::kRecurrent ? 1 : p_.chunk_size;
    const int64_t per_thread = f_ * dvp_ + 6 * C * f_ + 3 * C * dvp_ + C * C;
    return 4 * per_thread * omp_get_max_threads();
  }
  bool retnet_ = false;

 private:
  ProblemShape shape_;
  LinearAttentionParams p_;
  bool decode_ = false;
  int64_t f_ = 0, dvp_ = 0;
  std::vector<float> q_, k_, v_, o_, gate_, beta_, weight_, head_decay_, state_;
  std::vector<int64_t> starts_;
  TensorView qv_, kv_, vv_, ov_;
};

// The prefill forms a mechanism's form= may pick (auto is the engine's own choice, not offered), and
// the feature maps of the plain "linear" mechanism.
constexpr std::initializer_list<LinearForm> kPrefillForms = {LinearForm::kChunked, LinearForm::kRecurrent,
                                                              LinearForm::kParallel};
constexpr std::initializer_list<FeatureMap> kLinearMaps = {FeatureMap::kEluPlusOne, FeatureMap::kRelu,
                                                            FeatureMap::kIdentity};

std::vector<ParamSpec> common_params() {
  return {{"chunk", "64", "chunk length of the chunked form"},
          {"form", "chunked", "chunked|recurrent|parallel (prefill form; decode is always recurrent)"}};
}

Mechanism make_engine(const EngineSpec& spec) {
  Mechanism m;
  m.name = spec.name;
  m.family = "linear";
  m.description = spec.description;
  m.params = common_params();
  for (const ParamSpec& p : spec.extra) m.params.push_back(p);
  m.prepare = [spec](const ProblemShape& s, const MechanismParams& mp, std::unique_ptr<PreparedRun>* out) -> Status {
    ATTNKIT_RETURN_IF_ERROR(check_shape(s));
    LinearAttentionParams p;
    int64_t chunk = 0;
    ATTNKIT_RETURN_IF_ERROR(param_int(mp, "chunk", &chunk));
    if (chunk < 1 || chunk > 1024) return Status::invalid_argument("parameter chunk=" + mp.at("chunk") + " is not supported; expected 1..1024");
    p.chunk_size = chunk;
    LinearForm form = LinearForm::kChunked;
    ATTNKIT_RETURN_IF_ERROR(param_enum(mp, "form", &form, kPrefillForms));
    int64_t qk_dim = s.head_dim;
    ATTNKIT_RETURN_IF_ERROR(spec.configure(s, mp, &p, &qk_dim));
    auto run = std::make_unique<EngineRun>();
    run->retnet_ = spec.name == "retnet";
    ATTNKIT_RETURN_IF_ERROR(run->init(s, p, qk_dim, form, p.feature_map == FeatureMap::kHedgehog));
    *out = std::move(run);
    return Status::ok_status();
  };
  return m;
}

using Cfg = std::function<Status(const ProblemShape&, const MechanismParams&, LinearAttentionParams*, int64_t*)>;

Status read_qk_dim(const MechanismParams& mp, int64_t* qk) {
  ATTNKIT_RETURN_IF_ERROR(param_int(mp, "qk_dim", qk));
  if (*qk < 1 || *qk > 64) return Status::invalid_argument("parameter qk_dim=" + mp.at("qk_dim") + " is not supported; expected 1..64");
  return Status::ok_status();
}

std::vector<EngineSpec> engine_specs() {
  std::vector<EngineSpec> v;
  v.push_back({"linear", "Linear attention (Katharopoulos et al. 2020): phi(q) S / phi(q) z, S += phi(k) v^T",
               {{"feature_map", "elu1", "elu1|relu|identity"}},
               [](const ProblemShape&, const MechanismParams& mp, LinearAttentionParams* p, int64_t*) -> Status {
                 ATTNKIT_RETURN_IF_ERROR(param_enum(mp, "feature_map", &p->feature_map, kLinearMaps));
                 p->norm = p->feature_map == FeatureMap::kIdentity ? LinearNorm::kNone : LinearNorm::kDenominator;
                 if (p->feature_map == FeatureMap::kRelu) p->norm_eps = 1e-3f;
                 return Status::ok_status();
               }});
  v.push_back({"performer", "Performer FAVOR+ (Choromanski et al. 2021): positive orthogonal random features",
               {{"features", "0", "random features m (0 = ceil(d ln d))"}, {"seed", "0", "seed of the orthogonal projection"}},
               [](const ProblemShape&, const MechanismParams& mp, LinearAttentionParams* p, int64_t*) -> Status {
                 int64_t m = 0, seed = 0;
                 ATTNKIT_RETURN_IF_ERROR(param_int(mp, "features", &m));
                 ATTNKIT_RETURN_IF_ERROR(param_int(mp, "seed", &seed));
                 if (m < 0 || m > 16384) return Status::invalid_argument("parameter features=" + mp.at("features") + " is not supported; expected 0..16384");
                 p->feature_map = FeatureMap::kPerformer;
                 p->performer_features = m;
                 p->performer_seed = static_cast<uint64_t>(seed);
                 p->norm = LinearNorm::kDenominator;
                 return Status::ok_status();
               }});
  v.push_back({"cosformer", "cosFormer (Qin et al. 2022): ReLU features with cos(pi (i-j) / 2M) reweighting",
               {{"max_len", "0", "horizon M (0 = 2 * seq_kv)"}},
               [](const ProblemShape&, const MechanismParams& mp, LinearAttentionParams* p, int64_t*) -> Status {
                 double M = 0;
                 ATTNKIT_RETURN_IF_ERROR(param_float(mp, "max_len", &M));
                 if (M < 0) return Status::invalid_argument("parameter max_len=" + mp.at("max_len") + " must be >= 0");
                 p->feature_map = FeatureMap::kCosformer;
                 p->cosformer_max_len = M;
                 p->norm = LinearNorm::kDenominator;
                 p->norm_eps = 1e-3f;
                 return Status::ok_status();
               }});
  v.push_back({"hedgehog", "Hedgehog (Zhang et al. 2024): [softmax(Wx), softmax(-Wx)] features, W supplied (random here)",
               {{"proj_dim", "64", "projection width (features = 2 * proj_dim)"}},
               [](const ProblemShape&, const MechanismParams& mp, LinearAttentionParams* p, int64_t*) -> Status {
                 int64_t pd = 0;
                 ATTNKIT_RETURN_IF_ERROR(param_int(mp, "proj_dim", &pd));
                 if (pd < 1 || pd > 4096) return Status::invalid_argument("parameter proj_dim=" + mp.at("proj_dim") + " is not supported; expected 1..4096");
                 p->feature_map = FeatureMap::kHedgehog;
                 p->feature_proj_dim = pd;
                 p->norm = LinearNorm::kDenominator;
                 return Status::ok_status();
               }});
  v.push_back({"taylorshift", "TaylorShift (Nauen et al. 2024): Taylor-2 softmax on l2-normalized q, k (linear form)",
               {{"qk_dim", "16", "width of q and k (features 1 + d + d(d+1)/2)"}, {"temperature", "4", "s = T q.k"}},
               [](const ProblemShape&, const MechanismParams& mp, LinearAttentionParams* p, int64_t* qk) -> Status {
                 ATTNKIT_RETURN_IF_ERROR(read_qk_dim(mp, qk));
                 double t = 0;
                 ATTNKIT_RETURN_IF_ERROR(param_float(mp, "temperature", &t));
                 if (!(t > 0)) return Status::invalid_argument("parameter temperature=" + mp.at("temperature") + " must be > 0");
                 p->feature_map = FeatureMap::kTaylor2;
                 p->taylor_l2_normalize = true;
                 p->taylor_temperature = static_cast<float>(t);
                 p->norm = LinearNorm::kDenominator;
                 return Status::ok_status();
               }});
  v.push_back({"cottention", "Cottention (Mongaras et al. 2024): cosine similarity, output / n^sigmoid(c)", {},
               [](const ProblemShape&, const MechanismParams&, LinearAttentionParams* p, int64_t*) -> Status {
                 p->feature_map = FeatureMap::kCosine;
                 return Status::ok_status();
               }});
  v.push_back({"lln", "Linear Log-Normal attention (Nahshan et al. 2024): exp(alpha q), exp(beta k), moment matched", {},
               [](const ProblemShape&, const MechanismParams&, LinearAttentionParams* p, int64_t*) -> Status {
                 p->feature_map = FeatureMap::kLogNormal;
                 p->norm = LinearNorm::kDenominator;
                 return Status::ok_status();
               }});
  v.push_back({"retnet", "RetNet retention (Sun et al. 2023): fixed per-head decay 1 - 2^(-5-h), output RMS norm", {},
               [](const ProblemShape&, const MechanismParams&, LinearAttentionParams* p, int64_t*) -> Status {
                 p->decay = DecayKind::kPerHead;
                 p->norm = LinearNorm::kOutputRms;
                 return Status::ok_status();
               }});
  v.push_back({"lightning", "Lightning Attention / TransNormerLLM (Qin et al. 2024): ALiBi-style decays, no scale, NormAttention", {},
               [](const ProblemShape&, const MechanismParams&, LinearAttentionParams* p, int64_t*) -> Status {
                 p->decay = DecayKind::kPerHead;
                 p->scale = 1.0f;
                 p->norm = LinearNorm::kOutputRms;
                 return Status::ok_status();
               }});
  v.push_back({"transnormer", "TransNormer NormAttention (Qin et al. 2022): elu+1 features, RMS-normalized output", {},
               [](const ProblemShape&, const MechanismParams&, LinearAttentionParams* p, int64_t*) -> Status {
                 p->feature_map = FeatureMap::kEluPlusOne;
                 p->norm = LinearNorm::kOutputRms;
                 return Status::ok_status();
               }});
  v.push_back({"simple_gla", "Simple GLA / Mamba2-like (Yang et al. 2024): scalar data-dependent decay per head and step", {},
               [](const ProblemShape&, const MechanismParams&, LinearAttentionParams* p, int64_t*) -> Status {
                 p->decay = DecayKind::kScalarGate;
                 return Status::ok_status();
               }});
  v.push_back({"gla", "Gated Linear Attention (Yang et al. 2024): diagonal data-dependent decay", {},
               [](const ProblemShape&, const MechanismParams&, LinearAttentionParams* p, int64_t*) -> Status {
                 p->decay = DecayKind::kVectorGate;
                 return Status::ok_status();
               }});
  v.push_back({"hgrn2", "HGRN2 (Qin et al. 2024): gated linear RNN with state expansion, input gate 1 - forget gate", {},
               [](const ProblemShape&, const MechanismParams&, LinearAttentionParams* p, int64_t*) -> Status {
                 p->decay = DecayKind::kVectorGate;
                 p->tie_key_to_gate = true;
                 return Status::ok_status();
               }});
  v.push_back({"deltanet", "DeltaNet (Schlag et al. 2021; Yang et al. 2024): delta rule, chunked UT/WY form", {},
               [](const ProblemShape&, const MechanismParams&, LinearAttentionParams* p, int64_t*) -> Status {
                 p->feature_map = FeatureMap::kL2Norm;
                 p->update = UpdateRule::kDelta;
                 return Status::ok_status();
               }});
  v.push_back({"gated_deltanet", "Gated DeltaNet (Yang et al. 2025): delta rule with a scalar decay gate", {},
               [](const ProblemShape&, const MechanismParams&, LinearAttentionParams* p, int64_t*) -> Status {
                 p->feature_map = FeatureMap::kL2Norm;
                 p->update = UpdateRule::kDelta;
                 p->decay = DecayKind::kScalarGate;
                 return Status::ok_status();
               }});
  return v;
}

// ---- mechanisms with their own entry points ----

class FnRun final : public PreparedRun {
 public:
  std::function<Status()> fn;
  double f = 0, b = 0;
  int64_t extra = 0;
  Status run() override { return fn(); }
  double flops() const override { return f; }
  double bytes() const override { return b; }
  int64_t extra_bytes() const override { return extra; }
};

// Shared input block for the non-engine mechanisms (heads_q heads everywhere).
struct Inputs {
  std::vector<float> q, k, v, o;
  TensorView qv, kv, vv, ov;
  void make(int64_t B, int64_t T, int64_t H, int64_t d, int64_t dv) {
    q.resize(static_cast<size_t>(B * T * H * d));
    k.resize(q.size());
    v.resize(static_cast<size_t>(B * T * H * dv));
    o.resize(v.size());
    fill_uniform(q, 1);
    fill_uniform(k, 2);
    fill_uniform(v, 3);
    qv = TensorView::contiguous(q.data(), DType::kF32, B, T, H, d);
    kv = TensorView::contiguous(k.data(), DType::kF32, B, T, H, d);
    vv = TensorView::contiguous(v.data(), DType::kF32, B, T, H, dv);
    ov = TensorView::contiguous(o.data(), DType::kF32, B, T, H, dv);
  }
  double io_bytes() const { return 4.0 * static_cast<double>(q.size() + k.size() + v.size() + o.size()); }
};

Mechanism make_aaren() {
  Mechanism m;
  m.name = "aaren";
  m.family = "linear";
  m.description = "Attention as an RNN (Feng et al. 2024): softmax with one learned query per head, parallel prefix scan";
  m.params = {{"block", "256", "tokens per block of the two-level scan"}, {"sequential", "false", "run the O(1)-memory RNN step instead"}};
  m.prepare = [](const ProblemShape& s, const MechanismParams& mp, std::unique_ptr<PreparedRun>* out) -> Status {
    ATTNKIT_RETURN_IF_ERROR(check_shape(s));
    int64_t block = 0;
    bool seq = false;
    ATTNKIT_RETURN_IF_ERROR(param_int(mp, "block", &block));
    ATTNKIT_RETURN_IF_ERROR(param_bool(mp, "sequential", &seq));
    if (block < 1) return Status::invalid_argument("parameter block=" + mp.at("block") + " must be >= 1");
    auto in = std::make_shared<Inputs>();
    const int64_t B = s.batch, T = s.seq_q, H = s.heads_q, d = s.head_dim;
    in->make(B, T, H, d, d);
    auto query = std::make_shared<std::vector<float>>(static_cast<size_t>(H * d));
    fill_uniform(*query, 9);
    auto st = std::make_shared<std::vector<float>>(static_cast<size_t>(B * H * (2 + d)));
    aaren_init_state(B, H, d, st->data());
    AarenParams p;
    p.scan_block = block;
    p.num_threads = s.threads;
    p.sequential = seq || s.seq_q < s.seq_kv;
    if (s.seq_q < s.seq_kv) {
      p.maybe_initial_state = st->data();
      p.maybe_final_state = st->data();
    }
    auto run = std::make_unique<FnRun>();
    run->fn = [in, query, st, p]() { return aaren_attention(query->data(), in->kv, in->vv, in->ov, p); };
    run->f = static_cast<double>(B * T * H) * 2.0 * (d + d) * (p.sequential ? 1 : 2);
    run->b = in->io_bytes();
    *out = std::move(run);
    return Status::ok_status();
  };
  return m;
}

Mechanism make_infini() {
  Mechanism m;
  m.name = "infini_attention";
  m.family = "linear";
  m.description = "Infini-attention (Munkhdalai et al. 2024): segment-local softmax + compressive memory + gate";
  m.params = {{"segment", "2048", "segment length"}, {"delta", "false", "delta-rule memory update"}};
  m.prepare = [](const ProblemShape& s, const MechanismParams& mp, std::unique_ptr<PreparedRun>* out) -> Status {
    ATTNKIT_RETURN_IF_ERROR(check_shape(s));
    int64_t seg = 0;
    bool delta = false;
    ATTNKIT_RETURN_IF_ERROR(param_int(mp, "segment", &seg));
    ATTNKIT_RETURN_IF_ERROR(param_bool(mp, "delta", &delta));
    if (seg < 1) return Status::invalid_argument("parameter segment=" + mp.at("segment") + " must be >= 1");
    const int64_t B = s.batch, T = s.seq_q, H = s.heads_q, d = s.head_dim;
    auto in = std::make_shared<Inputs>();
    in->make(B, T, H, d, d);
    InfiniParams p;
    p.segment_len = seg;
    p.num_threads = s.threads;
    p.delta_update = delta;
    auto states = std::make_shared<std::vector<InfiniState>>(static_cast<size_t>(B));
    auto run = std::make_unique<FnRun>();
    const int64_t ctx = s.seq_kv - s.seq_q;
    run->fn = [in, p, states, B, T, H, d, ctx]() -> Status {
      for (int64_t b = 0; b < B; ++b) {
        InfiniState& st = (*states)[b];
        if (ctx > 0 && st.heads == 0) {  // decode: a memory and a partly filled segment as context
          st.heads = H;
          st.head_dim = st.head_dim_v = d;
          st.memory.assign(static_cast<size_t>(H * d * (d + 1)), 0.01f);
          st.filled = ctx % p.segment_len;
          st.segment_k.assign(static_cast<size_t>(p.segment_len * H * d), 0.1f);
          st.segment_v.assign(static_cast<size_t>(p.segment_len * H * d), 0.1f);
        }
        const int64_t before = st.filled;
        auto slice = [&](const TensorView& t) {
          TensorView r = t;
          r.data = static_cast<float*>(t.data) + b * t.stride[0];
          r.shape[0] = 1;
          return r;
        };
        ATTNKIT_RETURN_IF_ERROR(infini_attention(slice(in->qv), slice(in->kv), slice(in->vv), slice(in->ov), p, &st));
        if (ctx > 0) st.filled = before;  // timing repeats the same step
      }
      return Status::ok_status();
    };
    // Local causal pairs inside segments (counting the context's partial segment for decode).
    double pairs = 0;
    for (int64_t t = 0; t < T; ++t) pairs += static_cast<double>((ctx + t) % seg + 1);
    run->f = static_cast<double>(B * H) * (pairs * 2.0 * (d + d) + static_cast<double>(T) * 4.0 * d * (d + 1));
    run->b = in->io_bytes() + 8.0 * static_cast<double>(B * H * d * (d + 1));
    *out = std::move(run);
    return Status::ok_status();
  };
  return m;
}

Mechanism make_titans() {
  Mechanism m;
  m.name = "titans";
  m.family = "linear";
  m.description = "Titans neural memory (Behrouz et al. 2025): test-time gradient memory with momentum and forgetting";
  m.params = {{"mlp", "false", "2-layer MLP memory instead of linear"},
              {"hidden", "0", "MLP hidden width (0 = 2 * head_dim)"},
              {"chunk", "16", "tokens whose gradients share the chunk-start weights"}};
  m.prepare = [](const ProblemShape& s, const MechanismParams& mp, std::unique_ptr<PreparedRun>* out) -> Status {
    ATTNKIT_RETURN_IF_ERROR(check_shape(s));
    TitansParams p;
    ATTNKIT_RETURN_IF_ERROR(param_bool(mp, "mlp", &p.mlp));
    ATTNKIT_RETURN_IF_ERROR(param_int(mp, "hidden", &p.hidden));
    ATTNKIT_RETURN_IF_ERROR(param_int(mp, "chunk", &p.chunk_size));
    if (p.hidden < 0) return Status::invalid_argument("parameter hidden=" + mp.at("hidden") + " must be >= 0");
    if (p.chunk_size < 1) return Status::invalid_argument("parameter chunk=" + mp.at("chunk") + " must be >= 1");
    p.num_threads = s.threads;
    const int64_t B = s.batch, T = s.seq_q, H = s.heads_q, d = s.head_dim;
    auto in = std::make_shared<Inputs>();
    in->make(B, T, H, d, d);
    const int64_t sf = titans_state_floats(p, d, d);
    auto st = std::make_shared<std::vector<float>>(static_cast<size_t>(B * H * sf));
    for (int64_t i = 0; i < B * H; ++i) titans_init_state(p, d, d, 100 + i, st->data() + i * sf);
    auto run = std::make_unique<FnRun>();
    run->fn = [in, st, p]() { return titans_memory(in->qv, in->kv, in->vv, in->ov, p, st->data()); };
    // Per token: gradient ~3 forward passes (2P each), momentum + decay 4P, readout 2P; P = weights.
    const double P = static_cast<double>(sf / 2);
    run->f = static_cast<double>(B * T * H) * (p.mlp ? 12.0 : 9.0) * P;
    run->b = in->io_bytes() + 8.0 * static_cast<double>(B * H * sf);
    *out = std::move(run);
    return Status::ok_status();
  };
  return m;
}

Mechanism make_based() {
  Mechanism m;
  m.name = "based";
  m.family = "linear";
  m.description = "Based (Arora et al. 2024): Taylor-2 linear attention + exact sliding window (core kernel)";
  m.params = {{"window", "64", "sliding window keys"}, {"mix", "0.5", "weight of the window output"},
              {"qk_dim", "16", "width of q and k (features 1 + d + d(d+1)/2)"}, {"chunk", "64", "chunk of the linear part"}};
  m.prepare = [](const ProblemShape& s, const MechanismParams& mp, std::unique_ptr<PreparedRun>* out) -> Status {
    ATTNKIT_RETURN_IF_ERROR(check_shape(s));
    BasedParams p;
    int64_t qk = 0;
    double mix = 0;
    ATTNKIT_RETURN_IF_ERROR(param_int(mp, "window", &p.window));
    ATTNKIT_RETURN_IF_ERROR(param_float(mp, "mix", &mix));
    ATTNKIT_RETURN_IF_ERROR(read_qk_dim(mp, &qk));
    ATTNKIT_RETURN_IF_ERROR(param_int(mp, "chunk", &p.chunk_size));
    p.mix = static_cast<float>(mix);
    p.num_threads = s.threads;
    const int64_t B = s.batch, T = s.seq_q, H = s.heads_q, d = s.head_dim;
    auto in = std::make_shared<Inputs>();
    in->make(B, T, H, qk, d);
    // v is d wide, q/k qk wide: rebuild the views of k and v with their own widths.
    in->v.resize(static_cast<size_t>(B * T * H * d));
    in->o.resize(in->v.size());
    fill_uniform(in->v, 3);
    in->vv = TensorView::contiguous(in->v.data(), DType::kF32, B, T, H, d);
    in->ov = TensorView::contiguous(in->o.data(), DType::kF32, B, T, H, d);
    LinearAttentionParams lp;
    lp.feature_map = FeatureMap::kTaylor2;
    lp.norm = LinearNorm::kDenominator;
    ATTNKIT_RETURN_IF_ERROR(validate_linear_attention(in->qv, in->kv, in->vv, in->ov, lp));
    int64_t f = 0;
    ATTNKIT_RETURN_IF_ERROR(linear_feature_dim(lp, qk, &f));
    auto run = std::make_unique<FnRun>();
    const int64_t ctx = s.seq_kv - s.seq_q;
    if (ctx > 0) {
      // Decode: one state per batch row with a full window of recent keys as context.
      auto states = std::make_shared<std::vector<BasedState>>(static_cast<size_t>(B));
      for (BasedState& st : *states) {
        st.n_recent = std::min(p.window - 1, ctx);
        st.recent_k.resize(static_cast<size_t>(st.n_recent * H * qk));
        st.recent_v.resize(static_cast<size_t>(st.n_recent * H * d));
        fill_uniform(st.recent_k, 11);
        fill_uniform(st.recent_v, 12);
      }
      run->fn = [in, p, states, B]() -> Status {
        for (int64_t b = 0; b < B; ++b) {
          auto slice = [&](const TensorView& t) {
            TensorView r = t;
            r.data = static_cast<float*>(t.data) + b * t.stride[0];
            r.shape[0] = 1;
            return r;
          };
          ATTNKIT_RETURN_IF_ERROR(based_attention(slice(in->qv), slice(in->kv), slice(in->vv), slice(in->ov), p, &(*states)[b]));
        }
        return Status::ok_status();
      };
    } else {
      run->fn = [in, p]() { return based_attention(in->qv, in->kv, in->vv, in->ov, p); };
    }
    double pairs = 0;
    for (int64_t t = 0; t < T; ++t) pairs += static_cast<double>(std::min<int64_t>(ctx + t + 1, p.window));
    run->f = linear_chunked_flops(B, T, H, f, d + 1, ctx > 0 ? 1 : p.chunk_size, false) + static_cast<double>(B * H) * pairs * 2.0 * (qk + d);
    run->b = in->io_bytes();
    *out = std::move(run);
    return Status::ok_status();
  };
  return m;
}

struct RegisterAll {
  RegisterAll() {
    for (const EngineSpec& s : engine_specs()) register_mechanism(make_engine(s));
    register_mechanism(make_aaren());
    register_mechanism(make_infini());
    register_mechanism(make_titans());
    register_mechanism(make_based());
  }
};
const RegisterAll kRegisterAll;

}  // namespace
}  // namespace attnkit
