// The layer's token-row loops (kernels/rows.h) through every backend, against plain loops.
#include "kernels/rows.h"

#include "kernels/backend.h"
#include "tests/kernels/testing.h"

namespace switchyard::kernels {
namespace {

using testing::cast;
using testing::uniform;

template <typename T>
class Rows : public ::testing::Test {};
TYPED_TEST_SUITE(Rows, testing::FloatTypes);

TYPED_TEST(Rows, AddAndScaleRows) {
  using T = TypeParam;
  for (const auto& bc : testing::backend_cases<T>()) {
    SCOPED_TRACE(testing::case_name(bc));
    auto backend = make_backend<T>({bc.name, bc.compute});
    auto dst = cast<T>(uniform(12, 1));
    const auto src = cast<T>(uniform(12, 2));
    auto expected = dst;
    for (size_t i = 0; i < dst.size(); ++i) expected[i] += src[i];
    backend->add(dst.data(), src.data(), 12);
    EXPECT_EQ(dst, expected);
    const std::vector<T> scale{T(2), T(-0.5), T(0)};
    for (int64_t r = 0; r < 3; ++r) {
      for (int64_t c = 0; c < 4; ++c) expected[r * 4 + c] *= scale[r];
    }
    backend->scale_rows(dst.data(), 3, 4, scale.data());
    EXPECT_EQ(dst, expected);
  }
}

// Pairs (rows 2, 0, 2, 3) into 4 rows of width hidden + top_k: row 2 sums two pairs, row 1 gets
// none and must come back zero even though back_rows starts as garbage; then the unpacking adds
// the hidden part into grad_x and overwrites grad_weights.
TYPED_TEST(Rows, PackAndUnpackBackwardRows) {
  using T = TypeParam;
  const int64_t hidden = 3, rows = 4;
  const int top_k = 2;
  const std::vector<int64_t> pair_rows{2, 0, 2, 3};
  const std::vector<int32_t> slots{0, 1, 1, 0};
  const auto grad_x = cast<T>(uniform(4 * hidden, 3));
  const auto grad_w = cast<T>(uniform(4, 4));
  std::vector<T> expected(rows * (hidden + top_k), T(0));
  for (int64_t j = 0; j < 4; ++j) {
    for (int64_t h = 0; h < hidden; ++h) {
      expected[pair_rows[j] * (hidden + top_k) + h] += grad_x[j * hidden + h];
    }
    expected[pair_rows[j] * (hidden + top_k) + hidden + slots[j]] += grad_w[j];
  }
  for (const auto& bc : testing::backend_cases<T>()) {
    SCOPED_TRACE(testing::case_name(bc));
    auto backend = make_backend<T>({bc.name, bc.compute});
    std::vector<T> back(rows * (hidden + top_k), T(99));
    backend->pack_backward_rows(grad_x.data(), 4, hidden, pair_rows.data(), slots.data(),
                                grad_w.data(), top_k, rows, back.data());
    EXPECT_EQ(back, expected);

    auto token_grad = cast<T>(uniform(rows * hidden, 5));
    auto want_grad = token_grad;
    std::vector<T> weights(rows * top_k, T(-7)), want_weights(rows * top_k);
    for (int64_t t = 0; t < rows; ++t) {
      for (int64_t h = 0; h < hidden; ++h) {
        want_grad[t * hidden + h] += expected[t * (hidden + top_k) + h];
      }
      for (int k = 0; k < top_k; ++k) {
        want_weights[t * top_k + k] = expected[t * (hidden + top_k) + hidden + k];
      }
    }
    backend->unpack_backward_rows(back.data(), rows, hidden, top_k, token_grad.data(),
                                  weights.data());
    EXPECT_EQ(token_grad, want_grad);
    EXPECT_EQ(weights, want_weights);
  }
}

TEST(RowsErrors, PackRefusesAPairOutsideTheRows) {
  auto backend = make_backend<double>({"openblas"});
  const std::vector<int64_t> pair_rows{5};
  const std::vector<int32_t> slots{0};
  std::vector<double> grad(2), weight(1), back(4 * 3);
  testing::expect_invalid(
      [&] {
        backend->pack_backward_rows(grad.data(), 1, 2, pair_rows.data(), slots.data(),
                                    weight.data(), 1, 4, back.data());
      },
      {"pack_backward_rows", "row 5"});
}

}  // namespace
}  // namespace switchyard::kernels
