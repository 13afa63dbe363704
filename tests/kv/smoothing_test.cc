// Per-channel smoothing of int8 KV rows (KvSmoothing): the kernel's scores and outputs equal
// attention over the rows the cache reads back (so smoothing changes nothing but rounding), the
// error against an f32 cache stays within the int8 bound of the smoothed rows, and on keys with
// outlier channels (random ones, and Gemma 3 270M's real post-RoPE keys) smoothing shrinks it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "attnkit/kv_cache.h"
#include "kv/policy_harness.h"

namespace attnkit::kv {
namespace {

using testing_policy::Activations;
using testing_policy::random_activations;
using testing_policy::real_activations;

std::unique_ptr<PagedKvCache> cache_of(const Activations& a, KvStorage st, bool smoothing, int64_t first_chunk) {
  KvCacheOptions o;
  o.kv_heads = a.kv_heads;
  o.head_dim = a.d;
  o.head_dim_v = a.dv;
  o.storage = st;
  o.int8_smoothing = smoothing;
  std::unique_ptr<PagedKvCache> c;
  EXPECT_TRUE(PagedKvCache::create(o, &c).ok());
  // Two appends: the first fixes the smoothing, the second is stored with it.
  for (int64_t s0 = 0; s0 < a.n;) {
    const int64_t m = s0 == 0 ? std::min(first_chunk, a.n) : a.n - s0;
    std::vector<int64_t> pos(static_cast<size_t>(m));
    for (int64_t i = 0; i < m; ++i) pos[static_cast<size_t>(i)] = s0 + i;
    EXPECT_TRUE(c->append(0, m, pos.data(), a.k.data() + s0 * a.kv_heads * a.d, a.v.data() + s0 * a.kv_heads * a.dv).ok());
    s0 += m;
  }
  return c;
}

struct Result {
  std::vector<float> out, lse;
};

// The last nq positions attend (causal, optional window) over the cache.
Result attend(const PagedKvCache& c, const Activations& a, int64_t nq, int64_t window_left) {
  Result r;
  r.out.resize(static_cast<size_t>(nq * a.heads_q * a.dv));
  r.lse.resize(static_cast<size_t>(nq * a.heads_q));
  std::vector<int64_t> qpos(static_cast<size_t>(nq));
  for (int64_t i = 0; i < nq; ++i) qpos[static_cast<size_t>(i)] = a.n - nq + i;
  CacheAttentionParams p;
  p.window_left = window_left;
  const float* q = a.q.data() + (a.n - nq) * a.heads_q * a.d;
  EXPECT_TRUE(attend_cache(c, 0, TensorView::contiguous(const_cast<float*>(q), DType::kF32, 1, nq, a.heads_q, a.d), qpos.data(), p,
                           TensorView::contiguous(r.out.data(), DType::kF32, 1, nq, a.heads_q, a.dv), r.lse.data())
                  .ok());
  return r;
}

// Double-precision attention of the last nq queries over explicit K/V rows (positions 0..n-1).
Result reference(const Activations& a, const std::vector<float>& k, const std::vector<float>& v, int64_t nq, int64_t wl) {
  Result r;
  r.out.assign(static_cast<size_t>(nq * a.heads_q * a.dv), 0.0f);
  r.lse.assign(static_cast<size_t>(nq * a.heads_q), 0.0f);
  const int64_t group = a.heads_q / a.kv_heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(a.d));
  for (int64_t i = 0; i < nq; ++i) {
    const int64_t p = a.n - nq + i;
    for (int64_t h = 0; h < a.heads_q; ++h) {
      const float* q = a.q.data() + (p * a.heads_q + h) * a.d;
      const int64_t kh = h / group, j0 = wl < 0 ? 0 : std::max<int64_t>(0, p - wl);
      std::vector<double> s(static_cast<size_t>(p + 1), 0.0);
      double mx = -INFINITY, sum = 0;
      for (int64_t j = j0; j <= p; ++j) {
        double dot = 0;
        for (int64_t t = 0; t < a.d; ++t) dot += static_cast<double>(q[t]) * k[static_cast<size_t>((j * a.kv_heads + kh) * a.d + t)];
        s[static_cast<size_t>(j)] = dot * scale;
        mx = std::max(mx, s[static_cast<size_t>(j)]);
      }
      std::vector<double> o(static_cast<size_t>(a.dv), 0.0);
      for (int64_t j = j0; j <= p; ++j) {
        const double w = std::exp(s[static_cast<size_t>(j)] - mx);
        sum += w;
        for (int64_t t = 0; t < a.dv; ++t) o[static_cast<size_t>(t)] += w * v[static_cast<size_t>((j * a.kv_heads + kh) * a.dv + t)];
      }
      for (int64_t t = 0; t < a.dv; ++t) r.out[static_cast<size_t>((i * a.heads_q + h) * a.dv + t)] = static_cast<float>(o[static_cast<size_t>(t)] / sum);
      r.lse[static_cast<size_t>(h * nq + i)] = static_cast<float>(mx + std::log(sum));
    }
  }
  return r;
}

double max_abs_diff(const std::vector<float>& x, const std::vector<float>& y) {
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::fabs(static_cast<double>(x[i]) - y[i]));
  return m;
}

double max_abs(const std::vector<float>& x) {
  double m = 0;
  for (float e : x) m = std::max(m, std::fabs(static_cast<double>(e)));
  return m;
}

// The int8 bound of docs/kv.md for the stored (smoothed) rows: an element of key j, channel c is off
// by at most row_scale_j * k_scale_c / 2 (likewise for values), so a logit by at most
// delta = scale * sum_c |q_c| * max_j row_scale_j * k_scale_c / 2, and an output element by
// (e^(2 delta) - 1) * max |v_c| + max_j row_scale_j * v_scale_c / 2.
double output_bound(const PagedKvCache& c, const Activations& a, int64_t nq) {
  const KvSmoothing* sm = c.maybe_smoothing();
  const float* ks = c.maybe_k_scales();
  const float* vs = c.maybe_v_scales();
  const int64_t P = c.page_size(), group = a.heads_q / a.kv_heads;
  const std::vector<int32_t>& pages = c.page_table(0);
  std::vector<double> ks_max(static_cast<size_t>(a.kv_heads), 0.0), vs_max(static_cast<size_t>(a.kv_heads), 0.0);
  for (int64_t s = 0; s < c.size(0); ++s) {
    const int64_t row = static_cast<int64_t>(pages[static_cast<size_t>(s / P)]) * P + s % P;
    for (int64_t h = 0; h < a.kv_heads; ++h) {
      ks_max[static_cast<size_t>(h)] = std::max<double>(ks_max[static_cast<size_t>(h)], ks[row * a.kv_heads + h]);
      vs_max[static_cast<size_t>(h)] = std::max<double>(vs_max[static_cast<size_t>(h)], vs[row * a.kv_heads + h]);
    }
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(a.d)), vmax = max_abs(a.v);
  double bound = 0;
  for (int64_t i = a.n - nq; i < a.n; ++i)
    for (int64_t h = 0; h < a.heads_q; ++h) {
      const int64_t kh = h / group;
      double l1 = 0, vstep = 0;
      for (int64_t t = 0; t < a.d; ++t)
        l1 += std::fabs(a.q[static_cast<size_t>((i * a.heads_q + h) * a.d + t)]) * (sm ? sm->k_scale[static_cast<size_t>(kh * a.d + t)] : 1.0);
      for (int64_t t = 0; t < a.dv; ++t) vstep = std::max<double>(vstep, sm ? sm->v_scale[static_cast<size_t>(kh * a.dv + t)] : 1.0);
      const double delta = scale * l1 * ks_max[static_cast<size_t>(kh)] / 2;
      bound = std::max(bound, std::expm1(2 * delta) * vmax + vs_max[static_cast<size_t>(kh)] * vstep / 2);
    }
  return bound;
}

// What a decode kernel that rounds to int16 may add on top of f32 rounding (docs/kv.md, "Decode
// over int8 K/V"): the query rounded per row (step max|q| / 32767, so a logit moves by at most
// scale * max|q| * 0.51 / 32767 * ||k||_1, with ||k||_1 <= 127 * d * row scale) and the weights
// rounded per 64-key tile (the output moves by at most 64 * 0.51 / 32767 * 128 * max V step). Here
// q is what the kernel reads (q * k_scale) and the V step is in original units (row scale * v_scale).
struct DecodeSlack {
  double out = 0, lse = 0;
};
DecodeSlack int16_decode_slack(const PagedKvCache& c, const Activations& a, int64_t nq) {
  const KvSmoothing* sm = c.maybe_smoothing();
  double ks_max = 0, vs_max = 0, qmax = 0, kscale_max = 1, vscale_max = 1;
  for (int64_t r = 0; r < c.pages_capacity() * c.page_size() * a.kv_heads; ++r) {
    ks_max = std::max<double>(ks_max, c.maybe_k_scales()[r]);
    vs_max = std::max<double>(vs_max, c.maybe_v_scales()[r]);
  }
  if (sm) {
    kscale_max = *std::max_element(sm->k_scale.begin(), sm->k_scale.end());
    vscale_max = *std::max_element(sm->v_scale.begin(), sm->v_scale.end());
  }
  for (int64_t i = (a.n - nq) * a.heads_q * a.d; i < a.n * a.heads_q * a.d; ++i)
    qmax = std::max<double>(qmax, std::fabs(a.q[static_cast<size_t>(i)]) * kscale_max);
  DecodeSlack s;
  s.lse = qmax / std::sqrt(static_cast<double>(a.d)) * 0.51 / 32767 * 127 * static_cast<double>(a.d) * ks_max;
  s.out = std::expm1(2 * s.lse) * max_abs(a.v) + 64 * 0.51 / 32767 * 128 * vs_max * vscale_max;
  return s;
}

// Random activations whose keys and values carry a few channels with a large mean, as the
// post-RoPE keys of Gemma 3 do (docs/kv.md).
Activations outlier_activations(int64_t n, int64_t heads_q, int64_t kv_heads, int64_t d, uint64_t seed) {
  Activations a = random_activations(n, heads_q, kv_heads, d, seed);
  std::mt19937_64 rng(seed + 1);
  std::normal_distribution<float> noise(0.0f, 1.0f);
  for (int64_t h = 0; h < kv_heads; ++h)
    for (int64_t c : {int64_t{3}, d / 2 + 5, d - 2}) {
      const float mean = 20.0f + 5.0f * static_cast<float>(h + c % 3);
      for (int64_t i = 0; i < n; ++i) {
        a.k[static_cast<size_t>((i * kv_heads + h) * d + c)] += mean + 2.0f * noise(rng);
        a.v[static_cast<size_t>((i * kv_heads + h) * a.dv + c)] -= mean;
      }
    }
  return a;
}

void check_smoothing(const Activations& a, int64_t nq, int64_t wl, double min_gain) {
  SCOPED_TRACE(a.source + ", " + std::to_string(nq) + " query rows, window " + std::to_string(wl));
  const int64_t first = std::min<int64_t>(a.n, 128);
  auto f32 = cache_of(a, KvStorage::kF32, false, first);
  auto plain = cache_of(a, KvStorage::kInt8, false, first);
  auto smooth = cache_of(a, KvStorage::kInt8, true, first);
  ASSERT_EQ(plain->maybe_smoothing(), nullptr);
  ASSERT_NE(smooth->maybe_smoothing(), nullptr);
  const Result rf = attend(*f32, a, nq, wl), rp = attend(*plain, a, nq, wl), rs = attend(*smooth, a, nq, wl);

  // 1. Smoothing changes the scores only by a per-row constant: the kernel over the smoothed pages
  // computes attention over the rows the cache reads back (original units) up to f32 rounding.
  std::vector<float> k(a.k.size()), v(a.v.size());
  ASSERT_TRUE(smooth->gather(0, 0, a.n, k.data(), v.data()).ok());
  const Result ref = reference(a, k, v, nq, wl);
  const double vmax = max_abs(v);
  const DecodeSlack slack = int16_decode_slack(*smooth, a, nq);
  EXPECT_LE(max_abs_diff(rs.out, ref.out), 2e-5 * (1 + vmax) + slack.out);
  EXPECT_LE(max_abs_diff(rs.lse, ref.lse), 2e-5 * (1 + max_abs(ref.lse)) + slack.lse);

  // 2. Against the f32 cache: within the int8 bound of the smoothed rows, for outputs and LSE.
  const double err_s = max_abs_diff(rs.out, rf.out), err_p = max_abs_diff(rp.out, rf.out);
  EXPECT_LE(err_s, output_bound(*smooth, a, nq)) << "smoothed int8 outside its bound";
  EXPECT_LE(err_p, output_bound(*plain, a, nq)) << "plain int8 outside its bound";
  // 3. And smaller than without smoothing by the stated factor.
  std::printf("%s: max |o - o_f32| int8 %.3g, smoothed int8 %.3g (x%.1f)\n", a.source.c_str(), err_p, err_s, err_p / err_s);
  EXPECT_LE(err_s * min_gain, err_p);
}

TEST(Int8Smoothing, ExactUpToRoundingAndWithinBoundOnRandomOutliers) {
  Activations a = outlier_activations(300, 4, 2, 64, 7);
  a.source = "random keys with outlier channels";
  check_smoothing(a, 1, -1, 8.0);    // decode
  check_smoothing(a, 70, -1, 8.0);   // prefill chunk
  check_smoothing(a, 70, 100, 8.0);  // with a window
}

TEST(Int8Smoothing, ExactUpToRoundingAndWithinBoundOnGemmaKeys) {
  Activations a;
  const Status st = real_activations(11, 640, &a);  // a global layer with the largest key outliers
  if (st.code() == StatusCode::kUnsupported) GTEST_SKIP() << st.message();
  ASSERT_TRUE(st.ok()) << st.message();
  check_smoothing(a, 1, -1, 2.5);
  check_smoothing(a, 64, -1, 2.5);
}

// The attention mass (the kernel's second pass, with each row's LSE) is a property of the true
// scores: the same from the smoothed cache as from attention over its read-back rows.
TEST(Int8Smoothing, AttentionMassIsUnchanged) {
  const Activations a = outlier_activations(200, 4, 2, 32, 11);
  auto smooth = cache_of(a, KvStorage::kInt8, true, 64);
  ASSERT_NE(smooth->maybe_smoothing(), nullptr);
  std::vector<float> k(a.k.size()), v(a.v.size());
  ASSERT_TRUE(smooth->gather(0, 0, a.n, k.data(), v.data()).ok());
  Activations back = a;  // an f32 cache holding exactly the read-back rows
  back.k = k;
  back.v = v;
  auto exact = cache_of(back, KvStorage::kF32, false, 64);
  const int64_t nq = 20;
  std::vector<int64_t> qpos(static_cast<size_t>(nq));
  for (int64_t i = 0; i < nq; ++i) qpos[static_cast<size_t>(i)] = a.n - nq + i;
  const TensorView q = TensorView::contiguous(const_cast<float*>(a.q.data() + (a.n - nq) * a.heads_q * a.d), DType::kF32, 1, nq,
                                              a.heads_q, a.d);
  std::vector<float> ms(static_cast<size_t>(a.kv_heads * a.n)), me(ms.size());
  CacheAttentionParams p;
  ASSERT_TRUE(attention_mass(*smooth, 0, q, qpos.data(), 0, p, ms.data()).ok());
  ASSERT_TRUE(attention_mass(*exact, 0, q, qpos.data(), 0, p, me.data()).ok());
  EXPECT_LE(max_abs_diff(ms, me), 1e-4 * nq);
}

// A cache whose first append is shorter than kMinSmoothingTokens (a decode-only start) stores
// without smoothing; once emptied, the next long append fixes it. A softcap is refused by name.
TEST(Int8Smoothing, FixedByTheFirstLongAppendAndRefusesSoftcap) {
  const Activations a = outlier_activations(64, 2, 1, 16, 3);
  auto c = cache_of(a, KvStorage::kInt8, true, 1);
  EXPECT_EQ(c->maybe_smoothing(), nullptr);
  c->clear();
  std::vector<int64_t> pos(static_cast<size_t>(a.n));
  for (int64_t i = 0; i < a.n; ++i) pos[static_cast<size_t>(i)] = i;
  ASSERT_TRUE(c->append(0, a.n, pos.data(), a.k.data(), a.v.data()).ok());
  ASSERT_NE(c->maybe_smoothing(), nullptr);
  std::vector<float> out(static_cast<size_t>(a.heads_q * a.dv));
  CacheAttentionParams p;
  p.softcap = 30.0f;
  const int64_t qp = a.n - 1;
  const Status st = attend_cache(*c, 0, TensorView::contiguous(const_cast<float*>(a.q.data() + qp * a.heads_q * a.d), DType::kF32, 1, 1, a.heads_q, a.d),
                                 &qp, p, TensorView::contiguous(out.data(), DType::kF32, 1, 1, a.heads_q, a.dv), nullptr);
  EXPECT_EQ(st.code(), StatusCode::kUnsupported);
  EXPECT_NE(st.message().find("softcap"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace attnkit::kv
