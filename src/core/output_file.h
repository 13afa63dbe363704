// Output files (JSON, PNG, .npy, caches) that are either complete or absent, never half written.
//
// write_file_atomic writes into a new temporary file in the destination's folder (created with
// O_EXCL under a random name, so nothing already there, such as a planted symlink, is followed or
// reused), checks every write and the close, then renames it over the destination: readers see the
// old file or the new one, and a failed run leaves the old one untouched. A destination that is a
// symlink is replaced by the new file, not followed. A destination that exists and is not a
// regular file (a device such as /dev/stdout or /dev/full, a FIFO) is written in place, since it
// cannot be replaced; its write is checked just the same.
//
// check_output_path is for the start of a command: it fails at once, naming the option, when the
// destination could not be written later (missing or read-only folder, a folder at that path), so
// that a long run never ends in an unwritable path.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>

#include "attnkit/status.h"

namespace attnkit {

// `what` names the output in messages ("--json", "heatmap PNG").
Status check_output_path(const std::string& path, const std::string& what);

// The concatenation of `parts` becomes the file's content.
Status write_file_atomic(const std::string& path, std::initializer_list<std::string_view> parts, const std::string& what);
inline Status write_file_atomic(const std::string& path, std::string_view content, const std::string& what) {
  return write_file_atomic(path, {content}, what);
}

}  // namespace attnkit
