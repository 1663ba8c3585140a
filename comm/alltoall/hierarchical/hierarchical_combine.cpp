// HierarchicalAllToAll::combine: results are summed per token inside each node, the
// node sums cross back, and each source adds them in node order.
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
