// attnkit/kv_cache.h: the paged KV cache and the KV-cache policies that act on it.
//
// Storage (vLLM / FlashInfer "NHD" paging):
//   k pages: [pages, page_size, kv_heads, head_dim]      page_size P, default 16
//   v pages: [pages, page_size, kv_heads, head_dim_v]
//   int8 storage adds one f32 scale per (token, kv head) for K and for V: [pages, page_size, kv_heads]
// A sequence owns a page table (logical page -> physical page) and holds `size` tokens in slots
// 0 .. size - 1: slot s lives in page_table[s / P] at row s % P. Slots are dense and in
// increasing order of their absolute positions; evicting tokens compacts the survivors toward the
// front and gives the pages that become empty back to the free list (bytes in use go down).
// Attention runs over the pages in place through the core tile kernel (no contiguous copy).
//
// Policies (KvPolicy) decide after each step which slots a layer keeps. A step is a prefill chunk
// or one decode token: its tokens are appended first, attention runs over the cache (new tokens
// included), then the policy may evict, so a layer never holds more than budget + one chunk.
// Selection policies (Quest, TidalDecode, ANN retrieval) keep everything and instead choose, per
// step, the slot ranges attention visits (KvPolicy::select); see docs/kv.md.
//
// Policies are registered by name in the mechanism registry (family "kv") and built from a spec
// "NAME[:key=value,...]" by make_kv_policy(); every policy takes the common keys of
// kv_common_param_specs() (budget / ratio / layers / slack).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/registry.h"
#include "attnkit/status.h"
#include "attnkit/tensor.h"

namespace attnkit::kv {

// ---------------------------------------------------------------------------------------------
// Storage

enum class KvStorage : uint8_t { kF32 = 0, kBF16 = 1, kInt8 = 2 };
const char* kv_storage_name(KvStorage s);
// Parses "f32" / "bf16" / "int8"; false for anything else.
bool parse_kv_storage(const std::string& s, KvStorage* out);

// Bytes of a cache: `allocated` is what its page pool holds from the system, `in_use` what its
// live pages take (pages * page bytes; a partly filled last page counts whole).
struct KvBytes {
  int64_t allocated = 0;
  int64_t in_use = 0;
};

struct KvCacheOptions {
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  int64_t head_dim_v = 0;  // 0 = head_dim
  int64_t page_size = 16;
  KvStorage storage = KvStorage::kBF16;
  // int8 only: store K and V smoothed per channel (KvSmoothing below). Exact for attend_cache
  // without a softcap (it refuses a softcap on a smoothed cache); the model turns it on when its
  // attention has no softcap.
  bool int8_smoothing = false;
  // Exponent of the key channel scales (KvSmoothing::k_scale = range^alpha): 1 equalises the key
  // channels' ranges, 0.5 splits them between keys and queries as SmoothQuant does.
  float smoothing_alpha = 0.5f;
};

// Per-channel smoothing of int8 rows, fixed per cache from the first append of at least
// kMinSmoothingTokens tokens to an empty cache (a shorter first append, such as a decode-only
// start, leaves the cache unsmoothed until it is cleared or empty again):
//   stored key row   = int8 of (k - k_mean) / k_scale, with its per-row scale
//   stored value row = int8 of (v - v_mean) / v_scale, with its per-row scale
// read_key / read_value / gather undo it, so policies see the original rows. attend_cache gives the
// kernel q * k_scale (scores change by the same q . k_mean for every key of a row, which softmax
// ignores: SageAttention's "smooth K", Zhang et al. 2024), adds scale * q . k_mean back to the LSE,
// and maps each output row o to o * v_scale + v_mean (exact because a row's weights sum to 1).
// The kernel's storage format is unchanged: int8 rows with one f32 scale per (token, kv head).
// The per-token range then covers only each key's deviation from the channel means, measured in
// units of each channel's own range, instead of the few outlier channels of post-RoPE keys.
struct KvSmoothing {
  std::vector<float> k_mean, k_scale;  // [kv_heads, head_dim]
  std::vector<float> v_mean, v_scale;  // [kv_heads, head_dim_v]
};
constexpr int64_t kMinSmoothingTokens = 16;

// A run of slots [begin, end) of one sequence.
struct KvSlotRange {
  int64_t begin = 0, end = 0;
};

// RazorAttention's compensation token (Tang et al. 2024, "RazorAttention: Efficient KV Cache
// Compression Through Retrieval Heads"): per kv head the mean key and mean value of the dropped
// tokens, attended as one extra key whose softmax weight is counted `count` times
// (logit + ln count). count 0 = no entry for that head.
struct KvCompensation {
  std::vector<float> key;     // [kv_heads, head_dim]
  std::vector<float> value;   // [kv_heads, head_dim_v]
  std::vector<double> count;  // [kv_heads]
  bool empty() const;
};

// One layer's paged cache (a page pool and the page tables of its sequences).
class PagedKvCache {
 public:
  static Status create(const KvCacheOptions& options, std::unique_ptr<PagedKvCache>* out);
  ~PagedKvCache();
  PagedKvCache(const PagedKvCache&) = delete;
  PagedKvCache& operator=(const PagedKvCache&) = delete;

  const KvCacheOptions& options() const;

  // Sequences: ids are small integers; sequence 0 exists from creation.
  int64_t add_sequence();
  Status remove_sequence(int64_t seq);  // its pages go back to the free list
  int64_t n_sequences() const;
  bool has_sequence(int64_t seq) const;

  // Appends n tokens at the given absolute positions (each greater than the sequence's last).
  //   k: [n, kv_heads, head_dim] f32 contiguous, v: [n, kv_heads, head_dim_v]
  // Converted to the storage type on the way in.
  Status append(int64_t seq, int64_t n, const int64_t* positions, const float* k, const float* v);

  // Keeps the listed slots (strictly increasing, each < size) and drops the rest: survivors move
  // toward the front in order, emptied pages return to the free list.
  Status retain(int64_t seq, const std::vector<int64_t>& keep);
  // Drops the first n slots (window-sized layers): whole pages are released without copying when
  // the sequence starts on a page boundary.
  Status drop_front(int64_t seq, int64_t n);
  // Empties every sequence (pages back to the free list; the pool keeps its memory).
  void clear();
  // Gives the pool's memory beyond the highest page in use back to the system.
  void shrink_to_fit();
  // Makes room for n_pages pages in the pool without allocating them to a sequence.
  Status reserve_pages(int64_t n_pages);

  int64_t size(int64_t seq) const;
  // Absolute position of each slot, [size] increasing.
  const std::vector<int64_t>& positions(int64_t seq) const;
  const std::vector<int32_t>& page_table(int64_t seq) const;

  // f32 copies of one slot's key / value row of one kv head ([head_dim] / [head_dim_v]).
  void read_key(int64_t seq, int64_t slot, int64_t kv_head, float* out) const;
  void read_value(int64_t seq, int64_t slot, int64_t kv_head, float* out) const;
  // f32 copies of slots [begin, end): k [end - begin, kv_heads, head_dim], v likewise. For
  // analysis, tests and attention backends that need contiguous keys; the attention path of
  // attend_cache never copies.
  Status gather(int64_t seq, int64_t begin, int64_t end, float* k, float* v) const;

  // The compensation entry attention adds for a sequence (empty by default).
  const KvCompensation& compensation(int64_t seq) const;
  Status set_compensation(int64_t seq, KvCompensation c);

  int64_t page_size() const;
  int64_t pages_in_use() const;
  int64_t pages_capacity() const;
  KvBytes bytes() const;
  int64_t page_bytes() const;  // K + V (+ scales) bytes of one page

  // Raw pool access for the attention path: the pool seen as one long sequence of rows,
  // [1, capacity * page_size, kv_heads, head_dim] (row = page * page_size + offset). For int8,
  // data points at int8 values and the scales are [capacity * page_size, kv_heads] f32.
  // Valid until the next append / reserve (which may grow the pool).
  const void* k_data() const;
  const void* v_data() const;
  const float* maybe_k_scales() const;
  const float* maybe_v_scales() const;
  // The smoothing the stored rows carry, or null (not int8, smoothing off, or not yet fixed).
  const KvSmoothing* maybe_smoothing() const;

 private:
  PagedKvCache();
  struct Impl;
  std::unique_ptr<Impl> impl_;
  friend struct CacheAccess;
};

// ---------------------------------------------------------------------------------------------
// Attention over the cache

struct CacheAttentionParams {
  float scale = 0.0f;        // 0 = 1/sqrt(head_dim)
  float softcap = 0.0f;      // 0 = off
  int64_t window_left = -1;  // keys at positions >= p - window_left are visible (-1 = unbounded)
  int num_threads = 0;       // 0 = OpenMP default
  // Visit only these slot ranges (selection policies); empty = every slot.
  std::vector<KvSlotRange> slot_ranges;
  // [heads_q] added to the logit of the key at absolute position key_bias_position (ZeroTuning's
  // ln(gamma) on the first token); no key is biased when the cache no longer holds that position.
  const float* maybe_key_bias = nullptr;
  int64_t key_bias_position = 0;
};

// Attention of queries at absolute positions q_positions[i] over sequence `seq` of the cache:
// key at position p_k is visible to query at p iff p_k <= p and (window_left < 0 or
// p_k >= p - window_left). The sequence's compensation entry, if any, joins every row.
//   q:   [1, n, heads_q, head_dim] f32, heads_q % kv_heads == 0
//   out: [1, n, heads_q, head_dim_v] f32
//   lse: [heads_q, n] f32 (optional)
Status attend_cache(const PagedKvCache& cache, int64_t seq, const TensorView& q, const int64_t* q_positions,
                    const CacheAttentionParams& params, const TensorView& out, float* maybe_lse);

// Attention mass per key: for each kv head and slot, the sum over query rows [row_begin, n) and
// over the query heads of the kv head's group of the softmax probability the query gives the key
// (same visibility and compensation as attend_cache). mass: [kv_heads, size] f32.
Status attention_mass(const PagedKvCache& cache, int64_t seq, const TensorView& q, const int64_t* q_positions,
                      int64_t row_begin, const CacheAttentionParams& params, float* mass);

// ---------------------------------------------------------------------------------------------
// Policies

// Budgets in tokens, or as kvpress's compression ratio (fraction of the tokens seen that is
// removed: keep int(seen * (1 - ratio))). Exactly one is set.
struct KvBudget {
  int64_t tokens = -1;  // >= 0 when set
  double ratio = -1;    // in [0, 1) when set
  // Tokens a layer may keep after `seen` tokens of context (never less than min_keep).
  int64_t keep_for(int64_t seen, int64_t min_keep = 1) const;
  std::string to_string() const;
};

// Which layers a policy compresses. Sliding-window layers are already constant in size (window +
// one chunk), so policies act on the global layers unless told otherwise.
enum class KvLayers : uint8_t { kGlobal = 0, kLocal = 1, kAll = 2 };

// The keys every policy takes: budget (tokens), ratio (kvpress fraction removed; overrides budget
// when given), layers (global|local|all), slack (evict only when size > keep + slack, then down to
// keep: amortizes compaction and scoring over slack steps).
struct KvCommonParams {
  KvBudget budget;
  KvLayers layers = KvLayers::kGlobal;
  int64_t slack = 0;
  bool applies_to(bool is_global) const;
  // Tokens to keep now, or -1 when no eviction is due (size <= keep + slack).
  int64_t due(int64_t size, int64_t seen, int64_t min_keep = 1) const;
};
std::vector<ParamSpec> kv_common_param_specs(int64_t default_budget = 1024, int64_t default_slack = 0);
Status parse_kv_common(const MechanismParams& p, KvCommonParams* out);

// What a policy sees for one layer after the step's tokens were appended and attended.
struct KvStep {
  int64_t layer = 0;
  int64_t n_layers = 0;
  bool is_global = true;
  int64_t window_left = -1;  // the layer's own window (-1 = unbounded)
  const PagedKvCache* cache = nullptr;
  int64_t seq = 0;
  int64_t size = 0;    // slots now in the cache
  int64_t n_new = 0;   // slots size - n_new .. size - 1 hold this step's tokens
  const int64_t* positions = nullptr;  // [size] absolute positions, increasing
  int64_t seen = 0;    // tokens of context so far (next absolute position)
  int64_t heads_q = 0, kv_heads = 0, head_dim = 0, head_dim_v = 0;
  float scale = 0.0f;
  const float* q = nullptr;  // [n_new, heads_q, head_dim] f32, post-RoPE queries of this step
  // When needs().mass_rows != 0: attention mass of the step's last mass_rows query rows, summed
  // over each kv group's query heads, [kv_heads, size] (see attention_mass).
  const float* maybe_mass = nullptr;
  int64_t mass_rows = 0;

  void key(int64_t slot, int64_t kv_head, float* out) const { cache->read_key(seq, slot, kv_head, out); }
  void value(int64_t slot, int64_t kv_head, float* out) const { cache->read_value(seq, slot, kv_head, out); }
};

struct KvNeeds {
  // Query rows whose attention mass the step must carry: 0 none, -1 every row of the step,
  // N > 0 the last N rows (fewer when the step is shorter).
  int64_t mass_rows = 0;
};

struct KvDecision {
  bool evict = false;         // false: keep every slot
  std::vector<int64_t> keep;  // when evict: slots to keep, strictly increasing
  // When set, replaces the layer's compensation entry (RazorAttention); the policy counts the
  // dropped tokens itself (compensation_add folds a set of slots into an entry).
  bool set_compensation = false;
  KvCompensation compensation;
};

class KvPolicy {
 public:
  virtual ~KvPolicy() = default;
  // The spec that rebuilds this policy ("h2o:budget=256,recent=0.5,...").
  virtual std::string name() const = 0;
  // Whether the policy acts on this layer at all (layers outside keep exact attention over their
  // normal cache).
  virtual bool applies_to(int64_t layer, bool is_global) const = 0;
  virtual KvNeeds needs(int64_t layer) const { return {}; }
  // Called after each step of each layer it applies to.
  virtual Status on_step(const KvStep& step, KvDecision* decision) = 0;
  // Selection hook, called before attention: slot ranges to visit this step (empty = all). The
  // step's maybe_mass is null here and size already includes the new tokens.
  virtual Status select(const KvStep& step, std::vector<KvSlotRange>* ranges) {
    ranges->clear();
    return Status::ok_status();
  }
  // StreamingLLM's position shift: attention rotates queries so that each cached key sits at its
  // slot index rather than its absolute position (keys are never re-rotated in the cache).
  virtual bool shift_positions() const { return false; }
  // Forgets all per-sequence state (the model was reset).
  virtual void reset() {}
};

// Base for policies that rank slots by a score (kvpress's ScorerPress): the first `sinks` and the
// last `recent` slots are always kept, the rest by decreasing score (ties: the later slot), up to
// the budget. Subclasses write score(); on_retain() lets them compact per-slot state.
class ScoredKvPolicy : public KvPolicy {
 public:
  explicit ScoredKvPolicy(KvCommonParams common) : common_(std::move(common)) {}
  bool applies_to(int64_t layer, bool is_global) const override { return common_.applies_to(is_global); }
  Status on_step(const KvStep& step, KvDecision* decision) override;
  const KvCommonParams& common() const { return common_; }

 protected:
  // Called on every step (also when nothing is evicted) so accumulating policies can update.
  virtual Status observe(const KvStep& step) { return Status::ok_status(); }
  // Scores of slots [0, step.size), higher = keep. Called only when eviction is due.
  virtual Status score(const KvStep& step, std::vector<float>* scores) = 0;
  // Slots protected at the start / end of the cache for this step.
  virtual int64_t sinks(const KvStep& step, int64_t keep) const { return 0; }
  virtual int64_t recent(const KvStep& step, int64_t keep) const { return 0; }
  // Called after a decision to evict, with the kept slots.
  virtual void on_retain(const KvStep& step, const std::vector<int64_t>& keep) {}

  KvCommonParams common_;
};

// The kept slots of a scored policy's rule: slots [0, sinks) and [size - recent, size) always,
// the others by decreasing score (ties to the later slot) until `keep` slots; sorted.
std::vector<int64_t> keep_top_scores(const std::vector<float>& scores, int64_t keep, int64_t sinks, int64_t recent);

// Per-layer running sums over the slots of a layer's cache (H2O's accumulated attention,
// SnapKV's observation window), kept aligned with the cache: sync() extends a layer's vector to
// the step's size with zeros for the new slots (once per step; it starts over if it no longer
// matches the cache), add_mass() adds the step's attention mass summed over kv heads, retain() compacts it
// like the cache.
class SlotAccumulator {
 public:
  std::vector<double>& sync(const KvStep& step);
  void add_mass(const KvStep& step);
  void retain(int64_t layer, const std::vector<int64_t>& keep);
  void reset() { by_layer_.clear(); }

 private:
  std::vector<std::pair<int64_t, std::vector<double>>> by_layer_;
  std::vector<double>& of(int64_t layer);
};

// Folds the keys and values of `dropped` slots into a compensation entry (running means; counts
// add). The entry is sized for the cache if empty.
void compensation_add(const KvStep& step, const std::vector<int64_t>& dropped, KvCompensation* c);

// ---------------------------------------------------------------------------------------------
// One step of one layer

// What the model hands kv_layer_step for one layer and one step (prefill chunk or decode token).
struct KvStepInput {
  int64_t layer = 0;
  int64_t n_layers = 1;
  bool is_global = true;
  int64_t seq = 0;
  int64_t n = 0;                          // tokens of this step
  const int64_t* positions = nullptr;     // [n] absolute positions, increasing
  const float* q = nullptr;               // [n, heads_q, head_dim] post-RoPE
  const float* k = nullptr;               // [n, kv_heads, head_dim] post-RoPE
  const float* v = nullptr;               // [n, kv_heads, head_dim_v]
  int64_t heads_q = 0;
  CacheAttentionParams attn;              // scale, softcap, window_left, threads (slot_ranges unused)
  // RoPE of the layer (NeoX halves: pairs (i, i + head_dim/2), angle = position * inv_freq[i]),
  // needed only by policies with shift_positions().
  const double* maybe_rope_inv_freq = nullptr;
  float* out = nullptr;                   // [n, heads_q, head_dim_v] f32, written
};

// Appends the step's tokens, asks the policy for a selection, attends, computes the attention
// mass the policy needs, calls on_step and applies its decision (retain + compensation). A null
// policy, or one that does not apply to the layer, gives exact attention over the whole cache.
Status kv_layer_step(KvPolicy* maybe_policy, PagedKvCache* cache, const KvStepInput& in);

// ---------------------------------------------------------------------------------------------
// Registry

struct KvPolicyInfo {
  std::string name;
  std::string description;  // cites the paper and states the defaults
  std::vector<ParamSpec> params;
  std::function<Status(const MechanismParams&, std::unique_ptr<KvPolicy>*)> make;
};

// Registers a policy; it also appears in the mechanism registry as family "kv" (its benchmark
// run: one decode step over a seq_kv-token cache under the policy).
void register_kv_policy(KvPolicyInfo info);
// Builds a policy from "NAME[:key=value,...]" (unknown names and keys are errors naming them).
Status make_kv_policy(const std::string& spec, std::unique_ptr<KvPolicy>* out);
std::vector<std::string> kv_policy_names();

// The registration of a policy that takes only the common keys: make() builds P(common).
template <class P>
KvPolicyInfo common_keys_policy_info(std::string name, std::string description) {
  KvPolicyInfo info;
  info.name = std::move(name);
  info.description = std::move(description);
  info.params = kv_common_param_specs();
  info.make = [](const MechanismParams& p, std::unique_ptr<KvPolicy>* out) -> Status {
    KvCommonParams c;
    ATTNKIT_RETURN_IF_ERROR(parse_kv_common(p, &c));
    *out = std::make_unique<P>(c);
    return Status::ok_status();
  };
  return info;
}

struct KvPolicyRegistrar {
  explicit KvPolicyRegistrar(KvPolicyInfo info) { register_kv_policy(std::move(info)); }
};
#define ATTNKIT_REGISTER_KV_POLICY(make_fn) \
  static ::attnkit::kv::KvPolicyRegistrar ATTNKIT_CONCAT(attnkit_kv_registrar_, __LINE__)(make_fn())

}  // namespace attnkit::kv
