// Dequantization of ggml tensor types to f32, one block at a time.
//
// Block layouts are ggml's (ggml-common.h); the formulas below are the reference ones
// (x = d * q for symmetric types, x = d * q - m or d * q + m for the ones with a minimum), computed
// in f32 in the same order as ggml and the `gguf` Python package so results match bit for bit.
// All reads go through memcpy / byte loads: tensor data in a GGUF is only 32-byte aligned as a
// whole and block sizes (18, 22, 34, 210 bytes, ...) leave blocks unaligned.
#include <algorithm>
#include <cstring>
#include <string>

#include "attnkit/gguf.h"
#include "attnkit/tensor.h"

namespace attnkit::gguf {
namespace {

constexpr int kQK = 32;    // elements per block of the legacy types
constexpr int kQKK = 256;  // elements per super-block of the k-quants

inline float load_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// --- plain types ---
void dq_f32(const uint8_t* b, float* y) { std::memcpy(y, b, 4); }
void dq_f16(const uint8_t* b, float* y) { y[0] = load_f16(b); }
void dq_bf16(const uint8_t* b, float* y) {
  uint16_t h;
  std::memcpy(&h, b, 2);
  y[0] = bf16_to_f32(h);
}
void dq_f64(const uint8_t* b, float* y) {
  double d;
  std::memcpy(&d, b, 8);
  y[0] = static_cast<float>(d);
}
void dq_i8(const uint8_t* b, float* y) { y[0] = static_cast<float>(static_cast<int8_t>(b[0])); }
void dq_i16(const uint8_t* b, float* y) {
  int16_t v;
  std::memcpy(&v, b, 2);
  y[0] = static_cast<float>(v);
}
void dq_i32(const uint8_t* b, float* y) {
  int32_t v;
  std::memcpy(&v, b, 4);
  y[0] = static_cast<float>(v);
}

// --- legacy 32-element blocks ---
// Q4_0: f16 d, 16 bytes of nibbles. Low nibbles are elements 0..15, high nibbles 16..31; q - 8.
void dq_q4_0(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = static_cast<float>((qs[j] & 0x0f) - 8) * d;
    y[j + kQK / 2] = static_cast<float>((qs[j] >> 4) - 8) * d;
  }
}
// Q4_1: f16 d, f16 m, nibbles; x = q * d + m.
void dq_q4_1(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  const float m = load_f16(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = static_cast<float>(qs[j] & 0x0f) * d + m;
    y[j + kQK / 2] = static_cast<float>(qs[j] >> 4) * d + m;
  }
}
// Q5_0: f16 d, u32 qh (the 5th bit of each element, bit j for element j), nibbles; q - 16.
void dq_q5_0(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  uint32_t qh;
  std::memcpy(&qh, b + 2, 4);
  const uint8_t* qs = b + 6;
  for (int j = 0; j < kQK / 2; ++j) {
    const int hi0 = ((qh >> j) & 1u) << 4;
    const int hi1 = ((qh >> (j + 16)) & 1u) << 4;
    y[j] = static_cast<float>(((qs[j] & 0x0f) | hi0) - 16) * d;
    y[j + kQK / 2] = static_cast<float>(((qs[j] >> 4) | hi1) - 16) * d;
  }
}
// Q5_1: f16 d, f16 m, u32 qh, nibbles; x = q * d + m.
void dq_q5_1(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  const float m = load_f16(b + 2);
  uint32_t qh;
  std::memcpy(&qh, b + 4, 4);
  const uint8_t* qs = b + 8;
  for (int j = 0; j < kQK / 2; ++j) {
    const int hi0 = ((qh >> j) & 1u) << 4;
    const int hi1 = ((qh >> (j + 16)) & 1u) << 4;
    y[j] = static_cast<float>((qs[j] & 0x0f) | hi0) * d + m;
    y[j + kQK / 2] = static_cast<float>((qs[j] >> 4) | hi1) * d + m;
  }
}
// Q8_0: f16 d, 32 int8.
void dq_q8_0(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  const int8_t* qs = reinterpret_cast<const int8_t*>(b + 2);
  for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(qs[j]) * d;
}

// --- k-quants: 256-element super-blocks of 16 or 8 sub-blocks with their own quantized scales ---
// Q2_K: scales[16] (low nibble scale, high nibble min), qs[64] (2-bit), f16 d, f16 dmin.
void dq_q2_k(const uint8_t* b, float* y) {
  const uint8_t* scales = b;
  const uint8_t* q = b + 16;
  const float d = load_f16(b + 80);
  const float dmin = load_f16(b + 82);
  int is = 0;
  for (int n = 0; n < kQKK; n += 128) {
    int shift = 0;
    for (int j = 0; j < 4; ++j) {
      uint8_t sc = scales[is++];
      float dl = d * static_cast<float>(sc & 0x0f), ml = dmin * static_cast<float>(sc >> 4);
      for (int l = 0; l < 16; ++l) *y++ = dl * static_cast<float>((q[l] >> shift) & 3) - ml;
      sc = scales[is++];
      dl = d * static_cast<float>(sc & 0x0f);
      ml = dmin * static_cast<float>(sc >> 4);
      for (int l = 0; l < 16; ++l) *y++ = dl * static_cast<float>((q[l + 16] >> shift) & 3) - ml;
      shift += 2;
    }
    q += 32;
  }
}
// Q3_K: hmask[32] (3rd bit, inverted: set means no -4), qs[64] (low 2 bits), scales[12] (16 6-bit
// scales, offset by 32), f16 d.
void dq_q3_k(const uint8_t* b, float* y) {
  const uint8_t* hm = b;
  const uint8_t* q = b + 32;
  const uint8_t* packed = b + 96;
  const float d_all = load_f16(b + 108);
  // Unpack 16 6-bit scales: low 4 bits from bytes 0..7 (nibbles), high 2 bits from bytes 8..11.
  int8_t scales[16];
  for (int i = 0; i < 16; ++i) {
    const int lo = i < 8 ? (packed[i] & 0x0f) : (packed[i - 8] >> 4);
    const int hi = (packed[8 + (i % 4)] >> (2 * (i / 4))) & 3;
    scales[i] = static_cast<int8_t>((lo | (hi << 4)) - 32);
  }
  int is = 0;
  uint8_t m = 1;
  for (int n = 0; n < kQKK; n += 128) {
    int shift = 0;
    for (int j = 0; j < 4; ++j) {
      float dl = d_all * static_cast<float>(scales[is++]);
      for (int l = 0; l < 16; ++l) {
        *y++ = dl * static_cast<float>(((q[l] >> shift) & 3) - ((hm[l] & m) ? 0 : 4));
      }
      dl = d_all * static_cast<float>(scales[is++]);
      for (int l = 0; l < 16; ++l) {
        *y++ = dl * static_cast<float>(((q[l + 16] >> shift) & 3) - ((hm[l + 16] & m) ? 0 : 4));
      }
      shift += 2;
      m = static_cast<uint8_t>(m << 1);
    }
    q += 32;
  }
}
// 6-bit scale and min j (0..7) of Q4_K / Q5_K, packed in 12 bytes: j < 4 in the low 6 bits of bytes
// j and j + 4; j >= 4 in the nibbles of bytes j + 4 with their top 2 bits in bytes j - 4 and j.
inline void scale_min_k4(int j, const uint8_t* q, uint8_t* sc, uint8_t* mn) {
  if (j < 4) {
    *sc = q[j] & 63;
    *mn = q[j + 4] & 63;
  } else {
    *sc = static_cast<uint8_t>((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4));
    *mn = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}
// Q4_K: f16 d, f16 dmin, scales[12], qs[128]; 8 sub-blocks of 32, x = d*sc*q - dmin*m.
void dq_q4_k(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  const float dmin = load_f16(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* q = b + 16;
  int is = 0;
  for (int j = 0; j < kQKK; j += 64) {
    uint8_t sc, mn;
    scale_min_k4(is + 0, scales, &sc, &mn);
    const float d1 = d * sc, m1 = dmin * mn;
    scale_min_k4(is + 1, scales, &sc, &mn);
    const float d2 = d * sc, m2 = dmin * mn;
    for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0x0f) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
    q += 32;
    is += 2;
  }
}
// Q5_K: f16 d, f16 dmin, scales[12], qh[32] (5th bits, two per sub-block pair), qs[128].
void dq_q5_k(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  const float dmin = load_f16(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* ql = b + 48;
  int is = 0;
  uint8_t u1 = 1, u2 = 2;
  for (int j = 0; j < kQKK; j += 64) {
    uint8_t sc, mn;
    scale_min_k4(is + 0, scales, &sc, &mn);
    const float d1 = d * sc, m1 = dmin * mn;
    scale_min_k4(is + 1, scales, &sc, &mn);
    const float d2 = d * sc, m2 = dmin * mn;
    for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>((ql[l] & 0x0f) + ((qh[l] & u1) ? 16 : 0)) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>((ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
    ql += 32;
    is += 2;
    u1 = static_cast<uint8_t>(u1 << 2);
    u2 = static_cast<uint8_t>(u2 << 2);
  }
}
// Q6_K: ql[128] (low 4 bits), qh[64] (high 2 bits), int8 scales[16], f16 d; q - 32.
void dq_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = load_f16(b + 208);
  for (int n = 0; n < kQKK; n += 128) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l + 0] = d * static_cast<float>(sc[is + 0]) * static_cast<float>(q1);
      y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
      y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
      y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}
// Q8_K: f32 d, 256 int8, 16 int16 block sums (not needed to dequantize).
void dq_q8_k(const uint8_t* b, float* y) {
  float d;
  std::memcpy(&d, b, 4);
  const int8_t* qs = reinterpret_cast<const int8_t*>(b + 4);
  for (int j = 0; j < kQKK; ++j) y[j] = d * static_cast<float>(qs[j]);
}

using BlockFn = void (*)(const uint8_t*, float*);

struct TypeEntry {
  uint32_t id;
  TypeTraits traits;
  BlockFn fn;
};

// Sizes of every type ggml knows (so files with other types still parse); fn == nullptr means the
// type parses but cannot be dequantized here.
const TypeEntry kTypes[] = {
    {0, {"f32", 1, 4, true}, dq_f32},
    {1, {"f16", 1, 2, true}, dq_f16},
    {2, {"q4_0", 32, 18, true}, dq_q4_0},
    {3, {"q4_1", 32, 20, true}, dq_q4_1},
    {6, {"q5_0", 32, 22, true}, dq_q5_0},
    {7, {"q5_1", 32, 24, true}, dq_q5_1},
    {8, {"q8_0", 32, 34, true}, dq_q8_0},
    {9, {"q8_1", 32, 40, false}, nullptr},
    {10, {"q2_K", 256, 84, true}, dq_q2_k},
    {11, {"q3_K", 256, 110, true}, dq_q3_k},
    {12, {"q4_K", 256, 144, true}, dq_q4_k},
    {13, {"q5_K", 256, 176, true}, dq_q5_k},
    {14, {"q6_K", 256, 210, true}, dq_q6_k},
    {15, {"q8_K", 256, 292, true}, dq_q8_k},
    {16, {"iq2_xxs", 256, 66, false}, nullptr},
    {17, {"iq2_xs", 256, 74, false}, nullptr},
    {18, {"iq3_xxs", 256, 98, false}, nullptr},
    {19, {"iq1_s", 256, 50, false}, nullptr},
    {20, {"iq4_nl", 32, 18, false}, nullptr},
    {21, {"iq3_s", 256, 110, false}, nullptr},
    {22, {"iq2_s", 256, 82, false}, nullptr},
    {23, {"iq4_xs", 256, 136, false}, nullptr},
    {24, {"i8", 1, 1, true}, dq_i8},
    {25, {"i16", 1, 2, true}, dq_i16},
    {26, {"i32", 1, 4, true}, dq_i32},
    {27, {"i64", 1, 8, false}, nullptr},
    {28, {"f64", 1, 8, true}, dq_f64},
    {29, {"iq1_m", 256, 56, false}, nullptr},
    {30, {"bf16", 1, 2, true}, dq_bf16},
    {34, {"tq1_0", 256, 54, false}, nullptr},
    {35, {"tq2_0", 256, 66, false}, nullptr},
    {39, {"mxfp4", 32, 17, false}, nullptr},
};

const TypeEntry* entry(TensorType t) {
  for (const TypeEntry& e : kTypes) {
    if (e.id == static_cast<uint32_t>(t)) return &e;
  }
  return nullptr;
}

Status check_row(TensorType type, const void* src, size_t src_bytes, int64_t n, const TypeEntry** out) {
  const TypeEntry* e = entry(type);
  if (e == nullptr) return Status::unsupported("gguf: tensor type " + std::to_string(static_cast<uint32_t>(type)) + " is unknown");
  if (e->fn == nullptr) return Status::unsupported(std::string("gguf: dequantizing ") + e->traits.name + " is not supported");
  if (n < 0 || n % e->traits.block_elems != 0) {
    return Status::invalid_argument("gguf: n " + std::to_string(n) + " is not a non-negative multiple of the " +
                                    e->traits.name + " block size " + std::to_string(e->traits.block_elems));
  }
  const uint64_t blocks = static_cast<uint64_t>(n / e->traits.block_elems);
  if (blocks > src_bytes / static_cast<uint64_t>(e->traits.block_bytes)) {
    return Status::out_of_range("gguf: " + std::to_string(n) + " " + e->traits.name + " values need " +
                                std::to_string(blocks * e->traits.block_bytes) + " bytes; src holds " +
                                std::to_string(src_bytes));
  }
  if (n > 0 && src == nullptr) return Status::invalid_argument("gguf: src is null");
  *out = e;
  return Status::ok_status();
}

}  // namespace

const TypeTraits* type_traits(TensorType t) {
  const TypeEntry* e = entry(t);
  return e == nullptr ? nullptr : &e->traits;
}

std::string tensor_type_name(TensorType t) {
  const TypeTraits* tr = type_traits(t);
  return tr != nullptr ? std::string(tr->name) : "unknown(" + std::to_string(static_cast<uint32_t>(t)) + ")";
}

Status dequantize_row(TensorType type, const void* src, size_t src_bytes, int64_t n, float* out) {
  const TypeEntry* e = nullptr;
  ATTNKIT_RETURN_IF_ERROR(check_row(type, src, src_bytes, n, &e));
  if (n > 0 && out == nullptr) return Status::invalid_argument("gguf: out is null");
  const int64_t be = e->traits.block_elems;
  const int64_t bb = e->traits.block_bytes;
  const uint8_t* p = static_cast<const uint8_t*>(src);
  if (type == TensorType::kF32) {  // the common case for norms: one copy
    std::memcpy(out, p, static_cast<size_t>(n) * 4);
    return Status::ok_status();
  }
  const int64_t blocks = n / be;
  for (int64_t i = 0; i < blocks; ++i) e->fn(p + i * bb, out + i * be);
  return Status::ok_status();
}

Status dot_row(TensorType type, const void* src, size_t src_bytes, int64_t n, const float* x, float* out) {
  const TypeEntry* e = nullptr;
  ATTNKIT_RETURN_IF_ERROR(check_row(type, src, src_bytes, n, &e));
  if (out == nullptr || (n > 0 && x == nullptr)) return Status::invalid_argument("gguf: dot_row: x or out is null");
  const int64_t be = e->traits.block_elems;
  const int64_t bb = e->traits.block_bytes;
  const uint8_t* p = static_cast<const uint8_t*>(src);
  // Dequantize one block into a stack buffer and dot it: the row is never materialized, and f32
  // partial sums per block (<= 256 terms) keep the error of a plain f32 dot, summed in f64 across
  // blocks so long rows do not add more.
  float buf[kQKK];
  double acc = 0;
  constexpr int64_t kChunk = kQKK;
  for (int64_t i = 0; i < n;) {
    const int64_t take = be >= kChunk ? be : std::min<int64_t>(kChunk / be * be, n - i);
    for (int64_t j = 0; j < take; j += be) e->fn(p + (i + j) / be * bb, buf + j);
    float s = 0.f;
    for (int64_t j = 0; j < take; ++j) s += buf[j] * x[i + j];
    acc += s;
    i += take;
  }
  *out = static_cast<float>(acc);
  return Status::ok_status();
}

}  // namespace attnkit::gguf
