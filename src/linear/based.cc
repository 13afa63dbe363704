// Based (Arora et al. 2024, "Simple linear attention language models balance the recall-throughput
// tradeoff"): a Taylor-2 linear attention, phi(q).phi(k) = 1 + s + s^2/2 with s = q.k/sqrt(d),
// which approximates exp(s) for the global context, plus exact softmax attention over a small
// sliding window (64 tokens) for precise local recall. The window runs through the core exact
// kernel (attnkit::attention with window_left = window - 1, causal); the two outputs are mixed.
#include <cstring>
#include <string>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/linear.h"

namespace attnkit {

Status based_attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                       const BasedParams& p) {
  if (p.window < 1) return Status::invalid_argument("based window " + std::to_string(p.window) + " must be >= 1");
  if (!(p.mix >= 0.0f && p.mix <= 1.0f)) return Status::invalid_argument("based mix " + std::to_string(p.mix) + " must be in [0, 1]");
  if (out.data == nullptr) return Status::invalid_argument("based out is null");
  LinearAttentionParams lp;
  lp.feature_map = FeatureMap::kTaylor2;
  lp.norm = LinearNorm::kDenominator;
  lp.form = p.form;
  lp.chunk_size = p.chunk_size;
  lp.num_threads = p.num_threads;
  ATTNKIT_RETURN_IF_ERROR(validate_linear_attention(q, k, v, out, lp));
  const int64_t n = out.numel();
  std::vector<float> lin(static_cast<size_t>(n)), win(static_cast<size_t>(n));
  const TensorView lin_v = TensorView::contiguous(lin.data(), DType::kF32, out.shape[0], out.shape[1], out.shape[2], out.shape[3]);
  const TensorView win_v = TensorView::contiguous(win.data(), DType::kF32, out.shape[0], out.shape[1], out.shape[2], out.shape[3]);
  ATTNKIT_RETURN_IF_ERROR(linear_attention(q, k, v, lin_v, lp));
  AttentionParams ap;
  ap.causal = true;
  ap.window_left = p.window - 1;  // inclusive: the token itself and window - 1 before it
  ap.window_right = 0;
  ap.num_threads = p.num_threads;
  ATTNKIT_RETURN_IF_ERROR(attention(q, k, v, win_v, nullptr, ap));
  for (int64_t b = 0; b < out.shape[0]; ++b)
    for (int64_t s = 0; s < out.shape[1]; ++s)
      for (int64_t h = 0; h < out.shape[2]; ++h)
        for (int64_t j = 0; j < out.shape[3]; ++j)
          out.set(b, s, h, j, p.mix * win_v.get(b, s, h, j) + (1.0f - p.mix) * lin_v.get(b, s, h, j));
  return Status::ok_status();
}

}  // namespace attnkit
