// attnkit::attention over int8 K/V (per-(token, kv head) f32 scales) against the double
// reference through the shared case generator: exactly the dequantized attention within the
// ordinary f32 tolerance, and the unquantized attention within the bound that the quantization
// step implies (tolerance.h). Decode and prefill paths, GQA, masks, softcap, split KV, layouts,
// variable length, non-softmax variants; bad calls fail naming the parameter.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "attnkit/attention.h"
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

}  // namespace
}  // namespace attnkit
