// Dense double-precision masked attention (see sparse_ref.h).
#include "reference/sparse_ref.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace attnkit::reference {
namespace {

bool causal_ok(const SparseRefOptions& o, int64_t sq, int64_t sk, int64_t i, int64_t j) {
  if (!o.causal) return true;
  const int64_t off = o.causal_align == CausalAlign::kBottomRight ? sk - sq : 0;
  return j <= i + off;
}

// Logits of row i against every key; -inf where masked.
void row_logits(const TensorView& q, const TensorView& k, const SparseRefOptions& o, const ElementPredicate& vis,
                int64_t b, int64_t h, int64_t i, std::vector<double>* s) {
  const int64_t sq = q.seq(), sk = k.seq(), d = q.head_dim();
  const int64_t hk = h / (q.heads() / k.heads());
  const double scale = o.scale > 0 ? o.scale : 1.0 / std::sqrt(static_cast<double>(d));
  s->assign(sk, -std::numeric_limits<double>::infinity());
  for (int64_t j = 0; j < sk; ++j) {
    if (!causal_ok(o, sq, sk, i, j)) continue;
    if (vis && !vis(b, h, i, j)) continue;
    double acc = 0;
    for (int64_t x = 0; x < d; ++x) acc += static_cast<double>(q.get(b, i, h, x)) * k.get(b, j, hk, x);
    (*s)[j] = acc * scale + (o.maybe_log_weight ? o.maybe_log_weight(b, h, i, j) : 0.0);
  }
}

}  // namespace

void masked_attention_ref(const TensorView& q, const TensorView& k, const TensorView& v,
                          const SparseRefOptions& options, const ElementPredicate& maybe_visible,
                          std::vector<double>* out, std::vector<double>* lse) {
  const int64_t B = q.batch(), sq = q.seq(), hq = q.heads(), dv = v.head_dim();
  const int64_t group = hq / k.heads();
  out->assign(B * sq * hq * dv, 0.0);
  lse->assign(B * hq * sq, -std::numeric_limits<double>::infinity());
  std::vector<double> s;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < hq; ++h) {
      for (int64_t i = 0; i < sq; ++i) {
        row_logits(q, k, options, maybe_visible, b, h, i, &s);
        const double m = *std::max_element(s.begin(), s.end());
        if (m == -std::numeric_limits<double>::infinity()) continue;
        double den = 0;
        double* o = out->data() + ((b * sq + i) * hq + h) * dv;
        for (int64_t j = 0; j < static_cast<int64_t>(s.size()); ++j) {
          if (s[j] == -std::numeric_limits<double>::infinity()) continue;
          const double p = std::exp(s[j] - m);
          den += p;
          for (int64_t x = 0; x < dv; ++x) o[x] += p * v.get(b, j, h / group, x);
        }
        for (int64_t x = 0; x < dv; ++x) o[x] /= den;
        (*lse)[(b * hq + h) * sq + i] = m + std::log(den);
      }
    }
  }
}

void softmax_row_ref(const TensorView& q, const TensorView& k, const SparseRefOptions& options, int64_t b,
                     int64_t h, int64_t i, std::vector<double>* probs) {
  std::vector<double> s;
  row_logits(q, k, options, nullptr, b, h, i, &s);
  const double m = *std::max_element(s.begin(), s.end());
  probs->assign(s.size(), 0.0);
  if (m == -std::numeric_limits<double>::infinity()) return;
  double den = 0;
  for (size_t j = 0; j < s.size(); ++j) {
    if (s[j] == -std::numeric_limits<double>::infinity()) continue;
    (*probs)[j] = std::exp(s[j] - m);
    den += (*probs)[j];
  }
  for (double& p : *probs) p /= den;
}

}  // namespace attnkit::reference
