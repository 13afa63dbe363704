// Block-sparse and gather attention on the core tile kernel.
//
// Each (sequence, query head, query block) becomes one unit of work: its key blocks turn into
// KvSpans (adjacent blocks with the same full/partial kind merged, so the kernel walks long runs
// in 64-key tiles), its gathered columns into one indexed span. With both present, the two parts
// run as partial states and are merged through their LSE (merge_state_row), so the result is the
// softmax over the union. Work is proportional to the blocks visited: the kernel never sees the
// skipped blocks.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "attnkit/sparse.h"
#include "sparse/sparse_internal.h"

namespace attnkit {
namespace sparse_internal {

Status check_sparse_call(const core::Call& call, const char* what) {
  if (call.cu_q != nullptr || call.cu_k != nullptr) {
    return Status::unsupported(std::string(what) + ": variable-length batches (cu_seqlens) are not supported");
  }
  if (call.p.normalization != Normalization::kSoftmax) {
    return Status::unsupported(std::string(what) + ": normalization " + normalization_name(call.p.normalization) +
                               " is not supported; sparse parts merge through LSE, so softmax only");
  }
  return Status::ok_status();
}

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Per-thread buffers of the two-part path.
struct ThreadScratch {
  core::Workspace ws;
  std::vector<core::KvSpan> spans;
  std::vector<float> o_a, o_b, lse_a, lse_b;
};

// Runs one unit; the result goes either to the call's output (final rows) or into
// (o_dst, lse_dst) laid out [rows of the unit, dv] when o_dst is set.
void run_unit(const core::Call& call, const ListWork& w, ThreadScratch* ts, float* o_dst, float* lse_dst) {
  const int64_t rows = w.row_end - w.row_begin;
  if (rows <= 0) return;
  const int64_t dv = call.head_dim_v;
  const bool has_spans = w.n_spans > 0, has_idx = w.n_indices > 0;
  core::BlockJob job;
  job.seq = w.seq;
  job.head_q = w.head;
  job.n_heads = 1;
  job.row_begin = w.row_begin;
  job.row_end = w.row_end;
  core::KvSpan idx_span{0, w.n_indices, w.maybe_index_mask == nullptr};
  if (!(has_spans && has_idx) && o_dst == nullptr) {
    // One part (or none: the kernel then writes 0 and LSE -inf): write final rows directly.
    if (has_idx) {
      job.spans = &idx_span;
      job.n_spans = 1;
      job.maybe_kv_indices = w.indices;
      job.maybe_extra_mask = w.maybe_index_mask;
    } else {
      job.spans = w.spans;
      job.n_spans = w.n_spans;
      job.maybe_extra_mask = w.maybe_span_mask;
    }
    core::attend_block(call, job, &ts->ws);
    return;
  }
  job.include_sink_logit = false;
  ts->o_a.resize(rows * dv);
  ts->lse_a.resize(rows);
  ts->o_b.resize(rows * dv);
  ts->lse_b.resize(rows);
  core::PartialOut pa{ts->o_a.data(), ts->lse_a.data()};
  core::PartialOut pb{ts->o_b.data(), ts->lse_b.data()};
  // Part A: block spans (possibly none).
  job.spans = w.spans;
  job.n_spans = w.n_spans;
  job.maybe_extra_mask = w.maybe_span_mask;
  job.maybe_partial = &pa;
  core::attend_block(call, job, &ts->ws);
  if (has_idx) {
    job.spans = &idx_span;
    job.n_spans = 1;
    job.maybe_kv_indices = w.indices;
    job.maybe_extra_mask = w.maybe_index_mask;
    job.maybe_partial = &pb;
    core::attend_block(call, job, &ts->ws);
    for (int64_t r = 0; r < rows; ++r) {
      merge_state_row(ts->o_a.data() + r * dv, &ts->lse_a[r], ts->o_b.data() + r * dv, ts->lse_b[r], dv);
    }
  }
  const core::SeqRange range = call.seq(w.seq);
  for (int64_t r = 0; r < rows; ++r) {
    if (o_dst) {
      std::copy(ts->o_a.data() + r * dv, ts->o_a.data() + (r + 1) * dv, o_dst + r * dv);
      lse_dst[r] = ts->lse_a[r];
    } else {
      core::write_final_row(call, range, w.head, w.row_begin + r, ts->o_a.data() + r * dv, ts->lse_a[r], true);
    }
  }
}

}  // namespace

void run_work(const core::Call& call, int64_t n_work, const FillWork& fill) {
  run_work_partial(call, n_work, fill, nullptr, nullptr, 0);
}

void run_work_partial(const core::Call& call, int64_t n_work, const FillWork& fill, float* o_partial,
                      float* lse_partial, int64_t rows) {
  const int64_t dv = call.head_dim_v;
#pragma omp parallel num_threads(call.threads)
  {
    ThreadScratch ts;
    ListWork w;
    // Reverse order: under causality the last query blocks are the heaviest; starting with them
    // keeps the dynamic schedule from ending on a long unit.
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < n_work; ++t) {
      const int64_t u = n_work - 1 - t;
      ts.spans.clear();
      w = ListWork{};
      fill(u, &ts.spans, &w);
      if (o_partial == nullptr) {  // final output written by the kernel
        run_unit(call, w, &ts, nullptr, nullptr);
        continue;
      }
      const int64_t base = w.head * rows + w.row_begin;
      run_unit(call, w, &ts, o_partial + base * dv, lse_partial + base);
    }
  }
}

}  // namespace sparse_internal

using namespace sparse_internal;

namespace {

// The kernel asks for one element at a time, row by row within a tile. Each thread keeps the
// current row's verdicts for the next kTileK keys (filled by one visible_row() call), so a
// pattern computes its per-row quantities once per row and tile instead of once per element.
// The memos live in the context, one per OpenMP thread (cache-line aligned), which avoids a
// thread_local lookup (__tls_get_addr in a shared library) on every element.
struct alignas(64) RowMemo {
  int64_t s = -1, h = -1, i = -1, k0 = 0, k1 = 0;
  uint8_t bits[core::kTileK];
};

struct PatternCtx {
  const SparsePattern* pattern;
  int64_t off;  // query row -> key-axis position
  int64_t seq_kv;
  std::vector<RowMemo> memos;  // one per thread of the call
};

bool pattern_fn(const void* ctx, int64_t s, int64_t h, int64_t i, int64_t j) {
  auto* c = static_cast<PatternCtx*>(const_cast<void*>(ctx));
  RowMemo& m = c->memos[omp_get_thread_num()];
  if (m.s != s || m.h != h || m.i != i || j < m.k0 || j >= m.k1) {
    m.s = s;
    m.h = h;
    m.i = i;
    m.k0 = j;
    m.k1 = std::min(c->seq_kv, j + core::kTileK);
    c->pattern->visible_row(h, i + c->off, m.k0, m.k1, m.bits);
  }
  return m.bits[j - m.k0] != 0;
}

// Appends the spans of one list: full and partial block lists (each ascending) merged by key
// block, adjacent blocks of the same kind joined into one span.
void blocks_to_spans(const BlockMask& m, int64_t l, bool partial_needs_mask, std::vector<core::KvSpan>* out) {
  const BlockMaskShape& s = m.shape;
  int64_t fe = m.full_offsets[l], fend = m.full_offsets[l + 1];
  int64_t pe = m.partial_offsets[l], pend = m.partial_offsets[l + 1];
  while (fe < fend || pe < pend) {
    bool full;
    int64_t kb;
    if (pe >= pend || (fe < fend && m.full_blocks[fe] < m.partial_blocks[pe])) {
      full = true;
      kb = m.full_blocks[fe++];
    } else {
      full = !partial_needs_mask;
      kb = m.partial_blocks[pe++];
    }
    const int64_t k0 = kb * s.block_k, k1 = std::min(s.seq_kv, k0 + s.block_k);
    if (!out->empty() && out->back().end == k0 && out->back().full == full) {
      out->back().end = k1;
    } else {
      out->push_back(core::KvSpan{k0, k1, full});
    }
  }
}

}  // namespace

Status sparse_attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                        float* maybe_lse, const AttentionParams& params, const BlockMask& mask) {
  core::Call call;
  ATTNKIT_RETURN_IF_ERROR(core::make_call(q, k, v, out, maybe_lse, params, &call));
  ATTNKIT_RETURN_IF_ERROR(check_sparse_call(call, "sparse_attention"));
  ATTNKIT_RETURN_IF_ERROR(validate_block_mask(mask));
  const BlockMaskShape& s = mask.shape;
  if (s.batch != q.batch() || s.heads != call.heads_q || s.seq_q != q.seq() || s.seq_kv != k.seq()) {
    return Status::invalid_argument(
        "sparse_attention: block mask shape (batch " + std::to_string(s.batch) + ", heads " + std::to_string(s.heads) +
        ", seq_q " + std::to_string(s.seq_q) + ", seq_kv " + std::to_string(s.seq_kv) + ") does not match q/k (batch " +
        std::to_string(q.batch()) + ", heads_q " + std::to_string(call.heads_q) + ", seq_q " + std::to_string(q.seq()) +
        ", seq_kv " + std::to_string(k.seq()) + ")");
  }
  if (s.causal != params.causal || (s.causal && s.causal_align != params.causal_align)) {
    return Status::invalid_argument(std::string("sparse_attention: block mask causal=") + (s.causal ? "true" : "false") +
                                    " / alignment does not match params.causal=" + (params.causal ? "true" : "false"));
  }
  PatternCtx ctx{mask.maybe_pattern.get(), diag_offset(s), s.seq_kv, std::vector<RowMemo>(call.threads)};
  core::ElementMask emask{pattern_fn, &ctx};
  const bool pattern = mask.maybe_pattern != nullptr;
  const int64_t nqb = mask.n_q_blocks();
  run_work(call, mask.n_lists(), [&](int64_t l, std::vector<core::KvSpan>* spans, ListWork* w) {
    const int64_t qb = l % nqb, bh = l / nqb;
    w->seq = bh / s.heads;
    w->head = bh % s.heads;
    w->row_begin = qb * s.block_q;
    w->row_end = std::min(s.seq_q, w->row_begin + s.block_q);
    blocks_to_spans(mask, l, pattern, spans);
    w->spans = spans->data();
    w->n_spans = static_cast<int>(spans->size());
    w->maybe_span_mask = pattern ? &emask : nullptr;
    if (mask.has_columns()) {
      w->indices = mask.columns.data() + mask.column_offsets[l];
      w->n_indices = mask.column_offsets[l + 1] - mask.column_offsets[l];
    }
  });
  return Status::ok_status();
}

Status gather_attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                        float* maybe_lse, const AttentionParams& params, const KeyIndexLists& lists) {
  core::Call call;
  ATTNKIT_RETURN_IF_ERROR(core::make_call(q, k, v, out, maybe_lse, params, &call));
  ATTNKIT_RETURN_IF_ERROR(check_sparse_call(call, "gather_attention"));
  if (lists.rows_per_list < 1) {
    return Status::invalid_argument("gather_attention: rows_per_list " + std::to_string(lists.rows_per_list) +
                                    " is not supported; expected >= 1");
  }
  if (lists.batch != q.batch() || lists.heads != call.heads_q || lists.seq_q != q.seq() || lists.seq_kv != k.seq()) {
    return Status::invalid_argument("gather_attention: index lists shape (batch " + std::to_string(lists.batch) +
                                    ", heads " + std::to_string(lists.heads) + ", seq_q " + std::to_string(lists.seq_q) +
                                    ", seq_kv " + std::to_string(lists.seq_kv) + ") does not match q/k");
  }
  const int64_t nl = (lists.seq_q + lists.rows_per_list - 1) / lists.rows_per_list;
  const int64_t n = lists.batch * lists.heads * nl;
  if (static_cast<int64_t>(lists.offsets.size()) != n + 1 || lists.offsets[0] != 0 ||
      lists.offsets[n] != static_cast<int64_t>(lists.indices.size())) {
    return Status::invalid_argument("gather_attention: offsets has " + std::to_string(lists.offsets.size()) +
                                    " entries; expected " + std::to_string(n + 1) + " from 0 to indices.size()");
  }
  for (int64_t l = 0; l < n; ++l) {
    if (lists.offsets[l + 1] < lists.offsets[l]) {
      return Status::invalid_argument("gather_attention: offsets decrease at list " + std::to_string(l));
    }
    for (int64_t e = lists.offsets[l]; e < lists.offsets[l + 1]; ++e) {
      const int32_t j = lists.indices[e];
      if (j < 0 || j >= lists.seq_kv) {
        return Status::invalid_argument("gather_attention: key index " + std::to_string(j) + " in list " +
                                        std::to_string(l) + " is out of range [0, " + std::to_string(lists.seq_kv) + ")");
      }
      if (e > lists.offsets[l] && j <= lists.indices[e - 1]) {
        return Status::invalid_argument("gather_attention: list " + std::to_string(l) + " is not strictly ascending");
      }
    }
  }
  run_work(call, n, [&](int64_t l, std::vector<core::KvSpan>*, ListWork* w) {
    const int64_t qb = l % nl, bh = l / nl;
    w->seq = bh / lists.heads;
    w->head = bh % lists.heads;
    w->row_begin = qb * lists.rows_per_list;
    w->row_end = std::min(lists.seq_q, w->row_begin + lists.rows_per_list);
    w->indices = lists.indices.data() + lists.offsets[l];
    w->n_indices = lists.offsets[l + 1] - lists.offsets[l];
  });
  return Status::ok_status();
}

}  // namespace attnkit
