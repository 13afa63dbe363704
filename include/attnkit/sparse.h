// attnkit/sparse.h: sparse attention for prefill.
//
// Three pieces, used together:
//   1. SparsePattern: an element-wise rule "key j is visible to the query at key-axis position p
//      in head h" (static patterns: sliding window, dilated, strided, BigBird, A-shape,
//      PowerAttention, blockwise-local). Causality is NOT part of a pattern; the call's
//      AttentionParams::causal is applied on top, exactly as in attention.h.
//   2. BlockMask (FlexAttention-style): per (batch, query head, query block) the key blocks to
//      visit, split into "full" blocks (the pattern holds on every element, no element mask) and
//      "partial" blocks (the pattern is evaluated per element), plus optional individually
//      gathered key columns (MInference's vertical lines). Dynamic estimators produce BlockMasks
//      from the actual Q and K.
//   3. sparse_attention(): runs the core tiled online-softmax kernel over a BlockMask; its cost is
//      proportional to the blocks visited. gather_attention() attends each query block to an
//      explicit key-index list and returns LSE so parts merge through merge_states().
//
// Query position: row i of a sequence with Sq queries and Sk keys sits at key-axis position
// p = i + Sk - Sq (bottom-right, the default) or p = i (CausalAlign::kTopLeft), the same
// alignment the causal mask uses. Patterns are defined on (p, j).
//
//   q:   [batch, seq_q,  heads_q,  head_dim]   k, v: [batch, seq_kv, heads_kv, head_dim(_v)]
//   out: [batch, seq_q,  heads_q,  head_dim_v] lse:  [batch, heads_q, seq_q] f32 (optional)
//   broadcast: heads_q % heads_kv == 0 (GQA), as in attention.h.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/fidelity.h"
#include "attnkit/status.h"
#include "attnkit/tensor.h"

namespace attnkit {

// ------------------------------------------------------------------------------------------------
// Element-wise patterns
// ------------------------------------------------------------------------------------------------

// How a rectangle of (query position, key) pairs relates to a pattern.
enum class Cover : uint8_t { kNone = 0, kPartial = 1, kFull = 2 };

class SparsePattern {
 public:
  virtual ~SparsePattern() = default;
  // "window(left=128,right=0)" etc.
  virtual std::string describe() const = 0;
  // The definition: key j visible to the query at key-axis position p, query head h.
  virtual bool visible(int64_t head, int64_t p, int64_t j) const = 0;
  // Whether visible() holds on none, some or all of positions [p0, p1) x keys [k0, k1)
  // (both non-empty). The default checks every element; patterns override it with a closed form
  // so that building a BlockMask costs O(blocks), not O(elements).
  virtual Cover cover(int64_t head, int64_t p0, int64_t p1, int64_t k0, int64_t k1) const;
  // visible() for keys [k0, k1) of one query position: out[j - k0] = 1 or 0. The kernel reads
  // partial blocks through this, one row of a tile at a time; the default calls visible().
  virtual void visible_row(int64_t head, int64_t p, int64_t k0, int64_t k1, uint8_t* out) const;
};

using PatternPtr = std::shared_ptr<const SparsePattern>;

// Sliding window (Longformer): p - left <= j <= p + right (-1 = unbounded on that side).
Status make_window_pattern(int64_t left, int64_t right, PatternPtr* out);
// A-shape / StreamingLLM prefill (MInference's "A-shape"): j < sinks, or p - window <= j <= p + window.
Status make_a_shape_pattern(int64_t sinks, int64_t window, PatternPtr* out);
// Strided (Sparse Transformer, Child et al. 2019): |p - j| < stride, or (p - j) mod stride == 0.
Status make_strided_pattern(int64_t stride, PatternPtr* out);
// Dilated (LongNet, Ding et al. 2023): levels l = 0..levels-1 with segment w_l = segment * 2^l and
// dilation r_l = 2^l; j visible if for some level p and j lie in the same w_l-segment and both are
// = (head mod r_l) modulo r_l. Level 0 is block-diagonal local attention. (LongNet mixes the
// levels' outputs by their softmax denominators; on disjoint sets that is softmax over the union,
// which is what this mask computes.)
Status make_dilated_pattern(int64_t segment, int64_t levels, PatternPtr* out);
// BigBird (Zaheer et al. 2020), on pattern blocks of `block` positions: query block a sees key
// block b if b < global or a < global (global blocks), |a - b| <= window, or b is one of `random`
// blocks drawn per (head, a) from a hash of `seed` (from [0, a] when causal_random, else from all
// blocks of seq_kv).
Status make_bigbird_pattern(int64_t block, int64_t global, int64_t window, int64_t random, uint64_t seed,
                            bool causal_random, int64_t seq_kv, PatternPtr* out);
// PowerAttention (Chen et al. 2025), on pattern blocks of `block` positions: query block a sees
// key block b if |a - b| is 0 or a power of two, plus the first `sinks` positions.
Status make_power_pattern(int64_t block, int64_t sinks, PatternPtr* out);
// Blockwise-local (Star Attention phase 1, Acharya et al. 2024): context blocks of `block`
// positions; a block sees itself and the anchor (first `anchor` positions; anchor = block in the paper).
Status make_blockwise_local_pattern(int64_t block, int64_t anchor, PatternPtr* out);
// Everything visible (with causal: plain causal attention).
PatternPtr make_dense_pattern();

// ------------------------------------------------------------------------------------------------
// BlockMask
// ------------------------------------------------------------------------------------------------

struct BlockMaskShape {
  int64_t batch = 1, heads = 1, seq_q = 0, seq_kv = 0;  // heads = query heads
  int64_t block_q = 64, block_k = 64;                    // align block_q with the kernel tile (64)
  bool causal = false;
  CausalAlign causal_align = CausalAlign::kBottomRight;
};

struct BlockMask {
  BlockMaskShape shape;
  // CSR lists over (b, h, qb) in that order, index list_index(b, h, qb): key block numbers,
  // ascending. full: the pattern holds on the whole block (causality still applied by the kernel);
  // partial: maybe_pattern is evaluated per element (or, without a pattern, causality only).
  std::vector<int64_t> full_offsets, partial_offsets;  // n_lists() + 1 each
  std::vector<int32_t> full_blocks, partial_blocks;
  // Optional individually gathered key positions per list (ascending, outside every listed block).
  // Empty column_offsets = no columns.
  std::vector<int64_t> column_offsets;
  std::vector<int32_t> columns;
  PatternPtr maybe_pattern;

  int64_t n_q_blocks() const { return (shape.seq_q + shape.block_q - 1) / shape.block_q; }
  int64_t n_k_blocks() const { return (shape.seq_kv + shape.block_k - 1) / shape.block_k; }
  int64_t n_lists() const { return shape.batch * shape.heads * n_q_blocks(); }
  int64_t list_index(int64_t b, int64_t h, int64_t qb) const { return (b * shape.heads + h) * n_q_blocks() + qb; }
  bool has_columns() const { return !column_offsets.empty(); }
};

// Checks sizes, ordering, ranges and offsets (every sparse call does this first).
Status validate_block_mask(const BlockMask& m);
// Builds the BlockMask of a pattern: every key block the pattern (and causality) touches, full
// where the pattern holds on the whole block. O(n_q_blocks * n_k_blocks) cover() calls per head.
Status build_block_mask(const BlockMaskShape& shape, PatternPtr pattern, BlockMask* out);
// Every block the causal rule allows (all full): sparse_attention then equals exact attention.
Status dense_block_mask(const BlockMaskShape& shape, BlockMask* out);
// A mask from chosen key blocks per list (ascending or not, duplicates allowed) and optional
// columns per list; blocks beyond causality are dropped, columns inside chosen blocks removed.
// selected[list] and maybe_columns[list] are indexed by list_index(). All blocks are "full" (no
// element pattern): estimators choose whole blocks.
Status block_mask_from_selection(const BlockMaskShape& shape, const std::vector<std::vector<int32_t>>& selected,
                                 const std::vector<std::vector<int32_t>>* maybe_columns, BlockMask* out);

// (query, key) pair counts of a mask.
struct BlockMaskStats {
  double causal_pairs = 0;    // pairs visible under causality alone (the dense work)
  double computed_pairs = 0;  // causally visible pairs inside visited blocks and columns (the work done)
  double density = 0;         // computed_pairs / causal_pairs
  int64_t full_blocks = 0, partial_blocks = 0, columns = 0;
};
BlockMaskStats block_mask_stats(const BlockMask& m);

// Marks, for query row `row` of (b, h), which keys the mask visits (including pattern and
// causality): visited[j] = 1, length seq_kv. Used by the fidelity metrics.
void block_mask_visited_row(const BlockMask& m, int64_t b, int64_t h, int64_t row, uint8_t* visited);

// ------------------------------------------------------------------------------------------------
// Kernels
// ------------------------------------------------------------------------------------------------

// Attention restricted to the mask. The mask's shape must match the tensors (batch, heads_q,
// seq_q, seq_kv) and params.causal / causal_align. Softmax only; window, sinks and custom masks
// of params are still applied by the kernel on top (normally leave them off and use a pattern).
// Variable-length batches are not supported. A row that visits nothing gets 0 and LSE -inf.
Status sparse_attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                        float* maybe_lse, const AttentionParams& params, const BlockMask& mask);

// Gather attention: rows [l * rows_per_list, (l+1) * rows_per_list) of (b, h) attend to the key
// positions of list (b, h, l) (ascending, unique), after causality. Returns LSE so the result
// merges with other parts through merge_states (the sink logit, if any, is added here).
struct KeyIndexLists {
  int64_t batch = 1, heads = 1, seq_q = 0, seq_kv = 0;
  int64_t rows_per_list = 64;
  std::vector<int64_t> offsets;  // batch * heads * ceil(seq_q / rows_per_list) + 1
  std::vector<int32_t> indices;
};
Status gather_attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                        float* maybe_lse, const AttentionParams& params, const KeyIndexLists& lists);

// ------------------------------------------------------------------------------------------------
// Dynamic estimators (look at the actual Q and K; any source of Q/K works). Each fills a
// BlockMask for sparse_attention. Block sizes come from `shape`-like fields in each config.
// ------------------------------------------------------------------------------------------------

// MInference vertical-slash (Jiang et al. 2024): softmax of the last `last_q` queries against all
// keys; column sums pick `vertical` key columns (the first `force_first` always in), diagonal
// sums pick `slash` diagonals (the last `force_last` diagonals, i.e. the local window, always in).
// Slash diagonals become key ranges per query block (computed as dense blocks), vertical columns
// are gathered.
struct VerticalSlashConfig {
  int64_t last_q = 64, vertical = 1000, slash = 6096, force_first = 30, force_last = 100;
  int64_t block = 64;
};
Status estimate_vertical_slash(const TensorView& q, const TensorView& k, const AttentionParams& params,
                               const VerticalSlashConfig& cfg, BlockMask* out);

// Pooled-QK block top-k (MInference block-sparse; SeerAttention without its learned gate):
// mean-pooled Q and K blocks, block scores = softmax over key blocks of pooled q . pooled k,
// keep the top `topk` key blocks per query block (the diagonal block and the first block always in).
struct BlockTopKConfig {
  int64_t block = 64, topk = 100;
};
Status estimate_block_topk(const TensorView& q, const TensorView& k, const AttentionParams& params,
                           const BlockTopKConfig& cfg, BlockMask* out);

// MoBA (Lu et al. 2025): gate of query i on key block b = q_i . mean(K_b); each query takes its
// own block and its top-(k-1) earlier blocks. Queries of one query block share one list (so the
// kernel still runs 64-row tiles): each query votes for its choices and the list keeps the k-1
// most voted blocks (ties by summed gate) plus the diagonal block(s).
struct MobaConfig {
  int64_t block = 64, topk = 8;
};
Status estimate_moba(const TensorView& q, const TensorView& k, const AttentionParams& params, const MobaConfig& cfg,
                     BlockMask* out);

// FlexPrefill (Lai et al. 2025): per head, from the last `last_q` queries, the square-root
// Jensen-Shannon distance between the pooled (block) estimate and the true block-pooled
// attention picks query-aware block-sparse (distance < tau) or vertical-slash; in both, keep
// the fewest blocks / lines whose cumulative estimated attention reaches gamma.
struct FlexPrefillConfig {
  int64_t block = 64, last_q = 128;
  double gamma = 0.9, tau = 0.1;
  int64_t min_budget = 1;  // blocks (or lines) kept at least
};
Status estimate_flexprefill(const TensorView& q, const TensorView& k, const AttentionParams& params,
                            const FlexPrefillConfig& cfg, BlockMask* out, std::vector<int>* maybe_head_choice);

// HiP-style hierarchical top-k (Lee et al. 2024): per query block, start from the causal key
// blocks split into `topk` chunks; halve every chunk, score each half by its best probe block
// (first, middle, last; score = pooled q . pooled k), keep the top-k halves, repeat until chunks
// are single blocks: `topk` blocks per query block, plus the sink and diagonal blocks.
struct HipConfig {
  int64_t block = 64, topk = 16;
};
Status estimate_hip(const TensorView& q, const TensorView& k, const AttentionParams& params, const HipConfig& cfg,
                    BlockMask* out);

// A block mask of exactly the requested causal density with random blocks (the diagonal block
// always in), for benchmarks of how time scales with density.
Status random_block_mask(const BlockMaskShape& shape, double density, uint64_t seed, BlockMask* out);

// ------------------------------------------------------------------------------------------------
// Mechanisms that are not a BlockMask: HyperAttention and Routing attention
// ------------------------------------------------------------------------------------------------

// HyperAttention (Han et al. 2023): sortLSH (angular LSH with `n_projections` hyperplanes, codes
// in Gray order) sorts queries and keys; exact attention on blocks of `block` sorted keys against
// the matching sorted query block, plus `samples` uniformly sampled keys weighted by n/m,
// combined through LSE. Causal by recursive halving: the two diagonal halves recurse, the
// off-diagonal quarter is non-causal HyperAttention. Exact when the sequence is at most min_len.
// Requires seq_q == seq_kv.
struct HyperConfig {
  int64_t block = 256, samples = 256, n_projections = 7, min_len = 4096;
  uint64_t seed = 1;
};
Status hyper_attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                       float* maybe_lse, const AttentionParams& params, const HyperConfig& cfg,
                       double* maybe_computed_pairs);

// Routing attention (Roy et al. 2021): per head, k-means (`iters` Lloyd steps, seeded) over the
// union of normalized queries and keys with `clusters` centroids; each query attends the keys of
// its own cluster (after causality) plus its own position and a local window of `window` keys so
// no row is empty. Requires seq_q == seq_kv.
struct RoutingConfig {
  int64_t clusters = 16, iters = 4, window = 64;
  uint64_t seed = 1;
};
Status routing_attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                         float* maybe_lse, const AttentionParams& params, const RoutingConfig& cfg,
                         double* maybe_computed_pairs);

// ------------------------------------------------------------------------------------------------
// Named sparse methods (shared by the registry, the fidelity command and the model's attention)
// ------------------------------------------------------------------------------------------------

// A sparse mechanism applied to given Q, K, V: estimate() looks at Q and K (static patterns only
// build their mask), attend() runs the sparse kernel; they are timed separately.
class SparseMethod {
 public:
  virtual ~SparseMethod() = default;
  virtual Status estimate(const TensorView& q, const TensorView& k, const AttentionParams& params) = 0;
  virtual Status attend(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                        float* maybe_lse, const AttentionParams& params) = 0;
  // The causally visible (query, key) pairs the kernel computes, summed over batch and heads:
  // known after estimate() for BlockMask methods, after attend() for HyperAttention / Routing
  // (their key choice happens inside attend()).
  virtual double computed_pairs() const = 0;
  // The BlockMask of the last estimate() (per-row key sets for mass recall); null for
  // HyperAttention / Routing.
  virtual const BlockMask* maybe_mask() const { return nullptr; }
};

// Names (sparse_method_names()): sliding_window, a_shape, strided, dilated, bigbird,
// power_attention, star_local, block_dense, block_random, vertical_slash, block_topk, moba,
// flexprefill, hip, hyper_attention, routing.
// spec = "NAME[:key=value,...]" with the same keys as the registry entry of that name.
Status make_sparse_method(const std::string& spec, std::unique_ptr<SparseMethod>* out);
std::vector<std::string> sparse_method_names();

// Runs `spec` on the given inputs next to dense exact attention and fills the fidelity metrics
// (fidelity.h): density, mass recall (BlockMask methods), output relative L2 error, and the
// estimation / attention / dense times (each the best of `repeats` runs).
Status measure_sparse_fidelity(const std::string& spec, const TensorView& q, const TensorView& k, const TensorView& v,
                               const AttentionParams& params, int repeats, FidelityReport* out);

}  // namespace attnkit
