// testing/tolerance.h: the one tolerance policy of attnkit's tests.
//
// FlashAttention's rule (Dao et al., 2022, tests/test_flash_attn.py): compare the optimized
// result and a plain implementation in the same working precision (f32 here, see
// plain_attention.h) against a double-precision reference; the optimized error may be at most
// `factor` times the plain error, plus a small absolute floor (so a plain error of exactly 0 does
// not demand bit-exactness). On top of that the normalized mean squared error
// NMSE = sum (x - ref)^2 / sum ref^2 is bounded the same way (ggml's test-backend-ops measure).
// A NaN or Inf where the reference is finite always fails; where the reference is +-Inf the
// result must be the same infinity; where the reference is NaN the result must be NaN.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "attnkit/tensor.h"

namespace attnkit::testing {

struct Tolerance {
  double factor = 4.0;       // allowed multiple of the plain f32 implementation's error
  double abs_floor = 0.0;    // 0 = pick from the output dtype and the reference's magnitude
  double nmse_floor = 0.0;   // 0 = pick from the output dtype
  // A proven bound on an error the plain f32 implementation does not make (int8 decode's int16
  // queries, int16_query_logit_bound): added to the max-abs bound, and its square over the
  // reference's mean square to the NMSE bound.
  double extra_abs = 0.0;
};

// Unit roundoff of a storage dtype (2^-24 f32, 2^-11 f16, 2^-8 bf16).
double unit_roundoff(DType t);

struct ErrorStats {
  double max_abs = 0.0;   // max |x - ref| over finite reference entries
  int64_t worst = -1;     // index of max_abs
  double nmse = 0.0;
  int64_t bad_nonfinite = 0;  // entries whose finiteness disagrees with the reference
  int64_t first_nonfinite = -1;
};

struct CheckResult {
  bool ok = true;
  ErrorStats got, baseline;
  double abs_bound = 0.0, nmse_bound = 0.0;
  std::string message;  // readable summary; explains the failure when !ok
};

ErrorStats error_stats(const std::vector<double>& ref, const std::vector<float>& x);

// Checks `got` against `ref`, using `baseline` (the plain f32 result, already rounded to the
// output dtype when the output is f16/bf16) as the yardstick. `what` names the quantity in the
// message; `index_name` (optional) turns a flat index into a readable position.
CheckResult check_close(const std::vector<double>& ref, const std::vector<float>& got,
                        const std::vector<float>& baseline, DType out_dtype, const std::string& what,
                        const Tolerance& tol = {}, std::string (*index_name)(int64_t, const void*) = nullptr,
                        const void* index_ctx = nullptr);

// int8 K/V, the bound of their quantization (quantize_int8_row in attn_case.h: each stored element
// is off by at most half its row's scale). For a softmax row with query q and logit multiplier mul
// (scale times temperature), every logit moves by at most
//   delta = |mul| * ||q||_1 * max_j s_k,j / 2
// (softcap is 1-Lipschitz; ALiBi, masks and sink logits do not depend on K), so every weight p_j
// moves by a factor within [e^{-2 delta}, e^{2 delta}] and, per output element c and for the LSE,
//   |o_c - o_ref,c| <= (e^{2 delta} - 1) * max_j |v_j,c| + max_j s_v,j / 2,   |lse - lse_ref| <= delta,
// against the reference over the unquantized K/V. The kernel's own f32 rounding comes on top of it
// (the ordinary tolerance above, over the dequantized K/V).
double int8_kv_logit_bound(double mul, double q_l1, double k_scale_max);
double int8_kv_out_bound(double logit_bound, double v_abs_max, double v_scale_max);

// int8 K/V decode rounds each query row x (times its logit multiplier mul) to int16 with the step
// max |mul x| / 32767 (core/decode_int8.h): every element is off by at most half a step (0.51 with
// the f32 rounding of the step), so a logit against key k moves by at most
//   delta_q = |mul| * max_i |x_i| * 0.51 / 32767 * ||k||_1,
// and the output and LSE by int8_kv_out_bound(delta_q, max |v|, 0) and delta_q, against attention
// over the same (dequantized) K/V with f32 queries.
double int16_query_logit_bound(double mul, double q_abs_max, double k_l1_max);

// int8 K/V decode also rounds each row's weights of a tile of `tile_keys` keys (softmax weight
// times value scale) to int16 with the step max / 32767 of that row and tile. Each weight is off by
// at most 0.51 steps, and a step is at most the tile's largest weight / 32767, which the row's
// denominator l bounds summed over the tiles; so, with stored values |v| <= 128,
//   |o_c - o'_c| <= tile_keys * 0.51 / 32767 * 128 * max_j s_v,j
// against attention over the same K/V with f32 weights.
double int16_weight_out_bound(int64_t tile_keys, double v_scale_max);

// Checks |got[i] - ref[i]| <= bound[i] for every element; a NaN or infinity that the reference
// does not have fails, as in check_close.
CheckResult check_within(const std::vector<double>& ref, const std::vector<float>& got, const std::vector<double>& bound,
                         const std::string& what);

// Rounds every value to the dtype and back (identity for f32).
void round_to_dtype(std::vector<float>* values, DType t);

}  // namespace attnkit::testing
