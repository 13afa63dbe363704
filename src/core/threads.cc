// The one check and resolution of thread counts (see attnkit/threads.h).
#include "attnkit/threads.h"

#include <omp.h>

#include <algorithm>
#include <string>

namespace attnkit {

int max_threads() { return kThreadsPerProcessor * std::max(1, omp_get_num_procs()); }

Status resolve_threads(int requested, const char* param, int* resolved) {
  const int cap = max_threads();
  if (requested < 0 || requested > cap) {
    return Status::invalid_argument(std::string(param) + " " + std::to_string(requested) +
                                    " is not supported; expected 0 (the OpenMP default) or 1.." + std::to_string(cap) +
                                    " (" + std::to_string(kThreadsPerProcessor) + " per processor)");
  }
  *resolved = requested > 0 ? requested : omp_get_max_threads();
  return Status::ok_status();
}

}  // namespace attnkit
