// Replicated routed experts: the ranks holding one sum its gradient of each backward, in ascending
// rank order on every holder, so that the replicas stay bit-identical.
#include "comm/tags.h"
#include "runtime/moe_layer.h"
#include "runtime/swiglu_packing.h"

namespace switchyard {

template <typename T>
bool MoeLayer<T>::replicated(int local_expert) const {
  return placement_.replicas(params_.expert_ids[local_expert]).size() > 1;
}

namespace {

using comm::kReplicaGradTag;  // every message tag: comm/tags.h

}  // namespace

template <typename T>
void MoeLayer<T>::sum_replica_grads(std::vector<SwigluParams<T>>& grads) {
  comm::Transport& transport = comm_.transport();
  const int me = comm_.rank();
  std::vector<std::vector<T>> mine(grads.size());
  std::vector<std::vector<std::vector<T>>> theirs(grads.size());
  std::vector<comm::Request> requests;
  try {
    for (size_t e = 0; e < grads.size(); ++e) {
      if (!replicated(static_cast<int>(e))) continue;
      const auto& holders = placement_.replicas(params_.expert_ids[e]);
      append_swiglu(mine[e], grads[e]);
      theirs[e].resize(holders.size());
      for (size_t i = 0; i < holders.size(); ++i) {
        if (holders[i] == me) continue;
        theirs[e][i].resize(mine[e].size());
        requests.push_back(transport.irecv(holders[i], theirs[e][i].data(),
                                           mine[e].size() * sizeof(T), kReplicaGradTag));
        requests.push_back(transport.isend(holders[i], mine[e].data(), mine[e].size() * sizeof(T),
                                           kReplicaGradTag));
      }
    }
  } catch (...) {
    for (auto& r : requests) transport.cancel(r);
    throw;
  }
  comm::wait_all(transport, requests, comm_.timeout(), "replica gradient exchange");
  for (size_t e = 0; e < grads.size(); ++e) {
    if (!replicated(static_cast<int>(e))) continue;
    const auto& holders = placement_.replicas(params_.expert_ids[e]);
    std::vector<T> sum(mine[e].size(), T(0));
    for (size_t i = 0; i < holders.size(); ++i) {
      backend_->add(sum.data(), holders[i] == me ? mine[e].data() : theirs[e][i].data(),
                    static_cast<int64_t>(sum.size()));
    }
    size_t offset = 0;
    unpack_swiglu(sum, offset, grads[e]);
  }
}

template bool MoeLayer<float>::replicated(int) const;
template void MoeLayer<float>::sum_replica_grads(std::vector<SwigluParams<float>>&);
template bool MoeLayer<double>::replicated(int) const;
template void MoeLayer<double>::sum_replica_grads(std::vector<SwigluParams<double>>&);
}  // namespace switchyard
