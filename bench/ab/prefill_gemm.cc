// attnkit_prefill_gemm: the two prefill products on packed rows, in one process, against the
// integer multiply peak of the same core.
//
//   attnkit_prefill_gemm [--tokens N] [--layer L] [--threads T] [--rounds R]
//
// For each projection of one Gemma 3 270M layer as the model stacks them (QKV 1536 x 640, gate/up
// 4096 x 640, output 640 x 1024, down 640 x 2048), StackedWeights::apply on N tokens runs with the
// integer GEMM (packed_gemm) and with f32 tiles + OpenBLAS sgemm, alternating round by round so
// that the machine's drift cancels out of the ratios. It prints the median time of each, their
// GMAC/s, the median per-round ratio sgemm time / integer time, and the integer GEMM's rate as a
// fraction of the peak: a loop of independent vpdpwssd on registers (AVX512-VNNI: 32 int16 MACs
// per instruction) run by every thread in the same process, or of vpmaddwd + vpaddd on AVX2.
#include <immintrin.h>
#include <omp.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "attnkit/bench.h"
#include "attnkit/gguf.h"
#include "model/quant_matmul.h"
#include "model/weights.h"

namespace {

using attnkit::bench::median;
using Clock = std::chrono::steady_clock;
namespace mi = attnkit::model::internal;

// 16 independent accumulator chains so the loop is bound by issue rate, not latency.
__attribute__((target("avx512f,avx512bw,avx512vnni"))) int64_t peak_vnni(int64_t iters) {
  __m512i acc[16];
  #pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_set1_epi32(i);
  const __m512i a = _mm512_set1_epi32(0x00010001), b = _mm512_set1_epi32(0x00020003);
  for (int64_t k = 0; k < iters; ++k) {
    #pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_dpwssd_epi32(acc[i], a, b);
  }
  __m512i s = acc[0];
  for (int i = 1; i < 16; ++i) s = _mm512_add_epi32(s, acc[i]);
  return _mm512_reduce_add_epi32(s);
}

__attribute__((target("avx2"))) int64_t peak_avx2(int64_t iters) {
  __m256i acc[8];
  #pragma GCC unroll 16
  for (int i = 0; i < 8; ++i) acc[i] = _mm256_set1_epi32(i);
  const __m256i a = _mm256_set1_epi32(0x00010001), b = _mm256_set1_epi32(0x00020003);
  for (int64_t k = 0; k < iters; ++k) {
    #pragma GCC unroll 16
    for (int i = 0; i < 8; ++i) acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(a, b));
  }
  __m256i s = acc[0];
  for (int i = 1; i < 8; ++i) s = _mm256_add_epi32(s, acc[i]);
  alignas(32) int32_t o[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(o), s);
  return o[0];
}

// The f32 counterpart: 16 independent FMA chains on 512-bit vectors (16 MACs per instruction).
__attribute__((target("avx512f"))) float peak_fma(int64_t iters) {
  __m512 acc[16];
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
  const __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(1e-3f);
  for (int64_t k = 0; k < iters; ++k) {
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  }
  __m512 s = acc[0];
  for (int i = 1; i < 16; ++i) s = _mm512_add_ps(s, acc[i]);
  return _mm512_reduce_add_ps(s);
}

double peak_flops_macs(int threads) {
  const int64_t iters = 4 << 20;
  volatile float sink = 0;
  const auto t0 = Clock::now();
#pragma omp parallel num_threads(threads)
  sink += peak_fma(iters);
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  return 16.0 * 16 * static_cast<double>(iters) * threads / s;
}

// Integer multiply-accumulates per second of all threads together.
double peak_macs(bool vnni, int threads) {
  const int64_t iters = 4 << 20;
  volatile int64_t sink = 0;
  const auto t0 = Clock::now();
#pragma omp parallel num_threads(threads)
  sink += vnni ? peak_vnni(iters) : peak_avx2(iters);
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  const double per_iter = vnni ? 16.0 * 32 : 8.0 * 16;
  return per_iter * static_cast<double>(iters) * threads / s;
}

int arg_int(int argc, char** argv, const std::string& name, int def) {
  for (int i = 1; i + 1 < argc; ++i)
    if (name == argv[i]) return std::atoi(argv[i + 1]);
  return def;
}

}  // namespace

int main(int argc, char** argv) {
  const int n = arg_int(argc, argv, "--tokens", 512), layer = arg_int(argc, argv, "--layer", 0);
  const int threads = arg_int(argc, argv, "--threads", 1), rounds = arg_int(argc, argv, "--rounds", 5);
  if (n <= 0 || threads <= 0 || rounds <= 0 || layer < 0) {
    std::fprintf(stderr, "attnkit_prefill_gemm: --tokens %d, --threads %d, --rounds %d must be > 0, --layer %d >= 0\n", n,
                 threads, rounds, layer);
    return 2;
  }
  if (mi::quant_isa() == mi::QuantIsa::kScalar) {
    std::fprintf(stderr, "attnkit_prefill_gemm: this CPU has neither AVX2 nor AVX512-VNNI; prefill uses sgemm only\n");
    return 1;
  }
  std::string path;
  std::unique_ptr<attnkit::gguf::GgufFile> file;
  attnkit::Status st = attnkit::gguf::find_default_model(&path);
  if (st.ok()) st = attnkit::gguf::GgufFile::open(path, &file);
  if (!st.ok()) {
    std::fprintf(stderr, "attnkit_prefill_gemm: %s\n", st.message().c_str());
    return 1;
  }
  struct Case {
    const char* name;
    std::vector<std::string> tensors;
    mi::StackedWeights w;
  };
  const std::string b = "blk." + std::to_string(layer) + ".";
  std::vector<Case> cases;
  cases.push_back({"qkv", {b + "attn_q.weight", b + "attn_k.weight", b + "attn_v.weight"}, {}});
  cases.push_back({"gate_up", {b + "ffn_gate.weight", b + "ffn_up.weight"}, {}});
  cases.push_back({"attn_output", {b + "attn_output.weight"}, {}});
  cases.push_back({"ffn_down", {b + "ffn_down.weight"}, {}});
  for (Case& c : cases) {
    for (const std::string& t : c.tensors) {
      const attnkit::gguf::TensorInfo* ti = file->find_tensor(t);
      if (ti == nullptr) {
        std::fprintf(stderr, "attnkit_prefill_gemm: tensor %s not in %s\n", t.c_str(), path.c_str());
        return 1;
      }
      st = c.w.add(*file, t, ti->n_rows(), ti->row_elems(), mi::WeightMode::kQuantized);
      if (!st.ok()) {
        std::fprintf(stderr, "attnkit_prefill_gemm: %s\n", st.message().c_str());
        return 1;
      }
    }
  }
  const bool vnni = mi::quant_isa() == mi::QuantIsa::kAvx512Vnni;
  const double peak = peak_macs(vnni, threads);
  const double fpeak = __builtin_cpu_supports("avx512f") ? peak_flops_macs(threads) : 0.0;
  std::printf("isa %s, %d threads, %d tokens, layer %d; int16 MAC peak %.1f G/s (%s loop), f32 MAC peak %.1f G/s (zmm FMA loop)\n",
              mi::quant_isa_name(mi::quant_isa()), threads, n, layer, peak / 1e9, vnni ? "vpdpwssd" : "vpmaddwd+vpaddd",
              fpeak / 1e9);
  std::printf("%-12s %6s %6s %10s %10s %10s %10s %8s %8s\n", "matrix", "rows", "cols", "int ms", "sgemm ms", "int GMAC/s",
              "sg GMAC/s", "sg/int", "int/peak");
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.f, 1.f);
  const mi::PrefillGemm saved = mi::prefill_gemm();
  for (Case& c : cases) {
    std::vector<float> x(static_cast<size_t>(n) * c.w.cols());
    for (float& v : x) v = nd(rng);
    std::vector<float> y(static_cast<size_t>(n) * c.w.rows()), y_int;
    std::vector<double> ti, ts, ratio;
    for (int r = 0; r <= rounds; ++r) {  // round 0 warms both up
      double t[2];
      for (int v = 0; v < 2; ++v) {
        mi::set_prefill_gemm(v == 0 ? mi::PrefillGemm::kInteger : mi::PrefillGemm::kSgemm);
        const auto t0 = Clock::now();
        st = c.w.apply(x.data(), n, y.data(), c.w.rows(), threads);
        t[v] = std::chrono::duration<double>(Clock::now() - t0).count();
        if (!st.ok()) {
          std::fprintf(stderr, "attnkit_prefill_gemm: %s\n", st.message().c_str());
          return 1;
        }
      }
      if (r == 0) {
        // Round 0 also checks that the two products agree at this shape (int16 activations
        // against f32 ones: relative squared error of the order of 1e-9 on N(0, 1) inputs).
        y_int = y;
        mi::set_prefill_gemm(mi::PrefillGemm::kInteger);
        st = c.w.apply(x.data(), n, y_int.data(), c.w.rows(), threads);
        double num = 0, den = 0;
        for (size_t i = 0; i < y.size(); ++i) {
          num += (static_cast<double>(y_int[i]) - y[i]) * (static_cast<double>(y_int[i]) - y[i]);
          den += static_cast<double>(y[i]) * y[i];
        }
        if (!st.ok() || !(num <= 1e-6 * den)) {
          std::fprintf(stderr, "attnkit_prefill_gemm: %s: integer GEMM and sgemm disagree (NMSE %g)\n", c.name, num / den);
          return 1;
        }
        continue;
      }
      ti.push_back(t[0]);
      ts.push_back(t[1]);
      ratio.push_back(t[1] / t[0]);
    }
    const double macs = static_cast<double>(n) * static_cast<double>(c.w.rows()) * static_cast<double>(c.w.cols());
    const double mi_ = median(ti), ms_ = median(ts);
    std::printf("%-12s %6lld %6lld %10.3f %10.3f %10.2f %10.2f %8.2f %8.2f\n", c.name, static_cast<long long>(c.w.rows()),
                static_cast<long long>(c.w.cols()), mi_ * 1e3, ms_ * 1e3, macs / mi_ / 1e9, macs / ms_ / 1e9, median(ratio),
                macs / mi_ / peak);
  }
  mi::set_prefill_gemm(saved);
  return 0;
}
