// The sparse methods' registry plumbing (see methods.h): MaskMethod and DirectMethod, the
// benchmark run that times estimation and attention separately (phase=all|estimate|attend), and
// the table of definitions behind make_sparse_method() / sparse_method_names(). The methods
// themselves register next to their implementations (patterns.cc, block_mask.cc, one file per
// estimator, hyper_routing.cc).
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
#include "sparse/methods.h"
#include "sparse/sparse_internal.h"

namespace attnkit {

using namespace sparse_internal;

namespace {

class MaskMethod : public SparseMethod {
 public:
  explicit MaskMethod(MaskBuilder b) : build_(std::move(b)) {}
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
  MaskBuilder build_;
  BlockMask mask_;
  mutable double pairs_ = 0;
  bool ready_ = false;
};

// HyperAttention / Routing: the key choice happens inside the attention call.
class DirectMethod : public SparseMethod {
 public:
  explicit DirectMethod(DirectFn f) : fn_(std::move(f)) {}
  Status estimate(const TensorView&, const TensorView&, const AttentionParams&) override { return Status::ok_status(); }
  Status attend(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                float* maybe_lse, const AttentionParams& params) override {
    return fn_(q, k, v, out, maybe_lse, params, &pairs_);
  }
  double computed_pairs() const override { return pairs_; }

 private:
  DirectFn fn_;
  double pairs_ = 0;
};

// ---- the benchmark run ----

void fill_random(float* data, int64_t n, uint64_t seed) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    uint64_t st = seed * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(i);
    const uint64_t z = splitmix64(&st);
    data[i] = 2.0f * static_cast<float>(z >> 40) * (1.0f / 16777216.0f) - 1.0f;
  }
}

enum class Phase { kAll, kEstimate, kAttend };

}  // namespace

template <>
struct EnumNames<Phase> {
  static constexpr EnumName<Phase> kTable[] = {{Phase::kAll, "all"}, {Phase::kEstimate, "estimate"}, {Phase::kAttend, "attend"}};
};

namespace {

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

// Definitions by name, filled by sparse_mechanism() while the registrars run (function-local
// static: registrars in other translation units may run before this file's globals).
std::map<std::string, MethodDef>& definitions() {
  static std::map<std::string, MethodDef> table;
  return table;
}

const MethodDef* find_def(const std::string& name) {
  const auto it = definitions().find(name);
  return it == definitions().end() ? nullptr : &it->second;
}

Status prepare_sparse(const MethodDef& def, const ProblemShape& shape, const MechanismParams& p,
                      std::unique_ptr<PreparedRun>* out) {
  if (shape.dtype != DType::kF32) {
    return Status::unsupported(def.name + ": benchmark inputs are f32 only (dtype " + dtype_name(shape.dtype) + ")");
  }
  ATTNKIT_RETURN_IF_ERROR(check_problem_shape(shape));
  Phase phase = Phase::kAll;
  ATTNKIT_RETURN_IF_ERROR(param_enum(p, "phase", &phase));
  MechanismParams mp = p;
  mp.erase("phase");
  std::unique_ptr<SparseMethod> m;
  ATTNKIT_RETURN_IF_ERROR(def.factory(mp, &m));
  auto run = std::make_unique<SparseRun>(shape, std::move(m), phase);
  ATTNKIT_RETURN_IF_ERROR(run->init());
  *out = std::move(run);
  return Status::ok_status();
}

}  // namespace

namespace sparse_internal {

Mechanism sparse_mechanism(MethodDef def) {
  const auto [it, inserted] = definitions().emplace(def.name, std::move(def));
  ATTNKIT_ASSERT(inserted);  // a second definition of a name is a programming error
  const MethodDef* d = &it->second;
  Mechanism m;
  m.name = d->name;
  m.family = "sparse";
  m.description = d->description;
  m.params = d->params;
  m.params.push_back({"phase", "all", enum_choices<Phase>() + ": what run() times (estimate = choosing keys only)"});
  m.prepare = [d](const ProblemShape& s, const MechanismParams& p, std::unique_ptr<PreparedRun>* out) {
    return prepare_sparse(*d, s, p, out);
  };
  return m;
}

std::unique_ptr<SparseMethod> mask_method(MaskBuilder build) { return std::make_unique<MaskMethod>(std::move(build)); }

std::unique_ptr<SparseMethod> direct_method(DirectFn fn) { return std::make_unique<DirectMethod>(std::move(fn)); }

Status read_block(const MechanismParams& p, int64_t* block) {
  ATTNKIT_RETURN_IF_ERROR(param_int(p, "block", block));
  if (*block < 1 || *block > 4096) {
    return Status::invalid_argument("parameter block=" + std::to_string(*block) + " is not supported; expected 1..4096");
  }
  return Status::ok_status();
}

SparseFactory pattern_factory(PatternMaker make) {
  return [make](const MechanismParams& p, std::unique_ptr<SparseMethod>* out) -> Status {
    int64_t block = 0;
    ATTNKIT_RETURN_IF_ERROR(read_block(p, &block));
    PatternPtr probe;
    ATTNKIT_RETURN_IF_ERROR(make(p, 1, &probe));  // validates the parameters now
    *out = mask_method([make, p, block](const TensorView& q, const TensorView& k, const AttentionParams& params,
                                        BlockMask* m) -> Status {
      PatternPtr pat;
      ATTNKIT_RETURN_IF_ERROR(make(p, k.seq(), &pat));
      return build_block_mask(square_block_shape(q, k, params, block), pat, m);
    });
    return Status::ok_status();
  };
}

}  // namespace sparse_internal

Status make_sparse_method(const std::string& spec, std::unique_ptr<SparseMethod>* out) {
  const Mechanism* mech = nullptr;
  MechanismParams p;
  ATTNKIT_RETURN_IF_ERROR(parse_mechanism_spec(spec, &mech, &p));
  const MethodDef* def = find_def(mech->name);
  if (def == nullptr || mech->family != "sparse") {
    std::string names;
    for (const auto& n : sparse_method_names()) names += (names.empty() ? "" : ", ") + n;
    return Status::invalid_argument("mechanism '" + mech->name + "' is not a sparse method; sparse methods: " + names);
  }
  p.erase("phase");
  return def->factory(p, out);
}

std::vector<std::string> sparse_method_names() {
  std::vector<std::string> v;
  for (const auto& [name, def] : definitions()) v.push_back(name);
  return v;
}

}  // namespace attnkit
