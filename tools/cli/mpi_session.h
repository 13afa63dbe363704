// MPI for the duration of a CLI command run under mpirun (dist-bench, dist-run): initialized
// unless already, finalized however the command ends.
#pragma once

#ifdef ATTNKIT_HAVE_MPI
#include <mpi.h>

namespace attnkit::cli {

struct MpiSession {
  bool owned = false;
  MPI_Comm comm = MPI_COMM_WORLD;
  int rank = 0, ranks = 1;  // in comm
  MpiSession() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
      owned = true;
    }
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &ranks);
  }
  ~MpiSession() {
    if (owned) MPI_Finalize();
  }
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
};

}  // namespace attnkit::cli
#endif  // ATTNKIT_HAVE_MPI
