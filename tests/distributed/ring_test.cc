// Ring attention against single-process exact attention: the shared case generator builds the
// whole problem on every rank (same seed), each rank runs its block through ring_attention, and
// its rows of the output and LSE must pass the shared tolerance policy against the double
// reference (with the plain f32 implementation as the yardstick), like attnkit::attention itself.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "attnkit/distributed.h"
#include "dist_test_util.h"
#include "testing/check_attention.h"

namespace attnkit {
namespace {

using dist::BlockLayout;
using testing::AttnCase;

struct RingCase {
  AttnCase c;
  BlockLayout layout = BlockLayout::kContiguous;
  std::string name() const { return c.name() + "_" + dist::block_layout_name(layout); }
};

std::vector<RingCase> ring_cases() {
  std::vector<RingCase> out;
  auto add = [&](int64_t sq, int64_t sk, int64_t hq, int64_t hkv, bool causal, CausalAlign align, int64_t wl,
                 int64_t wr, BlockLayout layout, DType dtype = DType::kF32) {
    RingCase r;
    r.c.batch = 2;
    r.c.seq_q = sq;
    r.c.seq_kv = sk;
    r.c.heads_q = hq;
    r.c.heads_kv = hkv;
    r.c.head_dim = 32;
    r.c.head_dim_v = 24;
    r.c.causal = causal;
    r.c.causal_align = align;
    r.c.window_left = wl;
    r.c.window_right = wr;
    r.c.dtype = dtype;
    r.c.num_threads = 1;
    r.c.seed = static_cast<uint64_t>(out.size() + 11);
    r.layout = layout;
    out.push_back(r);
  };
  const auto BR = CausalAlign::kBottomRight, TL = CausalAlign::kTopLeft;
  for (BlockLayout l : {BlockLayout::kContiguous, BlockLayout::kZigZag}) {
    add(101, 101, 4, 2, false, BR, -1, -1, l);         // non-causal, GQA 2
    add(203, 203, 8, 2, true, BR, -1, -1, l);          // causal, GQA 4
    add(77, 131, 4, 4, true, BR, -1, -1, l);           // causal bottom-right, fewer queries than keys
    add(77, 131, 4, 1, true, TL, -1, -1, l);           // causal top-left, MQA
    add(120, 50, 2, 2, true, BR, -1, -1, l);           // bottom-right with more queries: empty rows
    add(150, 150, 4, 2, false, BR, 17, 5, l);          // two-sided window
    add(90, 160, 4, 2, true, BR, 23, -1, l);           // causal sliding window
    add(90, 160, 4, 2, true, TL, 31, 0, l);            // causal top-left window
    add(3, 7, 2, 1, true, BR, -1, -1, l);              // fewer tokens than ranks' pieces
    add(130, 130, 4, 2, true, BR, -1, -1, l, DType::kBF16);
  }
  // Hooks that act per logit or per row: scale, softcap, head temperature, sink logits.
  RingCase h = out[1];
  h.c.softcap = 5.0f;
  h.c.scale = 0.3f;
  h.c.temperature = true;
  h.c.sink_logits = true;
  h.layout = BlockLayout::kZigZag;
  out.push_back(h);
  return out;
}

class RingTest : public ::testing::TestWithParam<RingCase> {};

TEST_P(RingTest, MatchesSingleProcessExactAttention) {
  const RingCase& rc = GetParam();
  const int rank = disttest::world_rank(), ranks = disttest::world_size();
  auto d = testing::make_case_data(rc.c);
  const testing::CaseExpectation e = testing::expect_case(*d);
  // The single-process kernel must itself pass (it is what the ring is held to).
  ASSERT_TRUE(attention(d->q.view(), d->k.view(), d->v.view(), d->out.view(), d->maybe_lse(), d->params).ok());
  ASSERT_TRUE(testing::check_case(*d, e).ok) << testing::check_case(*d, e).message;

  const auto q_segs = dist::block_segments(rc.c.seq_q, ranks, rank, rc.layout);
  const auto k_segs = dist::block_segments(rc.c.seq_kv, ranks, rank, rc.layout);
  const disttest::LocalBlock q = disttest::local_block(d->q.view(), q_segs);
  const disttest::LocalBlock k = disttest::local_block(d->k.view(), k_segs);
  const disttest::LocalBlock v = disttest::local_block(d->v.view(), k_segs);
  const int64_t B = rc.c.batch, lq = q.view.seq(), hq = rc.c.heads_q, dv = rc.c.head_dim_v;
  std::vector<float> out(static_cast<size_t>(B * lq * hq * dv), -7.0f), lse(static_cast<size_t>(B * hq * lq), -7.0f);
  dist::RingParams p;
  p.attn = d->params;
  p.seq_q = rc.c.seq_q;
  p.seq_kv = rc.c.seq_kv;
  p.layout = rc.layout;
  dist::CommStats stats;
  const Status st = dist::ring_attention(q.view, k.view, v.view, TensorView::contiguous(out.data(), DType::kF32, B, lq, hq, dv),
                                         lse.data(), p, &stats);
  ASSERT_TRUE(st.ok()) << st.message();

  const std::vector<double> ref_out = disttest::rows_of(e.ref.out, B, rc.c.seq_q, hq, dv, q_segs);
  const std::vector<float> base_out = disttest::rows_of(e.baseline_out, B, rc.c.seq_q, hq, dv, q_segs);
  const testing::CheckResult co = testing::check_close(ref_out, out, base_out, DType::kF32, "ring out");
  EXPECT_TRUE(co.ok) << rc.name() << " rank " << rank << ": " << co.message;
  const std::vector<double> ref_lse = disttest::lse_of(e.ref.lse, B, hq, rc.c.seq_q, q_segs);
  const std::vector<float> base_lse = disttest::lse_of(e.baseline_lse, B, hq, rc.c.seq_q, q_segs);
  const testing::CheckResult cl = testing::check_close(ref_lse, lse, base_lse, DType::kF32, "ring lse");
  EXPECT_TRUE(cl.ok) << rc.name() << " rank " << rank << ": " << cl.message;

  // Every block travels R - 1 hops; causal masks skip the pairs above the diagonal.
  if (ranks > 1 && rc.c.seq_kv >= 2 * ranks) EXPECT_GT(stats.bytes_sent, 0);
  int64_t skipped = 0;
  MPI_Allreduce(&stats.blocks_skipped, &skipped, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
  if (rc.c.causal && rc.c.seq_q == rc.c.seq_kv && rc.c.seq_q >= 8 * ranks && ranks > 1)
    EXPECT_GT(skipped, 0) << rc.name();
}

INSTANTIATE_TEST_SUITE_P(Cases, RingTest, ::testing::ValuesIn(ring_cases()),
                         [](const ::testing::TestParamInfo<RingCase>& i) { return i.param.name(); });

TEST(RingLayout, SegmentsCoverTheSequenceOnce) {
  for (int ranks : {1, 2, 3, 4, 7})
    for (int64_t seq : {1, 5, 13, 64, 1001})
      for (BlockLayout l : {BlockLayout::kContiguous, BlockLayout::kZigZag}) {
        std::vector<int> seen(static_cast<size_t>(seq), 0);
        int64_t lo = seq, hi = 0;
        for (int r = 0; r < ranks; ++r) {
          int64_t n = 0;
          for (const dist::Segment& s : dist::block_segments(seq, ranks, r, l)) {
            for (int64_t i = s.start; i < s.start + s.len; ++i) ++seen[static_cast<size_t>(i)];
            n += s.len;
          }
          EXPECT_EQ(n, dist::block_len(seq, ranks, r, l));
          lo = std::min(lo, n);
          hi = std::max(hi, n);
        }
        for (int64_t i = 0; i < seq; ++i) EXPECT_EQ(seen[static_cast<size_t>(i)], 1) << "token " << i;
        EXPECT_LE(hi - lo, l == BlockLayout::kZigZag ? 2 : 1) << "ranks " << ranks << " seq " << seq;
      }
}

}  // namespace
}  // namespace attnkit
