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

enum class DataType { fp32, fp64 };

// Which source tokens go to which destination rank. A token appears at most once per destination
// (a token routed to two experts of one rank is sent there once).
struct RouteLayout {
  int world = 0;
  int64_t num_tokens = 0;              // tokens on this rank
  std::vector<int64_t> send_offsets;   // [world + 1]: rows send_offsets[d]..[d+1] go to rank d
  std::vector<int64_t> send_tokens;    // token index of every send row, grouped by destination
  std::vector<int64_t> recv_offsets;   // [world + 1]: rows received from each source rank,
                                       // filled by AllToAll::exchange_counts

  int64_t num_send_rows() const { return send_offsets.empty() ? 0 : send_offsets.back(); }
  int64_t num_recv_rows() const { return recv_offsets.empty() ? 0 : recv_offsets.back(); }
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
};

// "flat": every rank exchanges directly with every rank over the communicator's transport.
// Throws CommError(invalid_argument) for an unknown name, listing the known ones.
std::unique_ptr<AllToAll> make_alltoall(std::string_view algorithm, Communicator& comm);

}  // namespace switchyard::comm
