// Checkpoints of an expert-parallel MoE layer and its Adam state, keyed by global expert id so that
// a checkpoint saved on one number of ranks, with one placement, loads on another
// (docs/checkpoints.md).
//
// DIR/step-<N>/ holds one shard file per rank that is the primary (lowest) holder of some routed
// expert, `shard-<rank>.bin`, with those experts' tensors and Adam moments (a replicated expert is
// saved once); rank 0's shard also holds the replicated tensors (gate, shared experts, selection
// bias) and their moments. manifest.json, written last, names the config and its digest, the
// dtype, the world size and placement with replicas, the optimizer step, the caller's own state
// (step counter, seed, ...) and every file with its size and CRC32. DIR/latest names the newest
// complete checkpoint.
//
// Atomic: a save writes into DIR/.partial-step-<N>/ (every file under a temporary name, fsynced,
// renamed), rank 0 writes the manifest after every rank's shards are durable, then renames the
// directory to step-<N> and replaces DIR/latest. A crash at any moment leaves the previous
// checkpoints loadable and no step-<N> that is partly written.
//
// Collective: every rank of the communicator calls save and load together; a failure on any rank
// (a missing or corrupt file, a full disk) makes the call throw switchyard::Error on every rank,
// naming the failing ranks and their reasons. A failed load leaves the layer's weights, selection
// bias, placement and the optimizer's state as they were.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "comm/communicator.h"
#include "runtime/adam.h"
#include "runtime/checkpoint_file.h"
#include "runtime/moe_config.h"
#include "runtime/moe_layer.h"

namespace switchyard::checkpoint {

inline constexpr const char* kManifestFormat = "switchyard-checkpoint/v1";

// FNV-1a over the fields that define the layer's parameters and what they compute: shapes,
// scoring, grouping, top-k, normalisation and scaling, selection bias on/off. Not the loss
// coefficients, bias update rate or wire precision, which a resumed run may change.
uint64_t config_digest(const MoeConfig& config);
nlohmann::json config_to_json(const MoeConfig& config);

struct SaveOptions {
  int keep = 2;          // complete checkpoints kept in DIR, the newest (0 = all)
  CrashHook crash_hook;  // tests: called before every write (checkpoint_file.h)
};

struct LoadOptions {
  // Adopt the saved placement, replicas included, when the world size is the saved one; else, or
  // when false, keep the layer's current placement and read the experts it holds.
  bool restore_placement = true;
};

struct CheckpointInfo {
  std::string path;  // DIR/step-<N>
  int64_t step = 0;
  int saved_world_size = 0;
  bool placement_restored = false;
  int64_t optimizer_step = -1;  // -1: saved without optimizer state
  nlohmann::json state;         // the caller's state as saved
};

// Saves layer (and adam's moments and step unless null) as DIR/step-<step>; `state` is the
// caller's own (its step counter, seed, data position...), stored in the manifest. Returns the
// checkpoint's path. Collective.
template <typename T>
std::string save(comm::Communicator& comm, const std::string& dir, int64_t step, MoeLayer<T>& layer,
                 MoeAdam<T>* adam, const nlohmann::json& state = {},
                 const SaveOptions& options = {});

// Loads `path`: a checkpoint directory (DIR/step-<N>) or a DIR of checkpoints, whose `latest`
// names the one to load (or, when latest is missing or names no complete checkpoint, the
// highest complete step-<N>). With adam non-null the optimizer state must be in the checkpoint.
// Gradients are zeroed. Collective.
template <typename T>
CheckpointInfo load(comm::Communicator& comm, const std::string& path, MoeLayer<T>& layer,
                    MoeAdam<T>* adam, const LoadOptions& options = {});

}  // namespace switchyard::checkpoint
