// razor: RazorAttention (Tang, Lin, Lin, Han, Hong, Yao, Wang 2024, "RazorAttention: Efficient KV
// Cache Compression Through Retrieval Heads", ICLR 2025, arXiv 2407.15891).
//
// Retrieval heads (the induction and echo heads found on repeated synthetic text; the paper
// protects the top 14% induction and 1% echo heads) keep their whole cache. Every other head keeps
// the first 4 tokens and a recent window (msModelSlim's deployment: sink 4, local capacity 256,
// the defaults here: budget 260 = sinks 4 + window 256), and the tokens it drops are folded into
// one compensation token per head: the mean of the dropped keys and the mean of the dropped
// values, which attention counts |dropped| times (Algorithm 1), so the dropped tokens' mass is
// approximated instead of removed. The head map (which heads are retrieval heads) comes from a file
// (docs/kv.md, "Head maps") or heads=L.H+L.H; without one every head is compressed. The cache keeps
// one slot set per layer, so a layer with a retrieval head keeps everything (exact for Gemma 3
// 270M, one kv head per layer).
#include "kv/head_map.h"

namespace attnkit::kv {
namespace {

KvPolicyInfo make_info() {
  KvPolicyInfo info;
  info.name = "razor";
  info.description =
      "RazorAttention (Tang et al. 2024): retrieval heads from a head map keep everything, other heads keep sinks + recent + "
      "one compensation token (mean dropped key and value, weight |dropped|); sinks 4, budget 260 (window 256)";
  info.params = head_wise_param_specs(260, 4);
  info.make = [](const MechanismParams& p, std::unique_ptr<KvPolicy>* out) {
    return make_head_wise_policy("razor", p, /*compensate=*/true, out);
  };
  return info;
}

ATTNKIT_REGISTER_KV_POLICY(make_info);

}  // namespace
}  // namespace attnkit::kv
