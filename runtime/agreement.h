// Collective checks: every rank learns whether every rank could go on, and whether all ranks hold
// the same configuration, before any of them acts on it. A failure is reported on every rank of the
// call with the failing rank(s) and their messages, or with the fields the ranks disagree on and
// each rank's value, so that no rank runs ahead of the others into a mismatched exchange.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/error.h"
#include "comm/communicator.h"
#include "planner/placement.h"

namespace switchyard {

// An error every rank of the call raised together, before any of them changed anything: the
// object the call was made on is still usable.
class CollectiveFailure : public Error {
 public:
  using Error::Error;
};

// What a rank knows about its own part of a call before the collective: nothing wrong, or the
// error it would have thrown on its own.
struct LocalStatus {
  std::optional<ErrorCode> code;
  std::string message;

  bool failed() const { return code.has_value(); }
  // Runs check; an Error, std::invalid_argument or std::bad_alloc it throws becomes this status
  // instead of leaving the rank alone with its failure.
  template <typename Check>
  void capture(Check&& check) {
    if (failed()) return;
    try {
      check();
    } catch (const Error& e) {
      code = e.code();
      message = e.what();
    } catch (const std::bad_alloc&) {
      code = ErrorCode::out_of_memory;
      message = "out of memory";
    } catch (const std::invalid_argument& e) {
      code = ErrorCode::invalid_argument;
      message = e.what();
    }
  }
};

// A named value every rank must hold the same (name, value as text).
using AgreedField = std::pair<std::string, std::string>;

// The placement as fields (its device count, then the devices of each expert), so that a
// disagreement names the experts placed differently.
void append_placement_fields(const planner::ExpertPlacement& placement,
                             std::vector<AgreedField>& fields);

// One collective over comm (a digest per rank, then, only on a mismatch, the values): throws
// CollectiveFailure on every rank when some rank's status failed (naming each failing rank and its message) or
// when the ranks' fields differ (naming each differing field with the ranks holding each value,
// then `remedy`). what names the call, e.g. "MoeLayer creation".
void agree(comm::Communicator& comm, std::string_view what, const LocalStatus& status,
           const std::vector<AgreedField>& fields, std::string_view remedy);

// The cheap form for calls that already make a collective: the caller folds
// failed_count = sum over ranks of status.failed() into it, and calls this only when it is
// non-zero. Gathers every rank's message (a second collective, on the error path only) and throws
// CollectiveFailure on every rank.
[[noreturn]] void raise_collective_failure(comm::Communicator& comm, std::string_view what,
                                           const LocalStatus& status);

}  // namespace switchyard
