// snapkv: SnapKV (Li, Huang, Yang, Venkitesh, Locatelli, Ye, Cai, Lewis, Chen 2024, "SnapKV: LLM
// Knows What You are Looking for Before Generation", NeurIPS 2024, arXiv 2404.14469;
// FasterDecoding/SnapKV; kvpress SnapKVPress).
//
// The last `window` queries (the observation window) vote: their attention on each earlier key,
// summed over the window and the query heads, is smoothed along the sequence by a 1-D pooling of
// `kernel` keys (zero padding of kernel / 2 on each side, divided by kernel, as avg_pool1d), and the
// top keys before the window are kept with the window itself. Defaults from the SnapKV code:
// window 32, kernel 5, avgpool (kvpress uses window 64).
//
// During chunked prefill the policy acts at the end of every chunk that brings the layer over
// budget, with that chunk's last `window` rows as the observation window, so the peak is budget
// + one chunk. During decoding the paper appends without evicting; here the default slack equals
// the window, so the layer compresses every `window` decode steps with those steps' queries as the
// observation window and stays within budget + window.
#include <algorithm>

#include "attnkit/kv_cache.h"

namespace attnkit::kv {
namespace {

class SnapKvPolicy final : public ScoredKvPolicy {
 public:
  SnapKvPolicy(KvCommonParams c, int64_t window, int64_t kernel, bool max_pool)
      : ScoredKvPolicy(c), window_(window), kernel_(kernel), max_pool_(max_pool) {}
  std::string name() const override {
    return "snapkv:" + common().budget.to_string() + ",window=" + std::to_string(window_) + ",kernel=" + std::to_string(kernel_) +
           ",pool=" + (max_pool_ ? "max" : "avg");
  }
  KvNeeds needs(int64_t) const override { return {window_}; }
  void reset() override { obs_.reset(); }

 protected:
  Status observe(const KvStep& step) override {
    if (step.maybe_mass == nullptr) return Status::internal("snapkv: the step carries no attention mass");
    // A step of at least `window` rows is a whole observation window by itself.
    if (step.n_new >= window_) obs_.sync(step).assign(static_cast<size_t>(step.size), 0.0);
    obs_.add_mass(step);
    return Status::ok_status();
  }
  Status score(const KvStep& step, std::vector<float>* scores) override {
    const std::vector<double>& a = obs_.sync(step);
    const int64_t prefix = std::max<int64_t>(0, step.size - window_);
    scores->assign(static_cast<size_t>(step.size), 0.0f);
    const int64_t half = kernel_ / 2;
    for (int64_t s = 0; s < prefix; ++s) {
      double v = max_pool_ ? -1.0 : 0.0;
      for (int64_t t = s - half; t <= s + half; ++t) {
        const double x = t >= 0 && t < prefix ? a[static_cast<size_t>(t)] : 0.0;  // zero padding
        v = max_pool_ ? std::max(v, x) : v + x;
      }
      (*scores)[static_cast<size_t>(s)] = static_cast<float>(max_pool_ ? v : v / static_cast<double>(kernel_));
    }
    return Status::ok_status();
  }
  int64_t recent(const KvStep&, int64_t keep) const override { return std::min(window_, keep); }
  void on_retain(const KvStep& step, const std::vector<int64_t>& keep) override {
    // The next observation window starts empty.
    std::vector<double>& a = obs_.sync(step);
    std::fill(a.begin(), a.end(), 0.0);
    obs_.retain(step.layer, keep);
  }

 private:
  int64_t window_, kernel_;
  bool max_pool_;
  SlotAccumulator obs_;
};

KvPolicyInfo make_info() {
  KvPolicyInfo info;
  info.name = "snapkv";
  info.description =
      "SnapKV (Li et al. 2024): observation-window attention, 1-D pooled, top-k + window kept; window 32, kernel 5, avgpool";
  info.params = kv_common_param_specs(1024, -1);  // slack -1: one window
  info.params.push_back({"window", "32", "observation window: the last queries that vote, always kept (>= 1)"});
  info.params.push_back({"kernel", "5", "pooling kernel along the keys (odd, >= 1)"});
  info.params.push_back({"pool", "avg", "avg | max"});
  info.make = [](const MechanismParams& p, std::unique_ptr<KvPolicy>* out) -> Status {
    int64_t window = 0, kernel = 0;
    ATTNKIT_RETURN_IF_ERROR(param_int(p, "window", &window));
    MechanismParams q = p;
    if (q.at("slack") == "-1") q["slack"] = std::to_string(window);  // default: one window
    KvCommonParams c;
    ATTNKIT_RETURN_IF_ERROR(parse_kv_common(q, &c));
    ATTNKIT_RETURN_IF_ERROR(param_int(p, "kernel", &kernel));
    if (window < 1) return Status::invalid_argument("window=" + std::to_string(window) + " must be >= 1");
    if (kernel < 1 || kernel % 2 == 0) return Status::invalid_argument("kernel=" + std::to_string(kernel) + " must be odd and >= 1");
    const std::string& pool = p.at("pool");
    if (pool != "avg" && pool != "max") return Status::invalid_argument("pool=" + pool + " is not one of avg, max");
    *out = std::make_unique<SnapKvPolicy>(c, window, kernel, pool == "max");
    return Status::ok_status();
  };
  return info;
}

ATTNKIT_REGISTER_KV_POLICY(make_info);

}  // namespace
}  // namespace attnkit::kv
