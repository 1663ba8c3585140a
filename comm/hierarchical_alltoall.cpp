#include "comm/hierarchical_alltoall.h"

#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>

#include "comm/bf16.h"
#include "comm/env_integer.h"
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

// First row of piece c of n rows cut into `chunks` pieces.
int64_t piece_begin(int64_t n, int c, int chunks) { return n * c / chunks; }

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
                   float* acc) {
  std::fill(acc, acc + elems, 0.0f);
  for (size_t r = 0; r < count; ++r) {
    const auto* src = reinterpret_cast<const uint16_t*>(rows[r]);
    for (int64_t e = 0; e < elems; ++e) acc[e] += bf16_to_float(src[e]);
  }
  for (int64_t e = 0; e < elems; ++e) dst[e] = float_to_bf16(acc[e]);
}

void sum_nodes_bf16(const RelayPlan& plan, int64_t num_tokens,
                    const std::vector<const std::byte*>& node_sums, int64_t elems, uint16_t* out,
                    float* acc) {
  std::fill(acc, acc + num_tokens * elems, 0.0f);
  for (size_t node = 0; node < node_sums.size(); ++node) {
    const auto* sums = reinterpret_cast<const uint16_t*>(node_sums[node]);
    const auto& tokens = plan.unique_tokens[node];
    for (size_t u = 0; u < tokens.size(); ++u) {
      float* dst = acc + tokens[u] * elems;
      const uint16_t* src = sums + static_cast<int64_t>(u) * elems;
      for (int64_t e = 0; e < elems; ++e) dst[e] += bf16_to_float(src[e]);
    }
  }
  for (int64_t k = 0; k < num_tokens * elems; ++k) out[k] = float_to_bf16(acc[k]);
}

// This source's rows for one node in the relay's form: each row's distinct-token index (in
// plan.unique_tokens[node]) and the rows per rank of the node (by local index).
RelayedRows own_rows_for(const RouteLayout& layout, const RelayPlan& plan,
                         const std::vector<int>& dests, size_t node,
                         std::vector<int64_t>& index_of) {
  RelayedRows rows;
  const auto& unique = plan.unique_tokens[node];
  for (size_t u = 0; u < unique.size(); ++u) {
    index_of[static_cast<size_t>(unique[u])] = static_cast<int64_t>(u);
  }
  rows.num_unique = static_cast<int64_t>(unique.size());
  rows.dest_offsets.push_back(0);
  for (int d : dests) {
    for (int64_t i = layout.send_offsets[static_cast<size_t>(d)];
         i < layout.send_offsets[static_cast<size_t>(d) + 1]; ++i) {
      rows.unique_of_row.push_back(
          index_of[static_cast<size_t>(layout.send_tokens[static_cast<size_t>(i)])]);
    }
    rows.dest_offsets.push_back(static_cast<int64_t>(rows.unique_of_row.size()));
  }
  return rows;
}

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
                               size_t side_bytes) {
  CrossingLayout l;
  const size_t dests = rows.dest_offsets.size() - 1;
  l.token_at.assign(static_cast<size_t>(rows.num_unique), SIZE_MAX);
  l.side_at.resize(static_cast<size_t>(chunks) * dests);
  size_t at = 0;
  for (int c = 0; c < chunks; ++c) {
    l.chunk_at.push_back(at);
    int64_t fresh = 0;
    for (size_t j = 0; j < dests; ++j) {
      const int64_t first = rows.dest_offsets[j];
      const int64_t n = rows.dest_offsets[j + 1] - first;
      for (int64_t i = piece_begin(n, c, chunks); i < piece_begin(n, c + 1, chunks); ++i) {
        const auto u = static_cast<size_t>(rows.unique_of_row[static_cast<size_t>(first + i)]);
        if (l.token_at[u] != SIZE_MAX) continue;
        l.token_at[u] = at;
        l.token_order.push_back(static_cast<int64_t>(u));
        at += token_bytes;
        ++fresh;
      }
    }
    l.new_tokens.push_back(fresh);
    for (size_t j = 0; j < dests; ++j) {
      const int64_t n = rows.dest_offsets[j + 1] - rows.dest_offsets[j];
      l.side_at[static_cast<size_t>(c) * dests + j] = at;
      at += static_cast<size_t>(piece_begin(n, c + 1, chunks) - piece_begin(n, c, chunks)) *
            side_bytes;
    }
  }
  l.chunk_at.push_back(at);
  return l;
}

// For combine: each distinct token's last chunk (the chunk after which all its rows are in), and
// the distinct tokens finished by each chunk, ascending.
std::vector<std::vector<int64_t>> finished_by_chunk(const RelayedRows& rows, int chunks) {
  std::vector<int> last(static_cast<size_t>(rows.num_unique), 0);
  const size_t dests = rows.dest_offsets.size() - 1;
  for (size_t j = 0; j < dests; ++j) {
    const int64_t first = rows.dest_offsets[j];
    const int64_t n = rows.dest_offsets[j + 1] - first;
    for (int c = 0; c < chunks; ++c) {
      for (int64_t i = piece_begin(n, c, chunks); i < piece_begin(n, c + 1, chunks); ++i) {
        auto& l = last[static_cast<size_t>(rows.unique_of_row[static_cast<size_t>(first + i)])];
        l = std::max(l, c);
      }
    }
  }
  std::vector<std::vector<int64_t>> finished(static_cast<size_t>(chunks));
  for (size_t u = 0; u < last.size(); ++u) {
    finished[static_cast<size_t>(last[u])].push_back(static_cast<int64_t>(u));
  }
  return finished;
}

int chunks_from(const HierarchicalOptions& options) {
  int chunks = options.chunks;
  if (chunks == 0) {
    chunks = static_cast<int>(env_integer("SWITCHYARD_RELAY_CHUNKS", 1, 4096,
                                          "need a whole number of chunks from 1 to 4096")
                                  .value_or(HierarchicalOptions::kDefaultChunks));
  }
  if (chunks < 1 || chunks > 4096) {
    throw CommError(ErrorCode::invalid_argument,
                    fmt::format("hierarchical all-to-all: {} chunks; need 1 to 4096", chunks));
  }
  return chunks;
}

}  // namespace

HierarchicalAllToAll::HierarchicalAllToAll(Communicator& comm, HierarchicalOptions options)
    : comm_(comm), chunks_(chunks_from(options)) {}

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

void HierarchicalAllToAll::combine(const RouteLayout& layout, DataType dtype, const void* rows,
                                   int64_t elems, void* out) {
  const char* what = "hierarchical combine";
  const size_t row_bytes = check_combine_args(layout, comm_.size(), dtype, rows, elems, out, what);
  const RelayPlan& plan = relay_plan_of(layout, comm_.topology(), what);
  const NodeMap nodes(comm_.topology());
  const int C = chunks_;
  const int me = comm_.rank();
  const int my_node = nodes.node_of(me);
  const auto& node_ranks = nodes.ranks(my_node);
  const size_t local_size = node_ranks.size();
  const auto* results = static_cast<const std::byte*>(rows);
  stats_.combine = {};
  Exchange ex(comm_, &stats_.combine, what);

  // Second hop's receives first: each other node's per-token sums from this rank's relay there,
  // chunk by chunk (the tokens each chunk finished, ascending), into a staging buffer.
  scratch_.reset();
  std::vector<std::span<std::byte>> node_sums_in(static_cast<size_t>(nodes.num_nodes()));
  std::vector<std::vector<std::vector<int64_t>>> finished_in(node_sums_in.size());
  std::vector<std::span<std::byte>> staged(node_sums_in.size());
  std::vector<int64_t> index_of(static_cast<size_t>(layout.num_tokens), -1);
  for (int node = 0; node < nodes.num_nodes(); ++node) {
    const auto n = static_cast<size_t>(node);
    node_sums_in[n] = scratch_.take(plan.unique_tokens[n].size() * row_bytes);
    if (node == my_node || node_sums_in[n].empty()) continue;
    finished_in[n] =
        finished_by_chunk(own_rows_for(layout, plan, nodes.ranks(node), n, index_of), C);
    staged[n] = scratch_.take(node_sums_in[n].size());
    size_t at = 0;
    for (const auto& tokens : finished_in[n]) {
      const size_t bytes = tokens.size() * row_bytes;
      if (bytes > 0)
        ex.recv(nodes.relay(me, node), staged[n].data() + at, bytes, kCombineAcrossTag);
      at += bytes;
    }
  }

  // As a relay: receives of the results each rank of this node returns, chunk by chunk (per
  // chunk, each relayed source ascending, its piece), and for every source each distinct token's
  // rows in destination order.
  const size_t sources = plan.relayed.size();
  std::vector<std::span<std::byte>> returned_in(local_size);
  std::vector<std::vector<size_t>> chunk_recvs(static_cast<size_t>(C));
  std::vector<std::vector<int64_t>> first_of(sources);          // [num_unique + 1], CSR
  std::vector<std::vector<const std::byte*>> rows_of(sources);  // each token's rows
  {
    std::vector<std::vector<const std::byte*>> row_at(sources);  // every row of every source
    for (size_t k = 0; k < sources; ++k) {
      row_at[k].resize(static_cast<size_t>(plan.relayed[k].dest_offsets.back()));
    }
    for (size_t j = 0; j < local_size; ++j) {
      const int peer = node_ranks[j];
      size_t total = 0;
      if (peer != me) {
        for (int c = 0; c < C; ++c) {
          for (const RelayedRows& r : plan.relayed) {
            const int64_t n = r.dest_offsets[j + 1] - r.dest_offsets[j];
            total += static_cast<size_t>(piece_begin(n, c + 1, C) - piece_begin(n, c, C));
          }
        }
        returned_in[j] = scratch_.take(total * row_bytes);
      }
      size_t at = 0;
      for (int c = 0; c < C; ++c) {
        for (size_t k = 0; k < sources; ++k) {
          const RelayedRows& r = plan.relayed[k];
          const int64_t n = r.dest_offsets[j + 1] - r.dest_offsets[j];
          const size_t piece_start = at;
          for (int64_t i = piece_begin(n, c, C); i < piece_begin(n, c + 1, C); ++i) {
            const std::byte* p =
                peer == me ? results + static_cast<size_t>(
                                           layout.recv_offsets[static_cast<size_t>(r.source)] + i) *
                                           row_bytes
                           : returned_in[j].data() + at;
            row_at[k][static_cast<size_t>(r.dest_offsets[j] + i)] = p;
            at += row_bytes;
          }
          // One message per (chunk, source), as the rank sends them straight from its results.
          if (peer != me && at > piece_start) {
            chunk_recvs[static_cast<size_t>(c)].push_back(ex.recv(
                peer, returned_in[j].data() + piece_start, at - piece_start, kCombineInsideTag));
          }
        }
      }
    }
    for (size_t k = 0; k < sources; ++k) {
      const RelayedRows& r = plan.relayed[k];
      auto& first = first_of[k];
      first.assign(static_cast<size_t>(r.num_unique) + 1, 0);
      for (int64_t u : r.unique_of_row) ++first[static_cast<size_t>(u) + 1];
      for (size_t u = 0; u + 1 < first.size(); ++u) first[u + 1] += first[u];
      std::vector<int64_t> fill(first.begin(), first.end() - 1);
      rows_of[k].resize(r.unique_of_row.size());
      // Rows are in destination order, so each token's list is too.
      for (size_t i = 0; i < r.unique_of_row.size(); ++i) {
        rows_of[k][static_cast<size_t>(fill[static_cast<size_t>(r.unique_of_row[i])]++)] =
            row_at[k][i];
      }
    }
  }

  // First hop: each result back to the relay of its source in this node, chunk by chunk: chunk c
  // to every relay before chunk c + 1 to any, so that every relay can start summing early, and one
  // message per (chunk, relayed source) sent straight from `rows` (each is a contiguous range of
  // them), with no packing copy.
  std::vector<std::vector<int>> relayed_of(local_size);
  for (size_t j = 0; j < local_size; ++j) {
    if (node_ranks[j] != me) relayed_of[j] = nodes.relayed_by(node_ranks[j]);
  }
  for (int c = 0; c < C; ++c) {
    for (size_t j = 0; j < local_size; ++j) {
      for (int s : relayed_of[j]) {
        const int64_t n = rows_from(layout.recv_offsets, s);
        const int64_t b = piece_begin(n, c, C);
        const int64_t count = piece_begin(n, c + 1, C) - b;
        if (count == 0) continue;
        ex.send(node_ranks[j],
                results + static_cast<size_t>(layout.recv_offsets[static_cast<size_t>(s)] + b) *
                              row_bytes,
                static_cast<size_t>(count) * row_bytes, kCombineInsideTag, count);
      }
    }
  }

  // As chunks come in: sum the tokens each chunk finished (destination ranks ascending) and send
  // those sums across while later chunks still arrive.
  std::vector<std::vector<std::vector<int64_t>>> finished(sources);
  std::vector<std::span<std::byte>> node_sums_out(sources);
  std::vector<size_t> out_at(sources, 0);
  for (size_t k = 0; k < sources; ++k) {
    finished[k] = finished_by_chunk(plan.relayed[k], C);
    if (plan.relayed[k].source != me) {
      node_sums_out[k] = scratch_.take(static_cast<size_t>(plan.relayed[k].num_unique) * row_bytes);
    }
  }
  auto* row_acc = reinterpret_cast<float*>(
      scratch_.take(dtype == DataType::bf16 ? static_cast<size_t>(elems) * sizeof(float) : 0)
          .data());
  for (int c = 0; c < C; ++c) {
    ex.wait_for(chunk_recvs[static_cast<size_t>(c)]);
    for (size_t k = 0; k < sources; ++k) {
      const RelayedRows& r = plan.relayed[k];
      const auto& tokens = finished[k][static_cast<size_t>(c)];
      if (tokens.empty()) continue;
      const bool own = r.source == me;
      std::byte* const begin = own ? nullptr : node_sums_out[k].data() + out_at[k];
      for (size_t o = 0; o < tokens.size(); ++o) {
        const auto u = static_cast<size_t>(tokens[o]);
        std::byte* dst = own ? node_sums_in[static_cast<size_t>(my_node)].data() + u * row_bytes
                             : begin + o * row_bytes;
        const std::byte* const* list = rows_of[k].data() + first_of[k][u];
        const auto count = static_cast<size_t>(first_of[k][u + 1] - first_of[k][u]);
        if (dtype == DataType::bf16) {
          sum_rows_bf16(reinterpret_cast<uint16_t*>(dst), list, count, elems, row_acc);
        } else if (dtype == DataType::fp32) {
          sum_rows(reinterpret_cast<float*>(dst), list, count, elems);
        } else {
          sum_rows(reinterpret_cast<double*>(dst), list, count, elems);
        }
      }
      if (!own) {
        ex.send(r.source, begin, tokens.size() * row_bytes, kCombineAcrossTag,
                static_cast<int64_t>(tokens.size()));
        out_at[k] += tokens.size() * row_bytes;
      }
    }
  }
  ex.wait();

  for (size_t n = 0; n < staged.size(); ++n) {
    size_t at = 0;
    for (const auto& tokens : finished_in[n]) {
      for (int64_t u : tokens) {
        std::memcpy(node_sums_in[n].data() + static_cast<size_t>(u) * row_bytes,
                    staged[n].data() + at, row_bytes);
        at += row_bytes;
      }
    }
  }
  std::vector<const std::byte*> node_sums;
  for (const auto& sums : node_sums_in) node_sums.push_back(sums.data());
  if (dtype == DataType::bf16) {
    auto* acc = reinterpret_cast<float*>(
        scratch_.take(static_cast<size_t>(layout.num_tokens * elems) * sizeof(float)).data());
    sum_nodes_bf16(plan, layout.num_tokens, node_sums, elems, static_cast<uint16_t*>(out), acc);
  } else if (dtype == DataType::fp32) {
    sum_nodes(plan, layout.num_tokens, node_sums, elems, static_cast<float*>(out));
  } else {
    sum_nodes(plan, layout.num_tokens, node_sums, elems, static_cast<double*>(out));
  }
}

}  // namespace switchyard::comm
