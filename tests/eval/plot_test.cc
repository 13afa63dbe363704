// The plotting path (attnkit/plot.h): real matplotlib charts from the C++ API. SVG output keeps
// its text, so the tests read the axis labels, tick labels, legend and colorbar back from it.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "attnkit/plot.h"

namespace attnkit::plot {
namespace {

namespace fs = std::filesystem;

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream os;
  os << f.rdbuf();
  return os.str();
}

class PlotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("attnkit_plot_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  // Files the atomic write may have left behind (it must leave none).
  int leftovers() const {
    int n = 0;
    for (const auto& e : fs::directory_iterator(dir_))
      if (e.path().filename().string().rfind(".attnkit-plot-", 0) == 0) ++n;
    return n;
  }
  Heatmap niah() const {
    Heatmap h;
    h.values = {{1.0, 0.5, 0.0}, {0.25, NAN, 1.0}};
    h.row_labels = {"0%", "100%"};
    h.col_labels = {"1024", "2048", "4096"};
    h.title = "Needle in a haystack";
    h.x_label = "context length (tokens)";
    h.y_label = "needle depth";
    h.colorbar_label = "retrieval accuracy";
    return h;
  }
  fs::path dir_;
};

TEST_F(PlotTest, HeatmapPngIsAPngOfTheRightShape) {
  const fs::path path = dir_ / "niah.png";
  const Status s = heatmap(niah(), path.string());
  ASSERT_TRUE(s.ok()) << s.message();
  const std::string png = read_file(path);
  ASSERT_GT(png.size(), 1000u);
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_EQ(png.substr(12, 4), "IHDR");
  const auto be32 = [&](size_t at) {
    return (static_cast<uint32_t>(static_cast<unsigned char>(png[at])) << 24) |
           (static_cast<uint32_t>(static_cast<unsigned char>(png[at + 1])) << 16) |
           (static_cast<uint32_t>(static_cast<unsigned char>(png[at + 2])) << 8) |
           static_cast<unsigned char>(png[at + 3]);
  };
  EXPECT_GT(be32(16), be32(20)) << "three columns and two rows make a wide image";
  EXPECT_EQ(leftovers(), 0);
}

TEST_F(PlotTest, HeatmapCarriesItsLabelsColorbarAndValues) {
  const fs::path path = dir_ / "niah.svg";
  const Status s = heatmap(niah(), path.string());
  ASSERT_TRUE(s.ok()) << s.message();
  const std::string svg = read_file(path);
  for (const char* text : {"Needle in a haystack", "context length (tokens)", "needle depth", "retrieval accuracy",
                           "0%", "100%", "1024", "2048", "4096", "0.50", "0.25"}) {
    EXPECT_NE(svg.find(text), std::string::npos) << "missing '" << text << "'";
  }
  // The NaN cell is grey and not annotated.
  EXPECT_EQ(svg.find(">nan<"), std::string::npos);
}

TEST_F(PlotTest, LinesCarryLegendAndAxes) {
  LineChart c;
  c.series = {{"exact", {256, 512, 1024}, {1.0, 1.0, 1.0}}, {"streaming", {256, 512, 1024}, {0.2, 0.6, NAN}}};
  c.title = "Accuracy against budget";
  c.x_label = "KV budget (tokens)";
  c.y_label = "accuracy";
  c.log2_x = true;
  c.y_min = 0;
  c.y_max = 1.05;
  const fs::path path = dir_ / "budget.svg";
  const Status s = lines(c, path.string());
  ASSERT_TRUE(s.ok()) << s.message();
  const std::string svg = read_file(path);
  for (const char* text : {"Accuracy against budget", "KV budget (tokens)", "accuracy", "exact", "streaming"})
    EXPECT_NE(svg.find(text), std::string::npos) << "missing '" << text << "'";
  EXPECT_EQ(leftovers(), 0);
  // The chart gets a new file's usual mode, not the temporary file's private 0600.
  const mode_t old_mask = ::umask(022);
  const Status again = lines(c, path.string());
  ::umask(old_mask);
  ASSERT_TRUE(again.ok()) << again.message();
  EXPECT_EQ(fs::status(path).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read | fs::perms::others_read);
}

// A dashed series (exact attention's ceiling in the kv sweep) is drawn dashed; plain series are not.
TEST_F(PlotTest, DashedSeriesIsDrawnDashed) {
  LineChart c;
  c.series = {{"snapkv", {64, 128, 256}, {0.2, 0.6, 1.0}}};
  const fs::path solid = dir_ / "solid.svg", dashed = dir_ / "dashed.svg";
  Status s = lines(c, solid.string());
  ASSERT_TRUE(s.ok()) << s.message();
  Series ceiling{"exact attention", {64, 256}, {1.0, 1.0}};
  ceiling.dashed = true;
  c.series.push_back(ceiling);
  s = lines(c, dashed.string());
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(read_file(solid).find("stroke-dasharray"), std::string::npos);
  const std::string svg = read_file(dashed);
  EXPECT_NE(svg.find("stroke-dasharray"), std::string::npos);
  EXPECT_NE(svg.find("exact attention"), std::string::npos);
}

TEST_F(PlotTest, BadChartsAreRefusedNamingTheArgument) {
  const std::string path = (dir_ / "x.png").string();
  Heatmap h = niah();
  h.values[1].pop_back();
  Status s = heatmap(h, path);
  EXPECT_NE(s.message().find("row 1 has 2 values; expected 3"), std::string::npos) << s.message();
  h = niah();
  h.col_labels.pop_back();
  s = heatmap(h, path);
  EXPECT_NE(s.message().find("col_labels has 2 entries; expected 3"), std::string::npos) << s.message();
  h = niah();
  h.vmin = 1;
  s = heatmap(h, path);
  EXPECT_NE(s.message().find("vmin 1"), std::string::npos) << s.message();
  s = heatmap(Heatmap{}, path);
  EXPECT_NE(s.message().find("empty"), std::string::npos) << s.message();
  s = heatmap(niah(), (dir_ / "no_such_folder" / "x.png").string());
  EXPECT_NE(s.message().find("does not exist"), std::string::npos) << s.message();
  LineChart c;
  c.series = {{"a", {1, 2}, {1}}};
  s = lines(c, path);
  EXPECT_NE(s.message().find("series 0 ('a') has 2 x and 1 y"), std::string::npos) << s.message();
  c.series = {{"a", {0, 2}, {1, 2}}};
  c.log2_x = true;
  s = lines(c, path);
  EXPECT_NE(s.message().find("log2 x axis"), std::string::npos) << s.message();
  EXPECT_FALSE(fs::exists(path));
}

// A chart that fails while drawing (a format matplotlib does not know) leaves the file that was
// there untouched and no temporary file behind.
TEST_F(PlotTest, FailedDrawingKeepsThePreviousFile) {
  const fs::path path = dir_ / "chart.notaformat";
  { std::ofstream(path) << "previous"; }
  const Status s = heatmap(niah(), path.string());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("notaformat"), std::string::npos) << s.message();
  EXPECT_EQ(read_file(path), "previous");
  EXPECT_EQ(leftovers(), 0);
}

TEST_F(PlotTest, APythonWithoutMatplotlibIsNamed) {
  if (std::system("/usr/bin/python3 -c 'import matplotlib' >/dev/null 2>&1") == 0)
    GTEST_SKIP() << "the system python has matplotlib";
  ::setenv("ATTNKIT_PYTHON", "/usr/bin/python3", 1);
  const Status s = heatmap(niah(), (dir_ / "x.png").string());
  ::unsetenv("ATTNKIT_PYTHON");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("no matplotlib"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("/usr/bin/python3"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace attnkit::plot
