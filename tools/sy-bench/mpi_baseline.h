// The baseline every figure is a ratio against: one copy per (token, expert) pair, exchanged with
// MPI_Alltoallv, as a straightforward MoE layer would. Each row carries the token's elements (fp32
// or bf16) and then its token index (4 bytes), so the receiver can check it.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "tools/sy-bench/workload.h"

namespace switchyard::bench {

class MpiBaseline {
 public:
  // Exchanges the counts (untimed, like exchange_counts for the other algorithms).
  MpiBaseline(const Workload& w, const WorkloadOptions& o, MPI_Comm comm);
  ~MpiBaseline();
  MpiBaseline(const MpiBaseline&) = delete;
  MpiBaseline& operator=(const MpiBaseline&) = delete;

  void dispatch();
  // Returns every received row as its own result (an identity expert) and sums them per token (in
  // fp32; bf16 rounds each sum once).
  void combine();
  // Wrong elements in what was received and in the combined sums (expected: topk copies of x).
  int64_t errors() const;
  int64_t bytes_sent() const;  // to other ranks, per call
  int64_t bytes_to_other_nodes(const std::vector<int>& node_of_rank) const;

 private:
  float element(const std::byte* row, size_t j) const;

  const Workload& w_;
  WorkloadOptions o_;
  MPI_Comm comm_;
  int rank_ = 0;
  int world_ = 0;
  MPI_Datatype row_ = MPI_DATATYPE_NULL;
  size_t elem_bytes_ = 0;
  size_t row_bytes_ = 0;  // hidden elements, then the token index (int32)
  std::vector<int> send_counts_, send_displs_, recv_counts_, recv_displs_;
  std::vector<int64_t> send_token_;  // token of every send row
  std::vector<std::byte> send_, recv_, back_;
  std::vector<float> sums_, out_;  // out_: the combined sums (bf16 runs: rounded)
};

}  // namespace switchyard::bench
