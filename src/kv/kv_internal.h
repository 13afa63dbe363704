// Shared pieces of src/kv: slot ranges to physical row spans of the page pool.
#pragma once

#include <cstdint>
#include <vector>

#include "attnkit/kv_cache.h"
#include "core/tile_kernel.h"

namespace attnkit::kv::internal {

// Appends the physical row spans (rows of the pool seen as [capacity * P, ...]) of slots [a, b)
// of a sequence with page table `pages`, merging runs of adjacent pages and adjacent spans of the
// same kind.
void slot_spans(const std::vector<int32_t>& pages, int64_t page_size, int64_t a, int64_t b, bool full,
                std::vector<core::KvSpan>* out);

// Slots of `positions` (increasing) that a query at position p sees: [*lo, *hi).
void visible_slots(const std::vector<int64_t>& positions, int64_t p, int64_t window_left, int64_t* lo, int64_t* hi);

// Intersects [a, b) with sorted, disjoint ranges (empty ranges = no restriction) and calls
// f(begin, end) for each non-empty piece in order.
template <class F>
void for_each_piece(const std::vector<KvSlotRange>& ranges, int64_t a, int64_t b, F&& f) {
  if (a >= b) return;
  if (ranges.empty()) {
    f(a, b);
    return;
  }
  for (const KvSlotRange& r : ranges) {
    const int64_t lo = r.begin > a ? r.begin : a, hi = r.end < b ? r.end : b;
    if (lo < hi) f(lo, hi);
  }
}

}  // namespace attnkit::kv::internal
