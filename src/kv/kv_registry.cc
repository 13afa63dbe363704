// KV policies by name: a table of factories, mirrored into the mechanism registry as family "kv"
// so that `attnkit list`, `attnkit bench --mechanism NAME`, bench/ and Python find them.
//
// The benchmark run of a policy: a cache of seq_kv random tokens (f32 or bf16 storage after the
// shape's dtype) brought to the policy's budget once in prepare(); run() is one step of seq_q new
// tokens: append, attend (through the policy's selection), the attention mass it asks for, its
// decision and the eviction.
#include <map>
#include <mutex>
#include <random>
#include <string>

#include "attnkit/attention.h"
#include "attnkit/kv_cache.h"

namespace attnkit::kv {
namespace {

struct KvTable {
  std::mutex mu;
  std::map<std::string, KvPolicyInfo> by_name;
};

KvTable& table() {
  static KvTable* t = new KvTable();  // never destroyed: lookups may run during exit
  return *t;
}

class KvBenchRun final : public PreparedRun {
 public:
  Status init(const ProblemShape& s, std::unique_ptr<KvPolicy> policy) {
    shape_ = s;
    policy_ = std::move(policy);
    KvCacheOptions o;
    o.kv_heads = s.heads_kv;
    o.head_dim = s.head_dim;
    o.head_dim_v = s.head_dim;
    o.storage = s.dtype == DType::kF32 ? KvStorage::kF32 : s.dtype == DType::kI8 ? KvStorage::kInt8 : KvStorage::kBF16;
    if (s.dtype == DType::kF16) return Status::unsupported("kv policy benchmark: dtype f16 is not a KV storage type (f32, bf16 or int8)");
    ATTNKIT_RETURN_IF_ERROR(PagedKvCache::create(o, &cache_));
    if (s.seq_kv > 0) ATTNKIT_RETURN_IF_ERROR(step(s.seq_kv));
    return Status::ok_status();
  }
  Status run() override {
    const int64_t before = cache_->size(0);
    ATTNKIT_RETURN_IF_ERROR(step(shape_.seq_q));
    // A policy that kept everything: drop the step's tokens again so repeated runs stay the same size.
    if (cache_->size(0) > before) {
      std::vector<int64_t> keep(static_cast<size_t>(before));
      for (int64_t i = 0; i < before; ++i) keep[static_cast<size_t>(i)] = i;
      ATTNKIT_RETURN_IF_ERROR(cache_->retain(0, keep));
    }
    return Status::ok_status();
  }
  double flops() const override {
    return 4.0 * static_cast<double>(shape_.seq_q) * static_cast<double>(std::max<int64_t>(1, cache_->size(0))) *
           static_cast<double>(shape_.heads_q * shape_.head_dim);
  }
  double bytes() const override { return static_cast<double>(cache_->bytes().in_use); }
  int64_t extra_bytes() const override { return cache_->bytes().allocated; }

 private:
  Status step(int64_t n) {
    const int64_t H = shape_.heads_q, HK = shape_.heads_kv, D = shape_.head_dim;
    std::normal_distribution<float> nd(0.0f, 1.0f);
    q_.resize(static_cast<size_t>(n * H * D));
    k_.resize(static_cast<size_t>(n * HK * D));
    v_.resize(static_cast<size_t>(n * HK * D));
    out_.resize(static_cast<size_t>(n * H * D));
    pos_.resize(static_cast<size_t>(n));
    for (auto& x : q_) x = nd(rng_);
    for (auto& x : k_) x = nd(rng_);
    for (auto& x : v_) x = nd(rng_);
    for (int64_t i = 0; i < n; ++i) pos_[static_cast<size_t>(i)] = next_pos_++;
    KvStepInput in;
    in.n = n;
    in.positions = pos_.data();
    in.q = q_.data();
    in.k = k_.data();
    in.v = v_.data();
    in.heads_q = H;
    in.attn.num_threads = shape_.threads;
    in.out = out_.data();
    return kv_layer_step(policy_.get(), cache_.get(), in);
  }

  ProblemShape shape_;
  std::unique_ptr<KvPolicy> policy_;
  std::unique_ptr<PagedKvCache> cache_;
  std::vector<float> q_, k_, v_, out_;
  std::vector<int64_t> pos_;
  int64_t next_pos_ = 0;
  std::mt19937_64 rng_{1234};
};

Status prepare_kv(const std::string& name, const ProblemShape& s, const MechanismParams& p, std::unique_ptr<PreparedRun>* out) {
  out->reset();
  if (s.batch != 1) return Status::unsupported("kv policy " + name + ": batch " + std::to_string(s.batch) + " is not supported; expected 1");
  if (s.heads_kv <= 0 || s.heads_q <= 0 || s.heads_q % s.heads_kv != 0)
    return Status::invalid_argument("kv policy " + name + ": heads_q " + std::to_string(s.heads_q) + " is not a multiple of heads_kv " +
                                    std::to_string(s.heads_kv));
  if (s.head_dim <= 0 || s.head_dim > kMaxHeadDim)
    return Status::invalid_argument("kv policy " + name + ": head_dim " + std::to_string(s.head_dim) + " is not supported; expected 1..512");
  if (s.seq_q <= 0 || s.seq_kv < 0)
    return Status::invalid_argument("kv policy " + name + ": seq_q " + std::to_string(s.seq_q) + " must be >= 1 and seq_kv " +
                                    std::to_string(s.seq_kv) + " >= 0");
  KvPolicyInfo info;
  {
    KvTable& t = table();
    std::lock_guard<std::mutex> lock(t.mu);
    info = t.by_name.at(name);
  }
  std::unique_ptr<KvPolicy> policy;
  ATTNKIT_RETURN_IF_ERROR(info.make(p, &policy));
  auto run = std::make_unique<KvBenchRun>();
  ATTNKIT_RETURN_IF_ERROR(run->init(s, std::move(policy)));
  *out = std::move(run);
  return Status::ok_status();
}

}  // namespace

void register_kv_policy(KvPolicyInfo info) {
  Mechanism m;
  m.name = info.name;
  m.family = "kv";
  m.description = info.description;
  m.params = info.params;
  const std::string name = info.name;
  m.prepare = [name](const ProblemShape& s, const MechanismParams& p, std::unique_ptr<PreparedRun>* out) {
    return prepare_kv(name, s, p, out);
  };
  {
    KvTable& t = table();
    std::lock_guard<std::mutex> lock(t.mu);
    t.by_name[info.name] = std::move(info);
  }
  register_mechanism(std::move(m));  // aborts on a duplicate name, as for every family
}

Status make_kv_policy(const std::string& spec, std::unique_ptr<KvPolicy>* out) {
  if (out == nullptr) return Status::invalid_argument("make_kv_policy: out is null");
  out->reset();
  const Mechanism* m = nullptr;
  MechanismParams params;
  Status st = parse_mechanism_spec(spec, &m, &params);
  if (!st.ok()) return Status(st.code(), "kv policy: " + st.message());
  if (m->family != "kv") {
    std::string names;
    for (const std::string& n : kv_policy_names()) names += (names.empty() ? "" : ", ") + n;
    return Status::invalid_argument("kv policy: '" + m->name + "' is a mechanism of family " + m->family +
                                    ", not a KV policy; KV policies: " + names);
  }
  KvPolicyInfo info;
  {
    KvTable& t = table();
    std::lock_guard<std::mutex> lock(t.mu);
    info = t.by_name.at(m->name);
  }
  st = info.make(params, out);
  if (!st.ok()) return Status(st.code(), "kv policy " + m->name + ": " + st.message());
  return Status::ok_status();
}

std::vector<std::string> kv_policy_names() {
  KvTable& t = table();
  std::lock_guard<std::mutex> lock(t.mu);
  std::vector<std::string> out;
  for (const auto& [name, info] : t.by_name) out.push_back(name);
  return out;
}

}  // namespace attnkit::kv
