// Dynamic estimators: on planted data (a few keys made to dominate chosen queries) they find
// those keys (mass recall > 0.99 on the chosen rows, against the double reference softmax), and
// on random data they stay within their budget. Plus the fidelity metrics themselves.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "attnkit/fidelity.h"
#include "attnkit/sparse.h"
#include "sparse_test_util.h"

namespace attnkit {
namespace {

// Random Q, K, V in [-1, 1); then keys `planted` get K = 3 u and rows >= first_row get
// Q = q + 3 u, with u a random unit direction times sqrt(d): their logits to the planted keys are
// about 9 sqrt(d) * scale = 9 x (d = 64: 72 / 8 = 9 nats above the rest... times 3 => dominant).
struct Planted {
  int64_t sq, d;
  std::vector<float> q, k, v;
  TensorView qv, kv, vv;
  Planted(int64_t n, int64_t hq, int64_t hkv, int64_t d_, const std::vector<int64_t>& planted, int64_t first_row,
          uint64_t seed)
      : sq(n), d(d_), q(n * hq * d_), k(n * hkv * d_), v(n * hkv * d_) {
    testing::Rng rng(seed);
    for (auto& x : q) x = rng.uniform(-1.0f, 1.0f);
    for (auto& x : k) x = rng.uniform(-1.0f, 1.0f);
    for (auto& x : v) x = rng.uniform(-1.0f, 1.0f);
    std::vector<float> u(d);
    double norm = 0;
    for (auto& x : u) {
      x = rng.uniform(-1.0f, 1.0f);
      norm += x * x;
    }
    for (auto& x : u) x = static_cast<float>(x / std::sqrt(norm) * std::sqrt(static_cast<double>(d)));
    for (int64_t j : planted)
      for (int64_t h = 0; h < hkv; ++h)
        for (int64_t c = 0; c < d; ++c) k[(j * hkv + h) * d + c] = 3.0f * u[c];
    for (int64_t i = first_row; i < n; ++i)
      for (int64_t h = 0; h < hq; ++h)
        for (int64_t c = 0; c < d; ++c) q[(i * hq + h) * d + c] += 3.0f * u[c];
    qv = TensorView::contiguous(q.data(), DType::kF32, 1, n, hq, d);
    kv = TensorView::contiguous(k.data(), DType::kF32, 1, n, hkv, d);
    vv = TensorView::contiguous(v.data(), DType::kF32, 1, n, hkv, d);
  }
};

// Worst recall over rows [first_row, sq) of every head, exact probabilities from the reference.
double worst_recall(const Planted& pl, const BlockMask& m, int64_t first_row, int64_t row_step) {
  reference::SparseRefOptions opt;
  opt.causal = m.shape.causal;
  double worst = 1.0;
  std::vector<double> probs;
  std::vector<uint8_t> vis(pl.sq);
  for (int64_t h = 0; h < pl.qv.heads(); ++h) {
    for (int64_t i = first_row; i < pl.sq; i += row_step) {
      reference::softmax_row_ref(pl.qv, pl.kv, opt, 0, h, i, &probs);
      std::fill(vis.begin(), vis.end(), 0);
      block_mask_visited_row(m, 0, h, i, vis.data());
      double hit = 0;
      for (int64_t j = 0; j < pl.sq; ++j) hit += vis[j] ? probs[j] : 0.0;
      worst = std::min(worst, hit);
    }
  }
  return worst;
}

using Estimate = std::function<Status(const TensorView&, const TensorView&, const AttentionParams&, BlockMask*)>;

struct Named {
  std::string name;
  Estimate fn;
};

std::vector<Named> estimators() {
  return {
      {"vertical_slash",
       [](const TensorView& q, const TensorView& k, const AttentionParams& p, BlockMask* m) {
         VerticalSlashConfig c;
         c.vertical = 16;
         c.slash = 64;
         c.force_first = 4;
         c.force_last = 16;
         return estimate_vertical_slash(q, k, p, c, m);
       }},
      {"block_topk",
       [](const TensorView& q, const TensorView& k, const AttentionParams& p, BlockMask* m) {
         BlockTopKConfig c;
         c.topk = 4;
         return estimate_block_topk(q, k, p, c, m);
       }},
      {"moba",
       [](const TensorView& q, const TensorView& k, const AttentionParams& p, BlockMask* m) {
         MobaConfig c;
         c.topk = 5;
         return estimate_moba(q, k, p, c, m);
       }},
      {"flexprefill",
       [](const TensorView& q, const TensorView& k, const AttentionParams& p, BlockMask* m) {
         FlexPrefillConfig c;
         c.gamma = 0.95;
         return estimate_flexprefill(q, k, p, c, m, nullptr);
       }},
      {"hip",
       [](const TensorView& q, const TensorView& k, const AttentionParams& p, BlockMask* m) {
         HipConfig c;
         c.topk = 6;
         return estimate_hip(q, k, p, c, m);
       }},
  };
}

TEST(Estimators, FindPlantedKeys) {
  // Planted keys far from the diagonal, in three separate key blocks; chosen rows: the second
  // half. Causal and not, GQA 4:2, a length that is not a multiple of the block.
  const int64_t n = 1500, first = 750;
  for (bool causal : {true, false}) {
    Planted pl(n, 4, 2, 64, {70, 71, 420, 1000}, first, 5);
    AttentionParams p = sparse_test::causal_params(causal);
    for (const Named& e : estimators()) {
      SCOPED_TRACE(e.name + (causal ? " causal" : " non-causal"));
      BlockMask m;
      ASSERT_TRUE(e.fn(pl.qv, pl.kv, p, &m).ok());
      ASSERT_TRUE(validate_block_mask(m).ok());
      EXPECT_GT(worst_recall(pl, m, first, 7), 0.99);
      EXPECT_LT(block_mask_stats(m).density, 0.6);
    }
  }
}

TEST(Estimators, HipFindsAPlantedRegion) {
  // HiP prunes by representatives, so it relies on score locality (the paper's premise): a
  // planted region of 8 consecutive blocks far from the diagonal must be found at seq 4096
  // (64 blocks, three levels of the hierarchy).
  std::vector<int64_t> region;
  for (int64_t j = 1024; j < 1536; ++j) region.push_back(j);
  Planted pl(4096, 2, 1, 64, region, 3000, 9);
  AttentionParams p = sparse_test::causal_params(true);
  HipConfig c;
  c.topk = 16;
  BlockMask m;
  ASSERT_TRUE(estimate_hip(pl.qv, pl.kv, p, c, &m).ok());
  EXPECT_GT(worst_recall(pl, m, 3000, 97), 0.99);
  // Budget: topk blocks + the sink and diagonal blocks per query block.
  double budget = 0;
  for (int64_t qb = 0; qb < 64; ++qb) budget += std::min<int64_t>(qb + 1, c.topk + 2) * 64.0 * 64.0;
  EXPECT_LE(block_mask_stats(m).computed_pairs, budget * 2);  // two heads
  EXPECT_LT(block_mask_stats(m).density, 0.5);
}

TEST(Estimators, StayWithinBudgetOnRandomData) {
  // Random data: no structure to find; the masks must respect their budgets.
  const int64_t n = 2048, nb = 32;
  Planted pl(n, 4, 2, 64, {}, n, 3);
  AttentionParams p = sparse_test::causal_params(true);
  auto blocks_per_list = [](const BlockMask& m) {
    int64_t worst = 0;
    for (int64_t l = 0; l < m.n_lists(); ++l) {
      worst = std::max(worst, m.full_offsets[l + 1] - m.full_offsets[l] + m.partial_offsets[l + 1] - m.partial_offsets[l]);
    }
    return worst;
  };
  BlockMask m;
  BlockTopKConfig bt;
  bt.topk = 6;
  ASSERT_TRUE(estimate_block_topk(pl.qv, pl.kv, p, bt, &m).ok());
  EXPECT_LE(blocks_per_list(m), 6 + 2);  // + sink and diagonal blocks
  MobaConfig mo;
  mo.topk = 4;
  ASSERT_TRUE(estimate_moba(pl.qv, pl.kv, p, mo, &m).ok());
  EXPECT_LE(blocks_per_list(m), 4 + 1);  // k - 1 voted + the diagonal (aligned blocks: one)
  HipConfig hc;
  hc.topk = 5;
  ASSERT_TRUE(estimate_hip(pl.qv, pl.kv, p, hc, &m).ok());
  EXPECT_LE(blocks_per_list(m), 5 + 2);
  {
    // Each kept diagonal costs at most two key blocks per query block (computed densely, as in
    // MInference's kernel), each column one key per row.
    Planted big(4096, 2, 1, 64, {}, 4096, 4);
    VerticalSlashConfig vs;
    vs.vertical = 50;
    vs.slash = 10;
    vs.force_first = 4;
    vs.force_last = 4;
    ASSERT_TRUE(estimate_vertical_slash(big.qv, big.kv, p, vs, &m).ok());
    for (int64_t l = 0; l < m.n_lists(); ++l) EXPECT_LE(m.column_offsets[l + 1] - m.column_offsets[l], 50);
    double budget = 0;
    for (int64_t qb = 0; qb < 64; ++qb) budget += std::min<int64_t>(qb + 1, 2 * vs.slash + 1) * 64.0 * 64.0 + 50.0 * 64;
    const BlockMaskStats st = block_mask_stats(m);
    EXPECT_LE(st.computed_pairs, budget * 2);
    EXPECT_LT(st.density, 0.5);
  }
  // FlexPrefill: a smaller gamma keeps less.
  FlexPrefillConfig f1, f2;
  f1.gamma = 0.5;
  f2.gamma = 0.95;
  BlockMask m1, m2;
  ASSERT_TRUE(estimate_flexprefill(pl.qv, pl.kv, p, f1, &m1, nullptr).ok());
  ASSERT_TRUE(estimate_flexprefill(pl.qv, pl.kv, p, f2, &m2, nullptr).ok());
  EXPECT_LT(block_mask_stats(m1).density, block_mask_stats(m2).density);
  EXPECT_LE(block_mask_stats(m2).density, 1.0 + 1e-12);
}

TEST(Estimators, FlexPrefillPicksPerHeadPattern) {
  // Head structure the JS test must tell apart: planted columns everywhere (a vertical pattern
  // the pooled block estimate also sees) vs random data. The choice vector is filled per head
  // and both kinds of mask still cover the planted keys.
  Planted pl(1024, 2, 2, 64, {10, 500}, 0, 4);
  AttentionParams p = sparse_test::causal_params(true);
  FlexPrefillConfig c;
  std::vector<int> choice;
  BlockMask m;
  ASSERT_TRUE(estimate_flexprefill(pl.qv, pl.kv, p, c, &m, &choice).ok());
  ASSERT_EQ(choice.size(), 2u);
  EXPECT_GT(worst_recall(pl, m, 600, 13), 0.99);
  // Single planted keys vanish in a 64-key block mean, so the pooled estimate is far from the
  // true block distribution: vertical-slash (0) for both heads.
  EXPECT_EQ(choice[0], 0);
  EXPECT_EQ(choice[1], 0);
  // Random data: both distributions are close to uniform, the pooled estimate is trusted:
  // query-aware block-sparse (1).
  Planted flat(1024, 2, 2, 64, {}, 1024, 6);
  ASSERT_TRUE(estimate_flexprefill(flat.qv, flat.kv, p, c, &m, &choice).ok());
  EXPECT_EQ(choice[0], 1);
  EXPECT_EQ(choice[1], 1);
}

TEST(Estimators, BadConfigsReturnStatus) {
  Planted pl(128, 2, 1, 32, {}, 128, 1);
  AttentionParams p;
  BlockMask m;
  BlockTopKConfig bt;
  bt.topk = 0;
  Status s = estimate_block_topk(pl.qv, pl.kv, p, bt, &m);
  EXPECT_NE(s.message().find("topk 0"), std::string::npos) << s.message();
  FlexPrefillConfig f;
  f.gamma = 1.5;
  s = estimate_flexprefill(pl.qv, pl.kv, p, f, &m, nullptr);
  EXPECT_NE(s.message().find("gamma"), std::string::npos) << s.message();
  VerticalSlashConfig vs;
  vs.block = 0;
  s = estimate_vertical_slash(pl.qv, pl.kv, p, vs, &m);
  EXPECT_NE(s.message().find("block 0"), std::string::npos) << s.message();
  TensorView bad = pl.kv;
  bad.shape[3] = 16;
  s = estimate_moba(pl.qv, bad, p, MobaConfig{}, &m);
  EXPECT_NE(s.message().find("head_dim"), std::string::npos) << s.message();
}

TEST(Fidelity, MassRecallAndErrorMetrics) {
  Planted pl(300, 2, 1, 32, {}, 300, 2);
  AttentionParams p = sparse_test::causal_params(true);
  // All keys: recall 1.
  double mean = 0, worst = 0;
  ASSERT_TRUE(attention_mass_recall(pl.qv, pl.kv, p, [](int64_t, int64_t, int64_t, uint8_t* v) {
    std::fill(v, v + 300, 1);
  }, &mean, &worst).ok());
  EXPECT_NEAR(mean, 1.0, 1e-9);
  EXPECT_NEAR(worst, 1.0, 1e-9);
  // Only the even keys: compare with the double reference row by row.
  ASSERT_TRUE(attention_mass_recall(pl.qv, pl.kv, p, [](int64_t, int64_t, int64_t, uint8_t* v) {
    for (int j = 0; j < 300; j += 2) v[j] = 1;
  }, &mean, &worst).ok());
  reference::SparseRefOptions opt;
  opt.causal = true;
  double ref_sum = 0, ref_worst = 1;
  std::vector<double> probs;
  for (int64_t h = 0; h < 2; ++h)
    for (int64_t i = 0; i < 300; ++i) {
      reference::softmax_row_ref(pl.qv, pl.kv, opt, 0, h, i, &probs);
      double hit = 0;
      for (int j = 0; j < 300; j += 2) hit += probs[j];
      ref_sum += hit;
      ref_worst = std::min(ref_worst, hit);
    }
  EXPECT_NEAR(mean, ref_sum / 600, 1e-5);
  EXPECT_NEAR(worst, ref_worst, 1e-5);
  EXPECT_GT(worst, 0.2);  // every row sees about half its keys as even ones
  EXPECT_LT(worst, 0.6);
  // Relative L2.
  std::vector<float> a = {1, 2, 3, 4}, b = {1, 2, 3, 5};
  double err = 0;
  ASSERT_TRUE(relative_l2_error(TensorView::contiguous(a.data(), DType::kF32, 1, 1, 1, 4),
                                TensorView::contiguous(b.data(), DType::kF32, 1, 1, 1, 4), &err).ok());
  EXPECT_NEAR(err, 1.0 / std::sqrt(1 + 4 + 9 + 25.0), 1e-12);
}

TEST(Fidelity, MeasureThroughNamedMethods) {
  Planted pl(700, 2, 1, 64, {30, 31}, 0, 8);
  AttentionParams p = sparse_test::causal_params(true);
  FidelityReport r;
  ASSERT_TRUE(measure_sparse_fidelity("block_dense", pl.qv, pl.kv, pl.vv, p, 1, &r).ok());
  EXPECT_NEAR(r.density, 1.0, 1e-9);
  EXPECT_LT(r.rel_l2_error, 1e-5);
  EXPECT_NEAR(r.recall_mean, 1.0, 1e-6);
  ASSERT_TRUE(measure_sparse_fidelity("sliding_window:left=63", pl.qv, pl.kv, pl.vv, p, 1, &r).ok());
  EXPECT_LT(r.density, 0.3);
  EXPECT_GT(r.rel_l2_error, 0.05);  // the planted keys 30, 31 are outside most windows
  EXPECT_LT(r.recall_worst, 0.5);
  ASSERT_TRUE(measure_sparse_fidelity("a_shape:sinks=64,window=63", pl.qv, pl.kv, pl.vv, p, 1, &r).ok());
  EXPECT_GT(r.recall_worst, 0.99);  // sinks cover the planted keys
  std::unique_ptr<SparseMethod> m;
  Status s = make_sparse_method("block_topk:topk=-3", &m);
  ASSERT_TRUE(s.ok());  // parsed; the estimator rejects the value
  EXPECT_FALSE(m->estimate(pl.qv, pl.kv, p).ok());
  s = make_sparse_method("block_topk:bogus=1", &m);
  EXPECT_NE(s.message().find("bogus"), std::string::npos) << s.message();
  s = make_sparse_method("exact", &m);
  EXPECT_FALSE(s.ok());
  for (const std::string& name : sparse_method_names()) {
    ASSERT_TRUE(make_sparse_method(name, &m).ok()) << name;
  }
}

}  // namespace
}  // namespace attnkit
