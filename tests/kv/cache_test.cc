// The paged KV cache: appends, evictions, page reuse and byte accounting, and attention over
// pages (attend_cache) against the double reference of contiguous attention through the shared
// case generator and tolerance policy.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>
#include <tuple>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/kv_cache.h"
#include "testing/attn_case.h"
#include "testing/check_attention.h"
#include "testing/plain_attention.h"
#include "testing/tolerance.h"

namespace attnkit::kv {
namespace {

std::unique_ptr<PagedKvCache> make_cache(int64_t heads, int64_t d, KvStorage st, int64_t page = 16, int64_t dv = 0) {
  KvCacheOptions o;
  o.kv_heads = heads;
  o.head_dim = d;
  o.head_dim_v = dv;
  o.page_size = page;
  o.storage = st;
  std::unique_ptr<PagedKvCache> c;
  EXPECT_TRUE(PagedKvCache::create(o, &c).ok());
  return c;
}

// Rows with value = position * 1000 + head * 100 + element, so a moved or lost row is visible.
std::vector<float> tagged_rows(int64_t first_pos, int64_t n, int64_t heads, int64_t d, float offset = 0) {
  std::vector<float> x(static_cast<size_t>(n * heads * d));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t t = 0; t < d; ++t) x[static_cast<size_t>((i * heads + h) * d + t)] = static_cast<float>((first_pos + i) * 1000 + h * 100 + t) + offset;
  return x;
}

void append_positions(PagedKvCache* c, int64_t seq, int64_t p0, int64_t n) {
  const int64_t H = c->options().kv_heads, D = c->options().head_dim, DV = c->options().head_dim_v;
  std::vector<int64_t> pos(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) pos[static_cast<size_t>(i)] = p0 + i;
  const auto k = tagged_rows(p0, n, H, D), v = tagged_rows(p0, n, H, DV, 0.5f);
  ASSERT_TRUE(c->append(seq, n, pos.data(), k.data(), v.data()).ok());
}

void expect_slot_holds(const PagedKvCache& c, int64_t seq, int64_t slot, int64_t position) {
  const int64_t H = c.options().kv_heads, D = c.options().head_dim;
  std::vector<float> row(static_cast<size_t>(D));
  ASSERT_EQ(c.positions(seq)[static_cast<size_t>(slot)], position);
  for (int64_t h = 0; h < H; ++h) {
    c.read_key(seq, slot, h, row.data());
    for (int64_t t = 0; t < D; ++t) ASSERT_EQ(row[static_cast<size_t>(t)], static_cast<float>(position * 1000 + h * 100 + t)) << slot;
    c.read_value(seq, slot, h, row.data());
    for (int64_t t = 0; t < D; ++t) ASSERT_EQ(row[static_cast<size_t>(t)], static_cast<float>(position * 1000 + h * 100 + t) + 0.5f);
  }
}

TEST(PagedKvCache, AppendFillsPagesInOrder) {
  auto c = make_cache(2, 8, KvStorage::kF32, 16);
  append_positions(c.get(), 0, 0, 37);
  EXPECT_EQ(c->size(0), 37);
  EXPECT_EQ(c->pages_in_use(), 3);
  EXPECT_EQ(c->page_table(0), (std::vector<int32_t>{0, 1, 2}));
  for (int64_t s = 0; s < 37; ++s) expect_slot_holds(*c, 0, s, s);
  const int64_t page_bytes = 16 * 2 * (2 * 8) * 4;
  EXPECT_EQ(c->page_bytes(), page_bytes);
  EXPECT_EQ(c->bytes().in_use, 3 * page_bytes);
  EXPECT_GE(c->bytes().allocated, c->bytes().in_use);
}

TEST(PagedKvCache, RetainCompactsAndFreesPages) {
  auto c = make_cache(2, 8, KvStorage::kF32, 16);
  append_positions(c.get(), 0, 0, 100);
  const int64_t before = c->bytes().in_use;
  std::vector<int64_t> keep = {0, 1, 2, 3};
  for (int64_t s = 90; s < 100; ++s) keep.push_back(s);
  keep.insert(keep.begin() + 4, {17, 40, 63});
  std::sort(keep.begin(), keep.end());
  ASSERT_TRUE(c->retain(0, keep).ok());
  ASSERT_EQ(c->size(0), static_cast<int64_t>(keep.size()));
  for (size_t i = 0; i < keep.size(); ++i) expect_slot_holds(*c, 0, static_cast<int64_t>(i), keep[i]);
  EXPECT_EQ(c->pages_in_use(), 2);  // 17 tokens
  EXPECT_LT(c->bytes().in_use, before);
  // Freed pages are reused before the pool grows.
  const int64_t cap = c->pages_capacity();
  append_positions(c.get(), 0, 200, 60);
  EXPECT_EQ(c->pages_capacity(), cap);
  EXPECT_EQ(c->size(0), 77);
  expect_slot_holds(*c, 0, 17, 200);
  expect_slot_holds(*c, 0, 76, 259);
}

TEST(PagedKvCache, DropFrontReleasesWholePagesWithoutCopy) {
  auto c = make_cache(1, 4, KvStorage::kF32, 16);
  append_positions(c.get(), 0, 0, 64);
  const std::vector<int32_t> pages = c->page_table(0);
  ASSERT_TRUE(c->drop_front(0, 32).ok());
  EXPECT_EQ(c->page_table(0), std::vector<int32_t>(pages.begin() + 2, pages.end()));
  EXPECT_EQ(c->size(0), 32);
  expect_slot_holds(*c, 0, 0, 32);
  ASSERT_TRUE(c->drop_front(0, 5).ok());  // not a page multiple: compacts
  EXPECT_EQ(c->size(0), 27);
  expect_slot_holds(*c, 0, 0, 37);
  EXPECT_EQ(c->pages_in_use(), 2);
}

TEST(PagedKvCache, SequencesShareThePoolAndRemoveFreesPages) {
  auto c = make_cache(1, 4, KvStorage::kF32, 8);
  const int64_t s1 = c->add_sequence();
  for (int r = 0; r < 4; ++r) {  // interleaved appends give interleaved pages
    append_positions(c.get(), 0, r * 8, 8);
    append_positions(c.get(), s1, r * 8, 8);
  }
  EXPECT_EQ(c->pages_in_use(), 8);
  for (int64_t s = 0; s < 32; ++s) {
    expect_slot_holds(*c, 0, s, s);
    expect_slot_holds(*c, s1, s, s);
  }
  ASSERT_TRUE(c->remove_sequence(s1).ok());
  EXPECT_EQ(c->pages_in_use(), 4);
  EXPECT_FALSE(c->has_sequence(s1));
  EXPECT_EQ(c->add_sequence(), s1);  // the id is reused
  c->clear();
  EXPECT_EQ(c->pages_in_use(), 0);
  EXPECT_EQ(c->bytes().in_use, 0);
  c->shrink_to_fit();
  EXPECT_EQ(c->bytes().allocated, 0);
}

TEST(PagedKvCache, Bf16AndInt8StoreRoundedRows) {
  std::vector<float> k(64), v(64);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-3, 3);
  for (auto& x : k) x = u(rng);
  for (auto& x : v) x = u(rng);
  const int64_t pos[1] = {5};
  for (KvStorage st : {KvStorage::kBF16, KvStorage::kInt8}) {
    auto c = make_cache(2, 32, st);
    ASSERT_TRUE(c->append(0, 1, pos, k.data(), v.data()).ok());
    std::vector<float> row(32);
    for (int64_t h = 0; h < 2; ++h) {
      c->read_key(0, 0, h, row.data());
      float amax = 0;
      for (int t = 0; t < 32; ++t) amax = std::max(amax, std::fabs(k[h * 32 + t]));
      for (int t = 0; t < 32; ++t) {
        const float x = k[h * 32 + t];
        const float bound = st == KvStorage::kBF16 ? std::fabs(x) * 0x1p-8f : amax / 127.0f * 0.5f * 1.0001f;
        EXPECT_LE(std::fabs(row[t] - x), bound) << kv_storage_name(st);
      }
    }
    const int64_t elem = st == KvStorage::kBF16 ? 2 : 1;
    const int64_t scales = st == KvStorage::kInt8 ? 2 * 16 * 2 * 4 : 0;
    EXPECT_EQ(c->page_bytes(), 16 * 2 * 2 * 32 * elem + scales);
  }
}

TEST(PagedKvCache, BadInputIsNamed) {
  KvCacheOptions o;
  o.kv_heads = 1;
  o.head_dim = 0;
  std::unique_ptr<PagedKvCache> c;
  Status st = PagedKvCache::create(o, &c);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("head_dim 0"), std::string::npos) << st.message();
  auto cache = make_cache(1, 4, KvStorage::kF32);
  append_positions(cache.get(), 0, 10, 4);
  const int64_t back[1] = {12};
  std::vector<float> row(4);
  st = cache->append(0, 1, back, row.data(), row.data());
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("position 12"), std::string::npos) << st.message();
  st = cache->retain(0, {2, 1});
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("keep[1] = 1"), std::string::npos) << st.message();
  st = cache->retain(0, {0, 9});
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("keep[1] = 9"), std::string::npos) << st.message();
  st = cache->append(7, 1, back, row.data(), row.data());
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("seq 7"), std::string::npos) << st.message();
}

// ---- attention over pages ----

// Dense f32 [n, heads, dim] copy of a case tensor.
std::vector<float> dense(const TensorView& t) {
  std::vector<float> x(static_cast<size_t>(t.numel()));
  for (int64_t s = 0; s < t.shape[1]; ++s)
    for (int64_t h = 0; h < t.shape[2]; ++h)
      for (int64_t d = 0; d < t.shape[3]; ++d) x[static_cast<size_t>((s * t.shape[2] + h) * t.shape[3] + d)] = t.get(0, s, h, d);
  return x;
}

// Loads a case's K/V into a cache whose pages are scattered: another sequence takes every other
// page, so the case's pages are not adjacent and attention must follow the page table.
// int8_kv cases hand the cache their unquantized K/V: it quantizes them by the same rule as the
// case generator, so it stores the case's integers and scales.
void load_scattered(const testing::CaseData& d, PagedKvCache* c, int64_t page) {
  const int64_t sk = d.c.seq_kv, H = d.c.heads_kv, D = d.c.head_dim, DV = d.c.head_dim_v;
  const std::vector<float> k = d.c.int8_kv ? d.k_f32 : dense(d.k.view()), v = d.c.int8_kv ? d.v_f32 : dense(d.v.view());
  const int64_t other = c->add_sequence();
  std::vector<float> zk(static_cast<size_t>(page * H * D)), zv(static_cast<size_t>(page * H * DV));
  std::vector<int64_t> zpos(static_cast<size_t>(page));
  int64_t next_other = 0;
  for (int64_t s0 = 0; s0 < sk; s0 += page) {
    const int64_t m = std::min(page, sk - s0);
    std::vector<int64_t> pos(static_cast<size_t>(m));
    for (int64_t i = 0; i < m; ++i) pos[static_cast<size_t>(i)] = s0 + i;
    ASSERT_TRUE(c->append(0, m, pos.data(), k.data() + s0 * H * D, v.data() + s0 * H * DV).ok());
    for (int64_t i = 0; i < page; ++i) zpos[static_cast<size_t>(i)] = next_other++;
    ASSERT_TRUE(c->append(other, page, zpos.data(), zk.data(), zv.data()).ok());
  }
}

struct PageCase {
  testing::AttnCase c;
  int64_t page;
  KvStorage storage() const { return c.int8_kv ? KvStorage::kInt8 : c.dtype == DType::kF32 ? KvStorage::kF32 : KvStorage::kBF16; }
};

std::vector<PageCase> page_cases() {
  std::vector<PageCase> out;
  auto add = [&](int64_t sq, int64_t sk, int64_t hq, int64_t hk, int64_t d, int64_t wl, KvStorage st, int64_t page,
                 int64_t key_bias_index = -1) {
    testing::AttnCase c;
    c.dtype = st == KvStorage::kBF16 ? DType::kBF16 : DType::kF32;
    c.int8_kv = st == KvStorage::kInt8;
    c.key_bias_index = key_bias_index;
    c.seq_q = sq;
    c.seq_kv = sk;
    c.heads_q = hq;
    c.heads_kv = hk;
    c.head_dim = c.head_dim_v = d;
    c.causal = true;
    c.window_left = wl;
    c.seed = static_cast<uint64_t>(sq * 7 + sk * 13 + d);
    out.push_back({c, page});
  };
  for (KvStorage dt : {KvStorage::kF32, KvStorage::kBF16, KvStorage::kInt8}) {
    add(1, 1, 1, 1, 64, -1, dt, 16);        // one key
    add(1, 501, 4, 1, 256, -1, dt, 16);     // decode, Gemma's shape
    add(1, 1023, 8, 2, 64, 100, dt, 16);    // decode with a window
    add(37, 113, 4, 2, 37, -1, dt, 16);     // prefill chunk, odd head dim
    add(113, 501, 4, 1, 128, 63, dt, 16);   // chunk with a window edge inside
    add(64, 200, 2, 2, 64, -1, dt, 1);      // page size 1
    add(65, 300, 4, 4, 16, 129, dt, 32);    // rows past one tile
    add(200, 200, 4, 1, 64, -1, dt, 16);    // the whole prompt as one chunk
    // A logit bias on one key position (ZeroTuning's first token), decode and prefill.
    add(1, 501, 4, 1, 256, -1, dt, 16, 0);
    add(37, 113, 4, 2, 37, -1, dt, 16, 0);
    add(65, 300, 4, 4, 16, 129, dt, 32, 40);  // the biased key leaves the window of later rows
  }
  return out;
}

TEST(AttendCache, MatchesContiguousAttentionOverScatteredPages) {
  for (const PageCase& pc : page_cases()) {
    auto d = testing::make_case_data(pc.c);
    const testing::CaseExpectation e = testing::expect_case(*d);
    auto c = make_cache(pc.c.heads_kv, pc.c.head_dim, pc.storage(), pc.page);
    load_scattered(*d, c.get(), pc.page);
    if (pc.c.seq_kv > pc.page) ASSERT_NE(c->page_table(0)[1], c->page_table(0)[0] + 1) << "pages are adjacent";
    std::vector<float> q = dense(d->q.view());
    std::vector<int64_t> qpos(static_cast<size_t>(pc.c.seq_q));
    for (int64_t i = 0; i < pc.c.seq_q; ++i) qpos[static_cast<size_t>(i)] = pc.c.seq_kv - pc.c.seq_q + i;
    std::vector<float> out(static_cast<size_t>(pc.c.seq_q * pc.c.heads_q * pc.c.head_dim_v));
    CacheAttentionParams p;
    p.window_left = pc.c.window_left;
    p.maybe_key_bias = d->params.maybe_key_bias;
    p.key_bias_position = pc.c.key_bias_index;
    ASSERT_TRUE(attend_cache(*c, 0, TensorView::contiguous(q.data(), DType::kF32, 1, pc.c.seq_q, pc.c.heads_q, pc.c.head_dim), qpos.data(), p,
                             TensorView::contiguous(out.data(), DType::kF32, 1, pc.c.seq_q, pc.c.heads_q, pc.c.head_dim_v),
                             static_cast<float*>(d->lse.view().data))
                    .ok());
    // Into the case's output tensor, so the shared check (tolerance policy, guards) applies.
    for (int64_t i = 0; i < pc.c.seq_q; ++i)
      for (int64_t h = 0; h < pc.c.heads_q; ++h)
        for (int64_t t = 0; t < pc.c.head_dim_v; ++t)
          d->out.view().set(0, i, h, t, out[static_cast<size_t>((i * pc.c.heads_q + h) * pc.c.head_dim_v + t)]);
    const testing::AttentionCheck r = testing::check_case(*d, e);
    EXPECT_TRUE(r.ok) << "page " << pc.page << ": " << r.message;
    if (pc.c.int8_kv) {
      const testing::AttentionCheck b = testing::check_int8_kv_bound(*d, r);
      EXPECT_TRUE(b.ok) << "page " << pc.page << ": " << b.message;
    }
  }
}

// A key bias on a position the cache no longer holds (a sliding-window layer dropped it) biases
// nothing; on a position it holds, found wherever its page sits, it changes the rows that see it.
TEST(AttendCache, KeyBiasFollowsThePositionNotTheSlot) {
  testing::AttnCase kc;
  kc.seq_q = 3;
  kc.seq_kv = 80;
  kc.heads_q = 4;
  kc.heads_kv = 1;
  kc.head_dim = kc.head_dim_v = 32;
  kc.seed = 11;
  auto d = testing::make_case_data(kc);
  const std::vector<float> k = dense(d->k.view()), v = dense(d->v.view()), q = dense(d->q.view());
  auto c = make_cache(1, 32, KvStorage::kBF16, 16);
  std::vector<int64_t> pos(80);
  for (int64_t i = 0; i < 80; ++i) pos[static_cast<size_t>(i)] = i;
  ASSERT_TRUE(c->append(0, 80, pos.data(), k.data(), v.data()).ok());
  ASSERT_TRUE(c->drop_front(0, 32).ok());  // positions 32..79 remain
  const TensorView qv = TensorView::contiguous(const_cast<float*>(q.data()), DType::kF32, 1, 3, 4, 32);
  auto run = [&](const float* bias, int64_t position) {
    std::vector<float> out(3 * 4 * 32);
    CacheAttentionParams p;
    p.maybe_key_bias = bias;
    p.key_bias_position = position;
    EXPECT_TRUE(attend_cache(*c, 0, qv, pos.data() + 77, p, TensorView::contiguous(out.data(), DType::kF32, 1, 3, 4, 32), nullptr).ok());
    return out;
  };
  const std::vector<float> bias = {2.0f, 2.0f, 2.0f, 2.0f};
  const std::vector<float> plain = run(nullptr, 0);
  EXPECT_EQ(run(bias.data(), 0), plain);   // position 0 was dropped
  EXPECT_EQ(run(bias.data(), 31), plain);  // so was 31
  const std::vector<float> at32 = run(bias.data(), 32);
  double diff = 0;
  for (size_t i = 0; i < plain.size(); ++i) diff = std::max(diff, std::fabs(static_cast<double>(at32[i]) - plain[i]));
  EXPECT_GT(diff, 1e-3) << "a logit bias of 2 on a visible key must move the output";
}

// After evictions, attention covers exactly the kept keys (plus the new chunk, causally).
TEST(AttendCache, AfterEvictionEqualsAttentionOverKeptKeys) {
  const int64_t H = 4, HK = 2, D = 32, old_n = 300, n = 20;
  testing::AttnCase big;
  big.seq_q = n;
  big.seq_kv = old_n + n;
  big.heads_q = H;
  big.heads_kv = HK;
  big.head_dim = big.head_dim_v = D;
  big.seed = 9;
  auto src = testing::make_case_data(big);
  const std::vector<float> k = dense(src->k.view()), v = dense(src->v.view()), q = dense(src->q.view());
  auto c = make_cache(HK, D, KvStorage::kF32, 16);
  std::vector<int64_t> pos(static_cast<size_t>(old_n + n));
  for (int64_t i = 0; i < old_n + n; ++i) pos[static_cast<size_t>(i)] = i;
  ASSERT_TRUE(c->append(0, old_n, pos.data(), k.data(), v.data()).ok());
  std::vector<int64_t> keep;
  std::mt19937 rng(5);
  for (int64_t s = 0; s < old_n; ++s)
    if (s < 4 || rng() % 3 == 0) keep.push_back(s);
  ASSERT_TRUE(c->retain(0, keep).ok());
  ASSERT_TRUE(c->append(0, n, pos.data() + old_n, k.data() + old_n * HK * D, v.data() + old_n * HK * D).ok());
  // The same attention as a contiguous case over kept + new keys.
  testing::AttnCase kc = big;
  kc.seq_kv = static_cast<int64_t>(keep.size()) + n;
  kc.causal = true;
  auto d = testing::make_case_data(kc);
  for (int64_t j = 0; j < kc.seq_kv; ++j) {
    const int64_t srow = j < static_cast<int64_t>(keep.size()) ? keep[static_cast<size_t>(j)] : old_n + (j - static_cast<int64_t>(keep.size()));
    for (int64_t h = 0; h < HK; ++h)
      for (int64_t t = 0; t < D; ++t) {
        d->k.view().set(0, j, h, t, k[static_cast<size_t>((srow * HK + h) * D + t)]);
        d->v.view().set(0, j, h, t, v[static_cast<size_t>((srow * HK + h) * D + t)]);
      }
  }
  for (int64_t i = 0; i < n; ++i)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < D; ++t) d->q.view().set(0, i, h, t, q[static_cast<size_t>((i * H + h) * D + t)]);
  const testing::CaseExpectation e = testing::expect_case(*d);
  std::vector<float> out(static_cast<size_t>(n * H * D));
  ASSERT_TRUE(attend_cache(*c, 0, TensorView::contiguous(const_cast<float*>(q.data()), DType::kF32, 1, n, H, D), pos.data() + old_n, {},
                           TensorView::contiguous(out.data(), DType::kF32, 1, n, H, D), static_cast<float*>(d->lse.view().data))
                  .ok());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < D; ++t) d->out.view().set(0, i, h, t, out[static_cast<size_t>((i * H + h) * D + t)]);
  const testing::AttentionCheck r = testing::check_case(*d, e);
  EXPECT_TRUE(r.ok) << r.message;
}

// The kernel's mass pass against probabilities computed in double from the same (rounded) inputs.
TEST(AttendCache, AttentionMassMatchesDoubleProbabilities) {
  for (KvStorage st : {KvStorage::kF32, KvStorage::kBF16, KvStorage::kInt8}) {
    for (const auto& [n, wl, row_begin] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{1, -1, 0}, {70, -1, 0}, {70, 40, 60}, {5, 100, 2}}) {
      const int64_t H = 4, HK = 2, D = 40, sk = 333;
      testing::AttnCase ac;
      ac.seq_q = n;
      ac.seq_kv = sk;
      ac.heads_q = H;
      ac.heads_kv = HK;
      ac.head_dim = ac.head_dim_v = D;
      ac.seed = static_cast<uint64_t>(n + sk);
      ac.int8_kv = st == KvStorage::kInt8;
      auto d = testing::make_case_data(ac);
      std::vector<float> q = dense(d->q.view()), k = ac.int8_kv ? d->k_deq : dense(d->k.view());
      auto c = make_cache(HK, D, st, 16);
      load_scattered(*d, c.get(), 16);
      // The reference sees what the kernel multiplies: storage-rounded K (int8: dequantized) and
      // (for bf16) q.
      if (st == KvStorage::kBF16) {
        for (auto& x : q) x = bf16_to_f32(f32_to_bf16(x));
        for (auto& x : k) x = bf16_to_f32(f32_to_bf16(x));
      }
      std::vector<int64_t> qpos(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) qpos[static_cast<size_t>(i)] = sk - n + i;
      CacheAttentionParams p;
      p.window_left = wl;
      std::vector<float> mass(static_cast<size_t>(HK * sk));
      const std::vector<float> qf = dense(d->q.view());
      ASSERT_TRUE(attention_mass(*c, 0, TensorView::contiguous(const_cast<float*>(qf.data()), DType::kF32, 1, n, H, D), qpos.data(),
                                 row_begin, p, mass.data())
                      .ok());
      std::vector<double> ref(static_cast<size_t>(HK * sk), 0.0);
      const double scale = 1.0 / std::sqrt(static_cast<double>(D));
      for (int64_t i = row_begin; i < n; ++i)
        for (int64_t h = 0; h < H; ++h) {
          const int64_t kh = h / (H / HK), pq = qpos[static_cast<size_t>(i)];
          std::vector<double> lg(static_cast<size_t>(sk), -INFINITY);
          double mx = -INFINITY, sum = 0;
          for (int64_t j = 0; j < sk; ++j) {
            if (j > pq || (wl >= 0 && j < pq - wl)) continue;
            double dot = 0;
            for (int64_t t = 0; t < D; ++t) dot += static_cast<double>(q[static_cast<size_t>((i * H + h) * D + t)]) * k[static_cast<size_t>((j * HK + kh) * D + t)];
            lg[static_cast<size_t>(j)] = dot * scale;
            mx = std::max(mx, lg[static_cast<size_t>(j)]);
          }
          for (double x : lg) sum += std::isinf(x) ? 0.0 : std::exp(x - mx);
          for (int64_t j = 0; j < sk; ++j)
            if (!std::isinf(lg[static_cast<size_t>(j)])) ref[static_cast<size_t>(kh * sk + j)] += std::exp(lg[static_cast<size_t>(j)] - mx) / sum;
        }
      double total = 0, worst = 0;
      for (size_t j = 0; j < ref.size(); ++j) {
        total += mass[j];
        worst = std::max(worst, std::fabs(mass[j] - ref[j]));
        if (ref[j] == 0) EXPECT_EQ(mass[j], 0.0f) << "slot " << j << " is invisible";
      }
      // Each row's probabilities sum to 1: the total is the number of (row, head) pairs.
      EXPECT_NEAR(total, static_cast<double>((n - row_begin) * H), 1e-3 * (n - row_begin) * H) << kv_storage_name(st);
      // bf16 products round to f32 in a different order than double; f32 scores differ by ~1e-6.
      EXPECT_LT(worst, st == KvStorage::kF32 ? 1e-5 : 1e-4) << kv_storage_name(st) << " n " << n << " wl " << wl;
    }
  }
}

}  // namespace
}  // namespace attnkit::kv
