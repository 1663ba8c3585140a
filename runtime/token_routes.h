// Turns a routing decision (top-k experts and weights per token) into what the all-to-all moves:
// a layout sending each token once to every rank that owns one of its experts, and per sent row
// the (expert, weight) of the token's slots that rank serves. The receiving rank decodes the rows
// back into (row, slot, expert, weight) pairs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "comm/alltoall/alltoall.h"
#include "planner/placement.h"

namespace switchyard {

template <typename T>
struct TokenRoutes {
  comm::RouteLayout layout;
  size_t side_bytes = 0;        // per row: int32 expert[top_k] (-1 = not for this rank), T weight[top_k]
  std::vector<std::byte> side;  // [layout.num_send_rows(), side_bytes]
};

// Each (token, slot) goes to one replica of its expert: this rank's own if it holds one, else one
// on this rank's node (token index mod their count), else replica (token index mod count) in
// ascending device order. node_of_rank[r] is rank r's node. idx and weights may be a slice of a
// batch starting at token first_token: replicas are chosen by the token's index in the batch, so
// that a chunked step sends every token where the whole batch would.
template <typename T>
TokenRoutes<T> build_token_routes(const int32_t* idx, const T* weights, int64_t tokens, int top_k,
                                  const planner::ExpertPlacement& placement, int rank,
                                  std::span<const int> node_of_rank, int64_t first_token = 0);

// One (received row, top-k slot) that this rank's expert must compute.
template <typename T>
struct ExpertPair {
  int64_t row;
  int32_t slot;
  int32_t expert;  // global expert id
  T weight;
};

// Decodes received side data; pairs come in row order, slots ascending within a row.
template <typename T>
std::vector<ExpertPair<T>> decode_expert_pairs(const std::byte* side, int64_t rows, int top_k);

}  // namespace switchyard
