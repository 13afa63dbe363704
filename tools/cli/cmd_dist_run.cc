// `attnkit dist-run`: Gemma 3 270M with Star Attention across MPI ranks (attnkit/distributed_model.h):
// the prompt's context is prefilled in blocks, one per rank, then the query (the prompt's last line,
// or its last --query-tokens tokens) attends to every rank's block and greedy tokens follow.
//
//   mpirun -np 4 attnkit dist-run --mechanism star --prompt-file F [--max-tokens 32] [--exact]
//   mpirun -np 4 attnkit dist-run --mechanism star --niah 4096,8192 --trials 10 [--exact] [--json F]
//
// --exact: rank 0 also runs single-process exact prefill of the same prompt and reports whether the
// generated tokens agree. --niah builds the prompts of `attnkit eval niah` (same seed, same needles)
// and scores both. Only rank 0 prints and writes --json.
#ifdef ATTNKIT_HAVE_MPI

#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "attnkit/distributed_model.h"
#include "attnkit/eval.h"
#include "attnkit/gguf.h"
#include "attnkit/model.h"
#include "attnkit/tokenizer.h"
#include "commands.h"
#include "core/output_file.h"
#include "mpi_session.h"

namespace attnkit::cli {
namespace {

struct DistRunOptions {
  std::string mechanism = "star";
  std::string prompt_file, model_path, kv_dtype = "bf16", json_path, corpus_cache;
  std::vector<int64_t> niah_lengths;
  std::vector<double> depths = {0.5};
  int64_t trials = 10, query_tokens = 0, max_tokens = -1, anchor = 0;
  uint64_t seed = 1;
  int threads = 1;
  bool exact = false, allow_past_context = false;
};

// The query of a prompt: its last n tokens, or (n = 0) its last line, from the last token that
// holds a newline.
Status split_query(const Tokenizer& tok, const std::vector<int32_t>& prompt, int64_t n, std::vector<int32_t>* context,
                   std::vector<int32_t>* query) {
  int64_t at = static_cast<int64_t>(prompt.size()) - n;
  if (n == 0) {
    at = -1;
    for (int64_t i = static_cast<int64_t>(prompt.size()) - 1; i > 0 && at < 0; --i)
      if (tok.token_to_piece(prompt[static_cast<size_t>(i)]).find('\n') != std::string::npos) at = i;
    if (at < 0) return Status::invalid_argument("dist-run: the prompt has no newline to split its last line off as the query; "
                                                "give --query-tokens");
  }
  if (at < 1 || at >= static_cast<int64_t>(prompt.size()))
    return Status::invalid_argument("dist-run: --query-tokens " + std::to_string(n) + " must leave a context and a query (the prompt has " +
                                    std::to_string(prompt.size()) + " tokens)");
  context->assign(prompt.begin(), prompt.begin() + at);
  query->assign(prompt.begin() + at, prompt.end());
  return Status::ok_status();
}

struct TrialOut {
  nlohmann::json json;
  bool star_correct = false, exact_correct = false, agree = false, first_agree = false;
};

// One prompt through Star Attention on every rank and, with --exact, exact prefill on rank 0.
Status run_prompt(model::Model* m, const DistRunOptions& o, const std::vector<int32_t>& prompt, const std::string& expected,
                  int64_t max_tokens, MPI_Comm comm, TrialOut* t) {
  int rank = 0, ranks = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &ranks);
  std::vector<int32_t> context, query;
  ATTNKIT_RETURN_IF_ERROR(dist::agree(split_query(m->tokenizer(), prompt, o.query_tokens, &context, &query), comm));
  dist::StarModelOptions so;
  so.anchor_len = o.anchor;
  so.max_tokens = max_tokens;
  so.comm = comm;
  dist::StarModelResult r;
  ATTNKIT_RETURN_IF_ERROR(dist::star_model_generate(m, context, query, so, &r));
  double phase[2] = {r.context_seconds, r.query_seconds}, slowest[2] = {0, 0};
  MPI_Reduce(phase, slowest, 2, MPI_DOUBLE, MPI_MAX, 0, comm);
  Status st;
  std::vector<int32_t> exact_tokens;
  double exact_seconds = 0;
  if (rank == 0 && o.exact) {
    model::GenerateOptions go;
    go.max_tokens = max_tokens;
    model::GenerateStats gs;
    st = m->generate(prompt, go, &exact_tokens, &gs);
    exact_seconds = gs.prefill_seconds + gs.decode_seconds;
  }
  ATTNKIT_RETURN_IF_ERROR(dist::agree(st, comm));
  if (rank != 0) return Status::ok_status();
  std::string star_text, exact_text;
  ATTNKIT_RETURN_IF_ERROR(m->tokenizer().decode(r.tokens, &star_text));
  t->json = {{"prompt_tokens", prompt.size()},     {"context_tokens", context.size()}, {"query_tokens", query.size()},
             {"star_text", star_text},             {"star_tokens", r.tokens},
             {"star_context_seconds", slowest[0]}, {"star_query_seconds", slowest[1]},
             {"star_query_bytes_rank0", r.query_comm.bytes_sent}};
  if (!expected.empty()) {
    t->star_correct = eval::first_number(star_text) == expected;
    t->json["expected"] = expected;
    t->json["star_correct"] = t->star_correct;
  }
  if (o.exact) {
    ATTNKIT_RETURN_IF_ERROR(m->tokenizer().decode(exact_tokens, &exact_text));
    t->agree = exact_tokens == r.tokens;
    t->first_agree = !exact_tokens.empty() && !r.tokens.empty() && exact_tokens[0] == r.tokens[0];
    size_t common = 0;
    while (common < std::min(exact_tokens.size(), r.tokens.size()) && exact_tokens[common] == r.tokens[common]) ++common;
    t->json["exact_text"] = exact_text;
    t->json["exact_tokens"] = exact_tokens;
    t->json["exact_seconds"] = exact_seconds;
    t->json["tokens_agree"] = t->agree;
    t->json["common_prefix_tokens"] = common;
    if (!expected.empty()) {
      t->exact_correct = eval::first_number(exact_text) == expected;
      t->json["exact_correct"] = t->exact_correct;
    }
  }
  return Status::ok_status();
}

Status read_prompt(const model::Model& m, const std::string& path, std::vector<int32_t>* ids) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status::invalid_argument("dist-run: --prompt-file '" + path + "' cannot be read");
  std::stringstream ss;
  ss << f.rdbuf();
  EncodeOptions eo;
  eo.add_bos = true;
  return m.tokenizer().encode(ss.str(), eo, ids);
}

Status dist_run(const DistRunOptions& o, const MpiSession& mpi) {
  const MPI_Comm comm = mpi.comm;
  const int rank = mpi.rank, ranks = mpi.ranks;
  Status st;
  if (o.mechanism != "star")
    st = Status::invalid_argument("dist-run: --mechanism '" + o.mechanism +
                                  "' has no model form; expected star (ring and lasp2 run on tensors: dist-bench)");
  else if (o.prompt_file.empty() == o.niah_lengths.empty())
    st = Status::invalid_argument("dist-run: give exactly one of --prompt-file and --niah");
  else if (o.query_tokens < 0)
    st = Status::invalid_argument("dist-run: --query-tokens " + std::to_string(o.query_tokens) + " must be >= 0");
  else if (o.trials < 1)
    st = Status::invalid_argument("dist-run: --trials " + std::to_string(o.trials) + " must be >= 1");
  if (st.ok() && rank == 0) st = check_output_path(o.json_path, "dist-run: --json");
  ATTNKIT_RETURN_IF_ERROR(dist::agree(st, comm));

  std::unique_ptr<model::Model> m;
  std::string path = o.model_path;
  if (path.empty()) st = gguf::find_default_model(&path);
  model::LoadOptions lo;
  lo.threads = o.threads;
  lo.allow_past_context = o.allow_past_context;
  if (st.ok()) st = eval::kv_storage_option(o.kv_dtype, &lo.kv_storage);
  if (st.ok()) st = model::Model::load(path, lo, &m);
  ATTNKIT_RETURN_IF_ERROR(dist::agree(st, comm));

  nlohmann::json out = {{"mechanism", "star"}, {"ranks", ranks}, {"threads_per_rank", o.threads},
                        {"anchor_len", o.anchor}, {"kv_dtype", o.kv_dtype}};
  if (!o.prompt_file.empty()) {
    std::vector<int32_t> prompt;
    ATTNKIT_RETURN_IF_ERROR(dist::agree(read_prompt(*m, o.prompt_file, &prompt), comm));
    TrialOut t;
    ATTNKIT_RETURN_IF_ERROR(run_prompt(m.get(), o, prompt, "", o.max_tokens < 0 ? 32 : o.max_tokens, comm, &t));
    out["prompt_file"] = o.prompt_file;
    out["run"] = t.json;
  } else {
    std::string text;
    std::vector<eval::RetrievalTrial> trials;
    st = eval::kjv_text(o.corpus_cache, &text);
    if (st.ok())
      st = eval::niah(m.get(), text, o.niah_lengths, o.depths, o.trials, o.seed, nullptr, &trials, /*prompts_only=*/true);
    ATTNKIT_RETURN_IF_ERROR(dist::agree(st, comm));
    nlohmann::json rows = nlohmann::json::array();
    int64_t star_ok = 0, exact_ok = 0, agree = 0, first_agree = 0;
    for (size_t i = 0; i < trials.size(); ++i) {
      TrialOut t;
      ATTNKIT_RETURN_IF_ERROR(run_prompt(m.get(), o, trials[i].prompt, trials[i].expected,
                                         o.max_tokens < 0 ? 10 : o.max_tokens, comm, &t));
      if (rank != 0) continue;
      t.json["length"] = trials[i].length;
      t.json["depth"] = trials[i].depth;
      rows.push_back(t.json);
      star_ok += t.star_correct;
      exact_ok += t.exact_correct;
      agree += t.agree;
      first_agree += t.first_agree;
      std::fprintf(stderr, "dist-run niah: %zu/%zu length %lld depth %.2f star %s%s\n", i + 1, trials.size(),
                   static_cast<long long>(trials[i].length), trials[i].depth, t.star_correct ? "correct" : "wrong",
                   o.exact ? (std::string(", exact ") + (t.exact_correct ? "correct" : "wrong") +
                              (t.agree ? ", tokens agree" : ", tokens differ")).c_str()
                           : "");
    }
    const double n = static_cast<double>(trials.size());
    out["niah_lengths"] = o.niah_lengths;
    out["depths"] = o.depths;
    out["seed"] = o.seed;
    out["star_accuracy"] = star_ok / n;
    if (o.exact) {
      out["exact_accuracy"] = exact_ok / n;
      out["token_agreement"] = agree / n;
      out["first_token_agreement"] = first_agree / n;
    }
    out["trials"] = rows;
  }
  if (rank != 0) return Status::ok_status();
  std::cout << out.dump(2) << std::endl;
  if (o.json_path.empty()) return Status::ok_status();
  return write_file_atomic(o.json_path, out.dump(2) + "\n", "dist-run: --json");
}

void add_dist_run(CLI::App& root) {
  CLI::App* cmd = root.add_subcommand(
      "dist-run", "Gemma 3 270M with Star Attention across MPI ranks (run under mpirun): a prompt, or NIAH trials");
  auto o = std::make_shared<DistRunOptions>();
  cmd->add_option("--mechanism,-m", o->mechanism, "star (the scheme with a model form)")->capture_default_str();
  cmd->add_option("--prompt-file", o->prompt_file, "Prompt text (BOS added); its last line is the query");
  cmd->add_option("--niah", o->niah_lengths, "NIAH prompt lengths, e.g. 4096,8192 (the prompts of `eval niah`)")->delimiter(',');
  cmd->add_option("--depths", o->depths, "NIAH needle depths in [0, 1]")->delimiter(',')->capture_default_str();
  cmd->add_option("--trials", o->trials, "NIAH trials per length and depth")->capture_default_str();
  cmd->add_option("--seed", o->seed, "NIAH seed (needles and haystack offsets)")->capture_default_str();
  cmd->add_option("--query-tokens", o->query_tokens, "Query = the prompt's last N tokens (0 = its last line)")->capture_default_str();
  cmd->add_option("--max-tokens", o->max_tokens, "Greedy tokens after the query (default 32; NIAH 10)");
  cmd->add_option("--anchor", o->anchor, "Anchor tokens in front of each block (0 = the whole first block)")->capture_default_str();
  cmd->add_flag("--exact", o->exact, "Rank 0 also runs single-process exact prefill and reports agreement");
  cmd->add_option("--model", o->model_path, "GGUF file (default: the installed Gemma 3 270M)");
  cmd->add_option("--kv-dtype", o->kv_dtype, "KV cache storage f32|bf16|int8")->capture_default_str();
  cmd->add_option("--corpus-cache", o->corpus_cache, "Where the extracted KJV text is cached (NIAH)");
  cmd->add_flag("--allow-past-context", o->allow_past_context, "Run past the model's trained context");
  add_threads_option(cmd, &o->threads, "OpenMP threads per rank");
  cmd->add_option("--json", o->json_path, "Write the result to FILE (rank 0)");
  // The error is printed while MPI is still up: MPI_Finalize in the session's destructor waits for
  // every rank, so no rank exits (and makes mpirun kill the others) before all have printed.
  cmd->callback([o] {
    MpiSession mpi;
    check(dist_run(*o, mpi));
  });
}

}  // namespace
}  // namespace attnkit::cli

ATTNKIT_CLI_COMMAND("dist-run", attnkit::cli::add_dist_run);

#endif  // ATTNKIT_HAVE_MPI
