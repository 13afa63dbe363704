// Analysis instruments against plain double-precision references on small random inputs: the
// probabilities, sinks, entropy / spectral gap / log-normal moments, induction and echo scores,
// massive-activation detection and the head-map files.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "attnkit/analysis.h"

namespace attnkit::analysis {
namespace {

struct Qk {
  int64_t T, H, HK, D;
  std::vector<float> q, k;
};

Qk random_qk(int64_t T, int64_t H, int64_t HK, int64_t D, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  Qk x{T, H, HK, D, std::vector<float>(static_cast<size_t>(T * H * D)), std::vector<float>(static_cast<size_t>(T * HK * D))};
  for (auto& v : x.q) v = nd(rng);
  for (auto& v : x.k) v = nd(rng);
  // A sink: the first key points where the queries point (the "key bias"), and key 40 too.
  for (int64_t g = 0; g < HK; ++g)
    for (int64_t d = 0; d < D; ++d) {
      double mean_q = 0;
      for (int64_t t = 0; t < T; ++t) mean_q += x.q[static_cast<size_t>((t * H + g * (H / HK)) * D + d)];
      x.k[static_cast<size_t>(g * D + d)] = static_cast<float>(3.0 * mean_q / static_cast<double>(T)) * 6.f;
      if (T > 40) x.k[static_cast<size_t>((40 * HK + g) * D + d)] = x.k[static_cast<size_t>(g * D + d)];
    }
  return x;
}

// Plain softmax attention matrix [H][T][T] in double (causal, window_left, scale).
std::vector<double> naive_probs(const Qk& x, int64_t window_left, double scale) {
  std::vector<double> a(static_cast<size_t>(x.H * x.T * x.T), 0.0);
  for (int64_t h = 0; h < x.H; ++h)
    for (int64_t i = 0; i < x.T; ++i) {
      const int64_t lo = window_left < 0 ? 0 : std::max<int64_t>(0, i - window_left);
      std::vector<double> s;
      double mx = -1e300;
      for (int64_t j = lo; j <= i; ++j) {
        double dot = 0;
        for (int64_t d = 0; d < x.D; ++d)
          dot += static_cast<double>(x.q[static_cast<size_t>((i * x.H + h) * x.D + d)]) *
                 x.k[static_cast<size_t>((j * x.HK + h / (x.H / x.HK)) * x.D + d)];
        s.push_back(dot * scale);
        mx = std::max(mx, s.back());
      }
      double z = 0;
      for (double& e : s) z += (e = std::exp(e - mx));
      for (int64_t j = lo; j <= i; ++j) a[static_cast<size_t>((h * x.T + i) * x.T + j)] = s[static_cast<size_t>(j - lo)] / z;
    }
  return a;
}

// Two "layers" over the same Q/K: layer 0 global, layer 1 with a sliding window of 24; chunks of 17 rows.
BlockSource synthetic_source(const Qk& x, float scale, std::vector<float>* scratch) {
  return [&x, scale, scratch](const BlockVisitor& visit) -> Status {
    for (int64_t p0 = 0; p0 < x.T; p0 += 17) {
      const int64_t n = std::min<int64_t>(17, x.T - p0);
      for (int64_t layer = 0; layer < 2; ++layer) {
        const int64_t wl = layer == 0 ? -1 : 23;
        scratch->assign(static_cast<size_t>(x.H * n * (p0 + n)), -1.f);
        ATTNKIT_RETURN_IF_ERROR(attention_probs(x.q.data() + p0 * x.H * x.D, n, x.H, x.k.data(), p0 + n, x.HK, x.D, p0, scale,
                                                0.f, wl, scratch->data(), 2));
        AttentionBlock b;
        b.layer = layer;
        b.pos0 = p0;
        b.n = n;
        b.n_kv = p0 + n;
        b.n_head = x.H;
        b.n_head_kv = x.HK;
        b.head_dim = x.D;
        b.window_left = wl;
        b.probs = scratch->data();
        b.q_post = x.q.data() + p0 * x.H * x.D;
        b.k_post = x.k.data();
        visit(b);
      }
    }
    return Status::ok_status();
  };
}

constexpr int64_t kT = 101, kH = 4, kHK = 2, kD = 16;
const float kScale = 0.25f;

TEST(AnalysisProbs, MatchNaiveSoftmaxAndSumToOne) {
  const Qk x = random_qk(kT, kH, kHK, kD, 1);
  for (int64_t wl : {-1, 0, 9}) {
    const auto ref = naive_probs(x, wl, kScale);
    const int64_t p0 = 60, n = kT - p0;
    std::vector<float> p(static_cast<size_t>(kH * n * kT), -1.f);
    ASSERT_TRUE(attention_probs(x.q.data() + p0 * kH * kD, n, kH, x.k.data(), kT, kHK, kD, p0, kScale, 0.f, wl, p.data(), 2).ok());
    for (int64_t h = 0; h < kH; ++h)
      for (int64_t r = 0; r < n; ++r) {
        double sum = 0;
        for (int64_t j = 0; j < kT; ++j) {
          const double got = p[static_cast<size_t>((h * n + r) * kT + j)];
          EXPECT_NEAR(got, ref[static_cast<size_t>((h * kT + p0 + r) * kT + j)], 2e-6) << "window " << wl << " h " << h << " row " << r << " key " << j;
          sum += got;
        }
        EXPECT_NEAR(sum, 1.0, 1e-5);
      }
  }
  std::vector<float> p(16);
  Status bad = attention_probs(x.q.data(), 3, kH, x.k.data(), 2, kHK, kD, 0, kScale, 0.f, -1, p.data(), 1);
  EXPECT_FALSE(bad.ok());
  EXPECT_NE(bad.message().find("outside the 2 keys"), std::string::npos) << bad.message();
}

TEST(AnalysisSinks, MatchReference) {
  const Qk x = random_qk(kT, kH, kHK, kD, 2);
  std::vector<float> scratch;
  SinkOptions o;
  o.min_rows = 8;
  SinkReport r;
  ASSERT_TRUE(sinks_from_blocks(synthetic_source(x, kScale, &scratch), 2, kH, o, &r).ok());
  int64_t sinks = 0;
  for (int64_t layer = 0; layer < 2; ++layer) {
    const int64_t wl = layer == 0 ? -1 : 23;
    const auto a = naive_probs(x, wl, kScale);
    for (int64_t h = 0; h < kH; ++h) {
      const HeadSinks& hs = r.heads[static_cast<size_t>(layer * kH + h)];
      int64_t mids = 0;
      for (int64_t k = 0; k < kT; ++k) {
        double col = 0;
        int64_t rows = 0;
        for (int64_t i = k; i < kT; ++i)
          if (wl < 0 || i - k <= wl) {
            col += a[static_cast<size_t>((h * kT + i) * kT + k)];
            ++rows;
          }
        if (k < o.first_k) EXPECT_NEAR(hs.alpha[static_cast<size_t>(k)], col / rows, 1e-5) << layer << "." << h << " k " << k;
        if (k >= 1 && rows >= o.min_rows && col / rows > o.mid_threshold) ++mids;
      }
      EXPECT_EQ(hs.mid_sinks, mids) << layer << "." << h;
      sinks += hs.alpha[0] > o.eps;
      // Key norm and cosines, plainly.
      const int64_t g = h / (kH / kHK);
      auto kv = [&](int64_t j) { return &x.k[static_cast<size_t>((j * kHK + g) * kD)]; };
      auto qv = [&](int64_t i) { return &x.q[static_cast<size_t>((i * kH + h) * kD)]; };
      auto nrm = [](const float* v) { double s = 0; for (int64_t d = 0; d < kD; ++d) s += double(v[d]) * v[d]; return std::sqrt(s); };
      auto cosine = [&](const float* u, const float* v) { double s = 0; for (int64_t d = 0; d < kD; ++d) s += double(u[d]) * v[d]; return s / nrm(u) / nrm(v); };
      EXPECT_NEAR(hs.key_norm_first, nrm(kv(0)), 1e-4);
      double other = 0;
      for (int64_t j = 1; j < kT; ++j) other += nrm(kv(j));
      EXPECT_NEAR(hs.key_norm_other, other / (kT - 1), 1e-4);
      double cf = 0, co = 0;
      int64_t nf = 0, no = 0;
      for (int64_t i = 0; i < kT; ++i) {
        const int64_t lo = wl < 0 ? 0 : std::max<int64_t>(0, i - wl);
        if (lo == 0) { cf += cosine(qv(i), kv(0)); ++nf; }
        double s = 0;
        int64_t c = 0;
        for (int64_t j = std::max<int64_t>(1, lo); j <= i; ++j) { s += cosine(qv(i), kv(j)); ++c; }
        if (c > 0) { co += s / c; ++no; }
      }
      EXPECT_NEAR(hs.cos_first, cf / nf, 1e-5);
      EXPECT_NEAR(hs.cos_other, co / no, 1e-5);
    }
  }
  EXPECT_NEAR(r.sink_rate, static_cast<double>(sinks) / (2 * kH), 1e-12);
  EXPECT_GT(r.sink_rate, 0.0) << "the planted first-token key should be a sink somewhere";
  EXPECT_FALSE(r.mid.empty()) << "the planted key at position 40 should be a mid-sequence sink";
  for (const MidSink& m : r.mid) EXPECT_GE(m.position, 1);
}

TEST(AnalysisEntropy, MatchReference) {
  const Qk x = random_qk(kT, kH, kHK, kD, 3);
  std::vector<float> scratch;
  EntropyOptions o;
  o.spectral_window = 16;
  o.lognormal_row_stride = 3;
  EntropyReport r;
  ASSERT_TRUE(entropy_from_blocks(synthetic_source(x, kScale, &scratch), 2, kH, kT, o, &r).ok());
  for (int64_t layer = 0; layer < 2; ++layer) {
    const int64_t wl = layer == 0 ? -1 : 23;
    const auto a = naive_probs(x, wl, kScale);
    for (int64_t h = 0; h < kH; ++h) {
      const HeadEntropy& he = r.heads[static_cast<size_t>(layer * kH + h)];
      double ent = 0;
      int64_t rows = 0;
      std::vector<double> xs;
      for (int64_t i = 0; i < kT; ++i) {
        const int64_t lo = wl < 0 ? 0 : std::max<int64_t>(0, i - wl);
        const int64_t vis = i - lo + 1;
        if (vis < 2) continue;
        double e = 0;
        for (int64_t j = lo; j <= i; ++j) {
          const double p = a[static_cast<size_t>((h * kT + i) * kT + j)];
          e -= p * std::log(p);
          if (i % 3 == 0) xs.push_back(std::log(vis * p));
        }
        ent += e / std::log(static_cast<double>(vis));
        ++rows;
      }
      EXPECT_NEAR(he.entropy, ent / rows, 1e-5);
      EXPECT_GE(he.entropy, 0.0);
      EXPECT_LE(he.entropy, 1.0);
      double mu = 0;
      for (double v : xs) mu += v;
      mu /= static_cast<double>(xs.size());
      double var = 0, c3 = 0;
      for (double v : xs) { var += (v - mu) * (v - mu); c3 += std::pow(v - mu, 3); }
      var /= static_cast<double>(xs.size());
      c3 /= static_cast<double>(xs.size());
      EXPECT_NEAR(he.log_mu, mu, 1e-4);
      EXPECT_NEAR(he.log_sigma, std::sqrt(var), 1e-4);
      EXPECT_NEAR(he.log_skew, c3 / std::pow(var, 1.5), 1e-3);
      // Spectral gap: the last 16 positions, rows renormalized over the window's keys. The
      // eigenvalues come from a general method here: the matrix is triangular, so deflation by
      // the characteristic polynomial is its diagonal, but we check it through power iteration on
      // the matrix with the first row/column removed (its spectral radius is |lambda_2|).
      const int64_t W = 16, s0 = kT - W;
      std::vector<double> win(static_cast<size_t>(W * W), 0.0);
      for (int64_t i = 0; i < W; ++i) {
        double z = 0;
        for (int64_t j = 0; j <= i; ++j) z += a[static_cast<size_t>((h * kT + s0 + i) * kT + s0 + j)];
        for (int64_t j = 0; j <= i; ++j) win[static_cast<size_t>(i * W + j)] = a[static_cast<size_t>((h * kT + s0 + i) * kT + s0 + j)] / z;
      }
      const int64_t m = W - 1;
      std::vector<double> v(static_cast<size_t>(m), 1.0), w(static_cast<size_t>(m));
      double lambda = 0;
      for (int it = 0; it < 5000; ++it) {
        double nv = 0;
        for (int64_t i = 0; i < m; ++i) {
          w[static_cast<size_t>(i)] = 0;
          for (int64_t j = 0; j < m; ++j) w[static_cast<size_t>(i)] += win[static_cast<size_t>((i + 1) * W + j + 1)] * v[static_cast<size_t>(j)];
          nv = std::max(nv, std::fabs(w[static_cast<size_t>(i)]));
        }
        double vmax = 0;
        for (int64_t i = 0; i < m; ++i) vmax = std::max(vmax, std::fabs(v[static_cast<size_t>(i)]));
        lambda = nv / vmax;
        for (int64_t i = 0; i < m; ++i) v[static_cast<size_t>(i)] = w[static_cast<size_t>(i)] / nv;
      }
      EXPECT_NEAR(he.spectral_gap, 1.0 - lambda, 2e-3) << layer << "." << h;
      const auto spec = causal_window_spectrum(win, W);
      EXPECT_NEAR(spec[0], 1.0, 1e-12);
    }
  }
}

TEST(AnalysisInductionEcho, MatchReference) {
  Qk x = random_qk(kT, kH, kHK, kD, 4);
  std::vector<float> scratch;
  std::vector<double> ind, ech;
  const int64_t seg = 20;
  ASSERT_TRUE(induction_echo_from_blocks(synthetic_source(x, kScale, &scratch), 2, kH, seg, 4, &ind, &ech).ok());
  for (int64_t layer = 0; layer < 2; ++layer) {
    const auto a = naive_probs(x, layer == 0 ? -1 : 23, kScale);
    for (int64_t h = 0; h < kH; ++h) {
      double si = 0, se = 0;
      int64_t n = 0;
      for (int64_t i = seg + 1; i < kT; ++i) {
        si += a[static_cast<size_t>((h * kT + i) * kT + i - seg + 1)];
        se += a[static_cast<size_t>((h * kT + i) * kT + i - seg)];
        ++n;
      }
      EXPECT_NEAR(ind[static_cast<size_t>(layer * kH + h)], si / n, 1e-6);
      EXPECT_NEAR(ech[static_cast<size_t>(layer * kH + h)], se / n, 1e-6);
    }
  }
  EXPECT_FALSE(induction_echo_from_blocks(synthetic_source(x, kScale, &scratch), 2, kH, 1, 4, &ind, &ech).ok());
  const auto toks = repeated_random_tokens(7, 3, 5, 100, 200);
  ASSERT_EQ(toks.size(), 21u);
  for (int i = 0; i < 7; ++i) {
    EXPECT_EQ(toks[static_cast<size_t>(i)], toks[static_cast<size_t>(i + 7)]);
    EXPECT_EQ(toks[static_cast<size_t>(i)], toks[static_cast<size_t>(i + 14)]);
  }
}

TEST(AnalysisMassive, FindsPlantedEntriesOnly) {
  const int64_t n = 9, dim = 64;
  std::mt19937_64 rng(5);
  std::normal_distribution<float> nd(0.f, 0.5f);
  std::vector<float> x(static_cast<size_t>(n * dim));
  for (auto& v : x) v = nd(rng);
  x[0 * dim + 7] = -2500.f;  // massive
  x[3 * dim + 11] = 900.f;   // massive
  x[5 * dim + 2] = 150.f;    // > 100 but row 5 has a large median
  for (int64_t e = 0; e < dim; ++e)
    if (e != 2) x[static_cast<size_t>(5 * dim + e)] = 1.f;  // median 1: 150 < 1000 x 1
  x[6 * dim + 4] = 90.f;  // < 100
  const auto found = detect_massive(x.data(), n, dim, MassiveOptions{});
  ASSERT_EQ(found.size(), 2u);
  EXPECT_EQ(found[0].position, 0);
  EXPECT_EQ(found[0].dim, 7);
  EXPECT_FLOAT_EQ(static_cast<float>(found[0].value), -2500.f);
  EXPECT_EQ(found[1].position, 3);
  EXPECT_EQ(found[1].dim, 11);
  EXPECT_LT(found[1].row_median, 1.0);
}

TEST(AnalysisHeadMaps, ScoresAreGroupMaximaAndRazorKeepsTopHeads) {
  const std::string dir = (std::filesystem::temp_directory_path() / "attnkit_headmaps").string();
  std::filesystem::create_directories(dir);
  const int64_t L = 3, H = 4, HK = 2;
  std::vector<double> s = {0.1, 0.7, 0.0, 0.2, 0.0, 0.0, 0.05, 0.0, 0.9, 0.3, 0.0, 0.4};
  ASSERT_TRUE(write_head_map_scores(dir + "/r.json", L, H, HK, s, "retrieval score").ok());
  nlohmann::json j;
  std::ifstream(dir + "/r.json") >> j;
  EXPECT_EQ(j["format"], "attnkit-head-map");
  EXPECT_EQ(j["n_layers"], L);
  EXPECT_EQ(j["kv_heads"], HK);
  EXPECT_DOUBLE_EQ(j["scores"][0][0].get<double>(), 0.7);
  EXPECT_DOUBLE_EQ(j["scores"][0][1].get<double>(), 0.2);
  EXPECT_DOUBLE_EQ(j["scores"][1][1].get<double>(), 0.05);
  EXPECT_DOUBLE_EQ(j["scores"][2][0].get<double>(), 0.9);
  std::vector<double> echo(12, 0.0);
  echo[6] = 0.8;  // layer 1, kv head 1
  ASSERT_TRUE(write_razor_head_map(dir + "/z.json", L, H, HK, s, echo, 0.14, 0.01).ok());
  std::ifstream(dir + "/z.json") >> j;
  // ceil(0.14 * 6) = 1 induction head (2.0, score 0.9) and ceil(0.01 * 6) = 1 echo head (1.1).
  ASSERT_EQ(j["full"].size(), 2u);
  EXPECT_EQ(j["full"][0], nlohmann::json({1, 1}));
  EXPECT_EQ(j["full"][1], nlohmann::json({2, 0}));
  Status bad = write_head_map_scores(dir + "/x.json", L, H, HK, std::vector<double>(5), "retrieval score");
  EXPECT_FALSE(bad.ok());
  EXPECT_NE(bad.message().find("5 scores"), std::string::npos) << bad.message();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace attnkit::analysis
