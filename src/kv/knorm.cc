// knorm: key-norm eviction (Devoto, Zhao, Scardapane, Minervini 2024, "A Simple and Effective L2
// Norm-Based Strategy for KV Cache Compression", arXiv 2406.11430; kvpress KnormPress).
//
// Score = -||k||_2 (low-norm keys draw the most attention), averaged over kv heads because the
// kept set is shared by a layer's heads. No protected tokens, as in kvpress. RoPE preserves the
// norm, so the post-RoPE keys in the cache score like pre-RoPE ones. On Gemma 3 the per-head
// RMSNorm of k makes the norms nearly equal, so expect this baseline to be weak there.
#include <cmath>

#include "attnkit/kv_cache.h"

namespace attnkit::kv {
namespace {

class KnormPolicy final : public ScoredKvPolicy {
 public:
  using ScoredKvPolicy::ScoredKvPolicy;
  std::string name() const override { return "knorm:" + common().budget.to_string(); }

 protected:
  Status score(const KvStep& step, std::vector<float>* scores) override {
    scores->assign(static_cast<size_t>(step.size), 0.0f);
    std::vector<float> k(static_cast<size_t>(step.head_dim));
    for (int64_t s = 0; s < step.size; ++s) {
      double total = 0;
      for (int64_t h = 0; h < step.kv_heads; ++h) {
        step.key(s, h, k.data());
        double ss = 0;
        for (float x : k) ss += static_cast<double>(x) * x;
        total += std::sqrt(ss);
      }
      (*scores)[static_cast<size_t>(s)] = static_cast<float>(-total / static_cast<double>(step.kv_heads));
    }
    return Status::ok_status();
  }
};

KvPolicyInfo make_info() {
  KvPolicyInfo info;
  info.name = "knorm";
  info.description = "Knorm (Devoto et al. 2024): keep the keys of lowest L2 norm; no protected tokens";
  info.params = kv_common_param_specs();
  info.make = [](const MechanismParams& p, std::unique_ptr<KvPolicy>* out) -> Status {
    KvCommonParams c;
    ATTNKIT_RETURN_IF_ERROR(parse_kv_common(p, &c));
    *out = std::make_unique<KnormPolicy>(c);
    return Status::ok_status();
  };
  return info;
}

ATTNKIT_REGISTER_KV_POLICY(make_info);

}  // namespace
}  // namespace attnkit::kv
