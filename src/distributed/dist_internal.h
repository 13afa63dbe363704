// Helpers shared by the distributed schemes (ring, Star, LASP-2).
#pragma once

#include <mpi.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "attnkit/distributed.h"

namespace attnkit::dist::internal {

struct Comm {
  MPI_Comm comm = MPI_COMM_NULL;
  int rank = 0, size = 1;
};
// Fails (locally, before any collective) when MPI is not initialized or comm is null.
Status comm_info(MPI_Comm comm, Comm* out);

// Every rank must pass the same values (global shapes and options). Collective: returns the same
// Status on every rank, naming the first value that differs and its range over the ranks.
Status check_same_on_all_ranks(const std::vector<std::pair<std::string, int64_t>>& values, MPI_Comm comm);

// Bytes of a view copied into a dense [d0, d1, d2, d3] buffer of the same dtype.
int64_t dense_bytes(const TensorView& t);
void pack_dense(const TensorView& t, void* dst);
// The dense view of a packed buffer.
TensorView dense_view(void* data, DType dtype, int64_t d0, int64_t d1, int64_t d2, int64_t d3);
// A view of tokens [begin, begin + len) along the seq axis.
TensorView seq_slice(const TensorView& t, int64_t begin, int64_t len);

// Accumulator of partial softmax attention results for [batch, seq, heads, dim] rows: output f32
// and LSE [batch, heads, seq], initially empty (LSE -inf).
struct PartialAcc {
  int64_t batch = 0, seq = 0, heads = 0, dim = 0;
  std::vector<float> o, lse;
  void init(int64_t b, int64_t s, int64_t h, int64_t d);
  float* row(int64_t b, int64_t s, int64_t h) { return o.data() + ((b * seq + s) * heads + h) * dim; }
  float* lse_at(int64_t b, int64_t h, int64_t s) { return lse.data() + (b * heads + h) * seq + s; }
  // Merges a partial result of rows [row_begin, row_begin + part_seq): part_o dense
  // [batch, part_seq, heads, dim], part_lse [batch, heads, part_seq].
  void merge(const float* part_o, const float* part_lse, int64_t row_begin, int64_t part_seq, int threads);
  // Adds a per-head sink logit to the denominator (a part with output 0 and LSE sink[h]).
  void merge_sink_logits(const float* sink);
  // Writes out (any dtype) and, when given, lse [batch, heads, seq].
  void store(const TensorView& out, float* maybe_lse) const;
};

double now_seconds();

// allreduce_merge without the shape check (the caller has checked that the ranks agree); adds its
// wait and bytes to *stats.
void allreduce_merge_rows(float* o, float* lse, int64_t batch, int64_t seq, int64_t heads, int64_t dim, MPI_Comm comm,
                          CommStats* stats);

}  // namespace attnkit::dist::internal
