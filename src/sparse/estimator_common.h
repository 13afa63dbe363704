// Pieces shared by the dynamic sparsity estimators (one file per estimator: vertical_slash.cc,
// block_topk.cc, moba.cc, flexprefill.cc, hip.cc). Internal, not public API.
//
// Cost: every estimator reads K once per kv head and does its score products with OpenBLAS sgemm
// (outside OpenMP regions: OpenBLAS threads itself), so estimation stays a small fraction of
// dense attention (vertical-slash: last_q x Sk x d; block top-k: (Sq/B) x (Sk/B) x d; MoBA:
// Sq x (Sk/B) x d multiply-adds per head).
#pragma once

#include <omp.h>

#include <cstdint>
#include <vector>

#include "attnkit/sparse.h"
#include "sparse/qk_util.h"
#include "sparse/sparse_internal.h"

namespace attnkit::sparse_internal {

// Rows of query block qb and their key-axis positions.
struct QBlock {
  int64_t r0, r1, p0, p1;  // rows [r0, r1), positions [p0, p1)
};

QBlock qblock(const BlockMaskShape& s, int64_t qb);

// Per (b, kv head): K as f32 rows (in place when K is f32 with unit element stride, else a
// copy) and its block means.
struct KvHeadData {
  const float* k = nullptr;  // [Sk rows, row stride ld]
  int64_t ld = 0;
  std::vector<float> own;     // the copy, when one was needed
  std::vector<float> pooled;  // [nkb, d]
};

void load_kv_head(const TensorView& k, int64_t b, int64_t hk, int64_t block, KvHeadData* out);

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
                     int64_t last, float scale, std::vector<float>* probs, std::vector<int64_t>* pos);

// Block-level scores of query head h: its mean-pooled query blocks against the kv head's
// mean-pooled key blocks, scaled; scores is [nqb, nkb] (MInference block-sparse, FlexPrefill's
// query-aware branch and HiP all start from it).
void pooled_block_scores(const TensorView& q, const KvHeadData& kv, const BlockMaskShape& s, int64_t b, int64_t h,
                         int64_t nqb, int64_t nkb, float scale, std::vector<float>* scores);

// Adds the key blocks that slash (diagonal) distances `deltas` (j = p - delta) touch for the
// query block to `sel`.
void slash_blocks(const BlockMaskShape& s, const QBlock& qb, const std::vector<int64_t>& deltas, std::vector<uint8_t>* mark,
                  std::vector<int32_t>* sel);

// The key block(s) holding the diagonal of a query block (its rows' own positions): always
// visited so that no row is left without keys and the local context is exact.
void add_diagonal(const BlockMaskShape& s, const QBlock& qb, std::vector<int32_t>* sel);

Status check_positive(const char* what, const char* name, int64_t v);

Status check_nonneg(const char* what, const char* name, int64_t v);

// Shared by vertical-slash and FlexPrefill's vertical-slash branch: column and diagonal sums of
// the last rows' probabilities. diag index = delta + Sk (delta = p - j may be negative when not
// causal).
void vertical_slash_sums(const std::vector<float>& probs, const std::vector<int64_t>& pos, int64_t sk,
                         std::vector<double>* vert, std::vector<double>* slash);

// Builds the lists of (b, h) from its chosen diagonals (indices into vertical_slash_sums' slash
// sums, i.e. delta + Sk) and key columns, both in any order.
void vertical_slash_lists(const BlockMaskShape& s, int64_t b, int64_t h, const std::vector<int32_t>& slash_idx,
                          std::vector<int32_t> columns, std::vector<std::vector<int32_t>>* sel,
                          std::vector<std::vector<int32_t>>* cols);

}  // namespace attnkit::sparse_internal
