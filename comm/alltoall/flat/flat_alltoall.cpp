#include "comm/alltoall/flat/flat_alltoall.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "comm/alltoall/bf16.h"
#include "comm/alltoall/exchange.h"
#include "comm/alltoall/layout_check.h"
#include "comm/error.h"
#include "comm/tags.h"

namespace switchyard::comm {

namespace {

int64_t rows_of(const std::vector<int64_t>& offsets, int rank) {
  return offsets[static_cast<size_t>(rank) + 1] - offsets[static_cast<size_t>(rank)];
}

// Posts, for every peer, a send of its block of `send` and a receive of its block of `recv`
// (blocks of rows given by the offsets, row_bytes each), copies this rank's own block, and waits.
// Peers with an empty block exchange no message. Counts what it sends into stats (when not null).
void exchange_blocks(Communicator& comm, const std::byte* send,
                     const std::vector<int64_t>& send_offsets, std::byte* recv,
                     const std::vector<int64_t>& recv_offsets, size_t row_bytes, int tag,
                     PhaseStats* stats, const char* what) {
  const int me = comm.rank();
  auto block = [row_bytes](const std::vector<int64_t>& offsets, int rank) {
    return std::pair{static_cast<size_t>(offsets[static_cast<size_t>(rank)]) * row_bytes,
                     static_cast<size_t>(rows_of(offsets, rank)) * row_bytes};
  };
  const auto [send_at, send_bytes] = block(send_offsets, me);
  const auto [recv_at, recv_bytes] = block(recv_offsets, me);
  SY_ENFORCE_ARG(send_bytes == recv_bytes,
                 "{}: this rank sends itself {} bytes but expects {}; the layout changed after "
                 "exchange_counts",
                 what, send_bytes, recv_bytes);
  Exchange exchange(comm, stats, what);
  for (int peer = 0; peer < comm.size(); ++peer) {
    if (peer == me) continue;
    if (auto [at, bytes] = block(recv_offsets, peer); bytes > 0) {
      exchange.recv(peer, recv + at, bytes, tag);
    }
    if (auto [at, bytes] = block(send_offsets, peer); bytes > 0) {
      exchange.send(peer, send + at, bytes, tag, rows_of(send_offsets, peer));
    }
  }
  if (send_bytes > 0) std::memcpy(recv + recv_at, send + send_at, send_bytes);
  exchange.wait();
}

template <typename T>
void sum_rows(const RouteLayout& layout, const T* rows, int64_t elems, T* out) {
  std::fill(out, out + layout.num_tokens * elems, T(0));
  // Rows are grouped by destination ascending, so this adds each token's results in that order.
  for (int64_t i = 0; i < layout.num_send_rows(); ++i) {
    T* dst = out + layout.send_tokens[static_cast<size_t>(i)] * elems;
    const T* src = rows + i * elems;
    for (int64_t e = 0; e < elems; ++e) dst[e] += src[e];
  }
}

// bf16: each token's rows added in fp32 in the same order, then rounded once. acc: num_tokens *
// elems floats of workspace.
void sum_rows_bf16(const RouteLayout& layout, const uint16_t* rows, int64_t elems, uint16_t* out,
                   float* acc) {
  const auto n = static_cast<size_t>(layout.num_tokens * elems);
  std::fill(acc, acc + n, 0.0f);
  for (int64_t i = 0; i < layout.num_send_rows(); ++i) {
    float* dst = acc + layout.send_tokens[static_cast<size_t>(i)] * elems;
    const uint16_t* src = rows + i * elems;
    for (int64_t e = 0; e < elems; ++e) dst[e] += bf16_to_float(src[e]);
  }
  for (size_t k = 0; k < n; ++k) out[k] = float_to_bf16(acc[k]);
}

}  // namespace

void FlatAllToAll::exchange_counts(RouteLayout& layout) {
  const char* what = "flat exchange_counts";
  check_layout(layout, comm_.size(), false, what);
  const size_t world = static_cast<size_t>(layout.world);
  std::vector<int64_t> send_counts(world);
  for (int d = 0; d < layout.world; ++d)
    send_counts[static_cast<size_t>(d)] = rows_of(layout.send_offsets, d);
  // Every rank sends every other rank its count, zero included: that is how a peer learns it
  // gets nothing. Each count is a block of one row: offsets 0, 1, ..., world.
  std::vector<int64_t> unit(world + 1);
  for (size_t r = 0; r <= world; ++r) unit[r] = static_cast<int64_t>(r);
  std::vector<int64_t> recv_counts(world);
  exchange_blocks(comm_, reinterpret_cast<const std::byte*>(send_counts.data()), unit,
                  reinterpret_cast<std::byte*>(recv_counts.data()), unit, sizeof(int64_t),
                  kCountsTag, nullptr, what);
  layout.recv_offsets.assign(world + 1, 0);
  for (size_t s = 0; s < world; ++s) {
    SY_ENFORCE(recv_counts[s] >= 0, ErrorCode::internal, "{}: rank {} announced {} rows", what, s,
               recv_counts[s]);
    layout.recv_offsets[s + 1] = layout.recv_offsets[s] + recv_counts[s];
  }
}

void FlatAllToAll::dispatch(const RouteLayout& layout, const void* tokens, size_t token_bytes,
                            const void* side, size_t side_bytes, void* recv_tokens,
                            void* recv_side) {
  const char* what = "flat dispatch";
  check_layout(layout, comm_.size(), true, what);
  require_buffer(tokens, layout.num_tokens, token_bytes, "tokens", what);
  require_buffer(side, layout.num_send_rows(), side_bytes, "side", what);
  require_buffer(recv_tokens, layout.num_recv_rows(), token_bytes, "recv_tokens", what);
  require_buffer(recv_side, layout.num_recv_rows(), side_bytes, "recv_side", what);

  // Each row on the wire is the token followed by its side data.
  const size_t row_bytes = token_bytes + side_bytes;
  const size_t send_rows = static_cast<size_t>(layout.num_send_rows());
  const size_t recv_rows = static_cast<size_t>(layout.num_recv_rows());
  scratch_.reset();
  std::byte* packed = scratch_.take(send_rows * row_bytes).data();
  const auto* token_base = static_cast<const std::byte*>(tokens);
  const auto* side_base = static_cast<const std::byte*>(side);
  for (size_t i = 0; i < send_rows; ++i) {
    std::byte* row = packed + i * row_bytes;
    const auto t = static_cast<size_t>(layout.send_tokens[i]);
    if (token_bytes > 0) std::memcpy(row, token_base + t * token_bytes, token_bytes);
    if (side_bytes > 0) std::memcpy(row + token_bytes, side_base + i * side_bytes, side_bytes);
  }

  stats_.dispatch = {};
  // Without side data the wire rows are exactly recv_tokens' rows: receive in place.
  if (side_bytes == 0) {
    exchange_blocks(comm_, packed, layout.send_offsets, static_cast<std::byte*>(recv_tokens),
                    layout.recv_offsets, row_bytes, kDispatchTag, &stats_.dispatch, what);
    return;
  }
  std::byte* staging = scratch_.take(recv_rows * row_bytes).data();
  exchange_blocks(comm_, packed, layout.send_offsets, staging, layout.recv_offsets, row_bytes,
                  kDispatchTag, &stats_.dispatch, what);
  auto* out_tokens = static_cast<std::byte*>(recv_tokens);
  auto* out_side = static_cast<std::byte*>(recv_side);
  for (size_t i = 0; i < recv_rows; ++i) {
    const std::byte* row = staging + i * row_bytes;
    if (token_bytes > 0) std::memcpy(out_tokens + i * token_bytes, row, token_bytes);
    std::memcpy(out_side + i * side_bytes, row + token_bytes, side_bytes);
  }
}

void FlatAllToAll::combine(const RouteLayout& layout, DataType dtype, const void* rows,
                           int64_t elems, void* out) {
  const char* what = "flat combine";
  const size_t row_bytes = check_combine_args(layout, comm_.size(), dtype, rows, elems, out, what);

  // The reverse of dispatch: the rows received from s go back to s, and this rank gets back, in
  // send-row order, one result per row it sent.
  stats_.combine = {};
  scratch_.reset();
  std::byte* returned =
      scratch_.take(static_cast<size_t>(layout.num_send_rows()) * row_bytes).data();
  exchange_blocks(comm_, static_cast<const std::byte*>(rows), layout.recv_offsets, returned,
                  layout.send_offsets, row_bytes, kCombineTag, &stats_.combine, what);
  if (dtype == DataType::bf16) {
    auto* acc = reinterpret_cast<float*>(
        scratch_.take(static_cast<size_t>(layout.num_tokens * elems) * sizeof(float)).data());
    sum_rows_bf16(layout, reinterpret_cast<const uint16_t*>(returned), elems,
                  static_cast<uint16_t*>(out), acc);
  } else if (dtype == DataType::fp32) {
    sum_rows(layout, reinterpret_cast<const float*>(returned), elems, static_cast<float*>(out));
  } else {
    sum_rows(layout, reinterpret_cast<const double*>(returned), elems, static_cast<double*>(out));
  }
}

}  // namespace switchyard::comm
