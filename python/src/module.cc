// The attnkit._attnkit extension module: the registry, the SIMD target, debug helpers, and the
// per-family bindings (attention.cc, ...). The public Python API lives in attnkit/__init__.py.
#include <climits>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "attnkit/attention.h"
#include "attnkit/bench.h"
#include "attnkit/registry.h"
#include "attnkit/threads.h"
#include "convert.h"

namespace attnkit::python {

void bind_attention(nb::module_& m);
void bind_sparse(nb::module_& m);
void bind_linear(nb::module_& m);
void bind_model(nb::module_& m);
void bind_analysis(nb::module_& m);

namespace {

nb::list mechanisms() {
  nb::list out;
  for (const Mechanism* mech : attnkit::list_mechanisms()) {
    nb::list params;
    for (const ParamSpec& p : mech->params) {
      nb::dict d;
      d["name"] = p.name;
      d["default"] = p.default_value;
      d["help"] = p.help;
      params.append(d);
    }
    nb::dict d;
    d["name"] = mech->name;
    d["family"] = mech->family;
    d["description"] = mech->description;
    d["params"] = params;
    out.append(d);
  }
  return out;
}

// What the C++ side receives for an array: (data pointer, dtype, shape, strides in elements).
// Tests compare the pointer with the caller's own to prove that no copy was made.
nb::tuple debug_view(nb::handle x) {
  const Array a = borrow_array(x, "x", false);
  nb::list shape, strides;
  for (int i = 0; i < a.ndim; ++i) {
    shape.append(a.shape[i]);
    strides.append(a.stride[i]);
  }
  return nb::make_tuple(reinterpret_cast<uintptr_t>(a.data), a.dtype_string(), nb::tuple(shape), nb::tuple(strides));
}

// Times a registered mechanism through the benchmark harness's run_case (attnkit/bench.h), as
// `attnkit bench` does: `warmup` untimed runs, then exactly `iters` timed runs, without the
// yardsticks; returns the per-run seconds and the mechanism's FLOP and byte counts.
nb::dict bench_mechanism(const std::string& spec, int64_t batch, int64_t seq_q, int64_t seq_kv, int64_t heads_q,
                         int64_t heads_kv, int64_t head_dim, bool causal, const std::string& dtype, int threads,
                         int64_t warmup, int64_t iters) {
  bench::BenchCase c;
  c.mechanism_spec = spec;
  ProblemShape& shape = c.shape;
  shape.batch = batch;
  shape.seq_q = seq_q;
  shape.seq_kv = seq_kv;
  shape.heads_q = heads_q;
  shape.heads_kv = heads_kv;
  shape.head_dim = head_dim;
  shape.causal = causal;
  shape.threads = threads_arg(threads);
  if (!parse_dtype(dtype, &shape.dtype))
    throw nb::type_error(("dtype '" + dtype + "' is not supported; expected " + enum_choices<DType>(", ", true)).c_str());
  if (iters < 1 || iters > INT_MAX) throw nb::value_error(("iters " + std::to_string(iters) + " must be at least 1").c_str());
  if (warmup < 0 || warmup > INT_MAX) throw nb::value_error(("warmup " + std::to_string(warmup) + " must be >= 0").c_str());
  bench::TimingOptions timing;
  timing.warmup_runs = static_cast<int>(warmup);
  timing.min_runs = static_cast<int>(iters);
  timing.min_seconds = 0;
  timing.max_seconds = std::numeric_limits<double>::infinity();  // exactly `iters` timed runs
  bench::Record r;
  Status status;
  {
    nb::gil_scoped_release release;
    status = bench::run_case(c, timing, nullptr, &r);
  }
  raise_if_error(status);
  const Mechanism* mech = find_mechanism(spec.substr(0, spec.find(':')));
  nb::dict d;
  d["name"] = mech ? mech->name : spec;
  d["seconds"] = r.samples;
  d["flops"] = r.flops;
  d["bytes"] = r.bytes;
  d["extra_bytes"] = r.peak_extra_bytes;
  return d;
}

}  // namespace
}  // namespace attnkit::python

NB_MODULE(_attnkit, m) {
  using namespace attnkit::python;
  m.doc() = "attnkit C++ extension (use the attnkit package, not this module).";
  m.def("max_threads", &attnkit::max_threads,
        "The largest threads= any call accepts: 4 per processor this process may run on (0 = the OpenMP default).");
  m.def("simd_target", &attnkit::simd_target_name,
        "Name of the SIMD target the kernels dispatch to on this machine, e.g. 'AVX3' or 'AVX2'.");
  m.def("list_mechanisms", &mechanisms,
        "Registered mechanisms as dicts {name, family, description, params: [{name, default, help}]}, "
        "sorted by family then name.");
  m.def("bench_mechanism", &bench_mechanism, nb::arg("spec"), nb::arg("batch") = 1, nb::arg("seq_q") = 1024,
        nb::arg("seq_kv") = 1024, nb::arg("heads_q") = 8, nb::arg("heads_kv") = 2, nb::arg("head_dim") = 128,
        nb::arg("causal") = true, nb::arg("dtype") = "f32", nb::arg("threads") = 0, nb::arg("warmup") = 1,
        nb::arg("iters") = 5,
        "Times a registered mechanism ('name' or 'name:key=value,...') in C++ on random inputs, as "
        "`attnkit bench` does. Returns {name, seconds: [per run], flops, bytes, extra_bytes}.");
  init_numpy();
  m.def("_set_bfloat16_dtype", &set_bfloat16_dtype, nb::arg("dtype").none(),
        "Registers numpy's bfloat16 dtype (ml_dtypes.bfloat16); attnkit/__init__.py calls it.");
  m.def("_debug_view", &debug_view, nb::arg("x"),
        "Debug: (data pointer, dtype, shape, strides in elements) of x as the C++ side sees it.");
  bind_attention(m);
  bind_sparse(m);
  bind_linear(m);
  bind_model(m);
  bind_analysis(m);
}
