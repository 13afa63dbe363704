// Local helpers of the linear tests: a case builder (random q/k/v, gates, betas and weights for one
// named configuration of the engine) and the tolerance check. The shared generator/tolerance of
// tests/testing/ did not exist when these were written; the check follows the same policy (error
// relative to the output magnitude, NaN fails).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "attnkit/linear.h"
#include "reference/linear_ref.h"

namespace attnkit {
namespace lintest {

struct Buf {
  std::vector<float> data;
  TensorView view;
  void make(int64_t b, int64_t s, int64_t h, int64_t d) {
    data.assign(static_cast<size_t>(b * s * h * d), 0.0f);
    view = TensorView::contiguous(data.data(), DType::kF32, b, s, h, d);
  }
};

inline void fill_normal(std::vector<float>& v, uint64_t seed, double sd = 1.0, double mean = 0.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> n(mean, sd);
  for (float& x : v) x = static_cast<float>(n(rng));
}

// One engine configuration with its own inputs.
struct Case {
  std::string name;
  LinearAttentionParams p;
  Buf q, k, v, gate, beta;
  std::vector<float> head_decay, weight, bias, cott_c;
  int64_t batch = 1, seq = 0, heads = 2, heads_kv = 2, d = 16, dv = 16;
};

// Names of the engine configurations the tests sweep (mirrors the registered mechanisms).
inline std::vector<std::string> engine_configs() {
  return {"linear_elu", "linear_relu", "linear_identity", "performer", "cosformer", "based_taylor", "taylorshift",
          "hedgehog", "cottention", "lln", "retnet", "lightning", "transnormer", "simple_gla", "gla", "hgrn2",
          "deltanet", "gated_deltanet"};
}

// Builds the configuration `name` on [batch, seq, heads, d] inputs. gate_strength scales the
// log-decays (1 = typical, larger = stronger decay).
inline void build_case(Case* c, const std::string& name, int64_t batch, int64_t seq, int64_t heads, int64_t d,
                       int64_t dv, uint64_t seed, double gate_strength = 1.0) {
  c->name = name;
  c->batch = batch;
  c->seq = seq;
  c->heads = c->heads_kv = heads;
  c->d = d;
  c->dv = dv;
  LinearAttentionParams& p = c->p;
  p = LinearAttentionParams();
  c->q.make(batch, seq, heads, d);
  c->k.make(batch, seq, heads, d);
  c->v.make(batch, seq, heads, dv);
  fill_normal(c->q.data, seed * 7 + 1);
  fill_normal(c->k.data, seed * 7 + 2);
  fill_normal(c->v.data, seed * 7 + 3);
  auto scalar_gate = [&]() {
    p.decay = DecayKind::kScalarGate;
    c->gate.make(batch, seq, heads, 1);
    fill_normal(c->gate.data, seed * 7 + 4);
    // log-sigmoid(x) / 16 (fla's gate normalizer), scaled by the test's strength.
    for (float& g : c->gate.data) g = static_cast<float>(-std::log1p(std::exp(-g)) / 16.0 * gate_strength * 4.0);
    p.gate = c->gate.view;
  };
  auto betas = [&]() {
    p.update = UpdateRule::kDelta;
    c->beta.make(batch, seq, heads, 1);
    fill_normal(c->beta.data, seed * 7 + 5);
    for (float& b : c->beta.data) b = 1.0f / (1.0f + std::exp(-b));
    p.beta = c->beta.view;
  };
  if (name == "linear_elu") {
    p.feature_map = FeatureMap::kEluPlusOne;
    p.norm = LinearNorm::kDenominator;
  } else if (name == "linear_relu") {
    p.feature_map = FeatureMap::kRelu;
    p.norm = LinearNorm::kDenominator;
    p.norm_eps = 1e-3f;
  } else if (name == "linear_identity") {
    p.feature_map = FeatureMap::kIdentity;
  } else if (name == "performer") {
    p.feature_map = FeatureMap::kPerformer;
    p.performer_features = 2 * d;
    p.performer_seed = seed;
    p.norm = LinearNorm::kDenominator;
    for (float& x : c->q.data) x *= 0.5f;
    for (float& x : c->k.data) x *= 0.5f;
  } else if (name == "cosformer") {
    p.feature_map = FeatureMap::kCosformer;
    p.cosformer_max_len = static_cast<double>(seq + 16);
    p.norm = LinearNorm::kDenominator;
    p.norm_eps = 1e-3f;
  } else if (name == "based_taylor" || name == "taylorshift") {
    p.feature_map = FeatureMap::kTaylor2;
    p.norm = LinearNorm::kDenominator;
    if (name == "taylorshift") {
      p.taylor_l2_normalize = true;
      p.taylor_temperature = 2.0f;
    }
  } else if (name == "hedgehog") {
    p.feature_map = FeatureMap::kHedgehog;
    p.feature_proj_dim = 8;
    c->weight.resize(static_cast<size_t>(heads * d * 8));
    c->bias.resize(static_cast<size_t>(heads * 8));
    fill_normal(c->weight, seed * 7 + 6, 1.0 / std::sqrt(static_cast<double>(d)));
    fill_normal(c->bias, seed * 7 + 7, 0.1);
    p.maybe_feature_weight = c->weight.data();
    p.maybe_feature_bias = c->bias.data();
    p.norm = LinearNorm::kDenominator;
  } else if (name == "cottention") {
    p.feature_map = FeatureMap::kCosine;
    c->cott_c.resize(static_cast<size_t>(heads));
    for (int64_t h = 0; h < heads; ++h) c->cott_c[h] = 0.5f * static_cast<float>(h) - 0.25f;
    p.maybe_cottention_c = c->cott_c.data();
  } else if (name == "lln") {
    p.feature_map = FeatureMap::kLogNormal;
    lln_moment_match(1.0, 1.0, &p.lln_alpha, &p.lln_beta);
    p.norm = LinearNorm::kDenominator;
  } else if (name == "retnet") {
    p.decay = DecayKind::kPerHead;
    c->head_decay.resize(static_cast<size_t>(heads));
    retnet_log_decays(heads, c->head_decay.data());
    for (float& g : c->head_decay) g *= static_cast<float>(gate_strength);
    p.maybe_head_log_decay = c->head_decay.data();
    p.norm = LinearNorm::kOutputRms;
  } else if (name == "lightning") {
    p.decay = DecayKind::kPerHead;
    c->head_decay.resize(static_cast<size_t>(heads));
    lightning_log_decays(heads, c->head_decay.data());
    for (float& g : c->head_decay) g *= static_cast<float>(gate_strength);
    p.maybe_head_log_decay = c->head_decay.data();
    p.scale = 1.0f;
    p.norm = LinearNorm::kOutputRms;
  } else if (name == "transnormer") {
    p.feature_map = FeatureMap::kEluPlusOne;
    p.norm = LinearNorm::kOutputRms;
  } else if (name == "simple_gla") {
    scalar_gate();
  } else if (name == "gla" || name == "hgrn2") {
    p.decay = DecayKind::kVectorGate;
    c->gate.make(batch, seq, heads, d);
    fill_normal(c->gate.data, seed * 7 + 4);
    for (float& g : c->gate.data) g = static_cast<float>(-std::log1p(std::exp(-g)) / 16.0 * gate_strength * 4.0);
    p.gate = c->gate.view;
    if (name == "hgrn2") {
      // HGRN2 gates are closer to 0 (forget gate near 1 needs 1 - f to be a usable input gate).
      p.tie_key_to_gate = true;
    }
  } else if (name == "deltanet") {
    p.feature_map = FeatureMap::kL2Norm;
    betas();
  } else if (name == "gated_deltanet") {
    p.feature_map = FeatureMap::kL2Norm;
    betas();
    scalar_gate();
  } else {
    ADD_FAILURE() << "unknown config " << name;
  }
}

// Error of got (f32) against ref (double), relative to the largest reference magnitude.
struct Err {
  double max_abs = 0, ref_max = 0, rel = 0;
  bool nan = false;
};
inline Err compare(const std::vector<float>& got, const std::vector<double>& ref) {
  Err e;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) e.nan = true;
    e.max_abs = std::max(e.max_abs, std::abs(got[i] - ref[i]));
    e.ref_max = std::max(e.ref_max, std::abs(ref[i]));
  }
  e.rel = e.max_abs / (e.ref_max + 1e-30);
  return e;
}
inline Err compare_f(const std::vector<float>& got, const std::vector<float>& ref) {
  std::vector<double> r(ref.begin(), ref.end());
  return compare(got, r);
}

}  // namespace lintest
}  // namespace attnkit
