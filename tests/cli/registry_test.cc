// Mechanism registry: listing order, spec parsing (good and bad) and typed parameter readers.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "attnkit/registry.h"

namespace attnkit {
namespace {

// Two fake mechanisms in a family that sorts after every real one, to check the listing order
// and the parser without depending on any kernel.
Mechanism make_fake(const std::string& name) {
  Mechanism m;
  m.name = name;
  m.family = "zz_test";
  m.description = "test-only mechanism";
  m.params = {{"budget", "1024", "an int"}, {"ratio", "0.5", "a float"}, {"flag", "false", "a bool"}};
  m.prepare = [](const ProblemShape&, const MechanismParams&, std::unique_ptr<PreparedRun>*) {
    return Status::unsupported("fake");
  };
  return m;
}
Mechanism make_fake_b() { return make_fake("zz_fake_b"); }
Mechanism make_fake_a() { return make_fake("aa_fake_a"); }
ATTNKIT_REGISTER_MECHANISM(make_fake_b);
ATTNKIT_REGISTER_MECHANISM(make_fake_a);

TEST(Registry, ListsSortedByFamilyThenName) {
  const auto all = list_mechanisms();
  ASSERT_GE(all.size(), 3u);
  for (size_t i = 1; i < all.size(); ++i) {
    const bool ordered = all[i - 1]->family < all[i]->family ||
                         (all[i - 1]->family == all[i]->family && all[i - 1]->name < all[i]->name);
    EXPECT_TRUE(ordered) << all[i - 1]->name << " before " << all[i]->name;
  }
  // "aa_fake_a" sorts before "exact" by name but after it by family.
  auto pos = [&](const std::string& n) {
    return std::find_if(all.begin(), all.end(), [&](const Mechanism* m) { return m->name == n; }) - all.begin();
  };
  EXPECT_LT(pos("exact"), pos("aa_fake_a"));
  EXPECT_LT(pos("aa_fake_a"), pos("zz_fake_b"));
}

TEST(Registry, FindsByName) {
  ASSERT_NE(find_mechanism("exact"), nullptr);
  EXPECT_EQ(find_mechanism("exact")->family, "exact");
  EXPECT_EQ(find_mechanism("nope"), nullptr);
}

TEST(Registry, ParsesNameAloneWithDefaults) {
  const Mechanism* m = nullptr;
  MechanismParams p;
  ASSERT_TRUE(parse_mechanism_spec("zz_fake_b", &m, &p).ok());
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->name, "zz_fake_b");
  EXPECT_EQ(p.size(), 3u);
  EXPECT_EQ(p.at("budget"), "1024");
  EXPECT_EQ(p.at("ratio"), "0.5");
  EXPECT_EQ(p.at("flag"), "false");
}

TEST(Registry, ParsesKeyValuesOverDefaults) {
  const Mechanism* m = nullptr;
  MechanismParams p;
  ASSERT_TRUE(parse_mechanism_spec("zz_fake_b:budget=64, flag = true", &m, &p).ok());
  EXPECT_EQ(p.at("budget"), "64");
  EXPECT_EQ(p.at("flag"), "true");
  EXPECT_EQ(p.at("ratio"), "0.5");  // untouched default
  int64_t budget = 0;
  bool flag = false;
  double ratio = 0;
  ASSERT_TRUE(param_int(p, "budget", &budget).ok());
  ASSERT_TRUE(param_bool(p, "flag", &flag).ok());
  ASSERT_TRUE(param_float(p, "ratio", &ratio).ok());
  EXPECT_EQ(budget, 64);
  EXPECT_TRUE(flag);
  EXPECT_DOUBLE_EQ(ratio, 0.5);
  // An empty list after ':' means no overrides.
  ASSERT_TRUE(parse_mechanism_spec("zz_fake_b:", &m, &p).ok());
  EXPECT_EQ(p.at("budget"), "1024");
}

void expect_error(const std::string& spec, const std::vector<std::string>& fragments) {
  const Mechanism* m = reinterpret_cast<const Mechanism*>(1);
  MechanismParams p;
  Status s = parse_mechanism_spec(spec, &m, &p);
  ASSERT_FALSE(s.ok()) << spec;
  EXPECT_EQ(m, nullptr) << spec;
  for (const auto& f : fragments) EXPECT_NE(s.message().find(f), std::string::npos) << s.message() << " lacks " << f;
}

TEST(Registry, RejectsBadSpecsWithUsefulMessages) {
  expect_error("nope:budget=1", {"'nope'", "exact", "zz_fake_b"});  // lists registered names
  expect_error("", {"no name"});
  expect_error(":budget=1", {"no name"});
  expect_error("zz_fake_b:bugdet=1", {"'bugdet'", "budget", "flag", "ratio"});  // unknown key + valid keys
  expect_error("zz_fake_b:budget", {"'budget'", "key=value"});
  expect_error("zz_fake_b:budget=", {"'budget'", "empty"});
  expect_error("zz_fake_b:budget=1,budget=2", {"'budget'", "twice"});
  expect_error("zz_fake_b:budget=1,", {"key=value"});  // trailing comma = empty item
}

TEST(Registry, TypedReadersRejectBadValues) {
  MechanismParams p = {{"i", "12x"}, {"f", "nanx"}, {"b", "maybe"}, {"big", "99999999999999999999"}, {"inf", "inf"}};
  int64_t i = 0;
  double f = 0;
  bool b = false;
  Status s = param_int(p, "i", &i);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("i=12x"), std::string::npos) << s.message();
  EXPECT_FALSE(param_int(p, "big", &i).ok());
  s = param_float(p, "f", &f);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("f=nanx"), std::string::npos) << s.message();
  EXPECT_FALSE(param_float(p, "inf", &f).ok());
  s = param_bool(p, "b", &b);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("b=maybe"), std::string::npos) << s.message();
  s = param_int(p, "missing", &i);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("missing"), std::string::npos);
  // Good values of each kind.
  MechanismParams good = {{"i", "-7"}, {"f", "1e-3"}, {"b", "0"}};
  ASSERT_TRUE(param_int(good, "i", &i).ok());
  ASSERT_TRUE(param_float(good, "f", &f).ok());
  b = true;
  ASSERT_TRUE(param_bool(good, "b", &b).ok());
  EXPECT_EQ(i, -7);
  EXPECT_DOUBLE_EQ(f, 1e-3);
  EXPECT_FALSE(b);
}

TEST(ExactMechanism, RejectsBadParameterValues) {
  const Mechanism* m = nullptr;
  MechanismParams p;
  ProblemShape shape;
  shape.seq_q = shape.seq_kv = 8;
  shape.heads_q = 2;
  shape.heads_kv = 1;
  shape.head_dim = 8;
  struct Case {
    const char* spec;
    const char* fragment;
  } cases[] = {
      {"exact:normalization=softplusx", "normalization=softplusx"},
      {"exact:path=gpu", "path=gpu"},
      {"exact:window_left=-5", "window_left=-5"},
      {"exact:sinks=-1", "sinks=-1"},
      {"exact:softcap=abc", "softcap=abc"},
      {"exact:causal_align=middle", "causal_align=middle"},
      {"exact:lse=true,normalization=sigmoid", "lse=true"},
  };
  for (const Case& c : cases) {
    ASSERT_TRUE(parse_mechanism_spec(c.spec, &m, &p).ok()) << c.spec;
    std::unique_ptr<PreparedRun> run;
    Status s = m->prepare(shape, p, &run);
    ASSERT_FALSE(s.ok()) << c.spec;
    EXPECT_NE(s.message().find(c.fragment), std::string::npos) << s.message();
    EXPECT_EQ(run, nullptr);
  }
  // Bad shapes are named too, before anything is allocated.
  ASSERT_TRUE(parse_mechanism_spec("exact", &m, &p).ok());
  ProblemShape bad = shape;
  bad.heads_q = 3;
  bad.heads_kv = 2;
  std::unique_ptr<PreparedRun> run;
  Status s = m->prepare(bad, p, &run);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("heads_q 3"), std::string::npos) << s.message();
  bad = shape;
  bad.head_dim = 0;
  s = m->prepare(bad, p, &run);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("head_dim 0"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace attnkit
