// Block-sparse and gather attention against exact attention and the masked double reference.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "attnkit/sparse.h"
#include "sparse_test_util.h"

namespace attnkit {
namespace {

using sparse_test::Inputs;

struct Case {
  int64_t sq, sk, hq, hkv, d;
  bool causal;
  CausalAlign align;
  int64_t bq, bk;
};

std::string case_name(const Case& c) {
  return "sq=" + std::to_string(c.sq) + " sk=" + std::to_string(c.sk) + " hq=" + std::to_string(c.hq) +
         " hkv=" + std::to_string(c.hkv) + " d=" + std::to_string(c.d) + (c.causal ? " causal" : " full") +
         (c.align == CausalAlign::kTopLeft ? " top-left" : "") + " block=" + std::to_string(c.bq) + "x" +
         std::to_string(c.bk);
}

const std::vector<Case>& cases() {
  static const std::vector<Case> v = {
      {113, 113, 4, 2, 64, true, CausalAlign::kBottomRight, 64, 64},
      {113, 113, 4, 2, 64, false, CausalAlign::kBottomRight, 64, 64},
      {37, 201, 2, 1, 40, true, CausalAlign::kBottomRight, 64, 64},
      {201, 150, 4, 4, 33, true, CausalAlign::kTopLeft, 64, 32},
      {130, 130, 8, 2, 128, true, CausalAlign::kBottomRight, 32, 64},
      {257, 257, 2, 1, 64, false, CausalAlign::kBottomRight, 128, 64},
      // More queries than keys, bottom-right: the first 60 rows see no key (output 0, LSE -inf).
      {150, 90, 2, 2, 16, true, CausalAlign::kBottomRight, 64, 64},
  };
  return v;
}

TEST(BlockSparse, AllBlocksVisitedEqualsExactAttention) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(case_name(c));
    Inputs in(2, c.sq, c.sk, c.hq, c.hkv, c.d, 7);
    AttentionParams p = sparse_test::causal_params(c.causal, c.align);
    BlockMask m;
    ASSERT_TRUE(dense_block_mask(sparse_test::mask_shape(in, c.causal, c.bq, c.bk, c.align), &m).ok());
    EXPECT_NEAR(block_mask_stats(m).density, 1.0, 1e-12);
    ASSERT_TRUE(sparse_attention(in.q.view(), in.k.view(), in.v.view(), in.out.view(), in.lse.data(), p, m).ok());
    const std::vector<float> got = in.out.to_dense();
    const std::vector<float> got_lse = in.lse;
    Inputs ex(2, c.sq, c.sk, c.hq, c.hkv, c.d, 7);
    ASSERT_TRUE(attention(ex.q.view(), ex.k.view(), ex.v.view(), ex.out.view(), ex.lse.data(), p).ok());
    const std::vector<float> want = ex.out.to_dense();
    // Same kernel, same tiles in the same order: equal up to a few roundings.
    for (size_t x = 0; x < want.size(); ++x) ASSERT_NEAR(got[x], want[x], 2e-6f) << "element " << x;
    for (size_t x = 0; x < got_lse.size(); ++x) {
      if (std::isinf(ex.lse[x])) ASSERT_TRUE(std::isinf(got_lse[x]));
      else ASSERT_NEAR(got_lse[x], ex.lse[x], 2e-5f) << "lse " << x;
    }
    // And both against the reference with an all-true element rule.
    EXPECT_EQ(sparse_test::check_against_reference(in, p, [](int64_t, int64_t, int64_t, int64_t) { return true; }), "");
  }
}

std::vector<PatternPtr> test_patterns(int64_t seq_kv) {
  std::vector<PatternPtr> v(8);
  EXPECT_TRUE(make_window_pattern(40, 0, &v[0]).ok());
  EXPECT_TRUE(make_a_shape_pattern(5, 30, &v[1]).ok());
  EXPECT_TRUE(make_strided_pattern(23, &v[2]).ok());
  EXPECT_TRUE(make_dilated_pattern(32, 3, &v[3]).ok());
  EXPECT_TRUE(make_bigbird_pattern(16, 1, 1, 2, 42, true, seq_kv, &v[4]).ok());
  EXPECT_TRUE(make_power_pattern(16, 3, &v[5]).ok());
  EXPECT_TRUE(make_blockwise_local_pattern(48, 48, &v[6]).ok());
  EXPECT_TRUE(make_window_pattern(20, 20, &v[7]).ok());
  return v;
}

TEST(BlockSparse, PatternsEqualMaskedReference) {
  for (const Case& c : cases()) {
    for (const PatternPtr& pat : test_patterns(c.sk)) {
      SCOPED_TRACE(case_name(c) + " " + pat->describe());
      Inputs in(1, c.sq, c.sk, c.hq, c.hkv, c.d, 11);
      AttentionParams p = sparse_test::causal_params(c.causal, c.align);
      const BlockMaskShape shape = sparse_test::mask_shape(in, c.causal, c.bq, c.bk, c.align);
      BlockMask m;
      ASSERT_TRUE(build_block_mask(shape, pat, &m).ok());
      ASSERT_TRUE(sparse_attention(in.q.view(), in.k.view(), in.v.view(), in.out.view(), in.lse.data(), p, m).ok());
      EXPECT_EQ(sparse_test::check_against_reference(in, p, sparse_test::pattern_predicate(pat, shape)), "");
    }
  }
}

TEST(BlockSparse, StridedLayoutsAndBatch) {
  // Heads-major strides and row padding go through the same kernel path.
  for (testing::Layout layout : {testing::Layout::kHeadsMajor, testing::Layout::kPaddedRows}) {
    Inputs in(2, 150, 150, 4, 2, 48, 5, layout);
    AttentionParams p = sparse_test::causal_params(true);
    PatternPtr pat;
    ASSERT_TRUE(make_a_shape_pattern(4, 50, &pat).ok());
    const BlockMaskShape shape = sparse_test::mask_shape(in, true);
    BlockMask m;
    ASSERT_TRUE(build_block_mask(shape, pat, &m).ok());
    ASSERT_TRUE(sparse_attention(in.q.view(), in.k.view(), in.v.view(), in.out.view(), in.lse.data(), p, m).ok());
    EXPECT_EQ(sparse_test::check_against_reference(in, p, sparse_test::pattern_predicate(pat, shape)), "");
  }
}

TEST(BlockSparse, HalfPrecisionInputs) {
  // bf16 / f16 Q, K, V (f32 output): the kernel converts tiles; the reference reads the same
  // rounded values.
  for (DType dt : {DType::kBF16, DType::kF16}) {
    SCOPED_TRACE(dtype_name(dt));
    Inputs in(1, 140, 140, 4, 2, 64, 13, testing::Layout::kContiguous, dt);
    AttentionParams p = sparse_test::causal_params(true);
    PatternPtr pat;
    ASSERT_TRUE(make_power_pattern(16, 2, &pat).ok());
    const BlockMaskShape shape = sparse_test::mask_shape(in, true);
    BlockMask m;
    ASSERT_TRUE(build_block_mask(shape, pat, &m).ok());
    ASSERT_TRUE(sparse_attention(in.q.view(), in.k.view(), in.v.view(), in.out.view(), in.lse.data(), p, m).ok());
    EXPECT_EQ(sparse_test::check_against_reference(in, p, sparse_test::pattern_predicate(pat, shape)), "");
    // An estimator reading bf16/f16 keys (converted copy) still returns a valid causal mask.
    BlockTopKConfig bt;
    bt.topk = 1;
    BlockMask est;
    ASSERT_TRUE(estimate_block_topk(in.q.view(), in.k.view(), p, bt, &est).ok());
    ASSERT_TRUE(validate_block_mask(est).ok());
    EXPECT_LE(block_mask_stats(est).density, 1.0);
  }
}

TEST(BlockSparse, SelectedBlocksAndColumnsEqualReference) {
  // A hand-made selection with gathered columns: blocks and columns merge through LSE.
  Inputs in(1, 200, 200, 2, 1, 32, 3);
  AttentionParams p = sparse_test::causal_params(true);
  const BlockMaskShape shape = sparse_test::mask_shape(in, true, 64, 32);
  BlockMask probe;
  probe.shape = shape;
  std::vector<std::vector<int32_t>> sel(probe.n_lists()), cols(probe.n_lists());
  for (int64_t l = 0; l < probe.n_lists(); ++l) {
    const int64_t qb = l % probe.n_q_blocks();
    sel[l] = {0, static_cast<int32_t>(std::min<int64_t>(199, qb * 64 + 63) / 32)};  // first and diagonal block
    cols[l] = {40, 41, 77, 150, 199};
  }
  BlockMask m;
  ASSERT_TRUE(block_mask_from_selection(shape, sel, &cols, &m).ok());
  ASSERT_TRUE(validate_block_mask(m).ok());
  ASSERT_TRUE(sparse_attention(in.q.view(), in.k.view(), in.v.view(), in.out.view(), in.lse.data(), p, m).ok());
  auto visible = [&](int64_t b, int64_t h, int64_t i, int64_t j) {
    std::vector<uint8_t> row(200, 0);
    block_mask_visited_row(m, b, h, i, row.data());
    return row[j] != 0;
  };
  EXPECT_EQ(sparse_test::check_against_reference(in, p, visible), "");
  // The visited set really contains the columns and the diagonal block.
  std::vector<uint8_t> row(200, 0);
  block_mask_visited_row(m, 0, 0, 199, row.data());
  EXPECT_TRUE(row[77] && row[150] && row[199] && row[5] && row[195]);
  EXPECT_FALSE(row[100]);
}

TEST(GatherAttention, PartsMergeToExactAttention) {
  // Split every row's keys into even and odd positions, gather each part with LSE and merge.
  const int64_t sq = 90, sk = 131;
  Inputs a(1, sq, sk, 4, 2, 64, 9), b(1, sq, sk, 4, 2, 64, 9), ex(1, sq, sk, 4, 2, 64, 9);
  AttentionParams p = sparse_test::causal_params(true);
  for (int parity = 0; parity < 2; ++parity) {
    KeyIndexLists lists;
    lists.batch = 1;
    lists.heads = 4;
    lists.seq_q = sq;
    lists.seq_kv = sk;
    lists.rows_per_list = 16;
    const int64_t nl = (sq + 15) / 16;
    lists.offsets.push_back(0);
    for (int64_t l = 0; l < 4 * nl; ++l) {
      for (int32_t j = parity; j < sk; j += 2) lists.indices.push_back(j);
      lists.offsets.push_back(static_cast<int64_t>(lists.indices.size()));
    }
    Inputs& dst = parity == 0 ? a : b;
    ASSERT_TRUE(gather_attention(dst.q.view(), dst.k.view(), dst.v.view(), dst.out.view(), dst.lse.data(), p, lists).ok());
  }
  ASSERT_TRUE(merge_states(a.out.view(), a.lse.data(), b.out.view(), b.lse.data(), a.out.view(), a.lse.data()).ok());
  ASSERT_TRUE(attention(ex.q.view(), ex.k.view(), ex.v.view(), ex.out.view(), ex.lse.data(), p).ok());
  const std::vector<float> got = a.out.to_dense(), want = ex.out.to_dense();
  for (size_t x = 0; x < got.size(); ++x) ASSERT_NEAR(got[x], want[x], 1e-5f) << x;
  for (size_t x = 0; x < a.lse.size(); ++x) ASSERT_NEAR(a.lse[x], ex.lse[x], 1e-5f) << x;
}

TEST(BlockSparse, BadInputsReturnStatus) {
  Inputs in(1, 64, 64, 2, 1, 32, 1);
  AttentionParams p = sparse_test::causal_params(true);
  BlockMask m;
  BlockMaskShape s = sparse_test::mask_shape(in, true);
  s.heads = 3;
  ASSERT_TRUE(dense_block_mask(s, &m).ok());
  Status st = sparse_attention(in.q.view(), in.k.view(), in.v.view(), in.out.view(), nullptr, p, m);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("heads 3"), std::string::npos) << st.message();
  ASSERT_TRUE(dense_block_mask(sparse_test::mask_shape(in, false), &m).ok());
  st = sparse_attention(in.q.view(), in.k.view(), in.v.view(), in.out.view(), nullptr, p, m);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("causal"), std::string::npos) << st.message();
  ASSERT_TRUE(dense_block_mask(sparse_test::mask_shape(in, true), &m).ok());
  m.full_blocks[0] = 99;
  st = sparse_attention(in.q.view(), in.k.view(), in.v.view(), in.out.view(), nullptr, p, m);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("99"), std::string::npos) << st.message();
  BlockMaskShape bad = sparse_test::mask_shape(in, true);
  bad.block_q = 0;
  st = dense_block_mask(bad, &m);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("block_q 0"), std::string::npos) << st.message();
  PatternPtr pat;
  st = make_strided_pattern(0, &pat);
  EXPECT_NE(st.message().find("stride 0"), std::string::npos) << st.message();
  AttentionParams sig = p;
  sig.normalization = Normalization::kSigmoid;
  ASSERT_TRUE(dense_block_mask(sparse_test::mask_shape(in, true), &m).ok());
  st = sparse_attention(in.q.view(), in.k.view(), in.v.view(), in.out.view(), nullptr, sig, m);
  EXPECT_EQ(st.code(), StatusCode::kUnsupported);
  // Nothing was written by the failed calls.
  EXPECT_TRUE(in.out.untouched());
}

}  // namespace
}  // namespace attnkit
