// Checked size arithmetic (see checked_size.h).
#include "core/checked_size.h"

#include <unistd.h>

#include <cstdio>

namespace attnkit {

bool checked_mul(int64_t a, int64_t b, int64_t* out) {
  int64_t r = 0;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r)) return false;
  *out = r;
  return true;
}

namespace {

std::string factor_list(std::initializer_list<SizeFactor> factors) {
  std::string s;
  for (const SizeFactor& f : factors) s += (s.empty() ? "" : " x ") + std::string(f.name) + " " + std::to_string(f.value);
  return s;
}

std::string gib(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f GiB", static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

}  // namespace

Status checked_elements(const std::string& what, std::initializer_list<SizeFactor> factors, int64_t* out) {
  for (const SizeFactor& f : factors) {
    if (f.value < 0 || f.value > kMaxDim)
      return Status::out_of_range(std::string(f.name) + " " + std::to_string(f.value) + " is outside the supported range 0.." +
                                  std::to_string(kMaxDim) + " (for " + what + ")");
  }
  int64_t n = 1;
  for (const SizeFactor& f : factors) {
    if (!checked_mul(n, f.value, &n) || n > kMaxElements)
      return Status::out_of_range(what + " would have more than 2^40 elements (" + factor_list(factors) +
                                  "); reduce these sizes");
  }
  *out = n;
  return Status::ok_status();
}

Status checked_bytes(const std::string& what, int64_t elements, int64_t elem_bytes, int64_t* out) {
  int64_t b = 0;
  if (!checked_mul(elements, elem_bytes, &b))
    return Status::out_of_range(what + ": " + std::to_string(elements) + " elements of " + std::to_string(elem_bytes) +
                                " bytes overflow a 64-bit size");
  ATTNKIT_RETURN_IF_ERROR(check_allocation(what, b));
  *out = b;
  return Status::ok_status();
}

int64_t physical_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return 0;
  int64_t b = 0;
  return checked_mul(pages, page, &b) ? b : 0;
}

Status check_allocation(const std::string& what, int64_t bytes) {
  if (bytes < 0) return Status::out_of_range(what + ": size " + std::to_string(bytes) + " bytes is negative");
  const int64_t mem = physical_memory_bytes();
  if (mem > 0 && bytes > mem)
    return Status::out_of_range(what + " needs " + std::to_string(bytes) + " bytes (" + gib(bytes) +
                                "), more than this machine's memory (" + gib(mem) + ")");
  return Status::ok_status();
}

Status check_problem_sizes(const ProblemShape& s) {
  int64_t nq = 0, nkv = 0;
  ATTNKIT_RETURN_IF_ERROR(checked_elements(
      "q", {{"batch", s.batch}, {"seq_q", s.seq_q}, {"heads_q", s.heads_q}, {"head_dim", s.head_dim}}, &nq));
  ATTNKIT_RETURN_IF_ERROR(checked_elements(
      "k", {{"batch", s.batch}, {"seq_kv", s.seq_kv}, {"heads_kv", s.heads_kv}, {"head_dim", s.head_dim}}, &nkv));
  // q, k, v in the problem's dtype and an f32 output the size of q; each term is below 2^43, so
  // the sum cannot overflow.
  const int64_t elem = static_cast<int64_t>(dtype_size(s.dtype));
  const int64_t total = (nq + 2 * nkv) * elem + nq * 4;
  return check_allocation("the inputs and output of this problem (batch " + std::to_string(s.batch) + ", seq_q " +
                              std::to_string(s.seq_q) + ", seq_kv " + std::to_string(s.seq_kv) + ", heads_q " +
                              std::to_string(s.heads_q) + ", heads_kv " + std::to_string(s.heads_kv) + ", head_dim " +
                              std::to_string(s.head_dim) + ")",
                          total);
}

}  // namespace attnkit
