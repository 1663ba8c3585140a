#include "kernels/permute.h"

#include <algorithm>
#include <vector>

#include "kernels/argument_checks.h"

namespace switchyard::kernels {

void group_by_key(const int32_t* key, int64_t n, int num_groups, int64_t* order, int64_t* offsets) {
  if (n < 0) detail::invalid_argument("group_by_key: n = ", n, " must be >= 0");
  if (num_groups < 0) {
    detail::invalid_argument("group_by_key: num_groups = ", num_groups, " must be >= 0");
  }
  // All keys are checked before anything is written, so a bad key leaves the outputs untouched.
  for (int64_t i = 0; i < n; ++i) {
    if (key[i] < 0 || key[i] >= num_groups) {
      detail::invalid_argument("group_by_key: key[", i, "] = ", key[i],
                               " is not a group id in [0, num_groups = ", num_groups, ")");
    }
  }
  std::fill(offsets, offsets + num_groups + 1, int64_t{0});
  for (int64_t i = 0; i < n; ++i) ++offsets[key[i] + 1];
  for (int g = 0; g < num_groups; ++g) offsets[g + 1] += offsets[g];
  // Scatter in ascending item order through a running cursor per group: this keeps the sort
  // stable. The cursors start as a copy of offsets, so offsets itself stays the group starts.
  std::vector<int64_t> cursor(offsets, offsets + num_groups);
  for (int64_t i = 0; i < n; ++i) order[cursor[key[i]]++] = i;
}

template <typename T>
void permute_rows(const T* src, int64_t cols, const int64_t* rows, int64_t n, T* dst) {
  for (int64_t i = 0; i < n; ++i) std::copy_n(src + rows[i] * cols, cols, dst + i * cols);
}

template <typename T>
void unpermute_rows(const T* src, int64_t cols, const int64_t* rows, const T* scale, int64_t n,
                    T* dst) {
  // Ascending i keeps the summation order fixed when several i share one destination row, so the
  // result is bitwise reproducible.
  for (int64_t i = 0; i < n; ++i) {
    const T s = scale ? scale[i] : T(1);
    const T* from = src + i * cols;
    T* to = dst + rows[i] * cols;
    for (int64_t c = 0; c < cols; ++c) to[c] += s * from[c];
  }
}

template <typename T>
void gathered_row_dots(const T* a, const T* b, int64_t cols, const int64_t* rows, int64_t n,
                       T* out) {
  for (int64_t i = 0; i < n; ++i) {
    const T* x = a + i * cols;
    const T* y = b + rows[i] * cols;
    T dot = 0;
    for (int64_t c = 0; c < cols; ++c) dot += x[c] * y[c];
    out[i] = dot;
  }
}

#define SWITCHYARD_INSTANTIATE(T)                                                            \
  template void permute_rows<T>(const T*, int64_t, const int64_t*, int64_t, T*);             \
  template void unpermute_rows<T>(const T*, int64_t, const int64_t*, const T*, int64_t, T*); \
  template void gathered_row_dots<T>(const T*, const T*, int64_t, const int64_t*, int64_t, T*);
SWITCHYARD_INSTANTIATE(float)
SWITCHYARD_INSTANTIATE(double)
#undef SWITCHYARD_INSTANTIATE

}  // namespace switchyard::kernels
