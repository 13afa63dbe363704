// razor (RazorAttention) and duo (DuoAttention): kept slots, the compensation entry and the
// attention output after eviction, against a plain statement of each rule, on random activations
// and on the real model's activations; head-map files and bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "attnkit/kv_cache.h"
#include "kv/head_map.h"
#include "kv/policy_harness.h"
#include "testing/tolerance.h"

namespace attnkit::kv {
namespace {

using testing_policy::Activations;
using testing_policy::PolicyRun;

// The rule, plainly: after each step's tokens are in, a compressed layer holding more than
// keep + slack tokens keeps its first `sinks` and its last keep - sinks tokens. Returns the kept
// absolute positions; `dropped` collects every evicted position.
std::vector<int64_t> reference_kept(int64_t n, const std::vector<int64_t>& steps, int64_t sinks, int64_t window,
                                    double ratio, int64_t budget, bool layer_full, std::vector<int64_t>* dropped) {
  std::vector<int64_t> held;
  int64_t done = 0;
  size_t si = 0;
  while (done < n) {
    const int64_t m = std::min(steps[std::min(si, steps.size() - 1)], n - done);
    ++si;
    for (int64_t i = 0; i < m; ++i) held.push_back(done + i);
    done += m;
    if (layer_full) continue;
    int64_t keep = window >= 0 ? sinks + window
                               : (ratio >= 0 ? static_cast<int64_t>(static_cast<double>(done) * (1.0 - ratio)) : budget);
    keep = std::max(keep, sinks + 1);
    if (static_cast<int64_t>(held.size()) <= keep) continue;
    const int64_t s = std::min(sinks, keep);
    std::vector<int64_t> next(held.begin(), held.begin() + s);
    for (size_t j = static_cast<size_t>(s); j < held.size() - static_cast<size_t>(keep - s); ++j) dropped->push_back(held[j]);
    next.insert(next.end(), held.end() - (keep - s), held.end());
    held = next;
  }
  return held;
}

struct Case {
  std::string spec;
  int64_t layer = 5;
  std::vector<int64_t> steps;
  int64_t sinks = 4, window = -1, budget = 0;
  double ratio = -1;
  bool layer_full = false;
  bool compensate = false;
};

std::vector<Case> cases() {
  return {
      {"razor:budget=100", 5, {150, 1}, 4, -1, 100, -1, false, true},
      {"razor:budget=64,sinks=2", 11, {37, 37, 1}, 2, -1, 64, -1, false, true},
      {"razor:ratio=0.5", 17, {113, 50, 1}, 4, -1, 0, 0.5, false, true},
      {"razor:sinks=4,window=40", 5, {1}, 4, 40, 0, -1, false, true},  // token by token
      {"razor:budget=64,heads=5.0", 5, {150, 1}, 4, -1, 64, -1, true, true},
      {"razor:budget=64,heads=5.0", 11, {150, 1}, 4, -1, 64, -1, false, true},
      {"duo:budget=80,sinks=16", 5, {200, 1}, 16, -1, 80, -1, false, false},
      {"duo:budget=80,sinks=16,heads=11.0+17.0", 17, {200, 1}, 16, -1, 80, -1, true, false},
      {"duo:sinks=8,window=32,heads=17.0", 11, {64, 1}, 8, 32, 0, -1, false, false},
      {"duo:ratio=0.75,sinks=4", 5, {250, 1}, 4, -1, 0, 0.75, false, false},
  };
}

// Runs one case on activations and checks kept positions, compensation and the last output.
void check_case(const Case& c, const Activations& a) {
  SCOPED_TRACE(c.spec + " layer " + std::to_string(c.layer) + " on " + a.source);
  std::unique_ptr<KvPolicy> p;
  ASSERT_TRUE(make_kv_policy(c.spec, &p).ok());
  PolicyRun run;
  Status st = testing_policy::run_policy(p.get(), a, c.layer, 18, true, c.steps, &run);
  ASSERT_TRUE(st.ok()) << st.message();
  std::vector<int64_t> dropped;
  const std::vector<int64_t> want = reference_kept(a.n, c.steps, c.sinks, c.window, c.ratio, c.budget, c.layer_full, &dropped);
  EXPECT_EQ(run.cache->positions(0), want);
  const KvCompensation& comp = run.cache->compensation(0);
  if (!c.compensate || dropped.empty()) {
    EXPECT_TRUE(comp.empty());
  } else {
    ASSERT_EQ(comp.count.size(), static_cast<size_t>(a.kv_heads));
    for (int64_t h = 0; h < a.kv_heads; ++h) {
      EXPECT_EQ(comp.count[static_cast<size_t>(h)], static_cast<double>(dropped.size()));
      for (int64_t t = 0; t < a.d; ++t) {
        double mk = 0, mv = 0;
        for (int64_t pos : dropped) {
          mk += a.k[static_cast<size_t>((pos * a.kv_heads + h) * a.d + t)];
          mv += a.v[static_cast<size_t>((pos * a.kv_heads + h) * a.dv + t)];
        }
        mk /= static_cast<double>(dropped.size());
        mv /= static_cast<double>(dropped.size());
        ASSERT_NEAR(comp.key[static_cast<size_t>(h * a.d + t)], mk, 1e-5 * (1 + std::fabs(mk)));
        ASSERT_NEAR(comp.value[static_cast<size_t>(h * a.dv + t)], mv, 1e-5 * (1 + std::fabs(mv)));
      }
    }
  }
  // The last step's output: attention over the keys held at that step (the kept set before the
  // step's own eviction, plus the step's tokens) with the compensation entry of the previous step.
  // For a one-token last step: the kept set after the step minus nothing it evicted afterwards;
  // rebuild it by running the rule without the last token.
  ASSERT_EQ(run.last_n, 1);
  std::vector<int64_t> before_dropped;
  std::vector<int64_t> steps_before = c.steps;
  const int64_t n_before = a.n - 1;
  const std::vector<int64_t> held_before =
      reference_kept(n_before, steps_before, c.sinks, c.window, c.ratio, c.budget, c.layer_full, &before_dropped);
  std::vector<int64_t> keys = held_before;
  keys.push_back(a.n - 1);
  std::vector<float> ck(static_cast<size_t>(a.kv_heads * a.d)), cv(static_cast<size_t>(a.kv_heads * a.dv));
  const double count = c.compensate ? static_cast<double>(before_dropped.size()) : 0.0;
  for (int64_t h = 0; h < a.kv_heads && count > 0; ++h)
    for (int64_t t = 0; t < a.d; ++t) {
      double mk = 0, mv = 0;
      for (int64_t pos : before_dropped) {
        mk += a.k[static_cast<size_t>((pos * a.kv_heads + h) * a.d + t)];
        mv += a.v[static_cast<size_t>((pos * a.kv_heads + h) * a.dv + t)];
      }
      ck[static_cast<size_t>(h * a.d + t)] = static_cast<float>(mk / count);
      cv[static_cast<size_t>(h * a.dv + t)] = static_cast<float>(mv / count);
    }
  const std::vector<double> ref =
      testing_policy::plain_attention_row<double>(a, a.n - 1, keys, ck.data(), cv.data(), count);
  const std::vector<float> plain = testing_policy::plain_attention_row<float>(a, a.n - 1, keys, ck.data(), cv.data(), count);
  const testing::CheckResult r = testing::check_close(ref, run.last_out, plain, DType::kF32, "last decode output");
  EXPECT_TRUE(r.ok) << r.message;
}

TEST(HeadWisePolicies, RandomActivationsFollowTheRule) {
  for (const Case& c : cases()) {
    // Gemma's shape (4 query heads, 1 kv head, 256) and a GQA shape with two kv heads.
    check_case(c, testing_policy::random_activations(301, 4, 1, 64, 3));
    check_case(c, testing_policy::random_activations(257, 8, 2, 32, 4));
  }
}

TEST(HeadWisePolicies, RealActivationsFollowTheRule) {
  for (int64_t layer : {5, 17}) {
    Activations a;
    const Status st = testing_policy::real_activations(layer, 300, &a);
    if (st.code() == StatusCode::kUnsupported) GTEST_SKIP() << st.message();
    ASSERT_TRUE(st.ok()) << st.message();
    for (const Case& c : cases())
      if (c.layer == layer) check_case(c, a);
  }
}

// The compensation token approximates the dropped tokens' attention: with it, the output is
// closer to exact attention than without it when the dropped keys are alike (RazorAttention's
// premise: non-retrieval heads spread their mass evenly over old tokens).
TEST(HeadWisePolicies, RazorCompensationMovesTowardExactAttention) {
  Activations a = testing_policy::random_activations(400, 4, 1, 32, 8);
  for (int64_t i = 0; i < a.n; ++i)
    for (int64_t t = 0; t < a.d; ++t) a.k[static_cast<size_t>(i * a.d + t)] *= 0.1f;  // flat attention
  std::vector<int64_t> all(static_cast<size_t>(a.n));
  std::iota(all.begin(), all.end(), 0);
  const std::vector<double> exact = testing_policy::plain_attention_row<double>(a, a.n - 1, all, nullptr, nullptr, 0);
  auto err = [&](const std::string& spec) {
    std::unique_ptr<KvPolicy> p;
    EXPECT_TRUE(make_kv_policy(spec, &p).ok());
    PolicyRun run;
    EXPECT_TRUE(testing_policy::run_policy(p.get(), a, 5, 18, true, {399, 1}, &run).ok());
    double e = 0;
    for (size_t i = 0; i < exact.size(); ++i) e += (run.last_out[i] - exact[i]) * (run.last_out[i] - exact[i]);
    return e;
  };
  const double with = err("razor:budget=36"), without = err("duo:budget=36,sinks=4");
  EXPECT_LT(with, 0.5 * without) << "with compensation " << with << ", without " << without;
}

TEST(HeadWisePolicies, HeadMapFiles) {
  const auto dir = std::filesystem::temp_directory_path();
  const std::string scores = (dir / "attnkit_head_map_scores.json").string();
  {
    std::ofstream f(scores);
    f << R"({"format": "attnkit-head-map", "n_layers": 3, "kv_heads": 2,
             "scores": [[0.9, 0.1], [0.2, 0.6], [0.55, 0.3]]})";
  }
  HeadMap m;
  ASSERT_TRUE(load_head_map(scores, 0.5, -1, &m).ok());
  EXPECT_EQ(m.full, (std::vector<std::pair<int64_t, int64_t>>{{0, 0}, {1, 1}, {2, 0}}));
  ASSERT_TRUE(load_head_map(scores, 0.5, 0.34, &m).ok());  // round(0.34 * 6) = 2 highest
  EXPECT_EQ(m.full, (std::vector<std::pair<int64_t, int64_t>>{{0, 0}, {1, 1}}));
  EXPECT_TRUE(m.layer_full(1));
  EXPECT_FALSE(m.layer_full(2));
  EXPECT_TRUE(m.check_shape(3, 2).ok());
  Status st = m.check_shape(18, 1);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("3 layers x 2 kv heads"), std::string::npos) << st.message();
  // A policy built from the file refuses a model of another shape, naming the file.
  std::unique_ptr<KvPolicy> p;
  ASSERT_TRUE(make_kv_policy("duo:map=" + scores, &p).ok());
  PolicyRun run;
  st = testing_policy::run_policy(p.get(), testing_policy::random_activations(10, 4, 1, 16, 1), 5, 18, true, {10}, &run);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find(scores), std::string::npos) << st.message();

  const std::string listed = (dir / "attnkit_head_map_full.json").string();
  {
    std::ofstream f(listed);
    f << R"({"format": "attnkit-head-map", "n_layers": 18, "kv_heads": 1, "full": [[17, 0], [5, 0]]})";
  }
  ASSERT_TRUE(load_head_map(listed, 0.5, -1, &m).ok());
  EXPECT_EQ(m.full, (std::vector<std::pair<int64_t, int64_t>>{{5, 0}, {17, 0}}));
  // A listed layer keeps everything; an unlisted one is compressed.
  ASSERT_TRUE(make_kv_policy("duo:budget=20,sinks=4,map=" + listed, &p).ok());
  const Activations a = testing_policy::random_activations(60, 4, 1, 16, 2);
  ASSERT_TRUE(testing_policy::run_policy(p.get(), a, 17, 18, true, {60}, &run).ok());
  EXPECT_EQ(run.cache->size(0), 60);
  ASSERT_TRUE(testing_policy::run_policy(p.get(), a, 11, 18, true, {60}, &run).ok());
  EXPECT_EQ(run.cache->size(0), 20);

  const std::string bad = (dir / "attnkit_head_map_bad.json").string();
  for (const std::string body :
       {R"({"format": "other", "n_layers": 1, "kv_heads": 1, "full": []})",
        R"({"format": "attnkit-head-map", "n_layers": 2, "kv_heads": 1, "scores": [[0.1]]})",
        R"({"format": "attnkit-head-map", "n_layers": 2, "kv_heads": 1, "full": [[2, 0]]})", "not json"}) {
    std::ofstream(bad) << body;
    st = load_head_map(bad, 0.5, -1, &m);
    EXPECT_FALSE(st.ok()) << body;
    EXPECT_NE(st.message().find(bad), std::string::npos) << st.message();
  }
  std::filesystem::remove(scores);
  std::filesystem::remove(listed);
  std::filesystem::remove(bad);
}

TEST(HeadWisePolicies, BadParametersAreNamed) {
  std::unique_ptr<KvPolicy> p;
  for (const auto& [spec, needle] : std::vector<std::pair<std::string, std::string>>{
           {"duo:heads=5", "'5'"},
           {"razor:heads=5.x", "'5.x'"},
           {"duo:map=/nonexistent/map.json", "/nonexistent/map.json"},
           {"duo:map=a.json,heads=5.0", "not both"},
           {"razor:sinks=-1", "sinks=-1"},
           {"duo:window=0", "window=0"},
           {"duo:fraction=2", "fraction=2"}}) {
    const Status st = make_kv_policy(spec, &p);
    ASSERT_FALSE(st.ok()) << spec;
    EXPECT_NE(st.message().find(needle), std::string::npos) << spec << ": " << st.message();
  }
  ASSERT_TRUE(make_kv_policy("razor", &p).ok());
  EXPECT_EQ(p->name(), "razor:budget=260,sinks=4");
  ASSERT_TRUE(make_kv_policy("duo:heads=5.0+17.0", &p).ok());
  EXPECT_EQ(p->name(), "duo:budget=320,sinks=64,heads=5.0+17.0");
}

}  // namespace
}  // namespace attnkit::kv
