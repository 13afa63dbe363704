// Capturing activations from the model's taps into .npy files (for the fidelity tools).
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "attnkit/model.h"
#include "core/output_file.h"

namespace attnkit::model {

// NumPy format 1.0: magic "\x93NUMPY", version 1.0, u16 header length, an ASCII dict padded with
// spaces and a newline so that the data starts at a multiple of 64 bytes.
Status write_npy(const std::string& path, const float* data, const std::vector<int64_t>& shape) {
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
  int64_t count = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0) return Status::invalid_argument("write_npy: shape[" + std::to_string(i) + "] " + std::to_string(shape[i]) + " is negative");
    dict += std::to_string(shape[i]) + (shape.size() == 1 || i + 1 < shape.size() ? "," : "");
    if (i + 1 < shape.size()) dict += " ";
    count *= shape[i];
  }
  dict += "), }";
  const size_t base = 10;
  size_t total = base + dict.size() + 1;
  const size_t pad = (64 - total % 64) % 64;
  dict += std::string(pad, ' ') + "\n";
  const char magic[] = "\x93NUMPY\x01\x00";
  const uint16_t hl = static_cast<uint16_t>(dict.size());
  const char hlb[2] = {static_cast<char>(hl & 0xff), static_cast<char>(hl >> 8)};
  return write_file_atomic(path,
                           {std::string_view(magic, 8), std::string_view(hlb, 2), dict,
                            std::string_view(reinterpret_cast<const char*>(data), count * sizeof(float))},
                           "write_npy");
}

Status capture_activations(Model* model, const std::vector<int32_t>& tokens, const std::vector<int64_t>& layers,
                           const std::string& dir) {
  if (model == nullptr) return Status::invalid_argument("capture_activations: model is null");
  if (tokens.empty()) return Status::invalid_argument("capture_activations: tokens is empty");
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::io_error("capture_activations: cannot create '" + dir + "': " + ec.message());
  const GemmaConfig& c = model->config();
  for (int64_t l : layers)
    if (l < 0 || l >= c.n_layer)
      return Status::out_of_range("capture_activations: layer " + std::to_string(l) + " is outside [0, " +
                                  std::to_string(c.n_layer) + ")");
  const int64_t n = static_cast<int64_t>(tokens.size());
  struct Buf {
    std::vector<float> q_pre, q_post, k_pre, k_post, v;
  };
  std::vector<Buf> bufs(static_cast<size_t>(c.n_layer));
  auto append = [](std::vector<float>* dst, const float* src, int64_t count) { dst->insert(dst->end(), src, src + count); };
  Taps taps;
  taps.layers = layers;
  taps.on_layer = [&](const TapData& t) {
    Buf& b = bufs[static_cast<size_t>(t.layer)];
    append(&b.q_pre, t.q_pre, t.n * c.n_head * c.head_dim);
    append(&b.q_post, t.q_post, t.n * c.n_head * c.head_dim);
    append(&b.k_pre, t.k_pre, t.n * c.n_head_kv * c.head_dim);
    append(&b.k_post, t.k_post, t.n * c.n_head_kv * c.head_dim);
    append(&b.v, t.v, t.n * c.n_head_kv * c.head_dim_v);
  };
  const auto hold = model->lock();  // the taps and the cache belong to this capture until it ends
  model->set_taps(taps);
  model->reset();
  ForwardOutputs none;
  Status st = model->forward(tokens.data(), n, none);
  model->clear_taps();
  ATTNKIT_RETURN_IF_ERROR(st);
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const Buf& b = bufs[static_cast<size_t>(l)];
    if (b.q_pre.empty()) continue;
    char name[32];
    std::snprintf(name, sizeof(name), "layer%02lld_", static_cast<long long>(l));
    const std::string p = dir + "/" + name;
    ATTNKIT_RETURN_IF_ERROR(write_npy(p + "q_pre.npy", b.q_pre.data(), {n, c.n_head, c.head_dim}));
    ATTNKIT_RETURN_IF_ERROR(write_npy(p + "q_post.npy", b.q_post.data(), {n, c.n_head, c.head_dim}));
    ATTNKIT_RETURN_IF_ERROR(write_npy(p + "k_pre.npy", b.k_pre.data(), {n, c.n_head_kv, c.head_dim}));
    ATTNKIT_RETURN_IF_ERROR(write_npy(p + "k_post.npy", b.k_post.data(), {n, c.n_head_kv, c.head_dim}));
    ATTNKIT_RETURN_IF_ERROR(write_npy(p + "v.npy", b.v.data(), {n, c.n_head_kv, c.head_dim_v}));
  }
  std::ostringstream f;
  f << "{\"n_tokens\": " << n << ", \"n_head\": " << c.n_head << ", \"n_head_kv\": " << c.n_head_kv
    << ", \"head_dim\": " << c.head_dim << ", \"tokens\": [";
  for (int64_t i = 0; i < n; ++i) f << (i ? "," : "") << tokens[static_cast<size_t>(i)];
  f << "]}\n";
  return write_file_atomic(dir + "/tokens.json", f.str(), "capture_activations");
}

}  // namespace attnkit::model
