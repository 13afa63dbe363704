// Per-(layer, kv head) maps that say which heads keep their whole cache, for the head-wise
// policies `duo` (DuoAttention) and `razor` (RazorAttention). File format: docs/kv.md, "Head maps".
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "attnkit/kv_cache.h"
#include "attnkit/registry.h"
#include "attnkit/status.h"

namespace attnkit::kv {

struct HeadMap {
  int64_t n_layers = 0, kv_heads = 0;  // 0 = not stated (an inline list)
  std::vector<std::pair<int64_t, int64_t>> full;  // (layer, kv head) pairs that keep the whole cache

  bool is_full(int64_t layer, int64_t head) const;
  // Any head of the layer full. The cache's pages hold every kv head of a layer and a policy keeps
  // one slot set per layer, so such a layer keeps everything (exact for one kv head per layer,
  // as in Gemma 3 270M; conservative when full and streaming heads share a layer).
  bool layer_full(int64_t layer) const;
  // Errors naming the map when its stated shape differs from the model's.
  Status check_shape(int64_t model_layers, int64_t model_kv_heads) const;
  std::string source;  // file name or "heads=..." (for errors and names)
};

// Reads a head-map JSON file. With "scores", a head is full when its score > threshold, or, when
// fraction >= 0, when it is among the round(fraction * heads) highest scores (ties: the lower
// layer, then the lower head). With "full", the listed heads are full.
Status load_head_map(const std::string& path, double threshold, double fraction, HeadMap* out);
// Parses an inline list "L.H+L.H+..." of full heads, e.g. "5.0+17.0" ("" = none).
Status parse_head_list(const std::string& list, HeadMap* out);

// The keys both head-wise policies take: map (file), heads (inline list), threshold, fraction.
std::vector<ParamSpec> head_map_param_specs();
// Builds the map from those keys (at most one of map / heads; neither = no full heads).
Status head_map_from_params(const MechanismParams& p, HeadMap* out);

// The deployment rule DuoAttention and RazorAttention share: layers with a full head keep every
// token; the others keep the first `sinks` tokens and the most recent ones (`window`, or
// budget - sinks when window is -1). With compensate (RazorAttention), the dropped tokens are
// folded into the layer's compensation entry: per kv head the mean key and value of every token
// dropped so far, attended with weight |dropped|.
class HeadWiseStreamingPolicy : public KvPolicy {
 public:
  HeadWiseStreamingPolicy(std::string kind, KvCommonParams c, HeadMap map, int64_t sinks, int64_t window, bool compensate)
      : kind_(std::move(kind)), c_(c), map_(std::move(map)), sinks_(sinks), window_(window), compensate_(compensate) {}
  std::string name() const override;
  bool applies_to(int64_t, bool is_global) const override { return c_.applies_to(is_global); }
  Status on_step(const KvStep& step, KvDecision* decision) override;
  const HeadMap& head_map() const { return map_; }

 private:
  std::string kind_;
  KvCommonParams c_;
  HeadMap map_;
  int64_t sinks_, window_;
  bool compensate_;
};

// Parses the common keys, the head-map keys, sinks and window, and builds the policy.
Status make_head_wise_policy(const std::string& kind, const MechanismParams& p, bool compensate,
                             std::unique_ptr<KvPolicy>* out);
// The parameter list of such a policy with its defaults.
std::vector<ParamSpec> head_wise_param_specs(int64_t default_budget, int64_t default_sinks);

}  // namespace attnkit::kv
