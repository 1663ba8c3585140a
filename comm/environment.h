// Every environment variable comm/ reads, read here and nowhere else in comm/ (docs/reference.md
// lists them with their defaults). Each reader looks at the environment when it is called, not once
// per process: sy-bench sets SWITCHYARD_TIMEOUT from --timeout after start-up, tests change
// variables between calls, and a malformed value is refused where the setting is used (a bad
// SWITCHYARD_RELAY_CHUNKS does not fail a run that never builds the hierarchical all-to-all).
// Unset and empty are the same. Malformed values throw CommError(invalid_argument) naming the
// variable and what it needs.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>

namespace switchyard::comm::environment {

// SWITCHYARD_TIMEOUT: seconds (decimals allowed) in (0, 7 days]; 120 s when unset. The bound on
// every wait on a peer unless a program sets its own (default_timeout, CommOptions::timeout).
std::chrono::milliseconds timeout();

// SWITCHYARD_INTRA / SWITCHYARD_INTER: the transport of one link class as named there (checked by
// the caller, which knows which names it accepts); empty when unset.
enum class LinkClass { intra, inter };
const char* transport_variable(LinkClass link);
std::string transport(LinkClass link);

// SWITCHYARD_MPI_PIECE / SWITCHYARD_UCX_PIECE: the largest inter-node message in bytes, 0 for whole
// messages; nullopt when unset (the transport's own default).
std::optional<size_t> mpi_piece();
std::optional<size_t> ucx_piece();

// SWITCHYARD_RELAY_CHUNKS: chunks of each (source, destination) share in the hierarchical relay,
// 1 to 4096; nullopt when unset.
std::optional<int> relay_chunks();

// SWITCHYARD_SHM_SINGLE_COPY: true when it is "0" (shm then moves every message through its rings).
bool shm_single_copy_off();

// The TCP store's start-up without MPI, as torchrun sets it (StoreOptions::resolved): MASTER_ADDR,
// SWITCHYARD_JOB_SECRET (empty when unset); SWITCHYARD_MASTER_PORT, else MASTER_PORT; RANK,
// WORLD_SIZE, LOCAL_RANK (-1 when unset; "store bootstrap: NAME='text' is not an integer" when
// malformed).
std::string master_addr();
std::string job_secret();
int master_port();
int rank();
int world_size();
int local_rank();

}  // namespace switchyard::comm::environment
