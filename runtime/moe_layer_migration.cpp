// Placement changes: the measured device load a re-plan starts from, moving experts (and their
// optimizer state) to a new placement, and the aux-loss-free selection bias update.
#include <algorithm>

#include <fmt/format.h>

#include "base/error.h"
#include "comm/tags.h"
#include "runtime/agreement.h"
#include "runtime/fault_injection.h"
#include "runtime/moe_layer.h"
#include "runtime/swiglu_packing.h"

namespace switchyard {

namespace {

using comm::kMigrationTag;  // every message tag: comm/tags.h

}  // namespace

template <typename T>
std::vector<double> MoeLayer<T>::measure_device_load() {
  std::vector<double> load(comm_.size(), 0.0);
  load[comm_.rank()] = static_cast<double>(last_local_pairs_);
  guard_call([&] {
    inject_fault(FaultPhase::replan, comm_.rank());
    comm_.allreduce_sum(load.data(), load.size());
  });
  if (metrics_ != nullptr) {
    double total = 0;
    for (double l : load) total += l;
    const double max = *std::max_element(load.begin(), load.end());
    metrics_->device_imbalance.store(total > 0 ? max * load.size() / total : 0.0,
                                     std::memory_order_relaxed);
  }
  return load;
}

template <typename T>
void MoeLayer<T>::apply_placement(const planner::ExpertPlacement& next,
                                  const std::vector<MoeParams<T>*>& companions,
                                  const LocalStatus& caller_status) {
  guard_call([&] { apply_placement_call(next, companions, caller_status); });
}

template <typename T>
void MoeLayer<T>::apply_placement_call(const planner::ExpertPlacement& next,
                                       const std::vector<MoeParams<T>*>& companions,
                                       const LocalStatus& caller_status) {
  LocalStatus status = caller_status;
  status.capture([&] {
    require(next.num_experts() == config_.num_experts && next.num_devices() == comm_.size(),
            fmt::format("apply_placement: the placement is for {} experts on {} devices, the "
                        "layer has {} experts on {} ranks",
                        next.num_experts(), next.num_devices(), config_.num_experts,
                        comm_.size()));
    for (const MoeParams<T>* c : companions) {
      require(c != nullptr && c->expert_ids == params_.expert_ids,
              "apply_placement: a companion state does not hold the same experts as the layer");
    }
  });
  // Before anything moves: a rank that migrated towards another placement than its peers would
  // wait for experts nobody sends, or overwrite the ones it keeps.
  std::vector<AgreedField> fields;
  append_placement_fields(next, fields);
  agree(comm_, "apply_placement", status, fields,
        "Every rank must pass the same placement (e.g. the one a planner on rank 0 made, "
        "broadcast to the others).");
  const int me = comm_.rank();
  const std::vector<int> next_ids = next.experts_of(me);

  // Every rank derives the same transfers from the two placements: a new holder receives an
  // expert from its lowest current holder.
  comm::Transport& transport = comm_.transport();
  TraceSpan trace(tracer_, TracePhase::migration);
  inject_fault(FaultPhase::migration, me);
  std::vector<std::vector<T>> outgoing, incoming(next_ids.size());
  std::vector<comm::Request> requests;
  int64_t migrated_bytes = 0;  // sent by this rank
  const size_t expert_elems = 3 * static_cast<size_t>(config_.hidden * config_.intermediate);
  try {
    for (int e = 0; e < config_.num_experts; ++e) {
      const int source = placement_.owner(e);
      for (int d : next.replicas(e)) {
        if (placement_.holds(d, e)) continue;
        if (me == source) {
          const int local = params_.local_index(e);
          std::vector<T> message;
          append_swiglu(message, params_.experts[local]);
          for (const MoeParams<T>* c : companions) append_swiglu(message, c->experts[local]);
          outgoing.push_back(std::move(message));
          trace.sent(d, static_cast<int64_t>(outgoing.back().size() * sizeof(T)));
          migrated_bytes += static_cast<int64_t>(outgoing.back().size() * sizeof(T));
          requests.push_back(transport.isend(d, outgoing.back().data(),
                                             outgoing.back().size() * sizeof(T), kMigrationTag));
        }
        if (me == d) {
          const size_t slot =
              std::lower_bound(next_ids.begin(), next_ids.end(), e) - next_ids.begin();
          incoming[slot].resize(expert_elems * (1 + companions.size()));
          trace.received(source, static_cast<int64_t>(incoming[slot].size() * sizeof(T)));
          requests.push_back(transport.irecv(source, incoming[slot].data(),
                                             incoming[slot].size() * sizeof(T), kMigrationTag));
        }
      }
    }
  } catch (...) {
    for (auto& r : requests) transport.cancel(r);
    throw;
  }
  comm::wait_all(transport, requests, comm_.timeout(), "expert migration");

  // Assemble the new expert sets, then commit: after the transfers nothing here can fail but
  // allocation, and that happens before any existing tensor is moved.
  const size_t num_sets = 1 + companions.size();
  std::vector<std::vector<SwigluParams<T>>> next_sets(num_sets);
  for (auto& set : next_sets) set.resize(next_ids.size());
  for (size_t i = 0; i < next_ids.size(); ++i) {
    if (incoming[i].empty()) continue;
    size_t offset = 0;
    for (size_t k = 0; k < num_sets; ++k) {
      next_sets[k][i] = SwigluParams<T>(config_.hidden, config_.intermediate);
      unpack_swiglu(incoming[i], offset, next_sets[k][i]);
    }
  }
  MoeParams<T> next_grads(config_, next_ids);
  for (size_t i = 0; i < next_ids.size(); ++i) {
    if (!incoming[i].empty()) continue;
    const int local = params_.local_index(next_ids[i]);
    next_sets[0][i] = std::move(params_.experts[local]);
    for (size_t k = 1; k < num_sets; ++k) {
      next_sets[k][i] = std::move(companions[k - 1]->experts[local]);
    }
  }
  params_.experts = std::move(next_sets[0]);
  params_.expert_ids = next_ids;
  for (size_t k = 1; k < num_sets; ++k) {
    companions[k - 1]->experts = std::move(next_sets[k]);
    companions[k - 1]->expert_ids = next_ids;
  }
  grads_ = std::move(next_grads);
  placement_ = next;
  // Expert tensors moved, arrived or left: nothing the backend derived from them holds.
  backend_->parameters_changed();
  device_of_expert_ = placement_.owners();
  if (metrics_ != nullptr) {
    metrics_->replans.fetch_add(1, std::memory_order_relaxed);
    metrics_->migrated_bytes.fetch_add(migrated_bytes, std::memory_order_relaxed);
  }
}

template <typename T>
void MoeLayer<T>::update_selection_bias() {
  require_usable();
  if (!config_.selection_bias) return;
  const int E = config_.num_experts;
  double total = 0;
  for (double load : last_load_) total += load;
  const double mean = total / E;
  for (int e = 0; e < E; ++e) {
    const double diff = mean - last_load_[e];
    const double sign = diff > 0 ? 1.0 : (diff < 0 ? -1.0 : 0.0);
    bias_[e] += static_cast<T>(config_.bias_update_rate * sign);
  }
}

template std::vector<double> MoeLayer<float>::measure_device_load();
template void MoeLayer<float>::apply_placement(const planner::ExpertPlacement&,
                                               const std::vector<MoeParams<float>*>&,
                                               const LocalStatus&);
template void MoeLayer<float>::update_selection_bias();
template std::vector<double> MoeLayer<double>::measure_device_load();
template void MoeLayer<double>::apply_placement(const planner::ExpertPlacement&,
                                                const std::vector<MoeParams<double>*>&,
                                                const LocalStatus&);
template void MoeLayer<double>::update_selection_bias();
}  // namespace switchyard
