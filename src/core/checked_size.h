// Size arithmetic for every buffer whose size comes from user input (shapes, lengths, counts,
// GGUF metadata): products are checked for overflow and against stated limits before anything is
// allocated, and a failure names the parameters and their values.
//
// Limits (docs/limits.md lists them for users):
//   kMaxDim       one dimension (batch, sequence length, heads, ...): 2^31 - 1, the range of the
//                 int32 offsets of packed variable-length batches (cu_seqlens) and GGUF counts;
//   kMaxElements  elements of one tensor: 2^40 (4 TiB of f32), far above any real machine, so that
//                 byte counts (x 8 at most) and index arithmetic stay inside int64;
//   check_allocation  a single buffer larger than the machine's physical memory is refused up front
//                 instead of failing (or swapping) half-way through a run.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>

#include "attnkit/registry.h"
#include "attnkit/status.h"

namespace attnkit {

inline constexpr int64_t kMaxDim = (int64_t{1} << 31) - 1;
inline constexpr int64_t kMaxElements = int64_t{1} << 40;

// One named factor of a size product ("seq_q", 4096).
struct SizeFactor {
  const char* name;
  int64_t value;
};

// *out = a * b; false (and *out untouched) when the product overflows int64 or a factor is negative.
bool checked_mul(int64_t a, int64_t b, int64_t* out);

// The product of the factors, as the element count of `what` ("q", "the K cache").
// Fails naming `what` and every factor when a factor is negative or above kMaxDim, or when the
// product exceeds kMaxElements (checked step by step, so it never overflows).
Status checked_elements(const std::string& what, std::initializer_list<SizeFactor> factors, int64_t* out);

// elements * elem_bytes, also checked; fails when it is above the machine's physical memory.
Status checked_bytes(const std::string& what, int64_t elements, int64_t elem_bytes, int64_t* out);

// Fails when one buffer of `bytes` bytes for `what` is above the machine's physical memory.
Status check_allocation(const std::string& what, int64_t bytes);

// A benchmark problem's Q, K, V and output sizes (batch, seq_q, seq_kv, heads, head_dim in the
// ProblemShape's dtype): overflow, the limits above and physical memory for the whole set.
// Part of check_problem_shape (attnkit/registry.h), which every mechanism's prepare calls.
Status check_problem_sizes(const ProblemShape& shape);

// The machine's physical memory in bytes (0 when unknown).
int64_t physical_memory_bytes();

}  // namespace attnkit
