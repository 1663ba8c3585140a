// Collective checkpoints of a layer and its Adam state (runtime/checkpoint.h) on 1-4 ranks: round
// trip with the saved placement (replicas included), resharding onto another placement and onto
// fewer and more ranks, errors on one rank failing every rank with that rank's reason and leaving
// the layer as it was, and a save stopped at every write leaving the previous checkpoint loadable.
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"
#include "comm/communicator.h"
#include "runtime/adam.h"
#include "runtime/checkpoint.h"
#include "runtime/moe_layer.h"

namespace sy = switchyard;
namespace ck = switchyard::checkpoint;
namespace fs = std::filesystem;

namespace {

struct Crash {
  std::string point;
};

sy::MoeConfig config(int64_t hidden = 8) {
  sy::MoeConfig c;
  c.hidden = hidden;
  c.num_experts = 8;
  c.num_shared = 1;
  c.top_k = 2;
  c.intermediate = 4;
  c.selection_bias = true;
  return c;
}

// Expert e on rank e % world and, for even e, also on the next rank: replicas whose primary is
// not always the lowest rank of a contiguous block.
sy::planner::ExpertPlacement round_robin_replicated(int experts, int world) {
  std::vector<std::vector<int>> replicas(experts);
  for (int e = 0; e < experts; ++e) {
    replicas[e] = {e % world};
    if (e % 2 == 0 && world > 1) replicas[e].push_back((e + 1) % world);
  }
  return sy::planner::ExpertPlacement(replicas, world);
}

// A directory every rank of comm names the same, removed by rank 0 at the end.
class SharedDir {
 public:
  explicit SharedDir(MPI_Comm comm) : comm_(comm) {
    int rank = 0;
    MPI_Comm_rank(comm, &rank);
    char buf[256] = {};
    if (rank == 0) {
      std::string tmpl = (fs::temp_directory_path() / "sy-ckpt-mpi-XXXXXX").string();
      std::snprintf(buf, sizeof(buf), "%s", ::mkdtemp(tmpl.data()));
    }
    MPI_Bcast(buf, sizeof(buf), MPI_CHAR, 0, comm);
    path_ = buf;
    rank_ = rank;
  }
  ~SharedDir() {
    MPI_Barrier(comm_);
    if (rank_ == 0) fs::remove_all(path_);
  }
  const std::string& path() const { return path_; }

 private:
  MPI_Comm comm_;
  std::string path_;
  int rank_ = 0;
};

// A layer, its Adam state and bias with values that depend only on (seed, global expert id).
struct Model {
  Model(sy::comm::Communicator& comm, sy::planner::ExpertPlacement placement, uint64_t seed,
        const sy::MoeConfig& c = config())
      : layer(c, comm, placement), adam({.lr = 1e-2}, c, placement.experts_of(comm.rank())) {
    sy::init_params(layer.params(), seed);
    sy::init_params(*adam.state()[0], seed + 100);
    sy::init_params(*adam.state()[1], seed + 200);
    for (auto& v : adam.state()[1]->tensors()) {
      for (double& x : v) x = x * x;  // second moments are squares
    }
    adam.set_steps(static_cast<int64_t>(seed));
    for (int e = 0; e < c.num_experts; ++e) layer.selection_bias()[e] = 0.01 * e + double(seed);
  }
  sy::MoeLayer<double> layer;
  sy::MoeAdam<double> adam;
};

// What a Model of `seed` holds on `placement`'s experts of this rank.
void expect_model_of_seed(Model& m, uint64_t seed, const sy::planner::ExpertPlacement& placement,
                          int rank, const std::string& where) {
  const sy::MoeConfig c = m.layer.config();
  EXPECT_EQ(m.layer.placement(), placement) << where;
  sy::MoeParams<double> p(c, placement.experts_of(rank)), mom(c, placement.experts_of(rank)),
      vel(c, placement.experts_of(rank));
  sy::init_params(p, seed);
  sy::init_params(mom, seed + 100);
  sy::init_params(vel, seed + 200);
  for (auto& v : vel.tensors()) {
    for (double& x : v) x = x * x;
  }
  auto equal = [](sy::MoeParams<double>& a, sy::MoeParams<double>& b) {
    if (a.expert_ids != b.expert_ids) return false;
    auto ta = a.tensors(), tb = b.tensors();
    if (ta.size() != tb.size()) return false;
    for (size_t i = 0; i < ta.size(); ++i) {
      if (!std::equal(ta[i].begin(), ta[i].end(), tb[i].begin(), tb[i].end())) return false;
    }
    return true;
  };
  EXPECT_TRUE(equal(m.layer.params(), p)) << where << ": parameters";
  EXPECT_TRUE(equal(*m.adam.state()[0], mom)) << where << ": first moments";
  EXPECT_TRUE(equal(*m.adam.state()[1], vel)) << where << ": second moments";
  EXPECT_EQ(m.adam.steps(), static_cast<int64_t>(seed)) << where;
  for (int e = 0; e < c.num_experts; ++e) {
    EXPECT_EQ(m.layer.selection_bias()[e], 0.01 * e + double(seed)) << where << " bias " << e;
  }
}

// The message of the switchyard::Error f throws on this rank ("" if none).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const sy::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Checkpoint, RoundTripRestoresTheSavedPlacementWithReplicas) {
  sy::comm::Communicator comm(MPI_COMM_WORLD);
  SharedDir dir(MPI_COMM_WORLD);
  const int W = comm.size();
  const auto saved = round_robin_replicated(8, W);
  Model a(comm, saved, 7);
  const std::string path = ck::save(comm, dir.path(), 3, a.layer, &a.adam, {{"seed", 5}});
  EXPECT_EQ(path, dir.path() + "/step-3");
  Model b(comm, sy::planner::ExpertPlacement::contiguous(8, W), 9);
  const ck::CheckpointInfo info = ck::load(comm, dir.path(), b.layer, &b.adam);
  EXPECT_EQ(info.step, 3);
  EXPECT_EQ(info.saved_world_size, W);
  EXPECT_TRUE(info.placement_restored);
  EXPECT_EQ(info.state["seed"], 5);
  expect_model_of_seed(b, 7, saved, comm.rank(), "restored placement");
  // A replicated expert is saved once: the files hold each expert's tensors exactly once.
  if (comm.rank() == 0) {
    const auto manifest =
        nlohmann::json::parse(std::ifstream(dir.path() + "/step-3/manifest.json"));
    int experts = 0;
    for (const auto& f : manifest["files"]) experts += static_cast<int>(f["experts"].size());
    EXPECT_EQ(experts, 8);
    EXPECT_EQ(manifest["world_size"], W);
    EXPECT_EQ(manifest["placement"][0].size(), W > 1 ? 2u : 1u);
  }
}

TEST(Checkpoint, LoadsOntoAnotherPlacementByGlobalExpertId) {
  sy::comm::Communicator comm(MPI_COMM_WORLD);
  SharedDir dir(MPI_COMM_WORLD);
  const int W = comm.size();
  Model a(comm, round_robin_replicated(8, W), 7);
  ck::save(comm, dir.path(), 1, a.layer, &a.adam);
  const auto other = sy::planner::ExpertPlacement::contiguous(8, W);
  Model b(comm, other, 9);
  const auto info = ck::load(comm, dir.path(), b.layer, &b.adam, {.restore_placement = false});
  EXPECT_FALSE(info.placement_restored);
  expect_model_of_seed(b, 7, other, comm.rank(), "kept placement");
  // Without an optimizer, the weights alone.
  sy::MoeLayer<double> c(config(), comm, other);
  ck::load<double>(comm, dir.path(), c, nullptr);
  EXPECT_EQ(c.params().gate_weight, a.layer.params().gate_weight);
}

TEST(Checkpoint, ReshardsOntoFewerAndMoreRanks) {
  int world = 0, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (world < 2) GTEST_SKIP() << "needs 2 ranks";
  SharedDir dir(MPI_COMM_WORLD);
  // The first world - 1 ranks form a smaller group.
  MPI_Comm sub = MPI_COMM_NULL;
  MPI_Comm_split(MPI_COMM_WORLD, rank < world - 1 ? 0 : MPI_UNDEFINED, rank, &sub);
  {
    sy::comm::Communicator comm(MPI_COMM_WORLD);
    Model a(comm, round_robin_replicated(8, world), 7);
    ck::save(comm, dir.path() + "/big", 4, a.layer, &a.adam);
  }
  if (sub != MPI_COMM_NULL) {
    sy::comm::Communicator comm(sub);
    const auto target = round_robin_replicated(8, world - 1);
    Model b(comm, target, 9);
    const auto info = ck::load(comm, dir.path() + "/big", b.layer, &b.adam);
    EXPECT_FALSE(info.placement_restored);
    EXPECT_EQ(info.saved_world_size, world);
    expect_model_of_seed(b, 7, target, comm.rank(), "from more ranks");
    Model small(comm, sy::planner::ExpertPlacement::contiguous(8, world - 1), 11);
    ck::save(comm, dir.path() + "/small", 5, small.layer, &small.adam);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  {
    sy::comm::Communicator comm(MPI_COMM_WORLD);
    const auto target = round_robin_replicated(8, world);
    Model c(comm, target, 13);
    ck::load(comm, dir.path() + "/small", c.layer, &c.adam);
    expect_model_of_seed(c, 11, target, comm.rank(), "from fewer ranks");
  }
  if (sub != MPI_COMM_NULL) MPI_Comm_free(&sub);
}

TEST(Checkpoint, AFailureOnOneRankFailsEveryRankAndChangesNothing) {
  sy::comm::Communicator comm(MPI_COMM_WORLD);
  SharedDir dir(MPI_COMM_WORLD);
  const int W = comm.size(), last = W - 1;
  const auto contiguous = sy::planner::ExpertPlacement::contiguous(8, W);
  Model a(comm, contiguous, 7);
  ck::save(comm, dir.path(), 2, a.layer, &a.adam);
  const std::string step = dir.path() + "/step-2";
  const std::string shard = step + "/shard-" + std::to_string(last) + ".bin";
  const std::string backup = dir.path() + "/backup.bin";
  if (comm.rank() == 0) fs::copy_file(shard, backup);
  MPI_Barrier(MPI_COMM_WORLD);

  // The layer under test starts on another placement, so a load that went through would move it.
  const auto before = round_robin_replicated(8, W);
  Model b(comm, before, 9);
  struct Case {
    const char* name;
    std::function<void()> damage;
    std::string why;
  };
  const std::vector<Case> cases = {
      {"corrupt",
       [&] {
         std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
         f.seekg(-1, std::ios::end);
         const char byte = static_cast<char>(f.get() ^ 0x55);
         f.seekp(-1, std::ios::end);
         f.put(byte);
       },
       "is corrupt (CRC32 mismatch)"},
      {"truncated", [&] { fs::resize_file(shard, fs::file_size(shard) - 8); }, "truncated"},
      {"missing", [&] { fs::remove(shard); }, "cannot open"},
  };
  for (const Case& c : cases) {
    if (comm.rank() == 0) {
      fs::copy_file(backup, shard, fs::copy_options::overwrite_existing);
      c.damage();
    }
    MPI_Barrier(MPI_COMM_WORLD);
    const std::string message = error_of([&] { ck::load(comm, dir.path(), b.layer, &b.adam); });
    // The last rank holds the last expert and reads that shard; every rank reports its failure.
    EXPECT_NE(message.find("rank " + std::to_string(last) + ": checkpoint file '" + shard + "'"),
              std::string::npos)
        << c.name << ": " << message;
    EXPECT_NE(message.find(c.why), std::string::npos) << c.name << ": " << message;
    expect_model_of_seed(b, 9, before, comm.rank(), std::string("after a ") + c.name + " shard");
    MPI_Barrier(MPI_COMM_WORLD);
  }
  if (comm.rank() == 0) fs::copy_file(backup, shard, fs::copy_options::overwrite_existing);
  MPI_Barrier(MPI_COMM_WORLD);

  // A checkpoint of another layer shape is refused by every rank, naming the field.
  {
    Model other(comm, contiguous, 7, config(16));
    const std::string message =
        error_of([&] { ck::load(comm, dir.path(), other.layer, &other.adam); });
    EXPECT_NE(message.find("manifest.json': config digest"), std::string::npos) << message;
    EXPECT_NE(message.find("hidden 8 (layer: 16)"), std::string::npos) << message;
    EXPECT_NE(message.find("rank 0:"), std::string::npos) << message;
  }
  // Weights saved without the optimizer cannot restore one.
  ck::save<double>(comm, dir.path() + "/noadam", 1, a.layer, nullptr);
  EXPECT_NE(error_of([&] {
              ck::load(comm, dir.path() + "/noadam", b.layer, &b.adam);
            }).find("saved without optimizer state"),
            std::string::npos);
  // Nothing to load.
  EXPECT_NE(error_of([&] {
              ck::load(comm, dir.path() + "/none", b.layer, &b.adam);
            }).find("is not a directory"),
            std::string::npos);
  expect_model_of_seed(b, 9, before, comm.rank(), "after refused loads");

  // A save that fails on rank 0 (its directory is a file) fails everywhere.
  if (comm.rank() == 0) std::ofstream(dir.path() + "/file") << "x";
  MPI_Barrier(MPI_COMM_WORLD);
  const std::string message =
      error_of([&] { ck::save(comm, dir.path() + "/file", 1, a.layer, &a.adam); });
  EXPECT_NE(message.find("checkpoint save into"), std::string::npos) << message;
  EXPECT_NE(message.find("rank 0:"), std::string::npos) << message;
}

TEST(Checkpoint, SavingTheSameStepAgainReplacesItAndKeepsTheNewest) {
  sy::comm::Communicator comm(MPI_COMM_WORLD);
  SharedDir dir(MPI_COMM_WORLD);
  const auto placement = sy::planner::ExpertPlacement::contiguous(8, comm.size());
  Model a(comm, placement, 7), b(comm, placement, 8), c(comm, placement, 9);
  ck::save(comm, dir.path(), 1, a.layer, &a.adam);
  ck::save(comm, dir.path(), 2, a.layer, &a.adam);
  ck::save(comm, dir.path(), 2, b.layer, &b.adam);  // a retried step
  ck::save(comm, dir.path(), 3, a.layer, &a.adam, {}, {.keep = 2, .crash_hook = {}});
  if (comm.rank() == 0) {
    EXPECT_FALSE(fs::exists(dir.path() + "/step-1"));
    EXPECT_TRUE(fs::exists(dir.path() + "/step-2"));
    EXPECT_EQ(ck::read_file(dir.path() + "/latest"), "step-3\n");
  }
  ck::load(comm, dir.path() + "/step-2", c.layer, &c.adam);
  expect_model_of_seed(c, 8, placement, comm.rank(), "re-saved step");
}

TEST(Checkpoint, ASaveStoppedAtAnyWriteLeavesTheLastCompleteCheckpoint) {
  sy::comm::Communicator comm(MPI_COMM_WORLD);
  // The stop is injected on one rank; with more, the others would wait for it until the timeout.
  if (comm.size() != 1) GTEST_SKIP() << "crash injection in-process runs on 1 rank";
  SharedDir dir(MPI_COMM_WORLD);
  const auto placement = sy::planner::ExpertPlacement::contiguous(8, 1);
  Model old_model(comm, placement, 7), new_model(comm, placement, 8);
  // Points of a save of step 2 over steps 0 and 1 with keep = 2 (so it also prunes step 0).
  const std::string base = dir.path() + "/base";
  ck::save(comm, base, 0, old_model.layer, &old_model.adam);
  ck::save(comm, base, 1, old_model.layer, &old_model.adam);
  std::vector<std::string> points;
  {
    const std::string counted = dir.path() + "/counted";
    fs::copy(base, counted, fs::copy_options::recursive);
    ck::save(comm, counted, 2, new_model.layer, &new_model.adam, {},
             {.keep = 2, .crash_hook = [&](const std::string& p) { points.push_back(p); }});
  }
  ASSERT_GE(points.size(), 12u);
  int loaded_new = 0;
  for (size_t k = 0; k < points.size(); ++k) {
    const std::string run = dir.path() + "/run-" + std::to_string(k);
    fs::copy(base, run, fs::copy_options::recursive);
    size_t seen = 0;
    try {
      ck::save(comm, run, 2, new_model.layer, &new_model.adam, {},
               {.keep = 2, .crash_hook = [&](const std::string& p) {
                  if (seen++ == k) throw Crash{p};
                }});
      FAIL() << "no crash at point " << k;
    } catch (const Crash&) {
    }
    // The checkpoint that loads is step 1 (old) or, once published, step 2 (new); never an error.
    Model into(comm, placement, 9);
    ck::CheckpointInfo info;
    const std::string message =
        error_of([&] { info = ck::load(comm, run, into.layer, &into.adam); });
    ASSERT_EQ(message, "") << "crash before '" << points[k] << "'";
    if (info.step == 2) {
      ++loaded_new;
      expect_model_of_seed(into, 8, placement, 0, "new, crash before " + points[k]);
    } else {
      EXPECT_EQ(info.step, 1) << points[k];
      expect_model_of_seed(into, 7, placement, 0, "old, crash before " + points[k]);
    }
    // Step 1 is still there and complete whatever happened (the newest two are kept).
    Model one(comm, placement, 9);
    ck::load(comm, run + "/step-1", one.layer, &one.adam);
    expect_model_of_seed(one, 7, placement, 0, "step-1, crash before " + points[k]);
    // A save after the crash goes through.
    ck::save(comm, run, 2, new_model.layer, &new_model.adam);
    Model after(comm, placement, 9);
    EXPECT_EQ(ck::load(comm, run, after.layer, &after.adam).step, 2);
    expect_model_of_seed(after, 8, placement, 0, "saved again after " + points[k]);
  }
  EXPECT_GE(loaded_new, 1);  // a crash after publishing loads the new one
  EXPECT_LT(loaded_new, static_cast<int>(points.size()));
}
