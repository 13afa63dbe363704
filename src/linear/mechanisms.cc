// Registers the linear engine's named configurations (family "linear": linear, performer, gla,
// deltanet, ...) with the registry, so that `attnkit bench --mechanism gla`,
// `--mechanism performer:features=256` and bench/ find them. The mechanisms with their own entry
// points (aaren, infini_attention, titans, based) register in their own files.
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
#include "linear/mechanism_util.h"

namespace attnkit {
namespace {

using namespace linear_internal;

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
    ATTNKIT_RETURN_IF_ERROR(check_linear_shape(s));
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

// The engine's named configurations, registered together: they are one engine's settings, not
// separate implementations.
std::vector<Mechanism> make_engine_mechanisms() {
  std::vector<Mechanism> v;
  for (const EngineSpec& s : engine_specs()) v.push_back(make_engine(s));
  return v;
}
ATTNKIT_REGISTER_MECHANISM(make_engine_mechanisms);

}  // namespace
}  // namespace attnkit
