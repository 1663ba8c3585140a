#include "runtime/token_routes.h"

#include <algorithm>
#include <cstring>

namespace switchyard {

namespace {

template <typename T>
size_t side_row_bytes(int top_k) {
  return static_cast<size_t>(top_k) * (sizeof(int32_t) + sizeof(T));
}

int choose_replica(const planner::ExpertPlacement& placement, int expert, int rank,
                   std::span<const int> node_of_rank, int64_t token) {
  const auto& devices = placement.replicas(expert);
  if (devices.size() == 1) return devices.front();
  if (placement.holds(rank, expert)) return rank;
  int on_node = 0;
  for (int d : devices) on_node += node_of_rank[d] == node_of_rank[rank];
  if (on_node > 0) {
    int pick = static_cast<int>(token % on_node);
    for (int d : devices) {
      if (node_of_rank[d] == node_of_rank[rank] && pick-- == 0) return d;
    }
  }
  return devices[token % static_cast<int64_t>(devices.size())];
}

}  // namespace

template <typename T>
TokenRoutes<T> build_token_routes(const int32_t* idx, const T* weights, int64_t tokens, int top_k,
                                  const planner::ExpertPlacement& placement, int rank,
                                  std::span<const int> node_of_rank, int64_t first_token) {
  const int world = placement.num_devices();
  TokenRoutes<T> routes;
  routes.side_bytes = side_row_bytes<T>(top_k);
  comm::RouteLayout& layout = routes.layout;
  layout.world = world;
  layout.num_tokens = tokens;
  layout.send_offsets.assign(world + 1, 0);

  // The serving device of every (token, slot), then rows per destination: a token counts once
  // per destination however many of its experts are served there.
  std::vector<int> slot_dest(tokens * top_k);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int k = 0; k < top_k; ++k) {
      slot_dest[t * top_k + k] = choose_replica(placement, idx[t * top_k + k], rank, node_of_rank,
                                              first_token + t);
    }
  }
  std::vector<int> dests;
  auto token_dests = [&](int64_t t) {
    dests.clear();
    for (int k = 0; k < top_k; ++k) {
      const int d = slot_dest[t * top_k + k];
      if (std::find(dests.begin(), dests.end(), d) == dests.end()) dests.push_back(d);
    }
  };
  for (int64_t t = 0; t < tokens; ++t) {
    token_dests(t);
    for (int d : dests) ++layout.send_offsets[d + 1];
  }
  for (int d = 0; d < world; ++d) layout.send_offsets[d + 1] += layout.send_offsets[d];

  // Fill rows in token order inside each destination block.
  layout.send_tokens.resize(layout.num_send_rows());
  routes.side.assign(layout.num_send_rows() * routes.side_bytes, std::byte{0});
  std::vector<int64_t> cursor(layout.send_offsets.begin(), layout.send_offsets.end() - 1);
  for (int64_t t = 0; t < tokens; ++t) {
    token_dests(t);
    for (int d : dests) {
      const int64_t row = cursor[d]++;
      layout.send_tokens[row] = t;
      std::byte* side = routes.side.data() + row * routes.side_bytes;
      for (int k = 0; k < top_k; ++k) {
        const bool here = slot_dest[t * top_k + k] == d;
        const int32_t expert = here ? idx[t * top_k + k] : -1;
        const T w = here ? weights[t * top_k + k] : T(0);
        std::memcpy(side + k * sizeof(int32_t), &expert, sizeof(int32_t));
        std::memcpy(side + top_k * sizeof(int32_t) + k * sizeof(T), &w, sizeof(T));
      }
    }
  }
  return routes;
}

template <typename T>
std::vector<ExpertPair<T>> decode_expert_pairs(const std::byte* side, int64_t rows, int top_k) {
  const size_t row_bytes = side_row_bytes<T>(top_k);
  std::vector<ExpertPair<T>> pairs;
  for (int64_t r = 0; r < rows; ++r) {
    const std::byte* row = side + r * row_bytes;
    for (int k = 0; k < top_k; ++k) {
      ExpertPair<T> p{r, k, -1, T(0)};
      std::memcpy(&p.expert, row + k * sizeof(int32_t), sizeof(int32_t));
      if (p.expert < 0) continue;
      std::memcpy(&p.weight, row + top_k * sizeof(int32_t) + k * sizeof(T), sizeof(T));
      pairs.push_back(p);
    }
  }
  return pairs;
}

template TokenRoutes<float> build_token_routes(const int32_t*, const float*, int64_t, int,
                                               const planner::ExpertPlacement&, int,
                                               std::span<const int>, int64_t);
template TokenRoutes<double> build_token_routes(const int32_t*, const double*, int64_t, int,
                                                const planner::ExpertPlacement&, int,
                                                std::span<const int>, int64_t);
template std::vector<ExpertPair<float>> decode_expert_pairs<float>(const std::byte*, int64_t, int);
template std::vector<ExpertPair<double>> decode_expert_pairs<double>(const std::byte*, int64_t,
                                                                     int);

}  // namespace switchyard
