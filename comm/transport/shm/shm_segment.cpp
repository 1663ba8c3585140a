#include "comm/transport/shm/shm_segment.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "comm/error.h"
#include "comm/transport/mpi/mpi_error.h"

namespace switchyard::comm {

namespace {

std::string unique_name() {
  static std::atomic<unsigned> counter{0};
  const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
  return fmt::format("/switchyard-{}-{}-{:x}", getpid(), counter++, now);
}

// Opens (or, on the creator, creates and reserves) the segment and maps it; returns the error text
// instead of throwing, so that every rank still reaches the collective that agrees on success.
// *created tells the creator whether the name exists now (and must be unlinked).
std::string map_segment(const std::string& name, size_t bytes, bool create, void** base,
                        bool* created) {
  const int fd = create ? shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600)
                        : shm_open(name.c_str(), O_RDWR, 0600);
  if (fd < 0) return fmt::format("shm_open({}): {}", name, std::strerror(errno));
  *created = create;
  std::string error;
  if (create) {
    if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
      error = fmt::format("ftruncate({}, {} bytes): {}", name, bytes, std::strerror(errno));
    } else if (const int rc = posix_fallocate(fd, 0, static_cast<off_t>(bytes)); rc != 0) {
      error = fmt::format("reserving {} bytes for {}: {} (is /dev/shm large enough?)", bytes, name,
                          std::strerror(rc));
    }
  }
  if (error.empty()) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      error = fmt::format("mmap({}, {} bytes): {}", name, bytes, std::strerror(errno));
    } else {
      *base = p;
    }
  }
  close(fd);  // the mapping keeps the memory
  return error;
}

}  // namespace

ShmSegment::ShmSegment(MPI_Comm node_comm, size_t bytes, void (*init)(void*, const void*),
                       const void* context)
    : bytes_(bytes) {
  int local = 0;
  check_mpi(MPI_Comm_rank(node_comm, &local), "MPI_Comm_rank(node)");
  std::string error;
  bool created = false;
  std::array<char, 128> name{};
  if (local == 0) {
    name_ = unique_name();
    error = map_segment(name_, bytes_, true, &base_, &created);
    if (error.empty()) init(base_, context);
    std::memcpy(name.data(), name_.data(), std::min(name_.size(), name.size() - 1));
  }
  // An empty name tells the other ranks that the creator failed.
  if (!error.empty()) name[0] = '\0';
  int rc = MPI_Bcast(name.data(), static_cast<int>(name.size()), MPI_CHAR, 0, node_comm);
  if (rc == MPI_SUCCESS && local != 0) {
    name_ = name.data();
    error = name_.empty() ? "the node's first rank could not create the segment"
                          : map_segment(name_, bytes_, false, &base_, &created);
  }
  int ok = error.empty() ? 1 : 0;
  int all_ok = 0;
  if (rc == MPI_SUCCESS) rc = MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, node_comm);
  // Every rank has mapped the segment or given up: the name is no longer needed.
  if (created) shm_unlink(name_.c_str());
  if (rc == MPI_SUCCESS && all_ok == 1) return;
  if (base_ != nullptr) munmap(base_, bytes_);
  base_ = nullptr;
  check_mpi(rc, "setting up the shm segment");
  throw CommError(ErrorCode::internal,
                  fmt::format("shm transport: could not set up the node's shared-memory segment "
                              "({} bytes){}{}; use SWITCHYARD_INTRA=mpi, or free /dev/shm",
                              bytes_, error.empty() ? "" : ": ",
                              error.empty() ? "another rank of the node failed" : error));
}

ShmSegment::~ShmSegment() {
  if (base_ != nullptr) munmap(base_, bytes_);
}

}  // namespace switchyard::comm
