// HyperAttention and Routing attention.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "attnkit/sparse.h"
#include "sparse_test_util.h"

namespace attnkit {
namespace {

using sparse_test::Inputs;

double rel_error(const Inputs& got, const Inputs& want) {
  double err = 0;
  EXPECT_TRUE(relative_l2_error(got.out.view(), want.out.view(), &err).ok());
  return err;
}

Inputs exact(int64_t n, int64_t hq, int64_t hkv, int64_t d, uint64_t seed, bool causal) {
  Inputs ex(1, n, n, hq, hkv, d, seed);
  EXPECT_TRUE(attention(ex.q.view(), ex.k.view(), ex.v.view(), ex.out.view(), ex.lse.data(),
                        sparse_test::causal_params(causal)).ok());
  return ex;
}

TEST(HyperAttention, ExactAtOrBelowMinLength) {
  for (bool causal : {true, false}) {
    Inputs in(1, 301, 301, 4, 2, 64, 3);
    HyperConfig c;
    c.min_len = 512;
    double pairs = 0;
    AttentionParams p = sparse_test::causal_params(causal);
    ASSERT_TRUE(hyper_attention(in.q.view(), in.k.view(), in.v.view(), in.out.view(), in.lse.data(), p, c, &pairs).ok());
    EXPECT_EQ(sparse_test::check_against_reference(in, p, [](int64_t, int64_t, int64_t, int64_t) { return true; }), "");
    EXPECT_EQ(pairs, 4.0 * (causal ? 301.0 * 302 / 2 : 301.0 * 301));
  }
}

TEST(HyperAttention, AllKeysSampledIsExact) {
  // With every key sampled (without replacement) the weight n/m is 1 and the own-block keys are
  // masked out of the sample, so block part + sample part = exact attention, also through the
  // causal recursion (two levels at n = 1024, min_len = 256).
  for (bool causal : {false, true}) {
    const int64_t n = 1024;
    Inputs in(1, n, n, 2, 1, 32, 5);
    HyperConfig c;
    c.min_len = 256;
    c.block = 64;
    c.samples = n;
    AttentionParams p = sparse_test::causal_params(causal);
    ASSERT_TRUE(hyper_attention(in.q.view(), in.k.view(), in.v.view(), in.out.view(), in.lse.data(), p, c, nullptr).ok());
    Inputs ex = exact(n, 2, 1, 32, 5, causal);
    EXPECT_LT(rel_error(in, ex), 1e-5) << (causal ? "causal" : "non-causal");
    for (size_t x = 0; x < in.lse.size(); ++x) ASSERT_NEAR(in.lse[x], ex.lse[x], 1e-4) << x;
  }
}

TEST(HyperAttention, ErrorFallsAsSamplesGrow) {
  // Mean over seeds of the relative L2 error for growing sample counts, non-causal, n = 2048.
  const int64_t n = 2048;
  std::vector<int64_t> samples = {0, 64, 512, n};
  std::vector<double> err(samples.size(), 0.0);
  for (uint64_t seed = 1; seed <= 3; ++seed) {
    Inputs ex = exact(n, 2, 2, 32, 20 + seed, false);
    for (size_t s = 0; s < samples.size(); ++s) {
      Inputs in(1, n, n, 2, 2, 32, 20 + seed);
      HyperConfig c;
      c.min_len = 128;
      c.block = 128;
      c.samples = samples[s];
      c.seed = seed;
      ASSERT_TRUE(hyper_attention(in.q.view(), in.k.view(), in.v.view(), in.out.view(), nullptr,
                                  sparse_test::causal_params(false), c, nullptr).ok());
      err[s] += rel_error(in, ex) / 3;
    }
  }
  for (size_t s = 1; s < samples.size(); ++s) {
    EXPECT_LT(err[s], err[s - 1]) << "samples " << samples[s] << " vs " << samples[s - 1];
  }
  EXPECT_LT(err.back(), 1e-5);
  EXPECT_GT(err.front(), 0.05);  // the block diagonal alone misses most of the mass of random data
}

TEST(HyperAttention, BadInputs) {
  Inputs in(1, 64, 80, 2, 1, 32, 1);
  HyperConfig c;
  Status s = hyper_attention(in.q.view(), in.k.view(), in.v.view(), in.out.view(), nullptr,
                             sparse_test::causal_params(true), c, nullptr);
  EXPECT_EQ(s.code(), StatusCode::kUnsupported);
  EXPECT_NE(s.message().find("seq_q == seq_kv"), std::string::npos) << s.message();
  c.n_projections = 0;
  s = hyper_attention(in.q.view(), in.k.view(), in.v.view(), in.out.view(), nullptr,
                      sparse_test::causal_params(false), c, nullptr);
  EXPECT_NE(s.message().find("n_projections 0"), std::string::npos) << s.message();
}

TEST(RoutingAttention, OneClusterIsExact) {
  // One cluster holds every key: window part + cluster part (keys outside the window) = all keys.
  for (bool causal : {true, false}) {
    Inputs in(1, 333, 333, 4, 2, 48, 7);
    RoutingConfig c;
    c.clusters = 1;
    c.window = 40;
    double pairs = 0;
    AttentionParams p = sparse_test::causal_params(causal);
    ASSERT_TRUE(routing_attention(in.q.view(), in.k.view(), in.v.view(), in.out.view(), in.lse.data(), p, c, &pairs).ok());
    EXPECT_EQ(sparse_test::check_against_reference(in, p, [](int64_t, int64_t, int64_t, int64_t) { return true; }), "");
    EXPECT_EQ(pairs, 4.0 * (causal ? 333.0 * 334 / 2 : 333.0 * 333));
  }
}

TEST(RoutingAttention, ClustersReduceWorkAndFollowQueryKeySimilarity) {
  // Keys and queries drawn around two opposite directions: with two clusters each query should
  // attend (mostly) keys of its own direction, computing about half the pairs.
  const int64_t n = 512, d = 32;
  Inputs in(1, n, n, 1, 1, d, 3);
  std::vector<float> q = in.q.to_dense(), k = in.k.to_dense();
  for (int64_t i = 0; i < n; ++i) {
    const float sign = (i % 2) ? 1.0f : -1.0f;
    for (int64_t c = 0; c < d; ++c) {
      q[i * d + c] = 0.2f * q[i * d + c] + (c < d / 2 ? sign : 0.0f);
      k[i * d + c] = 0.2f * k[i * d + c] + (c < d / 2 ? sign : 0.0f);
    }
  }
  in.q.from_dense(q);
  in.k.from_dense(k);
  RoutingConfig c;
  c.clusters = 2;
  c.window = 8;
  double pairs = 0;
  AttentionParams p = sparse_test::causal_params(true);
  ASSERT_TRUE(routing_attention(in.q.view(), in.k.view(), in.v.view(), in.out.view(), in.lse.data(), p, c, &pairs).ok());
  const double causal_pairs = n * (n + 1) / 2.0;
  EXPECT_LT(pairs, 0.6 * causal_pairs);
  EXPECT_GT(pairs, 0.4 * causal_pairs);
  // Same-parity keys: the mask "same parity or within the window" is the reference.
  EXPECT_EQ(sparse_test::check_against_reference(in, p, [](int64_t, int64_t, int64_t i, int64_t j) {
              return (i - j) % 2 == 0 || (i - j < 8 && j - i < 8);
            }), "");
}

}  // namespace
}  // namespace attnkit
