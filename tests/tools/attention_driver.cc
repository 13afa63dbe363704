// attention_driver: runs one attnkit::attention call on .npy inputs, for cross-checks against
// other implementations (tests/python/test_jax_crosscheck.py).
//
//   attention_driver Q.npy K.npy V.npy OUT.npy LSE.npy [--causal] [--top-left]
//                    [--window LEFT RIGHT] [--scale S] [--threads T]
//
// Q/K/V: float32 (little-endian '<f4'), C order, shape [batch, seq, heads, head_dim] (BSHD, as
// in attention.h). OUT gets [batch, seq_q, heads_q, head_dim_v] float32, LSE [batch, heads_q,
// seq_q] float32. Exit status 0 on success, 1 with a message on stderr otherwise.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "attnkit/attention.h"

namespace {

struct Array {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

// Minimal .npy (format 1.0/2.0/3.0) reader for little-endian float32 C-order arrays.
bool read_npy(const std::string& path, Array* a, std::string* err) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return *err = "cannot open " + path, false;
  char magic[8];
  f.read(magic, 8);
  if (!f || std::memcmp(magic, "\x93NUMPY", 6) != 0) return *err = path + " is not a .npy file", false;
  const int major = static_cast<unsigned char>(magic[6]);
  uint32_t header_len = 0;
  if (major == 1) {
    unsigned char b[2];
    f.read(reinterpret_cast<char*>(b), 2);
    header_len = b[0] | (b[1] << 8);
  } else {
    unsigned char b[4];
    f.read(reinterpret_cast<char*>(b), 4);
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
  }
  std::string header(header_len, '\0');
  f.read(header.data(), header_len);
  if (!f) return *err = path + ": truncated header", false;
  if (header.find("'descr': '<f4'") == std::string::npos) return *err = path + ": dtype must be '<f4': " + header, false;
  if (header.find("'fortran_order': False") == std::string::npos) return *err = path + ": must be C order", false;
  const size_t lp = header.find('(', header.find("'shape'")), rp = header.find(')', lp);
  if (lp == std::string::npos || rp == std::string::npos) return *err = path + ": no shape in header", false;
  std::stringstream ss(header.substr(lp + 1, rp - lp - 1));
  std::string item;
  int64_t n = 1;
  while (std::getline(ss, item, ',')) {
    if (item.find_first_not_of(" ") == std::string::npos) continue;
    a->shape.push_back(std::stoll(item));
    n *= a->shape.back();
  }
  a->data.resize(static_cast<size_t>(n));
  f.read(reinterpret_cast<char*>(a->data.data()), static_cast<std::streamsize>(n * 4));
  if (!f) return *err = path + ": truncated data", false;
  return true;
}

bool write_npy(const std::string& path, const std::vector<int64_t>& shape, const std::vector<float>& data) {
  std::string dims;
  for (int64_t d : shape) dims += std::to_string(d) + ", ";
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  // Magic (6) + version (2) + length (2) + header + '\n' is padded to a multiple of 64 bytes.
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::ofstream f(path, std::ios::binary);
  if (!f) return false;
  f.write("\x93NUMPY\x01\x00", 8);
  const uint16_t len = static_cast<uint16_t>(header.size());
  const char lb[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
  f.write(lb, 2);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  f.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size() * 4));
  return static_cast<bool>(f);
}

int fail(const std::string& msg) {
  std::fprintf(stderr, "attention_driver: %s\n", msg.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 6) {
    return fail("usage: attention_driver Q.npy K.npy V.npy OUT.npy LSE.npy [--causal] [--top-left] "
                "[--window LEFT RIGHT] [--scale S] [--threads T]");
  }
  attnkit::AttentionParams p;
  for (int i = 6; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--causal") {
      p.causal = true;
    } else if (a == "--top-left") {
      p.causal_align = attnkit::CausalAlign::kTopLeft;
    } else if (a == "--window" && i + 2 < argc) {
      p.window_left = std::atoll(argv[++i]);
      p.window_right = std::atoll(argv[++i]);
    } else if (a == "--scale" && i + 1 < argc) {
      p.scale = std::strtof(argv[++i], nullptr);
    } else if (a == "--threads" && i + 1 < argc) {
      p.num_threads = std::atoi(argv[++i]);
    } else {
      return fail("unknown or incomplete argument '" + a + "'");
    }
  }
  Array q, k, v;
  std::string err;
  if (!read_npy(argv[1], &q, &err) || !read_npy(argv[2], &k, &err) || !read_npy(argv[3], &v, &err)) return fail(err);
  for (const Array* t : {&q, &k, &v}) {
    if (t->shape.size() != 4) return fail("inputs must be 4-d [batch, seq, heads, head_dim]");
  }
  using attnkit::DType;
  using attnkit::TensorView;
  const int64_t B = q.shape[0], Sq = q.shape[1], Hq = q.shape[2], Dv = v.shape[3];
  std::vector<float> out(static_cast<size_t>(B * Sq * Hq * Dv)), lse(static_cast<size_t>(B * Hq * Sq));
  const TensorView qv = TensorView::contiguous(q.data.data(), DType::kF32, B, Sq, Hq, q.shape[3]);
  const TensorView kv = TensorView::contiguous(k.data.data(), DType::kF32, k.shape[0], k.shape[1], k.shape[2], k.shape[3]);
  const TensorView vv = TensorView::contiguous(v.data.data(), DType::kF32, v.shape[0], v.shape[1], v.shape[2], v.shape[3]);
  const TensorView ov = TensorView::contiguous(out.data(), DType::kF32, B, Sq, Hq, Dv);
  const attnkit::Status st = attnkit::attention(qv, kv, vv, ov, lse.data(), p);
  if (!st.ok()) return fail(st.message());
  if (!write_npy(argv[4], {B, Sq, Hq, Dv}, out)) return fail(std::string("cannot write ") + argv[4]);
  if (!write_npy(argv[5], {B, Hq, Sq}, lse)) return fail(std::string("cannot write ") + argv[5]);
  return 0;
}
