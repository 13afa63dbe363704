// testing/tensor_buffer.h: owning test tensors with awkward layouts and guard bytes.
//
// A TestTensor owns one allocation laid out as
//   [guard: kGuardBytes] [optional one-element misalignment] [span of the view, with stride gaps] [guard]
// Output tensors are filled with a canary byte pattern everywhere (guards, gaps and the view);
// check_canary() then reports any byte outside the view that a kernel wrote. Input tensors get
// random values inside the view and NaN in the guards and gaps, so a kernel that reads outside
// the view produces NaN and fails the tolerance check.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/tensor.h"

namespace attnkit::testing {

enum class Layout : uint8_t {
  kContiguous = 0,  // dense [batch, seq, heads, dim]
  kHeadsMajor = 1,  // memory order [batch, heads, seq, dim] seen through BSHD strides
  kPaddedRows = 2,  // BSHD with padding after every head row and every sequence row (gaps)
  kStridedDim = 3,  // BSHD with a head-dim stride of 2: every other element is a gap
};
const char* layout_name(Layout l);

inline constexpr size_t kGuardBytes = 64;
inline constexpr uint8_t kCanaryByte = 0xA5;

class TestTensor {
 public:
  TestTensor() = default;
  TestTensor(DType dtype, int64_t d0, int64_t d1, int64_t d2, int64_t d3, Layout layout = Layout::kContiguous,
             bool misaligned = false);

  const TensorView& view() const { return view_; }
  DType dtype() const { return view_.dtype; }
  int64_t numel() const { return view_.numel(); }

  // Uniform values in [lo, hi) inside the view (rounded to the dtype), NaN outside it.
  void fill_uniform(uint64_t seed, float lo = -1.0f, float hi = 1.0f);
  // Canary bytes over the whole allocation, view included (for outputs).
  void fill_canary();
  // Empty when every byte outside the view still holds the canary; else a description of the
  // first bad bytes ("wrote 3 bytes outside the view: guard before at byte -2, ...").
  std::string check_canary() const;
  // True when no byte of the whole allocation, view included, changed since fill_canary().
  bool untouched() const;

  // The view's elements as f32 in dense [d0, d1, d2, d3] order.
  std::vector<float> to_dense() const;
  // Writes dense [d0, d1, d2, d3] f32 values into the view (rounded to the dtype).
  void from_dense(const std::vector<float>& values);

 private:
  std::vector<char> in_view_mask() const;  // per element of the span: 1 when the view covers it

  struct Free {
    void operator()(uint8_t* p) const;
  };
  std::unique_ptr<uint8_t, Free> bytes_;
  size_t total_bytes_ = 0;
  size_t data_begin_ = 0;     // byte offset of element 0 of the view
  int64_t span_elems_ = 0;    // elements from element 0 to the view's last element, inclusive
  TensorView view_;
};

// Deterministic uniform [0, 1) generator (SplitMix64), so cases are reproducible from their seed.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull) {}
  uint64_t next_u64();
  double uniform() { return static_cast<double>(next_u64() >> 11) * (1.0 / 9007199254740992.0); }
  float uniform(float lo, float hi) { return lo + (hi - lo) * static_cast<float>(uniform()); }

 private:
  uint64_t state_;
};

}  // namespace attnkit::testing
