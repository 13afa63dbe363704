// pyramidkv: per-layer budgets and kept positions against a plain statement of PyramidKV's rule
// (SnapKV's pooled observation-window attention, top-k per layer with budgets falling linearly
// over the compressed layers), on random and real activations.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "attnkit/kv_cache.h"
#include "kv/policy_harness.h"

namespace attnkit::kv {
namespace {

using testing_policy::Activations;
using testing_policy::PolicyRun;

// PyramidKV's budget of compressed layer `rank` of `count`, from SnapKV's per-layer keep B.
int64_t reference_budget(int64_t B, int64_t seen, int64_t w, int64_t beta, int64_t rank, int64_t count) {
  const double A = static_cast<double>(B - w);
  double lo = A / static_cast<double>(beta), hi = 2 * A - lo;
  if (hi > static_cast<double>(seen - w)) {
    hi = static_cast<double>(seen - w);
    lo = 2 * A - hi;
  }
  if (A <= 0 || lo < 0 || hi < lo) return B;
  return w + std::llround(hi - static_cast<double>(rank) * (hi - lo) / static_cast<double>(count - 1));
}

// SnapKV on one prefill of all n tokens: the last w queries' softmax probabilities (causal, in
// double) summed over those queries and all query heads, averaged over `kernel` neighbours with
// zero padding over the keys before the window, top budget - w of those keys (ties: the later
// one) plus the window.
std::vector<int64_t> reference_snapkv(const Activations& a, int64_t budget, int64_t w, int64_t kernel) {
  const int64_t n = a.n, prefix = n - w, group = a.heads_q / a.kv_heads;
  std::vector<double> mass(static_cast<size_t>(n), 0.0);
  const double scale = 1.0 / std::sqrt(static_cast<double>(a.d));
  for (int64_t i = n - w; i < n; ++i)
    for (int64_t h = 0; h < a.heads_q; ++h) {
      std::vector<double> l(static_cast<size_t>(i + 1));
      double mx = -1e300;
      for (int64_t j = 0; j <= i; ++j) {
        double s = 0;
        for (int64_t t = 0; t < a.d; ++t)
          s += static_cast<double>(a.q[static_cast<size_t>((i * a.heads_q + h) * a.d + t)]) *
               a.k[static_cast<size_t>((j * a.kv_heads + h / group) * a.d + t)];
        l[static_cast<size_t>(j)] = s * scale;
        mx = std::max(mx, s * scale);
      }
      double den = 0;
      for (double& x : l) den += (x = std::exp(x - mx));
      for (int64_t j = 0; j <= i; ++j) mass[static_cast<size_t>(j)] += l[static_cast<size_t>(j)] / den;
    }
  std::vector<std::pair<double, int64_t>> ranked;
  for (int64_t j = 0; j < prefix; ++j) {
    double s = 0;
    for (int64_t t = j - kernel / 2; t <= j + kernel / 2; ++t) s += t >= 0 && t < prefix ? mass[static_cast<size_t>(t)] : 0.0;
    ranked.push_back({s / static_cast<double>(kernel), j});
  }
  std::sort(ranked.begin(), ranked.end(), [](const auto& x, const auto& y) { return x.first != y.first ? x.first > y.first : x.second > y.second; });
  std::vector<int64_t> keep;
  for (int64_t r = 0; r < budget - w; ++r) keep.push_back(ranked[static_cast<size_t>(r)].second);
  for (int64_t j = prefix; j < n; ++j) keep.push_back(j);
  std::sort(keep.begin(), keep.end());
  return keep;
}

// Fraction of positions two sorted sets share (|A n B| / |A u B|).
double jaccard(const std::vector<int64_t>& x, const std::vector<int64_t>& y) {
  std::vector<int64_t> i, u;
  std::set_intersection(x.begin(), x.end(), y.begin(), y.end(), std::back_inserter(i));
  std::set_union(x.begin(), x.end(), y.begin(), y.end(), std::back_inserter(u));
  return u.empty() ? 1.0 : static_cast<double>(i.size()) / static_cast<double>(u.size());
}

// One prefill of all tokens on each global layer of an 18-layer model (5, 11, 17).
void check_pyramid(const Activations& a, int64_t B, int64_t w, int64_t kernel, double min_jaccard) {
  const std::string spec = "pyramidkv:budget=" + std::to_string(B) + ",window=" + std::to_string(w) + ",kernel=" + std::to_string(kernel);
  SCOPED_TRACE(spec + " on " + a.source);
  std::unique_ptr<KvPolicy> p;
  ASSERT_TRUE(make_kv_policy(spec, &p).ok());
  int64_t total = 0;
  const int64_t layers[] = {5, 11, 17};
  for (int64_t rank = 0; rank < 3; ++rank) {
    PolicyRun run;
    const Status st = testing_policy::run_policy(p.get(), a, layers[rank], 18, true, {a.n}, &run);
    ASSERT_TRUE(st.ok()) << st.message();
    const int64_t budget = reference_budget(B, a.n, w, 20, rank, 3);
    const std::vector<int64_t>& got = run.cache->positions(0);
    total += static_cast<int64_t>(got.size());
    ASSERT_EQ(static_cast<int64_t>(got.size()), a.n > budget + w ? budget : a.n) << "layer " << layers[rank];
    if (a.n <= budget + w) continue;  // within SnapKV's slack of one window: nothing evicted
    const std::vector<int64_t> want = reference_snapkv(a, budget, w, kernel);
    // f32 attention mass against the double reference: near-equal pooled scores may swap at the
    // cut, so the sets are compared by overlap.
    EXPECT_GE(jaccard(got, want), min_jaccard) << "layer " << layers[rank];
  }
  // The pyramid spreads SnapKV's total (up to rounding) when every layer evicted.
  if (a.n > reference_budget(B, a.n, w, 20, 0, 3) + w) EXPECT_NEAR(static_cast<double>(total), 3.0 * static_cast<double>(B), 2.0);
}

TEST(PyramidKv, BudgetsFallLinearlyAndSumToSnapKvs) {
  // B = 200, w = 64, 600 tokens: A = 136, min 6.8, max 265.2 -> 329, 200, 71.
  EXPECT_EQ(reference_budget(200, 600, 64, 20, 0, 3), 329);
  EXPECT_EQ(reference_budget(200, 600, 64, 20, 1, 3), 200);
  EXPECT_EQ(reference_budget(200, 600, 64, 20, 2, 3), 71);
  // max clamped to seen - w: 300 tokens, B = 200: A = 136, max 236, min 36 -> 300, 200, 100.
  EXPECT_EQ(reference_budget(200, 300, 64, 20, 0, 3), 300);
  EXPECT_EQ(reference_budget(200, 300, 64, 20, 2, 3), 100);
  // A budget within the window: SnapKV's on every layer.
  EXPECT_EQ(reference_budget(50, 600, 64, 20, 0, 3), 50);
}

TEST(PyramidKv, RandomActivationsMatchTheRule) {
  check_pyramid(testing_policy::random_activations(600, 4, 1, 64, 21), 200, 64, 5, 0.97);
  check_pyramid(testing_policy::random_activations(300, 4, 1, 64, 22), 200, 64, 5, 0.97);  // clamped max
  check_pyramid(testing_policy::random_activations(400, 8, 2, 32, 23), 120, 16, 7, 0.97);  // GQA 4, two kv heads
}

TEST(PyramidKv, RealActivationsMatchTheRule) {
  for (int64_t layer : {5, 11, 17}) {
    Activations a;
    const Status st = testing_policy::real_activations(layer, 700, &a);
    if (st.code() == StatusCode::kUnsupported) GTEST_SKIP() << st.message();
    ASSERT_TRUE(st.ok()) << st.message();
    check_pyramid(a, 256, 64, 5, 0.95);
  }
}

TEST(PyramidKv, BadParametersAreNamed) {
  std::unique_ptr<KvPolicy> p;
  for (const auto& [spec, needle] : std::vector<std::pair<std::string, std::string>>{
           {"pyramidkv:beta=0", "beta=0"}, {"pyramidkv:kernel=4", "kernel=4"}, {"pyramidkv:window=0", "window=0"},
           {"pyramidkv:global_every=-2", "global_every=-2"}, {"pyramidkv:pool=min", "pool=min"}}) {
    const Status st = make_kv_policy(spec, &p);
    ASSERT_FALSE(st.ok()) << spec;
    EXPECT_NE(st.message().find(needle), std::string::npos) << spec << ": " << st.message();
  }
  // A layer that is not global under the pattern is refused, naming it.
  ASSERT_TRUE(make_kv_policy("pyramidkv:budget=16,window=4", &p).ok());
  PolicyRun run;
  const Status st = testing_policy::run_policy(p.get(), testing_policy::random_activations(50, 4, 1, 16, 1), 4, 18, true, {50}, &run);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("layer 4"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace attnkit::kv
