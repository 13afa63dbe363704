// core/prefetch.h: software prefetch of a byte range, one 64-byte line at a time.
#pragma once

#include <cstdint>

namespace attnkit::core {

// Prefetches [p, p + bytes) into the caches for reading (prefetcht1: L2 and up, as the decode
// kernels want for rows consumed a tile or 16 keys later). Always inlined: it is called inside
// multiply-add loops, where a call would spill the vector accumulators. A helper that wraps it must
// be always inlined too: GCC 12's mod-ref analysis finds no side effect in a function that only
// prefetches and deletes the calls to it (-fno-ipa-modref keeps them).
[[gnu::always_inline]] inline void prefetch_bytes(const char* p, int64_t bytes) {
#pragma GCC unroll 8
  for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off, 0, 2);
}

}  // namespace attnkit::core
