// switchyard::Error: the one exception type of the whole library (comm, kernels, planner, runtime).
// It carries a code a caller can branch on (the C API maps it to a sy_status_t) and a message that
// says what was wrong and what to do about it. SY_ENFORCE is the check that throws it.
//
//   SY_ENFORCE(n > 0, ErrorCode::invalid_argument, "gemm: n = {} must be positive", n);
//   SY_ENFORCE_ARG(n > 0, "gemm: n = {} must be positive", n);  // the same, invalid_argument
//   SY_THROW(ErrorCode::timeout, "no answer from rank {} within {} s", peer, seconds);
//
// The message is formatted with fmt only when the check fails. Error derives from
// std::runtime_error, so catch (const std::exception&) sites see it too.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

#include <fmt/format.h>

namespace switchyard {

enum class ErrorCode {
  invalid_argument,  // the caller passed something wrong (a value, a file, a variable): fix it
  unsupported,       // a valid request this build or machine cannot serve
  out_of_memory,     // an allocation failed
  timeout,           // a wait for peers ran past its time limit
  peer_failure,      // another rank failed or left
  internal,          // the library or the system under it failed (a bug, an I/O or CUDA error)
  aborted            // the object refuses calls: it was aborted, or an earlier call failed half-way
};

// "invalid_argument", "timeout", ...: the enumerator's name.
constexpr const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::invalid_argument: return "invalid_argument";
    case ErrorCode::unsupported: return "unsupported";
    case ErrorCode::out_of_memory: return "out_of_memory";
    case ErrorCode::timeout: return "timeout";
    case ErrorCode::peer_failure: return "peer_failure";
    case ErrorCode::internal: return "internal";
    case ErrorCode::aborted: return "aborted";
  }
  return "unknown";
}

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

namespace detail {
// Out of line of the check so the happy path stays a compare and a branch.
[[noreturn]] inline void throw_error(ErrorCode code, std::string message) {
  throw Error(code, std::move(message));
}
}  // namespace detail

// Throws Error(invalid_argument, message) when cond is false (message built by the caller).
inline void require(bool cond, const std::string& message) {
  if (!cond) detail::throw_error(ErrorCode::invalid_argument, message);
}

}  // namespace switchyard

// Throws switchyard::Error(code, fmt::format(...)) when cond is false.
#define SY_ENFORCE(cond, code, ...)                                                  \
  do {                                                                               \
    if (!(cond)) [[unlikely]]                                                        \
      ::switchyard::detail::throw_error((code), ::fmt::format(__VA_ARGS__));         \
  } while (0)

// SY_ENFORCE with ErrorCode::invalid_argument: a caller's bad value.
#define SY_ENFORCE_ARG(cond, ...) \
  SY_ENFORCE(cond, ::switchyard::ErrorCode::invalid_argument, __VA_ARGS__)

// Throws switchyard::Error(code, fmt::format(...)) unconditionally.
#define SY_THROW(code, ...) ::switchyard::detail::throw_error((code), ::fmt::format(__VA_ARGS__))
