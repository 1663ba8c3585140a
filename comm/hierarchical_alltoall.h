// Private: the "hierarchical" all-to-all, rail-aligned as in DeepEP. A source sends each distinct
// token once per destination node, to its relay there (NodeMap::relay: the rank with the source's
// local rank, a substitute on a smaller ragged node), together with the side data of every row;
// the relay forwards the rows to the node's destination ranks. Rows going to the source's own node
// take one hop. Combine runs the reverse: each rank returns its results to the relays of their
// sources, a relay sums them per token (destination ranks ascending) and sends one row per
// (token, node) back, and the source adds the nodes' sums (nodes ascending).
//
// Each phase posts all its receives before its sends, and the second hop's receives are posted
// before the first hop starts, so a relay's forwards are matched as soon as they are sent. The
// transport decides the wire per link class (the communicator routes intra-node peers to its intra
// transport, e.g. shm, and the rest to the inter transport).
#pragma once

#include "comm/alltoall.h"

namespace switchyard::comm {

class HierarchicalAllToAll final : public AllToAll {
 public:
  explicit HierarchicalAllToAll(Communicator& comm) : comm_(comm) {}

  std::string_view name() const override { return "hierarchical"; }
  // Also agrees on the relay plan (the relays learn each source's distinct tokens per node) and
  // stores it in layout.relay: three rounds of small messages, the first crossing nodes once per
  // (rank, node).
  void exchange_counts(RouteLayout& layout) override;
  void dispatch(const RouteLayout& layout, const void* tokens, size_t token_bytes, const void* side,
                size_t side_bytes, void* recv_tokens, void* recv_side) override;
  void combine(const RouteLayout& layout, DataType dtype, const void* rows, int64_t elems,
               void* out) override;

 private:
  Communicator& comm_;
};

}  // namespace switchyard::comm
