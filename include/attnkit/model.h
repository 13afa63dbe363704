// attnkit/model.h: Gemma 3 (270M) forward pass on attnkit, from a GGUF file.
//
// Architecture (Gemma Team 2025, "Gemma 3 Technical Report"; read from GGUF metadata gemma3.*):
//   x = embed[token] * sqrt(n_embd)
//   per layer l:
//     h = rmsnorm(x) * attn_norm                       (GGUF norm weights already hold Gemma's 1 + w)
//     q, k, v = h Wq, h Wk, h Wv                        per head: q = rmsnorm(q) * q_norm, k likewise
//     q, k = rope(q, k, pos, base)                      NeoX halves; base 10000 on local layers,
//                                                       rope.freq_base (1e6) on global ones
//     a = attention(q, k, v)                            causal; local layers see the last
//                                                       `sliding_window` positions (self included);
//                                                       every 6th layer (l % 6 == 5) is global;
//                                                       scale = query_pre_attn_scalar^-1/2 = head_dim^-1/2
//     x = x + rmsnorm(a Wo) * post_attention_norm
//     h = rmsnorm(x) * ffn_norm
//     x = x + rmsnorm((gelu_tanh(h Wgate) * (h Wup)) Wdown) * post_ffw_norm
//   logits = (rmsnorm(x) * output_norm) embed^T        (tied output embedding)
//
// Numerics: by default (WeightFormat::kQuantized) the projection weights stay in their GGUF block
// formats inside the file's mapping (Q4_K, Q5_0, Q6_K, Q8_0 in the shipped file; never expanded to
// f32). Decode quantizes the activations to int16 per 32 values and sums int8 x int16 products
// exactly (AVX512-VNNI / AVX2 / portable; src/model/quant_matmul.h); prefill (8 tokens or more)
// dequantizes tiles of rows per thread and uses sgemm (src/model/weights.h). WeightFormat::kF32
// instead dequantizes them once at load and uses OpenBLAS sgemm / an f32 matvec: the accuracy
// reference. The tied 262144 x 640 embedding is always read in place; the logits of one token use
// a fused dequantize-and-dot matvec with f32 activations (src/model/matvec.cc), of many tokens
// dequantized slices and sgemm. Sums accumulate in f32; GELU, RMSNorm and RoPE are vectorized
// (src/model/model_ops.h states their accuracy).
//
// KV cache (attnkit/kv_cache.h): one paged cache per layer, bf16 by default (LoadOptions::kv_storage).
// The 15 sliding-window layers keep only what a later query can still see (window + one prefill
// chunk, rounded to pages), so their memory is constant in the context length; the 3 global
// layers keep every position unless a KV policy (set_kv_policy, "h2o:budget=256", ...) evicts.
// kv_bytes() reports each layer's allocated and in-use bytes.
//
// Attention always goes through an AttentionBackend; the default one runs the KV layer step
// (append, attention over the pages in place, the policy's eviction). Backends are chosen per layer and head by name: make_attention_backend("exact"),
// "streaming:sinks=4,window=1024" (A-shape / StreamingLLM on the exact kernel's window and sink
// options), "window:size=N" (sliding window on every layer).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/kv_cache.h"
#include "attnkit/status.h"
#include "attnkit/tensor.h"

namespace attnkit {
class Tokenizer;
namespace gguf {
class GgufFile;
}
}  // namespace attnkit

namespace attnkit::model {

// Every hyperparameter the forward pass uses; read_config fills it from GGUF metadata.
struct GemmaConfig {
  int64_t n_layer = 0;
  int64_t n_embd = 0;
  int64_t n_ff = 0;
  int64_t n_head = 0;
  int64_t n_head_kv = 0;
  int64_t head_dim = 0;    // attention.key_length
  int64_t head_dim_v = 0;  // attention.value_length
  int64_t n_vocab = 0;
  int64_t context_length = 0;
  int64_t sliding_window = 0;  // local layers see positions pos - (sliding_window - 1) .. pos
  int64_t swa_pattern = 6;     // layer l is global when (l + 1) % swa_pattern == 0
  float rope_base_global = 1e6f;
  float rope_base_local = 1e4f;  // not stored in the GGUF; llama.cpp and HF fix it at 10000
  float rms_eps = 1e-6f;
  float attn_scale = 0;          // 1 / sqrt(query_pre_attn_scalar); = 1/sqrt(head_dim) for 270M
  float final_logit_softcap = 0; // 0 = off (gemma3 has none; read if present)
  float attn_logit_softcap = 0;  // 0 = off
  float embed_scale = 0;         // sqrt(n_embd)

  bool is_global(int64_t layer) const { return swa_pattern <= 0 || (layer + 1) % swa_pattern == 0; }
  float rope_base(int64_t layer) const { return is_global(layer) ? rope_base_global : rope_base_local; }
  // Exact attention's window_left for a layer: -1 (unbounded) on global layers.
  int64_t window_left(int64_t layer) const { return is_global(layer) ? -1 : sliding_window - 1; }
};

Status read_config(const gguf::GgufFile& file, GemmaConfig* out);

// ---- attention backends ----

// One attention call of one layer: the queries of the current chunk against the whole cache.
//   q:   [1, n_q, n_head, head_dim]          post-RoPE, f32
//   k:   [1, n_kv, n_head_kv, head_dim]      post-RoPE cache, positions 0 .. n_kv - 1
//   v:   [1, n_kv, n_head_kv, head_dim_v]
//   out: [1, n_q, n_head, head_dim_v]        to be written
// Query row i sits at position q_pos0 + i = n_kv - n_q + i (bottom-right causal alignment).
struct AttentionCall {
  int64_t layer = 0;
  const GemmaConfig* config = nullptr;
  TensorView q, k, v, out;
  int64_t q_pos0 = 0;
  // The model's own attention parameters for this layer (causal, window_left, scale, threads);
  // a backend starts from these and changes what it replaces.
  AttentionParams params;
  // The layer's paged cache (sequence 0, the chunk already appended): a backend that needs the
  // keys' absolute positions (cache->positions(0)) or attention over the pages in place
  // (kv::attend_cache) reads it. k and v are its contents in slot order.
  const kv::PagedKvCache* cache = nullptr;
};

class AttentionBackend {
 public:
  virtual ~AttentionBackend() = default;
  virtual std::string name() const = 0;
  virtual Status attend(const AttentionCall& call) = 0;
  // A backend whose only change is a per-head bias on one key position's logit (ZeroTuning)
  // returns true and sets *bias ([n_head] values, or empty for none on this layer) and *position. The
  // model then keeps its default path for the layer (bf16 pages read in place, KV policies) with
  // the bias applied inside the kernel (AttentionParams::maybe_key_bias), instead of attend().
  virtual bool key_bias(int64_t /*layer*/, int64_t /*n_head*/, std::vector<float>* /*bias*/, int64_t* /*position*/) const {
    return false;
  }
};

// "exact" (default), "streaming:sinks=S,window=W" (global layers see the first S positions and the
// last W; local layers keep their own window, narrowed to W if smaller, without sinks),
// "window:size=W" (every layer, also global ones, sees only the last W positions), or any name of
// sparse_method_names() (attnkit/sparse.h) with its parameters, used for multi-token calls (prefill)
// while single-token decode stays exact. Unknown names or keys fail naming them.
Status make_attention_backend(const std::string& spec, std::unique_ptr<AttentionBackend>* out);
// Names make_attention_backend accepts, with their parameters (for --help and errors).
std::vector<std::string> attention_backend_names();

// Splits "name:key=value,key=value" into the name and its parameters (errors name the bad item).
Status parse_attention_spec(const std::string& spec, std::string* name, std::map<std::string, std::string>* kv);

// Backends defined by layers above the model (the analysis layer's calibration backends "act" and
// "zerotuning", head masking "mask_heads") register a factory under their name; make_attention_backend
// then accepts "name:key=value,...". The factory receives the whole spec.
using AttentionBackendFactory = std::function<Status(const std::string& spec, std::unique_ptr<AttentionBackend>* out)>;
// Registers a factory; a second registration of the same name aborts (programming error).
void register_attention_backend(const std::string& name, const std::string& example, AttentionBackendFactory factory);
struct AttentionBackendRegistrar {
  AttentionBackendRegistrar(const std::string& name, const std::string& example, AttentionBackendFactory factory) {
    register_attention_backend(name, example, std::move(factory));
  }
};

// ---- taps ----
// What a tap sees for one layer and one chunk of n tokens at positions pos0 .. pos0 + n - 1.
// Arrays are row-major and contiguous: [n, n_head, head_dim] for q, [n, n_head_kv, head_dim] for k,
// [n, n_head_kv, head_dim_v] for v. Pre-RoPE means after the per-head Q/K RMSNorm, before rotation.
// probs (when requested) holds, for each requested position present in this chunk, the exact
// softmax probabilities [n_head, n_kv] of that query over keys 0 .. n_kv - 1 with the layer's own
// mask (zeros where masked), computed from post-RoPE q and the cache whatever the backend.
struct TapData {
  int64_t layer = 0;
  int64_t pos0 = 0;
  int64_t n = 0;
  int64_t n_kv = 0;  // keys in the cache after this chunk
  const float* q_pre = nullptr;
  const float* q_post = nullptr;
  const float* k_pre = nullptr;
  const float* k_post = nullptr;
  const float* v = nullptr;
  std::vector<int64_t> prob_positions;  // absolute positions with probabilities
  const float* probs = nullptr;         // [prob_positions.size(), n_head, n_kv]
  // Absolute position of each of the n_kv cache slots the probabilities index (slot j is position
  // j until a sliding-window layer drops old pages or a KV policy evicts).
  const int64_t* kv_positions = nullptr;
};

struct Taps {
  std::function<void(const TapData&)> on_layer;  // called after each layer's attention
  std::vector<int64_t> layers;                   // empty = every layer
  std::vector<int64_t> prob_positions;           // absolute query positions to give probabilities for
  // Called after each layer (of `layers`) has added its attention and MLP outputs, with the residual
  // stream x [n, n_embd] of positions pos0 .. pos0 + n - 1. It may edit x: the next layer reads the
  // edited values (ablations of massive activations do this).
  std::function<void(int64_t layer, int64_t pos0, int64_t n, float* x)> on_residual;
  bool wants(int64_t layer) const;
  bool wants_residual(int64_t layer) const;
};

// Writes a float32 array as a NumPy .npy file (version 1.0, little-endian, C order).
Status write_npy(const std::string& path, const float* data, const std::vector<int64_t>& shape);

// ---- the model ----
// How the projection weights are held and multiplied (see Numerics above).
enum class WeightFormat { kQuantized, kF32 };

// Bytes of weights the forward pass reads: GGUF blocks read in place from the file's mapping
// (the embedding, which is also the output projection), integer-format projections unpacked at
// load into int8 values with f32 scales (kQuantized; their pages of the mapping are released) and
// f32 copies made at load (norm weights; the projections with kF32).
// "quantized" | "f32" (CLI --weights, Python weights=); anything else fails naming the value.
Status parse_weight_format(const std::string& name, WeightFormat* out);
const char* weight_format_name(WeightFormat format);

struct WeightBytes {
  uint64_t mapped = 0;
  uint64_t packed = 0;
  uint64_t f32 = 0;
};

struct LoadOptions {
  int threads = 2;  // OpenMP and OpenBLAS threads
  int64_t prefill_chunk = 512;
  WeightFormat weights = WeightFormat::kQuantized;
  // Positions at or past config().context_length (gemma3.context_length) were never trained:
  // forward, decode and generate refuse them unless this is set, and then warn once on stderr.
  bool allow_past_context = false;
  kv::KvStorage kv_storage = kv::KvStorage::kBF16;  // element type of the KV cache
};

// Outputs of Model::forward for n tokens. Any pointer may be null.
struct ForwardOutputs {
  float* maybe_last_logits = nullptr;  // [n_vocab] of the last token
  float* maybe_all_logits = nullptr;   // [n, n_vocab] (large: n * 1 MiB)
  // Log-probability of targets[i] under the distribution after token i ([n] in, [n] out);
  // computed in vocabulary slices, never materializing [n, n_vocab].
  const int32_t* maybe_targets = nullptr;
  float* maybe_target_logprobs = nullptr;
  float* maybe_hidden = nullptr;  // [n, n_embd] final normed hidden states
};

struct SampleOptions {
  float temperature = 0.0f;  // 0 = greedy
  float top_p = 1.0f;
  uint64_t seed = 0;
};

struct GenerateOptions {
  int64_t max_tokens = 64;
  SampleOptions sample;
  bool stop_at_eos = true;
  // Called with each new token and its text piece; return false to stop.
  std::function<bool(int32_t token, const std::string& piece)> on_token;
};

struct GenerateStats {
  int64_t prompt_tokens = 0, generated = 0;
  double prefill_seconds = 0, decode_seconds = 0;
};

// Threads: one Model may be shared by several threads. Every method that reads or changes the
// cache, the attention backends, the taps or the thread count holds the model's lock, so concurrent
// calls on one Model run one after another; calls on different Models run in parallel. A caller
// whose calls must not interleave with another thread's (reset, then forward) holds lock() around
// them; the lock is recursive, so the methods still work inside it.
class Model {
 public:
  static Status load(const std::string& path, const LoadOptions& options, std::unique_ptr<Model>* out);
  ~Model();

  const GemmaConfig& config() const;
  const Tokenizer& tokenizer() const;

  // Running past config().context_length: see LoadOptions::allow_past_context.
  void set_allow_past_context(bool allow);
  bool allow_past_context() const;

  // Forgets the cache (position 0). Keeps the capacity.
  void reset();
  int64_t position() const;
  // Makes room for n positions in the KV cache (grows on demand otherwise). Layers the KV policy
  // acts on are left to grow on demand, so that an evicting policy allocates about its budget.
  Status reserve(int64_t n_positions);
  // Places the next forward at position pos (>= position(); the positions in between stay empty).
  // With drop_kv_before, this lets a process encode a block of a longer sequence at its global
  // positions behind a prefix it keeps or drops (Star Attention's context phase, distributed.h).
  Status set_position(int64_t pos);
  // Removes from every layer's cache the tokens at positions < pos.
  Status drop_kv_before(int64_t pos);

  // Runs n tokens at positions position() .. position() + n - 1 (in prefill chunks), appends them
  // to the cache and fills the requested outputs. Fails (kOutOfRange, naming context_length) when
  // the last position is at or past the context, unless allow_past_context.
  Status forward(const int32_t* tokens, int64_t n, const ForwardOutputs& outputs);
  // One token through the cache (the decode path); logits [n_vocab].
  Status decode(int32_t token, float* logits);

  // Logits of final hidden states ([n, n_embd] -> [n, n_vocab]).
  Status logits_from_hidden(const float* hidden, int64_t n, float* logits);

  // Prefills `prompt` (after reset) and generates. Prompt plus max_tokens must fit in the context
  // (or allow_past_context); that is checked before anything runs.
  Status generate(const std::vector<int32_t>& prompt, const GenerateOptions& options, std::vector<int32_t>* out,
                  GenerateStats* maybe_stats = nullptr);

  // Attention: one backend for every layer, or per layer (nullptr = the exact default).
  void set_attention(std::shared_ptr<AttentionBackend> backend);
  Status set_layer_attention(int64_t layer, std::shared_ptr<AttentionBackend> backend);  // layer in [0, n_layer)
  void set_taps(Taps taps);
  void clear_taps();
  Status set_threads(int threads);  // 0 or 1..max_threads() (attnkit/threads.h)
  int threads() const;
  void set_prefill_chunk(int64_t chunk);
  WeightFormat weight_format() const;
  WeightBytes weight_bytes() const;

  // Keeps other threads out of this model until the returned lock is released.
  std::unique_lock<std::recursive_mutex> lock() const { return std::unique_lock<std::recursive_mutex>(mutex_); }
  // KV cache. set_kv_storage rebuilds the caches (position 0). A policy ("streaming:sinks=4,
  // window=1024,shift=true", see attnkit/kv_cache.h) acts on the layers of the default (exact)
  // attention backend; setting one resets the cache. "" / "none" / "exact" = no policy.
  Status set_kv_storage(kv::KvStorage storage);
  kv::KvStorage kv_storage() const;
  void set_kv_policy(std::shared_ptr<kv::KvPolicy> policy);
  Status set_kv_policy(const std::string& spec);
  std::shared_ptr<kv::KvPolicy> kv_policy() const;
  std::vector<kv::KvBytes> kv_bytes() const;  // per layer
  kv::KvBytes kv_bytes_total() const;
  std::vector<int64_t> kv_tokens() const;     // tokens each layer's cache holds
  // Absolute positions of the tokens a layer's cache holds, increasing (what a policy kept).
  Status kv_positions(int64_t layer, std::vector<int64_t>* out) const;

 private:
  Model();
  struct Impl;
  std::unique_ptr<Impl> impl_;
  mutable std::recursive_mutex mutex_;
  bool allow_past_context_ = false;
  bool warned_past_context_ = false;
  Status check_context(int64_t end, const char* what);
};

// Chooses the next token from logits [n_vocab]: argmax when temperature <= 0, else softmax(logits
// / temperature) restricted to the smallest top set with mass >= top_p, drawn with rng.
int32_t sample_token(const float* logits, int64_t n_vocab, const SampleOptions& options, std::mt19937_64* rng);

// Captures the taps of `layers` (empty = all) for `tokens` into dir/layerLL_{q_pre,q_post,k_pre,
// k_post,v}.npy ([n, heads, dim] each) plus dir/tokens.json. Resets the model first.
Status capture_activations(Model* model, const std::vector<int32_t>& tokens, const std::vector<int64_t>& layers,
                           const std::string& dir);

}  // namespace attnkit::model
