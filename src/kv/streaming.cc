// streaming: StreamingLLM (Xiao, Tian, Chen, Han, Lewis 2023, "Efficient Streaming Language Models
// with Attention Sinks", arXiv 2309.17453; mit-han-lab/streaming-llm).
//
// Keeps the first `sinks` tokens (attention sinks) and the most recent ones; the middle is
// evicted. Defaults: sinks 4 (the paper's start_size); the recent part is `window` tokens when
// given, else budget - sinks. shift=true is the paper's position shift (keys seen at their index
// in the cache, pos_shift/modify_llama.py), which lets generation and perplexity run past the
// trained context; see kv_layer_step for how it is done without re-rotating cached keys.
#include <string>

#include "attnkit/kv_cache.h"

namespace attnkit::kv {
namespace {

class StreamingPolicy final : public KvPolicy {
 public:
  StreamingPolicy(KvCommonParams c, int64_t sinks, int64_t window, bool shift)
      : c_(c), sinks_(sinks), window_(window), shift_(shift) {}
  std::string name() const override {
    return "streaming:sinks=" + std::to_string(sinks_) + (window_ >= 0 ? ",window=" + std::to_string(window_) : "," + c_.budget.to_string()) +
           ",shift=" + (shift_ ? "true" : "false");
  }
  bool applies_to(int64_t, bool is_global) const override { return c_.applies_to(is_global); }
  bool shift_positions() const override { return shift_; }
  Status on_step(const KvStep& step, KvDecision* d) override {
    d->evict = false;
    const int64_t keep = window_ >= 0 ? sinks_ + window_ : c_.budget.keep_for(step.seen, sinks_ + 1);
    if (step.size <= keep + c_.slack) return Status::ok_status();
    const int64_t s = std::min(sinks_, keep), recent = keep - s;
    d->keep.clear();
    for (int64_t i = 0; i < s; ++i) d->keep.push_back(i);
    for (int64_t i = step.size - recent; i < step.size; ++i) d->keep.push_back(i);
    d->evict = true;
    return Status::ok_status();
  }

 private:
  KvCommonParams c_;
  int64_t sinks_, window_;
  bool shift_;
};

KvPolicyInfo make_info() {
  KvPolicyInfo info;
  info.name = "streaming";
  info.description =
      "StreamingLLM (Xiao et al. 2023): attention sinks + recent window; sinks 4, window = budget - sinks; "
      "shift=true re-positions keys by their cache index";
  info.params = kv_common_param_specs();
  info.params.push_back({"sinks", "4", "first tokens always kept (attention sinks)"});
  info.params.push_back({"window", "-1", "recent tokens kept; -1 = budget - sinks"});
  info.params.push_back({"shift", "false", "StreamingLLM position shift: keys at their cache index"});
  info.make = [](const MechanismParams& p, std::unique_ptr<KvPolicy>* out) -> Status {
    KvCommonParams c;
    ATTNKIT_RETURN_IF_ERROR(parse_kv_common(p, &c));
    int64_t sinks = 0, window = 0;
    bool shift = false;
    ATTNKIT_RETURN_IF_ERROR(param_int(p, "sinks", &sinks));
    ATTNKIT_RETURN_IF_ERROR(param_int(p, "window", &window));
    ATTNKIT_RETURN_IF_ERROR(param_bool(p, "shift", &shift));
    if (sinks < 0) return Status::invalid_argument("sinks=" + std::to_string(sinks) + " must be >= 0");
    if (window < -1 || window == 0) return Status::invalid_argument("window=" + std::to_string(window) + " must be >= 1 (or -1)");
    *out = std::make_unique<StreamingPolicy>(c, sinks, window, shift);
    return Status::ok_status();
  };
  return info;
}

ATTNKIT_REGISTER_KV_POLICY(make_info);

}  // namespace
}  // namespace attnkit::kv
