// pyramidkv: PyramidKV (Cai, Zhang, Gao, Liu, Liu, Lu, Xiong, Dong, Chang, Hu, Xiao 2024,
// "PyramidKV: Dynamic KV Cache Compression based on Pyramidal Information Funneling",
// arXiv 2406.02069; Zefan-Cai/KVCache-Factory; kvpress PyramidKVPress).
//
// SnapKV's selection (the `snapkv` policy, built through the registry) with a budget per layer
// that falls linearly with depth: lower layers attend broadly and get more, higher layers attend
// to few tokens and get less. The total equals SnapKV's. As in PyramidKV's code
// (KVCache-Factory, pyramidkv_utils.py), the observation window w is kept on every layer and the
// pyramid spreads the rest: with B the tokens SnapKV keeps per layer (budget, or the ratio applied
// to the tokens seen), A = B - w and beta the steepness (20),
//   min = A / beta,  max = 2 A - min;  if max > seen - w: max = seen - w, min = 2 A - max;
//   layer i of the L compressed layers keeps w + round(max - i (max - min) / (L - 1)),
// and every layer keeps B when A <= 0 or max < min. (kvpress's PyramidKVPress also falls back to
// SnapKV whenever min < w, which with beta 20 disables the pyramid below B = 20 w.) The pyramid
// runs over the layers that hold a growing cache only: the global layers of a model whose layer l
// is global when (l + 1) % global_every == 0 (Gemma 3: 6, layers 5, 11, 17), or every layer with
// layers=all. Defaults from kvpress: window 64, kernel 5, avg pooling, beta 20.
#include <cmath>
#include <map>
#include <string>

#include "attnkit/kv_cache.h"

namespace attnkit::kv {
namespace {

class PyramidKvPolicy final : public KvPolicy {
 public:
  PyramidKvPolicy(KvCommonParams c, int64_t window, int64_t kernel, std::string pool, int64_t beta, int64_t global_every)
      : c_(c), window_(window), kernel_(kernel), pool_(std::move(pool)), beta_(beta), global_every_(global_every) {}
  std::string name() const override {
    return "pyramidkv:" + c_.budget.to_string() + ",window=" + std::to_string(window_) + ",kernel=" + std::to_string(kernel_) +
           ",pool=" + pool_ + ",beta=" + std::to_string(beta_) + ",global_every=" + std::to_string(global_every_);
  }
  bool applies_to(int64_t, bool is_global) const override { return c_.applies_to(is_global); }
  KvNeeds needs(int64_t) const override { return {window_}; }
  void reset() override { inner_.clear(); }

  Status on_step(const KvStep& step, KvDecision* d) override {
    d->evict = false;
    d->keep.clear();
    int64_t rank = 0, count = 0;
    for (int64_t l = 0; l < step.n_layers; ++l) {
      const bool g = global_every_ <= 0 || (l + 1) % global_every_ == 0;
      if (!c_.applies_to(g)) continue;
      if (l < step.layer) ++rank;
      ++count;
    }
    if (count == 0 || !c_.applies_to(global_every_ <= 0 || (step.layer + 1) % global_every_ == 0))
      return Status::invalid_argument("pyramidkv: layer " + std::to_string(step.layer) + " (global: " +
                                      (step.is_global ? "yes" : "no") + ") is not a compressed layer under global_every=" +
                                      std::to_string(global_every_) + "; set global_every to the model's pattern");
    const int64_t budget = layer_budget(c_.budget.keep_for(step.seen), step.seen, window_, beta_, rank, count);
    Inner& in = inner_[step.layer];
    if (!in.policy || in.budget != budget) {
      // The layer's SnapKV, rebuilt when its budget changes (while seen is below about 2 B).
      const std::string spec = "snapkv:budget=" + std::to_string(budget) + ",window=" + std::to_string(window_) +
                               ",kernel=" + std::to_string(kernel_) + ",pool=" + pool_ + ",layers=all,slack=" +
                               std::to_string(c_.slack);
      ATTNKIT_RETURN_IF_ERROR(make_kv_policy(spec, &in.policy));
      in.budget = budget;
    }
    return in.policy->on_step(step, d);
  }

  // Tokens layer `rank` of `count` compressed layers keeps, given SnapKV's per-layer keep B.
  static int64_t layer_budget(int64_t b, int64_t seen, int64_t window, int64_t beta, int64_t rank, int64_t count) {
    const double A = static_cast<double>(b - window);
    double mn = A / static_cast<double>(beta), mx = 2 * A - mn;
    if (mx > static_cast<double>(seen - window)) {
      mx = static_cast<double>(seen - window);
      mn = 2 * A - mx;
    }
    if (A <= 0 || mn < 0 || mx < mn) return b;
    const double step = count > 1 ? (mx - mn) / static_cast<double>(count - 1) : 0.0;
    return window + std::llround(mx - static_cast<double>(rank) * step);
  }

 private:
  struct Inner {
    int64_t budget = -1;
    std::unique_ptr<KvPolicy> policy;
  };
  KvCommonParams c_;
  int64_t window_, kernel_;
  std::string pool_;
  int64_t beta_, global_every_;
  std::map<int64_t, Inner> inner_;  // per layer: SnapKV with this layer's budget
};

KvPolicyInfo make_info() {
  KvPolicyInfo info;
  info.name = "pyramidkv";
  info.description =
      "PyramidKV (Cai et al. 2024): SnapKV scores with per-layer budgets falling linearly with depth over the compressed "
      "layers, total = SnapKV's; window 64, kernel 5, avgpool, beta 20";
  info.params = kv_common_param_specs(1024, -1);
  info.params.push_back({"window", "64", "SnapKV observation window (>= 1)"});
  info.params.push_back({"kernel", "5", "SnapKV pooling kernel (odd, >= 1)"});
  info.params.push_back({"pool", "avg", "avg | max"});
  info.params.push_back({"beta", "20", "pyramid steepness: the top layer gets 1/beta of the mean budget (>= 1)"});
  info.params.push_back({"global_every", "6", "layer l is global when (l + 1) % global_every == 0 (Gemma 3: 6; 0 = all global)"});
  info.make = [](const MechanismParams& p, std::unique_ptr<KvPolicy>* out) -> Status {
    int64_t window = 0, kernel = 0, beta = 0, every = 0;
    ATTNKIT_RETURN_IF_ERROR(param_int(p, "window", &window));
    MechanismParams q = p;
    if (q.at("slack") == "-1") q["slack"] = std::to_string(window);  // as snapkv: one window
    KvCommonParams c;
    ATTNKIT_RETURN_IF_ERROR(parse_kv_common(q, &c));
    ATTNKIT_RETURN_IF_ERROR(param_int(p, "kernel", &kernel));
    ATTNKIT_RETURN_IF_ERROR(param_int(p, "beta", &beta));
    ATTNKIT_RETURN_IF_ERROR(param_int(p, "global_every", &every));
    if (window < 1) return Status::invalid_argument("pyramidkv: window=" + std::to_string(window) + " must be >= 1");
    if (kernel < 1 || kernel % 2 == 0) return Status::invalid_argument("pyramidkv: kernel=" + std::to_string(kernel) + " must be odd and >= 1");
    if (beta < 1) return Status::invalid_argument("pyramidkv: beta=" + std::to_string(beta) + " must be >= 1");
    if (every < 0) return Status::invalid_argument("pyramidkv: global_every=" + std::to_string(every) + " must be >= 0");
    const std::string& pool = p.at("pool");
    if (pool != "avg" && pool != "max") return Status::invalid_argument("pyramidkv: pool=" + pool + " is not one of avg, max");
    *out = std::make_unique<PyramidKvPolicy>(c, window, kernel, pool, beta, every);
    return Status::ok_status();
  };
  return info;
}

ATTNKIT_REGISTER_KV_POLICY(make_info);

}  // namespace
}  // namespace attnkit::kv
