// Private: message tags of the hierarchical all-to-all. One per round, distinct from flat's, so a
// fast rank's next round never matches a slow rank's current one.
#pragma once

namespace switchyard::comm {

constexpr int kHeaderTag = 11;
constexpr int kIndexTag = 12;
constexpr int kRelayCountsTag = 13;
constexpr int kDispatchAcrossTag = 14;
constexpr int kDispatchInsideTag = 15;
constexpr int kCombineInsideTag = 16;
constexpr int kCombineAcrossTag = 17;

}  // namespace switchyard::comm
