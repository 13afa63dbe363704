// testing/check_attention.h: one call that checks a kernel's attention output for a case:
// double reference, plain f32 baseline, tolerance policy on out and LSE, guard bytes.
#pragma once

#include <string>
#include <vector>

#include "reference/attention_ref.h"
#include "testing/attn_case.h"
#include "testing/tolerance.h"

namespace attnkit::testing {

struct AttentionCheck {
  bool ok = true;
  CheckResult out, lse;
  std::string guard_error;  // empty when no byte outside out / lse was written
  std::string message;      // the case name and every check's summary
};

// Reference results of a case, computed once and reusable across several kernel runs.
struct CaseExpectation {
  reference::RefResult ref;
  std::vector<float> baseline_out;  // plain f32, rounded to the output dtype
  std::vector<float> baseline_lse;
};
CaseExpectation expect_case(const CaseData& d);

// Checks what a kernel wrote into d.out / d.lse against the expectation. For int8_kv cases the
// bound also holds int8 decode's int16 rounding of the queries and of the weights
// (int16_query_logit_bound, int16_weight_out_bound in tolerance.h).
AttentionCheck check_case(const CaseData& d, const CaseExpectation& e, const Tolerance& tol = {});
AttentionCheck check_case(const CaseData& d, const Tolerance& tol = {});

// int8_kv cases (softmax): the kernel's output and LSE against the double reference over the
// unquantized K/V, within int8_kv_out_bound / int8_kv_logit_bound (tolerance.h) plus the f32
// allowance that the ordinary check over the dequantized K/V (`dequantized`) granted.
AttentionCheck check_int8_kv_bound(const CaseData& d, const AttentionCheck& dequantized);

// Dense f32 copies of the kernel's outputs.
std::vector<float> lse_values(const CaseData& d);

}  // namespace attnkit::testing
