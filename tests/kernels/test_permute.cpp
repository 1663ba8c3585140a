#include "kernels/permute.h"

#include "tests/kernels/testing.h"

namespace switchyard::kernels {
namespace {

using testing::cast;
using testing::rel_err;
using testing::tol;

TEST(GroupByKey, IsAStableSortWithEmptyGroups) {
  std::mt19937_64 rng(61);
  const int32_t used[] = {0, 2, 3, 6};  // groups 1, 4, 5 stay empty
  std::vector<int32_t> key(40);
  for (auto& k : key) k = used[rng() % 4];
  const int groups = 7;
  std::vector<int64_t> order(key.size(), -1), offsets(groups + 1, -1);
  group_by_key(key.data(), static_cast<int64_t>(key.size()), groups, order.data(), offsets.data());

  std::vector<int64_t> expected_order, expected_offsets{0};
  for (int g = 0; g < groups; ++g) {
    for (size_t i = 0; i < key.size(); ++i) {
      if (key[i] == g) expected_order.push_back(static_cast<int64_t>(i));
    }
    expected_offsets.push_back(static_cast<int64_t>(expected_order.size()));
  }
  EXPECT_EQ(order, expected_order);
  EXPECT_EQ(offsets, expected_offsets);
}

TEST(GroupByKey, NoItems) {
  std::vector<int64_t> offsets(4, -1);
  group_by_key(nullptr, 0, 3, nullptr, offsets.data());
  EXPECT_EQ(offsets, (std::vector<int64_t>{0, 0, 0, 0}));
  int64_t only = -1;
  group_by_key(nullptr, 0, 0, nullptr, &only);
  EXPECT_EQ(only, 0);
}

TEST(GroupByKey, RejectsAnOutOfRangeKeyAndWritesNothing) {
  const std::vector<int32_t> key{1, 0, 3, 2};
  std::vector<int64_t> order(4, -1), offsets(4, -1);
  testing::expect_invalid([&] { group_by_key(key.data(), 4, 3, order.data(), offsets.data()); },
                          {"group_by_key", "key[2] = 3", "num_groups = 3"});
  EXPECT_EQ(order, std::vector<int64_t>(4, -1));
  EXPECT_EQ(offsets, std::vector<int64_t>(4, -1));
  const std::vector<int32_t> negative{-1};
  testing::expect_invalid(
      [&] { group_by_key(negative.data(), 1, 3, order.data(), offsets.data()); }, {"key[0] = -1"});
}

template <typename T>
class Permute : public ::testing::Test {};
TYPED_TEST_SUITE(Permute, testing::FloatTypes);

const std::vector<int64_t> kRows{3, 0, 3, 4, 1, 3, 0};  // repeats, and row 2 never used
constexpr int64_t kSrcRows = 5, kCols = 6;

TYPED_TEST(Permute, PermuteRowsCopiesTheNamedRows) {
  using T = TypeParam;
  const auto src = cast<T>(testing::uniform(kSrcRows * kCols, 71));
  std::vector<T> dst(kRows.size() * kCols);
  permute_rows<T>(src.data(), kCols, kRows.data(), static_cast<int64_t>(kRows.size()), dst.data());
  for (size_t i = 0; i < kRows.size(); ++i) {
    for (int64_t c = 0; c < kCols; ++c) EXPECT_EQ(dst[i * kCols + c], src[kRows[i] * kCols + c]);
  }
  permute_rows<T>(src.data(), kCols, nullptr, 0, nullptr);  // n == 0 touches nothing
}

TYPED_TEST(Permute, UnpermuteRowsAccumulatesScaledRows) {
  using T = TypeParam;
  const auto src = cast<T>(testing::uniform(kRows.size() * kCols, 72));
  const auto scale = cast<T>(testing::uniform(kRows.size(), 73));
  const auto init = cast<T>(testing::uniform(kSrcRows * kCols, 74));
  for (const bool scaled : {false, true}) {
    std::vector<T> dst = init;
    unpermute_rows<T>(src.data(), kCols, kRows.data(), scaled ? scale.data() : nullptr,
                      static_cast<int64_t>(kRows.size()), dst.data());
    std::vector<double> expected = testing::to_double(init);
    for (size_t i = 0; i < kRows.size(); ++i) {
      for (int64_t c = 0; c < kCols; ++c) {
        expected[kRows[i] * kCols + c] += (scaled ? double(scale[i]) : 1.0) * src[i * kCols + c];
      }
    }
    EXPECT_LE(rel_err(dst, expected), tol<T>()) << "scaled=" << scaled;
  }
  std::vector<T> dst = init;
  unpermute_rows<T>(nullptr, kCols, nullptr, nullptr, 0, dst.data());
  EXPECT_EQ(dst, init);
}

TYPED_TEST(Permute, GatheredRowDots) {
  using T = TypeParam;
  const auto a = cast<T>(testing::uniform(kRows.size() * kCols, 75));
  const auto b = cast<T>(testing::uniform(kSrcRows * kCols, 76));
  std::vector<T> out(kRows.size());
  gathered_row_dots<T>(a.data(), b.data(), kCols, kRows.data(), static_cast<int64_t>(kRows.size()),
                       out.data());
  std::vector<double> expected(kRows.size(), 0.0);
  for (size_t i = 0; i < kRows.size(); ++i) {
    for (int64_t c = 0; c < kCols; ++c) {
      expected[i] += double(a[i * kCols + c]) * double(b[kRows[i] * kCols + c]);
    }
  }
  EXPECT_LE(rel_err(out, expected), tol<T>());
}

}  // namespace
}  // namespace switchyard::kernels
