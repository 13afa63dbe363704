// attnkit_calibration_cost: what the calibration backends (ZeroTuning, ACT) add to exact attention,
// timed in one process, round by round, with the order of the three rotating from round to round.
//
//   attnkit_calibration_cost [--threads T] [--rounds R] [--prefill N] [--decode N]
//
// Gemma 3 270M's attention shape: 4 query heads, 1 kv head, head dim 256, scale 1/16. Queries
// and keys are random with a few planted sinks (keys that every query favors, 9 logits above the
// rest), so that ACT has sinks to find and correct as it does in the model.
//   prefill      one causal call of N (4096) queries over N keys, global (no window) and local
//                (window 512): exact = attnkit::attention; zerotuning and act = the backends'
//                attend() on the same call.
//   decode       one query over N (32768) keys.
//     paged bf16 the model's decode path for exact and zerotuning: attend_cache over a bf16 paged
//                cache, without and with the first position's key bias.
//     f32 view   what ACT gets as a custom backend (the cache as one f32 sequence): exact =
//                attnkit::attention, act = its attend() (sinks from one 64-row call before).
// Prints, per case, the median time of each and the medians of the per-round ratios to exact.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/bench.h"
#include "attnkit/kv_cache.h"
#include "attnkit/model.h"
#include "attnkit/tensor.h"

namespace {

using attnkit::Status;
using attnkit::TensorView;
using attnkit::bench::median;
using Clock = std::chrono::steady_clock;

constexpr int64_t kHeads = 4, kKvHeads = 1, kDim = 256;
constexpr float kScale = 1.0f / 16.0f;

int usage(const std::string& why) {
  std::fprintf(stderr,
               "attnkit_calibration_cost: %s\nusage: attnkit_calibration_cost [--threads T] [--rounds R] [--prefill N]"
               " [--decode N]\n",
               why.c_str());
  return 2;
}

// Random rows in [-1, 1) plus `lift` times a shared unit direction u: queries get it with lift 12,
// the planted sink keys too, so their logits sit about 12 * 12 / 16 = 9 above the others'.
struct Inputs {
  std::vector<float> q, k, v;
};

Inputs make_inputs(int64_t n_q, int64_t n_kv, const std::vector<int64_t>& sinks, uint64_t seed) {
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> dir(kDim);
  double norm = 0;
  for (float& x : dir) {
    x = u(rng);
    norm += static_cast<double>(x) * x;
  }
  for (float& x : dir) x = static_cast<float>(x / std::sqrt(norm));
  Inputs in;
  in.q.resize(static_cast<size_t>(n_q * kHeads * kDim));
  in.k.resize(static_cast<size_t>(n_kv * kKvHeads * kDim));
  in.v.resize(in.k.size());
  for (size_t i = 0; i < in.q.size(); ++i) in.q[i] = u(rng) + 12.0f * dir[i % kDim];
  for (size_t i = 0; i < in.k.size(); ++i) {
    in.k[i] = u(rng);
    in.v[i] = u(rng);
  }
  for (int64_t j : sinks)
    for (int64_t t = 0; t < kDim; ++t) in.k[static_cast<size_t>(j * kDim + t)] += 12.0f * dir[static_cast<size_t>(t)];
  return in;
}

std::unique_ptr<attnkit::model::AttentionBackend> backend(const std::string& spec) {
  std::unique_ptr<attnkit::model::AttentionBackend> b;
  const Status st = attnkit::model::make_attention_backend(spec, &b);
  if (!st.ok()) {
    std::fprintf(stderr, "attnkit_calibration_cost: %s\n", st.message().c_str());
    std::exit(1);
  }
  return b;
}

double time_call(const std::function<Status()>& f) {
  const auto t0 = Clock::now();
  const Status st = f();
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  if (!st.ok()) {
    std::fprintf(stderr, "attnkit_calibration_cost: %s\n", st.message().c_str());
    std::exit(1);
  }
  return s;
}

// Runs the three calls `rounds` times, rotating which goes first, and prints the medians.
void compare(const std::string& label, int rounds, const std::vector<std::string>& names,
             const std::vector<std::function<Status()>>& calls) {
  const size_t n = calls.size();
  std::vector<std::vector<double>> t(n), ratio(n);
  for (size_t c = 0; c < n; ++c) (void)time_call(calls[c]);  // warm-up: first touch, scratch growth
  for (int r = 0; r < rounds; ++r) {
    std::vector<double> s(n);
    for (size_t i = 0; i < n; ++i) {
      const size_t c = (static_cast<size_t>(r) + i) % n;
      s[c] = time_call(calls[c]);
    }
    for (size_t c = 0; c < n; ++c) {
      t[c].push_back(s[c]);
      ratio[c].push_back(s[c] / s[0]);
    }
  }
  std::printf("%-34s", label.c_str());
  for (size_t c = 0; c < n; ++c) std::printf("  %s %.4g ms", names[c].c_str(), 1e3 * median(t[c]));
  for (size_t c = 1; c < n; ++c) std::printf("  %s/%s %.4f", names[c].c_str(), names[0].c_str(), median(ratio[c]));
  std::printf("\n");
}

// The call of n_q query rows starting at q over all n_kv keys of `in`, as the model builds it.
attnkit::model::AttentionCall make_call(const float* q, const Inputs& in, int64_t n_q, int64_t n_kv, int64_t window_left,
                                        int threads, std::vector<float>* out) {
  out->assign(static_cast<size_t>(n_q * kHeads * kDim), 0.0f);
  attnkit::model::AttentionCall c;
  c.layer = 5;
  c.q = TensorView::contiguous(const_cast<float*>(q), attnkit::DType::kF32, 1, n_q, kHeads, kDim);
  c.k = TensorView::contiguous(const_cast<float*>(in.k.data()), attnkit::DType::kF32, 1, n_kv, kKvHeads, kDim);
  c.v = TensorView::contiguous(const_cast<float*>(in.v.data()), attnkit::DType::kF32, 1, n_kv, kKvHeads, kDim);
  c.out = TensorView::contiguous(out->data(), attnkit::DType::kF32, 1, n_q, kHeads, kDim);
  c.q_pos0 = n_kv - n_q;
  c.params.causal = true;
  c.params.window_left = window_left;
  c.params.scale = kScale;
  c.params.num_threads = threads;
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, rounds = 15;
  int64_t prefill = 4096, decode = 32768;
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) return usage("missing value after " + flag);
    char* end = nullptr;
    const long long val = std::strtoll(argv[i + 1], &end, 10);
    if (end == argv[i + 1] || *end != '\0') return usage(flag + " needs an integer, got '" + argv[i + 1] + "'");
    if (flag == "--threads") threads = static_cast<int>(val);
    else if (flag == "--rounds") rounds = static_cast<int>(val);
    else if (flag == "--prefill") prefill = val;
    else if (flag == "--decode") decode = val;
    else return usage("unknown flag " + flag);
  }
  if (threads < 1 || rounds < 1 || prefill < 64 || decode < 64)
    return usage("--threads and --rounds must be >= 1, --prefill and --decode >= 64 (threads " + std::to_string(threads) +
                 ", rounds " + std::to_string(rounds) + ", prefill " + std::to_string(prefill) + ", decode " +
                 std::to_string(decode) + ")");
  std::printf("Gemma 3 270M attention shape (%lld/%lld heads, d %lld), %d threads, %d rounds, SIMD %s\n",
              static_cast<long long>(kHeads), static_cast<long long>(kKvHeads), static_cast<long long>(kDim), threads,
              rounds, attnkit::simd_target_name().c_str());
  const std::string zt_spec = "zerotuning:gamma=2,heads=all", act_spec = "act:heads=all,beta=0.4,threshold=0.1";

  // ---- prefill ----
  {
    const Inputs in = make_inputs(prefill, prefill, {0, prefill / 4, prefill / 2, 3 * prefill / 4}, 1);
    for (int64_t wl : {int64_t{-1}, int64_t{511}}) {
      std::vector<float> o0, o1, o2;
      const attnkit::model::AttentionCall c0 = make_call(in.q.data(), in, prefill, prefill, wl, threads, &o0);
      const attnkit::model::AttentionCall c1 = make_call(in.q.data(), in, prefill, prefill, wl, threads, &o1);
      const attnkit::model::AttentionCall c2 = make_call(in.q.data(), in, prefill, prefill, wl, threads, &o2);
      auto zt = backend(zt_spec), act = backend(act_spec);
      compare("prefill " + std::to_string(prefill) + (wl < 0 ? " global" : " local w512"), rounds,
              {"exact", "zerotuning", "act"},
              {[&] { return attnkit::attention(c0.q, c0.k, c0.v, c0.out, nullptr, c0.params); },
               [&] { return zt->attend(c1); }, [&] { return act->attend(c2); }});
    }
  }

  // ---- decode ----
  {
    const Inputs in = make_inputs(64, decode, {0, decode / 4, decode / 2, 3 * decode / 4}, 2);
    // The paged bf16 cache, filled as the model fills it (positions 0 .. decode - 1).
    attnkit::kv::KvCacheOptions o;
    o.kv_heads = kKvHeads;
    o.head_dim = o.head_dim_v = kDim;
    o.storage = attnkit::kv::KvStorage::kBF16;
    std::unique_ptr<attnkit::kv::PagedKvCache> cache;
    Status st = attnkit::kv::PagedKvCache::create(o, &cache);
    std::vector<int64_t> pos(static_cast<size_t>(decode));
    for (int64_t j = 0; j < decode; ++j) pos[static_cast<size_t>(j)] = j;
    if (st.ok()) st = cache->append(0, decode, pos.data(), in.k.data(), in.v.data());
    if (!st.ok()) return usage(st.message());
    const int64_t q_last = decode - 1;
    const float* q1 = in.q.data() + 63 * kHeads * kDim;  // the last of the 64 query rows
    const TensorView qv = TensorView::contiguous(const_cast<float*>(q1), attnkit::DType::kF32, 1, 1, kHeads, kDim);
    std::vector<float> oa(kHeads * kDim), ob(kHeads * kDim);
    const TensorView oav = TensorView::contiguous(oa.data(), attnkit::DType::kF32, 1, 1, kHeads, kDim);
    const TensorView obv = TensorView::contiguous(ob.data(), attnkit::DType::kF32, 1, 1, kHeads, kDim);
    attnkit::kv::CacheAttentionParams plain;
    plain.scale = kScale;
    plain.num_threads = threads;
    attnkit::kv::CacheAttentionParams biased = plain;
    const std::vector<float> log_gamma(kHeads, std::log(2.0f));
    biased.maybe_key_bias = log_gamma.data();
    biased.key_bias_position = 0;
    compare("decode " + std::to_string(decode) + " paged bf16", rounds * 4, {"exact", "zerotuning"},
            {[&] { return attnkit::kv::attend_cache(*cache, 0, qv, &q_last, plain, oav, nullptr); },
             [&] { return attnkit::kv::attend_cache(*cache, 0, qv, &q_last, biased, obv, nullptr); }});

    // ACT as a custom backend: its sinks come from the layer's last multi-row call.
    std::vector<float> o64, o0, o2;
    auto act = backend(act_spec);
    const attnkit::model::AttentionCall rows64 = make_call(in.q.data(), in, 64, decode, -1, threads, &o64);
    if (Status s = act->attend(rows64); !s.ok()) return usage(s.message());
    const attnkit::model::AttentionCall c0 = make_call(q1, in, 1, decode, -1, threads, &o0);
    const attnkit::model::AttentionCall c2 = make_call(q1, in, 1, decode, -1, threads, &o2);
    compare("decode " + std::to_string(decode) + " f32 view", rounds * 4, {"exact", "act"},
            {[&] { return attnkit::attention(c0.q, c0.k, c0.v, c0.out, nullptr, c0.params); },
             [&] { return act->attend(c2); }});
  }
  return 0;
}
