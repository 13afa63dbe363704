#include "testing/attn_case.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <tuple>

#include "core/tile_kernel.h"

namespace attnkit::testing {
namespace {

std::string fmt_float(float x) {
  // Identifier-safe: 0.25 -> 0p25, -1.5 -> m1p5.
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", static_cast<double>(x));
  std::string s;
  for (const char* p = buf; *p; ++p) s += *p == '.' ? 'p' : (*p == '-' ? 'm' : *p);
  return s;
}

std::string fmt_int(int64_t x) { return x < 0 ? "m" + std::to_string(-x) : std::to_string(x); }

// Sequence lengths of a varlen case: decreasing and distinct where possible, all >= 1.
std::vector<int64_t> varlen_lengths(int64_t n, int64_t max_len) {
  std::vector<int64_t> lens;
  for (int64_t s = 0; s < n; ++s) lens.push_back(std::max<int64_t>(1, max_len - s * max_len / (n + 1)));
  return lens;
}

AttnCase base(int64_t sq, int64_t sk, int64_t hq, int64_t hkv, int64_t d) {
  AttnCase c;
  c.seq_q = sq;
  c.seq_kv = sk;
  c.heads_q = hq;
  c.heads_kv = hkv;
  c.head_dim = d;
  c.head_dim_v = d;
  return c;
}

// Seeds differ per case so that no two cases share their random inputs.
void number(std::vector<AttnCase>* cases, uint64_t salt) {
  for (size_t i = 0; i < cases->size(); ++i) (*cases)[i].seed = salt * 1000003ull + i;
}

}  // namespace

bool long_tests_enabled() {
  const char* e = std::getenv("ATTNKIT_LONG_TESTS");
  return e != nullptr && std::strcmp(e, "1") == 0;
}

std::string AttnCase::name() const {
  std::string n = "b" + std::to_string(batch) + "_q" + std::to_string(seq_q) + "_k" + std::to_string(seq_kv) + "_h" +
                  std::to_string(heads_q) + "x" + std::to_string(heads_kv) + "_d" + std::to_string(head_dim);
  if (head_dim_v != head_dim) n += "v" + std::to_string(head_dim_v);
  n += std::string("_") + dtype_name(dtype);
  if (int8_kv) n += "_int8kv";
  if (out_dtype != dtype) n += std::string("to") + dtype_name(out_dtype);
  if (causal) n += causal_align == CausalAlign::kBottomRight ? "_causal" : "_causalTL";
  if (window_left >= 0 || window_right >= 0) n += "_win" + fmt_int(window_left) + "_" + fmt_int(window_right);
  if (n_sink_tokens > 0) n += "_sinks" + std::to_string(n_sink_tokens);
  if (sink_logits) n += "_sinklogit";
  if (mask == MaskKind::kBoolean) n += "_boolmask";
  if (mask == MaskKind::kAdditive) n += "_addmask";
  if (mask != MaskKind::kNone && mask_broadcast_heads) n += "bcast";
  if (scale) n += "_scale" + fmt_float(*scale);
  if (softcap > 0.0f) n += "_softcap" + fmt_float(softcap);
  if (alibi) n += "_alibi";
  if (ssmax_s != 0.0f) n += "_ssmax" + fmt_float(ssmax_s);
  if (temperature) n += "_temp";
  if (key_bias_index >= 0) n += "_keybias" + std::to_string(key_bias_index);
  if (normalization != Normalization::kSoftmax) n += std::string("_") + normalization_name(normalization);
  if (sigmoid_bias) n += "_bias" + fmt_float(*sigmoid_bias);
  if (varlen) n += "_varlen";
  if (layout != Layout::kContiguous) n += std::string("_") + layout_name(layout);
  if (misaligned) n += "_misaligned";
  if (!lse_enabled()) n += "_nolse";
  if (path == ExecPath::kPrefill) n += "_prefill";
  if (path == ExecPath::kDecode) n += "_decode";
  if (num_threads > 0) n += "_t" + std::to_string(num_threads);
  if (input_range != 1.0f) n += "_range" + fmt_float(input_range);
  return n;
}

double AttnCase::cost() const {
  return static_cast<double>(batch) * static_cast<double>(seq_q) * static_cast<double>(seq_kv) *
         static_cast<double>(heads_q) * static_cast<double>(head_dim + head_dim_v);
}

void PrintTo(const AttnCase& c, std::ostream* os) { *os << c.name() << " seed " << c.seed; }

void CaseData::reset_outputs() {
  out.fill_canary();
  lse.fill_canary();
}

float quantize_int8_row(const float* x, int64_t n, int8_t* q) {
  float amax = 0.0f;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float scale = amax / 127.0f;
  const float inv = scale > 0 ? 1.0f / scale : 0.0f;
  for (int64_t i = 0; i < n; ++i) q[i] = static_cast<int8_t>(std::lrint(std::clamp(x[i] * inv, -127.0f, 127.0f)));
  return scale;
}

namespace {
// An int8 K or V tensor t (already shaped): uniform f32 values in [lo, hi), quantized row by row
// (one row = one token of one kv head); the f32 values, their dequantized copies and the scales
// are kept for the reference and the error bound.
void make_int8_kv(uint64_t seed, float lo, float hi, TestTensor* t, std::vector<float>* orig, std::vector<float>* deq,
                  std::vector<float>* scales) {
  const TensorView& v = t->view();
  TestTensor f(DType::kF32, v.shape[0], v.shape[1], v.shape[2], v.shape[3]);
  f.fill_uniform(seed, lo, hi);
  *orig = f.to_dense();
  const int64_t dim = v.shape[3], rows = v.shape[0] * v.shape[1] * v.shape[2];
  deq->resize(orig->size());
  scales->resize(static_cast<size_t>(rows));
  std::vector<float> ints(orig->size());
  std::vector<int8_t> qrow(static_cast<size_t>(dim));
  for (int64_t r = 0; r < rows; ++r) {
    const float s = quantize_int8_row(orig->data() + r * dim, dim, qrow.data());
    (*scales)[static_cast<size_t>(r)] = s;
    for (int64_t i = 0; i < dim; ++i) {
      ints[static_cast<size_t>(r * dim + i)] = qrow[static_cast<size_t>(i)];
      (*deq)[static_cast<size_t>(r * dim + i)] = s * static_cast<float>(qrow[static_cast<size_t>(i)]);
    }
  }
  t->from_dense(ints);
}
}  // namespace

std::unique_ptr<CaseData> make_case_data(const AttnCase& c) {
  auto d = std::make_unique<CaseData>();
  d->c = c;
  Rng rng(c.seed);
  AttentionParams& p = d->params;
  int64_t rows_q = c.seq_q, rows_k = c.seq_kv, batch = c.batch;
  if (c.varlen) {
    const std::vector<int64_t> lq = varlen_lengths(c.batch, c.seq_q), lk = varlen_lengths(c.batch, c.seq_kv);
    d->cu_q = {0};
    d->cu_k = {0};
    for (int64_t s = 0; s < c.batch; ++s) {
      d->cu_q.push_back(static_cast<int32_t>(d->cu_q.back() + lq[s]));
      d->cu_k.push_back(static_cast<int32_t>(d->cu_k.back() + lk[s]));
    }
    rows_q = d->cu_q.back();
    rows_k = d->cu_k.back();
    batch = 1;
    p.maybe_cu_seqlens_q = d->cu_q.data();
    p.maybe_cu_seqlens_k = d->cu_k.data();
    p.n_seqs = c.batch;
  }
  d->q = TestTensor(c.dtype, batch, rows_q, c.heads_q, c.head_dim, c.layout, c.misaligned);
  const DType kv_dtype = c.int8_kv ? DType::kI8 : c.dtype;
  d->k = TestTensor(kv_dtype, batch, rows_k, c.heads_kv, c.head_dim, c.layout, c.misaligned);
  d->v = TestTensor(kv_dtype, batch, rows_k, c.heads_kv, c.head_dim_v, c.layout, c.misaligned);
  d->out = TestTensor(c.out_dtype, batch, rows_q, c.heads_q, c.head_dim_v, c.layout, c.misaligned);
  d->lse = TestTensor(DType::kF32, 1, 1, 1, batch * c.heads_q * rows_q, Layout::kContiguous, c.misaligned);
  d->q.fill_uniform(rng.next_u64(), -c.input_range, c.input_range);
  if (c.int8_kv) {
    make_int8_kv(rng.next_u64(), -c.input_range, c.input_range, &d->k, &d->k_f32, &d->k_deq, &d->k_scales);
    make_int8_kv(rng.next_u64(), -1.0f, 1.0f, &d->v, &d->v_f32, &d->v_deq, &d->v_scales);
    p.k_scales = KvScales::contiguous(d->k_scales.data(), rows_k, c.heads_kv);
    p.v_scales = KvScales::contiguous(d->v_scales.data(), rows_k, c.heads_kv);
  } else {
    d->k.fill_uniform(rng.next_u64(), -c.input_range, c.input_range);
    d->v.fill_uniform(rng.next_u64(), -1.0f, 1.0f);
  }

  p.causal = c.causal;
  p.causal_align = c.causal_align;
  p.window_left = c.window_left;
  p.window_right = c.window_right;
  p.n_sink_tokens = c.n_sink_tokens;
  if (c.sink_logits) {
    for (int64_t h = 0; h < c.heads_q; ++h) d->sink_logits.push_back(rng.uniform(-1.0f, 2.0f));
    p.maybe_sink_logits = d->sink_logits.data();
  }
  if (c.mask != MaskKind::kNone) {
    // [n_seqs or batch, heads_q (or 1 broadcast), seq_q, seq_kv], indexed within each sequence.
    const int64_t mh = c.mask_broadcast_heads ? 1 : c.heads_q;
    const int64_t n = c.batch * mh * c.seq_q * c.seq_kv;
    p.mask.kind = c.mask;
    p.mask.stride_k = 1;
    p.mask.stride_q = c.seq_kv;
    p.mask.stride_head = c.mask_broadcast_heads ? 0 : c.seq_q * c.seq_kv;
    p.mask.stride_batch = mh * c.seq_q * c.seq_kv;
    // Row 1 of the first sequence and head is hidden entirely: a fully masked row on purpose.
    const auto hidden_row = [&](int64_t idx) { return idx / c.seq_kv == std::min<int64_t>(1, c.seq_q - 1); };
    if (c.mask == MaskKind::kBoolean) {
      d->boolean_mask.resize(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) d->boolean_mask[i] = (rng.uniform() < 0.75 && !hidden_row(i)) ? 1 : 0;
      p.mask.data = d->boolean_mask.data();
    } else {
      d->additive_mask.resize(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) {
        const bool hide = rng.uniform() < 0.15 || hidden_row(i);
        d->additive_mask[i] = hide ? -std::numeric_limits<float>::infinity() : rng.uniform(-3.0f, 1.0f);
      }
      p.mask.data = d->additive_mask.data();
    }
  }
  p.scale = c.scale;
  p.softcap = c.softcap;
  if (c.alibi) {
    // The geometric slopes of Press et al. (2022): 2^(-8 (h + 1) / H).
    for (int64_t h = 0; h < c.heads_q; ++h) {
      d->alibi_slopes.push_back(std::exp2(-8.0f * static_cast<float>(h + 1) / static_cast<float>(c.heads_q)));
    }
    p.maybe_alibi_slopes = d->alibi_slopes.data();
  }
  p.ssmax_s = c.ssmax_s;
  if (c.temperature) {
    for (int64_t h = 0; h < c.heads_q; ++h) d->temperature.push_back(rng.uniform(0.5f, 2.0f));
    p.maybe_head_temperature = d->temperature.data();
  }
  if (c.key_bias_index >= 0) {
    // Both signs and a large one, as ZeroTuning's ln(gamma) for gamma in about [0.05, 20].
    for (int64_t h = 0; h < c.heads_q; ++h) d->key_bias.push_back(h % 3 == 2 ? 3.0f : rng.uniform(-3.0f, 3.0f));
    p.maybe_key_bias = d->key_bias.data();
    p.key_bias_index = c.key_bias_index;
  }
  p.normalization = c.normalization;
  p.sigmoid_bias = c.sigmoid_bias;
  p.num_threads = c.num_threads;
  p.path = c.path;
  return d;
}

std::vector<int64_t> tile_edge_lengths() {
  std::vector<int64_t> l;
  for (int64_t t : {core::kTileQ, core::kTileK, 2 * core::kTileK}) {
    for (int64_t x : {t - 1, t, t + 1}) {
      bool seen = false;
      for (int64_t y : l) seen = seen || y == x;
      if (!seen) l.push_back(x);
    }
  }
  return l;
}

std::vector<AttnCase> head_dim_cases() {
  std::vector<AttnCase> cases;
  const std::vector<int64_t> dims = {1, 3, 16, 17, 33, 40, 64, 80, 96, 127, 128, 129, 256, 257, 511, 512};
  for (int64_t d : dims) {
    for (bool causal : {false, true}) {
      AttnCase c = base(37, 113, 2, 1, d);
      c.causal = causal;
      cases.push_back(c);
      if (long_tests_enabled()) {
        AttnCase l = base(129, 257, 4, 2, d);
        l.causal = causal;
        cases.push_back(l);
        l = base(1, 501, 4, 1, d);
        l.causal = causal;
        cases.push_back(l);
      }
    }
  }
  // head_dim_v different from head_dim (MLA-style shapes).
  for (auto [d, dv] : {std::pair<int64_t, int64_t>{64, 32}, {40, 128}, {3, 17}, {192, 128}}) {
    AttnCase c = base(65, 129, 2, 2, d);
    c.head_dim_v = dv;
    c.causal = true;
    cases.push_back(c);
  }
  number(&cases, 1);
  return cases;
}

std::vector<AttnCase> length_cases() {
  std::vector<AttnCase> cases;
  std::vector<int64_t> lens = {1, 37, 113, 501, 1023};
  for (int64_t t : tile_edge_lengths()) lens.push_back(t);
  for (int64_t n : lens) {
    for (bool causal : {false, true}) {
      AttnCase c = base(n, n, 2, 1, 64);
      c.causal = causal;
      cases.push_back(c);
    }
  }
  // Sq != Sk, including the decode shape and Sq > Sk (bottom-right causal then hides the first rows).
  const std::vector<std::pair<int64_t, int64_t>> rect = {{1, 1023}, {1, 4097}, {37, 501},  {113, 37},
                                                         {129, 63}, {65, 1023}, {63, 4097}, {501, 1023}};
  for (auto [sq, sk] : rect) {
    for (bool causal : {false, true}) {
      AttnCase c = base(sq, sk, 2, 1, 64);
      c.causal = causal;
      cases.push_back(c);
    }
  }
  // The longest length only once in the default suite (causal halves the reference's work).
  AttnCase longest = base(4097, 4097, 1, 1, 64);
  longest.causal = true;
  cases.push_back(longest);
  if (long_tests_enabled()) {
    std::vector<int64_t> all = lens;
    all.push_back(4097);
    for (int64_t sq : all) {
      for (int64_t sk : all) {
        for (bool causal : {false, true}) {
          AttnCase c = base(sq, sk, 2, 1, 64);
          c.causal = causal;
          if (c.cost() <= 4.0e9) cases.push_back(c);
        }
      }
    }
    for (int64_t d : {128, 256}) {
      AttnCase c = base(4097, 4097, 1, 1, d);
      cases.push_back(c);
    }
  }
  number(&cases, 2);
  return cases;
}

std::vector<AttnCase> gqa_cases() {
  std::vector<AttnCase> cases;
  const std::vector<std::pair<int64_t, int64_t>> heads = {{4, 4}, {4, 2}, {8, 2}, {16, 2}, {8, 1}};  // 1,2,4,8, MQA
  for (auto [hq, hkv] : heads) {
    for (bool causal : {false, true}) {
      AttnCase c = base(129, 257, hq, hkv, 64);
      c.causal = causal;
      cases.push_back(c);
    }
    AttnCase dec = base(1, 1023, hq, hkv, 128);
    cases.push_back(dec);
    if (long_tests_enabled()) {
      for (int64_t d : {40, 80, 96, 256}) {
        AttnCase c = base(257, 513, hq, hkv, d);
        c.causal = true;
        c.batch = 2;
        cases.push_back(c);
      }
    }
  }
  number(&cases, 3);
  return cases;
}

std::vector<AttnCase> mask_hook_cases() {
  std::vector<AttnCase> cases;
  // Square, more keys than queries, more queries than keys (bottom-right causal masks rows).
  std::vector<AttnCase> shapes = {base(129, 129, 4, 2, 64), base(65, 200, 4, 2, 40), base(150, 70, 2, 1, 64)};
  if (long_tests_enabled()) {
    shapes.push_back(base(1, 700, 4, 1, 128));
    shapes.push_back(base(257, 1023, 8, 2, 64));
    shapes.push_back(base(129, 129, 2, 2, 17));
  }
  for (const AttnCase& s : shapes) {
    std::vector<AttnCase> v;
    auto add = [&](auto&& edit) {
      AttnCase c = s;
      edit(c);
      v.push_back(c);
    };
    add([](AttnCase& c) { c.causal = true; });
    add([](AttnCase& c) { c.causal = true; c.causal_align = CausalAlign::kTopLeft; });
    add([](AttnCase& c) { c.window_left = 32; });
    add([](AttnCase& c) { c.window_right = 16; });
    add([](AttnCase& c) { c.window_left = 20; c.window_right = 7; });
    add([](AttnCase& c) { c.window_left = 0; c.window_right = 0; });
    add([](AttnCase& c) { c.causal = true; c.window_left = 48; c.window_right = 0; });
    add([](AttnCase& c) { c.causal = true; c.causal_align = CausalAlign::kTopLeft; c.window_left = 10; });
    add([](AttnCase& c) { c.causal = true; c.window_left = 16; c.n_sink_tokens = 4; });
    add([](AttnCase& c) { c.window_left = 10; c.window_right = 10; c.n_sink_tokens = 3; });
    add([](AttnCase& c) { c.n_sink_tokens = 5; c.causal = true; });
    add([](AttnCase& c) { c.sink_logits = true; });
    add([](AttnCase& c) { c.sink_logits = true; c.causal = true; c.window_left = 24; });
    add([](AttnCase& c) { c.mask = MaskKind::kBoolean; });
    add([](AttnCase& c) { c.mask = MaskKind::kBoolean; c.mask_broadcast_heads = true; c.causal = true; });
    add([](AttnCase& c) { c.mask = MaskKind::kAdditive; });
    add([](AttnCase& c) { c.mask = MaskKind::kAdditive; c.causal = true; c.sink_logits = true; });
    add([](AttnCase& c) { c.mask = MaskKind::kAdditive; c.mask_broadcast_heads = true; c.window_left = 30; });
    add([](AttnCase& c) { c.softcap = 5.0f; c.scale = 1.0f; c.input_range = 2.0f; });
    add([](AttnCase& c) { c.softcap = 30.0f; c.causal = true; });
    add([](AttnCase& c) { c.alibi = true; c.causal = true; });
    add([](AttnCase& c) { c.alibi = true; });
    add([](AttnCase& c) { c.ssmax_s = 0.5f; c.causal = true; });
    add([](AttnCase& c) { c.ssmax_s = 0.4f; c.window_left = 20; c.n_sink_tokens = 2; });
    add([](AttnCase& c) { c.temperature = true; });
    add([](AttnCase& c) { c.key_bias_index = 0; c.causal = true; });
    add([](AttnCase& c) { c.key_bias_index = 0; c.causal = true; c.window_left = 24; c.softcap = 30.0f; });
    add([](AttnCase& c) { c.key_bias_index = 70; c.sink_logits = true; });
    add([](AttnCase& c) { c.key_bias_index = 0; c.causal = true; c.path = ExecPath::kDecode; });
    add([](AttnCase& c) { c.key_bias_index = 1; c.normalization = Normalization::kSigmoid; });
    add([](AttnCase& c) { c.key_bias_index = 0; c.varlen = true; c.batch = 3; c.causal = true; });
    add([](AttnCase& c) { c.scale = 0.3f; c.causal = true; });
    // Logits hundreds apart: most weights underflow (exp_nonpositive's cut at -87.3).
    add([](AttnCase& c) { c.scale = 40.0f; c.causal = true; });
    add([](AttnCase& c) { c.normalization = Normalization::kSigmoid; });
    add([](AttnCase& c) { c.normalization = Normalization::kSigmoid; c.sigmoid_bias = 0.5f; c.causal = true; });
    add([](AttnCase& c) { c.normalization = Normalization::kSigmoid; c.mask = MaskKind::kAdditive; });
    add([](AttnCase& c) { c.normalization = Normalization::kRelu; });
    add([](AttnCase& c) { c.normalization = Normalization::kRelu; c.causal = true; c.window_left = 31; });
    add([](AttnCase& c) { c.varlen = true; c.batch = 3; });
    add([](AttnCase& c) { c.varlen = true; c.batch = 3; c.causal = true; });
    add([](AttnCase& c) { c.varlen = true; c.batch = 2; c.causal = true; c.window_left = 12; c.n_sink_tokens = 2; });
    add([](AttnCase& c) { c.varlen = true; c.batch = 3; c.mask = MaskKind::kBoolean; c.sink_logits = true; });
    add([](AttnCase& c) { c.varlen = true; c.batch = 2; c.normalization = Normalization::kSigmoid; c.causal = true; });
    add([](AttnCase& c) { c.batch = 2; c.causal = true; c.mask = MaskKind::kBoolean; });
    // Everything at once.
    add([](AttnCase& c) {
      c.causal = true;
      c.window_left = 40;
      c.n_sink_tokens = 3;
      c.sink_logits = true;
      c.mask = MaskKind::kAdditive;
      c.softcap = 20.0f;
      c.alibi = true;
      c.temperature = true;
      c.ssmax_s = 0.3f;
      c.batch = 2;
    });
    cases.insert(cases.end(), v.begin(), v.end());
  }
  number(&cases, 4);
  return cases;
}

std::vector<AttnCase> dtype_cases() {
  std::vector<AttnCase> cases;
  for (DType in : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (DType out : {DType::kF32, DType::kF16, DType::kBF16}) {
      if (in == DType::kF32 && out == DType::kF32) continue;  // every other sweep covers it
      AttnCase c = base(129, 129, 4, 2, 64);
      c.dtype = in;
      c.out_dtype = out;
      c.causal = true;
      cases.push_back(c);
      if (out != in) continue;
      AttnCase h = base(65, 300, 4, 1, 33);
      h.dtype = in;
      h.out_dtype = out;
      h.window_left = 50;
      h.sink_logits = true;
      h.alibi = true;
      cases.push_back(h);
      AttnCase dec = base(1, 1023, 8, 2, 128);
      dec.dtype = in;
      dec.out_dtype = out;
      cases.push_back(dec);
      dec.key_bias_index = 0;  // ZeroTuning's first-token bias on the decode path
      cases.push_back(dec);
      if (long_tests_enabled()) {
        for (int64_t d : {16, 80, 256, 511}) {
          AttnCase l = base(257, 501, 4, 2, d);
          l.dtype = in;
          l.out_dtype = out;
          l.causal = true;
          cases.push_back(l);
        }
      }
    }
  }
  number(&cases, 5);
  return cases;
}

std::vector<AttnCase> layout_cases() {
  std::vector<AttnCase> cases;
  for (Layout l : {Layout::kContiguous, Layout::kHeadsMajor, Layout::kPaddedRows, Layout::kStridedDim}) {
    for (bool mis : {false, true}) {
      if (l == Layout::kContiguous && !mis) continue;
      for (int64_t d : {64, 33}) {
        AttnCase c = base(100, 100, 4, 2, d);
        c.layout = l;
        c.misaligned = mis;
        c.causal = true;
        cases.push_back(c);
      }
      AttnCase dec = base(1, 300, 4, 1, 64);
      dec.layout = l;
      dec.misaligned = mis;
      cases.push_back(dec);
      dec.dtype = DType::kBF16;  // bf16 decode: in-place rows, or converted ones for the gaps
      dec.out_dtype = DType::kBF16;
      dec.heads_q = 8;
      dec.heads_kv = 2;
      cases.push_back(dec);
      AttnCase half = base(70, 90, 2, 2, 64);
      half.layout = l;
      half.misaligned = mis;
      half.dtype = DType::kBF16;
      half.out_dtype = DType::kF16;
      cases.push_back(half);
      AttnCase var = base(60, 80, 2, 1, 40);
      var.layout = l;
      var.misaligned = mis;
      var.varlen = true;
      var.batch = 3;
      var.causal = true;
      cases.push_back(var);
    }
  }
  number(&cases, 6);
  return cases;
}

std::vector<AttnCase> path_cases() {
  std::vector<AttnCase> cases;
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 1023}, {4, 2000}, {16, 513}, {1, 4097}};
  for (ExecPath path : {ExecPath::kPrefill, ExecPath::kDecode}) {
    for (auto [sq, sk] : shapes) {
      for (int threads : {1, 2}) {
        AttnCase c = base(sq, sk, 8, 2, 64);
        c.path = path;
        c.num_threads = threads;
        c.causal = sq > 1;
        cases.push_back(c);
      }
    }
    // Decode with every hook that touches the per-row state.
    AttnCase h = base(2, 1500, 4, 1, 64);
    h.path = path;
    h.causal = true;
    h.window_left = 700;
    h.n_sink_tokens = 4;
    h.sink_logits = true;
    h.alibi = true;
    h.num_threads = 2;
    cases.push_back(h);
    AttnCase m = base(3, 900, 4, 2, 64);
    m.path = path;
    m.mask = MaskKind::kBoolean;
    m.num_threads = 2;
    cases.push_back(m);
    AttnCase s = base(1, 1200, 4, 2, 64);
    s.path = path;
    s.normalization = Normalization::kSigmoid;
    s.num_threads = 2;
    cases.push_back(s);
    AttnCase v = base(3, 800, 4, 2, 64);
    v.path = path;
    v.varlen = true;
    v.batch = 3;
    v.causal = true;
    v.num_threads = 2;
    cases.push_back(v);
  }
  // Decode of GQA groups of 4 and 2 rows, whose score tiles are packed (4 floats per key), with
  // every logit hook and an additive mask: 750 keys per thread end in a tile of 46, whose
  // softcap runs over padding keys.
  for (auto [hq, hkv] : {std::pair<int64_t, int64_t>{8, 2}, {4, 2}}) {
    for (DType dt : {DType::kF32, DType::kBF16}) {
      AttnCase g = base(1, 1500, hq, hkv, 64);
      g.path = ExecPath::kDecode;
      g.dtype = dt;
      g.causal = true;
      g.softcap = 20.0f;
      g.alibi = true;
      g.mask = MaskKind::kAdditive;
      g.window_left = 700;
      g.n_sink_tokens = 4;
      g.num_threads = 2;
      cases.push_back(g);
    }
  }
  // The same packed decode with logits hundreds apart (most weights underflow).
  AttnCase wide = base(1, 1500, 8, 2, 64);
  wide.path = ExecPath::kDecode;
  wide.causal = true;
  wide.scale = 40.0f;
  wide.num_threads = 2;
  cases.push_back(wide);
  // Decode with more kv heads than one key-major sweep takes (10 > 8 blocks), every dtype; GQA 8
  // with 2 queries (16 rows per block: the per-block path); MHA (blocks of one row).
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16}) {
    AttnCase g = base(1, 3000, 40, 10, 128);
    g.path = ExecPath::kDecode;
    g.dtype = dt;
    g.causal = true;
    g.num_threads = 2;
    cases.push_back(g);
  }
  for (auto [hq, hkv, sq, d] : {std::tuple<int64_t, int64_t, int64_t, int64_t>{16, 2, 2, 80}, {16, 16, 1, 96}}) {
    AttnCase g = base(sq, 1100, hq, hkv, d);
    g.path = ExecPath::kDecode;
    g.causal = true;
    g.num_threads = 2;
    cases.push_back(g);
  }
  // bf16 decode shapes for the vdpbf16ps score sweep (heads of 4 rows scoring four and two keys
  // per step, 2 and 8 rows per head scoring one; rows of 2, 4 and 8 lines, whose prefetches are
  // unrolled, and of other lengths) and for the pair-layout P V (head_dim a multiple of 2 vectors
  // or not).
  for (auto [hq, hkv, sq, d] : {std::tuple<int64_t, int64_t, int64_t, int64_t>{12, 3, 1, 128},
                                {8, 2, 1, 256},
                                {16, 8, 1, 64},
                                {8, 2, 2, 96},
                                {8, 2, 1, 80},
                                {4, 1, 3, 32}}) {
    AttnCase g = base(sq, 2100, hq, hkv, d);
    g.path = ExecPath::kDecode;
    g.dtype = DType::kBF16;
    g.causal = true;
    g.num_threads = 2;
    cases.push_back(g);
  }
  // One thread over 2049 = 32 x 64 + 1 keys: the last tile holds one key, which the sweep scores
  // alone; over 2115 = 33 x 64 + 3 keys the last tile takes no four-key step, one two-key step
  // and one single key.
  for (int64_t sk : {2049, 2115}) {
    AttnCase odd = base(1, sk, 8, 2, 128);
    odd.path = ExecPath::kDecode;
    odd.dtype = DType::kBF16;
    odd.causal = true;
    odd.num_threads = 1;
    cases.push_back(odd);
  }
  number(&cases, 7);
  return cases;
}

std::vector<AttnCase> int8_kv_cases() {
  std::vector<AttnCase> cases;
  const auto add = [&](AttnCase c) {
    c.int8_kv = true;
    cases.push_back(c);
  };
  // Decode: Gemma's shape (GQA 4, d 256), the benchmark's (GQA 4, d 128) split over the keys,
  // GQA 8 and MQA, a window and sinks, softcap.
  add(base(1, 501, 4, 1, 256));
  AttnCase dec = base(1, 4097, 8, 2, 128);
  dec.path = ExecPath::kDecode;
  dec.num_threads = 2;
  add(dec);
  AttnCase g8 = base(2, 1023, 8, 1, 64);
  g8.causal = true;
  add(g8);
  AttnCase win = base(1, 1500, 4, 1, 128);
  win.causal = true;
  win.window_left = 700;
  win.n_sink_tokens = 4;
  win.sink_logits = true;
  win.path = ExecPath::kDecode;
  add(win);
  AttnCase cap = base(1, 700, 4, 2, 64);
  cap.softcap = 5.0f;
  cap.alibi = true;
  add(cap);
  // Prefill: causal, windows, odd head dims (rows converted, not read in place), other V width.
  AttnCase pre = base(113, 501, 4, 2, 128);
  pre.causal = true;
  add(pre);
  AttnCase odd = base(65, 300, 4, 1, 37);
  odd.head_dim_v = 33;
  odd.causal = true;
  odd.window_left = 50;
  odd.softcap = 8.0f;
  add(odd);
  AttnCase same = base(129, 129, 2, 2, 64);
  same.causal = true;
  same.window_left = 17;
  same.window_right = 0;
  same.temperature = true;
  add(same);
  // The same int8 K/V under the forced prefill path, bf16 queries and outputs, strided and
  // misaligned tensors, variable length, and the non-softmax variants.
  AttnCase fp = dec;
  fp.path = ExecPath::kPrefill;
  add(fp);
  AttnCase bq = base(1, 1023, 8, 2, 128);
  bq.dtype = DType::kBF16;
  bq.out_dtype = DType::kBF16;
  add(bq);
  AttnCase lay = base(37, 200, 4, 2, 64);
  lay.layout = Layout::kPaddedRows;
  lay.misaligned = true;
  lay.causal = true;
  add(lay);
  AttnCase vl = base(3, 300, 4, 2, 64);
  vl.varlen = true;
  vl.causal = true;
  add(vl);
  AttnCase sig = base(1, 700, 4, 1, 64);
  sig.normalization = Normalization::kSigmoid;
  add(sig);
  AttnCase relu = base(33, 200, 4, 2, 64);
  relu.normalization = Normalization::kRelu;
  add(relu);
  // Integer decode scores (core/decode_int8.h) for every row count per kv head up to 8: 8 heads on
  // one kv head at the smallest head dim of one AVX-512 int16 vector, 3 queries of GQA 2 (6 rows),
  // one head per kv head at a head dim of 3 vectors, the largest head dim, with temperature and
  // sink logits.
  AttnCase m8 = base(1, 777, 8, 1, 32);
  m8.causal = true;
  add(m8);
  AttnCase m6 = base(3, 600, 6, 3, 64);
  m6.causal = true;
  m6.window_left = 250;
  add(m6);
  AttnCase m1 = base(1, 333, 3, 3, 96);
  m1.temperature = true;
  add(m1);
  AttnCase wide = base(1, 300, 4, 1, 512);
  wide.sink_logits = true;
  wide.input_range = 2.0f;
  add(wide);
  number(&cases, 11);
  return cases;
}

}  // namespace attnkit::testing
