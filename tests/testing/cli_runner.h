// Running the built `attnkit` executable from a test: where it is, and its exit code and output.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace attnkit::testing {

// <build>/tools/cli/attnkit, found from the test program's own path (<build>/tests/...);
// $ATTNKIT_CLI overrides.
std::string cli_path();
// The build tree's root (the CLI is <root>/tools/cli/attnkit).
std::filesystem::path build_root();

struct CommandResult {
  int exit_code = -1;   // 128 + signal when killed by one
  std::string output;   // stdout and stderr together
};

// Runs a shell command and collects its output and exit code.
CommandResult run_command(const std::string& cmd);
// Runs `attnkit ARGS` with quick benchmark yardsticks (ATTNKIT_BENCH_QUICK=1), stderr into output.
CommandResult run_cli(const std::string& args);

// Expects a clean failure: exit code 1 (an error, not a crash or a signal) and every fragment in
// the output.
void expect_cli_failure(const CommandResult& r, const std::vector<std::string>& fragments);

}  // namespace attnkit::testing
