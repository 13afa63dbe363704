// Aaren, Titans, Infini-attention and Based against their double references.
#include <gtest/gtest.h>

#include "attnkit/attention.h"
#include "linear_test_util.h"

namespace attnkit {
namespace {

using lintest::Buf;

// Aaren: the scan, the sequential RNN and a continued state all equal exact causal softmax
// attention whose query is the same learned vector at every position.
TEST(Aaren, EqualsSoftmaxAttentionWithTheSameQuery) {
  const int64_t B = 2, T = 300, H = 2, d = 24, dv = 10;
  Buf k, v;
  k.make(B, T, H, d);
  v.make(B, T, H, dv);
  lintest::fill_normal(k.data, 1, 2.0);  // large scores: exercises the max rescaling
  lintest::fill_normal(v.data, 2);
  std::vector<float> query(static_cast<size_t>(H * d));
  lintest::fill_normal(query, 3, 2.0);
  for (bool sequential : {false, true}) {
    AarenParams p;
    p.sequential = sequential;
    p.scan_block = 64;
    std::vector<float> out(static_cast<size_t>(B * T * H * dv));
    ASSERT_TRUE(aaren_attention(query.data(), k.view, v.view, TensorView::contiguous(out.data(), DType::kF32, B, T, H, dv), p).ok());
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        std::vector<double> qd, kd, vd;
        for (int64_t t = 0; t < T; ++t) {
          for (int64_t i = 0; i < d; ++i) {
            qd.push_back(query[h * d + i]);
            kd.push_back(k.view.get(b, t, h, i));
          }
          for (int64_t j = 0; j < dv; ++j) vd.push_back(v.view.get(b, t, h, j));
        }
        const std::vector<double> ex = reference::softmax_attention_ref(qd, kd, vd, T, T, d, dv, 1.0 / std::sqrt(24.0), true);
        double err = 0, mx = 0;
        for (int64_t t = 0; t < T; ++t)
          for (int64_t j = 0; j < dv; ++j) {
            err = std::max(err, std::abs(out[((b * T + t) * H + h) * dv + j] - ex[t * dv + j]));
            mx = std::max(mx, std::abs(ex[t * dv + j]));
          }
        EXPECT_LT(err, 1e-5 * (1 + mx)) << "sequential " << sequential;
      }
  }
}

TEST(Aaren, StateContinuationAndVarlen) {
  const int64_t T = 200, H = 3, d = 16, dv = 8;
  Buf k, v;
  k.make(1, T, H, d);
  v.make(1, T, H, dv);
  lintest::fill_normal(k.data, 4);
  lintest::fill_normal(v.data, 5);
  std::vector<float> query(static_cast<size_t>(H * d));
  lintest::fill_normal(query, 6);
  std::vector<double> ref;
  reference::aaren_ref(query.data(), k.view, v.view, 0.25, &ref);
  // Prefill 150 by scan, then 50 one-token steps through the O(1) state.
  std::vector<float> out(static_cast<size_t>(T * H * dv)), st(static_cast<size_t>(H * (2 + dv)));
  auto slice = [](const TensorView& t, int64_t s0, int64_t n) {
    TensorView r = t;
    r.data = static_cast<float*>(t.data) + s0 * t.stride[1];
    r.shape[1] = n;
    return r;
  };
  const TensorView ov = TensorView::contiguous(out.data(), DType::kF32, 1, T, H, dv);
  AarenParams p;
  p.scan_block = 32;
  p.maybe_final_state = st.data();
  ASSERT_TRUE(aaren_attention(query.data(), slice(k.view, 0, 150), slice(v.view, 0, 150), slice(ov, 0, 150), p).ok());
  for (int64_t t = 150; t < T; ++t) {
    AarenParams ps;
    ps.maybe_initial_state = st.data();
    ps.maybe_final_state = st.data();
    ASSERT_TRUE(aaren_attention(query.data(), slice(k.view, t, 1), slice(v.view, t, 1), slice(ov, t, 1), ps).ok());
  }
  EXPECT_LT(lintest::compare(out, ref).rel, 1e-5);
  // Varlen: lengths 1, 15, 184 packed; each sequence restarts from an empty state.
  const std::vector<int32_t> cu = {0, 1, 16, 200};
  AarenParams pv;
  pv.maybe_cu_seqlens = cu.data();
  pv.n_seqs = 3;
  pv.scan_block = 16;
  std::vector<float> outv(out.size());
  ASSERT_TRUE(aaren_attention(query.data(), k.view, v.view, TensorView::contiguous(outv.data(), DType::kF32, 1, T, H, dv), pv).ok());
  for (size_t s = 0; s + 1 < cu.size(); ++s) {
    const int64_t n = cu[s + 1] - cu[s];
    std::vector<double> r;
    reference::aaren_ref(query.data(), slice(k.view, cu[s], n), slice(v.view, cu[s], n), 0.25, &r);
    std::vector<float> got(outv.begin() + cu[s] * H * dv, outv.begin() + cu[s + 1] * H * dv);
    EXPECT_LT(lintest::compare(got, r).rel, 1e-5) << "sequence " << s;
  }
}

class TitansTest : public ::testing::TestWithParam<std::tuple<bool, int64_t>> {};

TEST_P(TitansTest, MatchesReferenceChunkRule) {
  const auto [mlp, chunk] = GetParam();
  const int64_t B = 1, T = 70, H = 2, d = 12, dv = 12;
  Buf q, k, v, eta;
  q.make(B, T, H, d);
  k.make(B, T, H, d);
  v.make(B, T, H, dv);
  eta.make(B, T, H, 1);
  lintest::fill_normal(q.data, 1, 0.5);
  lintest::fill_normal(k.data, 2, 0.5);
  lintest::fill_normal(v.data, 3, 0.5);
  for (size_t i = 0; i < eta.data.size(); ++i) eta.data[i] = 0.5f + 0.1f * static_cast<float>(i % 3);  // momentum < 1 keeps the MLP memory stable
  TitansParams p;
  p.mlp = mlp;
  p.chunk_size = chunk;
  p.theta = 0.02f;
  p.eta_t = eta.view;
  const int64_t sf = titans_state_floats(p, d, dv);
  std::vector<float> st(static_cast<size_t>(B * H * sf));
  for (int64_t i = 0; i < B * H; ++i) titans_init_state(p, d, dv, 10 + i, st.data() + i * sf);
  const std::vector<float> st0 = st;
  std::vector<float> out(static_cast<size_t>(B * T * H * dv));
  ASSERT_TRUE(titans_memory(q.view, k.view, v.view, TensorView::contiguous(out.data(), DType::kF32, B, T, H, dv), p, st.data()).ok());
  std::vector<double> ref, ref_state;
  reference::titans_ref(q.view, k.view, v.view, p, st0.data(), &ref, &ref_state);
  const lintest::Err e = lintest::compare(out, ref);
  EXPECT_FALSE(e.nan);
  EXPECT_LT(e.rel, 1e-4);
  EXPECT_LT(lintest::compare(st, ref_state).rel, 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Linear, TitansTest,
                         ::testing::Combine(::testing::Bool(), ::testing::Values<int64_t>(1, 16)));

// The memory learns: after many passes over the same (k, v) pairs the retrieval error shrinks.
TEST(Titans, MemoryLearnsAssociations) {
  const int64_t T = 8, d = 16, dv = 16, reps = 60;
  Buf k, v, q;
  k.make(1, T * reps, 1, d);
  v.make(1, T * reps, 1, dv);
  q.make(1, T * reps, 1, d);
  std::vector<float> kk(T * d), vv(T * dv);
  lintest::fill_normal(kk, 1, 0.25);
  lintest::fill_normal(vv, 2);
  for (int64_t r = 0; r < reps; ++r) {
    std::copy(kk.begin(), kk.end(), k.data.begin() + r * T * d);
    std::copy(kk.begin(), kk.end(), q.data.begin() + r * T * d);
    std::copy(vv.begin(), vv.end(), v.data.begin() + r * T * dv);
  }
  TitansParams p;
  p.alpha = 0.0f;
  p.eta = 0.5f;
  p.theta = 0.2f;
  p.chunk_size = 4;
  std::vector<float> st(static_cast<size_t>(titans_state_floats(p, d, dv)), 0.0f);
  std::vector<float> out(static_cast<size_t>(T * reps * dv));
  ASSERT_TRUE(titans_memory(q.view, k.view, v.view, TensorView::contiguous(out.data(), DType::kF32, 1, T * reps, 1, dv), p, st.data()).ok());
  auto err_of_rep = [&](int64_t r) {
    double e = 0;
    for (int64_t i = 0; i < T * dv; ++i) e += std::pow(out[r * T * dv + i] - vv[i], 2);
    return e;
  };
  EXPECT_LT(err_of_rep(reps - 1), 0.05 * err_of_rep(0));
}

TEST(Infini, MatchesReferenceAndStreams) {
  const int64_t T = 100, H = 2, d = 16, dv = 8;
  Buf q, k, v;
  q.make(1, T, H, d);
  k.make(1, T, H, d);
  v.make(1, T, H, dv);
  lintest::fill_normal(q.data, 1);
  lintest::fill_normal(k.data, 2);
  lintest::fill_normal(v.data, 3);
  const std::vector<float> gates = {-0.5f, 1.0f};
  for (bool delta : {false, true}) {
    InfiniParams p;
    p.segment_len = 32;
    p.maybe_gate_logits = gates.data();
    p.delta_update = delta;
    std::vector<double> ref;
    reference::infini_ref(q.view, k.view, v.view, p, &ref);
    // One call.
    std::vector<float> out(static_cast<size_t>(T * H * dv));
    InfiniState st;
    ASSERT_TRUE(infini_attention(q.view, k.view, v.view, TensorView::contiguous(out.data(), DType::kF32, 1, T, H, dv), p, &st).ok());
    EXPECT_LT(lintest::compare(out, ref).rel, 1e-5) << "delta " << delta;
    EXPECT_EQ(st.filled, T % 32);
    // Split at 45 (mid-segment) and continued token by token.
    std::vector<float> out2(out.size());
    const TensorView ov = TensorView::contiguous(out2.data(), DType::kF32, 1, T, H, dv);
    auto slice = [](const TensorView& t, int64_t s0, int64_t n) {
      TensorView r = t;
      r.data = static_cast<float*>(t.data) + s0 * t.stride[1];
      r.shape[1] = n;
      return r;
    };
    InfiniState st2;
    ASSERT_TRUE(infini_attention(slice(q.view, 0, 45), slice(k.view, 0, 45), slice(v.view, 0, 45), slice(ov, 0, 45), p, &st2).ok());
    for (int64_t t = 45; t < T; ++t)
      ASSERT_TRUE(infini_attention(slice(q.view, t, 1), slice(k.view, t, 1), slice(v.view, t, 1), slice(ov, t, 1), p, &st2).ok());
    EXPECT_LT(lintest::compare(out2, ref).rel, 1e-5) << "streamed, delta " << delta;
  }
}

// Based: Taylor-2 linear part (double reference) mixed with the exact sliding window (double softmax).
TEST(Based, MatchesTaylorPlusWindowReference) {
  const int64_t T = 150, H = 2, d = 8, dv = 16, window = 64;
  Buf q, k, v;
  q.make(1, T, H, d);
  k.make(1, T, H, d);
  v.make(1, T, H, dv);
  lintest::fill_normal(q.data, 1);
  lintest::fill_normal(k.data, 2);
  lintest::fill_normal(v.data, 3);
  BasedParams bp;
  bp.window = window;
  bp.mix = 0.3f;
  std::vector<float> out(static_cast<size_t>(T * H * dv));
  const Status s = based_attention(q.view, k.view, v.view, TensorView::contiguous(out.data(), DType::kF32, 1, T, H, dv), bp);
  ASSERT_TRUE(s.ok()) << s.message();
  LinearAttentionParams lp;
  lp.feature_map = FeatureMap::kTaylor2;
  lp.norm = LinearNorm::kDenominator;
  std::vector<double> lin;
  ASSERT_TRUE(reference::linear_attention_ref(q.view, k.view, v.view, lp, &lin).ok());
  std::vector<double> ref(lin.size());
  for (int64_t h = 0; h < H; ++h) {
    std::vector<double> qd, kd, vd;
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t i = 0; i < d; ++i) {
        qd.push_back(q.view.get(0, t, h, i));
        kd.push_back(k.view.get(0, t, h, i));
      }
      for (int64_t j = 0; j < dv; ++j) vd.push_back(v.view.get(0, t, h, j));
    }
    const std::vector<double> w = reference::softmax_attention_ref(qd, kd, vd, T, T, d, dv, 1 / std::sqrt(8.0), true, window - 1);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < dv; ++j) {
        const size_t i = static_cast<size_t>((t * H + h) * dv + j);
        ref[i] = 0.3 * w[t * dv + j] + 0.7 * lin[i];
      }
  }
  EXPECT_LT(lintest::compare(out, ref).rel, 1e-4);
}

}  // namespace
}  // namespace attnkit

namespace attnkit {
namespace {

// Aaren against the core exact kernel: attnkit::attention (causal) with the learned query
// broadcast to every position (q stride 0 along seq) gives the same outputs.
TEST(Aaren, EqualsCoreExactAttentionWithBroadcastQuery) {
  const int64_t T = 257, H = 2, d = 32, dv = 16;
  lintest::Buf k, v;
  k.make(1, T, H, d);
  v.make(1, T, H, dv);
  lintest::fill_normal(k.data, 8);
  lintest::fill_normal(v.data, 9);
  std::vector<float> query(static_cast<size_t>(H * d));
  lintest::fill_normal(query, 10);
  TensorView qv = TensorView::contiguous(query.data(), DType::kF32, 1, T, H, d);
  qv.stride = {0, 0, d, 1};  // the same query row at every position
  std::vector<float> exact(static_cast<size_t>(T * H * dv)), aar(exact.size());
  AttentionParams ap;
  ap.causal = true;
  const Status s = attention(qv, k.view, v.view, TensorView::contiguous(exact.data(), DType::kF32, 1, T, H, dv), nullptr, ap);
  ASSERT_TRUE(s.ok()) << s.message();
  AarenParams p;
  p.scan_block = 50;
  ASSERT_TRUE(aaren_attention(query.data(), k.view, v.view, TensorView::contiguous(aar.data(), DType::kF32, 1, T, H, dv), p).ok());
  EXPECT_LT(lintest::compare_f(aar, exact).rel, 1e-5);
}

}  // namespace
}  // namespace attnkit

namespace attnkit {
namespace {

// Based streaming: prefill(N) == prefill(N1) with a state + single-token steps (window and
// Taylor parts both continue), including a first prefill shorter than the window.
TEST(Based, PrefillThenDecodeMatchesOneShot) {
  const int64_t T = 120, H = 2, d = 8, dv = 12;
  lintest::Buf q, k, v;
  q.make(1, T, H, d);
  k.make(1, T, H, d);
  v.make(1, T, H, dv);
  lintest::fill_normal(q.data, 11);
  lintest::fill_normal(k.data, 12);
  lintest::fill_normal(v.data, 13);
  BasedParams bp;
  bp.window = 16;
  std::vector<float> full(static_cast<size_t>(T * H * dv));
  ASSERT_TRUE(based_attention(q.view, k.view, v.view, TensorView::contiguous(full.data(), DType::kF32, 1, T, H, dv), bp).ok());
  auto slice = [](const TensorView& t, int64_t s0, int64_t n) {
    TensorView r = t;
    r.data = static_cast<float*>(t.data) + s0 * t.stride[1];
    r.shape[1] = n;
    return r;
  };
  for (int64_t n1 : {5, 70}) {
    std::vector<float> part(full.size());
    const TensorView pv = TensorView::contiguous(part.data(), DType::kF32, 1, T, H, dv);
    BasedState st;
    ASSERT_TRUE(based_attention(slice(q.view, 0, n1), slice(k.view, 0, n1), slice(v.view, 0, n1), slice(pv, 0, n1), bp, &st).ok());
    for (int64_t t = n1; t < T; ++t) {
      const Status s = based_attention(slice(q.view, t, 1), slice(k.view, t, 1), slice(v.view, t, 1), slice(pv, t, 1), bp, &st);
      ASSERT_TRUE(s.ok()) << s.message();
    }
    EXPECT_EQ(st.n_recent, bp.window - 1);
    EXPECT_LT(lintest::compare_f(part, full).rel, 1e-5) << "n1 " << n1;
  }
}

}  // namespace
}  // namespace attnkit

namespace attnkit {
namespace {

TEST(LinearModelsValidation, BadInputsNameTheParameter) {
  lintest::Buf q, k, v, o;
  q.make(1, 8, 2, 4);
  k.make(1, 8, 2, 4);
  v.make(1, 8, 2, 4);
  o.make(1, 8, 2, 4);
  Status s = aaren_attention(nullptr, k.view, v.view, o.view, AarenParams());
  EXPECT_NE(s.message().find("query"), std::string::npos) << s.message();
  AarenParams ap;
  ap.scan_block = 0;
  std::vector<float> query(8, 0.0f);
  s = aaren_attention(query.data(), k.view, v.view, o.view, ap);
  EXPECT_NE(s.message().find("scan_block 0"), std::string::npos) << s.message();
  TitansParams tp;
  tp.chunk_size = 0;
  std::vector<float> st(static_cast<size_t>(2 * titans_state_floats(tp, 4, 4)));
  s = titans_memory(q.view, k.view, v.view, o.view, tp, st.data());
  EXPECT_NE(s.message().find("chunk_size 0"), std::string::npos) << s.message();
  InfiniParams ip;
  ip.segment_len = 0;
  InfiniState ist;
  s = infini_attention(q.view, k.view, v.view, o.view, ip, &ist);
  EXPECT_NE(s.message().find("segment_len 0"), std::string::npos) << s.message();
  BasedParams bp;
  bp.window = 0;
  s = based_attention(q.view, k.view, v.view, o.view, bp);
  EXPECT_NE(s.message().find("window 0"), std::string::npos) << s.message();
  bp.window = 4;
  bp.mix = 1.5f;
  s = based_attention(q.view, k.view, v.view, o.view, bp);
  EXPECT_NE(s.message().find("mix"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace attnkit
