// Attention over a paged KV cache through the core tile kernel, pages read in place.
//
// The kernel sees the whole page pool as one long key sequence ([capacity * P, kv_heads, d],
// row = page * P + offset) with its own masks off. A sequence's visible slots become spans of
// physical rows: runs of adjacent pages merge into one span, so a cache whose pages were handed
// out in order is walked in long contiguous tiles. Visibility is by absolute position (causal, and
// the window of sliding-window layers): spans that every row of a block sees whole are marked
// full; the band at the window's or causality's edge goes through the job's element mask, which
// maps a physical row back to its slot and position.
//   decode (one query position): split-KV over pieces of the visible spans, all heads per piece
//                                (core::attend_keys_all_heads), merged through LSE;
//   several rows (prefill chunk): one job per (query head, block of kTileQ rows) over the spans.
// RazorAttention's compensation entry joins each row afterwards as one more partial state.
// attention_mass runs the kernel's mass pass (core::attend_mass) over the same spans with each
// row's final LSE, per thread into a buffer over the pool's rows, then sums it into slots.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/kv_cache.h"
#include "attnkit/memory.h"
#include "kv/kv_internal.h"

namespace attnkit::kv {
namespace internal {

void slot_spans(const std::vector<int32_t>& pages, int64_t P, int64_t a, int64_t b, bool full,
                std::vector<core::KvSpan>* out) {
  int64_t s = a;
  while (s < b) {
    const int64_t row = static_cast<int64_t>(pages[static_cast<size_t>(s / P)]) * P + s % P;
    const int64_t e = std::min(b, (s / P + 1) * P);
    const int64_t row_end = row + (e - s);
    if (!out->empty() && out->back().end == row && out->back().full == full) {
      out->back().end = row_end;
    } else {
      out->push_back({row, row_end, full});
    }
    s = e;
  }
}

void visible_slots(const std::vector<int64_t>& pos, int64_t p, int64_t wl, int64_t* lo, int64_t* hi) {
  *hi = std::upper_bound(pos.begin(), pos.end(), p) - pos.begin();
  *lo = wl < 0 ? 0 : std::lower_bound(pos.begin(), pos.end(), p - wl) - pos.begin();
  if (*lo > *hi) *lo = *hi;
}

}  // namespace internal

namespace {

using internal::for_each_piece;
using internal::slot_spans;
using internal::visible_slots;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

struct MaskCtx {
  const int64_t* slot_base = nullptr;  // [capacity]: first slot of each physical page, -1 if not ours
  int64_t P = 16;
  const int64_t* positions = nullptr;
  const int64_t* q_positions = nullptr;
  int64_t wl = -1;
};

bool position_visible(const void* ctx, int64_t /*s*/, int64_t /*h*/, int64_t i, int64_t j) {
  const MaskCtx& m = *static_cast<const MaskCtx*>(ctx);
  const int64_t base = m.slot_base[j / m.P];
  if (base < 0) return false;
  const int64_t pk = m.positions[base + j % m.P], p = m.q_positions[i];
  return pk <= p && (m.wl < 0 || pk >= p - m.wl);
}

Status check_view(const TensorView& t, const char* name, int64_t n, int64_t heads, int64_t dim) {
  if (t.data == nullptr) return Status::invalid_argument(std::string("attend_cache: ") + name + " is null");
  if (t.dtype != DType::kF32)
    return Status::invalid_argument(std::string("attend_cache: ") + name + " dtype " + dtype_name(t.dtype) + " is not supported; expected f32");
  if (t.shape[0] != 1 || t.shape[1] != n || t.shape[2] != heads || t.shape[3] != dim)
    return Status::invalid_argument(std::string("attend_cache: ") + name + " shape [" + std::to_string(t.shape[0]) + ", " +
                                    std::to_string(t.shape[1]) + ", " + std::to_string(t.shape[2]) + ", " +
                                    std::to_string(t.shape[3]) + "] does not match [1, " + std::to_string(n) + ", " +
                                    std::to_string(heads) + ", " + std::to_string(dim) + "]");
  if (t.stride[3] != 1)
    return Status::invalid_argument(std::string("attend_cache: ") + name + " must have unit stride in its last dimension (got " +
                                    std::to_string(t.stride[3]) + ")");
  return Status::ok_status();
}

float logit_of(const float* q, const float* k, int64_t d, float scale, float softcap) {
  double dot = 0;
  for (int64_t t = 0; t < d; ++t) dot += static_cast<double>(q[t]) * k[t];
  float s = static_cast<float>(dot) * scale;
  if (softcap > 0) s = softcap * std::tanh(s / softcap);
  return s;
}


// Everything attend_cache and attention_mass share: the validated kernel call over the page pool,
// each row's visible slots, and the element mask of the edge bands.
struct CacheCall {
  core::Call call;
  bool empty = true;  // nothing cached: no kernel call was built
  ScratchArray<uint16_t> qb;
  // A smoothed int8 cache (KvSmoothing): the kernel reads q * k_scale, and each row's logits are
  // lower than the true ones by logit_shift [heads_q, n] = scale * q . k_mean.
  const KvSmoothing* smoothing = nullptr;
  std::vector<float> qs, logit_shift;
  std::vector<int64_t> lo, hi, slot_base;
  MaskCtx mctx;
  core::ElementMask emask;
  const std::vector<int32_t>* pages = nullptr;
  int64_t P = 16, cap_rows = 1;
  const std::vector<KvSlotRange>* ranges = nullptr;

  // The job of query head h over rows [i0, i1): its spans (built into *spans) and the edge mask.
  core::BlockJob job(int64_t h, int64_t i0, int64_t i1, std::vector<core::KvSpan>* spans) const {
    block_spans(i0, i1, spans);
    core::BlockJob j;
    j.seq = 0;
    j.head_q = h;
    j.n_heads = 1;
    j.row_begin = i0;
    j.row_end = i1;
    j.spans = spans->data();
    j.n_spans = static_cast<int>(spans->size());
    j.maybe_extra_mask = &emask;
    return j;
  }

  // Spans of the rows [i0, i1) of one block: full where every row sees the whole span.
  void block_spans(int64_t i0, int64_t i1, std::vector<core::KvSpan>* spans) const {
    spans->clear();
    const int64_t ulo = lo[static_cast<size_t>(i0)], uhi = hi[static_cast<size_t>(i1 - 1)];
    const int64_t flo = lo[static_cast<size_t>(i1 - 1)], fhi = hi[static_cast<size_t>(i0)];
    auto add = [&](int64_t a, int64_t b, bool full) {
      for_each_piece(*ranges, a, b, [&](int64_t x, int64_t y) { slot_spans(*pages, P, x, y, full, spans); });
    };
    if (flo < fhi) {
      add(ulo, flo, false);
      add(flo, fhi, true);
      add(fhi, uhi, false);
    } else {
      add(ulo, uhi, false);
    }
  }
};

Status prepare_call(const PagedKvCache& cache, int64_t seq, const TensorView& q, const int64_t* q_positions,
                    const CacheAttentionParams& params, const TensorView& out, float* lse, CacheCall* cc) {
  const KvCacheOptions& o = cache.options();
  if (!cache.has_sequence(seq)) return Status::out_of_range("attend_cache: seq " + std::to_string(seq) + " is not a live sequence");
  const int64_t n = q.shape[1], H = q.shape[2], HK = o.kv_heads, D = o.head_dim, DV = o.head_dim_v;
  if (n <= 0) return Status::invalid_argument("attend_cache: q has " + std::to_string(n) + " rows; expected >= 1");
  if (H <= 0 || H % HK != 0)
    return Status::invalid_argument("attend_cache: heads_q " + std::to_string(H) + " is not a multiple of kv_heads " + std::to_string(HK));
  ATTNKIT_RETURN_IF_ERROR(check_view(q, "q", n, H, D));
  ATTNKIT_RETURN_IF_ERROR(check_view(out, "out", n, H, DV));
  if (q_positions == nullptr) return Status::invalid_argument("attend_cache: q_positions is null");
  for (int64_t i = 1; i < n; ++i)
    if (q_positions[i] <= q_positions[i - 1])
      return Status::invalid_argument("attend_cache: q_positions[" + std::to_string(i) + "] = " + std::to_string(q_positions[i]) +
                                      " is not greater than the previous one");
  if (params.window_left < -1)
    return Status::invalid_argument("attend_cache: window_left " + std::to_string(params.window_left) + " must be >= -1");
  for (size_t r = 0; r < params.slot_ranges.size(); ++r) {
    const KvSlotRange& sr = params.slot_ranges[r];
    if (sr.begin < 0 || sr.end < sr.begin || (r > 0 && sr.begin < params.slot_ranges[r - 1].end))
      return Status::invalid_argument("attend_cache: slot_ranges[" + std::to_string(r) + "] = [" + std::to_string(sr.begin) +
                                      ", " + std::to_string(sr.end) + ") is empty-negative or overlaps the previous range");
  }

  const std::vector<int64_t>& pos = cache.positions(seq);
  cc->pages = &cache.page_table(seq);
  cc->ranges = &params.slot_ranges;
  cc->P = cache.page_size();
  cc->cap_rows = std::max<int64_t>(1, cache.pages_capacity() * cc->P);
  cc->lo.resize(static_cast<size_t>(n));
  cc->hi.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    visible_slots(pos, q_positions[i], params.window_left, &cc->lo[static_cast<size_t>(i)], &cc->hi[static_cast<size_t>(i)]);
  cc->empty = cache.pages_capacity() == 0 || pos.empty();
  if (cc->empty) return Status::ok_status();

  // The kernel reads q in the cache's element type for f32 and bf16 (f32 x f32 or bf16 x bf16
  // products); int8 rows are widened exactly, so q stays f32 against them.
  const DType kd = o.storage == KvStorage::kF32 ? DType::kF32 : o.storage == KvStorage::kBF16 ? DType::kBF16 : DType::kI8;
  TensorView qk = q;
  cc->smoothing = cache.maybe_smoothing();
  if (cc->smoothing != nullptr) {
    if (params.softcap > 0)
      return Status::unsupported("attend_cache: softcap " + std::to_string(params.softcap) +
                                 " over a smoothed int8 cache is not exact; create the cache with int8_smoothing off");
    const KvSmoothing& sm = *cc->smoothing;
    const float scale = params.scale > 0 ? params.scale : 1.0f / std::sqrt(static_cast<float>(D));
    const int64_t group = H / HK;
    cc->qs.resize(static_cast<size_t>(n * H * D));
    cc->logit_shift.resize(static_cast<size_t>(H * n));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t c0 = (h / group) * D;
        double dot = 0;
        float* dst = cc->qs.data() + (i * H + h) * D;
        for (int64_t t = 0; t < D; ++t) {
          const float x = q.get(0, i, h, t);
          dst[t] = x * sm.k_scale[static_cast<size_t>(c0 + t)];
          dot += static_cast<double>(x) * sm.k_mean[static_cast<size_t>(c0 + t)];
        }
        cc->logit_shift[static_cast<size_t>(h * n + i)] = static_cast<float>(dot * scale);
      }
    qk = TensorView::contiguous(cc->qs.data(), DType::kF32, 1, n, H, D);
  }
  if (kd == DType::kBF16) {
    cc->qb.ensure(static_cast<size_t>(n * H * D));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t t = 0; t < D; ++t) cc->qb[static_cast<size_t>((i * H + h) * D + t)] = f32_to_bf16(q.get(0, i, h, t));
    qk = TensorView::contiguous(cc->qb.data(), DType::kBF16, 1, n, H, D);
  }
  const TensorView kview = TensorView::contiguous(const_cast<void*>(cache.k_data()), kd, 1, cc->cap_rows, HK, D);
  const TensorView vview = TensorView::contiguous(const_cast<void*>(cache.v_data()), kd, 1, cc->cap_rows, HK, DV);
  AttentionParams ap;
  ap.causal = false;  // visibility is by position, through the spans and the element mask
  ap.scale = params.scale > 0 ? params.scale : 1.0f / std::sqrt(static_cast<float>(D));
  ap.softcap = params.softcap;
  ap.num_threads = params.num_threads;
  if (kd == DType::kI8) {  // the pool's scales, [capacity * P, kv_heads] like its rows
    ap.k_scales = KvScales::contiguous(cache.maybe_k_scales(), cc->cap_rows, HK);
    ap.v_scales = KvScales::contiguous(cache.maybe_v_scales(), cc->cap_rows, HK);
  }
  if (params.maybe_key_bias) {
    // The biased position's physical row in the pool, if the sequence still holds it (sliding
    // windows and eviction drop keys).
    const auto it = std::lower_bound(pos.begin(), pos.end(), params.key_bias_position);
    if (it != pos.end() && *it == params.key_bias_position) {
      const int64_t slot = it - pos.begin();
      ap.maybe_key_bias = params.maybe_key_bias;
      ap.key_bias_index = static_cast<int64_t>((*cc->pages)[static_cast<size_t>(slot / cc->P)]) * cc->P + slot % cc->P;
    }
  }
  ATTNKIT_RETURN_IF_ERROR(core::make_call(qk, kview, vview, out, lse, ap, &cc->call));
  cc->slot_base.assign(static_cast<size_t>(cache.pages_capacity()), -1);
  for (size_t lp = 0; lp < cc->pages->size(); ++lp) cc->slot_base[static_cast<size_t>((*cc->pages)[lp])] = static_cast<int64_t>(lp) * cc->P;
  cc->mctx = MaskCtx{cc->slot_base.data(), cc->P, pos.data(), q_positions, params.window_left};
  cc->emask = core::ElementMask{&position_visible, &cc->mctx};
  return Status::ok_status();
}

}  // namespace

Status attend_cache(const PagedKvCache& cache, int64_t seq, const TensorView& q, const int64_t* q_positions,
                    const CacheAttentionParams& params, const TensorView& out, float* maybe_lse) {
  const KvCacheOptions& o = cache.options();
  const int64_t n = q.shape[1], H = q.shape[2], HK = o.kv_heads, D = o.head_dim, DV = o.head_dim_v;
  const KvCompensation& comp = cache.has_sequence(seq) ? cache.compensation(seq) : KvCompensation();
  const bool has_comp = !comp.empty();
  std::vector<float> lse_local;
  float* lse = maybe_lse;
  if (lse == nullptr && (has_comp || cache.maybe_smoothing() != nullptr)) {
    lse_local.resize(static_cast<size_t>(std::max<int64_t>(0, H * n)));
    lse = lse_local.data();
  }
  CacheCall cc;
  ATTNKIT_RETURN_IF_ERROR(prepare_call(cache, seq, q, q_positions, params, out, lse, &cc));
  const int threads = params.num_threads > 0 ? params.num_threads : omp_get_max_threads();
  const float scale = params.scale > 0 ? params.scale : 1.0f / std::sqrt(static_cast<float>(D));
  const std::vector<int64_t>& lo = cc.lo;
  const std::vector<int64_t>& hi = cc.hi;

  if (cc.empty) {
    // Nothing cached: every row is empty (output 0, LSE -inf) before compensation.
    for (int64_t i = 0; i < n; ++i)
      for (int64_t h = 0; h < H; ++h) {
        float* orow = static_cast<float*>(out.data) + out.offset(0, i, h, 0);
        std::fill(orow, orow + DV, 0.0f);
        if (lse) lse[h * n + i] = kNegInf;
      }
  } else {
    const core::Call& call = cc.call;
    const core::SeqRange range = call.seq(0);
    const bool same_rows = lo.front() == lo.back() && hi.front() == hi.back();
    const int64_t group = H / HK;
    if (same_rows && n <= 16 && n * group <= core::kTileQ) {
      // Decode: every row sees the same slots; split them over the threads.
      std::vector<core::KvSpan> spans;
      for_each_piece(params.slot_ranges, lo[0], hi[0], [&](int64_t a, int64_t b) { slot_spans(*cc.pages, cc.P, a, b, true, &spans); });
      int64_t total = 0;
      for (const auto& sp : spans) total += sp.end - sp.begin;
      const int64_t pieces_target = std::max<int64_t>(1, std::min<int64_t>(2 * threads, total / (4 * core::kTileK)));
      std::vector<core::KvSpan> pieces;
      for (const auto& sp : spans) {
        const int64_t len = sp.end - sp.begin;
        const int64_t np = std::max<int64_t>(1, (pieces_target * len + total - 1) / std::max<int64_t>(total, 1));
        for (int64_t p = 0; p < np; ++p) {
          const int64_t a = sp.begin + len * p / np, b = sp.begin + len * (p + 1) / np;
          if (b > a) pieces.push_back({a, b, true});
        }
      }
      const int64_t rows = n * H, np = static_cast<int64_t>(pieces.size());
      ScratchArray<float> po(static_cast<size_t>(std::max<int64_t>(1, np * rows * DV)));
      ScratchArray<float> pl(static_cast<size_t>(std::max<int64_t>(1, np * rows)));
#pragma omp parallel num_threads(threads)
      {
        core::Workspace ws;
#pragma omp for schedule(dynamic, 1)
        for (int64_t p = 0; p < np; ++p) {
          core::PartialOut part{po.data() + p * rows * DV, pl.data() + p * rows};
          core::attend_keys_all_heads(call, 0, pieces[static_cast<size_t>(p)].begin, pieces[static_cast<size_t>(p)].end, part, &ws);
        }
      }
      std::vector<float> acc(static_cast<size_t>(DV));
      for (int64_t row = 0; row < rows; ++row) {  // partial rows are [heads_q, q_len]
        float l = kNegInf;
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int64_t p = 0; p < np; ++p) merge_state_row(acc.data(), &l, po.data() + (p * rows + row) * DV, pl[static_cast<size_t>(p * rows + row)], DV);
        core::write_final_row(call, range, row / n, row % n, acc.data(), l);
      }
    } else {
      // Several query positions: one job per (query head, row block).
      const int64_t n_blocks = (n + core::kTileQ - 1) / core::kTileQ;
      const int64_t n_items = n_blocks * H;
#pragma omp parallel num_threads(threads)
      {
        core::Workspace ws;
        std::vector<core::KvSpan> spans;
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < n_items; ++it) {
          const int64_t blk = n_blocks - 1 - it / H, h = it % H;  // heaviest (last) blocks first
          const int64_t i0 = blk * core::kTileQ, i1 = std::min(n, i0 + core::kTileQ);
          core::attend_block(call, cc.job(h, i0, i1, &spans), &ws);
        }
      }
    }
  }

  if (cc.smoothing != nullptr && !cc.empty) {
    // Back from the smoothed rows to the true ones: o * v_scale + v_mean (a row's weights sum to
    // 1), LSE + scale * q . k_mean. An empty row (LSE -inf) stays 0.
    const KvSmoothing& sm = *cc.smoothing;
    const int64_t group = H / HK;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t h = 0; h < H; ++h) {
        float& l = lse[h * n + i];
        if (l == kNegInf) continue;
        l += cc.logit_shift[static_cast<size_t>(h * n + i)];
        float* orow = static_cast<float*>(out.data) + out.offset(0, i, h, 0);
        const int64_t c0 = (h / group) * DV;
        for (int64_t t = 0; t < DV; ++t) orow[t] = orow[t] * sm.v_scale[static_cast<size_t>(c0 + t)] + sm.v_mean[static_cast<size_t>(c0 + t)];
      }
  }

  if (has_comp) {
    // The compensation token: logit + ln(count), value v-hat, merged into each finished row.
    const int64_t group = H / HK;
    std::vector<float> qrow(static_cast<size_t>(D));
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t h = 0; h < H; ++h) {
        const int64_t kh = h / group;
        const double cnt = comp.count[static_cast<size_t>(kh)];
        if (cnt <= 0) continue;
        for (int64_t t = 0; t < D; ++t) qrow[static_cast<size_t>(t)] = q.get(0, i, h, t);
        const float lc = logit_of(qrow.data(), comp.key.data() + kh * D, D, scale, params.softcap) + static_cast<float>(std::log(cnt));
        float* orow = static_cast<float*>(out.data) + out.offset(0, i, h, 0);
        merge_state_row(orow, &lse[h * n + i], comp.value.data() + kh * DV, lc, DV);
      }
    }
  }
  return Status::ok_status();
}

// The mass pass of the tile kernel (core::attend_mass) over the same spans as the attention, with
// each row's final LSE from attend_cache (compensation included: its share belongs to no slot).
Status attention_mass(const PagedKvCache& cache, int64_t seq, const TensorView& q, const int64_t* q_positions,
                      int64_t row_begin, const CacheAttentionParams& params, float* mass) {
  const KvCacheOptions& o = cache.options();
  const int64_t n = q.shape[1], H = q.shape[2], HK = o.kv_heads, DV = o.head_dim_v;
  if (mass == nullptr) return Status::invalid_argument("attention_mass: mass is null");
  if (!cache.has_sequence(seq)) return Status::out_of_range("attention_mass: seq " + std::to_string(seq) + " is not a live sequence");
  if (row_begin < 0 || row_begin > n)
    return Status::invalid_argument("attention_mass: row_begin " + std::to_string(row_begin) + " must be in [0, " + std::to_string(n) + "]");
  const int64_t size = cache.size(seq);
  std::fill(mass, mass + HK * size, 0.0f);
  if (row_begin == n || size == 0) return Status::ok_status();
  std::vector<float> obuf(static_cast<size_t>(n * H * DV)), lse(static_cast<size_t>(H * n));
  const TensorView ov = TensorView::contiguous(obuf.data(), DType::kF32, 1, n, H, DV);
  ATTNKIT_RETURN_IF_ERROR(attend_cache(cache, seq, q, q_positions, params, ov, lse.data()));
  CacheCall cc;
  ATTNKIT_RETURN_IF_ERROR(prepare_call(cache, seq, q, q_positions, params, ov, nullptr, &cc));
  if (cc.smoothing != nullptr)  // the mass pass scores the smoothed rows: their LSE, not the true one
    for (size_t r = 0; r < lse.size(); ++r) lse[r] -= cc.logit_shift[r];
  const int threads = params.num_threads > 0 ? params.num_threads : omp_get_max_threads();
  const int64_t group = H / HK;
  const int64_t rows = n - row_begin;
  const int64_t n_blocks = (rows + core::kTileQ - 1) / core::kTileQ;
  const int64_t n_items = n_blocks * H;
  // Per thread, mass over the pool's rows for each kv head; summed into slots at the end.
  std::vector<std::vector<float>> part(static_cast<size_t>(threads));
#pragma omp parallel num_threads(threads)
  {
    std::vector<float>& m = part[static_cast<size_t>(omp_get_thread_num())];
    m.assign(static_cast<size_t>(HK * cc.cap_rows), 0.0f);
    core::Workspace ws;
    std::vector<core::KvSpan> spans;
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < n_items; ++it) {
      const int64_t blk = it / H, h = it % H;
      const int64_t i0 = row_begin + blk * core::kTileQ, i1 = std::min(n, i0 + core::kTileQ);
      core::attend_mass(cc.call, cc.job(h, i0, i1, &spans), lse.data() + h * n + i0, m.data() + (h / group) * cc.cap_rows, &ws);
    }
  }
  const std::vector<int32_t>& pages = cache.page_table(seq);
  const int64_t P = cache.page_size();
  for (const auto& m : part) {
    if (m.empty()) continue;
    for (int64_t kh = 0; kh < HK; ++kh)
      for (int64_t s = 0; s < size; ++s)
        mass[kh * size + s] += m[static_cast<size_t>(kh * cc.cap_rows + static_cast<int64_t>(pages[static_cast<size_t>(s / P)]) * P + s % P)];
  }
  return Status::ok_status();
}

}  // namespace attnkit::kv
