// Every linear mechanism is registered, prepares on a small prefill and decode shape, runs, and
// reports positive FLOPs/bytes; specs with parameters parse, bad ones name the parameter.
#include <gtest/gtest.h>

#include <set>

#include "attnkit/linear.h"
#include "attnkit/registry.h"

namespace attnkit {
namespace {

const std::vector<std::string> kNames = {"linear",     "performer",   "cosformer",  "based",      "hedgehog",
                                         "taylorshift", "cottention", "lln",        "retnet",     "lightning",
                                         "transnormer", "simple_gla", "gla",        "hgrn2",      "deltanet",
                                         "gated_deltanet", "aaren",   "infini_attention", "titans"};

TEST(LinearRegistry, AllMechanismsRegisteredInFamilyLinear) {
  std::set<std::string> linear;
  for (const Mechanism* m : list_mechanisms())
    if (m->family == "linear") linear.insert(m->name);
  for (const std::string& n : kNames) EXPECT_TRUE(linear.count(n)) << n;
}

TEST(LinearRegistry, PrepareAndRunPrefillAndDecode) {
  for (const std::string& n : kNames) {
    for (bool decode : {false, true}) {
      const Mechanism* m = nullptr;
      MechanismParams mp;
      ASSERT_TRUE(parse_mechanism_spec(n, &m, &mp).ok()) << n;
      ProblemShape s;
      s.batch = 1;
      s.seq_kv = 80;
      s.seq_q = decode ? 1 : 80;
      s.heads_q = 2;
      s.heads_kv = n == "aaren" || n == "infini_attention" || n == "titans" ? 2 : 1;
      s.head_dim = 32;
      std::unique_ptr<PreparedRun> run;
      const Status st = m->prepare(s, mp, &run);
      ASSERT_TRUE(st.ok()) << n << ": " << st.message();
      const Status r = run->run();
      EXPECT_TRUE(r.ok()) << n << ": " << r.message();
      EXPECT_GT(run->flops(), 0) << n;
      EXPECT_GT(run->bytes(), 0) << n;
    }
  }
}

TEST(LinearRegistry, SpecParametersAndErrors) {
  const Mechanism* m = nullptr;
  MechanismParams mp;
  ASSERT_TRUE(parse_mechanism_spec("performer:features=256", &m, &mp).ok());
  EXPECT_EQ(mp.at("features"), "256");
  ProblemShape s;
  s.seq_q = s.seq_kv = 64;
  s.heads_q = 2;
  s.heads_kv = 2;
  s.head_dim = 16;
  std::unique_ptr<PreparedRun> run;
  ASSERT_TRUE(m->prepare(s, mp, &run).ok());
  // Chunked FLOPs of 256 features over 64 tokens in one chunk, 2 heads, dv 16 + 1.
  EXPECT_DOUBLE_EQ(run->flops(), linear_chunked_flops(1, 64, 2, 256, 17, 64, false));
  ASSERT_TRUE(parse_mechanism_spec("gla:form=sideways", &m, &mp).ok());
  const Status st = m->prepare(s, mp, &run);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("form=sideways"), std::string::npos) << st.message();
  EXPECT_FALSE(parse_mechanism_spec("gla:nonsense=1", &m, &mp).ok());
}

TEST(LinearFlops, ChunkedFormulaCountsEveryChunk) {
  // Two full chunks of 64 and one of 2: 2 n^2 (F + D) + 4 n F D each.
  const double F = 8, D = 5;
  auto chunk = [&](double n) { return 2 * n * n * (F + D) + 4 * n * F * D; };
  EXPECT_DOUBLE_EQ(linear_chunked_flops(1, 130, 1, 8, 5, 64, false), 2 * chunk(64) + chunk(2));
  EXPECT_DOUBLE_EQ(linear_chunked_flops(3, 130, 2, 8, 5, 64, false), 6 * (2 * chunk(64) + chunk(2)));
  EXPECT_GT(linear_chunked_flops(1, 130, 1, 8, 5, 64, true), linear_chunked_flops(1, 130, 1, 8, 5, 64, false));
}

}  // namespace
}  // namespace attnkit
