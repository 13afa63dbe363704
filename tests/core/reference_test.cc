// Tests of the ground truth itself (src/reference) and of the shared harness (tests/testing):
// the double reference against the independently written plain f32 implementation over the
// generator's cases, against closed forms, and the harness's guard and tolerance machinery.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <limits>
#include <vector>

#include "attnkit/attention.h"
#include "reference/attention_ref.h"
#include "testing/attn_case.h"
#include "testing/check_attention.h"
#include "testing/plain_attention.h"
#include "testing/tensor_buffer.h"
#include "testing/tolerance.h"

namespace attnkit {
namespace {

using testing::AttnCase;
using testing::TestTensor;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

std::vector<AttnCase> small_cases() {
  std::vector<AttnCase> all;
  for (auto sweep : {testing::head_dim_cases, testing::length_cases, testing::gqa_cases, testing::mask_hook_cases,
                     testing::dtype_cases, testing::layout_cases, testing::path_cases}) {
    for (const AttnCase& c : sweep()) {
      if (c.cost() <= 1.5e7) all.push_back(c);
    }
  }
  return all;
}

// The two implementations are written independently; agreement to f32 accuracy on every kind of
// case means both read attention.h the same way.
TEST(ReferenceTest, AgreesWithPlainF32OverGeneratedCases) {
  const std::vector<AttnCase> cases = small_cases();
  ASSERT_GT(cases.size(), 100u);
  for (const AttnCase& c : cases) {
    auto d = testing::make_case_data(c);
    reference::RefResult ref;
    ASSERT_TRUE(reference::attention_ref_f64(d->q.view(), d->k.view(), d->v.view(), c.lse_enabled(), d->params, &ref)
                    .ok())
        << c.name();
    testing::PlainResult plain = testing::attention_plain_f32(d->q.view(), d->k.view(), d->v.view(), d->params);
    const testing::ErrorStats eo = testing::error_stats(ref.out, plain.out);
    // f32 rounds logits to a relative 2^-24, an absolute error that grows with them: cases with
    // a logit scale above 1 (up to 40, logits hundreds apart) get bounds scaled alike.
    const double grow = std::max(1.0, static_cast<double>(c.scale.value_or(0.0f)));
    EXPECT_EQ(eo.bad_nonfinite, 0) << c.name();
    EXPECT_LT(eo.max_abs, 2e-5 * grow) << c.name();
    EXPECT_LT(eo.nmse, 1e-10) << c.name();
    if (c.lse_enabled()) {
      const testing::ErrorStats el = testing::error_stats(ref.lse, plain.lse);
      EXPECT_EQ(el.bad_nonfinite, 0) << c.name();
      EXPECT_LT(el.max_abs, 2e-5 * grow) << c.name();
    }
  }
}

struct Small {
  TestTensor q, k, v, out;
  std::vector<float> lse;
  Small(int64_t sq, int64_t sk, int64_t h, int64_t d)
      : q(DType::kF32, 1, sq, h, d), k(DType::kF32, 1, sk, h, d), v(DType::kF32, 1, sk, h, d),
        out(DType::kF32, 1, sq, h, d), lse(static_cast<size_t>(h * sq)) {
    q.fill_uniform(11);
    k.fill_uniform(12);
    v.fill_uniform(13);
  }
  Status run(const AttentionParams& p, bool with_lse = true) {
    return reference::attention_ref(q.view(), k.view(), v.view(), out.view(), with_lse ? lse.data() : nullptr, p);
  }
  void zero_q() {
    for (int64_t s = 0; s < q.view().seq(); ++s)
      for (int64_t h = 0; h < q.view().heads(); ++h)
        for (int64_t c = 0; c < q.view().head_dim(); ++c) q.view().set(0, s, h, c, 0.0f);
  }
  // Mean of v over keys [lo, hi] (inclusive) plus optional extra keys below `sinks`.
  double mean_v(int64_t h, int64_t c, int64_t lo, int64_t hi, int64_t sinks = 0) const {
    double sum = 0;
    int64_t n = 0;
    for (int64_t j = 0; j < v.view().seq(); ++j) {
      if ((j >= lo && j <= hi) || j < sinks) {
        sum += v.view().get(0, j, h, c);
        ++n;
      }
    }
    return sum / static_cast<double>(n);
  }
};

TEST(ReferenceTest, SingleKeyGivesItsValue) {
  Small t(5, 1, 2, 8);
  AttentionParams p;
  ASSERT_TRUE(t.run(p).ok());
  for (int64_t i = 0; i < 5; ++i) {
    for (int64_t h = 0; h < 2; ++h) {
      double dot = 0;
      for (int64_t c = 0; c < 8; ++c) {
        EXPECT_FLOAT_EQ(t.out.view().get(0, i, h, c), t.v.view().get(0, 0, h, c));
        dot += static_cast<double>(t.q.view().get(0, i, h, c)) * t.k.view().get(0, 0, h, c);
      }
      EXPECT_NEAR(t.lse[h * 5 + i], dot / std::sqrt(8.0), 1e-6);  // LSE of one logit is the logit
    }
  }
}

TEST(ReferenceTest, UniformLogitsGiveMeanOfVisibleValues) {
  // q = 0 makes every logit 0: the output is the mean of v over the visible keys, LSE = ln(n).
  Small t(6, 10, 1, 4);
  t.zero_q();
  AttentionParams p;
  p.causal = true;  // bottom-right: row i sees keys 0..i+4
  ASSERT_TRUE(t.run(p).ok());
  for (int64_t i = 0; i < 6; ++i) {
    for (int64_t c = 0; c < 4; ++c) EXPECT_NEAR(t.out.view().get(0, i, 0, c), t.mean_v(0, c, 0, i + 4), 1e-6);
    EXPECT_NEAR(t.lse[i], std::log(static_cast<double>(i + 5)), 1e-6);
  }
  p.causal_align = CausalAlign::kTopLeft;  // row i sees keys 0..i
  ASSERT_TRUE(t.run(p).ok());
  for (int64_t i = 0; i < 6; ++i) {
    for (int64_t c = 0; c < 4; ++c) EXPECT_NEAR(t.out.view().get(0, i, 0, c), t.mean_v(0, c, 0, i), 1e-6);
  }
  // Window (left 2, right 1) without causality, plus 1 sink token that ignores the window.
  p = AttentionParams();
  p.window_left = 2;
  p.window_right = 1;
  p.n_sink_tokens = 1;
  ASSERT_TRUE(t.run(p).ok());
  for (int64_t i = 0; i < 6; ++i) {
    const int64_t pos = i + 4;
    for (int64_t c = 0; c < 4; ++c) {
      EXPECT_NEAR(t.out.view().get(0, i, 0, c), t.mean_v(0, c, pos - 2, pos + 1, 1), 1e-6) << i;
    }
  }
}

TEST(ReferenceTest, SinkLogitJoinsDenominatorOnly) {
  Small t(3, 4, 2, 4);
  t.zero_q();  // logits 0: o = sum v / (n + e^L), LSE = ln(n + e^L)
  const float sinks[2] = {0.5f, -1.0f};
  AttentionParams p;
  p.maybe_sink_logits = sinks;
  ASSERT_TRUE(t.run(p).ok());
  for (int64_t h = 0; h < 2; ++h) {
    const double denom = 4.0 + std::exp(static_cast<double>(sinks[h]));
    for (int64_t c = 0; c < 4; ++c) {
      EXPECT_NEAR(t.out.view().get(0, 1, h, c), 4.0 * t.mean_v(h, c, 0, 3) / denom, 1e-6);
    }
    EXPECT_NEAR(t.lse[h * 3 + 1], std::log(denom), 1e-6);
  }
}

TEST(ReferenceTest, FullyMaskedRowsGiveZeroAndMinusInfinity) {
  Small t(4, 2, 1, 3);
  AttentionParams p;
  p.causal = true;  // Sq 4 > Sk 2, bottom-right: rows 0 and 1 see no key
  ASSERT_TRUE(t.run(p).ok());
  for (int64_t i = 0; i < 2; ++i) {
    for (int64_t c = 0; c < 3; ++c) EXPECT_EQ(t.out.view().get(0, i, 0, c), 0.0f);
    EXPECT_EQ(t.lse[i], kNegInf);
  }
  EXPECT_TRUE(std::isfinite(t.lse[2]));
  const float sink = 0.25f;
  p.maybe_sink_logits = &sink;
  ASSERT_TRUE(t.run(p).ok());
  EXPECT_EQ(t.lse[0], 0.25f);  // only the sink logit remains
  EXPECT_EQ(t.out.view().get(0, 0, 0, 0), 0.0f);
  // An additive -inf on every key hides the row too.
  std::vector<float> add(8, kNegInf);
  AttentionParams pa;
  pa.mask.kind = MaskKind::kAdditive;
  pa.mask.data = add.data();
  pa.mask.stride_q = 2;
  ASSERT_TRUE(t.run(pa).ok());
  EXPECT_EQ(t.lse[3], kNegInf);
  EXPECT_EQ(t.out.view().get(0, 3, 0, 1), 0.0f);
}

TEST(ReferenceTest, SigmoidAndReluClosedForms) {
  Small t(2, 5, 1, 4);
  t.zero_q();
  AttentionParams p;
  p.normalization = Normalization::kSigmoid;  // logit 0, bias -ln 5: weight 1 / (1 + 5)
  ASSERT_TRUE(t.run(p, false).ok());
  for (int64_t c = 0; c < 4; ++c) EXPECT_NEAR(t.out.view().get(0, 0, 0, c), 5.0 * t.mean_v(0, c, 0, 4) / 6.0, 1e-6);
  p.sigmoid_bias = 0.0f;  // weight 1/2
  ASSERT_TRUE(t.run(p, false).ok());
  for (int64_t c = 0; c < 4; ++c) EXPECT_NEAR(t.out.view().get(0, 1, 0, c), 2.5 * t.mean_v(0, c, 0, 4), 1e-6);
  // relu: q = k = 1 in every channel, scale 1: logit 4, weight 4 / Sk.
  for (int64_t j = 0; j < 5; ++j)
    for (int64_t c = 0; c < 4; ++c) t.k.view().set(0, j, 0, c, 1.0f);
  for (int64_t c = 0; c < 4; ++c) t.q.view().set(0, 0, 0, c, 1.0f);
  for (int64_t c = 0; c < 4; ++c) t.q.view().set(0, 1, 0, c, -1.0f);  // negative logits: relu gives 0
  AttentionParams pr;
  pr.normalization = Normalization::kRelu;
  pr.scale = 1.0f;
  ASSERT_TRUE(t.run(pr, false).ok());
  for (int64_t c = 0; c < 4; ++c) {
    EXPECT_NEAR(t.out.view().get(0, 0, 0, c), 4.0 * t.mean_v(0, c, 0, 4), 1e-5);
    EXPECT_EQ(t.out.view().get(0, 1, 0, c), 0.0f);
  }
  // LSE is a softmax quantity only.
  EXPECT_FALSE(t.run(pr, true).ok());
}

TEST(ReferenceTest, AlibiAndScalableSoftmaxClosedForms) {
  Small t(1, 3, 1, 2);
  t.zero_q();
  const float slope = 0.5f;
  AttentionParams p;
  p.maybe_alibi_slopes = &slope;  // row 0 sits at position 2: logits -1, -0.5, 0
  ASSERT_TRUE(t.run(p).ok());
  const double w[3] = {std::exp(-1.0), std::exp(-0.5), 1.0};
  const double z = w[0] + w[1] + w[2];
  for (int64_t c = 0; c < 2; ++c) {
    double e = 0;
    for (int j = 0; j < 3; ++j) e += w[j] * t.v.view().get(0, j, 0, c) / z;
    EXPECT_NEAR(t.out.view().get(0, 0, 0, c), e, 1e-6);
  }
  EXPECT_NEAR(t.lse[0], std::log(z), 1e-6);
  // SSMax multiplies the logits by s ln(n): with one channel, q = 1, k_j = j, scale 1, s = 2,
  // n = 3 visible keys, the logits are 2 ln(3) j.
  Small u(1, 3, 1, 1);
  u.q.view().set(0, 0, 0, 0, 1.0f);
  for (int j = 0; j < 3; ++j) u.k.view().set(0, j, 0, 0, static_cast<float>(j));
  AttentionParams ps;
  ps.scale = 1.0f;
  ps.ssmax_s = 2.0f;
  ASSERT_TRUE(u.run(ps).ok());
  double zz = 0, e = 0;
  for (int j = 0; j < 3; ++j) {
    const double wj = std::exp(2.0 * std::log(3.0) * j);
    zz += wj;
    e += wj * u.v.view().get(0, j, 0, 0);
  }
  EXPECT_NEAR(u.out.view().get(0, 0, 0, 0), e / zz, 1e-6);
  EXPECT_NEAR(u.lse[0], std::log(zz), 1e-5);
}

// Softcap and per-head temperature by hand: one channel, q = 1, k_j = j (j = 0..3), scale 1,
// temperature t_h per head and softcap 2: logits 2 tanh(t_h j / 2). Checked for the reference and
// for the optimized kernel (prefill and decode paths), each against the closed form.
TEST(ReferenceTest, SoftcapAndTemperatureClosedForms) {
  Small u(1, 4, 2, 1);
  for (int64_t h = 0; h < 2; ++h) {
    u.q.view().set(0, 0, h, 0, 1.0f);
    for (int j = 0; j < 4; ++j) u.k.view().set(0, j, h, 0, static_cast<float>(j));
  }
  const float temperature[2] = {3.0f, 0.25f};
  AttentionParams p;
  p.scale = 1.0f;
  p.softcap = 2.0f;
  p.maybe_head_temperature = temperature;
  const auto expect_closed_form = [&](const char* who) {
    for (int64_t h = 0; h < 2; ++h) {
      double z = 0, e = 0;
      for (int j = 0; j < 4; ++j) {
        const double w = std::exp(2.0 * std::tanh(temperature[h] * j / 2.0));
        z += w;
        e += w * u.v.view().get(0, j, h, 0);
      }
      EXPECT_NEAR(u.out.view().get(0, 0, h, 0), e / z, 2e-6) << who << " head " << h;
      EXPECT_NEAR(u.lse[h], std::log(z), 2e-6) << who << " head " << h;
    }
  };
  ASSERT_TRUE(u.run(p).ok());
  expect_closed_form("reference");
  for (ExecPath path : {ExecPath::kPrefill, ExecPath::kDecode}) {
    p.path = path;
    u.out.fill_canary();
    ASSERT_TRUE(attention(u.q.view(), u.k.view(), u.v.view(), u.out.view(), u.lse.data(), p).ok());
    expect_closed_form(path == ExecPath::kPrefill ? "attention, prefill path" : "attention, decode path");
  }
}

TEST(ReferenceTest, SplitKeysMergeToFullAttention) {
  // Attention over keys [0, 7) and [7, 13) with LSE, merged, equals attention over all 13 keys.
  Small t(5, 13, 2, 6);
  AttentionParams p;
  ASSERT_TRUE(t.run(p).ok());
  const std::vector<float> full = t.out.to_dense();
  const std::vector<float> full_lse = t.lse;
  TensorView k_a = t.k.view(), v_a = t.v.view(), k_b = t.k.view(), v_b = t.v.view();
  k_a.shape[1] = v_a.shape[1] = 7;
  k_b.shape[1] = v_b.shape[1] = 6;
  k_b.data = static_cast<float*>(k_b.data) + 7 * k_b.stride[1];
  v_b.data = static_cast<float*>(v_b.data) + 7 * v_b.stride[1];
  TestTensor oa(DType::kF32, 1, 5, 2, 6), ob(DType::kF32, 1, 5, 2, 6);
  std::vector<float> la(10), lb(10);
  ASSERT_TRUE(reference::attention_ref(t.q.view(), k_a, v_a, oa.view(), la.data(), p).ok());
  ASSERT_TRUE(reference::attention_ref(t.q.view(), k_b, v_b, ob.view(), lb.data(), p).ok());
  ASSERT_TRUE(reference::merge_states_ref(oa.view(), la.data(), ob.view(), lb.data(), oa.view(), la.data()).ok());
  const std::vector<float> merged = oa.to_dense();
  for (size_t i = 0; i < full.size(); ++i) EXPECT_NEAR(merged[i], full[i], 1e-6);
  for (size_t i = 0; i < 10; ++i) EXPECT_NEAR(la[i], full_lse[i], 1e-6);
  // Empty parts: merging with -inf changes nothing; two empty parts give 0 and -inf.
  std::vector<float> empty(10, kNegInf);
  TestTensor oe(DType::kF32, 1, 5, 2, 6);
  oe.fill_uniform(99);
  ASSERT_TRUE(reference::merge_states_ref(oa.view(), la.data(), oe.view(), empty.data(), ob.view(), lb.data()).ok());
  EXPECT_EQ(ob.to_dense(), merged);
  std::vector<float> both(10);
  ASSERT_TRUE(reference::merge_states_ref(oe.view(), empty.data(), oe.view(), empty.data(), ob.view(), both.data()).ok());
  for (float x : ob.to_dense()) EXPECT_EQ(x, 0.0f);
  for (float x : both) EXPECT_EQ(x, kNegInf);
}

TEST(ReferenceTest, VarlenEqualsSeparateSequences) {
  AttnCase c;
  c.varlen = true;
  c.batch = 3;
  c.seq_q = 20;
  c.seq_kv = 30;
  c.heads_q = 2;
  c.heads_kv = 1;
  c.head_dim = 8;
  c.head_dim_v = 8;
  c.causal = true;
  auto d = testing::make_case_data(c);
  reference::RefResult packed;
  ASSERT_TRUE(reference::attention_ref_f64(d->q.view(), d->k.view(), d->v.view(), true, d->params, &packed).ok());
  for (int64_t s = 0; s < 3; ++s) {
    TensorView q = d->q.view(), k = d->k.view(), v = d->v.view();
    const int64_t q0 = d->cu_q[s], nq = d->cu_q[s + 1] - q0, k0 = d->cu_k[s], nk = d->cu_k[s + 1] - k0;
    q.data = static_cast<float*>(q.data) + q0 * q.stride[1];
    k.data = static_cast<float*>(k.data) + k0 * k.stride[1];
    v.data = static_cast<float*>(v.data) + k0 * v.stride[1];
    q.shape[1] = nq;
    k.shape[1] = v.shape[1] = nk;
    AttentionParams p = d->params;
    p.maybe_cu_seqlens_q = p.maybe_cu_seqlens_k = nullptr;
    p.n_seqs = 0;
    reference::RefResult one;
    ASSERT_TRUE(reference::attention_ref_f64(q, k, v, true, p, &one).ok());
    for (int64_t i = 0; i < nq; ++i)
      for (int64_t h = 0; h < 2; ++h) {
        for (int64_t e = 0; e < 8; ++e) {
          EXPECT_EQ(one.out[one.out_index(0, i, h, e)], packed.out[packed.out_index(0, q0 + i, h, e)]);
        }
        EXPECT_EQ(one.lse[one.lse_index(0, h, i)], packed.lse[packed.lse_index(0, h, q0 + i)]);
      }
  }
}

TEST(ReferenceTest, NanInputPoisonsOnlyItsRow) {
  Small t(4, 6, 1, 4);
  t.q.view().set(0, 2, 0, 1, std::numeric_limits<float>::quiet_NaN());
  AttentionParams p;
  ASSERT_TRUE(t.run(p).ok());
  EXPECT_TRUE(std::isnan(t.out.view().get(0, 2, 0, 0)));
  EXPECT_TRUE(std::isnan(t.lse[2]));
  EXPECT_TRUE(std::isfinite(t.out.view().get(0, 1, 0, 0)));
  EXPECT_TRUE(std::isfinite(t.lse[3]));
}

// ---- harness ----

TEST(HarnessTest, CanaryCatchesWritesOutsideTheView) {
  for (auto layout : {testing::Layout::kContiguous, testing::Layout::kHeadsMajor, testing::Layout::kPaddedRows,
                      testing::Layout::kStridedDim}) {
    for (bool mis : {false, true}) {
      TestTensor t(DType::kF16, 2, 3, 2, 5, layout, mis);
      if (mis) {
        EXPECT_NE(reinterpret_cast<uintptr_t>(t.view().data) % 64, 0u);
      }
      EXPECT_TRUE(t.untouched());
      t.view().set(1, 2, 1, 4, 1.0f);  // inside: fine
      EXPECT_EQ(t.check_canary(), "");
      EXPECT_FALSE(t.untouched());
      static_cast<uint16_t*>(t.view().data)[-1] = 0;  // just before the view
      EXPECT_NE(t.check_canary().find("guard before"), std::string::npos);
      t.fill_canary();
      const TensorView& v = t.view();
      static_cast<uint16_t*>(v.data)[v.offset(1, 2, 1, 4) + 1] = 0;  // just past the last element
      EXPECT_NE(t.check_canary(), "");
      if (layout == testing::Layout::kPaddedRows || layout == testing::Layout::kStridedDim) {
        t.fill_canary();
        static_cast<uint16_t*>(v.data)[v.offset(0, 0, 0, 4) + 1] = 0;  // a padding gap
        EXPECT_NE(t.check_canary().find("stride gap"), std::string::npos);
      }
      if (layout == testing::Layout::kStridedDim) {
        t.fill_canary();
        static_cast<uint16_t*>(v.data)[v.offset(0, 1, 0, 2) + 1] = 0;  // between two elements of a row
        EXPECT_NE(t.check_canary().find("stride gap"), std::string::npos);
      }
    }
  }
}

TEST(HarnessTest, InputsHaveNanOutsideTheView) {
  TestTensor t(DType::kF32, 1, 2, 2, 3, testing::Layout::kPaddedRows, true);
  t.fill_uniform(5, -1.0f, 1.0f);
  const float* p = static_cast<const float*>(t.view().data);
  EXPECT_TRUE(std::isnan(p[3]));   // padding after the first head row
  EXPECT_TRUE(std::isnan(p[-1]));  // guard
  for (float x : t.to_dense()) EXPECT_TRUE(x >= -1.0f && x < 1.0f);
  // Heads-major strides: element (s, h) lives at h * S * D + s * D.
  TestTensor hm(DType::kF32, 1, 3, 2, 4, testing::Layout::kHeadsMajor);
  EXPECT_EQ(hm.view().offset(0, 1, 1, 2), 1 * 3 * 4 + 1 * 4 + 2);
}

TEST(HarnessTest, TolerancePolicyPassesBaselineLevelErrorsAndFailsOthers) {
  std::vector<double> ref = {0.5, -0.25, 1.0, 0.125};
  std::vector<float> base = {0.5f, -0.25f, 1.0f + 1e-7f, 0.125f};
  std::vector<float> good = {0.5f, -0.25f + 2e-7f, 1.0f, 0.125f};
  auto r = testing::check_close(ref, good, base, DType::kF32, "x");
  EXPECT_TRUE(r.ok) << r.message;
  std::vector<float> bad = good;
  bad[1] = -0.2f;
  r = testing::check_close(ref, bad, base, DType::kF32, "x");
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.got.worst, 1);
  EXPECT_NE(r.message.find("max_abs_err"), std::string::npos);
  EXPECT_NE(r.message.find("f32 baseline"), std::string::npos);
  std::vector<float> nan = good;
  nan[3] = std::numeric_limits<float>::quiet_NaN();
  r = testing::check_close(ref, nan, base, DType::kF32, "x");
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.got.bad_nonfinite, 1);
  // -inf in the reference must be matched exactly.
  std::vector<double> ref_inf = {-std::numeric_limits<double>::infinity(), 1.0};
  std::vector<float> inf_ok = {kNegInf, 1.0f}, inf_bad = {-1e30f, 1.0f};
  EXPECT_TRUE(testing::check_close(ref_inf, inf_ok, inf_ok, DType::kF32, "lse").ok);
  EXPECT_FALSE(testing::check_close(ref_inf, inf_bad, inf_ok, DType::kF32, "lse").ok);
  // f16 output: half an f16 ulp of error is within the floor.
  std::vector<float> h = {0.5f + 2.4e-4f, -0.25f, 1.0f, 0.125f};
  EXPECT_TRUE(testing::check_close(ref, h, base, DType::kF16, "x").ok);
}

TEST(HarnessTest, CheckCaseCatchesWrongValuesAndStrayWrites) {
  AttnCase c;
  c.seq_q = 40;
  c.seq_kv = 70;
  c.heads_q = 4;
  c.heads_kv = 2;
  c.head_dim = c.head_dim_v = 24;
  c.causal = true;
  c.layout = testing::Layout::kPaddedRows;
  auto d = testing::make_case_data(c);
  // The reference itself, rounded to f32, passes.
  ASSERT_TRUE(reference::attention_ref(d->q.view(), d->k.view(), d->v.view(), d->out.view(), d->maybe_lse(), d->params)
                  .ok());
  const testing::CaseExpectation e = testing::expect_case(*d);
  testing::AttentionCheck r = testing::check_case(*d, e);
  EXPECT_TRUE(r.ok) << r.message;
  // One output element off by 1e-4: fails, naming the position.
  const TensorView& o = d->out.view();
  const float saved = o.get(0, 17, 3, 5);
  o.set(0, 17, 3, 5, saved + 1e-4f);
  r = testing::check_case(*d, e);
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.message.find("s=17, h=3, d=5"), std::string::npos) << r.message;
  o.set(0, 17, 3, 5, saved);
  // A NaN in the LSE: fails.
  float* lse = d->maybe_lse();
  const float saved_lse = lse[3];
  lse[3] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE(testing::check_case(*d, e).ok);
  lse[3] = saved_lse;
  EXPECT_TRUE(testing::check_case(*d, e).ok);
  // A write into a padding gap of out: fails on the guard check.
  static_cast<float*>(o.data)[o.offset(0, 2, 1, 23) + 1] = 0.0f;
  r = testing::check_case(*d, e);
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.guard_error, "");
}

TEST(HarnessTest, GeneratorCoversTheRequiredSweep) {
  std::set<int64_t> dims, lens;
  std::set<std::pair<int64_t, int64_t>> ratios;
  for (const AttnCase& c : testing::head_dim_cases()) dims.insert(c.head_dim);
  for (int64_t d : {1, 3, 16, 17, 33, 40, 64, 80, 96, 127, 128, 129, 256, 257, 511, 512}) EXPECT_TRUE(dims.count(d)) << d;
  for (const AttnCase& c : testing::length_cases()) {
    lens.insert(c.seq_q);
    lens.insert(c.seq_kv);
  }
  for (int64_t n : {1, 37, 63, 64, 65, 113, 127, 128, 129, 501, 1023, 4097}) EXPECT_TRUE(lens.count(n)) << n;
  for (const AttnCase& c : testing::gqa_cases()) ratios.insert({c.heads_q / c.heads_kv, c.heads_kv});
  for (int64_t g : {1, 2, 4, 8}) {
    bool found = false;
    for (auto [r, hkv] : ratios) found = found || r == g;
    EXPECT_TRUE(found) << g;
  }
  bool mqa = false;
  for (auto [r, hkv] : ratios) mqa = mqa || (hkv == 1 && r > 1);
  EXPECT_TRUE(mqa);
  // Case names are unique within a sweep (they become test names).
  std::set<std::string> names;
  for (const AttnCase& c : testing::mask_hook_cases()) EXPECT_TRUE(names.insert(c.name()).second) << c.name();
}

}  // namespace
}  // namespace attnkit
