// attnkit/distributed_model.h: Star Attention inside Gemma 3 (model.h) across MPI ranks.
//
// Star Attention (Acharya, Jia, Ginsburg 2024, "Star Attention: Efficient LLM Inference over Long
// Sequences") splits a long prompt into a context and a query (the question at its end):
//
//   phase 1 (context encoding)  the context is cut into R contiguous blocks, one per rank. Rank r
//                               runs the model over the anchor (the first block's first anchor_len
//                               tokens, at positions 0..) followed by its own block at the block's
//                               global positions, then drops the anchor's K/V: each rank's cache
//                               holds its block alone, encoded as if the anchor preceded it. Layers
//                               keep their own masks (causal; the 512-position window of the
//                               sliding-window layers, on global positions). Rank 0's block is the
//                               anchor itself, encoded exactly.
//   phase 2 (query + generation) every rank runs the same query tokens (then each generated token)
//                               at positions seq_ctx, seq_ctx + 1, ...; in every layer each rank
//                               attends them over its own cached block (the last rank also over
//                               the query tokens' own keys, kept once), and the partial (output,
//                               LSE) pairs combine in one MPI_Allreduce through merge_state_row
//                               (dist::allreduce_merge), so every rank continues with the same
//                               attention output. Greedy tokens are chosen on rank 0 and broadcast.
//
// Phase 2 is exact given the blocks' K/V; phase 1 is the approximation: block r does not see blocks
// 1 .. r-1. With one or two ranks and the default anchor (the whole first block), every block sees
// everything before it, so Star Attention equals exact prefill up to rounding.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "attnkit/distributed.h"
#include "attnkit/model.h"

namespace attnkit::dist {

struct StarModelOptions {
  int64_t anchor_len = 0;   // 0 = the whole first block (the paper's choice); else <= the first block
  int64_t max_tokens = 32;  // greedy tokens generated after the query
  bool stop_at_eos = true;
  MPI_Comm comm = MPI_COMM_WORLD;
};

struct StarModelResult {
  std::vector<int32_t> tokens;     // generated, the same on every rank
  std::vector<float> first_logits; // [n_vocab] after the last query token (rank's own copy)
  Segment block;                   // this rank's context block
  int64_t anchor_len = 0;          // anchor tokens encoded in front of the block (0 on rank 0)
  double context_seconds = 0, query_seconds = 0;  // phase 1; phase 2 with generation (this rank)
  CommStats query_comm;            // phase 2's merges (bytes this rank sent, time blocked in them)
};

// The phase-2 attention backend of a rank whose cache holds its context block (positions below
// seq_ctx) followed by the query tokens (positions seq_ctx ..): see above. Collective: every rank's
// model must call it for the same layers and tokens. `last` = this rank adds the query tokens' own
// keys (exactly one rank must).
std::shared_ptr<model::AttentionBackend> make_star_query_backend(int64_t seq_ctx, bool last, MPI_Comm comm);

// Phase 1 only: leaves m's cache holding this rank's block of `context` (the same tokens on every
// rank) and m's position at the block's end. Collective over options.comm.
Status star_model_context(model::Model* m, const std::vector<int32_t>& context, const StarModelOptions& options,
                          StarModelResult* result);

// Phase 1, then phase 2 over `query` and greedy generation. Every rank passes the same context,
// query and options (checked). The model is left with the exact attention backend and a cache
// that holds the rank's block and the query. Collective over options.comm.
Status star_model_generate(model::Model* m, const std::vector<int32_t>& context, const std::vector<int32_t>& query,
                           const StarModelOptions& options, StarModelResult* result);

}  // namespace attnkit::dist
