// Star Attention (Acharya, Jia, Ginsburg 2024, "Star Attention: Efficient LLM Inference over Long
// Sequences"). Phase 1 encodes each context block locally with the anchor block in front of it,
// which stands in for the attention sink the block would otherwise lack; phase 2 is exact: the
// query's partial results over every block combine by their LSE, in one MPI reduction whose
// operation is merge_state_row.
#include <algorithm>

#include "distributed/dist_internal.h"

namespace attnkit::dist {
namespace {

using internal::Comm;
using internal::PartialAcc;

Status check_star_params(const StarParams& p) {
  const AttentionParams& a = p.attn;
  if (p.seq_ctx < 1) return Status::invalid_argument("seq_ctx " + std::to_string(p.seq_ctx) + " must be >= 1");
  if (p.anchor_len < 0) return Status::invalid_argument("anchor_len " + std::to_string(p.anchor_len) + " must be >= 0");
  if (a.normalization != Normalization::kSoftmax)
    return Status::unsupported(std::string("normalization ") + normalization_name(a.normalization) +
                               " is not supported by Star Attention; expected softmax");
  if (a.window_left != -1 || a.window_right != -1 || a.n_sink_tokens != 0 || a.maybe_sink_logits ||
      a.mask.kind != MaskKind::kNone || a.maybe_alibi_slopes || a.ssmax_s != 0.0f || a.maybe_cu_seqlens_q ||
      a.maybe_cu_seqlens_k)
    return Status::unsupported(
        "Star Attention supports causal, scale, softcap and head temperature only (window, sinks, custom masks, "
        "ALiBi, Scalable-Softmax and cu_seqlens are refused)");
  return Status::ok_status();
}

Status attend_into(const TensorView& q, const TensorView& k, const TensorView& v, bool causal, const AttentionParams& base,
                   PartialAcc* acc, std::vector<float>* part_o, std::vector<float>* part_lse) {
  if (q.seq() == 0 || k.seq() == 0) return Status::ok_status();
  AttentionParams call = base;
  call.causal = causal;
  call.causal_align = CausalAlign::kBottomRight;
  const TensorView ov = internal::dense_view(part_o->data(), DType::kF32, q.batch(), q.seq(), q.heads(), v.head_dim());
  ATTNKIT_RETURN_IF_ERROR(attention(q, k, v, ov, part_lse->data(), call));
  acc->merge(part_o->data(), part_lse->data(), 0, q.seq(), base.num_threads);
  return Status::ok_status();
}

}  // namespace

Status star_context(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                    float* maybe_lse, const StarParams& params, CommStats* maybe_stats) {
  const double t_start = internal::now_seconds();
  Comm c;
  ATTNKIT_RETURN_IF_ERROR(internal::comm_info(params.comm, &c));
  const int64_t first_len = block_len(params.seq_ctx, c.size, 0, BlockLayout::kContiguous);
  const int64_t anchor = params.anchor_len > 0 ? params.anchor_len : first_len;
  Status st = check_star_params(params);
  const int64_t lc = block_len(params.seq_ctx, c.size, c.rank, BlockLayout::kContiguous);
  if (st.ok() && anchor > first_len)
    st = Status::invalid_argument("anchor_len " + std::to_string(anchor) + " exceeds the first block (" +
                                  std::to_string(first_len) + " tokens)");
  if (st.ok() && (q.seq() != lc || k.seq() != lc || v.seq() != lc || out.seq() != lc))
    st = Status::invalid_argument("q/k/v/out seq " + std::to_string(q.seq()) + "/" + std::to_string(k.seq()) + "/" +
                                  std::to_string(v.seq()) + "/" + std::to_string(out.seq()) + " must all be " +
                                  std::to_string(lc) + " (rank " + std::to_string(c.rank) + "'s block of seq_ctx " +
                                  std::to_string(params.seq_ctx) + ")");
  if (st.ok() && lc > 0) {
    AttentionParams shape_only;
    st = validate_attention(internal::seq_slice(q, 0, 1), internal::seq_slice(k, 0, 1), internal::seq_slice(v, 0, 1),
                            internal::seq_slice(out, 0, 1), nullptr, shape_only);
  }
  ATTNKIT_RETURN_IF_ERROR(agree(st, c.comm));
  ATTNKIT_RETURN_IF_ERROR(internal::check_same_on_all_ranks(
      {{"batch", q.batch()}, {"heads_q", q.heads()}, {"heads_kv", k.heads()}, {"head_dim", q.head_dim()},
       {"head_dim_v", v.head_dim()}, {"dtype", static_cast<int64_t>(q.dtype)}, {"seq_ctx", params.seq_ctx},
       {"anchor_len", params.anchor_len}, {"causal", params.attn.causal}},
      c.comm));

  const int64_t B = q.batch(), hq = q.heads(), hkv = k.heads(), d = q.head_dim(), dv = v.head_dim();
  const DType dt = q.dtype;
  const int64_t es = static_cast<int64_t>(dtype_size(dt));
  // The anchor's keys and values, from rank 0 (every rank computes them in the paper; here they
  // are the first rank's input).
  std::vector<uint8_t> anchor_kv(static_cast<size_t>(B * anchor * hkv * (d + dv) * es));
  if (c.rank == 0) {
    internal::pack_dense(internal::seq_slice(k, 0, anchor), anchor_kv.data());
    internal::pack_dense(internal::seq_slice(v, 0, anchor), anchor_kv.data() + B * anchor * hkv * d * es);
  }
  CommStats stats;
  double t0 = internal::now_seconds();
  MPI_Bcast(anchor_kv.data(), static_cast<int>(anchor_kv.size()), MPI_BYTE, 0, c.comm);
  stats.wait_seconds += internal::now_seconds() - t0;
  if (c.rank == 0) stats.bytes_sent += static_cast<int64_t>(anchor_kv.size());

  PartialAcc acc;
  acc.init(B, lc, hq, dv);
  std::vector<float> part_o(static_cast<size_t>(B * lc * hq * dv)), part_lse(static_cast<size_t>(B * hq * lc));
  if (c.rank > 0) {
    const TensorView ak = internal::dense_view(anchor_kv.data(), dt, B, anchor, hkv, d);
    const TensorView av = internal::dense_view(anchor_kv.data() + B * anchor * hkv * d * es, dt, B, anchor, hkv, dv);
    st = attend_into(q, ak, av, /*causal=*/false, params.attn, &acc, &part_o, &part_lse);  // anchor precedes the block
  }
  if (st.ok()) st = attend_into(q, k, v, params.attn.causal, params.attn, &acc, &part_o, &part_lse);
  t0 = internal::now_seconds();
  ATTNKIT_RETURN_IF_ERROR(agree(st, c.comm));
  stats.wait_seconds += internal::now_seconds() - t0;
  acc.store(out, maybe_lse);
  stats.total_seconds = internal::now_seconds() - t_start;
  stats.blocks_computed = c.rank > 0 ? 2 : 1;
  if (maybe_stats) *maybe_stats = stats;
  return Status::ok_status();
}

Status star_query(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& k_ctx,
                  const TensorView& v_ctx, const TensorView& out, float* maybe_lse, const StarParams& params,
                  CommStats* maybe_stats) {
  const double t_start = internal::now_seconds();
  Comm c;
  ATTNKIT_RETURN_IF_ERROR(internal::comm_info(params.comm, &c));
  Status st = check_star_params(params);
  const int64_t lc = block_len(params.seq_ctx, c.size, c.rank, BlockLayout::kContiguous);
  const int64_t nq = q.seq();
  if (st.ok() && (nq < 1 || k.seq() != nq || v.seq() != nq || out.seq() != nq))
    st = Status::invalid_argument("query q/k/v/out seq " + std::to_string(nq) + "/" + std::to_string(k.seq()) + "/" +
                                  std::to_string(v.seq()) + "/" + std::to_string(out.seq()) +
                                  " must be equal and >= 1");
  if (st.ok() && (k_ctx.seq() != lc || v_ctx.seq() != lc))
    st = Status::invalid_argument("k_ctx/v_ctx seq " + std::to_string(k_ctx.seq()) + "/" + std::to_string(v_ctx.seq()) +
                                  " must be " + std::to_string(lc) + " (rank " + std::to_string(c.rank) +
                                  "'s block of seq_ctx " + std::to_string(params.seq_ctx) + ")");
  if (st.ok()) st = validate_attention(q, k, v, out, nullptr, AttentionParams());
  if (st.ok() && lc > 0)
    st = validate_attention(q, internal::seq_slice(k_ctx, 0, 1), internal::seq_slice(v_ctx, 0, 1), out, nullptr,
                            AttentionParams());
  ATTNKIT_RETURN_IF_ERROR(agree(st, c.comm));
  ATTNKIT_RETURN_IF_ERROR(internal::check_same_on_all_ranks(
      {{"batch", q.batch()}, {"heads_q", q.heads()}, {"heads_kv", k.heads()}, {"head_dim", q.head_dim()},
       {"head_dim_v", v.head_dim()}, {"dtype", static_cast<int64_t>(q.dtype)}, {"seq_ctx", params.seq_ctx},
       {"query seq", nq}, {"causal", params.attn.causal}},
      c.comm));

  const int64_t B = q.batch(), hq = q.heads(), dv = v.head_dim();
  PartialAcc acc;
  acc.init(B, nq, hq, dv);
  std::vector<float> part_o(static_cast<size_t>(B * nq * hq * dv)), part_lse(static_cast<size_t>(B * hq * nq));
  // The whole context precedes the query: every context key is visible to every query token.
  st = attend_into(q, k_ctx, v_ctx, /*causal=*/false, params.attn, &acc, &part_o, &part_lse);
  // The query's own keys are counted once, on the last rank (the one that holds the context's end).
  if (st.ok() && c.rank == c.size - 1) st = attend_into(q, k, v, params.attn.causal, params.attn, &acc, &part_o, &part_lse);
  CommStats stats;
  const double t0 = internal::now_seconds();
  ATTNKIT_RETURN_IF_ERROR(agree(st, c.comm));
  stats.wait_seconds += internal::now_seconds() - t0;
  internal::allreduce_merge_rows(acc.o.data(), acc.lse.data(), B, nq, hq, dv, c.comm, &stats);
  acc.store(out, maybe_lse);
  stats.total_seconds = internal::now_seconds() - t_start;
  stats.blocks_computed = (lc > 0 ? 1 : 0) + (c.rank == c.size - 1 ? 1 : 0);
  if (maybe_stats) *maybe_stats = stats;
  return Status::ok_status();
}

namespace internal {

namespace {
// (output, LSE) rows of the reduction: one MPI element is [lse, o_0 .. o_{dim-1}].
void merge_rows_op(void* in, void* inout, int* len, MPI_Datatype* type) {
  int bytes = 0;
  MPI_Type_size(*type, &bytes);
  const int64_t width = bytes / static_cast<int>(sizeof(float));
  auto* acc = static_cast<float*>(inout);
  const auto* part = static_cast<const float*>(in);
  for (int64_t i = 0; i < *len; ++i) {
    float* a = acc + i * width;
    const float* b = part + i * width;
    merge_state_row(a + 1, a, b + 1, b[0], width - 1);
  }
}
}  // namespace

void allreduce_merge_rows(float* o, float* lse, int64_t B, int64_t S, int64_t H, int64_t dim, MPI_Comm comm,
                          CommStats* stats) {
  const int64_t width = dim + 1, rows = B * S * H;
  std::vector<float> buf(static_cast<size_t>(rows * width));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s = 0; s < S; ++s)
      for (int64_t h = 0; h < H; ++h) {
        float* r = buf.data() + ((b * S + s) * H + h) * width;
        r[0] = lse[(b * H + h) * S + s];
        std::copy(o + ((b * S + s) * H + h) * dim, o + ((b * S + s) * H + h + 1) * dim, r + 1);
      }
  const double t0 = now_seconds();
  MPI_Datatype row_type;
  MPI_Type_contiguous(static_cast<int>(width), MPI_FLOAT, &row_type);
  MPI_Type_commit(&row_type);
  MPI_Op op;
  MPI_Op_create(&merge_rows_op, /*commute=*/1, &op);
  MPI_Allreduce(MPI_IN_PLACE, buf.data(), static_cast<int>(rows), row_type, op, comm);
  MPI_Op_free(&op);
  MPI_Type_free(&row_type);
  stats->wait_seconds += now_seconds() - t0;
  stats->bytes_sent += static_cast<int64_t>(buf.size() * sizeof(float));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s = 0; s < S; ++s)
      for (int64_t h = 0; h < H; ++h) {
        const float* r = buf.data() + ((b * S + s) * H + h) * width;
        lse[(b * H + h) * S + s] = r[0];
        std::copy(r + 1, r + width, o + ((b * S + s) * H + h) * dim);
      }
}

}  // namespace internal

Status allreduce_merge(float* o, float* lse, int64_t batch, int64_t seq, int64_t heads, int64_t dim, MPI_Comm comm,
                       CommStats* maybe_stats) {
  const double t_start = internal::now_seconds();
  Comm c;
  ATTNKIT_RETURN_IF_ERROR(internal::comm_info(comm, &c));
  Status st;
  if (batch < 0 || seq < 0 || heads < 0 || dim < 1)
    st = Status::invalid_argument("allreduce_merge: shape [" + std::to_string(batch) + ", " + std::to_string(seq) + ", " +
                                  std::to_string(heads) + ", " + std::to_string(dim) +
                                  "] is invalid; expected batch, seq, heads >= 0 and dim >= 1");
  else if ((o == nullptr || lse == nullptr) && batch * seq * heads > 0)
    st = Status::invalid_argument("allreduce_merge: o or lse is null");
  ATTNKIT_RETURN_IF_ERROR(agree(st, c.comm));
  ATTNKIT_RETURN_IF_ERROR(internal::check_same_on_all_ranks(
      {{"batch", batch}, {"seq", seq}, {"heads", heads}, {"dim", dim}}, c.comm));
  CommStats stats;
  if (batch * seq * heads > 0) internal::allreduce_merge_rows(o, lse, batch, seq, heads, dim, c.comm, &stats);
  stats.total_seconds = internal::now_seconds() - t_start;
  if (maybe_stats) *maybe_stats = stats;
  return Status::ok_status();
}

}  // namespace attnkit::dist
