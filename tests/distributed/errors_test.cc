// A bad input on one rank: every rank must return the same clear error (and none may hang; CTest's
// TIMEOUT bounds the program).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "attnkit/distributed.h"
#include "dist_test_util.h"

namespace attnkit {
namespace {

struct Dense {
  std::vector<float> data;
  TensorView view;
  Dense(int64_t b, int64_t s, int64_t h, int64_t d) : data(static_cast<size_t>(b * s * h * d), 0.5f) {
    view = TensorView::contiguous(data.data(), DType::kF32, b, s, h, d);
  }
};

// Every rank got an error, the same one, and it names what is wrong.
void expect_same_error(const Status& st, const std::string& must_contain) {
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find(must_contain), std::string::npos) << st.message();
  EXPECT_EQ(st.message(), disttest::bcast_string(st.message())) << "ranks returned different errors";
}

TEST(DistributedErrors, RingBadBlockOnLastRank) {
  const int rank = disttest::world_rank(), ranks = disttest::world_size();
  const int64_t seq = 64, lq = dist::block_len(seq, ranks, rank, dist::BlockLayout::kContiguous);
  const int64_t lk = rank == ranks - 1 ? lq + 3 : lq;  // the last rank holds three keys too many
  Dense q(1, lq, 2, 16), k(1, lk, 2, 16), v(1, lk, 2, 16), out(1, lq, 2, 16);
  dist::RingParams p;
  p.seq_q = p.seq_kv = seq;
  p.attn.causal = true;
  expect_same_error(dist::ring_attention(q.view, k.view, v.view, out.view, nullptr, p),
                    "rank " + std::to_string(ranks - 1) + ": k/v seq");
}

TEST(DistributedErrors, RingHeadDimDiffersAcrossRanks) {
  const int rank = disttest::world_rank(), ranks = disttest::world_size();
  if (ranks < 2) GTEST_SKIP() << "needs two ranks";
  const int64_t seq = 40, lq = dist::block_len(seq, ranks, rank, dist::BlockLayout::kZigZag);
  const int64_t d = rank == 0 ? 8 : 16;  // valid on each rank alone, inconsistent together
  Dense q(1, lq, 2, d), k(1, lq, 2, d), v(1, lq, 2, 16), out(1, lq, 2, 16);
  dist::RingParams p;
  p.seq_q = p.seq_kv = seq;
  p.layout = dist::BlockLayout::kZigZag;
  expect_same_error(dist::ring_attention(q.view, k.view, v.view, out.view, nullptr, p), "head_dim differs across ranks");
}

TEST(DistributedErrors, RingRefusesUnsupportedMasks) {
  const int rank = disttest::world_rank(), ranks = disttest::world_size();
  const int64_t seq = 16, lq = dist::block_len(seq, ranks, rank, dist::BlockLayout::kContiguous);
  Dense q(1, lq, 1, 8), k(1, lq, 1, 8), v(1, lq, 1, 8), out(1, lq, 1, 8);
  dist::RingParams p;
  p.seq_q = p.seq_kv = seq;
  p.attn.n_sink_tokens = 4;
  expect_same_error(dist::ring_attention(q.view, k.view, v.view, out.view, nullptr, p), "n_sink_tokens 4");
}

TEST(DistributedErrors, StarBadOutputOnFirstRank) {
  const int rank = disttest::world_rank(), ranks = disttest::world_size();
  const int64_t ctx = 50, lc = dist::block_len(ctx, ranks, rank, dist::BlockLayout::kContiguous);
  Dense q(1, 4, 2, 16), k(1, 4, 2, 16), v(1, 4, 2, 16), kc(1, lc, 2, 16), vc(1, lc, 2, 16);
  Dense out(1, rank == 0 ? 5 : 4, 2, 16);
  dist::StarParams p;
  p.seq_ctx = ctx;
  expect_same_error(dist::star_query(q.view, k.view, v.view, kc.view, vc.view, out.view, nullptr, p, nullptr),
                    "rank 0: query q/k/v/out seq 4/4/4/5");
}

TEST(DistributedErrors, Lasp2BadGateOnOneRank) {
  const int rank = disttest::world_rank(), ranks = disttest::world_size();
  const int64_t seq = 30, lc = dist::block_len(seq, ranks, rank, dist::BlockLayout::kContiguous);
  Dense q(1, lc, 2, 8), k(1, lc, 2, 8), v(1, lc, 2, 8), out(1, lc, 2, 8), gate(1, lc, 2, 1);
  for (float& g : gate.data) g = rank == ranks - 1 ? 0.25f : -0.1f;  // log-decays must be <= 0
  dist::Lasp2Params p;
  p.linear.decay = DecayKind::kScalarGate;
  p.linear.gate = gate.view;
  expect_same_error(dist::lasp2_linear_attention(q.view, k.view, v.view, out.view, p), "rank " + std::to_string(ranks - 1) + ": gate value 0.25");
}

}  // namespace
}  // namespace attnkit
