// The `attnkit` executable: builds the CLI11 app from the registered subcommands (commands.h).
#include <algorithm>
#include <cstdio>
#include <exception>
#include <iostream>
#include <map>
#include <mutex>
#include <string>

#include "attnkit/threads.h"
#include "commands.h"

namespace attnkit::cli {
namespace {

// Function-local static: registrars in other translation units may run before this one's globals.
std::map<std::string, CommandSetup>& command_table() {
  static std::map<std::string, CommandSetup> table;
  return table;
}

}  // namespace

CommandRegistrar::CommandRegistrar(const char* name, CommandSetup setup) {
  auto& table = command_table();
  if (table.count(name)) {
    std::fprintf(stderr, "attnkit: CLI command '%s' registered twice\n", name);
    std::abort();
  }
  table[name] = setup;
}

std::vector<CommandEntry> registered_commands() {
  std::vector<CommandEntry> out;
  for (const auto& [name, setup] : command_table()) out.push_back({name, setup});
  return out;
}

void fail(const std::string& message, int exit_code) {
  std::cerr << "attnkit: error: " << message << std::endl;
  throw CLI::RuntimeError(exit_code);
}

void check(const Status& status) {
  if (!status.ok()) fail(status.message());
}

CLI::Option* add_threads_option(CLI::App* cmd, int* threads, const std::string& help) {
  const CLI::Validator thread_count(
      [](std::string& text) -> std::string {
        int value = 0, resolved = 0;
        try {
          size_t used = 0;
          value = std::stoi(text, &used);
          if (used != text.size()) return std::string();  // not a number: CLI11's conversion reports it
        } catch (const std::exception&) {
          return std::string();  // likewise (out of int range included)
        }
        const Status s = resolve_threads(value, "threads", &resolved);
        return s.ok() ? std::string() : s.message();
      },
      "THREADS");
  return cmd->add_option("--threads", *threads, help)->capture_default_str()->check(thread_count);
}

}  // namespace attnkit::cli

int main(int argc, char** argv) {
  CLI::App app{"attnkit: attention mechanisms for long-context transformers (CPU engine, benchmarks, evaluation)",
               "attnkit"};
  app.require_subcommand(1);
  app.fallthrough(false);
  try {
    std::string names;
    bool known = false;
    for (const auto& entry : attnkit::cli::registered_commands()) {
      entry.setup(app);
      names += (names.empty() ? "" : ", ") + entry.name;
      known = known || (argc > 1 && entry.name == argv[1]);
    }
    // CLI11 alone would only say "A subcommand is required" for a mistyped command.
    if (argc > 1 && argv[1][0] != '-' && !known) {
      std::cerr << "attnkit: error: unknown command '" << argv[1] << "'; commands: " << names << std::endl;
      return attnkit::cli::kExitFailure;
    }
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Help requests exit 0; bad options print CLI11's message and exit non-zero.
    return app.exit(e);
  } catch (const attnkit::Error& e) {
    std::cerr << "attnkit: error: " << e.what() << std::endl;
    return attnkit::cli::kExitFailure;
  } catch (const std::bad_alloc&) {
    std::cerr << "attnkit: error: out of memory" << std::endl;
    return attnkit::cli::kExitFailure;
  } catch (const std::exception& e) {
    std::cerr << "attnkit: error: " << e.what() << std::endl;
    return attnkit::cli::kExitFailure;
  }
  return 0;
}
