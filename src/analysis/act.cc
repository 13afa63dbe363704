// ACT's sink detection and correction after the exact kernel (act.h has the definition and the
// steps). Everything here reads the call's q, k, v and the kernel's LSE; nothing forms a matrix
// wider than the sampled blocks' scores or the rows' probabilities on a few candidate keys.
#include "analysis/act.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "attnkit/threads.h"
#include "sparse/qk_util.h"

namespace attnkit::analysis::act {
namespace {

const float* row_ptr(const TensorView& t, int64_t s, int64_t h) { return static_cast<const float*>(t.data) + t.offset(0, s, h, 0); }
float* row_ptr_mut(const TensorView& t, int64_t s, int64_t h) { return static_cast<float*>(t.data) + t.offset(0, s, h, 0); }

float call_scale(const model::AttentionCall& c) {
  return c.params.scale.has_value() ? *c.params.scale : 1.0f / std::sqrt(static_cast<float>(c.q.head_dim()));
}

// Absolute position of key slot 0 (a sliding-window layer drops keys no later query can see).
int64_t first_slot_position(const model::AttentionCall& c) { return c.q_pos0 + c.q.seq() - c.k.seq(); }

// Slot on the key axis of row i (causal, bottom-right), and the first slot it sees.
int64_t row_slot(const model::AttentionCall& c, int64_t i) { return c.k.seq() - c.q.seq() + i; }
int64_t first_visible(const model::AttentionCall& c, int64_t p) {
  return c.params.window_left < 0 ? 0 : std::max<int64_t>(0, p - c.params.window_left);
}

// Rows of the call that see slot j.
int64_t rows_seeing(const model::AttentionCall& c, int64_t j) {
  const int64_t first = row_slot(c, 0), last = row_slot(c, c.q.seq() - 1);
  const int64_t lo = std::max(j, first), hi = c.params.window_left < 0 ? last : std::min(last, j + c.params.window_left);
  return std::max<int64_t>(0, hi - lo + 1);
}

int call_threads(const model::AttentionCall& c) {
  int t = 0;
  if (!resolve_threads(c.params.num_threads, "num_threads", &t).ok() || t <= 0) t = omp_get_max_threads();
  return t;
}

}  // namespace

Status check_call(const model::AttentionCall& c) {
  const AttentionParams& p = c.params;
  if (c.q.dtype != DType::kF32 || c.k.dtype != DType::kF32 || c.v.dtype != DType::kF32 || c.out.dtype != DType::kF32)
    return Status::unsupported("act: needs f32 q, k, v and out");
  if (c.q.batch() != 1) return Status::unsupported("act: batch " + std::to_string(c.q.batch()) + " is not supported; expected 1");
  if (!p.causal || p.causal_align != CausalAlign::kBottomRight)
    return Status::unsupported("act: needs causal attention with bottom-right alignment (the model's layers)");
  if (p.n_sink_tokens != 0 || p.maybe_sink_logits != nullptr || p.mask.kind != MaskKind::kNone ||
      p.maybe_cu_seqlens_q != nullptr || p.maybe_cu_seqlens_k != nullptr)
    return Status::unsupported("act: sink tokens, sink logits, custom masks and packed batches are not supported");
  if (p.maybe_alibi_slopes != nullptr || p.ssmax_s != 0 || p.maybe_head_temperature != nullptr || p.maybe_key_bias != nullptr ||
      p.normalization != Normalization::kSoftmax)
    return Status::unsupported("act: logit changes other than scale and softcap, and non-softmax normalization, are not supported");
  if (c.q.stride[3] != 1 || c.k.stride[3] != 1 || c.v.stride[3] != 1 || c.out.stride[3] != 1)
    return Status::unsupported("act: q, k, v and out need unit stride in head_dim");
  return Status::ok_status();
}

void candidates(const model::AttentionCall& c, const float* lse, const std::vector<char>& on, double threshold, Scratch* sc,
                std::vector<std::vector<int32_t>>* out) {
  const int64_t n = c.q.seq(), n_kv = c.k.seq(), H = c.q.heads(), HK = c.k.heads(), D = c.q.head_dim();
  const int64_t group = H / HK, wl = c.params.window_left, base = first_slot_position(c);
  const float scale = call_scale(c), cap = c.params.softcap;
  out->assign(static_cast<size_t>(H), {});
  // Block starts: kSampleBlocks evenly spaced blocks, more on a sliding-window call so that every
  // window of wl + 1 rows holds a whole block; every row when that would cover the call anyway.
  int64_t want = kSampleBlocks;
  if (wl >= 0) {
    const int64_t step = std::max<int64_t>(1, wl + 1 - kBlockRows);
    want = std::max(want, (n - kBlockRows + step - 1) / step + 1);
  }
  std::vector<std::pair<int64_t, int64_t>> blocks;  // (first row, rows)
  if (want * kBlockRows >= n) {
    for (int64_t r0 = 0; r0 < n; r0 += kBlockRows) blocks.emplace_back(r0, std::min(kBlockRows, n - r0));
  } else {
    for (int64_t b = 0; b < want; ++b) blocks.emplace_back(b * (n - kBlockRows) / (want - 1), kBlockRows);
  }
  sc->colsum.assign(static_cast<size_t>(H * n_kv), 0.0f);
  sc->sampled.assign(static_cast<size_t>(n_kv + 1), 0);  // difference array of sampled rows per key
  for (const auto& [r0, rows] : blocks)
    for (int64_t r = 0; r < rows; ++r) {
      sc->sampled[static_cast<size_t>(first_visible(c, row_slot(c, r0 + r)))]++;
      sc->sampled[static_cast<size_t>(row_slot(c, r0 + r) + 1)]--;
    }
  // Each block's query rows packed per kv head as [rows * group, D] (block b, kv head g at
  // (b * HK + g) * kBlockRows * group * D), so one product scores a block for every head of the group.
  const int64_t nb = static_cast<int64_t>(blocks.size()), pack = kBlockRows * group * D;
  sc->qpack.resize(static_cast<size_t>(nb * HK * pack));
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t g = 0; g < HK; ++g)
      for (int64_t r = 0; r < blocks[static_cast<size_t>(b)].second; ++r)
        for (int64_t hh = 0; hh < group; ++hh)
          std::memcpy(sc->qpack.data() + (b * HK + g) * pack + (r * group + hh) * D,
                      row_ptr(c.q, blocks[static_cast<size_t>(b)].first + r, g * group + hh), static_cast<size_t>(D) * sizeof(float));
  // Work items are (kv head, chunk of keys): each owns its columns of colsum, so the threads need
  // no reduction. OpenBLAS runs single-threaded inside the OpenMP region (its own threads next to
  // spinning OpenMP threads cost more than the products on a busy machine).
  constexpr int64_t kChunk = 256;
  const int64_t n_chunks = (n_kv + kChunk - 1) / kChunk;
  // The keys that only the last kTailRows rows see (the call's own last tokens) are scored by all
  // of those rows: their column means rest on a few rows each, which a sample would miss.
  const int64_t tail_rows = std::min(n, kTailRows), tail_row0 = n - tail_rows, tail_key = row_slot(c, tail_row0);
  sc->tailsum.assign(static_cast<size_t>(H * tail_rows), 0.0f);
  const sparse_internal::BlasSingleThread pin;
#pragma omp parallel num_threads(call_threads(c))
  {
    std::vector<float> scores(static_cast<size_t>(std::max(kBlockRows * kChunk, tail_rows * tail_rows) * group));
    std::vector<float> qtail;
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < HK * (n_chunks + 1); ++item) {
      const int64_t g = item / (n_chunks + 1), ch = item % (n_chunks + 1);
      if (std::none_of(on.begin() + g * group, on.begin() + (g + 1) * group, [](char x) { return x != 0; })) continue;
      if (ch == n_chunks) {  // the tail: its rows against the keys only they see
        qtail.resize(static_cast<size_t>(tail_rows * group * D));
        for (int64_t r = 0; r < tail_rows; ++r)
          for (int64_t hh = 0; hh < group; ++hh)
            std::memcpy(qtail.data() + (r * group + hh) * D, row_ptr(c.q, tail_row0 + r, g * group + hh), static_cast<size_t>(D) * sizeof(float));
        sparse_internal::gemm_abt(qtail.data(), row_ptr(c.k, tail_key, g), scores.data(), tail_rows * group, tail_rows, D, scale, D,
                                  c.k.stride[1]);
        for (int64_t r = 0; r < tail_rows; ++r) {
          const int64_t p = tail_key + r, ra = std::max(tail_key, first_visible(c, p));
          for (int64_t hh = 0; hh < group; ++hh) {
            const int64_t h = g * group + hh;
            if (!on[static_cast<size_t>(h)]) continue;
            add_exp(scores.data() + (r * group + hh) * tail_rows + (ra - tail_key), p - ra + 1, lse[h * n + tail_row0 + r], cap,
                    sc->tailsum.data() + h * tail_rows + (ra - tail_key));
          }
        }
        continue;
      }
      const int64_t j0 = ch * kChunk, j1 = std::min(n_kv, j0 + kChunk);
      for (int64_t b = 0; b < nb; ++b) {
        const auto [r0, rows] = blocks[static_cast<size_t>(b)];
        const int64_t p0 = row_slot(c, r0);
        const int64_t a = std::max(j0, first_visible(c, p0)), e = std::min(j1, p0 + rows);
        if (a >= e) continue;
        sparse_internal::gemm_abt(sc->qpack.data() + (b * HK + g) * pack, row_ptr(c.k, a, g), scores.data(), rows * group, e - a, D,
                                  scale, D, c.k.stride[1]);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t p = p0 + r, ra = std::max(a, first_visible(c, p)), re = std::min(e, p + 1);
          if (ra >= re) continue;
          for (int64_t hh = 0; hh < group; ++hh) {
            const int64_t h = g * group + hh;
            if (!on[static_cast<size_t>(h)]) continue;
            // A_ij = exp(s_ij - lse_i) with the kernel's LSE of the row.
            add_exp(scores.data() + (r * group + hh) * (e - a) + (ra - a), re - ra, lse[h * n + r0 + r], cap,
                    sc->colsum.data() + h * n_kv + ra);
          }
        }
      }
    }
  }
  std::vector<int64_t> count(static_cast<size_t>(n_kv));
  int64_t run = 0;
  for (int64_t j = 0; j < n_kv; ++j) count[static_cast<size_t>(j)] = run += sc->sampled[static_cast<size_t>(j)];
  const double bar = kCandidateFraction * threshold;
  std::vector<std::pair<float, int32_t>> found;
  for (int64_t h = 0; h < H; ++h) {
    if (!on[static_cast<size_t>(h)]) continue;
    found.clear();
    const float* col = sc->colsum.data() + h * n_kv;
    for (int64_t j = 0; j < tail_key; ++j) {
      const int64_t k = count[static_cast<size_t>(j)];
      if (base + j > 0 && k >= kMinRows && col[j] > bar * static_cast<double>(k))
        found.emplace_back(col[j] / static_cast<float>(k), static_cast<int32_t>(j));
    }
    for (int64_t j = std::max<int64_t>(tail_key, 0); j < n_kv; ++j) {
      const int64_t k = rows_seeing(c, j);
      const float sum = sc->tailsum[static_cast<size_t>(h * tail_rows + j - tail_key)];
      if (base + j > 0 && k >= kMinRows && sum > bar * static_cast<double>(k))
        found.emplace_back(sum / static_cast<float>(k), static_cast<int32_t>(j));
    }
    if (static_cast<int64_t>(found.size()) > kMaxCandidates) {
      std::nth_element(found.begin(), found.begin() + kMaxCandidates, found.end(), std::greater<>());
      found.resize(static_cast<size_t>(kMaxCandidates));
    }
    std::vector<int32_t>& keys = (*out)[static_cast<size_t>(h)];
    for (const auto& f : found) keys.push_back(f.second);
    std::sort(keys.begin(), keys.end());
  }
}

void key_probs(const model::AttentionCall& c, const float* lse, std::vector<std::vector<int32_t>> keys, KeyProbs* out) {
  const int64_t n = c.q.seq(), H = c.q.heads(), group = H / c.k.heads(), D = c.q.head_dim();
  const float scale = call_scale(c), cap = c.params.softcap;
  out->keys = std::move(keys);
  out->p.resize(static_cast<size_t>(H));
  for (int64_t h = 0; h < H; ++h) out->p[static_cast<size_t>(h)].assign(static_cast<size_t>(n) * out->keys[static_cast<size_t>(h)].size(), 0.0f);
  const int threads = call_threads(c);
  // One pass over the rows (each reads its q rows once); the work per row is its visible keys.
#pragma omp parallel for num_threads(threads) schedule(dynamic, 64) if (n >= 128)
  for (int64_t i = 0; i < n; ++i) {
    const int64_t p = row_slot(c, i), lo = first_visible(c, p);
    for (int64_t h = 0; h < H; ++h) {
      const std::vector<int32_t>& K = out->keys[static_cast<size_t>(h)];
      const auto c0 = std::lower_bound(K.begin(), K.end(), lo), c1 = std::upper_bound(K.begin(), K.end(), p);
      if (c0 >= c1) continue;
      const float* q = row_ptr(c.q, i, h);
      const float li = lse[h * n + i];
      float* pr = out->p[static_cast<size_t>(h)].data() + i * static_cast<int64_t>(K.size());
      for (auto it = c0; it != c1; ++it) {
        float x = scale * dot(q, row_ptr(c.k, *it, h / group), D);
        if (cap > 0) x = cap * std::tanh(x / cap);
        pr[it - K.begin()] = std::exp(x - li);
      }
    }
  }
}

void select_sinks(const model::AttentionCall& c, const KeyProbs& probs, double threshold, std::vector<std::vector<int32_t>>* sinks) {
  const int64_t n = c.q.seq(), H = c.q.heads(), base = first_slot_position(c);
  sinks->assign(static_cast<size_t>(H), {});
  std::vector<double> sum;
  for (int64_t h = 0; h < H; ++h) {
    const std::vector<int32_t>& K = probs.keys[static_cast<size_t>(h)];
    const int64_t nc = static_cast<int64_t>(K.size());
    if (nc == 0) continue;
    sum.assign(static_cast<size_t>(nc), 0.0);
    const float* P = probs.p[static_cast<size_t>(h)].data();
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = 0; k < nc; ++k) sum[static_cast<size_t>(k)] += P[i * nc + k];
    for (int64_t k = 0; k < nc; ++k) {
      const int64_t rows = rows_seeing(c, K[static_cast<size_t>(k)]);
      if (base + K[static_cast<size_t>(k)] > 0 && rows >= kMinRows && sum[static_cast<size_t>(k)] > threshold * static_cast<double>(rows))
        (*sinks)[static_cast<size_t>(h)].push_back(static_cast<int32_t>(k));
    }
  }
}

void correct(const model::AttentionCall& c, const KeyProbs& probs, const std::vector<std::vector<int32_t>>& sinks, double beta) {
  const int64_t n = c.q.seq(), H = c.q.heads(), group = H / c.k.heads(), DV = c.v.head_dim();
  size_t widest = 0;
  for (const auto& s : sinks) widest = std::max(widest, s.size());
  if (widest == 0) return;
  const int threads = call_threads(c);
#pragma omp parallel num_threads(threads) if (n >= 128)
  {
    std::vector<float> coef(widest);
    std::vector<const float*> vrow(widest);
#pragma omp for schedule(dynamic, 64)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t h = 0; h < H; ++h) {
        const std::vector<int32_t>& S = sinks[static_cast<size_t>(h)];
        if (S.empty()) continue;
        const std::vector<int32_t>& K = probs.keys[static_cast<size_t>(h)];
        const float* pr = probs.p[static_cast<size_t>(h)].data() + i * static_cast<int64_t>(K.size());
        double m = 0;
        for (int32_t s : S) m += pr[s];
        if (!(m > 0) || 1 - m < 1e-6) continue;  // no sink visible, or nothing else to give the mass to
        // o' = beta o_S + keep (o - o_S) = keep o + (beta - keep) o_S, keep = (1 - beta m) / (1 - m).
        const double keep = (1 - beta * m) / (1 - m);
        int64_t ns = 0;
        for (int32_t s : S) {
          if (pr[s] == 0) continue;
          coef[static_cast<size_t>(ns)] = static_cast<float>((beta - keep) * pr[s]);
          vrow[static_cast<size_t>(ns++)] = row_ptr(c.v, K[static_cast<size_t>(s)], h / group);
        }
        rescale_row(row_ptr_mut(c.out, i, h), DV, static_cast<float>(keep), coef.data(), vrow.data(), ns);
      }
  }
}

Status find_sinks(const model::AttentionCall& c, const float* lse, const std::vector<char>& on, double threshold, Scratch* sc,
                  std::vector<std::vector<int64_t>>* slots) {
  ATTNKIT_RETURN_IF_ERROR(check_call(c));
  if (static_cast<int64_t>(on.size()) != c.q.heads())
    return Status::invalid_argument("act: " + std::to_string(on.size()) + " head flags for " + std::to_string(c.q.heads()) + " heads");
  std::vector<std::vector<int32_t>> keys, chosen;
  candidates(c, lse, on, threshold, sc, &keys);
  key_probs(c, lse, std::move(keys), &sc->probs);
  select_sinks(c, sc->probs, threshold, &chosen);
  slots->assign(chosen.size(), {});
  for (size_t h = 0; h < chosen.size(); ++h)
    for (int32_t k : chosen[h]) (*slots)[h].push_back(sc->probs.keys[h][static_cast<size_t>(k)]);
  return Status::ok_status();
}

}  // namespace attnkit::analysis::act
