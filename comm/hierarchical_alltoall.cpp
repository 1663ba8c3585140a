#include "comm/hierarchical_alltoall.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "comm/error.h"
#include "comm/exchange.h"
#include "comm/hierarchical_tags.h"
#include "comm/layout_check.h"
#include "comm/node_map.h"
#include "comm/relay_plan.h"

namespace switchyard::comm {

namespace {

int64_t rows_from(const std::vector<int64_t>& offsets, int rank) {
  return offsets[static_cast<size_t>(rank) + 1] - offsets[static_cast<size_t>(rank)];
}

// Rows from several sources a relay exchanges with one rank of its node, one message: for each
// source (ascending), its rows for that rank.
// Copies the row blocks of `ranks` (blocks of rows given by offsets, row_bytes each) from base to
// at, one after another; returns the end of what was written.
std::byte* append_blocks(std::byte* at, const std::byte* base, const std::vector<int64_t>& offsets,
                         const std::vector<int>& ranks, size_t row_bytes) {
  for (int r : ranks) {
    const size_t bytes = static_cast<size_t>(rows_from(offsets, r)) * row_bytes;
    if (bytes == 0) continue;
    std::memcpy(at, base + static_cast<size_t>(offsets[static_cast<size_t>(r)]) * row_bytes,
                bytes);
    at += bytes;
  }
  return at;
}

int64_t rows_for(const std::vector<int>& sources, const std::vector<int64_t>& recv_offsets) {
  int64_t rows = 0;
  for (int s : sources) rows += rows_from(recv_offsets, s);
  return rows;
}

// Where a relay finds the token and side data of the rows it forwards for one source: in the
// caller's buffers for its own rows, in the message that crossed nodes for the others (distinct
// tokens first, then the side data of every row, destination ranks ascending).
struct RowSource {
  const std::byte* tokens;
  const int64_t* token_ids;  // maps a distinct-token index to a row of `tokens`; null: identity
  const std::byte* side;     // side data of the source's rows for the node's first rank
  const std::vector<int64_t>* side_row_of_dest;  // first side row for each rank, by local index

  // Copies the source's rows for local destination j to dst (token then side, `stride` apart).
  void copy(const RelayedRows& rows, size_t j, size_t token_bytes, size_t side_bytes,
            std::byte* dst_token, std::byte* dst_side, size_t token_stride,
            size_t side_stride) const {
    const int64_t first = rows.dest_offsets[j];
    const int64_t count = rows.dest_offsets[j + 1] - first;
    const int64_t side_first = (*side_row_of_dest)[j];
    for (int64_t i = 0; i < count; ++i) {
      const auto u = rows.unique_of_row[static_cast<size_t>(first + i)];
      const auto t = static_cast<size_t>(token_ids ? token_ids[u] : u);
      if (token_bytes > 0) {
        std::memcpy(dst_token + static_cast<size_t>(i) * token_stride, tokens + t * token_bytes,
                    token_bytes);
      }
      if (side_bytes > 0) {
        std::memcpy(dst_side + static_cast<size_t>(i) * side_stride,
                    side + static_cast<size_t>(side_first + i) * side_bytes, side_bytes);
      }
    }
  }
};

template <typename T>
void add_row(T* dst, const T* src, int64_t elems) {
  for (int64_t e = 0; e < elems; ++e) dst[e] += src[e];
}

// A relay's sum, per distinct token of one source, of the results of its node's ranks (ascending).
// block[j]: the results rank j of the node returned for this source's rows, in row order.
template <typename T>
std::vector<std::byte> sum_inside_node(const RelayedRows& rows,
                                       const std::vector<const std::byte*>& block, int64_t elems) {
  std::vector<std::byte> partial(static_cast<size_t>(rows.num_unique * elems) * sizeof(T));
  std::fill(partial.begin(), partial.end(), std::byte{0});  // all-zero bytes are +0.0
  auto* sums = reinterpret_cast<T*>(partial.data());
  for (size_t j = 0; j < block.size(); ++j) {
    const auto* results = reinterpret_cast<const T*>(block[j]);
    for (int64_t i = rows.dest_offsets[j]; i < rows.dest_offsets[j + 1]; ++i) {
      const int64_t u = rows.unique_of_row[static_cast<size_t>(i)];
      add_row(sums + u * elems, results + (i - rows.dest_offsets[j]) * elems, elems);
    }
  }
  return partial;
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

}  // namespace

void HierarchicalAllToAll::dispatch(const RouteLayout& layout, const void* tokens,
                                    size_t token_bytes, const void* side, size_t side_bytes,
                                    void* recv_tokens, void* recv_side) {
  const char* what = "hierarchical dispatch";
  check_layout(layout, comm_.size(), true, what);
  require_buffer(tokens, layout.num_tokens, token_bytes, "tokens", what);
  require_buffer(side, layout.num_send_rows(), side_bytes, "side", what);
  require_buffer(recv_tokens, layout.num_recv_rows(), token_bytes, "recv_tokens", what);
  require_buffer(recv_side, layout.num_recv_rows(), side_bytes, "recv_side", what);
  const RelayPlan& plan = relay_plan_of(layout, comm_.topology(), what);
  const NodeMap nodes(comm_.topology());
  const int me = comm_.rank();
  const int my_node = nodes.node_of(me);
  const auto& node_ranks = nodes.ranks(my_node);
  const size_t local_size = node_ranks.size();
  const size_t row_bytes = token_bytes + side_bytes;
  const auto* token_base = static_cast<const std::byte*>(tokens);
  const auto* side_base = static_cast<const std::byte*>(side);
  auto* out_tokens = static_cast<std::byte*>(recv_tokens);
  auto* out_side = static_cast<std::byte*>(recv_side);
  stats_.dispatch = {};

  // Second hop's receives first: from every rank of this node, the rows it relays for this rank.
  Exchange inside(comm_, &stats_.dispatch, "hierarchical dispatch (inside the node)");
  std::vector<std::vector<int>> sources_of(local_size);
  std::vector<std::vector<std::byte>> forwarded_in(local_size);
  for (size_t j = 0; j < local_size; ++j) {
    sources_of[j] = nodes.relayed_by(node_ranks[j]);
    if (node_ranks[j] == me) continue;
    forwarded_in[j].resize(static_cast<size_t>(rows_for(sources_of[j], layout.recv_offsets)) *
                           row_bytes);
    if (!forwarded_in[j].empty()) {
      inside.recv(node_ranks[j], forwarded_in[j].data(), forwarded_in[j].size(),
                  kDispatchInsideTag);
    }
  }

  // First hop: to each other node's relay, every distinct token once, then every row's side data.
  Exchange across(comm_, &stats_.dispatch, "hierarchical dispatch (across nodes)");
  std::vector<std::vector<std::byte>> crossing_out(static_cast<size_t>(nodes.num_nodes()));
  for (int node = 0; node < nodes.num_nodes(); ++node) {
    if (node == my_node) continue;
    const auto& unique = plan.unique_tokens[static_cast<size_t>(node)];
    const auto& dests = nodes.ranks(node);
    int64_t rows = 0;
    for (int d : dests) rows += rows_from(layout.send_offsets, d);
    auto& message = crossing_out[static_cast<size_t>(node)];
    message.resize(unique.size() * token_bytes + static_cast<size_t>(rows) * side_bytes);
    if (message.empty()) continue;
    std::byte* at = message.data();
    for (int64_t t : unique) {
      std::memcpy(at, token_base + static_cast<size_t>(t) * token_bytes, token_bytes);
      at += token_bytes;
    }
    append_blocks(at, side_base, layout.send_offsets, dests, side_bytes);
    across.send(nodes.relay(me, node), message.data(), message.size(), kDispatchAcrossTag,
                static_cast<int64_t>(unique.size()));
  }
  std::vector<std::vector<std::byte>> crossing_in(plan.relayed.size());
  for (size_t k = 0; k < plan.relayed.size(); ++k) {
    const RelayedRows& rows = plan.relayed[k];
    if (rows.source == me) continue;
    crossing_in[k].resize(static_cast<size_t>(rows.num_unique) * token_bytes +
                          static_cast<size_t>(rows.dest_offsets.back()) * side_bytes);
    if (!crossing_in[k].empty()) {
      across.recv(rows.source, crossing_in[k].data(), crossing_in[k].size(), kDispatchAcrossTag);
    }
  }
  across.wait();

  // Second hop: forward each relayed source's rows to their destination ranks in this node.
  std::vector<RowSource> row_sources;
  std::vector<std::vector<int64_t>> side_rows(plan.relayed.size());
  for (size_t k = 0; k < plan.relayed.size(); ++k) {
    const RelayedRows& rows = plan.relayed[k];
    if (rows.source == me) {
      // Own rows stay in the caller's buffers: side rows are the layout's send rows.
      for (int d : node_ranks) side_rows[k].push_back(layout.send_offsets[static_cast<size_t>(d)]);
      row_sources.push_back({token_base, plan.unique_tokens[static_cast<size_t>(my_node)].data(),
                             side_base, &side_rows[k]});
    } else {
      side_rows[k].assign(rows.dest_offsets.begin(), rows.dest_offsets.end() - 1);
      const std::byte* message = crossing_in[k].data();
      row_sources.push_back({message, nullptr,
                             message + static_cast<size_t>(rows.num_unique) * token_bytes,
                             &side_rows[k]});
    }
  }
  std::vector<std::vector<std::byte>> forwarded_out(local_size);
  for (size_t j = 0; j < local_size; ++j) {
    const int d = node_ranks[j];
    if (d == me) {
      // This rank's share lands directly in place, at each source's block of the output.
      for (size_t k = 0; k < plan.relayed.size(); ++k) {
        const auto at =
            static_cast<size_t>(layout.recv_offsets[static_cast<size_t>(plan.relayed[k].source)]);
        row_sources[k].copy(plan.relayed[k], j, token_bytes, side_bytes,
                            out_tokens + at * token_bytes, out_side + at * side_bytes, token_bytes,
                            side_bytes);
      }
      continue;
    }
    int64_t rows = 0;
    for (const RelayedRows& r : plan.relayed) rows += r.dest_offsets[j + 1] - r.dest_offsets[j];
    if (rows == 0) continue;
    auto& message = forwarded_out[j];
    message.resize(static_cast<size_t>(rows) * row_bytes);
    std::byte* at = message.data();
    for (size_t k = 0; k < plan.relayed.size(); ++k) {
      const RelayedRows& r = plan.relayed[k];
      row_sources[k].copy(r, j, token_bytes, side_bytes, at, at + token_bytes, row_bytes,
                          row_bytes);
      at += static_cast<size_t>(r.dest_offsets[j + 1] - r.dest_offsets[j]) * row_bytes;
    }
    inside.send(d, message.data(), message.size(), kDispatchInsideTag, rows);
  }
  inside.wait();

  // Unpack what the other relays of this node forwarded: per source, ascending, in send order.
  for (size_t j = 0; j < local_size; ++j) {
    if (node_ranks[j] == me) continue;
    const std::byte* at = forwarded_in[j].data();
    for (int s : sources_of[j]) {
      const auto first = static_cast<size_t>(layout.recv_offsets[static_cast<size_t>(s)]);
      const auto count = static_cast<size_t>(rows_from(layout.recv_offsets, s));
      for (size_t i = 0; i < count; ++i, at += row_bytes) {
        if (token_bytes > 0) std::memcpy(out_tokens + (first + i) * token_bytes, at, token_bytes);
        if (side_bytes > 0) {
          std::memcpy(out_side + (first + i) * side_bytes, at + token_bytes, side_bytes);
        }
      }
    }
  }
}

void HierarchicalAllToAll::combine(const RouteLayout& layout, DataType dtype, const void* rows,
                                   int64_t elems, void* out) {
  const char* what = "hierarchical combine";
  const size_t row_bytes =
      check_combine_args(layout, comm_.size(), dtype, rows, elems, out, what);
  const RelayPlan& plan = relay_plan_of(layout, comm_.topology(), what);
  const NodeMap nodes(comm_.topology());
  const int me = comm_.rank();
  const int my_node = nodes.node_of(me);
  const auto& node_ranks = nodes.ranks(my_node);
  const size_t local_size = node_ranks.size();
  const auto* results = static_cast<const std::byte*>(rows);
  stats_.combine = {};

  // Second hop's receives first: each other node's per-token sums, from this rank's relay there.
  Exchange across(comm_, &stats_.combine, "hierarchical combine (across nodes)");
  std::vector<std::vector<std::byte>> node_sums_in(static_cast<size_t>(nodes.num_nodes()));
  for (int node = 0; node < nodes.num_nodes(); ++node) {
    auto& sums = node_sums_in[static_cast<size_t>(node)];
    sums.resize(plan.unique_tokens[static_cast<size_t>(node)].size() * row_bytes);
    if (node != my_node && !sums.empty()) {
      across.recv(nodes.relay(me, node), sums.data(), sums.size(), kCombineAcrossTag);
    }
  }

  // First hop: each result back to the relay of its source in this node.
  Exchange inside(comm_, &stats_.combine, "hierarchical combine (inside the node)");
  std::vector<std::vector<std::byte>> returned_out(local_size);
  std::vector<std::vector<std::byte>> returned_in(local_size);
  for (size_t j = 0; j < local_size; ++j) {
    const int peer = node_ranks[j];
    if (peer == me) continue;
    const std::vector<int> sources = nodes.relayed_by(peer);
    auto& message = returned_out[j];
    message.resize(static_cast<size_t>(rows_for(sources, layout.recv_offsets)) * row_bytes);
    append_blocks(message.data(), results, layout.recv_offsets, sources, row_bytes);
    if (!message.empty()) {
      inside.send(peer, message.data(), message.size(), kCombineInsideTag,
                  static_cast<int64_t>(message.size() / std::max<size_t>(row_bytes, 1)));
    }
    int64_t rows_in = 0;
    for (const RelayedRows& r : plan.relayed) rows_in += r.dest_offsets[j + 1] - r.dest_offsets[j];
    returned_in[j].resize(static_cast<size_t>(rows_in) * row_bytes);
    if (!returned_in[j].empty()) {
      inside.recv(peer, returned_in[j].data(), returned_in[j].size(), kCombineInsideTag);
    }
  }
  inside.wait();

  // Sum per token inside the node, then send each other source its node sum once per token.
  std::vector<std::vector<std::byte>> node_sums_out(plan.relayed.size());
  std::vector<size_t> read_at(local_size, 0);
  for (size_t k = 0; k < plan.relayed.size(); ++k) {
    const RelayedRows& r = plan.relayed[k];
    std::vector<const std::byte*> block(local_size);
    for (size_t j = 0; j < local_size; ++j) {
      if (node_ranks[j] == me) {
        block[j] =
            results +
            static_cast<size_t>(layout.recv_offsets[static_cast<size_t>(r.source)]) * row_bytes;
      } else {
        block[j] = returned_in[j].data() + read_at[j];
        read_at[j] += static_cast<size_t>(r.dest_offsets[j + 1] - r.dest_offsets[j]) * row_bytes;
      }
    }
    node_sums_out[k] = dtype == DataType::fp32 ? sum_inside_node<float>(r, block, elems)
                                               : sum_inside_node<double>(r, block, elems);
    if (r.source == me) {
      node_sums_in[static_cast<size_t>(my_node)] = std::move(node_sums_out[k]);
    } else if (!node_sums_out[k].empty()) {
      across.send(r.source, node_sums_out[k].data(), node_sums_out[k].size(), kCombineAcrossTag,
                  r.num_unique);
    }
  }
  across.wait();

  std::vector<const std::byte*> node_sums;
  for (const auto& sums : node_sums_in) node_sums.push_back(sums.data());
  if (dtype == DataType::fp32) {
    sum_nodes(plan, layout.num_tokens, node_sums, elems, static_cast<float*>(out));
  } else {
    sum_nodes(plan, layout.num_tokens, node_sums, elems, static_cast<double*>(out));
  }
}

}  // namespace switchyard::comm
