// Bindings of include/attnkit/attention.h: attention (prefill and decode paths) and merge_states.
//
// Everything that can be checked here is checked before the GIL is released, so a bad call
// raises a Python exception with a message naming the parameter, and never reaches the kernel.
// The kernel runs without the GIL: several Python threads can run attention at once.
#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>

#include "attnkit/attention.h"
#include "convert.h"

namespace attnkit::python {
namespace {

void same_dtype(const TensorView& a, const char* name, const TensorView& q) {
  if (a.dtype != q.dtype)
    throw nb::type_error(
        (std::string(name) + " dtype " + dtype_name(a.dtype) + " does not match q dtype " + dtype_name(q.dtype)).c_str());
}

// Custom mask: 2..4 dims right-aligned to [batch or sequence, heads_q, seq_q, seq_kv]; a size-1
// (or missing) dimension broadcasts through stride 0, so a mask is never expanded in memory.
CustomMask make_mask(const Array& m, const int64_t want[4]) {
  CustomMask mask;
  if (m.elem == Elem::kBool || m.elem == Elem::kU8) {
    mask.kind = MaskKind::kBoolean;  // numpy/torch bool is one byte, 0 or 1: read as uint8
  } else if (m.elem == Elem::kF32) {
    mask.kind = MaskKind::kAdditive;
  } else {
    throw nb::type_error(("mask dtype " + m.dtype_string() +
                          " is not supported; expected bool or uint8 (visibility) or float32 (additive)")
                             .c_str());
  }
  if (m.ndim < 2 || m.ndim > 4)
    raise_value("mask has " + std::to_string(m.ndim) + " dimensions; expected 2 to 4, broadcastable to " +
                "[batch, heads_q, seq_q, seq_kv] " + shape_string(want, 4));
  int64_t stride[4] = {0, 0, 0, 0};
  for (int i = 0; i < m.ndim; ++i) {
    const int axis = 4 - m.ndim + i;
    if (m.shape[i] != want[axis] && m.shape[i] != 1)
      raise_value("mask shape " + m.shape_string() + " does not broadcast to [batch, heads_q, seq_q, seq_kv] " +
                  shape_string(want, 4));
    stride[axis] = m.shape[i] == 1 ? 0 : m.stride[i];
  }
  mask.data = m.data;
  mask.stride_batch = stride[0];
  mask.stride_head = stride[1];
  mask.stride_q = stride[2];
  mask.stride_k = stride[3];
  return mask;
}

// Checks packed offsets enough that the kernel can trust them: start at 0, never decrease, end
// inside the packed length. Returns the longest sequence (the mask's seq extent).
int64_t check_cu(const int32_t* cu, int64_t n, int64_t total, const char* name) {
  if (cu[0] != 0) raise_value(std::string(name) + "[0] is " + std::to_string(cu[0]) + "; expected 0");
  int64_t longest = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (cu[i] < cu[i - 1])
      raise_value(std::string(name) + " decreases at index " + std::to_string(i) + " (" + std::to_string(cu[i - 1]) +
                  " -> " + std::to_string(cu[i]) + ")");
    longest = std::max<int64_t>(longest, cu[i] - cu[i - 1]);
  }
  if (cu[n - 1] > total)
    raise_value(std::string(name) + " ends at " + std::to_string(cu[n - 1]) + ", beyond the packed length " +
                std::to_string(total));
  return longest;
}

const float* head_vector(nb::handle h, const char* name, int64_t heads, nb::object* keep) {
  if (h.is_none()) return nullptr;
  int64_t n = 0;
  const void* p = small_vector(h, name, false, &n, keep);
  if (n != heads) raise_value(std::string(name) + " has length " + std::to_string(n) + "; expected heads_q = " + std::to_string(heads));
  return static_cast<const float*>(p);
}

nb::object run_attention(nb::handle q_obj, nb::handle k_obj, nb::handle v_obj, bool causal,
                         const char* causal_align, std::pair<int64_t, int64_t> window, int64_t sinks,
                         nb::handle sink_logits, nb::handle mask_obj, float softcap, std::optional<float> scale,
                         nb::handle alibi_slopes, float ssmax, nb::handle temperature,
                         const char* normalization, std::optional<float> sigmoid_bias,
                         nb::handle cu_seqlens_q, nb::handle cu_seqlens_k, bool return_lse, int threads,
                         nb::handle out_obj, nb::handle lse_obj, ExecPath path) {
  const bool varlen = !cu_seqlens_q.is_none() || !cu_seqlens_k.is_none();
  if (cu_seqlens_q.is_none() != cu_seqlens_k.is_none()) raise_value("cu_seqlens_q and cu_seqlens_k must be given together");
  const Array qa = borrow_array(q_obj, "q", false);
  const Array ka = borrow_array(k_obj, "k", false);
  const Array va = borrow_array(v_obj, "v", false);
  const TensorView q = to_view(qa, "q", varlen);
  const TensorView k = to_view(ka, "k", varlen);
  const TensorView v = to_view(va, "v", varlen);
  same_dtype(k, "k", q);
  same_dtype(v, "v", q);
  if (q.batch() != k.batch() || k.batch() != v.batch())
    raise_value("batch sizes differ: q " + std::to_string(q.batch()) + ", k " + std::to_string(k.batch()) + ", v " +
                std::to_string(v.batch()));
  if (k.seq() != v.seq() || k.heads() != v.heads())
    raise_value("k shape " + ka.shape_string() + " and v shape " + va.shape_string() + " differ in seq or heads");

  // Output [.., seq_q, heads_q, head_dim_v] in q's rank (3-d stays 3-d for packed batches).
  int64_t out_dims[4];
  for (int i = 0; i < qa.ndim; ++i) out_dims[i] = qa.shape[i];
  out_dims[qa.ndim - 1] = v.head_dim();
  nb::object out_keep;
  if (out_obj.is_none()) {
    out_keep = new_array(q_obj, qa, out_dims, qa.ndim, false);
  } else {
    out_keep = nb::borrow(out_obj);
  }
  const Array oa = borrow_array(out_keep, "out", true);
  const TensorView out = to_view(oa, "out", varlen);
  if (oa.ndim != qa.ndim || !std::equal(out_dims, out_dims + qa.ndim, oa.shape))
    raise_value("out shape " + oa.shape_string() + " does not match " + shape_string(out_dims, qa.ndim) +
                " ([batch, seq_q, heads_q, head_dim_v])");
  if (!out_obj.is_none() && (views_overlap(out, q) || views_overlap(out, k) || views_overlap(out, v)))
    raise_value("out overlaps q, k or v in memory; pass a separate output array");

  AttentionParams p;
  p.causal = causal;
  p.causal_align = parse_enum_arg<CausalAlign>("causal_align", causal_align);
  p.window_left = window.first;
  p.window_right = window.second;
  p.n_sink_tokens = sinks;
  p.softcap = softcap;
  p.scale = scale;
  p.ssmax_s = ssmax;
  p.normalization = parse_enum_arg<Normalization>("normalization", normalization);
  p.sigmoid_bias = sigmoid_bias;
  p.num_threads = threads_arg(threads);
  p.path = path;
  const int64_t hq = q.heads();
  nb::object keep_sink, keep_alibi, keep_temp, keep_cu_q, keep_cu_k;
  p.maybe_sink_logits = head_vector(sink_logits, "sink_logits", hq, &keep_sink);
  p.maybe_alibi_slopes = head_vector(alibi_slopes, "alibi_slopes", hq, &keep_alibi);
  p.maybe_head_temperature = head_vector(temperature, "temperature", hq, &keep_temp);

  int64_t max_q = q.seq(), max_k = k.seq(), mask_batch = q.batch();
  if (varlen) {
    if (q.batch() != 1)
      raise_value("q batch " + std::to_string(q.batch()) +
                  " with cu_seqlens; packed sequences need batch 1 (or 3-d [total, heads, dim])");
    int64_t nq = 0, nk = 0;
    p.maybe_cu_seqlens_q = static_cast<const int32_t*>(small_vector(cu_seqlens_q, "cu_seqlens_q", true, &nq, &keep_cu_q));
    p.maybe_cu_seqlens_k = static_cast<const int32_t*>(small_vector(cu_seqlens_k, "cu_seqlens_k", true, &nk, &keep_cu_k));
    if (nq != nk || nq < 2)
      raise_value("cu_seqlens_q length " + std::to_string(nq) + " and cu_seqlens_k length " + std::to_string(nk) +
                  " must be equal and at least 2");
    max_q = check_cu(p.maybe_cu_seqlens_q, nq, q.seq(), "cu_seqlens_q");
    max_k = check_cu(p.maybe_cu_seqlens_k, nk, k.seq(), "cu_seqlens_k");
    p.n_seqs = nq - 1;
    mask_batch = p.n_seqs;
  }
  Array ma;
  if (!mask_obj.is_none()) {
    ma = borrow_array(mask_obj, "mask", false);
    const int64_t want[4] = {mask_batch, hq, max_q, max_k};
    p.mask = make_mask(ma, want);
  }

  // LSE: [batch, heads_q, seq_q], or [heads_q, total_q] for packed batches.
  float* lse = nullptr;
  nb::object lse_keep;
  if (return_lse || !lse_obj.is_none()) {
    const int64_t dims3[3] = {q.batch(), hq, q.seq()};
    const int64_t* dims = varlen ? dims3 + 1 : dims3;
    const int nd = varlen ? 2 : 3;
    lse_keep = lse_obj.is_none() ? new_array(q_obj, qa, dims, nd, true) : nb::borrow(lse_obj);
    const Array la = borrow_array(lse_keep, "lse", true);
    lse = f32_exact(la, "lse", dims, nd);
  }

  Status status;
  {
    nb::gil_scoped_release release;
    status = attention(q, k, v, out, lse, p);
  }
  raise_if_error(status);
  if (lse) return nb::make_tuple(out_keep, lse_keep);
  return out_keep;
}

nb::object attention_py(nb::handle q, nb::handle k, nb::handle v, bool causal, const char* causal_align,
                        std::pair<int64_t, int64_t> window, int64_t sinks, nb::handle sink_logits, nb::handle mask,
                        float softcap, std::optional<float> scale, nb::handle alibi_slopes, float ssmax,
                        nb::handle temperature, const char* normalization, std::optional<float> sigmoid_bias,
                        nb::handle cu_seqlens_q, nb::handle cu_seqlens_k, bool return_lse, int threads,
                        nb::handle out, nb::handle lse, const char* path) {
  return run_attention(q, k, v, causal, causal_align, window, sinks, sink_logits, mask, softcap, scale, alibi_slopes,
                       ssmax, temperature, normalization, sigmoid_bias, cu_seqlens_q, cu_seqlens_k, return_lse,
                       threads, out, lse, parse_enum_arg<ExecPath>("path", path));
}

nb::object decode_py(nb::handle q, nb::handle k, nb::handle v, bool causal, const char* causal_align,
                     std::pair<int64_t, int64_t> window, int64_t sinks, nb::handle sink_logits, nb::handle mask,
                     float softcap, std::optional<float> scale, nb::handle alibi_slopes, float ssmax,
                     nb::handle temperature, const char* normalization, std::optional<float> sigmoid_bias,
                     nb::handle cu_seqlens_q, nb::handle cu_seqlens_k, bool return_lse, int threads,
                     nb::handle out, nb::handle lse) {
  return run_attention(q, k, v, causal, causal_align, window, sinks, sink_logits, mask, softcap, scale, alibi_slopes,
                       ssmax, temperature, normalization, sigmoid_bias, cu_seqlens_q, cu_seqlens_k, return_lse,
                       threads, out, lse, ExecPath::kDecode);
}

nb::tuple merge_states_py(nb::handle o_a_obj, nb::handle lse_a_obj, nb::handle o_b_obj, nb::handle lse_b_obj,
                          nb::handle out_obj, nb::handle lse_out_obj) {
  const Array oa = borrow_array(o_a_obj, "o_a", false);
  const Array ob = borrow_array(o_b_obj, "o_b", false);
  const TensorView a = to_view(oa, "o_a", true);
  const TensorView b = to_view(ob, "o_b", true);
  if (a.shape != b.shape)
    raise_value("o_a shape " + oa.shape_string() + " and o_b shape " + ob.shape_string() + " must be equal");
  nb::object out_keep = out_obj.is_none() ? new_array(o_a_obj, oa, oa.shape, oa.ndim, false) : nb::borrow(out_obj);
  const Array outa = borrow_array(out_keep, "out", true);
  const TensorView out = to_view(outa, "out", true);
  if (out.shape != a.shape)
    raise_value("out shape " + outa.shape_string() + " does not match o_a shape " + oa.shape_string());
  // LSE is [batch, heads, seq] for 4-d states and [heads, seq] for 3-d (packed) ones.
  const int64_t dims3[3] = {a.batch(), a.heads(), a.seq()};
  const bool packed = oa.ndim == 3;
  const int64_t* dims = packed ? dims3 + 1 : dims3;
  const int nd = packed ? 2 : 3;
  const Array la = borrow_array(lse_a_obj, "lse_a", false);
  const Array lb = borrow_array(lse_b_obj, "lse_b", false);
  const float* lse_a = f32_exact(la, "lse_a", dims, nd);
  const float* lse_b = f32_exact(lb, "lse_b", dims, nd);
  nb::object lse_keep = lse_out_obj.is_none() ? new_array(o_a_obj, oa, dims, nd, true) : nb::borrow(lse_out_obj);
  const Array lo = borrow_array(lse_keep, "lse_out", true);
  float* lse_out = f32_exact(lo, "lse_out", dims, nd);
  Status status;
  {
    nb::gil_scoped_release release;
    status = merge_states(a, lse_a, b, lse_b, out, lse_out);
  }
  raise_if_error(status);
  return nb::make_tuple(out_keep, lse_keep);
}

constexpr const char* kAttentionDoc = R"doc(Exact (dense) attention.

Shapes (BSHD; GQA/MQA when heads_q is a multiple of heads_kv: query head h reads kv head
h // (heads_q // heads_kv)):
    q:   [batch, seq_q,  heads_q,  head_dim]
    k:   [batch, seq_kv, heads_kv, head_dim]
    v:   [batch, seq_kv, heads_kv, head_dim_v]
    out: [batch, seq_q,  heads_q,  head_dim_v]  returned; dtype of q unless out= is given
    lse: [batch, heads_q, seq_q] float32        returned when return_lse=True (natural log)
Packed variable-length batches (FlashAttention's varlen convention): give cu_seqlens_q and
cu_seqlens_k (int32, n_seqs + 1 offsets) and q/k/v as [total, heads, dim] (or with batch 1);
out is then [total_q, heads_q, head_dim_v] and lse [heads_q, total_q].

Args:
    q, k, v: numpy arrays, torch CPU tensors or other CPU DLPack producers; float32, float16 or
        bfloat16 (ml_dtypes.bfloat16 for numpy), all the same dtype; any strides. They are read
        in place, never copied.
    causal: hide keys after the query's position.
    causal_align: "bottom_right" (default; query i sees keys <= i + seq_kv - seq_q, as
        FlashAttention) or "top_left" (keys <= i).
    window: (left, right) inclusive sliding window around the query position; -1 = unbounded.
    sinks: number of always-visible leading keys (attention sinks; they ignore the window).
    sink_logits: [heads_q] per-head sink logit that joins the softmax denominator only.
    mask: custom mask broadcastable to [batch (or n_seqs), heads_q, seq_q, seq_kv]; bool or
        uint8 = visibility (nonzero = visible), float32 = added to the logits (-inf hides).
    softcap: logits become softcap * tanh(s / softcap) when > 0 (Gemma 2).
    scale: logit scale; default 1/sqrt(head_dim).
    alibi_slopes: [heads_q] ALiBi slopes: s -= slope[h] * |pos_i - j|.
    ssmax: Scalable-Softmax s: logits times ssmax * ln(visible keys) when > 0.
    temperature: [heads_q] per-head multiplier on the logits.
    normalization: "softmax" (default), "sigmoid" (FlashSigmoid: sigmoid(s + sigmoid_bias),
        bias default -ln(seq_kv)) or "relu" (relu(s) / seq_kv).
    sigmoid_bias: see normalization.
    cu_seqlens_q, cu_seqlens_k: packed-batch offsets (see above).
    return_lse: also return the per-row log-sum-exp of the logits (softmax only).
    threads: OpenMP threads for this call; 0 = the OpenMP default.
    out: preallocated output (float32/float16/bfloat16, any strides), written in place.
    lse: preallocated C-contiguous float32 LSE array, written in place (implies return_lse).
    path: "auto" (the split-KV decode path for short queries against long keys), "prefill"
        or "decode".

Returns:
    out, or (out, lse) when return_lse is true or lse= is given: numpy arrays, or torch tensors
    when q is a torch tensor (or the arrays given as out= / lse=). A row that sees no key gets
    output 0 and LSE -inf.

Raises:
    ValueError: bad shapes, values or options (the message names the parameter and value).
    TypeError: unsupported or mismatched dtypes, or an object that is not a CPU array.

The GIL is released while the kernel runs.)doc";

constexpr const char* kDecodeDoc = R"doc(Attention through the split-KV decode path (path="decode").

For a few query rows against a long KV sequence, e.g. one new token per sequence:
    q: [batch, 1, heads_q, head_dim] against k/v [batch, seq_kv, heads_kv, head_dim(_v)].
The keys are split across threads and the partial results merged with merge_states.
Arguments, shapes and results are those of attention().)doc";

constexpr const char* kMergeDoc = R"doc(Combines two partial softmax attention results over disjoint key sets.

With m = max(lse_a, lse_b):
    lse = m + ln(e^(lse_a - m) + e^(lse_b - m))
    out = o_a * e^(lse_a - lse) + o_b * e^(lse_b - lse)
An empty part (lse -inf) contributes nothing; two empty parts give out 0 and lse -inf.

Shapes:
    o_a, o_b, out:          [batch, seq, heads, dim]  (float32/float16/bfloat16, any strides)
    lse_a, lse_b, lse_out:  [batch, heads, seq] float32, C-contiguous
or o [total, heads, dim] with lse [heads, total] for packed sequences. out / lse_out may be
o_a / lse_a (in-place accumulation).

Returns:
    (out, lse_out))doc";

}  // namespace

void bind_attention(nb::module_& m) {
  // The keyword arguments shared by attention() and decode(), in the C++ parameter order.
#define ATTNKIT_PY_ATTENTION_ARGS                                                                           \
  nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::kw_only(), nb::arg("causal") = false,                      \
      nb::arg("causal_align") = "bottom_right", nb::arg("window") = std::make_pair(int64_t{-1}, int64_t{-1}), \
      nb::arg("sinks") = 0, nb::arg("sink_logits").none() = nb::none(), nb::arg("mask").none() = nb::none(), \
      nb::arg("softcap") = 0.0f, nb::arg("scale").none() = nb::none(),                                     \
      nb::arg("alibi_slopes").none() = nb::none(), nb::arg("ssmax") = 0.0f,                                  \
      nb::arg("temperature").none() = nb::none(), nb::arg("normalization") = "softmax",                     \
      nb::arg("sigmoid_bias").none() = nb::none(), nb::arg("cu_seqlens_q").none() = nb::none(),             \
      nb::arg("cu_seqlens_k").none() = nb::none(), nb::arg("return_lse") = false, nb::arg("threads") = 0,   \
      nb::arg("out").none() = nb::none(), nb::arg("lse").none() = nb::none()
  m.def("attention", &attention_py, ATTNKIT_PY_ATTENTION_ARGS, nb::arg("path") = "auto", kAttentionDoc);
  m.def("decode", &decode_py, ATTNKIT_PY_ATTENTION_ARGS, kDecodeDoc);
#undef ATTNKIT_PY_ATTENTION_ARGS
  m.def("merge_states", &merge_states_py, nb::arg("o_a"), nb::arg("lse_a"), nb::arg("o_b"), nb::arg("lse_b"),
        nb::kw_only(), nb::arg("out").none() = nb::none(), nb::arg("lse_out").none() = nb::none(), kMergeDoc);
  m.def("attention_flops", &attention_flops, nb::arg("batch"), nb::arg("seq_q"), nb::arg("seq_kv"),
        nb::arg("heads_q"), nb::arg("head_dim"), nb::arg("head_dim_v"), nb::arg("causal"),
        "FLOPs of exact attention counting visible (query, key) pairs only: 2*head_dim (QK^T) + "
        "2*head_dim_v (PV) per pair and query head; the formula of the C++ benchmarks.");
}

}  // namespace attnkit::python
