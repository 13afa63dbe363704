// Named sparse methods: one table of (name, parameters, factory) that feeds both the mechanism
// registry (attnkit list / bench / bench/) and make_sparse_method() (the fidelity command and
// later work that runs the estimators on model activations).
//
// Registry entries take one extra parameter, phase=all|estimate|attend, so estimation and
// attention can be timed separately by the shared benchmark harness:
//   attnkit bench --mechanism vertical_slash:phase=estimate ...
#include <chrono>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <omp.h>

#include "attnkit/fidelity.h"
#include "attnkit/memory.h"
#include "attnkit/registry.h"
#include "attnkit/sparse.h"
#include "sparse/sparse_internal.h"

namespace attnkit {

using namespace sparse_internal;

namespace {

// A method whose estimate() produces a BlockMask and whose attend() is sparse_attention.
class MaskMethod : public SparseMethod {
 public:
  using Builder = std::function<Status(const TensorView&, const TensorView&, const AttentionParams&, BlockMask*)>;
  explicit MaskMethod(Builder b) : build_(std::move(b)) {}
  Status estimate(const TensorView& q, const TensorView& k, const AttentionParams& params) override {
    ATTNKIT_RETURN_IF_ERROR(build_(q, k, params, &mask_));
    pairs_ = -1;  // counted on demand, outside the timed estimation
    ready_ = true;
    return Status::ok_status();
  }
  Status attend(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                float* maybe_lse, const AttentionParams& params) override {
    if (!ready_) return Status::invalid_argument("sparse method: attend() called before estimate()");
    return sparse_attention(q, k, v, out, maybe_lse, params, mask_);
  }
  double computed_pairs() const override {
    if (pairs_ < 0) pairs_ = ready_ ? block_mask_stats(mask_).computed_pairs : 0.0;
    return pairs_;
  }
  const BlockMask* maybe_mask() const override { return ready_ ? &mask_ : nullptr; }

 private:
  Builder build_;
  BlockMask mask_;
  mutable double pairs_ = 0;
  bool ready_ = false;
};

// HyperAttention / Routing: the key choice happens inside the attention call.
class DirectMethod : public SparseMethod {
 public:
  using Fn = std::function<Status(const TensorView&, const TensorView&, const TensorView&, const TensorView&, float*,
                                  const AttentionParams&, double*)>;
  explicit DirectMethod(Fn f) : fn_(std::move(f)) {}
  Status estimate(const TensorView&, const TensorView&, const AttentionParams&) override { return Status::ok_status(); }
  Status attend(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                float* maybe_lse, const AttentionParams& params) override {
    return fn_(q, k, v, out, maybe_lse, params, &pairs_);
  }
  double computed_pairs() const override { return pairs_; }

 private:
  Fn fn_;
  double pairs_ = 0;
};

using Factory = std::function<Status(const MechanismParams&, std::unique_ptr<SparseMethod>*)>;

struct MethodDef {
  std::string name, description;
  std::vector<ParamSpec> params;
  Factory factory;
};

#define ATTNKIT_GET_INT(key, var) \
  int64_t var = 0;                \
  ATTNKIT_RETURN_IF_ERROR(param_int(p, key, &var))
#define ATTNKIT_GET_FLOAT(key, var) \
  double var = 0;                   \
  ATTNKIT_RETURN_IF_ERROR(param_float(p, key, &var))

const ParamSpec kBlock{"block", "64", "query and key block size of the BlockMask (64 = the kernel tile)"};

Status block_ok(int64_t block) {
  if (block < 1 || block > 4096) {
    return Status::invalid_argument("parameter block=" + std::to_string(block) + " is not supported; expected 1..4096");
  }
  return Status::ok_status();
}

// A static pattern method: the pattern is built when the shape is known (estimate()).
Factory pattern_factory(std::function<Status(const MechanismParams&, int64_t seq_kv, PatternPtr*)> make) {
  return [make](const MechanismParams& p, std::unique_ptr<SparseMethod>* out) -> Status {
    ATTNKIT_GET_INT("block", block);
    ATTNKIT_RETURN_IF_ERROR(block_ok(block));
    PatternPtr probe;
    ATTNKIT_RETURN_IF_ERROR(make(p, 1, &probe));  // validates the parameters now
    *out = std::make_unique<MaskMethod>(
        [make, p, block](const TensorView& q, const TensorView& k, const AttentionParams& params, BlockMask* m) -> Status {
          PatternPtr pat;
          ATTNKIT_RETURN_IF_ERROR(make(p, k.seq(), &pat));
          return build_block_mask(square_block_shape(q, k, params, block), pat, m);
        });
    return Status::ok_status();
  };
}

const std::vector<MethodDef>& method_table() {
  static const std::vector<MethodDef>* table = new std::vector<MethodDef>{
      {"sliding_window", "Sliding-window attention (Longformer) as a block-sparse pattern",
       {{"left", "1024", "keys at most this far before the query (-1 = unbounded)"},
        {"right", "0", "keys at most this far after the query (-1 = unbounded)"}, kBlock},
       pattern_factory([](const MechanismParams& p, int64_t, PatternPtr* out) -> Status {
         ATTNKIT_GET_INT("left", left);
         ATTNKIT_GET_INT("right", right);
         return make_window_pattern(left, right, out);
       })},
      {"a_shape", "A-shape: attention sinks + local window (StreamingLLM / MInference)",
       {{"sinks", "64", "first keys always visible"}, {"window", "1024", "local window (keys either side)"}, kBlock},
       pattern_factory([](const MechanismParams& p, int64_t, PatternPtr* out) -> Status {
         ATTNKIT_GET_INT("sinks", sinks);
         ATTNKIT_GET_INT("window", window);
         return make_a_shape_pattern(sinks, window, out);
       })},
      {"strided", "Strided pattern (Sparse Transformer): local band + every stride-th key",
       {{"stride", "128", "band width and stride"}, kBlock},
       pattern_factory([](const MechanismParams& p, int64_t, PatternPtr* out) -> Status {
         ATTNKIT_GET_INT("stride", stride);
         return make_strided_pattern(stride, out);
       })},
      {"dilated", "Dilated attention (LongNet): segments w*2^l with dilation 2^l, union over levels",
       {{"segment", "2048", "level-0 segment length"}, {"levels", "3", "number of (segment, dilation) levels"}, kBlock},
       pattern_factory([](const MechanismParams& p, int64_t, PatternPtr* out) -> Status {
         ATTNKIT_GET_INT("segment", segment);
         ATTNKIT_GET_INT("levels", levels);
         return make_dilated_pattern(segment, levels, out);
       })},
      {"bigbird", "BigBird: global + window + seeded random blocks",
       {{"pattern_block", "64", "BigBird block size"}, {"global", "1", "global blocks"},
        {"window", "3", "window blocks either side"}, {"random", "3", "random blocks per query block"},
        {"seed", "0", "seed of the random blocks"}, kBlock},
       pattern_factory([](const MechanismParams& p, int64_t seq_kv, PatternPtr* out) -> Status {
         ATTNKIT_GET_INT("pattern_block", pb);
         ATTNKIT_GET_INT("global", g);
         ATTNKIT_GET_INT("window", w);
         ATTNKIT_GET_INT("random", r);
         ATTNKIT_GET_INT("seed", seed);
         return make_bigbird_pattern(pb, g, w, r, static_cast<uint64_t>(seed), true, seq_kv, out);
       })},
      {"power_attention", "PowerAttention: key blocks at power-of-two block distances + sinks",
       {{"pattern_block", "64", "block size of the distances"}, {"sinks", "64", "first keys always visible"}, kBlock},
       pattern_factory([](const MechanismParams& p, int64_t, PatternPtr* out) -> Status {
         ATTNKIT_GET_INT("pattern_block", pb);
         ATTNKIT_GET_INT("sinks", sinks);
         return make_power_pattern(pb, sinks, out);
       })},
      {"star_local", "Blockwise-local attention with an anchor block (Star Attention phase 1)",
       {{"context_block", "4096", "context block length"}, {"anchor", "4096", "anchor prefix length"}, kBlock},
       pattern_factory([](const MechanismParams& p, int64_t, PatternPtr* out) -> Status {
         ATTNKIT_GET_INT("context_block", cb);
         ATTNKIT_GET_INT("anchor", anchor);
         return make_blockwise_local_pattern(cb, anchor, out);
       })},
      {"block_dense", "Every causal block through the block-sparse kernel (equals exact attention)",
       {kBlock},
       pattern_factory([](const MechanismParams&, int64_t, PatternPtr* out) -> Status {
         *out = make_dense_pattern();
         return Status::ok_status();
       })},
      {"block_random", "Random causal blocks at a given density (diagonal always in); for scaling benchmarks",
       {{"density", "0.1", "fraction of reachable key blocks per query block"}, {"seed", "1", "seed"}, kBlock},
       [](const MechanismParams& p, std::unique_ptr<SparseMethod>* out) -> Status {
         ATTNKIT_GET_INT("block", block);
         ATTNKIT_GET_FLOAT("density", density);
         ATTNKIT_GET_INT("seed", seed);
         ATTNKIT_RETURN_IF_ERROR(block_ok(block));
         if (!(density > 0 && density <= 1)) {
           return Status::invalid_argument("parameter density=" + p.at("density") + " is not supported; expected (0, 1]");
         }
         *out = std::make_unique<MaskMethod>([=](const TensorView& q, const TensorView& k, const AttentionParams& params,
                                                 BlockMask* m) {
           return random_block_mask(square_block_shape(q, k, params, block), density, static_cast<uint64_t>(seed), m);
         });
         return Status::ok_status();
       }},
      {"vertical_slash", "MInference vertical-slash: columns and diagonals from the last queries' attention",
       {{"last_q", "64", "queries used for the estimate"}, {"vertical", "1000", "vertical lines kept"},
        {"slash", "6096", "slash lines kept"}, {"force_first", "30", "first columns always kept"},
        {"force_last", "100", "diagonals nearest the main one always kept"}, kBlock},
       [](const MechanismParams& p, std::unique_ptr<SparseMethod>* out) -> Status {
         VerticalSlashConfig c;
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "last_q", &c.last_q));
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "vertical", &c.vertical));
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "slash", &c.slash));
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "force_first", &c.force_first));
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "force_last", &c.force_last));
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "block", &c.block));
         ATTNKIT_RETURN_IF_ERROR(block_ok(c.block));
         *out = std::make_unique<MaskMethod>([c](const TensorView& q, const TensorView& k, const AttentionParams& params,
                                                 BlockMask* m) { return estimate_vertical_slash(q, k, params, c, m); });
         return Status::ok_status();
       }},
      {"block_topk", "Pooled-QK block top-k (MInference block-sparse; SeerAttention without a learned gate)",
       {{"topk", "100", "key blocks kept per query block"}, kBlock},
       [](const MechanismParams& p, std::unique_ptr<SparseMethod>* out) -> Status {
         BlockTopKConfig c;
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "topk", &c.topk));
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "block", &c.block));
         ATTNKIT_RETURN_IF_ERROR(block_ok(c.block));
         *out = std::make_unique<MaskMethod>([c](const TensorView& q, const TensorView& k, const AttentionParams& params,
                                                 BlockMask* m) { return estimate_block_topk(q, k, params, c, m); });
         return Status::ok_status();
       }},
      {"moba", "MoBA gating: q . mean(K_block), top-k blocks, own block always",
       {{"topk", "8", "blocks per query (own block included)"}, kBlock},
       [](const MechanismParams& p, std::unique_ptr<SparseMethod>* out) -> Status {
         MobaConfig c;
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "topk", &c.topk));
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "block", &c.block));
         ATTNKIT_RETURN_IF_ERROR(block_ok(c.block));
         *out = std::make_unique<MaskMethod>([c](const TensorView& q, const TensorView& k, const AttentionParams& params,
                                                 BlockMask* m) { return estimate_moba(q, k, params, c, m); });
         return Status::ok_status();
       }},
      {"flexprefill", "FlexPrefill: per-head JS-divergence choice, cumulative-mass gamma",
       {{"last_q", "128", "queries used for the estimate"}, {"gamma", "0.9", "cumulative attention kept"},
        {"tau", "0.1", "JS distance threshold for query-aware block-sparse"},
        {"min_budget", "1", "blocks / lines kept at least"}, kBlock},
       [](const MechanismParams& p, std::unique_ptr<SparseMethod>* out) -> Status {
         FlexPrefillConfig c;
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "last_q", &c.last_q));
         ATTNKIT_RETURN_IF_ERROR(param_float(p, "gamma", &c.gamma));
         ATTNKIT_RETURN_IF_ERROR(param_float(p, "tau", &c.tau));
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "min_budget", &c.min_budget));
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "block", &c.block));
         ATTNKIT_RETURN_IF_ERROR(block_ok(c.block));
         *out = std::make_unique<MaskMethod>([c](const TensorView& q, const TensorView& k, const AttentionParams& params,
                                                 BlockMask* m) { return estimate_flexprefill(q, k, params, c, m, nullptr); });
         return Status::ok_status();
       }},
      {"hip", "HiP-style hierarchical top-k over key blocks",
       {{"topk", "16", "key blocks kept per query block"}, kBlock},
       [](const MechanismParams& p, std::unique_ptr<SparseMethod>* out) -> Status {
         HipConfig c;
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "topk", &c.topk));
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "block", &c.block));
         ATTNKIT_RETURN_IF_ERROR(block_ok(c.block));
         *out = std::make_unique<MaskMethod>([c](const TensorView& q, const TensorView& k, const AttentionParams& params,
                                                 BlockMask* m) { return estimate_hip(q, k, params, c, m); });
         return Status::ok_status();
       }},
      {"hyper_attention", "HyperAttention: sortLSH blocks + uniform samples, LSE combine, causal by recursion",
       {{"block", "256", "sorted block size"}, {"samples", "256", "uniform key samples"},
        {"projections", "7", "LSH hyperplanes"}, {"min_len", "4096", "exact attention at or below this length"},
        {"seed", "1", "seed"}},
       [](const MechanismParams& p, std::unique_ptr<SparseMethod>* out) -> Status {
         HyperConfig c;
         int64_t seed = 0;
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "block", &c.block));
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "samples", &c.samples));
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "projections", &c.n_projections));
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "min_len", &c.min_len));
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "seed", &seed));
         c.seed = static_cast<uint64_t>(seed);
         *out = std::make_unique<DirectMethod>([c](const TensorView& q, const TensorView& k, const TensorView& v,
                                                   const TensorView& o, float* lse, const AttentionParams& params,
                                                   double* pairs) { return hyper_attention(q, k, v, o, lse, params, c, pairs); });
         return Status::ok_status();
       }},
      {"routing", "Routing attention: spherical k-means clusters of queries and keys + local window",
       {{"clusters", "16", "k-means clusters"}, {"iters", "4", "Lloyd iterations"},
        {"window", "64", "local window always attended"}, {"seed", "1", "seed"}},
       [](const MechanismParams& p, std::unique_ptr<SparseMethod>* out) -> Status {
         RoutingConfig c;
         int64_t seed = 0;
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "clusters", &c.clusters));
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "iters", &c.iters));
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "window", &c.window));
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "seed", &seed));
         c.seed = static_cast<uint64_t>(seed);
         *out = std::make_unique<DirectMethod>([c](const TensorView& q, const TensorView& k, const TensorView& v,
                                                   const TensorView& o, float* lse, const AttentionParams& params,
                                                   double* pairs) { return routing_attention(q, k, v, o, lse, params, c, pairs); });
         return Status::ok_status();
       }},
  };
  return *table;
}

const MethodDef* find_def(const std::string& name) {
  for (const MethodDef& d : method_table())
    if (d.name == name) return &d;
  return nullptr;
}

// ---- registry entries ----

void fill_random(float* data, int64_t n, uint64_t seed) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    uint64_t st = seed * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(i);
    const uint64_t z = splitmix64(&st);
    data[i] = 2.0f * static_cast<float>(z >> 40) * (1.0f / 16777216.0f) - 1.0f;
  }
}

enum class Phase { kAll, kEstimate, kAttend };

class SparseRun final : public PreparedRun {
 public:
  SparseRun(const ProblemShape& s, std::unique_ptr<SparseMethod> m, Phase phase)
      : shape_(s), method_(std::move(m)), phase_(phase) {}

  Status init() {
    const int64_t d = shape_.head_dim;
    q_.ensure(shape_.batch * shape_.seq_q * shape_.heads_q * d);
    k_.ensure(shape_.batch * shape_.seq_kv * shape_.heads_kv * d);
    v_.ensure(shape_.batch * shape_.seq_kv * shape_.heads_kv * d);
    o_.ensure(shape_.batch * shape_.seq_q * shape_.heads_q * d);
    fill_random(q_.data(), static_cast<int64_t>(q_.size()), 1);
    fill_random(k_.data(), static_cast<int64_t>(k_.size()), 2);
    fill_random(v_.data(), static_cast<int64_t>(v_.size()), 3);
    qv_ = TensorView::contiguous(q_.data(), DType::kF32, shape_.batch, shape_.seq_q, shape_.heads_q, d);
    kv_ = TensorView::contiguous(k_.data(), DType::kF32, shape_.batch, shape_.seq_kv, shape_.heads_kv, d);
    vv_ = TensorView::contiguous(v_.data(), DType::kF32, shape_.batch, shape_.seq_kv, shape_.heads_kv, d);
    ov_ = TensorView::contiguous(o_.data(), DType::kF32, shape_.batch, shape_.seq_q, shape_.heads_q, d);
    params_.causal = shape_.causal;
    params_.num_threads = shape_.threads;
    // Estimate once so flops() is known; the attend phase reuses it.
    ATTNKIT_RETURN_IF_ERROR(method_->estimate(qv_, kv_, params_));
    if (method_->maybe_mask() == nullptr) {
      // Direct methods learn their work during attention: one untimed run.
      ATTNKIT_RETURN_IF_ERROR(method_->attend(qv_, kv_, vv_, ov_, nullptr, params_));
    }
    return Status::ok_status();
  }

  Status run() override {
    if (phase_ != Phase::kAttend) ATTNKIT_RETURN_IF_ERROR(method_->estimate(qv_, kv_, params_));
    if (phase_ != Phase::kEstimate) ATTNKIT_RETURN_IF_ERROR(method_->attend(qv_, kv_, vv_, ov_, nullptr, params_));
    return Status::ok_status();
  }
  double flops() const override {
    if (phase_ == Phase::kEstimate) return 0.0;
    const double per_pair = attention_flops(1, 1, 1, 1, shape_.head_dim, shape_.head_dim, false);
    return per_pair * method_->computed_pairs();
  }
  double bytes() const override {
    return attention_bytes(shape_.batch, shape_.seq_q, shape_.seq_kv, shape_.heads_q, shape_.heads_kv, shape_.head_dim,
                           shape_.head_dim, 4, 4);
  }

 private:
  ProblemShape shape_;
  std::unique_ptr<SparseMethod> method_;
  Phase phase_;
  ScratchArray<float> q_, k_, v_, o_;
  TensorView qv_, kv_, vv_, ov_;
  AttentionParams params_;
};

Status prepare_sparse(const MethodDef& def, const ProblemShape& shape, const MechanismParams& p,
                      std::unique_ptr<PreparedRun>* out) {
  if (shape.dtype != DType::kF32) {
    return Status::unsupported(def.name + ": benchmark inputs are f32 only (dtype " + dtype_name(shape.dtype) + ")");
  }
  ATTNKIT_RETURN_IF_ERROR(check_problem_shape(shape));
  const std::string& ph = p.at("phase");
  Phase phase;
  if (ph == "all") phase = Phase::kAll;
  else if (ph == "estimate") phase = Phase::kEstimate;
  else if (ph == "attend") phase = Phase::kAttend;
  else return Status::invalid_argument("parameter phase=" + ph + " is not supported; expected all|estimate|attend");
  MechanismParams mp = p;
  mp.erase("phase");
  std::unique_ptr<SparseMethod> m;
  ATTNKIT_RETURN_IF_ERROR(def.factory(mp, &m));
  auto run = std::make_unique<SparseRun>(shape, std::move(m), phase);
  ATTNKIT_RETURN_IF_ERROR(run->init());
  *out = std::move(run);
  return Status::ok_status();
}

struct RegisterAll {
  RegisterAll() {
    for (const MethodDef& def : method_table()) {
      Mechanism m;
      m.name = def.name;
      m.family = "sparse";
      m.description = def.description;
      m.params = def.params;
      m.params.push_back({"phase", "all", "all|estimate|attend: what run() times (estimate = choosing keys only)"});
      const MethodDef* d = &def;
      m.prepare = [d](const ProblemShape& s, const MechanismParams& p, std::unique_ptr<PreparedRun>* out) {
        return prepare_sparse(*d, s, p, out);
      };
      register_mechanism(std::move(m));
    }
  }
};
const RegisterAll kRegisterAll;

}  // namespace

Status make_sparse_method(const std::string& spec, std::unique_ptr<SparseMethod>* out) {
  const Mechanism* mech = nullptr;
  MechanismParams p;
  ATTNKIT_RETURN_IF_ERROR(parse_mechanism_spec(spec, &mech, &p));
  const MethodDef* def = find_def(mech->name);
  if (def == nullptr || mech->family != "sparse") {
    return Status::invalid_argument("mechanism '" + mech->name + "' is not a sparse method; sparse methods: " +
                                    [] {
                                      std::string s;
                                      for (const auto& n : sparse_method_names()) s += (s.empty() ? "" : ", ") + n;
                                      return s;
                                    }());
  }
  p.erase("phase");
  return def->factory(p, out);
}

std::vector<std::string> sparse_method_names() {
  std::vector<std::string> v;
  for (const MethodDef& d : method_table()) v.push_back(d.name);
  return v;
}

}  // namespace attnkit
