// Thread counts (attnkit/threads.h): 0 and 1..max_threads() are accepted everywhere, anything else
// is refused with a message naming the parameter and value, before OpenMP is asked for threads.
#include <gtest/gtest.h>
#include <omp.h>

#include <climits>
#include <string>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/linear.h"
#include "attnkit/registry.h"
#include "attnkit/sparse.h"
#include "attnkit/threads.h"
#include "testing/tensor_buffer.h"

namespace attnkit {
namespace {

using testing::TestTensor;

void expect_refused(const Status& s, const std::string& param, long long value) {
  ASSERT_FALSE(s.ok()) << param << " " << value << " was accepted";
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find(param + " " + std::to_string(value)), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("1.." + std::to_string(max_threads())), std::string::npos) << s.message();
}

TEST(Threads, CapIsFourPerProcessor) {
  EXPECT_EQ(max_threads(), kThreadsPerProcessor * omp_get_num_procs());
  EXPECT_GE(max_threads(), kThreadsPerProcessor);
}

TEST(Threads, ResolveAcceptsZeroAndOneToCap) {
  int t = -7;
  ASSERT_TRUE(resolve_threads(0, "threads", &t).ok());
  EXPECT_EQ(t, omp_get_max_threads());
  ASSERT_TRUE(resolve_threads(1, "threads", &t).ok());
  EXPECT_EQ(t, 1);
  ASSERT_TRUE(resolve_threads(max_threads(), "threads", &t).ok());
  EXPECT_EQ(t, max_threads());
}

TEST(Threads, ResolveRefusesNegativeAndHugeCounts) {
  for (const int bad : {-1, -5, INT_MIN, max_threads() + 1, 40000, 100000, INT_MAX}) {
    int t = 3;
    expect_refused(resolve_threads(bad, "num_threads", &t), "num_threads", bad);
    EXPECT_EQ(t, 3) << "the output is written only on success";
  }
}

// Each family's entry point refuses the count before running (no OpenMP region is entered).
TEST(Threads, EveryEntryPointRefusesAHugeCount) {
  TestTensor q{DType::kF32, 1, 64, 2, 16}, k{DType::kF32, 1, 64, 2, 16}, v{DType::kF32, 1, 64, 2, 16};
  TestTensor out{DType::kF32, 1, 64, 2, 16};
  q.fill_uniform(1);
  k.fill_uniform(2);
  v.fill_uniform(3);
  AttentionParams ap;
  ap.causal = true;
  ap.num_threads = 100000;
  expect_refused(attention(q.view(), k.view(), v.view(), out.view(), nullptr, ap), "num_threads", 100000);

  BlockMaskShape shape;
  shape.batch = 1;
  shape.heads = 2;
  shape.seq_q = 64;
  shape.seq_kv = 64;
  shape.block_q = 16;
  shape.block_k = 16;
  shape.causal = true;
  BlockMask mask;
  ASSERT_TRUE(dense_block_mask(shape, &mask).ok());
  expect_refused(sparse_attention(q.view(), k.view(), v.view(), out.view(), nullptr, ap, mask), "num_threads", 100000);
  BlockTopKConfig topk;
  topk.block = 16;
  BlockMask est;
  expect_refused(estimate_block_topk(q.view(), k.view(), ap, topk, &est), "num_threads", 100000);

  LinearAttentionParams lp;
  lp.num_threads = -5;
  expect_refused(linear_attention(q.view(), k.view(), v.view(), out.view(), lp), "num_threads", -5);

  ProblemShape ps;
  ps.seq_q = ps.seq_kv = 64;
  ps.threads = 100000;
  expect_refused(check_problem_shape(ps), "threads", 100000);
  const Mechanism* exact = find_mechanism("exact");
  ASSERT_NE(exact, nullptr);
  MechanismParams mp;
  for (const ParamSpec& spec : exact->params) mp[spec.name] = spec.default_value;
  std::unique_ptr<PreparedRun> run;
  expect_refused(exact->prepare(ps, mp, &run), "threads", 100000);
}

// The cap itself runs: as many threads as it allows give the single-thread result.
TEST(Threads, TheCapRunsAndMatchesOneThread) {
  TestTensor q{DType::kF32, 1, 70, 2, 16}, k{DType::kF32, 1, 70, 2, 16}, v{DType::kF32, 1, 70, 2, 16};
  TestTensor one{DType::kF32, 1, 70, 2, 16}, many{DType::kF32, 1, 70, 2, 16};
  q.fill_uniform(4);
  k.fill_uniform(5);
  v.fill_uniform(6);
  AttentionParams p;
  p.causal = true;
  p.num_threads = 1;
  ASSERT_TRUE(attention(q.view(), k.view(), v.view(), one.view(), nullptr, p).ok());
  p.num_threads = max_threads();
  ASSERT_TRUE(attention(q.view(), k.view(), v.view(), many.view(), nullptr, p).ok());
  const std::vector<float> a = one.to_dense(), b = many.to_dense();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], b[i]) << "element " << i;
}

}  // namespace
}  // namespace attnkit
