// Calibration backends (zerotuning, act, mask_heads) against materialized double-precision
// references on small random inputs, and their parameter errors.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "attnkit/analysis.h"
#include "attnkit/eval.h"
#include "attnkit/model.h"
#include "analysis/act.h"

namespace attnkit::analysis {
namespace {

struct Call {
  int64_t n, n_kv, H, HK, D;
  std::vector<float> q, k, v, out;
  model::AttentionCall call;
};

Call make_call(int64_t n, int64_t n_kv, int64_t H, int64_t HK, int64_t D, int64_t window_left, int64_t layer, uint64_t seed,
               const std::vector<int64_t>& sinks = {}, float lift = 2.5f) {
  Call c{n, n_kv, H, HK, D, {}, {}, {}, {}, {}};
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  c.q.resize(static_cast<size_t>(n * H * D));
  c.k.resize(static_cast<size_t>(n_kv * HK * D));
  c.v.resize(static_cast<size_t>(n_kv * HK * D));
  c.out.assign(static_cast<size_t>(n * H * D), 0.f);
  for (auto& x : c.q) x = nd(rng) + 0.5f;  // queries share a direction, so aligned keys become sinks
  for (auto& x : c.k) x = nd(rng);
  for (auto& x : c.v) x = nd(rng);
  for (int64_t at : sinks)
    for (int64_t g = 0; g < HK; ++g)
      for (int64_t d = 0; d < D; ++d) c.k[static_cast<size_t>((at * HK + g) * D + d)] = lift;
  c.call.layer = layer;
  c.call.q = TensorView::contiguous(c.q.data(), DType::kF32, 1, n, H, D);
  c.call.k = TensorView::contiguous(c.k.data(), DType::kF32, 1, n_kv, HK, D);
  c.call.v = TensorView::contiguous(c.v.data(), DType::kF32, 1, n_kv, HK, D);
  c.call.out = TensorView::contiguous(c.out.data(), DType::kF32, 1, n, H, D);
  c.call.q_pos0 = n_kv - n;
  c.call.params.causal = true;
  c.call.params.window_left = window_left;
  c.call.params.scale = 1.0f / std::sqrt(static_cast<float>(D));
  c.call.params.num_threads = 2;
  return c;
}

// Probabilities [H][n][n_kv] of the call, in double, with an extra logit bias[h] on key 0.
std::vector<double> probs(const Call& c, const std::vector<double>& bias0) {
  std::vector<double> a(static_cast<size_t>(c.H * c.n * c.n_kv), 0.0);
  const double scale = *c.call.params.scale;
  for (int64_t h = 0; h < c.H; ++h)
    for (int64_t i = 0; i < c.n; ++i) {
      const int64_t p = c.n_kv - c.n + i;
      const int64_t lo = c.call.params.window_left < 0 ? 0 : std::max<int64_t>(0, p - c.call.params.window_left);
      std::vector<double> s;
      double mx = -1e300;
      for (int64_t j = lo; j <= p; ++j) {
        double dot = 0;
        for (int64_t d = 0; d < c.D; ++d)
          dot += double(c.q[static_cast<size_t>((i * c.H + h) * c.D + d)]) * c.k[static_cast<size_t>((j * c.HK + h / (c.H / c.HK)) * c.D + d)];
        s.push_back(dot * scale + (j == 0 ? bias0[static_cast<size_t>(h)] : 0.0));
        mx = std::max(mx, s.back());
      }
      double z = 0;
      for (double& e : s) z += (e = std::exp(e - mx));
      for (int64_t j = lo; j <= p; ++j) a[static_cast<size_t>((h * c.n + i) * c.n_kv + j)] = s[static_cast<size_t>(j - lo)] / z;
    }
  return a;
}

std::vector<double> apply_v(const Call& c, const std::vector<double>& a) {
  std::vector<double> o(static_cast<size_t>(c.n * c.H * c.D), 0.0);
  for (int64_t h = 0; h < c.H; ++h)
    for (int64_t i = 0; i < c.n; ++i)
      for (int64_t j = 0; j < c.n_kv; ++j) {
        const double w = a[static_cast<size_t>((h * c.n + i) * c.n_kv + j)];
        if (w == 0) continue;
        for (int64_t d = 0; d < c.D; ++d)
          o[static_cast<size_t>((i * c.H + h) * c.D + d)] += w * c.v[static_cast<size_t>((j * c.HK + h / (c.H / c.HK)) * c.D + d)];
      }
  return o;
}

void expect_close(const std::vector<float>& got, const std::vector<double>& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_FALSE(std::isnan(got[i])) << what << " NaN at " << i;
    ASSERT_NEAR(got[i], want[i], tol * (1 + std::fabs(want[i]))) << what << " at " << i;
  }
}

std::unique_ptr<model::AttentionBackend> backend(const std::string& spec) {
  std::unique_ptr<model::AttentionBackend> b;
  Status st = model::make_attention_backend(spec, &b);
  EXPECT_TRUE(st.ok()) << spec << ": " << st.message();
  return b;
}

TEST(ZeroTuningBackend, AddsLogGammaToTheFirstKeyOnChosenHeads) {
  for (int64_t wl : {-1, 12, 200}) {
    for (auto [n, n_kv] : {std::pair<int64_t, int64_t>{37, 37}, {5, 113}, {1, 64}}) {
      Call c = make_call(n, n_kv, 4, 2, 16, wl, 3, 7);
      auto b = backend("zerotuning:gamma=2.5,heads=3.1+3.2+9.0");
      ASSERT_TRUE(b->attend(c.call).ok());
      std::vector<double> bias = {0, std::log(2.5), std::log(2.5), 0};
      expect_close(c.out, apply_v(c, probs(c, bias)), 2e-5, "zerotuning window " + std::to_string(wl));
      // Another layer: untouched heads, plain attention.
      c.call.layer = 4;
      ASSERT_TRUE(b->attend(c.call).ok());
      expect_close(c.out, apply_v(c, probs(c, {0, 0, 0, 0})), 2e-5, "zerotuning other layer");
    }
  }
  // gamma = 1 on every head is exact attention.
  Call c = make_call(29, 29, 4, 4, 8, -1, 0, 8);
  ASSERT_TRUE(backend("zerotuning:gamma=1,heads=all")->attend(c.call).ok());
  expect_close(c.out, apply_v(c, probs(c, {0, 0, 0, 0})), 2e-5, "gamma 1");
}

// ACT's sinks by definition: keys after the first that at least 8 rows of the call see, with
// column mean (over those rows) above the threshold.
std::vector<int64_t> exact_sinks(const Call& c, const std::vector<double>& a, int64_t h, double thr) {
  const int64_t wl = c.call.params.window_left;
  std::vector<int64_t> S;
  for (int64_t k = 1; k < c.n_kv; ++k) {
    double col = 0;
    int64_t rows = 0;
    for (int64_t i = 0; i < c.n; ++i) {
      const int64_t p = c.n_kv - c.n + i;
      if (p < k || (wl >= 0 && p - wl > k)) continue;  // row i does not see key k
      col += a[static_cast<size_t>((h * c.n + i) * c.n_kv + k)];
      ++rows;
    }
    if (rows >= act::kMinRows && col / static_cast<double>(rows) > thr) S.push_back(k);
  }
  return S;
}

// ACT's rescaling of head h's rows of `a` for sinks S; returns keep = (1 - beta m) / (1 - m) per row.
void act_rescale(const Call& c, int64_t h, const std::vector<int64_t>& S, double beta, std::vector<double>* a,
                 std::vector<double>* keep_of) {
  for (int64_t i = 0; i < c.n; ++i) {
    double m = 0;
    for (int64_t k : S) m += (*a)[static_cast<size_t>((h * c.n + i) * c.n_kv + k)];
    if (m <= 0 || 1 - m < 1e-6) continue;
    (*keep_of)[static_cast<size_t>(i * c.H + h)] = (1 - beta * m) / (1 - m);
    for (int64_t j = 0; j < c.n_kv; ++j) {
      double& w = (*a)[static_cast<size_t>((h * c.n + i) * c.n_kv + j)];
      const bool sink = std::find(S.begin(), S.end(), j) != S.end();
      w = sink ? beta * w : w * (1 - beta * m) / (1 - m);
    }
  }
}

struct ActCase {
  int64_t n, n_kv, wl;
  std::vector<int64_t> sinks;
};

TEST(ActBackend, ScalesDetectedSinksAndRedistributesTheirMass) {
  const double beta = 0.4, thr = 0.1;
  // Calls read whole (48 rows), sampled (300 rows; with a window the sampled blocks follow it),
  // and a later prefill chunk whose rows see sinks before and inside it.
  for (const ActCase& k : {ActCase{48, 48, -1, {5}}, ActCase{48, 48, 20, {5}}, ActCase{300, 300, -1, {5, 140, 290}},
                           ActCase{300, 300, 40, {60, 200}}, ActCase{100, 400, -1, {30, 350}}, ActCase{100, 400, 64, {330, 390}}}) {
    SCOPED_TRACE("n " + std::to_string(k.n) + ", n_kv " + std::to_string(k.n_kv) + ", window_left " + std::to_string(k.wl));
    Call c = make_call(k.n, k.n_kv, 4, 2, 16, k.wl, 2, 9, k.sinks);
    auto b = backend("act:heads=2.0+2.3,beta=0.4,threshold=0.1");
    ASSERT_TRUE(b->attend(c.call).ok());
    // Reference: the full matrix, exact sinks, then ACT's rescaling. o' = beta o_S + keep (o - o_S)
    // with keep = (1 - beta m) / (1 - m) multiplies the kernel's f32 rounding error by keep, so each
    // row's tolerance scales with it.
    auto a = probs(c, {0, 0, 0, 0});
    std::vector<double> keep_of(static_cast<size_t>(c.n * c.H), 1.0);
    std::vector<std::vector<int64_t>> found(4);
    for (int64_t h : {0, 3}) {
      found[static_cast<size_t>(h)] = exact_sinks(c, a, h, thr);
      for (int64_t s : k.sinks) EXPECT_NE(std::find(found[h].begin(), found[h].end(), s), found[h].end()) << "planted key " << s;
      act_rescale(c, h, found[static_cast<size_t>(h)], beta, &a, &keep_of);
    }
    const auto want = apply_v(c, a);
    for (size_t i = 0; i < want.size(); ++i)
      ASSERT_NEAR(c.out[i], want[i], 2e-5 * keep_of[i / 16] * (1 + std::fabs(want[i]))) << "act at " << i;
    // A single-row decode call over the same keys reuses the sinks found above.
    if (k.wl < 0) {
      Call d = make_call(1, k.n_kv, 4, 2, 16, -1, 2, 11, k.sinks);
      d.k = c.k;
      d.v = c.v;
      d.call.k = TensorView::contiguous(d.k.data(), DType::kF32, 1, d.n_kv, d.HK, d.D);
      d.call.v = TensorView::contiguous(d.v.data(), DType::kF32, 1, d.n_kv, d.HK, d.D);
      ASSERT_TRUE(b->attend(d.call).ok());
      auto ad = probs(d, {0, 0, 0, 0});
      const auto plain = apply_v(d, ad);
      std::vector<double> keep_d(static_cast<size_t>(d.H), 1.0);
      for (int64_t h : {0, 3}) act_rescale(d, h, found[static_cast<size_t>(h)], beta, &ad, &keep_d);
      const auto want_d = apply_v(d, ad);
      for (size_t i = 0; i < want_d.size(); ++i)
        ASSERT_NEAR(d.out[i], want_d[i], 2e-5 * keep_d[i / 16] * (1 + std::fabs(want_d[i]))) << "decode at " << i;
      EXPECT_GT(std::fabs(want_d[0] - plain[0]), 1e-3) << "head 0 of the decode row is calibrated";
    }
  }
}

// The estimator alone (candidates from sampled rows, verified by exact column means) against the
// definition on inputs with planted sinks, strong and weak, and keys seen by few rows.
TEST(ActSinks, DetectedSetsEqualExactColumnMeans) {
  const double thr = 0.1;
  struct Case {
    int64_t n, n_kv, wl, D;
    std::vector<int64_t> strong, weak;
  };
  for (const Case& k : {Case{600, 600, -1, 32, {5, 150, 400}, {250, 590}}, Case{600, 600, 99, 32, {50, 300}, {520, 595}},
                        Case{700, 700, 200, 64, {10, 333, 690}, {500}}, Case{200, 700, -1, 32, {100, 650}, {300}},
                        Case{200, 700, 256, 32, {480, 600}, {690}}, Case{60, 60, -1, 16, {3}, {40}}}) {
    SCOPED_TRACE("n " + std::to_string(k.n) + ", n_kv " + std::to_string(k.n_kv) + ", window_left " + std::to_string(k.wl));
    Call c = make_call(k.n, k.n_kv, 4, 2, k.D, k.wl, 0, 21, k.strong);
    for (int64_t at : k.weak)  // a smaller lift: column means nearer the threshold
      for (int64_t g = 0; g < c.HK; ++g)
        for (int64_t d = 0; d < c.D; ++d) c.k[static_cast<size_t>((at * c.HK + g) * c.D + d)] = 1.2f;
    std::vector<float> lse(static_cast<size_t>(c.H * c.n));
    ASSERT_TRUE(attention(c.call.q, c.call.k, c.call.v, c.call.out, lse.data(), c.call.params).ok());
    act::Scratch sc;
    std::vector<std::vector<int64_t>> got;
    ASSERT_TRUE(act::find_sinks(c.call, lse.data(), {1, 1, 0, 1}, thr, &sc, &got).ok());
    const auto a = probs(c, {0, 0, 0, 0});
    int64_t total = 0;
    for (int64_t h = 0; h < c.H; ++h) {
      if (h == 2) {
        EXPECT_TRUE(got[2].empty()) << "head 2 is not chosen";
        continue;
      }
      const auto want = exact_sinks(c, a, h, thr);
      EXPECT_EQ(got[static_cast<size_t>(h)], want) << "head " << h;
      for (int64_t s : k.strong) EXPECT_NE(std::find(want.begin(), want.end(), s), want.end()) << "planted key " << s;
      total += static_cast<int64_t>(want.size());
    }
    EXPECT_GT(total, 0);
  }
  // Parameters ACT cannot recompute the logits of are refused by name.
  Call c = make_call(20, 20, 4, 2, 8, -1, 0, 3);
  std::vector<float> lse(80), slopes(4, 0.5f);
  act::Scratch sc;
  std::vector<std::vector<int64_t>> got;
  c.call.params.maybe_alibi_slopes = slopes.data();
  EXPECT_EQ(act::find_sinks(c.call, lse.data(), {1, 1, 1, 1}, thr, &sc, &got).code(), StatusCode::kUnsupported);
  c.call.params.maybe_alibi_slopes = nullptr;
  c.call.params.causal = false;
  const Status st = act::find_sinks(c.call, lse.data(), {1, 1, 1, 1}, thr, &sc, &got);
  EXPECT_NE(st.message().find("causal"), std::string::npos) << st.message();
}

TEST(CalibrationStatistics, WilsonIntervalMatchesItsFormula) {
  double lo = 0, hi = 0;
  eval::wilson_interval(8, 10, 1.96, &lo, &hi);  // the textbook example: 0.490 .. 0.943
  EXPECT_NEAR(lo, 0.4902, 1e-4);
  EXPECT_NEAR(hi, 0.9433, 1e-4);
  eval::wilson_interval(0, 10, 1.96, &lo, &hi);  // never a zero-width interval at 0 successes
  EXPECT_NEAR(lo, 0.0, 1e-12);
  EXPECT_NEAR(hi, 0.2775, 1e-4);
  eval::wilson_interval(50, 50, 1.96, &lo, &hi);
  EXPECT_NEAR(lo, 0.9287, 1e-4);
  EXPECT_EQ(hi, 1.0);
}

TEST(CalibrationStatistics, BootstrapIntervalCoversTheMeanWithTheRightWidth) {
  std::mt19937_64 rng(3);
  std::normal_distribution<double> nd(2.0, 1.0);
  std::vector<double> x(400);
  double mean = 0;
  for (double& v : x) mean += (v = nd(rng)) / 400.0;
  double lo = 0, hi = 0;
  bootstrap_mean_interval(x, 4000, 1, &lo, &hi);
  EXPECT_LT(lo, mean);
  EXPECT_GT(hi, mean);
  // 1.96 sd / sqrt(n) = 0.098 for sd 1, n 400.
  EXPECT_NEAR((hi - lo) / 2, 0.098, 0.02);
  bootstrap_mean_interval(std::vector<double>(10, 0.5), 100, 1, &lo, &hi);
  EXPECT_EQ(lo, 0.5);
  EXPECT_EQ(hi, 0.5);
}

TEST(MaskHeadsBackend, ZeroesOnlyChosenHeads) {
  Call c = make_call(20, 20, 4, 2, 8, -1, 7, 10);
  ASSERT_TRUE(backend("mask_heads:heads=7.1+7.3")->attend(c.call).ok());
  const auto ref = apply_v(c, probs(c, {0, 0, 0, 0}));
  for (int64_t i = 0; i < c.n; ++i)
    for (int64_t h = 0; h < 4; ++h)
      for (int64_t d = 0; d < 8; ++d) {
        const size_t at = static_cast<size_t>((i * 4 + h) * 8 + d);
        if (h == 1 || h == 3) EXPECT_EQ(c.out[at], 0.f);
        else EXPECT_NEAR(c.out[at], ref[at], 2e-5 * (1 + std::fabs(ref[at])));
      }
}

TEST(CalibrationBackends, BadParametersNameThemselves) {
  struct Case { const char* spec; const char* expect; };
  for (const Case& k : {Case{"act:beta=1.5", "beta"}, Case{"act:threshold=0", "threshold"}, Case{"act:heads=5", "LAYER.HEAD"},
                        Case{"act:color=red", "color"}, Case{"zerotuning:gamma=-1", "gamma"}, Case{"zerotuning:gamma=abc", "gamma=abc"},
                        Case{"mask_heads", "heads"}, Case{"act:heads=/nonexistent.json", "/nonexistent.json"}}) {
    std::unique_ptr<model::AttentionBackend> b;
    Status st = model::make_attention_backend(k.spec, &b);
    EXPECT_FALSE(st.ok()) << k.spec;
    EXPECT_NE(st.message().find(k.expect), std::string::npos) << k.spec << ": " << st.message();
  }
  const auto names = model::attention_backend_names();
  for (const char* n : {"act:", "zerotuning:", "mask_heads:"})
    EXPECT_TRUE(std::any_of(names.begin(), names.end(), [&](const std::string& s) { return s.rfind(n, 0) == 0; })) << n;
}

}  // namespace
}  // namespace attnkit::analysis
