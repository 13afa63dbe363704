// core/attention.cc: validation, scheduling and merging around the tile kernel.
//
// attention() picks one of two schedules over attend_block / attend_keys_all_heads:
//   prefill: one job per (sequence, query head, block of kTileQ queries), dynamic OpenMP schedule
//            with the most expensive jobs first (causal blocks near the end see the most keys);
//   decode:  short queries against long keys: the keys are split across threads, each split
//            visits all heads, and partial states are merged with merge_state_row in split order
//            (deterministic for a fixed thread count).
// Scratch is one Workspace per thread (O(tile)) plus, for decode, one partial row per
// (split, head, query): never O(seq_q x seq_kv).

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/memory.h"
#include "attnkit/threads.h"
#include "core/decode_int8.h"
#include "core/tile_kernel.h"
#include "core/util.h"

namespace attnkit {

namespace core {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Query offsets must cover the packed rows exactly (cu[0] == 0, cu[n] == total): a row outside every
// sequence would be left unwritten in the output. Key offsets may stop short of the packed keys
// (unused keys change no output), as long as they stay inside them.
Status check_cu(const int32_t* cu, int64_t n, int64_t total, const char* name, bool cover_all) {
  if (cu[0] < 0) return Status::invalid_argument(std::string(name) + "[0] = " + std::to_string(cu[0]) + " is negative");
  if (cover_all && cu[0] != 0)
    return Status::invalid_argument(std::string(name) + "[0] = " + std::to_string(cu[0]) +
                                    " must be 0 (every packed row belongs to a sequence)");
  for (int64_t i = 0; i < n; ++i) {
    if (cu[i + 1] < cu[i])
      return Status::invalid_argument(std::string(name) + " is not non-decreasing: " + name + "[" +
                                      std::to_string(i + 1) + "] = " + std::to_string(cu[i + 1]) + " < " + name + "[" +
                                      std::to_string(i) + "] = " + std::to_string(cu[i]));
  }
  if (cu[n] > total)
    return Status::invalid_argument(std::string(name) + "[" + std::to_string(n) + "] = " + std::to_string(cu[n]) +
                                    " exceeds the packed length " + std::to_string(total));
  if (cover_all && cu[n] != total)
    return Status::invalid_argument(std::string(name) + "[" + std::to_string(n) + "] = " + std::to_string(cu[n]) +
                                    " must equal the packed length " + std::to_string(total) +
                                    " (rows after it would belong to no sequence and stay unwritten)");
  return Status();
}

}  // namespace

SeqRange Call::seq(int64_t s) const {
  SeqRange r;
  if (cu_q) {
    r.batch = 0;
    r.q_begin = cu_q[s];
    r.q_len = cu_q[s + 1] - cu_q[s];
    r.k_begin = cu_k[s];
    r.k_len = cu_k[s + 1] - cu_k[s];
  } else {
    r.batch = s;
    r.q_len = q.shape[1];
    r.k_len = k.shape[1];
  }
  return r;
}

void Call::key_range(const SeqRange& r, int64_t r0, int64_t r1, int64_t* lo, int64_t* hi) const {
  // Both bounds grow with the row, so the range of rows [r0, r1) is [lo(r0), hi(r1 - 1)).
  const int64_t off = diag_offset(r);
  const int64_t first = r0 + off, last = r1 - 1 + off;
  int64_t h = r.k_len;
  if (p.causal) h = std::min(h, last + 1);
  if (p.window_right >= 0) h = std::min(h, last + p.window_right + 1);
  int64_t l = p.window_left >= 0 ? std::max<int64_t>(0, first - p.window_left) : 0;
  l = std::min(l, r.k_len);
  h = std::max<int64_t>(h, 0);
  if (h < l) h = l;
  *lo = l;
  *hi = h;
}

int64_t Call::visible_count(const SeqRange& r, int64_t i) const {
  int64_t lo, hi;
  key_range(r, i, i + 1, &lo, &hi);
  const int64_t causal_hi = p.causal ? std::min(r.k_len, i + diag_offset(r) + 1) : r.k_len;
  const int64_t shi = std::max<int64_t>(0, std::min(p.n_sink_tokens, causal_hi));
  return (hi - lo) + std::min(shi, lo) + std::max<int64_t>(0, shi - hi);
}

bool Call::visible(const SeqRange& r, int64_t i, int64_t j) const {
  int64_t lo, hi;
  key_range(r, i, i + 1, &lo, &hi);
  const int64_t causal_hi = p.causal ? std::min(r.k_len, i + diag_offset(r) + 1) : r.k_len;
  return (j >= lo && j < hi) || (j < p.n_sink_tokens && j < causal_hi);
}

float Call::sigmoid_bias(const SeqRange& r) const {
  if (p.sigmoid_bias) return *p.sigmoid_bias;
  return -std::log(static_cast<float>(std::max<int64_t>(1, r.k_len)));
}

Status make_call(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                 float* maybe_lse, const AttentionParams& params, Call* call) {
  ATTNKIT_RETURN_IF_ERROR(check_view(q, "q"));
  ATTNKIT_RETURN_IF_ERROR(check_view(k, "k", /*allow_int8=*/true));
  ATTNKIT_RETURN_IF_ERROR(check_view(v, "v", /*allow_int8=*/true));
  ATTNKIT_RETURN_IF_ERROR(check_view(out, "out"));
  const bool int8_kv = k.dtype == DType::kI8 || v.dtype == DType::kI8;
  if (int8_kv ? k.dtype != v.dtype : (k.dtype != q.dtype || v.dtype != q.dtype))
    return Status::invalid_argument(std::string("dtype mismatch: q is ") + dtype_name(q.dtype) + ", k is " +
                                    dtype_name(k.dtype) + ", v is " + dtype_name(v.dtype) +
                                    "; they must match (or k and v both int8 with q f32, f16 or bf16)");
  if (int8_kv != (params.k_scales.data != nullptr) || int8_kv != (params.v_scales.data != nullptr))
    return Status::invalid_argument(std::string("k_scales.data / v_scales.data are ") +
                                    (params.k_scales.data ? "set" : "null") + " / " + (params.v_scales.data ? "set" : "null") +
                                    " with k and v " + dtype_name(k.dtype) + "; int8 k and v need both, other dtypes neither");
  const int64_t d = q.shape[3], dv = v.shape[3];
  if (d < 1 || d > kMaxHeadDim)
    return Status::invalid_argument("head_dim " + std::to_string(d) + " is not supported; expected 1.." +
                                    std::to_string(kMaxHeadDim));
  if (dv < 1 || dv > kMaxHeadDim)
    return Status::invalid_argument("head_dim_v " + std::to_string(dv) + " (v.shape[3]) is not supported; expected 1.." +
                                    std::to_string(kMaxHeadDim));
  if (k.shape[3] != d)
    return Status::invalid_argument("k.shape " + shape_str(k) + " has head_dim " + std::to_string(k.shape[3]) +
                                    " but q.shape " + shape_str(q) + " has head_dim " + std::to_string(d));
  if (k.shape[0] != q.shape[0] || v.shape[0] != q.shape[0] || out.shape[0] != q.shape[0])
    return Status::invalid_argument("batch mismatch: q.shape " + shape_str(q) + ", k.shape " + shape_str(k) +
                                    ", v.shape " + shape_str(v) + ", out.shape " + shape_str(out));
  if (v.shape[1] != k.shape[1] || v.shape[2] != k.shape[2])
    return Status::invalid_argument("v.shape " + shape_str(v) + " does not match k.shape " + shape_str(k) +
                                    " in seq or heads");
  if (out.shape[1] != q.shape[1] || out.shape[2] != q.shape[2] || out.shape[3] != dv)
    return Status::invalid_argument("out.shape " + shape_str(out) + " must be [batch, seq_q, heads_q, head_dim_v] = [" +
                                    std::to_string(q.shape[0]) + ", " + std::to_string(q.shape[1]) + ", " +
                                    std::to_string(q.shape[2]) + ", " + std::to_string(dv) + "]");
  const int64_t hq = q.shape[2], hkv = k.shape[2];
  if (hq < 1 || hkv < 1)
    return Status::invalid_argument("heads_q " + std::to_string(hq) + " and heads_kv " + std::to_string(hkv) +
                                    " must be at least 1");
  if (hq % hkv != 0)
    return Status::invalid_argument("heads_q " + std::to_string(hq) + " is not a multiple of heads_kv " +
                                    std::to_string(hkv) + " (GQA needs heads_q % heads_kv == 0)");
  const AttentionParams& p = params;
  if (p.window_left < -1)
    return Status::invalid_argument("window_left " + std::to_string(p.window_left) + " is invalid; expected -1 or >= 0");
  if (p.window_right < -1)
    return Status::invalid_argument("window_right " + std::to_string(p.window_right) +
                                    " is invalid; expected -1 or >= 0");
  if (p.causal && p.window_right > 0)
    return Status::invalid_argument("window_right " + std::to_string(p.window_right) +
                                    " is inconsistent with causal=true; expected -1 or 0");
  if (p.n_sink_tokens < 0)
    return Status::invalid_argument("n_sink_tokens " + std::to_string(p.n_sink_tokens) + " is negative");
  if (p.scale && !(std::isfinite(*p.scale)))
    return Status::invalid_argument("scale " + std::to_string(*p.scale) + " is not finite");
  if (!(p.softcap >= 0.0f) || !std::isfinite(p.softcap))
    return Status::invalid_argument("softcap " + std::to_string(p.softcap) + " is invalid; expected 0 (off) or > 0");
  if (!(p.ssmax_s >= 0.0f) || !std::isfinite(p.ssmax_s))
    return Status::invalid_argument("ssmax_s " + std::to_string(p.ssmax_s) + " is invalid; expected 0 (off) or > 0");
  if (p.maybe_key_bias && p.key_bias_index < 0)
    return Status::invalid_argument("key_bias_index " + std::to_string(p.key_bias_index) + " is negative; expected >= 0");
  if (p.sigmoid_bias && !std::isfinite(*p.sigmoid_bias))
    return Status::invalid_argument("sigmoid_bias " + std::to_string(*p.sigmoid_bias) + " is not finite");
  if (!enum_known(p.normalization))
    return Status::invalid_argument("normalization " + std::to_string(static_cast<int>(p.normalization)) +
                                    " is unknown; expected " + enum_choices<Normalization>(", ", true));
  if (maybe_lse && p.normalization != Normalization::kSoftmax)
    return Status::invalid_argument(std::string("lse is only defined for softmax; normalization is ") +
                                    normalization_name(p.normalization));
  if (p.mask.kind != MaskKind::kNone && p.mask.data == nullptr)
    return Status::invalid_argument("mask.data is null for a custom mask of kind " +
                                    std::to_string(static_cast<int>(p.mask.kind)));
  if (!enum_known(p.mask.kind))
    return Status::invalid_argument("mask.kind " + std::to_string(static_cast<int>(p.mask.kind)) + " is unknown");
  int threads = 0;
  ATTNKIT_RETURN_IF_ERROR(resolve_threads(p.num_threads, "num_threads", &threads));
  if (!enum_known(p.path))
    return Status::invalid_argument("path " + std::to_string(static_cast<int>(p.path)) + " is unknown");

  Call& c = *call;
  c = Call();
  c.q = q;
  c.k = k;
  c.v = v;
  c.out = out;
  c.maybe_lse = maybe_lse;
  c.p = params;
  c.head_dim = d;
  c.head_dim_v = dv;
  c.heads_q = hq;
  c.heads_kv = hkv;
  c.group = hq / hkv;
  c.scale = p.scale ? *p.scale : 1.0f / std::sqrt(static_cast<float>(d));
  c.threads = threads;

  const bool varlen = p.maybe_cu_seqlens_q || p.maybe_cu_seqlens_k;
  if (varlen) {
    if (!p.maybe_cu_seqlens_q || !p.maybe_cu_seqlens_k)
      return Status::invalid_argument("cu_seqlens_q and cu_seqlens_k must be given together");
    if (p.n_seqs < 1) return Status::invalid_argument("n_seqs " + std::to_string(p.n_seqs) + " must be >= 1 with cu_seqlens");
    if (q.shape[0] != 1)
      return Status::invalid_argument("q.shape " + shape_str(q) + " must have batch 1 with cu_seqlens (packed layout)");
    ATTNKIT_RETURN_IF_ERROR(check_cu(p.maybe_cu_seqlens_q, p.n_seqs, q.shape[1], "cu_seqlens_q", true));
    ATTNKIT_RETURN_IF_ERROR(check_cu(p.maybe_cu_seqlens_k, p.n_seqs, k.shape[1], "cu_seqlens_k", false));
    c.cu_q = p.maybe_cu_seqlens_q;
    c.cu_k = p.maybe_cu_seqlens_k;
    c.n_seqs = p.n_seqs;
  } else {
    c.n_seqs = q.shape[0];
  }
  c.total_q = q.shape[1];
  return Status();
}

void dense_spans(const Call& call, const SeqRange& r, int64_t row_begin, int64_t row_end, std::vector<KvSpan>* out) {
  out->clear();
  if (row_end <= row_begin || r.k_len == 0) return;
  int64_t lo, hi;
  call.key_range(r, row_begin, row_end, &lo, &hi);
  const int64_t causal_hi =
      call.p.causal ? std::min(r.k_len, row_end - 1 + call.diag_offset(r) + 1) : r.k_len;
  const int64_t shi = std::max<int64_t>(0, std::min(call.p.n_sink_tokens, causal_hi));
  if (shi > 0 && shi >= lo) {
    out->push_back({0, std::max(hi, shi), false});
    return;
  }
  if (shi > 0) out->push_back({0, shi, false});
  if (hi > lo) out->push_back({lo, hi, false});
}

void write_final_row(const Call& c, const SeqRange& r, int64_t head, int64_t i, const float* o, float lse,
                     bool add_sink) {
  float w = 1.0f;
  float lse_out = lse;
  if (c.p.normalization == Normalization::kSoftmax && add_sink && c.p.maybe_sink_logits) {
    // The sink logit joins the denominator only: o' = o * e^{lse} / (e^{lse} + e^{sink}).
    const float sl = c.p.maybe_sink_logits[head];
    if (lse == kNegInf) {
      w = 0.0f;
      lse_out = sl;
    } else {
      const float m = std::max(lse, sl);
      const float a = std::exp(lse - m), b = std::exp(sl - m);
      w = a / (a + b);
      lse_out = m + std::log(a + b);
    }
  }
  const TensorView& out = c.out;
  const int64_t base = out.offset(r.batch, r.q_begin + i, head, 0);
  if (out.dtype == DType::kF32 && out.stride[3] == 1) {
    float* dst = static_cast<float*>(out.data) + base;
    for (int64_t k = 0; k < c.head_dim_v; ++k) dst[k] = o[k] * w;
  } else {
    for (int64_t k = 0; k < c.head_dim_v; ++k) store_from_f32(out.data, out.dtype, base + k * out.stride[3], o[k] * w);
  }
  if (c.maybe_lse) c.maybe_lse[(r.batch * c.heads_q + head) * c.total_q + r.q_begin + i] = lse_out;
}

namespace {

struct PrefillItem {
  int64_t seq, head, row_begin, row_end;
  double cost;
};

void run_prefill(const Call& c, int threads) {
  std::vector<PrefillItem> items;
  std::vector<KvSpan> spans;
  for (int64_t s = 0; s < c.n_seqs; ++s) {
    const SeqRange r = c.seq(s);
    for (int64_t i0 = 0; i0 < r.q_len; i0 += kTileQ) {
      const int64_t i1 = std::min(r.q_len, i0 + kTileQ);
      dense_spans(c, r, i0, i1, &spans);
      double keys = 0;
      for (const auto& sp : spans) keys += static_cast<double>(sp.end - sp.begin);
      for (int64_t h = 0; h < c.heads_q; ++h) items.push_back({s, h, i0, i1, keys * static_cast<double>(i1 - i0)});
    }
  }
  // Most expensive first so the dynamic schedule ends balanced; stable keeps the order fixed.
  std::stable_sort(items.begin(), items.end(), [](const PrefillItem& a, const PrefillItem& b) { return a.cost > b.cost; });
  const int64_t n = static_cast<int64_t>(items.size());
#pragma omp parallel num_threads(threads)
  {
    Workspace ws;
    std::vector<KvSpan> sp;
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < n; ++it) {
      const PrefillItem& item = items[it];
      const SeqRange r = c.seq(item.seq);
      dense_spans(c, r, item.row_begin, item.row_end, &sp);
      BlockJob job;
      job.seq = item.seq;
      job.head_q = item.head;
      job.row_begin = item.row_begin;
      job.row_end = item.row_end;
      job.spans = sp.data();
      job.n_spans = static_cast<int>(sp.size());
      attend_block(c, job, &ws);
    }
  }
}

struct DecodeItem {
  int64_t seq, key_begin, key_end, slot;  // slot: index of its partial buffer
};

void run_decode(const Call& c, int threads) {
  // Split each sequence's visible keys into pieces of at least 4 tiles, about 2 per thread.
  std::vector<DecodeItem> items;
  std::vector<int64_t> first_item(c.n_seqs + 1, 0);
  std::vector<KvSpan> spans;
  const int64_t min_piece = 4 * kTileK;
  const int64_t per_seq_target = std::max<int64_t>(1, (2 * threads + c.n_seqs - 1) / c.n_seqs);
  for (int64_t s = 0; s < c.n_seqs; ++s) {
    first_item[s] = static_cast<int64_t>(items.size());
    const SeqRange r = c.seq(s);
    dense_spans(c, r, 0, r.q_len, &spans);
    int64_t total = 0;
    for (const auto& sp : spans) total += sp.end - sp.begin;
    const int64_t pieces = std::max<int64_t>(1, std::min(per_seq_target, total / min_piece));
    for (const auto& sp : spans) {
      const int64_t len = sp.end - sp.begin;
      const int64_t np = std::max<int64_t>(1, (pieces * len + total - 1) / std::max<int64_t>(total, 1));
      for (int64_t p = 0; p < np; ++p) {
        const int64_t kb = sp.begin + len * p / np, ke = sp.begin + len * (p + 1) / np;
        if (ke > kb) items.push_back({s, kb, ke, static_cast<int64_t>(items.size())});
      }
    }
  }
  first_item[c.n_seqs] = static_cast<int64_t>(items.size());
  int64_t max_rows = 0;
  for (int64_t s = 0; s < c.n_seqs; ++s) max_rows = std::max(max_rows, c.seq(s).q_len * c.heads_q);
  const int64_t dv = c.head_dim_v;
  ScratchArray<float> part_o(static_cast<size_t>(std::max<int64_t>(1, items.size() * max_rows * dv)));
  ScratchArray<float> part_lse(static_cast<size_t>(std::max<int64_t>(1, items.size() * max_rows)));
  const int64_t n = static_cast<int64_t>(items.size());
#pragma omp parallel num_threads(threads)
  {
    Workspace ws;
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < n; ++it) {
      const DecodeItem& item = items[it];
      PartialOut po{part_o.data() + item.slot * max_rows * dv, part_lse.data() + item.slot * max_rows};
      // int8 K/V take the integer scores where they apply (decode_int8.h).
      if (!attend_keys_int8(c, item.seq, item.key_begin, item.key_end, po, &ws))
        attend_keys_all_heads(c, item.seq, item.key_begin, item.key_end, po, &ws);
    }
  }
  // Merge the pieces of each row in key order.
  const bool softmax = c.p.normalization == Normalization::kSoftmax;
  for (int64_t s = 0; s < c.n_seqs; ++s) {
    const SeqRange r = c.seq(s);
    const int64_t rows = r.q_len * c.heads_q;
    const int64_t i_begin = first_item[s], i_end = first_item[s + 1];
#pragma omp parallel num_threads(threads)
    {
      std::vector<float> acc(static_cast<size_t>(dv));
#pragma omp for schedule(static)
      for (int64_t row = 0; row < rows; ++row) {
        float lse = kNegInf;
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int64_t it = i_begin; it < i_end; ++it) {
          const float* o = part_o.data() + items[it].slot * max_rows * dv + row * dv;
          const float l = part_lse[items[it].slot * max_rows + row];
          if (softmax) {
            merge_state_row(acc.data(), &lse, o, l, dv);
          } else {
            for (int64_t k = 0; k < dv; ++k) acc[k] += o[k];
          }
        }
        write_final_row(c, r, row / r.q_len, row % r.q_len, acc.data(), softmax ? lse : 0.0f);
      }
    }
  }
}

bool use_decode_path(const Call& c) {
  if (c.p.path == ExecPath::kDecode) return true;
  if (c.p.path == ExecPath::kPrefill) return false;
  int64_t max_q = 0, max_k = 0;
  for (int64_t s = 0; s < c.n_seqs; ++s) {
    const SeqRange r = c.seq(s);
    max_q = std::max(max_q, r.q_len);
    max_k = std::max(max_k, r.k_len);
  }
  // Few query rows per kv head and many keys: parallelism must come from the key axis.
  return max_q <= 16 && max_q * c.group <= kTileQ && max_k >= 4 * kTileK;
}

}  // namespace
}  // namespace core

namespace {
// Every scale of int8 K and V is finite and >= 0 (the shapes were checked by make_call). Dense
// scales are scanned as one flat, vectorizable run first; the indexed walk below names the bad one.
Status check_kv_scales(const core::Call& c) {
  if (c.k.dtype != DType::kI8) return Status::ok_status();
  const int64_t rows = c.k.shape[1] * c.heads_kv;
  for (int which = 0; which < 2; ++which) {
    const KvScales& sc = which == 0 ? c.p.k_scales : c.p.v_scales;
    if (sc.stride_head == 1 && sc.stride_seq == c.heads_kv && (c.k.shape[0] == 1 || sc.stride_batch == rows)) {
      const int64_t n = c.k.shape[0] * rows;
      bool ok = true;
      for (int64_t i = 0; i < n; ++i) ok &= (sc.data[i] >= 0.0f) & (sc.data[i] <= std::numeric_limits<float>::max());
      if (ok) continue;
    }
    for (int64_t b = 0; b < c.k.shape[0]; ++b)
      for (int64_t j = 0; j < c.k.shape[1]; ++j)
        for (int64_t h = 0; h < c.heads_kv; ++h) {
          const float x = sc.at(b, j, h);
          if (!(x >= 0.0f && x <= std::numeric_limits<float>::max()))
            return Status::invalid_argument(std::string(which == 0 ? "k_scales" : "v_scales") + "[" + std::to_string(b) + ", " +
                                            std::to_string(j) + ", " + std::to_string(h) + "] = " + std::to_string(x) +
                                            " is invalid; expected a finite scale >= 0");
        }
  }
  return Status::ok_status();
}
}  // namespace

Status validate_attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                          float* maybe_lse, const AttentionParams& params) {
  core::Call c;
  ATTNKIT_RETURN_IF_ERROR(core::make_call(q, k, v, out, maybe_lse, params, &c));
  return check_kv_scales(c);
}

Status attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                 float* maybe_lse, const AttentionParams& params) {
  core::Call c;
  ATTNKIT_RETURN_IF_ERROR(core::make_call(q, k, v, out, maybe_lse, params, &c));
  ATTNKIT_RETURN_IF_ERROR(check_kv_scales(c));
  if (core::use_decode_path(c)) {
    core::run_decode(c, c.threads);
  } else {
    core::run_prefill(c, c.threads);
  }
  return Status();
}

Status merge_states(const TensorView& o_a, const float* lse_a, const TensorView& o_b, const float* lse_b,
                    const TensorView& out, float* lse_out) {
  for (const auto* t : {&o_a, &o_b, &out}) {
    if (t->data == nullptr) return Status::invalid_argument("merge_states: an output/state view has null data");
    if (static_cast<int>(t->dtype) > 2) return Status::unsupported("merge_states: unsupported dtype");
  }
  if (!lse_a || !lse_b || !lse_out) return Status::invalid_argument("merge_states: lse_a, lse_b and lse_out must be non-null");
  if (o_a.shape != o_b.shape || o_a.shape != out.shape)
    return Status::invalid_argument("merge_states: shapes differ: o_a " + core::shape_str(o_a) + ", o_b " +
                                    core::shape_str(o_b) + ", out " + core::shape_str(out));
  const int64_t B = o_a.shape[0], S = o_a.shape[1], H = o_a.shape[2], D = o_a.shape[3];
  if (D < 1) return Status::invalid_argument("merge_states: dim " + std::to_string(D) + " must be >= 1");
#pragma omp parallel
  {
    std::vector<float> a(static_cast<size_t>(D)), b(static_cast<size_t>(D));
#pragma omp for collapse(2) schedule(static)
    for (int64_t bi = 0; bi < B; ++bi) {
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t s = 0; s < S; ++s) {
          const int64_t li = (bi * H + h) * S + s;
          for (int64_t k = 0; k < D; ++k) {
            a[k] = o_a.get(bi, s, h, k);
            b[k] = o_b.get(bi, s, h, k);
          }
          float l = lse_a[li];
          merge_state_row(a.data(), &l, b.data(), lse_b[li], D);
          if (l == -std::numeric_limits<float>::infinity()) std::fill(a.begin(), a.end(), 0.0f);
          for (int64_t k = 0; k < D; ++k) out.set(bi, s, h, k, a[k]);
          lse_out[li] = l;
        }
      }
    }
  }
  return Status();
}

double attention_flops(int64_t batch, int64_t seq_q, int64_t seq_kv, int64_t heads_q, int64_t head_dim,
                       int64_t head_dim_v, bool causal) {
  double pairs = 0;
  if (!causal) {
    pairs = static_cast<double>(seq_q) * static_cast<double>(seq_kv);
  } else {
    // Bottom-right aligned: row i sees min(seq_kv, max(0, i + seq_kv - seq_q + 1)) keys.
    for (int64_t i = 0; i < seq_q; ++i)
      pairs += static_cast<double>(std::min(seq_kv, std::max<int64_t>(0, i + seq_kv - seq_q + 1)));
  }
  return static_cast<double>(batch) * static_cast<double>(heads_q) * pairs * 2.0 *
         static_cast<double>(head_dim + head_dim_v);
}

double attention_bytes(int64_t batch, int64_t seq_q, int64_t seq_kv, int64_t heads_q, int64_t heads_kv,
                       int64_t head_dim, int64_t head_dim_v, size_t in_elem_bytes, size_t out_elem_bytes) {
  const double b = static_cast<double>(batch);
  const double q = b * seq_q * heads_q * head_dim;
  const double kv = b * seq_kv * heads_kv * (head_dim + head_dim_v);
  const double o = b * seq_q * heads_q * head_dim_v;
  return (q + kv) * static_cast<double>(in_elem_bytes) + o * static_cast<double>(out_elem_bytes);
}

std::string simd_target_name() { return core::dispatched_target_name(); }

}  // namespace attnkit
