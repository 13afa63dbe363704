// Helpers of the distributed tests: the rank's view of the world and its block of a full tensor.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "attnkit/distributed.h"
#include "distributed/dist_internal.h"

namespace attnkit::disttest {

inline int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
inline int world_size() {
  int s = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &s);
  return s;
}

// The rank's segments of a full tensor, concatenated along seq into a dense tensor of its dtype.
struct LocalBlock {
  std::vector<uint8_t> bytes;
  TensorView view;
};
LocalBlock local_block(const TensorView& full, const std::vector<dist::Segment>& segs);

// The rank's rows (seq positions of segs) of dense [batch, seq, heads, dim] values.
template <typename T>
std::vector<T> rows_of(const std::vector<T>& dense, int64_t batch, int64_t seq, int64_t heads, int64_t dim,
                       const std::vector<dist::Segment>& segs) {
  std::vector<T> out;
  for (int64_t b = 0; b < batch; ++b)
    for (const dist::Segment& s : segs)
      for (int64_t i = s.start; i < s.start + s.len; ++i)
        for (int64_t x = 0; x < heads * dim; ++x) out.push_back(dense[((b * seq + i) * heads) * dim + x]);
  return out;
}
// The rank's columns of dense LSE [batch, heads, seq] values, as [batch, heads, local].
template <typename T>
std::vector<T> lse_of(const std::vector<T>& dense, int64_t batch, int64_t heads, int64_t seq,
                      const std::vector<dist::Segment>& segs) {
  std::vector<T> out;
  for (int64_t bh = 0; bh < batch * heads; ++bh)
    for (const dist::Segment& s : segs)
      for (int64_t i = s.start; i < s.start + s.len; ++i) out.push_back(dense[bh * seq + i]);
  return out;
}

// Broadcasts rank 0's string (to compare what every rank got).
std::string bcast_string(const std::string& s);

}  // namespace attnkit::disttest
