// The head maps `attnkit analyze retrieval-heads` writes are read by the kv layer's head-wise
// policies: with duo:map=head_map_retrieval.json the global layers holding a retrieval head keep
// their whole cache and the others keep sinks + recent tokens; razor:map=head_map_razor.json does
// the same with RazorAttention's induction/echo rule. Checked on the real model through the
// positions each layer's cache holds after a prefill.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "attnkit/analysis.h"
#include "attnkit/eval.h"
#include "attnkit/gguf.h"
#include "attnkit/model.h"
#include "testing/cli_runner.h"

namespace attnkit::analysis {
namespace {

nlohmann::json read_json(const std::filesystem::path& p) {
  std::ifstream f(p);
  EXPECT_TRUE(f) << p;
  return f ? nlohmann::json::parse(f) : nlohmann::json();
}

// Positions a compressed layer keeps after prefilling n tokens: the first `sinks` and the last
// `window`.
std::vector<int64_t> sinks_and_recent(int64_t n, int64_t sinks, int64_t window) {
  std::vector<int64_t> out(static_cast<size_t>(sinks));
  std::iota(out.begin(), out.end(), 0);
  for (int64_t p = n - window; p < n; ++p) out.push_back(p);
  return out;
}

TEST(AnalysisHeadMap, RetrievalHeadsMapDrivesDuoAndRazorCaches) {
  const auto dir = std::filesystem::temp_directory_path() / ("attnkit_head_map_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  // Short prompts keep the run to seconds; the model answers both at 600 tokens.
  const testing::CommandResult r = testing::run_cli("analyze retrieval-heads --length 600 --depths 0.3,0.7 --segment 64 "
                                                    "--repeats 3 --no-plot --out " + dir.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json j = read_json(dir / "retrieval_heads.json");
  const nlohmann::json retrieval = read_json(dir / "head_map_retrieval.json");
  const nlohmann::json razor = read_json(dir / "head_map_razor.json");
  ASSERT_EQ(j["counted"].get<int64_t>(), 2) << "both prompts answered";

  std::string path;
  ASSERT_TRUE(gguf::find_default_model(&path).ok()) << "Gemma 3 270M GGUF not installed";
  std::unique_ptr<model::Model> m;
  model::LoadOptions lo;
  lo.threads = 2;
  ASSERT_TRUE(model::Model::load(path, lo, &m).ok());
  const model::GemmaConfig& c = m->config();
  const int64_t L = c.n_layer, H = c.n_head, group = c.n_head / c.n_head_kv;

  // The retrieval map's kv-head scores are the maximum of the query heads' scores in the JSON.
  const std::vector<double> q = j["score"].get<std::vector<double>>();
  ASSERT_EQ(static_cast<int64_t>(q.size()), L * H);
  std::vector<bool> duo_full(static_cast<size_t>(L), false);
  for (int64_t l = 0; l < L; ++l)
    for (int64_t g = 0; g < c.n_head_kv; ++g) {
      double s = 0;
      for (int64_t h = g * group; h < (g + 1) * group; ++h) s = std::max(s, q[static_cast<size_t>(l * H + h)]);
      EXPECT_DOUBLE_EQ(retrieval["scores"][static_cast<size_t>(l)][static_cast<size_t>(g)].get<double>(), s);
      duo_full[static_cast<size_t>(l)] = duo_full[static_cast<size_t>(l)] || s > 0.1;
    }
  std::vector<bool> razor_full(static_cast<size_t>(L), false);
  for (const auto& lh : razor["full"]) razor_full[lh[0].get<size_t>()] = true;

  std::string text;
  ASSERT_TRUE(eval::kjv_text("", &text).ok());
  std::vector<int32_t> ids;
  ASSERT_TRUE(text_tokens(m->tokenizer(), text, 3000, 600, &ids).ok());
  auto check = [&](const std::string& spec, const std::vector<bool>& full, int64_t sinks, int64_t window) {
    SCOPED_TRACE(spec);
    ASSERT_TRUE(m->set_kv_policy(spec).ok());
    ASSERT_TRUE(m->forward(ids.data(), static_cast<int64_t>(ids.size()), model::ForwardOutputs{}).ok());
    std::vector<int64_t> all(ids.size());
    std::iota(all.begin(), all.end(), 0);
    int64_t kept_full = 0, compressed = 0;
    for (int64_t l = 0; l < L; ++l) {
      if (!c.is_global(l)) continue;  // the policies act on the global layers (layers=global)
      std::vector<int64_t> pos;
      ASSERT_TRUE(m->kv_positions(l, &pos).ok());
      if (full[static_cast<size_t>(l)]) {
        EXPECT_EQ(pos, all) << "layer " << l << " holds a retrieval head: whole cache";
        ++kept_full;
      } else {
        EXPECT_EQ(pos, sinks_and_recent(static_cast<int64_t>(ids.size()), sinks, window)) << "layer " << l;
        ++compressed;
      }
    }
    // The map must tell the layers apart, or this test would not see it being read.
    EXPECT_GT(kept_full, 0);
    EXPECT_GT(compressed, 0);
  };
  check("duo:map=" + (dir / "head_map_retrieval.json").string() + ",threshold=0.1,sinks=4,window=60,slack=0", duo_full, 4, 60);
  check("razor:map=" + (dir / "head_map_razor.json").string() + ",sinks=4,window=60,slack=0", razor_full, 4, 60);
  m->set_kv_policy(std::shared_ptr<kv::KvPolicy>());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace attnkit::analysis
