// Fidelity metrics (fidelity.h) and the sparse-method measurement used by `attnkit fidelity`.
#include "attnkit/fidelity.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "attnkit/memory.h"
#include "attnkit/sparse.h"
#include "sparse/qk_util.h"
#include "sparse/sparse_internal.h"

namespace attnkit {

using namespace sparse_internal;

Status attention_mass_recall(const TensorView& q, const TensorView& k, const AttentionParams& params,
                             const VisitedFn& visited, double* mean, double* worst) {
  int threads = 1;
  ATTNKIT_RETURN_IF_ERROR(check_estimator_inputs(q, k, params, 1, "attention_mass_recall", &threads));
  if (!visited) return Status::invalid_argument("attention_mass_recall: visited function is empty");
  const int64_t sq = q.seq(), sk = k.seq(), d = q.head_dim(), group = q.heads() / k.heads();
  const float scale = resolve_scale(params, d);
  const int64_t off = params.causal_align == CausalAlign::kBottomRight ? sk - sq : 0;
  const int64_t chunk = 128;
  std::vector<float> kf(sk * d), qc(chunk * d), s(chunk * sk);
  double sum = 0, low = 1.0;
  int64_t rows = 0;
  for (int64_t b = 0; b < q.batch(); ++b) {
    for (int64_t hk = 0; hk < k.heads(); ++hk) {
      copy_rows(k, b, hk, 0, sk, kf.data());
      for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
        for (int64_t r0 = 0; r0 < sq; r0 += chunk) {
          const int64_t r1 = std::min(sq, r0 + chunk);
          copy_rows(q, b, h, r0, r1, qc.data());
          gemm_abt(qc.data(), kf.data(), s.data(), r1 - r0, sk, d, scale);
#pragma omp parallel num_threads(threads) reduction(+ : sum, rows) reduction(min : low)
          {
            std::vector<uint8_t> vis(sk);
#pragma omp for schedule(static)
            for (int64_t r = r0; r < r1; ++r) {
              const int64_t valid = params.causal ? std::clamp<int64_t>(r + off + 1, 0, sk) : sk;
              if (valid == 0) continue;
              float* row = s.data() + (r - r0) * sk;
              if (params.softcap > 0) {
                for (int64_t j = 0; j < valid; ++j) row[j] = params.softcap * std::tanh(row[j] / params.softcap);
              }
              const float m = *std::max_element(row, row + valid);
              std::fill(vis.begin(), vis.end(), 0);
              visited(b, h, r, vis.data());
              double all = 0, hit = 0;
              for (int64_t j = 0; j < valid; ++j) {
                const double e = std::exp(static_cast<double>(row[j] - m));
                all += e;
                if (vis[j]) hit += e;
              }
              const double rec = hit / all;
              sum += rec;
              low = std::min(low, rec);
              ++rows;
            }
          }
        }
      }
    }
  }
  *mean = rows ? sum / static_cast<double>(rows) : 1.0;
  *worst = rows ? low : 1.0;
  return Status::ok_status();
}

Status relative_l2_error(const TensorView& approx, const TensorView& exact, double* out) {
  if (approx.shape != exact.shape) return Status::invalid_argument("relative_l2_error: shapes differ");
  double num = 0, den = 0;
  for (int64_t b = 0; b < exact.batch(); ++b)
    for (int64_t s = 0; s < exact.seq(); ++s)
      for (int64_t h = 0; h < exact.heads(); ++h)
        for (int64_t x = 0; x < exact.head_dim(); ++x) {
          const double e = exact.get(b, s, h, x), a = approx.get(b, s, h, x);
          num += (a - e) * (a - e);
          den += e * e;
        }
  *out = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  return Status::ok_status();
}

namespace {
double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

Status measure_sparse_fidelity(const std::string& spec, const TensorView& q, const TensorView& k, const TensorView& v,
                               const AttentionParams& params, int repeats, FidelityReport* out) {
  if (repeats < 1) return Status::invalid_argument("measure_sparse_fidelity: repeats " + std::to_string(repeats) + " must be >= 1");
  std::unique_ptr<SparseMethod> method;
  ATTNKIT_RETURN_IF_ERROR(make_sparse_method(spec, &method));
  FidelityReport rep;
  rep.mechanism = spec;
  const int64_t n_out = q.batch() * q.seq() * q.heads() * v.head_dim();
  ScratchArray<float> exact(n_out), approx(n_out);
  const TensorView ev = TensorView::contiguous(exact.data(), DType::kF32, q.batch(), q.seq(), q.heads(), v.head_dim());
  const TensorView av = TensorView::contiguous(approx.data(), DType::kF32, q.batch(), q.seq(), q.heads(), v.head_dim());
  rep.dense_seconds = rep.estimate_seconds = rep.attention_seconds = std::numeric_limits<double>::infinity();
  for (int r = 0; r < repeats; ++r) {
    double t0 = now_seconds();
    ATTNKIT_RETURN_IF_ERROR(attention(q, k, v, ev, nullptr, params));
    rep.dense_seconds = std::min(rep.dense_seconds, now_seconds() - t0);
    t0 = now_seconds();
    ATTNKIT_RETURN_IF_ERROR(method->estimate(q, k, params));
    rep.estimate_seconds = std::min(rep.estimate_seconds, now_seconds() - t0);
    t0 = now_seconds();
    ATTNKIT_RETURN_IF_ERROR(method->attend(q, k, v, av, nullptr, params));
    rep.attention_seconds = std::min(rep.attention_seconds, now_seconds() - t0);
  }
  ATTNKIT_RETURN_IF_ERROR(relative_l2_error(av, ev, &rep.rel_l2_error));
  // Density against the causal (or full) score matrix.
  BlockMaskShape s;
  s.batch = q.batch();
  s.heads = q.heads();
  s.seq_q = q.seq();
  s.seq_kv = k.seq();
  s.causal = params.causal;
  s.causal_align = params.causal_align;
  const double causal_pairs = causal_pairs_in(s, 0, s.seq_q, 0, s.seq_kv) * static_cast<double>(s.batch * s.heads);
  rep.density = causal_pairs > 0 ? method->computed_pairs() / causal_pairs : 0.0;
  if (const BlockMask* m = method->maybe_mask()) {
    rep.has_recall = true;
    ATTNKIT_RETURN_IF_ERROR(attention_mass_recall(
        q, k, params, [m](int64_t b, int64_t h, int64_t row, uint8_t* vis) { block_mask_visited_row(*m, b, h, row, vis); },
        &rep.recall_mean, &rep.recall_worst));
  }
  *out = rep;
  return Status::ok_status();
}

}  // namespace attnkit
