// A `moe-placement-workload/v1` file: per-layer expert loads and, optionally, every token's routed
// experts (the `routes` uint16-le file, shape [L, T, top_k], beside the JSON).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace switchyard::planner {

struct Workload {
  std::string name;
  int num_layers = 0;
  int num_experts = 0;
  int top_k = 0;
  int num_groups = 1;
  int topk_groups = 1;
  int tokens_per_layer = 0;
  // load[l][e]: (token, expert) assignments expert e of layer l received; rows sum to T·top_k.
  std::vector<std::vector<std::int64_t>> load;
  // routes[(l·T + t)·top_k + k]: the k-th expert of token t in layer l; empty when not given.
  std::vector<std::uint16_t> routes;

  bool has_routes() const { return !routes.empty(); }
  // The top_k experts of token t in layer l.
  const std::uint16_t* token_experts(int layer, int token) const {
    return routes.data() + (static_cast<std::size_t>(layer) * tokens_per_layer + token) * top_k;
  }
  // Throws Error(invalid_argument) when shapes or sums are inconsistent.
  void validate() const;
};

// Parses the JSON; `folder` resolves a relative routes file (empty: routes are not read).
Workload workload_from_json(const nlohmann::json& doc, const std::string& folder);
// Reads the file and its routes file. Throws Error(internal) on I/O errors and
// Error(invalid_argument) on malformed content, naming the file.
Workload read_workload(const std::string& path);

}  // namespace switchyard::planner
