// core/tile_kernel.cc: the tiled online-softmax attention kernel (Highway, compiled per target).
//
// Structure (FlashAttention-2 order, Rabe & Staats' online softmax), one part per header:
//   tile_rows-inl.h          a RowBlock holds up to kTileQ query rows (f32 copies of q pre-multiplied
//                            by their logit multiplier, and the running max m, denominator l and
//                            unnormalized output O of each row); a TileKeys up to kTileK keys.
//   tile_prefill-inl.h       process_tile() visits one tile for a block of any size:
//                              S = Q K^T  register-blocked microkernel over the transposed queries,
//                                         or one dot product per (row, key) for <= 8 rows;
//                            run_job() walks a BlockJob's spans tile by tile.
//   tile_decode-inl.h        decode_tile() scores one tile for the blocks of all kv heads key-major
//                            (one sweep of adjacent K rows per position); decode_keys() walks a
//                            split-KV range of keys.
//   tile_finish-inl.h        finish_tile(), the rest of either tile:
//                              hooks      the variant's logit transform (softcap, ALiBi, additive mask)
//                              mask       -inf for invisible keys, only on tiles that need it
//                              normalize  softmax: rescale by e^{m_old - m_new}, P = e^{S - m_new};
//                                         other variants (sigmoid, relu): P = weight(S)
//                              P V        O += P V, register-blocked, V rows read in place when possible
//   tile_variants-inl.h      the variants (softmax, sigmoid, relu) and their hooks; OutputTransform
//                            divides by l and gives the LSE (the sink logit is added by write_final_row).
//   tile_mass-inl.h          mass_job(), a second pass of scores giving each key's attention mass
//                            from the rows' final LSE (for KV-cache policies).
//   tile_microkernels-inl.h  the SIMD pieces: score and P V microkernels, exp, lane reductions.
// This file instantiates them per K/V element type (f32, bf16, f16, int8; queries of any float
// dtype are widened when a row block is set up) and exports the per-target entry points.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "core/tile_kernel.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include "core/tile_decode-inl.h"
#include "core/tile_finish-inl.h"
#include "core/tile_kernel.h"
#include "core/tile_mass-inl.h"
#include "core/tile_microkernels-inl.h"
#include "core/tile_prefill-inl.h"
#include "core/tile_rows-inl.h"
#include "core/tile_variants-inl.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit::core::HWY_NAMESPACE {

template <typename T>
void attend_block_t(const Call& c, const BlockJob& job, Workspace* ws) {
  const SeqCtx s = make_seq_ctx<T>(c, job.seq);
  with_variant(c, s.r, [&](const auto& var) { run_job<T>(s, job, ws, var); });
}

void AttendBlock(const Call& c, const BlockJob& job, Workspace* ws) {
  switch (c.k.dtype) {
    case DType::kF32: attend_block_t<float>(c, job, ws); break;
    case DType::kBF16: attend_block_t<hwy::bfloat16_t>(c, job, ws); break;
    case DType::kF16: attend_block_t<hwy::float16_t>(c, job, ws); break;
    case DType::kI8: attend_block_t<int8_t>(c, job, ws); break;
  }
}

template <typename T>
void decode_t(const Call& c, int64_t seq, int64_t kb, int64_t ke, PartialOut out, Workspace* ws) {
  const SeqCtx s = make_seq_ctx<T>(c, seq);
  with_variant(c, s.r, [&](const auto& var) { decode_keys<T>(s, kb, ke, out, ws, var); });
}

void AttendKeysAllHeads(const Call& c, int64_t seq, int64_t kb, int64_t ke, PartialOut out, Workspace* ws) {
  switch (c.k.dtype) {
    case DType::kF32: decode_t<float>(c, seq, kb, ke, out, ws); break;
    case DType::kBF16: decode_t<hwy::bfloat16_t>(c, seq, kb, ke, out, ws); break;
    case DType::kF16: decode_t<hwy::float16_t>(c, seq, kb, ke, out, ws); break;
    case DType::kI8: decode_t<int8_t>(c, seq, kb, ke, out, ws); break;
  }
}

void AttendMass(const Call& c, const BlockJob& job, const float* row_lse, float* mass, Workspace* ws) {
  switch (c.k.dtype) {
    case DType::kF32: mass_job<float>(make_seq_ctx<float>(c, job.seq), job, row_lse, mass, ws); break;
    case DType::kBF16: mass_job<hwy::bfloat16_t>(make_seq_ctx<hwy::bfloat16_t>(c, job.seq), job, row_lse, mass, ws); break;
    case DType::kF16: mass_job<hwy::float16_t>(make_seq_ctx<hwy::float16_t>(c, job.seq), job, row_lse, mass, ws); break;
    case DType::kI8: mass_job<int8_t>(make_seq_ctx<int8_t>(c, job.seq), job, row_lse, mass, ws); break;
  }
}

const char* TargetName() { return hwy::TargetName(HWY_TARGET); }

}  // namespace attnkit::core::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attnkit::core {
HWY_EXPORT(AttendBlock);
HWY_EXPORT(AttendKeysAllHeads);
HWY_EXPORT(TargetName);
HWY_EXPORT(AttendMass);

void attend_block(const Call& call, const BlockJob& job, Workspace* ws) {
  HWY_DYNAMIC_DISPATCH(AttendBlock)(call, job, ws);
}
void attend_keys_all_heads(const Call& call, int64_t seq, int64_t key_begin, int64_t key_end, PartialOut partial,
                           Workspace* ws) {
  HWY_DYNAMIC_DISPATCH(AttendKeysAllHeads)(call, seq, key_begin, key_end, partial, ws);
}
void attend_mass(const Call& call, const BlockJob& job, const float* row_lse, float* mass, Workspace* ws) {
  HWY_DYNAMIC_DISPATCH(AttendMass)(call, job, row_lse, mass, ws);
}
const char* dispatched_target_name() { return HWY_DYNAMIC_DISPATCH(TargetName)(); }
}  // namespace attnkit::core
#endif
