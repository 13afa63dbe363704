// duo: DuoAttention deployment (Xiao, Tang, Zhu, Chen, Tian, Han 2024, "DuoAttention: Efficient
// Long-Context LLM Inference with Retrieval and Streaming Heads", arXiv 2410.10819;
// mit-han-lab/duo-attention).
//
// DuoAttention learns a gate per kv head; at deployment a head is a retrieval head (full cache)
// when its gate exceeds 0.5, or the heads are ranked by gate and a target fraction is kept full
// (sparsify_attention_heads). Streaming heads keep sink + recent tokens: 64 + 256 in the README's
// example, the defaults here (budget 320 = sinks 64 + window 256). The map comes from a file
// (docs/kv.md, "Head maps": per (layer, kv head) gates or any retrieval score, or a list of full
// heads) or an inline list heads=L.H+L.H. The cache keeps one slot set per layer, so a layer with a
// full head keeps everything (exact for Gemma 3 270M, which has one kv head per layer).
#include "kv/head_map.h"

namespace attnkit::kv {
namespace {

KvPolicyInfo make_info() {
  KvPolicyInfo info;
  info.name = "duo";
  info.description =
      "DuoAttention (Xiao et al. 2024) deployment: heads marked full in a head map keep every token, streaming heads "
      "keep sinks + recent; map=FILE or heads=L.H+...; threshold 0.5; sinks 64, budget 320 (window 256)";
  info.params = head_wise_param_specs(320, 64);
  info.make = [](const MechanismParams& p, std::unique_ptr<KvPolicy>* out) {
    return make_head_wise_policy("duo", p, /*compensate=*/false, out);
  };
  return info;
}

ATTNKIT_REGISTER_KV_POLICY(make_info);

}  // namespace
}  // namespace attnkit::kv
