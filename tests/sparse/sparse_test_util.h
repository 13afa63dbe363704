// Helpers of the sparse tests: inputs, the double reference under a pattern's element mask,
// the plain f32 baseline (the same mask through attention.h's boolean custom mask) and the
// shared tolerance check.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "attnkit/sparse.h"
#include "reference/sparse_ref.h"
#include "testing/plain_attention.h"
#include "testing/tensor_buffer.h"
#include "testing/tolerance.h"

namespace attnkit::sparse_test {

struct Inputs {
  testing::TestTensor q, k, v, out;
  std::vector<float> lse;
  Inputs(int64_t batch, int64_t sq, int64_t sk, int64_t hq, int64_t hkv, int64_t d, uint64_t seed,
         testing::Layout layout = testing::Layout::kContiguous, DType in_dtype = DType::kF32)
      : q(in_dtype, batch, sq, hq, d, layout),
        k(in_dtype, batch, sk, hkv, d, layout),
        v(in_dtype, batch, sk, hkv, d, layout),
        out(DType::kF32, batch, sq, hq, d, layout),
        lse(batch * hq * sq, 0.0f) {
    q.fill_uniform(seed * 3 + 1);
    k.fill_uniform(seed * 3 + 2);
    v.fill_uniform(seed * 3 + 3);
    out.fill_canary();
  }
};

inline AttentionParams causal_params(bool causal, CausalAlign align = CausalAlign::kBottomRight) {
  AttentionParams p;
  p.causal = causal;
  p.causal_align = align;
  return p;
}

inline BlockMaskShape mask_shape(const Inputs& in, bool causal, int64_t bq = 64, int64_t bk = 64,
                                 CausalAlign align = CausalAlign::kBottomRight) {
  BlockMaskShape s;
  s.batch = in.q.view().batch();
  s.heads = in.q.view().heads();
  s.seq_q = in.q.view().seq();
  s.seq_kv = in.k.view().seq();
  s.block_q = bq;
  s.block_k = bk;
  s.causal = causal;
  s.causal_align = align;
  return s;
}

// Checks in.out / in.lse against the double reference under `visible` and the plain f32 baseline
// run with the same boolean mask. Returns the check's message on failure ("" when fine).
inline std::string check_against_reference(const Inputs& in, const AttentionParams& params,
                                           const reference::ElementPredicate& visible) {
  const TensorView& q = in.q.view();
  const TensorView& k = in.k.view();
  const int64_t B = q.batch(), sq = q.seq(), sk = k.seq(), hq = q.heads();
  reference::SparseRefOptions opt;
  opt.causal = params.causal;
  opt.causal_align = params.causal_align;
  std::vector<double> ref_out, ref_lse;
  reference::masked_attention_ref(q, k, in.v.view(), opt, visible, &ref_out, &ref_lse);
  // Baseline: attention.h with a boolean custom mask [b, h, i, j].
  std::vector<uint8_t> mask(B * hq * sq * sk, 0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < hq; ++h)
      for (int64_t i = 0; i < sq; ++i)
        for (int64_t j = 0; j < sk; ++j) mask[((b * hq + h) * sq + i) * sk + j] = visible(b, h, i, j) ? 1 : 0;
  AttentionParams bp = params;
  bp.mask.kind = MaskKind::kBoolean;
  bp.mask.data = mask.data();
  bp.mask.stride_batch = hq * sq * sk;
  bp.mask.stride_head = sq * sk;
  bp.mask.stride_q = sk;
  bp.mask.stride_k = 1;
  testing::PlainResult base = testing::attention_plain_f32(q, k, in.v.view(), bp);
  std::string msg;
  const std::string canary = in.out.check_canary();
  if (!canary.empty()) msg += "guard bytes: " + canary + "\n";
  testing::CheckResult co = testing::check_close(ref_out, in.out.to_dense(), base.out, DType::kF32, "out");
  if (!co.ok) msg += co.message + "\n";
  // LSE: -inf rows must match exactly; compare finite ones.
  std::vector<double> rl;
  std::vector<float> gl, bl;
  for (size_t x = 0; x < ref_lse.size(); ++x) {
    if (std::isinf(ref_lse[x])) {
      if (!std::isinf(in.lse[x]) || in.lse[x] > 0) msg += "lse row " + std::to_string(x) + " should be -inf\n";
      continue;
    }
    rl.push_back(ref_lse[x]);
    gl.push_back(in.lse[x]);
    bl.push_back(base.lse[x]);
  }
  testing::CheckResult cl = testing::check_close(rl, gl, bl, DType::kF32, "lse");
  if (!cl.ok) msg += cl.message + "\n";
  return msg;
}

// The element rule of a BlockMask built from `pattern` (pattern on (p, j), p = i + offset).
inline reference::ElementPredicate pattern_predicate(const PatternPtr& pattern, const BlockMaskShape& s) {
  const int64_t off = s.causal_align == CausalAlign::kBottomRight ? s.seq_kv - s.seq_q : 0;
  return [pattern, off](int64_t, int64_t h, int64_t i, int64_t j) { return pattern->visible(h, i + off, j); };
}

}  // namespace attnkit::sparse_test
