// attnkit/registry.h: mechanisms by name.
//
// Every mechanism (exact attention, each sparse pattern, each linear variant, each KV policy)
// registers itself here with its family and parameters, so that `attnkit list`, `attnkit bench
// --mechanism NAME[:key=value,...]`, bench/ and the Python package find it without knowing it.
#pragma once

#include <functional>
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
  std::string family;  // "exact", "sparse", "linear", "kv", ...
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

// Helpers for prepare() functions: typed reads of a parameter with a clear error.
Status param_int(const MechanismParams& p, const std::string& key, int64_t* out);
Status param_float(const MechanismParams& p, const std::string& key, double* out);
Status param_bool(const MechanismParams& p, const std::string& key, bool* out);

// Static registration: ATTNKIT_REGISTER_MECHANISM(make_fn) where make_fn returns a Mechanism.
struct MechanismRegistrar {
  explicit MechanismRegistrar(Mechanism m) { register_mechanism(std::move(m)); }
};
#define ATTNKIT_CONCAT_INNER(a, b) a##b
#define ATTNKIT_CONCAT(a, b) ATTNKIT_CONCAT_INNER(a, b)
#define ATTNKIT_REGISTER_MECHANISM(make_fn) \
  static ::attnkit::MechanismRegistrar ATTNKIT_CONCAT(attnkit_registrar_, __LINE__)(make_fn())

}  // namespace attnkit
