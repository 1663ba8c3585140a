// Checks every plan must pass: shape, every expert placed, no avoidable duplicate, imbalance not
// below the lower bound.
#pragma once

#include <gtest/gtest.h>

#include "planner/plan.h"
#include "planner/replica_counts.h"
#include "planner/score.h"
#include "planner/workload.h"

namespace switchyard::planner::testing {

inline void expect_valid_plan(const Workload& w, const Plan& plan) {
  ASSERT_EQ(plan.num_layers(), w.num_layers);
  EXPECT_NO_THROW(plan.validate(w.num_experts));
  const PlanScore score = score_plan(w, plan);
  // Redundant slots never exceed one per device per expert in these workloads, so a duplicate on
  // a device is always avoidable.
  EXPECT_EQ(score.duplicate_replicas, 0);
  for (int l = 0; l < w.num_layers; ++l) {
    const double lb = lower_bound_imbalance(w.load[l], plan.topology.num_slots(),
                                            plan.topology.num_devices());
    EXPECT_GE(score.layer_imb[l], lb - 1e-12) << "layer " << l;
  }
}

}  // namespace switchyard::planner::testing
