// HierarchicalAllToAll::dispatch: each source's distinct tokens cross to every other
// node's relay once, in chunks, and are forwarded inside that node as they arrive.
#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>

#include "comm/alltoall/bf16.h"
#include "comm/alltoall/exchange.h"
#include "comm/alltoall/hierarchical/hierarchical_alltoall.h"
#include "comm/alltoall/hierarchical/hierarchical_internal.h"
#include "comm/alltoall/hierarchical/relay_plan.h"
#include "comm/alltoall/layout_check.h"
#include "comm/alltoall/node_map.h"
#include "comm/error.h"
#include "comm/tags.h"

namespace switchyard::comm {

using namespace hierarchical_detail;

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
  const int C = chunks_;
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
  // One exchange for both hops: waiting for one chunk keeps every other message moving.
  Exchange ex(comm_, &stats_.dispatch, what);

  // Second hop's receives first: from every rank of this node, chunk by chunk, the rows it relays
  // for this rank (per chunk: each source ascending, its piece).
  std::vector<std::vector<int>> sources_of(local_size);
  scratch_.reset();
  std::vector<std::span<std::byte>> forwarded_in(local_size);
  std::vector<std::vector<size_t>> forwarded_at(local_size);
  std::vector<std::vector<size_t>> forwarded_recv(local_size);  // request index, SIZE_MAX: none
  auto rows_from_source = [&](int s) { return rows_from(layout.recv_offsets, s); };
  for (size_t j = 0; j < local_size; ++j) {
    sources_of[j] = nodes.relayed_by(node_ranks[j]);
    if (node_ranks[j] == me) continue;
    size_t at = 0;
    for (int c = 0; c < C; ++c) {
      forwarded_at[j].push_back(at);
      for (int s : sources_of[j]) {
        const int64_t n = rows_from_source(s);
        at += static_cast<size_t>(piece_begin(n, c + 1, C) - piece_begin(n, c, C)) * row_bytes;
      }
    }
    forwarded_at[j].push_back(at);
    forwarded_in[j] = scratch_.take(at);
    forwarded_recv[j].assign(static_cast<size_t>(C), SIZE_MAX);
    for (int c = 0; c < C; ++c) {
      const size_t bytes = forwarded_at[j][c + 1] - forwarded_at[j][c];
      if (bytes > 0) {
        forwarded_recv[j][static_cast<size_t>(c)] = ex.recv(
            node_ranks[j], forwarded_in[j].data() + forwarded_at[j][c], bytes, kDispatchInsideTag);
      }
    }
  }

  // As a relay: where each relayed source's rows will be, and the receives of its chunks.
  const size_t sources = plan.relayed.size();
  std::vector<CrossingLayout> crossing(sources);
  std::vector<std::span<std::byte>> crossing_in(sources);
  std::vector<std::vector<size_t>> chunk_recvs(static_cast<size_t>(C));
  for (size_t k = 0; k < sources; ++k) {
    const RelayedRows& rows = plan.relayed[k];
    if (rows.source == me) continue;
    crossing[k] = crossing_layout(rows, C, token_bytes, side_bytes);
    crossing_in[k] = scratch_.take(crossing[k].chunk_at.back());
    for (int c = 0; c < C; ++c) {
      const size_t bytes = crossing[k].chunk_at[c + 1] - crossing[k].chunk_at[c];
      if (bytes > 0) {
        chunk_recvs[static_cast<size_t>(c)].push_back(
            ex.recv(rows.source, crossing_in[k].data() + crossing[k].chunk_at[c], bytes,
                    kDispatchAcrossTag));
      }
    }
  }

  // First hop: to each other node's relay, chunk by chunk.
  std::vector<int64_t> index_of(static_cast<size_t>(layout.num_tokens), -1);
  std::vector<std::span<std::byte>> crossing_out(static_cast<size_t>(nodes.num_nodes()));
  for (int node = 0; node < nodes.num_nodes(); ++node) {
    const auto& dests = nodes.ranks(node);
    if (node == my_node) continue;
    const RelayedRows rows = own_rows_for(layout, plan, dests, static_cast<size_t>(node), index_of);
    const auto& unique = plan.unique_tokens[static_cast<size_t>(node)];
    const CrossingLayout l = crossing_layout(rows, C, token_bytes, side_bytes);
    auto& message = crossing_out[static_cast<size_t>(node)];
    message = scratch_.take(l.chunk_at.back());
    size_t next_token = 0;
    for (int c = 0; c < C; ++c) {
      // Packed chunk by chunk, so the first one leaves before the rest is packed.
      for (int64_t t = 0; t < l.new_tokens[static_cast<size_t>(c)]; ++t, ++next_token) {
        const auto u = static_cast<size_t>(l.token_order[next_token]);
        std::memcpy(message.data() + l.token_at[u],
                    token_base + static_cast<size_t>(unique[u]) * token_bytes, token_bytes);
      }
      for (size_t j = 0; j < dests.size(); ++j) {
        const int64_t n = rows.dest_offsets[j + 1] - rows.dest_offsets[j];
        const int64_t b = piece_begin(n, c, C);
        const int64_t e = piece_begin(n, c + 1, C);
        if (e > b && side_bytes > 0) {
          std::memcpy(message.data() + l.side_at[static_cast<size_t>(c) * dests.size() + j],
                      side_base + static_cast<size_t>(
                                      layout.send_offsets[static_cast<size_t>(dests[j])] + b) *
                                      side_bytes,
                      static_cast<size_t>(e - b) * side_bytes);
        }
      }
      const size_t bytes = l.chunk_at[c + 1] - l.chunk_at[c];
      if (bytes > 0) {
        ex.send(nodes.relay(me, node), message.data() + l.chunk_at[c], bytes, kDispatchAcrossTag,
                l.new_tokens[static_cast<size_t>(c)]);
      }
    }
  }

  // Second hop, chunk by chunk as the chunks arrive: each relayed source's piece c for every rank
  // of this node; this rank's own share lands in place.
  auto token_of = [&](size_t k, int64_t row) -> const std::byte* {
    const RelayedRows& r = plan.relayed[k];
    const auto u = static_cast<size_t>(r.unique_of_row[static_cast<size_t>(row)]);
    if (r.source == me) {
      return token_base +
             static_cast<size_t>(plan.unique_tokens[static_cast<size_t>(my_node)][u]) * token_bytes;
    }
    return crossing_in[k].data() + crossing[k].token_at[u];
  };
  // Side data of row i of piece c of local destination j.
  auto side_of = [&](size_t k, size_t j, int c, int64_t i) -> const std::byte* {
    const RelayedRows& r = plan.relayed[k];
    if (r.source == me) {
      return side_base +
             static_cast<size_t>(layout.send_offsets[static_cast<size_t>(node_ranks[j])] + i) *
                 side_bytes;
    }
    const int64_t n = r.dest_offsets[j + 1] - r.dest_offsets[j];
    return crossing_in[k].data() + crossing[k].side_at[static_cast<size_t>(c) * local_size + j] +
           static_cast<size_t>(i - piece_begin(n, c, C)) * side_bytes;
  };
  auto copy_piece = [&](size_t k, size_t j, int c, std::byte* dst_token, std::byte* dst_side,
                        size_t token_stride, size_t side_stride) -> size_t {
    const RelayedRows& r = plan.relayed[k];
    const int64_t n = r.dest_offsets[j + 1] - r.dest_offsets[j];
    const int64_t b = piece_begin(n, c, C);
    const int64_t e = piece_begin(n, c + 1, C);
    for (int64_t i = b; i < e; ++i) {
      const auto o = static_cast<size_t>(i - b);
      if (token_bytes > 0) {
        std::memcpy(dst_token + o * token_stride, token_of(k, r.dest_offsets[j] + i), token_bytes);
      }
      if (side_bytes > 0) {
        std::memcpy(dst_side + o * side_stride, side_of(k, j, c, i), side_bytes);
      }
    }
    return static_cast<size_t>(e - b);
  };
  std::vector<std::span<std::byte>> forwarded_out(local_size);
  std::vector<std::vector<size_t>> forwarded_out_at(local_size);
  for (size_t j = 0; j < local_size; ++j) {
    if (node_ranks[j] == me) continue;
    size_t at = 0;
    for (int c = 0; c < C; ++c) {
      forwarded_out_at[j].push_back(at);
      for (const RelayedRows& r : plan.relayed) {
        const int64_t n = r.dest_offsets[j + 1] - r.dest_offsets[j];
        at += static_cast<size_t>(piece_begin(n, c + 1, C) - piece_begin(n, c, C)) * row_bytes;
      }
    }
    forwarded_out_at[j].push_back(at);
    forwarded_out[j] = scratch_.take(at);
  }
  // Unpacks chunk c of what relay j forwarded (per source ascending, its piece) into place, once
  // it has arrived: the earlier ones while later chunks still cross.
  auto unpack = [&](size_t j, int c) {
    if (node_ranks[j] == me) return;
    size_t& request = forwarded_recv[j][static_cast<size_t>(c)];
    if (request == SIZE_MAX) return;
    request = SIZE_MAX;
    const std::byte* at = forwarded_in[j].data() + forwarded_at[j][static_cast<size_t>(c)];
    for (int s : sources_of[j]) {
      const int64_t n = rows_from_source(s);
      const auto first =
          static_cast<size_t>(layout.recv_offsets[static_cast<size_t>(s)] + piece_begin(n, c, C));
      const auto count = static_cast<size_t>(piece_begin(n, c + 1, C) - piece_begin(n, c, C));
      for (size_t i = 0; i < count; ++i, at += row_bytes) {
        if (token_bytes > 0) std::memcpy(out_tokens + (first + i) * token_bytes, at, token_bytes);
        if (side_bytes > 0) {
          std::memcpy(out_side + (first + i) * side_bytes, at + token_bytes, side_bytes);
        }
      }
    }
  };
  std::vector<int> unpacked(local_size, 0);  // chunks of each relay unpacked so far, in order
  auto unpack_arrived = [&] {
    for (size_t j = 0; j < local_size; ++j) {
      if (node_ranks[j] == me) continue;
      while (unpacked[j] < C) {
        const size_t request = forwarded_recv[j][static_cast<size_t>(unpacked[j])];
        if (request != SIZE_MAX && !ex.done(request)) break;
        unpack(j, unpacked[j]++);
      }
    }
  };
  for (int c = 0; c < C; ++c) {
    ex.wait_for(chunk_recvs[static_cast<size_t>(c)]);
    unpack_arrived();
    for (size_t j = 0; j < local_size; ++j) {
      if (node_ranks[j] == me) {
        for (size_t k = 0; k < sources; ++k) {
          const RelayedRows& r = plan.relayed[k];
          const int64_t n = r.dest_offsets[j + 1] - r.dest_offsets[j];
          const auto at = static_cast<size_t>(layout.recv_offsets[static_cast<size_t>(r.source)] +
                                              piece_begin(n, c, C));
          copy_piece(k, j, c, out_tokens + at * token_bytes, out_side + at * side_bytes,
                     token_bytes, side_bytes);
        }
        continue;
      }
      std::byte* at = forwarded_out[j].data() + forwarded_out_at[j][c];
      std::byte* const begin = at;
      int64_t rows = 0;
      for (size_t k = 0; k < sources; ++k) {
        const size_t count = copy_piece(k, j, c, at, at + token_bytes, row_bytes, row_bytes);
        at += count * row_bytes;
        rows += static_cast<int64_t>(count);
      }
      if (rows > 0) {
        ex.send(node_ranks[j], begin, static_cast<size_t>(at - begin), kDispatchInsideTag, rows);
      }
    }
  }
  unpack_arrived();
  ex.wait();
  for (size_t j = 0; j < local_size; ++j) {
    for (int c = 0; c < C; ++c) unpack(j, c);
  }
}

}  // namespace switchyard::comm
