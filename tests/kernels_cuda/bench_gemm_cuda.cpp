// bench_gemm_cuda: the cuda backend's GEMM and SwiGLU rates on this GPU, fp32 and bf16 compute,
// at a square GEMM (the best the GPU shows in this run, the baseline of the ratios) and at
// DeepSeek-V3's expert shape (hidden 7168, intermediate 2048). Prints figures, asserts nothing.
// Usage: bench_gemm_cuda [tokens (default 4096)] [iterations (default 20)]
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_backend.h"

namespace {

using switchyard::kernels::ComputePrecision;
using switchyard::kernels::CudaBackend;
using switchyard::kernels::ParamOperand;
using switchyard::kernels::SwigluWeights;

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    std::fprintf(stderr, "bench_gemm_cuda: %s: %s\n", what, cudaGetErrorString(err));
    std::exit(1);
  }
}

// count floats uniform in [-scale, scale) (outputs: scale 0). Random, not constant: GEMMs on
// constant or zero inputs can run faster than on real data.
float* device_floats(size_t count, float scale) {
  static std::mt19937 rng(20261204);
  std::uniform_real_distribution<float> uniform(-scale, scale);
  std::vector<float> host(count);
  for (auto& v : host) v = scale == 0.f ? 0.f : uniform(rng);
  float* p = nullptr;
  check(cudaMalloc(reinterpret_cast<void**>(&p), count * sizeof(float)), "cudaMalloc");
  check(cudaMemcpy(p, host.data(), count * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy");
  return p;
}

// Seconds per call of fn on the backend's stream, over iterations after 3 warm-up calls.
template <typename Fn>
double seconds_per_call(CudaBackend& backend, int iterations, Fn fn) {
  for (int i = 0; i < 3; ++i) fn();
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  check(cudaEventRecord(start, backend.stream()), "cudaEventRecord");
  for (int i = 0; i < iterations; ++i) fn();
  check(cudaEventRecord(stop, backend.stream()), "cudaEventRecord");
  check(cudaEventSynchronize(stop), "cudaEventSynchronize");
  float ms = 0;
  check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ms / 1e3 / iterations;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t tokens = argc > 1 ? std::atoll(argv[1]) : 4096;
  const int iterations = argc > 2 ? std::atoi(argv[2]) : 20;
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    std::printf("bench_gemm_cuda: skipped: no CUDA device: %s\n",
                err != cudaSuccess ? cudaGetErrorString(err) : "cudaGetDeviceCount found none");
    return 0;
  }
  const int64_t square = 8192, hidden = 7168, inter = 2048;
  float* a = device_floats(static_cast<size_t>(square * square), 0.01f);
  float* b = device_floats(static_cast<size_t>(square * square), 0.02f);
  float* c = device_floats(static_cast<size_t>(square * square), 0.f);
  float* x = device_floats(static_cast<size_t>(tokens * hidden), 0.01f);
  float* gate = device_floats(static_cast<size_t>(inter * hidden), 0.01f);
  float* up = device_floats(static_cast<size_t>(inter * hidden), 0.01f);
  float* down = device_floats(static_cast<size_t>(hidden * inter), 0.01f);
  float* gate_pre = device_floats(static_cast<size_t>(tokens * inter), 0.f);
  float* up_pre = device_floats(static_cast<size_t>(tokens * inter), 0.f);
  float* y = device_floats(static_cast<size_t>(tokens * hidden), 0.f);
  for (const auto compute : {ComputePrecision::native, ComputePrecision::bf16}) {
    CudaBackend backend(compute);
    std::printf("%s\n", backend.describe().c_str());
    const double sq = seconds_per_call(backend, iterations, [&] {
      backend.gemm(false, true, square, square, square, 1.f, a, square, b, square, 0.f, c, square,
                   ParamOperand::b);
    });
    const double sq_rate = 2.0 * square * square * square / sq;
    std::printf("  gemm %ld^3 (square, the baseline): %.1f TFLOP/s\n", static_cast<long>(square),
                sq_rate / 1e12);
    struct Shape {
      const char* what;
      int64_t m, n, k;
    } shapes[] = {{"expert gate/up  x[T,H] W^T", tokens, inter, hidden},
                  {"expert down     a[T,I] W^T", tokens, hidden, inter}};
    for (const auto& s : shapes) {
      const double t = seconds_per_call(backend, iterations, [&] {
        backend.gemm(false, true, s.m, s.n, s.k, 1.f, a, s.k, b, s.k, 0.f, c, s.n,
                     ParamOperand::b);
      });
      const double rate = 2.0 * s.m * s.n * s.k / t;
      std::printf("  gemm %s [%ld,%ld,%ld]: %.1f TFLOP/s (%.0f%% of the square)\n", s.what,
                  static_cast<long>(s.m), static_cast<long>(s.n), static_cast<long>(s.k),
                  rate / 1e12, 100 * rate / sq_rate);
    }
    const SwigluWeights<float> w{gate, up, down, hidden, inter};
    const double t = seconds_per_call(backend, iterations, [&] {
      backend.swiglu_forward(w, x, tokens, gate_pre, up_pre, y);
    });
    const double rate = 6.0 * tokens * hidden * inter / t;
    std::printf("  swiglu_forward, one expert, %ld tokens: %.3f ms, %.1f TFLOP/s (%.0f%% of the "
                "square)\n",
                static_cast<long>(tokens), t * 1e3, rate / 1e12, 100 * rate / sq_rate);
  }
  for (float* p : {a, b, c, x, gate, up, down, gate_pre, up_pre, y}) cudaFree(p);
  return 0;
}
