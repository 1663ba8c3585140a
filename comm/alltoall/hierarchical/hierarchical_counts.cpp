// HierarchicalAllToAll::exchange_counts: builds the RelayPlan and the receive counts.
#include <fmt/format.h>

#include <memory>

#include "comm/alltoall/exchange.h"
#include "comm/alltoall/hierarchical/hierarchical_alltoall.h"
#include "comm/alltoall/hierarchical/relay_plan.h"
#include "comm/alltoall/layout_check.h"
#include "comm/alltoall/node_map.h"
#include "comm/error.h"
#include "comm/tags.h"

namespace switchyard::comm {

namespace {

// This rank's rows for every node, in the form the node's relay will hold them; fills
// plan.unique_tokens.
std::vector<RelayedRows> own_rows_per_node(const RouteLayout& layout, const NodeMap& nodes, int me,
                                           RelayPlan& plan) {
  std::vector<RelayedRows> per_node(static_cast<size_t>(nodes.num_nodes()));
  plan.unique_tokens.resize(per_node.size());
  std::vector<int64_t> index_of(static_cast<size_t>(layout.num_tokens), -1);
  for (int node = 0; node < nodes.num_nodes(); ++node) {
    RelayedRows& rows = per_node[static_cast<size_t>(node)];
    auto& unique = plan.unique_tokens[static_cast<size_t>(node)];
    rows.source = me;
    rows.dest_offsets.push_back(0);
    for (int d : nodes.ranks(node)) {
      for (int64_t i = layout.send_offsets[static_cast<size_t>(d)];
           i < layout.send_offsets[static_cast<size_t>(d) + 1]; ++i) {
        const auto t = static_cast<size_t>(layout.send_tokens[static_cast<size_t>(i)]);
        if (index_of[t] < 0) {
          index_of[t] = static_cast<int64_t>(unique.size());
          unique.push_back(static_cast<int64_t>(t));
        }
        rows.unique_of_row.push_back(index_of[t]);
      }
      rows.dest_offsets.push_back(static_cast<int64_t>(rows.unique_of_row.size()));
    }
    rows.num_unique = static_cast<int64_t>(unique.size());
    for (int64_t t : unique) index_of[static_cast<size_t>(t)] = -1;
  }
  return per_node;
}

[[noreturn]] void bad_metadata(const char* what, int source, const std::string& problem) {
  throw CommError(ErrorCode::internal,
                  fmt::format("{}: rank {} sent an inconsistent relay header ({}); every rank must "
                              "use the same topology and algorithm",
                              what, source, problem));
}

}  // namespace

void HierarchicalAllToAll::exchange_counts(RouteLayout& layout) {
  const char* what = "hierarchical exchange_counts";
  check_layout(layout, comm_.size(), false, what);
  const Topology& topology = comm_.topology();
  const NodeMap nodes(topology);
  const int me = comm_.rank();
  const int my_node = nodes.node_of(me);
  const auto& node_ranks = nodes.ranks(my_node);
  const size_t local_size = node_ranks.size();

  auto plan = std::make_shared<RelayPlan>();
  plan->node_of_rank = topology.node_of_rank;
  plan->send_offsets = layout.send_offsets;
  plan->send_tokens = layout.send_tokens;
  std::vector<RelayedRows> outgoing = own_rows_per_node(layout, nodes, me, *plan);
  for (int s : nodes.relayed_by(me)) {
    if (s == me) {
      plan->relayed.push_back(std::move(outgoing[static_cast<size_t>(my_node)]));
    } else {
      plan->relayed.emplace_back().source = s;
    }
  }

  // Round 1, across nodes: to each other node's relay, [distinct tokens, rows for each of the
  // node's ranks]. Sent even when all zero: that is how a relay learns it forwards nothing.
  std::vector<std::vector<int64_t>> headers_out(outgoing.size());
  std::vector<std::vector<int64_t>> headers_in(plan->relayed.size());
  {
    Exchange exchange(comm_, nullptr, what);
    for (int node = 0; node < nodes.num_nodes(); ++node) {
      if (node == my_node) continue;
      const RelayedRows& rows = outgoing[static_cast<size_t>(node)];
      auto& header = headers_out[static_cast<size_t>(node)];
      header.push_back(rows.num_unique);
      for (size_t j = 0; j + 1 < rows.dest_offsets.size(); ++j) {
        header.push_back(rows.dest_offsets[j + 1] - rows.dest_offsets[j]);
      }
      exchange.send(nodes.relay(me, node), header.data(), header.size() * sizeof(int64_t),
                    kHeaderTag);
    }
    for (size_t k = 0; k < plan->relayed.size(); ++k) {
      const int s = plan->relayed[k].source;
      if (s == me) continue;
      headers_in[k].resize(local_size + 1);
      exchange.recv(s, headers_in[k].data(), headers_in[k].size() * sizeof(int64_t), kHeaderTag);
    }
    exchange.wait();
  }
  for (size_t k = 0; k < plan->relayed.size(); ++k) {
    RelayedRows& rows = plan->relayed[k];
    if (rows.source == me) continue;
    const auto& header = headers_in[k];
    if (header[0] < 0) bad_metadata(what, rows.source, "negative token count");
    rows.num_unique = header[0];
    rows.dest_offsets.assign(1, 0);
    for (size_t j = 0; j < local_size; ++j) {
      if (header[j + 1] < 0) bad_metadata(what, rows.source, "negative row count");
      rows.dest_offsets.push_back(rows.dest_offsets.back() + header[j + 1]);
    }
    rows.unique_of_row.resize(static_cast<size_t>(rows.dest_offsets.back()));
  }

  // Round 2, across nodes: the token index of every row, so that relays can forward one copy of
  // each token to several ranks and sum the results per token.
  {
    Exchange exchange(comm_, nullptr, what);
    for (int node = 0; node < nodes.num_nodes(); ++node) {
      const auto& index = outgoing[static_cast<size_t>(node)].unique_of_row;
      if (node == my_node || index.empty()) continue;
      exchange.send(nodes.relay(me, node), index.data(), index.size() * sizeof(int64_t), kIndexTag);
    }
    for (RelayedRows& rows : plan->relayed) {
      if (rows.source == me || rows.unique_of_row.empty()) continue;
      exchange.recv(rows.source, rows.unique_of_row.data(),
                    rows.unique_of_row.size() * sizeof(int64_t), kIndexTag);
    }
    exchange.wait();
  }
  for (const RelayedRows& rows : plan->relayed) {
    for (int64_t u : rows.unique_of_row) {
      if (u < 0 || u >= rows.num_unique)
        bad_metadata(what, rows.source, "token index out of range");
    }
  }

  // Round 3, inside the node: each relay tells each rank of its node how many rows it will forward
  // from each source it relays (ascending).
  std::vector<std::vector<int64_t>> counts_out(local_size);
  for (size_t j = 0; j < local_size; ++j) {
    for (const RelayedRows& rows : plan->relayed) {
      counts_out[j].push_back(rows.dest_offsets[j + 1] - rows.dest_offsets[j]);
    }
  }
  std::vector<std::vector<int>> sources_of(local_size);
  std::vector<std::vector<int64_t>> counts_in(local_size);
  {
    Exchange exchange(comm_, nullptr, what);
    for (size_t j = 0; j < local_size; ++j) {
      const int peer = node_ranks[j];
      sources_of[j] = nodes.relayed_by(peer);
      if (peer == me) {
        counts_in[j] = counts_out[static_cast<size_t>(nodes.local_index(me))];
        continue;
      }
      counts_in[j].resize(sources_of[j].size());
      exchange.recv(peer, counts_in[j].data(), counts_in[j].size() * sizeof(int64_t),
                    kRelayCountsTag);
      exchange.send(peer, counts_out[j].data(), counts_out[j].size() * sizeof(int64_t),
                    kRelayCountsTag);
    }
    exchange.wait();
  }
  // Every source has exactly one relay on this node, so this sees each source once.
  std::vector<int64_t> from(static_cast<size_t>(comm_.size()), 0);
  for (size_t j = 0; j < local_size; ++j) {
    for (size_t k = 0; k < sources_of[j].size(); ++k) {
      if (counts_in[j][k] < 0) bad_metadata(what, node_ranks[j], "negative row count");
      from[static_cast<size_t>(sources_of[j][k])] = counts_in[j][k];
    }
  }
  layout.recv_offsets.assign(from.size() + 1, 0);
  for (size_t s = 0; s < from.size(); ++s) {
    layout.recv_offsets[s + 1] = layout.recv_offsets[s] + from[s];
  }
  plan->recv_offsets = layout.recv_offsets;
  layout.relay = std::move(plan);
}

}  // namespace switchyard::comm
