// gguf_tool: a small driver that exposes the GGUF reader, dequantizer and tokenizer to the Python
// tests (tests/python/test_gguf_*.py, test_tokenizer_*.py), which compare them with the `gguf` and
// `sentencepiece` PyPI packages.
//   gguf_tool info FILE                      -> JSON: version, alignment, metadata, tensor infos
//   gguf_tool dequant FILE NAME BEGIN COUNT OUT.f32   rows [BEGIN, BEGIN+COUNT) of tensor NAME
//   gguf_tool dequant-batch FILE SPEC OUT.f32         each SPEC line "NAME BEGIN COUNT"; rows
//                                                      of all lines concatenated into OUT
//   gguf_tool dequant-raw TYPE_ID IN.bin N OUT.f32    N values of type TYPE_ID from raw blocks
//   gguf_tool types                           -> JSON: every known type id with name/block sizes
//   gguf_tool tokenize FILE CORPUS OUT.jsonl [--bos] [--special] [--nul]
//        one JSON line per corpus record: {"ids": [...], "decoded": [bytes...]}; records are the
//        lines of CORPUS (without '\n'), or with --nul its NUL-separated parts (may hold '\n')
//   gguf_tool model-path                      -> prints default_model_path()
//   gguf_tool reduce FILE OUT                 -> a ~20 KB copy of FILE's header (fuzz seed)
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "attnkit/gguf.h"
#include "attnkit/tokenizer.h"
#include "../model/gguf_writer.h"

using attnkit::Status;
namespace gguf = attnkit::gguf;
using nlohmann::json;

namespace {

int fail(const Status& s) {
  std::fprintf(stderr, "gguf_tool: %s\n", s.message().c_str());
  return 1;
}

json scalar_json(const gguf::Value& v) {
  switch (v.type) {
    case gguf::ValueType::kUint8:
    case gguf::ValueType::kUint16:
    case gguf::ValueType::kUint32:
    case gguf::ValueType::kUint64: return v.u64;
    case gguf::ValueType::kInt8:
    case gguf::ValueType::kInt16:
    case gguf::ValueType::kInt32:
    case gguf::ValueType::kInt64: return v.i64;
    case gguf::ValueType::kFloat32:
    case gguf::ValueType::kFloat64: return v.f64;
    case gguf::ValueType::kBool: return v.b;
    case gguf::ValueType::kString: return std::string(v.str);
    default: return nullptr;
  }
}

json value_json(const gguf::Value& v) {
  if (v.type != gguf::ValueType::kArray) return scalar_json(v);
  json a = json::array();
  if (v.array_type == gguf::ValueType::kString) {
    for (auto s : v.array_strings) a.push_back(std::string(s));
  } else if (v.array_type == gguf::ValueType::kArray) {
    for (const auto& item : v.array_items) a.push_back(value_json(item));
  } else {
    // Read items through a one-item view to reuse scalar_json.
    const size_t es = gguf::value_scalar_size(v.array_type);
    for (uint64_t i = 0; i < v.array_size; ++i) {
      gguf::Value item;
      item.type = v.array_type;
      const uint8_t* p = v.array_raw + i * es;
      switch (v.array_type) {
        case gguf::ValueType::kUint8: item.u64 = p[0]; break;
        case gguf::ValueType::kInt8: item.i64 = static_cast<int8_t>(p[0]); break;
        case gguf::ValueType::kBool: item.b = p[0] != 0; break;
        case gguf::ValueType::kUint16: { uint16_t x; std::memcpy(&x, p, 2); item.u64 = x; break; }
        case gguf::ValueType::kInt16: { int16_t x; std::memcpy(&x, p, 2); item.i64 = x; break; }
        case gguf::ValueType::kUint32: { uint32_t x; std::memcpy(&x, p, 4); item.u64 = x; break; }
        case gguf::ValueType::kInt32: { int32_t x; std::memcpy(&x, p, 4); item.i64 = x; break; }
        case gguf::ValueType::kFloat32: { float x; std::memcpy(&x, p, 4); item.f64 = x; break; }
        case gguf::ValueType::kUint64: { uint64_t x; std::memcpy(&x, p, 8); item.u64 = x; break; }
        case gguf::ValueType::kInt64: { int64_t x; std::memcpy(&x, p, 8); item.i64 = x; break; }
        case gguf::ValueType::kFloat64: { double x; std::memcpy(&x, p, 8); item.f64 = x; break; }
        default: break;
      }
      a.push_back(scalar_json(item));
    }
  }
  return a;
}

int cmd_info(const std::string& path) {
  std::unique_ptr<gguf::GgufFile> f;
  Status s = gguf::GgufFile::open(path, &f);
  if (!s.ok()) return fail(s);
  json j;
  j["version"] = f->version();
  j["alignment"] = f->alignment();
  j["data_offset"] = f->data_offset();
  json md = json::array();
  for (const auto& kv : f->metadata()) {
    json e;
    e["key"] = std::string(kv.key);
    e["type"] = gguf::value_type_name(kv.value.type);
    if (kv.value.type == gguf::ValueType::kArray) e["array_type"] = gguf::value_type_name(kv.value.array_type);
    e["value"] = value_json(kv.value);
    md.push_back(e);
  }
  j["metadata"] = md;
  json ts = json::array();
  for (const auto& t : f->tensors()) {
    json dims = json::array();
    for (int d = 0; d < t.n_dims; ++d) dims.push_back(t.dims[d]);
    ts.push_back({{"name", std::string(t.name)}, {"dims", dims}, {"type", static_cast<uint32_t>(t.type)},
                  {"offset", t.offset}, {"file_offset", t.file_offset}, {"n_bytes", t.n_bytes}});
  }
  j["tensors"] = ts;
  std::cout << j.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
  return 0;
}

int write_f32(const std::string& out, const std::vector<float>& v) {
  std::ofstream o(out, std::ios::binary);
  o.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * 4));
  if (!o) return fail(Status::io_error("cannot write " + out));
  return 0;
}

int cmd_dequant(const std::string& path, const std::string& name, int64_t begin, int64_t count, const std::string& out) {
  std::unique_ptr<gguf::GgufFile> f;
  Status s = gguf::GgufFile::open(path, &f);
  if (!s.ok()) return fail(s);
  const gguf::TensorInfo* t = f->find_tensor(name);
  if (t == nullptr) return fail(Status::invalid_argument("no tensor '" + name + "'"));
  std::vector<float> v(static_cast<size_t>(count * t->dims[0]));
  s = f->dequantize_rows(*t, begin, count, v.data());
  if (!s.ok()) return fail(s);
  return write_f32(out, v);
}

int cmd_dequant_batch(const std::string& path, const std::string& spec, const std::string& out) {
  std::unique_ptr<gguf::GgufFile> f;
  Status s = gguf::GgufFile::open(path, &f);
  if (!s.ok()) return fail(s);
  std::ifstream in(spec);
  std::ofstream o(out, std::ios::binary);
  std::string name;
  int64_t begin = 0, count = 0;
  std::vector<float> v;
  while (in >> name >> begin >> count) {
    const gguf::TensorInfo* t = f->find_tensor(name);
    if (t == nullptr) return fail(Status::invalid_argument("no tensor '" + name + "'"));
    v.assign(static_cast<size_t>(count * t->dims[0]), 0.f);
    s = f->dequantize_rows(*t, begin, count, v.data());
    if (!s.ok()) return fail(s);
    o.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * 4));
  }
  return o ? 0 : fail(Status::io_error("cannot write " + out));
}

int cmd_dequant_raw(uint32_t type, const std::string& in, int64_t n, const std::string& out) {
  std::ifstream i(in, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(i)), std::istreambuf_iterator<char>());
  std::vector<float> v(static_cast<size_t>(n));
  Status s = gguf::dequantize_row(static_cast<gguf::TensorType>(type), bytes.data(), bytes.size(), n, v.data());
  if (!s.ok()) return fail(s);
  return write_f32(out, v);
}

int cmd_types() {
  json j = json::object();
  for (uint32_t id = 0; id < 64; ++id) {
    const gguf::TypeTraits* tr = gguf::type_traits(static_cast<gguf::TensorType>(id));
    if (tr == nullptr) continue;
    j[std::to_string(id)] = {{"name", tr->name}, {"block_elems", tr->block_elems}, {"block_bytes", tr->block_bytes},
                             {"can_dequantize", tr->can_dequantize}};
  }
  std::cout << j.dump() << "\n";
  return 0;
}

int cmd_tokenize(const std::string& path, const std::string& corpus, const std::string& out, bool bos, bool special,
                 bool nul) {
  std::unique_ptr<gguf::GgufFile> f;
  Status s = gguf::GgufFile::open(path, &f);
  if (!s.ok()) return fail(s);
  std::unique_ptr<attnkit::Tokenizer> tok;
  s = attnkit::Tokenizer::from_gguf(*f, &tok);
  if (!s.ok()) return fail(s);
  std::ifstream in(corpus, std::ios::binary);
  if (!in) return fail(Status::io_error("cannot read " + corpus));
  std::ofstream o(out, std::ios::binary);
  std::string line;
  attnkit::EncodeOptions opt;
  opt.add_bos = bos;
  opt.parse_special = special;
  std::vector<int32_t> ids;
  while (std::getline(in, line, nul ? '\0' : '\n')) {
    s = tok->encode(line, opt, &ids);
    if (!s.ok()) return fail(s);
    std::string decoded;
    s = tok->decode(ids, &decoded);
    if (!s.ok()) return fail(s);
    json j;
    j["ids"] = ids;
    // Decoded text goes out as a list of byte values so invalid UTF-8 cannot hide in the JSON.
    j["decoded"] = std::vector<uint8_t>(decoded.begin(), decoded.end());
    o << j.dump() << "\n";
  }
  return o ? 0 : fail(Status::io_error("cannot write " + out));
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> a(argv + 1, argv + argc);
  try {
    if (a.size() == 2 && a[0] == "info") return cmd_info(a[1]);
    if (a.size() == 6 && a[0] == "dequant") return cmd_dequant(a[1], a[2], std::stoll(a[3]), std::stoll(a[4]), a[5]);
    if (a.size() == 4 && a[0] == "dequant-batch") return cmd_dequant_batch(a[1], a[2], a[3]);
    if (a.size() == 5 && a[0] == "dequant-raw") return cmd_dequant_raw(std::stoul(a[1]), a[2], std::stoll(a[3]), a[4]);
    if (a.size() == 1 && a[0] == "types") return cmd_types();
    if (a.size() == 3 && a[0] == "reduce") {
      std::unique_ptr<gguf::GgufFile> f;
      Status s = gguf::GgufFile::open(a[1], &f);
      gguf::testing::Bytes b;
      if (s.ok()) s = gguf::testing::reduced_copy(*f, 600, 2, &b);
      if (!s.ok()) return fail(s);
      std::ofstream o(a[2], std::ios::binary);
      o.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
      return o ? 0 : fail(Status::io_error("cannot write " + a[2]));
    }
    if (a.size() == 1 && a[0] == "model-path") {
      std::cout << gguf::default_model_path() << "\n";
      return 0;
    }
    if (a.size() >= 4 && a[0] == "tokenize") {
      bool bos = false, special = false, nul = false;
      for (size_t i = 4; i < a.size(); ++i) {
        if (a[i] == "--bos") bos = true;
        else if (a[i] == "--special") special = true;
        else if (a[i] == "--nul") nul = true;
        else return fail(Status::invalid_argument("unknown option " + a[i]));
      }
      return cmd_tokenize(a[1], a[2], a[3], bos, special, nul);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gguf_tool: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "usage: gguf_tool info|dequant|dequant-raw|types|tokenize|model-path ... (see source)\n");
  return 2;
}
