#include "kernels/rows.h"

#include <algorithm>

#include "kernels/argument_checks.h"

namespace switchyard::kernels {

template <typename T>
void add(T* dst, const T* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

template <typename T>
void scale_rows(T* x, int64_t n, int64_t cols, const T* scale) {
  for (int64_t i = 0; i < n; ++i) {
    T* row = x + i * cols;
    const T s = scale[i];
    for (int64_t c = 0; c < cols; ++c) row[c] *= s;
  }
}

template <typename T>
void pack_backward_rows(const T* grad_x, int64_t n, int64_t hidden, const int64_t* rows,
                        const int32_t* slots, const T* grad_weight, int top_k, int64_t num_rows,
                        T* back_rows) {
  const int64_t width = hidden + top_k;
  std::fill(back_rows, back_rows + num_rows * width, T(0));
  for (int64_t j = 0; j < n; ++j) {
    if (rows[j] < 0 || rows[j] >= num_rows || slots[j] < 0 || slots[j] >= top_k) {
      detail::invalid_argument("pack_backward_rows: pair ", j, " names row ", rows[j], " slot ",
                               slots[j], " outside [0, ", num_rows, ") x [0, ", top_k, ")");
    }
    T* row = back_rows + rows[j] * width;
    add(row, grad_x + j * hidden, hidden);
    row[hidden + slots[j]] += grad_weight[j];
  }
}

template <typename T>
void unpack_backward_rows(const T* back_rows, int64_t tokens, int64_t hidden, int top_k, T* grad_x,
                          T* grad_weights) {
  const int64_t width = hidden + top_k;
  for (int64_t t = 0; t < tokens; ++t) {
    add(grad_x + t * hidden, back_rows + t * width, hidden);
    std::copy_n(back_rows + t * width + hidden, top_k, grad_weights + t * top_k);
  }
}

#define SWITCHYARD_INSTANTIATE(T)                                                                 \
  template void add<T>(T*, const T*, int64_t);                                                    \
  template void scale_rows<T>(T*, int64_t, int64_t, const T*);                                    \
  template void pack_backward_rows<T>(const T*, int64_t, int64_t, const int64_t*, const int32_t*, \
                                      const T*, int, int64_t, T*);                                \
  template void unpack_backward_rows<T>(const T*, int64_t, int64_t, int, T*, T*);
SWITCHYARD_INSTANTIATE(float)
SWITCHYARD_INSTANTIATE(double)
#undef SWITCHYARD_INSTANTIATE

}  // namespace switchyard::kernels
