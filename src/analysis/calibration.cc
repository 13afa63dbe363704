// Attention backends that edit attention at inference: ACT, ZeroTuning, and head masking.
//
// Both calibrations run the exact tile kernel (attnkit::attention, with its LSE) and fix up its
// output with work linear in the keys, so no attention matrix is formed:
//   zerotuning  (Han et al. 2025, "ZeroTuning: Unlocking the Initial Token's Power to Enhance Large
//               Language Models Without Training"): per chosen head, log(gamma) is added to the
//               first token's logit, i.e. a_0' = gamma a_0 / D, a_i' = a_i / D, D = (gamma - 1) a_0 + 1.
//               The kernel attends over keys 1.. and the first key joins through merge_state_row
//               with logit s_0 + log(gamma): the same merge that combines split-KV parts.
//   act         (Yu et al. 2024, "Unveiling and Harnessing Hidden Attention Sinks: Training-Free
//               Attention Calibration", ICML 2024): on chosen heads, tokens after the first whose
//               mean attention exceeds `threshold` are sinks; their attention is scaled by beta and the
//               removed mass goes to the other keys in proportion to their attention. With m_S the
//               row's mass on the sinks and o_S = sum_{k in S} A_ik v_k, the calibrated output is
//                 o' = beta o_S + (1 - beta m_S) / (1 - m_S) (o - o_S).
//               The column means come from up to 64 evenly spaced rows of the call (exp(s - lse)
//               with the kernel's LSE); a column needs 8 sampled rows that see it, so the last
//               tokens (seen by few rows, which always attend to themselves) are not taken for sinks.
//               Single-token decode steps reuse the sinks found by the layer's last multi-row call.
//   mask_heads  the attention output of chosen heads set to zero (the retrieval-head causal test).
#include <cmath>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include <nlohmann/json.hpp>

#include "attnkit/analysis.h"

namespace attnkit::analysis {

bool HeadSet::contains(int64_t layer, int64_t head) const {
  return all || std::find(heads.begin(), heads.end(), std::make_pair(layer, head)) != heads.end();
}

bool HeadSet::any_in_layer(int64_t layer) const {
  return all || std::any_of(heads.begin(), heads.end(), [&](const auto& lh) { return lh.first == layer; });
}

Status parse_head_set(const std::string& value, const std::string& param, HeadSet* out) {
  HeadSet s;
  if (value == "all") {
    s.all = true;
    *out = s;
    return Status::ok_status();
  }
  if (value.find(".json") != std::string::npos) {
    std::ifstream f(value);
    if (!f) return Status::io_error(param + "=" + value + ": cannot read the file");
    try {
      nlohmann::json j;
      f >> j;
      for (const auto& e : j.at("heads")) s.heads.emplace_back(e.at(0).get<int64_t>(), e.at(1).get<int64_t>());
    } catch (const std::exception& e) {
      return Status::invalid_argument(param + "=" + value + ": expected {\"heads\": [[layer, head], ...]} (" + e.what() + ")");
    }
    *out = s;
    return Status::ok_status();
  }
  std::stringstream ss(value);
  std::string item;
  while (std::getline(ss, item, '+')) {
    if (item.empty()) continue;
    const size_t dot = item.find('.');
    size_t u1 = 0, u2 = 0;
    long long l = -1, h = -1;
    try {
      l = std::stoll(item.substr(0, dot), &u1);
      if (dot != std::string::npos) h = std::stoll(item.substr(dot + 1), &u2);
    } catch (...) {
      l = -1;
    }
    if (dot == std::string::npos || u1 != dot || u2 != item.size() - dot - 1 || l < 0 || h < 0)
      return Status::invalid_argument(param + "=" + value + ": '" + item + "' is not LAYER.HEAD (e.g. 5.0+17.3), 'all' or a .json file");
    s.heads.emplace_back(l, h);
  }
  *out = s;
  return Status::ok_status();
}

namespace {

Status take_double(std::map<std::string, std::string>* kv, const std::string& key, double def, const std::string& spec,
                   double* out) {
  auto it = kv->find(key);
  if (it == kv->end()) {
    *out = def;
    return Status::ok_status();
  }
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(it->second, &used);
  } catch (...) {
    used = 0;
  }
  if (used == 0 || used != it->second.size() || !std::isfinite(v))
    return Status::invalid_argument("attention: " + key + "=" + it->second + " in '" + spec + "' is not a number");
  *out = v;
  kv->erase(it);
  return Status::ok_status();
}

// Reads and removes heads= (default `def` when absent).
Status take_heads(std::map<std::string, std::string>* kv, const std::string& def, HeadSet* out) {
  auto it = kv->find("heads");
  const std::string value = it == kv->end() ? def : it->second;
  if (it != kv->end()) kv->erase(it);
  return parse_head_set(value, "heads", out);
}

Status no_unknown(const std::map<std::string, std::string>& kv, const std::string& name) {
  if (!kv.empty()) return Status::invalid_argument("attention: unknown parameter '" + kv.begin()->first + "' for '" + name + "'");
  return Status::ok_status();
}

Status check_f32(const model::AttentionCall& c) {
  if (c.q.dtype != DType::kF32 || c.k.dtype != DType::kF32 || c.v.dtype != DType::kF32 || c.out.dtype != DType::kF32)
    return Status::unsupported("calibration backends need f32 q, k, v and out");
  return Status::ok_status();
}

const float* row_ptr(const TensorView& t, int64_t s, int64_t h) { return static_cast<const float*>(t.data) + t.offset(0, s, h, 0); }
float* row_ptr_mut(const TensorView& t, int64_t s, int64_t h) { return static_cast<float*>(t.data) + t.offset(0, s, h, 0); }

// Logit of query row (s, h) against key j, with the call's scale and softcap.
double logit(const model::AttentionCall& c, float scale, int64_t s, int64_t h, int64_t j) {
  const int64_t D = c.q.head_dim(), group = c.q.heads() / c.k.heads();
  const float* q = row_ptr(c.q, s, h);
  const float* k = row_ptr(c.k, j, h / group);
  double dot = 0;
  for (int64_t t = 0; t < D; ++t) dot += static_cast<double>(q[t]) * k[t];
  dot *= scale;
  if (c.params.softcap > 0) dot = c.params.softcap * std::tanh(dot / c.params.softcap);
  return dot;
}

float call_scale(const model::AttentionCall& c) {
  return c.params.scale.has_value() ? *c.params.scale : 1.0f / std::sqrt(static_cast<float>(c.q.head_dim()));
}

// Absolute position of the call's key slot 0. The model's sliding-window layers drop keys that no
// later query can see, so slot 0 is the sequence's first token only when this is 0.
int64_t first_slot_position(const model::AttentionCall& c) { return c.q_pos0 + c.q.seq() - c.k.seq(); }

// First key visible to the row at position p.
int64_t first_visible(const model::AttentionCall& c, int64_t p) {
  return c.params.window_left < 0 ? 0 : std::max<int64_t>(0, p - c.params.window_left);
}

class ZeroTuningBackend final : public model::AttentionBackend {
 public:
  ZeroTuningBackend(std::string spec, double gamma, HeadSet heads) : spec_(std::move(spec)), log_gamma_(std::log(gamma)), heads_(std::move(heads)) {}
  std::string name() const override { return spec_; }
  Status attend(const model::AttentionCall& c) override {
    // Without the first token in the cache there is no logit to shift: plain exact attention.
    if (!heads_.any_in_layer(c.layer) || first_slot_position(c) != 0)
      return attention(c.q, c.k, c.v, c.out, nullptr, c.params);
    ATTNKIT_RETURN_IF_ERROR(check_f32(c));
    const int64_t n = c.q.seq(), n_kv = c.k.seq(), H = c.q.heads(), HK = c.k.heads(), DV = c.v.head_dim();
    if (c.params.n_sink_tokens != 0 || c.params.mask.kind != MaskKind::kNone || c.params.maybe_cu_seqlens_q != nullptr)
      return Status::unsupported("zerotuning: sink tokens, custom masks and packed batches are not supported");
    lse_.assign(static_cast<size_t>(H * n), -INFINITY);
    if (n_kv > 1) {
      // Keys 1 .. n_kv - 1 as their own view; bottom-right alignment keeps every row's causal and
      // window limits, since both are counted from the last key.
      TensorView k1 = c.k, v1 = c.v;
      k1.data = static_cast<float*>(c.k.data) + c.k.stride[1];
      v1.data = static_cast<float*>(c.v.data) + c.v.stride[1];
      k1.shape[1] = v1.shape[1] = n_kv - 1;
      ATTNKIT_RETURN_IF_ERROR(attention(c.q, k1, v1, c.out, lse_.data(), c.params));
    } else {
      for (int64_t s = 0; s < n; ++s)
        for (int64_t h = 0; h < H; ++h) std::fill_n(row_ptr_mut(c.out, s, h), DV, 0.0f);
    }
    const float scale = call_scale(c);
    const int64_t group = H / HK;
    for (int64_t s = 0; s < n; ++s) {
      const int64_t p = n_kv - n + s;
      if (first_visible(c, p) > 0) continue;
      for (int64_t h = 0; h < H; ++h) {
        const float l0 = static_cast<float>(logit(c, scale, s, h, 0) + (heads_.contains(c.layer, h) ? log_gamma_ : 0.0));
        merge_state_row(row_ptr_mut(c.out, s, h), &lse_[static_cast<size_t>(h * n + s)], row_ptr(c.v, 0, h / group), l0, DV);
      }
    }
    return Status::ok_status();
  }

 private:
  std::string spec_;
  double log_gamma_;
  HeadSet heads_;
  std::vector<float> lse_;
};

class ActBackend final : public model::AttentionBackend {
 public:
  ActBackend(std::string spec, HeadSet heads, double beta, double threshold)
      : spec_(std::move(spec)), heads_(std::move(heads)), beta_(beta), threshold_(threshold) {}
  std::string name() const override { return spec_; }
  Status attend(const model::AttentionCall& c) override {
    if (!heads_.any_in_layer(c.layer)) return attention(c.q, c.k, c.v, c.out, nullptr, c.params);
    ATTNKIT_RETURN_IF_ERROR(check_f32(c));
    if (c.params.n_sink_tokens != 0 || c.params.mask.kind != MaskKind::kNone || c.params.maybe_cu_seqlens_q != nullptr)
      return Status::unsupported("act: sink tokens, custom masks and packed batches are not supported");
    const int64_t n = c.q.seq(), n_kv = c.k.seq(), H = c.q.heads(), HK = c.k.heads(), DV = c.v.head_dim(), group = H / HK;
    const int64_t base = first_slot_position(c);
    lse_.assign(static_cast<size_t>(H * n), 0.0f);
    ATTNKIT_RETURN_IF_ERROR(attention(c.q, c.k, c.v, c.out, lse_.data(), c.params));
    const float scale = call_scale(c);
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::vector<int64_t>>& sinks = sinks_[c.layer];
    sinks.resize(static_cast<size_t>(H));
    std::vector<double> o_s(static_cast<size_t>(DV));
    for (int64_t h = 0; h < H; ++h) {
      if (!heads_.contains(c.layer, h)) continue;
      if (n > 1) {
        // Column means over sampled rows: a_k = mean_{sampled i that see k} exp(s_ik - lse_i).
        const int64_t samples = std::min<int64_t>(n, kSampleRows);
        std::vector<double> col(static_cast<size_t>(n_kv), 0.0);
        std::vector<int64_t> cnt(static_cast<size_t>(n_kv), 0);
        for (int64_t t = 0; t < samples; ++t) {
          const int64_t s = samples == 1 ? n - 1 : t * (n - 1) / (samples - 1);
          const int64_t p = n_kv - n + s;
          const double lse = lse_[static_cast<size_t>(h * n + s)];
          for (int64_t j = first_visible(c, p); j <= p; ++j) {
            col[static_cast<size_t>(j)] += std::exp(logit(c, scale, s, h, j) - lse);
            cnt[static_cast<size_t>(j)]++;
          }
        }
        // Sinks are kept as absolute positions (slots move when a sliding-window layer drops
        // keys); the sequence's first token is never one of them.
        sinks[static_cast<size_t>(h)].clear();
        for (int64_t j = 0; j < n_kv; ++j)
          if (base + j > 0 && cnt[static_cast<size_t>(j)] >= kMinRows &&
              col[static_cast<size_t>(j)] / static_cast<double>(cnt[static_cast<size_t>(j)]) > threshold_)
            sinks[static_cast<size_t>(h)].push_back(base + j);
      }
      const std::vector<int64_t>& S = sinks[static_cast<size_t>(h)];
      if (S.empty()) continue;
      for (int64_t s = 0; s < n; ++s) {
        const int64_t p = n_kv - n + s;
        const int64_t lo = first_visible(c, p);
        const double lse = lse_[static_cast<size_t>(h * n + s)];
        double m = 0;
        std::fill(o_s.begin(), o_s.end(), 0.0);
        for (int64_t pos : S) {
          const int64_t j = pos - base;
          if (j < lo || j > p) continue;
          const double a = std::exp(logit(c, scale, s, h, j) - lse);
          m += a;
          const float* v = row_ptr(c.v, j, h / group);
          for (int64_t t = 0; t < DV; ++t) o_s[static_cast<size_t>(t)] += a * v[t];
        }
        if (m <= 0 || 1 - m < 1e-6) continue;  // no sink visible, or nothing else to give the mass to
        const double keep = (1 - beta_ * m) / (1 - m);
        float* o = row_ptr_mut(c.out, s, h);
        for (int64_t t = 0; t < DV; ++t)
          o[t] = static_cast<float>(beta_ * o_s[static_cast<size_t>(t)] + keep * (o[t] - o_s[static_cast<size_t>(t)]));
      }
    }
    return Status::ok_status();
  }

 private:
  static constexpr int64_t kSampleRows = 64;
  static constexpr int64_t kMinRows = 8;
  std::string spec_;
  HeadSet heads_;
  double beta_, threshold_;
  std::vector<float> lse_;
  std::mutex mu_;
  std::map<int64_t, std::vector<std::vector<int64_t>>> sinks_;  // layer -> per head sink positions
};

class MaskHeadsBackend final : public model::AttentionBackend {
 public:
  MaskHeadsBackend(std::string spec, HeadSet heads) : spec_(std::move(spec)), heads_(std::move(heads)) {}
  std::string name() const override { return spec_; }
  Status attend(const model::AttentionCall& c) override {
    ATTNKIT_RETURN_IF_ERROR(attention(c.q, c.k, c.v, c.out, nullptr, c.params));
    if (!heads_.any_in_layer(c.layer)) return Status::ok_status();
    ATTNKIT_RETURN_IF_ERROR(check_f32(c));
    for (int64_t s = 0; s < c.out.seq(); ++s)
      for (int64_t h = 0; h < c.out.heads(); ++h)
        if (heads_.contains(c.layer, h)) std::fill_n(row_ptr_mut(c.out, s, h), c.out.head_dim(), 0.0f);
    return Status::ok_status();
  }

 private:
  std::string spec_;
  HeadSet heads_;
};

Status make_zerotuning(const std::string& spec, std::unique_ptr<model::AttentionBackend>* out) {
  std::string name;
  std::map<std::string, std::string> kv;
  ATTNKIT_RETURN_IF_ERROR(model::parse_attention_spec(spec, &name, &kv));
  double gamma = 1;
  ATTNKIT_RETURN_IF_ERROR(take_double(&kv, "gamma", 1.0, spec, &gamma));
  if (!(gamma > 0)) return Status::invalid_argument("zerotuning: gamma=" + std::to_string(gamma) + " must be > 0");
  HeadSet heads;
  ATTNKIT_RETURN_IF_ERROR(take_heads(&kv, "all", &heads));
  ATTNKIT_RETURN_IF_ERROR(no_unknown(kv, name));
  *out = std::make_unique<ZeroTuningBackend>(spec, gamma, std::move(heads));
  return Status::ok_status();
}

Status make_act(const std::string& spec, std::unique_ptr<model::AttentionBackend>* out) {
  std::string name;
  std::map<std::string, std::string> kv;
  ATTNKIT_RETURN_IF_ERROR(model::parse_attention_spec(spec, &name, &kv));
  double beta = 0.4, threshold = 0.1;
  ATTNKIT_RETURN_IF_ERROR(take_double(&kv, "beta", 0.4, spec, &beta));
  ATTNKIT_RETURN_IF_ERROR(take_double(&kv, "threshold", 0.1, spec, &threshold));
  if (!(beta >= 0 && beta <= 1)) return Status::invalid_argument("act: beta=" + std::to_string(beta) + " must be in [0, 1]");
  if (!(threshold > 0 && threshold < 1))
    return Status::invalid_argument("act: threshold=" + std::to_string(threshold) + " must be in (0, 1)");
  HeadSet heads;
  ATTNKIT_RETURN_IF_ERROR(take_heads(&kv, "all", &heads));
  ATTNKIT_RETURN_IF_ERROR(no_unknown(kv, name));
  *out = std::make_unique<ActBackend>(spec, std::move(heads), beta, threshold);
  return Status::ok_status();
}

Status make_mask_heads(const std::string& spec, std::unique_ptr<model::AttentionBackend>* out) {
  std::string name;
  std::map<std::string, std::string> kv;
  ATTNKIT_RETURN_IF_ERROR(model::parse_attention_spec(spec, &name, &kv));
  if (kv.count("heads") == 0) return Status::invalid_argument("mask_heads: heads=L.H+L.H+... is required");
  HeadSet heads;
  ATTNKIT_RETURN_IF_ERROR(take_heads(&kv, "", &heads));
  ATTNKIT_RETURN_IF_ERROR(no_unknown(kv, name));
  *out = std::make_unique<MaskHeadsBackend>(spec, std::move(heads));
  return Status::ok_status();
}

const model::AttentionBackendRegistrar kZeroTuning("zerotuning", "zerotuning:gamma=G,heads=all|L.H+...", make_zerotuning);
const model::AttentionBackendRegistrar kAct("act", "act:heads=all|L.H+...|FILE.json,beta=0.4,threshold=0.1", make_act);
const model::AttentionBackendRegistrar kMaskHeads("mask_heads", "mask_heads:heads=L.H+...", make_mask_heads);

}  // namespace

Status zerotuning_fit(model::Model* m, const std::vector<int32_t>& tokens, const std::vector<double>& gammas,
                      const std::string& heads, ZeroTuningFit* out) {
  if (m == nullptr || out == nullptr) return Status::invalid_argument("zerotuning_fit: model or out is null");
  if (gammas.empty()) return Status::invalid_argument("zerotuning_fit: no gammas");
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n < 16) return Status::invalid_argument("zerotuning_fit: " + std::to_string(n) + " tokens; need at least 16");
  const model::GemmaConfig& c = m->config();
  // Next-token distributions at every 8th position (the logits of all rows would be n x 1 MiB).
  std::vector<int64_t> rows;
  for (int64_t i = 7; i + 1 < n; i += 8) rows.push_back(i);
  ZeroTuningFit f;
  f.gammas = gammas;
  f.heads = heads;
  std::vector<float> hidden(static_cast<size_t>(n * c.n_embd)), sel(static_cast<size_t>(rows.size() * c.n_embd));
  std::vector<float> logits(static_cast<size_t>(rows.size() * c.n_vocab));
  double best = INFINITY;
  for (double g : gammas) {
    std::unique_ptr<model::AttentionBackend> be;
    std::ostringstream spec;
    spec << "zerotuning:gamma=" << g << ",heads=" << heads;
    ATTNKIT_RETURN_IF_ERROR(make_zerotuning(spec.str(), &be));
    m->set_attention(std::shared_ptr<model::AttentionBackend>(std::move(be)));
    m->reset();
    model::ForwardOutputs fo;
    fo.maybe_hidden = hidden.data();
    Status st = m->forward(tokens.data(), n, fo);
    for (size_t r = 0; st.ok() && r < rows.size(); ++r)
      std::copy_n(hidden.data() + rows[r] * c.n_embd, c.n_embd, sel.data() + static_cast<int64_t>(r) * c.n_embd);
    if (st.ok()) st = m->logits_from_hidden(sel.data(), static_cast<int64_t>(rows.size()), logits.data());
    m->set_attention(nullptr);
    ATTNKIT_RETURN_IF_ERROR(st);
    double ent = 0, nll = 0;
    for (size_t r = 0; r < rows.size(); ++r) {
      const float* lg = logits.data() + static_cast<int64_t>(r) * c.n_vocab;
      const double mx = *std::max_element(lg, lg + c.n_vocab);
      double z = 0, ez = 0;
      for (int64_t v = 0; v < c.n_vocab; ++v) {
        const double e = std::exp(lg[v] - mx);
        z += e;
        ez += e * (lg[v] - mx);
      }
      ent += std::log(z) - ez / z;
      nll += std::log(z) - (lg[tokens[static_cast<size_t>(rows[r] + 1)]] - mx);
    }
    ent /= static_cast<double>(rows.size());
    f.entropy.push_back(ent);
    f.perplexity.push_back(std::exp(nll / static_cast<double>(rows.size())));
    if (ent < best) {
      best = ent;
      f.best_gamma = g;
    }
  }
  *out = std::move(f);
  return Status::ok_status();
}

}  // namespace attnkit::analysis
