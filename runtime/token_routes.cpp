#include "runtime/token_routes.h"

#include <cstring>

namespace switchyard {

namespace {

template <typename T>
size_t side_row_bytes(int top_k) {
  return static_cast<size_t>(top_k) * (sizeof(int32_t) + sizeof(T));
}

}  // namespace

template <typename T>
TokenRoutes<T> build_token_routes(const int32_t* idx, const T* weights, int64_t tokens, int top_k,
                                  const planner::ExpertPlacement& placement) {
  const int world = placement.num_devices();
  TokenRoutes<T> routes;
  routes.side_bytes = side_row_bytes<T>(top_k);
  comm::RouteLayout& layout = routes.layout;
  layout.world = world;
  layout.num_tokens = tokens;
  layout.send_offsets.assign(world + 1, 0);

  // Pass 1: rows per destination (a token counts once per destination however many of its
  // experts live there).
  std::vector<int> dests;
  auto token_dests = [&](int64_t t) {
    dests.clear();
    for (int k = 0; k < top_k; ++k) {
      const int d = placement.owner(idx[t * top_k + k]);
      bool seen = false;
      for (int s : dests) seen |= (s == d);
      if (!seen) dests.push_back(d);
    }
  };
  for (int64_t t = 0; t < tokens; ++t) {
    token_dests(t);
    for (int d : dests) ++layout.send_offsets[d + 1];
  }
  for (int d = 0; d < world; ++d) layout.send_offsets[d + 1] += layout.send_offsets[d];

  // Pass 2: fill rows in token order inside each destination block.
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
        const int32_t e = idx[t * top_k + k];
        const int32_t expert = placement.owner(e) == d ? e : -1;
        const T w = expert >= 0 ? weights[t * top_k + k] : T(0);
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
                                               const planner::ExpertPlacement&);
template TokenRoutes<double> build_token_routes(const int32_t*, const double*, int64_t, int,
                                                const planner::ExpertPlacement&);
template std::vector<ExpertPair<float>> decode_expert_pairs<float>(const std::byte*, int64_t, int);
template std::vector<ExpertPair<double>> decode_expert_pairs<double>(const std::byte*, int64_t,
                                                                     int);

}  // namespace switchyard
