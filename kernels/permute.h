// Moving token rows between token order and expert-grouped order.
#pragma once

#include <cstdint>

namespace switchyard::kernels {

// Stable counting sort of n items by group id in [0, num_groups): order[j] is the item placed at
// position j, offsets[g]..offsets[g+1] the positions of group g (offsets has num_groups + 1
// entries). Items keep their relative order inside a group. Throws Error(invalid_argument) on a
// group id out of range.
void group_by_key(const int32_t* key, int64_t n, int num_groups, int64_t* order, int64_t* offsets);

// permute: dst[i,:] = src[rows[i],:] for i in [0, n).
template <typename T>
void permute_rows(const T* src, int64_t cols, const int64_t* rows, int64_t n, T* dst);

// unpermute: dst[rows[i],:] += scale[i] * src[i,:] for i ascending (scale may be nullptr = 1).
template <typename T>
void unpermute_rows(const T* src, int64_t cols, const int64_t* rows, const T* scale, int64_t n,
                    T* dst);

// out[i] = dot(a[i,:], b[rows[i],:]) for i in [0, n): the gradient of a scale in unpermute_rows.
template <typename T>
void gathered_row_dots(const T* a, const T* b, int64_t cols, const int64_t* rows, int64_t n,
                       T* out);

}  // namespace switchyard::kernels
