// testing/base64.h: decoding the base64 blobs (RFC 4648, standard alphabet, '=' padding) that the
// reference scripts in scripts/ write into tests/data/ golden files.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace attnkit::testing {

// Bytes of a base64 string; stops at the first '='. A character outside the alphabet makes the
// result empty (a corrupt golden file then fails its size check instead of reading garbage).
std::vector<uint8_t> base64_decode(const std::string& text);

}  // namespace attnkit::testing
