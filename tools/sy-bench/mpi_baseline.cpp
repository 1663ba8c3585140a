#include "tools/sy-bench/mpi_baseline.h"

#include <algorithm>
#include <cstring>

namespace switchyard::bench {

MpiBaseline::MpiBaseline(const Workload& w, const WorkloadOptions& o, MPI_Comm comm)
    : w_(w), o_(o), comm_(comm), row_floats_(o.hidden + 1) {
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &world_);
  MPI_Type_contiguous(static_cast<int>(row_floats_), MPI_FLOAT, &row_);
  MPI_Type_commit(&row_);
  send_counts_.assign(static_cast<size_t>(world_), 0);
  std::vector<std::vector<int64_t>> to(static_cast<size_t>(world_));
  for (int64_t t = 0; t < o.tokens; ++t) {
    for (int k = 0; k < o.topk; ++k) {
      const int d = owner_of(w.experts[static_cast<size_t>(t * o.topk + k)], o.experts, world_);
      to[static_cast<size_t>(d)].push_back(t);
    }
  }
  send_displs_.assign(static_cast<size_t>(world_), 0);
  for (int d = 0; d < world_; ++d) {
    send_counts_[static_cast<size_t>(d)] = static_cast<int>(to[static_cast<size_t>(d)].size());
    if (d > 0)
      send_displs_[static_cast<size_t>(d)] =
          send_displs_[static_cast<size_t>(d) - 1] + send_counts_[static_cast<size_t>(d) - 1];
    send_token_.insert(send_token_.end(), to[static_cast<size_t>(d)].begin(),
                       to[static_cast<size_t>(d)].end());
  }
  recv_counts_.assign(static_cast<size_t>(world_), 0);
  MPI_Alltoall(send_counts_.data(), 1, MPI_INT, recv_counts_.data(), 1, MPI_INT, comm_);
  recv_displs_.assign(static_cast<size_t>(world_), 0);
  for (int s = 1; s < world_; ++s) {
    recv_displs_[static_cast<size_t>(s)] =
        recv_displs_[static_cast<size_t>(s) - 1] + recv_counts_[static_cast<size_t>(s) - 1];
  }
  const auto recv_rows = static_cast<size_t>(recv_displs_.back() + recv_counts_.back());
  send_.resize(send_token_.size() * static_cast<size_t>(row_floats_));
  recv_.resize(recv_rows * static_cast<size_t>(row_floats_));
  back_.resize(send_.size());
  out_.resize(static_cast<size_t>(o.tokens * o.hidden));
}

MpiBaseline::~MpiBaseline() { MPI_Type_free(&row_); }

void MpiBaseline::dispatch() {
  const auto h = static_cast<size_t>(o_.hidden);
  for (size_t i = 0; i < send_token_.size(); ++i) {
    float* row = send_.data() + i * static_cast<size_t>(row_floats_);
    std::memcpy(row, w_.x.data() + static_cast<size_t>(send_token_[i]) * h, h * sizeof(float));
    row[h] = static_cast<float>(send_token_[i]);
  }
  MPI_Alltoallv(send_.data(), send_counts_.data(), send_displs_.data(), row_, recv_.data(),
                recv_counts_.data(), recv_displs_.data(), row_, comm_);
}

void MpiBaseline::combine() {
  MPI_Alltoallv(recv_.data(), recv_counts_.data(), recv_displs_.data(), row_, back_.data(),
                send_counts_.data(), send_displs_.data(), row_, comm_);
  const auto h = static_cast<size_t>(o_.hidden);
  std::fill(out_.begin(), out_.end(), 0.0f);
  for (size_t i = 0; i < send_token_.size(); ++i) {
    float* dst = out_.data() + static_cast<size_t>(send_token_[i]) * h;
    const float* src = back_.data() + i * static_cast<size_t>(row_floats_);
    for (size_t j = 0; j < h; ++j) dst[j] += src[j];
  }
}

int64_t MpiBaseline::errors() const {
  int64_t wrong = 0;
  const auto h = static_cast<size_t>(o_.hidden);
  for (int s = 0; s < world_; ++s) {
    for (int i = 0; i < recv_counts_[static_cast<size_t>(s)]; ++i) {
      const float* row =
          recv_.data() + static_cast<size_t>(recv_displs_[static_cast<size_t>(s)] + i) *
                             static_cast<size_t>(row_floats_);
      const auto t = static_cast<int64_t>(row[h]);
      for (size_t j = 0; j < h; ++j) wrong += row[j] != payload(s, t, static_cast<int64_t>(j));
    }
  }
  for (int64_t t = 0; t < o_.tokens; ++t) {
    for (size_t j = 0; j < h; ++j) {
      wrong += out_[static_cast<size_t>(t) * h + j] !=
               static_cast<float>(o_.topk) * payload(rank_, t, static_cast<int64_t>(j));
    }
  }
  return wrong;
}

int64_t MpiBaseline::bytes_sent() const {
  int64_t rows = 0;
  for (int d = 0; d < world_; ++d) rows += d == rank_ ? 0 : send_counts_[static_cast<size_t>(d)];
  return rows * row_floats_ * static_cast<int64_t>(sizeof(float));
}

int64_t MpiBaseline::bytes_to_other_nodes(const std::vector<int>& node_of_rank) const {
  int64_t rows = 0;
  for (int d = 0; d < world_; ++d) {
    if (node_of_rank[static_cast<size_t>(d)] != node_of_rank[static_cast<size_t>(rank_)])
      rows += send_counts_[static_cast<size_t>(d)];
  }
  return rows * row_floats_ * static_cast<int64_t>(sizeof(float));
}

}  // namespace switchyard::bench
