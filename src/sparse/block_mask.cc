// BlockMask construction, validation and statistics.
//
// A query block qb covers rows [qb*block_q, min(seq_q, (qb+1)*block_q)), i.e. key-axis positions
// [row + off) with off = seq_kv - seq_q (bottom-right) or 0 (top-left). A key block kb covers keys
// [kb*block_k, min(seq_kv, (kb+1)*block_k)). Under causality key block kb is reachable from the
// query block iff its first key <= the block's last position.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "attnkit/registry.h"
#include "attnkit/sparse.h"
#include "sparse/methods.h"
#include "sparse/sparse_internal.h"

namespace attnkit {

namespace sparse_internal {

int64_t diag_offset(const BlockMaskShape& s) {
  return s.causal_align == CausalAlign::kBottomRight ? s.seq_kv - s.seq_q : 0;
}

// Causally visible keys in [k0, k1) for the query at position p (p may be negative).
int64_t causal_keys_in(const BlockMaskShape& s, int64_t p, int64_t k0, int64_t k1) {
  const int64_t hi = s.causal ? std::min<int64_t>(k1, p + 1) : k1;
  return hi > k0 ? hi - k0 : 0;
}

// Causally visible pairs of query rows [r0, r1) against keys [k0, k1).
double causal_pairs_in(const BlockMaskShape& s, int64_t r0, int64_t r1, int64_t k0, int64_t k1) {
  const int64_t off = diag_offset(s);
  // Closed forms for the common cases: wholly visible (or not causal), wholly hidden.
  if (!s.causal || k1 - 1 <= r0 + off) return static_cast<double>(r1 - r0) * static_cast<double>(k1 - k0);
  if (k0 > r1 - 1 + off) return 0.0;
  double total = 0;
  for (int64_t r = r0; r < r1; ++r) total += static_cast<double>(causal_keys_in(s, r + off, k0, k1));
  return total;
}

// Last key block any row of query block qb can reach (exclusive bound), under causality.
int64_t reachable_k_blocks(const BlockMaskShape& s, int64_t qb) {
  const int64_t nkb = (s.seq_kv + s.block_k - 1) / s.block_k;
  if (!s.causal) return nkb;
  const int64_t last_row = std::min(s.seq_q, (qb + 1) * s.block_q) - 1;
  const int64_t last_pos = last_row + diag_offset(s);
  if (last_pos < 0) return 0;
  return std::min(nkb, last_pos / s.block_k + 1);
}

Status validate_shape(const BlockMaskShape& s) {
  const std::pair<const char*, int64_t> dims[] = {{"batch", s.batch}, {"heads", s.heads}, {"block_q", s.block_q},
                                                  {"block_k", s.block_k}};
  for (const auto& [name, v] : dims) {
    if (v < 1) return Status::invalid_argument(std::string("block mask ") + name + " " + std::to_string(v) + " is not supported; expected >= 1");
  }
  if (s.seq_q < 0 || s.seq_kv < 0) {
    return Status::invalid_argument("block mask seq_q " + std::to_string(s.seq_q) + " / seq_kv " +
                                    std::to_string(s.seq_kv) + " must be >= 0");
  }
  if (s.seq_kv > INT32_MAX) {
    return Status::invalid_argument("block mask seq_kv " + std::to_string(s.seq_kv) + " exceeds the int32 key index range");
  }
  return Status::ok_status();
}

void append_list(std::vector<int64_t>* offsets, std::vector<int32_t>* items, const std::vector<int32_t>& list) {
  items->insert(items->end(), list.begin(), list.end());
  offsets->push_back(static_cast<int64_t>(items->size()));
}

}  // namespace sparse_internal

using namespace sparse_internal;

Status validate_block_mask(const BlockMask& m) {
  ATTNKIT_RETURN_IF_ERROR(validate_shape(m.shape));
  const int64_t n = m.n_lists();
  auto check_csr = [&](const char* name, const std::vector<int64_t>& off, const std::vector<int32_t>& items,
                       int64_t limit) -> Status {
    if (static_cast<int64_t>(off.size()) != n + 1) {
      return Status::invalid_argument(std::string("block mask ") + name + "_offsets has " + std::to_string(off.size()) +
                                      " entries; expected n_lists + 1 = " + std::to_string(n + 1));
    }
    if (off[0] != 0 || off[n] != static_cast<int64_t>(items.size())) {
      return Status::invalid_argument(std::string("block mask ") + name + "_offsets must start at 0 and end at " +
                                      std::to_string(items.size()));
    }
    for (int64_t l = 0; l < n; ++l) {
      if (off[l + 1] < off[l]) return Status::invalid_argument(std::string("block mask ") + name + "_offsets decrease at list " + std::to_string(l));
      for (int64_t e = off[l]; e < off[l + 1]; ++e) {
        if (items[e] < 0 || items[e] >= limit) {
          return Status::invalid_argument(std::string("block mask ") + name + " entry " + std::to_string(items[e]) +
                                          " in list " + std::to_string(l) + " is out of range [0, " +
                                          std::to_string(limit) + ")");
        }
        if (e > off[l] && items[e] <= items[e - 1]) {
          return Status::invalid_argument(std::string("block mask ") + name + " list " + std::to_string(l) +
                                          " is not strictly ascending");
        }
      }
    }
    return Status::ok_status();
  };
  ATTNKIT_RETURN_IF_ERROR(check_csr("full", m.full_offsets, m.full_blocks, m.n_k_blocks()));
  ATTNKIT_RETURN_IF_ERROR(check_csr("partial", m.partial_offsets, m.partial_blocks, m.n_k_blocks()));
  if (m.has_columns()) ATTNKIT_RETURN_IF_ERROR(check_csr("column", m.column_offsets, m.columns, m.shape.seq_kv));
  return Status::ok_status();
}

Status build_block_mask(const BlockMaskShape& shape, PatternPtr pattern, BlockMask* out) {
  ATTNKIT_RETURN_IF_ERROR(validate_shape(shape));
  if (!pattern) return Status::invalid_argument("build_block_mask: pattern is null");
  BlockMask m;
  m.shape = shape;
  m.maybe_pattern = pattern;
  const int64_t nqb = m.n_q_blocks(), off = diag_offset(shape);
  // Patterns do not depend on the batch index: build per head, then repeat over the batch.
  std::vector<std::vector<int32_t>> full(shape.heads * nqb), partial(shape.heads * nqb);
#pragma omp parallel for schedule(dynamic, 4)
  for (int64_t hq = 0; hq < shape.heads * nqb; ++hq) {
    const int64_t h = hq / nqb, qb = hq % nqb;
    const int64_t r0 = qb * shape.block_q, r1 = std::min(shape.seq_q, r0 + shape.block_q);
    const int64_t nkb = reachable_k_blocks(shape, qb);
    for (int64_t kb = 0; kb < nkb; ++kb) {
      const int64_t k0 = kb * shape.block_k, k1 = std::min(shape.seq_kv, k0 + shape.block_k);
      const Cover c = pattern->cover(h, r0 + off, r1 + off, k0, k1);
      if (c == Cover::kFull) full[hq].push_back(static_cast<int32_t>(kb));
      else if (c == Cover::kPartial) partial[hq].push_back(static_cast<int32_t>(kb));
    }
  }
  m.full_offsets.assign(1, 0);
  m.partial_offsets.assign(1, 0);
  for (int64_t b = 0; b < shape.batch; ++b) {
    for (int64_t hq = 0; hq < shape.heads * nqb; ++hq) {
      append_list(&m.full_offsets, &m.full_blocks, full[hq]);
      append_list(&m.partial_offsets, &m.partial_blocks, partial[hq]);
    }
  }
  *out = std::move(m);
  return Status::ok_status();
}

Status dense_block_mask(const BlockMaskShape& shape, BlockMask* out) {
  return build_block_mask(shape, make_dense_pattern(), out);
}

Status block_mask_from_selection(const BlockMaskShape& shape, const std::vector<std::vector<int32_t>>& selected,
                                 const std::vector<std::vector<int32_t>>* maybe_columns, BlockMask* out) {
  ATTNKIT_RETURN_IF_ERROR(validate_shape(shape));
  BlockMask m;
  m.shape = shape;
  const int64_t n = m.n_lists(), nqb = m.n_q_blocks();
  if (static_cast<int64_t>(selected.size()) != n) {
    return Status::invalid_argument("block_mask_from_selection: selected has " + std::to_string(selected.size()) +
                                    " lists; expected " + std::to_string(n));
  }
  if (maybe_columns && static_cast<int64_t>(maybe_columns->size()) != n) {
    return Status::invalid_argument("block_mask_from_selection: columns has " + std::to_string(maybe_columns->size()) +
                                    " lists; expected " + std::to_string(n));
  }
  m.full_offsets.assign(1, 0);
  m.partial_offsets.assign(n + 1, 0);
  if (maybe_columns) m.column_offsets.assign(1, 0);
  const int64_t off = diag_offset(shape);
  std::vector<int32_t> list, cols;
  for (int64_t l = 0; l < n; ++l) {
    const int64_t qb = l % nqb;
    const int64_t reach = reachable_k_blocks(shape, qb);
    list.clear();
    for (int32_t kb : selected[l]) {
      if (kb >= 0 && kb < reach) list.push_back(kb);
    }
    std::sort(list.begin(), list.end());
    list.erase(std::unique(list.begin(), list.end()), list.end());
    append_list(&m.full_offsets, &m.full_blocks, list);
    if (maybe_columns) {
      const int64_t last_row = std::min(shape.seq_q, (qb + 1) * shape.block_q) - 1;
      const int64_t key_limit = shape.causal ? std::min(shape.seq_kv, last_row + off + 1) : shape.seq_kv;
      cols.clear();
      for (int32_t j : (*maybe_columns)[l]) {
        if (j < 0 || j >= key_limit) continue;
        if (std::binary_search(list.begin(), list.end(), static_cast<int32_t>(j / shape.block_k))) continue;
        cols.push_back(j);
      }
      std::sort(cols.begin(), cols.end());
      cols.erase(std::unique(cols.begin(), cols.end()), cols.end());
      append_list(&m.column_offsets, &m.columns, cols);
    }
  }
  *out = std::move(m);
  return Status::ok_status();
}

BlockMaskStats block_mask_stats(const BlockMask& m) {
  BlockMaskStats st;
  const BlockMaskShape& s = m.shape;
  const int64_t nqb = m.n_q_blocks(), off = diag_offset(s);
  const double per_head_causal = causal_pairs_in(s, 0, s.seq_q, 0, s.seq_kv);
  st.causal_pairs = per_head_causal * static_cast<double>(s.batch * s.heads);
  double computed = 0;
#pragma omp parallel for reduction(+ : computed) schedule(dynamic, 8)
  for (int64_t l = 0; l < m.n_lists(); ++l) {
    const int64_t qb = l % nqb;
    const int64_t r0 = qb * s.block_q, r1 = std::min(s.seq_q, r0 + s.block_q);
    auto add_blocks = [&](const std::vector<int64_t>& o, const std::vector<int32_t>& items) {
      for (int64_t e = o[l]; e < o[l + 1]; ++e) {
        const int64_t k0 = int64_t{items[e]} * s.block_k, k1 = std::min(s.seq_kv, k0 + s.block_k);
        computed += causal_pairs_in(s, r0, r1, k0, k1);
      }
    };
    add_blocks(m.full_offsets, m.full_blocks);
    add_blocks(m.partial_offsets, m.partial_blocks);
    if (m.has_columns()) {
      for (int64_t e = m.column_offsets[l]; e < m.column_offsets[l + 1]; ++e) {
        const int64_t j = m.columns[e];
        for (int64_t r = r0; r < r1; ++r) computed += causal_keys_in(s, r + off, j, j + 1) > 0 ? 1.0 : 0.0;
      }
    }
  }
  st.computed_pairs = computed;
  st.density = st.causal_pairs > 0 ? computed / st.causal_pairs : 0.0;
  st.full_blocks = static_cast<int64_t>(m.full_blocks.size());
  st.partial_blocks = static_cast<int64_t>(m.partial_blocks.size());
  st.columns = static_cast<int64_t>(m.columns.size());
  return st;
}

void block_mask_visited_row(const BlockMask& m, int64_t b, int64_t h, int64_t row, uint8_t* visited) {
  const BlockMaskShape& s = m.shape;
  const int64_t l = m.list_index(b, h, row / s.block_q);
  const int64_t p = row + diag_offset(s);
  const int64_t hi_causal = s.causal ? std::min<int64_t>(s.seq_kv, p + 1) : s.seq_kv;
  auto mark = [&](int64_t j) { if (j < hi_causal) visited[j] = 1; };
  for (int64_t e = m.full_offsets[l]; e < m.full_offsets[l + 1]; ++e) {
    const int64_t k0 = int64_t{m.full_blocks[e]} * s.block_k, k1 = std::min(s.seq_kv, k0 + s.block_k);
    for (int64_t j = k0; j < k1; ++j) mark(j);
  }
  for (int64_t e = m.partial_offsets[l]; e < m.partial_offsets[l + 1]; ++e) {
    const int64_t k0 = int64_t{m.partial_blocks[e]} * s.block_k, k1 = std::min(s.seq_kv, k0 + s.block_k);
    for (int64_t j = k0; j < k1; ++j) {
      if (!m.maybe_pattern || m.maybe_pattern->visible(h, p, j)) mark(j);
    }
  }
  if (m.has_columns()) {
    for (int64_t e = m.column_offsets[l]; e < m.column_offsets[l + 1]; ++e) mark(m.columns[e]);
  }
}

Status random_block_mask(const BlockMaskShape& shape, double density, uint64_t seed, BlockMask* out) {
  ATTNKIT_RETURN_IF_ERROR(validate_shape(shape));
  if (!(density > 0.0 && density <= 1.0)) {
    return Status::invalid_argument("random_block_mask density " + std::to_string(density) + " is not supported; expected (0, 1]");
  }
  BlockMask probe;
  probe.shape = shape;
  const int64_t n = probe.n_lists(), nqb = probe.n_q_blocks();
  std::vector<std::vector<int32_t>> sel(n);
  // Per query block keep round(density * reachable) blocks: the diagonal (last reachable) block
  // and a seeded random choice of the others (partial Fisher-Yates on a counter-based hash).
#pragma omp parallel for schedule(dynamic, 8)
  for (int64_t l = 0; l < n; ++l) {
    const int64_t qb = l % nqb;
    const int64_t reach = reachable_k_blocks(shape, qb);
    if (reach == 0) continue;
    int64_t want = std::max<int64_t>(1, static_cast<int64_t>(density * static_cast<double>(reach) + 0.5));
    want = std::min(want, reach);
    std::vector<int32_t> pool(reach - 1);
    for (int64_t i = 0; i + 1 < reach; ++i) pool[i] = static_cast<int32_t>(i);
    sel[l].push_back(static_cast<int32_t>(reach - 1));
    uint64_t state = seed * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(l) * 0xbf58476d1ce4e5b9ull + 1;
    for (int64_t t = 0; t + 1 < want; ++t) {
      state = splitmix64(&state);
      const int64_t pick = t + static_cast<int64_t>(state % static_cast<uint64_t>(pool.size() - t));
      std::swap(pool[t], pool[pick]);
      sel[l].push_back(pool[t]);
    }
  }
  return block_mask_from_selection(shape, sel, nullptr, out);
}

namespace {

// Registry entry: random blocks at a given density, for benchmarks of how time scales with it.
Mechanism make_block_random_mechanism() {
  return sparse_internal::sparse_mechanism(
      {"block_random",
       "Random causal blocks at a given density (diagonal always in); for scaling benchmarks",
       {{"density", "0.1", "fraction of reachable key blocks per query block"}, {"seed", "1", "seed"},
        sparse_internal::kBlockParam},
       [](const MechanismParams& p, std::unique_ptr<SparseMethod>* out) -> Status {
         int64_t block = 0, seed = 0;
         double density = 0;
         ATTNKIT_RETURN_IF_ERROR(sparse_internal::read_block(p, &block));
         ATTNKIT_RETURN_IF_ERROR(param_float(p, "density", &density));
         ATTNKIT_RETURN_IF_ERROR(param_int(p, "seed", &seed));
         if (!(density > 0 && density <= 1)) {
           return Status::invalid_argument("parameter density=" + p.at("density") + " is not supported; expected (0, 1]");
         }
         *out = sparse_internal::mask_method(
             [=](const TensorView& q, const TensorView& k, const AttentionParams& params, BlockMask* m) {
               return random_block_mask(sparse_internal::square_block_shape(q, k, params, block), density,
                                        static_cast<uint64_t>(seed), m);
             });
         return Status::ok_status();
       }});
}
ATTNKIT_REGISTER_MECHANISM(make_block_random_mechanism);

}  // namespace

}  // namespace attnkit
