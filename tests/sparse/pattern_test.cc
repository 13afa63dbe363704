// Static patterns: each one's BlockMask, read element by element, equals its definition, and
// the closed-form cover() agrees with brute force.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "attnkit/sparse.h"

namespace attnkit {
namespace {

// The definitions written out independently of src/sparse (from the papers' descriptions), on
// the key-axis position p and key j.
bool def_window(int64_t l, int64_t r, int64_t p, int64_t j) { return (l < 0 || j >= p - l) && (r < 0 || j <= p + r); }
bool def_a_shape(int64_t sinks, int64_t w, int64_t p, int64_t j) { return j < sinks || (j >= p - w && j <= p + w); }
bool def_strided(int64_t l, int64_t p, int64_t j) {
  const int64_t d = p > j ? p - j : j - p;
  return d < l || d % l == 0;
}
bool def_dilated(int64_t w0, int64_t levels, int64_t h, int64_t p, int64_t j) {
  if (p < 0) return false;
  for (int64_t lv = 0, w = w0, r = 1; lv < levels; ++lv, w *= 2, r *= 2) {
    if (p / w == j / w && p % r == h % r && j % r == h % r) return true;
  }
  return false;
}
bool def_power(int64_t bs, int64_t sinks, int64_t p, int64_t j) {
  if (j < sinks) return true;
  if (p < 0) return false;
  int64_t d = p / bs - j / bs;
  if (d < 0) d = -d;
  return d == 0 || d == 1 || d == 2 || d == 4 || d == 8 || d == 16 || d == 32 || d == 64;
}
bool def_star(int64_t bs, int64_t anchor, int64_t p, int64_t j) { return j < anchor || (p >= 0 && p / bs == j / bs); }

struct Shape {
  int64_t sq, sk;
  bool causal;
  CausalAlign align;
  int64_t bq, bk;
};

void expect_mask_matches(const PatternPtr& pat, const std::function<bool(int64_t, int64_t, int64_t)>& def,
                         int64_t heads) {
  const std::vector<Shape> shapes = {{100, 100, true, CausalAlign::kBottomRight, 16, 16},
                                     {77, 133, true, CausalAlign::kBottomRight, 16, 32},
                                     {133, 77, true, CausalAlign::kTopLeft, 32, 16},
                                     {90, 90, false, CausalAlign::kBottomRight, 32, 8},
                                     {61, 129, false, CausalAlign::kBottomRight, 64, 64}};
  for (const Shape& sh : shapes) {
    SCOPED_TRACE(pat->describe() + " sq=" + std::to_string(sh.sq) + " sk=" + std::to_string(sh.sk) +
                 (sh.causal ? " causal" : "") + " block " + std::to_string(sh.bq) + "x" + std::to_string(sh.bk));
    BlockMaskShape s;
    s.batch = 2;
    s.heads = heads;
    s.seq_q = sh.sq;
    s.seq_kv = sh.sk;
    s.block_q = sh.bq;
    s.block_k = sh.bk;
    s.causal = sh.causal;
    s.causal_align = sh.align;
    BlockMask m;
    ASSERT_TRUE(build_block_mask(s, pat, &m).ok());
    ASSERT_TRUE(validate_block_mask(m).ok());
    const int64_t off = sh.align == CausalAlign::kBottomRight ? sh.sk - sh.sq : 0;
    int64_t mismatches = 0;
    std::vector<uint8_t> row(sh.sk);
    for (int64_t b = 0; b < 2; ++b) {
      for (int64_t h = 0; h < heads; ++h) {
        for (int64_t i = 0; i < sh.sq; ++i) {
          std::fill(row.begin(), row.end(), 0);
          block_mask_visited_row(m, b, h, i, row.data());
          const int64_t p = i + off;
          for (int64_t j = 0; j < sh.sk; ++j) {
            const bool want = (!sh.causal || j <= p) && def(h, p, j);
            if ((row[j] != 0) != want && mismatches++ < 5) {
              ADD_FAILURE() << "b=" << b << " h=" << h << " i=" << i << " j=" << j << " mask=" << int(row[j])
                            << " definition=" << want;
            }
          }
        }
      }
    }
    EXPECT_EQ(mismatches, 0);
    // Full blocks really are full, listed blocks are not empty, unlisted blocks are empty.
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t qb = 0; qb < m.n_q_blocks(); ++qb) {
        const int64_t l = m.list_index(0, h, qb);
        const int64_t r0 = qb * sh.bq, r1 = std::min(sh.sq, r0 + sh.bq);
        std::vector<int> kind(m.n_k_blocks(), 0);
        for (int64_t e = m.full_offsets[l]; e < m.full_offsets[l + 1]; ++e) kind[m.full_blocks[e]] = 2;
        for (int64_t e = m.partial_offsets[l]; e < m.partial_offsets[l + 1]; ++e) kind[m.partial_blocks[e]] = 1;
        for (int64_t kb = 0; kb < m.n_k_blocks(); ++kb) {
          bool any_causal_visible = false, all_pattern = true;
          for (int64_t i = r0; i < r1; ++i) {
            for (int64_t j = kb * sh.bk; j < std::min(sh.sk, (kb + 1) * sh.bk); ++j) {
              const bool c = !sh.causal || j <= i + off;
              const bool d = def(h, i + off, j);
              any_causal_visible |= c && d;
              all_pattern &= d;
            }
          }
          if (any_causal_visible) EXPECT_NE(kind[kb], 0) << "needed block skipped qb=" << qb << " kb=" << kb;
          if (kind[kb] == 2) EXPECT_TRUE(all_pattern) << "block marked full is not qb=" << qb << " kb=" << kb;
        }
      }
    }
  }
}

TEST(Patterns, WindowMatchesDefinition) {
  for (auto [l, r] : std::vector<std::pair<int64_t, int64_t>>{{10, 0}, {0, 0}, {17, 5}, {-1, 3}, {40, -1}}) {
    PatternPtr p;
    ASSERT_TRUE(make_window_pattern(l, r, &p).ok());
    expect_mask_matches(p, [l = l, r = r](int64_t, int64_t pp, int64_t j) { return def_window(l, r, pp, j); }, 1);
  }
}

TEST(Patterns, AShapeMatchesDefinition) {
  for (auto [s, w] : std::vector<std::pair<int64_t, int64_t>>{{4, 16}, {0, 30}, {20, 3}}) {
    PatternPtr p;
    ASSERT_TRUE(make_a_shape_pattern(s, w, &p).ok());
    expect_mask_matches(p, [s = s, w = w](int64_t, int64_t pp, int64_t j) { return def_a_shape(s, w, pp, j); }, 1);
  }
}

TEST(Patterns, StridedMatchesDefinition) {
  for (int64_t l : {1, 3, 16, 23}) {
    PatternPtr p;
    ASSERT_TRUE(make_strided_pattern(l, &p).ok());
    expect_mask_matches(p, [l](int64_t, int64_t pp, int64_t j) { return def_strided(l, pp, j); }, 1);
  }
}

TEST(Patterns, DilatedMatchesDefinition) {
  for (auto [w, lv] : std::vector<std::pair<int64_t, int64_t>>{{8, 3}, {16, 2}, {5, 4}}) {
    PatternPtr p;
    ASSERT_TRUE(make_dilated_pattern(w, lv, &p).ok());
    expect_mask_matches(p, [w = w, lv = lv](int64_t h, int64_t pp, int64_t j) { return def_dilated(w, lv, h, pp, j); }, 3);
  }
}

TEST(Patterns, PowerMatchesDefinition) {
  for (auto [bs, s] : std::vector<std::pair<int64_t, int64_t>>{{8, 0}, {4, 5}, {16, 1}}) {
    PatternPtr p;
    ASSERT_TRUE(make_power_pattern(bs, s, &p).ok());
    expect_mask_matches(p, [bs = bs, s = s](int64_t, int64_t pp, int64_t j) { return def_power(bs, s, pp, j); }, 1);
  }
}

TEST(Patterns, BlockwiseLocalMatchesDefinition) {
  for (auto [bs, a] : std::vector<std::pair<int64_t, int64_t>>{{32, 32}, {20, 7}, {16, 0}}) {
    PatternPtr p;
    ASSERT_TRUE(make_blockwise_local_pattern(bs, a, &p).ok());
    expect_mask_matches(p, [bs = bs, a = a](int64_t, int64_t pp, int64_t j) { return def_star(bs, a, pp, j); }, 1);
  }
}

TEST(Patterns, BigBirdMatchesItsDefinitionAndHasRandomBlocks) {
  PatternPtr p;
  const int64_t bs = 8, g = 1, w = 1, r = 2;
  ASSERT_TRUE(make_bigbird_pattern(bs, g, w, r, 7, true, 133, &p).ok());
  // Global and window parts are fixed; the random part: each query block must see at least one
  // block outside global/window for most blocks, and never a block after itself (causal_random).
  auto fixed = [&](int64_t a, int64_t b) { return a < g || b < g || (a - b <= w && b - a <= w); };
  int64_t extra = 0;
  for (int64_t a = 0; a < 17; ++a) {
    for (int64_t b = 0; b < 17; ++b) {
      const bool v = p->visible(0, a * bs, b * bs);
      if (fixed(a, b)) EXPECT_TRUE(v);
      if (!fixed(a, b) && v) {
        ++extra;
        EXPECT_LE(b, a) << "random block after its query block";
      }
      // Constant on pattern blocks.
      EXPECT_EQ(v, p->visible(0, a * bs + bs - 1, b * bs + 3));
    }
  }
  EXPECT_GT(extra, 5);
  // The BlockMask, element by element, matches visible() (the element rule is the definition,
  // which the kernel test compares with the reference).
  expect_mask_matches(p, [p](int64_t h, int64_t pp, int64_t j) { return p->visible(h, pp, j); }, 2);
  // Same seed, same pattern; another seed, another one.
  PatternPtr p2, p3;
  ASSERT_TRUE(make_bigbird_pattern(bs, g, w, r, 7, true, 133, &p2).ok());
  ASSERT_TRUE(make_bigbird_pattern(bs, g, w, r, 8, true, 133, &p3).ok());
  int64_t diff = 0;
  for (int64_t a = 0; a < 17; ++a)
    for (int64_t b = 0; b < 17; ++b) {
      EXPECT_EQ(p->visible(1, a * bs, b * bs), p2->visible(1, a * bs, b * bs));
      diff += p->visible(1, a * bs, b * bs) != p3->visible(1, a * bs, b * bs);
    }
  EXPECT_GT(diff, 0);
}

TEST(Patterns, CoverAgreesWithBruteForce) {
  std::vector<PatternPtr> pats(7);
  ASSERT_TRUE(make_window_pattern(9, 2, &pats[0]).ok());
  ASSERT_TRUE(make_a_shape_pattern(3, 7, &pats[1]).ok());
  ASSERT_TRUE(make_strided_pattern(6, &pats[2]).ok());
  ASSERT_TRUE(make_dilated_pattern(4, 3, &pats[3]).ok());
  ASSERT_TRUE(make_bigbird_pattern(5, 1, 1, 1, 3, false, 60, &pats[4]).ok());
  ASSERT_TRUE(make_power_pattern(4, 2, &pats[5]).ok());
  ASSERT_TRUE(make_blockwise_local_pattern(6, 3, &pats[6]).ok());
  for (const PatternPtr& pat : pats) {
    SCOPED_TRACE(pat->describe());
    for (int64_t p0 = -3; p0 < 40; p0 += 3) {
      for (int64_t k0 = 0; k0 < 40; k0 += 4) {
        for (int64_t len : {1, 5, 8}) {
          const int64_t p1 = p0 + len, k1 = k0 + len + 2;
          bool any = false, all = true;
          for (int64_t pp = p0; pp < p1; ++pp)
            for (int64_t j = k0; j < k1; ++j) {
              any |= pat->visible(1, pp, j);
              all &= pat->visible(1, pp, j);
            }
          const Cover c = pat->cover(1, p0, p1, k0, k1);
          // Sound: full only when all, none only when none; partial only when some.
          if (c == Cover::kFull) EXPECT_TRUE(all) << p0 << " " << k0 << " " << len;
          if (c == Cover::kNone) EXPECT_FALSE(any) << p0 << " " << k0 << " " << len;
          if (c == Cover::kPartial) EXPECT_TRUE(any) << p0 << " " << k0 << " " << len;
        }
      }
    }
  }
}

TEST(Patterns, VisibleRowAgreesWithVisible) {
  // The kernel reads partial blocks through visible_row(); it must equal visible() everywhere.
  std::vector<PatternPtr> pats(4);
  ASSERT_TRUE(make_dilated_pattern(5, 4, &pats[0]).ok());
  ASSERT_TRUE(make_dilated_pattern(16, 2, &pats[1]).ok());
  ASSERT_TRUE(make_window_pattern(7, 3, &pats[2]).ok());
  ASSERT_TRUE(make_bigbird_pattern(4, 1, 1, 2, 5, true, 80, &pats[3]).ok());
  std::vector<uint8_t> row(64);
  for (const PatternPtr& pat : pats) {
    for (int64_t h = 0; h < 3; ++h) {
      for (int64_t p = -2; p < 80; ++p) {
        for (int64_t k0 : {0, 3, 17, 40}) {
          const int64_t k1 = k0 + 37;
          pat->visible_row(h, p, k0, k1, row.data());
          for (int64_t j = k0; j < k1; ++j) {
            ASSERT_EQ(row[j - k0] != 0, pat->visible(h, p, j)) << pat->describe() << " h=" << h << " p=" << p << " j=" << j;
          }
        }
      }
    }
  }
}

TEST(Patterns, DensityOfWindowIsAsExpected) {
  // Causal window of 1023 keys over 8192 tokens with 64x64 blocks: computed pairs are the
  // visited blocks' causal pairs, a little above the exact window's share.
  PatternPtr p;
  ASSERT_TRUE(make_window_pattern(1023, 0, &p).ok());
  BlockMaskShape s;
  s.seq_q = s.seq_kv = 8192;
  s.causal = true;
  BlockMask m;
  ASSERT_TRUE(build_block_mask(s, p, &m).ok());
  const BlockMaskStats st = block_mask_stats(m);
  const double exact_share = (1024.0 * 8192 - 1024.0 * 1023 / 2) / (8192.0 * 8193 / 2);
  EXPECT_GE(st.density, exact_share);
  EXPECT_LE(st.density, exact_share * 1.15);
}

}  // namespace
}  // namespace attnkit
