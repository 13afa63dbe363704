// The paged KV cache (attnkit/kv_cache.h): one pool of pages per layer, page tables per sequence.
//
// The pool is one buffer per tensor (K, V, and for int8 their scales) holding `capacity` pages;
// it grows when the free list is empty and never moves pages otherwise. Free pages sit in a
// min-heap so a sequence gets the lowest free page: pages appended in a row tend to be adjacent,
// and attention then walks long physically contiguous runs of rows (src/kv/attend_cache.cc).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <queue>
#include <string>

#include "attnkit/kv_cache.h"
#include "kv/kv_internal.h"

namespace attnkit::kv {

const char* kv_storage_name(KvStorage s) {
  switch (s) {
    case KvStorage::kF32: return "f32";
    case KvStorage::kBF16: return "bf16";
    case KvStorage::kInt8: return "int8";
  }
  return "unknown";
}

bool parse_kv_storage(const std::string& s, KvStorage* out) {
  if (s == "f32") { *out = KvStorage::kF32; return true; }
  if (s == "bf16") { *out = KvStorage::kBF16; return true; }
  if (s == "int8") { *out = KvStorage::kInt8; return true; }
  return false;
}

bool KvCompensation::empty() const {
  for (double c : count)
    if (c > 0) return false;
  return true;
}

namespace {

size_t elem_bytes(KvStorage s) { return s == KvStorage::kF32 ? 4 : s == KvStorage::kBF16 ? 2 : 1; }

// Writes one row of `n` f32 values in the storage type; int8 returns its scale (absmax / 127,
// symmetric round-to-nearest; an all-zero row gets scale 0).
float store_row(KvStorage s, const float* src, int64_t n, uint8_t* dst) {
  switch (s) {
    case KvStorage::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return 1.0f;
    case KvStorage::kBF16: {
      uint16_t* d = reinterpret_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = f32_to_bf16(src[i]);
      return 1.0f;
    }
    case KvStorage::kInt8: {
      float amax = 0.0f;
      for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(src[i]));
      const float scale = amax / 127.0f;
      const float inv = scale > 0 ? 1.0f / scale : 0.0f;
      int8_t* d = reinterpret_cast<int8_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = static_cast<int8_t>(std::lrint(std::clamp(src[i] * inv, -127.0f, 127.0f)));
      return scale;
    }
  }
  return 1.0f;
}

void load_row(KvStorage s, const uint8_t* src, float scale, int64_t n, float* dst) {
  switch (s) {
    case KvStorage::kF32: std::memcpy(dst, src, static_cast<size_t>(n) * 4); break;
    case KvStorage::kBF16: {
      const uint16_t* p = reinterpret_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(p[i]);
      break;
    }
    case KvStorage::kInt8: {
      const int8_t* p = reinterpret_cast<const int8_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(p[i]) * scale;
      break;
    }
  }
}

}  // namespace

struct PagedKvCache::Impl {
  KvCacheOptions o;
  int64_t P = 16;
  size_t eb = 4;
  int64_t row_k = 0, row_v = 0;  // elements per token row (all kv heads)
  int64_t capacity = 0;          // pages in the pool
  std::vector<uint8_t> k, v;     // [capacity, P, kv_heads, head_dim(_v)] in the storage type
  std::vector<float> ks, vs;     // int8 only: [capacity, P, kv_heads]
  std::priority_queue<int32_t, std::vector<int32_t>, std::greater<int32_t>> free_pages;
  int64_t in_use = 0;
  bool smoothed = false;  // sm holds the smoothing of every stored row
  KvSmoothing sm;
  std::vector<float> staged;  // one smoothed row on its way into the pool

  struct Seq {
    bool live = false;
    std::vector<int32_t> pages;
    std::vector<int64_t> pos;
    KvCompensation comp;
  };
  std::vector<Seq> seqs;

  bool int8() const { return o.storage == KvStorage::kInt8; }
  int64_t page_bytes() const {
    int64_t b = P * (row_k + row_v) * static_cast<int64_t>(eb);
    if (int8()) b += 2 * P * o.kv_heads * 4;
    return b;
  }

  void grow(int64_t new_capacity) {
    if (new_capacity <= capacity) return;
    k.resize(static_cast<size_t>(new_capacity * P * row_k) * eb);
    v.resize(static_cast<size_t>(new_capacity * P * row_v) * eb);
    if (int8()) {
      ks.resize(static_cast<size_t>(new_capacity * P * o.kv_heads));
      vs.resize(static_cast<size_t>(new_capacity * P * o.kv_heads));
    }
    for (int64_t p = capacity; p < new_capacity; ++p) free_pages.push(static_cast<int32_t>(p));
    capacity = new_capacity;
  }

  int32_t allocate() {
    if (free_pages.empty()) grow(std::max<int64_t>(capacity + 4, capacity + capacity / 4));
    const int32_t p = free_pages.top();
    free_pages.pop();
    ++in_use;
    return p;
  }
  void release(int32_t page) {
    free_pages.push(page);
    --in_use;
  }

  int64_t row_of(const Seq& s, int64_t slot) const { return static_cast<int64_t>(s.pages[static_cast<size_t>(slot / P)]) * P + slot % P; }

  void copy_slot(const Seq& s, int64_t from, int64_t to) {
    const int64_t rf = row_of(s, from), rt = row_of(s, to);
    std::memcpy(k.data() + static_cast<size_t>(rt * row_k) * eb, k.data() + static_cast<size_t>(rf * row_k) * eb,
                static_cast<size_t>(row_k) * eb);
    std::memcpy(v.data() + static_cast<size_t>(rt * row_v) * eb, v.data() + static_cast<size_t>(rf * row_v) * eb,
                static_cast<size_t>(row_v) * eb);
    if (int8()) {
      for (int64_t h = 0; h < o.kv_heads; ++h) {
        ks[static_cast<size_t>(rt * o.kv_heads + h)] = ks[static_cast<size_t>(rf * o.kv_heads + h)];
        vs[static_cast<size_t>(rt * o.kv_heads + h)] = vs[static_cast<size_t>(rf * o.kv_heads + h)];
      }
    }
  }

  // Releases pages past the ones `size` slots need.
  void trim_pages(Seq& s) {
    const size_t need = static_cast<size_t>((static_cast<int64_t>(s.pos.size()) + P - 1) / P);
    while (s.pages.size() > need) {
      release(s.pages.back());
      s.pages.pop_back();
    }
  }

  // Fixes the smoothing from the first n tokens stored in an empty cache: per kv head and channel,
  // the mean over the tokens and the range (max |x - mean|) of the centred channel. A channel's
  // scale is its range (keys: range^alpha) relative to the largest, floored so that a constant
  // channel does not divide by zero.
  void fix_smoothing(int64_t n, const float* k, const float* v) {
    smoothed = o.int8_smoothing && int8() && n >= kMinSmoothingTokens;
    if (!smoothed) return;
    auto channel_stats = [&](const float* x, int64_t d, float alpha, std::vector<float>* mean, std::vector<float>* scale) {
      const int64_t w = o.kv_heads * d;
      mean->assign(static_cast<size_t>(w), 0.0f);
      scale->assign(static_cast<size_t>(w), 1.0f);
      std::vector<double> sum(static_cast<size_t>(w), 0.0), range(static_cast<size_t>(w), 0.0);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t c = 0; c < w; ++c) sum[static_cast<size_t>(c)] += x[i * w + c];
      for (int64_t c = 0; c < w; ++c) (*mean)[static_cast<size_t>(c)] = static_cast<float>(sum[static_cast<size_t>(c)] / static_cast<double>(n));
      for (int64_t i = 0; i < n; ++i)
        for (int64_t c = 0; c < w; ++c)
          range[static_cast<size_t>(c)] = std::max<double>(range[static_cast<size_t>(c)], std::fabs(x[i * w + c] - (*mean)[static_cast<size_t>(c)]));
      for (int64_t h = 0; h < o.kv_heads; ++h) {
        double top = 0;
        for (int64_t c = h * d; c < (h + 1) * d; ++c) top = std::max(top, range[static_cast<size_t>(c)]);
        if (!(top > 0) || !std::isfinite(top)) continue;  // constant or non-finite head: scales stay 1
        for (int64_t c = h * d; c < (h + 1) * d; ++c) {
          const double r = std::max(range[static_cast<size_t>(c)] / top, 1e-3);
          (*scale)[static_cast<size_t>(c)] = static_cast<float>(std::pow(r, static_cast<double>(alpha)));
        }
      }
      for (float& m : *mean)
        if (!std::isfinite(m)) m = 0.0f;
    };
    channel_stats(k, o.head_dim, o.smoothing_alpha, &sm.k_mean, &sm.k_scale);
    channel_stats(v, o.head_dim_v, 1.0f, &sm.v_mean, &sm.v_scale);
  }

  // Stores one row of head h, smoothed when the cache is; returns the storage's row scale.
  float put_row(const float* x, int64_t d, int64_t h, const std::vector<float>& mean, const std::vector<float>& scale, uint8_t* dst) {
    if (!smoothed) return store_row(o.storage, x, d, dst);
    staged.resize(static_cast<size_t>(d));
    for (int64_t c = 0; c < d; ++c)
      staged[static_cast<size_t>(c)] = (x[c] - mean[static_cast<size_t>(h * d + c)]) / scale[static_cast<size_t>(h * d + c)];
    return store_row(o.storage, staged.data(), d, dst);
  }
  void unsmooth(float* x, int64_t d, int64_t h, const std::vector<float>& mean, const std::vector<float>& scale) const {
    if (!smoothed) return;
    for (int64_t c = 0; c < d; ++c) x[c] = x[c] * scale[static_cast<size_t>(h * d + c)] + mean[static_cast<size_t>(h * d + c)];
  }

  Status check_seq(int64_t seq, const char* what) const {
    if (seq < 0 || seq >= static_cast<int64_t>(seqs.size()) || !seqs[static_cast<size_t>(seq)].live)
      return Status::out_of_range(std::string("PagedKvCache::") + what + ": seq " + std::to_string(seq) +
                                  " is not a live sequence");
    return Status::ok_status();
  }
};

PagedKvCache::PagedKvCache() : impl_(std::make_unique<Impl>()) {}
PagedKvCache::~PagedKvCache() = default;

Status PagedKvCache::create(const KvCacheOptions& options, std::unique_ptr<PagedKvCache>* out) {
  if (out == nullptr) return Status::invalid_argument("PagedKvCache::create: out is null");
  KvCacheOptions o = options;
  if (o.head_dim_v == 0) o.head_dim_v = o.head_dim;
  if (o.kv_heads <= 0 || o.kv_heads > 1024)
    return Status::invalid_argument("PagedKvCache: kv_heads " + std::to_string(o.kv_heads) + " must be in 1..1024");
  if (o.head_dim <= 0 || o.head_dim > 512)
    return Status::invalid_argument("PagedKvCache: head_dim " + std::to_string(o.head_dim) + " must be in 1..512");
  if (o.head_dim_v <= 0 || o.head_dim_v > 512)
    return Status::invalid_argument("PagedKvCache: head_dim_v " + std::to_string(o.head_dim_v) + " must be in 1..512");
  if (o.page_size <= 0 || o.page_size > 4096)
    return Status::invalid_argument("PagedKvCache: page_size " + std::to_string(o.page_size) + " must be in 1..4096");
  if (!(o.smoothing_alpha >= 0.0f && o.smoothing_alpha <= 1.0f))
    return Status::invalid_argument("PagedKvCache: smoothing_alpha " + std::to_string(o.smoothing_alpha) + " must be in [0, 1]");
  std::unique_ptr<PagedKvCache> c(new PagedKvCache());
  Impl& I = *c->impl_;
  I.o = o;
  I.P = o.page_size;
  I.eb = elem_bytes(o.storage);
  I.row_k = o.kv_heads * o.head_dim;
  I.row_v = o.kv_heads * o.head_dim_v;
  I.seqs.resize(1);
  I.seqs[0].live = true;
  *out = std::move(c);
  return Status::ok_status();
}

const KvCacheOptions& PagedKvCache::options() const { return impl_->o; }

int64_t PagedKvCache::add_sequence() {
  Impl& I = *impl_;
  for (size_t i = 0; i < I.seqs.size(); ++i) {
    if (!I.seqs[i].live) {
      I.seqs[i] = Impl::Seq();
      I.seqs[i].live = true;
      return static_cast<int64_t>(i);
    }
  }
  I.seqs.emplace_back();
  I.seqs.back().live = true;
  return static_cast<int64_t>(I.seqs.size() - 1);
}

Status PagedKvCache::remove_sequence(int64_t seq) {
  ATTNKIT_RETURN_IF_ERROR(impl_->check_seq(seq, "remove_sequence"));
  Impl::Seq& s = impl_->seqs[static_cast<size_t>(seq)];
  for (int32_t p : s.pages) impl_->release(p);
  s = Impl::Seq();
  return Status::ok_status();
}

int64_t PagedKvCache::n_sequences() const {
  int64_t n = 0;
  for (const auto& s : impl_->seqs) n += s.live;
  return n;
}

bool PagedKvCache::has_sequence(int64_t seq) const { return impl_->check_seq(seq, "has_sequence").ok(); }

Status PagedKvCache::append(int64_t seq, int64_t n, const int64_t* positions, const float* k, const float* v) {
  Impl& I = *impl_;
  ATTNKIT_RETURN_IF_ERROR(I.check_seq(seq, "append"));
  if (n < 0) return Status::invalid_argument("PagedKvCache::append: n " + std::to_string(n) + " must be >= 0");
  if (n == 0) return Status::ok_status();
  if (positions == nullptr || k == nullptr || v == nullptr)
    return Status::invalid_argument("PagedKvCache::append: positions, k and v must not be null");
  Impl::Seq& s = I.seqs[static_cast<size_t>(seq)];
  int64_t last = s.pos.empty() ? -1 : s.pos.back();
  for (int64_t i = 0; i < n; ++i) {
    if (positions[i] <= last)
      return Status::invalid_argument("PagedKvCache::append: position " + std::to_string(positions[i]) + " at index " +
                                      std::to_string(i) + " is not greater than the previous position " +
                                      std::to_string(last));
    last = positions[i];
  }
  const int64_t HK = I.o.kv_heads, D = I.o.head_dim, DV = I.o.head_dim_v;
  if (I.in_use == 0) I.fix_smoothing(n, k, v);  // no stored row depends on the previous smoothing
  for (int64_t i = 0; i < n; ++i) {
    const int64_t slot = static_cast<int64_t>(s.pos.size());
    if (slot % I.P == 0) s.pages.push_back(I.allocate());
    s.pos.push_back(positions[i]);
    const int64_t row = I.row_of(s, slot);
    for (int64_t h = 0; h < HK; ++h) {
      const float sk = I.put_row(k + (i * HK + h) * D, D, h, I.sm.k_mean, I.sm.k_scale, I.k.data() + static_cast<size_t>((row * HK + h) * D) * I.eb);
      const float sv = I.put_row(v + (i * HK + h) * DV, DV, h, I.sm.v_mean, I.sm.v_scale, I.v.data() + static_cast<size_t>((row * HK + h) * DV) * I.eb);
      if (I.int8()) {
        I.ks[static_cast<size_t>(row * HK + h)] = sk;
        I.vs[static_cast<size_t>(row * HK + h)] = sv;
      }
    }
  }
  return Status::ok_status();
}

Status PagedKvCache::retain(int64_t seq, const std::vector<int64_t>& keep) {
  Impl& I = *impl_;
  ATTNKIT_RETURN_IF_ERROR(I.check_seq(seq, "retain"));
  Impl::Seq& s = I.seqs[static_cast<size_t>(seq)];
  const int64_t size = static_cast<int64_t>(s.pos.size());
  for (size_t i = 0; i < keep.size(); ++i) {
    if (keep[i] < 0 || keep[i] >= size || (i > 0 && keep[i] <= keep[i - 1]))
      return Status::invalid_argument("PagedKvCache::retain: keep[" + std::to_string(i) + "] = " + std::to_string(keep[i]) +
                                      " must be in [0, " + std::to_string(size) + ") and greater than the previous entry");
  }
  // keep[i] >= i, so moving in increasing order never overwrites a slot still to be read.
  for (size_t i = 0; i < keep.size(); ++i) {
    const int64_t from = keep[i], to = static_cast<int64_t>(i);
    if (from != to) {
      I.copy_slot(s, from, to);
      s.pos[static_cast<size_t>(to)] = s.pos[static_cast<size_t>(from)];
    }
  }
  s.pos.resize(keep.size());
  I.trim_pages(s);
  return Status::ok_status();
}

Status PagedKvCache::drop_front(int64_t seq, int64_t n) {
  Impl& I = *impl_;
  ATTNKIT_RETURN_IF_ERROR(I.check_seq(seq, "drop_front"));
  Impl::Seq& s = I.seqs[static_cast<size_t>(seq)];
  const int64_t size = static_cast<int64_t>(s.pos.size());
  if (n < 0 || n > size)
    return Status::invalid_argument("PagedKvCache::drop_front: n " + std::to_string(n) + " must be in [0, " +
                                    std::to_string(size) + "]");
  const int64_t whole = n / I.P;
  // Whole leading pages leave the table without copying; slot s becomes s - whole * P.
  for (int64_t p = 0; p < whole; ++p) I.release(s.pages[static_cast<size_t>(p)]);
  s.pages.erase(s.pages.begin(), s.pages.begin() + whole);
  s.pos.erase(s.pos.begin(), s.pos.begin() + whole * I.P);
  const int64_t rest = n - whole * I.P;
  if (rest == 0) return Status::ok_status();
  std::vector<int64_t> keep;
  for (int64_t i = rest; i < static_cast<int64_t>(s.pos.size()); ++i) keep.push_back(i);
  return retain(seq, keep);
}

void PagedKvCache::clear() {
  Impl& I = *impl_;
  for (auto& s : I.seqs) {
    for (int32_t p : s.pages) I.release(p);
    s.pages.clear();
    s.pos.clear();
    s.comp = KvCompensation();
  }
}

void PagedKvCache::shrink_to_fit() {
  Impl& I = *impl_;
  int64_t top = -1;
  for (const auto& s : I.seqs)
    for (int32_t p : s.pages) top = std::max<int64_t>(top, p);
  const int64_t cap = top + 1;
  if (cap >= I.capacity) return;
  std::vector<int32_t> kept;
  while (!I.free_pages.empty()) {
    if (I.free_pages.top() < cap) kept.push_back(I.free_pages.top());
    I.free_pages.pop();
  }
  for (int32_t p : kept) I.free_pages.push(p);
  I.capacity = cap;
  I.k.resize(static_cast<size_t>(cap * I.P * I.row_k) * I.eb);
  I.k.shrink_to_fit();
  I.v.resize(static_cast<size_t>(cap * I.P * I.row_v) * I.eb);
  I.v.shrink_to_fit();
  if (I.int8()) {
    I.ks.resize(static_cast<size_t>(cap * I.P * I.o.kv_heads));
    I.ks.shrink_to_fit();
    I.vs.resize(static_cast<size_t>(cap * I.P * I.o.kv_heads));
    I.vs.shrink_to_fit();
  }
}

Status PagedKvCache::reserve_pages(int64_t n_pages) {
  if (n_pages < 0 || n_pages > (int64_t{1} << 31) / impl_->P)
    return Status::invalid_argument("PagedKvCache::reserve_pages: n_pages " + std::to_string(n_pages) + " is out of range");
  impl_->grow(n_pages);
  return Status::ok_status();
}

int64_t PagedKvCache::size(int64_t seq) const {
  ATTNKIT_ASSERT(impl_->check_seq(seq, "size").ok());
  return static_cast<int64_t>(impl_->seqs[static_cast<size_t>(seq)].pos.size());
}
const std::vector<int64_t>& PagedKvCache::positions(int64_t seq) const {
  ATTNKIT_ASSERT(impl_->check_seq(seq, "positions").ok());
  return impl_->seqs[static_cast<size_t>(seq)].pos;
}
const std::vector<int32_t>& PagedKvCache::page_table(int64_t seq) const {
  ATTNKIT_ASSERT(impl_->check_seq(seq, "page_table").ok());
  return impl_->seqs[static_cast<size_t>(seq)].pages;
}

void PagedKvCache::read_key(int64_t seq, int64_t slot, int64_t h, float* out) const {
  const Impl& I = *impl_;
  const Impl::Seq& s = I.seqs[static_cast<size_t>(seq)];
  ATTNKIT_ASSERT(slot >= 0 && slot < static_cast<int64_t>(s.pos.size()) && h >= 0 && h < I.o.kv_heads);
  const int64_t row = I.row_of(s, slot), HK = I.o.kv_heads, D = I.o.head_dim;
  load_row(I.o.storage, I.k.data() + static_cast<size_t>((row * HK + h) * D) * I.eb,
           I.int8() ? I.ks[static_cast<size_t>(row * HK + h)] : 1.0f, D, out);
  I.unsmooth(out, D, h, I.sm.k_mean, I.sm.k_scale);
}

void PagedKvCache::read_value(int64_t seq, int64_t slot, int64_t h, float* out) const {
  const Impl& I = *impl_;
  const Impl::Seq& s = I.seqs[static_cast<size_t>(seq)];
  ATTNKIT_ASSERT(slot >= 0 && slot < static_cast<int64_t>(s.pos.size()) && h >= 0 && h < I.o.kv_heads);
  const int64_t row = I.row_of(s, slot), HK = I.o.kv_heads, DV = I.o.head_dim_v;
  load_row(I.o.storage, I.v.data() + static_cast<size_t>((row * HK + h) * DV) * I.eb,
           I.int8() ? I.vs[static_cast<size_t>(row * HK + h)] : 1.0f, DV, out);
  I.unsmooth(out, DV, h, I.sm.v_mean, I.sm.v_scale);
}

Status PagedKvCache::gather(int64_t seq, int64_t begin, int64_t end, float* k, float* v) const {
  ATTNKIT_RETURN_IF_ERROR(impl_->check_seq(seq, "gather"));
  const int64_t size = this->size(seq);
  if (begin < 0 || end > size || begin > end)
    return Status::invalid_argument("PagedKvCache::gather: range [" + std::to_string(begin) + ", " + std::to_string(end) +
                                    ") is outside [0, " + std::to_string(size) + ")");
  const int64_t HK = impl_->o.kv_heads, D = impl_->o.head_dim, DV = impl_->o.head_dim_v;
  for (int64_t s = begin; s < end; ++s) {
    for (int64_t h = 0; h < HK; ++h) {
      if (k) read_key(seq, s, h, k + ((s - begin) * HK + h) * D);
      if (v) read_value(seq, s, h, v + ((s - begin) * HK + h) * DV);
    }
  }
  return Status::ok_status();
}

const KvCompensation& PagedKvCache::compensation(int64_t seq) const {
  ATTNKIT_ASSERT(impl_->check_seq(seq, "compensation").ok());
  return impl_->seqs[static_cast<size_t>(seq)].comp;
}

Status PagedKvCache::set_compensation(int64_t seq, KvCompensation c) {
  ATTNKIT_RETURN_IF_ERROR(impl_->check_seq(seq, "set_compensation"));
  const auto& o = impl_->o;
  if (!c.count.empty() &&
      (c.count.size() != static_cast<size_t>(o.kv_heads) || c.key.size() != static_cast<size_t>(o.kv_heads * o.head_dim) ||
       c.value.size() != static_cast<size_t>(o.kv_heads * o.head_dim_v)))
    return Status::invalid_argument("PagedKvCache::set_compensation: entry sized for " + std::to_string(c.count.size()) +
                                    " kv heads, expected " + std::to_string(o.kv_heads) + " with key [kv_heads, " +
                                    std::to_string(o.head_dim) + "] and value [kv_heads, " + std::to_string(o.head_dim_v) + "]");
  impl_->seqs[static_cast<size_t>(seq)].comp = std::move(c);
  return Status::ok_status();
}

int64_t PagedKvCache::page_size() const { return impl_->P; }
int64_t PagedKvCache::pages_in_use() const { return impl_->in_use; }
int64_t PagedKvCache::pages_capacity() const { return impl_->capacity; }
int64_t PagedKvCache::page_bytes() const { return impl_->page_bytes(); }
KvBytes PagedKvCache::bytes() const { return {impl_->capacity * impl_->page_bytes(), impl_->in_use * impl_->page_bytes()}; }

const void* PagedKvCache::k_data() const { return impl_->k.data(); }
const void* PagedKvCache::v_data() const { return impl_->v.data(); }
const float* PagedKvCache::maybe_k_scales() const { return impl_->int8() ? impl_->ks.data() : nullptr; }
const float* PagedKvCache::maybe_v_scales() const { return impl_->int8() ? impl_->vs.data() : nullptr; }
const KvSmoothing* PagedKvCache::maybe_smoothing() const { return impl_->smoothed ? &impl_->sm : nullptr; }

}  // namespace attnkit::kv
