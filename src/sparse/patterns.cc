// Static sparse patterns: the element-wise definitions and their closed-form block covers.
//
// Every pattern is defined on (p, j): p = the query's position on the key axis, j = the key.
// cover() answers for a rectangle [p0, p1) x [k0, k1) whether the pattern holds nowhere, somewhere
// or everywhere in it; the BlockMask builder calls it once per (query block, key block) so its
// cost is what makes mask building O(blocks). Patterns that are constant on their own pattern
// blocks (BigBird, PowerAttention, blockwise-local) answer exactly by enumerating the few
// pattern-block pairs the rectangle meets.
#include <algorithm>
#include <cstdint>
#include <string>

#include "attnkit/registry.h"
#include "attnkit/sparse.h"
#include "sparse/methods.h"

namespace attnkit {

Cover SparsePattern::cover(int64_t head, int64_t p0, int64_t p1, int64_t k0, int64_t k1) const {
  bool any = false, all = true;
  for (int64_t p = p0; p < p1; ++p) {
    for (int64_t j = k0; j < k1; ++j) {
      const bool v = visible(head, p, j);
      any |= v;
      all &= v;
    }
  }
  return all ? Cover::kFull : (any ? Cover::kPartial : Cover::kNone);
}

void SparsePattern::visible_row(int64_t head, int64_t p, int64_t k0, int64_t k1, uint8_t* out) const {
  for (int64_t j = k0; j < k1; ++j) out[j - k0] = visible(head, p, j) ? 1 : 0;
}

namespace {

inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// Cover of the band lo <= j - p <= hi (lo may be -inf via INT64_MIN/2, hi +inf) on a rectangle.
Cover band_cover(int64_t lo, int64_t hi, int64_t p0, int64_t p1, int64_t k0, int64_t k1) {
  // d = j - p ranges over [k0 - (p1 - 1), (k1 - 1) - p0].
  const int64_t dmin = k0 - (p1 - 1), dmax = (k1 - 1) - p0;
  if (dmax < lo || dmin > hi) return Cover::kNone;
  if (dmin >= lo && dmax <= hi) return Cover::kFull;
  return Cover::kPartial;
}

Cover cover_union(Cover a, Cover b) {
  if (a == Cover::kFull || b == Cover::kFull) return Cover::kFull;
  if (a == Cover::kPartial || b == Cover::kPartial) return Cover::kPartial;
  return Cover::kNone;
}

constexpr int64_t kInf = INT64_MAX / 4;

class DensePattern final : public SparsePattern {
 public:
  std::string describe() const override { return "dense"; }
  bool visible(int64_t, int64_t, int64_t) const override { return true; }
  Cover cover(int64_t, int64_t, int64_t, int64_t, int64_t) const override { return Cover::kFull; }
};

class WindowPattern final : public SparsePattern {
 public:
  WindowPattern(int64_t left, int64_t right) : left_(left), right_(right) {}
  std::string describe() const override {
    return "window(left=" + std::to_string(left_) + ",right=" + std::to_string(right_) + ")";
  }
  bool visible(int64_t, int64_t p, int64_t j) const override {
    return (left_ < 0 || j >= p - left_) && (right_ < 0 || j <= p + right_);
  }
  Cover cover(int64_t, int64_t p0, int64_t p1, int64_t k0, int64_t k1) const override {
    return band_cover(left_ < 0 ? -kInf : -left_, right_ < 0 ? kInf : right_, p0, p1, k0, k1);
  }

 private:
  int64_t left_, right_;
};

class AShapePattern final : public SparsePattern {
 public:
  AShapePattern(int64_t sinks, int64_t window) : sinks_(sinks), window_(window) {}
  std::string describe() const override {
    return "a_shape(sinks=" + std::to_string(sinks_) + ",window=" + std::to_string(window_) + ")";
  }
  bool visible(int64_t, int64_t p, int64_t j) const override {
    return j < sinks_ || (j >= p - window_ && j <= p + window_);
  }
  Cover cover(int64_t, int64_t p0, int64_t p1, int64_t k0, int64_t k1) const override {
    const Cover sink = k1 <= sinks_ ? Cover::kFull : (k0 < sinks_ ? Cover::kPartial : Cover::kNone);
    return cover_union(sink, band_cover(-window_, window_, p0, p1, k0, k1));
  }

 private:
  int64_t sinks_, window_;
};

// Sparse Transformer "strided": the local band |p - j| < l plus every l-th key behind/ahead.
class StridedPattern final : public SparsePattern {
 public:
  explicit StridedPattern(int64_t stride) : l_(stride) {}
  std::string describe() const override { return "strided(stride=" + std::to_string(l_) + ")"; }
  bool visible(int64_t, int64_t p, int64_t j) const override {
    const int64_t d = p - j;
    return (d < l_ && d > -l_) || d % l_ == 0;
  }
  Cover cover(int64_t, int64_t p0, int64_t p1, int64_t k0, int64_t k1) const override {
    const Cover local = band_cover(-(l_ - 1), l_ - 1, p0, p1, k0, k1);
    if (local != Cover::kNone) {
      // The band is the larger part; the strided columns only matter if the band is partial.
      if (local == Cover::kFull || l_ == 1) return Cover::kFull;
      return Cover::kPartial;
    }
    // Does d = p - j hit a multiple of l in [dmin, dmax]? (A rectangle wider than 1 can never be
    // all multiples of l > 1 unless it is a single element.)
    const int64_t dmin = p0 - (k1 - 1), dmax = (p1 - 1) - k0;
    const bool hit = floor_div(dmax, l_) * l_ >= dmin;
    if (!hit) return Cover::kNone;
    if (dmin == dmax) return Cover::kFull;
    return Cover::kPartial;
  }

 private:
  int64_t l_;
};

class DilatedPattern final : public SparsePattern {
 public:
  DilatedPattern(int64_t segment, int64_t levels) : w0_(segment), levels_(levels) {}
  std::string describe() const override {
    return "dilated(segment=" + std::to_string(w0_) + ",levels=" + std::to_string(levels_) + ")";
  }
  bool visible(int64_t head, int64_t p, int64_t j) const override {
    if (p < 0 || j < 0) return false;
    // floor(p / (w0 2^l)) = floor(p / w0) >> l and x mod 2^l = x & (2^l - 1): two divisions per
    // element instead of two per level (this runs once per element of every partial block).
    const int64_t sp = p / w0_, sj = j / w0_;
    for (int64_t l = 0; l < levels_; ++l) {
      const int64_t mask = (int64_t{1} << l) - 1, off = head & mask;
      if ((sp >> l) == (sj >> l) && (p & mask) == off && (j & mask) == off) return true;
    }
    return false;
  }
  void visible_row(int64_t head, int64_t p, int64_t k0, int64_t k1, uint8_t* out) const override {
    if (p < 0) {
      std::fill(out, out + (k1 - k0), uint8_t{0});
      return;
    }
    const int64_t sp = p / w0_;
    int64_t sj = k0 / w0_, rem = k0 % w0_;  // walk j's level-0 segment without dividing
    for (int64_t j = k0; j < k1; ++j) {
      bool v = false;
      for (int64_t l = 0; l < levels_ && !v; ++l) {
        const int64_t mask = (int64_t{1} << l) - 1, off = head & mask;
        v = (sp >> l) == (sj >> l) && (p & mask) == off && (j & mask) == off;
      }
      out[j - k0] = v ? 1 : 0;
      if (++rem == w0_) {
        rem = 0;
        ++sj;
      }
    }
  }
  Cover cover(int64_t head, int64_t p0, int64_t p1, int64_t k0, int64_t k1) const override {
    const bool clipped = p0 < 0 || k0 < 0;
    p0 = std::max<int64_t>(p0, 0);
    k0 = std::max<int64_t>(k0, 0);
    if (p0 >= p1 || k0 >= k1) return Cover::kNone;
    // Full only through level 0 (dilation 1): the whole rectangle inside one segment.
    if (!clipped && p0 / w0_ == (p1 - 1) / w0_ && k0 / w0_ == (k1 - 1) / w0_ && p0 / w0_ == k0 / w0_) return Cover::kFull;
    for (int64_t l = 0; l < levels_; ++l) {
      const int64_t w = w0_ << l, r = int64_t{1} << l, off = head % r;
      const int64_t s_lo = std::max(p0 / w, k0 / w), s_hi = std::min((p1 - 1) / w, (k1 - 1) / w);
      for (int64_t s = s_lo; s <= s_hi; ++s) {
        if (has_residue(std::max(p0, s * w), std::min(p1, (s + 1) * w), r, off) &&
            has_residue(std::max(k0, s * w), std::min(k1, (s + 1) * w), r, off)) {
          return Cover::kPartial;
        }
      }
    }
    return Cover::kNone;
  }

 private:
  // Some x in [a, b) with x mod r == off (a >= 0).
  static bool has_residue(int64_t a, int64_t b, int64_t r, int64_t off) {
    if (a >= b) return false;
    const int64_t first = a + ((off - a % r) % r + r) % r;
    return first < b;
  }
  int64_t w0_, levels_;
};

// Base for patterns that are constant on blocks of `block` positions: cover() enumerates the
// pattern-block pairs the rectangle meets (one or two per axis when the BlockMask blocks are no
// larger than the pattern blocks).
class BlockConstantPattern : public SparsePattern {
 public:
  explicit BlockConstantPattern(int64_t block) : block_(block) {}
  virtual bool block_visible(int64_t head, int64_t a, int64_t b) const = 0;
  bool visible(int64_t head, int64_t p, int64_t j) const override {
    if (p < 0 || j < 0) return extra_visible(head, p, j);
    return block_visible(head, p / block_, j / block_) || extra_visible(head, p, j);
  }
  Cover cover(int64_t head, int64_t p0, int64_t p1, int64_t k0, int64_t k1) const override {
    const Cover extra = extra_cover(head, p0, p1, k0, k1);
    if (extra == Cover::kFull) return extra;
    // Negative positions (more queries than keys, bottom-right) see only the extra rule.
    bool any = false, all = p0 >= 0 && k0 >= 0;
    p0 = std::max<int64_t>(p0, 0);
    k0 = std::max<int64_t>(k0, 0);
    if (p0 >= p1 || k0 >= k1) return extra;
    for (int64_t a = p0 / block_; a <= (p1 - 1) / block_; ++a) {
      for (int64_t b = k0 / block_; b <= (k1 - 1) / block_; ++b) {
        const bool v = block_visible(head, a, b);
        any |= v;
        all &= v;
      }
    }
    const Cover c = all ? Cover::kFull : (any ? Cover::kPartial : Cover::kNone);
    return cover_union(c, extra);
  }

 protected:
  // Element rules on top of the block rule (sinks); default none.
  virtual bool extra_visible(int64_t, int64_t, int64_t) const { return false; }
  virtual Cover extra_cover(int64_t, int64_t, int64_t, int64_t, int64_t) const { return Cover::kNone; }
  int64_t block_;
};

inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

class BigBirdPattern final : public BlockConstantPattern {
 public:
  BigBirdPattern(int64_t block, int64_t global, int64_t window, int64_t random, uint64_t seed, bool causal_random,
                 int64_t seq_kv)
      : BlockConstantPattern(block), global_(global), window_(window), random_(random), seed_(seed),
        causal_random_(causal_random), n_kb_((seq_kv + block - 1) / block) {}
  std::string describe() const override {
    return "bigbird(block=" + std::to_string(block_) + ",global=" + std::to_string(global_) +
           ",window=" + std::to_string(window_) + ",random=" + std::to_string(random_) +
           ",seed=" + std::to_string(seed_) + ")";
  }
  bool block_visible(int64_t head, int64_t a, int64_t b) const override {
    if (a < global_ || b < global_) return true;
    if (b - a <= window_ && a - b <= window_) return true;
    for (int64_t t = 0; t < random_; ++t) {
      if (random_block(head, a, t) == b) return true;
    }
    return false;
  }
  // The t-th random key block of query block a: a counter-based hash, so every call (mask
  // builder, element rule, reference) agrees without a stored table.
  int64_t random_block(int64_t head, int64_t a, int64_t t) const {
    const int64_t range = causal_random_ ? a + 1 : n_kb_;
    if (range <= 0) return -1;
    const uint64_t h = mix64(seed_ * 0x9e3779b97f4a7c15ull + mix64(static_cast<uint64_t>(head) * 1000003ull +
                                                                   static_cast<uint64_t>(a) * 7919ull +
                                                                   static_cast<uint64_t>(t)));
    return static_cast<int64_t>(h % static_cast<uint64_t>(range));
  }

 private:
  int64_t global_, window_, random_;
  uint64_t seed_;
  bool causal_random_;
  int64_t n_kb_;
};

class PowerPattern final : public BlockConstantPattern {
 public:
  PowerPattern(int64_t block, int64_t sinks) : BlockConstantPattern(block), sinks_(sinks) {}
  std::string describe() const override {
    return "power(block=" + std::to_string(block_) + ",sinks=" + std::to_string(sinks_) + ")";
  }
  bool block_visible(int64_t, int64_t a, int64_t b) const override {
    const int64_t d = a > b ? a - b : b - a;
    return d == 0 || (d & (d - 1)) == 0;
  }

 protected:
  bool extra_visible(int64_t, int64_t, int64_t j) const override { return j >= 0 && j < sinks_; }
  Cover extra_cover(int64_t, int64_t, int64_t, int64_t k0, int64_t k1) const override {
    return k1 <= sinks_ && k0 >= 0 ? Cover::kFull : (k0 < sinks_ ? Cover::kPartial : Cover::kNone);
  }

 private:
  int64_t sinks_;
};

class BlockwiseLocalPattern final : public BlockConstantPattern {
 public:
  BlockwiseLocalPattern(int64_t block, int64_t anchor) : BlockConstantPattern(block), anchor_(anchor) {}
  std::string describe() const override {
    return "star_local(block=" + std::to_string(block_) + ",anchor=" + std::to_string(anchor_) + ")";
  }
  bool block_visible(int64_t, int64_t a, int64_t b) const override { return a == b; }

 protected:
  bool extra_visible(int64_t, int64_t, int64_t j) const override { return j >= 0 && j < anchor_; }
  Cover extra_cover(int64_t, int64_t, int64_t, int64_t k0, int64_t k1) const override {
    return k1 <= anchor_ && k0 >= 0 ? Cover::kFull : (k0 < anchor_ ? Cover::kPartial : Cover::kNone);
  }

 private:
  int64_t anchor_;
};

Status need_positive(const char* name, int64_t v) {
  if (v < 1) return Status::invalid_argument(std::string(name) + " " + std::to_string(v) + " is not supported; expected >= 1");
  return Status::ok_status();
}
Status need_nonneg(const char* name, int64_t v) {
  if (v < 0) return Status::invalid_argument(std::string(name) + " " + std::to_string(v) + " is not supported; expected >= 0");
  return Status::ok_status();
}

}  // namespace

PatternPtr make_dense_pattern() { return std::make_shared<DensePattern>(); }

Status make_window_pattern(int64_t left, int64_t right, PatternPtr* out) {
  if (left < -1) return Status::invalid_argument("window left " + std::to_string(left) + " is not supported; expected -1 or >= 0");
  if (right < -1) return Status::invalid_argument("window right " + std::to_string(right) + " is not supported; expected -1 or >= 0");
  *out = std::make_shared<WindowPattern>(left, right);
  return Status::ok_status();
}

Status make_a_shape_pattern(int64_t sinks, int64_t window, PatternPtr* out) {
  ATTNKIT_RETURN_IF_ERROR(need_nonneg("a_shape sinks", sinks));
  ATTNKIT_RETURN_IF_ERROR(need_nonneg("a_shape window", window));
  *out = std::make_shared<AShapePattern>(sinks, window);
  return Status::ok_status();
}

Status make_strided_pattern(int64_t stride, PatternPtr* out) {
  ATTNKIT_RETURN_IF_ERROR(need_positive("strided stride", stride));
  *out = std::make_shared<StridedPattern>(stride);
  return Status::ok_status();
}

Status make_dilated_pattern(int64_t segment, int64_t levels, PatternPtr* out) {
  ATTNKIT_RETURN_IF_ERROR(need_positive("dilated segment", segment));
  if (levels < 1 || levels > 20) {
    return Status::invalid_argument("dilated levels " + std::to_string(levels) + " is not supported; expected 1..20");
  }
  *out = std::make_shared<DilatedPattern>(segment, levels);
  return Status::ok_status();
}

Status make_bigbird_pattern(int64_t block, int64_t global, int64_t window, int64_t random, uint64_t seed,
                            bool causal_random, int64_t seq_kv, PatternPtr* out) {
  ATTNKIT_RETURN_IF_ERROR(need_positive("bigbird block", block));
  ATTNKIT_RETURN_IF_ERROR(need_nonneg("bigbird global", global));
  ATTNKIT_RETURN_IF_ERROR(need_nonneg("bigbird window", window));
  ATTNKIT_RETURN_IF_ERROR(need_nonneg("bigbird random", random));
  ATTNKIT_RETURN_IF_ERROR(need_nonneg("bigbird seq_kv", seq_kv));
  *out = std::make_shared<BigBirdPattern>(block, global, window, random, seed, causal_random, seq_kv);
  return Status::ok_status();
}

Status make_power_pattern(int64_t block, int64_t sinks, PatternPtr* out) {
  ATTNKIT_RETURN_IF_ERROR(need_positive("power block", block));
  ATTNKIT_RETURN_IF_ERROR(need_nonneg("power sinks", sinks));
  *out = std::make_shared<PowerPattern>(block, sinks);
  return Status::ok_status();
}

Status make_blockwise_local_pattern(int64_t block, int64_t anchor, PatternPtr* out) {
  ATTNKIT_RETURN_IF_ERROR(need_positive("star_local block", block));
  ATTNKIT_RETURN_IF_ERROR(need_nonneg("star_local anchor", anchor));
  *out = std::make_shared<BlockwiseLocalPattern>(block, anchor);
  return Status::ok_status();
}

// ---- registry entries: each pattern as a named sparse method (methods.h) ----

namespace {

using sparse_internal::kBlockParam;
using sparse_internal::pattern_factory;
using sparse_internal::sparse_mechanism;

Mechanism make_sliding_window_mechanism() {
  return sparse_mechanism({"sliding_window", "Sliding-window attention (Longformer) as a block-sparse pattern",
                           {{"left", "1024", "keys at most this far before the query (-1 = unbounded)"},
                            {"right", "0", "keys at most this far after the query (-1 = unbounded)"},
                            kBlockParam},
                           pattern_factory([](const MechanismParams& p, int64_t, PatternPtr* out) -> Status {
                             int64_t left = 0, right = 0;
                             ATTNKIT_RETURN_IF_ERROR(param_int(p, "left", &left));
                             ATTNKIT_RETURN_IF_ERROR(param_int(p, "right", &right));
                             return make_window_pattern(left, right, out);
                           })});
}
ATTNKIT_REGISTER_MECHANISM(make_sliding_window_mechanism);

Mechanism make_a_shape_mechanism() {
  return sparse_mechanism({"a_shape", "A-shape: attention sinks + local window (StreamingLLM / MInference)",
                           {{"sinks", "64", "first keys always visible"},
                            {"window", "1024", "local window (keys either side)"},
                            kBlockParam},
                           pattern_factory([](const MechanismParams& p, int64_t, PatternPtr* out) -> Status {
                             int64_t sinks = 0, window = 0;
                             ATTNKIT_RETURN_IF_ERROR(param_int(p, "sinks", &sinks));
                             ATTNKIT_RETURN_IF_ERROR(param_int(p, "window", &window));
                             return make_a_shape_pattern(sinks, window, out);
                           })});
}
ATTNKIT_REGISTER_MECHANISM(make_a_shape_mechanism);

Mechanism make_strided_mechanism() {
  return sparse_mechanism({"strided", "Strided pattern (Sparse Transformer): local band + every stride-th key",
                           {{"stride", "128", "band width and stride"}, kBlockParam},
                           pattern_factory([](const MechanismParams& p, int64_t, PatternPtr* out) -> Status {
                             int64_t stride = 0;
                             ATTNKIT_RETURN_IF_ERROR(param_int(p, "stride", &stride));
                             return make_strided_pattern(stride, out);
                           })});
}
ATTNKIT_REGISTER_MECHANISM(make_strided_mechanism);

Mechanism make_dilated_mechanism() {
  return sparse_mechanism({"dilated", "Dilated attention (LongNet): segments w*2^l with dilation 2^l, union over levels",
                           {{"segment", "2048", "level-0 segment length"},
                            {"levels", "3", "number of (segment, dilation) levels"},
                            kBlockParam},
                           pattern_factory([](const MechanismParams& p, int64_t, PatternPtr* out) -> Status {
                             int64_t segment = 0, levels = 0;
                             ATTNKIT_RETURN_IF_ERROR(param_int(p, "segment", &segment));
                             ATTNKIT_RETURN_IF_ERROR(param_int(p, "levels", &levels));
                             return make_dilated_pattern(segment, levels, out);
                           })});
}
ATTNKIT_REGISTER_MECHANISM(make_dilated_mechanism);

Mechanism make_bigbird_mechanism() {
  return sparse_mechanism({"bigbird", "BigBird: global + window + seeded random blocks",
                           {{"pattern_block", "64", "BigBird block size"},
                            {"global", "1", "global blocks"},
                            {"window", "3", "window blocks either side"},
                            {"random", "3", "random blocks per query block"},
                            {"seed", "0", "seed of the random blocks"},
                            kBlockParam},
                           pattern_factory([](const MechanismParams& p, int64_t seq_kv, PatternPtr* out) -> Status {
                             int64_t pb = 0, g = 0, w = 0, r = 0, seed = 0;
                             ATTNKIT_RETURN_IF_ERROR(param_int(p, "pattern_block", &pb));
                             ATTNKIT_RETURN_IF_ERROR(param_int(p, "global", &g));
                             ATTNKIT_RETURN_IF_ERROR(param_int(p, "window", &w));
                             ATTNKIT_RETURN_IF_ERROR(param_int(p, "random", &r));
                             ATTNKIT_RETURN_IF_ERROR(param_int(p, "seed", &seed));
                             return make_bigbird_pattern(pb, g, w, r, static_cast<uint64_t>(seed), true, seq_kv, out);
                           })});
}
ATTNKIT_REGISTER_MECHANISM(make_bigbird_mechanism);

Mechanism make_power_attention_mechanism() {
  return sparse_mechanism({"power_attention", "PowerAttention: key blocks at power-of-two block distances + sinks",
                           {{"pattern_block", "64", "block size of the distances"},
                            {"sinks", "64", "first keys always visible"},
                            kBlockParam},
                           pattern_factory([](const MechanismParams& p, int64_t, PatternPtr* out) -> Status {
                             int64_t pb = 0, sinks = 0;
                             ATTNKIT_RETURN_IF_ERROR(param_int(p, "pattern_block", &pb));
                             ATTNKIT_RETURN_IF_ERROR(param_int(p, "sinks", &sinks));
                             return make_power_pattern(pb, sinks, out);
                           })});
}
ATTNKIT_REGISTER_MECHANISM(make_power_attention_mechanism);

Mechanism make_star_local_mechanism() {
  return sparse_mechanism({"star_local", "Blockwise-local attention with an anchor block (Star Attention phase 1)",
                           {{"context_block", "4096", "context block length"},
                            {"anchor", "4096", "anchor prefix length"},
                            kBlockParam},
                           pattern_factory([](const MechanismParams& p, int64_t, PatternPtr* out) -> Status {
                             int64_t cb = 0, anchor = 0;
                             ATTNKIT_RETURN_IF_ERROR(param_int(p, "context_block", &cb));
                             ATTNKIT_RETURN_IF_ERROR(param_int(p, "anchor", &anchor));
                             return make_blockwise_local_pattern(cb, anchor, out);
                           })});
}
ATTNKIT_REGISTER_MECHANISM(make_star_local_mechanism);

Mechanism make_block_dense_mechanism() {
  return sparse_mechanism({"block_dense", "Every causal block through the block-sparse kernel (equals exact attention)",
                           {kBlockParam},
                           pattern_factory([](const MechanismParams&, int64_t, PatternPtr* out) -> Status {
                             *out = make_dense_pattern();
                             return Status::ok_status();
                           })});
}
ATTNKIT_REGISTER_MECHANISM(make_block_dense_mechanism);

}  // namespace

}  // namespace attnkit
