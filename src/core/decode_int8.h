// core/decode_int8.h: split-KV decode over int8 K with integer score arithmetic.
//
// The queries of each row are rounded to int16 once (one f32 scale per row: max |q * mul| / 32767),
// and q . k is summed in int32 from int8 K widened to int16 (vpdpwssd on AVX512-VNNI, vpmaddwd on
// AVX2 and AVX-512 without VNNI, Highway's widening multiply-add elsewhere), each widened K vector
// shared by the query heads of its GQA group. The sum times the query scale and the key's scale is
// the logit; hooks, masks, the online softmax and the value scales are the f32 kernel's. For up to
// 4 rows per kv head, P V is integer too: each row's weights of a tile are rounded to int16 (one
// step per row and tile) and two keys' interleaved V rows are multiplied with them by the same
// pair instruction; more rows keep f32 P V with each widened V vector shared by the rows. The
// error bounds are in docs/kv.md. Compiled per SIMD target in its own translation unit so the tile
// kernel's instantiations per K/V type do not grow.
#pragma once

#include <cstdint>

#include "core/tile_kernel.h"

namespace attnkit::core {

// attend_keys_all_heads for int8 K/V through the integer scores: returns false, having written
// nothing, when the call does not fit them (not softmax, head_dim above 512 or not a whole number of
// int16 vectors, K/V rows not read in place, more than 8 rows per kv head, or a query row that is
// not finite after its multiplier), and the caller then takes attend_keys_all_heads.
bool attend_keys_int8(const Call& call, int64_t seq, int64_t key_begin, int64_t key_end, PartialOut partial,
                      Workspace* ws);

// Whether vpdpwssd may be used (CPU support and not switched off); for tests comparing the paths.
// set_int8_vnni_enabled returns the previous setting.
bool int8_vnni_enabled();
bool set_int8_vnni_enabled(bool on);

}  // namespace attnkit::core
