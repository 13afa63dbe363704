// attnkit::attention over int8 K/V (per-(token, kv head) f32 scales) against the double
// reference through the shared case generator: exactly the dequantized attention within the
// ordinary f32 tolerance, and the unquantized attention within the bound that the quantization
// step implies (tolerance.h). Decode and prefill paths, GQA, masks, softcap, split KV, layouts,
// variable length, non-softmax variants; bad calls fail naming the parameter.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "attnkit/attention.h"
#include "core/decode_int8.h"
#include "core/tile_kernel.h"
#include "testing/attn_case.h"
#include "testing/check_attention.h"

namespace attnkit {
namespace {

using testing::AttnCase;

class Int8KvSweep : public ::testing::TestWithParam<AttnCase> {};

TEST_P(Int8KvSweep, MatchesReference) {
  const AttnCase& c = GetParam();
  auto d = testing::make_case_data(c);
  const Status st = attention(d->q.view(), d->k.view(), d->v.view(), d->out.view(), d->maybe_lse(), d->params);
  ASSERT_TRUE(st.ok()) << c.name() << ": " << st.message();
  const testing::AttentionCheck deq = testing::check_case(*d);
  EXPECT_TRUE(deq.ok) << deq.message;
  if (c.normalization == Normalization::kSoftmax) {
    const testing::AttentionCheck q = testing::check_int8_kv_bound(*d, deq);
    EXPECT_TRUE(q.ok) << q.message;
  }
}

std::string case_name(const ::testing::TestParamInfo<AttnCase>& info) {
  return info.param.name() + "_" + std::to_string(info.index);
}

INSTANTIATE_TEST_SUITE_P(Int8Kv, Int8KvSweep, ::testing::ValuesIn(testing::int8_kv_cases()), case_name);

AttnCase int8_case(int64_t sq, int64_t sk, int64_t hq, int64_t hk, int64_t d) {
  AttnCase c;
  c.seq_q = sq;
  c.seq_kv = sk;
  c.heads_q = hq;
  c.heads_kv = hk;
  c.head_dim = c.head_dim_v = d;
  c.int8_kv = true;
  return c;
}

// The checks see a scale the kernel ignores or applies twice: the same int8 rows read with the
// key or the value scales doubled fail the dequantized comparison.
TEST(Int8Kv, ScalesChangeTheResult) {
  AttnCase c = int8_case(1, 300, 4, 1, 128);
  c.input_range = 3.0f;  // logits large enough that a scaled K moves the weights visibly
  for (int which = 0; which < 2; ++which) {
    auto d = testing::make_case_data(c);
    const testing::CaseExpectation e = testing::expect_case(*d);
    std::vector<float> doubled = which == 0 ? d->k_scales : d->v_scales;
    for (float& s : doubled) s *= 2.0f;
    AttentionParams p = d->params;
    (which == 0 ? p.k_scales : p.v_scales).data = doubled.data();
    ASSERT_TRUE(attention(d->q.view(), d->k.view(), d->v.view(), d->out.view(), d->maybe_lse(), p).ok());
    EXPECT_FALSE(testing::check_case(*d, e).ok) << (which == 0 ? "k" : "v") << " scales doubled passed the check";
  }
}

// Bad int8 calls fail before anything is written, naming the parameter and its value.
TEST(Int8Kv, BadCallsAreNamed) {
  const AttnCase c = int8_case(2, 20, 4, 2, 16);
  auto d = testing::make_case_data(c);
  const auto expect_error = [&](const AttentionParams& p, const TensorView& q, const TensorView& k, const TensorView& v,
                                const TensorView& out, const std::string& needle) {
    d->reset_outputs();
    const Status st = attention(q, k, v, out, d->maybe_lse(), p);
    ASSERT_FALSE(st.ok()) << needle;
    EXPECT_NE(st.message().find(needle), std::string::npos) << "message \"" << st.message() << "\" lacks \"" << needle << "\"";
    EXPECT_TRUE(d->out.untouched()) << needle;
    EXPECT_TRUE(validate_attention(q, k, v, out, d->maybe_lse(), p).message() == st.message());
  };
  const TensorView q = d->q.view(), k = d->k.view(), v = d->v.view(), out = d->out.view();
  AttentionParams p = d->params;
  p.k_scales = KvScales();
  expect_error(p, q, k, v, out, "k_scales.data / v_scales.data are null / set");
  p = d->params;
  p.v_scales = KvScales();
  expect_error(p, q, k, v, out, "are set / null with k and v int8");
  std::vector<float> bad = d->v_scales;
  bad[5 * 2 + 1] = std::numeric_limits<float>::quiet_NaN();  // token 5, kv head 1
  p = d->params;
  p.v_scales.data = bad.data();
  expect_error(p, q, k, v, out, "v_scales[0, 5, 1] = nan is invalid");
  bad = d->k_scales;
  bad[3] = -0.5f;
  p = d->params;
  p.k_scales.data = bad.data();
  expect_error(p, q, k, v, out, "k_scales[0, 1, 1] = -0.5");
  bad[3] = std::numeric_limits<float>::infinity();
  expect_error(p, q, k, v, out, "k_scales[0, 1, 1] = inf");
  // int8 only for K and V, both of them.
  TensorView q8 = q;
  q8.dtype = DType::kI8;
  expect_error(d->params, q8, k, v, out, "q.dtype int8 is not supported");
  TensorView out8 = out;
  out8.dtype = DType::kI8;
  expect_error(d->params, q, k, v, out8, "out.dtype int8 is not supported");
  auto f = testing::make_case_data([&] {
    AttnCase g = c;
    g.int8_kv = false;
    return g;
  }());
  expect_error(d->params, q, k, f->v.view(), out, "k is int8, v is f32");
  // Scales with float K/V are a mistake too.
  expect_error(d->params, q, f->k.view(), f->v.view(), out, "int8 k and v need both, other dtypes neither");
  // The valid call passes.
  d->reset_outputs();
  EXPECT_TRUE(attention(q, k, v, out, d->maybe_lse(), d->params).ok());
}

// Which decode calls take the integer scores (attend_keys_int8), checked on the entry itself: the
// benchmark's shape (GQA 4, head dim 128) and Gemma's (GQA 4, head dim 256) do; non-softmax
// variants, blocks of more than 8 rows per kv head and non-finite queries fall back (false, and
// nothing written); what it writes matches the f32-score path within the query-rounding bound.
TEST(Int8Decode, IntegerScoresTakeTheDecodeShapes) {
  const auto run_entry = [](const testing::CaseData& d, bool integer, std::vector<float>* o, std::vector<float>* lse) {
    core::Call call;
    EXPECT_TRUE(core::make_call(d.q.view(), d.k.view(), d.v.view(), d.out.view(), d.maybe_lse(), d.params, &call).ok());
    const int64_t rows = call.heads_q * d.c.seq_q;
    o->assign(static_cast<size_t>(rows * call.head_dim_v), -7.0f);
    lse->assign(static_cast<size_t>(rows), -7.0f);
    core::Workspace ws;
    const core::PartialOut part{o->data(), lse->data()};
    if (!integer) {
      core::attend_keys_all_heads(call, 0, 0, d.c.seq_kv, part, &ws);
      return true;
    }
    return core::attend_keys_int8(call, 0, 0, d.c.seq_kv, part, &ws);
  };
  for (auto [hq, hk, sq, dim] : {std::tuple<int64_t, int64_t, int64_t, int64_t>{32, 8, 1, 128}, {8, 2, 1, 256}, {8, 1, 1, 128}}) {
    AttnCase c = int8_case(sq, 700, hq, hk, dim);
    c.input_range = 2.0f;
    auto d = testing::make_case_data(c);
    std::vector<float> oi, li, of, lf;
    ASSERT_TRUE(run_entry(*d, true, &oi, &li)) << c.name() << " did not take the integer scores";
    run_entry(*d, false, &of, &lf);
    float worst = 0.0f, worst_lse = 0.0f;
    for (size_t i = 0; i < oi.size(); ++i) worst = std::max(worst, std::fabs(oi[i] - of[i]));
    for (size_t i = 0; i < li.size(); ++i) worst_lse = std::max(worst_lse, std::fabs(li[i] - lf[i]));
    // Query steps of max|q| / 32767 against keys of l1 norm <= dim * 2: logits move by < 1e-3 here.
    EXPECT_LT(worst, 2e-3f) << c.name();
    EXPECT_LT(worst_lse, 1e-3f) << c.name();
    EXPECT_GT(worst_lse, 0.0f) << c.name() << ": the integer scores gave the f32 scores bit for bit";
  }
  const auto declined = [&](AttnCase c, const std::string& why, void (*spoil)(testing::CaseData*)) {
    auto d = testing::make_case_data(c);
    if (spoil) spoil(d.get());
    std::vector<float> o, l;
    EXPECT_FALSE(run_entry(*d, true, &o, &l)) << why;
    for (float x : o) ASSERT_EQ(x, -7.0f) << why << ": written although declined";
  };
  AttnCase sig = int8_case(1, 700, 8, 2, 128);
  sig.normalization = Normalization::kSigmoid;
  declined(sig, "sigmoid", nullptr);
  declined(int8_case(3, 700, 6, 2, 128), "9 rows per kv head", nullptr);
  declined(int8_case(1, 700, 8, 2, 128), "NaN query", [](testing::CaseData* d) {
    d->q.view().set(0, 0, 5, 17, std::numeric_limits<float>::quiet_NaN());
  });
}

// With and without vpdpwssd the int32 sums are exact, so the outputs are the same bits; both match
// the reference.
TEST(Int8Decode, VnniAndPairwiseMultiplyAddAgreeBitForBit) {
  const bool before = core::set_int8_vnni_enabled(true);
  const bool available = core::int8_vnni_enabled();
  core::set_int8_vnni_enabled(before);
  if (!available) GTEST_SKIP() << "this CPU has no AVX512-VNNI: only vpmaddwd runs";
  AttnCase c = int8_case(1, 1300, 32, 8, 128);
  c.path = ExecPath::kDecode;
  c.causal = true;
  c.num_threads = 2;
  std::vector<std::vector<float>> outs;
  for (bool vnni : {true, false}) {
    const bool prev = core::set_int8_vnni_enabled(vnni);
    auto d = testing::make_case_data(c);
    const Status st = attention(d->q.view(), d->k.view(), d->v.view(), d->out.view(), d->maybe_lse(), d->params);
    core::set_int8_vnni_enabled(prev);
    ASSERT_TRUE(st.ok()) << st.message();
    const testing::AttentionCheck r = testing::check_case(*d);
    EXPECT_TRUE(r.ok) << (vnni ? "vpdpwssd: " : "vpmaddwd: ") << r.message;
    outs.push_back(d->out.to_dense());
  }
  ASSERT_EQ(outs[0].size(), outs[1].size());
  for (size_t i = 0; i < outs[0].size(); ++i) ASSERT_EQ(outs[0][i], outs[1][i]) << "element " << i;
}

}  // namespace
}  // namespace attnkit
