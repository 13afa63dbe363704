// Every bad call returns a failed Status whose message names the parameter and its value, and
// writes nothing: out and lse keep their canary bytes (guards, gaps and the view itself).
#include <gtest/gtest.h>

#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "attnkit/attention.h"
#include "testing/tensor_buffer.h"

namespace attnkit {
namespace {

using testing::TestTensor;

// A valid call (batch 2, Sq 10, Sk 12, heads 4 / 2, d 16) that each case breaks in one way.
struct Call {
  TestTensor q{DType::kF32, 2, 10, 4, 16}, k{DType::kF32, 2, 12, 2, 16}, v{DType::kF32, 2, 12, 2, 16};
  TestTensor out{DType::kF32, 2, 10, 4, 16, testing::Layout::kPaddedRows};
  TestTensor lse{DType::kF32, 1, 1, 1, 2 * 4 * 10};
  TensorView qv, kv, vv, ov;
  float* maybe_lse;
  AttentionParams p;
  Call() {
    q.fill_uniform(1);
    k.fill_uniform(2);
    v.fill_uniform(3);
    qv = q.view();
    kv = k.view();
    vv = v.view();
    ov = out.view();
    maybe_lse = static_cast<float*>(lse.view().data);
  }
};

// Packed varlen variant: batch 1, 10 query rows and 12 key rows in 3 sequences.
struct VarlenCall : Call {
  TestTensor q1{DType::kF32, 1, 10, 4, 16}, k1{DType::kF32, 1, 12, 2, 16}, v1{DType::kF32, 1, 12, 2, 16};
  TestTensor out1{DType::kF32, 1, 10, 4, 16};
  std::vector<int32_t> cu_q{0, 3, 7, 10}, cu_k{0, 5, 6, 12};
  VarlenCall() {
    q1.fill_uniform(4);
    k1.fill_uniform(5);
    v1.fill_uniform(6);
    qv = q1.view();
    kv = k1.view();
    vv = v1.view();
    ov = out1.view();
    p.maybe_cu_seqlens_q = cu_q.data();
    p.maybe_cu_seqlens_k = cu_k.data();
    p.n_seqs = 3;
  }
};

struct BadCase {
  std::string what;
  std::function<void(VarlenCall*)> edit;  // VarlenCall for varlen cases, else only the Call part
  std::vector<std::string> must_mention;  // parameter name and value
  bool varlen = false;
};

std::vector<BadCase> bad_cases() {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::vector<BadCase> b = {
      {"k batch mismatch", [](VarlenCall* c) { c->kv.shape[0] = 1; }, {"batch mismatch", "k.shape [1, 12, 2, 16]"}},
      {"v seq mismatch", [](VarlenCall* c) { c->vv.shape[1] = 11; }, {"v.shape", "11"}},
      {"out head_dim mismatch", [](VarlenCall* c) { c->ov.shape[3] = 15; }, {"out.shape", "15"}},
      {"out seq mismatch", [](VarlenCall* c) { c->ov.shape[1] = 9; }, {"out.shape", "9"}},
      {"k head_dim mismatch", [](VarlenCall* c) { c->kv.shape[3] = 8; }, {"head_dim", "8"}},
      {"heads_q % heads_kv", [](VarlenCall* c) { c->kv.shape[2] = c->vv.shape[2] = 3; }, {"heads_q 4", "heads_kv 3"}},
      {"heads_kv 0", [](VarlenCall* c) { c->kv.shape[2] = c->vv.shape[2] = 0; }, {"heads_kv 0"}},
      {"head_dim 0", [](VarlenCall* c) { c->qv.shape[3] = c->kv.shape[3] = 0; }, {"head_dim 0"}},
      {"head_dim 513", [](VarlenCall* c) { c->qv.shape[3] = c->kv.shape[3] = 513; }, {"head_dim 513"}},
      {"head_dim_v 0", [](VarlenCall* c) { c->vv.shape[3] = c->ov.shape[3] = 0; }, {"head_dim_v 0"}},
      {"head_dim_v 600", [](VarlenCall* c) { c->vv.shape[3] = c->ov.shape[3] = 600; }, {"head_dim_v 600"}},
      {"null q", [](VarlenCall* c) { c->qv.data = nullptr; }, {"q.data", "null"}},
      {"null k", [](VarlenCall* c) { c->kv.data = nullptr; }, {"k.data", "null"}},
      {"null v", [](VarlenCall* c) { c->vv.data = nullptr; }, {"v.data", "null"}},
      {"null out", [](VarlenCall* c) { c->ov.data = nullptr; }, {"out.data", "null"}},
      {"dtype mismatch", [](VarlenCall* c) { c->kv.dtype = DType::kF16; }, {"dtype mismatch", "k is f16"}},
      {"unknown dtype", [](VarlenCall* c) { c->qv.dtype = static_cast<DType>(7); }, {"q.dtype 7"}},
      {"unknown out dtype", [](VarlenCall* c) { c->ov.dtype = static_cast<DType>(9); }, {"out.dtype 9"}},
      {"window_right > 0 with causal", [](VarlenCall* c) { c->p.causal = true; c->p.window_right = 1; },
       {"window_right 1", "causal"}},
      {"window_left -2", [](VarlenCall* c) { c->p.window_left = -2; }, {"window_left -2"}},
      {"window_right -5", [](VarlenCall* c) { c->p.window_right = -5; }, {"window_right -5"}},
      {"n_sink_tokens -1", [](VarlenCall* c) { c->p.n_sink_tokens = -1; }, {"n_sink_tokens -1"}},
      {"NaN scale", [nan](VarlenCall* c) { c->p.scale = nan; }, {"scale", "nan"}},
      {"infinite scale", [inf](VarlenCall* c) { c->p.scale = inf; }, {"scale", "inf"}},
      {"negative softcap", [](VarlenCall* c) { c->p.softcap = -2.0f; }, {"softcap", "-2"}},
      {"negative ssmax_s", [](VarlenCall* c) { c->p.ssmax_s = -1.0f; }, {"ssmax_s", "-1"}},
      {"NaN sigmoid_bias", [nan](VarlenCall* c) { c->p.normalization = Normalization::kSigmoid; c->maybe_lse = nullptr;
         c->p.sigmoid_bias = nan; }, {"sigmoid_bias", "nan"}},
      {"boolean mask with null data", [](VarlenCall* c) { c->p.mask.kind = MaskKind::kBoolean; }, {"mask", "null"}},
      {"additive mask with null data", [](VarlenCall* c) { c->p.mask.kind = MaskKind::kAdditive; }, {"mask", "null"}},
      {"lse with sigmoid", [](VarlenCall* c) { c->p.normalization = Normalization::kSigmoid; }, {"lse", "sigmoid"}},
      {"lse with relu", [](VarlenCall* c) { c->p.normalization = Normalization::kRelu; }, {"lse", "relu"}},
      {"num_threads -1", [](VarlenCall* c) { c->p.num_threads = -1; }, {"num_threads -1"}},
      // libgomp aborts or crashes when asked for this many threads; the cap refuses it first.
      {"num_threads 100000", [](VarlenCall* c) { c->p.num_threads = 100000; }, {"num_threads 100000", "expected 0"}},
  };
  const std::vector<BadCase> varlen = {
      {"cu_seqlens_q not monotonic", [](VarlenCall* c) { c->cu_q = {0, 6, 4, 10}; c->p.maybe_cu_seqlens_q = c->cu_q.data(); },
       {"cu_seqlens_q", "4"}, true},
      {"cu_seqlens_k not monotonic", [](VarlenCall* c) { c->cu_k = {0, 5, 3, 12}; c->p.maybe_cu_seqlens_k = c->cu_k.data(); },
       {"cu_seqlens_k", "3"}, true},
      {"cu_seqlens_k beyond the keys", [](VarlenCall* c) { c->cu_k = {0, 5, 6, 99}; c->p.maybe_cu_seqlens_k = c->cu_k.data(); },
       {"cu_seqlens_k", "99"}, true},
      {"cu_seqlens_q negative start", [](VarlenCall* c) { c->cu_q = {-1, 3, 7, 10}; c->p.maybe_cu_seqlens_q = c->cu_q.data(); },
       {"cu_seqlens_q", "-1"}, true},
      {"only cu_seqlens_q", [](VarlenCall* c) { c->p.maybe_cu_seqlens_k = nullptr; }, {"cu_seqlens"}, true},
      {"n_seqs 0", [](VarlenCall* c) { c->p.n_seqs = 0; }, {"n_seqs 0"}, true},
      // Rows 9 (and 0) would belong to no sequence: their output would never be written.
      {"cu_seqlens_q short of the packed rows", [](VarlenCall* c) { c->cu_q = {0, 3, 7, 9}; c->p.maybe_cu_seqlens_q = c->cu_q.data(); },
       {"cu_seqlens_q[3] = 9", "10"}, true},
      {"cu_seqlens_q starting after row 0", [](VarlenCall* c) { c->cu_q = {1, 3, 7, 10}; c->p.maybe_cu_seqlens_q = c->cu_q.data(); },
       {"cu_seqlens_q[0] = 1"}, true},
  };
  b.insert(b.end(), varlen.begin(), varlen.end());
  return b;
}

TEST(AttentionErrors, EveryBadCallFailsNamingParameterAndValueAndWritesNothing) {
  for (const BadCase& bc : bad_cases()) {
    VarlenCall c;
    if (!bc.varlen) {
      c.qv = c.q.view();
      c.kv = c.k.view();
      c.vv = c.v.view();
      c.ov = c.out.view();
      c.p = AttentionParams();
    }
    bc.edit(&c);
    const Status check = validate_attention(c.qv, c.kv, c.vv, c.ov, c.maybe_lse, c.p);
    const Status st = attention(c.qv, c.kv, c.vv, c.ov, c.maybe_lse, c.p);
    EXPECT_FALSE(check.ok()) << bc.what;
    ASSERT_FALSE(st.ok()) << bc.what;
    EXPECT_EQ(st.message(), check.message()) << bc.what;
    for (const std::string& s : bc.must_mention) {
      EXPECT_NE(st.message().find(s), std::string::npos) << bc.what << ": message \"" << st.message()
                                                          << "\" does not mention \"" << s << "\"";
    }
    EXPECT_TRUE(c.out.untouched()) << bc.what << ": out written on a failed call";
    EXPECT_TRUE(c.out1.untouched()) << bc.what << ": out written on a failed call";
    EXPECT_TRUE(c.lse.untouched()) << bc.what << ": lse written on a failed call";
  }
}

TEST(AttentionErrors, ValidCallsPass) {
  Call c;
  EXPECT_TRUE(validate_attention(c.qv, c.kv, c.vv, c.ov, c.maybe_lse, c.p).ok());
  VarlenCall v;
  const Status st = attention(v.qv, v.kv, v.vv, v.ov, v.maybe_lse, v.p);
  EXPECT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(v.out1.check_canary(), "");
  EXPECT_EQ(v.lse.check_canary(), "");
}

TEST(MergeStatesErrors, BadCallsFail) {
  TestTensor a(DType::kF32, 1, 3, 2, 8), b(DType::kF32, 1, 3, 2, 8), o(DType::kF32, 1, 3, 2, 8),
      wrong(DType::kF32, 1, 4, 2, 8);
  std::vector<float> la(6, 0.0f), lb(6, 0.0f), lo(6, 0.0f);
  EXPECT_FALSE(merge_states(a.view(), la.data(), wrong.view(), lb.data(), o.view(), lo.data()).ok());
  EXPECT_FALSE(merge_states(a.view(), nullptr, b.view(), lb.data(), o.view(), lo.data()).ok());
  TensorView null_o = o.view();
  null_o.data = nullptr;
  EXPECT_FALSE(merge_states(a.view(), la.data(), b.view(), lb.data(), null_o, lo.data()).ok());
  EXPECT_TRUE(o.untouched());
}

}  // namespace
}  // namespace attnkit
