// Pieces of the calibration evaluation (`attnkit analyze calibration-eval`): confidence intervals
// and the multiple-choice cloze built from the text itself.
//
// Intervals: Wilson's score interval for accuracies (Wilson 1927; it keeps its coverage near 0
// and 1, where the normal approximation collapses to a point), and the percentile bootstrap
// (Efron 1979) for means of per-unit scores such as a window's mean NLL, and for paired
// differences between two backends on the same units.
//
// Cloze: the next word of a KJV passage against three distractors drawn from the words of the
// text by frequency. Only the four candidates' logits at one position matter (they share the
// softmax normalizer), so one forward pass over a passage scores all of its items.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <random>

#include "attnkit/analysis.h"
#include "attnkit/tokenizer.h"

namespace attnkit::analysis {

void bootstrap_mean_interval(const std::vector<double>& x, int64_t resamples, uint64_t seed, double* lo, double* hi) {
  if (x.empty() || resamples < 1) {
    *lo = *hi = std::nan("");
    return;
  }
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<size_t> pick(0, x.size() - 1);
  std::vector<double> means(static_cast<size_t>(resamples));
  for (double& m : means) {
    double s = 0;
    for (size_t i = 0; i < x.size(); ++i) s += x[pick(rng)];
    m = s / static_cast<double>(x.size());
  }
  std::sort(means.begin(), means.end());
  const auto at = [&](double q) {
    const size_t i = static_cast<size_t>(std::clamp(q * static_cast<double>(resamples - 1), 0.0, static_cast<double>(resamples - 1)));
    return means[i];
  };
  *lo = at(0.025);
  *hi = at(0.975);
}

namespace {

// A token that is a whole word on its own: a leading space, then letters only (at least two, so
// "a" and "I" are left out with the punctuation).
bool word_token(const Tokenizer& tok, int32_t id) {
  const std::string p = tok.token_to_piece(id);
  if (p.size() < 3 || p[0] != ' ') return false;
  return std::all_of(p.begin() + 1, p.end(), [](char c) { return std::isalpha(static_cast<unsigned char>(c)) != 0; });
}

}  // namespace

Status make_cloze_items(const Tokenizer& tok, const std::vector<int32_t>& tokens, const std::vector<int32_t>& pool,
                        int64_t min_context, int64_t stride, uint64_t seed, std::vector<ClozeItem>* out) {
  if (out == nullptr) return Status::invalid_argument("make_cloze_items: out is null");
  if (min_context < 1) return Status::invalid_argument("make_cloze_items: min_context " + std::to_string(min_context) + " must be >= 1");
  if (stride < 1) return Status::invalid_argument("make_cloze_items: stride " + std::to_string(stride) + " must be >= 1");
  std::vector<int32_t> words;  // every occurrence, so that draws follow the words' frequencies
  for (int32_t id : pool)
    if (word_token(tok, id)) words.push_back(id);
  std::vector<int32_t> distinct = words;
  std::sort(distinct.begin(), distinct.end());
  if (std::unique(distinct.begin(), distinct.end()) - distinct.begin() < 4)
    return Status::invalid_argument("make_cloze_items: the pool has fewer than 4 distinct word tokens");
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<size_t> pick(0, words.size() - 1);
  out->clear();
  int64_t last = -stride;
  for (int64_t p = min_context; p + 1 < static_cast<int64_t>(tokens.size()); ++p) {
    const int32_t next = tokens[static_cast<size_t>(p + 1)];
    if (p - last < stride || !word_token(tok, next)) continue;
    ClozeItem it;
    it.position = p;
    it.choices[0] = next;
    for (int c = 1; c < 4;) {
      const int32_t d = words[pick(rng)];
      if (std::find(it.choices, it.choices + c, d) == it.choices + c) it.choices[c++] = d;
    }
    out->push_back(it);
    last = p;
  }
  return Status::ok_status();
}

Status score_cloze(model::Model* m, const std::vector<int32_t>& tokens, const std::vector<ClozeItem>& items,
                   std::vector<double>* correct) {
  if (m == nullptr || correct == nullptr) return Status::invalid_argument("score_cloze: model or correct is null");
  const int64_t n = static_cast<int64_t>(tokens.size());
  for (const ClozeItem& it : items)
    if (it.position < 0 || it.position >= n)
      return Status::invalid_argument("score_cloze: item position " + std::to_string(it.position) + " is outside the " +
                                      std::to_string(n) + " tokens");
  const model::GemmaConfig& c = m->config();
  std::vector<float> hidden(static_cast<size_t>(n * c.n_embd));
  const auto hold = m->lock();
  m->reset();
  model::ForwardOutputs fo;
  fo.maybe_hidden = hidden.data();
  ATTNKIT_RETURN_IF_ERROR(m->forward(tokens.data(), n, fo));
  // Logits of the item rows only, a slice at a time ([rows, n_vocab] floats is 1 MiB per row).
  constexpr size_t kSlice = 32;
  std::vector<float> sel(kSlice * static_cast<size_t>(c.n_embd)), logits(kSlice * static_cast<size_t>(c.n_vocab));
  for (size_t i0 = 0; i0 < items.size(); i0 += kSlice) {
    const size_t rows = std::min(kSlice, items.size() - i0);
    for (size_t r = 0; r < rows; ++r)
      std::copy_n(hidden.data() + items[i0 + r].position * c.n_embd, c.n_embd, sel.data() + r * static_cast<size_t>(c.n_embd));
    ATTNKIT_RETURN_IF_ERROR(m->logits_from_hidden(sel.data(), static_cast<int64_t>(rows), logits.data()));
    for (size_t r = 0; r < rows; ++r) {
      const float* lg = logits.data() + r * static_cast<size_t>(c.n_vocab);
      const ClozeItem& it = items[i0 + r];
      const float truth = lg[it.choices[0]];
      correct->push_back(truth > lg[it.choices[1]] && truth > lg[it.choices[2]] && truth > lg[it.choices[3]] ? 1.0 : 0.0);
    }
  }
  return Status::ok_status();
}

}  // namespace attnkit::analysis
