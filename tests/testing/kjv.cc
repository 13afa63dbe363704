#include "testing/kjv.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "attnkit/eval.h"

namespace attnkit::testing {

std::vector<std::string> kjv_lines() {
  std::string text;
  const Status s = eval::kjv_text("", &text);
  EXPECT_TRUE(s.ok()) << "the KJV text (Debian bible-kjv) is needed: " << s.message();
  std::vector<std::string> lines;
  for (size_t b = 0; b < text.size();) {
    size_t e = text.find('\n', b);
    if (e == std::string::npos) e = text.size();
    lines.push_back(text.substr(b, e - b));
    b = e + 1;
  }
  return lines;
}

std::vector<int32_t> kjv_prompt_ids(const Tokenizer& tok, const std::vector<std::string>& lines, size_t first_verse,
                                    int64_t n) {
  std::string joined;
  for (size_t i = first_verse; i < lines.size() && static_cast<int64_t>(i - first_verse) < n; ++i)
    joined += (i > first_verse ? "\n" : "") + lines[i];
  std::vector<int32_t> ids = tok.encode(joined);
  if (static_cast<int64_t>(ids.size()) > n - 1) ids.resize(static_cast<size_t>(std::max<int64_t>(n - 1, 0)));
  ids.insert(ids.begin(), tok.bos_id());
  return ids;
}

}  // namespace attnkit::testing
