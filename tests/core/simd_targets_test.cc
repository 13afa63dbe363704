// The same build must be correct on machines without AVX-512 or AVX2: run a few cases of every
// mask and hook family on each SIMD target Highway compiled and this CPU supports (AVX3, AVX2,
// SSE4, ..., and the scalar/EMU128 fallback), against the double reference.
#include <gtest/gtest.h>
#include <hwy/targets.h>

#include <cmath>
#include <cstdio>
#include <tuple>
#include <string>
#include <vector>

#include "attnkit/attention.h"
#include "core/bf16_dot.h"
#include "testing/attn_case.h"
#include "testing/check_attention.h"

namespace attnkit {
namespace {

std::vector<testing::AttnCase> target_cases() {
  std::vector<testing::AttnCase> cs;
  testing::AttnCase c;
  c.seq_q = 70; c.seq_kv = 133; c.heads_q = 4; c.heads_kv = 2; c.head_dim = 40; c.head_dim_v = 40;
  c.causal = true;
  cs.push_back(c);  // prefill, GQA, tails in every dimension
  testing::AttnCase d = c;
  d.seq_q = 2; d.seq_kv = 700; d.path = ExecPath::kDecode; d.dtype = DType::kBF16; d.head_dim = d.head_dim_v = 128;
  cs.push_back(d);  // split-KV decode on bf16
  testing::AttnCase e = c;
  e.softcap = 5.0f; e.alibi = true; e.window_left = 17; e.window_right = 0; e.n_sink_tokens = 3; e.sink_logits = true;
  e.head_dim = e.head_dim_v = 17;
  cs.push_back(e);  // hooks and masks, odd head dim
  testing::AttnCase f = c;
  f.normalization = Normalization::kSigmoid; f.causal = false; f.dtype = DType::kF16;
  cs.push_back(f);  // non-softmax variant
  testing::AttnCase g = d;
  g.dtype = DType::kF32;
  g.int8_kv = true;
  cs.push_back(g);  // split-KV decode on int8 K/V
  testing::AttnCase h = c;
  h.int8_kv = true;
  h.softcap = 5.0f;
  cs.push_back(h);  // int8 K/V prefill, rows converted (odd head dim)
  return cs;
}

TEST(SimdTargets, EveryCompiledTargetMatchesReference) {
  const std::vector<int64_t> targets = hwy::SupportedAndGeneratedTargets();
  ASSERT_FALSE(targets.empty());
  std::vector<std::string> seen;
  for (int64_t t : targets) {
    hwy::SetSupportedTargetsForTest(t);
    hwy::GetChosenTarget().Update(hwy::SupportedTargets());
    const std::string name = simd_target_name();
    seen.push_back(name);
    EXPECT_EQ(name, hwy::TargetName(t));
    for (const auto& c : target_cases()) {
      auto d = testing::make_case_data(c);
      const Status st = attention(d->q.view(), d->k.view(), d->v.view(), d->out.view(), d->maybe_lse(), d->params);
      ASSERT_TRUE(st.ok()) << name << " " << c.name() << ": " << st.message();
      const testing::AttentionCheck r = testing::check_case(*d);
      EXPECT_TRUE(r.ok) << "target " << name << ": " << r.message;
    }
  }
  hwy::SetSupportedTargetsForTest(0);
  hwy::GetChosenTarget().Update(hwy::SupportedTargets());
  // At least the best target and one fallback were exercised on this machine.
  std::string all;
  for (const auto& n : seen) all += n + " ";
  ::testing::Test::RecordProperty("targets", all);
  std::printf("SIMD targets checked: %s\n", all.c_str());
  EXPECT_GE(seen.size(), 2u) << all;
}

// bf16 decode scores go through vdpbf16ps where the CPU has it (core/bf16_dot.h), else through
// K widened to f32. Both must match the reference, with one or several rows per kv head, and agree
// with each other to within the tolerance policy.
TEST(SimdTargets, Bf16DotProductPathMatchesWidenedPath) {
  // Without the instruction both runs would take the widened path and the comparison would be void.
  const bool before = core::set_bf16_dot_enabled(true);
  const bool available = core::bf16_dot_enabled();
  core::set_bf16_dot_enabled(before);
  if (!available) GTEST_SKIP() << "this CPU has no AVX512-BF16: only the widened path exists";
  for (auto [hq, hkv, sq, d] : {std::tuple<int64_t, int64_t, int64_t, int64_t>{32, 8, 1, 128}, {6, 3, 1, 64},
                                {8, 1, 1, 256}, {12, 12, 1, 96}, {4, 1, 2, 128}}) {
    testing::AttnCase c;
    c.seq_q = sq; c.seq_kv = 1300; c.heads_q = hq; c.heads_kv = hkv; c.head_dim = c.head_dim_v = d;
    c.causal = true; c.path = ExecPath::kDecode; c.dtype = DType::kBF16; c.num_threads = 2;
    std::vector<std::vector<float>> outs;
    for (bool dp : {true, false}) {
      const bool before = core::set_bf16_dot_enabled(dp);
      auto data = testing::make_case_data(c);
      const Status st = attention(data->q.view(), data->k.view(), data->v.view(), data->out.view(), data->maybe_lse(),
                                  data->params);
      core::set_bf16_dot_enabled(before);
      ASSERT_TRUE(st.ok()) << st.message();
      const testing::AttentionCheck r = testing::check_case(*data);
      EXPECT_TRUE(r.ok) << c.name() << (dp ? " dot-product path: " : " widened path: ") << r.message;
      outs.push_back(data->out.to_dense());
    }
    ASSERT_EQ(outs[0].size(), outs[1].size());
    float worst = 0.0f;
    for (size_t i = 0; i < outs[0].size(); ++i) worst = std::max(worst, std::fabs(outs[0][i] - outs[1][i]));
    // Outputs are bf16: the paths differ by rounding only (a few bf16 ulps of values below ~4).
    EXPECT_LT(worst, 0.05f) << c.name();
  }
  std::printf("bf16 dot-product instruction %s on this CPU\n",
              core::set_bf16_dot_enabled(true) ? "available" : "not available");
}

}  // namespace
}  // namespace attnkit
