// h2o: Heavy-Hitter Oracle (Zhang, Sheng, Zhou, Chen, Zheng, Cai, Song, Tian, Ré, Barrett, Wang,
// Chen 2023, "H2O: Heavy-Hitter Oracle for Efficient Generative Inference of Large Language
// Models", NeurIPS 2023, arXiv 2306.14048; FMInference/H2O).
//
// Each cached token's score is the attention it has received from every query so far (summed
// over the query heads of its group and over kv heads; kept while the token stays). Over budget,
// the layer keeps the `recent` fraction of the budget as the most recent tokens and fills the rest
// with the highest scores: the paper's default 10% heavy + 10% recent is recent=0.5 of a budget
// of 20% of the context. Scores come from each step's attention mass (every query row).
#include <cstdio>

#include "attnkit/kv_cache.h"

namespace attnkit::kv {
namespace {

class H2oPolicy final : public ScoredKvPolicy {
 public:
  H2oPolicy(KvCommonParams c, double recent) : ScoredKvPolicy(c), recent_(recent) {}
  std::string name() const override {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", recent_);
    return "h2o:" + common().budget.to_string() + ",recent=" + buf;
  }
  KvNeeds needs(int64_t) const override { return {-1}; }
  void reset() override { acc_.reset(); }

 protected:
  Status observe(const KvStep& step) override {
    if (step.maybe_mass == nullptr) return Status::internal("h2o: the step carries no attention mass");
    acc_.add_mass(step);
    return Status::ok_status();
  }
  Status score(const KvStep& step, std::vector<float>* scores) override {
    const std::vector<double>& a = acc_.sync(step);
    scores->assign(a.begin(), a.end());
    return Status::ok_status();
  }
  int64_t recent(const KvStep&, int64_t keep) const override {
    return static_cast<int64_t>(static_cast<double>(keep) * recent_);
  }
  void on_retain(const KvStep& step, const std::vector<int64_t>& keep) override { acc_.retain(step.layer, keep); }

 private:
  double recent_;
  SlotAccumulator acc_;
};

KvPolicyInfo make_info() {
  KvPolicyInfo info;
  info.name = "h2o";
  info.description =
      "H2O (Zhang et al. 2023): accumulated attention heavy hitters + recent window; recent = 0.5 of the budget "
      "(the paper's 10% heavy + 10% recent)";
  info.params = kv_common_param_specs();
  info.params.push_back({"recent", "0.5", "fraction of the budget kept as the most recent tokens, in [0, 1]"});
  info.make = [](const MechanismParams& p, std::unique_ptr<KvPolicy>* out) -> Status {
    KvCommonParams c;
    ATTNKIT_RETURN_IF_ERROR(parse_kv_common(p, &c));
    double recent = 0;
    ATTNKIT_RETURN_IF_ERROR(param_float(p, "recent", &recent));
    if (recent < 0 || recent > 1) return Status::invalid_argument("recent=" + p.at("recent") + " must be in [0, 1]");
    *out = std::make_unique<H2oPolicy>(c, recent);
    return Status::ok_status();
  };
  return info;
}

ATTNKIT_REGISTER_KV_POLICY(make_info);

}  // namespace
}  // namespace attnkit::kv
