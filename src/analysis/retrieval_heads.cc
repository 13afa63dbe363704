// Retrieval, induction and echo heads, and the head maps the kv policies read.
//
// Retrieval score (Wu, Wang, Xiao, Peng, Fu 2024, "Retrieval Head Mechanistically Explains
// Long-Context Factuality"): while the model greedily decodes the answer to a needle-in-a-haystack
// prompt, a head "copies" at a step when its top-1 attended position lies inside the needle and the
// token generated at that step equals the token at that position; its score on a prompt is the
// fraction of needle tokens it copied, averaged over the prompts the model answers (their ROUGE
// recall > 50%). Heads above 0.1 are retrieval heads (under 5% of heads in the paper's models).
// Induction and echo scores (Tang et al. 2024, "RazorAttention"): on a random token segment repeated
// several times, an induction head attends from a token to the token after its previous copy
// (A[i, i - S + 1]), an echo head to the previous copy itself (A[i, i - S]).
#include <algorithm>
#include <cmath>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "attnkit/analysis.h"
#include "attnkit/eval.h"

namespace attnkit::analysis {

Status retrieval_scores(model::Model* m, const std::vector<NeedlePrompt>& prompts, const RetrievalOptions& o,
                        RetrievalReport* out) {
  if (m == nullptr || out == nullptr) return Status::invalid_argument("retrieval_scores: model or out is null");
  if (prompts.empty()) return Status::invalid_argument("retrieval_scores: no prompts");
  if (o.max_new_tokens < 1)
    return Status::invalid_argument("retrieval_scores: max_new_tokens " + std::to_string(o.max_new_tokens) + " must be >= 1");
  const model::GemmaConfig& c = m->config();
  const int64_t L = c.n_layer, H = c.n_head;
  RetrievalReport r = *out;
  r.n_layer = L;
  r.n_head = H;
  r.n_head_kv = c.n_head_kv;
  r.options = o;
  r.score.assign(static_cast<size_t>(L * H), 0.0);
  r.prompts = static_cast<int64_t>(prompts.size());
  r.counted = 0;
  r.answer_recall = 0;
  std::vector<int64_t> top(static_cast<size_t>(L * H), -1);
  std::vector<float> logits(static_cast<size_t>(c.n_vocab));
  for (size_t pi = 0; pi < prompts.size(); ++pi) {
    const NeedlePrompt& p = prompts[pi];
    const int64_t n = static_cast<int64_t>(p.tokens.size());
    if (p.needle_begin < 0 || p.needle_end <= p.needle_begin || p.needle_end > n)
      return Status::invalid_argument("retrieval_scores: prompt " + std::to_string(pi) + " has needle span [" +
                                      std::to_string(p.needle_begin) + ", " + std::to_string(p.needle_end) +
                                      ") outside its " + std::to_string(n) + " tokens");
    const int64_t needle = p.needle_end - p.needle_begin;
    m->reset();
    ATTNKIT_RETURN_IF_ERROR(m->reserve(n + o.max_new_tokens));
    auto tap_at = [&](int64_t pos) {
      model::Taps t;
      t.prob_positions = {pos};
      t.on_layer = [&top, H](const model::TapData& td) {
        if (td.probs == nullptr) return;
        for (int64_t h = 0; h < H; ++h) {
          const float* row = td.probs + h * td.n_kv;
          // Probabilities index cache slots; kv_positions maps a slot to its position.
          const int64_t slot = std::max_element(row, row + td.n_kv) - row;
          top[static_cast<size_t>(td.layer * H + h)] = td.kv_positions != nullptr ? td.kv_positions[slot] : slot;
        }
      };
      m->set_taps(std::move(t));
    };
    tap_at(n - 1);
    model::ForwardOutputs fo;
    fo.maybe_last_logits = logits.data();
    Status st = m->forward(p.tokens.data(), n, fo);
    std::vector<double> hits(static_cast<size_t>(L * H), 0.0);
    std::vector<std::vector<char>> credited(static_cast<size_t>(L * H), std::vector<char>(static_cast<size_t>(needle), 0));
    std::vector<int32_t> generated;
    for (int64_t step = 0; st.ok() && step < o.max_new_tokens; ++step) {
      const int32_t tok = model::sample_token(logits.data(), c.n_vocab, model::SampleOptions{}, nullptr);
      for (int64_t i = 0; i < L * H; ++i) {
        const int64_t a = top[static_cast<size_t>(i)];
        if (a >= p.needle_begin && a < p.needle_end && p.tokens[static_cast<size_t>(a)] == tok &&
            !credited[static_cast<size_t>(i)][static_cast<size_t>(a - p.needle_begin)]) {
          credited[static_cast<size_t>(i)][static_cast<size_t>(a - p.needle_begin)] = 1;
          hits[static_cast<size_t>(i)] += 1.0 / static_cast<double>(needle);
        }
      }
      generated.push_back(tok);
      if (step + 1 == o.max_new_tokens) break;
      tap_at(n + step);
      st = m->decode(tok, logits.data());
    }
    m->clear_taps();
    ATTNKIT_RETURN_IF_ERROR(st);
    // Recall: needle tokens found among the generated ones (each generated token used once).
    std::vector<int32_t> pool = generated;
    int64_t found = 0;
    for (int64_t j = p.needle_begin; j < p.needle_end; ++j) {
      auto it = std::find(pool.begin(), pool.end(), p.tokens[static_cast<size_t>(j)]);
      if (it != pool.end()) {
        ++found;
        pool.erase(it);
      }
    }
    const double recall = static_cast<double>(found) / static_cast<double>(needle);
    r.answer_recall += recall / static_cast<double>(prompts.size());
    if (recall >= o.min_recall) {
      r.counted++;
      for (size_t i = 0; i < hits.size(); ++i) r.score[i] += hits[i];
    }
  }
  if (r.counted > 0)
    for (double& s : r.score) s /= static_cast<double>(r.counted);
  *out = std::move(r);
  return Status::ok_status();
}

Status needle_prompts(const Tokenizer& tokenizer, const std::string& haystack_text, const std::vector<int64_t>& lengths,
                      const std::vector<double>& depths, uint64_t seed, std::vector<NeedlePrompt>* out) {
  if (out == nullptr) return Status::invalid_argument("needle_prompts: out is null");
  if (lengths.empty() || depths.empty()) return Status::invalid_argument("needle_prompts: no lengths or no depths");
  std::mt19937_64 rng(seed);
  for (int64_t len : lengths)
    for (double d : depths) {
      const int64_t number = 1000000 + static_cast<int64_t>(rng() % 9000000);
      NeedlePrompt p;
      ATTNKIT_RETURN_IF_ERROR(eval::niah_prompt(tokenizer, haystack_text, len, number, d, rng(), &p.tokens));
      // Gemma splits digits, so the number's tokens appear unchanged inside the prompt.
      const std::vector<int32_t> digits = tokenizer.encode(std::to_string(number));
      auto it = std::search(p.tokens.begin(), p.tokens.end(), digits.begin(), digits.end());
      if (it == p.tokens.end())
        return Status::internal("needle_prompts: the needle's number " + std::to_string(number) + " is not in the tokens of the " +
                                std::to_string(len) + "-token prompt");
      p.needle_begin = it - p.tokens.begin();
      p.needle_end = p.needle_begin + static_cast<int64_t>(digits.size());
      p.length = len;
      p.depth = d;
      out->push_back(std::move(p));
    }
  return Status::ok_status();
}

std::vector<int32_t> repeated_random_tokens(int64_t segment, int64_t repeats, uint64_t seed, int32_t lo, int32_t hi) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> pick(lo, hi - 1);
  std::vector<int32_t> seg(static_cast<size_t>(segment));
  for (auto& t : seg) t = pick(rng);
  std::vector<int32_t> out;
  for (int64_t r = 0; r < repeats; ++r) out.insert(out.end(), seg.begin(), seg.end());
  return out;
}

Status induction_echo_from_blocks(const BlockSource& source, int64_t n_layer, int64_t n_head, int64_t segment,
                                  int64_t repeats, std::vector<double>* induction, std::vector<double>* echo) {
  if (segment < 2 || repeats < 2)
    return Status::invalid_argument("induction_echo: segment " + std::to_string(segment) + " and repeats " +
                                    std::to_string(repeats) + " must be >= 2");
  std::vector<double> ind(static_cast<size_t>(n_layer * n_head), 0.0), ech(ind.size(), 0.0);
  std::vector<int64_t> rows(ind.size(), 0);
  // The sequence is one BOS token followed by the repeats: the rows scored are those whose previous
  // copy lies in the repeated part (position - segment >= 1).
  ATTNKIT_RETURN_IF_ERROR(source([&](const AttentionBlock& b) {
    for (int64_t h = 0; h < b.n_head; ++h)
      for (int64_t r = 0; r < b.n; ++r) {
        const int64_t p = b.pos0 + r;
        if (p - segment < 1) continue;
        const float* row = b.probs + (h * b.n + r) * b.n_kv;
        const size_t i = static_cast<size_t>(b.layer * n_head + h);
        ind[i] += row[p - segment + 1];
        ech[i] += row[p - segment];
        rows[i]++;
      }
  }));
  for (size_t i = 0; i < ind.size(); ++i)
    if (rows[i] > 0) {
      ind[i] /= static_cast<double>(rows[i]);
      ech[i] /= static_cast<double>(rows[i]);
    }
  *induction = std::move(ind);
  *echo = std::move(ech);
  return Status::ok_status();
}

Status induction_echo(model::Model* m, int64_t segment, int64_t repeats, uint64_t seed, RetrievalReport* out) {
  if (m == nullptr || out == nullptr) return Status::invalid_argument("induction_echo: model or out is null");
  const model::GemmaConfig& c = m->config();
  // Ordinary vocabulary ids (the first thousands hold control, byte and whitespace pieces).
  std::vector<int32_t> tokens = {2};
  const std::vector<int32_t> rep = repeated_random_tokens(segment, repeats, seed, 1000, static_cast<int32_t>(std::min<int64_t>(c.n_vocab, 200000)));
  tokens.insert(tokens.end(), rep.begin(), rep.end());
  out->n_layer = c.n_layer;
  out->n_head = c.n_head;
  out->n_head_kv = c.n_head_kv;
  out->copy_segment = segment;
  out->copy_repeats = repeats;
  return induction_echo_from_blocks(model_source(m, tokens), c.n_layer, c.n_head, segment, repeats, &out->induction,
                                    &out->echo);
}

namespace {

std::vector<std::vector<double>> kv_scores(int64_t n_layer, int64_t n_head, int64_t n_head_kv, const std::vector<double>& q) {
  const int64_t group = n_head / n_head_kv;
  std::vector<std::vector<double>> s(static_cast<size_t>(n_layer), std::vector<double>(static_cast<size_t>(n_head_kv), 0.0));
  for (int64_t l = 0; l < n_layer; ++l)
    for (int64_t h = 0; h < n_head; ++h) {
      double& d = s[static_cast<size_t>(l)][static_cast<size_t>(h / group)];
      d = std::max(d, q[static_cast<size_t>(l * n_head + h)]);
    }
  return s;
}

Status check_scores(int64_t n_layer, int64_t n_head, int64_t n_head_kv, const std::vector<double>& q, const std::string& what) {
  if (n_layer < 1 || n_head < 1 || n_head_kv < 1 || n_head % n_head_kv != 0)
    return Status::invalid_argument("head map: " + std::to_string(n_layer) + " layers, " + std::to_string(n_head) + "/" +
                                    std::to_string(n_head_kv) + " heads is not a valid shape");
  if (static_cast<int64_t>(q.size()) != n_layer * n_head)
    return Status::invalid_argument("head map: " + what + " has " + std::to_string(q.size()) + " scores, expected " +
                                    std::to_string(n_layer * n_head));
  return Status::ok_status();
}

Status write_json_atomic(const std::string& path, const nlohmann::json& j) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp);
    if (!f) return Status::io_error("head map: cannot write " + path);
    f << j.dump(1) << "\n";
    if (!f) return Status::io_error("head map: cannot write " + path);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return Status::io_error("head map: cannot rename " + tmp + " to " + path);
  return Status::ok_status();
}

}  // namespace

Status write_head_map_scores(const std::string& path, int64_t n_layer, int64_t n_head, int64_t n_head_kv,
                             const std::vector<double>& q, const std::string& what) {
  ATTNKIT_RETURN_IF_ERROR(check_scores(n_layer, n_head, n_head_kv, q, what));
  nlohmann::json j = {{"format", "attnkit-head-map"}, {"n_layers", n_layer}, {"kv_heads", n_head_kv},
                      {"scores", kv_scores(n_layer, n_head, n_head_kv, q)}, {"what", what},
                      {"query_heads", n_head}, {"query_head_scores", q}};
  return write_json_atomic(path, j);
}

Status write_razor_head_map(const std::string& path, int64_t n_layer, int64_t n_head, int64_t n_head_kv,
                            const std::vector<double>& induction, const std::vector<double>& echo, double induction_ratio,
                            double echo_ratio) {
  ATTNKIT_RETURN_IF_ERROR(check_scores(n_layer, n_head, n_head_kv, induction, "induction"));
  ATTNKIT_RETURN_IF_ERROR(check_scores(n_layer, n_head, n_head_kv, echo, "echo"));
  if (!(induction_ratio >= 0 && induction_ratio <= 1) || !(echo_ratio >= 0 && echo_ratio <= 1))
    return Status::invalid_argument("razor head map: induction_ratio " + std::to_string(induction_ratio) + " and echo_ratio " +
                                    std::to_string(echo_ratio) + " must be in [0, 1]");
  std::vector<std::pair<int64_t, int64_t>> full;
  for (const auto& [scores, ratio] : {std::make_pair(&induction, induction_ratio), std::make_pair(&echo, echo_ratio)}) {
    const auto s = kv_scores(n_layer, n_head, n_head_kv, *scores);
    std::vector<std::pair<double, std::pair<int64_t, int64_t>>> all;
    for (int64_t l = 0; l < n_layer; ++l)
      for (int64_t g = 0; g < n_head_kv; ++g) all.push_back({s[static_cast<size_t>(l)][static_cast<size_t>(g)], {l, g}});
    std::stable_sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    // At least one head per rule when the ratio is positive (1% of 18 heads rounds to none).
    size_t keep = static_cast<size_t>(std::ceil(ratio * static_cast<double>(all.size())));
    for (size_t i = 0; i < keep && i < all.size(); ++i)
      if (std::find(full.begin(), full.end(), all[i].second) == full.end()) full.push_back(all[i].second);
  }
  std::sort(full.begin(), full.end());
  nlohmann::json jf = nlohmann::json::array();
  for (const auto& [l, g] : full) jf.push_back({l, g});
  nlohmann::json j = {{"format", "attnkit-head-map"}, {"n_layers", n_layer}, {"kv_heads", n_head_kv}, {"full", jf},
                      {"what", "RazorAttention: top induction and echo heads"},
                      {"induction_ratio", induction_ratio}, {"echo_ratio", echo_ratio}};
  return write_json_atomic(path, j);
}

}  // namespace attnkit::analysis
