#include "reference_figures.h"

#include <fstream>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace switchyard::tools {

namespace {
constexpr const char* kHeader =
    "workload,num_nodes,gpus_per_node,redundant_slots,slots_per_gpu,lower_bound_imb,naive_imb,"
    "eplb_policy,eplb_imb_mean,eplb_imb_max,eplb_remote_nodes_per_token,eplb_runtime_s";
}

std::map<ScenarioKey, EplbPolicies> read_reference_figures(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("reference: cannot open " + path);
  std::string line;
  if (!std::getline(in, line) || line != kHeader) {
    throw std::invalid_argument("reference: " + path + " must start with the header " + kHeader);
  }
  std::map<ScenarioKey, EplbPolicies> figures;
  for (int row = 2; std::getline(in, line); ++row) {
    if (line.empty()) continue;
    std::vector<std::string> cells;
    std::stringstream split(line);
    for (std::string cell; std::getline(split, cell, ',');) cells.push_back(cell);
    if (cells.size() != 12) {
      throw std::invalid_argument("reference: " + path + " row " + std::to_string(row) +
                                  " has " + std::to_string(cells.size()) + " cells, expected 12");
    }
    try {
      const ScenarioKey key{cells[0], std::stoi(cells[1]), std::stoi(cells[2]),
                            std::stoi(cells[3])};
      figures[key][cells[7]] = {std::stod(cells[5]), std::stod(cells[6]), std::stod(cells[8]),
                                std::stod(cells[9]), std::stod(cells[10]), std::stod(cells[11])};
    } catch (const std::logic_error&) {
      throw std::invalid_argument("reference: " + path + " row " + std::to_string(row) +
                                  " has a non-numeric figure");
    }
  }
  return figures;
}

}  // namespace switchyard::tools
