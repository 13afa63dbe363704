// Star Attention: phase 2 (query tokens over the whole context, partial results reduced across
// ranks) must equal exact attention of those rows; phase 1 must equal exact attention of each
// block over [anchor, block], the approximation the method makes by design.
#include <gtest/gtest.h>

#include <vector>

#include "attnkit/distributed.h"
#include "dist_test_util.h"
#include "reference/attention_ref.h"
#include "testing/check_attention.h"
#include "testing/plain_attention.h"

namespace attnkit {
namespace {

using dist::internal::seq_slice;

struct StarCase {
  int64_t ctx = 157, n_query = 9, heads_q = 4, heads_kv = 2, anchor = 0;
  bool causal = true;
};

class StarTest : public ::testing::TestWithParam<StarCase> {};

TEST_P(StarTest, QueryPhaseIsExactAndContextPhaseMatchesAnchorPlusBlock) {
  const StarCase& sc = GetParam();
  const int rank = disttest::world_rank(), ranks = disttest::world_size();
  testing::AttnCase c;
  c.batch = 2;
  c.seq_q = c.seq_kv = sc.ctx + sc.n_query;
  c.heads_q = sc.heads_q;
  c.heads_kv = sc.heads_kv;
  c.head_dim = 32;
  c.head_dim_v = 16;
  c.causal = sc.causal;
  c.num_threads = 1;
  c.seed = 5;
  auto d = testing::make_case_data(c);
  const testing::CaseExpectation e = testing::expect_case(*d);
  const int64_t B = c.batch, hq = c.heads_q, dv = c.head_dim_v;
  dist::StarParams p;
  p.attn.causal = sc.causal;
  p.attn.num_threads = 1;
  p.seq_ctx = sc.ctx;
  p.anchor_len = sc.anchor;
  const dist::Segment blk = dist::block_segments(sc.ctx, ranks, rank, dist::BlockLayout::kContiguous)[0];

  // ---- phase 2 ----
  std::vector<float> out(static_cast<size_t>(B * sc.n_query * hq * dv)), lse(static_cast<size_t>(B * hq * sc.n_query));
  dist::CommStats stats;
  Status st = dist::star_query(seq_slice(d->q.view(), sc.ctx, sc.n_query), seq_slice(d->k.view(), sc.ctx, sc.n_query),
                               seq_slice(d->v.view(), sc.ctx, sc.n_query), seq_slice(d->k.view(), blk.start, blk.len),
                               seq_slice(d->v.view(), blk.start, blk.len),
                               TensorView::contiguous(out.data(), DType::kF32, B, sc.n_query, hq, dv), lse.data(), p,
                               &stats);
  ASSERT_TRUE(st.ok()) << st.message();
  const std::vector<dist::Segment> query_rows = {{sc.ctx, sc.n_query}};
  const auto co = testing::check_close(disttest::rows_of(e.ref.out, B, c.seq_q, hq, dv, query_rows), out,
                                       disttest::rows_of(e.baseline_out, B, c.seq_q, hq, dv, query_rows), DType::kF32,
                                       "star query out");
  EXPECT_TRUE(co.ok) << "rank " << rank << ": " << co.message;
  const auto cl = testing::check_close(disttest::lse_of(e.ref.lse, B, hq, c.seq_q, query_rows), lse,
                                       disttest::lse_of(e.baseline_lse, B, hq, c.seq_q, query_rows), DType::kF32,
                                       "star query lse");
  EXPECT_TRUE(cl.ok) << "rank " << rank << ": " << cl.message;
  if (ranks > 1) EXPECT_GT(stats.bytes_sent, 0);

  // ---- phase 1 ----
  std::vector<float> cout(static_cast<size_t>(B * blk.len * hq * dv)), clse(static_cast<size_t>(B * hq * blk.len));
  st = dist::star_context(seq_slice(d->q.view(), blk.start, blk.len), seq_slice(d->k.view(), blk.start, blk.len),
                          seq_slice(d->v.view(), blk.start, blk.len),
                          TensorView::contiguous(cout.data(), DType::kF32, B, blk.len, hq, dv), clse.data(), p, &stats);
  ASSERT_TRUE(st.ok()) << st.message();
  if (blk.len == 0) return;
  // Expected: the block's queries over [anchor, block] keys, causal (bottom-right: the block
  // follows the anchor), in one single-process call.
  const int64_t first = dist::block_len(sc.ctx, ranks, 0, dist::BlockLayout::kContiguous);
  const int64_t anchor = sc.anchor > 0 ? sc.anchor : first;
  std::vector<dist::Segment> keys = {blk};
  if (rank > 0) keys.insert(keys.begin(), dist::Segment{0, anchor});
  const disttest::LocalBlock kk = disttest::local_block(d->k.view(), keys);
  const disttest::LocalBlock vv = disttest::local_block(d->v.view(), keys);
  const TensorView qb = seq_slice(d->q.view(), blk.start, blk.len);
  AttentionParams ep;
  ep.causal = sc.causal;
  reference::RefResult ref;
  ASSERT_TRUE(reference::attention_ref_f64(qb, kk.view, vv.view, true, ep, &ref).ok());
  const testing::PlainResult plain = testing::attention_plain_f32(qb, kk.view, vv.view, ep);
  const auto c1 = testing::check_close(ref.out, cout, plain.out, DType::kF32, "star context out");
  EXPECT_TRUE(c1.ok) << "rank " << rank << ": " << c1.message;
  const auto c2 = testing::check_close(ref.lse, clse, plain.lse, DType::kF32, "star context lse");
  EXPECT_TRUE(c2.ok) << "rank " << rank << ": " << c2.message;
}

INSTANTIATE_TEST_SUITE_P(Cases, StarTest,
                         ::testing::Values(StarCase{}, StarCase{301, 1, 8, 1, 16, true}, StarCase{64, 13, 2, 2, 5, false},
                                           StarCase{3, 4, 4, 2, 0, true}));

}  // namespace
}  // namespace attnkit
