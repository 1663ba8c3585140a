// Start-up without MPI: where the store is, who this rank is, and the group of ranks that meets
// there (rank 0 hosts the TcpStoreServer). Used to build a Communicator for trainers launched
// torchrun-style, and by the ucx transport to exchange worker addresses.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "comm/bootstrap/tcp_store_client.h"
#include "comm/bootstrap/tcp_store_server.h"

namespace switchyard::comm {

// Fields left at their "unset" value are read from the environment, as torchrun sets it:
// MASTER_ADDR, MASTER_PORT (SWITCHYARD_MASTER_PORT first: under torchrun, MASTER_PORT is already
// taken by torchrun's own store), RANK, WORLD_SIZE, LOCAL_RANK, SWITCHYARD_JOB_SECRET.
struct StoreOptions {
  std::string master_addr;  // empty: environment
  int master_port = -1;     // -1: environment; 0 only for a single-process test
  int rank = -1;
  int world_size = -1;
  int local_rank = -1;      // -1: environment if set there, else derived from hostnames
  std::string secret;       // empty: environment (a secret is required)
  std::chrono::milliseconds timeout{std::chrono::seconds(120)};

  // Fills unset fields from the environment and checks them; CommError(invalid_argument) names
  // the missing or malformed one.
  StoreOptions resolved() const;
};

class StoreGroup {
 public:
  // Rank 0 starts the store and every rank (rank 0 too) connects to it. options: resolved.
  explicit StoreGroup(const StoreOptions& options);
  ~StoreGroup();
  StoreGroup(const StoreGroup&) = delete;
  StoreGroup& operator=(const StoreGroup&) = delete;

  int rank() const { return options_.rank; }
  int size() const { return options_.world_size; }
  const StoreOptions& options() const { return options_; }

  // Every rank's bytes, in rank order. Collective: every rank calls the same sequence of
  // allgather/barrier. idle (optional) runs while waiting for the others.
  std::vector<std::vector<std::byte>> allgather(std::string_view name,
                                                std::span<const std::byte> mine,
                                                const std::function<void()>& idle = {});
  void barrier(std::string_view name, const std::function<void()>& idle = {});
  // A peer failed: rank 0's server stops at once when the group goes, instead of waiting for
  // every client to leave (a stuck peer never would).
  void abandon_peers();

 private:
  StoreOptions options_;
  int sequence_ = 0;  // keys of successive collectives never collide
  std::unique_ptr<TcpStoreServer> server_;  // rank 0 only; outlives client_
  std::unique_ptr<TcpStoreClient> client_;
};

}  // namespace switchyard::comm
