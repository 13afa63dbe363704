// main() of the distributed tests: every rank runs every test; the program fails on every rank
// when a test failed on any rank. Ranks other than 0 print only their failures.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>

#include "distributed/dist_internal.h"
#include "dist_test_util.h"

namespace attnkit::disttest {

LocalBlock local_block(const TensorView& full, const std::vector<dist::Segment>& segs) {
  LocalBlock lb;
  int64_t n = 0;
  for (const dist::Segment& s : segs) n += s.len;
  const int64_t es = static_cast<int64_t>(dtype_size(full.dtype));
  const int64_t row = full.heads() * full.head_dim();
  lb.bytes.resize(static_cast<size_t>(full.batch() * n * row * es));
  lb.view = TensorView::contiguous(lb.bytes.data(), full.dtype, full.batch(), n, full.heads(), full.head_dim());
  // Pack batch by batch so that the segments land in order inside each batch row.
  for (int64_t b = 0; b < full.batch(); ++b) {
    int64_t at = 0;
    for (const dist::Segment& s : segs) {
      TensorView part = dist::internal::seq_slice(full, s.start, s.len);
      part.data = static_cast<uint8_t*>(part.data) + static_cast<size_t>(b * full.stride[0]) * es;
      part.shape[0] = 1;
      dist::internal::pack_dense(part, lb.bytes.data() + ((b * n + at) * row) * es);
      at += s.len;
    }
  }
  return lb;
}

std::string bcast_string(const std::string& s) {
  int len = static_cast<int>(s.size());
  MPI_Bcast(&len, 1, MPI_INT, 0, MPI_COMM_WORLD);
  std::string out = s;
  out.resize(static_cast<size_t>(len));
  MPI_Bcast(out.data(), len, MPI_CHAR, 0, MPI_COMM_WORLD);
  return out;
}

}  // namespace attnkit::disttest

namespace {
class FailurePrinter : public testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const testing::TestPartResult& r) override {
    if (r.failed()) std::fprintf(stderr, "[rank %d] %s:%d: %s\n", rank_, r.file_name() ? r.file_name() : "?",
                                 r.line_number(), r.summary());
  }

 private:
  int rank_;
};
}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {
    auto& listeners = testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new FailurePrinter(rank));
  }
  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0, any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0 && any && !failed) std::fprintf(stderr, "a test failed on another rank\n");
  MPI_Finalize();
  return any;
}
