// The cuda backend's host side: argument checks (the messages of kernels/cpu), device memory,
// cuBLAS GEMMs in the row-major contract of kernels/blas.h, and the launches of the kernels of
// launch.h on the backend's stream.
#include "kernels/cuda/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <climits>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/error.h"
#include "kernels/argument_checks.h"
#include "kernels/cuda/launch.h"

namespace switchyard::kernels {
namespace {

using detail::check_groups;
using detail::check_router_shape;
using detail::check_top_k;
using detail::check_swiglu_shape;
using detail::invalid_argument;

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw Error(ErrorCode::internal, std::string("cuda backend: ") + what + ": " +
                                         cudaGetErrorName(err) + " (" + cudaGetErrorString(err) +
                                         ")");
  }
}

void check(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    throw Error(ErrorCode::internal, std::string("cuda backend: ") + what + ": " +
                                         cublasGetStatusName(status) + " (" +
                                         cublasGetStatusString(status) + ")");
  }
}

// Device memory that grows on demand, allocated and freed in stream order.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : ptr_(other.ptr_), bytes_(other.bytes_), stream_(other.stream_) {
    other.ptr_ = nullptr;
    other.bytes_ = 0;
  }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      release();
      ptr_ = other.ptr_;
      bytes_ = other.bytes_;
      stream_ = other.stream_;
      other.ptr_ = nullptr;
      other.bytes_ = 0;
    }
    return *this;
  }
  ~DeviceBuffer() { release(); }

  void* get(size_t bytes, cudaStream_t stream) {
    if (bytes > bytes_) {
      if (ptr_ != nullptr) check(cudaFreeAsync(ptr_, stream), "cudaFreeAsync");
      ptr_ = nullptr;
      bytes_ = 0;
      check(cudaMallocAsync(&ptr_, bytes, stream), "cudaMallocAsync");
      bytes_ = bytes;
      stream_ = stream;
    }
    return ptr_;
  }
  template <typename T>
  T* get(int64_t count, cudaStream_t stream) {
    return static_cast<T*>(get(sizeof(T) * static_cast<size_t>(count > 0 ? count : 1), stream));
  }

 private:
  void release() noexcept {
    if (ptr_ != nullptr) cudaFreeAsync(ptr_, stream_);  // errors at teardown have nowhere to go
    ptr_ = nullptr;
    bytes_ = 0;
  }

  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  cudaStream_t stream_ = nullptr;
};

// The backend takes memory the device can reach: device, managed, or pinned host memory. Pageable
// host memory (what the MoE layer passes today) is refused before any kernel touches it.
void require_device(const void* p, const char* fn, const char* arg) {
  if (p == nullptr) invalid_argument(fn, " (cuda): ", arg, " is null");
  cudaPointerAttributes attr{};
  const cudaError_t err = cudaPointerGetAttributes(&attr, p);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear it: the pointer is the caller's mistake, not a sticky error
    invalid_argument(fn, " (cuda): ", arg, " is not memory CUDA knows (", cudaGetErrorString(err),
                     ")");
  }
  if (attr.type == cudaMemoryTypeUnregistered) {
    invalid_argument(fn, " (cuda): ", arg,
                     " is pageable host memory; the cuda backend takes device memory (the MoE "
                     "layer does not run on device memory yet: docs/gpu.md)");
  }
}

}  // namespace

struct CudaBackend::State {
  struct ParamCopy {
    DeviceBuffer bf16;
    int64_t rows = 0, cols = 0, ld = 0;
    uint64_t generation = 0;
  };

  int device = 0;
  cudaDeviceProp props{};
  cudaStream_t stream = nullptr;
  bool owns_stream = false;
  cublasHandle_t cublas = nullptr;
  DeviceBuffer cublas_workspace;
  std::array<DeviceBuffer, 4> scratch;
  DeviceBuffer a_bf16, b_bf16;
  std::unordered_map<const float*, ParamCopy> params;
  uint64_t generation = 1;
  uint64_t param_conversions = 0;
  DeviceBuffer sort_temp, iota, sorted_rows, order;
  DeviceBuffer stats_work, stats_counts, stats_out;
  DeviceBuffer first_bad;
  unsigned long long* first_bad_host = nullptr;  // pinned

  // The bf16 copy of a stored parameter [rows, cols] (leading dimension ld) of this generation,
  // compact: made once per update.
  const uint16_t* param_bf16(const float* src, int64_t rows, int64_t cols, int64_t ld) {
    ParamCopy& copy = params[src];
    if (copy.generation != generation || copy.rows != rows || copy.cols != cols || copy.ld != ld) {
      uint16_t* dst = copy.bf16.get<uint16_t>(rows * cols, stream);
      check(cuda::convert_to_bf16(src, rows, cols, ld, dst, stream), "convert_to_bf16");
      copy.rows = rows, copy.cols = cols, copy.ld = ld;
      copy.generation = generation;
      ++param_conversions;
    }
    return static_cast<const uint16_t*>(copy.bf16.get<uint16_t>(rows * cols, stream));
  }

  const uint16_t* convert(const float* src, int64_t rows, int64_t cols, int64_t ld,
                          DeviceBuffer& buffer) {
    uint16_t* dst = buffer.get<uint16_t>(rows * cols, stream);
    check(cuda::convert_to_bf16(src, rows, cols, ld, dst, stream), "convert_to_bf16");
    return dst;
  }

  // Throws fn's message for the first entry of v [count] outside [0, bound): the data is on the
  // device, so this waits for the stream.
  template <typename Index>
  int64_t first_out_of_range(const Index* v, int64_t count, int64_t bound) {
    auto* bad = first_bad.get<unsigned long long>(1, stream);
    check(cuda::init_first_bad(bad, count, stream), "init_first_bad");
    check(cuda::find_index_out_of_range(v, count, bound, bad, stream), "find_index_out_of_range");
    check(cudaMemcpyAsync(first_bad_host, bad, sizeof *bad, cudaMemcpyDeviceToHost, stream),
          "cudaMemcpyAsync");
    check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    return static_cast<int64_t>(*first_bad_host);
  }

  template <typename Index>
  Index value_at(const Index* v, int64_t i) {
    Index value{};
    check(cudaMemcpyAsync(&value, v + i, sizeof value, cudaMemcpyDeviceToHost, stream),
          "cudaMemcpyAsync");
    check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    return value;
  }

  void check_idx(const char* fn, const int32_t* idx, int64_t tokens, int experts, int top_k) {
    const int64_t count = tokens * top_k;
    const int64_t bad = first_out_of_range(idx, count, experts);
    if (bad < count) {
      invalid_argument(fn, ": idx[", bad / top_k, ",", bad % top_k, "] = ", value_at(idx, bad),
                       " is not an expert in [0, ", experts, ")");
    }
  }

  // items [0, n) grouped by rows: returns {sorted_rows, order} (device, n each).
  std::pair<const int64_t*, const int64_t*> group_rows(const int64_t* rows, int64_t n) {
    if (n > INT_MAX) invalid_argument("cuda backend: ", n, " rows to group exceed ", INT_MAX);
    const size_t temp_bytes = cuda::group_rows_temp_bytes(n);
    void* temp = sort_temp.get(temp_bytes > 0 ? temp_bytes : 1, stream);
    int64_t* sorted = sorted_rows.get<int64_t>(n, stream);
    int64_t* ord = order.get<int64_t>(n, stream);
    check(cuda::group_rows(rows, n, temp, temp_bytes, iota.get<int64_t>(n, stream), sorted, ord,
                           stream),
          "group_rows (cub::DeviceRadixSort::SortPairs)");
    return {sorted, ord};
  }
};

CudaBackend::CudaBackend(ComputePrecision compute, CUstream_st* stream)
    : compute_(compute), state_(std::make_unique<State>()) {
  State& s = *state_;
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw Error(ErrorCode::internal, std::string("no CUDA device: ") + cudaGetErrorString(err));
  }
  if (count == 0) {
    throw Error(ErrorCode::internal, "no CUDA device: cudaGetDeviceCount found none");
  }
  check(cudaGetDevice(&s.device), "cudaGetDevice");
  check(cudaGetDeviceProperties(&s.props, s.device), "cudaGetDeviceProperties");
  if (stream != nullptr) {
    s.stream = stream;
  } else {
    check(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking), "cudaStreamCreate");
    s.owns_stream = true;
  }
  check(cudaMallocHost(reinterpret_cast<void**>(&s.first_bad_host), sizeof *s.first_bad_host),
        "cudaMallocHost");
  check(cublasCreate(&s.cublas), "cublasCreate");
  check(cublasSetStream(s.cublas, s.stream), "cublasSetStream");
  // CUBLAS_COMPUTE_32F below keeps fp32 GEMMs in fp32 (no TF32); a workspace of our own keeps
  // cuBLAS from allocating per call, and its results reproducible on this stream.
  check(cublasSetMathMode(s.cublas, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
  const size_t workspace = size_t{32} << 20;
  check(cublasSetWorkspace(s.cublas, s.cublas_workspace.get(workspace, s.stream), workspace),
        "cublasSetWorkspace");
}

CudaBackend::~CudaBackend() {
  State& s = *state_;
  // Teardown cannot throw: errors here have nowhere to go.
  cudaStreamSynchronize(s.stream);
  if (s.cublas != nullptr) cublasDestroy(s.cublas);
  s.params.clear();
  s.scratch = {};
  s.a_bf16 = {};
  s.b_bf16 = {};
  DeviceBuffer* buffers[] = {&s.cublas_workspace, &s.sort_temp,    &s.iota,
                             &s.sorted_rows,      &s.order,        &s.stats_work,
                             &s.stats_counts,     &s.stats_out,    &s.first_bad};
  for (DeviceBuffer* b : buffers) *b = DeviceBuffer();
  cudaStreamSynchronize(s.stream);
  if (s.first_bad_host != nullptr) cudaFreeHost(s.first_bad_host);
  if (s.owns_stream) cudaStreamDestroy(s.stream);
}

std::string CudaBackend::describe() const {
  const State& s = *state_;
  int cublas_version = 0;
  cublasGetVersion(s.cublas, &cublas_version);
  std::ostringstream out;
  out << "cuda (" << s.props.name << ", sm_" << s.props.major << s.props.minor << ", "
      << (compute_ == ComputePrecision::bf16 ? "bf16 compute, fp32 accumulation" : "fp32")
      << ", cuBLAS " << cublas_version / 10000 << "." << cublas_version / 100 % 100 << ")";
  return out.str();
}

void CudaBackend::parameters_changed() { ++state_->generation; }

uint64_t CudaBackend::param_conversions() const { return state_->param_conversions; }

CUstream_st* CudaBackend::stream() const { return state_->stream; }

void CudaBackend::synchronize() {
  check(cudaStreamSynchronize(state_->stream), "cudaStreamSynchronize");
}

float* CudaBackend::scratch(int slot, int64_t count) {
  if (slot < 0 || slot >= static_cast<int>(state_->scratch.size()) || count < 0) {
    invalid_argument("scratch: slot ", slot, " count ", count, " out of range");
  }
  return state_->scratch[slot].get<float>(count, state_->stream);
}

void CudaBackend::gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                       const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                       float* c, int64_t ldc, ParamOperand param, GemmPrecision precision) {
  detail::check_gemm_args("gemm (cuda)", trans_a, trans_b, m, n, k, lda, ldb, ldc, INT_MAX);
  if (m == 0 || n == 0) return;
  State& s = *state_;
  require_device(c, "gemm", "c");
  if (k == 0) {
    check(cuda::scale_by_beta(m, n, beta, c, ldc, s.stream), "scale_by_beta");
    return;
  }
  require_device(a, "gemm", "a");
  require_device(b, "gemm", "b");
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: the row-major matrices read
  // as column-major are their transposes, so cuBLAS gets B first, then A, with m and n swapped.
  const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const bool bf16 = compute_ == ComputePrecision::bf16 && precision == GemmPrecision::compute;
  if (!bf16) {
    check(cublasGemmEx(s.cublas, op_b, op_a, static_cast<int>(n), static_cast<int>(m),
                       static_cast<int>(k), &alpha, b, CUDA_R_32F, static_cast<int>(ldb), a,
                       CUDA_R_32F, static_cast<int>(lda), &beta, c, CUDA_R_32F,
                       static_cast<int>(ldc), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
          "cublasGemmEx (fp32)");
    return;
  }
  // bf16 inputs, compact copies in the stored orientation (a parameter's kept until
  // parameters_changed()); fp32 accumulation and output.
  const int64_t a_rows = trans_a ? k : m, a_cols = trans_a ? m : k;
  const int64_t b_rows = trans_b ? n : k, b_cols = trans_b ? k : n;
  const uint16_t* a16 = param == ParamOperand::a ? s.param_bf16(a, a_rows, a_cols, lda)
                                                 : s.convert(a, a_rows, a_cols, lda, s.a_bf16);
  const uint16_t* b16 = param == ParamOperand::b ? s.param_bf16(b, b_rows, b_cols, ldb)
                                                 : s.convert(b, b_rows, b_cols, ldb, s.b_bf16);
  check(cublasGemmEx(s.cublas, op_b, op_a, static_cast<int>(n), static_cast<int>(m),
                     static_cast<int>(k), &alpha, b16, CUDA_R_16BF, static_cast<int>(b_cols), a16,
                     CUDA_R_16BF, static_cast<int>(a_cols), &beta, c, CUDA_R_32F,
                     static_cast<int>(ldc), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
        "cublasGemmEx (bf16 inputs, fp32 accumulation)");
}

// SwiGLU: the sequence of kernels/cpu/swiglu.cpp, with the activations as CUDA kernels.

void CudaBackend::swiglu_forward(const SwigluWeights<float>& w, const float* x, int64_t n,
                                 float* gate_pre, float* up_pre, float* y) {
  check_swiglu_shape("swiglu_forward", w, n);
  if (n == 0) return;
  const int64_t h = w.hidden;
  const int64_t in = w.inter;
  const auto param_b = ParamOperand::b;
  gemm(false, true, n, in, h, 1.f, x, h, w.gate_proj, h, 0.f, gate_pre, in, param_b);
  gemm(false, true, n, in, h, 1.f, x, h, w.up_proj, h, 0.f, up_pre, in, param_b);
  float* act = scratch(0, n * in);
  check(cuda::swiglu_activation(gate_pre, up_pre, n * in, act, state_->stream),
        "swiglu_activation");
  gemm(false, true, n, h, in, 1.f, act, in, w.down_proj, in, 0.f, y, h, param_b);
}

void CudaBackend::swiglu_backward_data(const SwigluWeights<float>& w, int64_t n,
                                       const float* gate_pre, const float* up_pre,
                                       const float* grad_y, float* grad_x, float* grad_gate_pre,
                                       float* grad_up_pre) {
  check_swiglu_shape("swiglu_backward_data", w, n);
  if (n == 0) return;
  const int64_t h = w.hidden;
  const int64_t in = w.inter;
  const auto param_b = ParamOperand::b;
  require_device(gate_pre, "swiglu_backward_data", "gate_pre");
  require_device(up_pre, "swiglu_backward_data", "up_pre");
  // grad_gate_pre first holds the activation's gradient, then is overwritten in place.
  gemm(false, false, n, in, h, 1.f, grad_y, h, w.down_proj, in, 0.f, grad_gate_pre, in, param_b);
  require_device(grad_up_pre, "swiglu_backward_data", "grad_up_pre");
  check(cuda::swiglu_activation_backward(gate_pre, up_pre, n * in, grad_gate_pre, grad_up_pre,
                                         state_->stream),
        "swiglu_activation_backward");
  gemm(false, false, n, h, in, 1.f, grad_gate_pre, in, w.gate_proj, h, 0.f, grad_x, h, param_b);
  gemm(false, false, n, h, in, 1.f, grad_up_pre, in, w.up_proj, h, 1.f, grad_x, h, param_b);
}

void CudaBackend::swiglu_backward_weights(const SwigluWeights<float>& w, const float* x, int64_t n,
                                          const float* gate_pre, const float* up_pre,
                                          const float* grad_y, const float* grad_gate_pre,
                                          const float* grad_up_pre,
                                          const SwigluGrads<float>& grads) {
  check_swiglu_shape("swiglu_backward_weights", w, n);
  const int64_t h = w.hidden;
  const int64_t in = w.inter;
  if (n == 0) {  // no tokens: the weight gradients gain nothing (are nothing, when written)
    if (grads.overwrite) {
      for (float* g : {grads.gate_proj, grads.up_proj, grads.down_proj}) {
        require_device(g, "swiglu_backward_weights", "grads");
        check(cudaMemsetAsync(g, 0, static_cast<size_t>(in * h) * sizeof(float), state_->stream),
              "cudaMemsetAsync");
      }
    }
    return;
  }
  require_device(gate_pre, "swiglu_backward_weights", "gate_pre");
  require_device(up_pre, "swiglu_backward_weights", "up_pre");
  float* act = scratch(0, n * in);
  check(cuda::swiglu_activation(gate_pre, up_pre, n * in, act, state_->stream),
        "swiglu_activation");
  const float beta = grads.overwrite ? 0.f : 1.f;
  gemm(true, false, h, in, n, 1.f, grad_y, h, act, in, beta, grads.down_proj, in);
  gemm(true, false, in, h, n, 1.f, grad_gate_pre, in, x, h, beta, grads.gate_proj, h);
  gemm(true, false, in, h, n, 1.f, grad_up_pre, in, x, h, beta, grads.up_proj, h);
}

void CudaBackend::swiglu_backward(const SwigluWeights<float>& w, const float* x, int64_t n,
                                  const float* gate_pre, const float* up_pre, const float* grad_y,
                                  float* grad_x, const SwigluGrads<float>& grads) {
  check_swiglu_shape("swiglu_backward", w, n);
  if (n == 0) {  // no tokens: grad_x is empty and the weight gradients gain nothing
    swiglu_backward_weights(w, x, n, gate_pre, up_pre, grad_y, nullptr, nullptr, grads);
    return;
  }
  float* grad_gate_pre = scratch(1, n * w.inter);
  float* grad_up_pre = scratch(2, n * w.inter);
  swiglu_backward_data(w, n, gate_pre, up_pre, grad_y, grad_x, grad_gate_pre, grad_up_pre);
  swiglu_backward_weights(w, x, n, gate_pre, up_pre, grad_y, grad_gate_pre, grad_up_pre, grads);
}

// Router.

void CudaBackend::compute_scores(const float* logits, int64_t tokens, int experts, ScoreFunc func,
                                 float* scores) {
  check_router_shape("compute_scores", tokens, experts);
  if (tokens == 0) return;
  require_device(logits, "compute_scores", "logits");
  require_device(scores, "compute_scores", "scores");
  check(cuda::compute_scores(logits, tokens, experts, func == ScoreFunc::sigmoid, scores,
                             state_->stream),
        "compute_scores");
}

void CudaBackend::select_experts(const float* scores, const float* bias, int64_t tokens,
                                 int experts, const RouterOptions& opts, int32_t* idx) {
  check_router_shape("select_experts", tokens, experts);
  check_top_k("select_experts", experts, opts);
  check_groups(experts, opts);
  const int max_experts = cuda::select_experts_max_experts(opts.n_group);
  if (experts > max_experts) {
    invalid_argument("select_experts (cuda): experts = ", experts, " exceeds the ", max_experts,
                     " this kernel keeps in shared memory");
  }
  if (tokens == 0) return;
  require_device(scores, "select_experts", "scores");
  if (bias != nullptr) require_device(bias, "select_experts", "bias");
  require_device(idx, "select_experts", "idx");
  check(cuda::select_experts(scores, bias, tokens, experts, opts.top_k, opts.n_group,
                             opts.topk_group, opts.group_score == GroupScore::max, idx,
                             state_->stream),
        "select_experts");
}

void CudaBackend::routing_weights(const float* scores, const int32_t* idx, int64_t tokens,
                                  int experts, const RouterOptions& opts, float* weights) {
  check_router_shape("routing_weights", tokens, experts);
  check_top_k("routing_weights", experts, opts);
  if (tokens == 0) return;
  require_device(scores, "routing_weights", "scores");
  require_device(idx, "routing_weights", "idx");
  require_device(weights, "routing_weights", "weights");
  state_->check_idx("routing_weights", idx, tokens, experts, opts.top_k);
  check(cuda::routing_weights(scores, idx, tokens, experts, opts.top_k, opts.norm_topk_prob,
                              static_cast<float>(opts.routed_scaling_factor), weights,
                              state_->stream),
        "routing_weights");
}

void CudaBackend::accumulate_router_stats(const float* logits, const float* scores,
                                          const int32_t* idx, int64_t tokens, int experts,
                                          int top_k, RouterStats& stats) {
  const char* fn = "accumulate_router_stats";
  if (tokens < 0) invalid_argument(fn, ": tokens = ", tokens, " must be >= 0");
  if (experts != stats.experts()) {
    invalid_argument(fn, ": experts = ", experts,
                     " differs from stats.experts() = ", stats.experts());
  }
  if (top_k < 1 || top_k > experts) {
    invalid_argument(fn, ": top_k = ", top_k, " must be in [1, experts = ", experts, "]");
  }
  if (tokens == 0) return;
  if ((tokens + 255) / 256 > 65535) {
    invalid_argument(fn, " (cuda): tokens = ", tokens, " exceeds ", int64_t{65535} * 256,
                     " per call");
  }
  require_device(logits, fn, "logits");
  require_device(scores, fn, "scores");
  require_device(idx, fn, "idx");
  State& s = *state_;
  // Checked up front so that a bad id leaves stats as they were.
  s.check_idx(fn, idx, tokens, experts, top_k);
  double* out = s.stats_out.get<double>(2 * experts + 1, s.stream);
  check(cuda::router_stats(logits, scores, idx, tokens, experts, top_k, out,
                           s.stats_work.get<double>(cuda::router_stats_work(tokens, experts),
                                                    s.stream),
                           s.stats_counts.get<unsigned long long>(experts, s.stream), s.stream),
        "router_stats");
  std::vector<double> host(2 * static_cast<size_t>(experts) + 1);
  check(cudaMemcpyAsync(host.data(), out, sizeof(double) * host.size(), cudaMemcpyDeviceToHost,
                        s.stream),
        "cudaMemcpyAsync");
  check(cudaStreamSynchronize(s.stream), "cudaStreamSynchronize");
  for (int e = 0; e < experts; ++e) {
    stats.counts()[e] += host[e];
    stats.score_sums()[e] += host[experts + e];
  }
  stats.logsumexp_sq_sum() += host[2 * static_cast<size_t>(experts)];
  stats.tokens() += static_cast<double>(tokens);
}

void CudaBackend::routing_weights_backward(const float* scores, const int32_t* idx,
                                           const float* grad_weights, int64_t tokens, int experts,
                                           const RouterOptions& opts, float* grad_scores) {
  const char* fn = "routing_weights_backward";
  check_router_shape(fn, tokens, experts);
  check_top_k(fn, experts, opts);
  if (tokens == 0) return;
  require_device(scores, fn, "scores");
  require_device(idx, fn, "idx");
  require_device(grad_weights, fn, "grad_weights");
  require_device(grad_scores, fn, "grad_scores");
  state_->check_idx(fn, idx, tokens, experts, opts.top_k);
  check(cuda::routing_weights_backward(scores, idx, grad_weights, tokens, experts, opts.top_k,
                                       opts.norm_topk_prob,
                                       static_cast<float>(opts.routed_scaling_factor),
                                       grad_scores, state_->stream),
        fn);
}

void CudaBackend::add_balance_grad(const double* coef, int64_t tokens, int experts,
                                   float* grad_scores) {
  if (tokens <= 0 || experts <= 0) return;
  require_device(coef, "add_balance_grad", "coef");
  require_device(grad_scores, "add_balance_grad", "grad_scores");
  check(cuda::add_balance_grad(coef, tokens, experts, grad_scores, state_->stream),
        "add_balance_grad");
}

void CudaBackend::scores_backward(const float* scores, const float* grad_scores, int64_t tokens,
                                  int experts, ScoreFunc func, float* grad_logits) {
  check_router_shape("scores_backward", tokens, experts);
  if (tokens == 0) return;
  require_device(scores, "scores_backward", "scores");
  require_device(grad_scores, "scores_backward", "grad_scores");
  require_device(grad_logits, "scores_backward", "grad_logits");
  check(cuda::scores_backward(scores, grad_scores, tokens, experts, func == ScoreFunc::sigmoid,
                              grad_logits, state_->stream),
        "scores_backward");
}

void CudaBackend::z_loss_backward(const float* logits, int64_t tokens, int experts, double alpha_z,
                                  double global_tokens, float* grad_logits) {
  if (experts < 1) invalid_argument("z_loss_backward: experts = ", experts, " < 1");
  if (tokens == 0) return;
  if (global_tokens < static_cast<double>(tokens)) {
    invalid_argument("z_loss_backward: global_tokens = ", global_tokens,
                     " is fewer than this rank's tokens = ", tokens);
  }
  require_device(logits, "z_loss_backward", "logits");
  require_device(grad_logits, "z_loss_backward", "grad_logits");
  check(cuda::z_loss_backward(logits, tokens, experts, alpha_z / global_tokens, grad_logits,
                              state_->stream),
        "z_loss_backward");
}

// Rows.

void CudaBackend::permute_rows(const float* src, int64_t cols, const int64_t* rows, int64_t n,
                               float* dst) {
  if (n <= 0 || cols <= 0) return;
  require_device(src, "permute_rows", "src");
  require_device(rows, "permute_rows", "rows");
  require_device(dst, "permute_rows", "dst");
  check(cuda::permute_rows(src, cols, rows, n, dst, state_->stream), "permute_rows");
}

void CudaBackend::unpermute_rows(const float* src, int64_t cols, const int64_t* rows,
                                 const float* scale, int64_t n, float* dst) {
  if (n <= 0 || cols <= 0) return;
  require_device(src, "unpermute_rows", "src");
  require_device(rows, "unpermute_rows", "rows");
  if (scale != nullptr) require_device(scale, "unpermute_rows", "scale");
  require_device(dst, "unpermute_rows", "dst");
  State& s = *state_;
  const auto [sorted, order] = s.group_rows(rows, n);
  check(cuda::unpermute_grouped(src, cols, sorted, order, scale, n, dst, s.stream),
        "unpermute_rows");
}

void CudaBackend::gathered_row_dots(const float* a, const float* b, int64_t cols,
                                    const int64_t* rows, int64_t n, float* out) {
  if (n <= 0) return;
  require_device(a, "gathered_row_dots", "a");
  require_device(b, "gathered_row_dots", "b");
  require_device(rows, "gathered_row_dots", "rows");
  require_device(out, "gathered_row_dots", "out");
  check(cuda::gathered_row_dots(a, b, cols, rows, n, out, state_->stream), "gathered_row_dots");
}

void CudaBackend::add(float* dst, const float* src, int64_t n) {
  if (n <= 0) return;
  require_device(dst, "add", "dst");
  require_device(src, "add", "src");
  check(cuda::add(dst, src, n, state_->stream), "add");
}

void CudaBackend::scale_rows(float* x, int64_t n, int64_t cols, const float* scale) {
  if (n <= 0 || cols <= 0) return;
  require_device(x, "scale_rows", "x");
  require_device(scale, "scale_rows", "scale");
  check(cuda::scale_rows(x, n, cols, scale, state_->stream), "scale_rows");
}

void CudaBackend::pack_backward_rows(const float* grad_x, int64_t n, int64_t hidden,
                                     const int64_t* rows, const int32_t* slots,
                                     const float* grad_weight, int top_k, int64_t num_rows,
                                     float* back_rows) {
  const char* fn = "pack_backward_rows";
  State& s = *state_;
  const int64_t width = hidden + top_k;
  if (num_rows * width > 0) require_device(back_rows, fn, "back_rows");
  if (n > 0) {
    require_device(grad_x, fn, "grad_x");
    require_device(rows, fn, "rows");
    require_device(slots, fn, "slots");
    require_device(grad_weight, fn, "grad_weight");
    // Every pair checked before anything is written (the CPU loop zeroes back_rows first).
    auto* bad = s.first_bad.get<unsigned long long>(1, s.stream);
    check(cuda::init_first_bad(bad, n, s.stream), "init_first_bad");
    check(cuda::find_index_out_of_range(rows, n, num_rows, bad, s.stream), "check rows");
    check(cuda::find_index_out_of_range(slots, n, top_k, bad, s.stream), "check slots");
    check(cudaMemcpyAsync(s.first_bad_host, bad, sizeof *bad, cudaMemcpyDeviceToHost, s.stream),
          "cudaMemcpyAsync");
    check(cudaStreamSynchronize(s.stream), "cudaStreamSynchronize");
    const auto j = static_cast<int64_t>(*s.first_bad_host);
    if (j < n) {
      invalid_argument(fn, ": pair ", j, " names row ", s.value_at(rows, j), " slot ",
                       s.value_at(slots, j), " outside [0, ", num_rows, ") x [0, ", top_k, ")");
    }
  }
  if (num_rows * width > 0) {
    check(cudaMemsetAsync(back_rows, 0, sizeof(float) * static_cast<size_t>(num_rows * width),
                          s.stream),
          "cudaMemsetAsync");
  }
  if (n <= 0) return;
  const auto [sorted, order] = s.group_rows(rows, n);
  check(cuda::pack_grouped(grad_x, hidden, sorted, order, slots, grad_weight, top_k, n, back_rows,
                           s.stream),
        fn);
}

void CudaBackend::unpack_backward_rows(const float* back_rows, int64_t tokens, int64_t hidden,
                                       int top_k, float* grad_x, float* grad_weights) {
  if (tokens <= 0) return;
  require_device(back_rows, "unpack_backward_rows", "back_rows");
  require_device(grad_x, "unpack_backward_rows", "grad_x");
  require_device(grad_weights, "unpack_backward_rows", "grad_weights");
  check(cuda::unpack_backward_rows(back_rows, tokens, hidden, top_k, grad_x, grad_weights,
                                   state_->stream),
        "unpack_backward_rows");
}

std::unique_ptr<Backend<float>> make_cuda_backend(ComputePrecision compute) {
  return std::make_unique<CudaBackend>(compute);
}

}  // namespace switchyard::kernels
