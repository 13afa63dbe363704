// Properties of attnkit::attention beyond one-case accuracy: determinism for a fixed thread
// count, decode == last rows of prefill, split-KV through merge_states == full attention,
// merge_states algebra, varlen == separate calls, fully masked rows, NaN inputs, and scratch
// memory that does not grow with the sequence length.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/memory.h"
#include "reference/attention_ref.h"
#include "testing/attn_case.h"
#include "testing/check_attention.h"
#include "testing/tensor_buffer.h"

namespace attnkit {
namespace {

using testing::AttnCase;
using testing::TestTensor;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

AttnCase make(int64_t sq, int64_t sk, int64_t hq, int64_t hkv, int64_t d) {
  AttnCase c;
  c.seq_q = sq;
  c.seq_kv = sk;
  c.heads_q = hq;
  c.heads_kv = hkv;
  c.head_dim = c.head_dim_v = d;
  return c;
}

Status run(const testing::CaseData& d) {
  return attention(d.q.view(), d.k.view(), d.v.view(), d.out.view(), d.maybe_lse(), d.params);
}

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isinf(a[i]) && a[i] == b[i]) continue;
    const double e = std::fabs(static_cast<double>(a[i]) - b[i]);
    m = std::isnan(e) ? INFINITY : std::max(m, e);
  }
  return m;
}

// ---- determinism ----

TEST(AttentionDeterminism, BitwiseRepeatableForEachThreadCount) {
  std::vector<AttnCase> cases;
  AttnCase prefill = make(300, 300, 4, 2, 64);
  prefill.causal = true;
  prefill.sink_logits = true;
  cases.push_back(prefill);
  AttnCase decode = make(1, 4097, 8, 2, 128);
  decode.path = ExecPath::kDecode;
  cases.push_back(decode);
  AttnCase var = make(200, 260, 4, 4, 40);
  var.varlen = true;
  var.batch = 3;
  var.causal = true;
  var.window_left = 70;
  cases.push_back(var);
  for (AttnCase c : cases) {
    for (int threads : {1, 2}) {
      c.num_threads = threads;
      auto d = testing::make_case_data(c);
      ASSERT_TRUE(run(*d).ok());
      const testing::AttentionCheck r = testing::check_case(*d);
      EXPECT_TRUE(r.ok) << r.message;
      const std::vector<float> out0 = d->out.to_dense(), lse0 = d->lse.to_dense();
      for (int rep = 0; rep < 3; ++rep) {
        d->reset_outputs();
        ASSERT_TRUE(run(*d).ok());
        EXPECT_TRUE(bitwise_equal(d->out.to_dense(), out0)) << c.name() << " repeat " << rep;
        EXPECT_TRUE(bitwise_equal(d->lse.to_dense(), lse0)) << c.name() << " repeat " << rep;
      }
    }
  }
}

// ---- path selection ----

// kAuto takes the decode path (split-KV) for few query rows against many keys, and the prefill path
// otherwise. The two paths add the keys in different orders, so which one ran shows in the bits of
// the output: with 2 threads, decode splits the keys in two and merges the halves.
TEST(AttentionPaths, AutoPicksTheDecodePathByShape) {
  const auto output = [](AttnCase c, ExecPath path) {
    c.path = path;
    auto d = testing::make_case_data(c);
    EXPECT_TRUE(run(*d).ok());
    return d->out.to_dense();
  };
  struct Shape {
    int64_t sq, sk, hq, hkv;
    bool decode;  // what kAuto must pick
  };
  for (const Shape& sh : {Shape{1, 4096, 32, 8, true}, Shape{4, 3000, 8, 2, true}, Shape{16, 4096, 4, 1, true},
                          Shape{64, 4096, 8, 2, false}, Shape{17, 4096, 4, 1, false}, Shape{4, 3000, 128, 2, false}}) {
    AttnCase c = make(sh.sq, sh.sk, sh.hq, sh.hkv, 64);
    c.causal = true;
    c.num_threads = 2;
    const std::vector<float> dec = output(c, ExecPath::kDecode), pre = output(c, ExecPath::kPrefill);
    ASSERT_FALSE(bitwise_equal(dec, pre)) << c.name() << ": the two paths give the same bits, so this shape cannot tell them apart";
    const std::vector<float> aut = output(c, ExecPath::kAuto);
    EXPECT_TRUE(bitwise_equal(aut, sh.decode ? dec : pre)) << c.name() << ": kAuto should take the "
                                                           << (sh.decode ? "decode" : "prefill") << " path";
  }
}

// ---- decode == prefill ----

TEST(AttentionPaths, DecodeEqualsLastRowsOfPrefill) {
  // Prefill over N rows (bottom-right causal); the last m rows as a decode call see exactly the
  // same keys, so decode (split-KV) must agree with those rows within the tolerance policy.
  for (int64_t n : {777, 2100}) {
    AttnCase c = make(n, n, 8, 2, 64);
    c.causal = true;
    c.path = ExecPath::kPrefill;
    c.num_threads = 2;
    auto full = testing::make_case_data(c);
    ASSERT_TRUE(run(*full).ok());
    for (int64_t m : {1, 4}) {
      for (ExecPath path : {ExecPath::kDecode, ExecPath::kAuto, ExecPath::kPrefill}) {
        AttnCase dc = c;
        dc.seq_q = m;
        dc.path = path;
        auto dec = testing::make_case_data(dc);
        // Same K/V; q = the last m rows of the prefill queries.
        TensorView qtail = full->q.view();
        qtail.shape[1] = m;
        qtail.data = static_cast<float*>(qtail.data) + (n - m) * qtail.stride[1];
        std::vector<float> qv;
        for (int64_t s = 0; s < m; ++s)
          for (int64_t h = 0; h < 8; ++h)
            for (int64_t e = 0; e < 64; ++e) qv.push_back(qtail.get(0, s, h, e));
        dec->q.from_dense(qv);
        dec->k.from_dense(full->k.to_dense());
        dec->v.from_dense(full->v.to_dense());
        ASSERT_TRUE(run(*dec).ok());
        const testing::AttentionCheck r = testing::check_case(*dec);
        EXPECT_TRUE(r.ok) << r.message;

        // Row-by-row comparison with the prefill result.
        const std::vector<float> fo = full->out.to_dense(), dout = dec->out.to_dense();
        std::vector<float> tail(fo.end() - m * 8 * 64, fo.end());
        EXPECT_LT(max_abs_diff(dout, tail), 2 * r.out.abs_bound) << dc.name();
        const std::vector<float> fl = full->lse.to_dense(), dl = dec->lse.to_dense();
        for (int64_t h = 0; h < 8; ++h)
          for (int64_t s = 0; s < m; ++s) {
            EXPECT_NEAR(dl[h * m + s], fl[h * n + (n - m + s)], 2 * r.lse.abs_bound) << dc.name();
          }
      }
    }
  }
}

// ---- merge_states ----

struct State {
  TestTensor o;
  std::vector<float> lse;
  State(int64_t b, int64_t s, int64_t h, int64_t d, uint64_t seed) : o(DType::kF32, b, s, h, d), lse(b * h * s) {
    o.fill_uniform(seed);
    testing::Rng rng(seed + 7);
    for (float& x : lse) x = rng.uniform(-3.0f, 5.0f);
  }
};

TEST(MergeStates, MatchesReferenceAndIsCommutativeAndAssociative) {
  const int64_t B = 2, S = 5, H = 3, D = 17;
  State a(B, S, H, D, 1), b(B, S, H, D, 2), c(B, S, H, D, 3);
  // Empty states sprinkled in: one row empty in a, another empty in both a and b.
  a.lse[4] = kNegInf;
  a.lse[9] = b.lse[9] = kNegInf;
  c.lse[9] = kNegInf;  // row 9 empty everywhere
  auto merge = [&](const State& x, const State& y, State* out) {
    ASSERT_TRUE(merge_states(x.o.view(), x.lse.data(), y.o.view(), y.lse.data(), out->o.view(), out->lse.data()).ok());
  };
  State ab(B, S, H, D, 9), ba(B, S, H, D, 9), abc(B, S, H, D, 9), bc(B, S, H, D, 9), a_bc(B, S, H, D, 9),
      ref(B, S, H, D, 9);
  merge(a, b, &ab);
  merge(b, a, &ba);
  ASSERT_TRUE(reference::merge_states_ref(a.o.view(), a.lse.data(), b.o.view(), b.lse.data(), ref.o.view(),
                                          ref.lse.data())
                  .ok());
  EXPECT_LT(max_abs_diff(ab.o.to_dense(), ref.o.to_dense()), 1e-6);
  EXPECT_LT(max_abs_diff(ab.lse, ref.lse), 1e-5);
  EXPECT_LT(max_abs_diff(ab.o.to_dense(), ba.o.to_dense()), 1e-6);
  EXPECT_LT(max_abs_diff(ab.lse, ba.lse), 1e-6);
  merge(ab, c, &abc);
  merge(b, c, &bc);
  merge(a, bc, &a_bc);
  EXPECT_LT(max_abs_diff(abc.o.to_dense(), a_bc.o.to_dense()), 2e-6);
  EXPECT_LT(max_abs_diff(abc.lse, a_bc.lse), 2e-6);
  // Row 9 is empty in all three: o = 0, lse = -inf.
  EXPECT_EQ(abc.lse[9], kNegInf);
  const int64_t b9 = 9 / (H * S), h9 = (9 / S) % H, s9 = 9 % S;
  for (int64_t e = 0; e < D; ++e) EXPECT_EQ(abc.o.view().get(b9, s9, h9, e), 0.0f);
  // Row 4: a empty, so (a + b) equals b exactly.
  const int64_t b4 = 4 / (H * S), h4 = (4 / S) % H, s4 = 4 % S;
  EXPECT_EQ(ab.lse[4], b.lse[4]);
  for (int64_t e = 0; e < D; ++e) EXPECT_EQ(ab.o.view().get(b4, s4, h4, e), b.o.view().get(b4, s4, h4, e));
  // In place: out aliases o_a.
  State acc(B, S, H, D, 1);
  acc.lse = a.lse;
  ASSERT_TRUE(merge_states(acc.o.view(), acc.lse.data(), b.o.view(), b.lse.data(), acc.o.view(), acc.lse.data()).ok());
  EXPECT_TRUE(bitwise_equal(acc.o.to_dense(), ab.o.to_dense()));
  EXPECT_TRUE(bitwise_equal(acc.lse, ab.lse));
}

TEST(MergeStates, StridedHalfPrecisionViewsMatchReferenceAndStayInside) {
  const int64_t B = 1, S = 7, H = 3, D = 33;
  for (DType t : {DType::kF16, DType::kBF16}) {
    TestTensor a(t, B, S, H, D, testing::Layout::kPaddedRows, true), b(t, B, S, H, D, testing::Layout::kHeadsMajor);
    TestTensor out(t, B, S, H, D, testing::Layout::kPaddedRows, true), ref(DType::kF32, B, S, H, D);
    a.fill_uniform(21);
    b.fill_uniform(22);
    std::vector<float> la(B * H * S), lb(B * H * S), lo(B * H * S), lr(B * H * S);
    testing::Rng rng(5);
    for (size_t i = 0; i < la.size(); ++i) {
      la[i] = rng.uniform(-2.0f, 2.0f);
      lb[i] = i % 5 == 0 ? kNegInf : rng.uniform(-2.0f, 2.0f);
    }
    ASSERT_TRUE(merge_states(a.view(), la.data(), b.view(), lb.data(), out.view(), lo.data()).ok());
    ASSERT_TRUE(reference::merge_states_ref(a.view(), la.data(), b.view(), lb.data(), ref.view(), lr.data()).ok());
    EXPECT_EQ(out.check_canary(), "") << dtype_name(t);
    // One rounding to the storage dtype at most (|o| < 1).
    EXPECT_LE(max_abs_diff(out.to_dense(), ref.to_dense()), 2.0 * testing::unit_roundoff(t)) << dtype_name(t);
    EXPECT_LT(max_abs_diff(lo, lr), 1e-6) << dtype_name(t);
  }
}

TEST(MergeStates, SplitKeysMergedEqualFullAttention) {
  for (int64_t split : {1, 64, 500, 999}) {
    AttnCase c = make(37, 1000, 4, 2, 64);
    c.scale = 0.4f;
    auto full = testing::make_case_data(c);
    ASSERT_TRUE(run(*full).ok());
    const TensorView q = full->q.view();
    TensorView ka = full->k.view(), va = full->v.view(), kb = ka, vb = va;
    ka.shape[1] = va.shape[1] = split;
    kb.shape[1] = vb.shape[1] = 1000 - split;
    kb.data = static_cast<float*>(kb.data) + split * kb.stride[1];
    vb.data = static_cast<float*>(vb.data) + split * vb.stride[1];
    TestTensor oa(DType::kF32, 1, 37, 4, 64), ob(DType::kF32, 1, 37, 4, 64);
    std::vector<float> la(4 * 37), lb(4 * 37);
    AttentionParams p = full->params;
    ASSERT_TRUE(attention(q, ka, va, oa.view(), la.data(), p).ok());
    ASSERT_TRUE(attention(q, kb, vb, ob.view(), lb.data(), p).ok());
    ASSERT_TRUE(merge_states(oa.view(), la.data(), ob.view(), lb.data(), oa.view(), la.data()).ok());
    EXPECT_LT(max_abs_diff(oa.to_dense(), full->out.to_dense()), 2e-6) << split;
    EXPECT_LT(max_abs_diff(la, full->lse.to_dense()), 4e-6) << split;
  }
}

// ---- varlen ----

TEST(AttentionVarlen, PackedBatchEqualsSeparateCalls) {
  AttnCase c = make(150, 300, 4, 2, 64);
  c.varlen = true;
  c.batch = 4;
  c.causal = true;
  c.n_sink_tokens = 2;
  c.window_left = 90;
  auto d = testing::make_case_data(c);
  ASSERT_TRUE(run(*d).ok());
  const testing::AttentionCheck r = testing::check_case(*d);
  EXPECT_TRUE(r.ok) << r.message;
  const int64_t total_q = d->cu_q.back();
  const std::vector<float> lse = d->lse.to_dense();
  for (int64_t s = 0; s < 4; ++s) {
    const int64_t q0 = d->cu_q[s], nq = d->cu_q[s + 1] - q0, k0 = d->cu_k[s], nk = d->cu_k[s + 1] - k0;
    TensorView q = d->q.view(), k = d->k.view(), v = d->v.view();
    q.data = static_cast<float*>(q.data) + q0 * q.stride[1];
    k.data = static_cast<float*>(k.data) + k0 * k.stride[1];
    v.data = static_cast<float*>(v.data) + k0 * v.stride[1];
    q.shape[1] = nq;
    k.shape[1] = v.shape[1] = nk;
    TestTensor o(DType::kF32, 1, nq, 4, 64);
    std::vector<float> l(4 * nq);
    AttentionParams p = d->params;
    p.maybe_cu_seqlens_q = p.maybe_cu_seqlens_k = nullptr;
    p.n_seqs = 0;
    ASSERT_TRUE(attention(q, k, v, o.view(), l.data(), p).ok());
    for (int64_t i = 0; i < nq; ++i)
      for (int64_t h = 0; h < 4; ++h) {
        for (int64_t e = 0; e < 64; ++e) {
          ASSERT_NEAR(o.view().get(0, i, h, e), d->out.view().get(0, q0 + i, h, e), 2 * r.out.abs_bound)
              << "seq " << s << " row " << i << " head " << h;
        }
        ASSERT_NEAR(l[h * nq + i], lse[h * total_q + q0 + i], 2 * r.lse.abs_bound);
      }
  }
}

// ---- fully masked rows ----

TEST(AttentionMaskedRows, GiveZeroAndMinusInfinity) {
  struct Variant {
    const char* what;
    void (*edit)(AttnCase*);
    int64_t masked_rows;  // rows [0, masked_rows) are fully masked for every head
  };
  const Variant variants[] = {
      {"causal Sq > Sk", [](AttnCase* c) { c->causal = true; }, 200 - 70},
      {"window right of every key", [](AttnCase* c) { c->window_left = 0; c->window_right = 0; }, 200 - 70},
      {"causal + sink logit", [](AttnCase* c) { c->causal = true; c->sink_logits = true; }, 200 - 70},
  };
  for (const Variant& v : variants) {
    for (ExecPath path : {ExecPath::kPrefill, ExecPath::kDecode}) {
      AttnCase c = make(200, 70, 4, 2, 32);
      v.edit(&c);
      c.path = path;
      auto d = testing::make_case_data(c);
      ASSERT_TRUE(run(*d).ok());
      const testing::AttentionCheck r = testing::check_case(*d);
      EXPECT_TRUE(r.ok) << r.message;
      const std::vector<float> lse = d->lse.to_dense();
      for (int64_t h = 0; h < 4; ++h)
        for (int64_t i = 0; i < v.masked_rows; ++i) {
          const float want = c.sink_logits ? d->sink_logits[h] : kNegInf;
          ASSERT_EQ(lse[h * 200 + i], want) << v.what << " row " << i;
          for (int64_t e = 0; e < 32; ++e) ASSERT_EQ(d->out.view().get(0, i, h, e), 0.0f) << v.what << " row " << i;
        }
    }
  }
  // Custom masks hiding whole rows (the generator hides row 1 of head 0 of the first sequence).
  for (MaskKind kind : {MaskKind::kBoolean, MaskKind::kAdditive}) {
    AttnCase c = make(64, 64, 2, 1, 16);
    c.mask = kind;
    auto d = testing::make_case_data(c);
    ASSERT_TRUE(run(*d).ok());
    EXPECT_EQ(d->lse.to_dense()[1], kNegInf);
    for (int64_t e = 0; e < 16; ++e) EXPECT_EQ(d->out.view().get(0, 1, 0, e), 0.0f);
  }
}

// ---- NaN inputs ----

TEST(AttentionNan, NanInputsPoisonOnlyTheRowsThatSeeThem) {
  AttnCase c = make(130, 130, 2, 1, 32);
  c.causal = true;
  for (ExecPath path : {ExecPath::kPrefill, ExecPath::kDecode}) {
    c.path = path;
    auto clean = testing::make_case_data(c);
    ASSERT_TRUE(run(*clean).ok());
    const std::vector<float> clean_out = clean->out.to_dense();
    const float nan = std::numeric_limits<float>::quiet_NaN();
    // Empty when every element of (row i, head h) is NaN; else the row's first values.
    auto row_not_nan = [path](const testing::CaseData& d, int64_t i, int64_t h) -> std::string {
      std::string vals;
      bool all = true;
      for (int64_t e = 0; e < 32; ++e) {
        const float x = d.out.view().get(0, i, h, e);
        all = all && std::isnan(x);
        if (e < 4) vals += std::to_string(x) + " ";
      }
      if (all) return "";
      return std::string(path == ExecPath::kPrefill ? "prefill" : "decode") + " row " + std::to_string(i) + " head " +
             std::to_string(h) + " not NaN: " + vals + "...";
    };
    // NaN in q row 50 head 0: only that (row, head) turns NaN.
    {
      auto d = testing::make_case_data(c);
      d->q.view().set(0, 50, 0, 3, nan);
      ASSERT_TRUE(run(*d).ok());
      EXPECT_EQ(row_not_nan(*d, 50, 0), "");
      const std::vector<float> o = d->out.to_dense();
      for (size_t i = 0; i < o.size(); ++i) {
        const int64_t row = static_cast<int64_t>(i) / (2 * 32), head = (static_cast<int64_t>(i) / 32) % 2;
        if (row == 50 && head == 0) continue;
        ASSERT_NEAR(o[i], clean_out[i], 1e-6) << "index " << i;
      }
    }
    // NaN in key 90 (kv head 0): rows that see key 90 (causal: rows >= 90) turn NaN, earlier rows
    // are untouched.
    {
      auto d = testing::make_case_data(c);
      d->k.view().set(0, 90, 0, 0, nan);
      ASSERT_TRUE(run(*d).ok());
      for (int64_t h = 0; h < 2; ++h) {
        int64_t bad = 0;
        std::string first;
        for (int64_t i = 90; i < 130; ++i) {
          const std::string e = row_not_nan(*d, i, h);
          if (!e.empty() && bad++ == 0) first = e;
        }
        EXPECT_EQ(bad, 0) << bad << " of 40 rows that see the NaN key are not NaN; first: " << first;
        for (int64_t i = 0; i < 90; ++i)
          for (int64_t e = 0; e < 32; ++e) {
            ASSERT_NEAR(d->out.view().get(0, i, h, e), clean->out.view().get(0, i, h, e), 1e-6) << "row " << i;
          }
      }
    }
  }
}

// bf16 decode through the key-major sweep: scores by vdpbf16ps where the CPU has it, P V with
// the pair-layout widening. A NaN in one element of a kv head's K row turns that GQA group's
// whole output rows NaN (every weight); NaNs in elements 76 and 77 of a V row, only columns 76
// and 77 of those rows (which also checks that the pair layout puts even and odd columns back in
// place). Everything else stays bit-identical to a clean run.
TEST(AttentionNan, Bf16DecodeNanStaysInItsKvHead) {
  AttnCase c = make(1, 700, 8, 2, 128);
  c.dtype = DType::kBF16;
  c.causal = true;
  c.path = ExecPath::kDecode;
  c.num_threads = 2;
  auto clean = testing::make_case_data(c);
  ASSERT_TRUE(run(*clean).ok());
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // (tensor, position, kv head, element); q heads 4 * kv .. 4 * kv + 3 see it.
  for (int which = 0; which < 2; ++which) {
    auto d = testing::make_case_data(c);
    const int64_t kv = which == 0 ? 0 : 1;
    if (which == 0) {
      d->k.view().set(0, 300, kv, 77, nan);
    } else {
      d->v.view().set(0, 500, kv, 76, nan);  // an even and an odd column of the pair layout
      d->v.view().set(0, 500, kv, 77, nan);
    }
    ASSERT_TRUE(run(*d).ok());
    for (int64_t h = 0; h < 8; ++h) {
      for (int64_t e = 0; e < 128; ++e) {
        const bool sees = h / 4 == kv && (which == 0 || e == 76 || e == 77);
        const float x = d->out.view().get(0, 0, h, e);
        if (sees) {
          ASSERT_TRUE(std::isnan(x)) << (which == 0 ? "K" : "V") << " NaN: head " << h << " element " << e << " = " << x;
        } else {
          ASSERT_EQ(x, clean->out.view().get(0, 0, h, e)) << (which == 0 ? "K" : "V") << " NaN: head " << h << " element " << e;
        }
      }
    }
    EXPECT_EQ(d->out.check_canary(), "");
  }
}

// ---- memory ----

TEST(AttentionMemory, ScratchPeakDoesNotGrowWithSequenceLength) {
  std::vector<int64_t> peaks;
  for (int64_t n : {4096, 16384}) {
    TestTensor q(DType::kF32, 1, n, 1, 64), k(DType::kF32, 1, n, 1, 64), v(DType::kF32, 1, n, 1, 64),
        out(DType::kF32, 1, n, 1, 64);
    q.fill_uniform(1);
    k.fill_uniform(2);
    v.fill_uniform(3);
    std::vector<float> lse(n);
    AttentionParams p;
    p.causal = true;
    p.num_threads = 1;
    const int64_t before = scratch_current_bytes();
    scratch_reset_peak();
    ASSERT_TRUE(attention(q.view(), k.view(), v.view(), out.view(), lse.data(), p).ok());
    peaks.push_back(scratch_peak_bytes() - before);
    EXPECT_EQ(out.check_canary(), "");
    // Spot-check the last row against the reference (the full reference would be too slow).
    TensorView ql = q.view(), ol = out.view();
    ql.shape[1] = 1;
    ql.data = static_cast<float*>(ql.data) + (n - 1) * ql.stride[1];
    TestTensor ref(DType::kF32, 1, 1, 1, 64);
    ASSERT_TRUE(reference::attention_ref(ql, k.view(), v.view(), ref.view(), nullptr, p).ok());
    for (int64_t e = 0; e < 64; ++e) EXPECT_NEAR(ol.get(0, n - 1, 0, e), ref.view().get(0, 0, 0, e), 1e-5);
  }
  EXPECT_EQ(peaks[0], peaks[1]) << "scratch peak grew with N: " << peaks[0] << " -> " << peaks[1];
  EXPECT_GT(peaks[1], 0);
  EXPECT_LT(peaks[1], 4 << 20) << "scratch peak " << peaks[1] << " bytes";
}

// The same for the split-KV decode path (its partial results per piece are tracked scratch too)
// and with 2 threads: the peak follows threads x tile, never the number of keys. With 2 threads
// the peak depends on whether the threads' workspaces happen to be alive at the same time, so it
// is bounded by twice the one-thread peak rather than compared for equality.
TEST(AttentionMemory, DecodeScratchPeakDoesNotGrowWithKeys) {
  std::vector<int64_t> peaks_by_threads[3];  // [threads]
  for (int threads : {1, 2}) {
    std::vector<int64_t>& peaks = peaks_by_threads[threads];
    for (int64_t n : {8192, 65536}) {
      TestTensor q(DType::kF32, 1, 2, 8, 128), k(DType::kF32, 1, n, 2, 128), v(DType::kF32, 1, n, 2, 128),
          out(DType::kF32, 1, 2, 8, 128);
      q.fill_uniform(4);
      k.fill_uniform(5);
      v.fill_uniform(6);
      std::vector<float> lse(2 * 8);
      AttentionParams p;
      p.causal = true;
      p.num_threads = threads;
      p.path = ExecPath::kDecode;
      const int64_t before = scratch_current_bytes();
      scratch_reset_peak();
      ASSERT_TRUE(attention(q.view(), k.view(), v.view(), out.view(), lse.data(), p).ok());
      peaks.push_back(scratch_peak_bytes() - before);
      EXPECT_EQ(out.check_canary(), "");
      TestTensor ref(DType::kF32, 1, 2, 8, 128);
      ASSERT_TRUE(reference::attention_ref(q.view(), k.view(), v.view(), ref.view(), nullptr, p).ok());
      EXPECT_LT(max_abs_diff(out.to_dense(), ref.to_dense()), 1e-5) << "threads " << threads << " n " << n;
    }
    EXPECT_GT(peaks[1], 0);
    EXPECT_LT(peaks[1], 4 << 20) << "threads " << threads << ": scratch peak " << peaks[1] << " bytes";
  }
  const std::vector<int64_t>& one = peaks_by_threads[1];
  const std::vector<int64_t>& two = peaks_by_threads[2];
  EXPECT_EQ(one[0], one[1]) << "decode scratch grew with the keys: " << one[0] << " -> " << one[1];
  for (size_t i = 0; i < two.size(); ++i) EXPECT_LE(two[i], 2 * one[i]) << "2 threads, case " << i;
}

}  // namespace
}  // namespace attnkit
