// attnkit_ab_builds: times one attention case under two builds of libattnkit.so in the same process,
// alternating them call by call, and prints the median ratio of their times.
//
//   attnkit_ab_builds OLD.so NEW.so [--seq-kv N] [--seq-q N] [--heads-q H] [--heads-kv H]
//                     [--head-dim D] [--dtype f32|bf16|int8] [--threads T] [--rounds R]
//
// Why: on the development VM the memory speed drifts by tens of percent within minutes, so
// timing two builds in separate processes cannot resolve a few percent. Here both builds read the
// same K/V buffers, each round times one call of each (order reversed every other round), and the
// figure reported is the median over rounds of new / old, which the drift cancels out of. Both
// builds are opened with RTLD_DEEPBIND, so each resolves its own symbols. They must share the ABI
// of include/attnkit/attention.h (copy the old build's .so before rebuilding). The program also
// reports the largest difference between the two builds' outputs.
#include <dlfcn.h>
#include <elf.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/bench.h"
#include "attnkit/tensor.h"

namespace {

using attnkit::bench::median;  // the harness's: the middle sample, or the mean of the two middle ones
using AttentionFn = attnkit::Status (*)(const attnkit::TensorView&, const attnkit::TensorView&,
                                        const attnkit::TensorView&, const attnkit::TensorView&, float*,
                                        const attnkit::AttentionParams&);

int usage(const char* why) {
  std::fprintf(stderr,
               "attnkit_ab_builds: %s\nusage: attnkit_ab_builds OLD.so NEW.so [--seq-kv N] [--seq-q N] [--heads-q H]"
               " [--heads-kv H] [--head-dim D] [--dtype f32|bf16|int8] [--threads T] [--rounds R]\n",
               why);
  return 2;
}

// Whether path is a whole 64-bit ELF file: dlopen of a truncated library can die of SIGBUS
// instead of failing, so the header tables (the section headers sit at the end of the file) are
// checked against the file's size first. Prints why not.
bool whole_elf(const char* path) {
  FILE* f = std::fopen(path, "rb");
  if (f == nullptr) {
    std::fprintf(stderr, "attnkit_ab_builds: cannot open %s\n", path);
    return false;
  }
  Elf64_Ehdr h;
  const bool got = std::fread(&h, sizeof(h), 1, f) == 1;
  std::fseek(f, 0, SEEK_END);
  const long size = std::ftell(f);
  std::fclose(f);
  if (!got || std::memcmp(h.e_ident, ELFMAG, SELFMAG) != 0 || h.e_ident[EI_CLASS] != ELFCLASS64) {
    std::fprintf(stderr, "attnkit_ab_builds: %s is not a 64-bit ELF library\n", path);
    return false;
  }
  const uint64_t ph_end = h.e_phoff + uint64_t{h.e_phnum} * h.e_phentsize;
  const uint64_t sh_end = h.e_shoff + uint64_t{h.e_shnum} * h.e_shentsize;
  if (size < 0 || ph_end > static_cast<uint64_t>(size) || sh_end > static_cast<uint64_t>(size)) {
    std::fprintf(stderr, "attnkit_ab_builds: %s is truncated (%ld bytes; its headers reach byte %llu)\n", path, size,
                 static_cast<unsigned long long>(std::max(ph_end, sh_end)));
    return false;
  }
  return true;
}

AttentionFn open_build(const char* path) {
  if (!whole_elf(path)) return nullptr;
  void* lib = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
  if (lib == nullptr) {
    std::fprintf(stderr, "attnkit_ab_builds: cannot open %s: %s\n", path, dlerror());
    return nullptr;
  }
  // attnkit::attention(TensorView const&, x3, TensorView const&, float*, AttentionParams const&)
  void* sym = dlsym(lib, "_ZN7attnkit9attentionERKNS_10TensorViewES2_S2_S2_PfRKNS_15AttentionParamsE");
  if (sym == nullptr) std::fprintf(stderr, "attnkit_ab_builds: %s has no attnkit::attention\n", path);
  return reinterpret_cast<AttentionFn>(sym);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return usage("two library paths are needed");
  int64_t seq_kv = 131072, seq_q = 1, heads_q = 32, heads_kv = 8, d = 128;
  int threads = 2, rounds = 30;
  std::string dtype = "f32";
  for (int i = 3; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) return usage(("missing value after " + flag).c_str());
    const char* val = argv[i + 1];
    if (flag == "--seq-kv") seq_kv = std::atoll(val);
    else if (flag == "--seq-q") seq_q = std::atoll(val);
    else if (flag == "--heads-q") heads_q = std::atoll(val);
    else if (flag == "--heads-kv") heads_kv = std::atoll(val);
    else if (flag == "--head-dim") d = std::atoll(val);
    else if (flag == "--dtype") dtype = val;
    else if (flag == "--threads") threads = std::atoi(val);
    else if (flag == "--rounds") rounds = std::atoi(val);
    else return usage(("unknown flag " + flag).c_str());
  }
  if (dtype != "f32" && dtype != "bf16" && dtype != "int8")
    return usage(("--dtype must be f32, bf16 or int8, got " + dtype).c_str());
  if (seq_kv < 1 || seq_q < 1 || heads_q < 1 || heads_kv < 1 || d < 1 || threads < 1 || rounds < 1)
    return usage("sizes, --threads and --rounds must be positive");
  AttentionFn fn[2] = {open_build(argv[1]), open_build(argv[2])};
  if (fn[0] == nullptr || fn[1] == nullptr) return 1;

  // int8: K/V int8 with one f32 scale per (token, kv head), as the KV cache stores them; Q f32.
  const bool bf = dtype == "bf16", i8 = dtype == "int8";
  const attnkit::DType dt = bf ? attnkit::DType::kBF16 : attnkit::DType::kF32;
  const attnkit::DType kv_dt = i8 ? attnkit::DType::kI8 : dt;
  const size_t n_kv = static_cast<size_t>(seq_kv * heads_kv * d), n_q = static_cast<size_t>(seq_q * heads_q * d);
  // Deterministic inputs spread over a few units, so the softmax is neither flat nor one-hot. The
  // buffers are 64-byte aligned, as `attnkit bench` allocates them: a std::vector of this size
  // comes from mmap 16 bytes past a page start, which splits every 64-byte load across two lines.
  struct FreeDeleter {
    void operator()(char* p) const { std::free(p); }
  };
  using Buffer = std::unique_ptr<char, FreeDeleter>;
  auto fill = [&](size_t n, uint64_t seed, bool int8) {
    const size_t esize = int8 ? 1 : bf ? 2 : 4;
    const size_t bytes = (n * esize + 63) / 64 * 64;
    Buffer buf(static_cast<char*>(std::aligned_alloc(64, bytes)));
    if (!buf) {
      std::fprintf(stderr, "attnkit_ab_builds: cannot allocate %zu bytes\n", bytes);
      std::exit(1);
    }
    uint64_t x = seed;
    for (size_t i = 0; i < n; ++i) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      const float v = static_cast<float>(static_cast<int64_t>(x >> 40) % 2001 - 1000) * 1e-3f;
      if (int8) reinterpret_cast<int8_t*>(buf.get())[i] = static_cast<int8_t>(std::lrint(v * 127.0f));
      else if (bf) reinterpret_cast<uint16_t*>(buf.get())[i] = attnkit::f32_to_bf16(v);
      else reinterpret_cast<float*>(buf.get())[i] = v;
    }
    return buf;
  };
  const Buffer q = fill(n_q, 1, false), k = fill(n_kv, 2, i8), v = fill(n_kv, 3, i8);
  // Scales of a row whose largest element is about 1, varied a little from token to token.
  std::vector<float> k_scales, v_scales;
  for (int64_t i = 0; i < (i8 ? seq_kv * heads_kv : 0); ++i) {
    k_scales.push_back((1.0f + 0.25f * static_cast<float>(i % 7)) / 127.0f);
    v_scales.push_back((1.0f + 0.25f * static_cast<float>(i % 5)) / 127.0f);
  }
  std::vector<float> out[2] = {std::vector<float>(n_q), std::vector<float>(n_q)};
  attnkit::AttentionParams p;
  p.causal = true;
  p.num_threads = threads;
  if (i8) {
    p.k_scales.data = k_scales.data();
    p.k_scales.stride_seq = heads_kv;
    p.k_scales.stride_head = 1;
    p.k_scales.stride_batch = seq_kv * heads_kv;
    p.v_scales = p.k_scales;
    p.v_scales.data = v_scales.data();
  }
  auto call = [&](int b) {
    const attnkit::Status s = fn[b](attnkit::TensorView::contiguous(q.get(), dt, 1, seq_q, heads_q, d),
                                    attnkit::TensorView::contiguous(k.get(), kv_dt, 1, seq_kv, heads_kv, d),
                                    attnkit::TensorView::contiguous(v.get(), kv_dt, 1, seq_kv, heads_kv, d),
                                    attnkit::TensorView::contiguous(out[b].data(), attnkit::DType::kF32, 1, seq_q, heads_q, d),
                                    nullptr, p);
    if (!s.ok()) {
      std::fprintf(stderr, "attnkit_ab_builds: %s: %s\n", argv[1 + b], s.message().c_str());
      std::exit(1);
    }
  };
  call(0);
  call(1);
  double max_diff = 0;
  for (size_t i = 0; i < n_q; ++i) max_diff = std::max(max_diff, static_cast<double>(std::fabs(out[0][i] - out[1][i])));

  std::vector<double> ms[2], ratio;
  for (int r = 0; r < rounds; ++r) {
    double t[2];
    for (int s = 0; s < 2; ++s) {
      const int b = (r % 2 == 0) ? s : 1 - s;
      const auto t0 = std::chrono::steady_clock::now();
      call(b);
      t[b] = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      ms[b].push_back(t[b]);
    }
    ratio.push_back(t[1] / t[0]);
  }
  std::printf("seq_q %lld seq_kv %lld heads %lld/%lld d %lld %s threads %d, %d rounds: old %.3f ms, new %.3f ms"
              " (medians); median new/old %.3f; max |out_old - out_new| %.3g\n",
              static_cast<long long>(seq_q), static_cast<long long>(seq_kv), static_cast<long long>(heads_q),
              static_cast<long long>(heads_kv), static_cast<long long>(d), dtype.c_str(), threads, rounds,
              median(ms[0]), median(ms[1]), median(ratio), max_diff);
  return 0;
}
