// attnkit/tensor.h: dtypes and non-owning tensor views.
//
// A TensorView is a pointer, a dtype, a 4-d shape and strides counted in elements (not bytes).
// Attention tensors use the layout [batch, seq, heads, head_dim] (BSHD). Any strides are accepted,
// including zero (broadcast) for inputs; outputs must not alias themselves.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "attnkit/enum_names.h"

namespace attnkit {

// kI8 is a storage type for keys and values only (symmetric int8 with a per-(token, head) f32
// scale, see AttentionParams::k_scales); queries and outputs are always floating point.
enum class DType : uint8_t { kF32 = 0, kF16 = 1, kBF16 = 2, kI8 = 3 };

template <>
struct EnumNames<DType> {
  static constexpr EnumName<DType> kTable[] = {
      {DType::kF32, "f32"}, {DType::kF16, "f16"}, {DType::kBF16, "bf16"}, {DType::kI8, "int8"}};
};

inline size_t dtype_size(DType t) { return t == DType::kF32 ? 4 : t == DType::kI8 ? 1 : 2; }
inline bool dtype_is_float(DType t) { return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16; }
inline const char* dtype_name(DType t) { return enum_name(t); }
// Parses "f32" / "f16" / "bf16" / "int8"; returns false for anything else.
inline bool parse_dtype(const std::string& s, DType* out) { return parse_enum(s, out); }

// ---- scalar conversions (round to nearest even; NaN stays NaN) ----
inline float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: renormalize
      int e = -1;
      do { ++e; mant <<= 1; } while ((mant & 0x400u) == 0);
      u = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (mant << 13);
  } else {
    u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u); // overflow -> inf
  if (abs < 0x38800000u) {                                              // subnormal or zero
    if (abs < 0x33000000u) return static_cast<uint16_t>(sign);
    const uint32_t e = abs >> 23;
    const uint32_t m = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;  // 14..24
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return static_cast<uint16_t>(sign | r);
  }
  uint32_t r = abs + 0xfffu + ((abs >> 13) & 1u);
  return static_cast<uint16_t>(sign | ((r - 0x38000000u) >> 13));
}

// Reads element i (a flat element offset) of a buffer of the given dtype as f32 (int8: the stored
// integer, without its scale).
inline float load_as_f32(const void* base, DType t, int64_t i) {
  switch (t) {
    case DType::kF32: return static_cast<const float*>(base)[i];
    case DType::kF16: return f16_to_f32(static_cast<const uint16_t*>(base)[i]);
    case DType::kBF16: return bf16_to_f32(static_cast<const uint16_t*>(base)[i]);
    case DType::kI8: return static_cast<float>(static_cast<const int8_t*>(base)[i]);
  }
  return 0.0f;
}
inline void store_from_f32(void* base, DType t, int64_t i, float v) {
  switch (t) {
    case DType::kF32: static_cast<float*>(base)[i] = v; break;
    case DType::kF16: static_cast<uint16_t*>(base)[i] = f32_to_f16(v); break;
    case DType::kBF16: static_cast<uint16_t*>(base)[i] = f32_to_bf16(v); break;
    case DType::kI8: {  // round to nearest, saturated to the symmetric range [-127, 127]
      const float r = std::nearbyint(v != v ? 0.0f : v < -127.0f ? -127.0f : v > 127.0f ? 127.0f : v);
      static_cast<int8_t*>(base)[i] = static_cast<int8_t>(r);
      break;
    }
  }
}

// Non-owning 4-d view. shape = [batch, seq, heads, head_dim] for attention tensors.
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kF32;
  std::array<int64_t, 4> shape{0, 0, 0, 0};
  std::array<int64_t, 4> stride{0, 0, 0, 0};  // in elements

  // A dense row-major view of the given shape.
  static TensorView contiguous(void* data, DType dtype, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    TensorView v;
    v.data = data;
    v.dtype = dtype;
    v.shape = {d0, d1, d2, d3};
    v.stride = {d1 * d2 * d3, d2 * d3, d3, 1};
    return v;
  }
  int64_t batch() const { return shape[0]; }
  int64_t seq() const { return shape[1]; }
  int64_t heads() const { return shape[2]; }
  int64_t head_dim() const { return shape[3]; }
  int64_t numel() const { return shape[0] * shape[1] * shape[2] * shape[3]; }
  int64_t offset(int64_t b, int64_t s, int64_t h, int64_t d) const {
    return b * stride[0] + s * stride[1] + h * stride[2] + d * stride[3];
  }
  float get(int64_t b, int64_t s, int64_t h, int64_t d) const { return load_as_f32(data, dtype, offset(b, s, h, d)); }
  void set(int64_t b, int64_t s, int64_t h, int64_t d, float v) const { store_from_f32(data, dtype, offset(b, s, h, d), v); }
};

}  // namespace attnkit
