// Private: the "hierarchical" all-to-all, rail-aligned as in DeepEP. A source sends each distinct
// token once per destination node, to its relay there (NodeMap::relay: the rank with the source's
// local rank, a substitute on a smaller ragged node), together with the side data of every row;
// the relay forwards the rows to the node's destination ranks. Rows going to the source's own node
// take one hop. Combine runs the reverse: each rank returns its results to the relays of their
// sources, a relay sums them per token (destination ranks ascending) and sends one row per
// (token, node) back, and the source adds the nodes' sums (nodes ascending).
//
// Pipelined: every (source, destination) share of rows is cut into `chunks` pieces by row count
// (piece c of n rows: rows n*c/C .. n*(c+1)/C, so both ends know every piece without talking, and
// empty pieces send nothing). Dispatch crosses nodes one message per chunk (the distinct tokens
// that chunk brings first, then the side data of its rows), and a relay forwards chunk c inside its
// node as soon as chunk c arrived from all its sources, while chunk c+1 is still crossing. Combine
// returns results to the relay chunk by chunk; once chunk c arrived from every rank of the node,
// the relay sums each token whose last row was in chunk c (destination ranks ascending, exactly as
// unchunked) and sends those sums across while later chunks are still summed. Results, sum order
// and side data are the same for every chunk count.
//
// Each phase posts all its receives before its sends, and the second hop's receives are posted
// before the first hop starts, so a relay's forwards are matched as soon as they are sent; waits
// for one chunk keep every other message of the phase moving. The transport decides the wire per
// link class (the communicator routes intra-node peers to its intra transport, e.g. shm, and the
// rest to the inter transport).
#pragma once

#include "comm/alltoall/alltoall.h"
#include "comm/alltoall/scratch.h"

namespace switchyard::comm {

struct HierarchicalOptions {
  // Pieces each (source, destination) share of rows is cut into (see above); 0: the environment
  // variable SWITCHYARD_RELAY_CHUNKS if set, else kDefaultChunks. 1 turns pipelining off. Every
  // rank must use the same value.
  int chunks = 0;
  static constexpr int kDefaultChunks = 8;
};

class HierarchicalAllToAll final : public AllToAll {
 public:
  explicit HierarchicalAllToAll(Communicator& comm, HierarchicalOptions options = {});

  std::string_view name() const override { return "hierarchical"; }
  // Also agrees on the relay plan (the relays learn each source's distinct tokens per node) and
  // stores it in layout.relay: three rounds of small messages, the first crossing nodes once per
  // (rank, node).
  void exchange_counts(RouteLayout& layout) override;
  void dispatch(const RouteLayout& layout, const void* tokens, size_t token_bytes, const void* side,
                size_t side_bytes, void* recv_tokens, void* recv_side) override;
  void combine(const RouteLayout& layout, DataType dtype, const void* rows, int64_t elems,
               void* out) override;

  int chunks() const { return chunks_; }

 private:
  Communicator& comm_;
  int chunks_ = 1;
  // Message buffers kept between calls (see scratch.h): one call's shape reuses the last one's.
  ScratchBuffers scratch_;
};

}  // namespace switchyard::comm
