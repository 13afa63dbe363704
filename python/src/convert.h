// Conversions between Python arrays (numpy, torch, any DLPack producer) and attnkit views.
//
// Why two paths: importing a numpy array through nb::ndarray goes through DLPack and costs about
// 1.5 us per array, which alone would break the 5 us call-overhead target. numpy arrays are
// therefore read directly through the numpy C API (a few pointer reads); everything else (torch
// CPU tensors, JAX arrays, any __dlpack__ producer) goes through nb::ndarray. Neither path
// copies: the view points at the caller's memory with the caller's strides (in elements).
// numpy's bfloat16 is ml_dtypes.bfloat16, a user dtype registered at run time; the package
// tells us its descriptor at import (set_bfloat16_dtype).
#pragma once

#include <cstdint>
#include <string>

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include "attnkit/attention.h"
#include "attnkit/status.h"
#include "attnkit/tensor.h"
#include "attnkit/threads.h"

namespace attnkit::python {

namespace nb = nanobind;

inline constexpr int kMaxDims = 8;

enum class Elem : uint8_t { kF32, kF16, kBF16, kBool, kU8, kI32, kOther };

// A borrowed array argument: pointer, dims and element strides, plus what keeps it alive (the
// caller's object for numpy; the imported DLPack tensor otherwise).
struct Array {
  bool valid = false;
  bool is_numpy = false;
  Elem elem = Elem::kOther;
  std::string other_dtype;  // for messages when elem == kOther
  void* data = nullptr;
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t stride[kMaxDims] = {};
  nb::ndarray<nb::ro, nb::device::cpu> dlpack;  // holds the DLPack import alive

  std::string dtype_string() const;
  std::string shape_string() const;
};

// Must be called once at module import (initializes the numpy C API).
void init_numpy();
// Registers ml_dtypes.bfloat16's numpy descriptor (None: bfloat16 numpy arrays unsupported).
void set_bfloat16_dtype(nb::handle descr);

// Imports an array argument without copying. `writable`: it will be written (out=), so a
// read-only array is a ValueError. Anything that is not a CPU array is a TypeError naming `name`.
Array borrow_array(nb::handle h, const char* name, bool writable);

// The attnkit dtype of an attention tensor; TypeError naming `name` unless f32 / f16 / bf16.
DType tensor_dtype(const Array& a, const char* name);
// A 4-d [batch, seq, heads, dim] view. A 3-d array [seq, heads, dim] becomes batch 1 when
// `allow_3d` (the packed variable-length form). ValueError on a wrong rank.
TensorView to_view(const Array& a, const char* name, bool allow_3d);

// A new uninitialized array shaped `dims`, in the framework of `like_obj` (torch when it is a
// torch tensor, else numpy) with the dtype of `like` (or float32 when `f32`).
nb::object new_array(nb::handle like_obj, const Array& like, const int64_t* dims, int ndim, bool f32);

// Small parameter vectors ([heads] slopes, cu_seqlens, ...): returns the data of a contiguous
// 1-d array of float32 (kind kF32), int32 (kI32) or int64 (kOther; converting lists, other
// dtypes or torch tensors with numpy, since these are tiny) and its length; `keep` holds the
// converted object alive.
const void* small_vector(nb::handle h, const char* name, Elem kind, int64_t* length, nb::object* keep);
inline const void* small_vector(nb::handle h, const char* name, bool int32, int64_t* length, nb::object* keep) {
  return small_vector(h, name, int32 ? Elem::kI32 : Elem::kF32, length, keep);
}

// Checks that `a` is a C-contiguous float32 array with exactly these dims (the LSE layout).
float* f32_exact(const Array& a, const char* name, const int64_t* dims, int ndim);

// Whether the memory spans of two views intersect (a user-given out= that overlaps an input
// would be read after it is written). Spans are [lowest, highest] element addresses.
bool views_overlap(const TensorView& a, const TensorView& b);

// Raises ValueError with message m (a bad argument value).
[[noreturn]] void raise_value(const std::string& m);

// Raises ValueError carrying the C++ message for a failed Status.
void raise_if_error(const Status& s);

// The threads= argument of every binding: 0 (the OpenMP default) or 1..attnkit.max_threads();
// ValueError "threads 100000 is not supported; ..." otherwise. Returns it unchanged.
int threads_arg(int threads);

// A keyword argument spelled with an enum's names (the table next to the enum's declaration):
// ValueError "normalization 'tanh' is not supported; expected 'softmax', 'sigmoid' or 'relu'".
template <class E>
E parse_enum_arg(const char* param, const char* value) {
  E e{};
  raise_if_error(parse_enum_param(param, value, &e));
  return e;
}

std::string shape_string(const int64_t* dims, int ndim);

}  // namespace attnkit::python
