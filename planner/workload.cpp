#include "planner/workload.h"

#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace switchyard::planner {

namespace {

constexpr const char* kFormat = "moe-placement-workload/v1";

template <typename T>
T required(const nlohmann::json& obj, const char* key, const char* where) {
  if (!obj.is_object() || !obj.contains(key)) {
    throw std::invalid_argument(std::string("workload: missing field '") + key + "' in " + where);
  }
  try {
    return obj.at(key).get<T>();
  } catch (const nlohmann::json::exception& err) {
    throw std::invalid_argument(std::string("workload: field '") + key + "' in " + where +
                                " has the wrong type: " + err.what());
  }
}

std::vector<std::uint16_t> read_routes(const std::string& path, std::size_t count) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("workload: cannot open routes file " + path);
  std::vector<unsigned char> bytes(count * 2);
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (static_cast<std::size_t>(in.gcount()) != bytes.size() || in.peek() != EOF) {
    throw std::invalid_argument("workload: routes file " + path + " must hold exactly " +
                                std::to_string(count) + " uint16 values (L·T·top_k)");
  }
  std::vector<std::uint16_t> routes(count);
  for (std::size_t i = 0; i < count; ++i) {  // little-endian whatever the host order
    routes[i] = static_cast<std::uint16_t>(bytes[2 * i] | (bytes[2 * i + 1] << 8));
  }
  return routes;
}

}  // namespace

void Workload::validate() const {
  if (num_layers <= 0 || num_experts <= 0 || top_k <= 0 || tokens_per_layer <= 0) {
    throw std::invalid_argument("workload '" + name +
                                "': num_layers, num_experts, top_k and tokens_per_layer must be "
                                "positive");
  }
  if (top_k > num_experts) {
    throw std::invalid_argument("workload '" + name + "': top_k " + std::to_string(top_k) +
                                " exceeds num_experts " + std::to_string(num_experts));
  }
  if (static_cast<int>(load.size()) != num_layers) {
    throw std::invalid_argument("workload '" + name + "': load has " +
                                std::to_string(load.size()) + " rows, expected num_layers = " +
                                std::to_string(num_layers));
  }
  const std::int64_t expected = static_cast<std::int64_t>(tokens_per_layer) * top_k;
  for (int l = 0; l < num_layers; ++l) {
    if (static_cast<int>(load[l].size()) != num_experts) {
      throw std::invalid_argument("workload '" + name + "': load row of layer " +
                                  std::to_string(l) + " has " + std::to_string(load[l].size()) +
                                  " entries, expected num_experts = " +
                                  std::to_string(num_experts));
    }
    std::int64_t sum = 0;
    for (std::int64_t v : load[l]) {
      if (v < 0) {
        throw std::invalid_argument("workload '" + name + "': negative load in layer " +
                                    std::to_string(l));
      }
      sum += v;
    }
    if (sum != expected) {
      throw std::invalid_argument("workload '" + name + "': load row of layer " +
                                  std::to_string(l) + " sums to " + std::to_string(sum) +
                                  ", expected tokens_per_layer × top_k = " +
                                  std::to_string(expected));
    }
  }
  if (!has_routes()) return;
  if (routes.size() != static_cast<std::size_t>(num_layers) * tokens_per_layer * top_k) {
    throw std::invalid_argument("workload '" + name + "': routes hold " +
                                std::to_string(routes.size()) + " ids, expected L·T·top_k");
  }
  for (int l = 0; l < num_layers; ++l) {
    std::vector<std::int64_t> counted(num_experts, 0);
    for (int t = 0; t < tokens_per_layer; ++t) {
      const std::uint16_t* ids = token_experts(l, t);
      for (int k = 0; k < top_k; ++k) {
        if (ids[k] >= num_experts) {
          throw std::invalid_argument("workload '" + name + "': route of token " +
                                      std::to_string(t) + " in layer " + std::to_string(l) +
                                      " names expert " + std::to_string(ids[k]) +
                                      ", outside [0, " + std::to_string(num_experts) + ")");
        }
        ++counted[ids[k]];
      }
    }
    if (counted != load[l]) {
      throw std::invalid_argument("workload '" + name + "': routes of layer " +
                                  std::to_string(l) +
                                  " do not count up to its load row; regenerate one from the "
                                  "other");
    }
  }
}

Workload workload_from_json(const nlohmann::json& doc, const std::string& folder) {
  const std::string format = doc.is_object() ? doc.value("format", std::string()) : std::string();
  if (format != kFormat) {
    throw std::invalid_argument("workload: format is '" + format + "', expected '" + kFormat +
                                "'");
  }
  Workload w;
  w.name = doc.value("name", std::string("unnamed"));
  const nlohmann::json& model = doc.contains("model") ? doc.at("model") : nlohmann::json();
  w.num_layers = required<int>(model, "num_layers", "model");
  w.num_experts = required<int>(model, "num_experts", "model");
  w.top_k = required<int>(model, "top_k", "model");
  w.num_groups = model.value("num_groups", 1);
  w.topk_groups = model.value("topk_groups", 1);
  w.tokens_per_layer = required<int>(doc, "tokens_per_layer", "the top level");
  w.load = required<std::vector<std::vector<std::int64_t>>>(doc, "load", "the top level");
  if (doc.contains("routes") && !folder.empty()) {
    const nlohmann::json& r = doc.at("routes");
    const std::string dtype = required<std::string>(r, "dtype", "routes");
    if (dtype != "uint16-le") {
      throw std::invalid_argument("workload: routes dtype '" + dtype +
                                  "' is not supported; expected 'uint16-le'");
    }
    const auto shape = required<std::vector<int>>(r, "shape", "routes");
    if (shape != std::vector<int>{w.num_layers, w.tokens_per_layer, w.top_k}) {
      throw std::invalid_argument("workload: routes shape must be [num_layers, "
                                  "tokens_per_layer, top_k]");
    }
    const std::filesystem::path file = std::filesystem::path(folder) /
                                       required<std::string>(r, "file", "routes");
    w.routes = read_routes(file.string(),
                           static_cast<std::size_t>(w.num_layers) * w.tokens_per_layer * w.top_k);
  }
  w.validate();
  return w;
}

Workload read_workload(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("workload: cannot open " + path);
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(in);
  } catch (const nlohmann::json::parse_error& err) {
    throw std::invalid_argument("workload: " + path + " is not valid JSON: " + err.what());
  }
  try {
    const std::string folder = std::filesystem::path(path).parent_path().string();
    return workload_from_json(doc, folder.empty() ? "." : folder);
  } catch (const std::invalid_argument& err) {
    throw std::invalid_argument(std::string(err.what()) + " (file " + path + ")");
  }
}

}  // namespace switchyard::planner
