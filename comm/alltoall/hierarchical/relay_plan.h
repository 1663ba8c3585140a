// Private: the RelayPlan the hierarchical all-to-all agrees on in exchange_counts and keeps in the
// RouteLayout, so dispatch and combine (forward and backward, any number of times) need no further
// metadata round.
#pragma once

#include <cstdint>
#include <vector>

#include "comm/alltoall/alltoall.h"
#include "comm/bootstrap/topology.h"

namespace switchyard::comm {

// One source's rows for one node, as that node's relay holds them. The source sends each distinct
// token once; rows name their token by its index in that list.
struct RelayedRows {
  int source = -1;
  int64_t num_unique = 0;              // distinct tokens the source sends to the node
  std::vector<int64_t> dest_offsets;   // [node size + 1]: rows for each rank of the node, by local
                                       // index, each destination's rows in the source's send order
  std::vector<int64_t> unique_of_row;  // [dest_offsets.back()]: each row's token in that list
};

struct RelayPlan {
  // What the plan was made from: a layout or topology changed since is rejected, not misrouted.
  std::vector<int> node_of_rank;
  std::vector<int64_t> send_offsets;
  std::vector<int64_t> send_tokens;
  std::vector<int64_t> recv_offsets;
  // As a source: the distinct tokens sent to each node, in order of first appearance taking that
  // node's ranks ascending and each one's rows in send order.
  std::vector<std::vector<int64_t>> unique_tokens;
  // As a relay: the rows of every source this rank relays for its own node (NodeMap::relayed_by,
  // ascending, this rank's own rows for its node included).
  std::vector<RelayedRows> relayed;
};

// The layout's plan, checked against the layout and the topology; throws
// CommError(invalid_argument) naming `what` when there is none or it no longer matches.
const RelayPlan& relay_plan_of(const RouteLayout& layout, const Topology& topology,
                               const char* what);

}  // namespace switchyard::comm
