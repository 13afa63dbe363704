// Registers the "exact" mechanism: random inputs of the problem's dtype (int8: int8 K/V with
// scales, f32 queries), an f32 output, and a run() that is one attnkit::attention call. FLOP and byte counts come from the shared formulas
// of attention.h so that `attnkit bench` and bench/ agree on every GFLOP/s and GB/s figure.
#include "core/exact_mechanism.h"

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "attnkit/memory.h"
#include "attnkit/registry.h"

namespace attnkit {

int64_t count_visible_pairs(int64_t seq_q, int64_t seq_kv, bool causal, CausalAlign align, int64_t window_left,
                            int64_t window_right, int64_t n_sink_tokens) {
  int64_t total = 0;
  const int64_t offset = align == CausalAlign::kBottomRight ? seq_kv - seq_q : 0;
  for (int64_t i = 0; i < seq_q; ++i) {
    const int64_t pos = i + offset;  // the key position aligned with query row i
    const int64_t hi_c = causal ? std::min(pos, seq_kv - 1) : seq_kv - 1;
    // Window interval, clipped to the keys and to causality.
    const int64_t lo_a = window_left >= 0 ? std::max<int64_t>(pos - window_left, 0) : 0;
    const int64_t hi_a = std::min(window_right >= 0 ? pos + window_right : seq_kv - 1, hi_c);
    // Sink interval: the first n_sink_tokens keys, still subject to causality.
    const int64_t hi_b = std::min(n_sink_tokens - 1, hi_c);
    const int64_t n_a = hi_a >= lo_a ? hi_a - lo_a + 1 : 0;
    const int64_t n_b = hi_b >= 0 ? hi_b + 1 : 0;
    // Both intervals are clipped at hi_c, and B starts at 0, so A n B = [lo_a, min(hi_a, hi_b)].
    const int64_t hi_ab = std::min(hi_a, hi_b);
    const int64_t n_ab = hi_ab >= lo_a ? hi_ab - lo_a + 1 : 0;
    total += n_a + n_b - n_ab;
  }
  return total;
}

double exact_mechanism_flops(int64_t batch, int64_t seq_q, int64_t seq_kv, int64_t heads_q, int64_t head_dim,
                             const AttentionParams& params) {
  const bool plain = params.window_left < 0 && params.window_right < 0 && params.n_sink_tokens == 0 &&
                     (!params.causal || params.causal_align == CausalAlign::kBottomRight);
  if (plain) return attention_flops(batch, seq_q, seq_kv, heads_q, head_dim, head_dim, params.causal);
  // Per visible pair cost from the one shared formula (one query, one key, one head, no mask).
  const double per_pair = attention_flops(1, 1, 1, 1, head_dim, head_dim, false);
  const int64_t pairs = count_visible_pairs(seq_q, seq_kv, params.causal, params.causal_align, params.window_left,
                                            params.window_right, params.n_sink_tokens);
  return per_pair * static_cast<double>(pairs) * static_cast<double>(heads_q) * static_cast<double>(batch);
}

namespace {

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<void, FreeDeleter>;

Status allocate(int64_t bytes, const char* what, Buffer* out) {
  const size_t rounded = ((static_cast<size_t>(bytes) + 63) / 64) * 64;
  void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  if (p == nullptr) {
    return Status::out_of_range(std::string("cannot allocate ") + std::to_string(bytes) + " bytes for " + what);
  }
  out->reset(p);
  return Status::ok_status();
}

// Fills n elements with uniform values in [-1, 1) from a counter-based hash (SplitMix64 finalizer),
// so the result does not depend on the thread count and large K/V caches fill in parallel.
void fill_random(void* data, DType dtype, int64_t n, uint64_t seed, float amplitude = 1.0f) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    uint64_t z = seed + static_cast<uint64_t>(i) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    const float u = static_cast<float>(z >> 40) * (1.0f / 16777216.0f);  // 24 bits -> [0, 1)
    store_from_f32(data, dtype, i, amplitude * (2.0f * u - 1.0f));
  }
}

class ExactRun final : public PreparedRun {
 public:
  ExactRun(const ProblemShape& shape, const AttentionParams& params, bool want_lse)
      : shape_(shape), params_(params), want_lse_(want_lse) {}

  // dtype int8: K and V int8 with one f32 scale per (token, kv head), queries f32 (as the paged
  // KV cache calls the kernel).
  Status init() {
    const DType dt = shape_.dtype;
    const DType qdt = dt == DType::kI8 ? DType::kF32 : dt;
    const int64_t d = shape_.head_dim;
    const int64_t nq = shape_.batch * shape_.seq_q * shape_.heads_q * d;
    const int64_t nkv = shape_.batch * shape_.seq_kv * shape_.heads_kv * d;
    ATTNKIT_RETURN_IF_ERROR(allocate(nq * static_cast<int64_t>(dtype_size(qdt)), "q", &q_buf_));
    ATTNKIT_RETURN_IF_ERROR(allocate(nkv * static_cast<int64_t>(dtype_size(dt)), "k", &k_buf_));
    ATTNKIT_RETURN_IF_ERROR(allocate(nkv * static_cast<int64_t>(dtype_size(dt)), "v", &v_buf_));
    if (dt == DType::kI8) {
      const int64_t ns = shape_.batch * shape_.seq_kv * shape_.heads_kv;
      ATTNKIT_RETURN_IF_ERROR(allocate(2 * ns * 4, "k/v scales", &scale_buf_));
      float* sc = static_cast<float*>(scale_buf_.get());
      // Positive scales in [1, 2) / 254, so the dequantized rows are within [-1, 1] like the float cases.
      fill_random(sc, DType::kF32, 2 * ns, 4);
      for (int64_t i = 0; i < 2 * ns; ++i) sc[i] = (1.5f + 0.5f * sc[i]) / 254.0f;
      params_.k_scales = KvScales::contiguous(sc, shape_.seq_kv, shape_.heads_kv);
      params_.v_scales = KvScales::contiguous(sc + ns, shape_.seq_kv, shape_.heads_kv);
    }
    ATTNKIT_RETURN_IF_ERROR(allocate(nq * 4, "out", &o_buf_));
    if (want_lse_) {
      ATTNKIT_RETURN_IF_ERROR(
          allocate(shape_.batch * shape_.heads_q * shape_.seq_q * 4, "lse", &lse_buf_));
    }
    q_ = TensorView::contiguous(q_buf_.get(), qdt, shape_.batch, shape_.seq_q, shape_.heads_q, d);
    k_ = TensorView::contiguous(k_buf_.get(), dt, shape_.batch, shape_.seq_kv, shape_.heads_kv, d);
    v_ = TensorView::contiguous(v_buf_.get(), dt, shape_.batch, shape_.seq_kv, shape_.heads_kv, d);
    o_ = TensorView::contiguous(o_buf_.get(), DType::kF32, shape_.batch, shape_.seq_q, shape_.heads_q, d);
    ATTNKIT_RETURN_IF_ERROR(validate_attention(q_, k_, v_, o_, lse(), params_));
    const float amplitude = dt == DType::kI8 ? 127.0f : 1.0f;  // int8: the whole symmetric range
    fill_random(q_buf_.get(), qdt, nq, 1);
    fill_random(k_buf_.get(), dt, nkv, 2, amplitude);
    fill_random(v_buf_.get(), dt, nkv, 3, amplitude);
    return Status::ok_status();
  }

  Status run() override {
    // Peak scratch of this call alone: reset the high-water mark to what is held now.
    const int64_t before = scratch_current_bytes();
    scratch_reset_peak();
    Status s = attention(q_, k_, v_, o_, lse(), params_);
    extra_bytes_ = std::max(extra_bytes_, scratch_peak_bytes() - before);
    return s;
  }

  double flops() const override {
    return exact_mechanism_flops(shape_.batch, shape_.seq_q, shape_.seq_kv, shape_.heads_q, shape_.head_dim,
                                 params_);
  }
  double bytes() const override {
    const int64_t d = shape_.head_dim;
    const double bytes = attention_bytes(shape_.batch, shape_.seq_q, shape_.seq_kv, shape_.heads_q, shape_.heads_kv, d,
                                         d, dtype_size(shape_.dtype), 4);
    if (shape_.dtype != DType::kI8) return bytes;
    // int8: Q is f32 (3 more bytes per element than counted) and each (token, kv head) adds a K and
    // a V scale.
    return bytes + 3.0 * static_cast<double>(shape_.batch * shape_.seq_q * shape_.heads_q * d) +
           8.0 * static_cast<double>(shape_.batch * shape_.seq_kv * shape_.heads_kv);
  }
  int64_t extra_bytes() const override { return extra_bytes_; }

 private:
  float* lse() const { return want_lse_ ? static_cast<float*>(lse_buf_.get()) : nullptr; }

  ProblemShape shape_;
  AttentionParams params_;
  bool want_lse_;
  Buffer q_buf_, k_buf_, v_buf_, o_buf_, lse_buf_, scale_buf_;
  TensorView q_, k_, v_, o_;
  int64_t extra_bytes_ = 0;
};

Status prepare_exact(const ProblemShape& shape, const MechanismParams& p, std::unique_ptr<PreparedRun>* out) {
  ATTNKIT_RETURN_IF_ERROR(check_problem_shape(shape));
  AttentionParams params;
  params.causal = shape.causal;
  params.num_threads = shape.threads;
  int64_t sinks = 0;
  double softcap = 0.0;
  bool want_lse = false;
  ATTNKIT_RETURN_IF_ERROR(param_int(p, "window_left", &params.window_left));
  ATTNKIT_RETURN_IF_ERROR(param_int(p, "window_right", &params.window_right));
  ATTNKIT_RETURN_IF_ERROR(param_int(p, "sinks", &sinks));
  ATTNKIT_RETURN_IF_ERROR(param_float(p, "softcap", &softcap));
  ATTNKIT_RETURN_IF_ERROR(param_bool(p, "lse", &want_lse));
  if (params.window_left < -1) {
    return Status::invalid_argument("parameter window_left=" + p.at("window_left") + " is not supported; expected -1 or >= 0");
  }
  if (params.window_right < -1) {
    return Status::invalid_argument("parameter window_right=" + p.at("window_right") + " is not supported; expected -1 or >= 0");
  }
  if (sinks < 0) return Status::invalid_argument("parameter sinks=" + p.at("sinks") + " is not supported; expected >= 0");
  if (softcap < 0) return Status::invalid_argument("parameter softcap=" + p.at("softcap") + " is not supported; expected >= 0");
  params.n_sink_tokens = sinks;
  params.softcap = static_cast<float>(softcap);
  ATTNKIT_RETURN_IF_ERROR(param_enum(p, "normalization", &params.normalization));
  ATTNKIT_RETURN_IF_ERROR(param_enum(p, "path", &params.path));
  ATTNKIT_RETURN_IF_ERROR(param_enum(p, "causal_align", &params.causal_align));
  if (want_lse && params.normalization != Normalization::kSoftmax) {
    return Status::invalid_argument("parameter lse=" + p.at("lse") + " needs normalization=softmax (LSE is defined for softmax only)");
  }
  auto run = std::make_unique<ExactRun>(shape, params, want_lse);
  ATTNKIT_RETURN_IF_ERROR(run->init());
  *out = std::move(run);
  return Status::ok_status();
}

Mechanism make_exact() {
  Mechanism m;
  m.name = "exact";
  m.family = "exact";
  m.description = "Dense attention (tiled online-softmax kernel; split-KV decode path for short queries)";
  m.params = {
      {"window_left", "-1", "sliding window: keys at most this far before the query (inclusive; -1 = unbounded)"},
      {"window_right", "-1", "sliding window: keys at most this far after the query (-1 = unbounded; 0 or -1 with causal)"},
      {"sinks", "0", "n_sink_tokens: always-visible prefix of keys"},
      {"softcap", "0", "logit soft-capping c*tanh(s/c) (0 = off)"},
      {"normalization", "softmax", enum_choices<Normalization>()},
      {"path", "auto", enum_choices<ExecPath>() + " (force the prefill or split-KV decode path)"},
      {"causal_align", "bottom_right", enum_choices<CausalAlign>() + " alignment of the causal mask"},
      {"lse", "false", "also write the log-sum-exp output (softmax only)"},
  };
  m.prepare = prepare_exact;
  return m;
}

}  // namespace

ATTNKIT_REGISTER_MECHANISM(make_exact);

}  // namespace attnkit
