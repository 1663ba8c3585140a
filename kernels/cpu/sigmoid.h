// The logistic function over an array, the SwiGLU kernels' one transcendental: computed 16 lanes
// at a time through glibc's vector math library (libmvec's AVX-512 expf) where the CPU has
// AVX-512, one element at a time with detail::sigmoid elsewhere and for double. A step of
// DeepSeekMoE-16B takes ~9 million of them; one at a time they cost ~115 ms of a 1.6 s step (one
// rank, sy-bench step: 1604.6 -> 1488.8 ms).
#pragma once

#include <cstdint>

namespace switchyard::kernels::detail {

// out[i] = 1 / (1 + exp(-x[i])) for i < n; out may be x. Finite for any finite input (exp is only
// taken of -|x|); a NaN gives a NaN.
void sigmoid(const float* x, int64_t n, float* out);
void sigmoid(const double* x, int64_t n, double* out);

// The element-at-a-time path, whatever the CPU: for the tests that compare the two.
void sigmoid_scalar(const float* x, int64_t n, float* out);

// Whether sigmoid(const float*, ...) takes the AVX-512 path on this CPU.
bool sigmoid_is_vectorized();

}  // namespace switchyard::kernels::detail
