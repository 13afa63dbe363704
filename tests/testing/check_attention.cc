#include "testing/check_attention.h"

#include <algorithm>
#include <cmath>

#include "core/tile_kernel.h"
#include "testing/plain_attention.h"

namespace attnkit::testing {
namespace {

struct Dims {
  int64_t d0, d1, d2, d3;
  const char* names;
};

// "out[b=0, s=12, h=3, d=5]" from a flat dense index.
std::string name_index(int64_t i, const void* ctx) {
  const Dims& d = *static_cast<const Dims*>(ctx);
  const int64_t c3 = i % d.d3, c2 = (i / d.d3) % d.d2, c1 = (i / (d.d3 * d.d2)) % d.d1, c0 = i / (d.d3 * d.d2 * d.d1);
  const std::string n = d.names;  // four letters
  return "[" + n.substr(0, 1) + "=" + std::to_string(c0) + ", " + n.substr(1, 1) + "=" + std::to_string(c1) + ", " +
         n.substr(2, 1) + "=" + std::to_string(c2) + ", " + n.substr(3, 1) + "=" + std::to_string(c3) + "]";
}

}  // namespace

// K and V as the reference and the plain baseline read them: the case's tensors, or for int8_kv
// dense f32 views of `k` / `v` values (dequantized or unquantized) with the scales cleared.
struct KvViews {
  TensorView k, v;
  AttentionParams params;
};
KvViews kv_views(const CaseData& d, const std::vector<float>& k, const std::vector<float>& v) {
  KvViews r{d.k.view(), d.v.view(), d.params};
  if (!d.c.int8_kv) return r;
  const TensorView& kt = d.k.view();
  r.k = TensorView::contiguous(const_cast<float*>(k.data()), DType::kF32, kt.shape[0], kt.shape[1], kt.shape[2], kt.shape[3]);
  r.v = TensorView::contiguous(const_cast<float*>(v.data()), DType::kF32, kt.shape[0], kt.shape[1], kt.shape[2], d.v.view().shape[3]);
  r.params.k_scales = KvScales();
  r.params.v_scales = KvScales();
  return r;
}

CaseExpectation expect_case(const CaseData& d) {
  CaseExpectation e;
  const KvViews kv = kv_views(d, d.k_deq, d.v_deq);
  const Status st = reference::attention_ref_f64(d.q.view(), kv.k, kv.v, d.c.lse_enabled(), kv.params, &e.ref);
  if (!st.ok()) {
    // A generated case is always valid; make the mistake loud in every later comparison.
    e.ref.out.clear();
    e.ref.lse.clear();
    return e;
  }
  PlainResult plain = attention_plain_f32(d.q.view(), kv.k, kv.v, kv.params);
  round_to_dtype(&plain.out, d.c.out_dtype);
  e.baseline_out = std::move(plain.out);
  e.baseline_lse = std::move(plain.lse);
  return e;
}

std::vector<float> lse_values(const CaseData& d) { return d.lse.to_dense(); }

// int8_kv cases: the largest logit error of int8 decode's int16 query rows (int16_query_logit_bound
// over every row and key) and the largest |v|, from the dequantized K/V.
struct QueryRounding {
  double delta = 0.0, v_abs_max = 0.0;
};
QueryRounding int16_query_rounding(const CaseData& d) {
  QueryRounding qr;
  const TensorView& q = d.q.view();
  const int64_t dk = d.c.head_dim;
  double k_l1_max = 0.0;
  for (size_t r = 0; r + static_cast<size_t>(dk) <= d.k_deq.size(); r += static_cast<size_t>(dk)) {
    double l1 = 0.0;
    for (int64_t t = 0; t < dk; ++t) l1 += std::fabs(static_cast<double>(d.k_deq[r + static_cast<size_t>(t)]));
    k_l1_max = std::max(k_l1_max, l1);
  }
  for (float x : d.v_deq) qr.v_abs_max = std::max(qr.v_abs_max, std::fabs(static_cast<double>(x)));
  const double scale = d.params.scale ? *d.params.scale : 1.0 / std::sqrt(static_cast<double>(dk));
  // Scalable-Softmax multiplies the logits by s * ln(n) for n visible keys, n <= every key.
  const double ssmax = d.c.ssmax_s > 0.0f ? d.c.ssmax_s * std::log(static_cast<double>(std::max<int64_t>(2, d.k.view().shape[1]))) : 1.0;
  for (int64_t b = 0; b < q.shape[0]; ++b)
    for (int64_t i = 0; i < q.shape[1]; ++i)
      for (int64_t h = 0; h < q.shape[2]; ++h) {
        double amax = 0.0;
        for (int64_t t = 0; t < dk; ++t) amax = std::max(amax, std::fabs(static_cast<double>(q.get(b, i, h, t))));
        const double mul = scale * ssmax * (d.params.maybe_head_temperature ? d.params.maybe_head_temperature[h] : 1.0);
        qr.delta = std::max(qr.delta, int16_query_logit_bound(mul, amax, k_l1_max));
      }
  return qr;
}

AttentionCheck check_case(const CaseData& d, const CaseExpectation& e, const Tolerance& tol) {
  AttentionCheck r;
  const TensorView& o = d.out.view();
  const Dims od{o.shape[0], o.shape[1], o.shape[2], o.shape[3], "bshd"};
  Tolerance tol_out = tol, tol_lse = tol;
  if (d.c.int8_kv) {
    const QueryRounding qr = int16_query_rounding(d);
    const double sv_max = d.v_scales.empty() ? 0.0 : *std::max_element(d.v_scales.begin(), d.v_scales.end());
    tol_out.extra_abs += int8_kv_out_bound(qr.delta, qr.v_abs_max, 0.0) + int16_weight_out_bound(core::kTileK, sv_max);
    tol_lse.extra_abs += qr.delta;
  }
  r.out = check_close(e.ref.out, d.out.to_dense(), e.baseline_out, d.c.out_dtype, "out", tol_out, name_index, &od);
  r.ok = r.out.ok;
  r.message = d.c.name() + "\n  " + r.out.message;
  if (d.c.lse_enabled()) {
    const Dims ld{1, e.ref.batch, e.ref.heads_q, e.ref.seq_q, "-bhs"};
    r.lse = check_close(e.ref.lse, lse_values(d), e.baseline_lse, DType::kF32, "lse", tol_lse, name_index, &ld);
    r.ok = r.ok && r.lse.ok;
    r.message += "\n  " + r.lse.message;
  } else if (!d.lse.untouched()) {
    r.ok = false;
    r.message += "\n  lse buffer written although no LSE was requested";
  }
  r.guard_error = d.out.check_canary();
  const std::string lse_guard = d.lse.check_canary();
  if (!lse_guard.empty()) r.guard_error += (r.guard_error.empty() ? "lse: " : "; lse: ") + lse_guard;
  if (!r.guard_error.empty()) {
    r.ok = false;
    r.message += "\n  guard bytes: " + r.guard_error;
  }
  return r;
}

AttentionCheck check_case(const CaseData& d, const Tolerance& tol) { return check_case(d, expect_case(d), tol); }

AttentionCheck check_int8_kv_bound(const CaseData& d, const AttentionCheck& dequantized) {
  AttentionCheck r;
  r.message = d.c.name() + " (int8 quantization bound)";
  if (!d.c.int8_kv || d.c.normalization != Normalization::kSoftmax || d.c.ssmax_s != 0.0f) {
    r.ok = false;
    r.message += ": needs an int8_kv softmax case without Scalable-Softmax";
    return r;
  }
  const KvViews kv = kv_views(d, d.k_f32, d.v_f32);
  reference::RefResult ref;
  const Status st = reference::attention_ref_f64(d.q.view(), kv.k, kv.v, d.c.lse_enabled(), kv.params, &ref);
  if (!st.ok()) {
    r.ok = false;
    r.message += ": reference failed: " + st.message();
    return r;
  }
  // Maxima over all keys bound the maxima over any row's visible keys.
  const double sk_max = *std::max_element(d.k_scales.begin(), d.k_scales.end());
  const double sv_max = *std::max_element(d.v_scales.begin(), d.v_scales.end());
  const int64_t dv = ref.head_dim_v, dk = d.c.head_dim, rows_q = ref.seq_q;
  std::vector<double> vmax(static_cast<size_t>(dv), 0.0);
  for (size_t i = 0; i < d.v_f32.size(); ++i)
    vmax[i % static_cast<size_t>(dv)] = std::max(vmax[i % static_cast<size_t>(dv)], std::fabs(static_cast<double>(d.v_f32[i])));
  const double scale = d.params.scale ? *d.params.scale : 1.0 / std::sqrt(static_cast<double>(dk));
  std::vector<double> out_bound(ref.out.size()), lse_bound(ref.lse.size());
  for (int64_t b = 0; b < ref.batch; ++b)
    for (int64_t i = 0; i < rows_q; ++i)
      for (int64_t h = 0; h < ref.heads_q; ++h) {
        double q_l1 = 0.0;
        for (int64_t t = 0; t < dk; ++t) q_l1 += std::fabs(static_cast<double>(d.q.view().get(b, i, h, t)));
        const double mul = scale * (d.params.maybe_head_temperature ? d.params.maybe_head_temperature[h] : 1.0);
        const double delta = int8_kv_logit_bound(mul, q_l1, sk_max);
        for (int64_t c = 0; c < dv; ++c)
          out_bound[static_cast<size_t>(ref.out_index(b, i, h, c))] =
              int8_kv_out_bound(delta, vmax[static_cast<size_t>(c)], sv_max) + dequantized.out.abs_bound;
        if (!ref.lse.empty()) lse_bound[static_cast<size_t>(ref.lse_index(b, h, i))] = delta + dequantized.lse.abs_bound;
      }
  r.out = check_within(ref.out, d.out.to_dense(), out_bound, "out");
  r.ok = r.out.ok;
  r.message += "\n  " + r.out.message;
  if (d.c.lse_enabled()) {
    r.lse = check_within(ref.lse, lse_values(d), lse_bound, "lse");
    r.ok = r.ok && r.lse.ok;
    r.message += "\n  " + r.lse.message;
  }
  return r;
}

}  // namespace attnkit::testing
