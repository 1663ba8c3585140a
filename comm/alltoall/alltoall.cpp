#include "comm/alltoall/alltoall.h"

#include <fmt/format.h>

#include "comm/alltoall/flat/flat_alltoall.h"
#include "comm/alltoall/hierarchical/hierarchical_alltoall.h"
#include "comm/alltoall/node_map.h"
#include "comm/error.h"

namespace switchyard::comm {

std::unique_ptr<AllToAll> make_alltoall(std::string_view algorithm, Communicator& comm) {
  if (algorithm == "flat") return std::make_unique<FlatAllToAll>(comm);
  if (algorithm == "hierarchical") return std::make_unique<HierarchicalAllToAll>(comm);
  if (algorithm == "auto") {
    // Two hops only pay off when there is a node to cross and a node to fan out in.
    const NodeMap nodes(comm.topology());
    if (nodes.num_nodes() > 1 && nodes.max_node_size() > 1) {
      return std::make_unique<HierarchicalAllToAll>(comm);
    }
    return std::make_unique<FlatAllToAll>(comm);
  }
  throw CommError(ErrorCode::invalid_argument,
                  fmt::format("unknown all-to-all algorithm '{}'; known algorithms: flat, "
                              "hierarchical, auto",
                              algorithm));
}

}  // namespace switchyard::comm
