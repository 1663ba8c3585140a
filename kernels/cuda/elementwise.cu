// Elementwise kernels of the cuda backend (launch.h): bf16 conversion, the k == 0 GEMM, the SwiGLU
// activation and its backward, row sums and scalings, and the index checks.
#include <cuda_bf16.h>

#include <algorithm>

#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/launch.h"

namespace switchyard::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over count items.
unsigned blocks_for(int64_t count) {
  return static_cast<unsigned>(std::min<int64_t>((count + kThreads - 1) / kThreads, 1 << 20));
}

__global__ void convert_to_bf16_kernel(const float* src, int64_t rows, int64_t cols, int64_t ld,
                                       __nv_bfloat16* dst) {
  const int64_t count = rows * cols;
  for (int64_t i = grid_index(); i < count; i += grid_stride()) {
    const int64_t r = i / cols;
    const int64_t c = i - r * cols;
    dst[i] = __float2bfloat16_rn(src[r * ld + c]);
  }
}

__global__ void scale_by_beta_kernel(int64_t m, int64_t n, float beta, float* c, int64_t ldc) {
  const int64_t count = m * n;
  for (int64_t i = grid_index(); i < count; i += grid_stride()) {
    const int64_t r = i / n;
    float* at = c + r * ldc + (i - r * n);
    *at = beta == 0.f ? 0.f : beta * *at;
  }
}

__global__ void swiglu_activation_kernel(const float* gate_pre, const float* up_pre, int64_t count,
                                         float* act) {
  for (int64_t i = grid_index(); i < count; i += grid_stride()) {
    const float g = gate_pre[i];
    act[i] = mul(mul(g, sigmoid(g)), up_pre[i]);
  }
}

__global__ void swiglu_activation_backward_kernel(const float* gate_pre, const float* up_pre,
                                                  int64_t count, float* grad_gate_pre,
                                                  float* grad_up_pre) {
  for (int64_t i = grid_index(); i < count; i += grid_stride()) {
    const float g = gate_pre[i];
    const float sig = sigmoid(g);
    const float ga = grad_gate_pre[i];
    grad_up_pre[i] = mul(mul(ga, g), sig);
    // silu'(g) = sigma(g) (1 + g (1 - sigma(g)))
    grad_gate_pre[i] = mul(mul(mul(ga, up_pre[i]), sig), sum(1.f, mul(g, sum(1.f, -sig))));
  }
}

__global__ void add_kernel(float* dst, const float* src, int64_t n) {
  for (int64_t i = grid_index(); i < n; i += grid_stride()) dst[i] = sum(dst[i], src[i]);
}

__global__ void scale_rows_kernel(float* x, int64_t n, int64_t cols, const float* scale) {
  const int64_t count = n * cols;
  for (int64_t i = grid_index(); i < count; i += grid_stride()) x[i] = mul(x[i], scale[i / cols]);
}

__global__ void unpack_backward_rows_kernel(const float* back_rows, int64_t tokens, int64_t hidden,
                                            int top_k, float* grad_x, float* grad_weights) {
  const int64_t width = hidden + top_k;
  const int64_t count = tokens * width;
  for (int64_t i = grid_index(); i < count; i += grid_stride()) {
    const int64_t t = i / width;
    const int64_t c = i - t * width;
    if (c < hidden) {
      grad_x[t * hidden + c] = sum(grad_x[t * hidden + c], back_rows[i]);
    } else {
      grad_weights[t * top_k + (c - hidden)] = back_rows[i];
    }
  }
}

// atomicMin on an integer: the smallest bad position whatever the order, so deterministic.
template <typename Index>
__global__ void find_index_out_of_range_kernel(const Index* v, int64_t n, int64_t bound,
                                               unsigned long long* first_bad) {
  for (int64_t i = grid_index(); i < n; i += grid_stride()) {
    const int64_t value = static_cast<int64_t>(v[i]);
    if (value < 0 || value >= bound) atomicMin(first_bad, static_cast<unsigned long long>(i));
  }
}

__global__ void init_first_bad_kernel(unsigned long long* first_bad, int64_t n) {
  *first_bad = static_cast<unsigned long long>(n);
}

}  // namespace

cudaError_t convert_to_bf16(const float* src, int64_t rows, int64_t cols, int64_t ld,
                            uint16_t* dst, cudaStream_t stream) {
  if (rows * cols == 0) return cudaSuccess;
  convert_to_bf16_kernel<<<blocks_for(rows * cols), kThreads, 0, stream>>>(
      src, rows, cols, ld, reinterpret_cast<__nv_bfloat16*>(dst));
  return cudaGetLastError();
}

cudaError_t scale_by_beta(int64_t m, int64_t n, float beta, float* c, int64_t ldc,
                          cudaStream_t stream) {
  if (m * n == 0) return cudaSuccess;
  scale_by_beta_kernel<<<blocks_for(m * n), kThreads, 0, stream>>>(m, n, beta, c, ldc);
  return cudaGetLastError();
}

cudaError_t swiglu_activation(const float* gate_pre, const float* up_pre, int64_t count,
                              float* act, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  swiglu_activation_kernel<<<blocks_for(count), kThreads, 0, stream>>>(gate_pre, up_pre, count,
                                                                       act);
  return cudaGetLastError();
}

cudaError_t swiglu_activation_backward(const float* gate_pre, const float* up_pre, int64_t count,
                                       float* grad_gate_pre, float* grad_up_pre,
                                       cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  swiglu_activation_backward_kernel<<<blocks_for(count), kThreads, 0, stream>>>(
      gate_pre, up_pre, count, grad_gate_pre, grad_up_pre);
  return cudaGetLastError();
}

cudaError_t add(float* dst, const float* src, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  add_kernel<<<blocks_for(n), kThreads, 0, stream>>>(dst, src, n);
  return cudaGetLastError();
}

cudaError_t scale_rows(float* x, int64_t n, int64_t cols, const float* scale,
                       cudaStream_t stream) {
  if (n * cols == 0) return cudaSuccess;
  scale_rows_kernel<<<blocks_for(n * cols), kThreads, 0, stream>>>(x, n, cols, scale);
  return cudaGetLastError();
}

cudaError_t unpack_backward_rows(const float* back_rows, int64_t tokens, int64_t hidden, int top_k,
                                 float* grad_x, float* grad_weights, cudaStream_t stream) {
  const int64_t count = tokens * (hidden + top_k);
  if (count == 0) return cudaSuccess;
  unpack_backward_rows_kernel<<<blocks_for(count), kThreads, 0, stream>>>(
      back_rows, tokens, hidden, top_k, grad_x, grad_weights);
  return cudaGetLastError();
}

cudaError_t find_index_out_of_range(const int32_t* v, int64_t n, int64_t bound,
                                    unsigned long long* first_bad, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  find_index_out_of_range_kernel<<<blocks_for(n), kThreads, 0, stream>>>(v, n, bound, first_bad);
  return cudaGetLastError();
}

cudaError_t find_index_out_of_range(const int64_t* v, int64_t n, int64_t bound,
                                    unsigned long long* first_bad, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  find_index_out_of_range_kernel<<<blocks_for(n), kThreads, 0, stream>>>(v, n, bound, first_bad);
  return cudaGetLastError();
}

cudaError_t init_first_bad(unsigned long long* first_bad, int64_t n, cudaStream_t stream) {
  init_first_bad_kernel<<<1, 1, 0, stream>>>(first_bad, n);
  return cudaGetLastError();
}

}  // namespace switchyard::kernels::cuda
