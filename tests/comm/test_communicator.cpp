#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "comm/communicator.h"
#include "comm/error.h"
#include "tests/comm/comm_test_util.h"

namespace switchyard::comm {
namespace {

// Rank r contributes r + 2 * i to element i (scaled by `unit`); integer values keep the float sums
// exact whatever the reduction order.
template <typename T>
void check_allreduce(Communicator& comm, T unit) {
  const int n = comm.size();
  for (size_t count : {size_t{0}, size_t{1}, size_t{1000}}) {
    std::vector<T> data(count);
    for (size_t i = 0; i < count; ++i) data[i] = static_cast<T>(comm.rank() + 2 * i) * unit;
    comm.allreduce_sum(data.data(), count);
    for (size_t i = 0; i < count; ++i) {
      const T expected = static_cast<T>(n * (n - 1) / 2 + static_cast<int64_t>(2 * i) * n) * unit;
      EXPECT_EQ(data[i], expected) << "element " << i << " of " << count;
    }
  }
}

TEST(Communicator, AllreduceSumsEveryType) {
  Communicator comm(MPI_COMM_WORLD, test::test_options());
  check_allreduce<double>(comm, 0.5);
  check_allreduce<float>(comm, 0.25f);
  check_allreduce<int64_t>(comm, int64_t{1} << 40);  // beyond 32 bits
}

TEST(Communicator, BarrierCompletes) {
  Communicator comm(MPI_COMM_WORLD, test::test_options());
  for (int i = 0; i < 3; ++i) comm.barrier();
}

TEST(Communicator, RejectsNonPositiveTimeout) {
  CommOptions options;
  options.timeout = std::chrono::milliseconds(0);
  try {
    Communicator comm(MPI_COMM_WORLD, options);
    ADD_FAILURE() << "zero timeout accepted";
  } catch (const CommError& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
  }
}

}  // namespace
}  // namespace switchyard::comm
