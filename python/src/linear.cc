// Bindings of include/attnkit/linear.h: the linear-attention engine (feature map x decay x update
// rule x normalization; parallel, chunked and recurrent forms) with its f32 recurrent state, and
// the per-head decay helpers. Aaren, Infini-attention, Titans and Based stay C++-only for now.
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <string>

#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include "attnkit/linear.h"
#include "convert.h"

namespace attnkit::python {
namespace {

// A float32 array used as a per-token tensor (gate, beta): 4-d [batch, seq, heads_q, n], any strides.
TensorView f32_tensor(const Array& a, const char* name, bool allow_3d) {
  if (a.elem != Elem::kF32)
    throw nb::type_error((std::string(name) + " dtype " + a.dtype_string() + " is not supported; expected float32").c_str());
  return to_view(a, name, allow_3d);
}

// A C-contiguous float32 array of any rank (weights); returns its data, shape in `dims`.
const float* f32_contiguous(const Array& a, const char* name) {
  return f32_exact(a, name, a.shape, a.ndim);
}

nb::object linear_attention_py(nb::handle q_obj, nb::handle k_obj, nb::handle v_obj, const char* feature_map,
                               std::optional<float> scale, const char* decay, nb::handle log_decay, nb::handle gate,
                               bool tie_key_to_gate, const char* update, nb::handle beta, const char* norm,
                               float norm_eps, const char* form, int64_t chunk_size, int64_t performer_features,
                               uint64_t performer_seed, nb::handle feature_weight, nb::handle feature_bias,
                               std::optional<float> taylor_temperature, bool taylor_l2_normalize,
                               double cosformer_max_len, nb::handle cottention_c, float lln_alpha, float lln_beta,
                               nb::handle cu_seqlens, nb::handle start_positions, nb::handle initial_state,
                               bool return_state, nb::handle state_out, int threads, nb::handle out_obj) {
  const bool varlen = !cu_seqlens.is_none();
  const Array qa = borrow_array(q_obj, "q", false), ka = borrow_array(k_obj, "k", false),
              va = borrow_array(v_obj, "v", false);
  const TensorView q = to_view(qa, "q", varlen), k = to_view(ka, "k", varlen), v = to_view(va, "v", varlen);
  const int64_t hq = q.heads();

  LinearAttentionParams p;
  p.feature_map = parse_enum_arg<FeatureMap>("feature_map", feature_map);
  p.scale = scale.value_or(std::numeric_limits<float>::quiet_NaN());
  p.decay = parse_enum_arg<DecayKind>("decay", decay);
  p.tie_key_to_gate = tie_key_to_gate;
  p.update = parse_enum_arg<UpdateRule>("update", update);
  p.norm = parse_enum_arg<LinearNorm>("norm", norm);
  p.norm_eps = norm_eps;
  p.form = parse_enum_arg<LinearForm>("form", form);
  p.chunk_size = chunk_size;
  p.performer_features = performer_features;
  p.performer_seed = performer_seed;
  p.taylor_temperature = taylor_temperature.value_or(std::numeric_limits<float>::quiet_NaN());
  p.taylor_l2_normalize = taylor_l2_normalize;
  p.cosformer_max_len = cosformer_max_len;
  p.lln_alpha = lln_alpha;
  p.lln_beta = lln_beta;
  p.num_threads = threads_arg(threads);

  nb::object keep_decay, keep_c, keep_cu, keep_pos;
  Array gate_a, beta_a, w_a, b_a, init_a;
  int64_t n = 0;
  if (!log_decay.is_none()) {
    p.maybe_head_log_decay = static_cast<const float*>(small_vector(log_decay, "log_decay", Elem::kF32, &n, &keep_decay));
    if (n != hq) raise_value("log_decay has length " + std::to_string(n) + "; expected heads_q = " + std::to_string(hq));
  }
  if (!gate.is_none()) p.gate = f32_tensor(gate_a = borrow_array(gate, "gate", false), "gate", varlen);
  if (!beta.is_none()) p.beta = f32_tensor(beta_a = borrow_array(beta, "beta", false), "beta", varlen);
  if (!feature_weight.is_none()) {
    w_a = borrow_array(feature_weight, "feature_weight", false);
    p.maybe_feature_weight = f32_contiguous(w_a, "feature_weight");
    // performer: [m, head_dim]; hedgehog: [heads_q, head_dim, proj_dim].
    if (p.feature_map == FeatureMap::kPerformer && w_a.ndim == 2 && p.performer_features == 0)
      p.performer_features = w_a.shape[0];
    if (p.feature_map == FeatureMap::kHedgehog && w_a.ndim == 3) p.feature_proj_dim = w_a.shape[2];
  }
  if (!feature_bias.is_none()) {
    b_a = borrow_array(feature_bias, "feature_bias", false);
    p.maybe_feature_bias = f32_contiguous(b_a, "feature_bias");
  }
  if (!cottention_c.is_none()) {
    p.maybe_cottention_c = static_cast<const float*>(small_vector(cottention_c, "cottention_c", Elem::kF32, &n, &keep_c));
    if (n != hq) raise_value("cottention_c has length " + std::to_string(n) + "; expected heads_q = " + std::to_string(hq));
  }
  int64_t n_states = q.batch();
  if (varlen) {
    p.maybe_cu_seqlens = static_cast<const int32_t*>(small_vector(cu_seqlens, "cu_seqlens", Elem::kI32, &n, &keep_cu));
    if (n < 2) raise_value("cu_seqlens has length " + std::to_string(n) + "; expected n_seqs + 1 >= 2");
    p.n_seqs = n - 1;
    n_states = p.n_seqs;
  }
  if (!start_positions.is_none()) {
    p.maybe_start_positions =
        static_cast<const int64_t*>(small_vector(start_positions, "start_positions", Elem::kOther, &n, &keep_pos));
    if (n != n_states)
      raise_value("start_positions has length " + std::to_string(n) + "; expected " + std::to_string(n_states) +
                  " (one per sequence)");
  }

  // State [n_states, heads_q, F, Dv'] f32 (Dv' includes the denominator column).
  int64_t feat = 0, floats = 0;
  raise_if_error(linear_feature_dim(p, q.head_dim(), &feat));
  raise_if_error(linear_state_floats(p, q.head_dim(), v.head_dim(), &floats));
  const int64_t state_dims[4] = {n_states, hq, feat, feat > 0 ? floats / feat : 0};
  if (!initial_state.is_none()) {
    init_a = borrow_array(initial_state, "initial_state", false);
    p.maybe_initial_state = f32_exact(init_a, "initial_state", state_dims, 4);
  }
  nb::object state_keep;
  if (return_state || !state_out.is_none()) {
    state_keep = state_out.is_none() ? new_array(q_obj, qa, state_dims, 4, true) : nb::borrow(state_out);
    p.maybe_final_state = f32_exact(borrow_array(state_keep, "state_out", true), "state_out", state_dims, 4);
  }

  int64_t out_dims[4];
  for (int i = 0; i < qa.ndim; ++i) out_dims[i] = qa.shape[i];
  out_dims[qa.ndim - 1] = v.head_dim();
  nb::object out_keep = out_obj.is_none() ? new_array(q_obj, qa, out_dims, qa.ndim, false) : nb::borrow(out_obj);
  const Array oa = borrow_array(out_keep, "out", true);
  const TensorView out = to_view(oa, "out", varlen);
  if (!out_obj.is_none() && (views_overlap(out, q) || views_overlap(out, k) || views_overlap(out, v)))
    raise_value("out overlaps q, k or v in memory; pass a separate output array");
  Status status;
  {
    nb::gil_scoped_release release;
    status = linear_attention(q, k, v, out, p);
  }
  raise_if_error(status);
  if (state_keep.is_valid()) return nb::make_tuple(out_keep, state_keep);
  return out_keep;
}

nb::object head_decays(int64_t heads, bool retnet) {
  if (heads < 1) raise_value("heads " + std::to_string(heads) + " must be at least 1");
  Array like;
  like.elem = Elem::kF32;
  like.is_numpy = true;
  nb::object arr = new_array(nb::none(), like, &heads, 1, true);
  float* data = f32_exact(borrow_array(arr, "decays", true), "decays", &heads, 1);
  if (retnet) retnet_log_decays(heads, data); else lightning_log_decays(heads, data);
  return arr;
}

constexpr const char* kLinearDoc = R"doc(Linear / recurrent attention: feature map x decay x update rule x normalization.

Shapes (BSHD, any strides; q/k/v float32, float16 or bfloat16):
    q:   [batch, seq, heads_q,  head_dim]     k: [batch, seq, heads_kv, head_dim]
    v:   [batch, seq, heads_kv, head_dim_v]   out: [batch, seq, heads_q, head_dim_v]
    gate (float32): [batch, seq, heads_q, 1] (scalar_gate) or [.., F] (vector_gate), log-decays <= 0
    beta (float32): [batch, seq, heads_q, 1] delta-rule write strength
    state: [n_states, heads_q, F, head_dim_v (+1 with norm="denominator")] float32,
           n_states = batch (or number of packed sequences)
Packed sequences: cu_seqlens (int32 offsets) with q/k/v [total, heads, dim] (or batch 1).

Args:
    feature_map: identity, elu1, relu, l2norm, performer, cosformer, taylor2, hedgehog,
        cosine, lognormal (see include/attnkit/linear.h for each paper).
    scale: readout multiplier (default depends on the map: 1/sqrt(head_dim) or 1).
    decay: "none", "per_head" (log_decay [heads_q], e.g. retnet_log_decays()), "scalar_gate" or
        "vector_gate" (gate). tie_key_to_gate: HGRN2's k = 1 - e^gate.
    update: "additive" or "delta" (DeltaNet; beta).  norm: "none", "denominator", "output_rms".
    form: "auto", "parallel", "chunked" (chunk_size) or "recurrent".
    performer_features / performer_seed / feature_weight ([m, head_dim] for performer;
        [heads_q, head_dim, P] for hedgehog) / feature_bias; taylor_temperature,
        taylor_l2_normalize; cosformer_max_len; cottention_c [heads_q]; lln_alpha, lln_beta.
    start_positions: int64 absolute position of each sequence's first token (cosformer, cosine).
    initial_state: state to continue from (a decode step is a call with seq = 1).
    return_state / state_out: also return (or write in place) the final state; state_out may be
        initial_state itself.

Returns:
    out, or (out, state) with return_state=True or state_out=.)doc";

}  // namespace

void bind_linear(nb::module_& m) {
  m.def("linear_attention", &linear_attention_py, nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::kw_only(),
        nb::arg("feature_map") = "identity", nb::arg("scale").none() = nb::none(), nb::arg("decay") = "none",
        nb::arg("log_decay").none() = nb::none(), nb::arg("gate").none() = nb::none(),
        nb::arg("tie_key_to_gate") = false, nb::arg("update") = "additive", nb::arg("beta").none() = nb::none(),
        nb::arg("norm") = "none", nb::arg("norm_eps") = 1e-6f, nb::arg("form") = "auto", nb::arg("chunk_size") = 64,
        nb::arg("performer_features") = 0, nb::arg("performer_seed") = 0,
        nb::arg("feature_weight").none() = nb::none(), nb::arg("feature_bias").none() = nb::none(),
        nb::arg("taylor_temperature").none() = nb::none(), nb::arg("taylor_l2_normalize") = false,
        nb::arg("cosformer_max_len") = 0.0, nb::arg("cottention_c").none() = nb::none(), nb::arg("lln_alpha") = 1.0f,
        nb::arg("lln_beta") = 1.0f, nb::arg("cu_seqlens").none() = nb::none(),
        nb::arg("start_positions").none() = nb::none(), nb::arg("initial_state").none() = nb::none(),
        nb::arg("return_state") = false, nb::arg("state_out").none() = nb::none(), nb::arg("threads") = 0,
        nb::arg("out").none() = nb::none(), kLinearDoc);
  m.def("retnet_log_decays", [](int64_t heads) { return head_decays(heads, true); }, nb::arg("heads"),
        "RetNet per-head log-decays log(1 - 2^(-5-h)), float32 [heads] (Sun et al. 2023).");
  m.def("lightning_log_decays", [](int64_t heads) { return head_decays(heads, false); }, nb::arg("heads"),
        "Lightning Attention / TransNormerLLM per-head log-decays -2^(-8(h+1)/heads), float32 [heads].");
}

}  // namespace attnkit::python
