// Token-row loops of the layer's data flow: sums of partial outputs, weighting of expert rows, and
// the packing of the rows the dispatch backward sends ([grad_x | grad_weight per slot]).
#pragma once

#include <cstdint>

namespace switchyard::kernels {

// dst[i] += src[i] for i in [0, n).
template <typename T>
void add(T* dst, const T* src, int64_t n);

// x[i,:] *= scale[i] for each of the n rows of width cols.
template <typename T>
void scale_rows(T* x, int64_t n, int64_t cols, const T* scale);

// back_rows [num_rows, hidden + top_k] (overwritten): row rows[j] gathers grad_x[j,:] (summed
// over the pairs j that came from it) and, in column hidden + slots[j], grad_weight[j]. A slot of
// a row is served by one expert, so summing such rows over ranks assembles every slot.
template <typename T>
void pack_backward_rows(const T* grad_x, int64_t n, int64_t hidden, const int64_t* rows,
                        const int32_t* slots, const T* grad_weight, int top_k, int64_t num_rows,
                        T* back_rows);

// The inverse view of combined back rows [tokens, hidden + top_k]: grad_x[t,:] += the first
// hidden columns, grad_weights[t,:] = the last top_k (overwritten).
template <typename T>
void unpack_backward_rows(const T* back_rows, int64_t tokens, int64_t hidden, int top_k, T* grad_x,
                          T* grad_weights);

}  // namespace switchyard::kernels
