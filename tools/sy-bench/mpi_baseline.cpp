#include "tools/sy-bench/mpi_baseline.h"

#include <algorithm>
#include <cstring>

#include "comm/alltoall/bf16.h"

namespace switchyard::bench {

MpiBaseline::MpiBaseline(const Workload& w, const WorkloadOptions& o, MPI_Comm comm)
    : w_(w),
      o_(o),
      comm_(comm),
      elem_bytes_(element_bytes(o)),
      row_bytes_(static_cast<size_t>(o.hidden) * elem_bytes_ + sizeof(int32_t)) {
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &world_);
  MPI_Type_contiguous(static_cast<int>(row_bytes_), MPI_BYTE, &row_);
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
  send_.resize(send_token_.size() * row_bytes_);
  recv_.resize(recv_rows * row_bytes_);
  back_.resize(send_.size());
  sums_.resize(static_cast<size_t>(o.tokens * o.hidden));
  out_.resize(sums_.size());
}

MpiBaseline::~MpiBaseline() { MPI_Type_free(&row_); }

float MpiBaseline::element(const std::byte* row, size_t j) const {
  if (o_.bf16) {
    uint16_t v = 0;
    std::memcpy(&v, row + j * 2, 2);
    return comm::bf16_to_float(v);
  }
  float v = 0;
  std::memcpy(&v, row + j * sizeof(float), sizeof(float));
  return v;
}

void MpiBaseline::dispatch() {
  const auto h = static_cast<size_t>(o_.hidden);
  const auto* x = o_.bf16 ? reinterpret_cast<const std::byte*>(w_.x_bf16.data())
                          : reinterpret_cast<const std::byte*>(w_.x.data());
  for (size_t i = 0; i < send_token_.size(); ++i) {
    std::byte* row = send_.data() + i * row_bytes_;
    const auto t = static_cast<size_t>(send_token_[i]);
    std::memcpy(row, x + t * h * elem_bytes_, h * elem_bytes_);
    const auto token = static_cast<int32_t>(send_token_[i]);
    std::memcpy(row + h * elem_bytes_, &token, sizeof token);
  }
  MPI_Alltoallv(send_.data(), send_counts_.data(), send_displs_.data(), row_, recv_.data(),
                recv_counts_.data(), recv_displs_.data(), row_, comm_);
}

void MpiBaseline::combine() {
  MPI_Alltoallv(recv_.data(), recv_counts_.data(), recv_displs_.data(), row_, back_.data(),
                send_counts_.data(), send_displs_.data(), row_, comm_);
  const auto h = static_cast<size_t>(o_.hidden);
  std::fill(sums_.begin(), sums_.end(), 0.0f);
  for (size_t i = 0; i < send_token_.size(); ++i) {
    float* dst = sums_.data() + static_cast<size_t>(send_token_[i]) * h;
    const std::byte* src = back_.data() + i * row_bytes_;
    if (o_.bf16) {
      const auto* v = reinterpret_cast<const uint16_t*>(src);
      for (size_t j = 0; j < h; ++j) dst[j] += comm::bf16_to_float(v[j]);
    } else {
      const auto* v = reinterpret_cast<const float*>(src);
      for (size_t j = 0; j < h; ++j) dst[j] += v[j];
    }
  }
  for (size_t k = 0; k < sums_.size(); ++k) {
    out_[k] = o_.bf16 ? comm::bf16_to_float(comm::float_to_bf16(sums_[k])) : sums_[k];
  }
}

int64_t MpiBaseline::errors() const {
  int64_t wrong = 0;
  const auto h = static_cast<size_t>(o_.hidden);
  for (int s = 0; s < world_; ++s) {
    for (int i = 0; i < recv_counts_[static_cast<size_t>(s)]; ++i) {
      const std::byte* row =
          recv_.data() + static_cast<size_t>(recv_displs_[static_cast<size_t>(s)] + i) * row_bytes_;
      int32_t t = 0;
      std::memcpy(&t, row + h * elem_bytes_, sizeof t);
      for (size_t j = 0; j < h; ++j) {
        wrong += element(row, j) != payload(s, t, static_cast<int64_t>(j), w_.modulus);
      }
    }
  }
  for (int64_t t = 0; t < o_.tokens; ++t) {
    for (size_t j = 0; j < h; ++j) {
      wrong += out_[static_cast<size_t>(t) * h + j] !=
               static_cast<float>(o_.topk) * payload(rank_, t, static_cast<int64_t>(j), w_.modulus);
    }
  }
  return wrong;
}

int64_t MpiBaseline::bytes_sent() const {
  int64_t rows = 0;
  for (int d = 0; d < world_; ++d) rows += d == rank_ ? 0 : send_counts_[static_cast<size_t>(d)];
  return rows * static_cast<int64_t>(row_bytes_);
}

int64_t MpiBaseline::bytes_to_other_nodes(const std::vector<int>& node_of_rank) const {
  int64_t rows = 0;
  for (int d = 0; d < world_; ++d) {
    if (node_of_rank[static_cast<size_t>(d)] != node_of_rank[static_cast<size_t>(rank_)])
      rows += send_counts_[static_cast<size_t>(d)];
  }
  return rows * static_cast<int64_t>(row_bytes_);
}

}  // namespace switchyard::bench
