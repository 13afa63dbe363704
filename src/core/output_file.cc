// Atomic output files (see output_file.h).
#include "core/output_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace attnkit {
namespace {

std::string folder_of(const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

std::string errno_text(int e) { return std::strerror(e); }

// Writes all of `parts` to fd; false with errno set on a failed or short write.
bool write_all(int fd, std::initializer_list<std::string_view> parts) {
  for (std::string_view part : parts) {
    const char* p = part.data();
    size_t left = part.size();
    while (left > 0) {
      const ssize_t n = ::write(fd, p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        if (n == 0) errno = EIO;
        return false;
      }
      p += n;
      left -= static_cast<size_t>(n);
    }
  }
  return true;
}

}  // namespace

Status check_output_path(const std::string& path, const std::string& what) {
  if (path.empty()) return Status::invalid_argument(what + ": the output path is empty");
  struct stat st{};
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return Status::io_error(what + " '" + path + "' is a directory, not a file");
    if (!S_ISREG(st.st_mode)) {
      // A device or FIFO is written in place: it must open for writing.
      const int fd = ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
      if (fd < 0) return Status::io_error(what + " '" + path + "' cannot be opened for writing: " + errno_text(errno));
      ::close(fd);
      return Status::ok_status();
    }
  }
  const std::string dir = folder_of(path);
  struct stat ds{};
  if (::stat(dir.c_str(), &ds) != 0)
    return Status::io_error(what + " '" + path + "': folder '" + dir + "' does not exist (" + errno_text(errno) + ")");
  if (!S_ISDIR(ds.st_mode)) return Status::io_error(what + " '" + path + "': '" + dir + "' is not a folder");
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    return Status::io_error(what + " '" + path + "': folder '" + dir + "' is not writable (" + errno_text(errno) + ")");
  return Status::ok_status();
}

Status write_file_atomic(const std::string& path, std::initializer_list<std::string_view> parts, const std::string& what) {
  ATTNKIT_RETURN_IF_ERROR(check_output_path(path, what));
  struct stat st{};
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return Status::io_error(what + ": cannot open '" + path + "' for writing: " + errno_text(errno));
    const bool ok = write_all(fd, parts);
    const int e = errno;
    if (::close(fd) != 0 || !ok) return Status::io_error(what + ": writing '" + path + "' failed: " + errno_text(ok ? errno : e));
    return Status::ok_status();
  }
  const std::string name = std::filesystem::path(path).filename().string();
  std::string tmpl = folder_of(path) + "/." + name + ".tmp.XXXXXX";
  // mkstemp creates the file with O_CREAT | O_EXCL under a fresh random name: an existing entry
  // (a file or symlink someone placed there) makes it pick another name, never follow it.
  const int fd = ::mkstemp(tmpl.data());
  if (fd < 0) return Status::io_error(what + ": cannot create a temporary file next to '" + path + "': " + errno_text(errno));
  // mkstemp uses mode 0600; give the result the permissions a plain create would (0666 & ~umask).
  const mode_t mask = ::umask(0);
  ::umask(mask);
  (void)::fchmod(fd, 0666 & ~mask);
  bool ok = write_all(fd, parts);
  int e = errno;
  if (ok && ::fsync(fd) != 0) {
    ok = false;
    e = errno;
  }
  if (::close(fd) != 0 && ok) {
    ok = false;
    e = errno;
  }
  if (ok && ::rename(tmpl.c_str(), path.c_str()) != 0) {
    ok = false;
    e = errno;
  }
  if (!ok) {
    ::unlink(tmpl.c_str());
    return Status::io_error(what + ": writing '" + path + "' failed: " + errno_text(e) + " (the previous file, if any, is unchanged)");
  }
  return Status::ok_status();
}

}  // namespace attnkit
