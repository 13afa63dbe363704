// attnkit/threads.h: the thread counts every entry point accepts.
//
// A thread count (AttentionParams::num_threads, LinearAttentionParams::num_threads,
// ProblemShape::threads, model::LoadOptions::threads, the CLI's --threads, Python's threads=) is
//   0            the OpenMP default (omp_get_max_threads(): OMP_NUM_THREADS or every processor),
//   1..max_threads()  exactly that many,
// and anything else is refused with a Status that names the parameter and its value.
//
// max_threads() is kThreadsPerProcessor times the processors this process may run on
// (omp_get_num_procs(), which honours the CPU affinity mask). The kernels are compute- or
// bandwidth-bound, so threads beyond the processors only add switching; a few per processor are
// still allowed so that thread-count determinism and oversubscription can be tested on a small
// machine. Far larger requests are what the cap is for: OpenMP then fails to create its threads
// (an abort or a crash inside the runtime), and every per-thread workspace is multiplied.
#pragma once

#include "attnkit/status.h"

namespace attnkit {

inline constexpr int kThreadsPerProcessor = 4;

// kThreadsPerProcessor x the processors available to this process.
int max_threads();

// Checks `requested` (0 or 1..max_threads()) and writes the count to use into *resolved (0 becomes
// the OpenMP default). `param` names the argument in the error:
// "num_threads 100000 is not supported; expected 0 (the OpenMP default) or 1..8".
Status resolve_threads(int requested, const char* param, int* resolved);

}  // namespace attnkit
