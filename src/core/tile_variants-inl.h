// core/tile_variants-inl.h: the attention variants of the tile kernel as small functors, the way
// FlashInfer writes them (Ye et al., "FlashInfer: Efficient and Customizable Attention Engine for
// LLM Inference Serving", 2025): one kernel, and per variant
//   kUseSoftmax       whether rows keep a running max and denominator (online softmax), or each
//                     logit becomes a weight on its own through Weight();
//   LogitsTransform   what is done to a tile of scores before masking;
//   LogitsMask        which (row, key) pairs of a tile are invisible (their score becomes -inf);
//   OutputTransform   how a row's running state becomes its output and LSE.
// The hooks of attention.h (softcap, ALiBi, additive and boolean masks, a key bias, windows,
// sinks, a sparse pattern's extra mask) are read from the call at run time by CallHooks, which
// every variant inherits; a variant with another transform or mask defines its own, which hides
// the inherited one. The hooks work on whole score tiles (stored transposed, key c's scores at st + c * ss), not
// one logit at a time, so that the common case of no hooks costs one test per tile.
//
// Highway per-target header: included by core/tile_kernel.cc once per target (foreach_target.h),
// hence the toggling include guard instead of #pragma once.
#if defined(ATTNKIT_CORE_TILE_VARIANTS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef ATTNKIT_CORE_TILE_VARIANTS_INL_H_
#undef ATTNKIT_CORE_TILE_VARIANTS_INL_H_
#else
#define ATTNKIT_CORE_TILE_VARIANTS_INL_H_
#endif

#include <hwy/highway.h>
#include <hwy/contrib/math/math-inl.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "core/tile_kernel.h"
#include "core/tile_microkernels-inl.h"
#include "core/tile_rows-inl.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit::core::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// The call's own logit hooks and masks, shared by every variant.
struct CallHooks {
  // Softcap, ALiBi, additive mask, in the order of attention.h, on the M rows of block b against
  // the keys of tile t. Packed tiles (ss == kPackedStride) hold the M rows only; others hold whole
  // query vectors.
  HWY_INLINE void LogitsTransform(const SeqCtx& s, const RowBlock& b, const TileKeys& t, float* st,
                                  int64_t ss) const {
    if (!s.has_hooks) return;
    const Call& c = *s.c;
    const int M = b.M;
    const int64_t kc = t.kc;
    const int64_t n_groups = (M + kLanes - 1) / kLanes;  // query vectors holding the M rows
    const float cap = c.p.softcap;
    if (cap > 0.0f) {
      const DF df;
      const VF vcap = hn::Set(df, cap), inv = hn::Set(df, 1.0f / cap);
      const auto softcap = [&](float* p) { hn::StoreU(hn::Mul(vcap, hn::Tanh(df, hn::Mul(hn::LoadU(df, p), inv))), df, p); };
      if (ss == kPackedStride) {
        // The whole tile as one run of floats; the padding keys up to a whole vector are zeroed
        // first (softmax_tile_4rows sets them to -inf afterwards).
        const int64_t n = round_up(kc * kPackedStride, kLanes);
        std::fill(st + kc * kPackedStride, st + n, 0.0f);
        for (int64_t i = 0; i < n; i += kLanes) softcap(st + i);
      } else {
        for (int64_t cidx = 0; cidx < kc; ++cidx)
          for (int64_t g = 0; g < n_groups * static_cast<int64_t>(kLanes); g += kLanes) softcap(st + cidx * ss + g);
      }
    }
    for (int r = 0; r < M; ++r) {
      const int64_t h = b.head[r];
      if (c.p.maybe_alibi_slopes) {
        const float slope = c.p.maybe_alibi_slopes[h];
        const int64_t qpos = b.pos[r] + s.diag;
        for (int64_t cidx = 0; cidx < kc; ++cidx)
          st[cidx * ss + r] -= slope * static_cast<float>(std::llabs(qpos - t.pos[cidx]));
      }
      if (c.p.mask.kind == MaskKind::kAdditive) {
        const CustomMask& mk = c.p.mask;
        const float* base = static_cast<const float*>(mk.data) + s.seq * mk.stride_batch + h * mk.stride_head +
                            b.pos[r] * mk.stride_q;
        for (int64_t cidx = 0; cidx < kc; ++cidx) st[cidx * ss + r] += base[t.pos[cidx] * mk.stride_k];
      }
    }
    if (c.p.maybe_key_bias) AddKeyBias(c, b, t, st, ss);
  }

  // The per-head bias of the one key at key_bias_index, if this tile holds it (ZeroTuning's
  // ln(gamma) on the first token: Han et al. 2025). It lands on the finished logit, so the online
  // softmax sees it like any other score and no second pass or merge is needed.
  HWY_INLINE static void AddKeyBias(const Call& c, const RowBlock& b, const TileKeys& t, float* st, int64_t ss) {
    const int64_t j = c.p.key_bias_index;
    int64_t col = -1;
    if (t.contiguous) {
      if (j >= t.pos[0] && j < t.pos[0] + t.kc) col = j - t.pos[0];
    } else {
      for (int64_t cidx = 0; cidx < t.kc && col < 0; ++cidx)
        if (t.pos[cidx] == j) col = cidx;
    }
    if (col < 0) return;
    for (int r = 0; r < b.M; ++r) st[col * ss + r] += c.p.maybe_key_bias[b.head[r]];
  }

  // -inf for the keys a row may not see: outside its causal/window range and the sink prefix,
  // false in the boolean mask, or outside the job's extra mask. The first stored_rows rows of the
  // tile are written; rows M and above are padding and see nothing.
  HWY_INLINE void LogitsMask(const SeqCtx& s, const RowBlock& b, const TileKeys& t, float* st, int64_t ss,
                             int stored_rows) const {
    const Call& c = *s.c;
    const CustomMask& mk = c.p.mask;
    for (int r = 0; r < stored_rows; ++r) {
      if (r >= b.M) {
        for (int64_t cidx = 0; cidx < t.kc; ++cidx) st[cidx * ss + r] = kNegInf;
        continue;
      }
      const int64_t lo = b.lo[r], hi = b.hi[r], shi = b.sink_hi[r];
      const uint8_t* mrow = nullptr;
      if (mk.kind == MaskKind::kBoolean) {
        mrow = static_cast<const uint8_t*>(mk.data) + s.seq * mk.stride_batch + b.head[r] * mk.stride_head +
               b.pos[r] * mk.stride_q;
      }
      for (int64_t cidx = 0; cidx < t.kc; ++cidx) {
        const int64_t j = t.pos[cidx];
        bool vis = (j >= lo && j < hi) || j < shi;
        if (vis && mrow) vis = mrow[j * mk.stride_k] != 0;
        if (vis && t.extra_needed) vis = t.extra->fn(t.extra->ctx, s.seq, b.head[r], b.pos[r], j);
        if (!vis) st[cidx * ss + r] = kNegInf;
      }
    }
  }
};

// Softmax attention: the online softmax (Milakov & Gimelshein; Rabe & Staats) runs in the kernel.
struct SoftmaxVariant : CallHooks {
  static constexpr bool kUseSoftmax = true;

  // Row r's state as a partial result: o normalized by its own denominator, LSE without sinks
  // (those are added once, when the parts are merged). A row that saw no key gets o = 0 and
  // LSE -inf, the empty state of merge_states.
  float OutputTransform(const RowBlock& b, int r, int64_t dvp) const {
    float* o = b.o + r * dvp;
    if (b.l[r] == 0.0f) {
      std::memset(o, 0, sizeof(float) * dvp);
      return kNegInf;
    }
    const float inv = 1.0f / b.l[r];
    for (int64_t k = 0; k < dvp; ++k) o[k] *= inv;
    return b.m[r] + std::log(b.l[r]);
  }
};

// Variants without a denominator: o is the weighted sum itself and the LSE is 0, so partial
// results over disjoint keys add.
struct UnnormalizedVariant : CallHooks {
  static constexpr bool kUseSoftmax = false;
  float OutputTransform(const RowBlock&, int, int64_t) const { return 0.0f; }
};

// FlashSigmoid (Ramapuram et al., "Theory, Analysis, and Best Practices for Sigmoid
// Self-Attention"): weight = sigmoid(s + b), no normalization.
struct SigmoidVariant : UnnormalizedVariant {
  float bias;
  explicit SigmoidVariant(float b) : bias(b) {}
  VF Weight(DF d, VF s) const {
    const VF one = hn::Set(d, 1.0f);
    // e^{-(s+b)} is +inf for masked keys (s = -inf), giving weight 0.
    return hn::Div(one, hn::Add(one, hn::Exp(d, hn::Neg(hn::Add(s, hn::Set(d, bias))))));
  }
};

// ReLU attention: weight = relu(s) / Sk.
struct ReluVariant : UnnormalizedVariant {
  float inv_len;
  explicit ReluVariant(float inv) : inv_len(inv) {}
  VF Weight(DF d, VF s) const { return hn::Mul(hn::Max(s, hn::Zero(d)), hn::Set(d, inv_len)); }
};

// Calls f(variant) with the call's normalization variant.
template <class F>
void with_variant(const Call& c, const SeqRange& r, F&& f) {
  switch (c.p.normalization) {
    case Normalization::kSoftmax: f(SoftmaxVariant{}); break;
    case Normalization::kSigmoid: f(SigmoidVariant(c.sigmoid_bias(r))); break;
    case Normalization::kRelu: f(ReluVariant(r.k_len > 0 ? 1.0f / static_cast<float>(r.k_len) : 0.0f)); break;
  }
}

}  // namespace attnkit::core::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // ATTNKIT_CORE_TILE_VARIANTS_INL_H_
