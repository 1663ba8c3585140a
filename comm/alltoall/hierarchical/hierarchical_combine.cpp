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

namespace {

// One combine call: what its phases share, and the phases in the order they run (see combine()).
class CombineRun : RelayRun {
 public:
  CombineRun(Communicator& comm, ScratchBuffers& scratch, int chunks, PhaseStats* stats,
             const RouteLayout& layout, const RelayPlan& plan, DataType dtype, const void* rows,
             int64_t elems, size_t row_bytes)
      : RelayRun(comm, scratch, chunks, stats, layout, plan, "hierarchical combine"),
        dtype_(dtype),
        elems_(elems),
        row_bytes_(row_bytes),
        results_(static_cast<const std::byte*>(rows)) {}

  // Second hop's receives first: each other node's per-token sums from this rank's relay there,
  // chunk by chunk (the tokens each chunk finished, ascending), into a staging buffer.
  void post_node_sum_receives();
  // As a relay: receives of the results each rank of this node returns, chunk by chunk (per
  // chunk, each relayed source ascending, its piece), and for every source each distinct token's
  // rows in destination order.
  void post_returned_receives();
  // First hop: each result back to the relay of its source in this node, chunk by chunk: chunk c
  // to every relay before chunk c + 1 to any, so that every relay can start summing early, and
  // one message per (chunk, relayed source) sent straight from `rows` (each is a contiguous range
  // of them), with no packing copy.
  void return_results();
  // As chunks come in: sum the tokens each chunk finished (destination ranks ascending) and send
  // those sums across while later chunks still arrive.
  void sum_and_send();
  // out = the nodes' sums per token, nodes ascending.
  void add_node_sums(void* out);

 private:
  // One token's sum over its rows into dst, in the call's type.
  void sum_token(std::byte* dst, size_t k, size_t u, float* row_acc) const;

  const DataType dtype_;
  const int64_t elems_;
  const size_t row_bytes_;
  const std::byte* const results_;

  std::vector<std::span<std::byte>> node_sums_in_;
  std::vector<std::vector<std::vector<int64_t>>> finished_in_;
  std::vector<std::span<std::byte>> staged_;
  std::vector<std::span<std::byte>> returned_in_;
  std::vector<std::vector<size_t>> chunk_recvs_;
  std::vector<std::vector<int64_t>> first_of_;          // [num_unique + 1], CSR
  std::vector<std::vector<const std::byte*>> rows_of_;  // each token's rows
};

void CombineRun::post_node_sum_receives() {
  const auto num_nodes = static_cast<size_t>(nodes_.num_nodes());
  node_sums_in_.resize(num_nodes);
  finished_in_.resize(num_nodes);
  staged_.resize(num_nodes);
  std::vector<int64_t> index_of(static_cast<size_t>(layout_.num_tokens), -1);
  for (int node = 0; node < nodes_.num_nodes(); ++node) {
    const auto n = static_cast<size_t>(node);
    node_sums_in_[n] = scratch_.take(plan_.unique_tokens[n].size() * row_bytes_);
    if (node == my_node_ || node_sums_in_[n].empty()) continue;
    finished_in_[n] =
        finished_by_chunk(own_rows_for(layout_, plan_, nodes_.ranks(node), n, index_of), C_);
    staged_[n] = scratch_.take(node_sums_in_[n].size());
    size_t at = 0;
    for (const auto& tokens : finished_in_[n]) {
      const size_t bytes = tokens.size() * row_bytes_;
      if (bytes > 0) {
        ex_.recv(nodes_.relay(me_, node), staged_[n].data() + at, bytes, kCombineAcrossTag);
      }
      at += bytes;
    }
  }
}

void CombineRun::post_returned_receives() {
  returned_in_.resize(local_size_);
  chunk_recvs_.resize(static_cast<size_t>(C_));
  first_of_.resize(sources_);
  rows_of_.resize(sources_);
  std::vector<std::vector<const std::byte*>> row_at(sources_);  // every row of every source
  for (size_t k = 0; k < sources_; ++k) {
    row_at[k].resize(static_cast<size_t>(plan_.relayed[k].dest_offsets.back()));
  }
  for (size_t j = 0; j < local_size_; ++j) {
    const int peer = node_ranks_[j];
    size_t total = 0;
    if (peer != me_) {
      for (int c = 0; c < C_; ++c) {
        for (const RelayedRows& r : plan_.relayed) {
          const int64_t n = r.dest_offsets[j + 1] - r.dest_offsets[j];
          total += static_cast<size_t>(piece_begin(n, c + 1, C_) - piece_begin(n, c, C_));
        }
      }
      returned_in_[j] = scratch_.take(total * row_bytes_);
    }
    size_t at = 0;
    for (int c = 0; c < C_; ++c) {
      for (size_t k = 0; k < sources_; ++k) {
        const RelayedRows& r = plan_.relayed[k];
        const int64_t n = r.dest_offsets[j + 1] - r.dest_offsets[j];
        const size_t piece_start = at;
        for (int64_t i = piece_begin(n, c, C_); i < piece_begin(n, c + 1, C_); ++i) {
          const std::byte* p =
              peer == me_
                  ? results_ + static_cast<size_t>(
                                   layout_.recv_offsets[static_cast<size_t>(r.source)] + i) *
                                   row_bytes_
                  : returned_in_[j].data() + at;
          row_at[k][static_cast<size_t>(r.dest_offsets[j] + i)] = p;
          at += row_bytes_;
        }
        // One message per (chunk, source), as the rank sends them straight from its results.
        if (peer != me_ && at > piece_start) {
          chunk_recvs_[static_cast<size_t>(c)].push_back(ex_.recv(
              peer, returned_in_[j].data() + piece_start, at - piece_start, kCombineInsideTag));
        }
      }
    }
  }
  for (size_t k = 0; k < sources_; ++k) {
    const RelayedRows& r = plan_.relayed[k];
    auto& first = first_of_[k];
    first.assign(static_cast<size_t>(r.num_unique) + 1, 0);
    for (int64_t u : r.unique_of_row) ++first[static_cast<size_t>(u) + 1];
    for (size_t u = 0; u + 1 < first.size(); ++u) first[u + 1] += first[u];
    std::vector<int64_t> fill(first.begin(), first.end() - 1);
    rows_of_[k].resize(r.unique_of_row.size());
    // Rows are in destination order, so each token's list is too.
    for (size_t i = 0; i < r.unique_of_row.size(); ++i) {
      rows_of_[k][static_cast<size_t>(fill[static_cast<size_t>(r.unique_of_row[i])]++)] =
          row_at[k][i];
    }
  }
}

void CombineRun::return_results() {
  std::vector<std::vector<int>> relayed_of(local_size_);
  for (size_t j = 0; j < local_size_; ++j) {
    if (node_ranks_[j] != me_) relayed_of[j] = nodes_.relayed_by(node_ranks_[j]);
  }
  for (int c = 0; c < C_; ++c) {
    for (size_t j = 0; j < local_size_; ++j) {
      for (int s : relayed_of[j]) {
        const int64_t n = rows_from(layout_.recv_offsets, s);
        const int64_t b = piece_begin(n, c, C_);
        const int64_t count = piece_begin(n, c + 1, C_) - b;
        if (count == 0) continue;
        ex_.send(node_ranks_[j],
                 results_ +
                     static_cast<size_t>(layout_.recv_offsets[static_cast<size_t>(s)] + b) *
                         row_bytes_,
                 static_cast<size_t>(count) * row_bytes_, kCombineInsideTag, count);
      }
    }
  }
}

void CombineRun::sum_token(std::byte* dst, size_t k, size_t u, float* row_acc) const {
  const std::byte* const* list = rows_of_[k].data() + first_of_[k][u];
  const auto count = static_cast<size_t>(first_of_[k][u + 1] - first_of_[k][u]);
  if (dtype_ == DataType::bf16) {
    sum_rows_bf16(reinterpret_cast<uint16_t*>(dst), list, count, elems_, row_acc);
  } else if (dtype_ == DataType::fp32) {
    sum_rows(reinterpret_cast<float*>(dst), list, count, elems_);
  } else {
    sum_rows(reinterpret_cast<double*>(dst), list, count, elems_);
  }
}

void CombineRun::sum_and_send() {
  std::vector<std::vector<std::vector<int64_t>>> finished(sources_);
  std::vector<std::span<std::byte>> node_sums_out(sources_);
  std::vector<size_t> out_at(sources_, 0);
  for (size_t k = 0; k < sources_; ++k) {
    finished[k] = finished_by_chunk(plan_.relayed[k], C_);
    if (plan_.relayed[k].source != me_) {
      node_sums_out[k] =
          scratch_.take(static_cast<size_t>(plan_.relayed[k].num_unique) * row_bytes_);
    }
  }
  auto* row_acc = reinterpret_cast<float*>(
      scratch_.take(dtype_ == DataType::bf16 ? static_cast<size_t>(elems_) * sizeof(float) : 0)
          .data());
  for (int c = 0; c < C_; ++c) {
    ex_.wait_for(chunk_recvs_[static_cast<size_t>(c)]);
    for (size_t k = 0; k < sources_; ++k) {
      const RelayedRows& r = plan_.relayed[k];
      const auto& tokens = finished[k][static_cast<size_t>(c)];
      if (tokens.empty()) continue;
      const bool own = r.source == me_;
      std::byte* const begin = own ? nullptr : node_sums_out[k].data() + out_at[k];
      for (size_t o = 0; o < tokens.size(); ++o) {
        const auto u = static_cast<size_t>(tokens[o]);
        std::byte* dst = own ? node_sums_in_[static_cast<size_t>(my_node_)].data() + u * row_bytes_
                             : begin + o * row_bytes_;
        sum_token(dst, k, u, row_acc);
      }
      if (!own) {
        ex_.send(r.source, begin, tokens.size() * row_bytes_, kCombineAcrossTag,
                 static_cast<int64_t>(tokens.size()));
        out_at[k] += tokens.size() * row_bytes_;
      }
    }
  }
  ex_.wait();
}

void CombineRun::add_node_sums(void* out) {
  for (size_t n = 0; n < staged_.size(); ++n) {
    size_t at = 0;
    for (const auto& tokens : finished_in_[n]) {
      for (int64_t u : tokens) {
        std::memcpy(node_sums_in_[n].data() + static_cast<size_t>(u) * row_bytes_,
                    staged_[n].data() + at, row_bytes_);
        at += row_bytes_;
      }
    }
  }
  std::vector<const std::byte*> node_sums;
  for (const auto& sums : node_sums_in_) node_sums.push_back(sums.data());
  if (dtype_ == DataType::bf16) {
    auto* acc = reinterpret_cast<float*>(
        scratch_.take(static_cast<size_t>(layout_.num_tokens * elems_) * sizeof(float)).data());
    sum_nodes_bf16(plan_, layout_.num_tokens, node_sums, elems_, static_cast<uint16_t*>(out),
                   acc);
  } else if (dtype_ == DataType::fp32) {
    sum_nodes(plan_, layout_.num_tokens, node_sums, elems_, static_cast<float*>(out));
  } else {
    sum_nodes(plan_, layout_.num_tokens, node_sums, elems_, static_cast<double*>(out));
  }
}

}  // namespace

void HierarchicalAllToAll::combine(const RouteLayout& layout, DataType dtype, const void* rows,
                                   int64_t elems, void* out) {
  const char* what = "hierarchical combine";
  const size_t row_bytes = check_combine_args(layout, comm_.size(), dtype, rows, elems, out, what);
  const RelayPlan& plan = relay_plan_of(layout, comm_.topology(), what);
  stats_.combine = {};
  scratch_.reset();
  CombineRun run(comm_, scratch_, chunks_, &stats_.combine, layout, plan, dtype, rows, elems,
                 row_bytes);
  // Every receive is posted before any send, the second hop's first.
  run.post_node_sum_receives();
  run.post_returned_receives();
  run.return_results();
  run.sum_and_send();
  run.add_node_sums(out);
}

}  // namespace switchyard::comm
