#include "comm/alltoall/hierarchical/hierarchical_alltoall.h"

#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>

#include "comm/alltoall/bf16.h"
#include "comm/alltoall/hierarchical/hierarchical_internal.h"
#include "comm/environment.h"
#include "comm/error.h"

namespace switchyard::comm {

namespace hierarchical_detail {

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

}  // namespace hierarchical_detail

namespace {

int chunks_from(const HierarchicalOptions& options) {
  int chunks = options.chunks;
  if (chunks == 0) {
    chunks = environment::relay_chunks().value_or(HierarchicalOptions::kDefaultChunks);
  }
  SY_ENFORCE_ARG(!(chunks < 1 || chunks > 4096),
                 "hierarchical all-to-all: {} chunks; need 1 to 4096", chunks);
  return chunks;
}

}  // namespace

HierarchicalAllToAll::HierarchicalAllToAll(Communicator& comm, HierarchicalOptions options)
    : comm_(comm), chunks_(chunks_from(options)) {}

}  // namespace switchyard::comm
