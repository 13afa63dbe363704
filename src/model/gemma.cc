// Gemma 3 forward pass (see attnkit/model.h for the architecture and the numerics).
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "attnkit/gguf.h"
#include "attnkit/model.h"
#include "attnkit/threads.h"
#include "attnkit/tokenizer.h"
#include "core/checked_size.h"
#include "model/matvec.h"
#include "model/model_ops.h"
#include "model/weights.h"

extern "C" void openblas_set_num_threads(int num_threads);

namespace attnkit::model {
namespace {

using internal::quantized_matvec;

// Metadata helpers: required keys fail with the key's name; optional ones keep the default.
Status req_i64(const gguf::GgufFile& f, const std::string& key, int64_t* out) {
  uint64_t v = 0;
  ATTNKIT_RETURN_IF_ERROR(f.get_u64(key, &v));
  if (v == 0 || v > (1ull << 31)) return Status::corrupt_data("gemma: metadata " + key + " = " + std::to_string(v) + " is out of range");
  *out = static_cast<int64_t>(v);
  return Status::ok_status();
}

using internal::StackedWeights;
using internal::WeightMode;

// A float hyperparameter that must be a finite number above zero (or, with allow_zero, zero too).
Status check_positive_f32(const std::string& key, float v, bool allow_zero = false) {
  if (std::isfinite(v) && (v > 0 || (allow_zero && v == 0))) return Status::ok_status();
  return Status::corrupt_data("gemma: metadata " + key + " = " + std::to_string(v) + " is invalid; expected a finite value " +
                              (allow_zero ? ">= 0" : "> 0"));
}

// block_count must name exactly the layers whose tensors the file holds: a smaller count would run
// a truncated model without a word, a larger one would fail late (or allocate for layers that do
// not exist). Checked before anything is allocated per layer.
Status check_block_count(const gguf::GgufFile& f, const std::string& key, int64_t n_layer) {
  std::set<int64_t> seen;
  for (const gguf::TensorInfo& t : f.tensors()) {
    if (t.name.substr(0, 4) != "blk.") continue;
    int64_t l = 0;
    size_t i = 4;
    for (; i < t.name.size() && t.name[i] >= '0' && t.name[i] <= '9' && l < (int64_t{1} << 32); ++i) l = l * 10 + (t.name[i] - '0');
    if (i == 4 || i >= t.name.size() || t.name[i] != '.')
      return Status::corrupt_data("gemma: tensor '" + std::string(t.name) + "' has no layer number after 'blk.'");
    if (l >= n_layer)
      return Status::corrupt_data("gemma: metadata " + key + " = " + std::to_string(n_layer) + " but the file has tensor '" +
                                  std::string(t.name) + "' of layer " + std::to_string(l));
    seen.insert(l);
  }
  const int64_t n_seen = static_cast<int64_t>(seen.size()), highest = seen.empty() ? -1 : *seen.rbegin();
  if (n_seen != n_layer)
    return Status::corrupt_data("gemma: metadata " + key + " = " + std::to_string(n_layer) + " but the file has tensors for " +
                                std::to_string(n_seen) + " layers" +
                                (n_seen > 0 ? " (highest blk." + std::to_string(highest) + ")" : std::string()));
  return Status::ok_status();
}

// Norm weights are small F32 vectors in every GGUF converter; another type here means a damaged or
// hand-edited file, and a NaN or Inf would silently poison every token.
Status check_norm_weight(const std::string& name, const gguf::TensorInfo& t, const std::vector<float>& w) {
  if (t.type != gguf::TensorType::kF32)
    return Status::corrupt_data("gemma: tensor " + name + " has type " + gguf::tensor_type_name(t.type) +
                                "; norm weights must be F32");
  for (size_t i = 0; i < w.size(); ++i) {
    if (!std::isfinite(w[i]))
      return Status::corrupt_data("gemma: tensor " + name + " holds a non-finite value (" + std::to_string(w[i]) +
                                  ") at index " + std::to_string(i));
  }
  return Status::ok_status();
}

// Index of the first NaN or Inf in x[0..n), or -1.
int64_t first_nonfinite(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return i;
  return -1;
}

struct LayerWeights {
  std::vector<float> attn_norm, q_norm, k_norm, post_attn_norm, ffn_norm, post_ffn_norm;
  StackedWeights wqkv;   // [(n_head + 2 n_head_kv) * head_dim, n_embd]: Q rows, then K, then V
  StackedWeights wo;     // [n_embd, n_head * head_dim_v]
  StackedWeights wgu;    // [2 n_ff, n_embd]: gate rows, then up rows
  StackedWeights wdown;  // [n_embd, n_ff]
};

using internal::parallel_sgemm_nt;

// y[n, out] = x[n, in] W^T through the weights' own format (see model/weights.h). Shapes were
// checked when the weights were loaded, so a failure here is a broken invariant.
void linear(const float* x, int64_t n, int64_t in, const StackedWeights& w, int64_t out, float* y, int threads) {
  ATTNKIT_ASSERT(w.cols() == in && w.rows() == out);
  const Status s = w.apply(x, n, y, out, threads);
  ATTNKIT_ASSERT(s.ok());
}

// Gemma RMSNorm: y = x / sqrt(mean(x^2) + eps) * w, w already holding 1 + w_hf (llama.cpp's
// converter adds the 1); vectorized, with the accuracy model_ops.h states.
void rmsnorm(const float* x, const float* w, int64_t d, float eps, float* y) { internal::rms_norm(x, w, d, eps, y); }

class ExactBackend final : public AttentionBackend {
 public:
  std::string name() const override { return "exact"; }
  Status attend(const AttentionCall& call) override {
    return attention(call.q, call.k, call.v, call.out, nullptr, call.params);
  }
};

}  // namespace

bool Taps::wants(int64_t layer) const {
  if (!on_layer) return false;
  if (layers.empty()) return true;
  return std::find(layers.begin(), layers.end(), layer) != layers.end();
}

bool Taps::wants_residual(int64_t layer) const {
  if (!on_residual) return false;
  if (layers.empty()) return true;
  return std::find(layers.begin(), layers.end(), layer) != layers.end();
}

Status read_config(const gguf::GgufFile& f, GemmaConfig* out) {
  std::string arch;
  ATTNKIT_RETURN_IF_ERROR(f.get_string("general.architecture", &arch));
  if (arch != "gemma3") return Status::unsupported("gemma: general.architecture is '" + arch + "', expected 'gemma3'");
  const std::string p = "gemma3.";
  GemmaConfig c;
  ATTNKIT_RETURN_IF_ERROR(req_i64(f, p + "block_count", &c.n_layer));
  ATTNKIT_RETURN_IF_ERROR(req_i64(f, p + "embedding_length", &c.n_embd));
  ATTNKIT_RETURN_IF_ERROR(req_i64(f, p + "feed_forward_length", &c.n_ff));
  ATTNKIT_RETURN_IF_ERROR(req_i64(f, p + "attention.head_count", &c.n_head));
  ATTNKIT_RETURN_IF_ERROR(req_i64(f, p + "attention.head_count_kv", &c.n_head_kv));
  ATTNKIT_RETURN_IF_ERROR(req_i64(f, p + "attention.key_length", &c.head_dim));
  ATTNKIT_RETURN_IF_ERROR(req_i64(f, p + "attention.value_length", &c.head_dim_v));
  ATTNKIT_RETURN_IF_ERROR(req_i64(f, p + "context_length", &c.context_length));
  ATTNKIT_RETURN_IF_ERROR(req_i64(f, p + "attention.sliding_window", &c.sliding_window));
  ATTNKIT_RETURN_IF_ERROR(f.get_f32(p + "attention.layer_norm_rms_epsilon", &c.rms_eps));
  ATTNKIT_RETURN_IF_ERROR(f.get_f32(p + "rope.freq_base", &c.rope_base_global));
  ATTNKIT_RETURN_IF_ERROR(check_positive_f32(p + "attention.layer_norm_rms_epsilon", c.rms_eps));
  ATTNKIT_RETURN_IF_ERROR(check_positive_f32(p + "rope.freq_base", c.rope_base_global));
  // RoPE scaling (linear, YaRN, ...) is not implemented: a file that asks for it would otherwise run
  // with unscaled positions and give wrong answers past the original context without any error.
  // Gemma 3 270M has none of these keys; factor 0 or 1 and type "none" mean no scaling.
  if (f.has(p + "rope.scaling.type")) {
    std::string type;
    ATTNKIT_RETURN_IF_ERROR(f.get_string(p + "rope.scaling.type", &type));
    if (type != "none")
      return Status::unsupported("gemma: " + p + "rope.scaling.type '" + type + "' is not supported (only 'none')");
  }
  for (const char* key : {"rope.scaling.factor", "rope.scale_linear"}) {
    if (!f.has(p + key)) continue;
    float factor = 0.0f;
    ATTNKIT_RETURN_IF_ERROR(f.get_f32(p + key, &factor));
    if (factor != 0.0f && factor != 1.0f)
      return Status::unsupported("gemma: " + p + key + " " + std::to_string(factor) +
                                 " asks for RoPE scaling, which is not supported (expected 0 or 1)");
  }
  if (f.has(p + "final_logit_softcapping")) ATTNKIT_RETURN_IF_ERROR(f.get_f32(p + "final_logit_softcapping", &c.final_logit_softcap));
  if (f.has(p + "attn_logit_softcapping")) ATTNKIT_RETURN_IF_ERROR(f.get_f32(p + "attn_logit_softcapping", &c.attn_logit_softcap));
  ATTNKIT_RETURN_IF_ERROR(check_positive_f32(p + "final_logit_softcapping", c.final_logit_softcap, true));
  ATTNKIT_RETURN_IF_ERROR(check_positive_f32(p + "attn_logit_softcapping", c.attn_logit_softcap, true));
  // Not in the file: the local RoPE base (10000) and the 5 local : 1 global pattern are fixed for
  // Gemma 3 (llama.cpp: rope_freq_base_train_swa = 10000, set_swa_pattern(6); HF: rope_local_base_freq,
  // sliding_window_pattern = 6). A future file may store them; read them if present.
  if (f.has(p + "rope.freq_base_swa")) ATTNKIT_RETURN_IF_ERROR(f.get_f32(p + "rope.freq_base_swa", &c.rope_base_local));
  ATTNKIT_RETURN_IF_ERROR(check_positive_f32(p + "rope.freq_base_swa", c.rope_base_local));
  // query_pre_attn_scalar = head_dim for every Gemma 3 size except 27B (n_embd / n_head);
  // llama.cpp keys that on the model size, we key it on the only size whose head_dim differs.
  c.attn_scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  if (f.has(p + "attention.scale")) ATTNKIT_RETURN_IF_ERROR(f.get_f32(p + "attention.scale", &c.attn_scale));
  ATTNKIT_RETURN_IF_ERROR(check_positive_f32(p + "attention.scale", c.attn_scale));
  c.embed_scale = std::sqrt(static_cast<float>(c.n_embd));
  if (c.n_head % c.n_head_kv != 0)
    return Status::corrupt_data("gemma: head_count " + std::to_string(c.n_head) + " is not a multiple of head_count_kv " +
                                std::to_string(c.n_head_kv));
  if (c.head_dim % 2 != 0 || c.head_dim > kMaxHeadDim)
    return Status::corrupt_data("gemma: key_length " + std::to_string(c.head_dim) + " must be even and <= 512");
  const gguf::TensorInfo* emb = f.find_tensor("token_embd.weight");
  if (emb == nullptr) return Status::corrupt_data("gemma: tensor token_embd.weight is missing");
  if (emb->row_elems() != c.n_embd)
    return Status::corrupt_data("gemma: token_embd.weight rows have " + std::to_string(emb->row_elems()) + " values, expected " +
                                std::to_string(c.n_embd));
  c.n_vocab = emb->n_rows();
  ATTNKIT_RETURN_IF_ERROR(check_block_count(f, p + "block_count", c.n_layer));
  *out = c;
  return Status::ok_status();
}

struct Model::Impl {
  std::unique_ptr<gguf::GgufFile> file;
  std::unique_ptr<Tokenizer> tok;
  GemmaConfig cfg;
  std::vector<LayerWeights> layers;
  std::vector<float> output_norm;
  const gguf::TensorInfo* embd = nullptr;
  const uint8_t* embd_data = nullptr;
  std::vector<double> inv_freq_local, inv_freq_global;  // [head_dim / 2]
  WeightMode weight_mode = WeightMode::kQuantized;
  // cos / sin of the current chunk's positions [n, head_dim / 2] for each RoPE base.
  struct RopeTable {
    int64_t pos0 = 0;
    std::vector<float> cos, sin;
  } rope_local, rope_global;

  int threads = 2;
  int64_t chunk = 512;
  int64_t pos = 0;
  // KV cache: one paged cache per layer (attnkit/kv_cache.h). Sliding-window layers keep only the
  // pages a later query can still see (window + one chunk); a policy may evict from the others.
  kv::KvStorage kv_storage = kv::KvStorage::kBF16;
  std::vector<std::unique_ptr<kv::PagedKvCache>> caches;
  std::shared_ptr<kv::KvPolicy> kv_policy;
  std::vector<int64_t> chunk_pos;                     // absolute positions of the chunk's tokens
  std::vector<float> kstage, vstage;                  // the chunk's K (post-RoPE) and V
  std::vector<float> kgather, vgather;                // contiguous f32 cache for custom backends and taps

  std::shared_ptr<AttentionBackend> exact = std::make_shared<ExactBackend>();
  std::shared_ptr<AttentionBackend> all_layers;               // nullptr = exact
  std::vector<std::shared_ptr<AttentionBackend>> per_layer;   // overrides all_layers
  Taps taps;

  // scratch
  std::vector<float> x, h, qkv, q, attn, proj, gu, act, qpre, kpre, probs;

  Status load_tensor(const std::string& name, int64_t rows, int64_t cols, std::vector<float>* out) {
    const gguf::TensorInfo* t = file->find_tensor(name);
    if (t == nullptr) return Status::corrupt_data("gemma: tensor " + name + " is missing");
    if (t->row_elems() != cols || t->n_rows() != rows)
      return Status::corrupt_data("gemma: tensor " + name + " is " + std::to_string(t->n_rows()) + " x " +
                                  std::to_string(t->row_elems()) + ", expected " + std::to_string(rows) + " x " +
                                  std::to_string(cols));
    out->resize(static_cast<size_t>(rows * cols));
    ATTNKIT_RETURN_IF_ERROR(file->dequantize_rows(*t, 0, rows, out->data()));
    return rows == 1 ? check_norm_weight(name, *t, *out) : Status::ok_status();  // one row: a norm weight
  }
  // A projection matrix in the load's weight mode; append_tensor stacks a tensor's rows under the
  // earlier ones (the fused QKV and gate/up matrices).
  Status load_tensor(const std::string& name, int64_t rows, int64_t cols, StackedWeights* out) {
    *out = StackedWeights();
    return out->add(*file, name, rows, cols, weight_mode);
  }
  Status append_tensor(const std::string& name, int64_t rows, int64_t cols, StackedWeights* out) {
    return out->add(*file, name, rows, cols, weight_mode);
  }

  Status load_weights() {
    const GemmaConfig& c = cfg;
    layers.resize(static_cast<size_t>(c.n_layer));
    for (int64_t l = 0; l < c.n_layer; ++l) {
      LayerWeights& w = layers[static_cast<size_t>(l)];
      const std::string b = "blk." + std::to_string(l) + ".";
      ATTNKIT_RETURN_IF_ERROR(load_tensor(b + "attn_norm.weight", 1, c.n_embd, &w.attn_norm));
      ATTNKIT_RETURN_IF_ERROR(load_tensor(b + "attn_q_norm.weight", 1, c.head_dim, &w.q_norm));
      ATTNKIT_RETURN_IF_ERROR(load_tensor(b + "attn_k_norm.weight", 1, c.head_dim, &w.k_norm));
      ATTNKIT_RETURN_IF_ERROR(load_tensor(b + "post_attention_norm.weight", 1, c.n_embd, &w.post_attn_norm));
      ATTNKIT_RETURN_IF_ERROR(load_tensor(b + "ffn_norm.weight", 1, c.n_embd, &w.ffn_norm));
      ATTNKIT_RETURN_IF_ERROR(load_tensor(b + "post_ffw_norm.weight", 1, c.n_embd, &w.post_ffn_norm));
      ATTNKIT_RETURN_IF_ERROR(append_tensor(b + "attn_q.weight", c.n_head * c.head_dim, c.n_embd, &w.wqkv));
      ATTNKIT_RETURN_IF_ERROR(append_tensor(b + "attn_k.weight", c.n_head_kv * c.head_dim, c.n_embd, &w.wqkv));
      ATTNKIT_RETURN_IF_ERROR(append_tensor(b + "attn_v.weight", c.n_head_kv * c.head_dim_v, c.n_embd, &w.wqkv));
      ATTNKIT_RETURN_IF_ERROR(load_tensor(b + "attn_output.weight", c.n_embd, c.n_head * c.head_dim_v, &w.wo));
      ATTNKIT_RETURN_IF_ERROR(append_tensor(b + "ffn_gate.weight", c.n_ff, c.n_embd, &w.wgu));
      ATTNKIT_RETURN_IF_ERROR(append_tensor(b + "ffn_up.weight", c.n_ff, c.n_embd, &w.wgu));
      ATTNKIT_RETURN_IF_ERROR(load_tensor(b + "ffn_down.weight", c.n_embd, c.n_ff, &w.wdown));
    }
    ATTNKIT_RETURN_IF_ERROR(load_tensor("output_norm.weight", 1, c.n_embd, &output_norm));
    if (file->find_tensor("output.weight") != nullptr)
      return Status::unsupported("gemma: an untied output.weight is not supported (Gemma 3 ties it to token_embd)");
    embd = file->find_tensor("token_embd.weight");
    ATTNKIT_RETURN_IF_ERROR(file->tensor_data(*embd, &embd_data));
    const int64_t half = c.head_dim / 2;
    inv_freq_local.resize(static_cast<size_t>(half));
    inv_freq_global.resize(static_cast<size_t>(half));
    for (int64_t i = 0; i < half; ++i) {
      const double e = -2.0 * static_cast<double>(i) / static_cast<double>(c.head_dim);
      inv_freq_local[static_cast<size_t>(i)] = std::pow(static_cast<double>(c.rope_base_local), e);
      inv_freq_global[static_cast<size_t>(i)] = std::pow(static_cast<double>(c.rope_base_global), e);
    }
    return make_caches();
  }

  Status make_caches() {
    caches.clear();
    caches.resize(static_cast<size_t>(cfg.n_layer));
    kv::KvCacheOptions ko;
    ko.kv_heads = cfg.n_head_kv;
    ko.head_dim = cfg.head_dim;
    ko.head_dim_v = cfg.head_dim_v;
    ko.storage = kv_storage;
    // Per-channel smoothing of int8 rows is exact only without an attention softcap.
    ko.int8_smoothing = !(cfg.attn_logit_softcap > 0);
    for (auto& c : caches) ATTNKIT_RETURN_IF_ERROR(kv::PagedKvCache::create(ko, &c));
    pos = 0;
    if (kv_policy) kv_policy->reset();
    return Status::ok_status();
  }

  void clear_caches() {
    for (auto& c : caches) c->clear();
    pos = 0;
    if (kv_policy) kv_policy->reset();
  }

  void apply_threads() {
    openblas_set_num_threads(1);  // parallel_sgemm_nt splits the work over OpenMP threads
    omp_set_num_threads(threads);
  }

  // Pages for n positions: every position on global layers, window + one chunk on local ones.
  // Layers a KV policy acts on take pages as they grow instead: an evicting policy keeps them near
  // its budget, and reserving every position would allocate (and touch) memory it never fills.
  Status reserve(int64_t n) {
    for (int64_t l = 0; l < cfg.n_layer; ++l) {
      if (kv_policy && kv_policy->applies_to(l, cfg.is_global(l))) continue;
      kv::PagedKvCache& c = *caches[static_cast<size_t>(l)];
      const int64_t tokens = cfg.is_global(l) ? n : std::min(n, cfg.sliding_window + chunk);
      ATTNKIT_RETURN_IF_ERROR(c.reserve_pages((tokens + c.page_size() - 1) / c.page_size() + 1));
    }
    return Status::ok_status();
  }

  // Drops the leading pages of a sliding-window layer that no query from next_pos on can see.
  Status trim_window_layer(int64_t layer, int64_t next_pos) {
    kv::PagedKvCache& c = *caches[static_cast<size_t>(layer)];
    const std::vector<int64_t>& p = c.positions(0);
    const int64_t first_visible = next_pos - cfg.window_left(layer);
    const int64_t dead = std::lower_bound(p.begin(), p.end(), first_visible) - p.begin();
    const int64_t whole = dead / c.page_size() * c.page_size();
    return whole > 0 ? c.drop_front(0, whole) : Status::ok_status();
  }

  // NeoX-style rotation of the two halves of each head vector (Gemma / HF rotate_half):
  // (x_i, x_{i+D/2}) -> (x_i cos - x_{i+D/2} sin, x_i sin + x_{i+D/2} cos), angle = pos * base^(-2i/D),
  // from the chunk's tables (model_ops.h: f64 angles, each entry the nearest f32 at any position).
  void fill_rope_tables(int64_t pos0, int64_t n) {
    const int64_t half = cfg.head_dim / 2;
    for (auto [t, inv] : {std::pair{&rope_local, &inv_freq_local}, std::pair{&rope_global, &inv_freq_global}}) {
      t->pos0 = pos0;
      t->cos.resize(static_cast<size_t>(n * half));
      t->sin.resize(static_cast<size_t>(n * half));
      internal::rope_table(inv->data(), half, pos0, n, t->cos.data(), t->sin.data());
    }
  }
  void rope(float* v, int64_t n_heads, int64_t pos, const std::vector<double>& inv_freq) const {
    const RopeTable& t = &inv_freq == &inv_freq_global ? rope_global : rope_local;
    const int64_t half = cfg.head_dim / 2, row = (pos - t.pos0) * half;
    ATTNKIT_ASSERT(row >= 0 && row + half <= static_cast<int64_t>(t.cos.size()));
    internal::rope_apply(v, n_heads, half, t.cos.data() + row, t.sin.data() + row);
  }

  AttentionBackend* backend_for(int64_t layer) {
    if (static_cast<size_t>(layer) < per_layer.size() && per_layer[static_cast<size_t>(layer)]) return per_layer[static_cast<size_t>(layer)].get();
    if (all_layers) return all_layers.get();
    return exact.get();
  }

  // Exact probabilities of the requested query positions (for taps), [rows, n_head, n_kv].
  void tap_probs(int64_t layer, int64_t pos0, int64_t n, int64_t n_kv, const float* qpost, TapData* td) {
    td->prob_positions.clear();
    for (int64_t p : taps.prob_positions)
      if (p >= pos0 && p < pos0 + n) td->prob_positions.push_back(p);
    if (td->prob_positions.empty()) return;
    const int64_t H = cfg.n_head, D = cfg.head_dim, group = cfg.n_head / cfg.n_head_kv;
    probs.assign(static_cast<size_t>(td->prob_positions.size() * H * n_kv), 0.0f);
    const int64_t wl = cfg.window_left(layer);
    const kv::PagedKvCache& cache = *caches[static_cast<size_t>(layer)];
    kgather.resize(static_cast<size_t>(n_kv * cfg.n_head_kv * D));
    (void)cache.gather(0, 0, n_kv, kgather.data(), nullptr);
    const std::vector<int64_t>& kpos = cache.positions(0);
    for (size_t r = 0; r < td->prob_positions.size(); ++r) {
      const int64_t p = td->prob_positions[r];
      for (int64_t hh = 0; hh < H; ++hh) {
        const float* qv = qpost + ((p - pos0) * H + hh) * D;
        float* row = probs.data() + (r * H + hh) * n_kv;
        double mx = -1e300;
        std::vector<double> s(static_cast<size_t>(n_kv), 0.0);
        std::vector<char> vis(static_cast<size_t>(n_kv), 0);
        for (int64_t j = 0; j < n_kv; ++j) {
          const int64_t pj = kpos[static_cast<size_t>(j)];
          if (pj > p || (wl >= 0 && pj < p - wl)) continue;
          vis[static_cast<size_t>(j)] = 1;
          const float* kv = kgather.data() + (j * cfg.n_head_kv + hh / group) * D;
          double dot = 0;
          for (int64_t t = 0; t < D; ++t) dot += static_cast<double>(qv[t]) * kv[t];
          dot *= cfg.attn_scale;
          if (cfg.attn_logit_softcap > 0) dot = cfg.attn_logit_softcap * std::tanh(dot / cfg.attn_logit_softcap);
          s[static_cast<size_t>(j)] = dot;
          mx = std::max(mx, dot);
        }
        double sum = 0;
        for (int64_t j = 0; j < n_kv; ++j)
          if (vis[static_cast<size_t>(j)]) {
            s[static_cast<size_t>(j)] = std::exp(s[static_cast<size_t>(j)] - mx);
            sum += s[static_cast<size_t>(j)];
          }
        for (int64_t j = 0; j < n_kv; ++j)
          if (vis[static_cast<size_t>(j)]) row[j] = static_cast<float>(s[static_cast<size_t>(j)] / sum);
      }
    }
    td->probs = probs.data();
  }

  // One chunk of n tokens at positions pos .. pos + n - 1; leaves the final normed hidden states in
  // `hidden` [n, n_embd].
  Status forward_chunk(const int32_t* tokens, int64_t n, float* hidden) {
    const GemmaConfig& c = cfg;
    const int64_t E = c.n_embd, H = c.n_head, HK = c.n_head_kv, D = c.head_dim, DV = c.head_dim_v;
    const int64_t nq = H * D, nk = HK * D, nv = HK * DV, nqkv = nq + nk + nv;
    for (int64_t i = 0; i < n; ++i)
      if (tokens[i] < 0 || tokens[i] >= c.n_vocab)
        return Status::out_of_range("gemma: token " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                                    " is outside the vocabulary [0, " + std::to_string(c.n_vocab) + ")");
    x.resize(static_cast<size_t>(n * E));
    h.resize(static_cast<size_t>(n * E));
    qkv.resize(static_cast<size_t>(n * nqkv));
    q.resize(static_cast<size_t>(n * nq));
    attn.resize(static_cast<size_t>(n * H * DV));
    proj.resize(static_cast<size_t>(n * E));
    gu.resize(static_cast<size_t>(n * 2 * c.n_ff));
    act.resize(static_cast<size_t>(n * c.n_ff));
    for (int64_t i = 0; i < n; ++i) {
      ATTNKIT_RETURN_IF_ERROR(file->dequantize_rows(*embd, tokens[i], 1, x.data() + i * E));
      for (int64_t e = 0; e < E; ++e) x[static_cast<size_t>(i * E + e)] *= c.embed_scale;
    }
    chunk_pos.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) chunk_pos[static_cast<size_t>(i)] = pos + i;
    kstage.resize(static_cast<size_t>(n * nk));
    vstage.resize(static_cast<size_t>(n * nv));
    fill_rope_tables(pos, n);
    for (int64_t l = 0; l < c.n_layer; ++l) {
      const LayerWeights& w = layers[static_cast<size_t>(l)];
#pragma omp parallel for num_threads(threads) schedule(static) if (n > 1)
      for (int64_t i = 0; i < n; ++i) rmsnorm(x.data() + i * E, w.attn_norm.data(), E, c.rms_eps, h.data() + i * E);
      linear(h.data(), n, E, w.wqkv, nqkv, qkv.data(), threads);
      const bool tap = taps.wants(l);
      if (tap) {
        qpre.resize(static_cast<size_t>(n * nq));
        kpre.resize(static_cast<size_t>(n * nk));
      }
      const std::vector<double>& inv_freq = c.is_global(l) ? inv_freq_global : inv_freq_local;
      // One token (decode) runs these per-token loops on the calling thread: the work is a few
      // microseconds, about what waking the other threads costs.
#pragma omp parallel for num_threads(threads) schedule(static) if (n > 1)
      for (int64_t i = 0; i < n; ++i) {
        const float* src = qkv.data() + i * nqkv;
        float* qi = q.data() + i * nq;
        float* ki = kstage.data() + i * nk;
        float* vi = vstage.data() + i * nv;
        for (int64_t hh = 0; hh < H; ++hh) rmsnorm(src + hh * D, w.q_norm.data(), D, c.rms_eps, qi + hh * D);
        for (int64_t hh = 0; hh < HK; ++hh) rmsnorm(src + nq + hh * D, w.k_norm.data(), D, c.rms_eps, ki + hh * D);
        std::memcpy(vi, src + nq + nk, static_cast<size_t>(nv) * sizeof(float));
        if (tap) {
          std::memcpy(qpre.data() + i * nq, qi, static_cast<size_t>(nq) * sizeof(float));
          std::memcpy(kpre.data() + i * nk, ki, static_cast<size_t>(nk) * sizeof(float));
        }
        rope(qi, H, pos + i, inv_freq);
        rope(ki, HK, pos + i, inv_freq);
      }

      kv::PagedKvCache& cache = *caches[static_cast<size_t>(l)];
      AttentionBackend* backend = backend_for(l);
      Status st;
      bool trim = false;  // drop the keys no later query of a sliding-window layer sees, after the taps
      // "exact" by name (make_attention_backend("exact"), what the CLI and Python set) is the
      // default path too.
      std::vector<float> key_bias;
      int64_t key_bias_position = 0;
      const bool bias_only = backend != exact.get() && backend->key_bias(l, H, &key_bias, &key_bias_position);
      if (bias_only && !key_bias.empty() && static_cast<int64_t>(key_bias.size()) != H)
        return Status::internal("gemma: backend " + backend->name() + " gave " + std::to_string(key_bias.size()) +
                                " key biases for " + std::to_string(H) + " heads");
      if (backend == exact.get() || backend->name() == "exact" || bias_only) {
        // The default path: append, attend over the pages in place, then the KV policy's step.
        kv::KvStepInput in;
        in.layer = l;
        in.n_layers = c.n_layer;
        in.is_global = c.is_global(l);
        in.n = n;
        in.positions = chunk_pos.data();
        in.q = q.data();
        in.k = kstage.data();
        in.v = vstage.data();
        in.heads_q = H;
        in.attn.scale = c.attn_scale;
        in.attn.softcap = c.attn_logit_softcap;
        in.attn.window_left = c.window_left(l);
        in.attn.num_threads = threads;
        if (!key_bias.empty()) {
          in.attn.maybe_key_bias = key_bias.data();
          in.attn.key_bias_position = key_bias_position;
        }
        in.maybe_rope_inv_freq = inv_freq.data();
        in.out = attn.data();
        st = kv::kv_layer_step(kv_policy.get(), &cache, in);
        trim = !c.is_global(l);
      } else {
        // A custom backend sees the layer's cache as one contiguous f32 sequence (the KV policy
        // does not act on such layers).
        st = cache.append(0, n, chunk_pos.data(), kstage.data(), vstage.data());
        const int64_t nc = st.ok() ? cache.size(0) : 0;
        kgather.resize(static_cast<size_t>(nc * nk));
        vgather.resize(static_cast<size_t>(nc * nv));
        if (st.ok()) st = cache.gather(0, 0, nc, kgather.data(), vgather.data());
        AttentionCall call;
        call.layer = l;
        call.config = &cfg;
        call.q = TensorView::contiguous(q.data(), DType::kF32, 1, n, H, D);
        call.k = TensorView::contiguous(kgather.data(), DType::kF32, 1, nc, HK, D);
        call.v = TensorView::contiguous(vgather.data(), DType::kF32, 1, nc, HK, DV);
        call.out = TensorView::contiguous(attn.data(), DType::kF32, 1, n, H, DV);
        call.q_pos0 = pos;
        call.params.causal = true;
        call.params.window_left = c.window_left(l);
        call.params.scale = c.attn_scale;
        call.params.softcap = c.attn_logit_softcap;
        call.params.num_threads = threads;
        call.cache = &cache;
        if (st.ok()) st = backend->attend(call);
      }
      if (!st.ok()) return Status(st.code(), "gemma: layer " + std::to_string(l) + " attention (" + backend->name() + "): " + st.message());
      const int64_t n_kv = cache.size(0);

      if (tap) {
        TapData td;
        td.layer = l;
        td.pos0 = pos;
        td.n = n;
        td.n_kv = n_kv;
        td.q_pre = qpre.data();
        td.q_post = q.data();
        td.k_pre = kpre.data();
        td.k_post = kstage.data();
        td.v = vstage.data();
        td.kv_positions = cache.positions(0).data();
        tap_probs(l, pos, n, n_kv, q.data(), &td);
        taps.on_layer(td);
      }
      if (trim) ATTNKIT_RETURN_IF_ERROR(trim_window_layer(l, pos + n));

      linear(attn.data(), n, H * DV, w.wo, E, proj.data(), threads);
#pragma omp parallel for num_threads(threads) schedule(static) if (n > 1)
      for (int64_t i = 0; i < n; ++i) {
        float* pi = proj.data() + i * E;
        rmsnorm(pi, w.post_attn_norm.data(), E, c.rms_eps, pi);
        float* xi = x.data() + i * E;
        for (int64_t e = 0; e < E; ++e) xi[e] += pi[e];
        rmsnorm(xi, w.ffn_norm.data(), E, c.rms_eps, h.data() + i * E);
      }
      const int64_t F = c.n_ff;
      linear(h.data(), n, E, w.wgu, 2 * F, gu.data(), threads);
#pragma omp parallel for num_threads(threads) schedule(static) if (n > 1)
      for (int64_t i = 0; i < n; ++i) {
        const float* g = gu.data() + i * 2 * F;
        float* a = act.data() + i * F;
        internal::gelu_tanh_mul(g, g + F, a, F);
      }
      linear(act.data(), n, F, w.wdown, E, proj.data(), threads);
#pragma omp parallel for num_threads(threads) schedule(static) if (n > 1)
      for (int64_t i = 0; i < n; ++i) {
        float* pi = proj.data() + i * E;
        rmsnorm(pi, w.post_ffn_norm.data(), E, c.rms_eps, pi);
        float* xi = x.data() + i * E;
        for (int64_t e = 0; e < E; ++e) xi[e] += pi[e];
      }
      // Large quantized weights are not scanned at load; a NaN or Inf in them shows up here, in
      // the layer's output, and fails the run instead of giving meaningless tokens.
      if (const int64_t bad = first_nonfinite(x.data(), n * E); bad >= 0)
        return Status::corrupt_data("gemma: layer " + std::to_string(l) + " produced a non-finite value at position " +
                                    std::to_string(pos + bad / E) + " (weights blk." + std::to_string(l) +
                                    ".* may be corrupt)");
      if (taps.wants_residual(l)) taps.on_residual(l, pos, n, x.data());
    }
#pragma omp parallel for num_threads(threads) schedule(static) if (n > 1)
    for (int64_t i = 0; i < n; ++i) rmsnorm(x.data() + i * E, output_norm.data(), E, c.rms_eps, hidden + i * E);
    pos += n;
    return Status::ok_status();
  }

  void softcap_logits(float* logits, int64_t n) const {
    if (cfg.final_logit_softcap <= 0) return;
    const float s = cfg.final_logit_softcap;
    for (int64_t i = 0; i < n; ++i) logits[i] = s * std::tanh(logits[i] / s);
  }

  Status logits_one(const float* hidden, float* logits) {
    // The tied embedding is the largest matrix a token reads (262144 x 640 in Q8_0): the integer
    // kernel reads its blocks in place with int16 activations, like every projection.
    if (internal::quant_matmul_supports(embd->type)) {
      ATTNKIT_RETURN_IF_ERROR(internal::quant_matmul(embd->type, embd_data, embd->row_bytes(), cfg.n_vocab, cfg.n_embd, hidden,
                                                     1, logits, cfg.n_vocab, threads));
    } else {
      ATTNKIT_RETURN_IF_ERROR(quantized_matvec(embd->type, embd_data, embd->row_bytes(), cfg.n_vocab, cfg.n_embd, hidden,
                                               logits, threads));
    }
    softcap_logits(logits, cfg.n_vocab);
    return Status::ok_status();
  }

  // Logits of n hidden rows by vocabulary slices: each slice of the embedding is dequantized once
  // (amortized over the n rows) and multiplied with sgemm. Writes all logits when `all` is given,
  // and/or the log-probability of targets[i] via an online log-sum-exp per row.
  Status logits_many(const float* hidden, int64_t n, float* all, const int32_t* targets, float* logprobs) {
    const int64_t V = cfg.n_vocab, E = cfg.n_embd;
    constexpr int64_t kSlice = 8192;
    std::vector<float> wslice(static_cast<size_t>(kSlice * E));
    std::vector<float> out(all ? 0 : static_cast<size_t>(n * kSlice));
    std::vector<double> run_max(static_cast<size_t>(n), -1e300), run_sum(static_cast<size_t>(n), 0.0);
    std::vector<float> target_logit(static_cast<size_t>(n), 0.f);
    for (int64_t v0 = 0; v0 < V; v0 += kSlice) {
      const int64_t vs = std::min(kSlice, V - v0);
      float* dst = all ? all + v0 : out.data();
      const int64_t ldc = all ? V : kSlice;
      bool failed = false;
#pragma omp parallel for num_threads(threads) schedule(static)
      for (int64_t r = 0; r < vs; r += 256) {
        const int64_t cnt = std::min<int64_t>(256, vs - r);
        if (!file->dequantize_rows(*embd, v0 + r, cnt, wslice.data() + r * E).ok()) failed = true;
      }
      if (failed) return Status::corrupt_data("gemma: token_embd.weight could not be dequantized");
      parallel_sgemm_nt(hidden, n, E, wslice.data(), vs, dst, ldc, threads);
      if (cfg.final_logit_softcap > 0)
        for (int64_t i = 0; i < n; ++i) softcap_logits(dst + i * ldc, vs);
      if (targets != nullptr && logprobs != nullptr) {
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int64_t i = 0; i < n; ++i) {
          const float* row = dst + i * ldc;
          double mx = run_max[static_cast<size_t>(i)];
          for (int64_t j = 0; j < vs; ++j) mx = std::max(mx, static_cast<double>(row[j]));
          double s = run_sum[static_cast<size_t>(i)] * std::exp(run_max[static_cast<size_t>(i)] - mx);
          for (int64_t j = 0; j < vs; ++j) s += std::exp(static_cast<double>(row[j]) - mx);
          run_max[static_cast<size_t>(i)] = mx;
          run_sum[static_cast<size_t>(i)] = s;
          const int32_t t = targets[i];
          if (t >= v0 && t < v0 + vs) target_logit[static_cast<size_t>(i)] = row[t - v0];
        }
      }
    }
    if (targets != nullptr && logprobs != nullptr)
      for (int64_t i = 0; i < n; ++i)
        logprobs[i] = static_cast<float>(target_logit[static_cast<size_t>(i)] - (run_max[static_cast<size_t>(i)] + std::log(run_sum[static_cast<size_t>(i)])));
    return Status::ok_status();
  }
};

Model::Model() : impl_(std::make_unique<Impl>()) {}
Model::~Model() = default;

Status Model::load(const std::string& path, const LoadOptions& options, std::unique_ptr<Model>* out) {
  if (out == nullptr) return Status::invalid_argument("Model::load: out is null");
  int threads = 0;
  ATTNKIT_RETURN_IF_ERROR(resolve_threads(options.threads, "Model::load: threads", &threads));
  if (options.prefill_chunk <= 0)
    return Status::invalid_argument("Model::load: prefill_chunk " + std::to_string(options.prefill_chunk) + " must be > 0");
  std::unique_ptr<Model> m(new Model());
  Impl& I = *m->impl_;
  m->allow_past_context_ = options.allow_past_context;
  I.threads = threads;
  I.chunk = options.prefill_chunk;
  I.kv_storage = options.kv_storage;
  I.weight_mode = options.weights == WeightFormat::kF32 ? WeightMode::kF32 : WeightMode::kQuantized;
  I.apply_threads();
  ATTNKIT_RETURN_IF_ERROR(gguf::GgufFile::open(path, &I.file));
  ATTNKIT_RETURN_IF_ERROR(read_config(*I.file, &I.cfg));
  ATTNKIT_RETURN_IF_ERROR(Tokenizer::from_gguf(*I.file, &I.tok));
  ATTNKIT_RETURN_IF_ERROR(I.load_weights());
  *out = std::move(m);
  return Status::ok_status();
}

const GemmaConfig& Model::config() const { return impl_->cfg; }
const Tokenizer& Model::tokenizer() const { return *impl_->tok; }
void Model::reset() {
  const auto hold = lock();
  impl_->clear_caches();
}
int64_t Model::position() const {
  const auto hold = lock();
  return impl_->pos;
}
void Model::set_allow_past_context(bool allow) {
  const auto hold = lock();
  allow_past_context_ = allow;
}
bool Model::allow_past_context() const {
  const auto hold = lock();
  return allow_past_context_;
}

// `end` positions (0 .. end - 1) against the trained context; the caller holds the lock.
Status Model::check_context(int64_t end, const char* what) {
  const int64_t ctx = impl_->cfg.context_length;
  if (end <= ctx) return Status::ok_status();
  if (!allow_past_context_)
    return Status::out_of_range(std::string(what) + ": " + std::to_string(end) + " positions go past the model's context_length " +
                                std::to_string(ctx) + " (gemma3.context_length; later positions were never trained). " +
                                "Use a shorter input, or opt in with allow_past_context (CLI --allow-past-context)");
  if (!warned_past_context_) {
    warned_past_context_ = true;
    std::fprintf(stderr, "attnkit: warning: running past the model's context_length %lld (%lld positions); "
                 "positions beyond it were never trained\n", static_cast<long long>(ctx), static_cast<long long>(end));
  }
  return Status::ok_status();
}

Status Model::reserve(int64_t n) {
  const auto hold = lock();
  if (n < 0) return Status::invalid_argument("Model::reserve: n_positions " + std::to_string(n) + " must be >= 0");
  ATTNKIT_RETURN_IF_ERROR(check_context(n, "Model::reserve"));
  {
    // K and V of every layer for n positions, in f32.
    const GemmaConfig& c = impl_->cfg;
    int64_t per_layer = 0, bytes = 0;
    ATTNKIT_RETURN_IF_ERROR(checked_elements(
        "the KV cache", {{"positions", n}, {"kv heads", c.n_head_kv}, {"head_dim + head_dim_v", c.head_dim + c.head_dim_v}},
        &per_layer));
    ATTNKIT_RETURN_IF_ERROR(checked_bytes("the KV cache for " + std::to_string(n) + " positions", per_layer,
                                          c.n_layer * static_cast<int64_t>(sizeof(float)), &bytes));
  }
  return impl_->reserve(n);
}

Status Model::set_position(int64_t p) {
  const auto hold = lock();
  if (p < impl_->pos)
    return Status::invalid_argument("Model::set_position: pos " + std::to_string(p) + " is before the current position " +
                                    std::to_string(impl_->pos) + " (cached positions must increase)");
  ATTNKIT_RETURN_IF_ERROR(check_context(p, "Model::set_position"));
  impl_->pos = p;
  return Status::ok_status();
}

Status Model::drop_kv_before(int64_t p) {
  const auto hold = lock();
  for (auto& c : impl_->caches) {
    const std::vector<int64_t>& kp = c->positions(0);
    const int64_t n = std::lower_bound(kp.begin(), kp.end(), p) - kp.begin();
    if (n > 0) ATTNKIT_RETURN_IF_ERROR(c->drop_front(0, n));
  }
  return Status::ok_status();
}

Status Model::forward(const int32_t* tokens, int64_t n, const ForwardOutputs& o) {
  const auto hold = lock();
  Impl& I = *impl_;
  if (n <= 0) return Status::invalid_argument("Model::forward: n " + std::to_string(n) + " must be > 0");
  if (tokens == nullptr) return Status::invalid_argument("Model::forward: tokens is null");
  if ((o.maybe_targets == nullptr) != (o.maybe_target_logprobs == nullptr))
    return Status::invalid_argument("Model::forward: maybe_targets and maybe_target_logprobs must be given together");
  if (n > kMaxDim) return Status::out_of_range("Model::forward: n " + std::to_string(n) + " is above the limit " + std::to_string(kMaxDim));
  ATTNKIT_RETURN_IF_ERROR(check_context(I.pos + n, "Model::forward"));
  I.apply_threads();
  const int64_t E = I.cfg.n_embd, V = I.cfg.n_vocab;
  std::vector<float> hidden;
  for (int64_t s = 0; s < n; s += I.chunk) {
    const int64_t m = std::min(I.chunk, n - s);
    hidden.resize(static_cast<size_t>(m * E));
    ATTNKIT_RETURN_IF_ERROR(I.forward_chunk(tokens + s, m, hidden.data()));
    if (o.maybe_hidden) std::memcpy(o.maybe_hidden + s * E, hidden.data(), static_cast<size_t>(m * E) * sizeof(float));
    const bool need_many = o.maybe_all_logits != nullptr || o.maybe_targets != nullptr;
    if (need_many) {
      if (m == 1 && o.maybe_all_logits == nullptr) {
        std::vector<float> lg(static_cast<size_t>(V));
        ATTNKIT_RETURN_IF_ERROR(I.logits_one(hidden.data(), lg.data()));
        double mx = *std::max_element(lg.begin(), lg.end()), sum = 0;
        for (float v : lg) sum += std::exp(v - mx);
        o.maybe_target_logprobs[s] = static_cast<float>(lg[static_cast<size_t>(o.maybe_targets[s])] - (mx + std::log(sum)));
      } else {
        ATTNKIT_RETURN_IF_ERROR(I.logits_many(hidden.data(), m, o.maybe_all_logits ? o.maybe_all_logits + s * V : nullptr,
                                              o.maybe_targets ? o.maybe_targets + s : nullptr,
                                              o.maybe_target_logprobs ? o.maybe_target_logprobs + s : nullptr));
      }
    }
    if (o.maybe_last_logits && s + m == n) {
      if (o.maybe_all_logits) {
        std::memcpy(o.maybe_last_logits, o.maybe_all_logits + (n - 1) * V, static_cast<size_t>(V) * sizeof(float));
      } else {
        ATTNKIT_RETURN_IF_ERROR(I.logits_one(hidden.data() + (m - 1) * E, o.maybe_last_logits));
      }
    }
  }
  return Status::ok_status();
}

Status Model::decode(int32_t token, float* logits) {
  const auto hold = lock();
  ForwardOutputs o;
  o.maybe_last_logits = logits;
  return forward(&token, 1, o);
}

Status Model::logits_from_hidden(const float* hidden, int64_t n, float* logits) {
  if (hidden == nullptr || logits == nullptr || n <= 0) return Status::invalid_argument("Model::logits_from_hidden: bad arguments (n " + std::to_string(n) + ")");
  const auto hold = lock();
  impl_->apply_threads();
  if (n == 1) return impl_->logits_one(hidden, logits);
  return impl_->logits_many(hidden, n, logits, nullptr, nullptr);
}

int32_t sample_token(const float* logits, int64_t n_vocab, const SampleOptions& opt, std::mt19937_64* rng) {
  if (opt.temperature <= 0 || rng == nullptr) return static_cast<int32_t>(std::max_element(logits, logits + n_vocab) - logits);
  // Candidates: the top 1024 logits cover any practical top-p at a realistic temperature; if their
  // mass is short of top_p, the full sorted vocabulary is used.
  const double inv_t = 1.0 / opt.temperature;
  const double mx = *std::max_element(logits, logits + n_vocab);
  double total = 0;
  for (int64_t i = 0; i < n_vocab; ++i) total += std::exp((logits[i] - mx) * inv_t);
  std::vector<int32_t> idx(static_cast<size_t>(n_vocab));
  for (int64_t i = 0; i < n_vocab; ++i) idx[static_cast<size_t>(i)] = static_cast<int32_t>(i);
  auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  int64_t k = std::min<int64_t>(1024, n_vocab);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), by_logit);
  const double top_p = std::clamp(static_cast<double>(opt.top_p), 1e-9, 1.0);
  double cum = 0;
  int64_t keep = 0;
  for (; keep < k; ++keep) {
    cum += std::exp((logits[idx[static_cast<size_t>(keep)]] - mx) * inv_t) / total;
    if (cum >= top_p) { ++keep; break; }
  }
  if (cum < top_p && k < n_vocab) {
    std::sort(idx.begin(), idx.end(), by_logit);
    for (keep = k; keep < n_vocab; ++keep) {
      cum += std::exp((logits[idx[static_cast<size_t>(keep)]] - mx) * inv_t) / total;
      if (cum >= top_p) { ++keep; break; }
    }
  }
  keep = std::clamp<int64_t>(keep, 1, n_vocab);
  double mass = 0;
  for (int64_t i = 0; i < keep; ++i) mass += std::exp((logits[idx[static_cast<size_t>(i)]] - mx) * inv_t);
  std::uniform_real_distribution<double> u(0.0, mass);
  double r = u(*rng);
  for (int64_t i = 0; i < keep; ++i) {
    r -= std::exp((logits[idx[static_cast<size_t>(i)]] - mx) * inv_t);
    if (r <= 0) return idx[static_cast<size_t>(i)];
  }
  return idx[static_cast<size_t>(keep - 1)];
}

Status Model::generate(const std::vector<int32_t>& prompt, const GenerateOptions& options, std::vector<int32_t>* out,
                       GenerateStats* maybe_stats) {
  if (prompt.empty()) return Status::invalid_argument("Model::generate: the prompt is empty");
  if (options.max_tokens < 0) return Status::invalid_argument("Model::generate: max_tokens " + std::to_string(options.max_tokens) + " must be >= 0");
  if (!(options.sample.top_p > 0 && options.sample.top_p <= 1))  // written so that NaN fails too
    return Status::invalid_argument("Model::generate: top_p " + std::to_string(options.sample.top_p) + " must be in (0, 1]");
  if (!(options.sample.temperature >= 0) || !std::isfinite(options.sample.temperature))
    return Status::invalid_argument("Model::generate: temperature " + std::to_string(options.sample.temperature) +
                                    " must be a finite value >= 0 (0 = greedy)");
  const auto hold = lock();  // prefill and decode of one generation must not interleave with others
  Impl& I = *impl_;
  // The last sampled token is never fed back: prompt + max_tokens - 1 positions at most.
  ATTNKIT_RETURN_IF_ERROR(check_context(static_cast<int64_t>(prompt.size()) + std::max<int64_t>(options.max_tokens - 1, 0),
                                        "Model::generate (prompt + max_tokens)"));
  reset();
  using clock = std::chrono::steady_clock;
  std::vector<float> logits(static_cast<size_t>(I.cfg.n_vocab));
  auto t0 = clock::now();
  ForwardOutputs fo;
  fo.maybe_last_logits = logits.data();
  ATTNKIT_RETURN_IF_ERROR(forward(prompt.data(), static_cast<int64_t>(prompt.size()), fo));
  auto t1 = clock::now();
  std::mt19937_64 rng(options.sample.seed);
  std::vector<int32_t> gen;
  for (int64_t i = 0; i < options.max_tokens; ++i) {
    const int32_t t = sample_token(logits.data(), I.cfg.n_vocab, options.sample, &rng);
    gen.push_back(t);
    const bool eos = options.stop_at_eos && (t == I.tok->eos_id() || I.tok->token_text(t) == "<end_of_turn>");
    if (eos) break;
    if (options.on_token && !options.on_token(t, I.tok->token_to_piece(t))) break;
    if (i + 1 == options.max_tokens) break;
    ATTNKIT_RETURN_IF_ERROR(decode(t, logits.data()));
  }
  auto t2 = clock::now();
  if (out) *out = gen;
  if (maybe_stats) {
    maybe_stats->prompt_tokens = static_cast<int64_t>(prompt.size());
    maybe_stats->generated = static_cast<int64_t>(gen.size());
    maybe_stats->prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
    maybe_stats->decode_seconds = std::chrono::duration<double>(t2 - t1).count();
  }
  return Status::ok_status();
}

void Model::set_attention(std::shared_ptr<AttentionBackend> backend) {
  const auto hold = lock();
  impl_->all_layers = std::move(backend);
}
Status Model::set_layer_attention(int64_t layer, std::shared_ptr<AttentionBackend> backend) {
  const auto hold = lock();
  if (layer < 0 || layer >= impl_->cfg.n_layer)
    return Status::out_of_range("Model::set_layer_attention: layer " + std::to_string(layer) + " is outside [0, " +
                                std::to_string(impl_->cfg.n_layer) + ")");
  impl_->per_layer.resize(static_cast<size_t>(impl_->cfg.n_layer));
  impl_->per_layer[static_cast<size_t>(layer)] = std::move(backend);
  return Status::ok_status();
}
void Model::set_taps(Taps taps) {
  const auto hold = lock();
  impl_->taps = std::move(taps);
}
void Model::clear_taps() {
  const auto hold = lock();
  impl_->taps = Taps();
}
Status Model::set_threads(int threads) {
  int resolved = 0;
  ATTNKIT_RETURN_IF_ERROR(resolve_threads(threads, "Model::set_threads: threads", &resolved));
  const auto hold = lock();
  impl_->threads = resolved;
  impl_->apply_threads();
  return Status::ok_status();
}
int Model::threads() const {
  const auto hold = lock();
  return impl_->threads;
}
void Model::set_prefill_chunk(int64_t chunk) {
  const auto hold = lock();
  impl_->chunk = chunk > 0 ? chunk : 512;
}
WeightFormat Model::weight_format() const {
  const auto hold = lock();
  return impl_->weight_mode == WeightMode::kF32 ? WeightFormat::kF32 : WeightFormat::kQuantized;
}
WeightBytes Model::weight_bytes() const {
  const auto hold = lock();
  const Impl& I = *impl_;
  WeightBytes b;
  b.mapped = I.embd->row_bytes() * static_cast<uint64_t>(I.cfg.n_vocab);
  b.f32 = I.output_norm.size() * sizeof(float);
  for (const LayerWeights& w : I.layers) {
    for (const StackedWeights* m : {&w.wqkv, &w.wo, &w.wgu, &w.wdown}) {
      b.mapped += m->mapped_bytes();
      b.packed += m->packed_bytes();
      b.f32 += m->f32_bytes();
    }
    for (const std::vector<float>* v : {&w.attn_norm, &w.q_norm, &w.k_norm, &w.post_attn_norm, &w.ffn_norm, &w.post_ffn_norm})
      b.f32 += v->size() * sizeof(float);
  }
  return b;
}

Status Model::set_kv_storage(kv::KvStorage storage) {
  const auto hold = lock();
  impl_->kv_storage = storage;
  return impl_->make_caches();
}
kv::KvStorage Model::kv_storage() const {
  const auto hold = lock();
  return impl_->kv_storage;
}
void Model::set_kv_policy(std::shared_ptr<kv::KvPolicy> policy) {
  const auto hold = lock();
  impl_->kv_policy = std::move(policy);
  impl_->clear_caches();
}
Status Model::set_kv_policy(const std::string& spec) {
  if (spec.empty() || spec == "none" || spec == "exact") {
    set_kv_policy(std::shared_ptr<kv::KvPolicy>());
    return Status::ok_status();
  }
  std::unique_ptr<kv::KvPolicy> p;
  ATTNKIT_RETURN_IF_ERROR(kv::make_kv_policy(spec, &p));
  set_kv_policy(std::shared_ptr<kv::KvPolicy>(std::move(p)));
  return Status::ok_status();
}
std::shared_ptr<kv::KvPolicy> Model::kv_policy() const {
  const auto hold = lock();
  return impl_->kv_policy;
}
std::vector<kv::KvBytes> Model::kv_bytes() const {
  const auto hold = lock();
  std::vector<kv::KvBytes> out;
  for (const auto& c : impl_->caches) out.push_back(c->bytes());
  return out;
}
kv::KvBytes Model::kv_bytes_total() const {
  const auto hold = lock();
  kv::KvBytes t;
  for (const auto& c : impl_->caches) {
    t.allocated += c->bytes().allocated;
    t.in_use += c->bytes().in_use;
  }
  return t;
}
Status Model::kv_positions(int64_t layer, std::vector<int64_t>* out) const {
  const auto hold = lock();
  if (out == nullptr) return Status::invalid_argument("Model::kv_positions: out is null");
  if (layer < 0 || layer >= impl_->cfg.n_layer)
    return Status::out_of_range("Model::kv_positions: layer " + std::to_string(layer) + " is outside [0, " +
                                std::to_string(impl_->cfg.n_layer) + ")");
  *out = impl_->caches[static_cast<size_t>(layer)]->positions(0);
  return Status::ok_status();
}
std::vector<int64_t> Model::kv_tokens() const {
  const auto hold = lock();
  std::vector<int64_t> out;
  for (const auto& c : impl_->caches) out.push_back(c->size(0));
  return out;
}

}  // namespace attnkit::model
