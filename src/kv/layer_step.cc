// kv_layer_step: one layer's step under a policy (append, select, attend, mass, decide, apply).
//
// Position shift (StreamingLLM, Xiao et al. 2023, "Efficient Streaming Language Models with
// Attention Sinks", pos_shift): attention should see each cached key at its index in the cache,
// not at its original position. Keys stay rotated by their absolute position in the cache; the
// slots fall into runs whose offset delta = position - slot is constant (for sinks + recent window:
// two runs), and each run is attended with the queries rotated by (slot_q - p_q + delta), which
// gives every (query, key) pair the relative angle (slot_q - slot_k) exactly. The runs' partial
// results merge through their LSE. Keys are never re-rotated, so bf16/int8 storage accumulates no
// rotation error.
#include <cmath>
#include <string>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/kv_cache.h"

namespace attnkit::kv {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

void rotate(float* x, int64_t d, double angle_pos, const double* inv_freq) {
  const int64_t half = d / 2;
  for (int64_t i = 0; i < half; ++i) {
    const double a = angle_pos * inv_freq[i];
    const float c = static_cast<float>(std::cos(a)), s = static_cast<float>(std::sin(a));
    const float x0 = x[i], x1 = x[i + half];
    x[i] = x0 * c - x1 * s;
    x[i + half] = x0 * s + x1 * c;
  }
}

Status attend_shifted(const PagedKvCache& cache, const KvStepInput& in, const CacheAttentionParams& ap) {
  if (!cache.compensation(in.seq).empty())
    return Status::unsupported("kv_layer_step: position shift with a compensation entry is not supported");
  if (in.maybe_rope_inv_freq == nullptr)
    return Status::invalid_argument("kv_layer_step: the policy shifts positions but maybe_rope_inv_freq is null");
  const std::vector<int64_t>& pos = cache.positions(in.seq);
  const int64_t size = static_cast<int64_t>(pos.size()), n = in.n, H = in.heads_q;
  const int64_t D = cache.options().head_dim, DV = cache.options().head_dim_v;
  // Runs of constant delta = position - slot.
  std::vector<KvSlotRange> runs;
  for (int64_t s = 0; s < size; ++s) {
    if (!runs.empty() && pos[static_cast<size_t>(s)] - s == pos[static_cast<size_t>(runs.back().begin)] - runs.back().begin) {
      runs.back().end = s + 1;
    } else {
      runs.push_back({s, s + 1});
    }
  }
  std::vector<float> qr(static_cast<size_t>(n * H * D)), o_run(static_cast<size_t>(n * H * DV)), lse_run(static_cast<size_t>(H * n));
  std::vector<float> lse(static_cast<size_t>(H * n), kNegInf);
  std::fill(in.out, in.out + n * H * DV, 0.0f);
  for (const KvSlotRange& run : runs) {
    const int64_t delta = pos[static_cast<size_t>(run.begin)] - run.begin;
    CacheAttentionParams p = ap;
    p.slot_ranges.clear();
    // Intersect the run with the policy's selection (if any).
    if (ap.slot_ranges.empty()) {
      p.slot_ranges.push_back(run);
    } else {
      for (const KvSlotRange& r : ap.slot_ranges) {
        const int64_t a = std::max(r.begin, run.begin), b = std::min(r.end, run.end);
        if (a < b) p.slot_ranges.push_back({a, b});
      }
      if (p.slot_ranges.empty()) continue;
    }
    for (int64_t i = 0; i < n; ++i) {
      const int64_t slot_q = size - n + i;
      const double shift = static_cast<double>(slot_q - in.positions[i] + delta);
      for (int64_t h = 0; h < H; ++h) {
        float* x = qr.data() + (i * H + h) * D;
        std::copy(in.q + (i * H + h) * D, in.q + (i * H + h + 1) * D, x);
        if (shift != 0) rotate(x, D, shift, in.maybe_rope_inv_freq);
      }
    }
    const TensorView qv = TensorView::contiguous(qr.data(), DType::kF32, 1, n, H, D);
    const TensorView ov = TensorView::contiguous(o_run.data(), DType::kF32, 1, n, H, DV);
    ATTNKIT_RETURN_IF_ERROR(attend_cache(cache, in.seq, qv, in.positions, p, ov, lse_run.data()));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t h = 0; h < H; ++h)
        merge_state_row(in.out + (i * H + h) * DV, &lse[static_cast<size_t>(h * n + i)], o_run.data() + (i * H + h) * DV,
                        lse_run[static_cast<size_t>(h * n + i)], DV);
  }
  return Status::ok_status();
}

}  // namespace

Status kv_layer_step(KvPolicy* policy, PagedKvCache* cache, const KvStepInput& in) {
  if (cache == nullptr) return Status::invalid_argument("kv_layer_step: cache is null");
  if (in.n <= 0) return Status::invalid_argument("kv_layer_step: n " + std::to_string(in.n) + " must be >= 1");
  if (in.q == nullptr || in.k == nullptr || in.v == nullptr || in.out == nullptr || in.positions == nullptr)
    return Status::invalid_argument("kv_layer_step: positions, q, k, v and out must not be null");
  const KvCacheOptions& o = cache->options();
  const int64_t H = in.heads_q, HK = o.kv_heads, D = o.head_dim, DV = o.head_dim_v;
  if (H <= 0 || H % HK != 0)
    return Status::invalid_argument("kv_layer_step: heads_q " + std::to_string(H) + " is not a multiple of kv_heads " + std::to_string(HK));
  const bool active = policy != nullptr && policy->applies_to(in.layer, in.is_global);
  ATTNKIT_RETURN_IF_ERROR(cache->append(in.seq, in.n, in.positions, in.k, in.v));

  KvStep step;
  step.layer = in.layer;
  step.n_layers = in.n_layers;
  step.is_global = in.is_global;
  step.window_left = in.attn.window_left;
  step.cache = cache;
  step.seq = in.seq;
  step.size = cache->size(in.seq);
  step.n_new = in.n;
  step.positions = cache->positions(in.seq).data();
  step.seen = in.positions[in.n - 1] + 1;
  step.heads_q = H;
  step.kv_heads = HK;
  step.head_dim = D;
  step.head_dim_v = DV;
  step.scale = in.attn.scale > 0 ? in.attn.scale : 1.0f / std::sqrt(static_cast<float>(D));
  step.q = in.q;

  CacheAttentionParams ap = in.attn;
  ap.slot_ranges.clear();
  if (active) ATTNKIT_RETURN_IF_ERROR(policy->select(step, &ap.slot_ranges));
  const TensorView qv = TensorView::contiguous(const_cast<float*>(in.q), DType::kF32, 1, in.n, H, D);
  const TensorView ov = TensorView::contiguous(in.out, DType::kF32, 1, in.n, H, DV);
  if (active && policy->shift_positions()) {
    ATTNKIT_RETURN_IF_ERROR(attend_shifted(*cache, in, ap));
  } else {
    ATTNKIT_RETURN_IF_ERROR(attend_cache(*cache, in.seq, qv, in.positions, ap, ov, nullptr));
  }
  if (!active) return Status::ok_status();

  const KvNeeds needs = policy->needs(in.layer);
  std::vector<float> mass;
  if (needs.mass_rows != 0) {
    const int64_t rows = needs.mass_rows < 0 ? in.n : std::min(in.n, needs.mass_rows);
    mass.resize(static_cast<size_t>(HK * step.size));
    ATTNKIT_RETURN_IF_ERROR(attention_mass(*cache, in.seq, qv, in.positions, in.n - rows, ap, mass.data()));
    step.maybe_mass = mass.data();
    step.mass_rows = rows;
  }
  KvDecision d;
  ATTNKIT_RETURN_IF_ERROR(policy->on_step(step, &d));
  if (d.set_compensation) ATTNKIT_RETURN_IF_ERROR(cache->set_compensation(in.seq, std::move(d.compensation)));
  if (d.evict) {
    Status st = cache->retain(in.seq, d.keep);
    if (!st.ok()) return Status(st.code(), policy->name() + ": " + st.message());
  }
  return Status::ok_status();
}

}  // namespace attnkit::kv
