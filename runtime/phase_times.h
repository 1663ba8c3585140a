// Wall-clock seconds spent per phase of the MoE layer, accumulated until reset.
#pragma once

#include <chrono>
#include <cstdint>

namespace switchyard {

struct PhaseTimes {
  double gate = 0;         // router GEMM, scores, top-k, weights, global load statistics
  double dispatch = 0;     // layout and the dispatch all-to-all
  double experts = 0;      // routed expert FFNs on received tokens
  double combine = 0;      // the combine all-to-all
  double shared = 0;       // shared experts
  double backward = 0;     // the whole backward pass, gradient reduction included
  // The routed expert FFNs' backward on received rows (part of backward).
  double experts_backward = 0;
  // All-reduce of replicated gradients (part of backward; with overlap the shared experts' part
  // runs on the communication thread and counts whether or not the caller waited for it).
  double grad_reduce = 0;
  // Time inside all-to-all calls, forward and backward, whether the caller waited for them or
  // they ran on the communication thread meanwhile (pipelined steps).
  double comm_busy = 0;

  double forward() const { return gate + dispatch + experts + combine + shared; }
};

// Bytes this rank sent in all-to-all calls (dispatch and combine, forward and backward), by link
// class, accumulated until reset.
struct TrafficCounters {
  int64_t intra_node_bytes = 0;
  int64_t inter_node_bytes = 0;
};

// Adds the time from construction to destruction to one PhaseTimes field.
class ScopedPhase {
 public:
  explicit ScopedPhase(double& slot) : slot_(slot), start_(std::chrono::steady_clock::now()) {}
  ~ScopedPhase() {
    slot_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  ScopedPhase(const ScopedPhase&) = delete;
  ScopedPhase& operator=(const ScopedPhase&) = delete;

 private:
  double& slot_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace switchyard
