// Internal helpers shared by the sparse layer (not public API).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "attnkit/sparse.h"
#include "core/tile_kernel.h"

namespace attnkit::sparse_internal {

// BlockMask shape of a call with square blocks of `block` (q, k in BSHD).
inline BlockMaskShape square_block_shape(const TensorView& q, const TensorView& k, const AttentionParams& p,
                                         int64_t block) {
  BlockMaskShape s;
  s.batch = q.batch();
  s.heads = q.heads();
  s.seq_q = q.seq();
  s.seq_kv = k.seq();
  s.block_q = block;
  s.block_k = block;
  s.causal = p.causal;
  s.causal_align = p.causal_align;
  return s;
}

int64_t diag_offset(const BlockMaskShape& s);
int64_t causal_keys_in(const BlockMaskShape& s, int64_t p, int64_t k0, int64_t k1);
double causal_pairs_in(const BlockMaskShape& s, int64_t r0, int64_t r1, int64_t k0, int64_t k1);
int64_t reachable_k_blocks(const BlockMaskShape& s, int64_t qb);
Status validate_shape(const BlockMaskShape& s);
void append_list(std::vector<int64_t>* offsets, std::vector<int32_t>* items, const std::vector<int32_t>& list);

inline uint64_t splitmix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Checks what every sparse entry point needs from a call: no variable-length batch, softmax.
Status check_sparse_call(const core::Call& call, const char* what);

// One unit of sparse work: query rows [row_begin, row_end) of (seq, head) visit `spans` of key
// positions and/or `n_indices` gathered key positions. The two parts are merged through their LSE.
struct ListWork {
  int64_t seq = 0, head = 0, row_begin = 0, row_end = 0;
  const core::KvSpan* spans = nullptr;
  int n_spans = 0;
  const core::ElementMask* maybe_span_mask = nullptr;  // applied on non-full spans
  const int32_t* indices = nullptr;
  int64_t n_indices = 0;
  const core::ElementMask* maybe_index_mask = nullptr;  // applied on every gathered key
};

// Runs n_work units in parallel (OpenMP, dynamic schedule, one Workspace per thread).
// fill(w, &spans_storage, &work) describes unit w; spans_storage is a per-thread vector the
// description may point into. Writes final rows (with the sink logit) to the call's out / lse.
using FillWork = std::function<void(int64_t w, std::vector<core::KvSpan>* spans, ListWork* work)>;
void run_work(const core::Call& call, int64_t n_work, const FillWork& fill);

// The same, but into a partial state instead of the call's output: o_partial is
// [heads_q, seq rows, head_dim_v] of sequence 0 and lse_partial [heads_q, rows] (no sink logit).
void run_work_partial(const core::Call& call, int64_t n_work, const FillWork& fill, float* o_partial,
                      float* lse_partial, int64_t rows);

}  // namespace attnkit::sparse_internal
