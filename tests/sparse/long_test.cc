// Longer sparse sweeps, run only with ATTNKIT_LONG_TESTS=1 (the default suite stays fast).
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "attnkit/sparse.h"
#include "sparse_test_util.h"

namespace attnkit {
namespace {

using sparse_test::Inputs;

bool long_tests() {
  const char* v = std::getenv("ATTNKIT_LONG_TESTS");
  return v != nullptr && std::string(v) != "" && std::string(v) != "0";
}

TEST(SparseLong, PatternsAroundTileSizesEqualReference) {
  if (!long_tests()) GTEST_SKIP() << "set ATTNKIT_LONG_TESTS=1";
  std::vector<PatternPtr> pats(6);
  ASSERT_TRUE(make_window_pattern(255, 0, &pats[0]).ok());
  ASSERT_TRUE(make_a_shape_pattern(4, 200, &pats[1]).ok());
  ASSERT_TRUE(make_strided_pattern(100, &pats[2]).ok());
  ASSERT_TRUE(make_dilated_pattern(128, 3, &pats[3]).ok());
  ASSERT_TRUE(make_power_pattern(64, 4, &pats[4]).ok());
  ASSERT_TRUE(make_blockwise_local_pattern(300, 300, &pats[5]).ok());
  for (int64_t n : {63, 65, 127, 129, 1023, 1025}) {
    for (bool causal : {true, false}) {
      for (const PatternPtr& pat : pats) {
        SCOPED_TRACE("n=" + std::to_string(n) + (causal ? " causal " : " ") + pat->describe());
        Inputs in(1, n, n, 4, 1, 64, static_cast<uint64_t>(n));
        AttentionParams p = sparse_test::causal_params(causal);
        const BlockMaskShape shape = sparse_test::mask_shape(in, causal);
        BlockMask m;
        ASSERT_TRUE(build_block_mask(shape, pat, &m).ok());
        ASSERT_TRUE(sparse_attention(in.q.view(), in.k.view(), in.v.view(), in.out.view(), in.lse.data(), p, m).ok());
        EXPECT_EQ(sparse_test::check_against_reference(in, p, sparse_test::pattern_predicate(pat, shape)), "");
      }
    }
  }
}

TEST(SparseLong, DenseBlocksEqualExactAt4097) {
  if (!long_tests()) GTEST_SKIP() << "set ATTNKIT_LONG_TESTS=1";
  Inputs in(1, 4097, 4097, 8, 2, 128, 3), ex(1, 4097, 4097, 8, 2, 128, 3);
  AttentionParams p = sparse_test::causal_params(true);
  BlockMask m;
  ASSERT_TRUE(dense_block_mask(sparse_test::mask_shape(in, true), &m).ok());
  ASSERT_TRUE(sparse_attention(in.q.view(), in.k.view(), in.v.view(), in.out.view(), in.lse.data(), p, m).ok());
  ASSERT_TRUE(attention(ex.q.view(), ex.k.view(), ex.v.view(), ex.out.view(), ex.lse.data(), p).ok());
  double err = 0;
  ASSERT_TRUE(relative_l2_error(in.out.view(), ex.out.view(), &err).ok());
  EXPECT_LT(err, 1e-6);
}

TEST(SparseLong, HyperCausalRecursionAllSamplesExactAt8192) {
  if (!long_tests()) GTEST_SKIP() << "set ATTNKIT_LONG_TESTS=1";
  const int64_t n = 8192;
  Inputs in(1, n, n, 2, 1, 64, 4), ex(1, n, n, 2, 1, 64, 4);
  HyperConfig c;
  c.min_len = 1024;
  c.samples = n;
  AttentionParams p = sparse_test::causal_params(true);
  ASSERT_TRUE(hyper_attention(in.q.view(), in.k.view(), in.v.view(), in.out.view(), nullptr, p, c, nullptr).ok());
  ASSERT_TRUE(attention(ex.q.view(), ex.k.view(), ex.v.view(), ex.out.view(), nullptr, p).ok());
  double err = 0;
  ASSERT_TRUE(relative_l2_error(in.out.view(), ex.out.view(), &err).ok());
  EXPECT_LT(err, 1e-5);
}

}  // namespace
}  // namespace attnkit
