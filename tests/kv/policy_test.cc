// Each eviction policy's kept set against a plain reference implementation of its rule (written
// here independently: positions instead of slots, double-precision softmax, its own top-k), on
// random activations and on real ones from Gemma 3's taps, through chunked prefill and decoding.
// Also the StreamingLLM position shift against attention over keys rotated by their cache index.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <tuple>
#include <string>
#include <vector>

#include "attnkit/gguf.h"
#include "attnkit/kv_cache.h"
#include "attnkit/model.h"
#include "attnkit/tokenizer.h"
#include "attnkit/eval.h"
#include "reference/attention_ref.h"

namespace attnkit::kv {
namespace {

struct Acts {
  int64_t T = 0, H = 0, HK = 0, D = 0;
  std::vector<float> q, k, v;  // [T, H, D], [T, HK, D], [T, HK, D] post-RoPE
  float scale = 0;
};

Acts random_acts(int64_t T, int64_t H, int64_t HK, int64_t D, uint64_t seed) {
  Acts a{T, H, HK, D};
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  a.q.resize(static_cast<size_t>(T * H * D));
  a.k.resize(static_cast<size_t>(T * HK * D));
  a.v.resize(static_cast<size_t>(T * HK * D));
  for (auto& x : a.q) x = nd(rng);
  for (auto& x : a.k) x = nd(rng) * (1.0f + 0.5f * std::uniform_real_distribution<float>(0, 1)(rng));
  for (auto& x : a.v) x = nd(rng);
  a.scale = 1.0f / std::sqrt(static_cast<float>(D));
  return a;
}

// Post-RoPE Q/K and V of one global layer of Gemma 3 270M over KJV text (the model's taps).
const Acts* real_acts() {
  static std::unique_ptr<Acts> cached;
  static bool tried = false;
  if (tried) return cached.get();
  tried = true;
  std::string path;
  if (!gguf::find_default_model(&path).ok()) return nullptr;
  model::LoadOptions lo;
  lo.kv_storage = KvStorage::kF32;
  std::unique_ptr<model::Model> m;
  if (!model::Model::load(path, lo, &m).ok()) return nullptr;
  std::string text;
  if (!eval::kjv_text("", &text).ok()) return nullptr;
  EncodeOptions eo;
  eo.add_bos = true;
  std::vector<int32_t> ids = m->tokenizer().encode(text.substr(0, 4000), eo);
  ids.resize(320);
  auto a = std::make_unique<Acts>();
  const auto& c = m->config();
  a->H = c.n_head;
  a->HK = c.n_head_kv;
  a->D = c.head_dim;
  a->scale = c.attn_scale;
  model::Taps taps;
  taps.layers = {5};
  taps.on_layer = [&](const model::TapData& td) {
    a->q.insert(a->q.end(), td.q_post, td.q_post + td.n * a->H * a->D);
    a->k.insert(a->k.end(), td.k_post, td.k_post + td.n * a->HK * a->D);
    a->v.insert(a->v.end(), td.v, td.v + td.n * a->HK * a->D);
    a->T += td.n;
  };
  m->set_taps(taps);
  model::ForwardOutputs fo;
  if (!m->forward(ids.data(), static_cast<int64_t>(ids.size()), fo).ok()) return nullptr;
  cached = std::move(a);
  return cached.get();
}

// ---- the plain reference ----

// Softmax probabilities of query position p, head h, over the kept positions <= p (double).
std::map<int64_t, double> probs(const Acts& a, const std::vector<int64_t>& kept, int64_t p, int64_t h) {
  const int64_t kh = h / (a.H / a.HK);
  std::map<int64_t, double> logit;
  double mx = -1e300;
  for (int64_t j : kept) {
    if (j > p) continue;
    double dot = 0;
    for (int64_t t = 0; t < a.D; ++t)
      dot += static_cast<double>(a.q[static_cast<size_t>((p * a.H + h) * a.D + t)]) * a.k[static_cast<size_t>((j * a.HK + kh) * a.D + t)];
    logit[j] = dot * a.scale;
    mx = std::max(mx, logit[j]);
  }
  double sum = 0;
  for (auto& [j, l] : logit) sum += std::exp(l - mx);
  for (auto& [j, l] : logit) l = std::exp(l - mx) / sum;
  return logit;
}

// A policy's rule on positions: after a step [t0, t1) has been appended to `kept`, returns the
// scores (position -> score; empty = no scoring) and whether to evict, and the new kept list.
struct RefRule {
  virtual ~RefRule() = default;
  // Returns true and fills new_kept when the rule evicts; scores are for near-tie checks.
  virtual bool step(const Acts& a, const std::vector<int64_t>& kept, int64_t t0, int64_t t1, std::vector<int64_t>* new_kept,
                    std::map<int64_t, double>* scores) = 0;
  // The implementation kept a slightly different set (near-tie): continue from it.
  virtual void adopt(const std::vector<int64_t>& kept) {}
};

// Top `want` of cand by score (ties to the later position) plus the protected ones; sorted.
std::vector<int64_t> ref_top(const std::vector<int64_t>& cand, const std::map<int64_t, double>& score, int64_t want,
                             const std::vector<int64_t>& protect) {
  std::vector<int64_t> c = cand;
  std::sort(c.begin(), c.end(), [&](int64_t x, int64_t y) {
    const double sx = score.at(x), sy = score.at(y);
    return sx != sy ? sx > sy : x > y;
  });
  std::vector<int64_t> out = protect;
  for (int64_t i = 0; i < want && i < static_cast<int64_t>(c.size()); ++i) out.push_back(c[static_cast<size_t>(i)]);
  std::sort(out.begin(), out.end());
  return out;
}

struct RefStreaming : RefRule {
  int64_t sinks, keep;
  RefStreaming(int64_t s, int64_t k) : sinks(s), keep(k) {}
  bool step(const Acts&, const std::vector<int64_t>& kept, int64_t, int64_t, std::vector<int64_t>* nk,
            std::map<int64_t, double>*) override {
    const int64_t n = static_cast<int64_t>(kept.size());
    if (n <= keep) return false;
    nk->clear();
    for (int64_t i = 0; i < sinks; ++i) nk->push_back(kept[static_cast<size_t>(i)]);
    for (int64_t i = n - (keep - sinks); i < n; ++i) nk->push_back(kept[static_cast<size_t>(i)]);
    return true;
  }
};

struct RefKnorm : RefRule {
  int64_t budget;
  double ratio;
  RefKnorm(int64_t b, double r) : budget(b), ratio(r) {}
  bool step(const Acts& a, const std::vector<int64_t>& kept, int64_t, int64_t t1, std::vector<int64_t>* nk,
            std::map<int64_t, double>* sc) override {
    const int64_t keep = ratio >= 0 ? std::max<int64_t>(1, static_cast<int64_t>(t1 * (1.0 - ratio))) : budget;
    if (static_cast<int64_t>(kept.size()) <= keep) return false;
    sc->clear();
    for (int64_t j : kept) {
      double total = 0;
      for (int64_t h = 0; h < a.HK; ++h) {
        double ss = 0;
        for (int64_t t = 0; t < a.D; ++t) {
          const double x = a.k[static_cast<size_t>((j * a.HK + h) * a.D + t)];
          ss += x * x;
        }
        total += std::sqrt(ss);
      }
      (*sc)[j] = -total / static_cast<double>(a.HK);
    }
    *nk = ref_top(kept, *sc, keep, {});
    return true;
  }
};

struct RefTova : RefRule {
  int64_t keep;
  explicit RefTova(int64_t k) : keep(k) {}
  bool step(const Acts& a, const std::vector<int64_t>& kept, int64_t, int64_t t1, std::vector<int64_t>* nk,
            std::map<int64_t, double>* sc) override {
    if (static_cast<int64_t>(kept.size()) <= keep) return false;
    sc->clear();
    for (int64_t j : kept) (*sc)[j] = 0;
    for (int64_t h = 0; h < a.H; ++h)
      for (const auto& [j, p] : probs(a, kept, t1 - 1, h)) (*sc)[j] += p / static_cast<double>(a.H);
    std::vector<int64_t> cand(kept.begin(), kept.end() - 1);
    *nk = ref_top(cand, *sc, keep - 1, {kept.back()});
    return true;
  }
};

struct RefH2o : RefRule {
  int64_t keep;
  double recent;
  std::map<int64_t, double> acc;
  RefH2o(int64_t k, double r) : keep(k), recent(r) {}
  bool step(const Acts& a, const std::vector<int64_t>& kept, int64_t t0, int64_t t1, std::vector<int64_t>* nk,
            std::map<int64_t, double>* sc) override {
    for (int64_t p = t0; p < t1; ++p)
      for (int64_t h = 0; h < a.H; ++h)
        for (const auto& [j, pr] : probs(a, kept, p, h)) acc[j] += pr;
    const int64_t n = static_cast<int64_t>(kept.size());
    if (n <= keep) return false;
    const int64_t r = static_cast<int64_t>(static_cast<double>(keep) * recent);
    std::vector<int64_t> cand(kept.begin(), kept.end() - r), prot(kept.end() - r, kept.end());
    *sc = acc;
    *nk = ref_top(cand, acc, keep - r, prot);
    adopt(*nk);
    return true;
  }
  void adopt(const std::vector<int64_t>& k) override {
    std::map<int64_t, double> a2;
    for (int64_t j : k) a2[j] = acc[j];
    acc = a2;
  }
};

struct RefSnapKv : RefRule {
  int64_t keep, window, kernel, slack;
  std::map<int64_t, double> obs;
  RefSnapKv(int64_t k, int64_t w, int64_t ker) : keep(k), window(w), kernel(ker), slack(w) {}
  bool step(const Acts& a, const std::vector<int64_t>& kept, int64_t t0, int64_t t1, std::vector<int64_t>* nk,
            std::map<int64_t, double>* sc) override {
    if (t1 - t0 >= window) obs.clear();
    for (int64_t p = std::max(t0, t1 - window); p < t1; ++p)
      for (int64_t h = 0; h < a.H; ++h)
        for (const auto& [j, pr] : probs(a, kept, p, h)) obs[j] += pr;
    const int64_t n = static_cast<int64_t>(kept.size());
    if (n <= keep + slack) return false;
    const int64_t prefix = n - window;
    sc->clear();
    for (int64_t i = 0; i < prefix; ++i) {
      double s = 0;
      for (int64_t t = i - kernel / 2; t <= i + kernel / 2; ++t)
        if (t >= 0 && t < prefix) s += obs[kept[static_cast<size_t>(t)]];
      (*sc)[kept[static_cast<size_t>(i)]] = s / static_cast<double>(kernel);
    }
    std::vector<int64_t> cand(kept.begin(), kept.begin() + prefix), prot(kept.begin() + prefix, kept.end());
    *nk = ref_top(cand, *sc, keep - window, prot);
    obs.clear();
    return true;
  }
};

// Runs the policy and the reference side by side over a schedule of steps; checks the kept
// positions after every step. Differences are allowed only between near-tied scores, and then the
// reference continues from the implementation's set.
void compare(const Acts& a, const std::string& spec, RefRule* ref, const std::vector<int64_t>& steps, int64_t* evictions) {
  std::unique_ptr<KvPolicy> policy;
  ASSERT_TRUE(make_kv_policy(spec, &policy).ok()) << spec;
  KvCacheOptions o;
  o.kv_heads = a.HK;
  o.head_dim = a.D;
  o.storage = KvStorage::kF32;
  std::unique_ptr<PagedKvCache> cache;
  ASSERT_TRUE(PagedKvCache::create(o, &cache).ok());
  std::vector<int64_t> kept;
  int64_t t0 = 0, near_ties = 0;
  *evictions = 0;
  for (int64_t n : steps) {
    const int64_t t1 = std::min(a.T, t0 + n);
    if (t1 <= t0) break;
    std::vector<int64_t> pos;
    for (int64_t p = t0; p < t1; ++p) pos.push_back(p);
    std::vector<float> out(static_cast<size_t>((t1 - t0) * a.H * a.D));
    KvStepInput in;
    in.n = t1 - t0;
    in.positions = pos.data();
    in.q = a.q.data() + t0 * a.H * a.D;
    in.k = a.k.data() + t0 * a.HK * a.D;
    in.v = a.v.data() + t0 * a.HK * a.D;
    in.heads_q = a.H;
    in.attn.scale = a.scale;
    in.out = out.data();
    ASSERT_TRUE(kv_layer_step(policy.get(), cache.get(), in).ok()) << spec;
    kept.insert(kept.end(), pos.begin(), pos.end());
    std::vector<int64_t> nk;
    std::map<int64_t, double> sc;
    if (ref->step(a, kept, t0, t1, &nk, &sc)) {
      ++*evictions;
      kept = nk;
    }
    const std::vector<int64_t>& got = cache->positions(0);
    if (got != kept) {
      // Every disagreement must sit at the top-k boundary, within f32 rounding of the scores.
      ASSERT_FALSE(sc.empty()) << spec << ": kept sets differ at step ending " << t1 << " without scores";
      ASSERT_EQ(got.size(), kept.size()) << spec << " at step ending " << t1;
      double kth = 1e300, mx = 0;
      for (int64_t j : kept)
        if (sc.count(j)) kth = std::min(kth, sc[j]);
      for (const auto& [j, s] : sc) mx = std::max(mx, std::fabs(s));
      std::vector<int64_t> diff;
      std::set_symmetric_difference(got.begin(), got.end(), kept.begin(), kept.end(), std::back_inserter(diff));
      for (int64_t j : diff) {
        ASSERT_TRUE(sc.count(j)) << spec << ": position " << j << " differs and has no score (a protected token)";
        EXPECT_LE(std::fabs(sc[j] - kth), 1e-5 * mx) << spec << ": position " << j << " differs at step ending " << t1
                                                      << " with score " << sc[j] << " vs boundary " << kth;
      }
      ++near_ties;
      kept = got;
      ref->adopt(kept);
    }
    t0 = t1;
  }
  EXPECT_LE(near_ties, 2) << spec << ": too many near-tie differences";
  EXPECT_EQ(t0, a.T);
}

// Prefill chunks (as the model runs them) then single-token decode steps.
std::vector<int64_t> schedule(int64_t T) {
  std::vector<int64_t> s = {64, 64, 37, 64};
  int64_t used = 64 + 64 + 37 + 64;
  while (used < T) {
    s.push_back(1);
    ++used;
  }
  return s;
}

struct PolicyCase {
  std::string spec;
  std::function<std::unique_ptr<RefRule>()> ref;
};

std::vector<PolicyCase> policy_cases() {
  return {
      {"streaming:sinks=4,budget=48", [] { return std::make_unique<RefStreaming>(4, 48); }},
      {"streaming:sinks=2,window=30", [] { return std::make_unique<RefStreaming>(2, 32); }},
      {"knorm:budget=40", [] { return std::make_unique<RefKnorm>(40, -1); }},
      {"knorm:ratio=0.75", [] { return std::make_unique<RefKnorm>(0, 0.75); }},
      {"tova:budget=40", [] { return std::make_unique<RefTova>(40); }},
      {"h2o:budget=48", [] { return std::make_unique<RefH2o>(48, 0.5); }},
      {"h2o:budget=40,recent=0.25", [] { return std::make_unique<RefH2o>(40, 0.25); }},
      {"snapkv:budget=48,window=8,kernel=5", [] { return std::make_unique<RefSnapKv>(48, 8, 5); }},
      {"snapkv:budget=40,window=16,kernel=7", [] { return std::make_unique<RefSnapKv>(40, 16, 7); }},
  };
}

TEST(KvPolicies, KeptSetsMatchReferenceOnRandomActivations) {
  for (const auto& [H, HK, D] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{4, 1, 64}, {4, 2, 37}}) {
    const Acts a = random_acts(300, H, HK, D, static_cast<uint64_t>(H * 100 + D));
    for (const PolicyCase& pc : policy_cases()) {
      auto ref = pc.ref();
      int64_t ev = 0;
      compare(a, pc.spec, ref.get(), schedule(a.T), &ev);
      EXPECT_GT(ev, 3) << pc.spec << ": the schedule should evict during prefill and decoding";
    }
  }
}

TEST(KvPolicies, KeptSetsMatchReferenceOnGemmaActivations) {
  const Acts* a = real_acts();
  if (a == nullptr) GTEST_SKIP() << "Gemma 3 270M GGUF or the KJV text is not installed";
  ASSERT_EQ(a->T, 320);
  for (const PolicyCase& pc : policy_cases()) {
    auto ref = pc.ref();
    int64_t ev = 0;
    compare(*a, pc.spec, ref.get(), schedule(a->T), &ev);
    EXPECT_GT(ev, 3) << pc.spec;
  }
}

TEST(KvPolicies, RegistryBuildsPoliciesAndNamesBadParameters) {
  for (const char* n : {"streaming", "knorm", "tova", "h2o", "snapkv"}) {
    std::unique_ptr<KvPolicy> p;
    ASSERT_TRUE(make_kv_policy(n, &p).ok()) << n;
    EXPECT_EQ(p->name().substr(0, std::string(n).size()), n);
    EXPECT_TRUE(p->applies_to(5, true));
    EXPECT_FALSE(p->applies_to(0, false)) << n << ": local layers are window-sized already";
  }
  struct Bad {
    const char* spec;
    const char* fragment;
  } bad[] = {{"h2o:budget=0", "budget=0"},       {"h2o:ratio=1.5", "ratio=1.5"},
             {"tova:layers=odd", "layers=odd"},  {"snapkv:kernel=4", "kernel=4"},
             {"snapkv:pool=median", "pool=median"}, {"h2o:recent=2", "recent=2"},
             {"streaming:nope=1", "nope"},        {"nosuch", "nosuch"},
             {"exact", "not a KV policy"},        {"knorm:slack=-3", "slack=-3"}};
  for (const Bad& b : bad) {
    std::unique_ptr<KvPolicy> p;
    const Status st = make_kv_policy(b.spec, &p);
    ASSERT_FALSE(st.ok()) << b.spec;
    EXPECT_NE(st.message().find(b.fragment), std::string::npos) << st.message();
    EXPECT_EQ(p, nullptr);
  }
}

TEST(KvPolicies, BenchmarkRunsUnderThePolicy) {
  for (const char* n : {"streaming", "knorm", "tova", "h2o", "snapkv"}) {
    const Mechanism* m = nullptr;
    MechanismParams p;
    ASSERT_TRUE(parse_mechanism_spec(std::string(n) + ":budget=64", &m, &p).ok()) << n;
    EXPECT_EQ(m->family, "kv");
    ProblemShape s;
    s.seq_q = 1;
    s.seq_kv = 300;
    s.heads_q = 4;
    s.heads_kv = 1;
    s.head_dim = 32;
    std::unique_ptr<PreparedRun> run;
    ASSERT_TRUE(m->prepare(s, p, &run).ok()) << n;
    for (int i = 0; i < 40; ++i) ASSERT_TRUE(run->run().ok()) << n;
    // Budget 64 (+ snapkv's slack of one window) bounds the cache the runs work on.
    EXPECT_LE(run->bytes(), (64 + 32 + 16) / 16 * 16 * 2 * 32 * 4 + 2 * 16 * 2 * 32 * 4) << n;
    EXPECT_GT(run->flops(), 0) << n;
  }
}

// ---- StreamingLLM position shift ----

void rope(float* x, int64_t d, double pos, const std::vector<double>& inv_freq) {
  for (int64_t i = 0; i < d / 2; ++i) {
    const double a = pos * inv_freq[static_cast<size_t>(i)];
    const double x0 = x[i], x1 = x[i + d / 2];
    x[i] = static_cast<float>(x0 * std::cos(a) - x1 * std::sin(a));
    x[i + d / 2] = static_cast<float>(x0 * std::sin(a) + x1 * std::cos(a));
  }
}

// Max |output - reference| over the schedule; `offset` adds a large mean to two key channels, as
// Gemma's post-RoPE keys carry, which int8 smoothing takes out.
double streaming_shift_error(KvStorage storage, bool smoothing, float offset, int64_t* shifted, int64_t* final_size) {
  const int64_t T = 120, H = 2, HK = 1, D = 16;
  Acts pre = random_acts(T, H, HK, D, 77);
  // The lowest-frequency rotary pair (channels D/2 - 1 and D - 1) turns by under 0.05 rad over the
  // T positions, so an offset there is a near-constant channel mean of the post-RoPE keys.
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c : {D / 2 - 1, D - 1}) pre.k[static_cast<size_t>(t * HK * D + c)] += offset;
  std::vector<double> inv_freq(D / 2);
  for (int64_t i = 0; i < D / 2; ++i) inv_freq[static_cast<size_t>(i)] = std::pow(10000.0, -2.0 * i / D);
  Acts post = pre;  // rotated at absolute positions, as the model caches them
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < H; ++h) rope(post.q.data() + (t * H + h) * D, D, static_cast<double>(t), inv_freq);
    for (int64_t h = 0; h < HK; ++h) rope(post.k.data() + (t * HK + h) * D, D, static_cast<double>(t), inv_freq);
  }
  std::unique_ptr<KvPolicy> policy;
  EXPECT_TRUE(make_kv_policy("streaming:sinks=3,window=20,shift=true", &policy).ok());
  KvCacheOptions o;
  o.kv_heads = HK;
  o.head_dim = D;
  o.storage = storage;
  o.int8_smoothing = smoothing;
  std::unique_ptr<PagedKvCache> cache;
  EXPECT_TRUE(PagedKvCache::create(o, &cache).ok());
  int64_t t0 = 0;
  double worst = 0;
  int64_t shifted_steps = 0;
  for (int64_t n : std::vector<int64_t>{30, 30, 1, 1, 7, 1, 1, 1, 5, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}) {
    const int64_t t1 = std::min(T, t0 + n);
    std::vector<int64_t> pos;
    for (int64_t p = t0; p < t1; ++p) pos.push_back(p);
    std::vector<int64_t> slots_pos = cache->positions(0);  // before the append
    slots_pos.insert(slots_pos.end(), pos.begin(), pos.end());
    const int64_t m = static_cast<int64_t>(slots_pos.size()), nq = t1 - t0;
    if (slots_pos.front() == 0 && slots_pos.back() != m - 1) ++shifted_steps;
    // Reference: keys rotated by their slot, queries by their own slot, causal by slot.
    std::vector<float> kr(static_cast<size_t>(m * HK * D)), vr(static_cast<size_t>(m * HK * D)), qr(static_cast<size_t>(nq * H * D));
    for (int64_t s = 0; s < m; ++s) {
      const int64_t p = slots_pos[static_cast<size_t>(s)];
      std::copy(pre.k.begin() + p * HK * D, pre.k.begin() + (p + 1) * HK * D, kr.begin() + s * HK * D);
      std::copy(pre.v.begin() + p * HK * D, pre.v.begin() + (p + 1) * HK * D, vr.begin() + s * HK * D);
      rope(kr.data() + s * HK * D, D, static_cast<double>(s), inv_freq);
    }
    for (int64_t i = 0; i < nq; ++i) {
      std::copy(pre.q.begin() + (t0 + i) * H * D, pre.q.begin() + (t0 + i + 1) * H * D, qr.begin() + i * H * D);
      for (int64_t h = 0; h < H; ++h) rope(qr.data() + (i * H + h) * D, D, static_cast<double>(m - nq + i), inv_freq);
    }
    AttentionParams ap;
    ap.causal = true;
    ap.scale = pre.scale;
    reference::RefResult ref;
    EXPECT_TRUE(reference::attention_ref_f64(TensorView::contiguous(qr.data(), DType::kF32, 1, nq, H, D),
                                             TensorView::contiguous(kr.data(), DType::kF32, 1, m, HK, D),
                                             TensorView::contiguous(vr.data(), DType::kF32, 1, m, HK, D), false, ap, &ref)
                    .ok());
    std::vector<float> out(static_cast<size_t>(nq * H * D));
    KvStepInput in;
    in.n = nq;
    in.positions = pos.data();
    in.q = post.q.data() + t0 * H * D;
    in.k = post.k.data() + t0 * HK * D;
    in.v = post.v.data() + t0 * HK * D;
    in.heads_q = H;
    in.attn.scale = pre.scale;
    in.maybe_rope_inv_freq = inv_freq.data();
    in.out = out.data();
    EXPECT_TRUE(kv_layer_step(policy.get(), cache.get(), in).ok());
    for (size_t i = 0; i < out.size(); ++i) worst = std::max(worst, std::fabs(out[i] - ref.out[i]));
    t0 = t1;
  }
  *shifted = shifted_steps;
  *final_size = cache->size(0);
  return worst;
}

TEST(KvPolicies, StreamingShiftAttendsWithKeysAtTheirCacheIndex) {
  int64_t shifted = 0, size = 0;
  EXPECT_LT(streaming_shift_error(KvStorage::kF32, false, 0.0f, &shifted, &size), 1e-4);
  EXPECT_GT(shifted, 10) << "the schedule should attend over a shifted cache";
  EXPECT_EQ(size, 23);
  // Smoothed int8 rows: each run of slots gets its own rotated query's q . mean back in its LSE, so
  // the runs merge as over the true keys. Keys with offset channels: smoothing keeps the error well
  // below the plain int8 rows' (a missing per-run correction would weight the runs wrongly).
  const double plain = streaming_shift_error(KvStorage::kInt8, false, 30.0f, &shifted, &size);
  const double smooth = streaming_shift_error(KvStorage::kInt8, true, 30.0f, &shifted, &size);
  std::printf("position shift, offset key channels: max error int8 %.3g, smoothed int8 %.3g\n", plain, smooth);
  EXPECT_LT(smooth, 0.5 * plain);
  EXPECT_LT(smooth, 2e-2);
}

}  // namespace
}  // namespace attnkit::kv
