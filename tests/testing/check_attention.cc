#include "testing/check_attention.h"

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

CaseExpectation expect_case(const CaseData& d) {
  CaseExpectation e;
  const Status st = reference::attention_ref_f64(d.q.view(), d.k.view(), d.v.view(), d.c.lse_enabled(), d.params, &e.ref);
  if (!st.ok()) {
    // A generated case is always valid; make the mistake loud in every later comparison.
    e.ref.out.clear();
    e.ref.lse.clear();
    return e;
  }
  PlainResult plain = attention_plain_f32(d.q.view(), d.k.view(), d.v.view(), d.params);
  round_to_dtype(&plain.out, d.c.out_dtype);
  e.baseline_out = std::move(plain.out);
  e.baseline_lse = std::move(plain.lse);
  return e;
}

std::vector<float> lse_values(const CaseData& d) { return d.lse.to_dense(); }

AttentionCheck check_case(const CaseData& d, const CaseExpectation& e, const Tolerance& tol) {
  AttentionCheck r;
  const TensorView& o = d.out.view();
  const Dims od{o.shape[0], o.shape[1], o.shape[2], o.shape[3], "bshd"};
  r.out = check_close(e.ref.out, d.out.to_dense(), e.baseline_out, d.c.out_dtype, "out", tol, name_index, &od);
  r.ok = r.out.ok;
  r.message = d.c.name() + "\n  " + r.out.message;
  if (d.c.lse_enabled()) {
    const Dims ld{1, e.ref.batch, e.ref.heads_q, e.ref.seq_q, "-bhs"};
    r.lse = check_close(e.ref.lse, lse_values(d), e.baseline_lse, DType::kF32, "lse", tol, name_index, &ld);
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

}  // namespace attnkit::testing
