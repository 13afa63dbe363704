// The mechanism registry (see attnkit/registry.h): a process-wide table filled by static
// registrars, a "name:key=value,..." spec parser and typed parameter readers.
#include "attnkit/registry.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "attnkit/attention.h"
#include "attnkit/threads.h"
#include "core/checked_size.h"

namespace attnkit {
namespace {

// Function-local statics: registrars run during static initialization of libattnkit (and of any
// program linking it), in an order we do not control, so the table must exist on first use.
struct Registry {
  std::mutex mu;
  // unique_ptr keeps Mechanism addresses stable while the map grows.
  std::map<std::string, std::unique_ptr<Mechanism>> by_name;
};

Registry& registry() {
  static Registry* r = new Registry();  // never destroyed: lookups may run during exit
  return *r;
}

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t')) --e;
  return s.substr(b, e - b);
}

std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    if (i) out += ", ";
    out += names[i];
  }
  return out;
}

std::string valid_keys(const Mechanism& m) {
  std::vector<std::string> keys;
  for (const ParamSpec& p : m.params) keys.push_back(p.name);
  std::sort(keys.begin(), keys.end());
  return keys.empty() ? std::string("(none: this mechanism takes no parameters)") : join_names(keys);
}

std::string registered_names() {
  std::vector<std::string> names;
  for (const Mechanism* m : list_mechanisms()) names.push_back(m->name);
  return names.empty() ? std::string("(none)") : join_names(names);
}

// Looks a key up; a missing key is a programming error in the mechanism (it reads a parameter it
// never declared), but we still answer with a Status rather than abort.
Status lookup(const MechanismParams& p, const std::string& key, const std::string** out) {
  auto it = p.find(key);
  if (it == p.end()) return Status::invalid_argument("mechanism parameter '" + key + "' is missing");
  *out = &it->second;
  return Status::ok_status();
}

}  // namespace

void register_mechanism(Mechanism m) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  if (m.name.empty() || r.by_name.count(m.name)) {
    std::fprintf(stderr, "attnkit: mechanism '%s' registered twice or with an empty name\n", m.name.c_str());
    std::abort();
  }
  std::string name = m.name;
  r.by_name.emplace(std::move(name), std::make_unique<Mechanism>(std::move(m)));
}

std::vector<const Mechanism*> list_mechanisms() {
  Registry& r = registry();
  std::vector<const Mechanism*> out;
  {
    std::lock_guard<std::mutex> lock(r.mu);
    for (const auto& [name, m] : r.by_name) out.push_back(m.get());
  }
  std::sort(out.begin(), out.end(), [](const Mechanism* a, const Mechanism* b) {
    return a->family != b->family ? a->family < b->family : a->name < b->name;
  });
  return out;
}

const Mechanism* find_mechanism(const std::string& name) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  auto it = r.by_name.find(name);
  return it == r.by_name.end() ? nullptr : it->second.get();
}

Status parse_mechanism_spec(const std::string& spec, const Mechanism** mechanism, MechanismParams* params) {
  if (mechanism == nullptr || params == nullptr) {
    return Status::invalid_argument("parse_mechanism_spec: mechanism and params must not be null");
  }
  *mechanism = nullptr;
  params->clear();
  const size_t colon = spec.find(':');
  const std::string name = trim(spec.substr(0, colon));
  if (name.empty()) {
    return Status::invalid_argument("mechanism spec '" + spec + "' has no name; expected NAME[:key=value,...]" +
                                    " with NAME one of: " + registered_names());
  }
  const Mechanism* m = find_mechanism(name);
  if (m == nullptr) {
    return Status::invalid_argument("mechanism '" + name + "' is not registered; registered: " + registered_names());
  }
  MechanismParams given;
  if (colon != std::string::npos) {
    const std::string rest = spec.substr(colon + 1);
    size_t pos = 0;
    // An empty item list after ':' ("exact:") is accepted as no parameters.
    while (pos <= rest.size() && !trim(rest).empty()) {
      const size_t comma = rest.find(',', pos);
      const std::string item = rest.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
      const size_t eq = item.find('=');
      const std::string key = trim(item.substr(0, eq));
      if (eq == std::string::npos || key.empty()) {
        return Status::invalid_argument("mechanism '" + name + "': parameter item '" + item +
                                        "' is not key=value; valid keys: " + valid_keys(*m));
      }
      const std::string value = trim(item.substr(eq + 1));
      const bool known = std::any_of(m->params.begin(), m->params.end(),
                                     [&](const ParamSpec& p) { return p.name == key; });
      if (!known) {
        return Status::invalid_argument("mechanism '" + name + "' has no parameter '" + key +
                                        "'; valid keys: " + valid_keys(*m));
      }
      if (value.empty()) {
        return Status::invalid_argument("mechanism '" + name + "': parameter '" + key + "' has an empty value");
      }
      if (given.count(key)) {
        return Status::invalid_argument("mechanism '" + name + "': parameter '" + key + "' is given twice");
      }
      given[key] = value;
      if (comma == std::string::npos) break;
      pos = comma + 1;
    }
  }
  for (const ParamSpec& p : m->params) {
    auto it = given.find(p.name);
    (*params)[p.name] = it == given.end() ? p.default_value : it->second;
  }
  *mechanism = m;
  return Status::ok_status();
}

Status param_int(const MechanismParams& p, const std::string& key, int64_t* out) {
  const std::string* v = nullptr;
  ATTNKIT_RETURN_IF_ERROR(lookup(p, key, &v));
  errno = 0;
  char* end = nullptr;
  const long long x = std::strtoll(v->c_str(), &end, 10);
  if (v->empty() || end != v->c_str() + v->size() || errno == ERANGE) {
    return Status::invalid_argument("parameter " + key + "=" + *v + " is not an integer");
  }
  *out = static_cast<int64_t>(x);
  return Status::ok_status();
}

Status param_float(const MechanismParams& p, const std::string& key, double* out) {
  const std::string* v = nullptr;
  ATTNKIT_RETURN_IF_ERROR(lookup(p, key, &v));
  errno = 0;
  char* end = nullptr;
  const double x = std::strtod(v->c_str(), &end);
  if (v->empty() || end != v->c_str() + v->size() || errno == ERANGE || !std::isfinite(x)) {
    return Status::invalid_argument("parameter " + key + "=" + *v + " is not a finite number");
  }
  *out = x;
  return Status::ok_status();
}

Status param_bool(const MechanismParams& p, const std::string& key, bool* out) {
  const std::string* v = nullptr;
  ATTNKIT_RETURN_IF_ERROR(lookup(p, key, &v));
  if (*v == "1" || *v == "true" || *v == "yes" || *v == "on") {
    *out = true;
  } else if (*v == "0" || *v == "false" || *v == "no" || *v == "off") {
    *out = false;
  } else {
    return Status::invalid_argument("parameter " + key + "=" + *v + " is not a boolean; expected true|false|1|0");
  }
  return Status::ok_status();
}

Status check_problem_shape(const ProblemShape& s) {
  const std::pair<const char*, int64_t> dims[] = {{"batch", s.batch},       {"seq_q", s.seq_q},
                                                  {"seq_kv", s.seq_kv},     {"heads_q", s.heads_q},
                                                  {"heads_kv", s.heads_kv}, {"head_dim", s.head_dim}};
  for (const auto& [name, value] : dims) {
    if (value < 1) {
      return Status::invalid_argument(std::string(name) + " " + std::to_string(value) + " is not supported; expected >= 1");
    }
  }
  if (s.head_dim > kMaxHeadDim) {
    return Status::invalid_argument("head_dim " + std::to_string(s.head_dim) + " is not supported; expected 1.." +
                                    std::to_string(kMaxHeadDim));
  }
  if (s.heads_q % s.heads_kv != 0) {
    return Status::invalid_argument("heads_q " + std::to_string(s.heads_q) + " is not a multiple of heads_kv " +
                                    std::to_string(s.heads_kv));
  }
  int threads = 0;
  ATTNKIT_RETURN_IF_ERROR(resolve_threads(s.threads, "threads", &threads));
  return check_problem_sizes(s);  // overflow, per-dimension and memory limits before any allocation
}

}  // namespace attnkit
