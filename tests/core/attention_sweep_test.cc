// attnkit::attention against the double reference over the shared case generator: head dims,
// lengths (tile edges included), GQA/MQA, every mask and hook, dtypes, strided and misaligned
// views, forced decode/prefill paths and thread counts. Each case also checks the guard bytes
// around out and lse. ATTNKIT_LONG_TESTS=1 makes every sweep exhaustive.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "attnkit/attention.h"
#include "testing/attn_case.h"
#include "testing/check_attention.h"

namespace attnkit {
namespace {

using testing::AttnCase;

class AttentionSweep : public ::testing::TestWithParam<AttnCase> {};

TEST_P(AttentionSweep, MatchesReference) {
  const AttnCase& c = GetParam();
  auto d = testing::make_case_data(c);
  const Status st = attention(d->q.view(), d->k.view(), d->v.view(), d->out.view(), d->maybe_lse(), d->params);
  ASSERT_TRUE(st.ok()) << c.name() << ": " << st.message();
  const testing::AttentionCheck r = testing::check_case(*d);
  EXPECT_TRUE(r.ok) << r.message;
}

std::string case_name(const ::testing::TestParamInfo<AttnCase>& info) {
  return info.param.name() + "_" + std::to_string(info.index);
}

INSTANTIATE_TEST_SUITE_P(HeadDims, AttentionSweep, ::testing::ValuesIn(testing::head_dim_cases()), case_name);
INSTANTIATE_TEST_SUITE_P(Lengths, AttentionSweep, ::testing::ValuesIn(testing::length_cases()), case_name);
INSTANTIATE_TEST_SUITE_P(Gqa, AttentionSweep, ::testing::ValuesIn(testing::gqa_cases()), case_name);
INSTANTIATE_TEST_SUITE_P(MasksHooks, AttentionSweep, ::testing::ValuesIn(testing::mask_hook_cases()), case_name);
INSTANTIATE_TEST_SUITE_P(Dtypes, AttentionSweep, ::testing::ValuesIn(testing::dtype_cases()), case_name);
INSTANTIATE_TEST_SUITE_P(Layouts, AttentionSweep, ::testing::ValuesIn(testing::layout_cases()), case_name);
INSTANTIATE_TEST_SUITE_P(Paths, AttentionSweep, ::testing::ValuesIn(testing::path_cases()), case_name);

}  // namespace
}  // namespace attnkit
