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

namespace {

// One dispatch call: what its phases share, and the phases in the order they run (see dispatch()).
class DispatchRun : RelayRun {
 public:
  DispatchRun(Communicator& comm, ScratchBuffers& scratch, int chunks, PhaseStats* stats,
              const RouteLayout& layout, const RelayPlan& plan, const void* tokens,
              size_t token_bytes, const void* side, size_t side_bytes, void* recv_tokens,
              void* recv_side)
      : RelayRun(comm, scratch, chunks, stats, layout, plan, "hierarchical dispatch"),
        token_bytes_(token_bytes),
        side_bytes_(side_bytes),
        row_bytes_(token_bytes + side_bytes),
        token_base_(static_cast<const std::byte*>(tokens)),
        side_base_(static_cast<const std::byte*>(side)),
        out_tokens_(static_cast<std::byte*>(recv_tokens)),
        out_side_(static_cast<std::byte*>(recv_side)) {}

  // Second hop's receives first: from every rank of this node, chunk by chunk, the rows it
  // relays for this rank (per chunk: each source ascending, its piece).
  void post_forwarded_receives();
  // As a relay: where each relayed source's rows will be, and the receives of its chunks.
  void post_crossing_receives();
  // First hop: to each other node's relay, chunk by chunk.
  void send_across_nodes();
  // Second hop, chunk by chunk as the chunks arrive: each relayed source's piece c for every rank
  // of this node; this rank's own share lands in place. Then what the relays forwarded.
  void forward_inside_node();

 private:
  int64_t rows_from_source(int s) const { return rows_from(layout_.recv_offsets, s); }
  // Token of row `row` of relayed source k, wherever it is (sent by the source, or this rank's).
  const std::byte* token_of(size_t k, int64_t row) const;
  // Side data of row i of piece c of local destination j.
  const std::byte* side_of(size_t k, size_t j, int c, int64_t i) const;
  // Copies piece c of relayed source k's rows for local destination j; returns its rows.
  size_t copy_piece(size_t k, size_t j, int c, std::byte* dst_token, std::byte* dst_side,
                    size_t token_stride, size_t side_stride) const;
  // Unpacks chunk c of what relay j forwarded (per source ascending, its piece) into place, once
  // it has arrived: the earlier ones while later chunks still cross.
  void unpack(size_t j, int c);
  void unpack_arrived();
  // The forwards of local destination j: sizes per chunk and buffers.
  void prepare_forwards();

  const size_t token_bytes_, side_bytes_, row_bytes_;
  const std::byte* const token_base_;
  const std::byte* const side_base_;
  std::byte* const out_tokens_;
  std::byte* const out_side_;

  std::vector<std::vector<int>> sources_of_;
  std::vector<std::span<std::byte>> forwarded_in_;
  std::vector<std::vector<size_t>> forwarded_at_;
  std::vector<std::vector<size_t>> forwarded_recv_;  // request index, SIZE_MAX: none
  std::vector<CrossingLayout> crossing_;
  std::vector<std::span<std::byte>> crossing_in_;
  std::vector<std::vector<size_t>> chunk_recvs_;
  std::vector<std::span<std::byte>> crossing_out_;
  std::vector<std::span<std::byte>> forwarded_out_;
  std::vector<std::vector<size_t>> forwarded_out_at_;
  std::vector<int> unpacked_;  // chunks of each relay unpacked so far, in order
};

void DispatchRun::post_forwarded_receives() {
  sources_of_.resize(local_size_);
  forwarded_in_.resize(local_size_);
  forwarded_at_.resize(local_size_);
  forwarded_recv_.resize(local_size_);
  for (size_t j = 0; j < local_size_; ++j) {
    sources_of_[j] = nodes_.relayed_by(node_ranks_[j]);
    if (node_ranks_[j] == me_) continue;
    size_t at = 0;
    for (int c = 0; c < C_; ++c) {
      forwarded_at_[j].push_back(at);
      for (int s : sources_of_[j]) {
        const int64_t n = rows_from_source(s);
        at += static_cast<size_t>(piece_begin(n, c + 1, C_) - piece_begin(n, c, C_)) * row_bytes_;
      }
    }
    forwarded_at_[j].push_back(at);
    forwarded_in_[j] = scratch_.take(at);
    forwarded_recv_[j].assign(static_cast<size_t>(C_), SIZE_MAX);
    for (int c = 0; c < C_; ++c) {
      const size_t bytes = forwarded_at_[j][c + 1] - forwarded_at_[j][c];
      if (bytes > 0) {
        forwarded_recv_[j][static_cast<size_t>(c)] =
            ex_.recv(node_ranks_[j], forwarded_in_[j].data() + forwarded_at_[j][c], bytes,
                     kDispatchInsideTag);
      }
    }
  }
}

void DispatchRun::post_crossing_receives() {
  crossing_.resize(sources_);
  crossing_in_.resize(sources_);
  chunk_recvs_.resize(static_cast<size_t>(C_));
  for (size_t k = 0; k < sources_; ++k) {
    const RelayedRows& rows = plan_.relayed[k];
    if (rows.source == me_) continue;
    crossing_[k] = crossing_layout(rows, C_, token_bytes_, side_bytes_);
    crossing_in_[k] = scratch_.take(crossing_[k].chunk_at.back());
    for (int c = 0; c < C_; ++c) {
      const size_t bytes = crossing_[k].chunk_at[c + 1] - crossing_[k].chunk_at[c];
      if (bytes > 0) {
        chunk_recvs_[static_cast<size_t>(c)].push_back(
            ex_.recv(rows.source, crossing_in_[k].data() + crossing_[k].chunk_at[c], bytes,
                     kDispatchAcrossTag));
      }
    }
  }
}

void DispatchRun::send_across_nodes() {
  std::vector<int64_t> index_of(static_cast<size_t>(layout_.num_tokens), -1);
  crossing_out_.resize(static_cast<size_t>(nodes_.num_nodes()));
  for (int node = 0; node < nodes_.num_nodes(); ++node) {
    const auto& dests = nodes_.ranks(node);
    if (node == my_node_) continue;
    const RelayedRows rows =
        own_rows_for(layout_, plan_, dests, static_cast<size_t>(node), index_of);
    const auto& unique = plan_.unique_tokens[static_cast<size_t>(node)];
    const CrossingLayout l = crossing_layout(rows, C_, token_bytes_, side_bytes_);
    auto& message = crossing_out_[static_cast<size_t>(node)];
    message = scratch_.take(l.chunk_at.back());
    size_t next_token = 0;
    for (int c = 0; c < C_; ++c) {
      // Packed chunk by chunk, so the first one leaves before the rest is packed.
      for (int64_t t = 0; t < l.new_tokens[static_cast<size_t>(c)]; ++t, ++next_token) {
        const auto u = static_cast<size_t>(l.token_order[next_token]);
        std::memcpy(message.data() + l.token_at[u],
                    token_base_ + static_cast<size_t>(unique[u]) * token_bytes_, token_bytes_);
      }
      for (size_t j = 0; j < dests.size(); ++j) {
        const int64_t n = rows.dest_offsets[j + 1] - rows.dest_offsets[j];
        const int64_t b = piece_begin(n, c, C_);
        const int64_t e = piece_begin(n, c + 1, C_);
        if (e > b && side_bytes_ > 0) {
          std::memcpy(message.data() + l.side_at[static_cast<size_t>(c) * dests.size() + j],
                      side_base_ + static_cast<size_t>(
                                       layout_.send_offsets[static_cast<size_t>(dests[j])] + b) *
                                       side_bytes_,
                      static_cast<size_t>(e - b) * side_bytes_);
        }
      }
      const size_t bytes = l.chunk_at[c + 1] - l.chunk_at[c];
      if (bytes > 0) {
        ex_.send(nodes_.relay(me_, node), message.data() + l.chunk_at[c], bytes,
                 kDispatchAcrossTag, l.new_tokens[static_cast<size_t>(c)]);
      }
    }
  }
}

const std::byte* DispatchRun::token_of(size_t k, int64_t row) const {
  const RelayedRows& r = plan_.relayed[k];
  const auto u = static_cast<size_t>(r.unique_of_row[static_cast<size_t>(row)]);
  if (r.source == me_) {
    return token_base_ +
           static_cast<size_t>(plan_.unique_tokens[static_cast<size_t>(my_node_)][u]) *
               token_bytes_;
  }
  return crossing_in_[k].data() + crossing_[k].token_at[u];
}

const std::byte* DispatchRun::side_of(size_t k, size_t j, int c, int64_t i) const {
  const RelayedRows& r = plan_.relayed[k];
  if (r.source == me_) {
    return side_base_ +
           static_cast<size_t>(layout_.send_offsets[static_cast<size_t>(node_ranks_[j])] + i) *
               side_bytes_;
  }
  const int64_t n = r.dest_offsets[j + 1] - r.dest_offsets[j];
  return crossing_in_[k].data() + crossing_[k].side_at[static_cast<size_t>(c) * local_size_ + j] +
         static_cast<size_t>(i - piece_begin(n, c, C_)) * side_bytes_;
}

size_t DispatchRun::copy_piece(size_t k, size_t j, int c, std::byte* dst_token,
                               std::byte* dst_side, size_t token_stride,
                               size_t side_stride) const {
  const RelayedRows& r = plan_.relayed[k];
  const int64_t n = r.dest_offsets[j + 1] - r.dest_offsets[j];
  const int64_t b = piece_begin(n, c, C_);
  const int64_t e = piece_begin(n, c + 1, C_);
  for (int64_t i = b; i < e; ++i) {
    const auto o = static_cast<size_t>(i - b);
    if (token_bytes_ > 0) {
      std::memcpy(dst_token + o * token_stride, token_of(k, r.dest_offsets[j] + i), token_bytes_);
    }
    if (side_bytes_ > 0) std::memcpy(dst_side + o * side_stride, side_of(k, j, c, i), side_bytes_);
  }
  return static_cast<size_t>(e - b);
}

void DispatchRun::prepare_forwards() {
  forwarded_out_.resize(local_size_);
  forwarded_out_at_.resize(local_size_);
  for (size_t j = 0; j < local_size_; ++j) {
    if (node_ranks_[j] == me_) continue;
    size_t at = 0;
    for (int c = 0; c < C_; ++c) {
      forwarded_out_at_[j].push_back(at);
      for (const RelayedRows& r : plan_.relayed) {
        const int64_t n = r.dest_offsets[j + 1] - r.dest_offsets[j];
        at += static_cast<size_t>(piece_begin(n, c + 1, C_) - piece_begin(n, c, C_)) * row_bytes_;
      }
    }
    forwarded_out_at_[j].push_back(at);
    forwarded_out_[j] = scratch_.take(at);
  }
}

void DispatchRun::unpack(size_t j, int c) {
  if (node_ranks_[j] == me_) return;
  size_t& request = forwarded_recv_[j][static_cast<size_t>(c)];
  if (request == SIZE_MAX) return;
  request = SIZE_MAX;
  const std::byte* at = forwarded_in_[j].data() + forwarded_at_[j][static_cast<size_t>(c)];
  for (int s : sources_of_[j]) {
    const int64_t n = rows_from_source(s);
    const auto first =
        static_cast<size_t>(layout_.recv_offsets[static_cast<size_t>(s)] + piece_begin(n, c, C_));
    const auto count = static_cast<size_t>(piece_begin(n, c + 1, C_) - piece_begin(n, c, C_));
    for (size_t i = 0; i < count; ++i, at += row_bytes_) {
      if (token_bytes_ > 0) {
        std::memcpy(out_tokens_ + (first + i) * token_bytes_, at, token_bytes_);
      }
      if (side_bytes_ > 0) {
        std::memcpy(out_side_ + (first + i) * side_bytes_, at + token_bytes_, side_bytes_);
      }
    }
  }
}

void DispatchRun::unpack_arrived() {
  for (size_t j = 0; j < local_size_; ++j) {
    if (node_ranks_[j] == me_) continue;
    while (unpacked_[j] < C_) {
      const size_t request = forwarded_recv_[j][static_cast<size_t>(unpacked_[j])];
      if (request != SIZE_MAX && !ex_.done(request)) break;
      unpack(j, unpacked_[j]++);
    }
  }
}

void DispatchRun::forward_inside_node() {
  prepare_forwards();
  unpacked_.assign(local_size_, 0);
  for (int c = 0; c < C_; ++c) {
    ex_.wait_for(chunk_recvs_[static_cast<size_t>(c)]);
    unpack_arrived();
    for (size_t j = 0; j < local_size_; ++j) {
      if (node_ranks_[j] == me_) {
        for (size_t k = 0; k < sources_; ++k) {
          const RelayedRows& r = plan_.relayed[k];
          const int64_t n = r.dest_offsets[j + 1] - r.dest_offsets[j];
          const auto at = static_cast<size_t>(
              layout_.recv_offsets[static_cast<size_t>(r.source)] + piece_begin(n, c, C_));
          copy_piece(k, j, c, out_tokens_ + at * token_bytes_, out_side_ + at * side_bytes_,
                     token_bytes_, side_bytes_);
        }
        continue;
      }
      std::byte* at = forwarded_out_[j].data() + forwarded_out_at_[j][c];
      std::byte* const begin = at;
      int64_t rows = 0;
      for (size_t k = 0; k < sources_; ++k) {
        const size_t count = copy_piece(k, j, c, at, at + token_bytes_, row_bytes_, row_bytes_);
        at += count * row_bytes_;
        rows += static_cast<int64_t>(count);
      }
      if (rows > 0) {
        ex_.send(node_ranks_[j], begin, static_cast<size_t>(at - begin), kDispatchInsideTag, rows);
      }
    }
  }
  unpack_arrived();
  ex_.wait();
  for (size_t j = 0; j < local_size_; ++j) {
    for (int c = 0; c < C_; ++c) unpack(j, c);
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
  stats_.dispatch = {};
  scratch_.reset();
  DispatchRun run(comm_, scratch_, chunks_, &stats_.dispatch, layout, plan, tokens, token_bytes,
                  side, side_bytes, recv_tokens, recv_side);
  // Every receive is posted before any send, the second hop's first, so that a relay's forwards
  // are matched as soon as they leave.
  run.post_forwarded_receives();
  run.post_crossing_receives();
  run.send_across_nodes();
  run.forward_inside_node();
}

}  // namespace switchyard::comm
