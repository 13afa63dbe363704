// numpy's C API lives in this file only (PY_ARRAY_UNIQUE_SYMBOL below; init_numpy() imports it).
#define PY_ARRAY_UNIQUE_SYMBOL attnkit_numpy_api
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include "convert.h"

#include <numpy/arrayobject.h>

#include <cstring>
#include <string>
#include <vector>

#include "core/checked_size.h"

namespace attnkit::python {
namespace {

PyArray_Descr* g_bf16_descr = nullptr;  // owned reference; null until set_bfloat16_dtype
int g_bf16_type_num = -1;

nb::object& numpy_ascontiguousarray() {
  static nb::object* f = new nb::object(nb::module_::import_("numpy").attr("ascontiguousarray"));
  return *f;
}

bool is_torch(nb::handle h) {
  // Only reached for non-numpy inputs; torch.Tensor and its subclasses live in torch.*.
  nb::handle type = reinterpret_cast<PyObject*>(Py_TYPE(h.ptr()));
  nb::object mod = nb::getattr(type, "__module__", nb::none());
  if (!nb::isinstance<nb::str>(mod)) return false;
  const char* s = nb::borrow<nb::str>(mod).c_str();
  return std::strncmp(s, "torch", 5) == 0;
}

Elem elem_of_numpy(const PyArray_Descr* d) {
  switch (d->type_num) {
    case NPY_FLOAT32: return Elem::kF32;
    case NPY_FLOAT16: return Elem::kF16;
    case NPY_BOOL: return Elem::kBool;
    case NPY_UINT8: return Elem::kU8;
    case NPY_INT32: return Elem::kI32;
    default: return d->type_num == g_bf16_type_num ? Elem::kBF16 : Elem::kOther;
  }
}

Elem elem_of_dlpack(const nb::dlpack::dtype& t) {
  using Code = nb::dlpack::dtype_code;
  if (t.lanes != 1) return Elem::kOther;
  const auto code = static_cast<Code>(t.code);
  if (code == Code::Float && t.bits == 32) return Elem::kF32;
  if (code == Code::Float && t.bits == 16) return Elem::kF16;
  if (code == Code::Bfloat && t.bits == 16) return Elem::kBF16;
  if (code == Code::Bool && t.bits == 8) return Elem::kBool;
  if (code == Code::UInt && t.bits == 8) return Elem::kU8;
  if (code == Code::Int && t.bits == 32) return Elem::kI32;
  return Elem::kOther;
}

std::string dlpack_dtype_string(const nb::dlpack::dtype& t) {
  using Code = nb::dlpack::dtype_code;
  std::string base;
  switch (static_cast<Code>(t.code)) {
    case Code::Int: base = "int"; break;
    case Code::UInt: base = "uint"; break;
    case Code::Float: base = "float"; break;
    case Code::Bfloat: base = "bfloat"; break;
    case Code::Complex: base = "complex"; break;
    case Code::Bool: return "bool";
    default: base = "code" + std::to_string(t.code) + "_"; break;
  }
  return base + std::to_string(t.bits) + (t.lanes != 1 ? "x" + std::to_string(t.lanes) : std::string());
}

[[noreturn]] void raise_type(const std::string& m) { throw nb::type_error(m.c_str()); }
}  // namespace

void raise_value(const std::string& m) { throw nb::value_error(m.c_str()); }

std::string shape_string(const int64_t* dims, int ndim) {
  std::string s = "[";
  for (int i = 0; i < ndim; ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

std::string Array::dtype_string() const {
  switch (elem) {
    case Elem::kF32: return "float32";
    case Elem::kF16: return "float16";
    case Elem::kBF16: return "bfloat16";
    case Elem::kBool: return "bool";
    case Elem::kU8: return "uint8";
    case Elem::kI32: return "int32";
    case Elem::kOther: return other_dtype;
  }
  return other_dtype;
}

std::string Array::shape_string() const { return python::shape_string(shape, ndim); }

void init_numpy() {
  if (_import_array() < 0) throw nb::python_error();
}

void set_bfloat16_dtype(nb::handle descr) {
  if (descr.is_none()) return;
  PyArray_Descr* d = nullptr;
  if (!PyArray_DescrCheck(descr.ptr())) raise_type("set_bfloat16_dtype expects a numpy dtype");
  d = reinterpret_cast<PyArray_Descr*>(descr.ptr());
  Py_INCREF(d);
  Py_XDECREF(g_bf16_descr);
  g_bf16_descr = d;
  g_bf16_type_num = d->type_num;
}

Array borrow_array(nb::handle h, const char* name, bool writable) {
  Array a;
  if (PyArray_Check(h.ptr())) {
    PyArrayObject* arr = reinterpret_cast<PyArrayObject*>(h.ptr());
    const PyArray_Descr* d = PyArray_DESCR(arr);
    a.is_numpy = true;
    a.elem = elem_of_numpy(d);
    if (a.elem == Elem::kOther) a.other_dtype = nb::str(nb::handle(reinterpret_cast<PyObject*>(const_cast<PyArray_Descr*>(d)))).c_str();
    if (PyArray_ISBYTESWAPPED(arr)) raise_type(std::string(name) + " has non-native byte order; use arr.astype(arr.dtype.newbyteorder('='))");
    if (writable && !PyArray_ISWRITEABLE(arr)) raise_value(std::string(name) + " is read-only");
    a.ndim = PyArray_NDIM(arr);
    if (a.ndim > kMaxDims) raise_value(std::string(name) + " has " + std::to_string(a.ndim) + " dimensions; too many");
    const int64_t item = static_cast<int64_t>(PyArray_ITEMSIZE(arr));
    for (int i = 0; i < a.ndim; ++i) {
      a.shape[i] = PyArray_DIMS(arr)[i];
      const int64_t bytes = PyArray_STRIDES(arr)[i];
      // numpy strides are in bytes; views like a[..., ::1] of a structured or byte-offset buffer
      // can have strides that are not whole elements, which a TensorView cannot express.
      if (bytes % item != 0)
        raise_value(std::string(name) + " stride " + std::to_string(bytes) + " bytes on axis " + std::to_string(i) +
                    " is not a multiple of the element size " + std::to_string(item));
      a.stride[i] = bytes / item;
    }
    a.data = PyArray_DATA(arr);
    a.valid = true;
    return a;
  }
  // Any other producer: DLPack (or the buffer protocol) through nanobind, without conversion,
  // so a GPU tensor or an unsupported object is refused instead of copied.
  bool ok = false;
  if (writable) {
    nb::ndarray<nb::device::cpu> w;
    ok = nb::try_cast(h, w, false);
    if (ok) a.dlpack = nb::ndarray<nb::ro, nb::device::cpu>(w);
  } else {
    ok = nb::try_cast(h, a.dlpack, false);
  }
  if (!ok) {
    std::string type_name = nb::type_name(nb::handle(reinterpret_cast<PyObject*>(Py_TYPE(h.ptr())))).c_str();
    raise_type(std::string(name) + " must be a numpy array, a CPU torch tensor or another CPU DLPack producer" +
               (writable ? " (writable)" : "") + "; got " + type_name);
  }
  a.elem = elem_of_dlpack(a.dlpack.dtype());
  if (a.elem == Elem::kOther) a.other_dtype = dlpack_dtype_string(a.dlpack.dtype());
  a.ndim = static_cast<int>(a.dlpack.ndim());
  if (a.ndim > kMaxDims) raise_value(std::string(name) + " has " + std::to_string(a.ndim) + " dimensions; too many");
  for (int i = 0; i < a.ndim; ++i) {
    a.shape[i] = static_cast<int64_t>(a.dlpack.shape(i));
    a.stride[i] = a.dlpack.stride(i);
  }
  a.data = const_cast<void*>(a.dlpack.data());
  a.valid = true;
  return a;
}

DType tensor_dtype(const Array& a, const char* name) {
  switch (a.elem) {
    case Elem::kF32: return DType::kF32;
    case Elem::kF16: return DType::kF16;
    case Elem::kBF16: return DType::kBF16;
    default: break;
  }
  raise_type(std::string(name) + " dtype " + a.dtype_string() + " is not supported; expected float32, float16 or bfloat16");
}

TensorView to_view(const Array& a, const char* name, bool allow_3d) {
  if (a.ndim != 4 && !(allow_3d && a.ndim == 3)) {
    raise_value(std::string(name) + " has " + std::to_string(a.ndim) + " dimensions (shape " + a.shape_string() +
                "); expected 4 ([batch, seq, heads, dim])" + (allow_3d ? " or 3 ([total, heads, dim])" : ""));
  }
  TensorView v;
  v.dtype = tensor_dtype(a, name);
  v.data = a.data;
  const int first = 4 - a.ndim;  // 1 for the 3-d packed form
  if (first == 1) {
    v.shape[0] = 1;
    v.stride[0] = 0;
  }
  for (int i = 0; i < a.ndim; ++i) {
    v.shape[first + i] = a.shape[i];
    v.stride[first + i] = a.stride[i];
  }
  return v;
}

nb::object new_array(nb::handle like_obj, const Array& like, const int64_t* dims, int ndim, bool f32) {
  // Inputs may be stride-0 (broadcast) views that hold little memory while the output they imply
  // is huge: check the output's size before numpy or torch allocates it. Messages are built only
  // on failure (this runs on every call).
  {
    int64_t n = 1;
    bool fits = true;
    for (int i = 0; i < ndim && fits; ++i)
      fits = dims[i] >= 0 && dims[i] <= kMaxDim && checked_mul(n, dims[i], &n) && n <= kMaxElements;
    const int64_t elem_bytes = f32 || like.elem == Elem::kF32 ? 4 : 2;
    if (!fits || n > (int64_t{1} << 30) / elem_bytes) {  // physical memory is looked up above 1 GiB only
      const std::string what = "the output array " + shape_string(dims, ndim) + " (input shape " + like.shape_string() + ")";
      int64_t bytes = 0;
      raise_if_error(fits ? checked_bytes(what, n, elem_bytes, &bytes)
                          : Status::out_of_range(what + " has a dimension above " + std::to_string(kMaxDim) +
                                                 " or more than 2^40 elements"));
    }
  }
  if (!like.is_numpy && is_torch(like_obj)) {
    nb::module_ torch = nb::module_::import_("torch");
    nb::list shape;
    for (int i = 0; i < ndim; ++i) shape.append(dims[i]);
    return torch.attr("empty")(nb::tuple(shape), nb::arg("dtype") = f32 ? torch.attr("float32") : like_obj.attr("dtype"),
                               nb::arg("device") = like_obj.attr("device"));
  }
  npy_intp nd_dims[kMaxDims];
  for (int i = 0; i < ndim; ++i) nd_dims[i] = static_cast<npy_intp>(dims[i]);
  PyArray_Descr* d = nullptr;
  if (f32 || like.elem == Elem::kF32) {
    d = PyArray_DescrFromType(NPY_FLOAT32);
  } else if (like.elem == Elem::kF16) {
    d = PyArray_DescrFromType(NPY_FLOAT16);
  } else if (like.elem == Elem::kBF16) {
    if (!g_bf16_descr) raise_type("bfloat16 outputs need the ml_dtypes package (pip install ml_dtypes)");
    d = g_bf16_descr;
    Py_INCREF(d);
  } else {
    raise_type("cannot allocate an output of dtype " + like.dtype_string());
  }
  // PyArray_NewFromDescr steals the reference to d.
  PyObject* o = PyArray_NewFromDescr(&PyArray_Type, d, ndim, nd_dims, nullptr, nullptr, 0, nullptr);
  if (!o) throw nb::python_error();
  return nb::steal(o);
}

const void* small_vector(nb::handle h, const char* name, Elem kind, int64_t* length, nb::object* keep) {
  const int want = kind == Elem::kI32 ? NPY_INT32 : kind == Elem::kF32 ? NPY_FLOAT32 : NPY_INT64;
  const char* want_name = kind == Elem::kI32 ? "int32" : kind == Elem::kF32 ? "float32" : "int64";
  nb::handle src = h;
  const bool fast = PyArray_Check(h.ptr()) && PyArray_TYPE(reinterpret_cast<PyArrayObject*>(h.ptr())) == want &&
                    PyArray_IS_C_CONTIGUOUS(reinterpret_cast<PyArrayObject*>(h.ptr())) &&
                    !PyArray_ISBYTESWAPPED(reinterpret_cast<PyArrayObject*>(h.ptr()));
  if (!fast) {
    // Tiny ([heads] or [n_seqs + 1]): converting (a list, a torch tensor, float64) costs nothing
    // that matters next to the kernel, and keeps the API forgiving.
    try {
      *keep = numpy_ascontiguousarray()(h, nb::arg("dtype") = want_name);
    } catch (nb::python_error& e) {
      raise_type(std::string(name) + " must be a 1-d " + want_name +
                 " array or sequence: " + e.what());
    }
    src = *keep;
  }
  PyArrayObject* arr = reinterpret_cast<PyArrayObject*>(src.ptr());
  if (PyArray_NDIM(arr) != 1)
    raise_value(std::string(name) + " must be 1-d; got " + std::to_string(PyArray_NDIM(arr)) + " dimensions");
  *length = PyArray_DIMS(arr)[0];
  return PyArray_DATA(arr);
}

float* f32_exact(const Array& a, const char* name, const int64_t* dims, int ndim) {
  if (a.elem != Elem::kF32) raise_type(std::string(name) + " dtype " + a.dtype_string() + " is not supported; expected float32");
  bool ok = a.ndim == ndim;
  int64_t expect = 1;
  for (int i = ndim - 1; ok && i >= 0; --i) {
    ok = a.shape[i] == dims[i] && (dims[i] <= 1 || a.stride[i] == expect);
    expect *= dims[i];
  }
  if (!ok)
    raise_value(std::string(name) + " has shape " + a.shape_string() +
                "; expected a C-contiguous float32 array of shape " + shape_string(dims, ndim));
  return static_cast<float*>(a.data);
}

bool views_overlap(const TensorView& a, const TensorView& b) {
  auto span = [](const TensorView& v, uintptr_t* lo, uintptr_t* hi) {
    int64_t min_off = 0, max_off = 0;
    for (int i = 0; i < 4; ++i) {
      if (v.shape[i] == 0) return false;
      const int64_t reach = (v.shape[i] - 1) * v.stride[i];
      (reach < 0 ? min_off : max_off) += reach;
    }
    const int64_t item = static_cast<int64_t>(dtype_size(v.dtype));
    *lo = reinterpret_cast<uintptr_t>(v.data) + min_off * item;
    *hi = reinterpret_cast<uintptr_t>(v.data) + max_off * item + item - 1;
    return true;
  };
  uintptr_t alo, ahi, blo, bhi;
  if (!span(a, &alo, &ahi) || !span(b, &blo, &bhi)) return false;
  return alo <= bhi && blo <= ahi;
}

int threads_arg(int threads) {
  int resolved = 0;
  raise_if_error(resolve_threads(threads, "threads", &resolved));
  return threads;
}

void raise_if_error(const Status& s) {
  if (!s.ok()) throw nb::value_error(s.message().c_str());
}

}  // namespace attnkit::python
