// core/util.h: small helpers shared by the layers' argument checks (internal, not public API).
#pragma once

#include <string>

#include "attnkit/status.h"
#include "attnkit/tensor.h"
#include "core/checked_size.h"

namespace attnkit::core {

// "[2, 128, 8, 64]": a view's shape for error messages.
inline std::string shape_str(const TensorView& t) {
  std::string s = "[";
  for (int i = 0; i < 4; ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(t.shape[i]);
  }
  return s + "]";
}

// What every entry point checks of an input or output view before looking at shapes: a data
// pointer, a dtype of the table, no negative extent. `name` is the argument ("q", "out").
// int8 is a key/value storage type that only exact attention's K and V take (allow_int8).
inline Status check_view(const TensorView& t, const char* name, bool allow_int8 = false) {
  if (t.data == nullptr) return Status::invalid_argument(std::string(name) + ".data is null");
  if (!enum_known(t.dtype))
    return Status::unsupported(std::string(name) + ".dtype " + std::to_string(static_cast<int>(t.dtype)) +
                               " is not supported; expected " + enum_choices<DType>(", ", true));
  if (t.dtype == DType::kI8 && !allow_int8)
    return Status::unsupported(std::string(name) +
                               ".dtype int8 is not supported here; int8 is a storage type for exact attention's k and v "
                               "(with k_scales / v_scales); expected f32, f16 or bf16");
  for (int i = 0; i < 4; ++i) {
    if (t.shape[i] < 0)
      return Status::invalid_argument(std::string(name) + ".shape " + shape_str(t) + " has a negative dimension");
  }
  // Broadcast (stride-0) views can describe tensors far larger than their memory; the kernels'
  // index arithmetic and scratch sizes assume the limits of checked_size.h. The common case
  // builds no strings.
  int64_t n = 1;
  bool fits = true;
  for (int i = 0; i < 4 && fits; ++i) fits = t.shape[i] <= kMaxDim && checked_mul(n, t.shape[i], &n) && n <= kMaxElements;
  if (fits) return Status::ok_status();
  return checked_elements(std::string(name) + " (shape " + shape_str(t) + ")",
                          {{"batch", t.shape[0]}, {"seq", t.shape[1]}, {"heads", t.shape[2]}, {"head_dim", t.shape[3]}},
                          &n);
}

}  // namespace attnkit::core
