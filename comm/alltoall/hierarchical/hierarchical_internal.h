// Private to the hierarchical all-to-all (hierarchical_alltoall.cpp, hierarchical_dispatch.cpp,
// hierarchical_combine.cpp): how relayed rows are laid out in chunks, the per-token sums of
// combine, and what a dispatch or combine call shares.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "comm/alltoall/alltoall.h"
#include "comm/alltoall/exchange.h"
#include "comm/alltoall/hierarchical/relay_plan.h"
#include "comm/alltoall/node_map.h"
#include "comm/alltoall/scratch.h"
#include "comm/communicator.h"

namespace switchyard::comm::hierarchical_detail {

inline int64_t rows_from(const std::vector<int64_t>& offsets, int rank) {
  return offsets[static_cast<size_t>(rank) + 1] - offsets[static_cast<size_t>(rank)];
}

// First row of piece c of n rows cut into `chunks` pieces.
inline int64_t piece_begin(int64_t n, int c, int chunks) { return n * c / chunks; }

template <typename T>
void add_row(T* dst, const T* src, int64_t elems) {
  for (int64_t e = 0; e < elems; ++e) dst[e] += src[e];
}

// out = the sum over nodes (ascending) of each node's per-token sums.
template <typename T>
void sum_nodes(const RelayPlan& plan, int64_t num_tokens,
               const std::vector<const std::byte*>& node_sums, int64_t elems, T* out) {
  std::fill(out, out + num_tokens * elems, T(0));
  for (size_t node = 0; node < node_sums.size(); ++node) {
    const auto* sums = reinterpret_cast<const T*>(node_sums[node]);
    const auto& tokens = plan.unique_tokens[node];
    for (size_t u = 0; u < tokens.size(); ++u) {
      add_row(out + tokens[u] * elems, sums + static_cast<int64_t>(u) * elems, elems);
    }
  }
}

// One token's sum over its rows (given in destination order): +0 plus each row, in that order.
template <typename T>
void sum_rows(T* dst, const std::byte* const* rows, size_t count, int64_t elems) {
  std::fill(dst, dst + elems, T(0));  // as unchunked: all-zero bytes are +0.0
  for (size_t r = 0; r < count; ++r) add_row(dst, reinterpret_cast<const T*>(rows[r]), elems);
}

// bf16 (alltoall.h): the same sums in the same order, added in fp32 and rounded to bf16 once.
// acc: workspace of elems floats (sum_rows_bf16) or num_tokens * elems floats (sum_nodes_bf16).
void sum_rows_bf16(uint16_t* dst, const std::byte* const* rows, size_t count, int64_t elems,
                   float* acc);

void sum_nodes_bf16(const RelayPlan& plan, int64_t num_tokens,
                    const std::vector<const std::byte*>& node_sums, int64_t elems, uint16_t* out,
                    float* acc);

// What one dispatch or combine call knows of this rank's node and its relays, and the exchange
// that carries both hops: the part DispatchRun and CombineRun share.
class RelayRun {
 protected:
  RelayRun(Communicator& comm, ScratchBuffers& scratch, int chunks, PhaseStats* stats,
           const RouteLayout& layout, const RelayPlan& plan, const char* what)
      : layout_(layout),
        plan_(plan),
        nodes_(comm.topology()),
        scratch_(scratch),
        C_(chunks),
        me_(comm.rank()),
        my_node_(nodes_.node_of(me_)),
        node_ranks_(nodes_.ranks(my_node_)),
        local_size_(node_ranks_.size()),
        sources_(plan.relayed.size()),
        // One exchange for both hops: waiting for one chunk keeps every other message moving.
        ex_(comm, stats, what) {}

  const RouteLayout& layout_;
  const RelayPlan& plan_;
  const NodeMap nodes_;
  ScratchBuffers& scratch_;
  const int C_;
  const int me_;
  const int my_node_;
  const std::vector<int>& node_ranks_;
  const size_t local_size_;
  const size_t sources_;  // relayed sources of this rank
  Exchange ex_;
};

// This source's rows for one node in the relay's form: each row's distinct-token index (in
// plan.unique_tokens[node]) and the rows per rank of the node (by local index).
RelayedRows own_rows_for(const RouteLayout& layout, const RelayPlan& plan,
                         const std::vector<int>& dests, size_t node,
                         std::vector<int64_t>& index_of);

// How one (source, node) message of a dispatch is cut into chunks: chunk c carries the distinct
// tokens first used by its rows (in order of first use), then the side data of its rows (ranks of
// the node ascending, each one's piece c in send order).
struct CrossingLayout {
  std::vector<size_t> chunk_at;      // [chunks + 1]: byte offset of each chunk in the message
  std::vector<int64_t> new_tokens;   // [chunks]: distinct tokens each chunk brings
  std::vector<int64_t> token_order;  // distinct-token indices in message order
  std::vector<size_t> token_at;      // [num_unique]: byte offset of each distinct token
  std::vector<size_t> side_at;       // [chunks * dests]: byte offset of piece (c, j)'s side rows
};

CrossingLayout crossing_layout(const RelayedRows& rows, int chunks, size_t token_bytes,
                               size_t side_bytes);

// For combine: each distinct token's last chunk (the chunk after which all its rows are in), and
// the distinct tokens finished by each chunk, ascending.
std::vector<std::vector<int64_t>> finished_by_chunk(const RelayedRows& rows, int chunks);

}  // namespace switchyard::comm::hierarchical_detail
