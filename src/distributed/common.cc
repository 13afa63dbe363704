// Block layouts, status agreement across ranks, packing and the partial-result accumulator.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <limits>

#include "distributed/dist_internal.h"

namespace attnkit::dist {

const char* block_layout_name(BlockLayout l) { return l == BlockLayout::kZigZag ? "zigzag" : "contiguous"; }

namespace {
// Piece i of n pieces of a balanced split of seq tokens: the first seq % n pieces get one more.
Segment piece(int64_t seq, int64_t n, int64_t i) {
  const int64_t base = seq / n, extra = seq % n;
  return {i * base + std::min(i, extra), base + (i < extra ? 1 : 0)};
}
}  // namespace

std::vector<Segment> block_segments(int64_t seq, int ranks, int rank, BlockLayout layout) {
  if (layout == BlockLayout::kContiguous) return {piece(seq, ranks, rank)};
  // Zig-zag: pieces r and 2R-1-r, so every rank gets one early (cheap under a causal mask) and
  // one late (expensive) piece.
  return {piece(seq, 2 * int64_t{ranks}, rank), piece(seq, 2 * int64_t{ranks}, 2 * int64_t{ranks} - 1 - rank)};
}

int64_t block_len(int64_t seq, int ranks, int rank, BlockLayout layout) {
  int64_t n = 0;
  for (const Segment& s : block_segments(seq, ranks, rank, layout)) n += s.len;
  return n;
}

Status agree(const Status& local, MPI_Comm comm) {
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  // The lowest failing rank speaks for all: its code and message are broadcast.
  int mine = local.ok() ? size : rank, first = size;
  MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm);
  if (first == size) return Status::ok_status();
  int code = static_cast<int>(local.code());
  std::string msg = local.message();
  int len = static_cast<int>(msg.size());
  MPI_Bcast(&code, 1, MPI_INT, first, comm);
  MPI_Bcast(&len, 1, MPI_INT, first, comm);
  msg.resize(static_cast<size_t>(len));
  MPI_Bcast(msg.data(), len, MPI_CHAR, first, comm);
  return Status(static_cast<StatusCode>(code), "rank " + std::to_string(first) + ": " + msg);
}

namespace internal {

Status comm_info(MPI_Comm comm, Comm* out) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized)
    return Status::invalid_argument("MPI is not initialized (call MPI_Init before a distributed call)");
  if (comm == MPI_COMM_NULL) return Status::invalid_argument("comm is MPI_COMM_NULL");
  out->comm = comm;
  MPI_Comm_rank(comm, &out->rank);
  MPI_Comm_size(comm, &out->size);
  return Status::ok_status();
}

Status check_same_on_all_ranks(const std::vector<std::pair<std::string, int64_t>>& values, MPI_Comm comm) {
  const int n = static_cast<int>(values.size());
  std::vector<int64_t> lo(values.size()), hi(values.size()), mine(values.size());
  for (int i = 0; i < n; ++i) mine[i] = values[i].second;
  MPI_Allreduce(mine.data(), lo.data(), n, MPI_INT64_T, MPI_MIN, comm);
  MPI_Allreduce(mine.data(), hi.data(), n, MPI_INT64_T, MPI_MAX, comm);
  for (int i = 0; i < n; ++i) {
    if (lo[i] != hi[i])
      return Status::invalid_argument(values[i].first + " differs across ranks (from " + std::to_string(lo[i]) +
                                      " to " + std::to_string(hi[i]) + "); every rank must pass the same value");
  }
  return Status::ok_status();
}

int64_t dense_bytes(const TensorView& t) { return t.numel() * static_cast<int64_t>(dtype_size(t.dtype)); }

void pack_dense(const TensorView& t, void* dst) {
  const size_t es = dtype_size(t.dtype);
  const auto* src = static_cast<const uint8_t*>(t.data);
  auto* d = static_cast<uint8_t*>(dst);
  const int64_t row = t.shape[3];
  for (int64_t b = 0; b < t.shape[0]; ++b)
    for (int64_t s = 0; s < t.shape[1]; ++s)
      for (int64_t h = 0; h < t.shape[2]; ++h) {
        const uint8_t* p = src + static_cast<size_t>(t.offset(b, s, h, 0)) * es;
        if (t.stride[3] == 1) {
          std::memcpy(d, p, static_cast<size_t>(row) * es);
          d += row * es;
        } else {
          for (int64_t x = 0; x < row; ++x, d += es) std::memcpy(d, p + static_cast<size_t>(x * t.stride[3]) * es, es);
        }
      }
}

TensorView dense_view(void* data, DType dtype, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
  return TensorView::contiguous(data, dtype, d0, d1, d2, d3);
}

TensorView seq_slice(const TensorView& t, int64_t begin, int64_t len) {
  TensorView s = t;
  s.data = static_cast<uint8_t*>(t.data) + static_cast<size_t>(begin * t.stride[1]) * dtype_size(t.dtype);
  s.shape[1] = len;
  return s;
}

void PartialAcc::init(int64_t b, int64_t s, int64_t h, int64_t d) {
  batch = b, seq = s, heads = h, dim = d;
  o.assign(static_cast<size_t>(b * s * h * d), 0.0f);
  lse.assign(static_cast<size_t>(b * h * s), -std::numeric_limits<float>::infinity());
}

void PartialAcc::merge(const float* part_o, const float* part_lse, int64_t row_begin, int64_t part_seq, int threads) {
  const int64_t n = batch * heads;
#pragma omp parallel for num_threads(threads > 0 ? threads : omp_get_max_threads()) schedule(static)
  for (int64_t bh = 0; bh < n; ++bh) {
    const int64_t b = bh / heads, h = bh % heads;
    for (int64_t s = 0; s < part_seq; ++s) {
      const float* po = part_o + ((b * part_seq + s) * heads + h) * dim;
      merge_state_row(row(b, row_begin + s, h), lse_at(b, h, row_begin + s), po, part_lse[(b * heads + h) * part_seq + s],
                      dim);
    }
  }
}

void PartialAcc::merge_sink_logits(const float* sink) {
  const std::vector<float> zero(static_cast<size_t>(dim), 0.0f);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t s = 0; s < seq; ++s)
      for (int64_t h = 0; h < heads; ++h) merge_state_row(row(b, s, h), lse_at(b, h, s), zero.data(), sink[h], dim);
}

void PartialAcc::store(const TensorView& out, float* maybe_lse) const {
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t s = 0; s < seq; ++s)
      for (int64_t h = 0; h < heads; ++h) {
        const float* r = o.data() + ((b * seq + s) * heads + h) * dim;
        for (int64_t d = 0; d < dim; ++d) out.set(b, s, h, d, r[d]);
      }
  if (maybe_lse) std::copy(lse.begin(), lse.end(), maybe_lse);
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace internal
}  // namespace attnkit::dist
