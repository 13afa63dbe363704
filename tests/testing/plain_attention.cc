#include "testing/plain_attention.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>

namespace attnkit::testing {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

struct Piece {
  int64_t b, idx, q0, nq, k0, nk;
};

}  // namespace

PlainResult attention_plain_f32(const TensorView& q, const TensorView& k, const TensorView& v,
                                const AttentionParams& p) {
  const int64_t B = q.batch(), Sq = q.seq(), Hq = q.heads(), D = q.head_dim(), Dv = v.head_dim();
  const int64_t group = Hq / k.heads();
  PlainResult r;
  r.out.assign(static_cast<size_t>(B * Sq * Hq * Dv), 0.0f);
  r.lse.assign(static_cast<size_t>(B * Hq * Sq), std::numeric_limits<float>::quiet_NaN());

  std::vector<Piece> pieces;
  if (p.maybe_cu_seqlens_q) {
    for (int64_t s = 0; s < p.n_seqs; ++s) {
      const int32_t* cq = p.maybe_cu_seqlens_q;
      const int32_t* ck = p.maybe_cu_seqlens_k;
      pieces.push_back({0, s, cq[s], cq[s + 1] - cq[s], ck[s], ck[s + 1] - ck[s]});
    }
  } else {
    for (int64_t b = 0; b < B; ++b) pieces.push_back({b, b, 0, Sq, 0, k.seq()});
  }
  const float scale = p.scale ? *p.scale : 1.0f / std::sqrt(static_cast<float>(D));

  std::vector<float> s;  // the row's logits, -inf where hidden
  for (const Piece& pc : pieces) {
    const int64_t shift = p.causal_align == CausalAlign::kBottomRight ? pc.nk - pc.nq : 0;
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t hk = h / group;
      for (int64_t i = 0; i < pc.nq; ++i) {
        const int64_t pos = i + shift;
        // Visible interval from causality and the window, plus the sink prefix.
        int64_t hi = pc.nk - 1, lo = 0;
        if (p.causal) hi = std::min(hi, pos);
        if (p.window_right >= 0) hi = std::min(hi, pos + p.window_right);
        if (p.window_left >= 0) lo = std::max<int64_t>(lo, pos - p.window_left);
        const int64_t sink_hi = std::min(p.n_sink_tokens, p.causal ? std::min(pc.nk, pos + 1) : pc.nk);
        auto by_rules = [&](int64_t j) { return (j >= lo && j <= hi) || j < sink_hi; };
        int64_t n_vis = 0;
        for (int64_t j = 0; j < pc.nk; ++j) n_vis += by_rules(j);

        float mult = scale;
        if (p.maybe_head_temperature) mult *= p.maybe_head_temperature[h];
        if (p.ssmax_s != 0.0f) mult *= p.ssmax_s * std::log(static_cast<float>(n_vis));

        s.assign(static_cast<size_t>(pc.nk), -kInf);
        for (int64_t j = 0; j < pc.nk; ++j) {
          if (!by_rules(j)) continue;
          const int64_t mo = pc.idx * p.mask.stride_batch + h * p.mask.stride_head + i * p.mask.stride_q +
                             j * p.mask.stride_k;
          if (p.mask.kind == MaskKind::kBoolean && static_cast<const uint8_t*>(p.mask.data)[mo] == 0) continue;
          float acc = 0.0f;
          for (int64_t c = 0; c < D; ++c) acc += q.get(pc.b, pc.q0 + i, h, c) * k.get(pc.b, pc.k0 + j, hk, c);
          float x = acc * mult;
          if (p.softcap > 0.0f) x = p.softcap * std::tanh(x / p.softcap);
          if (p.maybe_alibi_slopes) x -= p.maybe_alibi_slopes[h] * static_cast<float>(std::llabs(pos - j));
          if (p.mask.kind == MaskKind::kAdditive) x += static_cast<const float*>(p.mask.data)[mo];
          if (p.maybe_key_bias && j == p.key_bias_index) x += p.maybe_key_bias[h];
          s[static_cast<size_t>(j)] = x;
        }

        float* o = &r.out[static_cast<size_t>((((pc.b * Sq) + pc.q0 + i) * Hq + h) * Dv)];
        float* lse = &r.lse[static_cast<size_t>((pc.b * Hq + h) * Sq + pc.q0 + i)];
        if (p.normalization == Normalization::kSoftmax) {
          float m = p.maybe_sink_logits ? p.maybe_sink_logits[h] : -kInf;
          bool any = false, has_nan = false;
          for (float x : s) {
            any = any || x != -kInf;
            has_nan = has_nan || std::isnan(x);
            if (x > m) m = x;
          }
          if (has_nan) m = std::numeric_limits<float>::quiet_NaN();
          if (!any) {
            *lse = p.maybe_sink_logits ? p.maybe_sink_logits[h] : -kInf;
            continue;
          }
          float sum = p.maybe_sink_logits ? std::exp(p.maybe_sink_logits[h] - m) : 0.0f;
          for (int64_t j = 0; j < pc.nk; ++j) {
            if (s[j] == -kInf) continue;
            const float w = std::exp(s[j] - m);
            sum += w;
            for (int64_t c = 0; c < Dv; ++c) o[c] += w * v.get(pc.b, pc.k0 + j, hk, c);
          }
          for (int64_t c = 0; c < Dv; ++c) o[c] /= sum;
          *lse = m + std::log(sum);
        } else {
          const bool sigmoid = p.normalization == Normalization::kSigmoid;
          const float bias = p.sigmoid_bias ? *p.sigmoid_bias : -std::log(static_cast<float>(pc.nk));
          for (int64_t j = 0; j < pc.nk; ++j) {
            if (s[j] == -kInf) continue;
            const float w = sigmoid ? 1.0f / (1.0f + std::exp(-(s[j] + bias)))
                                    : (std::isnan(s[j]) ? s[j] : std::max(s[j], 0.0f)) / static_cast<float>(pc.nk);
            for (int64_t c = 0; c < Dv; ++c) o[c] += w * v.get(pc.b, pc.k0 + j, hk, c);
          }
        }
      }
    }
  }
  return r;
}

}  // namespace attnkit::testing
