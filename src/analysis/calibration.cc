// Attention backends that edit attention at inference: ACT, ZeroTuning, and head masking.
//
// Neither forms an attention matrix:
//   zerotuning  (Han et al. 2025, "ZeroTuning: Unlocking the Initial Token's Power to Enhance Large
//               Language Models Without Training"): per chosen head, log(gamma) is added to the
//               first token's logit, i.e. a_0' = gamma a_0 / D, a_i' = a_i / D, D = (gamma - 1) a_0 + 1.
//               This is the kernel's key-bias hook (AttentionParams::maybe_key_bias), so it costs
//               one add per tile that holds the first key; in the model the layer keeps its
//               default path over the paged (bf16) cache, prefill and decode alike.
//   act         (Yu et al. 2024, "Unveiling and Harnessing Hidden Attention Sinks: Training-Free
//               Attention Calibration", ICML 2024): on chosen heads, tokens after the first whose
//               mean attention exceeds `threshold` are sinks; their attention is scaled by beta and the
//               removed mass goes to the other keys in proportion to their attention. With m_S the
//               row's mass on the sinks and o_S = sum_{k in S} A_ik v_k, the calibrated output is
//                 o' = beta o_S + (1 - beta m_S) / (1 - m_S) (o - o_S).
//               m_S and o_S need the row's final normalizer, which a one-pass online softmax
//               knows only after the row's last key, and the rescale is not a logit shift (the
//               factor (1 - beta m_S) / (1 - m_S) depends on m_S), so it runs after the kernel
//               (analysis/act.h): sinks are verified by their exact column means over the call's
//               rows, found among candidates from sampled rows; every row's probabilities on the
//               few candidate keys (its dot products with them and the kernel's LSE) give both
//               the column means and each row's m_S and o_S. Extra work per row is
//               O(|candidates| head_dim), and no matrix is formed. Single-token decode steps
//               reuse the sinks found by the layer's last multi-row call.
//   mask_heads  the attention output of chosen heads set to zero (the retrieval-head causal test).
#include <cmath>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include <nlohmann/json.hpp>

#include "attnkit/analysis.h"
#include "analysis/act.h"

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

float* row_ptr_mut(const TensorView& t, int64_t s, int64_t h) { return static_cast<float*>(t.data) + t.offset(0, s, h, 0); }

// Absolute position of the call's key slot 0. The model's sliding-window layers drop keys that no
// later query can see, so slot 0 is the sequence's first token only when this is 0.
int64_t first_slot_position(const model::AttentionCall& c) { return c.q_pos0 + c.q.seq() - c.k.seq(); }

class ZeroTuningBackend final : public model::AttentionBackend {
 public:
  ZeroTuningBackend(std::string spec, double gamma, HeadSet heads)
      : spec_(std::move(spec)), log_gamma_(static_cast<float>(std::log(gamma))), heads_(std::move(heads)) {}
  std::string name() const override { return spec_; }
  // In the model: the default path over the paged cache, with ln(gamma) on position 0's logit.
  bool key_bias(int64_t layer, int64_t n_head, std::vector<float>* bias, int64_t* position) const override {
    bias->clear();
    *position = 0;
    if (heads_.any_in_layer(layer)) *bias = head_bias(layer, n_head);
    return true;
  }
  // A direct call: the same kernel hook on the call's key axis. Slot 0 is the sequence's first
  // token only when first_slot_position is 0; otherwise that token is gone and nothing is biased.
  Status attend(const model::AttentionCall& c) override {
    AttentionParams p = c.params;
    std::vector<float> bias;
    if (heads_.any_in_layer(c.layer) && first_slot_position(c) == 0) {
      bias = head_bias(c.layer, c.q.heads());
      p.maybe_key_bias = bias.data();
      p.key_bias_index = 0;
    }
    return attention(c.q, c.k, c.v, c.out, nullptr, p);
  }

 private:
  std::vector<float> head_bias(int64_t layer, int64_t n_head) const {
    std::vector<float> b(static_cast<size_t>(n_head), 0.0f);
    for (int64_t h = 0; h < n_head; ++h)
      if (heads_.contains(layer, h)) b[static_cast<size_t>(h)] = log_gamma_;
    return b;
  }

  std::string spec_;
  float log_gamma_;
  HeadSet heads_;
};

class ActBackend final : public model::AttentionBackend {
 public:
  ActBackend(std::string spec, HeadSet heads, double beta, double threshold)
      : spec_(std::move(spec)), heads_(std::move(heads)), beta_(beta), threshold_(threshold) {}
  std::string name() const override { return spec_; }
  Status attend(const model::AttentionCall& c) override {
    if (!heads_.any_in_layer(c.layer)) return attention(c.q, c.k, c.v, c.out, nullptr, c.params);
    ATTNKIT_RETURN_IF_ERROR(act::check_call(c));
    const int64_t n = c.q.seq(), n_kv = c.k.seq(), H = c.q.heads();
    std::lock_guard<std::mutex> lock(mu_);  // the buffers and the sinks found so far
    lse_.resize(static_cast<size_t>(H * n));
    ATTNKIT_RETURN_IF_ERROR(attention(c.q, c.k, c.v, c.out, lse_.data(), c.params));
    std::vector<char> on(static_cast<size_t>(H));
    for (int64_t h = 0; h < H; ++h) on[static_cast<size_t>(h)] = heads_.contains(c.layer, h);
    std::vector<std::vector<int64_t>>& sinks = sinks_[c.layer];  // absolute positions per head
    sinks.resize(static_cast<size_t>(H));
    const int64_t base = first_slot_position(c);
    std::vector<std::vector<int32_t>> keys(static_cast<size_t>(H)), chosen(static_cast<size_t>(H));
    if (n > 1) {
      act::candidates(c, lse_.data(), on, threshold_, &scratch_, &keys);
      act::key_probs(c, lse_.data(), std::move(keys), &scratch_.probs);
      act::select_sinks(c, scratch_.probs, threshold_, &chosen);
      for (int64_t h = 0; h < H; ++h) {
        sinks[static_cast<size_t>(h)].clear();
        for (int32_t k : chosen[static_cast<size_t>(h)])
          sinks[static_cast<size_t>(h)].push_back(base + scratch_.probs.keys[static_cast<size_t>(h)][static_cast<size_t>(k)]);
      }
    } else {
      // A single-token decode step keeps the sinks of the layer's last multi-row call.
      for (int64_t h = 0; h < H; ++h) {
        if (!on[static_cast<size_t>(h)]) continue;
        for (int64_t pos : sinks[static_cast<size_t>(h)])
          if (pos - base >= 0 && pos - base < n_kv) {
            chosen[static_cast<size_t>(h)].push_back(static_cast<int32_t>(keys[static_cast<size_t>(h)].size()));
            keys[static_cast<size_t>(h)].push_back(static_cast<int32_t>(pos - base));
          }
      }
      act::key_probs(c, lse_.data(), std::move(keys), &scratch_.probs);
    }
    act::correct(c, scratch_.probs, chosen, beta_);
    return Status::ok_status();
  }

 private:
  std::string spec_;
  HeadSet heads_;
  double beta_, threshold_;
  std::vector<float> lse_;
  act::Scratch scratch_;
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
