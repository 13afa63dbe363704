// attnkit/status.h: how public calls report errors.
//
// Every public entry point returns a Status. A failed Status carries a message that names the
// offending parameter and its value ("head_dim 0 is not supported; expected 1..512"). The C++
// convenience layer turns a failed Status into attnkit::Error via throw_if_error().
#pragma once

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <utility>

namespace attnkit {

enum class StatusCode { kOk = 0, kInvalidArgument, kUnsupported, kOutOfRange, kIoError, kCorruptData, kInternal };

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok_status() { return Status(); }
  static Status invalid_argument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
  static Status unsupported(std::string m) { return {StatusCode::kUnsupported, std::move(m)}; }
  static Status out_of_range(std::string m) { return {StatusCode::kOutOfRange, std::move(m)}; }
  static Status io_error(std::string m) { return {StatusCode::kIoError, std::move(m)}; }
  static Status corrupt_data(std::string m) { return {StatusCode::kCorruptData, std::move(m)}; }
  static Status internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string to_string() const { return ok() ? std::string("ok") : message_; }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// Thrown by the convenience layer (and by the CLI) when a Status is not ok.
class Error : public std::runtime_error {
 public:
  explicit Error(const Status& s) : std::runtime_error(s.message()), code_(s.code()) {}
  StatusCode code() const { return code_; }

 private:
  StatusCode code_;
};

inline void throw_if_error(const Status& s) {
  if (!s.ok()) throw Error(s);
}

}  // namespace attnkit

#define ATTNKIT_RETURN_IF_ERROR(expr)            \
  do {                                           \
    ::attnkit::Status attnkit_status_ = (expr);  \
    if (!attnkit_status_.ok()) return attnkit_status_; \
  } while (0)

// Internal invariants only (never for user input, which gets a Status).
#define ATTNKIT_ASSERT(cond)                                                              \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      std::fprintf(stderr, "attnkit internal error: %s at %s:%d\n", #cond, __FILE__, __LINE__); \
      std::abort();                                                                       \
    }                                                                                     \
  } while (0)
