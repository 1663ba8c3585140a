// Helpers of the cuda backend's tests: the skip without a device (with CUDA's reason), device
// arrays, and the reference backends every CUDA kernel is compared with: the CPU backend in fp32
// and, as the fp64 reference, the CPU backend in fp64 (whose kernels tests/kernels checks against
// plain fp64 loops and finite differences).
#pragma once

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_backend.h"
#include "tests/kernels/testing.h"

namespace switchyard::kernels::testing {

// "" when a CUDA device is usable, else why not (CUDA's own error string).
inline std::string no_device_reason() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return cudaGetErrorString(err);
  }
  return count == 0 ? "cudaGetDeviceCount found none" : "";
}

// Every GPU test derives from this: without a device it is skipped, visibly, with the reason.
class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string reason = no_device_reason();
    if (!reason.empty()) GTEST_SKIP() << "no CUDA device: " << reason;
  }
};

template <typename T>
class CudaTypedTest : public CudaTest {};

inline void cuda_check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
  }
}

// A device copy of a host vector (or n zero-filled elements), read back with host().
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(const std::vector<T>& host) : n_(host.size()) {
    cuda_check(cudaMalloc(reinterpret_cast<void**>(&ptr_), bytes()), "cudaMalloc");
    if (n_ > 0) {
      cuda_check(cudaMemcpy(ptr_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice),
                 "cudaMemcpy");
    }
  }
  explicit DeviceArray(size_t n) : DeviceArray(std::vector<T>(n)) {}
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() { cudaFree(ptr_); }

  T* get() { return ptr_; }
  const T* get() const { return ptr_; }
  size_t size() const { return n_; }
  // The backend's stream must have been synchronized first (CudaBackend::synchronize).
  std::vector<T> host() const {
    std::vector<T> out(n_);
    if (n_ > 0) {
      cuda_check(cudaMemcpy(out.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost),
                 "cudaMemcpy");
    }
    return out;
  }

 private:
  size_t bytes() const { return n_ > 0 ? n_ * sizeof(T) : 1; }
  T* ptr_ = nullptr;
  size_t n_;
};

inline std::unique_ptr<CudaBackend> cuda_backend(ComputePrecision compute) {
  return std::make_unique<CudaBackend>(compute);
}

// The tolerance a compute precision is held to against the fp64 reference.
inline double cuda_tol(ComputePrecision compute) {
  return compute == ComputePrecision::bf16 ? kBf16Tol : tol<float>();
}

}  // namespace switchyard::kernels::testing
