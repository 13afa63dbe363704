// core/tile_kernel.h: the one tiled online-softmax kernel, shared by every exact-attention path.
//
// Dense prefill, split-KV decode, block-sparse attention and gather attention all reduce to:
// "for query rows [row_begin, row_end) of one sequence and one query head, visit these spans of
// keys, and either write the final output (+ LSE) or hand back the partial state". Masking inside
// a span is skipped when the caller marks the span `full`.
#pragma once

#include <cstdint>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/memory.h"

namespace attnkit::core {

// One sequence of the call: a batch element, or one piece of a packed variable-length batch.
struct SeqRange {
  int64_t batch = 0;    // index into the batch dimension of the views
  int64_t q_begin = 0;  // first row in the seq dimension of q/out
  int64_t q_len = 0;
  int64_t k_begin = 0;  // first row in the seq dimension of k/v
  int64_t k_len = 0;
};

// A validated call with every default resolved. Built once per public call by make_call().
struct Call {
  TensorView q, k, v, out;
  float* maybe_lse = nullptr;
  AttentionParams p;
  int64_t head_dim = 0, head_dim_v = 0, heads_q = 0, heads_kv = 0, group = 1;
  float scale = 1.0f;  // resolved
  int threads = 1;      // resolved p.num_threads (attnkit/threads.h)
  int64_t n_seqs = 0;
  const int32_t* cu_q = nullptr;  // resolved varlen offsets (null for a regular batch)
  const int32_t* cu_k = nullptr;
  int64_t total_q = 0;  // LSE row length: seq_q (batch) or total tokens (varlen)

  SeqRange seq(int64_t s) const;
  int64_t kv_head(int64_t hq) const { return hq / group; }
  // Offset added to a query row index to get its position on the key axis (causal alignment).
  int64_t diag_offset(const SeqRange& r) const {
    return p.causal_align == CausalAlign::kBottomRight ? r.k_len - r.q_len : 0;
  }
  // Number of keys that row i of sequence r may see before any custom mask (for Scalable-Softmax).
  int64_t visible_count(const SeqRange& r, int64_t i) const;
  // Scalar visibility of key j to row i (everything but the custom mask).
  bool visible(const SeqRange& r, int64_t i, int64_t j) const;
  // Range of keys [lo, hi) that can be visible to any of rows [r0, r1) through causality and the
  // window (sink tokens [0, n_sink) come on top of it).
  void key_range(const SeqRange& r, int64_t r0, int64_t r1, int64_t* lo, int64_t* hi) const;
  float sigmoid_bias(const SeqRange& r) const;
};

// Validates and resolves a public call (every error message names the parameter and value).
Status make_call(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                 float* maybe_lse, const AttentionParams& params, Call* call);

// A run of key positions [begin, end) to visit (or, with kv_indices, a run of entries of the
// index list). The kernel always applies the call's own masks (causal, window, sinks, custom) and
// finds by itself where it can skip them; full = the job's extra ElementMask is true on every
// (row, key) pair of the span, so the kernel does not evaluate it there.
struct KvSpan {
  int64_t begin = 0, end = 0;
  bool full = false;
};

// Extra element predicate for non-full spans (sparse patterns): key j visible to row i of
// sequence s, query head h, on top of the call's own masks.
struct ElementMask {
  bool (*fn)(const void* ctx, int64_t s, int64_t h, int64_t i, int64_t j) = nullptr;
  const void* ctx = nullptr;
};

// Unnormalized-free partial output of a block: o normalized by its own denominator and its LSE,
// ready for merge_state_row(). o is [rows, head_dim_v] row-major, lse [rows].
struct PartialOut {
  float* o = nullptr;
  float* lse = nullptr;
};

// Rows of a job: for each head in [head_q, head_q + n_heads) (all in one kv group), for each query
// row i in [row_begin, row_end): head-major. Partial outputs use the same row order.
struct BlockJob {
  int64_t seq = 0;       // sequence index (Call::seq)
  int64_t head_q = 0;
  int64_t n_heads = 1;
  int64_t row_begin = 0, row_end = 0;  // query rows within the sequence
  const KvSpan* spans = nullptr;
  int n_spans = 0;
  const int32_t* maybe_kv_indices = nullptr;  // spans index this list of key positions if set
  const ElementMask* maybe_extra_mask = nullptr;
  bool include_sink_logit = true;  // false for partial results merged later (add it once)
  PartialOut* maybe_partial = nullptr;  // set: write partial state here instead of out/lse
};

// Per-thread scratch, reused across jobs; its size is O(tile), never O(sequence).
struct Workspace {
  ScratchArray<float> buf;
  ScratchArray<int64_t> ibuf;
};

// Runs one block job (dispatches to the best SIMD target).
void attend_block(const Call& call, const BlockJob& job, Workspace* ws);

// Query rows per block and keys per tile used by attend_block (callers align block sizes to them).
inline constexpr int64_t kTileQ = 64;
inline constexpr int64_t kTileK = 64;

// The key spans that rows [row_begin, row_end) of sequence r can see under the call's causal,
// window and sink masks (one span, or two when the sink prefix is disjoint from the window).
void dense_spans(const Call& call, const SeqRange& r, int64_t row_begin, int64_t row_end, std::vector<KvSpan>* out);

// Split-KV decode: attends every query row of sequence `seq` (all heads) to keys [key_begin,
// key_end), walking the keys once in tiles and visiting all kv heads per tile so K/V stream
// through memory in order. Writes partial states (normalized o and LSE without the sink logit)
// into partial, laid out [heads_q, q_len, head_dim_v] and lse [heads_q, q_len].
void attend_keys_all_heads(const Call& call, int64_t seq, int64_t key_begin, int64_t key_end, PartialOut partial,
                           Workspace* ws);

// Writes one finished row (o normalized, lse, both without the sink logit) to out / lse,
// adding the call's sink logit if it has one and add_sink is set. Shared by every path that
// merges partial states.
void write_final_row(const Call& call, const SeqRange& r, int64_t head, int64_t i, const float* o, float lse,
                     bool add_sink = true);

// Name of the Highway target attend_block dispatches to.
const char* dispatched_target_name();

}  // namespace attnkit::core
