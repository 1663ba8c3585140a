// Private: one POSIX shared-memory segment shared by the ranks of a node. The node's first rank
// creates it under a name unique to the job (its pid, a per-process counter and the clock),
// reserves its memory (so a full /dev/shm fails here instead of with SIGBUS later) and the others
// map it; the name is unlinked as soon as every rank has mapped it, or has failed to, so nothing
// is left in /dev/shm after teardown, an error or even a crash.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <string>

namespace switchyard::comm {

class ShmSegment {
 public:
  // Collective over node_comm (ranks of one node). `init` runs on the creating rank only, on the
  // zeroed memory, before any other rank maps it. Throws CommError(internal) on every rank of the
  // node if any of them fails.
  ShmSegment(MPI_Comm node_comm, size_t bytes, void (*init)(void* base, const void* context),
             const void* context);
  ~ShmSegment();
  ShmSegment(const ShmSegment&) = delete;
  ShmSegment& operator=(const ShmSegment&) = delete;

  void* base() const { return base_; }
  size_t bytes() const { return bytes_; }
  const std::string& name() const { return name_; }

 private:
  void* base_ = nullptr;
  size_t bytes_ = 0;
  std::string name_;
};

}  // namespace switchyard::comm
