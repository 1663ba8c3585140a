#include "comm/alltoall/hierarchical/relay_plan.h"

#include <fmt/format.h>

#include "comm/error.h"

namespace switchyard::comm {

const RelayPlan& relay_plan_of(const RouteLayout& layout, const Topology& topology,
                               const char* what) {
  const RelayPlan* plan = layout.relay.get();
  SY_ENFORCE_ARG(
      plan != nullptr,
      "{}: the layout has no relay plan; call exchange_counts of this algorithm on it first", what);
  const char* changed = nullptr;
  if (plan->node_of_rank != topology.node_of_rank) changed = "the topology";
  if (plan->send_offsets != layout.send_offsets) changed = "send_offsets";
  if (plan->send_tokens != layout.send_tokens) changed = "send_tokens";
  if (plan->recv_offsets != layout.recv_offsets) changed = "recv_offsets";
  SY_ENFORCE_ARG(changed == nullptr,
                 "{}: {} changed since exchange_counts made the layout's relay plan; call "
                 "exchange_counts again",
                 what, changed);
  return *plan;
}

}  // namespace switchyard::comm
