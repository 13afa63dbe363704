// Dynamic, training-free sparsity estimators. Each one looks at the actual Q and K (any dtype,
// any strides, whatever produced them) and returns a BlockMask for sparse_attention.
//
// Cost: every estimator reads K once per kv head and does its score products with OpenBLAS sgemm
// (outside OpenMP regions: OpenBLAS threads itself), so estimation stays a small fraction of
// dense attention (vertical-slash: last_q x Sk x d; block top-k: (Sq/B) x (Sk/B) x d; MoBA:
// Sq x (Sk/B) x d multiply-adds per head).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "attnkit/sparse.h"
#include "sparse/qk_util.h"
#include "sparse/sparse_internal.h"

namespace attnkit {

using namespace sparse_internal;

namespace {

// Rows of query block qb and their key-axis positions.
struct QBlock {
  int64_t r0, r1, p0, p1;  // rows [r0, r1), positions [p0, p1)
};
QBlock qblock(const BlockMaskShape& s, int64_t qb) {
  const int64_t off = diag_offset(s);
  const int64_t r0 = qb * s.block_q, r1 = std::min(s.seq_q, r0 + s.block_q);
  return {r0, r1, r0 + off, r1 + off};
}

// Per (b, kv head): K as f32 rows (in place when K is f32 with unit element stride, else a
// copy) and its block means.
struct KvHeadData {
  const float* k = nullptr;  // [Sk rows, row stride ld]
  int64_t ld = 0;
  std::vector<float> own;     // the copy, when one was needed
  std::vector<float> pooled;  // [nkb, d]
};
void load_kv_head(const TensorView& k, int64_t b, int64_t hk, int64_t block, KvHeadData* out) {
  const int64_t sk = k.seq(), d = k.head_dim();
  if (k.dtype == DType::kF32 && k.stride[3] == 1 && k.stride[1] >= d) {
    out->k = static_cast<const float*>(k.data) + k.offset(b, 0, hk, 0);
    out->ld = k.stride[1];
  } else {
    out->own.resize(sk * d);
    copy_rows(k, b, hk, 0, sk, out->own.data());
    out->k = out->own.data();
    out->ld = d;
  }
  pool_rows(out->k, sk, d, block, &out->pooled, out->ld);
}

// Runs fn(b, h, kv) for every (batch, query head), one head per OpenMP thread (dynamic
// schedule), with OpenBLAS pinned to one thread; the kv heads are prepared first, in parallel.
template <class F>
void for_each_head(const TensorView& q, const TensorView& k, int64_t block, int threads, F&& fn) {
  BlasSingleThread single;
  const int64_t batch = q.batch(), hkv = k.heads(), hq = q.heads(), group = hq / hkv;
  std::vector<KvHeadData> kv(batch * hkv);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t x = 0; x < batch * hkv; ++x) load_kv_head(k, x / hkv, x % hkv, block, &kv[x]);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t x = 0; x < batch * hq; ++x) {
    const int64_t b = x / hq, h = x % hq;
    fn(b, h, kv[b * hkv + h / group]);
  }
}

// Softmax probabilities of the last `last` query rows against every key (causal rule applied),
// rows [Sq - last, Sq). Returns the rows' positions in *pos.
void last_rows_probs(const TensorView& q, const KvHeadData& kv, const BlockMaskShape& s, int64_t b, int64_t h,
                     int64_t last, float scale, std::vector<float>* probs, std::vector<int64_t>* pos) {
  const int64_t d = q.head_dim(), sk = s.seq_kv;
  std::vector<float> ql(last * d);
  copy_rows(q, b, h, s.seq_q - last, s.seq_q, ql.data());
  probs->resize(last * sk);
  gemm_abt(ql.data(), kv.k, probs->data(), last, sk, d, scale, -1, kv.ld);
  pos->resize(last);
  const int64_t off = diag_offset(s);
  for (int64_t r = 0; r < last; ++r) {
    const int64_t p = s.seq_q - last + r + off;
    (*pos)[r] = p;
    const int64_t valid = s.causal ? std::clamp<int64_t>(p + 1, 0, sk) : sk;
    softmax_prefix(probs->data() + r * sk, sk, valid);
  }
}

// Block-level scores of query head h: its mean-pooled query blocks against the kv head's
// mean-pooled key blocks, scaled; scores is [nqb, nkb] (MInference block-sparse, FlexPrefill's
// query-aware branch and HiP all start from it).
void pooled_block_scores(const TensorView& q, const KvHeadData& kv, const BlockMaskShape& s, int64_t b, int64_t h,
                         int64_t nqb, int64_t nkb, float scale, std::vector<float>* scores) {
  const int64_t d = q.head_dim();
  std::vector<float> qf(s.seq_q * d), pq;
  copy_rows(q, b, h, 0, s.seq_q, qf.data());
  pool_rows(qf.data(), s.seq_q, d, s.block_q, &pq);
  scores->resize(nqb * nkb);
  gemm_abt(pq.data(), kv.pooled.data(), scores->data(), nqb, nkb, d, scale);
}

// Adds the key blocks that slash (diagonal) distances `deltas` (j = p - delta) touch for the
// query block to `sel`.
void slash_blocks(const BlockMaskShape& s, const QBlock& qb, const std::vector<int64_t>& deltas, std::vector<uint8_t>* mark,
                  std::vector<int32_t>* sel) {
  const int64_t nkb = static_cast<int64_t>(mark->size());
  for (int64_t delta : deltas) {
    int64_t lo = qb.p0 - delta, hi = qb.p1 - 1 - delta;  // keys the diagonal crosses in this block
    lo = std::max<int64_t>(lo, 0);
    hi = std::min<int64_t>(hi, s.seq_kv - 1);
    if (s.causal) hi = std::min<int64_t>(hi, qb.p1 - 1);
    if (lo > hi) continue;
    for (int64_t kb = lo / s.block_k; kb <= hi / s.block_k && kb < nkb; ++kb) {
      if (!(*mark)[kb]) {
        (*mark)[kb] = 1;
        sel->push_back(static_cast<int32_t>(kb));
      }
    }
  }
  for (int32_t kb : *sel) (*mark)[kb] = 0;
}

// The key block(s) holding the diagonal of a query block (its rows' own positions): always
// visited so that no row is left without keys and the local context is exact.
void add_diagonal(const BlockMaskShape& s, const QBlock& qb, std::vector<int32_t>* sel) {
  const int64_t nkb = (s.seq_kv + s.block_k - 1) / s.block_k;
  const int64_t lo = std::clamp<int64_t>(qb.p0, 0, s.seq_kv - 1), hi = std::clamp<int64_t>(qb.p1 - 1, 0, s.seq_kv - 1);
  for (int64_t kb = lo / s.block_k; kb <= hi / s.block_k && kb < nkb; ++kb) sel->push_back(static_cast<int32_t>(kb));
}

Status check_positive(const char* what, const char* name, int64_t v) {
  if (v < 1) {
    return Status::invalid_argument(std::string(what) + ": " + name + " " + std::to_string(v) + " is not supported; expected >= 1");
  }
  return Status::ok_status();
}

Status check_nonneg(const char* what, const char* name, int64_t v) {
  if (v < 0) {
    return Status::invalid_argument(std::string(what) + ": " + name + " " + std::to_string(v) + " is not supported; expected >= 0");
  }
  return Status::ok_status();
}

// Shared by vertical-slash and FlexPrefill's vertical-slash branch: column and diagonal sums of
// the last rows' probabilities. diag index = delta + Sk (delta = p - j may be negative when not
// causal).
void vertical_slash_sums(const std::vector<float>& probs, const std::vector<int64_t>& pos, int64_t sk,
                         std::vector<double>* vert, std::vector<double>* slash) {
  const int64_t last = static_cast<int64_t>(pos.size());
  const int64_t max_delta = pos.empty() ? 0 : std::max<int64_t>(0, pos.back());
  vert->assign(sk, 0.0);
  slash->assign(sk + max_delta + 1, 0.0);
  for (int64_t r = 0; r < last; ++r) {
    const float* pr = probs.data() + r * sk;
    for (int64_t j = 0; j < sk; ++j) {
      if (pr[j] == 0.0f) continue;
      (*vert)[j] += pr[j];
      const int64_t idx = pos[r] - j + sk;
      if (idx >= 0 && idx < static_cast<int64_t>(slash->size())) (*slash)[idx] += pr[j];
    }
  }
}

// Builds lists from per-head chosen diagonals (deltas) and columns.
void vertical_slash_lists(const BlockMaskShape& s, int64_t b, int64_t h, const std::vector<int64_t>& deltas,
                          const std::vector<int32_t>& columns, std::vector<std::vector<int32_t>>* sel,
                          std::vector<std::vector<int32_t>>* cols) {
  BlockMask probe;
  probe.shape = s;
  const int64_t nqb = probe.n_q_blocks(), nkb = probe.n_k_blocks();
  std::vector<uint8_t> mark(nkb, 0);
  for (int64_t qb = 0; qb < nqb; ++qb) {
    const QBlock blk = qblock(s, qb);
    const int64_t l = probe.list_index(b, h, qb);
    slash_blocks(s, blk, deltas, &mark, &(*sel)[l]);
    add_diagonal(s, blk, &(*sel)[l]);
    (*cols)[l] = columns;
  }
}

}  // namespace

// ------------------------------------------------------------------------------------------------

Status estimate_vertical_slash(const TensorView& q, const TensorView& k, const AttentionParams& params,
                               const VerticalSlashConfig& cfg, BlockMask* out) {
  const char* what = "vertical_slash";
  int threads = 1;
  ATTNKIT_RETURN_IF_ERROR(check_estimator_inputs(q, k, params, cfg.block, what, &threads));
  ATTNKIT_RETURN_IF_ERROR(check_positive(what, "last_q", cfg.last_q));
  ATTNKIT_RETURN_IF_ERROR(check_nonneg(what, "vertical", cfg.vertical));
  ATTNKIT_RETURN_IF_ERROR(check_nonneg(what, "slash", cfg.slash));
  ATTNKIT_RETURN_IF_ERROR(check_nonneg(what, "force_first", cfg.force_first));
  ATTNKIT_RETURN_IF_ERROR(check_nonneg(what, "force_last", cfg.force_last));
  const BlockMaskShape s = square_block_shape(q, k, params, cfg.block);
  const int64_t sk = s.seq_kv;
  const int64_t last = std::min(cfg.last_q, s.seq_q);
  const float scale = resolve_scale(params, q.head_dim());
  BlockMask probe;
  probe.shape = s;
  std::vector<std::vector<int32_t>> sel(probe.n_lists()), cols(probe.n_lists());
  for_each_head(q, k, cfg.block, threads, [&](int64_t b, int64_t h, const KvHeadData& kv) {
    std::vector<float> probs;
    std::vector<int64_t> pos;
    std::vector<double> vert, slash;
    last_rows_probs(q, kv, s, b, h, last, scale, &probs, &pos);
    vertical_slash_sums(probs, pos, sk, &vert, &slash);
    // Forced lines (MInference): the first columns (attention sinks) and the diagonals
    // nearest the main one (the local window).
    std::vector<float> vs(vert.begin(), vert.end()), ss(slash.begin(), slash.end());
    for (int64_t j = 0; j < std::min(cfg.force_first, sk); ++j) vs[j] = std::numeric_limits<float>::infinity();
    for (int64_t dlt = 0; dlt < cfg.force_last; ++dlt) {
      if (dlt + sk < static_cast<int64_t>(ss.size())) ss[dlt + sk] = std::numeric_limits<float>::infinity();
    }
    std::vector<int32_t> vcols, sidx;
    top_k_indices(vs.data(), sk, cfg.vertical, &vcols);
    top_k_indices(ss.data(), static_cast<int64_t>(ss.size()), cfg.slash, &sidx);
    std::sort(vcols.begin(), vcols.end());
    std::vector<int64_t> deltas;
    for (int32_t i : sidx) deltas.push_back(int64_t{i} - sk);
    std::sort(deltas.begin(), deltas.end());
    vertical_slash_lists(s, b, h, deltas, vcols, &sel, &cols);
  });
  return block_mask_from_selection(s, sel, &cols, out);
}

Status estimate_block_topk(const TensorView& q, const TensorView& k, const AttentionParams& params,
                           const BlockTopKConfig& cfg, BlockMask* out) {
  const char* what = "block_topk";
  int threads = 1;
  ATTNKIT_RETURN_IF_ERROR(check_estimator_inputs(q, k, params, cfg.block, what, &threads));
  ATTNKIT_RETURN_IF_ERROR(check_positive(what, "topk", cfg.topk));
  const BlockMaskShape s = square_block_shape(q, k, params, cfg.block);
  BlockMask probe;
  probe.shape = s;
  const int64_t nqb = probe.n_q_blocks(), nkb = probe.n_k_blocks(), d = q.head_dim();
  const float scale = resolve_scale(params, d);
  std::vector<std::vector<int32_t>> sel(probe.n_lists());
  for_each_head(q, k, cfg.block, threads, [&](int64_t b, int64_t h, const KvHeadData& kv) {
    std::vector<float> scores;
    pooled_block_scores(q, kv, s, b, h, nqb, nkb, scale, &scores);
    for (int64_t qb = 0; qb < nqb; ++qb) {
      const int64_t reach = reachable_k_blocks(s, qb);
      std::vector<int32_t>& l = sel[probe.list_index(b, h, qb)];
      top_k_indices(scores.data() + qb * nkb, reach, cfg.topk, &l);
      if (reach > 0) l.push_back(0);  // the sink block
      add_diagonal(s, qblock(s, qb), &l);
    }
  });
  return block_mask_from_selection(s, sel, nullptr, out);
}

Status estimate_moba(const TensorView& q, const TensorView& k, const AttentionParams& params, const MobaConfig& cfg,
                     BlockMask* out) {
  const char* what = "moba";
  int threads = 1;
  ATTNKIT_RETURN_IF_ERROR(check_estimator_inputs(q, k, params, cfg.block, what, &threads));
  ATTNKIT_RETURN_IF_ERROR(check_positive(what, "topk", cfg.topk));
  const BlockMaskShape s = square_block_shape(q, k, params, cfg.block);
  BlockMask probe;
  probe.shape = s;
  const int64_t nqb = probe.n_q_blocks(), nkb = probe.n_k_blocks(), d = q.head_dim();
  const int64_t off = diag_offset(s);
  const float scale = resolve_scale(params, d);
  std::vector<std::vector<int32_t>> sel(probe.n_lists());
  // Gates in chunks of query blocks to bound memory: rows x nkb floats.
  const int64_t chunk_blocks = std::max<int64_t>(1, (int64_t{1} << 22) / std::max<int64_t>(1, nkb * s.block_q));
  for_each_head(q, k, cfg.block, threads, [&](int64_t b, int64_t h, const KvHeadData& kv) {
    std::vector<float> qf, gate;
    for (int64_t c0 = 0; c0 < nqb; c0 += chunk_blocks) {
      const int64_t c1 = std::min(nqb, c0 + chunk_blocks);
      const int64_t r0 = c0 * s.block_q, r1 = std::min(s.seq_q, c1 * s.block_q);
      qf.resize((r1 - r0) * d);
      gate.resize((r1 - r0) * nkb);
      copy_rows(q, b, h, r0, r1, qf.data());
      gemm_abt(qf.data(), kv.pooled.data(), gate.data(), r1 - r0, nkb, d, scale);
      for (int64_t qb = c0; qb < c1; ++qb) {
        const QBlock blk = qblock(s, qb);
        // Each query's choice (MoBA): its own block plus the top-(k-1) blocks wholly before
        // it (all blocks when not causal). The kernel shares one list per 64-row block, so
        // the rows vote and the block keeps the k-1 most voted past blocks (ties by gate sum).
        std::vector<double> votes(nkb, 0.0), gsum(nkb, 0.0);
        std::vector<int32_t> top;
        for (int64_t r = blk.r0; r < blk.r1; ++r) {
          const int64_t p = r + off;
          const int64_t own = std::clamp<int64_t>(p, 0, s.seq_kv - 1) / s.block_k;
          const int64_t cand = s.causal ? std::min(own, nkb) : nkb;
          const float* g = gate.data() + (r - r0) * nkb;
          top_k_indices(g, cand, cfg.topk - 1, &top);
          for (int32_t kb : top) {
            if (!s.causal && kb == own) continue;
            votes[kb] += 1.0;
          }
          for (int64_t kb = 0; kb < cand; ++kb) gsum[kb] += g[kb];
        }
        std::vector<float> rank(nkb);
        for (int64_t kb = 0; kb < nkb; ++kb) {
          // Votes dominate; the gate sum (bounded by |q||k| scale) only breaks ties.
          rank[kb] = votes[kb] > 0 ? static_cast<float>(votes[kb] * 1e6 + gsum[kb]) : -1e30f;
        }
        std::vector<int32_t>& l = sel[probe.list_index(b, h, qb)];
        top_k_indices(rank.data(), nkb, cfg.topk - 1, &l);
        l.erase(std::remove_if(l.begin(), l.end(), [&](int32_t kb) { return votes[kb] <= 0; }), l.end());
        add_diagonal(s, blk, &l);
      }
    }
  });
  return block_mask_from_selection(s, sel, nullptr, out);
}

namespace {

// sqrt of the Jensen-Shannon divergence (natural log) of two distributions.
double js_distance(const std::vector<double>& p, const std::vector<double>& q) {
  double js = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    const double m = 0.5 * (p[i] + q[i]);
    if (p[i] > 0) js += 0.5 * p[i] * std::log(p[i] / m);
    if (q[i] > 0) js += 0.5 * q[i] * std::log(q[i] / m);
  }
  return std::sqrt(std::max(0.0, js));
}

// Indices of the fewest entries (largest first) whose sum reaches gamma * total; at least min_n.
std::vector<int32_t> cumulative_choice(const std::vector<double>& score, double gamma, int64_t min_n) {
  std::vector<int32_t> idx(score.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return score[a] > score[b] || (score[a] == score[b] && a < b); });
  double total = 0;
  for (double v : score) total += v;
  std::vector<int32_t> out;
  double acc = 0;
  for (int32_t i : idx) {
    if (static_cast<int64_t>(out.size()) >= min_n && acc >= gamma * total) break;
    out.push_back(i);
    acc += score[i];
  }
  return out;
}

}  // namespace

Status estimate_flexprefill(const TensorView& q, const TensorView& k, const AttentionParams& params,
                            const FlexPrefillConfig& cfg, BlockMask* out, std::vector<int>* maybe_head_choice) {
  const char* what = "flexprefill";
  int threads = 1;
  ATTNKIT_RETURN_IF_ERROR(check_estimator_inputs(q, k, params, cfg.block, what, &threads));
  ATTNKIT_RETURN_IF_ERROR(check_positive(what, "last_q", cfg.last_q));
  ATTNKIT_RETURN_IF_ERROR(check_positive(what, "min_budget", cfg.min_budget));
  if (!(cfg.gamma > 0 && cfg.gamma <= 1)) {
    return Status::invalid_argument("flexprefill: gamma " + std::to_string(cfg.gamma) + " is not supported; expected (0, 1]");
  }
  if (!(cfg.tau >= 0)) return Status::invalid_argument("flexprefill: tau " + std::to_string(cfg.tau) + " must be >= 0");
  const BlockMaskShape s = square_block_shape(q, k, params, cfg.block);
  BlockMask probe;
  probe.shape = s;
  const int64_t nqb = probe.n_q_blocks(), nkb = probe.n_k_blocks(), d = q.head_dim(), sk = s.seq_kv;
  const int64_t last = std::min(cfg.last_q, s.seq_q);
  const float scale = resolve_scale(params, d);
  std::vector<std::vector<int32_t>> sel(probe.n_lists()), cols(probe.n_lists());
  if (maybe_head_choice) maybe_head_choice->assign(s.batch * s.heads, 0);
  for_each_head(q, k, cfg.block, threads, [&](int64_t b, int64_t h, const KvHeadData& kv) {
    std::vector<int64_t> pos;
    std::vector<float> probs, scores;
    last_rows_probs(q, kv, s, b, h, last, scale, &probs, &pos);
    // True block distribution of the last rows (mean over rows of per-block mass) and the
    // pooled estimate (mean last query against block-mean keys), over the blocks the last
    // row can see.
    const int64_t reach_last = reachable_k_blocks(s, nqb - 1);
    std::vector<double> a_true(reach_last, 0.0), a_est(reach_last, 0.0);
    for (int64_t r = 0; r < last; ++r)
      for (int64_t j = 0; j < std::min(sk, reach_last * s.block_k); ++j) a_true[j / s.block_k] += probs[r * sk + j] / last;
    std::vector<float> qlast(last * d), pql;
    copy_rows(q, b, h, s.seq_q - last, s.seq_q, qlast.data());
    pool_rows(qlast.data(), last, d, last, &pql);
    std::vector<float> est(nkb);
    gemm_abt(pql.data(), kv.pooled.data(), est.data(), 1, nkb, d, scale);
    softmax_prefix(est.data(), nkb, reach_last);
    for (int64_t kb = 0; kb < reach_last; ++kb) a_est[kb] = est[kb];
    const bool query_aware = js_distance(a_est, a_true) < cfg.tau;
    if (maybe_head_choice) (*maybe_head_choice)[b * s.heads + h] = query_aware ? 1 : 0;
    if (query_aware) {
      pooled_block_scores(q, kv, s, b, h, nqb, nkb, scale, &scores);
      for (int64_t qb = 0; qb < nqb; ++qb) {
        const int64_t reach = reachable_k_blocks(s, qb);
        float* row = scores.data() + qb * nkb;
        softmax_prefix(row, nkb, reach);
        std::vector<double> sc(row, row + reach);
        std::vector<int32_t>& l = sel[probe.list_index(b, h, qb)];
        l = cumulative_choice(sc, cfg.gamma, cfg.min_budget);
        add_diagonal(s, qblock(s, qb), &l);
      }
    } else {
      std::vector<double> vert, slash;
      vertical_slash_sums(probs, pos, sk, &vert, &slash);
      std::vector<int32_t> vcols = cumulative_choice(vert, cfg.gamma, cfg.min_budget);
      std::vector<int32_t> sidx = cumulative_choice(slash, cfg.gamma, cfg.min_budget);
      std::sort(vcols.begin(), vcols.end());
      std::vector<int64_t> deltas;
      for (int32_t i : sidx) deltas.push_back(int64_t{i} - sk);
      std::sort(deltas.begin(), deltas.end());
      vertical_slash_lists(s, b, h, deltas, vcols, &sel, &cols);
    }
  });
  return block_mask_from_selection(s, sel, &cols, out);
}

Status estimate_hip(const TensorView& q, const TensorView& k, const AttentionParams& params, const HipConfig& cfg,
                    BlockMask* out) {
  const char* what = "hip";
  int threads = 1;
  ATTNKIT_RETURN_IF_ERROR(check_estimator_inputs(q, k, params, cfg.block, what, &threads));
  ATTNKIT_RETURN_IF_ERROR(check_positive(what, "topk", cfg.topk));
  const BlockMaskShape s = square_block_shape(q, k, params, cfg.block);
  BlockMask probe;
  probe.shape = s;
  const int64_t nqb = probe.n_q_blocks(), nkb = probe.n_k_blocks(), d = q.head_dim();
  const float scale = resolve_scale(params, d);
  std::vector<std::vector<int32_t>> sel(probe.n_lists());
  for_each_head(q, k, cfg.block, threads, [&](int64_t b, int64_t h, const KvHeadData& kv) {
    // Block-level scores pooled-q . pooled-k; the hierarchy below reads only the
    // representatives it needs (O(k log n) of them per query block).
    std::vector<float> scores;
    pooled_block_scores(q, kv, s, b, h, nqb, nkb, scale, &scores);
    for (int64_t qb = 0; qb < nqb; ++qb) {
      const int64_t reach = reachable_k_blocks(s, qb);
      const float* sc = scores.data() + qb * nkb;
      std::vector<int32_t>& l = sel[probe.list_index(b, h, qb)];
      // HiP (Lee et al. 2024): chunks of key blocks, each represented by probe blocks;
      // keep the top-k chunks, halve them, repeat until chunks are single blocks.
      std::vector<std::pair<int64_t, int64_t>> chunks;  // [begin, end) in key blocks
      const int64_t n0 = std::min<int64_t>(cfg.topk, reach);
      for (int64_t c = 0; c < n0; ++c) chunks.push_back({c * reach / n0, (c + 1) * reach / n0});
      bool split = true;
      while (split) {
        split = false;
        std::vector<std::pair<int64_t, int64_t>> next;
        for (auto [a, e] : chunks) {
          if (e - a > 1) {
            next.push_back({a, (a + e) / 2});
            next.push_back({(a + e) / 2, e});
            split = true;
          } else {
            next.push_back({a, e});
          }
        }
        if (static_cast<int64_t>(next.size()) > cfg.topk) {
          std::vector<float> rep(next.size());
          // Representative score of a chunk: the best of a few probe blocks (first, middle,
          // last), exact for chunks of up to three blocks.
          for (size_t c = 0; c < next.size(); ++c) {
            const int64_t a = next[c].first, e = next[c].second;
            rep[c] = std::max({sc[a], sc[(a + e - 1) / 2], sc[e - 1]});
          }
          std::vector<int32_t> keep;
          top_k_indices(rep.data(), static_cast<int64_t>(rep.size()), cfg.topk, &keep);
          std::sort(keep.begin(), keep.end());
          chunks.clear();
          for (int32_t c : keep) chunks.push_back(next[c]);
        } else {
          chunks = next;
        }
      }
      for (auto [a, e] : chunks)
        for (int64_t kb = a; kb < e; ++kb) l.push_back(static_cast<int32_t>(kb));
      if (reach > 0) l.push_back(0);
      add_diagonal(s, qblock(s, qb), &l);
    }
  });
  return block_mask_from_selection(s, sel, nullptr, out);
}

}  // namespace attnkit
