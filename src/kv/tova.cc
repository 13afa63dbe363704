// tova: Token Omission Via Attention (Oren, Hassid, Yarden, Adi, Schwartz 2024, "Transformers
// are Multi-State RNNs", arXiv 2401.06104; schwartz-lab-NLP/TOVA; kvpress TOVAPress).
//
// When the layer is over budget, keep the tokens the current query attends to most: the last
// query row's attention, averaged over all query heads (one decision per layer, as in the
// paper), with the current token always kept. The attention mass comes with the step
// (needs().mass_rows = 1), computed from the row's final LSE.
#include "attnkit/kv_cache.h"

namespace attnkit::kv {
namespace {

class TovaPolicy final : public ScoredKvPolicy {
 public:
  using ScoredKvPolicy::ScoredKvPolicy;
  std::string name() const override { return "tova:" + common().budget.to_string(); }
  KvNeeds needs(int64_t) const override { return {1}; }

 protected:
  Status score(const KvStep& step, std::vector<float>* scores) override {
    if (step.maybe_mass == nullptr) return Status::internal("tova: the step carries no attention mass");
    scores->assign(static_cast<size_t>(step.size), 0.0f);
    const float inv_heads = 1.0f / static_cast<float>(step.heads_q);
    for (int64_t h = 0; h < step.kv_heads; ++h)
      for (int64_t s = 0; s < step.size; ++s) (*scores)[static_cast<size_t>(s)] += step.maybe_mass[h * step.size + s] * inv_heads;
    return Status::ok_status();
  }
  int64_t recent(const KvStep&, int64_t) const override { return 1; }
};

KvPolicyInfo make_info() {
  KvPolicyInfo info;
  info.name = "tova";
  info.description = "TOVA (Oren et al. 2024): keep the tokens the current query attends to most (mean over heads); last token kept";
  info.params = kv_common_param_specs();
  info.make = [](const MechanismParams& p, std::unique_ptr<KvPolicy>* out) -> Status {
    KvCommonParams c;
    ATTNKIT_RETURN_IF_ERROR(parse_kv_common(p, &c));
    *out = std::make_unique<TovaPolicy>(c);
    return Status::ok_status();
  };
  return info;
}

ATTNKIT_REGISTER_KV_POLICY(make_info);

}  // namespace
}  // namespace attnkit::kv
