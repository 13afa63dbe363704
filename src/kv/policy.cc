// Shared parts of KV policies: budgets, the common keys, the scored-policy rule, compensation.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <string>

#include "attnkit/kv_cache.h"

namespace attnkit::kv {

int64_t KvBudget::keep_for(int64_t seen, int64_t min_keep) const {
  int64_t k = 0;
  if (ratio >= 0) {
    // kvpress: n_kept = int(k_len * (1 - compression_ratio)).
    k = static_cast<int64_t>(static_cast<double>(seen) * (1.0 - ratio));
  } else {
    k = tokens;
  }
  return std::max(k, min_keep);
}

std::string KvBudget::to_string() const {
  if (ratio >= 0) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", ratio);
    return std::string("ratio=") + buf;
  }
  return "budget=" + std::to_string(tokens);
}

bool KvCommonParams::applies_to(bool is_global) const {
  switch (layers) {
    case KvLayers::kGlobal: return is_global;
    case KvLayers::kLocal: return !is_global;
    case KvLayers::kAll: return true;
  }
  return false;
}

int64_t KvCommonParams::due(int64_t size, int64_t seen, int64_t min_keep) const {
  const int64_t keep = budget.keep_for(seen, min_keep);
  return size > keep + slack ? keep : -1;
}

std::vector<ParamSpec> kv_common_param_specs(int64_t default_budget, int64_t default_slack) {
  return {
      {"budget", std::to_string(default_budget), "tokens each compressed layer keeps (>= 1)"},
      {"ratio", "-1", "kvpress compression ratio: fraction of the tokens seen that is removed, in [0, 1); "
                      "overrides budget when given (-1 = use budget)"},
      {"layers", "global", "layers the policy compresses: global | local | all (local layers are window-sized anyway)"},
      {"slack", std::to_string(default_slack),
       "evict only once the layer holds more than keep + slack tokens, then down to keep (>= 0)"},
  };
}

Status parse_kv_common(const MechanismParams& p, KvCommonParams* out) {
  KvCommonParams c;
  ATTNKIT_RETURN_IF_ERROR(param_int(p, "budget", &c.budget.tokens));
  if (c.budget.tokens < 1) return Status::invalid_argument("kv policy: budget=" + std::to_string(c.budget.tokens) + " must be >= 1");
  double ratio = -1;
  ATTNKIT_RETURN_IF_ERROR(param_float(p, "ratio", &ratio));
  if (ratio != -1 && (ratio < 0 || ratio >= 1))
    return Status::invalid_argument("kv policy: ratio=" + p.at("ratio") + " must be in [0, 1) (or -1 to use budget)");
  c.budget.ratio = ratio;
  const std::string& layers = p.at("layers");
  if (layers == "global") c.layers = KvLayers::kGlobal;
  else if (layers == "local") c.layers = KvLayers::kLocal;
  else if (layers == "all") c.layers = KvLayers::kAll;
  else return Status::invalid_argument("kv policy: layers=" + layers + " is not one of global, local, all");
  ATTNKIT_RETURN_IF_ERROR(param_int(p, "slack", &c.slack));
  if (c.slack < 0) return Status::invalid_argument("kv policy: slack=" + std::to_string(c.slack) + " must be >= 0");
  *out = c;
  return Status::ok_status();
}

std::vector<int64_t> keep_top_scores(const std::vector<float>& scores, int64_t keep, int64_t sinks, int64_t recent) {
  const int64_t n = static_cast<int64_t>(scores.size());
  std::vector<int64_t> out;
  if (keep >= n) {
    out.resize(static_cast<size_t>(n));
    std::iota(out.begin(), out.end(), 0);
    return out;
  }
  sinks = std::clamp<int64_t>(sinks, 0, keep);
  recent = std::clamp<int64_t>(recent, 0, keep - sinks);
  std::vector<char> kept(static_cast<size_t>(n), 0);
  for (int64_t s = 0; s < sinks; ++s) kept[static_cast<size_t>(s)] = 1;
  for (int64_t s = n - recent; s < n; ++s) kept[static_cast<size_t>(s)] = 1;
  std::vector<int64_t> cand;
  for (int64_t s = sinks; s < n - recent; ++s) cand.push_back(s);
  const int64_t want = keep - sinks - recent;
  // NaN ranks lowest; equal scores prefer the later slot (the more recent token).
  auto key = [&](int64_t s) {
    const float v = scores[static_cast<size_t>(s)];
    return std::isnan(v) ? -std::numeric_limits<float>::infinity() : v;
  };
  std::partial_sort(cand.begin(), cand.begin() + want, cand.end(), [&](int64_t a, int64_t b) {
    const float ka = key(a), kb = key(b);
    return ka != kb ? ka > kb : a > b;
  });
  for (int64_t i = 0; i < want; ++i) kept[static_cast<size_t>(cand[static_cast<size_t>(i)])] = 1;
  for (int64_t s = 0; s < n; ++s)
    if (kept[static_cast<size_t>(s)]) out.push_back(s);
  return out;
}

Status ScoredKvPolicy::on_step(const KvStep& step, KvDecision* decision) {
  decision->evict = false;
  decision->keep.clear();
  ATTNKIT_RETURN_IF_ERROR(observe(step));
  const int64_t keep = common_.due(step.size, step.seen);
  if (keep < 0) return Status::ok_status();
  std::vector<float> scores;
  ATTNKIT_RETURN_IF_ERROR(score(step, &scores));
  if (static_cast<int64_t>(scores.size()) != step.size)
    return Status::internal(name() + ": score() returned " + std::to_string(scores.size()) + " scores for " +
                            std::to_string(step.size) + " slots");
  const int64_t sk = std::min(sinks(step, keep), keep);
  const int64_t rc = std::min(recent(step, keep), keep - sk);
  decision->keep = keep_top_scores(scores, keep, sk, rc);
  decision->evict = true;
  on_retain(step, decision->keep);
  return Status::ok_status();
}

void compensation_add(const KvStep& step, const std::vector<int64_t>& dropped, KvCompensation* c) {
  const int64_t HK = step.kv_heads, D = step.head_dim, DV = step.head_dim_v;
  if (c->count.size() != static_cast<size_t>(HK)) {
    c->count.assign(static_cast<size_t>(HK), 0.0);
    c->key.assign(static_cast<size_t>(HK * D), 0.0f);
    c->value.assign(static_cast<size_t>(HK * DV), 0.0f);
  }
  if (dropped.empty()) return;
  std::vector<double> sk(static_cast<size_t>(D)), sv(static_cast<size_t>(DV));
  std::vector<float> row(static_cast<size_t>(std::max(D, DV)));
  const double nd = static_cast<double>(dropped.size());
  for (int64_t h = 0; h < HK; ++h) {
    std::fill(sk.begin(), sk.end(), 0.0);
    std::fill(sv.begin(), sv.end(), 0.0);
    for (int64_t s : dropped) {
      step.key(s, h, row.data());
      for (int64_t t = 0; t < D; ++t) sk[static_cast<size_t>(t)] += row[static_cast<size_t>(t)];
      step.value(s, h, row.data());
      for (int64_t t = 0; t < DV; ++t) sv[static_cast<size_t>(t)] += row[static_cast<size_t>(t)];
    }
    const double n0 = c->count[static_cast<size_t>(h)], n1 = n0 + nd;
    for (int64_t t = 0; t < D; ++t) {
      float& m = c->key[static_cast<size_t>(h * D + t)];
      m = static_cast<float>((n0 * m + sk[static_cast<size_t>(t)]) / n1);
    }
    for (int64_t t = 0; t < DV; ++t) {
      float& m = c->value[static_cast<size_t>(h * DV + t)];
      m = static_cast<float>((n0 * m + sv[static_cast<size_t>(t)]) / n1);
    }
    c->count[static_cast<size_t>(h)] = n1;
  }
}

std::vector<double>& SlotAccumulator::of(int64_t layer) {
  for (auto& [l, v] : by_layer_)
    if (l == layer) return v;
  by_layer_.emplace_back(layer, std::vector<double>());
  return by_layer_.back().second;
}

std::vector<double>& SlotAccumulator::sync(const KvStep& step) {
  std::vector<double>& v = of(step.layer);
  const size_t old = static_cast<size_t>(step.size - step.n_new), now = static_cast<size_t>(step.size);
  if (v.size() == now) return v;            // already synced this step
  if (v.size() != old) v.assign(old, 0.0);  // out of step with the cache (a reset): start over
  v.resize(now, 0.0);
  return v;
}

void SlotAccumulator::add_mass(const KvStep& step) {
  std::vector<double>& v = sync(step);
  if (step.maybe_mass == nullptr) return;
  for (int64_t h = 0; h < step.kv_heads; ++h)
    for (int64_t s = 0; s < step.size; ++s) v[static_cast<size_t>(s)] += step.maybe_mass[h * step.size + s];
}

void SlotAccumulator::retain(int64_t layer, const std::vector<int64_t>& keep) {
  std::vector<double>& v = of(layer);
  for (size_t i = 0; i < keep.size(); ++i) v[i] = v[static_cast<size_t>(keep[i])];
  v.resize(keep.size());
}

}  // namespace attnkit::kv
