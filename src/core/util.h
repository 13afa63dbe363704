// core/util.h: small helpers shared by the layers' argument checks (internal, not public API).
#pragma once

#include <string>

#include "attnkit/status.h"
#include "attnkit/tensor.h"

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
inline Status check_view(const TensorView& t, const char* name) {
  if (t.data == nullptr) return Status::invalid_argument(std::string(name) + ".data is null");
  if (!enum_known(t.dtype))
    return Status::unsupported(std::string(name) + ".dtype " + std::to_string(static_cast<int>(t.dtype)) +
                               " is not supported; expected " + enum_choices<DType>(", ", true));
  for (int i = 0; i < 4; ++i) {
    if (t.shape[i] < 0)
      return Status::invalid_argument(std::string(name) + ".shape " + shape_str(t) + " has a negative dimension");
  }
  return Status::ok_status();
}

}  // namespace attnkit::core
