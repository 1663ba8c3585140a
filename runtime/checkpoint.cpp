#include "runtime/checkpoint.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <utility>

#include <fmt/format.h>

#include "base/error.h"
#include "runtime/agreement.h"
#include "runtime/fault_injection.h"

namespace switchyard::checkpoint {

namespace fs = std::filesystem;

namespace {

// Every rank passes its own error ("" when it succeeded); when any rank failed, every rank throws
// CollectiveFailure naming each failing rank and its message (runtime/agreement.h), with the code
// of the lowest failing rank. One single-value all-reduce when every rank succeeded.
void agree(comm::Communicator& comm, const std::string& local_error, ErrorCode local_code,
           const std::string& what) {
  LocalStatus status;
  if (!local_error.empty()) {
    status.code = local_code;
    status.message = local_error;
  }
  int64_t failed = status.failed() ? 1 : 0;
  comm.allreduce_sum(&failed, 1);
  if (failed != 0) raise_collective_failure(comm, what, status);
}

// Runs f, returning its error message ("" on success). A crash hook's throw (not a
// std::exception) passes through, as a crash would.
template <typename F>
std::string attempt(F&& f, ErrorCode* code) {
  try {
    f();
    return "";
  } catch (const Error& e) {
    *code = e.code();
    return e.what();
  } catch (const std::exception& e) {
    *code = ErrorCode::invalid_argument;
    return e.what();
  }
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

std::string step_name(int64_t step) { return fmt::format("step-{}", step); }

// The N of a "step-N" directory name, or -1.
int64_t step_of(const std::string& name) {
  if (name.rfind("step-", 0) != 0 || name.size() == 5) return -1;
  int64_t n = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9' || n > (INT64_MAX - 9) / 10) return -1;
    n = n * 10 + (name[i] - '0');
  }
  return n;
}

bool complete(const fs::path& step_dir) {
  std::error_code ec;
  return fs::is_regular_file(step_dir / "manifest.json", ec);
}

// Complete checkpoints in dir, ascending by step.
std::vector<std::pair<int64_t, fs::path>> complete_steps(const fs::path& dir) {
  std::vector<std::pair<int64_t, fs::path>> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const int64_t n = step_of(entry.path().filename().string());
    if (n >= 0 && complete(entry.path())) out.emplace_back(n, entry.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// The checkpoint `path` names: {step directory, or "" with the reason}.
std::pair<std::string, std::string> resolve(const std::string& path) {
  std::error_code ec;
  if (complete(path)) return {path, ""};
  if (!fs::is_directory(path, ec)) {
    return {"", fmt::format("'{}' is not a directory", path)};
  }
  const fs::path dir(path);
  if (fs::is_regular_file(dir / "latest", ec)) {
    std::string name = read_file((dir / "latest").string());
    while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
    if (step_of(name) >= 0 && complete(dir / name)) return {(dir / name).string(), ""};
  }
  const auto steps = complete_steps(dir);
  if (steps.empty()) {
    return {"", fmt::format("'{}' holds no complete checkpoint (no step-<N>/manifest.json)", path)};
  }
  return {steps.back().second.string(), ""};
}

std::string file_of(int rank) { return fmt::format("shard-{}.bin", rank); }

std::string expert_name(int expert, const char* part) {
  return fmt::format("experts.{}.{}", expert, part);
}

// The named tensors of params, in a fixed order: replicated ones (only with_replicated), then the
// experts in `experts` (global ids, each held by params).
template <typename MP>
auto named_tensors(MP& params, bool with_replicated, const std::vector<int>& experts) {
  using Ptr = decltype(&params.gate_weight);
  std::vector<std::pair<std::string, Ptr>> out;
  auto add = [&](std::string name, auto& tensor) { out.emplace_back(std::move(name), &tensor); };
  if (with_replicated) {
    add("gate_weight", params.gate_weight);
    if (!params.shared.gate_proj.empty()) {
      add("shared.gate_proj", params.shared.gate_proj);
      add("shared.up_proj", params.shared.up_proj);
      add("shared.down_proj", params.shared.down_proj);
    }
  }
  for (int e : experts) {
    auto& x = params.experts[params.local_index(e)];
    add(expert_name(e, "gate_proj"), x.gate_proj);
    add(expert_name(e, "up_proj"), x.up_proj);
    add(expert_name(e, "down_proj"), x.down_proj);
  }
  return out;
}

nlohmann::json placement_to_json(const planner::ExpertPlacement& p) {
  nlohmann::json out = nlohmann::json::array();
  for (int e = 0; e < p.num_experts(); ++e) out.push_back(p.replicas(e));
  return out;
}

uint64_t new_checkpoint_id(int64_t step) {
  std::random_device rd;
  const uint64_t t =
      static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  return (uint64_t(rd()) << 32) ^ uint64_t(rd()) ^ (t * 0x9E3779B97F4A7C15ull) ^ uint64_t(step);
}

std::string hex(uint64_t v) { return fmt::format("{:016x}", v); }

uint64_t parse_hex(const nlohmann::json& v, const std::string& field) {
  const std::string s = v.get<std::string>();
  size_t used = 0;
  uint64_t out = 0;
  try {
    out = std::stoull(s, &used, 16);
  } catch (const std::exception&) {
    used = 0;
  }
  SY_ENFORCE_ARG(!(used != s.size() || s.empty()), "{} '{}' is not hexadecimal", field, s);
  return out;
}

}  // namespace

nlohmann::json config_to_json(const MoeConfig& c) {
  return {{"hidden", c.hidden},
          {"num_experts", c.num_experts},
          {"num_shared", c.num_shared},
          {"top_k", c.top_k},
          {"intermediate", c.intermediate},
          {"scoring", c.scoring == kernels::ScoreFunc::softmax ? "softmax" : "sigmoid"},
          {"norm_topk_prob", c.norm_topk_prob},
          {"routed_scaling_factor", c.routed_scaling_factor},
          {"n_group", c.n_group},
          {"topk_group", c.topk_group},
          {"group_score", c.group_score == kernels::GroupScore::top2_sum ? "top2_sum" : "max"},
          {"selection_bias", c.selection_bias},
          {"bias_update_rate", c.bias_update_rate},
          {"aux_expert_alpha", c.aux_expert_alpha},
          {"aux_device_alpha", c.aux_device_alpha},
          {"z_loss_alpha", c.z_loss_alpha},
          {"wire", wire_precision_name(c.wire)}};
}

namespace {
const char* const kDigestFields[] = {"hidden",         "num_experts",           "num_shared",
                                     "top_k",          "intermediate",          "scoring",
                                     "norm_topk_prob", "routed_scaling_factor", "n_group",
                                     "topk_group",     "group_score",           "selection_bias"};
}  // namespace

uint64_t config_digest(const MoeConfig& config) {
  const nlohmann::json all = config_to_json(config);
  nlohmann::json defining;
  for (const char* field : kDigestFields) defining[field] = all[field];
  return fnv1a(defining.dump());
}

template <typename T>
std::string save(comm::Communicator& comm, const std::string& dir, int64_t step, MoeLayer<T>& layer,
                 MoeAdam<T>* adam, const nlohmann::json& state, const SaveOptions& options) {
  const int rank = comm.rank(), world = comm.size();
  const WritePoints points(options.crash_hook, rank);
  inject_fault(FaultPhase::checkpoint, rank);
  const fs::path root(dir);
  const fs::path partial = root / (".partial-" + step_name(step));
  const fs::path final_dir = root / step_name(step);
  const char* what = "checkpoint save";
  require(step >= 0, fmt::format("checkpoint save: step must be >= 0, got {}", step));

  // 1. Rank 0 makes an empty partial directory and picks the checkpoint's id.
  ErrorCode code = ErrorCode::internal;
  std::string error;
  if (rank == 0) {
    error = attempt(
        [&] {
          points("create " + root.string());
          fs::create_directories(root);
          if (fs::exists(partial)) {
            points("remove stale " + partial.string());
            fs::remove_all(partial);
          }
          points("create " + partial.string());
          fs::create_directory(partial);
          fsync_directory(root.string());
        },
        &code);
  }
  agree(comm, error, code, fmt::format("{} into '{}' (preparing the directory)", what, dir));
  int64_t id_word = rank == 0 ? static_cast<int64_t>(new_checkpoint_id(step)) : 0;
  comm.allreduce_sum(&id_word, 1);
  const uint64_t id = static_cast<uint64_t>(id_word);
  const uint64_t digest = config_digest(layer.config());

  // 2. Every rank writes the experts it is the primary holder of; rank 0 also the replicated
  // tensors.
  const auto& placement = layer.placement();
  const MoeParams<T>& params = std::as_const(layer).params();
  std::vector<int> primary;
  for (int e = 0; e < placement.num_experts(); ++e) {
    if (placement.owner(e) == rank) primary.push_back(e);
  }
  std::vector<int64_t> file_words(static_cast<size_t>(world) * 2, 0);  // bytes, crc per rank
  const bool writes = rank == 0 || !primary.empty();
  error.clear();
  if (writes) {
    error = attempt(
        [&] {
          ShardWriter writer(dtype_of<T>(), digest, id);
          for (auto& [name, t] : named_tensors(params, rank == 0, primary)) {
            writer.add(name, std::span<const T>(t->data(), t->size()));
          }
          if (rank == 0 && !layer.selection_bias().empty()) {
            writer.add("selection_bias", std::span<const T>(layer.selection_bias()));
          }
          if (adam != nullptr) {
            const auto state_ptrs = adam->state();
            const char* prefixes[] = {"adam.m.", "adam.v."};
            for (int k = 0; k < 2; ++k) {
              const MoeParams<T>& moment = *state_ptrs[k];
              for (auto& [name, t] : named_tensors(moment, rank == 0, primary)) {
                writer.add(prefixes[k] + name, std::span<const T>(t->data(), t->size()));
              }
            }
          }
          const FileInfo info = writer.write((partial / file_of(rank)).string(), points);
          file_words[2 * rank] = static_cast<int64_t>(info.bytes);
          file_words[2 * rank + 1] = static_cast<int64_t>(info.crc);
        },
        &code);
  }
  agree(comm, error, code,
        fmt::format("{} of step {} into '{}' (writing the shards)", what, step, dir));
  comm.allreduce_sum(file_words.data(), file_words.size());

  // 3. Rank 0 writes the manifest, publishes the directory, points latest at it and prunes.
  error.clear();
  if (rank == 0) {
    error = attempt(
        [&] {
          nlohmann::json files = nlohmann::json::array();
          nlohmann::json expert_files = nlohmann::json::array();
          for (int e = 0; e < placement.num_experts(); ++e) {
            expert_files.push_back(file_of(placement.owner(e)));
          }
          for (int r = 0; r < world; ++r) {
            if (file_words[2 * r] == 0) continue;
            nlohmann::json experts = nlohmann::json::array();
            for (int e = 0; e < placement.num_experts(); ++e) {
              if (placement.owner(e) == r) experts.push_back(e);
            }
            files.push_back({{"name", file_of(r)},
                             {"rank", r},
                             {"bytes", file_words[2 * r]},
                             {"crc32", static_cast<uint32_t>(file_words[2 * r + 1])},
                             {"experts", experts}});
          }
          nlohmann::json optimizer = nullptr;
          if (adam != nullptr) {
            optimizer = {{"type", "adam"},
                         {"step", adam->steps()},
                         {"lr", adam->options().lr},
                         {"beta1", adam->options().beta1},
                         {"beta2", adam->options().beta2},
                         {"eps", adam->options().eps}};
          }
          const nlohmann::json manifest = {{"format", kManifestFormat},
                                           {"id", hex(id)},
                                           {"step", step},
                                           {"dtype", dtype_name(dtype_of<T>())},
                                           {"config", config_to_json(layer.config())},
                                           {"config_digest", hex(digest)},
                                           {"world_size", world},
                                           {"placement", placement_to_json(placement)},
                                           {"replicated_file", file_of(0)},
                                           {"expert_files", expert_files},
                                           {"selection_bias", !layer.selection_bias().empty()},
                                           {"optimizer", optimizer},
                                           {"state", state},
                                           {"files", files}};
          write_file_atomic((partial / "manifest.json").string(), manifest.dump(1) + "\n", points);
          fsync_directory(partial.string());
          const fs::path replaced = root / (".replaced-" + step_name(step));
          if (fs::exists(final_dir)) {
            if (fs::exists(replaced)) fs::remove_all(replaced);
            points("move the earlier " + final_dir.string() + " aside");
            fs::rename(final_dir, replaced);
          }
          points("rename " + partial.string());
          fs::rename(partial, final_dir);
          fsync_directory(root.string());
          if (fs::exists(replaced)) {
            points("remove " + replaced.string());
            fs::remove_all(replaced);
          }
          write_file_atomic((root / "latest").string(), step_name(step) + "\n", points);
          if (options.keep > 0) {
            const auto steps = complete_steps(root);
            for (size_t i = 0; i + options.keep < steps.size(); ++i) {
              if (steps[i].second == final_dir) continue;
              points("remove " + steps[i].second.string());
              fs::remove_all(steps[i].second);
            }
          }
        },
        &code);
  }
  agree(comm, error, code, fmt::format("{} of step {} into '{}' (publishing)", what, step, dir));
  return final_dir.string();
}

template <typename T>
CheckpointInfo load(comm::Communicator& comm, const std::string& path, MoeLayer<T>& layer,
                    MoeAdam<T>* adam, const LoadOptions& options) {
  const int rank = comm.rank(), world = comm.size();
  const MoeConfig& config = layer.config();
  const std::string what = fmt::format("checkpoint load from '{}'", path);
  inject_fault(FaultPhase::checkpoint, rank);

  // 1. Rank 0 decides which checkpoint path names; every rank then reads that one.
  ErrorCode code = ErrorCode::invalid_argument;
  std::string error;
  int64_t choice[2] = {0, 0};  // {1: path itself, 2: path/step-<N>}, N
  if (rank == 0) {
    error = attempt(
        [&] {
          const auto [dir, why] = resolve(path);
          if (dir.empty()) throw Error(ErrorCode::invalid_argument, why);
          if (dir == path) {
            choice[0] = 1;
          } else {
            choice[0] = 2;
            choice[1] = step_of(fs::path(dir).filename().string());
          }
        },
        &code);
  }
  agree(comm, error, code, what);
  comm.allreduce_sum(choice, 2);
  const fs::path step_dir = choice[0] == 1 ? fs::path(path) : fs::path(path) / step_name(choice[1]);

  // 2. Every rank reads what its (future) placement needs into temporaries.
  CheckpointInfo info;
  info.path = step_dir.string();
  std::optional<planner::ExpertPlacement> target;
  std::optional<MoeParams<T>> params, m, v;
  std::vector<T> bias;
  error = attempt(
      [&] {
        const std::string manifest_path = (step_dir / "manifest.json").string();
        auto bad = [&](const std::string& why) {
          throw Error(ErrorCode::invalid_argument,
                      fmt::format("checkpoint manifest '{}': {}", manifest_path, why));
        };
        nlohmann::json manifest;
        try {
          manifest = nlohmann::json::parse(read_file(manifest_path));
        } catch (const nlohmann::json::exception& e) {
          bad(fmt::format("not valid JSON ({})", e.what()));
        }
        try {
          if (manifest.value("format", "") != kManifestFormat) {
            bad(fmt::format("format '{}' is not {}", manifest.value("format", ""),
                            kManifestFormat));
          }
          const std::string dtype = manifest.at("dtype").get<std::string>();
          if (dtype != dtype_name(dtype_of<T>())) {
            bad(fmt::format("saved in {}, the layer is {}", dtype, dtype_name(dtype_of<T>())));
          }
          const uint64_t digest = config_digest(config);
          const uint64_t saved_digest = parse_hex(manifest.at("config_digest"), "config_digest");
          if (saved_digest != digest) {
            std::string fields;
            const nlohmann::json mine = config_to_json(config);
            for (const char* f : kDigestFields) {
              if (manifest.at("config").contains(f) && manifest["config"][f] != mine[f]) {
                fields += fmt::format(" {} {} (layer: {})", f, manifest["config"][f].dump(),
                                      mine[f].dump());
              }
            }
            bad(fmt::format(
                "config digest {} differs from the layer's {}: a checkpoint of "
                "another layer;{}",
                hex(saved_digest), hex(digest), fields.empty() ? " the digests differ" : fields));
          }
          const uint64_t id = parse_hex(manifest.at("id"), "id");
          info.step = manifest.at("step").get<int64_t>();
          info.saved_world_size = manifest.at("world_size").get<int>();
          info.state = manifest.value("state", nlohmann::json());
          const auto replicas = manifest.at("placement").get<std::vector<std::vector<int>>>();
          if (static_cast<int>(replicas.size()) != config.num_experts)
            bad("placement is not for this layer's experts");
          const auto saved = planner::ExpertPlacement(replicas, info.saved_world_size);
          if (options.restore_placement && info.saved_world_size == world) {
            target = saved;
            info.placement_restored = true;
          } else {
            target = layer.placement();
          }
          std::map<std::string, int64_t> sizes;
          for (const auto& f : manifest.at("files")) {
            sizes[f.at("name").get<std::string>()] = f.at("bytes").get<int64_t>();
          }
          const auto expert_files = manifest.at("expert_files").get<std::vector<std::string>>();
          if (static_cast<int>(expert_files.size()) != config.num_experts)
            bad("expert_files is not for this layer's experts");
          std::map<std::string, std::unique_ptr<ShardReader>> readers;
          auto reader = [&](const std::string& name) -> ShardReader& {
            auto& r = readers[name];
            if (!r) {
              if (!sizes.count(name) || name.find('/') != std::string::npos) {
                bad(fmt::format("names file '{}' that its file list lacks", name));
              }
              r = std::make_unique<ShardReader>((step_dir / name).string(), dtype_of<T>(), digest,
                                                id, sizes[name]);
            }
            return *r;
          };
          const bool with_adam = adam != nullptr;
          if (with_adam && manifest.at("optimizer").is_null()) {
            bad("saved without optimizer state; load without an optimizer to start it afresh");
          }
          if (with_adam) info.optimizer_step = manifest["optimizer"].at("step").get<int64_t>();
          const std::vector<int> mine = target->experts_of(rank);
          params.emplace(config, mine);
          if (with_adam) {
            m.emplace(config, mine);
            v.emplace(config, mine);
          }
          auto fill = [&](MoeParams<T>& dest, const std::string& prefix) {
            ShardReader& rep = reader(manifest.at("replicated_file").get<std::string>());
            for (auto& [name, t] : named_tensors(dest, true, {})) {
              rep.read(prefix + name, std::span<T>(t->data(), t->size()));
            }
            for (int e : mine) {
              ShardReader& r = reader(expert_files[e]);
              for (auto& [name, t] : named_tensors(dest, false, {e})) {
                r.read(prefix + name, std::span<T>(t->data(), t->size()));
              }
            }
          };
          fill(*params, "");
          if (with_adam) {
            fill(*m, "adam.m.");
            fill(*v, "adam.v.");
          }
          if (!layer.selection_bias().empty() && manifest.value("selection_bias", false)) {
            bias.resize(layer.selection_bias().size());
            reader(manifest.at("replicated_file").get<std::string>())
                .read("selection_bias", std::span<T>(bias));
          }
        } catch (const nlohmann::json::exception& e) {
          bad(fmt::format("a field is missing or has the wrong type ({})", e.what()));
        }
      },
      &code);
  agree(comm, error, code, what);

  // 3. Commit: move to the target placement (collective; on failure nothing has changed), then
  // copy the values in.
  if (!(*target == layer.placement())) {
    layer.apply_placement(*target, adam != nullptr ? adam->state() : std::vector<MoeParams<T>*>{});
  }
  auto copy_all = [](MoeParams<T>& dest, MoeParams<T>& src) {
    auto d = dest.tensors(), s = src.tensors();
    for (size_t i = 0; i < d.size(); ++i) std::copy(s[i].begin(), s[i].end(), d[i].begin());
  };
  copy_all(layer.params(), *params);
  if (adam != nullptr) {
    copy_all(*adam->state()[0], *m);
    copy_all(*adam->state()[1], *v);
    adam->set_steps(info.optimizer_step);
  }
  if (!bias.empty()) layer.selection_bias() = bias;
  layer.grads().zero();
  return info;
}

template std::string save(comm::Communicator&, const std::string&, int64_t, MoeLayer<float>&,
                          MoeAdam<float>*, const nlohmann::json&, const SaveOptions&);
template std::string save(comm::Communicator&, const std::string&, int64_t, MoeLayer<double>&,
                          MoeAdam<double>*, const nlohmann::json&, const SaveOptions&);
template CheckpointInfo load(comm::Communicator&, const std::string&, MoeLayer<float>&,
                             MoeAdam<float>*, const LoadOptions&);
template CheckpointInfo load(comm::Communicator&, const std::string&, MoeLayer<double>&,
                             MoeAdam<double>*, const LoadOptions&);

}  // namespace switchyard::checkpoint
