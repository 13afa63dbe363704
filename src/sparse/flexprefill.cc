// FlexPrefill (Lai et al. 2025): per head, the Jensen-Shannon distance between the pooled block
// estimate and the true block-pooled attention of the last queries chooses query-aware
// block-sparse or vertical-slash, each keeping the fewest blocks / lines that reach a
// cumulative attention gamma.
#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "attnkit/registry.h"
#include "attnkit/sparse.h"
#include "sparse/estimator_common.h"
#include "sparse/methods.h"

namespace attnkit {

using namespace sparse_internal;

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
      vertical_slash_lists(s, b, h, sidx, std::move(vcols), &sel, &cols);
    }
  });
  return block_mask_from_selection(s, sel, &cols, out);
}

namespace {

// Registry entry (methods.h).
Mechanism make_flexprefill_mechanism() {
  return sparse_mechanism(
      {"flexprefill", "FlexPrefill: per-head JS-divergence choice, cumulative-mass gamma",
       {{"last_q", "128", "queries used for the estimate"}, {"gamma", "0.9", "cumulative attention kept"},
        {"tau", "0.1", "JS distance threshold for query-aware block-sparse"},
        {"min_budget", "1", "blocks / lines kept at least"}, kBlockParam},
       [](const MechanismParams& p, std::unique_ptr<SparseMethod>* out) -> Status {
         FlexPrefillConfig c;
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "last_q", &c.last_q));
         ATTNKIT_RETURN_IF_ERROR(param_float(p, "gamma", &c.gamma));
         ATTNKIT_RETURN_IF_ERROR(param_float(p, "tau", &c.tau));
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "min_budget", &c.min_budget));
         ATTNKIT_RETURN_IF_ERROR(read_block(p, &c.block));
         // The per-head choice output is for tests; the method does not need it.
         *out = estimator_method([](const TensorView& q, const TensorView& k, const AttentionParams& params,
                                    const FlexPrefillConfig& cfg,
                                    BlockMask* m) { return estimate_flexprefill(q, k, params, cfg, m, nullptr); },
                                 c);
         return Status::ok_status();
       }});
}
ATTNKIT_REGISTER_MECHANISM(make_flexprefill_mechanism);

}  // namespace

}  // namespace attnkit
