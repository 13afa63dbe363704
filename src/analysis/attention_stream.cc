// Attention probabilities recomputed from tapped queries and keys, one prefill chunk at a time.
//
// The model's own tap probabilities (TapData::probs) are exact f64 dot products for a few chosen
// rows; the instruments need every row of 4K-token inputs, so here the logits come from one sgemm
// per (head, block of rows) over only the keys the block can see, and each row's softmax sums in f64.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "attnkit/analysis.h"

namespace attnkit::analysis {

Status attention_probs(const float* q, int64_t n, int64_t n_head, const float* k, int64_t n_kv, int64_t n_head_kv,
                       int64_t head_dim, int64_t q_pos0, float scale, float softcap, int64_t window_left, float* probs,
                       int threads) {
  if (q == nullptr || k == nullptr || probs == nullptr) return Status::invalid_argument("attention_probs: null pointer");
  if (n < 0 || n_kv < 1 || head_dim < 1 || n_head < 1 || n_head_kv < 1 || n_head % n_head_kv != 0)
    return Status::invalid_argument("attention_probs: n " + std::to_string(n) + ", n_kv " + std::to_string(n_kv) + ", heads " +
                                    std::to_string(n_head) + "/" + std::to_string(n_head_kv) + ", head_dim " +
                                    std::to_string(head_dim) + " is not a valid shape");
  if (q_pos0 < 0 || q_pos0 + n > n_kv)
    return Status::invalid_argument("attention_probs: rows at " + std::to_string(q_pos0) + ".." + std::to_string(q_pos0 + n - 1) +
                                    " lie outside the " + std::to_string(n_kv) + " keys");
  const int64_t group = n_head / n_head_kv;
  constexpr int64_t kRows = 64;
  const int64_t blocks = (n + kRows - 1) / kRows;
#pragma omp parallel for num_threads(std::max(1, threads)) schedule(dynamic) collapse(2)
  for (int64_t h = 0; h < n_head; ++h) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t r0 = b * kRows, r1 = std::min(n, r0 + kRows);
      const int64_t p0 = q_pos0 + r0, p1 = q_pos0 + r1 - 1;
      const int64_t klo = window_left < 0 ? 0 : std::max<int64_t>(0, p0 - window_left);
      const int64_t khi = p1 + 1;  // exclusive
      float* c = probs + (h * n + r0) * n_kv;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(r1 - r0), static_cast<int>(khi - klo),
                  static_cast<int>(head_dim), scale, q + (r0 * n_head + h) * head_dim, static_cast<int>(n_head * head_dim),
                  k + (klo * n_head_kv + h / group) * head_dim, static_cast<int>(n_head_kv * head_dim), 0.0f, c + klo,
                  static_cast<int>(n_kv));
      for (int64_t r = r0; r < r1; ++r) {
        float* row = probs + (h * n + r) * n_kv;
        const int64_t p = q_pos0 + r;
        const int64_t lo = window_left < 0 ? 0 : std::max<int64_t>(0, p - window_left);
        double mx = -INFINITY;
        for (int64_t j = lo; j <= p; ++j) {
          if (softcap > 0) row[j] = softcap * std::tanh(row[j] / softcap);
          mx = std::max(mx, static_cast<double>(row[j]));
        }
        double sum = 0;
        for (int64_t j = lo; j <= p; ++j) sum += std::exp(static_cast<double>(row[j]) - mx);
        for (int64_t j = lo; j <= p; ++j) row[j] = static_cast<float>(std::exp(static_cast<double>(row[j]) - mx) / sum);
        std::fill(row, row + lo, 0.0f);
        std::fill(row + p + 1, row + n_kv, 0.0f);
      }
    }
  }
  return Status::ok_status();
}

Status text_tokens(const Tokenizer& tokenizer, const std::string& text, int64_t offset, int64_t n,
                   std::vector<int32_t>* ids) {
  if (ids == nullptr) return Status::invalid_argument("text_tokens: ids is null");
  if (n < 2) return Status::invalid_argument("text_tokens: length " + std::to_string(n) + " must be >= 2");
  if (offset < 0 || offset >= static_cast<int64_t>(text.size()))
    return Status::invalid_argument("text_tokens: offset " + std::to_string(offset) + " is outside the text of " +
                                    std::to_string(text.size()) + " characters");
  // A token covers at least one character: n * 8 + 1000 characters leave room for any text that
  // has n tokens, without encoding the whole book.
  *ids = tokenizer.encode(std::string_view(text).substr(static_cast<size_t>(offset), static_cast<size_t>(n * 8 + 1000)));
  ids->insert(ids->begin(), tokenizer.bos_id());
  if (static_cast<int64_t>(ids->size()) < n)
    return Status::invalid_argument("text_tokens: length " + std::to_string(n) + " exceeds the " +
                                    std::to_string(ids->size()) + " tokens of the text after offset " + std::to_string(offset));
  ids->resize(static_cast<size_t>(n));
  return Status::ok_status();
}

Status stream_attention(model::Model* m, const std::vector<int32_t>& tokens, const BlockVisitor& visit) {
  if (m == nullptr) return Status::invalid_argument("stream_attention: model is null");
  if (tokens.empty()) return Status::invalid_argument("stream_attention: no tokens");
  const model::GemmaConfig& c = m->config();
  const int64_t HK = c.n_head_kv, D = c.head_dim;
  std::vector<std::vector<float>> keys(static_cast<size_t>(c.n_layer));
  std::vector<float> probs;
  Status failed = Status::ok_status();
  model::Taps taps;
  const int threads = m->threads();
  taps.on_layer = [&](const model::TapData& td) {
    if (!failed.ok()) return;
    // Every key from position 0 on, gathered from the taps chunk by chunk: the model's own cache
    // holds only a window on sliding-window layers (and what a KV policy kept).
    const int64_t n_kv = td.pos0 + td.n;
    std::vector<float>& kl = keys[static_cast<size_t>(td.layer)];
    kl.resize(static_cast<size_t>(n_kv * HK * D));
    std::memcpy(kl.data() + td.pos0 * HK * D, td.k_post, static_cast<size_t>(td.n * HK * D) * sizeof(float));
    probs.resize(static_cast<size_t>(c.n_head * td.n * n_kv));
    const int64_t wl = c.window_left(td.layer);
    failed = attention_probs(td.q_post, td.n, c.n_head, kl.data(), n_kv, HK, D, td.pos0, c.attn_scale,
                             c.attn_logit_softcap, wl, probs.data(), threads);
    if (!failed.ok()) return;
    AttentionBlock b;
    b.layer = td.layer;
    b.pos0 = td.pos0;
    b.n = td.n;
    b.n_kv = n_kv;
    b.n_head = c.n_head;
    b.n_head_kv = HK;
    b.head_dim = D;
    b.window_left = wl;
    b.probs = probs.data();
    b.q_post = td.q_post;
    b.k_post = kl.data();
    b.tokens = tokens.data();
    visit(b);
  };
  m->reset();
  ATTNKIT_RETURN_IF_ERROR(m->reserve(static_cast<int64_t>(tokens.size())));
  m->set_taps(std::move(taps));
  model::ForwardOutputs fo;
  Status st = m->forward(tokens.data(), static_cast<int64_t>(tokens.size()), fo);
  m->clear_taps();
  ATTNKIT_RETURN_IF_ERROR(st);
  return failed;
}

BlockSource model_source(model::Model* m, const std::vector<int32_t>& tokens) {
  return [m, &tokens](const BlockVisitor& visit) { return stream_attention(m, tokens, visit); };
}

Status perplexity(model::Model* m, const std::vector<int32_t>& ids, double* out) {
  if (m == nullptr || out == nullptr) return Status::invalid_argument("perplexity: model or out is null");
  const int64_t n = static_cast<int64_t>(ids.size());
  if (n < 2) return Status::invalid_argument("perplexity: " + std::to_string(n) + " tokens; need at least 2");
  m->reset();
  ATTNKIT_RETURN_IF_ERROR(m->reserve(n));
  std::vector<int32_t> targets(ids.begin() + 1, ids.end());
  targets.push_back(0);
  std::vector<float> lp(static_cast<size_t>(n));
  model::ForwardOutputs fo;
  fo.maybe_targets = targets.data();
  fo.maybe_target_logprobs = lp.data();
  ATTNKIT_RETURN_IF_ERROR(m->forward(ids.data(), n, fo));
  double nll = 0;
  for (int64_t i = 0; i + 1 < n; ++i) nll -= lp[static_cast<size_t>(i)];
  *out = std::exp(nll / static_cast<double>(n - 1));
  return Status::ok_status();
}

}  // namespace attnkit::analysis
