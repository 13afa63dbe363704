// Pluggable subcommands of the `attnkit` executable.
//
// main.cc and every tools/cli/cmd_*.cc are compiled into the executable, so a new subcommand is
// one new file cmd_<name>.cc:
//
//   #include "commands.h"
//   namespace {
//   void add_fidelity(CLI::App& root) {
//     CLI::App* cmd = root.add_subcommand("fidelity", "Compare a mechanism with exact attention");
//     auto opts = std::make_shared<Options>();            // options must outlive this function
//     cmd->add_option("--mechanism", opts->spec, "...");
//     cmd->callback([opts] { attnkit::cli::check(do_fidelity(*opts)); });
//   }
//   }  // namespace
//   ATTNKIT_CLI_COMMAND("fidelity", add_fidelity);
//
// Callbacks report failure through check()/fail(), which print "attnkit <cmd>: error: ..." to
// stderr and make the process exit non-zero; main() turns any escaping exception into an error
// message too, so nothing crashes.
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "attnkit/registry.h"  // ATTNKIT_CONCAT
#include "attnkit/enum_names.h"
#include "attnkit/status.h"

namespace attnkit::cli {

using CommandSetup = void (*)(CLI::App& root);

struct CommandEntry {
  std::string name;
  CommandSetup setup;
};

// Registered commands, sorted by name.
std::vector<CommandEntry> registered_commands();

struct CommandRegistrar {
  CommandRegistrar(const char* name, CommandSetup setup);
};

// Exit codes: 1 = a command failed (bad value, failed run, I/O); CLI11's own codes for parse errors.
inline constexpr int kExitFailure = 1;

// Prints "attnkit: error: <message>" to stderr and ends the command with the given exit code
// (throws CLI::RuntimeError, which main() turns into the exit status).
[[noreturn]] void fail(const std::string& message, int exit_code = kExitFailure);
// fail(status.message()) when the status is not ok.
void check(const Status& status);

// The --threads option every command has: 0 (the OpenMP default) or 1..attnkit::max_threads(),
// checked while the command line is parsed, so a bad count fails before any work starts.
CLI::Option* add_threads_option(CLI::App* cmd, int* threads, const std::string& help);

// A check that an option's value is one of an enum's names (the table of attnkit/enum_names.h):
// "dtype 'f64' is not supported; expected 'f32', 'f16' or 'bf16'".
template <class E>
CLI::Validator enum_validator(const char* param) {
  return CLI::Validator(
      [param](std::string& text) {
        E value{};
        const Status s = parse_enum_param(param, text, &value);
        return s.ok() ? std::string() : s.message();
      },
      enum_choices<E>());
}

}  // namespace attnkit::cli

#define ATTNKIT_CLI_COMMAND(name, setup_fn) \
  static ::attnkit::cli::CommandRegistrar ATTNKIT_CONCAT(attnkit_cli_command_, __LINE__)(name, setup_fn)
