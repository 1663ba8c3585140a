// Shared all-to-all test cases: routes that are a pure function of (scenario, seed, source,
// world), so every rank can recompute what any source sent, and a check of dispatch and combine
// against them, byte for byte.
#pragma once

#include <cstdint>
#include <vector>

#include "comm/alltoall/alltoall.h"

namespace switchyard::comm::test {

enum class Scenario {
  random,
  odd_ranks_send_nothing,
  last_rank_has_no_tokens,
  all_to_rank0,
  all_to_all,
  nothing_at_all
};

// What one source rank sends: to[d] lists the tokens for rank d in send order.
struct Routes {
  int64_t num_tokens = 0;
  std::vector<std::vector<int64_t>> to;
};

Routes make_routes(Scenario scenario, uint64_t seed, int src, int world);
RouteLayout layout_of(const Routes& r, int world);

struct Case {
  Scenario scenario;
  uint64_t seed;
  size_t token_bytes;
  size_t side_bytes;
};

// Elements per result row in run_case's combines; the last of them is in fp64.
constexpr int64_t kCombineElems = 5;

// Dispatches with payloads derived from (source, destination, token), checks every received byte,
// then combines results derived the same way (fp32, then fp64) and checks each token's sum exactly.
void run_case(Communicator& comm, AllToAll& a2a, const Case& c);

}  // namespace switchyard::comm::test
