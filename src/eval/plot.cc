// The C++ side of the plotting path (attnkit/plot.h): checks a chart, writes its JSON spec to a
// temporary file and runs python/attnkit/plot.py (embedded at build time as kPlotScript) on it.
#include "attnkit/plot.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "eval/plot_script.h"

extern char** environ;

namespace attnkit::plot {
namespace {

namespace fs = std::filesystem;

bool is_executable(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec) && ::access(p.c_str(), X_OK) == 0;
}

// .venv/bin/python in `dir` or any folder above it.
bool find_venv_python(fs::path dir, fs::path* out) {
  for (; !dir.empty(); dir = dir.parent_path()) {
    const fs::path candidate = dir / ".venv" / "bin" / "python";
    if (is_executable(candidate)) {
      *out = candidate;
      return true;
    }
    if (dir == dir.parent_path()) break;
  }
  return false;
}

// A temporary file (mkstemp) whose name ends in `suffix`; removed by the destructor.
class TempFile {
 public:
  Status create(const std::string& stem, const std::string& suffix) {
    std::string pattern = (fs::temp_directory_path() / (stem + "XXXXXX" + suffix)).string();
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    const int fd = ::mkstemps(buf.data(), static_cast<int>(suffix.size()));
    if (fd < 0) return Status::io_error("plot: cannot create a temporary file in " + fs::temp_directory_path().string());
    ::close(fd);
    path_ = buf.data();
    return Status::ok_status();
  }
  ~TempFile() {
    if (!path_.empty()) std::remove(path_.c_str());
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream os;
  os << f.rdbuf();
  return os.str();
}

// The destination must name a file in an existing, writable folder: checked before any work.
Status check_destination(const std::string& path) {
  if (path.empty()) return Status::invalid_argument("plot: path is empty");
  const fs::path p(path);
  if (p.filename().empty()) return Status::invalid_argument("plot: path '" + path + "' names no file");
  const fs::path dir = p.parent_path().empty() ? fs::path(".") : p.parent_path();
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return Status::io_error("plot: the folder of path '" + path + "' does not exist");
  if (::access(dir.c_str(), W_OK) != 0) return Status::io_error("plot: the folder of path '" + path + "' is not writable");
  return Status::ok_status();
}

// Writes the spec, runs the script on it and turns a failure into a Status carrying its message.
Status render(const nlohmann::json& spec) {
  std::string python;
  ATTNKIT_RETURN_IF_ERROR(plot_python(&python));
  TempFile spec_file, log_file;
  ATTNKIT_RETURN_IF_ERROR(spec_file.create("attnkit-plot-", ".json"));
  ATTNKIT_RETURN_IF_ERROR(log_file.create("attnkit-plot-", ".log"));
  {
    std::ofstream f(spec_file.path());
    f << spec.dump();
    if (!f.flush()) return Status::io_error("plot: cannot write the chart spec to " + spec_file.path());
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_file.path().c_str(), O_WRONLY | O_TRUNC, 0);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  std::vector<std::string> args = {python, "-c", kPlotScript, spec_file.path()};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, python.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return Status::io_error("plot: cannot run the Python interpreter " + python);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return Status::internal("plot: waiting for " + python + " failed");
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return Status::ok_status();
  std::string log = read_all(log_file.path());
  while (!log.empty() && (log.back() == '\n' || log.back() == ' ')) log.pop_back();
  if (log.find("No module named 'matplotlib'") != std::string::npos) {
    return Status::unsupported("plot: the Python interpreter " + python +
                               " has no matplotlib; install it with `" + python +
                               " -m pip install -r requirements.txt` (or set ATTNKIT_PYTHON)");
  }
  const size_t last = log.rfind('\n');
  return Status::invalid_argument("plot: " + (last == std::string::npos ? log : log.substr(last + 1)));
}

Status check_labels(const std::vector<std::string>& labels, size_t want, const char* name, const char* per) {
  if (!labels.empty() && labels.size() != want) {
    return Status::invalid_argument(std::string("plot: ") + name + " has " + std::to_string(labels.size()) +
                                    " entries; expected " + std::to_string(want) + " (one per " + per + ") or none");
  }
  return Status::ok_status();
}

}  // namespace

Status plot_python(std::string* out) {
  if (const char* p = std::getenv("ATTNKIT_PYTHON"); p != nullptr && *p != '\0') {
    *out = p;
    return Status::ok_status();
  }
  fs::path found;
  if (const char* venv = std::getenv("VIRTUAL_ENV"); venv != nullptr && *venv != '\0') {
    if (is_executable(fs::path(venv) / "bin" / "python")) {
      *out = (fs::path(venv) / "bin" / "python").string();
      return Status::ok_status();
    }
  }
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&plot_python), &info) != 0 && info.dli_fname != nullptr &&
      find_venv_python(fs::absolute(fs::path(info.dli_fname)).parent_path(), &found)) {
    *out = found.string();
    return Status::ok_status();
  }
  std::error_code ec;
  if (find_venv_python(fs::current_path(ec), &found)) {
    *out = found.string();
    return Status::ok_status();
  }
  *out = "python3";  // posix_spawnp searches PATH
  return Status::ok_status();
}

Status heatmap(const Heatmap& chart, const std::string& path) {
  ATTNKIT_RETURN_IF_ERROR(check_destination(path));
  if (chart.values.empty() || chart.values[0].empty())
    return Status::invalid_argument("plot: heatmap values are empty; expected at least one row and one column");
  const size_t cols = chart.values[0].size();
  for (size_t r = 0; r < chart.values.size(); ++r) {
    if (chart.values[r].size() != cols) {
      return Status::invalid_argument("plot: heatmap row " + std::to_string(r) + " has " +
                                      std::to_string(chart.values[r].size()) + " values; expected " +
                                      std::to_string(cols) + " like row 0");
    }
  }
  ATTNKIT_RETURN_IF_ERROR(check_labels(chart.row_labels, chart.values.size(), "row_labels", "row"));
  ATTNKIT_RETURN_IF_ERROR(check_labels(chart.col_labels, cols, "col_labels", "column"));
  if (!(chart.vmin < chart.vmax)) {
    return Status::invalid_argument("plot: heatmap vmin " + std::to_string(chart.vmin) + " must be below vmax " +
                                    std::to_string(chart.vmax));
  }
  nlohmann::json spec = {{"kind", "heatmap"},        {"path", path},
                         {"values", chart.values},   {"title", chart.title},
                         {"xlabel", chart.x_label},  {"ylabel", chart.y_label},
                         {"colorbar_label", chart.colorbar_label},
                         {"vmin", chart.vmin},       {"vmax", chart.vmax}};  // NaN becomes null: a grey cell
  if (!chart.row_labels.empty()) spec["row_labels"] = chart.row_labels;
  if (!chart.col_labels.empty()) spec["col_labels"] = chart.col_labels;
  return render(spec);
}

Status lines(const LineChart& chart, const std::string& path) {
  ATTNKIT_RETURN_IF_ERROR(check_destination(path));
  if (chart.series.empty()) return Status::invalid_argument("plot: lines needs at least one series");
  nlohmann::json series = nlohmann::json::array();
  for (size_t i = 0; i < chart.series.size(); ++i) {
    const Series& s = chart.series[i];
    if (s.x.empty() || s.x.size() != s.y.size()) {
      return Status::invalid_argument("plot: series " + std::to_string(i) + " ('" + s.label + "') has " +
                                      std::to_string(s.x.size()) + " x and " + std::to_string(s.y.size()) +
                                      " y values; expected the same number, at least one");
    }
    for (double x : s.x) {
      if (!std::isfinite(x) || (chart.log2_x && x <= 0)) {
        return Status::invalid_argument("plot: series " + std::to_string(i) + " ('" + s.label + "') has x " +
                                        std::to_string(x) + (chart.log2_x ? "; expected finite and > 0 (log2 x axis)"
                                                                           : "; expected finite"));
      }
    }
    series.push_back({{"label", s.label}, {"x", s.x}, {"y", s.y}, {"dashed", s.dashed}});
  }
  nlohmann::json spec = {{"kind", "lines"},       {"path", path},           {"series", series},
                         {"title", chart.title},  {"xlabel", chart.x_label}, {"ylabel", chart.y_label},
                         {"logx", chart.log2_x}};
  if (std::isfinite(chart.y_min) && std::isfinite(chart.y_max)) spec["ylim"] = {chart.y_min, chart.y_max};
  return render(spec);
}

}  // namespace attnkit::plot
