#include "sparse/qk_util.h"

#include "attnkit/threads.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>

namespace attnkit::sparse_internal {

void copy_rows(const TensorView& t, int64_t b, int64_t h, int64_t r0, int64_t r1, float* dst) {
  const int64_t d = t.head_dim();
  for (int64_t r = r0; r < r1; ++r) {
    float* o = dst + (r - r0) * d;
    const int64_t base = t.offset(b, r, h, 0);
    if (t.dtype == DType::kF32 && t.stride[3] == 1) {
      std::memcpy(o, static_cast<const float*>(t.data) + base, sizeof(float) * d);
    } else {
      for (int64_t x = 0; x < d; ++x) o[x] = load_as_f32(t.data, t.dtype, base + x * t.stride[3]);
    }
  }
}

void pool_rows(const float* x, int64_t n, int64_t d, int64_t block, std::vector<float>* out, int64_t ld) {
  if (ld < 0) ld = d;
  const int64_t nb = (n + block - 1) / block;
  out->assign(nb * d, 0.0f);
  for (int64_t bi = 0; bi < nb; ++bi) {
    const int64_t r0 = bi * block, r1 = std::min(n, r0 + block);
    float* o = out->data() + bi * d;
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t c = 0; c < d; ++c) o[c] += x[r * ld + c];
    const float inv = 1.0f / static_cast<float>(r1 - r0);
    for (int64_t c = 0; c < d; ++c) o[c] *= inv;
  }
}

void gemm_abt(const float* a, const float* b, float* c, int64_t m, int64_t n, int64_t k, float alpha, int64_t lda,
              int64_t ldb) {
  if (m == 0 || n == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k),
              alpha, a, static_cast<int>(lda < 0 ? k : lda), b, static_cast<int>(ldb < 0 ? k : ldb), 0.0f, c,
              static_cast<int>(n));
}

BlasSingleThread::BlasSingleThread() : previous_(openblas_get_num_threads()) { openblas_set_num_threads(1); }
BlasSingleThread::~BlasSingleThread() { openblas_set_num_threads(previous_); }

void softmax_prefix(float* x, int64_t n, int64_t valid) {
  valid = std::min(valid, n);
  if (valid <= 0) {
    std::fill(x, x + n, 0.0f);
    return;
  }
  const float m = *std::max_element(x, x + valid);
  double sum = 0;
  for (int64_t j = 0; j < valid; ++j) {
    x[j] = std::exp(x[j] - m);
    sum += x[j];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t j = 0; j < valid; ++j) x[j] *= inv;
  std::fill(x + valid, x + n, 0.0f);
}

void top_k_indices(const float* score, int64_t n, int64_t k, std::vector<int32_t>* out) {
  k = std::max<int64_t>(0, std::min(k, n));
  out->resize(n);
  std::iota(out->begin(), out->end(), 0);
  auto better = [score](int32_t a, int32_t b) { return score[a] > score[b] || (score[a] == score[b] && a < b); };
  if (k < n) std::nth_element(out->begin(), out->begin() + k, out->end(), better);
  out->resize(k);
}

float resolve_scale(const AttentionParams& p, int64_t head_dim) {
  return p.scale.has_value() ? *p.scale : 1.0f / std::sqrt(static_cast<float>(head_dim));
}

Status check_estimator_inputs(const TensorView& q, const TensorView& k, const AttentionParams& params, int64_t block,
                              const char* what, int* threads) {
  ATTNKIT_RETURN_IF_ERROR(resolve_threads(params.num_threads, "num_threads", threads));
  if (q.data == nullptr || k.data == nullptr) return Status::invalid_argument(std::string(what) + ": q and k must not be null");
  if (q.batch() != k.batch()) {
    return Status::invalid_argument(std::string(what) + ": q batch " + std::to_string(q.batch()) + " != k batch " +
                                    std::to_string(k.batch()));
  }
  if (q.head_dim() != k.head_dim() || q.head_dim() < 1) {
    return Status::invalid_argument(std::string(what) + ": q head_dim " + std::to_string(q.head_dim()) +
                                    " must equal k head_dim " + std::to_string(k.head_dim()) + " and be >= 1");
  }
  if (k.heads() < 1 || q.heads() % k.heads() != 0) {
    return Status::invalid_argument(std::string(what) + ": heads_q " + std::to_string(q.heads()) +
                                    " is not a multiple of heads_kv " + std::to_string(k.heads()));
  }
  if (q.seq() < 1 || k.seq() < 1) {
    return Status::invalid_argument(std::string(what) + ": seq_q " + std::to_string(q.seq()) + " and seq_kv " +
                                    std::to_string(k.seq()) + " must be >= 1");
  }
  if (block < 1) return Status::invalid_argument(std::string(what) + ": block " + std::to_string(block) + " is not supported; expected >= 1");
  return Status::ok_status();
}

}  // namespace attnkit::sparse_internal
