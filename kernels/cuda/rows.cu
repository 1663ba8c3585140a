// Row kernels of the cuda backend (launch.h), mirroring kernels/cpu/permute.cpp and rows.cpp. The
// scatters that sum several rows into one (unpermute, the backward packing) are turned into
// gathers: the items are grouped by destination row with a stable radix sort (CUB), then one block
// per destination row adds its items in ascending order, as the CPU loop does. No atomics.
#include <cub/device/device_radix_sort.cuh>

#include <algorithm>

#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/launch.h"

namespace switchyard::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / kWarp;

unsigned blocks_for(int64_t count, int per_block = kThreads) {
  return static_cast<unsigned>(std::min<int64_t>((count + per_block - 1) / per_block, 1 << 20));
}

__global__ void permute_rows_kernel(const float* src, int64_t cols, const int64_t* rows, int64_t n,
                                    float* dst) {
  const int64_t count = n * cols;
  for (int64_t i = grid_index(); i < count; i += grid_stride()) {
    const int64_t r = i / cols;
    dst[i] = src[rows[r] * cols + (i - r * cols)];
  }
}

// One warp per output: the lanes' strided partial sums, then the warp's fixed tree.
__global__ void gathered_row_dots_kernel(const float* a, const float* b, int64_t cols,
                                         const int64_t* rows, int64_t n, float* out) {
  const int lane = static_cast<int>(threadIdx.x % kWarp);
  const int64_t first = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x / kWarp;
  for (int64_t i = first; i < n; i += stride) {
    const float* x = a + i * cols;
    const float* y = b + rows[i] * cols;
    float part = 0.f;
    for (int64_t c = lane; c < cols; c += kWarp) part = sum(part, mul(x[c], y[c]));
    const float dot = warp_sum(part);
    if (lane == 0) out[i] = dot;
  }
}

__global__ void iota_kernel(int64_t* v, int64_t n) {
  for (int64_t i = grid_index(); i < n; i += grid_stride()) v[i] = i;
}

// Block j serves the group of items that starts at sorted position j (a block whose j does not
// start a group leaves at once): for each column, the destination's value plus the group's items
// in ascending order.
__global__ void unpermute_grouped_kernel(const float* src, int64_t cols, const int64_t* sorted_rows,
                                         const int64_t* order, const float* scale, int64_t n,
                                         float* dst) {
  for (int64_t j = blockIdx.x; j < n; j += gridDim.x) {
    const int64_t row = sorted_rows[j];
    if (j > 0 && sorted_rows[j - 1] == row) continue;
    int64_t end = j + 1;
    while (end < n && sorted_rows[end] == row) ++end;
    float* to = dst + row * cols;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      float acc = to[c];
      for (int64_t p = j; p < end; ++p) {
        const int64_t i = order[p];
        const float s = scale != nullptr ? scale[i] : 1.f;
        acc = sum(acc, mul(s, src[i * cols + c]));
      }
      to[c] = acc;
    }
  }
}

__global__ void pack_grouped_kernel(const float* grad_x, int64_t hidden,
                                    const int64_t* sorted_rows, const int64_t* order,
                                    const int32_t* slots, const float* grad_weight, int top_k,
                                    int64_t n, float* back_rows) {
  const int64_t width = hidden + top_k;
  for (int64_t j = blockIdx.x; j < n; j += gridDim.x) {
    const int64_t row = sorted_rows[j];
    if (j > 0 && sorted_rows[j - 1] == row) continue;
    int64_t end = j + 1;
    while (end < n && sorted_rows[end] == row) ++end;
    float* to = back_rows + row * width;
    for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x) {
      float acc = 0.f;
      for (int64_t p = j; p < end; ++p) acc = sum(acc, grad_x[order[p] * hidden + c]);
      to[c] = acc;
    }
    // The weight columns: one thread, items ascending, as the CPU loop adds them.
    if (threadIdx.x == 0) {
      for (int64_t p = j; p < end; ++p) {
        const int64_t i = order[p];
        to[hidden + slots[i]] = sum(to[hidden + slots[i]], grad_weight[i]);
      }
    }
  }
}

}  // namespace

cudaError_t permute_rows(const float* src, int64_t cols, const int64_t* rows, int64_t n,
                         float* dst, cudaStream_t stream) {
  if (n * cols == 0) return cudaSuccess;
  permute_rows_kernel<<<blocks_for(n * cols), kThreads, 0, stream>>>(src, cols, rows, n, dst);
  return cudaGetLastError();
}

cudaError_t gathered_row_dots(const float* a, const float* b, int64_t cols, const int64_t* rows,
                              int64_t n, float* out, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  gathered_row_dots_kernel<<<blocks_for(n, kWarpsPerBlock), kThreads, 0, stream>>>(a, b, cols,
                                                                                   rows, n, out);
  return cudaGetLastError();
}

size_t group_rows_temp_bytes(int64_t n) {
  size_t bytes = 0;
  // A size query only (no device work): CUB returns the bytes its sort of n items needs.
  cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<const int64_t*>(nullptr),
                                  static_cast<int64_t*>(nullptr),
                                  static_cast<const int64_t*>(nullptr),
                                  static_cast<int64_t*>(nullptr), static_cast<int>(n));
  return bytes;
}

cudaError_t group_rows(const int64_t* rows, int64_t n, void* temp, size_t temp_bytes,
                       int64_t* iota, int64_t* sorted_rows, int64_t* order, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  iota_kernel<<<blocks_for(n), kThreads, 0, stream>>>(iota, n);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  return cub::DeviceRadixSort::SortPairs(temp, temp_bytes, rows, sorted_rows, iota, order,
                                         static_cast<int>(n), 0, 64, stream);
}

cudaError_t unpermute_grouped(const float* src, int64_t cols, const int64_t* sorted_rows,
                              const int64_t* order, const float* scale, int64_t n, float* dst,
                              cudaStream_t stream) {
  if (n == 0 || cols == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(n, 1 << 20));
  unpermute_grouped_kernel<<<blocks, 128, 0, stream>>>(src, cols, sorted_rows, order, scale, n,
                                                       dst);
  return cudaGetLastError();
}

cudaError_t pack_grouped(const float* grad_x, int64_t hidden, const int64_t* sorted_rows,
                         const int64_t* order, const int32_t* slots, const float* grad_weight,
                         int top_k, int64_t n, float* back_rows, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(n, 1 << 20));
  pack_grouped_kernel<<<blocks, 128, 0, stream>>>(grad_x, hidden, sorted_rows, order, slots,
                                                  grad_weight, top_k, n, back_rows);
  return cudaGetLastError();
}

}  // namespace switchyard::kernels::cuda
