// How a sparse method joins the registry (internal). A method is a MethodDef (name, parameters,
// factory) registered next to its implementation:
//
//   Mechanism make_moba_mechanism() {
//     return sparse_internal::sparse_mechanism({"moba", "MoBA gating ...", {{"topk", "8", "..."}, kBlock},
//                                               [](const MechanismParams& p, std::unique_ptr<SparseMethod>* out) {...}});
//   }
//   ATTNKIT_REGISTER_MECHANISM(make_moba_mechanism);
//
// sparse_mechanism() records the definition for make_sparse_method() / sparse_method_names() and
// returns the registry entry (family "sparse", with the extra phase=all|estimate|attend parameter
// that lets the benchmark harness time estimation and attention separately).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/registry.h"
#include "attnkit/sparse.h"

namespace attnkit::sparse_internal {

using SparseFactory = std::function<Status(const MechanismParams&, std::unique_ptr<SparseMethod>*)>;

struct MethodDef {
  std::string name, description;
  std::vector<ParamSpec> params;
  SparseFactory factory;
};

Mechanism sparse_mechanism(MethodDef def);

// A method whose estimate() builds a BlockMask with `build` and whose attend() is sparse_attention.
using MaskBuilder = std::function<Status(const TensorView& q, const TensorView& k, const AttentionParams&, BlockMask*)>;
std::unique_ptr<SparseMethod> mask_method(MaskBuilder build);

// A method that chooses its keys inside the attention call (HyperAttention, Routing): estimate()
// does nothing, attend() runs `fn`, which reports the pairs it computed.
using DirectFn = std::function<Status(const TensorView& q, const TensorView& k, const TensorView& v,
                                      const TensorView& out, float* maybe_lse, const AttentionParams&, double* pairs)>;
std::unique_ptr<SparseMethod> direct_method(DirectFn fn);

// A static pattern method: `make` builds the pattern for a key length once the shape is known
// (estimate()); the parameters are validated when the method is made (with seq_kv 1).
using PatternMaker = std::function<Status(const MechanismParams&, int64_t seq_kv, PatternPtr*)>;
SparseFactory pattern_factory(PatternMaker make);

// The block= parameter every BlockMask method takes, and its check.
inline const ParamSpec kBlockParam{"block", "64", "query and key block size of the BlockMask (64 = the kernel tile)"};
Status read_block(const MechanismParams& p, int64_t* block);

}  // namespace attnkit::sparse_internal
