// Device helpers shared by the cuda backend's kernels: grid-stride indices, the CPU's numerics
// (kernels/cpu/math.h) on the device, products and sums rounded one at a time as the CPU loops
// round them (no fused multiply-add contraction), and warp reductions in a fixed order.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace switchyard::kernels::cuda {

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;

__device__ inline int64_t grid_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ inline int64_t grid_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// a * b and a + b, each rounded on its own, as the CPU loops compute them.
__device__ inline float mul(float a, float b) { return __fmul_rn(a, b); }
__device__ inline float sum(float a, float b) { return __fadd_rn(a, b); }
__device__ inline double mul(double a, double b) { return __dmul_rn(a, b); }
__device__ inline double sum(double a, double b) { return __dadd_rn(a, b); }

// kernels/cpu/math.h's sigmoid: exp of a non-positive number only, so neither branch overflows.
__device__ inline float sigmoid(float x) {
  if (x >= 0.f) return __fdiv_rn(1.f, sum(1.f, expf(-x)));
  const float e = expf(x);
  return __fdiv_rn(e, sum(1.f, e));
}

// Sum and maximum over a warp by a butterfly: every lane gets the same value, from the same tree
// whatever the data, so the result is reproducible.
template <typename T>
__device__ inline T warp_sum(T v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    v = sum(v, __shfl_xor_sync(kFullMask, v, offset));
  }
  return v;
}
// The maximum as std::max_element finds it (a < b takes b).
template <typename T>
__device__ inline T warp_max(T v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    const T other = __shfl_xor_sync(kFullMask, v, offset);
    v = v < other ? other : v;
  }
  return v;
}

}  // namespace switchyard::kernels::cuda
