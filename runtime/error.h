// switchyard::Error: what every runtime call throws, with a code the C API maps to a status and a
// message that says what was wrong and what to do.
#pragma once

#include <stdexcept>
#include <string>

namespace switchyard {

// aborted: the object refuses every call since an earlier one failed half-way (see its message).
enum class ErrorCode {
  invalid_argument,
  unsupported,
  out_of_memory,
  timeout,
  peer_failure,
  internal,
  aborted
};

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

// Enforce-style check: throws Error(invalid_argument) with the message when cond is false.
inline void require(bool cond, const std::string& message) {
  if (!cond) throw Error(ErrorCode::invalid_argument, message);
}

}  // namespace switchyard
