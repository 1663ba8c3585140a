// The one exception type comm/ throws: a code a caller can branch on and a message that says what
// went wrong and what to do about it.
#pragma once

#include <stdexcept>
#include <string>

namespace switchyard::comm {

// aborted: Communicator::interrupt() stopped a wait (e.g. a pipelined step shutting down).
enum class ErrorCode { invalid_argument, timeout, peer_failure, internal, aborted };

class CommError : public std::runtime_error {
 public:
  CommError(ErrorCode code, const std::string& message)
      : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

}  // namespace switchyard::comm
