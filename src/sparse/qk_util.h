// Small helpers of the estimators: f32 copies of one head's rows, block pooling, a row-major
// sgemm wrapper and softmax / top-k on score rows.
#pragma once

#include <cstdint>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/tensor.h"

namespace attnkit::sparse_internal {

// Rows [r0, r1) of (batch b, head h) of a BSHD view as dense f32 [r1 - r0, head_dim].
void copy_rows(const TensorView& t, int64_t b, int64_t h, int64_t r0, int64_t r1, float* dst);

// Mean of each block of `block` rows of an [n, d] matrix with row stride ld (-1 = d)
// -> dense [ceil(n / block), d].
void pool_rows(const float* x, int64_t n, int64_t d, int64_t block, std::vector<float>* out, int64_t ld = -1);

// C[m, n] = alpha * A[m, k] B[n, k]^T, row-major, C dense; lda / ldb are row strides (-1 = k).
// OpenBLAS with the thread count it has (the estimators pin it to 1 inside their OpenMP region).
void gemm_abt(const float* a, const float* b, float* c, int64_t m, int64_t n, int64_t k, float alpha,
              int64_t lda = -1, int64_t ldb = -1);

// Pins OpenBLAS to one thread for the object's lifetime (restores the previous count): the
// estimators run one head per OpenMP thread, and OpenMP threads spin-waiting next to OpenBLAS's
// own threads cost more than the products themselves on a busy machine.
class BlasSingleThread {
 public:
  BlasSingleThread();
  ~BlasSingleThread();
  BlasSingleThread(const BlasSingleThread&) = delete;
  BlasSingleThread& operator=(const BlasSingleThread&) = delete;

 private:
  int previous_;
};

// In-place softmax of x[0, n) where entries past `valid` are ignored (set to 0).
void softmax_prefix(float* x, int64_t n, int64_t valid);

// Indices of the k largest values of score[0, n) (ties: lower index), in no particular order.
void top_k_indices(const float* score, int64_t n, int64_t k, std::vector<int32_t>* out);

// Resolved logit scale of a call (params.scale or 1/sqrt(d)).
float resolve_scale(const AttentionParams& p, int64_t head_dim);

// Checks the q/k pair an estimator reads (shapes, GQA ratio, block size) and the call's thread
// count, which it resolves into *threads; names the bad value.
Status check_estimator_inputs(const TensorView& q, const TensorView& k, const AttentionParams& params, int64_t block,
                              const char* what, int* threads);

}  // namespace attnkit::sparse_internal
