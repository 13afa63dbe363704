// libFuzzer target for the GGUF reader, dequantizer and tokenizer (clang only, see CMakeLists.txt).
// Every input is parsed twice (full and header-only); when a parse succeeds, every metadata
// accessor runs on every key, every small tensor is dequantized and dotted, and when the file has a
// vocabulary the tokenizer is built and run on a fixed string. Seeds: `gguf_tool reduce MODEL OUT`
// writes a ~20 KB copy of the real model's header (see tools/fuzz/CMakeLists.txt).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/gguf.h"
#include "attnkit/tokenizer.h"

namespace gguf = attnkit::gguf;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  for (bool header_only : {false, true}) {
    gguf::OpenOptions o;
    o.header_only = header_only;
    std::unique_ptr<gguf::GgufFile> f;
    if (!gguf::GgufFile::open_memory(data, size, &f, o).ok()) continue;
    uint32_t u;
    int64_t i;
    double d;
    bool b;
    std::string s;
    std::vector<int32_t> ai;
    std::vector<float> af;
    std::vector<std::string_view> as;
    for (const auto& kv : f->metadata()) {
      (void)f->get_u32(kv.key, &u);
      (void)f->get_i64(kv.key, &i);
      (void)f->get_f64(kv.key, &d);
      (void)f->get_bool(kv.key, &b);
      (void)f->get_string(kv.key, &s);
      (void)f->get_array_i32(kv.key, &ai);
      (void)f->get_array_f32(kv.key, &af);
      (void)f->get_array_strings(kv.key, &as);
    }
    std::vector<float> out, x;
    for (const auto& t : f->tensors()) {
      if (t.n_elements > (1 << 16)) continue;
      if (f->dequantize(t, &out).ok()) {
        const uint8_t* raw;
        x.assign(static_cast<size_t>(t.dims[0]), 1.0f);
        float dot;
        if (f->tensor_data(t, &raw).ok()) (void)gguf::dot_row(t.type, raw, t.row_bytes(), t.dims[0], x.data(), &dot);
      }
    }
    std::unique_ptr<attnkit::Tokenizer> tok;
    if (attnkit::Tokenizer::from_gguf(*f, &tok).ok()) {
      attnkit::EncodeOptions eo;
      eo.parse_special = true;
      std::vector<int32_t> ids;
      if (tok->encode("In the beginning <start_of_turn>  caf\xC3\xA9\n\n\xF0\x9F\x98\x80\xFF", eo, &ids).ok()) {
        (void)tok->decode(ids, &s);
      }
    }
  }
  return 0;
}
