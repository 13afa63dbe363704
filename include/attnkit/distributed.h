// attnkit/distributed.h: context parallelism on MPI (the sequence split across processes).
//
// Three schemes, each one collective call made by every rank of `comm` with its own block of the
// sequence (built only when MPI is found; see docs/distributed.md):
//
//   ring_attention   exact softmax attention (Ring Attention, Liu et al. 2023). Every rank holds
//                    the queries, keys and values of its block; K/V blocks travel around the ring
//                    (MPI_Isend / MPI_Irecv overlapped with the local attention call) and the
//                    partial results combine through merge_state_row. Blocks whose keys are all
//                    masked for the local queries are not computed (they still travel).
//   star_context /   Star Attention (Acharya et al. 2024). Phase 1: each rank attends its context
//   star_query       block plus the anchor (first) block, an approximation by design. Phase 2:
//                    query tokens, replicated on every rank, attend to every context block; the
//                    ranks' partial (output, LSE) pairs combine in one MPI_Allreduce whose
//                    operation is the LSE merge. Phase 2 is exact.
//   lasp2_linear_attention
//                    LASP-2 (Sun et al. 2025) for the additive linear family: each rank computes
//                    its chunk's state contribution and decay product, one MPI_Allgather gives
//                    every rank its prefix state, then the chunk runs locally from that state.
//                    The delta rule is supported by gathering each chunk's F x F transition too.
//
// Block layouts (block_segments): kContiguous gives rank r one contiguous range; kZigZag cuts the
// sequence into 2R pieces and gives rank r pieces r and 2R-1-r (striped assignment, Brandon et al.
// 2023 / zig-zag ring attention), which evens out causal work. A rank's local tensor holds its
// segments concatenated in order. Lengths need not divide by the number of ranks.
//
// Errors: every call first checks its input on every rank and agrees on the outcome with an
// MPI_Allreduce, so a bad input on one rank makes every rank return the same Status (naming the
// rank and the problem) instead of leaving the others blocked in a collective.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/linear.h"
#include "attnkit/status.h"
#include "attnkit/tensor.h"

namespace attnkit::dist {

enum class BlockLayout : uint8_t { kContiguous = 0, kZigZag = 1 };
const char* block_layout_name(BlockLayout l);

// A range [start, start + len) of global token positions.
struct Segment {
  int64_t start = 0, len = 0;
};
// The segments of `rank` among `ranks` for a sequence of `seq` tokens, in order (kContiguous: one;
// kZigZag: two). Balanced: piece lengths differ by at most one token.
std::vector<Segment> block_segments(int64_t seq, int ranks, int rank, BlockLayout layout);
// Total tokens of a rank's segments.
int64_t block_len(int64_t seq, int ranks, int rank, BlockLayout layout);

// What a call communicated and how long it waited (per rank; filled when a pointer is given).
struct CommStats {
  int64_t bytes_sent = 0;     // bytes this rank handed to MPI (collectives: its own share sent)
  double wait_seconds = 0;    // time blocked in MPI waits and collectives
  double total_seconds = 0;   // time of the whole call
  int64_t blocks_computed = 0, blocks_skipped = 0;  // ring: (query block, key block) pairs
};

// Combines per-rank outcomes: every rank gets the failure of the lowest failing rank (message
// prefixed "rank N: "), or ok when no rank failed. Collective over comm.
Status agree(const Status& local, MPI_Comm comm);

// ---- ring attention ----------------------------------------------------------------------
//   q:   [batch, local_q,  heads_q,  head_dim]    local_q  = block_len(seq_q,  R, rank, layout)
//   k:   [batch, local_kv, heads_kv, head_dim]    local_kv = block_len(seq_kv, R, rank, layout)
//   v:   [batch, local_kv, heads_kv, head_dim_v]
//   out: [batch, local_q,  heads_q,  head_dim_v]  lse: [batch, heads_q, local_q] f32 (optional)
// Any strides and dtypes that attention() accepts. Masks and hooks follow attention.h on global
// positions (query i sits at key position i + seq_kv - seq_q bottom-right, i top-left).
// Supported: causal (both alignments), window, scale, softcap, head temperature, sink logits,
// softmax. Refused with an error: sink tokens, custom masks, ALiBi, Scalable-Softmax, sigmoid and
// relu normalization, variable-length batches.
struct RingParams {
  AttentionParams attn;       // the attention of the whole sequence
  int64_t seq_q = 0, seq_kv = 0;  // global lengths
  BlockLayout layout = BlockLayout::kContiguous;
  MPI_Comm comm = MPI_COMM_WORLD;
};
Status ring_attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                      float* maybe_lse, const RingParams& params, CommStats* maybe_stats = nullptr);

// ---- Star Attention --------------------------------------------------------------------
// The context of seq_ctx tokens is split kContiguous over the ranks.
// Phase 1 (star_context): q, k, v, out are the rank's context block ([batch, local, heads, dim],
// lse [batch, heads_q, local]); rank 0 broadcasts the first anchor_len keys and values and every
// other rank attends causally over [anchor, own block] (rank 0 over its block alone).
// Phase 2 (star_query): q, k, v are the query tokens (the same on every rank, [batch, n_query, ..]),
// placed after the whole context; k_ctx, v_ctx are the rank's context block. Every rank gets the
// exact result of the queries over the whole context plus the query tokens themselves (causal
// among the queries when attn.causal). out: [batch, n_query, heads_q, head_dim_v].
// attn may set scale, softcap and head temperature; masks other than causal are refused.
struct StarParams {
  AttentionParams attn;
  int64_t seq_ctx = 0;     // global context length
  int64_t anchor_len = 0;  // 0 = the first block's length (the paper's choice)
  MPI_Comm comm = MPI_COMM_WORLD;
};
Status star_context(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                    float* maybe_lse, const StarParams& params, CommStats* maybe_stats = nullptr);
Status star_query(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& k_ctx,
                  const TensorView& v_ctx, const TensorView& out, float* maybe_lse, const StarParams& params,
                  CommStats* maybe_stats = nullptr);

// ---- merging partial results across ranks ----
// Each rank holds a partial softmax attention result of the same rows (over its own keys):
//   o: [batch, seq, heads, dim] f32 contiguous, lse: [batch, heads, seq] f32 (natural log; a part
//   that saw no key has o = 0 and lse = -inf).
// On return every rank holds the merge of all ranks' parts, i.e. the attention of the rows over the
// union of the keys: one MPI_Allreduce whose operation is merge_state_row (commutative and
// associative). Shapes must match on every rank (checked). Collective.
Status allreduce_merge(float* o, float* lse, int64_t batch, int64_t seq, int64_t heads, int64_t dim, MPI_Comm comm,
                       CommStats* maybe_stats = nullptr);

// ---- LASP-2 ------------------------------------------------------------------------------
// Tensors as linear_attention() on the rank's contiguous chunk (ranks hold consecutive chunks in
// rank order; lengths may differ and may be 0). linear.gate / linear.beta are the local chunk's.
// linear.maybe_initial_state (optional) is the state before the first token of the whole sequence
// and must be the same on every rank; linear.maybe_final_state (optional) receives, on every rank,
// the state after the last token of the whole sequence.
// Supported: every configuration of the engine except variable-length batches: the additive
// update (any feature map, decay and normalization: one extra local pass gives the chunk's state
// contribution) and the delta rule (its chunk map S -> P S + M has a dense F x F transition P, so
// the ranks gather P as well; ceil(F / head_dim_v) more local passes compute it; see
// docs/distributed.md). maybe_start_positions must be null (it is set from the rank's offset).
struct Lasp2Params {
  LinearAttentionParams linear;
  MPI_Comm comm = MPI_COMM_WORLD;
};
Status lasp2_linear_attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                              const Lasp2Params& params, CommStats* maybe_stats = nullptr);

}  // namespace attnkit::dist
