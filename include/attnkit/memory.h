// attnkit/memory.h: scratch memory that kernels allocate, tracked so benchmarks can report the
// peak extra bytes of a call (the O(threads x tile) guarantee is checked through this).
#pragma once

#include <cstddef>
#include <cstdint>

namespace attnkit {

// 64-byte aligned allocation counted in the process-wide scratch counters. Never returns null
// for size 0; throws std::bad_alloc when memory is exhausted.
void* scratch_alloc(size_t bytes);
void scratch_free(void* p, size_t bytes);

// Bytes currently held and the high-water mark since the last reset.
int64_t scratch_current_bytes();
int64_t scratch_peak_bytes();
void scratch_reset_peak();

// RAII owner of a tracked scratch array of T.
template <typename T>
class ScratchArray {
 public:
  ScratchArray() = default;
  explicit ScratchArray(size_t n) : n_(n), p_(static_cast<T*>(scratch_alloc(n * sizeof(T)))) {}
  ~ScratchArray() { release(); }
  ScratchArray(const ScratchArray&) = delete;
  ScratchArray& operator=(const ScratchArray&) = delete;
  ScratchArray(ScratchArray&& o) noexcept : n_(o.n_), p_(o.p_) { o.n_ = 0; o.p_ = nullptr; }
  ScratchArray& operator=(ScratchArray&& o) noexcept {
    if (this != &o) { release(); n_ = o.n_; p_ = o.p_; o.n_ = 0; o.p_ = nullptr; }
    return *this;
  }
  // Grows (never shrinks) to at least n elements; contents are not preserved.
  void ensure(size_t n) {
    if (n > n_) { release(); p_ = static_cast<T*>(scratch_alloc(n * sizeof(T))); n_ = n; }
  }
  T* data() const { return p_; }
  size_t size() const { return n_; }
  T& operator[](size_t i) const { return p_[i]; }

 private:
  void release() { if (p_) scratch_free(p_, n_ * sizeof(T)); p_ = nullptr; n_ = 0; }
  size_t n_ = 0;
  T* p_ = nullptr;
};

}  // namespace attnkit
