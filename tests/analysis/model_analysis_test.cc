// The instruments on the real Gemma 3 270M over KJV text, with asserted properties: recomputed
// probabilities equal the model's own f64 tap probabilities and sum to 1, rates and normalized
// entropies lie in [0, 1], the first token carries massive activations whose zeroing hurts more
// than setting them to their mean, retrieval heads exist in the global layers and masking them
// breaks needle retrieval, and the calibration backends run inside the model.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "attnkit/analysis.h"
#include "attnkit/gguf.h"
#include "attnkit/model.h"
#include "attnkit/tokenizer.h"
#include "attnkit/eval.h"
#include "analysis/act.h"

namespace attnkit::analysis {
namespace {

class AnalysisModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string path;
    if (!gguf::find_default_model(&path).ok()) return;
    model::LoadOptions lo;
    lo.threads = 2;
    // f32 KV: the instruments are compared with the model's own probabilities and exact attention
    // without bf16 rounding of the cache in between.
    lo.kv_storage = kv::KvStorage::kF32;
    // The model and the text are installed (scripts/setup.sh): a failure to load either is a
    // failure of the test, not a reason to skip it.
    if (Status st = model::Model::load(path, lo, &model_); !st.ok()) {
      setup_error_ = st.message();
      model_.reset();
      return;
    }
    if (Status st = eval::kjv_text("", &text_); !st.ok()) {
      setup_error_ = st.message();
      model_.reset();
    }
  }
  static void TearDownTestSuite() { model_.reset(); }
  void SetUp() override {
    if (!setup_error_.empty()) FAIL() << setup_error_;
    if (!model_) GTEST_SKIP() << "Gemma 3 270M GGUF not installed";
    model_->set_attention(nullptr);
    model_->clear_taps();
  }
  static std::vector<int32_t> kjv(size_t offset, int64_t n) {
    std::vector<int32_t> ids = model_->tokenizer().encode(text_.substr(offset, static_cast<size_t>(n * 8)));
    ids.insert(ids.begin(), model_->tokenizer().bos_id());
    ids.resize(static_cast<size_t>(n));
    return ids;
  }
  static inline std::unique_ptr<model::Model> model_;
  static inline std::string text_;
  static inline std::string setup_error_;
};

TEST_F(AnalysisModelTest, RecomputedProbabilitiesEqualTheModelsTapProbabilities) {
  const auto ids = kjv(0, 700);  // crosses a 512-token chunk and the 512-position local window
  const std::vector<int64_t> rows = {0, 5, 300, 511, 512, 699};
  std::vector<std::vector<float>> tap(18);
  model::Taps t;
  t.prob_positions = rows;
  t.on_layer = [&](const model::TapData& td) {
    if (td.probs == nullptr) return;
    auto& v = tap[static_cast<size_t>(td.layer)];
    // Tap probabilities index cache slots (a sliding-window layer holds only its window); spread
    // them over positions 0 .. pos0 + n - 1 as the instruments report them.
    const int64_t n_pos = td.pos0 + td.n;
    for (size_t r = 0; r < td.prob_positions.size(); ++r)
      for (int64_t h = 0; h < 4; ++h) {
        std::vector<float> full(static_cast<size_t>(n_pos), 0.0f);
        const float* slots = td.probs + (r * 4 + h) * td.n_kv;
        for (int64_t j = 0; j < td.n_kv; ++j) full[static_cast<size_t>(td.kv_positions[j])] = slots[j];
        v.insert(v.end(), full.begin(), full.end());
      }
  };
  model_->reset();
  model_->set_taps(t);
  ASSERT_TRUE(model_->forward(ids.data(), 700, model::ForwardOutputs{}).ok());
  model_->clear_taps();
  std::vector<std::vector<float>> mine(18);
  ASSERT_TRUE(stream_attention(model_.get(), ids, [&](const AttentionBlock& b) {
    for (int64_t p : rows) {
      if (p < b.pos0 || p >= b.pos0 + b.n) continue;
      for (int64_t h = 0; h < b.n_head; ++h) {
        const float* row = b.probs + (h * b.n + p - b.pos0) * b.n_kv;
        double sum = 0;
        for (int64_t j = 0; j < b.n_kv; ++j) sum += row[j];
        EXPECT_NEAR(sum, 1.0, 1e-5) << "layer " << b.layer << " head " << h << " row " << p;
        auto& v = mine[static_cast<size_t>(b.layer)];
        v.insert(v.end(), row, row + b.n_kv);
      }
    }
  }).ok());
  for (int64_t l = 0; l < 18; ++l) {
    ASSERT_EQ(mine[static_cast<size_t>(l)].size(), tap[static_cast<size_t>(l)].size()) << "layer " << l;
    double worst = 0;
    for (size_t i = 0; i < mine[static_cast<size_t>(l)].size(); ++i)
      worst = std::max(worst, std::fabs(double(mine[static_cast<size_t>(l)][i]) - tap[static_cast<size_t>(l)][i]));
    EXPECT_LT(worst, 2e-4) << "layer " << l;  // f32 sgemm logits vs f64 dot products, |logit| up to ~50
  }
}

TEST_F(AnalysisModelTest, SinksAndEntropyHaveValidRanges) {
  SinkReport s;
  ASSERT_TRUE(analyze_sinks(model_.get(), {kjv(1000, 64), kjv(50000, 64)}, SinkOptions{}, &s).ok());
  EXPECT_EQ(s.n_samples, 2);
  EXPECT_GE(s.sink_rate, 0.0);
  EXPECT_LE(s.sink_rate, 1.0);
  EXPECT_GT(s.sink_rate, 0.0) << "Gemma 3 270M has first-token sinks";
  for (const HeadSinks& h : s.heads)
    for (double a : h.alpha) {
      EXPECT_GE(a, 0.0);
      EXPECT_LE(a, 1.0 + 1e-9);
    }
  EntropyReport e;
  ASSERT_TRUE(analyze_entropy(model_.get(), kjv(2000, 600), EntropyOptions{}, &e).ok());
  ASSERT_EQ(e.heads.size(), 72u);
  for (const HeadEntropy& h : e.heads) {
    EXPECT_GE(h.entropy, 0.0);
    EXPECT_LE(h.entropy, 1.0 + 1e-9);
    EXPECT_GE(h.spectral_gap, 0.0);
    EXPECT_LE(h.spectral_gap, 1.0);
    EXPECT_GT(h.log_sigma, 0.0);
  }
}

TEST_F(AnalysisModelTest, MassiveActivationsSitOnTheFirstTokenAndZeroingHurtsMore) {
  MassiveReport r;
  ASSERT_TRUE(analyze_massive(model_.get(), kjv(3000, 200), kjv(900000, 160), MassiveOptions{}, &r).ok());
  ASSERT_FALSE(r.found.empty());
  bool first = false;
  for (const MassiveActivation& a : r.found) {
    EXPECT_GT(std::fabs(a.value), 100.0);
    EXPECT_GE(std::fabs(a.value), 1000.0 * a.row_median);
    first = first || a.position == 0;
  }
  EXPECT_TRUE(first);
  ASSERT_GE(r.ablation_layer, 0);
  EXPECT_GT(r.ppl_zero, r.ppl_original);
  EXPECT_LT(std::fabs(r.ppl_mean - r.ppl_original), std::fabs(r.ppl_zero - r.ppl_original));
}

TEST_F(AnalysisModelTest, RetrievalHeadsAreInGlobalLayersAndMaskingThemBreaksRetrieval) {
  std::vector<NeedlePrompt> prompts;
  for (double depth : {0.3, 0.7}) {
    NeedlePrompt p;
    const int64_t number = depth < 0.5 ? 4817263 : 7352914;
    ASSERT_TRUE(eval::niah_prompt(model_->tokenizer(), text_, 600, number, depth, 11, &p.tokens).ok());
    const auto digits = model_->tokenizer().encode(std::to_string(number));
    auto it = std::search(p.tokens.begin(), p.tokens.end(), digits.begin(), digits.end());
    ASSERT_NE(it, p.tokens.end());
    p.needle_begin = it - p.tokens.begin();
    p.needle_end = p.needle_begin + static_cast<int64_t>(digits.size());
    prompts.push_back(p);
  }
  RetrievalReport r;
  RetrievalOptions o;
  o.max_new_tokens = 9;
  ASSERT_TRUE(retrieval_scores(model_.get(), prompts, o, &r).ok());
  EXPECT_EQ(r.counted, 2) << "the model answers both prompts";
  std::vector<std::pair<double, int64_t>> ranked;
  for (size_t i = 0; i < r.score.size(); ++i) {
    EXPECT_GE(r.score[i], 0.0);
    EXPECT_LE(r.score[i], 1.0 + 1e-9);
    ranked.push_back({r.score[i], static_cast<int64_t>(i)});
  }
  std::sort(ranked.rbegin(), ranked.rend());
  ASSERT_GT(ranked[0].first, 0.5);
  const model::GemmaConfig& c = model_->config();
  EXPECT_TRUE(c.is_global(ranked[0].second / c.n_head)) << "top head " << ranked[0].second;
  // Masking the top 4 heads breaks the answer; masking 4 heads with score 0 does not.
  std::string top, zero;
  for (int i = 0; i < 4; ++i)
    top += (i ? "+" : "") + std::to_string(ranked[static_cast<size_t>(i)].second / 4) + "." + std::to_string(ranked[static_cast<size_t>(i)].second % 4);
  int picked = 0;
  for (size_t i = 0; i < r.score.size() && picked < 4; i += 7)
    if (r.score[i] == 0) zero += (picked++ ? "+" : "") + std::to_string(i / 4) + "." + std::to_string(i % 4);
  auto correct = [&](const std::string& spec) {
    std::unique_ptr<model::AttentionBackend> b;
    EXPECT_TRUE(model::make_attention_backend(spec, &b).ok()) << spec;
    model_->set_attention(std::shared_ptr<model::AttentionBackend>(std::move(b)));
    int ok = 0;
    for (const NeedlePrompt& p : prompts) {
      eval::RetrievalTrial t;
      const std::string expected = model_->tokenizer().decode(std::vector<int32_t>(p.tokens.begin() + p.needle_begin, p.tokens.begin() + p.needle_end));
      EXPECT_TRUE(eval::run_retrieval(model_.get(), p.tokens, expected, 9, &t).ok());
      ok += t.correct;
    }
    model_->set_attention(nullptr);
    return ok;
  };
  EXPECT_EQ(correct("mask_heads:heads=" + zero), 2) << zero;
  EXPECT_EQ(correct("mask_heads:heads=" + top), 0) << top;
  // Induction heads on a repeated random segment: the strongest is far above chance.
  ASSERT_TRUE(induction_echo(model_.get(), 64, 3, 1, &r).ok());
  EXPECT_GT(*std::max_element(r.induction.begin(), r.induction.end()), 0.3);
}

TEST_F(AnalysisModelTest, CalibrationBackendsRunInsideTheModel) {
  const auto ids = kjv(5000, 300);
  double exact = 0, g1 = 0, g2 = 0, act = 0;
  ASSERT_TRUE(perplexity(model_.get(), ids, &exact).ok());
  auto with = [&](const std::string& spec, double* out) {
    std::unique_ptr<model::AttentionBackend> b;
    ASSERT_TRUE(model::make_attention_backend(spec, &b).ok()) << spec;
    model_->set_attention(std::shared_ptr<model::AttentionBackend>(std::move(b)));
    ASSERT_TRUE(perplexity(model_.get(), ids, out).ok()) << spec;
    model_->set_attention(nullptr);
  };
  with("zerotuning:gamma=1,heads=all", &g1);
  with("zerotuning:gamma=2,heads=all", &g2);
  with("act:heads=all,beta=0.4,threshold=0.1", &act);
  EXPECT_NEAR(g1, exact, 1e-3 * exact) << "gamma 1 is exact attention";
  EXPECT_GT(std::fabs(g2 - exact), 1e-3 * exact) << "gamma 2 changes the model";
  EXPECT_TRUE(std::isfinite(act));
  EXPECT_GT(std::fabs(act - exact), 1e-4 * exact) << "ACT finds and rescales mid-sequence sinks";
  ZeroTuningFit f;
  ASSERT_TRUE(zerotuning_fit(model_.get(), kjv(7000, 128), {0.5, 1.0, 2.0}, "all", &f).ok());
  ASSERT_EQ(f.entropy.size(), 3u);
  const size_t best = static_cast<size_t>(std::min_element(f.entropy.begin(), f.entropy.end()) - f.entropy.begin());
  EXPECT_DOUBLE_EQ(f.best_gamma, f.gammas[best]);
}

// ACT's estimator on the model's own queries and keys: every prefill chunk of every layer, its
// sinks against the exact column means over the chunk's rows (the model's recomputed
// probabilities). The detected sets equal the exact ones: a reported sink is verified exactly, and
// on this text no sink's sampled mean falls below half the threshold.
TEST_F(AnalysisModelTest, ActSinksAgreeWithExactColumnMeans) {
  const auto ids = kjv(20000, 1100);  // chunks of 512, 512 and 76 rows; local layers' window 512
  const model::GemmaConfig& cfg = model_->config();
  const double thr = 0.1;
  int64_t exact_total = 0, found_total = 0, false_found = 0, missed = 0, missed_strong = 0;
  double worst_missed = 0;
  act::Scratch sc;
  std::vector<float> lse, out;
  const Status st = stream_attention(model_.get(), ids, [&](const AttentionBlock& b) {
    const int64_t H = b.n_head, D = b.head_dim;
    model::AttentionCall c;
    c.layer = b.layer;
    c.q = TensorView::contiguous(const_cast<float*>(b.q_post), DType::kF32, 1, b.n, H, D);
    c.k = TensorView::contiguous(const_cast<float*>(b.k_post), DType::kF32, 1, b.n_kv, b.n_head_kv, D);
    c.v = c.k;
    out.resize(static_cast<size_t>(b.n * H * D));
    c.out = TensorView::contiguous(out.data(), DType::kF32, 1, b.n, H, D);
    c.q_pos0 = b.pos0;
    c.params.causal = true;
    c.params.window_left = b.window_left;
    c.params.scale = cfg.attn_scale;
    c.params.softcap = cfg.attn_logit_softcap;
    c.params.num_threads = 2;
    lse.resize(static_cast<size_t>(H * b.n));
    ASSERT_TRUE(attention(c.q, c.k, c.v, c.out, lse.data(), c.params).ok());
    std::vector<std::vector<int64_t>> got;
    ASSERT_TRUE(act::find_sinks(c, lse.data(), std::vector<char>(static_cast<size_t>(H), 1), thr, &sc, &got).ok());
    for (int64_t h = 0; h < H; ++h) {
      std::vector<double> col(static_cast<size_t>(b.n_kv), 0.0);
      std::vector<int64_t> rows(static_cast<size_t>(b.n_kv), 0);
      for (int64_t i = 0; i < b.n; ++i) {
        const int64_t p = b.pos0 + i, lo = b.window_left < 0 ? 0 : std::max<int64_t>(0, p - b.window_left);
        const float* a = b.probs + (h * b.n + i) * b.n_kv;
        for (int64_t j = lo; j <= p; ++j) {
          col[static_cast<size_t>(j)] += a[j];
          rows[static_cast<size_t>(j)]++;
        }
      }
      const std::vector<int64_t>& g = got[static_cast<size_t>(h)];
      found_total += static_cast<int64_t>(g.size());
      for (int64_t j = 1; j < b.n_kv; ++j) {
        const int64_t r = rows[static_cast<size_t>(j)];
        const double mean = r > 0 ? col[static_cast<size_t>(j)] / static_cast<double>(r) : 0.0;
        const bool exact = r >= act::kMinRows && mean > thr;
        const bool found = std::binary_search(g.begin(), g.end(), j);
        exact_total += exact;
        // f32 probabilities on both sides: a mean within 1e-4 of the threshold may fall either way.
        if (found && !exact && !(r >= act::kMinRows && mean > thr - 1e-4)) ++false_found;
        if (exact && !found && mean > thr + 1e-4) {
          ++missed;
          worst_missed = std::max(worst_missed, mean);
          missed_strong += mean > 2 * thr;
        }
      }
    }
  });
  ASSERT_TRUE(st.ok()) << st.message();
  std::printf("act sinks on the model: %lld exact, %lld found, %lld false, %lld missed (largest missed mean %.3f)\n",
              static_cast<long long>(exact_total), static_cast<long long>(found_total), static_cast<long long>(false_found),
              static_cast<long long>(missed), worst_missed);
  EXPECT_GT(exact_total, 20) << "Gemma 3 270M has mid-sequence sinks on this text";
  EXPECT_EQ(false_found, 0);
  EXPECT_EQ(missed_strong, 0) << "a sink with column mean above twice the threshold was missed";
  EXPECT_EQ(missed, 0);
  EXPECT_EQ(found_total, exact_total);
}

// ZeroTuning the long way, as a reference for the kernel's key-bias hook: exact attention over
// keys 1.. and the first key merged in afterwards with logit s_0 + ln(gamma) (merge_state_row, the
// merge split-KV uses). It sees the model's cache as the contiguous f32 copy custom backends get.
class MergeZeroTuning final : public model::AttentionBackend {
 public:
  explicit MergeZeroTuning(double gamma) : log_gamma_(std::log(gamma)) {}
  std::string name() const override { return "zerotuning-merge"; }
  Status attend(const model::AttentionCall& c) override {
    const int64_t n = c.q.seq(), n_kv = c.k.seq(), H = c.q.heads(), group = H / c.k.heads(), D = c.q.head_dim(),
                  DV = c.v.head_dim();
    const int64_t slot0 = c.q_pos0 + n - n_kv;  // position of slot 0; the first token only when 0
    if (slot0 != 0 || n_kv < 2) return attention(c.q, c.k, c.v, c.out, nullptr, c.params);
    TensorView k1 = c.k, v1 = c.v;
    k1.data = static_cast<float*>(c.k.data) + c.k.stride[1];
    v1.data = static_cast<float*>(c.v.data) + c.v.stride[1];
    k1.shape[1] = v1.shape[1] = n_kv - 1;
    std::vector<float> lse(static_cast<size_t>(H * n));
    ATTNKIT_RETURN_IF_ERROR(attention(c.q, k1, v1, c.out, lse.data(), c.params));
    const float scale = *c.params.scale;
    for (int64_t s = 0; s < n; ++s) {
      const int64_t p = n_kv - n + s;
      if (c.params.window_left >= 0 && p - c.params.window_left > 0) continue;  // key 0 outside the window
      for (int64_t h = 0; h < H; ++h) {
        const float* q = static_cast<const float*>(c.q.data) + c.q.offset(0, s, h, 0);
        const float* k0 = static_cast<const float*>(c.k.data) + c.k.offset(0, 0, h / group, 0);
        double dot = 0;
        for (int64_t t = 0; t < D; ++t) dot += static_cast<double>(q[t]) * k0[t];
        float* o = static_cast<float*>(c.out.data) + c.out.offset(0, s, h, 0);
        merge_state_row(o, &lse[static_cast<size_t>(h * n + s)], static_cast<const float*>(c.v.data) + c.v.offset(0, 0, h / group, 0),
                        static_cast<float>(dot * scale + log_gamma_), DV);
      }
    }
    return Status::ok_status();
  }

 private:
  double log_gamma_;
};

// The kernel's key-bias hook on the model's default path (paged cache, prefill chunks and decode
// steps) gives the logits of the merge-based formulation above, and differs from exact attention.
TEST_F(AnalysisModelTest, ZeroTuningKernelHookEqualsTheMergeFormulation) {
  const auto ids = kjv(9000, 600);  // two prefill chunks; local layers lose the first token
  const int64_t V = model_->config().n_vocab;
  auto run = [&](std::shared_ptr<model::AttentionBackend> b) {
    model_->set_attention(std::move(b));
    model_->reset();
    std::vector<float> out(static_cast<size_t>(4 * V));
    model::ForwardOutputs fo;
    fo.maybe_last_logits = out.data();
    EXPECT_TRUE(model_->forward(ids.data(), 596, fo).ok());
    for (int64_t i = 0; i < 3; ++i) EXPECT_TRUE(model_->decode(ids[static_cast<size_t>(596 + i)], out.data() + (i + 1) * V).ok());
    model_->set_attention(nullptr);
    return out;
  };
  std::unique_ptr<model::AttentionBackend> zt;
  ASSERT_TRUE(model::make_attention_backend("zerotuning:gamma=3,heads=all", &zt).ok());
  const std::vector<float> hook = run(std::shared_ptr<model::AttentionBackend>(std::move(zt)));
  const std::vector<float> merge = run(std::make_shared<MergeZeroTuning>(3.0));
  const std::vector<float> exact = run(nullptr);
  double diff = 0, moved = 0, scale = 0;
  for (size_t i = 0; i < hook.size(); ++i) {
    diff = std::max(diff, std::fabs(static_cast<double>(hook[i]) - merge[i]));
    moved = std::max(moved, std::fabs(static_cast<double>(hook[i]) - exact[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(exact[i])));
  }
  // f32 KV on both sides; what remains is the order of f32 sums (kernel tiles against merge).
  EXPECT_LT(diff, 2e-3 * scale) << "max |hook - merge| " << diff << " of max |logit| " << scale;
  EXPECT_GT(moved, 50 * diff) << "gamma 3 must move the logits far more than the two forms differ";
}

// The cloze of calibration-eval: items are well formed, the model picks the true next word far
// above chance (1 in 4), and a swapped answer key falls to about chance (the scoring reads the
// right logits).
TEST_F(AnalysisModelTest, ClozeItemsAreWellFormedAndTheModelBeatsChance) {
  const auto ids = kjv(20000, 512);
  std::vector<ClozeItem> items;
  ASSERT_TRUE(make_cloze_items(model_->tokenizer(), ids, ids, 32, 4, 1, &items).ok());
  ASSERT_GT(items.size(), 40u);
  int64_t prev = -100;
  for (const ClozeItem& it : items) {
    EXPECT_GE(it.position, 32);
    EXPECT_GE(it.position - prev, 4);
    prev = it.position;
    EXPECT_EQ(it.choices[0], ids[static_cast<size_t>(it.position + 1)]);
    for (int a = 0; a < 4; ++a) {
      const std::string piece = model_->tokenizer().token_to_piece(it.choices[a]);
      EXPECT_EQ(piece[0], ' ') << piece;
      for (int b = a + 1; b < 4; ++b) EXPECT_NE(it.choices[a], it.choices[b]);
    }
  }
  std::vector<double> correct;
  ASSERT_TRUE(score_cloze(model_.get(), ids, items, &correct).ok());
  ASSERT_EQ(correct.size(), items.size());
  double acc = 0;
  for (double c : correct) acc += c / static_cast<double>(correct.size());
  EXPECT_GT(acc, 0.6);
  std::vector<ClozeItem> swapped = items;
  for (ClozeItem& it : swapped) std::swap(it.choices[0], it.choices[1]);
  std::vector<double> wrong;
  ASSERT_TRUE(score_cloze(model_.get(), ids, swapped, &wrong).ok());
  double acc_wrong = 0;
  for (double c : wrong) acc_wrong += c / static_cast<double>(wrong.size());
  EXPECT_LT(acc_wrong, 0.25);
}

}  // namespace
}  // namespace attnkit::analysis
