// The cuda backend's row kernels against the fp64 reference and the CPU backend: permute,
// unpermute (several items into one row, with and without scales), gathered row dots, add,
// scale_rows, and the backward packing (several pairs into one row, a bad pair refused before
// anything is written) and unpacking. Empty and uneven shapes; repeated calls bitwise equal.
#include "tests/kernels_cuda/cuda_testing.h"

namespace switchyard::kernels {
namespace {

using testing::cast;
using testing::DeviceArray;
using testing::rel_err;
using testing::tol;
using testing::uniform;
using CudaRows = testing::CudaTest;

constexpr double kTol = tol<float>();

// rows[i] in [0, num_rows), with repeats (several items per destination) in scrambled order.
std::vector<int64_t> scrambled_rows(int64_t n, int64_t num_rows, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int64_t> rows(n);
  for (auto& r : rows) r = static_cast<int64_t>(rng() % static_cast<uint64_t>(num_rows));
  return rows;
}

TEST_F(CudaRows, PermuteUnpermuteAndDotsMatchTheFp64Reference) {
  CudaBackend gpu(ComputePrecision::native);
  auto ref = make_backend<double>({"openblas"});
  for (const int64_t n : {int64_t{0}, int64_t{1}, int64_t{77}, int64_t{1000}}) {
    for (const int64_t cols : {int64_t{1}, int64_t{33}, int64_t{300}}) {
      SCOPED_TRACE(::testing::Message() << "n " << n << " cols " << cols);
      const int64_t num_rows = 23;
      const auto rows = scrambled_rows(n, num_rows, 5 + n);
      const auto table = uniform(num_rows * cols, 6);
      const auto items = uniform(n * cols, 7);
      const auto scale = uniform(n, 8);
      std::vector<double> permuted(n * cols), dst = uniform(num_rows * cols, 9), dst1 = dst,
                                              dots(n);
      const auto dst0 = dst;
      ref->permute_rows(table.data(), cols, rows.data(), n, permuted.data());
      ref->unpermute_rows(items.data(), cols, rows.data(), scale.data(), n, dst.data());
      ref->unpermute_rows(items.data(), cols, rows.data(), nullptr, n, dst1.data());
      ref->gathered_row_dots(items.data(), table.data(), cols, rows.data(), n, dots.data());

      DeviceArray<int64_t> drows(rows);
      DeviceArray<float> dtable(cast<float>(table)), ditems(cast<float>(items)),
          dscale(cast<float>(scale)), dperm(n * cols), ddst(cast<float>(dst0)),
          ddst1(cast<float>(dst0)), ddst2(cast<float>(dst0)), ddots(n);
      gpu.permute_rows(dtable.get(), cols, drows.get(), n, dperm.get());
      gpu.unpermute_rows(ditems.get(), cols, drows.get(), dscale.get(), n, ddst.get());
      gpu.unpermute_rows(ditems.get(), cols, drows.get(), nullptr, n, ddst1.get());
      gpu.unpermute_rows(ditems.get(), cols, drows.get(), dscale.get(), n, ddst2.get());
      gpu.gathered_row_dots(ditems.get(), dtable.get(), cols, drows.get(), n, ddots.get());
      gpu.synchronize();
      EXPECT_EQ(dperm.host(), cast<float>(permuted));  // a copy: exact
      EXPECT_LE(rel_err(ddst.host(), dst), kTol);
      EXPECT_LE(rel_err(ddst1.host(), dst1), kTol);
      EXPECT_EQ(ddst2.host(), ddst.host());  // deterministic
      EXPECT_LE(rel_err(ddots.host(), dots), kTol);
    }
  }
}

TEST_F(CudaRows, AddAndScaleRowsMatchTheFp64Reference) {
  CudaBackend gpu(ComputePrecision::native);
  auto ref = make_backend<double>({"openblas"});
  for (const int64_t n : {int64_t{0}, int64_t{3}, int64_t{129}}) {
    const int64_t cols = 17;
    auto x = uniform(n * cols, 1);
    const auto y = uniform(n * cols, 2), scale = uniform(n, 3);
    DeviceArray<float> dx(cast<float>(x)), dy(cast<float>(y)), ds(cast<float>(scale));
    ref->add(x.data(), y.data(), n * cols);
    ref->scale_rows(x.data(), n, cols, scale.data());
    gpu.add(dx.get(), dy.get(), n * cols);
    gpu.scale_rows(dx.get(), n, cols, ds.get());
    gpu.synchronize();
    EXPECT_LE(rel_err(dx.host(), x), kTol) << "n " << n;
  }
}

TEST_F(CudaRows, PackAndUnpackBackwardRowsMatchTheCpu) {
  CudaBackend gpu(ComputePrecision::native);
  auto ref = make_backend<double>({"openblas"});
  const int top_k = 4;
  for (const int64_t n : {int64_t{0}, int64_t{1}, int64_t{90}}) {
    for (const int64_t hidden : {int64_t{1}, int64_t{40}}) {
      SCOPED_TRACE(::testing::Message() << "n " << n << " hidden " << hidden);
      const int64_t num_rows = 31, width = hidden + top_k;
      const auto rows = scrambled_rows(n, num_rows, 11 + n);
      std::vector<int32_t> slots(n);
      for (int64_t j = 0; j < n; ++j) slots[j] = static_cast<int32_t>((j * 7) % top_k);
      const auto gx = uniform(n * hidden, 12), gw = uniform(n, 13);
      std::vector<double> back(num_rows * width);
      ref->pack_backward_rows(gx.data(), n, hidden, rows.data(), slots.data(), gw.data(), top_k,
                              num_rows, back.data());
      auto grad_x = uniform(num_rows * hidden, 14);  // accumulated into
      const auto grad_x0 = grad_x;
      std::vector<double> grad_w(num_rows * top_k);
      ref->unpack_backward_rows(back.data(), num_rows, hidden, top_k, grad_x.data(),
                                grad_w.data());

      DeviceArray<int64_t> drows(rows);
      DeviceArray<int32_t> dslots(slots);
      DeviceArray<float> dgx(cast<float>(gx)), dgw(cast<float>(gw)),
          dback(std::vector<float>(num_rows * width, 7.f)),  // overwritten
          dgrad_x(cast<float>(grad_x0)), dgrad_w(num_rows * top_k);
      gpu.pack_backward_rows(dgx.get(), n, hidden, drows.get(), dslots.get(), dgw.get(), top_k,
                             num_rows, dback.get());
      gpu.unpack_backward_rows(dback.get(), num_rows, hidden, top_k, dgrad_x.get(),
                               dgrad_w.get());
      gpu.synchronize();
      EXPECT_LE(rel_err(dback.host(), back), kTol);
      EXPECT_LE(rel_err(dgrad_x.host(), grad_x), kTol);
      EXPECT_LE(rel_err(dgrad_w.host(), grad_w), kTol);
    }
  }
}

TEST_F(CudaRows, PackRefusesAPairOutsideTheRowsBeforeWriting) {
  CudaBackend gpu(ComputePrecision::native);
  const int64_t hidden = 3, num_rows = 4;
  const int top_k = 2;
  DeviceArray<int64_t> rows(std::vector<int64_t>{0, 3, 4});
  DeviceArray<int32_t> slots(std::vector<int32_t>{0, 1, 1});
  DeviceArray<float> gx(3 * hidden), gw(3), back(std::vector<float>(num_rows * 5, 7.f));
  testing::expect_invalid(
      [&] {
        gpu.pack_backward_rows(gx.get(), 3, hidden, rows.get(), slots.get(), gw.get(), top_k,
                               num_rows, back.get());
      },
      {"pack_backward_rows", "pair 2", "row 4"});
  DeviceArray<int32_t> bad_slots(std::vector<int32_t>{0, 2, 0});
  DeviceArray<int64_t> good_rows(std::vector<int64_t>{0, 1, 2});
  testing::expect_invalid(
      [&] {
        gpu.pack_backward_rows(gx.get(), 3, hidden, good_rows.get(), bad_slots.get(), gw.get(),
                               top_k, num_rows, back.get());
      },
      {"pack_backward_rows", "pair 1", "slot 2"});
  gpu.synchronize();
  EXPECT_EQ(back.host(), std::vector<float>(num_rows * 5, 7.f));  // untouched
}

}  // namespace
}  // namespace switchyard::kernels
