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

// A BlockMask method whose estimate() is estimate(q, k, params, config, mask) (the dynamic
// estimators: vertical_slash.cc, block_topk.cc, moba.cc, flexprefill.cc, hip.cc).
template <class Config, class Estimate>
std::unique_ptr<SparseMethod> estimator_method(Estimate estimate, const Config& config) {
  return mask_method([estimate, config](const TensorView& q, const TensorView& k, const AttentionParams& params,
                                        BlockMask* m) { return estimate(q, k, params, config, m); });
}

// The factory of an estimator whose parameters are topk= and block= (block_topk, moba, hip).
template <class Config, class Estimate>
SparseFactory topk_estimator_factory(Estimate estimate) {
  return [estimate](const MechanismParams& p, std::unique_ptr<SparseMethod>* out) -> Status {
    Config c;
    ATTNKIT_RETURN_IF_ERROR(param_int(p, "topk", &c.topk));
    ATTNKIT_RETURN_IF_ERROR(read_block(p, &c.block));
    *out = estimator_method(estimate, c);
    return Status::ok_status();
  };
}

}  // namespace attnkit::sparse_internal
