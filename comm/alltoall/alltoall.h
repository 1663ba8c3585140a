// Expert-parallel all-to-all: dispatch sends each token to the ranks that need it, combine brings
// per-rank results back and sums them per token. Algorithms implement AllToAll and are made by name
// (make_alltoall), so that hierarchical algorithms slot in beside flat.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "comm/communicator.h"

namespace switchyard::comm {

// Element type of combine's rows. bf16 (comm/bf16.h: uint16_t bit patterns) is added in fp32 and
// rounded to bf16 once per sum: flat rounds each token's total; hierarchical rounds each node's sum
// before it crosses back (two bytes per element on the wire, as DeepEP) and then the total, so the
// two may differ in the last bit where a node's sum is not exact in bf16.
enum class DataType { fp32, fp64, bf16 };

// Private to the algorithms that relay rows through other ranks (hierarchical): what each relay
// must know about the rows it forwards, agreed on by exchange_counts.
struct RelayPlan;

// Which source tokens go to which destination rank. A token appears at most once per destination
// (a token routed to two experts of one rank is sent there once).
struct RouteLayout {
  int world = 0;
  int64_t num_tokens = 0;             // tokens on this rank
  std::vector<int64_t> send_offsets;  // [world + 1]: rows send_offsets[d]..[d+1] go to rank d
  std::vector<int64_t> send_tokens;   // token index of every send row, grouped by destination
  std::vector<int64_t> recv_offsets;  // [world + 1]: rows received from each source rank,
                                      // filled by AllToAll::exchange_counts
  // Filled by exchange_counts of relaying algorithms (hierarchical) and used by their dispatch and
  // combine; other algorithms leave it empty. Opaque: copy or move it with the layout.
  std::shared_ptr<const RelayPlan> relay;

  int64_t num_send_rows() const { return send_offsets.empty() ? 0 : send_offsets.back(); }
  int64_t num_recv_rows() const { return recv_offsets.empty() ? 0 : recv_offsets.back(); }
};

// What one rank sent in one dispatch or combine call (counts exchange excluded).
struct PhaseStats {
  int64_t bytes_sent = 0;            // to other ranks, every byte on the wire
  int64_t bytes_to_other_nodes = 0;  // the part of bytes_sent that went to ranks on other nodes
  // Token copies (dispatch) or result rows (combine) sent to ranks on other nodes: flat sends one
  // per (token, destination rank), hierarchical one per (token, destination node).
  int64_t rows_to_other_nodes = 0;
};

struct AllToAllStats {
  PhaseStats dispatch;  // of the last dispatch call
  PhaseStats combine;   // of the last combine call
};

class AllToAll {
 public:
  virtual ~AllToAll() = default;
  virtual std::string_view name() const = 0;

  // Tells every rank how many rows it will receive from each source: fills layout.recv_offsets.
  // Throws CommError(invalid_argument) on a malformed layout (sizes, offsets, token indices).
  virtual void exchange_counts(RouteLayout& layout) = 0;

  // tokens: [num_tokens, token_bytes], each sent once per destination listed for it.
  // side: [num_send_rows, side_bytes] per-row data in send order (nullptr when side_bytes == 0).
  // recv_tokens: [num_recv_rows, token_bytes], recv_side: [num_recv_rows, side_bytes], grouped by
  // source rank ascending, each source's rows in its send order.
  virtual void dispatch(const RouteLayout& layout, const void* tokens, size_t token_bytes,
                        const void* side, size_t side_bytes, void* recv_tokens,
                        void* recv_side) = 0;

  // The reverse path. rows: [num_recv_rows, elems] of dtype, one per received row, each returned
  // to its source. out: [num_tokens, elems] (overwritten) = the sum of the rows that came back for
  // each token, added in order of destination rank ascending; tokens sent nowhere get zeros.
  virtual void combine(const RouteLayout& layout, DataType dtype, const void* rows, int64_t elems,
                       void* out) = 0;

  const AllToAllStats& stats() const { return stats_; }

 protected:
  AllToAllStats stats_;
};

// "flat": every rank exchanges directly with every rank over the communicator's transport.
// "hierarchical": rail-aligned two-hop exchange (hierarchical_alltoall.h): a token crosses to each
// destination node once, to the rank with its source's local rank there, which forwards it inside
// the node; combine sums inside the node before crossing back once per (token, node).
// "auto": hierarchical when the communicator's topology has more than one node and some node holds
// more than one rank, else flat. Decided from the topology at creation, the same on every rank.
// Throws CommError(invalid_argument) for an unknown name, listing the known ones.
std::unique_ptr<AllToAll> make_alltoall(std::string_view algorithm, Communicator& comm);

}  // namespace switchyard::comm
