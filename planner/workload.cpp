#include "planner/workload.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <stdexcept>

#include "base/error.h"
#include "planner/json_input.h"

namespace switchyard::planner {

namespace {

constexpr const char* kFormat = "moe-placement-workload/v1";
// Bounds on the sizes a workload file may state. Routes store expert ids as uint16, so at most
// 65536 experts; models have tens of MoE layers (DeepSeek-V3: 58), 1024 is far past any of them
// and keeps L × E load tables and L × slots plans small. tokens_per_layer is an int; the routes
// file, when given, must then hold exactly L·T·top_k ids, and its size is checked before any
// memory is set aside for it.
constexpr std::int64_t kMaxLayers = 1024;
constexpr std::int64_t kMaxExperts = 65536;
constexpr std::int64_t kMaxTokens = std::numeric_limits<int>::max();

int int_field(const nlohmann::json& obj, const char* key, const char* where, std::int64_t lo,
              std::int64_t hi) {
  if (!obj.is_object() || !obj.contains(key)) {
    throw Error(ErrorCode::invalid_argument,
                std::string("workload: missing field '") + key + "' in " + where);
  }
  return static_cast<int>(
      integer_in(obj.at(key), std::string("workload: field '") + key + "' in " + where, lo, hi));
}

template <typename T>
T required(const nlohmann::json& obj, const char* key, const char* where) {
  if (!obj.is_object() || !obj.contains(key)) {
    throw Error(ErrorCode::invalid_argument,
                std::string("workload: missing field '") + key + "' in " + where);
  }
  try {
    return obj.at(key).get<T>();
  } catch (const nlohmann::json::exception& err) {
    throw Error(ErrorCode::invalid_argument, std::string("workload: field '") + key + "' in " +
                                                 where + " has the wrong type: " + err.what());
  }
}

std::vector<std::uint16_t> read_routes(const std::string& path, std::size_t count) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    throw Error(ErrorCode::internal, "workload: routes file " + path + " is missing or not a file");
  }
  // Checked before allocating: a file that states a huge T must not make us reserve it.
  const std::uintmax_t bytes_on_disk = std::filesystem::file_size(path, ec);
  if (ec || bytes_on_disk != count * 2) {
    throw Error(ErrorCode::invalid_argument,
                "workload: routes file " + path + " has " + std::to_string(bytes_on_disk) +
                    " bytes, expected exactly " + std::to_string(count) +
                    " uint16 values (L·T·top_k)");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::internal, "workload: cannot open routes file " + path);
  std::vector<unsigned char> bytes(count * 2);
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (static_cast<std::size_t>(in.gcount()) != bytes.size() || in.peek() != EOF) {
    throw Error(ErrorCode::invalid_argument, "workload: routes file " + path +
                                                 " must hold exactly " + std::to_string(count) +
                                                 " uint16 values (L·T·top_k)");
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
    throw Error(ErrorCode::invalid_argument,
                "workload '" + name +
                    "': num_layers, num_experts, top_k and tokens_per_layer must be "
                    "positive");
  }
  if (top_k > num_experts) {
    throw Error(ErrorCode::invalid_argument, "workload '" + name + "': top_k " +
                                                 std::to_string(top_k) + " exceeds num_experts " +
                                                 std::to_string(num_experts));
  }
  if (static_cast<int>(load.size()) != num_layers) {
    throw Error(ErrorCode::invalid_argument,
                "workload '" + name + "': load has " + std::to_string(load.size()) +
                    " rows, expected num_layers = " + std::to_string(num_layers));
  }
  const std::int64_t expected = static_cast<std::int64_t>(tokens_per_layer) * top_k;
  for (int l = 0; l < num_layers; ++l) {
    if (static_cast<int>(load[l].size()) != num_experts) {
      throw Error(ErrorCode::invalid_argument,
                  "workload '" + name + "': load row of layer " + std::to_string(l) + " has " +
                      std::to_string(load[l].size()) +
                      " entries, expected num_experts = " + std::to_string(num_experts));
    }
    std::int64_t sum = 0;
    bool over = false;  // the sum passed `expected` (and is not added up further: no overflow)
    for (std::int64_t v : load[l]) {
      if (v < 0) {
        throw Error(ErrorCode::invalid_argument,
                    "workload '" + name + "': negative load in layer " + std::to_string(l));
      }
      if (v > expected - sum) {
        over = true;
        break;
      }
      sum += v;
    }
    if (over || sum != expected) {
      throw Error(ErrorCode::invalid_argument,
                  "workload '" + name + "': load row of layer " + std::to_string(l) + " sums to " +
                      (over ? std::string("more than that") : std::to_string(sum)) +
                      ", expected tokens_per_layer × top_k = " + std::to_string(expected));
    }
  }
  if (!has_routes()) return;
  if (routes.size() != static_cast<std::size_t>(num_layers) * tokens_per_layer * top_k) {
    throw Error(ErrorCode::invalid_argument, "workload '" + name + "': routes hold " +
                                                 std::to_string(routes.size()) +
                                                 " ids, expected L·T·top_k");
  }
  for (int l = 0; l < num_layers; ++l) {
    std::vector<std::int64_t> counted(num_experts, 0);
    for (int t = 0; t < tokens_per_layer; ++t) {
      const std::uint16_t* ids = token_experts(l, t);
      for (int k = 0; k < top_k; ++k) {
        if (ids[k] >= num_experts) {
          throw Error(ErrorCode::invalid_argument, "workload '" + name + "': route of token " +
                                                       std::to_string(t) + " in layer " +
                                                       std::to_string(l) + " names expert " +
                                                       std::to_string(ids[k]) + ", outside [0, " +
                                                       std::to_string(num_experts) + ")");
        }
        ++counted[ids[k]];
      }
    }
    if (counted != load[l]) {
      throw Error(ErrorCode::invalid_argument,
                  "workload '" + name + "': routes of layer " + std::to_string(l) +
                      " do not count up to its load row; regenerate one from the "
                      "other");
    }
  }
}

Workload workload_from_json(const nlohmann::json& doc, const std::string& folder) {
  // A "format" of another JSON type reads as absent, so that it is refused below like one.
  const std::string format = doc.is_object() && doc.contains("format") && doc["format"].is_string()
                                 ? doc["format"].get<std::string>()
                                 : std::string();
  if (format != kFormat) {
    throw Error(ErrorCode::invalid_argument,
                "workload: format is '" + format + "', expected '" + kFormat + "'");
  }
  Workload w;
  SY_ENFORCE_ARG(!(doc.contains("name") && !doc.at("name").is_string()),
                 "workload: field 'name' must be a string");
  w.name = doc.value("name", std::string("unnamed"));
  const nlohmann::json& model = doc.contains("model") ? doc.at("model") : nlohmann::json();
  SY_ENFORCE_ARG(model.is_object(), "workload: missing field 'model' (an object)");
  w.num_layers = int_field(model, "num_layers", "model", 1, kMaxLayers);
  w.num_experts = int_field(model, "num_experts", "model", 1, kMaxExperts);
  w.top_k = int_field(model, "top_k", "model", 1, w.num_experts);
  if (model.contains("num_groups")) {
    w.num_groups = int_field(model, "num_groups", "model", 1, w.num_experts);
    if (w.num_experts % w.num_groups != 0) {
      throw Error(ErrorCode::invalid_argument,
                  "workload: num_groups " + std::to_string(w.num_groups) +
                      " does not divide num_experts " + std::to_string(w.num_experts) +
                      " into equal groups");
    }
  }
  if (model.contains("topk_groups")) {
    w.topk_groups = int_field(model, "topk_groups", "model", 1, w.num_groups);
  }
  w.tokens_per_layer = int_field(doc, "tokens_per_layer", "the top level", 1, kMaxTokens);
  SY_ENFORCE_ARG(doc.contains("load"), "workload: missing field 'load' in the top level");
  const nlohmann::json& load = doc.at("load");
  if (!load.is_array() || load.size() != static_cast<std::size_t>(w.num_layers)) {
    throw Error(
        ErrorCode::invalid_argument,
        "workload: load has " +
            (load.is_array() ? std::to_string(load.size()) + " rows" : std::string("no rows")) +
            ", expected num_layers = " + std::to_string(w.num_layers));
  }
  const std::int64_t per_layer = static_cast<std::int64_t>(w.tokens_per_layer) * w.top_k;
  w.load.resize(w.num_layers);
  for (int l = 0; l < w.num_layers; ++l) {
    const nlohmann::json& row = load[l];
    if (!row.is_array() || row.size() != static_cast<std::size_t>(w.num_experts)) {
      throw Error(ErrorCode::invalid_argument,
                  "workload: load row of layer " + std::to_string(l) + " has " +
                      (row.is_array() ? std::to_string(row.size()) + " entries"
                                      : std::string("no entries")) +
                      ", expected num_experts = " + std::to_string(w.num_experts));
    }
    w.load[l].reserve(w.num_experts);
    for (int e = 0; e < w.num_experts; ++e) {
      w.load[l].push_back(integer_in(row[e],
                                     "workload: load[" + std::to_string(l) + "][" +
                                         std::to_string(e) + "]",
                                     0, per_layer));
    }
  }
  if (doc.contains("routes") && !folder.empty()) {
    const nlohmann::json& r = doc.at("routes");
    const std::string dtype = required<std::string>(r, "dtype", "routes");
    if (dtype != "uint16-le") {
      throw Error(ErrorCode::invalid_argument,
                  "workload: routes dtype '" + dtype + "' is not supported; expected 'uint16-le'");
    }
    const nlohmann::json& shape = r.contains("shape") ? r.at("shape") : nlohmann::json();
    SY_ENFORCE_ARG((shape == nlohmann::json{w.num_layers, w.tokens_per_layer, w.top_k}),
                   "workload: routes shape must be [num_layers, tokens_per_layer, top_k]");
    const std::filesystem::path file = std::filesystem::path(folder) /
                                       required<std::string>(r, "file", "routes");
    w.routes = read_routes(file.string(),
                           static_cast<std::size_t>(w.num_layers) * w.tokens_per_layer * w.top_k);
  }
  w.validate();
  return w;
}

Workload read_workload(const std::string& path) {
  const nlohmann::json doc = read_json_file(path);
  const std::string folder = std::filesystem::path(path).parent_path().string();
  try {
    return workload_from_json(doc, folder.empty() ? "." : folder);
  } catch (const Error& err) {
    throw Error(err.code(), path + ": " + err.what());
  } catch (const std::invalid_argument& err) {
    throw Error(ErrorCode::invalid_argument, path + ": " + err.what());
  } catch (const std::runtime_error& err) {  // the routes file (std::filesystem)
    throw Error(ErrorCode::internal, path + ": " + err.what());
  }
}

}  // namespace switchyard::planner
