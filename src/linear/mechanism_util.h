// What the linear family's registry entries share (internal): random inputs, the shape check,
// and a run that times one function call. Each mechanism registers in its own file.
#pragma once

#include <functional>
#include <random>
#include <string>
#include <vector>

#include "attnkit/linear.h"
#include "attnkit/registry.h"

namespace attnkit::linear_internal {

inline void fill_uniform(std::vector<float>& v, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (float& x : v) x = u(rng);
}

// The common checks, and the linear mechanisms' own: queries are the last seq_q of seq_kv tokens.
inline Status check_linear_shape(const ProblemShape& s) {
  ATTNKIT_RETURN_IF_ERROR(check_problem_shape(s));
  if (s.seq_q > s.seq_kv)
    return Status::invalid_argument("seq_q " + std::to_string(s.seq_q) + " > seq_kv " + std::to_string(s.seq_kv) +
                                    " is not supported by linear mechanisms (queries are the last seq_q tokens)");
  return Status::ok_status();
}

inline Status read_qk_dim(const MechanismParams& mp, int64_t* qk) {
  ATTNKIT_RETURN_IF_ERROR(param_int(mp, "qk_dim", qk));
  if (*qk < 1 || *qk > 64) return Status::invalid_argument("parameter qk_dim=" + mp.at("qk_dim") + " is not supported; expected 1..64");
  return Status::ok_status();
}

class FnRun final : public PreparedRun {
 public:
  std::function<Status()> fn;
  double f = 0, b = 0;
  int64_t extra = 0;
  Status run() override { return fn(); }
  double flops() const override { return f; }
  double bytes() const override { return b; }
  int64_t extra_bytes() const override { return extra; }
};

// Shared input block for the non-engine mechanisms (heads_q heads everywhere).
struct Inputs {
  std::vector<float> q, k, v, o;
  TensorView qv, kv, vv, ov;
  void make(int64_t B, int64_t T, int64_t H, int64_t d, int64_t dv) {
    q.resize(static_cast<size_t>(B * T * H * d));
    k.resize(q.size());
    v.resize(static_cast<size_t>(B * T * H * dv));
    o.resize(v.size());
    fill_uniform(q, 1);
    fill_uniform(k, 2);
    fill_uniform(v, 3);
    qv = TensorView::contiguous(q.data(), DType::kF32, B, T, H, d);
    kv = TensorView::contiguous(k.data(), DType::kF32, B, T, H, d);
    vv = TensorView::contiguous(v.data(), DType::kF32, B, T, H, dv);
    ov = TensorView::contiguous(o.data(), DType::kF32, B, T, H, dv);
  }
  double io_bytes() const { return 4.0 * static_cast<double>(q.size() + k.size() + v.size() + o.size()); }
};

}  // namespace attnkit::linear_internal
