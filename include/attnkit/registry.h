// attnkit/registry.h: mechanisms by name.
//
// Every mechanism registers itself here with its family and parameters, so that `attnkit list`,
// `attnkit bench --mechanism NAME[:key=value,...]`, bench/ and the Python package find it without
// knowing it. The families registered today:
//   exact   src/core/exact_mechanism.cc  (dense attention: windows, sinks, softcap, normalizations)
//   sparse  src/sparse/: each static pattern (patterns.cc), block_random (block_mask.cc), each
//           estimator in its own file (vertical_slash.cc, block_topk.cc, moba.cc, flexprefill.cc,
//           hip.cc), hyper_attention and routing (hyper_routing.cc)
//   linear  src/linear/: the engine's named configurations (mechanisms.cc) and the mechanisms
//           with their own entry points (aaren.cc, infini.cc, titans.cc, based.cc)
//   kv      src/kv/: KV-cache eviction policies over the paged cache, one file each (streaming.cc,
//           knorm.cc, tova.cc, h2o.cc, snapkv.cc, pyramidkv.cc, razor.cc, duo.cc); make_kv_policy
//           (attnkit/kv_cache.h) builds them by name
#pragma once

#include <algorithm>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/status.h"
#include "attnkit/tensor.h"

namespace attnkit {

// One benchmark/problem shape. Tensors are BSHD; seq_q = 1 is a decode step.
struct ProblemShape {
  int64_t batch = 1;
  int64_t seq_q = 1024;
  int64_t seq_kv = 1024;
  int64_t heads_q = 8;
  int64_t heads_kv = 2;
  int64_t head_dim = 128;
  bool causal = true;
  DType dtype = DType::kF32;
  int threads = 0;  // 0 = all
};

struct ParamSpec {
  std::string name;
  std::string default_value;
  std::string help;
};

using MechanismParams = std::map<std::string, std::string>;

// A mechanism made ready for one shape: inputs allocated and filled, scratch sized. run() is what
// the benchmark times; flops()/bytes() are the mechanism's own counts (exact attention uses
// attention_flops/attention_bytes; a sparse or linear mechanism counts the work it does).
class PreparedRun {
 public:
  virtual ~PreparedRun() = default;
  virtual Status run() = 0;
  virtual double flops() const = 0;
  virtual double bytes() const = 0;
  // Extra memory the mechanism allocates beyond inputs and outputs.
  virtual int64_t extra_bytes() const { return 0; }
};

struct Mechanism {
  std::string name;
  std::string family;  // "exact", "sparse", "linear", "kv"
  std::string description;
  std::vector<ParamSpec> params;
  // Validates params (unknown keys are an error) and prepares a run on random inputs.
  std::function<Status(const ProblemShape&, const MechanismParams&, std::unique_ptr<PreparedRun>*)> prepare;
};

// Registers a mechanism; a second registration of the same name aborts (programming error).
void register_mechanism(Mechanism m);
// All registered mechanisms, sorted by family then name.
std::vector<const Mechanism*> list_mechanisms();
const Mechanism* find_mechanism(const std::string& name);

// Parses "name" or "name:key=value,key=value" and checks keys against the mechanism's specs;
// missing keys get their defaults.
Status parse_mechanism_spec(const std::string& spec, const Mechanism** mechanism, MechanismParams* params);

// What every prepare() checks first: extents >= 1, head_dim <= kMaxHeadDim, heads_q a multiple of
// heads_kv, a thread count of attnkit/threads.h.
Status check_problem_shape(const ProblemShape& s);

// Helpers for prepare() functions: typed reads of a parameter with a clear error.
Status param_int(const MechanismParams& p, const std::string& key, int64_t* out);
Status param_float(const MechanismParams& p, const std::string& key, double* out);
Status param_bool(const MechanismParams& p, const std::string& key, bool* out);
// Reads a parameter spelled with an enum's names (attnkit/enum_names.h), optionally restricted to
// `allowed`: "parameter normalization=tanh is not supported; expected softmax|sigmoid|relu".
template <class E>
Status param_enum(const MechanismParams& p, const std::string& key, E* out, std::initializer_list<E> allowed = {}) {
  const std::string& v = p.at(key);
  E e{};
  if (parse_enum(v, &e) && (allowed.size() == 0 || std::find(allowed.begin(), allowed.end(), e) != allowed.end())) {
    *out = e;
    return Status::ok_status();
  }
  std::string list;
  if (allowed.size() == 0) list = enum_choices<E>();
  for (E a : allowed) list += (list.empty() ? "" : "|") + std::string(enum_name(a));
  return Status::invalid_argument("parameter " + key + "=" + v + " is not supported; expected " + list);
}

// The one way a mechanism is registered, in the file that implements it:
//   Mechanism make_moba_mechanism() { ... }
//   ATTNKIT_REGISTER_MECHANISM(make_moba_mechanism);
// make_fn returns a Mechanism, or a std::vector<Mechanism> for a table of named configurations of
// one implementation (the linear engine's). It runs during static initialization of libattnkit.
struct MechanismRegistrar {
  explicit MechanismRegistrar(Mechanism m) { register_mechanism(std::move(m)); }
  explicit MechanismRegistrar(std::vector<Mechanism> ms) {
    for (Mechanism& m : ms) register_mechanism(std::move(m));
  }
};
#define ATTNKIT_CONCAT_INNER(a, b) a##b
#define ATTNKIT_CONCAT(a, b) ATTNKIT_CONCAT_INNER(a, b)
#define ATTNKIT_REGISTER_MECHANISM(make_fn) \
  static ::attnkit::MechanismRegistrar ATTNKIT_CONCAT(attnkit_registrar_, __LINE__)(make_fn())

}  // namespace attnkit
