// `attnkit dist-bench`: times a context-parallel scheme under mpirun and writes the same records
// as `attnkit bench` (src/eval/bench_harness.h), plus what the ranks communicated:
//
//   mpirun -np 2 attnkit dist-bench --mechanism ring --seq 16384 --layout zigzag --threads 1 --baseline
//
// Every timed run starts after a barrier; its time is the slowest rank's. Extra record fields:
// ranks, layout, bytes_communicated (all ranks, per run), bytes_max_rank, wait_share (time blocked
// in MPI over the ranks' total time, median run), blocks_computed / blocks_skipped (ring), and with
// --baseline (ring) the same problem in one process with ranks x threads threads, timed in
// alternation with the distributed runs: baseline_seconds and speed_vs_baseline
// (baseline time / distributed time). Only rank 0 prints and writes --json.
#ifdef ATTNKIT_HAVE_MPI

#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "attnkit/attention.h"
#include "attnkit/distributed.h"
#include "attnkit/linear.h"
#include "commands.h"
#include "mpi_session.h"
#include "core/output_file.h"
#include "attnkit/bench.h"

namespace attnkit::cli {
namespace {

struct DistBenchOptions {
  std::string mechanism = "ring";
  int64_t seq = 16384, batch = 1, heads_q = 8, heads_kv = 2, head_dim = 128, query = 64, anchor = 0, chunk = 64;
  bool causal = true, baseline = false, quick = false;
  std::string layout = "zigzag", dtype = "f32", feature_map = "identity", decay = "scalar", json_path;
  int threads = 1;
};

struct Tensor {
  std::vector<uint8_t> bytes;
  TensorView view;
  Tensor(DType dt, int64_t b, int64_t s, int64_t h, int64_t d, uint64_t seed) : bytes(static_cast<size_t>(b * s * h * d) * dtype_size(dt)) {
    view = TensorView::contiguous(bytes.data(), dt, b, s, h, d);
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (int64_t i = 0; i < view.numel(); ++i) store_from_f32(bytes.data(), dt, i, u(rng));
  }
};

// One distributed run (collective) and its statistics.
using DistRun = std::function<Status(dist::CommStats*)>;

struct Timed {
  std::vector<double> seconds, baseline_seconds, wait_share;
  dist::CommStats last;
};

// Alternates distributed runs (and, when given, rank 0's single-process baseline) under the
// harness's timing options; every decision uses values reduced over the ranks, so all ranks run
// the same number of rounds.
Status time_rounds(const DistRun& run, const std::function<Status()>& baseline, const bench::TimingOptions& t,
                   MPI_Comm comm, Timed* out) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  double total = 0;
  for (int round = 0;; ++round) {
    const bool warm = round < t.warmup_runs;
    MPI_Barrier(comm);
    dist::CommStats stats;
    const double t0 = MPI_Wtime();
    ATTNKIT_RETURN_IF_ERROR(run(&stats));
    double mine = MPI_Wtime() - t0, slowest = 0;
    MPI_Allreduce(&mine, &slowest, 1, MPI_DOUBLE, MPI_MAX, comm);
    double shares[2] = {stats.wait_seconds, stats.total_seconds}, sums[2] = {0, 0};
    MPI_Allreduce(shares, sums, 2, MPI_DOUBLE, MPI_SUM, comm);
    Status bst;
    double base = 0;
    if (baseline) {
      MPI_Barrier(comm);
      if (rank == 0) {
        const double b0 = MPI_Wtime();
        bst = baseline();
        base = MPI_Wtime() - b0;
      }
      ATTNKIT_RETURN_IF_ERROR(dist::agree(bst, comm));
      MPI_Bcast(&base, 1, MPI_DOUBLE, 0, comm);
    }
    if (!warm) {
      out->seconds.push_back(slowest);
      if (baseline) out->baseline_seconds.push_back(base);
      out->wait_share.push_back(sums[1] > 0 ? sums[0] / sums[1] : 0);
      out->last = stats;
      total += slowest;
    }
    const int runs = static_cast<int>(out->seconds.size());
    if (runs >= t.min_runs && (total >= t.min_seconds || (t.max_seconds > 0 && total >= t.max_seconds))) break;
    if (runs >= 1 && t.max_seconds > 0 && total >= t.max_seconds) break;
  }
  return Status::ok_status();
}

void run_dist_bench(const DistBenchOptions& o) {
  MpiSession mpi;
  const MPI_Comm comm = mpi.comm;
  const int rank = mpi.rank, ranks = mpi.ranks;

  // Option checks are the same on every rank (same argv); the JSON path is checked on rank 0 and
  // agreed on, so a bad path stops every rank.
  Status st;
  DType dt = DType::kF32;
  dist::BlockLayout layout = dist::BlockLayout::kZigZag;
  if (o.mechanism != "ring" && o.mechanism != "lasp2" && o.mechanism != "star")
    st = Status::invalid_argument("mechanism '" + o.mechanism + "' is not supported; expected ring|lasp2|star");
  else if (!parse_dtype(o.dtype, &dt))
    st = Status::invalid_argument("dtype '" + o.dtype + "' is not supported; expected f32|f16|bf16");
  else if (o.layout != "zigzag" && o.layout != "contiguous")
    st = Status::invalid_argument("layout '" + o.layout + "' is not supported; expected contiguous|zigzag");
  else if (o.seq < 1 || o.batch < 1 || o.heads_q < 1 || o.heads_kv < 1 || o.head_dim < 1 || o.query < 1)
    st = Status::invalid_argument("seq, batch, heads, head-dim and query must be >= 1");
  else if (o.threads < 1)
    st = Status::invalid_argument("threads " + std::to_string(o.threads) + " is not supported; expected >= 1 per rank");
  else if (o.baseline && o.mechanism != "ring")
    st = Status::invalid_argument("--baseline is supported with --mechanism ring only");
  if (st.ok() && o.layout == "contiguous") layout = dist::BlockLayout::kContiguous;
  if (st.ok() && rank == 0 && !o.json_path.empty()) st = check_output_path(o.json_path, "--json");  // before the run
  check(dist::agree(st, comm));
  if (o.quick) setenv("ATTNKIT_BENCH_QUICK", "1", 1);
  const bench::TimingOptions timing = bench::timing_options_from_env();

  bench::Record r;
  r.family = "distributed";
  r.phase = "prefill";
  r.batch = o.batch;
  r.heads_q = o.heads_q;
  r.heads_kv = o.heads_kv;
  r.head_dim = o.head_dim;
  r.causal = o.causal;
  r.dtype = o.dtype;
  r.threads = o.threads;
  r.simd_target = simd_target_name();
  nlohmann::json extra;
  Timed timed;
  const uint64_t seed = 1000 + static_cast<uint64_t>(rank);

  if (o.mechanism == "ring") {
    r.mechanism = "ring:layout=" + o.layout;
    r.seq_q = r.seq_kv = o.seq;
    const int64_t lq = dist::block_len(o.seq, ranks, rank, layout);
    Tensor q(dt, o.batch, lq, o.heads_q, o.head_dim, seed), k(dt, o.batch, lq, o.heads_kv, o.head_dim, seed + 7),
        v(dt, o.batch, lq, o.heads_kv, o.head_dim, seed + 13);
    std::vector<float> out(static_cast<size_t>(o.batch * lq * o.heads_q * o.head_dim));
    dist::RingParams p;
    p.attn.causal = o.causal;
    p.attn.num_threads = o.threads;
    p.seq_q = p.seq_kv = o.seq;
    p.layout = layout;
    const TensorView ov = TensorView::contiguous(out.data(), DType::kF32, o.batch, lq, o.heads_q, o.head_dim);
    // The single-process baseline: the whole problem on rank 0 with every rank's threads.
    std::unique_ptr<Tensor> fq, fk, fv;
    std::vector<float> fout;
    std::function<Status()> baseline;
    if (o.baseline && rank == 0) {
      fq = std::make_unique<Tensor>(dt, o.batch, o.seq, o.heads_q, o.head_dim, 1);
      fk = std::make_unique<Tensor>(dt, o.batch, o.seq, o.heads_kv, o.head_dim, 2);
      fv = std::make_unique<Tensor>(dt, o.batch, o.seq, o.heads_kv, o.head_dim, 3);
      fout.resize(static_cast<size_t>(o.batch * o.seq * o.heads_q * o.head_dim));
    }
    if (o.baseline)
      baseline = [&]() {
        AttentionParams ap;
        ap.causal = o.causal;
        ap.num_threads = o.threads * ranks;
        return attention(fq->view, fk->view, fv->view,
                         TensorView::contiguous(fout.data(), DType::kF32, o.batch, o.seq, o.heads_q, o.head_dim),
                         nullptr, ap);
      };
    check(time_rounds([&](dist::CommStats* s) { return dist::ring_attention(q.view, k.view, v.view, ov, nullptr, p, s); },
                      baseline, timing, comm, &timed));
    r.flops = attention_flops(o.batch, o.seq, o.seq, o.heads_q, o.head_dim, o.head_dim, o.causal);
    r.bytes = attention_bytes(o.batch, o.seq, o.seq, o.heads_q, o.heads_kv, o.head_dim, o.head_dim, dtype_size(dt), 4);
    extra["layout"] = o.layout;
  } else if (o.mechanism == "star") {
    r.mechanism = "star:query=" + std::to_string(o.query);
    r.seq_q = r.seq_kv = o.seq + o.query;
    const int64_t lc = dist::block_len(o.seq, ranks, rank, dist::BlockLayout::kContiguous);
    Tensor q(dt, o.batch, lc, o.heads_q, o.head_dim, seed), k(dt, o.batch, lc, o.heads_kv, o.head_dim, seed + 7),
        v(dt, o.batch, lc, o.heads_kv, o.head_dim, seed + 13);
    Tensor qq(dt, o.batch, o.query, o.heads_q, o.head_dim, 1), qk(dt, o.batch, o.query, o.heads_kv, o.head_dim, 2),
        qv(dt, o.batch, o.query, o.heads_kv, o.head_dim, 3);
    std::vector<float> out(static_cast<size_t>(o.batch * lc * o.heads_q * o.head_dim)),
        qout(static_cast<size_t>(o.batch * o.query * o.heads_q * o.head_dim));
    dist::StarParams p;
    p.attn.causal = o.causal;
    p.attn.num_threads = o.threads;
    p.seq_ctx = o.seq;
    p.anchor_len = o.anchor;
    const TensorView ov = TensorView::contiguous(out.data(), DType::kF32, o.batch, lc, o.heads_q, o.head_dim);
    const TensorView qov = TensorView::contiguous(qout.data(), DType::kF32, o.batch, o.query, o.heads_q, o.head_dim);
    check(time_rounds(
        [&](dist::CommStats* s) {
          dist::CommStats a, b;
          ATTNKIT_RETURN_IF_ERROR(dist::star_context(q.view, k.view, v.view, ov, nullptr, p, &a));
          ATTNKIT_RETURN_IF_ERROR(dist::star_query(qq.view, qk.view, qv.view, k.view, v.view, qov, nullptr, p, &b));
          s->bytes_sent = a.bytes_sent + b.bytes_sent;
          s->wait_seconds = a.wait_seconds + b.wait_seconds;
          s->total_seconds = a.total_seconds + b.total_seconds;
          s->blocks_computed = a.blocks_computed + b.blocks_computed;
          return Status::ok_status();
        },
        {}, timing, comm, &timed));
    // The work done: each block causally over itself plus the anchor in full (ranks > 0), and the
    // query over the whole context plus itself.
    const int64_t first = dist::block_len(o.seq, ranks, 0, dist::BlockLayout::kContiguous);
    const int64_t anchor = o.anchor > 0 ? o.anchor : first;
    double flops = 0;
    for (int i = 0; i < ranks; ++i) {
      const int64_t li = dist::block_len(o.seq, ranks, i, dist::BlockLayout::kContiguous);
      flops += attention_flops(o.batch, li, li, o.heads_q, o.head_dim, o.head_dim, o.causal);
      if (i > 0) flops += attention_flops(o.batch, li, anchor, o.heads_q, o.head_dim, o.head_dim, false);
    }
    flops += attention_flops(o.batch, o.query, o.seq, o.heads_q, o.head_dim, o.head_dim, false) +
             attention_flops(o.batch, o.query, o.query, o.heads_q, o.head_dim, o.head_dim, o.causal);
    r.flops = flops;
    r.bytes = attention_bytes(o.batch, o.seq + o.query, o.seq + o.query, o.heads_q, o.heads_kv, o.head_dim, o.head_dim,
                              dtype_size(dt), 4);
    extra["anchor_len"] = anchor;
  } else {
    r.mechanism = "lasp2:feature_map=" + o.feature_map + ",decay=" + o.decay;
    r.seq_q = r.seq_kv = o.seq;
    r.causal = true;
    LinearAttentionParams lp;
    Status cst;
    if (!parse_feature_map(o.feature_map, &lp.feature_map))
      cst = Status::invalid_argument("feature map '" + o.feature_map + "' is not supported (see linear.h)");
    const int64_t lc = dist::block_len(o.seq, ranks, rank, dist::BlockLayout::kContiguous);
    int64_t F = o.head_dim;
    if (cst.ok()) cst = linear_feature_dim(lp, o.head_dim, &F);
    std::vector<float> head_decay(static_cast<size_t>(o.heads_q)), gate;
    if (cst.ok()) {
      if (o.decay == "head") {
        lp.decay = DecayKind::kPerHead;
        lightning_log_decays(o.heads_q, head_decay.data());
        lp.maybe_head_log_decay = head_decay.data();
      } else if (o.decay == "scalar" || o.decay == "vector") {
        lp.decay = o.decay == "scalar" ? DecayKind::kScalarGate : DecayKind::kVectorGate;
        const int64_t w = o.decay == "scalar" ? 1 : F;
        gate.assign(static_cast<size_t>(o.batch * lc * o.heads_q * w), -0.05f);
        lp.gate = TensorView::contiguous(gate.data(), DType::kF32, o.batch, lc, o.heads_q, w);
      } else if (o.decay != "none") {
        cst = Status::invalid_argument("decay '" + o.decay + "' is not supported; expected none|head|scalar|vector");
      }
    }
    check(dist::agree(cst, comm));
    lp.form = LinearForm::kChunked;
    lp.chunk_size = o.chunk;
    lp.num_threads = o.threads;
    Tensor q(dt, o.batch, lc, o.heads_q, o.head_dim, seed), k(dt, o.batch, lc, o.heads_kv, o.head_dim, seed + 7),
        v(dt, o.batch, lc, o.heads_kv, o.head_dim, seed + 13);
    std::vector<float> out(static_cast<size_t>(o.batch * lc * o.heads_q * o.head_dim));
    dist::Lasp2Params p;
    p.linear = lp;
    const TensorView ov = TensorView::contiguous(out.data(), DType::kF32, o.batch, lc, o.heads_q, o.head_dim);
    check(time_rounds([&](dist::CommStats* s) { return dist::lasp2_linear_attention(q.view, k.view, v.view, ov, p, s); },
                      {}, timing, comm, &timed));
    int64_t state_floats = 0;
    check(linear_state_floats(lp, o.head_dim, o.head_dim, &state_floats));
    // The useful work: the chunked form over the whole sequence (each rank also runs a state-only
    // pass over its chunk, not counted here).
    r.flops = linear_chunked_flops(o.batch, o.seq, o.heads_q, F, state_floats / F, o.chunk, false);
    r.bytes = attention_bytes(o.batch, o.seq, o.seq, o.heads_q, o.heads_kv, o.head_dim, o.head_dim, dtype_size(dt), 4);
    extra["state_floats_per_head"] = state_floats;
    extra["feature_dim"] = F;
    extra["chunk"] = o.chunk;
  }

  // Totals over the ranks (of the last timed run).
  int64_t bytes_sum = 0, bytes_max = 0, skipped = 0, computed = 0;
  MPI_Allreduce(&timed.last.bytes_sent, &bytes_sum, 1, MPI_INT64_T, MPI_SUM, comm);
  MPI_Allreduce(&timed.last.bytes_sent, &bytes_max, 1, MPI_INT64_T, MPI_MAX, comm);
  MPI_Allreduce(&timed.last.blocks_skipped, &skipped, 1, MPI_INT64_T, MPI_SUM, comm);
  MPI_Allreduce(&timed.last.blocks_computed, &computed, 1, MPI_INT64_T, MPI_SUM, comm);

  // Yardsticks on rank 0 with the threads of the whole job, while the other ranks wait.
  bench::Yardsticks y;
  Status yst;
  if (rank == 0) yst = bench::measure_yardsticks(o.threads * ranks, bench::yardstick_options_from_env(), &y);
  check(dist::agree(yst, comm));
  if (rank != 0) return;

  r.seconds = bench::median(timed.seconds);
  r.min_seconds = *std::min_element(timed.seconds.begin(), timed.seconds.end());
  r.runs = static_cast<int>(timed.seconds.size());
  r.sgemm_gflops = y.sgemm_gflops;
  r.stream_gbps = y.stream_gbps;
  r.stream_gbps_slowest = y.stream_gbps_slowest;
  bench::finish_record(&r);
  nlohmann::json j = bench::record_to_json(r);
  j["ranks"] = ranks;
  j["threads_per_rank"] = o.threads;
  j["bytes_communicated"] = bytes_sum;
  j["bytes_max_rank"] = bytes_max;
  j["wait_share"] = bench::median(timed.wait_share);
  j["blocks_computed"] = computed;
  j["blocks_skipped"] = skipped;
  for (auto it = extra.begin(); it != extra.end(); ++it) j[it.key()] = it.value();
  std::printf("%s\n%s\n", bench::table_header().c_str(), bench::table_row(r).c_str());
  std::printf("ranks %d x %d threads: %.3g MB communicated per run, %.1f%% of rank time waiting in MPI\n", ranks,
              o.threads, static_cast<double>(bytes_sum) / 1e6, 100.0 * bench::median(timed.wait_share));
  if (!timed.baseline_seconds.empty()) {
    const double base = bench::median(timed.baseline_seconds);
    // Per round ratios, then their median: the two runs of a round share the machine's state.
    std::vector<double> ratios;
    for (size_t i = 0; i < timed.seconds.size(); ++i) ratios.push_back(timed.baseline_seconds[i] / timed.seconds[i]);
    j["baseline_seconds"] = base;
    j["baseline_threads"] = o.threads * ranks;
    j["speed_vs_baseline"] = bench::median(ratios);
    std::printf("one process x %d threads: %.4g s; distributed / single speed %.3f (median of %zu rounds)\n",
                o.threads * ranks, base, bench::median(ratios), ratios.size());
  }
  std::printf("%s\n", bench::yardstick_line(y).c_str());
  if (!o.json_path.empty()) {
    check(write_file_atomic(o.json_path, nlohmann::json::array({j}).dump(2) + "\n", "--json"));
    std::printf("wrote 1 record to %s\n", o.json_path.c_str());
  }
}

void add_dist_bench(CLI::App& root) {
  CLI::App* cmd = root.add_subcommand(
      "dist-bench", "Time context parallelism under mpirun (ring attention, Star Attention, LASP-2); see docs/distributed.md");
  auto o = std::make_shared<DistBenchOptions>();
  cmd->add_option("--mechanism,-m", o->mechanism, "ring|star|lasp2")->capture_default_str();
  cmd->add_option("--seq", o->seq, "Global sequence length (star: the context)")->capture_default_str();
  cmd->add_option("--batch", o->batch, "Batch size")->capture_default_str();
  cmd->add_option("--heads-q", o->heads_q, "Query heads")->capture_default_str();
  cmd->add_option("--heads-kv", o->heads_kv, "Key/value heads")->capture_default_str();
  cmd->add_option("--head-dim", o->head_dim, "Head dimension")->capture_default_str();
  cmd->add_flag("--causal,!--no-causal", o->causal, "Causal mask (default) or none (ring, star)");
  cmd->add_option("--layout", o->layout, "ring block layout contiguous|zigzag")->capture_default_str();
  cmd->add_option("--dtype", o->dtype, "Q/K/V dtype f32|f16|bf16")->capture_default_str();
  cmd->add_option("--threads", o->threads, "OpenMP threads per rank")->capture_default_str();
  cmd->add_option("--query", o->query, "star: query tokens after the context")->capture_default_str();
  cmd->add_option("--anchor", o->anchor, "star: anchor tokens (0 = the first block)")->capture_default_str();
  cmd->add_option("--feature-map", o->feature_map, "lasp2: feature map (linear.h names)")->capture_default_str();
  cmd->add_option("--decay", o->decay, "lasp2: none|head|scalar|vector")->capture_default_str();
  cmd->add_option("--chunk", o->chunk, "lasp2: chunk size of the local chunked form")->capture_default_str();
  cmd->add_flag("--baseline", o->baseline, "ring: also time one process with ranks x threads threads, alternating");
  cmd->add_option("--json", o->json_path, "Write a JSON array with the record to FILE (rank 0)");
  cmd->add_flag("--quick", o->quick, "Small yardsticks and one timed run (smoke test)");
  cmd->callback([o] { run_dist_bench(*o); });
}

}  // namespace
}  // namespace attnkit::cli

ATTNKIT_CLI_COMMAND("dist-bench", attnkit::cli::add_dist_bench);

#endif  // ATTNKIT_HAVE_MPI
