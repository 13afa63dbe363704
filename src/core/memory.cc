// Tracked scratch allocations (see attnkit/memory.h).
#include "attnkit/memory.h"

#include <atomic>
#include <cstdlib>
#include <new>

namespace attnkit {
namespace {
std::atomic<int64_t> g_current{0};
std::atomic<int64_t> g_peak{0};
}  // namespace

void* scratch_alloc(size_t bytes) {
  const size_t rounded = ((bytes + 63) / 64) * 64;
  void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  if (!p) throw std::bad_alloc();
  const int64_t now = g_current.fetch_add(static_cast<int64_t>(bytes)) + static_cast<int64_t>(bytes);
  int64_t peak = g_peak.load();
  while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
  }
  return p;
}

void scratch_free(void* p, size_t bytes) {
  if (!p) return;
  std::free(p);
  g_current.fetch_sub(static_cast<int64_t>(bytes));
}

int64_t scratch_current_bytes() { return g_current.load(); }
int64_t scratch_peak_bytes() { return g_peak.load(); }
void scratch_reset_peak() { g_peak.store(g_current.load()); }

}  // namespace attnkit
