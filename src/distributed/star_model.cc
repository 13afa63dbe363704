// Star Attention (Acharya, Jia, Ginsburg 2024) inside Gemma 3: the model's forward pass runs
// unchanged on every rank; phase 1 uses Model::set_position / drop_kv_before to encode a block
// behind the anchor at its global positions, and phase 2 is an attention backend whose per-rank
// partial results merge across ranks (attnkit/distributed_model.h).
//
// This file sits above the model layer although it lives with the other MPI code: the distributed
// folder is the only part of the library that links MPI.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>

#include "attnkit/distributed_model.h"
#include "attnkit/kv_cache.h"
#include "attnkit/tokenizer.h"
#include "distributed/dist_internal.h"

namespace attnkit::dist {
namespace {

using internal::Comm;

class StarQueryBackend final : public model::AttentionBackend {
 public:
  StarQueryBackend(int64_t seq_ctx, bool last, MPI_Comm comm) : seq_ctx_(seq_ctx), last_(last), comm_(comm) {}
  std::string name() const override { return "star_query"; }

  Status attend(const model::AttentionCall& call) override {
    const TensorView& q = call.q;
    const TensorView& out = call.out;
    const int64_t n = q.seq(), H = q.heads(), dv = out.head_dim();
    Status st;
    if (call.cache == nullptr)
      st = Status::invalid_argument("star_query: the attention call carries no cache");
    else if (out.dtype != DType::kF32 || out.batch() != 1 ||
             out.stride != TensorView::contiguous(nullptr, DType::kF32, 1, n, H, dv).stride)
      st = Status::invalid_argument("star_query: out must be a contiguous f32 [1, n, heads, head_dim_v] tensor");
    lse_.assign(static_cast<size_t>(H * n), -std::numeric_limits<float>::infinity());
    float* o = static_cast<float*>(out.data);
    if (st.ok()) {
      // The rank's context block is the slots below seq_ctx; the query tokens' own keys (the slots
      // from seq_ctx on) are counted on the last rank only, so that they enter the merge once.
      const std::vector<int64_t>& kp = call.cache->positions(0);
      const int64_t slots = last_ ? static_cast<int64_t>(kp.size())
                                  : std::lower_bound(kp.begin(), kp.end(), seq_ctx_) - kp.begin();
      if (slots == 0) {
        std::fill(o, o + n * H * dv, 0.0f);  // an empty part: output 0, LSE -inf
      } else {
        qpos_.resize(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) qpos_[static_cast<size_t>(i)] = call.q_pos0 + i;
        kv::CacheAttentionParams cp;
        cp.scale = call.params.scale.value_or(0.0f);  // 0 = 1/sqrt(head_dim), as unset
        cp.softcap = call.params.softcap;
        cp.window_left = call.params.window_left;  // on absolute positions: blocks outside a local
        cp.num_threads = call.params.num_threads;  // layer's window give empty parts
        cp.slot_ranges = {{0, slots}};
        st = kv::attend_cache(*call.cache, 0, q, qpos_.data(), cp, out, lse_.data());
      }
    }
    ATTNKIT_RETURN_IF_ERROR(agree(st, comm_));
    internal::allreduce_merge_rows(o, lse_.data(), 1, n, H, dv, comm_, &stats_);
    return Status::ok_status();
  }
  const CommStats& stats() const { return stats_; }

 private:
  int64_t seq_ctx_;
  bool last_;
  MPI_Comm comm_;
  std::vector<float> lse_;
  std::vector<int64_t> qpos_;
  CommStats stats_;
};

int64_t token_hash(const std::vector<int32_t>& t) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (int32_t x : t) h = (h ^ static_cast<uint32_t>(x)) * 1099511628211ull;
  return static_cast<int64_t>(h >> 1);
}

Status check_tokens(const char* what, const std::vector<int32_t>& t, int64_t n_vocab) {
  if (t.empty()) return Status::invalid_argument(std::string("star: the ") + what + " is empty");
  for (size_t i = 0; i < t.size(); ++i)
    if (t[i] < 0 || t[i] >= n_vocab)
      return Status::out_of_range(std::string("star: ") + what + " token " + std::to_string(t[i]) + " at index " +
                                  std::to_string(i) + " is outside the vocabulary [0, " + std::to_string(n_vocab) + ")");
  return Status::ok_status();
}

// Checks everything that could fail on one rank only, agrees on it, and checks that the ranks
// were given the same problem; every later step then runs on every rank.
Status check_inputs(model::Model* m, const std::vector<int32_t>& context, const std::vector<int32_t>* maybe_query,
                    const StarModelOptions& o, const Comm& c) {
  Status st;
  const int64_t n = static_cast<int64_t>(context.size());
  const int64_t first = block_len(n, c.size, 0, BlockLayout::kContiguous);
  if (m == nullptr) st = Status::invalid_argument("star: model is null");
  if (st.ok()) st = check_tokens("context", context, m->config().n_vocab);
  if (st.ok() && maybe_query) st = check_tokens("query", *maybe_query, m->config().n_vocab);
  if (st.ok() && (o.anchor_len < 0 || o.anchor_len > first))
    st = Status::invalid_argument("star: anchor_len " + std::to_string(o.anchor_len) + " must be in [0, " +
                                  std::to_string(first) + "] (0 = the first block of " + std::to_string(first) + " tokens)");
  if (st.ok() && o.max_tokens < 0)
    st = Status::invalid_argument("star: max_tokens " + std::to_string(o.max_tokens) + " must be >= 0");
  if (st.ok() && !m->allow_past_context()) {
    const int64_t end = n + (maybe_query ? static_cast<int64_t>(maybe_query->size()) + std::max<int64_t>(o.max_tokens - 1, 0) : 0);
    if (end > m->config().context_length)
      st = Status::out_of_range("star: context + query + max_tokens is " + std::to_string(end) +
                                " positions, past the model's context_length " + std::to_string(m->config().context_length));
  }
  ATTNKIT_RETURN_IF_ERROR(agree(st, c.comm));
  const std::vector<int32_t> none;
  const std::vector<int32_t>& query = maybe_query ? *maybe_query : none;
  return internal::check_same_on_all_ranks(
      {{"context tokens", n}, {"context token hash", token_hash(context)},
       {"query tokens", static_cast<int64_t>(query.size())}, {"query token hash", token_hash(query)},
       {"anchor_len", o.anchor_len}, {"max_tokens", o.max_tokens}, {"stop_at_eos", o.stop_at_eos},
       {"n_vocab", m->config().n_vocab}},
      c.comm);
}

Status context_phase(model::Model* m, const std::vector<int32_t>& context, const StarModelOptions& o, const Comm& c,
                     StarModelResult* r) {
  const double t0 = internal::now_seconds();
  const int64_t n = static_cast<int64_t>(context.size());
  r->block = block_segments(n, c.size, c.rank, BlockLayout::kContiguous)[0];
  const int64_t first = block_len(n, c.size, 0, BlockLayout::kContiguous);
  r->anchor_len = (c.rank == 0 || r->block.len == 0) ? 0 : (o.anchor_len > 0 ? o.anchor_len : first);
  m->set_attention(nullptr);
  m->reset();
  const model::ForwardOutputs none;
  Status st;
  if (r->anchor_len > 0) st = m->forward(context.data(), r->anchor_len, none);
  if (st.ok()) st = m->set_position(r->block.start);
  if (st.ok() && r->block.len > 0) st = m->forward(context.data() + r->block.start, r->block.len, none);
  if (st.ok() && r->anchor_len > 0) st = m->drop_kv_before(r->block.start);
  ATTNKIT_RETURN_IF_ERROR(agree(st, c.comm));
  r->context_seconds = internal::now_seconds() - t0;
  return Status::ok_status();
}

}  // namespace

std::shared_ptr<model::AttentionBackend> make_star_query_backend(int64_t seq_ctx, bool last, MPI_Comm comm) {
  return std::make_shared<StarQueryBackend>(seq_ctx, last, comm);
}

Status star_model_context(model::Model* m, const std::vector<int32_t>& context, const StarModelOptions& options,
                          StarModelResult* result) {
  Comm c;
  ATTNKIT_RETURN_IF_ERROR(internal::comm_info(options.comm, &c));
  ATTNKIT_RETURN_IF_ERROR(check_inputs(m, context, nullptr, options, c));
  StarModelResult r;
  const auto hold = m->lock();
  ATTNKIT_RETURN_IF_ERROR(context_phase(m, context, options, c, &r));
  if (result) *result = std::move(r);
  return Status::ok_status();
}

Status star_model_generate(model::Model* m, const std::vector<int32_t>& context, const std::vector<int32_t>& query,
                           const StarModelOptions& options, StarModelResult* result) {
  Comm c;
  ATTNKIT_RETURN_IF_ERROR(internal::comm_info(options.comm, &c));
  ATTNKIT_RETURN_IF_ERROR(check_inputs(m, context, &query, options, c));
  StarModelResult r;
  const auto hold = m->lock();
  ATTNKIT_RETURN_IF_ERROR(context_phase(m, context, options, c, &r));

  const double t0 = internal::now_seconds();
  const int64_t n_ctx = static_cast<int64_t>(context.size()), V = m->config().n_vocab;
  const auto backend = std::make_shared<StarQueryBackend>(n_ctx, c.rank == c.size - 1, c.comm);
  m->set_attention(backend);
  std::vector<float> logits(static_cast<size_t>(V));
  model::ForwardOutputs fo;
  fo.maybe_last_logits = logits.data();
  // Validated above: set_position cannot fail here, and a failure inside forward is agreed on in
  // every layer's attention, so all ranks leave together.
  Status st = m->set_position(n_ctx);
  if (st.ok()) st = m->forward(query.data(), static_cast<int64_t>(query.size()), fo);
  if (st.ok()) r.first_logits = logits;
  const Tokenizer& tok = m->tokenizer();
  for (int64_t i = 0; st.ok() && i < options.max_tokens; ++i) {
    // Rank 0 chooses: the merged attention may differ in the last bit between ranks (the reduction
    // order differs), and a tie broken differently would make the ranks diverge.
    int32_t t = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    MPI_Bcast(&t, 1, MPI_INT32_T, 0, c.comm);
    r.tokens.push_back(t);
    if (options.stop_at_eos && (t == tok.eos_id() || tok.token_text(t) == "<end_of_turn>")) break;
    if (i + 1 == options.max_tokens) break;
    st = m->decode(t, logits.data());
  }
  m->set_attention(nullptr);
  ATTNKIT_RETURN_IF_ERROR(st);
  r.query_seconds = internal::now_seconds() - t0;
  r.query_comm = backend->stats();
  if (result) *result = std::move(r);
  return Status::ok_status();
}

}  // namespace attnkit::dist
