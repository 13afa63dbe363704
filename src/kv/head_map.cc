// Head maps for duo and razor (head_map.h).
#include "kv/head_map.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace attnkit::kv {

bool HeadMap::is_full(int64_t layer, int64_t head) const {
  return std::find(full.begin(), full.end(), std::make_pair(layer, head)) != full.end();
}

bool HeadMap::layer_full(int64_t layer) const {
  return std::any_of(full.begin(), full.end(), [&](const auto& lh) { return lh.first == layer; });
}

Status HeadMap::check_shape(int64_t model_layers, int64_t model_kv_heads) const {
  if (n_layers > 0 && (n_layers != model_layers || kv_heads != model_kv_heads))
    return Status::invalid_argument("head map " + source + ": " + std::to_string(n_layers) + " layers x " +
                                    std::to_string(kv_heads) + " kv heads, but the model has " + std::to_string(model_layers) +
                                    " x " + std::to_string(model_kv_heads));
  for (const auto& [l, h] : full)
    if ((model_layers > 0 && l >= model_layers) || (model_kv_heads > 0 && h >= model_kv_heads))
      return Status::invalid_argument("head map " + source + ": head " + std::to_string(l) + "." + std::to_string(h) +
                                      " is outside the model's " + std::to_string(model_layers) + " layers x " +
                                      std::to_string(model_kv_heads) + " kv heads");
  return Status::ok_status();
}

Status load_head_map(const std::string& path, double threshold, double fraction, HeadMap* out) {
  std::ifstream f(path);
  if (!f) return Status::io_error("head map: cannot read map=" + path);
  nlohmann::json j;
  try {
    f >> j;
  } catch (const std::exception& e) {
    return Status::invalid_argument("head map " + path + ": not JSON (" + e.what() + ")");
  }
  HeadMap m;
  m.source = path;
  try {
    if (j.value("format", std::string()) != "attnkit-head-map")
      return Status::invalid_argument("head map " + path + ": \"format\" must be \"attnkit-head-map\"");
    m.n_layers = j.at("n_layers").get<int64_t>();
    m.kv_heads = j.at("kv_heads").get<int64_t>();
    if (m.n_layers < 1 || m.kv_heads < 1)
      return Status::invalid_argument("head map " + path + ": n_layers " + std::to_string(m.n_layers) + " and kv_heads " +
                                      std::to_string(m.kv_heads) + " must be >= 1");
    if (j.contains("full") == j.contains("scores"))
      return Status::invalid_argument("head map " + path + ": give exactly one of \"full\" and \"scores\"");
    if (j.contains("full")) {
      for (const auto& e : j.at("full")) m.full.emplace_back(e.at(0).get<int64_t>(), e.at(1).get<int64_t>());
    } else {
      const auto& s = j.at("scores");
      if (static_cast<int64_t>(s.size()) != m.n_layers)
        return Status::invalid_argument("head map " + path + ": \"scores\" has " + std::to_string(s.size()) + " rows, n_layers is " +
                                        std::to_string(m.n_layers));
      std::vector<std::pair<double, std::pair<int64_t, int64_t>>> all;
      for (int64_t l = 0; l < m.n_layers; ++l) {
        const auto& row = s.at(static_cast<size_t>(l));
        if (static_cast<int64_t>(row.size()) != m.kv_heads)
          return Status::invalid_argument("head map " + path + ": scores[" + std::to_string(l) + "] has " + std::to_string(row.size()) +
                                          " entries, kv_heads is " + std::to_string(m.kv_heads));
        for (int64_t h = 0; h < m.kv_heads; ++h) all.push_back({row.at(static_cast<size_t>(h)).get<double>(), {l, h}});
      }
      if (fraction >= 0) {
        const auto n = static_cast<size_t>(std::llround(fraction * static_cast<double>(all.size())));
        std::stable_sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
        for (size_t i = 0; i < n && i < all.size(); ++i) m.full.push_back(all[i].second);
      } else {
        for (const auto& [score, lh] : all)
          if (score > threshold) m.full.push_back(lh);
      }
    }
  } catch (const std::exception& e) {
    return Status::invalid_argument("head map " + path + ": " + e.what());
  }
  std::sort(m.full.begin(), m.full.end());
  ATTNKIT_RETURN_IF_ERROR(m.check_shape(m.n_layers, m.kv_heads));
  *out = std::move(m);
  return Status::ok_status();
}

Status parse_head_list(const std::string& list, HeadMap* out) {
  HeadMap m;
  if (!list.empty()) m.source = "heads=" + list;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, '+')) {
    if (item.empty()) continue;
    const size_t dot = item.find('.');
    try {
      size_t used = 0;
      const int64_t l = std::stoll(item.substr(0, dot), &used);
      if (dot == std::string::npos || used != dot) throw std::invalid_argument(item);
      const std::string hs = item.substr(dot + 1);
      const int64_t h = std::stoll(hs, &used);
      if (used != hs.size() || l < 0 || h < 0) throw std::invalid_argument(item);
      m.full.emplace_back(l, h);
    } catch (const std::exception&) {
      return Status::invalid_argument("heads=" + list + ": '" + item + "' is not LAYER.KV_HEAD (e.g. 5.0+17.0)");
    }
  }
  std::sort(m.full.begin(), m.full.end());
  *out = std::move(m);
  return Status::ok_status();
}

std::vector<ParamSpec> head_map_param_specs() {
  return {
      {"map", "", "head-map JSON file (docs/kv.md, Head maps): which (layer, kv head) keep the whole cache"},
      {"heads", "", "inline list of heads that keep the whole cache, LAYER.KV_HEAD joined by '+' (e.g. 5.0+17.0)"},
      {"threshold", "0.5", "with a map of scores: a head keeps its cache when its score > threshold"},
      {"fraction", "-1", "with a map of scores: the highest-scoring fraction of heads keeps its cache (overrides threshold)"},
  };
}

Status head_map_from_params(const MechanismParams& p, HeadMap* out) {
  const std::string& map = p.at("map");
  const std::string& heads = p.at("heads");
  if (!map.empty() && !heads.empty()) return Status::invalid_argument("give map=" + map + " or heads=" + heads + ", not both");
  double threshold = 0.5, fraction = -1;
  ATTNKIT_RETURN_IF_ERROR(param_float(p, "threshold", &threshold));
  ATTNKIT_RETURN_IF_ERROR(param_float(p, "fraction", &fraction));
  if (fraction != -1 && (fraction < 0 || fraction > 1))
    return Status::invalid_argument("fraction=" + p.at("fraction") + " must be in [0, 1] (or -1 to use threshold)");
  if (!map.empty()) return load_head_map(map, threshold, fraction, out);
  return parse_head_list(heads, out);
}

std::string HeadWiseStreamingPolicy::name() const {
  std::string heads;
  if (!map_.source.empty()) heads = map_.source.rfind("heads=", 0) == 0 ? "," + map_.source : ",map=" + map_.source;
  return kind_ + ":" + c_.budget.to_string() + ",sinks=" + std::to_string(sinks_) +
         (window_ >= 0 ? ",window=" + std::to_string(window_) : "") + heads;
}

Status HeadWiseStreamingPolicy::on_step(const KvStep& step, KvDecision* d) {
  d->evict = false;
  d->keep.clear();
  d->set_compensation = false;
  ATTNKIT_RETURN_IF_ERROR(map_.check_shape(step.n_layers, step.kv_heads));
  if (map_.layer_full(step.layer)) return Status::ok_status();
  const int64_t keep = window_ >= 0 ? sinks_ + window_ : c_.budget.keep_for(step.seen, sinks_ + 1);
  if (step.size <= keep + c_.slack) return Status::ok_status();
  const int64_t s = std::min(sinks_, keep), recent = keep - s;
  for (int64_t i = 0; i < s; ++i) d->keep.push_back(i);
  for (int64_t i = step.size - recent; i < step.size; ++i) d->keep.push_back(i);
  d->evict = true;
  if (compensate_) {
    std::vector<int64_t> dropped;
    for (int64_t i = s; i < step.size - recent; ++i) dropped.push_back(i);
    d->compensation = step.cache->compensation(step.seq);
    compensation_add(step, dropped, &d->compensation);
    d->set_compensation = true;
  }
  return Status::ok_status();
}

std::vector<ParamSpec> head_wise_param_specs(int64_t default_budget, int64_t default_sinks) {
  std::vector<ParamSpec> out = kv_common_param_specs(default_budget);
  for (auto& ps : head_map_param_specs()) out.push_back(ps);
  out.push_back({"sinks", std::to_string(default_sinks), "first tokens the other heads always keep (attention sinks)"});
  out.push_back({"window", "-1", "recent tokens the other heads keep; -1 = budget - sinks"});
  return out;
}

Status make_head_wise_policy(const std::string& kind, const MechanismParams& p, bool compensate,
                             std::unique_ptr<KvPolicy>* out) {
  KvCommonParams c;
  ATTNKIT_RETURN_IF_ERROR(parse_kv_common(p, &c));
  HeadMap map;
  ATTNKIT_RETURN_IF_ERROR(head_map_from_params(p, &map));
  int64_t sinks = 0, window = 0;
  ATTNKIT_RETURN_IF_ERROR(param_int(p, "sinks", &sinks));
  ATTNKIT_RETURN_IF_ERROR(param_int(p, "window", &window));
  if (sinks < 0) return Status::invalid_argument(kind + ": sinks=" + std::to_string(sinks) + " must be >= 0");
  if (window < -1 || window == 0) return Status::invalid_argument(kind + ": window=" + std::to_string(window) + " must be >= 1 (or -1)");
  *out = std::make_unique<HeadWiseStreamingPolicy>(kind, c, std::move(map), sinks, window, compensate);
  return Status::ok_status();
}

}  // namespace attnkit::kv
