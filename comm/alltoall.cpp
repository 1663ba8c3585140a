#include "comm/alltoall.h"

#include <fmt/format.h>

#include "comm/error.h"
#include "comm/flat_alltoall.h"

namespace switchyard::comm {

std::unique_ptr<AllToAll> make_alltoall(std::string_view algorithm, Communicator& comm) {
  if (algorithm == "flat") return std::make_unique<FlatAllToAll>(comm);
  throw CommError(
      ErrorCode::invalid_argument,
      fmt::format("unknown all-to-all algorithm '{}'; known algorithms: flat", algorithm));
}

}  // namespace switchyard::comm
