// The CUDA kernels of the cuda backend, as host functions that queue them on a stream. Arguments
// are checked by the caller (cuda_backend.cpp); each launcher returns cudaGetLastError() so that a
// failed launch is reported by the call that made it. Counts of 0 launch nothing.
//
// Every kernel mirrors the loop of kernels/cpu it replaces (the file is named beside each group)
// and is deterministic: no floating-point atomics; reductions run in a fixed order for a given
// shape (a warp's shuffle tree, or a sequential loop); integer atomics only where their order
// cannot change the result.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace switchyard::kernels::cuda {

// --- elementwise.cu (kernels/cpu/swiglu.cpp, rows.cpp, gemm_args.h) ---

// dst [rows, cols] compact = bf16(src [rows, cols] with leading dimension ld), round to nearest
// even. dst is __nv_bfloat16 storage.
cudaError_t convert_to_bf16(const float* src, int64_t rows, int64_t cols, int64_t ld,
                            uint16_t* dst, cudaStream_t stream);
// C[m,n] = beta * C (zeros without reading C when beta == 0): a GEMM with k == 0.
cudaError_t scale_by_beta(int64_t m, int64_t n, float beta, float* c, int64_t ldc,
                          cudaStream_t stream);
// act = silu(gate_pre) * up_pre.
cudaError_t swiglu_activation(const float* gate_pre, const float* up_pre, int64_t count,
                              float* act, cudaStream_t stream);
// In: grad_gate_pre holds the activation's gradient. Out: the gradients of gate_pre and up_pre.
cudaError_t swiglu_activation_backward(const float* gate_pre, const float* up_pre, int64_t count,
                                       float* grad_gate_pre, float* grad_up_pre,
                                       cudaStream_t stream);
cudaError_t add(float* dst, const float* src, int64_t n, cudaStream_t stream);
cudaError_t scale_rows(float* x, int64_t n, int64_t cols, const float* scale,
                       cudaStream_t stream);
// grad_x[t,:] += back_rows[t, :hidden]; grad_weights[t,:] = back_rows[t, hidden:].
cudaError_t unpack_backward_rows(const float* back_rows, int64_t tokens, int64_t hidden, int top_k,
                                 float* grad_x, float* grad_weights, cudaStream_t stream);

// --- elementwise.cu too: argument checks that need the data (kernels/cpu/gating.cpp check_idx,
// rows.cpp pack_backward_rows) ---

// *first_bad = the smallest i with v[i] outside [0, bound), or n when every one is inside.
// *first_bad must hold n (or more) on entry (set it with init_first_bad).
cudaError_t find_index_out_of_range(const int32_t* v, int64_t n, int64_t bound,
                                    unsigned long long* first_bad, cudaStream_t stream);
cudaError_t find_index_out_of_range(const int64_t* v, int64_t n, int64_t bound,
                                    unsigned long long* first_bad, cudaStream_t stream);
cudaError_t init_first_bad(unsigned long long* first_bad, int64_t n, cudaStream_t stream);

// --- gating.cu (kernels/cpu/gating.cpp, aux_loss.cpp) ---

cudaError_t compute_scores(const float* logits, int64_t tokens, int experts, bool sigmoid,
                           float* scores, cudaStream_t stream);
// Largest experts count select_experts takes (its per-token rows live in shared memory).
int select_experts_max_experts(int n_group);
cudaError_t select_experts(const float* scores, const float* bias, int64_t tokens, int experts,
                           int top_k, int n_group, int topk_group, bool group_max, int32_t* idx,
                           cudaStream_t stream);
cudaError_t routing_weights(const float* scores, const int32_t* idx, int64_t tokens, int experts,
                            int top_k, bool norm, float scale, float* weights,
                            cudaStream_t stream);
cudaError_t routing_weights_backward(const float* scores, const int32_t* idx,
                                     const float* grad_weights, int64_t tokens, int experts,
                                     int top_k, bool norm, float scale, float* grad_scores,
                                     cudaStream_t stream);
cudaError_t scores_backward(const float* scores, const float* grad_scores, int64_t tokens,
                            int experts, bool sigmoid, float* grad_logits, cudaStream_t stream);
cudaError_t add_balance_grad(const double* coef, int64_t tokens, int experts, float* grad_scores,
                             cudaStream_t stream);
cudaError_t z_loss_backward(const float* logits, int64_t tokens, int experts, double factor,
                            float* grad_logits, cudaStream_t stream);
// Doubles of work router_stats needs for this shape.
int64_t router_stats_work(int64_t tokens, int experts);
// out [2 E + 1] (overwritten): counts of each expert in idx, score sums over tokens, and the sum of
// logsumexp(logits_t)^2, all in double and in a fixed order. work: router_stats_work doubles;
// counts: E unsigned long long.
cudaError_t router_stats(const float* logits, const float* scores, const int32_t* idx,
                         int64_t tokens, int experts, int top_k, double* out, double* work,
                         unsigned long long* counts, cudaStream_t stream);

// --- rows.cu (kernels/cpu/permute.cpp, rows.cpp) ---

cudaError_t permute_rows(const float* src, int64_t cols, const int64_t* rows, int64_t n,
                         float* dst, cudaStream_t stream);
cudaError_t gathered_row_dots(const float* a, const float* b, int64_t cols, const int64_t* rows,
                              int64_t n, float* out, cudaStream_t stream);
// Bytes of temporary storage group_rows needs for n items.
size_t group_rows_temp_bytes(int64_t n);
// A stable sort of the items 0..n-1 by rows[i]: sorted_rows[j] = rows[order[j]], and items of one
// row keep their ascending order. iota: n int64 of work.
cudaError_t group_rows(const int64_t* rows, int64_t n, void* temp, size_t temp_bytes,
                       int64_t* iota, int64_t* sorted_rows, int64_t* order, cudaStream_t stream);
// dst[rows[i],:] += scale[i] * src[i,:] summed for i ascending within each destination row (as the
// CPU loop does), given the grouping of group_rows. scale may be nullptr (1).
cudaError_t unpermute_grouped(const float* src, int64_t cols, const int64_t* sorted_rows,
                              const int64_t* order, const float* scale, int64_t n, float* dst,
                              cudaStream_t stream);
// back_rows [num_rows, hidden + top_k] must be zero on entry; row r gathers grad_x[j,:] and
// grad_weight[j] (at column hidden + slots[j]) over the pairs j with rows[j] == r, j ascending.
cudaError_t pack_grouped(const float* grad_x, int64_t hidden, const int64_t* sorted_rows,
                         const int64_t* order, const int32_t* slots, const float* grad_weight,
                         int top_k, int64_t n, float* back_rows, cudaStream_t stream);

}  // namespace switchyard::kernels::cuda
