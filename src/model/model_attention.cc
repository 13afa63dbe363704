// Attention backends of the Gemma forward pass, selected by name.
//
// Every backend here runs the exact kernel (attnkit::attention) with a different visibility rule,
// so a comparison against "exact" isolates what the rule loses:
//   exact                         the model's own masks (causal; window of sliding_window on local layers)
//   streaming:sinks=S,window=W    StreamingLLM / A-shape (Xiao et al. 2023, "Efficient Streaming
//                                 Language Models with Attention Sinks"): global layers see the first
//                                 S positions plus the last W (self included); local layers keep
//                                 their own window (narrowed to W if smaller), without sinks
//   window:size=W                 sliding window of W positions (self included) on every layer
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "attnkit/model.h"
#include "attnkit/sparse.h"

namespace attnkit::model {
namespace {

class ExactNamed final : public AttentionBackend {
 public:
  std::string name() const override { return "exact"; }
  Status attend(const AttentionCall& call) override { return attention(call.q, call.k, call.v, call.out, nullptr, call.params); }
};

class StreamingBackend final : public AttentionBackend {
 public:
  StreamingBackend(int64_t sinks, int64_t window) : sinks_(sinks), window_(window) {}
  std::string name() const override { return "streaming:sinks=" + std::to_string(sinks_) + ",window=" + std::to_string(window_); }
  Status attend(const AttentionCall& call) override {
    AttentionParams p = call.params;
    const int64_t wl = window_ - 1;
    if (p.window_left < 0) {
      // Global layer: sinks + window.
      p.window_left = wl;
      p.n_sink_tokens = sinks_;
    } else {
      // Local layer: trained with a sliding window and no sinks; adding sinks there changes what
      // it was trained on (perplexity 2.0 -> 14 on 1.1K KJV tokens with sinks=4,window=129), so it
      // only narrows the window when W is smaller.
      p.window_left = std::min(p.window_left, wl);
    }
    return attention(call.q, call.k, call.v, call.out, nullptr, p);
  }

 private:
  int64_t sinks_, window_;
};

class WindowBackend final : public AttentionBackend {
 public:
  explicit WindowBackend(int64_t size) : size_(size) {}
  std::string name() const override { return "window:size=" + std::to_string(size_); }
  Status attend(const AttentionCall& call) override {
    AttentionParams p = call.params;
    p.window_left = size_ - 1;
    return attention(call.q, call.k, call.v, call.out, nullptr, p);
  }

 private:
  int64_t size_;
};

// Any named sparse method of attnkit/sparse.h ("a_shape:sinks=4,window=1024", "block_topk:topk=8",
// "vertical_slash", ...): multi-token calls (prefill chunks) estimate the mask on the chunk's Q and
// the cache's K and run the sparse kernel; single-token decode steps stay exact (as MInference does:
// sparse prefill, dense decode). The layer's own window and causality stay in the params, so
// local layers remain within their 512-position window.
class SparseMethodBackend final : public AttentionBackend {
 public:
  SparseMethodBackend(std::string spec, std::unique_ptr<SparseMethod> method)
      : spec_(std::move(spec)), method_(std::move(method)) {}
  std::string name() const override { return spec_; }
  Status attend(const AttentionCall& call) override {
    if (call.q.seq() == 1) return attention(call.q, call.k, call.v, call.out, nullptr, call.params);
    ATTNKIT_RETURN_IF_ERROR(method_->estimate(call.q, call.k, call.params));
    return method_->attend(call.q, call.k, call.v, call.out, nullptr, call.params);
  }

 private:
  std::string spec_;
  std::unique_ptr<SparseMethod> method_;
};

}  // namespace

Status parse_attention_spec(const std::string& spec, std::string* name, std::map<std::string, std::string>* kv) {
  const size_t colon = spec.find(':');
  *name = spec.substr(0, colon);
  if (colon == std::string::npos) return Status::ok_status();
  std::string rest = spec.substr(colon + 1);
  size_t start = 0;
  while (start <= rest.size()) {
    size_t comma = rest.find(',', start);
    std::string item = rest.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!item.empty()) {
      const size_t eq = item.find('=');
      if (eq == std::string::npos || eq == 0)
        return Status::invalid_argument("attention: parameter '" + item + "' of '" + spec + "' is not key=value");
      (*kv)[item.substr(0, eq)] = item.substr(eq + 1);
    }
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return Status::ok_status();
}

namespace {

Status take_int(std::map<std::string, std::string>* kv, const std::string& key, int64_t def, int64_t min_value,
                const std::string& spec, int64_t* out) {
  auto it = kv->find(key);
  if (it == kv->end()) {
    *out = def;
    return Status::ok_status();
  }
  size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(it->second, &used);
  } catch (...) {
    used = 0;
  }
  if (used == 0 || used != it->second.size() || v < min_value)
    return Status::invalid_argument("attention: " + key + "=" + it->second + " in '" + spec + "' must be an integer >= " +
                                    std::to_string(min_value));
  *out = v;
  kv->erase(it);
  return Status::ok_status();
}

struct RegisteredBackend {
  std::string example;
  AttentionBackendFactory factory;
};

// Function-local static: registrars in other translation units may run before this one's globals.
std::map<std::string, RegisteredBackend>& backend_table() {
  static std::map<std::string, RegisteredBackend> table;
  return table;
}

}  // namespace

void register_attention_backend(const std::string& name, const std::string& example, AttentionBackendFactory factory) {
  if (backend_table().count(name) != 0) {
    std::fprintf(stderr, "attnkit: attention backend '%s' registered twice\n", name.c_str());
    std::abort();
  }
  backend_table()[name] = {example, std::move(factory)};
}

std::vector<std::string> attention_backend_names() {
  std::vector<std::string> names = {"exact", "streaming:sinks=4,window=1024", "window:size=1024"};
  for (const auto& [name, b] : backend_table()) names.push_back(b.example);
  return names;
}

Status make_attention_backend(const std::string& spec, std::unique_ptr<AttentionBackend>* out) {
  if (out == nullptr) return Status::invalid_argument("make_attention_backend: out is null");
  std::string name;
  std::map<std::string, std::string> kv;
  ATTNKIT_RETURN_IF_ERROR(parse_attention_spec(spec, &name, &kv));
  if (name == "exact") {
    *out = std::make_unique<ExactNamed>();
  } else if (name == "streaming") {
    int64_t sinks = 0, window = 0;
    ATTNKIT_RETURN_IF_ERROR(take_int(&kv, "sinks", 4, 0, spec, &sinks));
    ATTNKIT_RETURN_IF_ERROR(take_int(&kv, "window", 1024, 1, spec, &window));
    *out = std::make_unique<StreamingBackend>(sinks, window);
  } else if (name == "window") {
    int64_t size = 0;
    ATTNKIT_RETURN_IF_ERROR(take_int(&kv, "size", 1024, 1, spec, &size));
    *out = std::make_unique<WindowBackend>(size);
  } else if (auto it = backend_table().find(name); it != backend_table().end()) {
    return it->second.factory(spec, out);
  } else {
    const std::vector<std::string> sparse = sparse_method_names();
    if (std::find(sparse.begin(), sparse.end(), name) != sparse.end()) {
      std::unique_ptr<SparseMethod> method;
      Status st = make_sparse_method(spec, &method);
      if (!st.ok()) return Status(st.code(), "attention: " + st.message());
      *out = std::make_unique<SparseMethodBackend>(spec, std::move(method));
      return Status::ok_status();
    }
    std::string names;
    for (const auto& n : attention_backend_names()) names += (names.empty() ? "" : ", ") + n;
    for (const auto& n : sparse) names += ", " + n;
    return Status::invalid_argument("attention: unknown mechanism '" + name + "' (known: " + names + ")");
  }
  if (!kv.empty())
    return Status::invalid_argument("attention: unknown parameter '" + kv.begin()->first + "' for '" + name + "'");
  return Status::ok_status();
}

}  // namespace attnkit::model
