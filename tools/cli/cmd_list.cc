// `attnkit list [--json]`: every registered mechanism with its family, description and
// parameters (with defaults).
#include <cstdio>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "attnkit/registry.h"
#include "commands.h"

namespace attnkit::cli {
namespace {

nlohmann::json mechanisms_json() {
  nlohmann::json out = nlohmann::json::array();
  for (const Mechanism* m : list_mechanisms()) {
    nlohmann::json params = nlohmann::json::array();
    for (const ParamSpec& p : m->params) params.push_back({{"name", p.name}, {"default", p.default_value}, {"help", p.help}});
    out.push_back({{"name", m->name}, {"family", m->family}, {"description", m->description}, {"params", params}});
  }
  return out;
}

void print_text() {
  for (const Mechanism* m : list_mechanisms()) {
    std::printf("%-20s family=%-8s %s\n", m->name.c_str(), m->family.c_str(), m->description.c_str());
    for (const ParamSpec& p : m->params) {
      const std::string kv = p.name + "=" + p.default_value;
      std::printf("    %-28s %s\n", kv.c_str(), p.help.c_str());
    }
  }
}

void add_list(CLI::App& root) {
  CLI::App* cmd = root.add_subcommand("list", "List every registered mechanism with its family and parameters");
  auto json = std::make_shared<bool>(false);
  cmd->add_flag("--json", *json, "Print JSON: [{name, family, description, params: [{name, default, help}]}]");
  cmd->callback([json] {
    if (*json) {
      std::cout << mechanisms_json().dump(2) << std::endl;
    } else {
      print_text();
    }
  });
}

}  // namespace
}  // namespace attnkit::cli

ATTNKIT_CLI_COMMAND("list", attnkit::cli::add_list);
