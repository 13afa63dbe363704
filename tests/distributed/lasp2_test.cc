// LASP-2 against the single-process chunked form, for every configuration of the linear engine:
// each rank's rows and the final state must pass the shared tolerance policy against the double
// reference, with the single-process chunked result as the yardstick (delta-rule configurations
// included: their chunk transitions are gathered too).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "attnkit/distributed.h"
#include "dist_test_util.h"
#include "linear/linear_test_util.h"
#include "reference/linear_ref.h"
#include "testing/tolerance.h"

namespace attnkit {
namespace {

using dist::internal::seq_slice;

TensorView maybe_slice(const TensorView& t, int64_t begin, int64_t len) {
  return t.data ? seq_slice(t, begin, len) : t;
}

struct Lasp2Case {
  std::string config;
  int64_t head_dim_v = 16;
};

class Lasp2Test : public ::testing::TestWithParam<Lasp2Case> {};

TEST_P(Lasp2Test, MatchesSingleProcessChunkedForm) {
  const std::string name = GetParam().config;
  const int rank = disttest::world_rank(), ranks = disttest::world_size();
  lintest::Case c;
  const int64_t B = 2, T = 150, H = 2, d = 16, dv = GetParam().head_dim_v;
  lintest::build_case(&c, name, B, T, H, d, dv, /*seed=*/3);
  LinearAttentionParams p = c.p;
  p.form = LinearForm::kChunked;
  p.chunk_size = 16;
  p.num_threads = 1;
  int64_t state_floats = 0;
  ASSERT_TRUE(linear_state_floats(p, d, dv, &state_floats).ok());
  // An initial state exercises the prefix that starts before rank 0.
  std::vector<float> init(static_cast<size_t>(B * H * state_floats));
  lintest::fill_normal(init, 99, 0.1);
  if (p.norm == LinearNorm::kNone) p.maybe_initial_state = init.data();

  std::vector<float> full(static_cast<size_t>(B * T * H * dv)), full_state(init.size());
  LinearAttentionParams single = p;
  single.maybe_final_state = full_state.data();
  ASSERT_TRUE(linear_attention(c.q.view, c.k.view, c.v.view, TensorView::contiguous(full.data(), DType::kF32, B, T, H, dv),
                               single).ok());

  const dist::Segment blk = dist::block_segments(T, ranks, rank, dist::BlockLayout::kContiguous)[0];
  dist::Lasp2Params lp;
  lp.linear = p;
  lp.linear.gate = maybe_slice(p.gate, blk.start, blk.len);
  lp.linear.beta = maybe_slice(p.beta, blk.start, blk.len);
  std::vector<float> out(static_cast<size_t>(B * blk.len * H * dv)), state(init.size(), -1.0f);
  lp.linear.maybe_final_state = state.data();
  dist::CommStats stats;
  const Status st = dist::lasp2_linear_attention(
      seq_slice(c.q.view, blk.start, blk.len), seq_slice(c.k.view, blk.start, blk.len),
      seq_slice(c.v.view, blk.start, blk.len), TensorView::contiguous(out.data(), DType::kF32, B, blk.len, H, dv), lp,
      &stats);
  ASSERT_TRUE(st.ok()) << st.message();

  std::vector<double> ref, ref_state;
  std::vector<double> init_d(init.begin(), init.end());
  ASSERT_TRUE(reference::linear_attention_ref(c.q.view, c.k.view, c.v.view, p, &ref, &ref_state,
                                              p.maybe_initial_state ? &init_d : nullptr).ok());
  const std::vector<dist::Segment> rows = {blk};
  const auto co = testing::check_close(disttest::rows_of(ref, B, T, H, dv, rows), out,
                                       disttest::rows_of(full, B, T, H, dv, rows), DType::kF32, "lasp2 out");
  EXPECT_TRUE(co.ok) << name << " rank " << rank << ": " << co.message;
  const auto cs = testing::check_close(ref_state, state, full_state, DType::kF32, "lasp2 final state");
  EXPECT_TRUE(cs.ok) << name << " rank " << rank << ": " << cs.message;
  const int64_t decay_floats = p.update == UpdateRule::kDelta ? B * H * d * d
                               : B * H * (p.decay == DecayKind::kVectorGate ? d : 1);
  if (ranks > 1)
    EXPECT_EQ(stats.bytes_sent, (ranks - 1) * static_cast<int64_t>(sizeof(float)) * (B * H * state_floats + decay_floats));
}

std::vector<Lasp2Case> lasp2_cases() {
  std::vector<Lasp2Case> out;
  for (const std::string& name : lintest::engine_configs()) out.push_back({name, 16});
  // Value columns fewer than features: the delta rule's transition takes several passes (16 = 6 + 6 + 4).
  out.push_back({"deltanet", 6});
  out.push_back({"gated_deltanet", 6});
  return out;
}

INSTANTIATE_TEST_SUITE_P(Configs, Lasp2Test, ::testing::ValuesIn(lasp2_cases()),
                         [](const ::testing::TestParamInfo<Lasp2Case>& i) {
                           return i.param.config + "_dv" + std::to_string(i.param.head_dim_v);
                         });

}  // namespace
}  // namespace attnkit
