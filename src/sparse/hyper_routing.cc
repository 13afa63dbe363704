// HyperAttention and Routing attention: mechanisms whose key sets follow a permutation of the
// queries (LSH order, k-means clusters), so they are not a BlockMask over query blocks.
//
// Both run on the same core tile kernel through a "permuted call": the queries of one
// (sequence, head) are copied in the mechanism's order into an f32 buffer, so that the rows a
// bucket or cluster shares are contiguous kernel rows; keys are gathered by index list; the
// partial states (o, LSE) come back per permuted row and are scattered to the original rows and
// merged there with merge_state_row. Causality on permuted rows is an ElementMask that maps the
// row back to its original position.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "attnkit/registry.h"
#include "attnkit/sparse.h"
#include "sparse/methods.h"
#include "sparse/qk_util.h"
#include "sparse/sparse_internal.h"

namespace attnkit {

using namespace sparse_internal;

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Partial results of one (sequence, head) over its rows: o [rows, dv], lse [rows].
struct RowState {
  std::vector<float> o, lse;
  void reset(int64_t rows, int64_t dv) {
    o.assign(rows * dv, 0.0f);
    lse.assign(rows, kNegInf);
  }
};

// One (sequence, head) seen by the kernel: the original call (for direct rows) and a call over a
// permuted copy of the queries.
class HeadContext {
 public:
  HeadContext(const core::Call& main, int64_t b, int64_t h) : main_(main), b_(b), h_(h) {
    const int64_t hk = main.kv_head(h);
    k1_ = slice(main.k, b, hk);
    v1_ = slice(main.v, b, hk);
  }

  // Sets the permuted queries: rows[i] = original row of permuted row i.
  Status set_permutation(const std::vector<int64_t>& rows) {
    const int64_t n = static_cast<int64_t>(rows.size()), d = main_.head_dim, dv = main_.head_dim_v;
    qbuf_.resize(std::max<int64_t>(1, n) * d);
    for (int64_t i = 0; i < n; ++i) copy_rows(main_.q, b_, h_, rows[i], rows[i] + 1, qbuf_.data() + i * d);
    // Results of the permuted call always go to partial states, never to its `out`: one row
    // repeated with stride 0 satisfies the call's shape without an n x dv allocation.
    obuf_.resize(dv);
    TensorView q1 = TensorView::contiguous(qbuf_.data(), DType::kF32, 1, std::max<int64_t>(1, n), 1, d);
    TensorView o1 = TensorView::contiguous(obuf_.data(), DType::kF32, 1, 1, 1, dv);
    o1.shape[1] = std::max<int64_t>(1, n);
    o1.stride[1] = 0;
    AttentionParams p;
    p.scale = main_.scale;
    p.softcap = main_.p.softcap;
    p.num_threads = main_.p.num_threads;
    return core::make_call(q1, k1_, v1_, o1, nullptr, p, &perm_);
  }
  const core::Call& permuted() const { return perm_; }

 private:
  static TensorView slice(const TensorView& t, int64_t b, int64_t h) {
    TensorView s = t;
    s.data = static_cast<char*>(t.data) + t.offset(b, 0, h, 0) * static_cast<int64_t>(dtype_size(t.dtype));
    s.shape = {1, t.shape[1], 1, t.shape[3]};
    return s;
  }
  const core::Call& main_;
  int64_t b_, h_;
  TensorView k1_, v1_;
  std::vector<float> qbuf_, obuf_;
  core::Call perm_;
};

// Runs units on `call` (one sequence, one head: batch 1, heads 1 for a permuted call) into
// state rows [0, rows).
void run_partial(const core::Call& call, int64_t rows, int64_t n_units, const FillWork& fill, RowState* st) {
  st->reset(rows, call.head_dim_v);
  run_work_partial(call, n_units, fill, st->o.data(), st->lse.data(), rows);
}

// Merges src (rows in permuted order: src row i belongs to original row map[i] - base) into dst.
void merge_into(RowState* dst, const RowState& src, const std::vector<int64_t>* maybe_map, int64_t base, int64_t dv,
                float lse_shift = 0.0f) {
  const int64_t n = static_cast<int64_t>(src.lse.size());
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = (maybe_map ? (*maybe_map)[i] : i + base);
    const float l = src.lse[i] == kNegInf ? kNegInf : src.lse[i] + lse_shift;
    merge_state_row(dst->o.data() + r * dv, &dst->lse[r], src.o.data() + i * dv, l, dv);
  }
}

// Exact attention of rows [r0, r1) of (b, h) on keys [k0, k1) through the main call (its
// causal rule applies), into st rows [0, r1 - r0).
void exact_part(const core::Call& main, int64_t b, int64_t h, int64_t r0, int64_t r1, int64_t k0, int64_t k1,
                RowState* st, double* pairs) {
  const int64_t rows = r1 - r0, dv = main.head_dim_v;
  st->reset(rows, dv);
  core::KvSpan span{k0, k1, true};
  // Parallel over 64-row chunks.
  const int64_t n_chunks = (rows + core::kTileQ - 1) / core::kTileQ;
#pragma omp parallel num_threads(main.threads)
  {
    core::Workspace tws;
#pragma omp for schedule(dynamic, 1)
    for (int64_t c = 0; c < n_chunks; ++c) {
      core::BlockJob job;
      job.seq = b;
      job.head_q = h;
      job.row_begin = r0 + c * core::kTileQ;
      job.row_end = std::min(r1, job.row_begin + core::kTileQ);
      job.spans = &span;
      job.n_spans = 1;
      job.include_sink_logit = false;
      core::PartialOut po{st->o.data() + (job.row_begin - r0) * dv, st->lse.data() + (job.row_begin - r0)};
      job.maybe_partial = &po;
      core::attend_block(main, job, &tws);
    }
  }
  if (pairs) {
    const int64_t off = main.p.causal ? main.diag_offset(main.seq(b)) : 0;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t hi = main.p.causal ? std::min(k1, r + off + 1) : k1;
      *pairs += static_cast<double>(std::max<int64_t>(0, hi - k0));
    }
  }
}

// ------------------------------------------------------------------------------------------------
// HyperAttention

// Rank of a Gray code (its position in the reflected Gray sequence): adjacent ranks differ in one
// hyperplane, so sorting by rank puts angularly close vectors next to each other (sortLSH).
uint32_t gray_rank(uint32_t g) {
  uint32_t b = g;
  for (uint32_t s = 1; s < 32; s <<= 1) b ^= b >> s;
  return b;
}

struct Hyper {
  const core::Call& main;
  const HyperConfig& cfg;
  int64_t b, h;
  std::vector<float> planes;  // [n_projections, d]
  double pairs = 0;

  void make_planes(uint64_t seed) {
    const int64_t d = main.head_dim;
    planes.resize(cfg.n_projections * d);
    uint64_t st = seed;
    for (auto& x : planes) {  // Box-Muller Gaussian
      const double u1 = (static_cast<double>(splitmix64(&st) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
      const double u2 = static_cast<double>(splitmix64(&st) >> 11) * (1.0 / 9007199254740992.0);
      x = static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
    }
  }

  // Sorted order of rows [r0, r1) of tensor t (head th) by LSH rank.
  std::vector<int64_t> lsh_order(const TensorView& t, int64_t th, int64_t r0, int64_t r1) const {
    const int64_t n = r1 - r0, d = main.head_dim;
    std::vector<float> x(n * d);
    copy_rows(t, b, th, r0, r1, x.data());
    std::vector<uint32_t> rank(n);
    for (int64_t i = 0; i < n; ++i) {
      uint32_t code = 0;
      for (int64_t p = 0; p < cfg.n_projections; ++p) {
        float dot = 0;
        for (int64_t c = 0; c < d; ++c) dot += x[i * d + c] * planes[p * d + c];
        code |= (dot > 0 ? 1u : 0u) << p;
      }
      rank[i] = gray_rank(code);
    }
    std::vector<int64_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t c) { return rank[a] < rank[c]; });
    for (auto& o : order) o += r0;
    return order;
  }

  // Non-causal HyperAttention of rows [r0, r1) on keys [k0, k1), into st (rows relative to r0).
  Status noncausal(int64_t r0, int64_t r1, int64_t k0, int64_t k1, uint64_t seed, RowState* st) {
    const int64_t nq = r1 - r0, nk = k1 - k0, dv = main.head_dim_v;
    if (nq <= cfg.min_len || nk <= cfg.block) {
      exact_part(main, b, h, r0, r1, k0, k1, st, &pairs);
      return Status::ok_status();
    }
    const std::vector<int64_t> qord = lsh_order(main.q, h, r0, r1);
    const std::vector<int64_t> kord = lsh_order(main.k, main.kv_head(h), k0, k1);
    HeadContext hc(main, b, h);
    ATTNKIT_RETURN_IF_ERROR(hc.set_permutation(qord));
    // 1. Block diagonal in sorted order: sorted query block t against sorted key block t.
    const int64_t n_blocks = (nk + cfg.block - 1) / cfg.block;
    const int64_t qbs = (nq + n_blocks - 1) / n_blocks;
    std::vector<int32_t> kidx(kord.begin(), kord.end());
    for (int64_t t = 0; t < n_blocks; ++t) {
      std::sort(kidx.begin() + t * cfg.block, kidx.begin() + std::min(nk, (t + 1) * cfg.block));
    }
    std::vector<int32_t> key_block(nk);  // sorted block of each key (by position - k0)
    for (int64_t e = 0; e < nk; ++e) key_block[kidx[e] - k0] = static_cast<int32_t>(e / cfg.block);
    RowState diag;
    run_partial(hc.permuted(), nq, n_blocks, [&](int64_t t, std::vector<core::KvSpan>*, ListWork* w) {
      w->row_begin = std::min(nq, t * qbs);
      w->row_end = std::min(nq, (t + 1) * qbs);
      w->indices = kidx.data() + t * cfg.block;
      w->n_indices = std::min(nk, (t + 1) * cfg.block) - t * cfg.block;
    }, &diag);
    for (int64_t t = 0; t < n_blocks; ++t) {
      pairs += static_cast<double>(std::min(nq, (t + 1) * qbs) - std::min(nq, t * qbs)) *
               static_cast<double>(std::min(nk, (t + 1) * cfg.block) - t * cfg.block);
    }
    // 2. Uniform key samples (without replacement), weighted by n/m through LSE: the residual
    //    mass outside each row's own block, estimated unbiasedly. Keys of the row's own sorted
    //    block are masked out (already counted exactly).
    RowState samp;
    const int64_t m = std::min(cfg.samples, nk);
    if (m > 0) {
      std::vector<int32_t> pool(nk);
      std::iota(pool.begin(), pool.end(), static_cast<int32_t>(k0));
      uint64_t state = seed ^ 0x5bd1e995ull;
      for (int64_t t = 0; t < m; ++t) {
        const int64_t pick = t + static_cast<int64_t>(splitmix64(&state) % static_cast<uint64_t>(nk - t));
        std::swap(pool[t], pool[pick]);
      }
      std::vector<int32_t> sample(pool.begin(), pool.begin() + m);
      std::sort(sample.begin(), sample.end());
      struct Ctx {
        const int32_t* key_block;
        int64_t k0, qbs;
      } ctx{key_block.data(), k0, qbs};
      core::ElementMask not_own{[](const void* c, int64_t, int64_t, int64_t i, int64_t j) {
                                  const auto* x = static_cast<const Ctx*>(c);
                                  return x->key_block[j - x->k0] != i / x->qbs;
                                },
                                &ctx};
      const int64_t n_chunks = (nq + core::kTileQ - 1) / core::kTileQ;
      run_partial(hc.permuted(), nq, n_chunks, [&](int64_t c, std::vector<core::KvSpan>*, ListWork* w) {
        w->row_begin = c * core::kTileQ;
        w->row_end = std::min(nq, w->row_begin + core::kTileQ);
        w->indices = sample.data();
        w->n_indices = m;
        w->maybe_index_mask = &not_own;
      }, &samp);
      pairs += static_cast<double>(nq) * static_cast<double>(m);
    }
    // Scatter to original rows and combine.
    std::vector<int64_t> map(nq);
    for (int64_t i = 0; i < nq; ++i) map[i] = qord[i] - r0;
    st->reset(nq, dv);
    merge_into(st, diag, &map, 0, dv);
    if (m > 0) merge_into(st, samp, &map, 0, dv, static_cast<float>(std::log(static_cast<double>(nk) / m)));
    return Status::ok_status();
  }

  // Causal HyperAttention on the square [a, e) x [a, e) (recursive halving).
  Status causal(int64_t a, int64_t e, uint64_t seed, RowState* st) {
    const int64_t n = e - a, dv = main.head_dim_v;
    if (n <= cfg.min_len) {
      exact_part(main, b, h, a, e, a, e, st, &pairs);
      return Status::ok_status();
    }
    const int64_t mid = a + n / 2;
    RowState top, bottom, off;
    ATTNKIT_RETURN_IF_ERROR(causal(a, mid, seed * 3 + 1, &top));
    ATTNKIT_RETURN_IF_ERROR(causal(mid, e, seed * 3 + 2, &bottom));
    ATTNKIT_RETURN_IF_ERROR(noncausal(mid, e, a, mid, seed * 3 + 3, &off));
    merge_into(&bottom, off, nullptr, 0, dv);
    st->reset(n, dv);
    std::copy(top.o.begin(), top.o.end(), st->o.begin());
    std::copy(top.lse.begin(), top.lse.end(), st->lse.begin());
    std::copy(bottom.o.begin(), bottom.o.end(), st->o.begin() + (mid - a) * dv);
    std::copy(bottom.lse.begin(), bottom.lse.end(), st->lse.begin() + (mid - a));
    return Status::ok_status();
  }
};

Status check_square_causal(const core::Call& call, const char* what) {
  if (call.p.causal && call.q.seq() != call.k.seq()) {
    return Status::unsupported(std::string(what) + ": causal needs seq_q == seq_kv (got " + std::to_string(call.q.seq()) +
                               " and " + std::to_string(call.k.seq()) + ")");
  }
  if (call.p.window_left >= 0 || call.p.window_right >= 0 || call.p.n_sink_tokens > 0 ||
      call.p.mask.kind != MaskKind::kNone) {
    return Status::unsupported(std::string(what) + ": window, sink tokens and custom masks are not supported");
  }
  return Status::ok_status();
}

void write_rows(const core::Call& call, int64_t b, int64_t h, const RowState& st) {
  const core::SeqRange r = call.seq(b);
  const int64_t dv = call.head_dim_v;
  for (int64_t i = 0; i < r.q_len; ++i) core::write_final_row(call, r, h, i, st.o.data() + i * dv, st.lse[i], true);
}

// Runs fn(b, h, &pairs) for every (batch, query head). With at least as many heads as threads,
// heads run in parallel (one per thread; the kernel calls inside then run serially in that
// thread, and OpenBLAS is pinned to one thread), else heads run one after another and the
// kernel calls inside use the threads. Returns the first failure.
template <class F>
Status run_heads(const core::Call& call, int64_t batch, F&& fn, double* pairs_out) {
  const int64_t n = batch * call.heads_q;
  const int threads = call.threads;
  std::vector<Status> status(n);
  std::vector<double> pairs(n, 0.0);
  if (n >= threads && threads > 1) {
    BlasSingleThread single;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int64_t x = 0; x < n; ++x) status[x] = fn(x / call.heads_q, x % call.heads_q, &pairs[x]);
  } else {
    for (int64_t x = 0; x < n; ++x) status[x] = fn(x / call.heads_q, x % call.heads_q, &pairs[x]);
  }
  double total = 0;
  for (int64_t x = 0; x < n; ++x) {
    ATTNKIT_RETURN_IF_ERROR(status[x]);
    total += pairs[x];
  }
  if (pairs_out) *pairs_out = total;
  return Status::ok_status();
}

}  // namespace

Status hyper_attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                       float* maybe_lse, const AttentionParams& params, const HyperConfig& cfg,
                       double* maybe_computed_pairs) {
  core::Call call;
  ATTNKIT_RETURN_IF_ERROR(core::make_call(q, k, v, out, maybe_lse, params, &call));
  ATTNKIT_RETURN_IF_ERROR(check_sparse_call(call, "hyper_attention"));
  ATTNKIT_RETURN_IF_ERROR(check_square_causal(call, "hyper_attention"));
  if (cfg.block < 1 || cfg.samples < 0 || cfg.n_projections < 1 || cfg.n_projections > 30 || cfg.min_len < 1) {
    return Status::invalid_argument("hyper_attention: block " + std::to_string(cfg.block) + ", samples " +
                                    std::to_string(cfg.samples) + ", n_projections " + std::to_string(cfg.n_projections) +
                                    ", min_len " + std::to_string(cfg.min_len) +
                                    " out of range; expected block >= 1, samples >= 0, n_projections 1..30, min_len >= 1");
  }
  return run_heads(call, q.batch(), [&](int64_t b, int64_t h, double* pairs) -> Status {
    Hyper hy{call, cfg, b, h, {}, 0};
    const uint64_t seed = cfg.seed * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(b * call.heads_q + h);
    hy.make_planes(seed);
    RowState st;
    if (params.causal) {
      ATTNKIT_RETURN_IF_ERROR(hy.causal(0, q.seq(), seed, &st));
    } else {
      ATTNKIT_RETURN_IF_ERROR(hy.noncausal(0, q.seq(), 0, k.seq(), seed, &st));
    }
    write_rows(call, b, h, st);
    *pairs = hy.pairs;
    return Status::ok_status();
  }, maybe_computed_pairs);
}

// ------------------------------------------------------------------------------------------------
// Routing attention

namespace {

// Routing attention's pieces (Roy et al. 2021, "Efficient Content-Based Sparse Attention with
// Routing Transformers"), applied per (batch, head) by routing_attention below.

Status check_routing_config(const RoutingConfig& cfg) {
  if (cfg.clusters < 1 || cfg.iters < 0 || cfg.window < 1) {
    return Status::invalid_argument("routing_attention: clusters " + std::to_string(cfg.clusters) + ", iters " +
                                    std::to_string(cfg.iters) + ", window " + std::to_string(cfg.window) +
                                    " out of range; expected clusters >= 1, iters >= 0, window >= 1");
  }
  return Status::ok_status();
}

// Scales each of the rows of x (width d) to unit length (zero rows stay zero).
void normalize_rows(int64_t d, std::vector<float>* x) {
  const int64_t n = static_cast<int64_t>(x->size()) / d;
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (int64_t c = 0; c < d; ++c) s += double((*x)[i * d + c]) * (*x)[i * d + c];
    const float inv = s > 0 ? static_cast<float>(1.0 / std::sqrt(s)) : 0.0f;
    for (int64_t c = 0; c < d; ++c) (*x)[i * d + c] *= inv;
  }
}

// Cluster of every query and every key of one head.
struct Clusters {
  std::vector<int32_t> of_query, of_key;
};

// Spherical k-means over the unit queries xq [sq, d] and keys xk [sk, d] together: centroids
// start at keys drawn with `seed_state`, then `iters` Lloyd steps (mean direction of the
// members; an empty cluster keeps its centroid); the final assignment is returned.
Clusters spherical_kmeans(const std::vector<float>& xq, const std::vector<float>& xk, int64_t d, int64_t n_clusters,
                          int64_t iters, uint64_t seed_state) {
  const int64_t sq = static_cast<int64_t>(xq.size()) / d, sk = static_cast<int64_t>(xk.size()) / d, C = n_clusters;
  std::vector<float> cent(C * d);
  for (int64_t c = 0; c < C; ++c) {
    const int64_t j = static_cast<int64_t>(splitmix64(&seed_state) % static_cast<uint64_t>(sk));
    std::copy(xk.begin() + j * d, xk.begin() + (j + 1) * d, cent.begin() + c * d);
  }
  Clusters cl;
  cl.of_query.resize(sq);
  cl.of_key.resize(sk);
  std::vector<float> sc(std::max(sq, sk) * C);
  const auto assign = [&](const std::vector<float>& x, int64_t n, std::vector<int32_t>* a) {
    gemm_abt(x.data(), cent.data(), sc.data(), n, C, d, 1.0f);
    for (int64_t i = 0; i < n; ++i) {
      const float* r = sc.data() + i * C;
      (*a)[i] = static_cast<int32_t>(std::max_element(r, r + C) - r);
    }
  };
  for (int64_t it = 0; it <= iters; ++it) {
    assign(xq, sq, &cl.of_query);
    assign(xk, sk, &cl.of_key);
    if (it == iters) break;
    std::vector<double> acc(C * d, 0.0);
    for (int64_t i = 0; i < sq; ++i)
      for (int64_t c = 0; c < d; ++c) acc[cl.of_query[i] * d + c] += xq[i * d + c];
    for (int64_t j = 0; j < sk; ++j)
      for (int64_t c = 0; c < d; ++c) acc[cl.of_key[j] * d + c] += xk[j * d + c];
    for (int64_t c = 0; c < C; ++c) {
      double s = 0;
      for (int64_t x = 0; x < d; ++x) s += acc[c * d + x] * acc[c * d + x];
      if (s == 0) continue;
      for (int64_t x = 0; x < d; ++x) cent[c * d + x] = static_cast<float>(acc[c * d + x] / std::sqrt(s));
    }
  }
  return cl;
}

// Part A: every row's local window (keys [p - window + 1, p], or either side when not causal)
// through wcall, the main call with that window, into *win; returns the pairs it computed.
double routing_window_part(const core::Call& call, const core::Call& wcall, int64_t b, int64_t h,
                           const RoutingConfig& cfg, RowState* win) {
  const int64_t sq = call.q.seq(), sk = call.k.seq(), dv = call.head_dim_v;
  win->reset(sq, dv);
  const int64_t n_chunks = (sq + core::kTileQ - 1) / core::kTileQ;
#pragma omp parallel num_threads(call.threads)
  {
    core::Workspace ws;
#pragma omp for schedule(dynamic, 1)
    for (int64_t c = 0; c < n_chunks; ++c) {
      core::BlockJob job;
      job.seq = b;
      job.head_q = h;
      job.row_begin = c * core::kTileQ;
      job.row_end = std::min(sq, job.row_begin + core::kTileQ);
      int64_t lo, hi;
      wcall.key_range(wcall.seq(b), job.row_begin, job.row_end, &lo, &hi);
      core::KvSpan span{lo, hi, true};
      job.spans = &span;
      job.n_spans = hi > lo ? 1 : 0;
      job.include_sink_logit = false;
      core::PartialOut po{win->o.data() + job.row_begin * dv, win->lse.data() + job.row_begin};
      job.maybe_partial = &po;
      core::attend_block(wcall, job, &ws);
    }
  }
  double pairs = 0;
  const bool causal = call.p.causal;
  for (int64_t i = 0; i < sq; ++i) {
    const int64_t p = i + (causal ? call.diag_offset(call.seq(b)) : 0);
    const int64_t lo = std::max<int64_t>(0, p - cfg.window + 1);
    const int64_t hi = causal ? std::min(sk, p + 1) : std::min(sk, p + cfg.window);
    pairs += static_cast<double>(std::max<int64_t>(0, hi - lo));
  }
  return pairs;
}

// Whether key j lies outside the local window of the query at key-axis position p (those keys
// are part A's); the cluster part visits only these.
inline bool outside_window(int64_t p, int64_t j, int64_t window, bool causal) {
  return causal ? j <= p - window : (j <= p - window || j >= p + window);
}

// Part B: the queries of each cluster, made contiguous by the permutation *order (cluster by
// cluster, stable), gather the cluster's keys outside their own window, after causality, into
// *clus (in permuted row order). *pairs gets the pairs computed.
Status routing_cluster_part(const core::Call& call, int64_t b, int64_t h, const RoutingConfig& cfg,
                            const Clusters& cl, std::vector<int64_t>* order, RowState* clus, double* pairs) {
  const int64_t sq = call.q.seq(), sk = call.k.seq();
  order->resize(sq);
  std::iota(order->begin(), order->end(), 0);
  const std::vector<int32_t>& cq = cl.of_query;
  std::stable_sort(order->begin(), order->end(), [&](int64_t a, int64_t c) { return cq[a] < cq[c]; });
  std::vector<std::vector<int32_t>> keys(cfg.clusters);
  for (int64_t j = 0; j < sk; ++j) keys[cl.of_key[j]].push_back(static_cast<int32_t>(j));
  // Work units: runs of at most one tile of same-cluster rows.
  struct Unit {
    int64_t row_begin, row_end;
    int32_t cluster;
  };
  std::vector<Unit> units;
  const std::vector<int64_t>& ord = *order;
  for (int64_t i = 0; i < sq;) {
    int64_t e = i;
    while (e < sq && cq[ord[e]] == cq[ord[i]] && e - i < core::kTileQ) ++e;
    units.push_back({i, e, cq[ord[i]]});
    i = e;
  }
  HeadContext hc(call, b, h);
  ATTNKIT_RETURN_IF_ERROR(hc.set_permutation(ord));
  struct Ctx {
    const int64_t* order;
    int64_t off, window;
    bool causal;
  } ctx{ord.data(), call.p.causal ? call.diag_offset(call.seq(b)) : 0, cfg.window, call.p.causal};
  core::ElementMask mask{[](const void* c, int64_t, int64_t, int64_t i, int64_t j) {
                           const auto* x = static_cast<const Ctx*>(c);
                           return outside_window(x->order[i] + x->off, j, x->window, x->causal);
                         },
                         &ctx};
  run_partial(hc.permuted(), sq, static_cast<int64_t>(units.size()),
              [&](int64_t u, std::vector<core::KvSpan>*, ListWork* w) {
                w->row_begin = units[u].row_begin;
                w->row_end = units[u].row_end;
                const std::vector<int32_t>& ks = keys[units[u].cluster];
                w->indices = ks.data();
                w->n_indices = static_cast<int64_t>(ks.size());
                w->maybe_index_mask = &mask;
              },
              clus);
  double n = 0;
  for (int64_t i = 0; i < sq; ++i) {
    const int64_t p = ord[i] + ctx.off;
    for (int32_t j : keys[cq[ord[i]]]) n += outside_window(p, j, cfg.window, ctx.causal) ? 1 : 0;
  }
  *pairs = n;
  return Status::ok_status();
}

}  // namespace

Status routing_attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                         float* maybe_lse, const AttentionParams& params, const RoutingConfig& cfg,
                         double* maybe_computed_pairs) {
  core::Call call;
  ATTNKIT_RETURN_IF_ERROR(core::make_call(q, k, v, out, maybe_lse, params, &call));
  ATTNKIT_RETURN_IF_ERROR(check_sparse_call(call, "routing_attention"));
  ATTNKIT_RETURN_IF_ERROR(check_square_causal(call, "routing_attention"));
  ATTNKIT_RETURN_IF_ERROR(check_routing_config(cfg));
  const int64_t sq = q.seq(), sk = k.seq(), d = call.head_dim;
  // The local window runs through the main call with a window: keys [p - window + 1, p].
  core::Call wcall = call;
  wcall.p.window_left = cfg.window - 1;
  if (!params.causal) wcall.p.window_right = cfg.window - 1;
  return run_heads(call, q.batch(), [&](int64_t b, int64_t h, double* pairs_out) -> Status {
    std::vector<float> xq(sq * d), xk(sk * d);
    copy_rows(q, b, h, 0, sq, xq.data());
    copy_rows(k, b, call.kv_head(h), 0, sk, xk.data());
    normalize_rows(d, &xq);
    normalize_rows(d, &xk);
    const Clusters cl = spherical_kmeans(xq, xk, d, cfg.clusters, cfg.iters,
                                         cfg.seed * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(b * call.heads_q + h));
    RowState win, clus;
    const double window_pairs = routing_window_part(call, wcall, b, h, cfg, &win);
    std::vector<int64_t> order;
    double cluster_pairs = 0;
    ATTNKIT_RETURN_IF_ERROR(routing_cluster_part(call, b, h, cfg, cl, &order, &clus, &cluster_pairs));
    merge_into(&win, clus, &order, 0, call.head_dim_v);
    write_rows(call, b, h, win);
    *pairs_out = window_pairs + cluster_pairs;
    return Status::ok_status();
  }, maybe_computed_pairs);
}

// ---- registry entries (methods.h) ----

namespace {

Mechanism make_hyper_attention_mechanism() {
  return sparse_internal::sparse_mechanism(
      {"hyper_attention", "HyperAttention: sortLSH blocks + uniform samples, LSE combine, causal by recursion",
       {{"block", "256", "sorted block size"},
        {"samples", "256", "uniform key samples"},
        {"projections", "7", "LSH hyperplanes"},
        {"min_len", "4096", "exact attention at or below this length"},
        {"seed", "1", "seed"}},
       [](const MechanismParams& p, std::unique_ptr<SparseMethod>* out) -> Status {
         HyperConfig c;
         int64_t seed = 0;
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "block", &c.block));
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "samples", &c.samples));
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "projections", &c.n_projections));
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "min_len", &c.min_len));
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "seed", &seed));
         c.seed = static_cast<uint64_t>(seed);
         *out = sparse_internal::direct_method([c](const TensorView& q, const TensorView& k, const TensorView& v,
                                                   const TensorView& o, float* lse, const AttentionParams& params,
                                                   double* pairs) { return hyper_attention(q, k, v, o, lse, params, c, pairs); });
         return Status::ok_status();
       }});
}
ATTNKIT_REGISTER_MECHANISM(make_hyper_attention_mechanism);

Mechanism make_routing_mechanism() {
  return sparse_internal::sparse_mechanism(
      {"routing", "Routing attention: spherical k-means clusters of queries and keys + local window",
       {{"clusters", "16", "k-means clusters"},
        {"iters", "4", "Lloyd iterations"},
        {"window", "64", "local window always attended"},
        {"seed", "1", "seed"}},
       [](const MechanismParams& p, std::unique_ptr<SparseMethod>* out) -> Status {
         RoutingConfig c;
         int64_t seed = 0;
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "clusters", &c.clusters));
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "iters", &c.iters));
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "window", &c.window));
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "seed", &seed));
         c.seed = static_cast<uint64_t>(seed);
         *out = sparse_internal::direct_method([c](const TensorView& q, const TensorView& k, const TensorView& v,
                                                   const TensorView& o, float* lse, const AttentionParams& params,
                                                   double* pairs) { return routing_attention(q, k, v, o, lse, params, c, pairs); });
         return Status::ok_status();
       }});
}
ATTNKIT_REGISTER_MECHANISM(make_routing_mechanism);

}  // namespace

}  // namespace attnkit
