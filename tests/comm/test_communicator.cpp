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

// Persistent sums (MPI_Allreduce_init where the MPI has it), started again on the same buffers
// with new contents, interleaved with each other, with started and with blocking sums: each start
// gives that start's sum.
TEST(Communicator, PersistentSumsRepeatOnTheirBuffers) {
  Communicator comm(MPI_COMM_WORLD, test::test_options());
  const int n = comm.size();
  std::vector<float> a(1000), b(7);
  std::vector<double> c(3), d(5);
  const auto sum_a = comm.persistent_sum(a.data(), a.size());
  const auto sum_d = comm.persistent_sum(d.data(), d.size());
  for (int round = 1; round <= 3; ++round) {
    for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(round * (comm.rank() + i));
    for (float& v : b) v = static_cast<float>(comm.rank() - round);
    for (double& v : c) v = 0.5 * round;
    for (double& v : d) v = 0.25 * comm.rank() * round;
    PendingSum pending_a = sum_a->start();
    PendingSum pending_b = comm.start_allreduce_sum(b.data(), b.size());
    PendingSum pending_d = sum_d->start();
    pending_a.progress();
    comm.allreduce_sum(c.data(), c.size());  // a blocking sum while three are in flight
    pending_b.progress();
    pending_d.finish();
    pending_b.finish();
    pending_a.finish();
    for (size_t i = 0; i < a.size(); ++i) {
      ASSERT_EQ(a[i], static_cast<float>(round * (n * (n - 1) / 2 + static_cast<int>(i) * n)))
          << "round " << round << ", element " << i;
    }
    for (float v : b) ASSERT_EQ(v, static_cast<float>(n * (n - 1) / 2 - round * n)) << round;
    for (double v : c) ASSERT_EQ(v, 0.5 * round * n) << round;
    for (double v : d) ASSERT_EQ(v, 0.25 * round * (n * (n - 1) / 2)) << round;
  }
  EXPECT_THROW(comm.persistent_sum(static_cast<float*>(nullptr), 3), CommError);
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
