#include "testing/cli_runner.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <cstdlib>

namespace attnkit::testing {

namespace fs = std::filesystem;

std::string cli_path() {
  if (const char* p = std::getenv("ATTNKIT_CLI")) return p;
  const fs::path self = fs::read_symlink("/proc/self/exe");
  return (self.parent_path().parent_path() / "tools" / "cli" / "attnkit").string();
}

fs::path build_root() { return fs::path(cli_path()).parent_path().parent_path().parent_path(); }

CommandResult run_command(const std::string& cmd) {
  CommandResult r;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) r.output.append(buf.data(), n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  return r;
}

CommandResult run_cli(const std::string& args) {
  // Quick yardsticks and a single timed run keep each call well under a second.
  return run_command("ATTNKIT_BENCH_QUICK=1 '" + cli_path() + "' " + args + " 2>&1");
}

void expect_cli_failure(const CommandResult& r, const std::vector<std::string>& fragments) {
  EXPECT_EQ(r.exit_code, 1) << r.output;
  for (const std::string& f : fragments) EXPECT_NE(r.output.find(f), std::string::npos) << "missing '" << f << "' in:\n" << r.output;
}

}  // namespace attnkit::testing
