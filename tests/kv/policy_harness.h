// Test harness for KV policies: activations (random, or captured from the real model), a run of
// steps through kv_layer_step, and plain double-precision attention over explicit key sets.
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "attnkit/gguf.h"
#include "attnkit/kv_cache.h"
#include "attnkit/model.h"
#include "attnkit/tokenizer.h"
#include "attnkit/eval.h"

namespace attnkit::kv::testing_policy {

// One layer's post-RoPE q, k and v for n positions: [n, heads_q, d], [n, kv_heads, d], [n, kv_heads, dv].
struct Activations {
  int64_t n = 0, heads_q = 0, kv_heads = 0, d = 0, dv = 0;
  std::vector<float> q, k, v;
  std::string source;
};

inline Activations random_activations(int64_t n, int64_t heads_q, int64_t kv_heads, int64_t d, uint64_t seed) {
  Activations a;
  a.n = n;
  a.heads_q = heads_q;
  a.kv_heads = kv_heads;
  a.d = a.dv = d;
  a.source = "random seed " + std::to_string(seed);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  a.q.resize(static_cast<size_t>(n * heads_q * d));
  a.k.resize(static_cast<size_t>(n * kv_heads * d));
  a.v.resize(static_cast<size_t>(n * kv_heads * d));
  // Queries and keys a few times larger than unit scale, so attention is peaked as in a model.
  for (auto& x : a.q) x = 2.0f * u(rng);
  for (auto& x : a.k) x = 2.0f * u(rng);
  for (auto& x : a.v) x = u(rng);
  return a;
}

// The real model, loaded once (null when the GGUF is not installed).
inline model::Model* real_model() {
  static std::unique_ptr<model::Model> m = [] {
    std::unique_ptr<model::Model> out;
    std::string path;
    if (!gguf::find_default_model(&path).ok()) return out;
    model::LoadOptions lo;
    lo.threads = 2;
    if (!model::Model::load(path, lo, &out).ok()) out.reset();
    return out;
  }();
  return m.get();
}

// Post-RoPE q, k and v of `layer` for the first n tokens (BOS + KJV text from Genesis 1:1), from
// one prefill chunk of the real model with exact attention.
inline Status real_activations(int64_t layer, int64_t n, Activations* out) {
  model::Model* m = real_model();
  if (m == nullptr) return Status::unsupported("Gemma 3 270M GGUF not installed (scripts/setup.sh installs it)");
  std::string text;
  ATTNKIT_RETURN_IF_ERROR(eval::kjv_text("", &text));
  std::vector<int32_t> ids = m->tokenizer().encode(text.substr(0, static_cast<size_t>(n * 8)), {.add_bos = true});
  ids.resize(static_cast<size_t>(n));
  const auto& cfg = m->config();
  Activations a;
  a.n = n;
  a.heads_q = cfg.n_head;
  a.kv_heads = cfg.n_head_kv;
  a.d = cfg.head_dim;
  a.dv = cfg.head_dim_v;
  a.source = "Gemma 3 270M layer " + std::to_string(layer) + ", KJV";
  model::Taps taps;
  taps.layers = {layer};
  taps.on_layer = [&](const model::TapData& t) {
    a.q.insert(a.q.end(), t.q_post, t.q_post + t.n * a.heads_q * a.d);
    a.k.insert(a.k.end(), t.k_post, t.k_post + t.n * a.kv_heads * a.d);
    a.v.insert(a.v.end(), t.v, t.v + t.n * a.kv_heads * a.dv);
  };
  m->reset();
  m->set_taps(taps);
  const Status st = m->forward(ids.data(), n, {});
  m->clear_taps();
  m->reset();
  ATTNKIT_RETURN_IF_ERROR(st);
  if (static_cast<int64_t>(a.k.size()) != n * a.kv_heads * a.d) return Status::internal("taps captured a partial layer");
  *out = std::move(a);
  return Status::ok_status();
}

// A run of one layer through kv_layer_step: steps of the given sizes (the last sizes repeat until
// all n tokens are in), f32 storage so the cache holds the inputs exactly.
struct PolicyRun {
  std::unique_ptr<PagedKvCache> cache;
  std::vector<float> last_out;  // output of the last step, [n_last, heads_q, dv]
  int64_t last_n = 0;
};

inline Status run_policy(KvPolicy* policy, const Activations& a, int64_t layer, int64_t n_layers, bool is_global,
                         const std::vector<int64_t>& steps, PolicyRun* run) {
  KvCacheOptions o;
  o.kv_heads = a.kv_heads;
  o.head_dim = a.d;
  o.head_dim_v = a.dv;
  o.storage = KvStorage::kF32;
  ATTNKIT_RETURN_IF_ERROR(PagedKvCache::create(o, &run->cache));
  std::vector<int64_t> pos(static_cast<size_t>(a.n));
  for (int64_t i = 0; i < a.n; ++i) pos[static_cast<size_t>(i)] = i;
  int64_t done = 0;
  size_t si = 0;
  while (done < a.n) {
    const int64_t n = std::min(steps[std::min(si, steps.size() - 1)], a.n - done);
    ++si;
    run->last_out.assign(static_cast<size_t>(n * a.heads_q * a.dv), 0.0f);
    run->last_n = n;
    KvStepInput in;
    in.layer = layer;
    in.n_layers = n_layers;
    in.is_global = is_global;
    in.n = n;
    in.positions = pos.data() + done;
    in.q = a.q.data() + done * a.heads_q * a.d;
    in.k = a.k.data() + done * a.kv_heads * a.d;
    in.v = a.v.data() + done * a.kv_heads * a.dv;
    in.heads_q = a.heads_q;
    in.attn.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(a.d)));
    in.out = run->last_out.data();
    ATTNKIT_RETURN_IF_ERROR(kv_layer_step(policy, run->cache.get(), in));
    done += n;
  }
  return Status::ok_status();
}

// Plain attention of query row `i` (absolute position = i) over the keys at `keys` (absolute
// positions, each <= i), plus an optional extra key/value counted `count` times; in T precision.
template <typename T>
std::vector<T> plain_attention_row(const Activations& a, int64_t i, const std::vector<int64_t>& keys, const float* maybe_ck,
                                   const float* maybe_cv, double count) {
  const int64_t group = a.heads_q / a.kv_heads;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(a.d)));
  std::vector<T> out(static_cast<size_t>(a.heads_q * a.dv), T(0));
  for (int64_t h = 0; h < a.heads_q; ++h) {
    const int64_t hk = h / group;
    const float* q = a.q.data() + (i * a.heads_q + h) * a.d;
    auto logit = [&](const float* k) {
      T s = 0;
      for (int64_t t = 0; t < a.d; ++t) s += static_cast<T>(q[t]) * static_cast<T>(k[t]);
      return s * scale;
    };
    std::vector<T> l;
    for (int64_t p : keys) l.push_back(logit(a.k.data() + (p * a.kv_heads + hk) * a.d));
    const bool comp = maybe_ck != nullptr && count > 0;
    const T lc = comp ? logit(maybe_ck + hk * a.d) + static_cast<T>(std::log(count)) : T(0);
    T mx = comp ? lc : -std::numeric_limits<T>::infinity();
    for (T x : l) mx = std::max(mx, x);
    T den = comp ? std::exp(lc - mx) : T(0);
    std::vector<T> acc(static_cast<size_t>(a.dv), T(0));
    for (size_t j = 0; j < keys.size(); ++j) {
      const T w = std::exp(l[j] - mx);
      den += w;
      const float* v = a.v.data() + (keys[j] * a.kv_heads + hk) * a.dv;
      for (int64_t t = 0; t < a.dv; ++t) acc[static_cast<size_t>(t)] += w * static_cast<T>(v[t]);
    }
    if (comp) {
      const T w = std::exp(lc - mx);
      for (int64_t t = 0; t < a.dv; ++t) acc[static_cast<size_t>(t)] += w * static_cast<T>(maybe_cv[hk * a.dv + t]);
    }
    for (int64_t t = 0; t < a.dv; ++t) out[static_cast<size_t>(h * a.dv + t)] = acc[static_cast<size_t>(t)] / den;
  }
  return out;
}

}  // namespace attnkit::kv::testing_policy
