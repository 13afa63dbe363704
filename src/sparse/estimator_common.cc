// Shared pieces of the dynamic sparsity estimators (see estimator_common.h).
#include "sparse/estimator_common.h"

#include <algorithm>
#include <string>
#include <vector>

namespace attnkit::sparse_internal {

QBlock qblock(const BlockMaskShape& s, int64_t qb) {
  const int64_t off = diag_offset(s);
  const int64_t r0 = qb * s.block_q, r1 = std::min(s.seq_q, r0 + s.block_q);
  return {r0, r1, r0 + off, r1 + off};
}

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

void pooled_block_scores(const TensorView& q, const KvHeadData& kv, const BlockMaskShape& s, int64_t b, int64_t h,
                         int64_t nqb, int64_t nkb, float scale, std::vector<float>* scores) {
  const int64_t d = q.head_dim();
  std::vector<float> qf(s.seq_q * d), pq;
  copy_rows(q, b, h, 0, s.seq_q, qf.data());
  pool_rows(qf.data(), s.seq_q, d, s.block_q, &pq);
  scores->resize(nqb * nkb);
  gemm_abt(pq.data(), kv.pooled.data(), scores->data(), nqb, nkb, d, scale);
}

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

void vertical_slash_lists(const BlockMaskShape& s, int64_t b, int64_t h, const std::vector<int32_t>& slash_idx,
                          std::vector<int32_t> columns, std::vector<std::vector<int32_t>>* sel,
                          std::vector<std::vector<int32_t>>* cols) {
  std::sort(columns.begin(), columns.end());
  std::vector<int64_t> deltas;
  for (int32_t i : slash_idx) deltas.push_back(int64_t{i} - s.seq_kv);
  std::sort(deltas.begin(), deltas.end());
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

}  // namespace attnkit::sparse_internal
