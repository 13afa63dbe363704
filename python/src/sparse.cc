// Bindings of include/attnkit/sparse.h and fidelity.h through the named sparse methods: one
// entry runs any method ("vertical_slash:vertical=500", "moba:topk=4", "window:left=256", ...)
// on the caller's q, k, v (estimate, then attend), another measures its fidelity against exact
// attention. The BlockMask building blocks stay C++-only for now.
#include <cstring>
#include <memory>
#include <optional>
#include <string>

#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "attnkit/fidelity.h"
#include "attnkit/sparse.h"
#include "convert.h"

namespace attnkit::python {
namespace {

struct Qkv {
  Array qa, ka, va;
  TensorView q, k, v;
};

Qkv import_qkv(nb::handle q, nb::handle k, nb::handle v) {
  Qkv r;
  r.qa = borrow_array(q, "q", false);
  r.ka = borrow_array(k, "k", false);
  r.va = borrow_array(v, "v", false);
  r.q = to_view(r.qa, "q", false);
  r.k = to_view(r.ka, "k", false);
  r.v = to_view(r.va, "v", false);
  return r;
}

AttentionParams sparse_params(bool causal, const char* causal_align, std::optional<float> scale, float softcap,
                              int threads) {
  AttentionParams p;
  p.causal = causal;
  p.causal_align = parse_enum_arg<CausalAlign>("causal_align", causal_align);
  p.scale = scale;
  p.softcap = softcap;
  p.num_threads = threads_arg(threads);
  return p;
}

nb::object sparse_attention_py(nb::handle q_obj, nb::handle k_obj, nb::handle v_obj, const std::string& method,
                               bool causal, const char* causal_align, std::optional<float> scale, float softcap,
                               bool return_lse, int threads, nb::handle out_obj) {
  const Qkv t = import_qkv(q_obj, k_obj, v_obj);
  const AttentionParams p = sparse_params(causal, causal_align, scale, softcap, threads);
  std::unique_ptr<SparseMethod> m;
  raise_if_error(make_sparse_method(method, &m));
  int64_t out_dims[4] = {t.q.batch(), t.q.seq(), t.q.heads(), t.v.head_dim()};
  nb::object out_keep = out_obj.is_none() ? new_array(q_obj, t.qa, out_dims, 4, false) : nb::borrow(out_obj);
  const Array oa = borrow_array(out_keep, "out", true);
  const TensorView out = to_view(oa, "out", false);
  if (out.shape[0] != out_dims[0] || out.shape[1] != out_dims[1] || out.shape[2] != out_dims[2] ||
      out.shape[3] != out_dims[3])
    throw nb::value_error(("out shape " + oa.shape_string() + " does not match " + shape_string(out_dims, 4)).c_str());
  nb::object lse_keep;
  float* lse = nullptr;
  if (return_lse) {
    const int64_t dims[3] = {t.q.batch(), t.q.heads(), t.q.seq()};
    lse_keep = new_array(q_obj, t.qa, dims, 3, true);
    lse = f32_exact(borrow_array(lse_keep, "lse", true), "lse", dims, 3);
  }
  Status status;
  double pairs = 0;
  {
    nb::gil_scoped_release release;
    status = m->estimate(t.q, t.k, p);
    if (status.ok()) status = m->attend(t.q, t.k, t.v, out, lse, p);
    if (status.ok()) pairs = m->computed_pairs();
  }
  raise_if_error(status);
  nb::dict info;
  info["computed_pairs"] = pairs;
  if (const BlockMask* bm = m->maybe_mask()) {
    const BlockMaskStats st = block_mask_stats(*bm);
    info["density"] = st.density;
    info["causal_pairs"] = st.causal_pairs;
    info["full_blocks"] = st.full_blocks;
    info["partial_blocks"] = st.partial_blocks;
    info["columns"] = st.columns;
  }
  if (lse) return nb::make_tuple(out_keep, lse_keep, info);
  return nb::make_tuple(out_keep, info);
}

nb::dict sparse_fidelity_py(nb::handle q_obj, nb::handle k_obj, nb::handle v_obj, const std::string& method,
                            bool causal, const char* causal_align, std::optional<float> scale, float softcap,
                            int repeats, int threads) {
  const Qkv t = import_qkv(q_obj, k_obj, v_obj);
  const AttentionParams p = sparse_params(causal, causal_align, scale, softcap, threads);
  FidelityReport r;
  Status status;
  {
    nb::gil_scoped_release release;
    status = measure_sparse_fidelity(method, t.q, t.k, t.v, p, repeats, &r);
  }
  raise_if_error(status);
  nb::dict d;
  d["mechanism"] = r.mechanism;
  d["density"] = r.density;
  d["recall_mean"] = r.has_recall ? nb::cast(r.recall_mean) : nb::none();
  d["recall_worst"] = r.has_recall ? nb::cast(r.recall_worst) : nb::none();
  d["rel_l2_error"] = r.rel_l2_error;
  d["estimate_seconds"] = r.estimate_seconds;
  d["attention_seconds"] = r.attention_seconds;
  d["dense_seconds"] = r.dense_seconds;
  return d;
}

double relative_l2_error_py(nb::handle a_obj, nb::handle b_obj) {
  const Array aa = borrow_array(a_obj, "approx", false), ba = borrow_array(b_obj, "exact", false);
  const TensorView a = to_view(aa, "approx", true), b = to_view(ba, "exact", true);
  double r = 0;
  raise_if_error(relative_l2_error(a, b, &r));
  return r;
}

constexpr const char* kSparseDoc = R"doc(Sparse attention by a named method: estimate on q/k, then attend.

    out, info = sparse_attention(q, k, v, "vertical_slash:vertical=500,slash=2000", causal=True)

Shapes as attention(): q [batch, seq_q, heads_q, head_dim], k/v [batch, seq_kv, heads_kv, dim]
-> out [batch, seq_q, heads_q, head_dim_v] (and lse [batch, heads_q, seq_q] float32 with
return_lse=True: (out, lse, info)). Softmax only; no packed batches.

method: "NAME[:key=value,...]"; NAME is one of sparse_method_names() (static patterns such as
sliding_window, a_shape, strided, dilated, bigbird, power_attention, star_local, block_dense;
dynamic estimators such as vertical_slash, block_topk, moba, flexprefill, hip; hyper_attention,
routing), with the keys of the registry entry of that name (see list_mechanisms()).

info: {computed_pairs, and for block-mask methods density, causal_pairs, full_blocks,
partial_blocks, columns}.)doc";

constexpr const char* kFidelityDoc = R"doc(Runs a sparse method next to exact attention on q, k, v.

Returns {mechanism, density, recall_mean, recall_worst (None for methods without a per-row key
set), rel_l2_error, estimate_seconds, attention_seconds, dense_seconds} (times: best of
`repeats`). Mass recall is the share of the exact softmax probability mass on the visited keys;
rel_l2_error = ||out - exact|| / ||exact||.)doc";

}  // namespace

void bind_sparse(nb::module_& m) {
  m.def("sparse_attention", &sparse_attention_py, nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("method"),
        nb::kw_only(), nb::arg("causal") = true, nb::arg("causal_align") = "bottom_right",
        nb::arg("scale").none() = nb::none(), nb::arg("softcap") = 0.0f, nb::arg("return_lse") = false,
        nb::arg("threads") = 0, nb::arg("out").none() = nb::none(), kSparseDoc);
  m.def("sparse_fidelity", &sparse_fidelity_py, nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("method"),
        nb::kw_only(), nb::arg("causal") = true, nb::arg("causal_align") = "bottom_right",
        nb::arg("scale").none() = nb::none(), nb::arg("softcap") = 0.0f, nb::arg("repeats") = 1,
        nb::arg("threads") = 0, kFidelityDoc);
  m.def("sparse_method_names", &sparse_method_names, "Names accepted by sparse_attention() / sparse_fidelity().");
  m.def("relative_l2_error", &relative_l2_error_py, nb::arg("approx"), nb::arg("exact"),
        "||approx - exact|| / ||exact|| over all elements of two same-shaped [batch, seq, heads, dim] (or 3-d) "
        "arrays; 0 when both are zero.");
}

}  // namespace attnkit::python
