// The linear engine against its double reference: every configuration in all three forms, with
// initial/final states, prefill + decode, variable length, head dims, chunk sizes and stability.
#include <gtest/gtest.h>

#include <cstdlib>

#include "linear_test_util.h"
#include "testing/tolerance.h"

namespace attnkit {
namespace {

using lintest::Case;
using lintest::Err;

// f32 against double for these short sums: the errors we see are ~1e-6 relative; 2e-4 leaves room
// for long chunked reductions while still failing on any algebra mistake (those are O(1)).
constexpr double kTol = 2e-4;

int64_t state_floats(const Case& c) {
  int64_t n = 0;
  EXPECT_TRUE(linear_state_floats(c.p, c.d, c.dv, &n).ok());
  return n;
}

// A realistic initial state: the final state of the same configuration on an unrelated prefix.
std::vector<float> warm_state(const std::string& name, int64_t batch, int64_t heads, int64_t d, int64_t dv) {
  Case w;
  lintest::build_case(&w, name, batch, 9, heads, d, dv, 991);
  std::vector<float> out(static_cast<size_t>(batch * 9 * heads * dv));
  std::vector<float> st(static_cast<size_t>(batch * heads * state_floats(w)));
  w.p.maybe_final_state = st.data();
  w.p.form = LinearForm::kRecurrent;
  EXPECT_TRUE(linear_attention(w.q.view, w.k.view, w.v.view,
                               TensorView::contiguous(out.data(), DType::kF32, batch, 9, heads, dv), w.p)
                  .ok());
  return st;
}

// A random initial state for B sequences x H heads (the denominator column kept positive).
std::vector<float> random_state(const Case& c, int64_t B, int64_t H, uint64_t seed) {
  std::vector<float> init(static_cast<size_t>(B * H * state_floats(c)));
  lintest::fill_normal(init, seed, 0.1);
  if (c.p.norm == LinearNorm::kDenominator)
    for (size_t i = c.dv; i < init.size(); i += c.dv + 1) init[i] = std::abs(init[i]) + 1.0f;
  return init;
}

bool ref_has_state(const std::string& name) { return name != "based_taylor" && name != "taylorshift"; }

struct FormCase {
  std::string config;
  LinearForm form;
};

class FormsVsReference : public ::testing::TestWithParam<FormCase> {};

TEST_P(FormsVsReference, OutputsAndFinalStateMatch) {
  const FormCase fc = GetParam();
  Case c;
  const int64_t B = 2, T = 77, H = 2, d = fc.config == "based_taylor" || fc.config == "taylorshift" ? 8 : 16, dv = 12;
  lintest::build_case(&c, fc.config, B, T, H, d, dv, 3);
  const int64_t sf = state_floats(c);
  std::vector<float> init;
  if (ref_has_state(fc.config)) {
    init = warm_state(fc.config, B, H, d, dv);
    c.p.maybe_initial_state = init.data();
  }
  std::vector<float> fin(static_cast<size_t>(B * H * sf), -7.0f);
  c.p.maybe_final_state = fin.data();
  c.p.form = fc.form;
  c.p.chunk_size = 16;
  std::vector<float> out(static_cast<size_t>(B * T * H * dv));
  const Status s = linear_attention(c.q.view, c.k.view, c.v.view,
                                    TensorView::contiguous(out.data(), DType::kF32, B, T, H, dv), c.p);
  ASSERT_TRUE(s.ok()) << s.message();
  std::vector<double> ref, ref_state;
  ASSERT_TRUE(reference::linear_attention_ref(c.q.view, c.k.view, c.v.view, c.p, &ref, &ref_state).ok());
  const Err e = lintest::compare(out, ref);
  EXPECT_FALSE(e.nan);
  EXPECT_LT(e.rel, kTol) << fc.config << " max_abs " << e.max_abs << " ref_max " << e.ref_max;
  if (fc.form != LinearForm::kRecurrent) {
    // The shared policy (tests/testing/tolerance.h): the chunked/parallel error may be a small
    // multiple of the error of the plain f32 implementation of the same math, which for this
    // engine is the token-by-token recurrence.
    LinearAttentionParams pr = c.p;
    pr.form = LinearForm::kRecurrent;
    pr.maybe_final_state = nullptr;
    std::vector<float> plain(out.size());
    ASSERT_TRUE(linear_attention(c.q.view, c.k.view, c.v.view,
                                 TensorView::contiguous(plain.data(), DType::kF32, B, T, H, dv), pr)
                    .ok());
    const testing::CheckResult cr = testing::check_close(ref, out, plain, DType::kF32, fc.config);
    EXPECT_TRUE(cr.ok) << cr.message;
  }
  if (ref_has_state(fc.config)) {
    const Err es = lintest::compare(fin, ref_state);
    EXPECT_FALSE(es.nan);
    EXPECT_LT(es.rel, kTol) << fc.config << " final state";
  }
}

std::vector<FormCase> all_form_cases() {
  std::vector<FormCase> v;
  for (const std::string& n : lintest::engine_configs())
    for (LinearForm f : {LinearForm::kParallel, LinearForm::kChunked, LinearForm::kRecurrent}) v.push_back({n, f});
  return v;
}

INSTANTIATE_TEST_SUITE_P(Linear, FormsVsReference, ::testing::ValuesIn(all_form_cases()),
                         [](const ::testing::TestParamInfo<FormCase>& i) {
                           const char* f = i.param.form == LinearForm::kParallel    ? "parallel"
                                           : i.param.form == LinearForm::kChunked   ? "chunked"
                                                                                    : "recurrent";
                           return i.param.config + "_" + f;
                         });

// prefill(N) == prefill(N1) followed by N - N1 single-token decode calls on the carried state.
class PrefillThenDecode : public ::testing::TestWithParam<std::string> {};

TEST_P(PrefillThenDecode, MatchesOneShotPrefill) {
  const std::string name = GetParam();
  const int64_t B = 1, T = 45, N1 = 29, H = 2, d = name == "based_taylor" || name == "taylorshift" ? 6 : 16, dv = 16;
  Case c;
  lintest::build_case(&c, name, B, T, H, d, dv, 11);
  const int64_t sf = state_floats(c);
  std::vector<float> full(static_cast<size_t>(B * T * H * dv)), st_full(static_cast<size_t>(B * H * sf));
  LinearAttentionParams p = c.p;
  p.form = LinearForm::kChunked;
  p.chunk_size = 32;
  p.maybe_final_state = st_full.data();
  ASSERT_TRUE(linear_attention(c.q.view, c.k.view, c.v.view,
                               TensorView::contiguous(full.data(), DType::kF32, B, T, H, dv), p)
                  .ok());
  // Prefill of the first N1 tokens: slice views along seq.
  auto slice = [&](const TensorView& t, int64_t s0, int64_t n) {
    TensorView r = t;
    if (t.data == nullptr) return r;
    r.data = static_cast<float*>(t.data) + s0 * t.stride[1];
    r.shape[1] = n;
    return r;
  };
  std::vector<float> part(static_cast<size_t>(B * T * H * dv));
  const TensorView part_v = TensorView::contiguous(part.data(), DType::kF32, B, T, H, dv);
  std::vector<float> st(static_cast<size_t>(B * H * sf));
  LinearAttentionParams p1 = c.p;
  p1.form = LinearForm::kChunked;
  p1.chunk_size = 16;
  p1.gate = slice(c.p.gate, 0, N1);
  p1.beta = slice(c.p.beta, 0, N1);
  p1.maybe_final_state = st.data();
  ASSERT_TRUE(linear_attention(slice(c.q.view, 0, N1), slice(c.k.view, 0, N1), slice(c.v.view, 0, N1),
                               slice(part_v, 0, N1), p1)
                  .ok());
  for (int64_t s = N1; s < T; ++s) {
    LinearAttentionParams ps = c.p;
    ps.form = LinearForm::kAuto;  // seq 1 -> recurrent
    ps.gate = slice(c.p.gate, s, 1);
    ps.beta = slice(c.p.beta, s, 1);
    const int64_t pos = s;
    ps.maybe_start_positions = &pos;
    ps.maybe_initial_state = st.data();
    ps.maybe_final_state = st.data();  // in place
    ASSERT_TRUE(linear_attention(slice(c.q.view, s, 1), slice(c.k.view, s, 1), slice(c.v.view, s, 1),
                                 slice(part_v, s, 1), ps)
                    .ok());
  }
  const Err e = lintest::compare_f(part, full);
  EXPECT_FALSE(e.nan);
  EXPECT_LT(e.rel, kTol) << name;
  const Err es = lintest::compare_f(st, st_full);
  EXPECT_LT(es.rel, kTol) << name << " state";
}

INSTANTIATE_TEST_SUITE_P(Linear, PrefillThenDecode, ::testing::ValuesIn(lintest::engine_configs()));

// State round trip: a run split in two calls at a chunk-unaligned point, passing the state through
// a plain float buffer, equals one call; and a zero initial state equals no initial state.
TEST(LinearState, RoundTripAndZeroInitialState) {
  for (const std::string name : {"gla", "gated_deltanet", "linear_elu"}) {
    Case c;
    lintest::build_case(&c, name, 1, 40, 2, 16, 16, 5);
    const int64_t sf = state_floats(c);
    std::vector<float> a(40 * 2 * 16), b(40 * 2 * 16), zero(static_cast<size_t>(2 * sf), 0.0f);
    LinearAttentionParams p = c.p;
    ASSERT_TRUE(linear_attention(c.q.view, c.k.view, c.v.view, TensorView::contiguous(a.data(), DType::kF32, 1, 40, 2, 16), p).ok());
    p.maybe_initial_state = zero.data();
    ASSERT_TRUE(linear_attention(c.q.view, c.k.view, c.v.view, TensorView::contiguous(b.data(), DType::kF32, 1, 40, 2, 16), p).ok());
    EXPECT_EQ(a, b) << name;
    // Split at token 23 (not a chunk boundary), state out to a buffer, back in for the rest.
    auto slice = [](const TensorView& t, int64_t s0, int64_t n) {
      TensorView r = t;
      if (t.data == nullptr) return r;
      r.data = static_cast<float*>(t.data) + s0 * t.stride[1];
      r.shape[1] = n;
      return r;
    };
    std::vector<float> split(a.size()), buf(static_cast<size_t>(2 * sf), 123.0f);
    const TensorView sv = TensorView::contiguous(split.data(), DType::kF32, 1, 40, 2, 16);
    LinearAttentionParams p1 = c.p, p2 = c.p;
    p1.chunk_size = p2.chunk_size = 16;
    p1.gate = slice(c.p.gate, 0, 23);
    p1.beta = slice(c.p.beta, 0, 23);
    p1.maybe_final_state = buf.data();
    ASSERT_TRUE(linear_attention(slice(c.q.view, 0, 23), slice(c.k.view, 0, 23), slice(c.v.view, 0, 23), slice(sv, 0, 23), p1).ok());
    const std::vector<float> saved = buf;  // the round trip goes through a plain copy
    p2.gate = slice(c.p.gate, 23, 17);
    p2.beta = slice(c.p.beta, 23, 17);
    p2.maybe_initial_state = saved.data();
    ASSERT_TRUE(linear_attention(slice(c.q.view, 23, 17), slice(c.k.view, 23, 17), slice(c.v.view, 23, 17), slice(sv, 23, 17), p2).ok());
    EXPECT_LT(lintest::compare_f(split, a).rel, kTol) << name << " split";
  }
}

// Packed variable length with sequences of length 1 and 15 mixed in, each with its own initial state.
TEST(LinearVarlen, MatchesPerSequenceReference) {
  const std::vector<int32_t> cu = {0, 1, 16, 53, 54, 69, 100};
  const int64_t n_seqs = 6, total = 100, H = 2, d = 16, dv = 8;
  for (const std::string name : {"simple_gla", "gla", "deltanet", "linear_elu", "cosformer", "retnet"}) {
    for (LinearForm form : {LinearForm::kChunked, LinearForm::kRecurrent, LinearForm::kParallel}) {
      Case c;
      lintest::build_case(&c, name, 1, total, H, d, dv, 21);
      c.p.maybe_cu_seqlens = cu.data();
      c.p.n_seqs = n_seqs;
      c.p.form = form;
      c.p.chunk_size = 16;
      std::vector<int64_t> starts = {0, 3, 0, 7, 0, 1};
      c.p.maybe_start_positions = starts.data();
      std::vector<float> init = random_state(c, n_seqs, H, 77);
      c.p.maybe_initial_state = init.data();
      std::vector<float> fin(init.size());
      c.p.maybe_final_state = fin.data();
      std::vector<float> out(static_cast<size_t>(total * H * dv));
      const Status s = linear_attention(c.q.view, c.k.view, c.v.view,
                                        TensorView::contiguous(out.data(), DType::kF32, 1, total, H, dv), c.p);
      ASSERT_TRUE(s.ok()) << s.message();
      std::vector<double> ref, ref_state;
      ASSERT_TRUE(reference::linear_attention_ref(c.q.view, c.k.view, c.v.view, c.p, &ref, &ref_state).ok());
      EXPECT_LT(lintest::compare(out, ref).rel, kTol) << name << " form " << static_cast<int>(form);
      EXPECT_LT(lintest::compare(fin, ref_state).rel, kTol) << name << " state form " << static_cast<int>(form);
    }
  }
}

// The chunked form runs heads in groups of heads / threads (at most 8) per task, chunk by chunk:
// groups of 1, 2 (with a last group of one head), 5 and 8 heads, over two sequences with initial
// states, a partial last chunk, and strong decays (the vector gate's sub-block path and the delta
// rule's per-pair decays), all against the double reference, outputs and final states.
TEST(LinearChunked, HeadGroupsMatchReference) {
  const int64_t B = 2, T = 75, d = 24, dv = 20;
  for (const std::string name : {"hgrn2", "gla", "deltanet", "gated_deltanet", "simple_gla", "linear_elu"}) {
    for (double strength : {1.0, 40.0}) {
      for (int64_t H : {5, 8}) {
        for (int threads : {1, 2, 4}) {
          Case c;
          lintest::build_case(&c, name, B, T, H, d, dv, 90 + H, strength);
          c.p.form = LinearForm::kChunked;
          c.p.chunk_size = 16;
          c.p.num_threads = threads;
          std::vector<float> init = random_state(c, B, H, 5 + H);
          c.p.maybe_initial_state = init.data();
          std::vector<float> fin(init.size(), -1.0f);
          c.p.maybe_final_state = fin.data();
          std::vector<float> out(static_cast<size_t>(B * T * H * c.dv), -1.0f);
          const Status s = linear_attention(c.q.view, c.k.view, c.v.view,
                                            TensorView::contiguous(out.data(), DType::kF32, B, T, H, c.dv), c.p);
          ASSERT_TRUE(s.ok()) << s.message();
          std::vector<double> ref, ref_state;
          ASSERT_TRUE(reference::linear_attention_ref(c.q.view, c.k.view, c.v.view, c.p, &ref, &ref_state).ok());
          const Err e = lintest::compare(out, ref), es = lintest::compare(fin, ref_state);
          EXPECT_FALSE(e.nan || es.nan) << name;
          EXPECT_LT(e.rel, kTol) << name << " H " << H << " threads " << threads << " strength " << strength;
          EXPECT_LT(es.rel, kTol) << name << " state H " << H << " threads " << threads << " strength " << strength;
        }
      }
    }
  }
}

// linear_attention_state (the state alone, as LASP-2 uses it) against the double reference's final
// state for every configuration with a state, from an initial state, with a partial last chunk,
// head groups of 1 and 5, and strong decays (the vector gate's sub-block path).
TEST(LinearStateOnly, FinalStateMatchesReference) {
  const int64_t B = 2, T = 75, dv = 12;
  for (const std::string& name : lintest::engine_configs()) {
    if (!ref_has_state(name)) continue;
    const int64_t d = 16;
    for (double strength : {1.0, 40.0}) {
      for (int64_t H : {1, 5}) {
        Case c;
        lintest::build_case(&c, name, B, T, H, d, dv, 40 + H, strength);
        c.p.chunk_size = 16;
        c.p.num_threads = 2;
        std::vector<float> init = random_state(c, B, H, 6 + H);
        c.p.maybe_initial_state = init.data();
        std::vector<float> fin(init.size(), -1.0f);
        c.p.maybe_final_state = fin.data();
        const Status s = linear_attention_state(c.q.view, c.k.view, c.v.view, c.p);
        ASSERT_TRUE(s.ok()) << name << ": " << s.message();
        std::vector<double> ref, ref_state;
        ASSERT_TRUE(reference::linear_attention_ref(c.q.view, c.k.view, c.v.view, c.p, &ref, &ref_state).ok());
        const Err es = lintest::compare(fin, ref_state);
        EXPECT_FALSE(es.nan) << name;
        EXPECT_LT(es.rel, kTol) << name << " H " << H << " strength " << strength;
      }
    }
  }
  Case c;
  lintest::build_case(&c, "gla", 1, 20, 2, 16, 16, 1);
  const Status s = linear_attention_state(c.q.view, c.k.view, c.v.view, c.p);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("maybe_final_state"), std::string::npos) << s.message();
}

// Head dims 16..256 including odd ones, chunk sizes 16/32/64, GQA 2:1, a non-contiguous q.
TEST(LinearSweep, HeadDimsAndChunkSizes) {
  const int64_t T = 131, B = 1, H = 2;
  for (int64_t d : {16, 17, 33, 64, 127, 128, 256}) {
    for (const std::string name : {"simple_gla", "gla", "gated_deltanet", "linear_elu"}) {
      Case c;
      lintest::build_case(&c, name, B, T, H, d, d, 31 + d);
      for (int64_t C : {16, 32, 64}) {
        c.p.form = LinearForm::kChunked;
        c.p.chunk_size = C;
        std::vector<float> out(static_cast<size_t>(B * T * H * d));
        ASSERT_TRUE(linear_attention(c.q.view, c.k.view, c.v.view,
                                     TensorView::contiguous(out.data(), DType::kF32, B, T, H, d), c.p)
                        .ok());
        std::vector<double> ref;
        ASSERT_TRUE(reference::linear_attention_ref(c.q.view, c.k.view, c.v.view, c.p, &ref).ok());
        const Err e = lintest::compare(out, ref);
        EXPECT_FALSE(e.nan);
        EXPECT_LT(e.rel, 5e-4) << name << " d " << d << " C " << C;
      }
    }
  }
}

TEST(LinearSweep, GqaAndStridedInputs) {
  // heads_q 4 over heads_kv 2; q read through a view with a padded head stride.
  const int64_t B = 2, T = 50, Hq = 4, Hkv = 2, d = 20;
  Case c;
  lintest::build_case(&c, "simple_gla", B, T, Hq, d, d, 8);
  c.k.make(B, T, Hkv, d);
  c.v.make(B, T, Hkv, d);
  lintest::fill_normal(c.k.data, 1);
  lintest::fill_normal(c.v.data, 2);
  std::vector<float> qpad(static_cast<size_t>(B * T * Hq * (d + 3)));
  TensorView qv = TensorView::contiguous(qpad.data(), DType::kF32, B, T, Hq, d);
  qv.stride = {T * Hq * (d + 3), Hq * (d + 3), d + 3, 1};
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < Hq; ++h)
        for (int64_t i = 0; i < d; ++i) qv.set(b, t, h, i, c.q.view.get(b, t, h, i));
  std::vector<float> out(static_cast<size_t>(B * T * Hq * d));
  c.p.chunk_size = 16;
  ASSERT_TRUE(linear_attention(qv, c.k.view, c.v.view, TensorView::contiguous(out.data(), DType::kF32, B, T, Hq, d), c.p).ok());
  std::vector<double> ref;
  ASSERT_TRUE(reference::linear_attention_ref(c.q.view, c.k.view, c.v.view, c.p, &ref).ok());
  EXPECT_LT(lintest::compare(out, ref).rel, kTol);
}

// Strong decays and T = 50,000: no NaN/overflow, still within tolerance of the double reference.
TEST(LinearStability, StrongDecaysLongSequence) {
  const bool long_tests = std::getenv("ATTNKIT_LONG_TESTS") != nullptr;
  const int64_t T = 50000, d = long_tests ? 32 : 8;
  for (const std::string name : {"simple_gla", "gla", "gated_deltanet", "retnet", "lightning"}) {
    for (double strength : {1.0, 40.0}) {
      Case c;
      lintest::build_case(&c, name, 1, T, 1, d, d, 13, strength);
      c.p.chunk_size = 64;
      std::vector<float> out(static_cast<size_t>(T * d));
      ASSERT_TRUE(linear_attention(c.q.view, c.k.view, c.v.view, TensorView::contiguous(out.data(), DType::kF32, 1, T, 1, d), c.p).ok());
      std::vector<double> ref;
      ASSERT_TRUE(reference::linear_attention_ref(c.q.view, c.k.view, c.v.view, c.p, &ref).ok());
      const Err e = lintest::compare(out, ref);
      EXPECT_FALSE(e.nan) << name;
      EXPECT_LT(e.rel, 1e-3) << name << " strength " << strength;
    }
  }
}

// A gate that is extremely negative (decay e^{-200} per step) must give exactly the no-memory
// answer, not NaN (e^{+large} must never be formed).
TEST(LinearStability, ExtremeGateForgetsEverything) {
  Case c;
  lintest::build_case(&c, "gla", 1, 100, 1, 16, 16, 2);
  for (float& g : c.gate.data) g = -200.0f;
  std::vector<float> out(100 * 16);
  ASSERT_TRUE(linear_attention(c.q.view, c.k.view, c.v.view, TensorView::contiguous(out.data(), DType::kF32, 1, 100, 1, 16), c.p).ok());
  for (int64_t t = 0; t < 100; ++t) {
    double qk = 0;
    for (int64_t i = 0; i < 16; ++i) qk += c.q.view.get(0, t, 0, i) * c.k.view.get(0, t, 0, i);
    for (int64_t j = 0; j < 16; ++j) {
      const double want = qk * c.v.view.get(0, t, 0, j) / 4.0;  // scale 1/sqrt(16)
      ASSERT_NEAR(out[t * 16 + j], want, 1e-4 * (1 + std::abs(want)));
    }
  }
}

// Performer: error to exact causal softmax falls as the number of random features grows.
TEST(Performer, ErrorFallsWithFeatures) {
  const int64_t T = 64, d = 16;
  std::vector<double> err;
  for (int64_t m : {16, 64, 256, 2048}) {
    double total = 0;
    for (uint64_t seed = 1; seed <= 4; ++seed) {
      Case c;
      lintest::build_case(&c, "performer", 1, T, 1, d, d, seed);
      c.p.performer_features = m;
      c.p.performer_seed = seed * 100 + static_cast<uint64_t>(m);
      std::vector<float> out(static_cast<size_t>(T * d));
      ASSERT_TRUE(linear_attention(c.q.view, c.k.view, c.v.view, TensorView::contiguous(out.data(), DType::kF32, 1, T, 1, d), c.p).ok());
      std::vector<double> qd(c.q.data.begin(), c.q.data.end()), kd(c.k.data.begin(), c.k.data.end()),
          vd(c.v.data.begin(), c.v.data.end());
      const std::vector<double> exact = reference::softmax_attention_ref(qd, kd, vd, T, T, d, d, 1.0 / std::sqrt(16.0), true);
      double se = 0, sr = 0;
      for (size_t i = 0; i < exact.size(); ++i) {
        se += (out[i] - exact[i]) * (out[i] - exact[i]);
        sr += exact[i] * exact[i];
      }
      total += se / sr;
    }
    err.push_back(total / 4);
  }
  for (size_t i = 1; i < err.size(); ++i) EXPECT_LT(err[i], err[i - 1]) << "features step " << i;
  EXPECT_LT(err.back(), 0.02);       // 2048 features: close to softmax
  EXPECT_LT(err.back(), err[0] / 10);
}

TEST(LinearValidation, BadInputsReturnStatusNamingTheParameter) {
  Case c;
  lintest::build_case(&c, "gated_deltanet", 1, 10, 2, 16, 16, 1);
  std::vector<float> out(10 * 2 * 16);
  const TensorView ov = TensorView::contiguous(out.data(), DType::kF32, 1, 10, 2, 16);
  LinearAttentionParams p = c.p;
  p.chunk_size = 0;
  Status s = linear_attention(c.q.view, c.k.view, c.v.view, ov, p);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("chunk_size 0"), std::string::npos) << s.message();
  p = c.p;
  p.beta = TensorView();
  s = linear_attention(c.q.view, c.k.view, c.v.view, ov, p);
  EXPECT_NE(s.message().find("beta"), std::string::npos) << s.message();
  p = c.p;
  p.norm = LinearNorm::kDenominator;
  EXPECT_EQ(linear_attention(c.q.view, c.k.view, c.v.view, ov, p).code(), StatusCode::kUnsupported);
  p = c.p;
  const std::vector<int32_t> cu = {0, 4, 9};
  p.maybe_cu_seqlens = cu.data();
  p.n_seqs = 2;
  s = linear_attention(c.q.view, c.k.view, c.v.view, ov, p);
  EXPECT_NE(s.message().find("cu_seqlens[n_seqs] = 9"), std::string::npos) << s.message();
  LinearAttentionParams pc;
  pc.feature_map = FeatureMap::kCosformer;
  s = linear_attention(c.q.view, c.k.view, c.v.view, ov, pc);
  EXPECT_NE(s.message().find("cosformer_max_len"), std::string::npos) << s.message();
  const TensorView bad_out = TensorView::contiguous(out.data(), DType::kF32, 1, 10, 2, 15);
  s = linear_attention(c.q.view, c.k.view, c.v.view, bad_out, LinearAttentionParams());
  EXPECT_NE(s.message().find("out shape"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace attnkit

namespace attnkit {
namespace {

// bf16 inputs and an f16 output: the engine converts on load/store; the reference reads the same
// bf16 values, so the only extra error is the f16 rounding of the output.
TEST(LinearDtypes, Bf16InputsF16Output) {
  const int64_t T = 70, H = 2, d = 16, dv = 16;
  for (const std::string name : {"gla", "gated_deltanet", "linear_elu"}) {
    lintest::Case c;
    lintest::build_case(&c, name, 1, T, H, d, dv, 4);
    std::vector<uint16_t> qb(c.q.data.size()), kb(c.k.data.size()), vb(c.v.data.size()), ob(T * H * dv);
    for (size_t i = 0; i < qb.size(); ++i) qb[i] = f32_to_bf16(c.q.data[i]);
    for (size_t i = 0; i < kb.size(); ++i) kb[i] = f32_to_bf16(c.k.data[i]);
    for (size_t i = 0; i < vb.size(); ++i) vb[i] = f32_to_bf16(c.v.data[i]);
    const TensorView qv = TensorView::contiguous(qb.data(), DType::kBF16, 1, T, H, d);
    const TensorView kv = TensorView::contiguous(kb.data(), DType::kBF16, 1, T, H, d);
    const TensorView vv = TensorView::contiguous(vb.data(), DType::kBF16, 1, T, H, dv);
    const TensorView ov = TensorView::contiguous(ob.data(), DType::kF16, 1, T, H, dv);
    c.p.chunk_size = 16;
    ASSERT_TRUE(linear_attention(qv, kv, vv, ov, c.p).ok());
    std::vector<double> ref;
    ASSERT_TRUE(reference::linear_attention_ref(qv, kv, vv, c.p, &ref).ok());
    std::vector<float> got(ob.size());
    for (size_t i = 0; i < ob.size(); ++i) got[i] = f16_to_f32(ob[i]);
    const Err e = lintest::compare(got, ref);
    EXPECT_FALSE(e.nan);
    EXPECT_LT(e.rel, 2e-3) << name;  // f16 output rounding is 2^-11 relative per element
  }
}

}  // namespace
}  // namespace attnkit

namespace attnkit {
namespace {

// Long sweep (ATTNKIT_LONG_TESTS=1): every configuration x head dims x chunk sizes at T = 1023.
TEST(LinearLongSweep, AllConfigsHeadDimsChunks) {
  if (std::getenv("ATTNKIT_LONG_TESTS") == nullptr) GTEST_SKIP() << "set ATTNKIT_LONG_TESTS=1";
  const int64_t T = 1023;
  for (const std::string& name : lintest::engine_configs()) {
    const bool taylor = name == "based_taylor" || name == "taylorshift";
    for (int64_t d : {16, 31, 64, 128}) {
      const int64_t dd = taylor ? std::min<int64_t>(d, 16) : d;
      lintest::Case c;
      lintest::build_case(&c, name, 1, T, 2, dd, d, 50 + d);
      std::vector<double> ref;
      ASSERT_TRUE(reference::linear_attention_ref(c.q.view, c.k.view, c.v.view, c.p, &ref).ok());
      for (int64_t C : {16, 32, 64}) {
        c.p.chunk_size = C;
        std::vector<float> out(static_cast<size_t>(T * 2 * d));
        ASSERT_TRUE(linear_attention(c.q.view, c.k.view, c.v.view, TensorView::contiguous(out.data(), DType::kF32, 1, T, 2, d), c.p).ok());
        const Err e = lintest::compare(out, ref);
        EXPECT_FALSE(e.nan);
        EXPECT_LT(e.rel, 1e-3) << name << " d " << d << " C " << C;
      }
    }
  }
}

}  // namespace
}  // namespace attnkit
