#include "testing/tensor_buffer.h"

#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>

namespace attnkit::testing {

const char* layout_name(Layout l) {
  switch (l) {
    case Layout::kContiguous: return "contig";
    case Layout::kHeadsMajor: return "headsmajor";
    case Layout::kPaddedRows: return "padded";
    case Layout::kStridedDim: return "strideddim";
  }
  return "unknown";
}

uint64_t Rng::next_u64() {
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void TestTensor::Free::operator()(uint8_t* p) const { std::free(p); }

TestTensor::TestTensor(DType dtype, int64_t d0, int64_t d1, int64_t d2, int64_t d3, Layout layout, bool misaligned) {
  view_.dtype = dtype;
  view_.shape = {d0, d1, d2, d3};
  switch (layout) {
    case Layout::kContiguous:
      view_.stride = {d1 * d2 * d3, d2 * d3, d3, 1};
      break;
    case Layout::kHeadsMajor:
      view_.stride = {d1 * d2 * d3, d3, d1 * d3, 1};
      break;
    case Layout::kPaddedRows: {
      // Odd paddings so rows also start misaligned relative to SIMD vectors.
      const int64_t row = d3 + 3, seq = d2 * row + 5;
      view_.stride = {d1 * seq + 7, seq, row, 1};
      break;
    }
    case Layout::kStridedDim:
      view_.stride = {2 * d1 * d2 * d3, 2 * d2 * d3, 2 * d3, 2};
      break;
  }
  int64_t last = 0;
  for (int i = 0; i < 4; ++i) {
    if (view_.shape[i] > 0) last += (view_.shape[i] - 1) * view_.stride[i];
  }
  span_elems_ = view_.numel() > 0 ? last + 1 : 0;
  const size_t es = dtype_size(dtype);
  data_begin_ = kGuardBytes + (misaligned ? es : 0);
  total_bytes_ = data_begin_ + static_cast<size_t>(span_elems_) * es + kGuardBytes;
  const size_t alloc = ((total_bytes_ + 63) / 64) * 64;
  uint8_t* p = static_cast<uint8_t*>(std::aligned_alloc(64, alloc));
  if (!p) throw std::bad_alloc();
  bytes_.reset(p);
  view_.data = p + data_begin_;
  fill_canary();
}

std::vector<char> TestTensor::in_view_mask() const {
  std::vector<char> m(static_cast<size_t>(span_elems_), 0);
  const auto& sh = view_.shape;
  for (int64_t a = 0; a < sh[0]; ++a)
    for (int64_t b = 0; b < sh[1]; ++b)
      for (int64_t c = 0; c < sh[2]; ++c)
        for (int64_t d = 0; d < sh[3]; ++d) m[static_cast<size_t>(view_.offset(a, b, c, d))] = 1;
  return m;
}

void TestTensor::fill_canary() { std::memset(bytes_.get(), kCanaryByte, total_bytes_); }

void TestTensor::fill_uniform(uint64_t seed, float lo, float hi) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // NaN everywhere first (guards are written byte-wise: 0xFF bytes are NaN in every dtype).
  std::memset(bytes_.get(), 0xFF, total_bytes_);
  for (int64_t i = 0; i < span_elems_; ++i) store_from_f32(view_.data, view_.dtype, i, nan);
  Rng rng(seed);
  const auto& sh = view_.shape;
  for (int64_t a = 0; a < sh[0]; ++a)
    for (int64_t b = 0; b < sh[1]; ++b)
      for (int64_t c = 0; c < sh[2]; ++c)
        for (int64_t d = 0; d < sh[3]; ++d) view_.set(a, b, c, d, rng.uniform(lo, hi));
}

std::string TestTensor::check_canary() const {
  const uint8_t* p = bytes_.get();
  const size_t es = dtype_size(view_.dtype);
  const size_t span_end = data_begin_ + static_cast<size_t>(span_elems_) * es;
  int64_t bad = 0;
  std::string first;
  auto report = [&](const std::string& where) {
    if (bad++ < 4) first += (first.empty() ? "" : ", ") + where;
  };
  for (size_t i = 0; i < data_begin_; ++i) {
    if (p[i] != kCanaryByte) report("guard before at byte -" + std::to_string(data_begin_ - i));
  }
  for (size_t i = span_end; i < total_bytes_; ++i) {
    if (p[i] != kCanaryByte) report("guard after at byte +" + std::to_string(i - span_end));
  }
  const std::vector<char> in_view = in_view_mask();
  for (int64_t e = 0; e < span_elems_; ++e) {
    if (in_view[static_cast<size_t>(e)]) continue;
    for (size_t b = 0; b < es; ++b) {
      if (p[data_begin_ + static_cast<size_t>(e) * es + b] != kCanaryByte) {
        report("stride gap at element offset " + std::to_string(e));
        break;
      }
    }
  }
  if (bad == 0) return "";
  return "wrote " + std::to_string(bad) + " places outside the view: " + first;
}

bool TestTensor::untouched() const {
  const uint8_t* p = bytes_.get();
  for (size_t i = 0; i < total_bytes_; ++i) {
    if (p[i] != kCanaryByte) return false;
  }
  return true;
}

std::vector<float> TestTensor::to_dense() const {
  std::vector<float> out;
  out.reserve(static_cast<size_t>(numel()));
  const auto& sh = view_.shape;
  for (int64_t a = 0; a < sh[0]; ++a)
    for (int64_t b = 0; b < sh[1]; ++b)
      for (int64_t c = 0; c < sh[2]; ++c)
        for (int64_t d = 0; d < sh[3]; ++d) out.push_back(view_.get(a, b, c, d));
  return out;
}

void TestTensor::from_dense(const std::vector<float>& values) {
  size_t i = 0;
  const auto& sh = view_.shape;
  for (int64_t a = 0; a < sh[0]; ++a)
    for (int64_t b = 0; b < sh[1]; ++b)
      for (int64_t c = 0; c < sh[2]; ++c)
        for (int64_t d = 0; d < sh[3]; ++d) view_.set(a, b, c, d, values[i++]);
}

}  // namespace attnkit::testing
