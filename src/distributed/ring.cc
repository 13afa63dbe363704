// Ring attention (Liu, Zaharia, Abbeel 2023, "Ring Attention with Blockwise Transformers"): each
// rank keeps its query block and passes key/value blocks around the ring; after R steps every
// query block has met every key block, and the partial results merged by LSE are exact.
//
// One (query piece, key segment) pair is one attnkit::attention call. Its mask is a band of the
// difference between key and query positions, lo <= j - i <= hi (causal and window on global
// positions become constant offsets inside a pair), which plan_pair() expresses with the kernel's
// own options after trimming rows and keys that see nothing.
#include <algorithm>
#include <climits>
#include <cstring>
#include <limits>

#include "distributed/dist_internal.h"

namespace attnkit::dist {
namespace {

using internal::Comm;
using internal::PartialAcc;

constexpr int64_t kUnbounded = std::numeric_limits<int64_t>::max() / 4;

// Visible iff lo <= (key position) - (query index) <= hi; +-kUnbounded: no limit on that side.
struct Band {
  int64_t lo = -kUnbounded, hi = kUnbounded;
};

// The band of the whole problem, on global indices: query i sits at key position i + delta.
Band global_band(const RingParams& p) {
  const AttentionParams& a = p.attn;
  const int64_t delta = a.causal_align == CausalAlign::kBottomRight ? p.seq_kv - p.seq_q : 0;
  Band b;
  if (a.window_left >= 0) b.lo = delta - a.window_left;
  if (a.causal) b.hi = delta;  // window_right is then -1 or 0: the causal limit is the binding one
  else if (a.window_right >= 0) b.hi = delta + a.window_right;
  return b;
}

// One attention call: query rows [a, b) of the piece, keys [s, e) of the segment, with the
// kernel's mask options that give exactly the band on them.
struct PairPlan {
  int64_t a = 0, b = 0, s = 0, e = 0;
  bool causal = false;
  CausalAlign align = CausalAlign::kTopLeft;
  int64_t window_left = -1, window_right = -1;
};

// Returns false when no query of the piece sees any key of the segment (the pair is skipped).
bool plan_pair(Band band, int64_t n_q, int64_t n_k, PairPlan* p) {
  const bool lo_set = band.lo > -kUnbounded, hi_set = band.hi < kUnbounded;
  if (n_q == 0 || n_k == 0 || (lo_set && hi_set && band.lo > band.hi)) return false;
  // Row i sees nothing when i + hi < 0 or i + lo > n_k - 1.
  p->a = hi_set ? std::max<int64_t>(0, -band.hi) : 0;
  p->b = lo_set ? std::min(n_q, n_k - band.lo) : n_q;
  if (p->a >= p->b) return false;
  // Keys seen by some row of [a, b).
  p->s = lo_set ? std::max<int64_t>(0, p->a + band.lo) : 0;
  p->e = hi_set ? std::min(n_k, p->b - 1 + band.hi + 1) : n_k;
  if (p->s >= p->e) return false;
  // The band on the trimmed pair (i' = i - a, j' = j - s). By the trimming lo' <= 0 <= hi', so a
  // top-left anchored window (left = -lo', right = hi') expresses it.
  const int64_t nq = p->b - p->a, nk = p->e - p->s;
  const int64_t lo = lo_set ? band.lo + p->a - p->s : -kUnbounded;
  const int64_t hi = hi_set ? band.hi + p->a - p->s : kUnbounded;
  const bool lo_free = lo <= -(nq - 1), hi_free = hi >= nk - 1;
  p->causal = false;
  p->align = CausalAlign::kTopLeft;
  p->window_left = lo_free ? -1 : -lo;
  p->window_right = hi_free ? -1 : hi;
  // The kernel's causal modes (no window) are the commonest shapes: use them by name.
  if (p->window_left == -1 && p->window_right == 0) {
    p->causal = true;
    p->window_right = -1;
  } else if (p->window_left == -1 && p->window_right == nk - nq) {
    p->causal = true;
    p->align = CausalAlign::kBottomRight;
    p->window_right = -1;
  }
  return true;
}

Status validate_local(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                      float* maybe_lse, const RingParams& p, const Comm& c) {
  const AttentionParams& a = p.attn;
  if (p.seq_q < 1) return Status::invalid_argument("seq_q " + std::to_string(p.seq_q) + " must be >= 1");
  if (p.seq_kv < 1) return Status::invalid_argument("seq_kv " + std::to_string(p.seq_kv) + " must be >= 1");
  if (p.layout != BlockLayout::kContiguous && p.layout != BlockLayout::kZigZag)
    return Status::invalid_argument("layout " + std::to_string(static_cast<int>(p.layout)) + " is not a BlockLayout");
  if (a.normalization != Normalization::kSoftmax)
    return Status::unsupported(std::string("normalization ") + normalization_name(a.normalization) +
                               " is not supported by ring attention; expected softmax (partial results merge by LSE)");
  if (a.n_sink_tokens != 0)
    return Status::unsupported("n_sink_tokens " + std::to_string(a.n_sink_tokens) + " is not supported by ring attention");
  if (a.mask.kind != MaskKind::kNone) return Status::unsupported("custom masks are not supported by ring attention");
  if (a.maybe_alibi_slopes) return Status::unsupported("ALiBi slopes are not supported by ring attention");
  if (a.ssmax_s != 0.0f)
    return Status::unsupported("ssmax_s " + std::to_string(a.ssmax_s) + " is not supported by ring attention");
  if (a.maybe_cu_seqlens_q || a.maybe_cu_seqlens_k)
    return Status::unsupported("variable-length batches (cu_seqlens) are not supported by ring attention");
  if (a.window_left < -1) return Status::invalid_argument("window_left " + std::to_string(a.window_left) + " must be >= -1");
  if (a.window_right < -1) return Status::invalid_argument("window_right " + std::to_string(a.window_right) + " must be >= -1");
  if (a.causal && a.window_right > 0)
    return Status::invalid_argument("window_right " + std::to_string(a.window_right) + " must be -1 or 0 with causal");
  const int64_t lq = block_len(p.seq_q, c.size, c.rank, p.layout), lk = block_len(p.seq_kv, c.size, c.rank, p.layout);
  if (q.seq() != lq)
    return Status::invalid_argument("q seq " + std::to_string(q.seq()) + " must be " + std::to_string(lq) + " (rank " +
                                    std::to_string(c.rank) + "'s block of seq_q " + std::to_string(p.seq_q) + ")");
  if (out.seq() != lq) return Status::invalid_argument("out seq " + std::to_string(out.seq()) + " must be " + std::to_string(lq));
  if (k.seq() != lk || v.seq() != lk)
    return Status::invalid_argument("k/v seq " + std::to_string(k.seq()) + "/" + std::to_string(v.seq()) + " must be " +
                                    std::to_string(lk) + " (rank " + std::to_string(c.rank) + "'s block of seq_kv " +
                                    std::to_string(p.seq_kv) + ")");
  // Shapes, dtypes, GQA and strides: attention()'s own checks on a one-token call.
  AttentionParams shape_only;
  shape_only.scale = a.scale;
  shape_only.softcap = a.softcap;
  const TensorView q1 = internal::seq_slice(q, 0, 1), k1 = internal::seq_slice(k, 0, 1), v1 = internal::seq_slice(v, 0, 1);
  const TensorView o1 = internal::seq_slice(out, 0, 1);
  // A rank with an empty block (more ranks than tokens) is covered by the cross-rank shape check.
  if (lq > 0 && lk > 0) ATTNKIT_RETURN_IF_ERROR(validate_attention(q1, k1, v1, o1, nullptr, shape_only));
  return Status::ok_status();
}

}  // namespace

Status ring_attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                      float* maybe_lse, const RingParams& params, CommStats* maybe_stats) {
  const double t_start = internal::now_seconds();
  Comm c;
  ATTNKIT_RETURN_IF_ERROR(internal::comm_info(params.comm, &c));
  ATTNKIT_RETURN_IF_ERROR(agree(validate_local(q, k, v, out, maybe_lse, params, c), c.comm));
  const AttentionParams& ap = params.attn;
  ATTNKIT_RETURN_IF_ERROR(internal::check_same_on_all_ranks(
      {{"batch", q.batch()}, {"heads_q", q.heads()}, {"heads_kv", k.heads()}, {"head_dim", q.head_dim()},
       {"head_dim_v", v.head_dim()}, {"dtype", static_cast<int64_t>(q.dtype)}, {"seq_q", params.seq_q},
       {"seq_kv", params.seq_kv}, {"layout", static_cast<int64_t>(params.layout)}, {"causal", ap.causal},
       {"causal_align", static_cast<int64_t>(ap.causal_align)}, {"window_left", ap.window_left},
       {"window_right", ap.window_right}, {"sink logits given", ap.maybe_sink_logits != nullptr}},
      c.comm));

  const int R = c.size;
  const int64_t B = q.batch(), hq = q.heads(), hkv = k.heads(), d = q.head_dim(), dv = v.head_dim();
  const DType dt = q.dtype;
  const int64_t es = static_cast<int64_t>(dtype_size(dt));
  const int64_t lq = q.seq();
  const std::vector<Segment> q_segs = block_segments(params.seq_q, R, c.rank, params.layout);
  int64_t max_lk = 0;
  for (int r = 0; r < R; ++r) max_lk = std::max(max_lk, block_len(params.seq_kv, R, r, params.layout));
  auto block_bytes = [&](int r) { return block_len(params.seq_kv, R, r, params.layout) * B * hkv * (d + dv) * es; };
  const int64_t max_bytes = B * max_lk * hkv * (d + dv) * es;
  Status st;
  if (max_bytes > INT_MAX)
    st = Status::unsupported("a key/value block of " + std::to_string(max_bytes) +
                             " bytes exceeds one MPI message (2^31 - 1 bytes); use more ranks");
  ATTNKIT_RETURN_IF_ERROR(agree(st, c.comm));

  // Two buffers: the block being computed on (and forwarded) and the one arriving.
  std::vector<uint8_t> cur(static_cast<size_t>(max_bytes)), nxt(static_cast<size_t>(max_bytes));
  internal::pack_dense(k, cur.data());
  internal::pack_dense(v, cur.data() + internal::dense_bytes(k));

  PartialAcc acc;
  acc.init(B, lq, hq, dv);
  std::vector<float> part_o(static_cast<size_t>(B * lq * hq * dv)), part_lse(static_cast<size_t>(B * hq * lq));
  const Band band = global_band(params);
  CommStats stats;
  const int next = (c.rank + 1) % R, prev = (c.rank + R - 1) % R;

  // Query pieces: the rank's segments cut into a few parts, so that MPI_Testall runs between the
  // attention calls and drives the transfer of the next block while this one is computed.
  constexpr int kPiecesPerSegment = 4;
  struct Piece {
    Segment global;
    int64_t local_begin;
  };
  std::vector<Piece> pieces;
  int64_t local = 0;
  for (const Segment& s : q_segs) {
    const int n = static_cast<int>(std::min<int64_t>(kPiecesPerSegment, std::max<int64_t>(1, s.len)));
    for (int i = 0; i < n; ++i) {
      const int64_t b0 = s.len * i / n, b1 = s.len * (i + 1) / n;
      if (b1 > b0) pieces.push_back({{s.start + b0, b1 - b0}, local + b0});
    }
    local += s.len;
  }

  for (int step = 0; step < R; ++step) {
    const int src = (c.rank - step + R) % R;  // owner of the block in `cur`
    MPI_Request reqs[2];
    int n_reqs = 0;
    if (step + 1 < R) {
      const int64_t send_bytes = block_bytes(src), recv_bytes = block_bytes((src + R - 1) % R);
      MPI_Irecv(nxt.data(), static_cast<int>(recv_bytes), MPI_BYTE, prev, step, c.comm, &reqs[n_reqs++]);
      MPI_Isend(cur.data(), static_cast<int>(send_bytes), MPI_BYTE, next, step, c.comm, &reqs[n_reqs++]);
      stats.bytes_sent += send_bytes;
    }
    const std::vector<Segment> k_segs = block_segments(params.seq_kv, R, src, params.layout);
    const int64_t lk = block_len(params.seq_kv, R, src, params.layout);
    const TensorView kb = internal::dense_view(cur.data(), dt, B, lk, hkv, d);
    const TensorView vb = internal::dense_view(cur.data() + B * lk * hkv * d * es, dt, B, lk, hkv, dv);
    int64_t k_local = 0;
    for (const Segment& ks : k_segs) {
      if (!st.ok()) break;
      for (const Piece& pc : pieces) {
        Band pb;
        // Global band shifted to the pair: j - i = (key - ks.start) - (query - pc.start).
        pb.lo = band.lo > -kUnbounded ? band.lo + pc.global.start - ks.start : -kUnbounded;
        pb.hi = band.hi < kUnbounded ? band.hi + pc.global.start - ks.start : kUnbounded;
        PairPlan plan;
        if (!plan_pair(pb, pc.global.len, ks.len, &plan)) {
          ++stats.blocks_skipped;
          continue;
        }
        ++stats.blocks_computed;
        const int64_t nq = plan.b - plan.a, nk = plan.e - plan.s;
        AttentionParams call = ap;
        call.causal = plan.causal;
        call.causal_align = plan.align;
        call.window_left = plan.window_left;
        call.window_right = plan.window_right;
        call.maybe_sink_logits = nullptr;  // added once, after the ring
        const TensorView qv = internal::seq_slice(q, pc.local_begin + plan.a, nq);
        const TensorView kv = internal::seq_slice(kb, k_local + plan.s, nk);
        const TensorView vv = internal::seq_slice(vb, k_local + plan.s, nk);
        const TensorView ov = internal::dense_view(part_o.data(), DType::kF32, B, nq, hq, dv);
        st = attention(qv, kv, vv, ov, part_lse.data(), call);
        if (!st.ok()) break;
        acc.merge(part_o.data(), part_lse.data(), pc.local_begin + plan.a, nq, ap.num_threads);
        if (n_reqs) {
          int done = 0;
          MPI_Testall(n_reqs, reqs, &done, MPI_STATUSES_IGNORE);
        }
      }
      k_local += ks.len;
    }
    const double t_wait = internal::now_seconds();
    if (n_reqs) MPI_Waitall(n_reqs, reqs, MPI_STATUSES_IGNORE);
    stats.wait_seconds += internal::now_seconds() - t_wait;
    // After a kernel failure (an internal error: the input was validated) the rank keeps
    // forwarding blocks so that no other rank blocks, and the ranks agree below.
    std::swap(cur, nxt);
  }
  const double t_agree = internal::now_seconds();
  ATTNKIT_RETURN_IF_ERROR(agree(st, c.comm));
  stats.wait_seconds += internal::now_seconds() - t_agree;
  if (ap.maybe_sink_logits) acc.merge_sink_logits(ap.maybe_sink_logits);
  acc.store(out, maybe_lse);
  stats.total_seconds = internal::now_seconds() - t_start;
  if (maybe_stats) *maybe_stats = stats;
  return Status::ok_status();
}

}  // namespace attnkit::dist
