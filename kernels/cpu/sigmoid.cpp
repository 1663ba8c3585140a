#include "kernels/cpu/sigmoid.h"

#include <immintrin.h>

#include "kernels/cpu/math.h"

// The AVX-512 functions are compiled for AVX-512 whatever the build's flags and only called after
// a CPU check.
#define SY_AVX512 __attribute__((target("avx512f")))
// libmvec's AVX-512 expf (glibc >= 2.22, x86-64 vector function ABI: 16 floats in, 16 out). Its
// declaration in <math.h> needs -ffast-math; the symbol itself is part of glibc's stable ABI.
extern "C" SY_AVX512 __m512 _ZGVeN16v_expf(__m512 x);

namespace switchyard::kernels::detail {
namespace {

// sigmoid(x) = 1 / (1 + e) for x >= 0 and e / (1 + e) otherwise, with e = exp(-|x|) <= 1: the same
// branches as the scalar detail::sigmoid, so that neither overflows.
SY_AVX512 __m512 sigmoid16(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.f);
  const __m512 minus_abs = _mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(x));
  const __m512 e = _ZGVeN16v_expf(minus_abs);
  const __m512 denom = _mm512_add_ps(one, e);
  const __mmask16 non_negative = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ);
  const __m512 numer = _mm512_mask_blend_ps(non_negative, e, one);
  return _mm512_div_ps(numer, denom);
}

SY_AVX512 void sigmoid_avx512(const float* x, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, sigmoid16(_mm512_loadu_ps(x + i)));
  if (i < n) {
    const __mmask16 tail = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(out + i, tail, sigmoid16(_mm512_maskz_loadu_ps(tail, x + i)));
  }
}

bool cpu_has_avx512f() {
  static const bool has = __builtin_cpu_supports("avx512f");
  return has;
}

// One element at a time, with math.h's scalar sigmoid.
template <typename T>
void sigmoid_each(const T* x, int64_t n, T* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = sigmoid(x[i]);
}

}  // namespace

void sigmoid_scalar(const float* x, int64_t n, float* out) { sigmoid_each(x, n, out); }

void sigmoid(const float* x, int64_t n, float* out) {
  if (cpu_has_avx512f()) {
    sigmoid_avx512(x, n, out);
  } else {
    sigmoid_scalar(x, n, out);
  }
}

void sigmoid(const double* x, int64_t n, double* out) { sigmoid_each(x, n, out); }

bool sigmoid_is_vectorized() { return cpu_has_avx512f(); }

}  // namespace switchyard::kernels::detail
