// attnkit_decode_reads: decode against two plain reads of memory, in one process.
//
//   attnkit_decode_reads [--seq-kv N] [--heads-q H] [--heads-kv H] [--head-dim D] [--threads T]
//                        [--rounds R] [--stream-bytes B]
//
// The decode target of docs/benchmarks.md compares f32 decode, which reads two tensors (K and V),
// with a yardstick that reads one buffer front to back. This program measures, alternating round by
// round so that the memory's drift between its fast and slow modes cancels out of the ratios:
//   stream   one pass of the yardstick (bench::StreamReader: the loop and buffer size of
//            `attnkit bench`);
//   kv read  the decode case's own K and V read with the same loop (32 running sums, the same
//            compiler flags): each thread takes its share of the key positions, in tiles of 64
//            positions, K rows then V rows (address order within each tensor, hardware prefetching
//            only, no arithmetic);
//   decode   attnkit::attention on that case (one query, f32), its GB/s from the shared byte
//            formula (attention_bytes).
// It prints the medians of the three rates and, per round, of decode / stream, kv read / stream and
// decode / kv read. kv read / stream is what the yardstick's own loop loses by reading two tensors
// instead of one buffer; it is a property of that loop (an -O3 build of it reads faster), not a
// bound on every reader.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/bench.h"
#include "attnkit/tensor.h"

namespace {

using attnkit::bench::median;  // the harness's: the middle sample, or the mean of the two middle ones
using Clock = std::chrono::steady_clock;

int usage(const std::string& why) {
  std::fprintf(stderr,
               "attnkit_decode_reads: %s\nusage: attnkit_decode_reads [--seq-kv N] [--heads-q H] [--heads-kv H]"
               " [--head-dim D] [--threads T] [--rounds R] [--stream-bytes B]\n",
               why.c_str());
  return 2;
}

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<float, FreeDeleter>;

// 64-byte aligned, as `attnkit bench` allocates its tensors; nullptr when out of memory.
Buffer alloc_floats(size_t n) {
  const size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
  return Buffer(static_cast<float*>(std::aligned_alloc(64, bytes)));
}

constexpr int64_t kLanes = 32;     // independent sums, as in the stream yardstick's loop
constexpr int64_t kTileRows = 64;  // positions per tile: K rows, then the same positions' V rows

// Sum of p[0..n): kLanes-wide accumulation like the yardstick's loop, then a scalar tail.
float sum_range(const float* p, int64_t n, float* acc) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) acc[l] += p[i + l];
  }
  float tail = 0.0f;
  for (; i < n; ++i) tail += p[i];
  return tail;
}

// One plain read of K and V ([seq_kv, row] each, row floats per position) by `threads` threads;
// returns GB/s over the bytes of both tensors. *sink receives the sum (keeps the loads alive).
double kv_read_gbps(const float* k, const float* v, int64_t seq_kv, int64_t row, int threads, float* sink) {
  const auto t0 = Clock::now();
  float total = 0.0f;
#pragma omp parallel num_threads(threads) reduction(+ : total)
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t p0 = seq_kv * t / nt, p1 = seq_kv * (t + 1) / nt;
    float acc[kLanes] = {};
    float tails = 0.0f;
    for (int64_t j = p0; j < p1; j += kTileRows) {
      const int64_t n = (std::min(p1, j + kTileRows) - j) * row;
      tails += sum_range(k + j * row, n, acc);
      tails += sum_range(v + j * row, n, acc);
    }
    for (int64_t l = 0; l < kLanes; ++l) total += acc[l];
    total += tails;
  }
  const double s = seconds_since(t0);
  *sink = total;
  return 2.0 * static_cast<double>(seq_kv * row) * sizeof(float) / s / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t seq_kv = 131072, heads_q = 32, heads_kv = 8, d = 128;
  int threads = 2, rounds = 30;
  int64_t stream_bytes = attnkit::bench::YardstickOptions().stream_bytes;
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) return usage("missing value after " + flag);
    char* end = nullptr;
    const long long val = std::strtoll(argv[i + 1], &end, 10);
    if (end == argv[i + 1] || *end != '\0') return usage(flag + " needs an integer, got '" + argv[i + 1] + "'");
    if (flag == "--seq-kv") seq_kv = val;
    else if (flag == "--heads-q") heads_q = val;
    else if (flag == "--heads-kv") heads_kv = val;
    else if (flag == "--head-dim") d = val;
    else if (flag == "--threads") threads = static_cast<int>(val);
    else if (flag == "--rounds") rounds = static_cast<int>(val);
    else if (flag == "--stream-bytes") stream_bytes = val;
    else return usage("unknown flag " + flag);
  }
  if (seq_kv < 1 || heads_q < 1 || heads_kv < 1 || d < 1 || threads < 1 || rounds < 1)
    return usage("sizes, --threads and --rounds must be positive (seq_kv " + std::to_string(seq_kv) + ", threads " +
                 std::to_string(threads) + ", rounds " + std::to_string(rounds) + ")");

  const int64_t row = heads_kv * d;
  const size_t kv_floats = static_cast<size_t>(seq_kv * row);
  Buffer q = alloc_floats(static_cast<size_t>(heads_q * d)), k = alloc_floats(kv_floats), v = alloc_floats(kv_floats),
         o = alloc_floats(static_cast<size_t>(heads_q * d));
  if (!q || !k || !v || !o) return usage("cannot allocate K and V of " + std::to_string(kv_floats * 4) + " bytes each");
  for (int64_t i = 0; i < heads_q * d; ++i) q.get()[i] = 0.01f * static_cast<float>(i % 13) - 0.06f;
  // First touch by the reading threads, in the order the reader and the kernel split the keys.
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t j = 0; j < seq_kv; ++j)
    for (int64_t e = 0; e < row; ++e) {
      k.get()[j * row + e] = 0.001f * static_cast<float>((j + e) % 97) - 0.048f;
      v.get()[j * row + e] = 0.002f * static_cast<float>((j * 7 + e) % 89) - 0.088f;
    }

  attnkit::bench::StreamReader stream;
  const attnkit::Status st = stream.init(threads, stream_bytes);
  if (!st.ok()) return usage(st.message());

  attnkit::AttentionParams p;
  p.num_threads = threads;
  const attnkit::TensorView qv = attnkit::TensorView::contiguous(q.get(), attnkit::DType::kF32, 1, 1, heads_q, d);
  const attnkit::TensorView kv = attnkit::TensorView::contiguous(k.get(), attnkit::DType::kF32, 1, seq_kv, heads_kv, d);
  const attnkit::TensorView vv = attnkit::TensorView::contiguous(v.get(), attnkit::DType::kF32, 1, seq_kv, heads_kv, d);
  const attnkit::TensorView ov = attnkit::TensorView::contiguous(o.get(), attnkit::DType::kF32, 1, 1, heads_q, d);
  const double decode_bytes = attnkit::attention_bytes(1, 1, seq_kv, heads_q, heads_kv, d, d, 4, 4);

  std::vector<double> g_stream, g_read, g_decode, r_decode, r_read, r_decode_read;
  float sink = 0.0f;
  for (int r = 0; r < rounds; ++r) {
    double gs = 0, gr = 0;
    // The first of the two reads alternates between rounds.
    if (r % 2 == 0) {
      gs = stream.pass_gbps();
      gr = kv_read_gbps(k.get(), v.get(), seq_kv, row, threads, &sink);
    } else {
      gr = kv_read_gbps(k.get(), v.get(), seq_kv, row, threads, &sink);
      gs = stream.pass_gbps();
    }
    const auto t0 = Clock::now();
    const attnkit::Status s = attnkit::attention(qv, kv, vv, ov, nullptr, p);
    const double sec = seconds_since(t0);
    if (!s.ok()) return usage("attention failed: " + s.message());
    const double gd = decode_bytes / sec / 1e9;
    g_stream.push_back(gs);
    g_read.push_back(gr);
    g_decode.push_back(gd);
    r_decode.push_back(gd / gs);
    r_read.push_back(gr / gs);
    r_decode_read.push_back(gd / gr);
  }
  std::printf("seq_kv %lld heads %lld/%lld d %lld f32 threads %d, %d rounds (checksum %g)\n", static_cast<long long>(seq_kv),
              static_cast<long long>(heads_q), static_cast<long long>(heads_kv), static_cast<long long>(d), threads,
              rounds, static_cast<double>(sink));
  std::printf("GB/s medians: stream %.3g, kv read %.3g, decode %.3g\n", median(g_stream), median(g_read),
              median(g_decode));
  std::printf("per-round medians: decode/stream %.3f, kv read/stream %.3f, decode/kv read %.3f\n", median(r_decode),
              median(r_read), median(r_decode_read));
  return 0;
}
