// The cuda backend's GEMM (every transpose, padded leading dimensions, k == 0, empty shapes) and
// SwiGLU forward/backward against the fp64 reference and the CPU backend, in fp32 and bf16
// compute; the bf16 parameter copies; the factory and the refusal of host memory.
#include <cmath>
#include <limits>

#include "base/error.h"
#include "tests/kernels_cuda/cuda_testing.h"

namespace switchyard::kernels {
namespace {

using testing::cast;
using testing::cuda_backend;
using testing::cuda_tol;
using testing::DeviceArray;
using testing::rel_err;
using testing::to_double;
using testing::uniform;
using CudaGemm = testing::CudaTest;

class CudaCompute : public testing::CudaTest,
                    public ::testing::WithParamInterface<ComputePrecision> {};

INSTANTIATE_TEST_SUITE_P(Precisions, CudaCompute,
                         ::testing::Values(ComputePrecision::native, ComputePrecision::bf16),
                         [](const auto& param_info) { return compute_precision_name(param_info.param); });

struct GemmShape {
  bool ta, tb;
  int64_t m, n, k, pad;
  float alpha, beta;
};

TEST_P(CudaCompute, GemmMatchesTheFp64ReferenceAndTheCpu) {
  auto gpu = cuda_backend(GetParam());
  auto ref = make_backend<double>({"openblas"});
  auto cpu = make_backend<float>({"openblas"});
  const GemmShape shapes[] = {
      {false, false, 7, 13, 5, 0, 1.f, 0.f},   {true, false, 9, 4, 17, 3, 1.f, 1.f},
      {false, true, 33, 31, 65, 1, 0.5f, 2.f}, {true, true, 1, 40, 3, 5, -1.f, 0.25f},
      {false, true, 128, 96, 72, 0, 1.f, 0.f}, {true, false, 64, 65, 130, 7, 1.f, 1.f},
  };
  uint64_t seed = 100;
  for (const auto& s : shapes) {
    SCOPED_TRACE(::testing::Message() << "ta " << s.ta << " tb " << s.tb << " m " << s.m << " n "
                                      << s.n << " k " << s.k << " pad " << s.pad);
    const int64_t lda = (s.ta ? s.m : s.k) + s.pad, ldb = (s.tb ? s.k : s.n) + s.pad,
                  ldc = s.n + s.pad;
    const auto a = uniform((s.ta ? s.k : s.m) * lda, ++seed);
    const auto b = uniform((s.tb ? s.n : s.k) * ldb, ++seed);
    const auto c0 = uniform(s.m * ldc, ++seed);
    std::vector<double> c_ref = c0;
    ref->gemm(s.ta, s.tb, s.m, s.n, s.k, s.alpha, a.data(), lda, b.data(), ldb, s.beta,
              c_ref.data(), ldc);
    const auto af = cast<float>(a), bf = cast<float>(b);
    std::vector<float> c_cpu = cast<float>(c0);
    cpu->gemm(s.ta, s.tb, s.m, s.n, s.k, s.alpha, af.data(), lda, bf.data(), ldb, s.beta,
              c_cpu.data(), ldc);
    DeviceArray<float> da(af), db(bf), dc(cast<float>(c0));
    gpu->gemm(s.ta, s.tb, s.m, s.n, s.k, s.alpha, da.get(), lda, db.get(), ldb, s.beta, dc.get(),
              ldc);
    gpu->synchronize();
    const auto c_gpu = dc.host();
    EXPECT_LE(rel_err(c_gpu, c_ref), cuda_tol(GetParam()));
    EXPECT_LE(rel_err(c_gpu, c_cpu), 2 * cuda_tol(GetParam()));
  }
}

TEST_P(CudaCompute, GemmWithNoInnerDimensionScalesCAndEmptyShapesDoNothing) {
  auto gpu = cuda_backend(GetParam());
  DeviceArray<float> a(std::vector<float>{1.f}), b(std::vector<float>{1.f});
  // beta == 0 writes zeros without reading C (which holds NaN here).
  DeviceArray<float> c(std::vector<float>(6, std::numeric_limits<float>::quiet_NaN()));
  gpu->gemm(false, false, 2, 3, 0, 1.f, a.get(), 1, b.get(), 3, 0.f, c.get(), 3);
  DeviceArray<float> d(std::vector<float>{1, 2, 3, 4, 5, 6});
  gpu->gemm(false, false, 2, 3, 0, 1.f, a.get(), 1, b.get(), 3, 2.f, d.get(), 3);
  gpu->gemm(false, false, 0, 3, 4, 1.f, a.get(), 4, b.get(), 3, 0.f, d.get(), 3);  // m == 0
  gpu->synchronize();
  EXPECT_EQ(c.host(), std::vector<float>(6, 0.f));
  EXPECT_EQ(d.host(), (std::vector<float>{2, 4, 6, 8, 10, 12}));
}

TEST_F(CudaGemm, ErrorsNameTheBadArgument) {
  auto gpu = cuda_backend(ComputePrecision::native);
  testing::expect_invalid(
      [&] { gpu->gemm(false, false, 2, 3, 4, 1.f, nullptr, 3, nullptr, 3, 0.f, nullptr, 3); },
      {"gemm (cuda)", "lda"});
}

// SwiGLU over n tokens (0, 1, uneven) at hidden 24, inter 20: forward outputs and every gradient.
TEST_P(CudaCompute, SwigluForwardAndBackwardMatchTheFp64Reference) {
  auto gpu = cuda_backend(GetParam());
  auto ref = make_backend<double>({"openblas"});
  const int64_t h = 24, in = 20;
  const auto gate = uniform(in * h, 1, -0.3, 0.3), up = uniform(in * h, 2, -0.3, 0.3),
             down = uniform(h * in, 3, -0.3, 0.3);
  const auto gatef = cast<float>(gate), upf = cast<float>(up), downf = cast<float>(down);
  DeviceArray<float> dgate(gatef), dup(upf), ddown(downf);
  const SwigluWeights<double> wr{gate.data(), up.data(), down.data(), h, in};
  const SwigluWeights<float> wg{dgate.get(), dup.get(), ddown.get(), h, in};
  const double tol = cuda_tol(GetParam());
  for (const int64_t n : {int64_t{0}, int64_t{1}, int64_t{13}}) {
    SCOPED_TRACE(::testing::Message() << "n " << n);
    const auto x = uniform(n * h, 10 + n), gy = uniform(n * h, 20 + n);
    std::vector<double> gp(n * in), upre(n * in), y(n * h), gx(n * h);
    std::vector<double> ggate = uniform(in * h, 4), gup = uniform(in * h, 5),
                        gdown = uniform(h * in, 6);  // accumulated into
    const auto ggate0 = ggate, gup0 = gup, gdown0 = gdown;
    ref->swiglu_forward(wr, x.data(), n, gp.data(), upre.data(), y.data());
    ref->swiglu_backward(wr, x.data(), n, gp.data(), upre.data(), gy.data(), gx.data(),
                         {ggate.data(), gup.data(), gdown.data()});

    DeviceArray<float> dx(cast<float>(x)), dgy(cast<float>(gy)), dgp(n * in), dupre(n * in),
        dy(n * h), dgx(n * h), dggate(cast<float>(ggate0)), dgup(cast<float>(gup0)),
        dgdown(cast<float>(gdown0));
    gpu->swiglu_forward(wg, dx.get(), n, dgp.get(), dupre.get(), dy.get());
    gpu->swiglu_backward(wg, dx.get(), n, dgp.get(), dupre.get(), dgy.get(), dgx.get(),
                         {dggate.get(), dgup.get(), dgdown.get()});
    gpu->synchronize();
    EXPECT_LE(rel_err(dgp.host(), gp), tol);
    EXPECT_LE(rel_err(dupre.host(), upre), tol);
    EXPECT_LE(rel_err(dy.host(), y), tol);
    EXPECT_LE(rel_err(dgx.host(), gx), tol);
    // The accumulated gradients compared as what the call added.
    auto added = [](const std::vector<float>& after, const std::vector<double>& before) {
      std::vector<double> d(after.size());
      for (size_t i = 0; i < d.size(); ++i) d[i] = after[i] - static_cast<float>(before[i]);
      return d;
    };
    auto added_ref = [](const std::vector<double>& after, const std::vector<double>& before) {
      std::vector<double> d(after.size());
      for (size_t i = 0; i < d.size(); ++i) d[i] = after[i] - before[i];
      return d;
    };
    if (n > 0) {
      EXPECT_LE(rel_err(added(dggate.host(), ggate0), added_ref(ggate, ggate0)), 2 * tol);
      EXPECT_LE(rel_err(added(dgup.host(), gup0), added_ref(gup, gup0)), 2 * tol);
      EXPECT_LE(rel_err(added(dgdown.host(), gdown0), added_ref(gdown, gdown0)), 2 * tol);
    } else {
      EXPECT_EQ(dggate.host(), cast<float>(ggate0));  // no tokens: nothing added
    }

    // The two halves give what the whole gives, bit for bit (the same kernels in the same order).
    if (n > 0) {
      DeviceArray<float> dgx2(n * h), dggp(n * in), dgup2(n * in), dggate2(cast<float>(ggate0)),
          dgup3(cast<float>(gup0)), dgdown2(cast<float>(gdown0));
      gpu->swiglu_backward_data(wg, n, dgp.get(), dupre.get(), dgy.get(), dgx2.get(), dggp.get(),
                                dgup2.get());
      gpu->swiglu_backward_weights(wg, dx.get(), n, dgp.get(), dupre.get(), dgy.get(), dggp.get(),
                                   dgup2.get(), {dggate2.get(), dgup3.get(), dgdown2.get()});
      gpu->synchronize();
      EXPECT_EQ(dgx2.host(), dgx.host());
      EXPECT_EQ(dggate2.host(), dggate.host());
      EXPECT_EQ(dgdown2.host(), dgdown.host());
    }
  }
}

// Gradients marked overwrite hold NaN (fresh memory): the backward writes them — the fp64
// reference's gradients from zero — and with no tokens writes zeros.
TEST_P(CudaCompute, OverwrittenSwigluGradientsIgnoreWhatTheMemoryHeld) {
  auto gpu = cuda_backend(GetParam());
  auto ref = make_backend<double>({"openblas"});
  const int64_t h = 24, in = 20;
  const auto gate = uniform(in * h, 31, -0.3, 0.3), up = uniform(in * h, 32, -0.3, 0.3),
             down = uniform(h * in, 33, -0.3, 0.3);
  DeviceArray<float> dgate(cast<float>(gate)), dup(cast<float>(up)), ddown(cast<float>(down));
  const SwigluWeights<double> wr{gate.data(), up.data(), down.data(), h, in};
  const SwigluWeights<float> wg{dgate.get(), dup.get(), ddown.get(), h, in};
  const std::vector<float> nan(in * h, std::numeric_limits<float>::quiet_NaN());
  for (const int64_t n : {int64_t{0}, int64_t{13}}) {
    SCOPED_TRACE(::testing::Message() << "n " << n);
    const auto x = uniform(n * h, 40 + n), gy = uniform(n * h, 50 + n);
    std::vector<double> gp(n * in), upre(n * in), y(n * h), gx(n * h);
    std::vector<double> ggate(in * h), gup(in * h), gdown(h * in);  // from zero
    ref->swiglu_forward(wr, x.data(), n, gp.data(), upre.data(), y.data());
    ref->swiglu_backward(wr, x.data(), n, gp.data(), upre.data(), gy.data(), gx.data(),
                         {ggate.data(), gup.data(), gdown.data()});
    DeviceArray<float> dx(cast<float>(x)), dgy(cast<float>(gy)), dgp(n * in), dupre(n * in),
        dy(n * h), dgx(n * h), dggate(nan), dgup(nan), dgdown(nan);
    gpu->swiglu_forward(wg, dx.get(), n, dgp.get(), dupre.get(), dy.get());
    SwigluGrads<float> grads{dggate.get(), dgup.get(), dgdown.get()};
    grads.overwrite = true;
    gpu->swiglu_backward(wg, dx.get(), n, dgp.get(), dupre.get(), dgy.get(), dgx.get(), grads);
    gpu->synchronize();
    if (n == 0) {
      const std::vector<float> zeros(in * h, 0.f);
      EXPECT_EQ(dggate.host(), zeros);
      EXPECT_EQ(dgup.host(), zeros);
      EXPECT_EQ(dgdown.host(), zeros);
    } else {
      const double tol = cuda_tol(GetParam());  // NaN left anywhere fails these
      EXPECT_LE(rel_err(dggate.host(), ggate), tol);
      EXPECT_LE(rel_err(dgup.host(), gup), tol);
      EXPECT_LE(rel_err(dgdown.host(), gdown), tol);
    }
  }
}

// bf16 is visible: the error is above fp32's, so the test cannot pass by computing in fp32.
TEST_F(CudaGemm, Bf16RoundingIsVisibleAndNativeGemmsOfABf16BackendStayFp32) {
  auto gpu = cuda_backend(ComputePrecision::bf16);
  auto ref = make_backend<double>({"openblas"});
  const int64_t m = 16, n = 24, k = 40;
  const auto a = uniform(m * k, 7), b = uniform(n * k, 8);
  std::vector<double> c(m * n);
  ref->gemm(false, true, m, n, k, 1.0, a.data(), k, b.data(), k, 0.0, c.data(), n);
  DeviceArray<float> da(cast<float>(a)), db(cast<float>(b)), dc(m * n), dn(m * n);
  gpu->gemm(false, true, m, n, k, 1.f, da.get(), k, db.get(), k, 0.f, dc.get(), n,
            ParamOperand::b);
  gpu->gemm(false, true, m, n, k, 1.f, da.get(), k, db.get(), k, 0.f, dn.get(), n,
            ParamOperand::b, GemmPrecision::native);
  gpu->synchronize();
  const double bf16_err = rel_err(dc.host(), c);
  EXPECT_GT(bf16_err, 1e-5);
  EXPECT_LE(bf16_err, testing::kBf16Tol);
  EXPECT_LE(rel_err(dn.host(), c), 1e-5);
}

TEST_F(CudaGemm, ConvertsAParameterOncePerUpdate) {
  auto gpu = cuda_backend(ComputePrecision::bf16);
  const int64_t m = 5, n = 7, k = 9;
  auto a = cast<float>(uniform(m * k, 31));
  auto b = cast<float>(uniform(n * k, 32));
  DeviceArray<float> da(a), db(b), dc(m * n);
  auto run = [&] {
    gpu->gemm(false, true, m, n, k, 1.f, da.get(), k, db.get(), k, 0.f, dc.get(), n,
              ParamOperand::b);
  };
  run();
  run();
  EXPECT_EQ(gpu->param_conversions(), 1u);
  // A changed parameter is read again once the change is announced, and only then.
  for (float& v : b) v *= -2.f;
  testing::cuda_check(cudaMemcpy(db.get(), b.data(), b.size() * sizeof(float),
                                 cudaMemcpyHostToDevice),
                      "cudaMemcpy");
  run();
  EXPECT_EQ(gpu->param_conversions(), 1u);
  gpu->parameters_changed();
  run();
  run();
  EXPECT_EQ(gpu->param_conversions(), 2u);
  gpu->synchronize();
  double first = 0;
  for (int64_t p = 0; p < k; ++p) first += double(a[p]) * double(b[p]);
  EXPECT_NEAR(dc.host()[0], first, testing::kBf16Tol * 3);
}

TEST_F(CudaGemm, RefusesPageableHostMemoryNamingTheArgument) {
  auto gpu = cuda_backend(ComputePrecision::native);
  std::vector<float> host(8, 1.f);
  DeviceArray<float> dev(8);
  testing::expect_invalid([&] { gpu->add(host.data(), dev.get(), 8); },
                          {"add", "dst", "pageable host memory"});
  testing::expect_invalid([&] { gpu->add(dev.get(), host.data(), 8); }, {"add", "src"});
  // The backend is still usable after the refusal.
  gpu->add(dev.get(), dev.get(), 8);
  gpu->synchronize();
  EXPECT_EQ(dev.host(), std::vector<float>(8, 0.f));
}

TEST_F(CudaGemm, DescribesTheDeviceAndPrecision) {
  EXPECT_NE(cuda_backend(ComputePrecision::bf16)->describe().find("bf16"), std::string::npos);
  const auto d = make_backend<float>({"cuda"})->describe();
  EXPECT_NE(d.find("cuda ("), std::string::npos) << d;
  EXPECT_NE(d.find("sm_"), std::string::npos) << d;
}

// These run on every machine: the factory's answers without a GPU.
TEST(CudaBackendFactory, RefusesFp64Layers) {
  testing::expect_invalid([] { make_backend<double>({"cuda"}); }, {"cuda", "fp32"});
}

TEST(CudaBackendFactory, WithoutADeviceSaysWhy) {
  const std::string reason = testing::no_device_reason();
  if (reason.empty()) GTEST_SKIP() << "a CUDA device is present (this checks the case without)";
  try {
    make_backend<float>({"cuda"});
    ADD_FAILURE() << "no exception without a device";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::internal) << e.what();
    EXPECT_NE(std::string(e.what()).find("no CUDA device: " + reason), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace switchyard::kernels
