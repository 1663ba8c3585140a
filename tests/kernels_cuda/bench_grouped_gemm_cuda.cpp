// bench_grouped_gemm_cuda: how to run the routed experts' GEMMs of one GPU on cuBLAS — one
// cublasGemmEx per expert on one stream (what kernels/cuda does today), the same spread over
// several streams, or one cublasGemmGroupedBatchedEx for all experts — at DeepSeek-V3's expert
// shape (hidden 7168, intermediate 2048: gate and up as one [2I, H] weight, then down), bf16
// inputs with fp32 accumulation, fp32 output (what kernels/cuda writes) and bf16 output (what the
// grouped call takes with bf16 inputs), skewed token counts per expert. Baselines measured in the
// same run: one dense GEMM over all rows (every expert's rows through one weight: the grouped
// problem's cost without its raggedness) and a square 8192^3 bf16 GEMM (the GPU's dense rate here).
// Each variant's output is compared with the one-stream loop's (norm-wise relative difference) after
// poisoning it. Prints figures, asserts nothing about time.
// Usage: bench_grouped_gemm_cuda [experts (default 64)] [rows (default 8192)] [streams (4)]
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace {

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    std::fprintf(stderr, "bench_grouped_gemm_cuda: %s: %s\n", what, cudaGetErrorString(err));
    std::exit(1);
  }
}

void check(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "bench_grouped_gemm_cuda: %s: %s\n", what, cublasGetStatusString(status));
    std::exit(1);
  }
}

template <typename T>
T* device_alloc(size_t count) {
  T* p = nullptr;
  check(cudaMalloc(reinterpret_cast<void**>(&p), count * sizeof(T)), "cudaMalloc");
  return p;
}

// Random bf16 values in [-1, 1): never time on constants (they can run faster). Drawn once into a
// pool; each buffer copies the pool from its own random start (drawing gigabytes of weights one
// value at a time would take minutes).
__nv_bfloat16* random_bf16(size_t count, std::mt19937& rng) {
  static const std::vector<__nv_bfloat16> pool = [&rng] {
    std::uniform_real_distribution<float> uniform(-1.f, 1.f);
    std::vector<__nv_bfloat16> values(size_t(1) << 22);
    for (auto& v : values) v = __float2bfloat16(uniform(rng));
    return values;
  }();
  auto* p = device_alloc<__nv_bfloat16>(count);
  size_t at = rng() % pool.size();
  for (size_t done = 0; done < count;) {
    const size_t n = std::min(count - done, pool.size() - at);
    check(cudaMemcpy(p + done, pool.data() + at, n * sizeof(__nv_bfloat16), cudaMemcpyHostToDevice),
          "cudaMemcpy");
    done += n;
    at = 0;
  }
  return p;
}

// Rows per expert: a Zipf-like skew (expert e gets weight 1/(1 + e/8)), summing to rows, a few
// experts empty at the tail when rows is small.
std::vector<int> skewed_rows(int experts, int rows) {
  std::vector<double> weight(experts);
  double total = 0;
  for (int e = 0; e < experts; ++e) total += weight[e] = 1.0 / (1.0 + e / 8.0);
  std::vector<int> counts(experts);
  int given = 0;
  for (int e = 0; e < experts; ++e) given += counts[e] = static_cast<int>(rows * weight[e] / total);
  counts[0] += rows - given;
  return counts;
}

// One GEMM problem set: Y_e[rows_e, n] = X_e[rows_e, k] W_e^T (W_e: [n, k] row-major), in
// row-major terms; cuBLAS (column-major) computes Y_e^T = W_e X_e^T with W_e as op(A) = A^T.
struct Problem {
  const char* what;
  int n, k;
};


double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median milliseconds of fn over reps timed runs (3 warm-ups), with events on stream 0 after a
// device-wide join (fn joins its own side streams back into stream 0).
double time_ms(cudaStream_t stream, int reps, const std::function<void()>& fn) {
  for (int i = 0; i < 3; ++i) fn();
  check(cudaDeviceSynchronize(), "warm-up");
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  std::vector<double> ms;
  for (int r = 0; r < reps; ++r) {
    check(cudaEventRecord(start, stream), "cudaEventRecord");
    fn();
    check(cudaEventRecord(stop, stream), "cudaEventRecord");
    check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float t = 0;
    check(cudaEventElapsedTime(&t, start, stop), "cudaEventElapsedTime");
    ms.push_back(t);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return median(ms);
}

std::vector<float> to_host(const void* y, cudaDataType_t type, size_t count) {
  std::vector<float> out(count);
  if (type == CUDA_R_32F) {
    check(cudaMemcpy(out.data(), y, count * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy");
  } else {
    std::vector<__nv_bfloat16> raw(count);
    check(cudaMemcpy(raw.data(), y, count * sizeof(__nv_bfloat16), cudaMemcpyDeviceToHost),
          "cudaMemcpy");
    for (size_t i = 0; i < count; ++i) out[i] = __bfloat162float(raw[i]);
  }
  return out;
}

double relative_difference(const void* a, const void* b, cudaDataType_t type, size_t count) {
  const std::vector<float> ha = to_host(a, type, count), hb = to_host(b, type, count);
  double diff = 0, norm = 0;
  for (size_t i = 0; i < count; ++i) {
    if (!std::isfinite(ha[i]) || !std::isfinite(hb[i])) return INFINITY;
    diff += (double(ha[i]) - hb[i]) * (double(ha[i]) - hb[i]);
    norm += double(hb[i]) * hb[i];
  }
  return std::sqrt(diff / std::max(norm, 1e-300));
}

size_t element_size(cudaDataType_t type) {
  return type == CUDA_R_32F ? sizeof(float) : sizeof(__nv_bfloat16);
}

}  // namespace

int main(int argc, char** argv) {
  const int experts = argc > 1 ? std::atoi(argv[1]) : 64;
  const int rows = argc > 2 ? std::atoi(argv[2]) : 8192;
  const int n_streams = argc > 3 ? std::atoi(argv[3]) : 4;
  const int reps = 20;
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // lines survive a timeout's kill
  int devices = 0;
  const cudaError_t err = cudaGetDeviceCount(&devices);
  if (err != cudaSuccess || devices == 0) {
    std::printf("bench_grouped_gemm_cuda: skipped: no CUDA device: %s\n",
                err != cudaSuccess ? cudaGetErrorString(err) : "cudaGetDeviceCount found none");
    return 0;
  }
  if (experts < 1 || rows < experts || n_streams < 1) {
    std::fprintf(stderr, "bench_grouped_gemm_cuda: need experts >= 1, rows >= experts, streams >= 1\n");
    return 2;
  }
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  const std::vector<int> counts = skewed_rows(experts, rows);
  std::printf("bench_grouped_gemm_cuda: %s, %d experts, %d rows (largest expert %d, smallest %d), "
              "bf16 inputs, fp32 accumulation and output, median of %d\n",
              prop.name, experts, rows, counts.front(), counts.back(), reps);

  std::mt19937 rng(20261204);
  const int hidden = 7168, inter = 2048;
  const Problem problems[] = {{"gate+up [2I,H]", 2 * inter, hidden}, {"down [H,I]", hidden, inter}};

  std::vector<cudaStream_t> streams(n_streams);
  std::vector<cublasHandle_t> handles(n_streams);
  std::vector<cudaEvent_t> joins(n_streams);
  for (int s = 0; s < n_streams; ++s) {
    check(cudaStreamCreateWithFlags(&streams[s], cudaStreamNonBlocking), "cudaStreamCreate");
    check(cublasCreate(&handles[s]), "cublasCreate");
    check(cublasSetStream(handles[s], streams[s]), "cublasSetStream");
    check(cudaEventCreateWithFlags(&joins[s], cudaEventDisableTiming), "cudaEventCreate");
  }
  const float one = 1.f, zero = 0.f;

  // The square GEMM: the GPU's dense bf16 rate in this run.
  {
    const int sq = 8192;
    __nv_bfloat16* a = random_bf16(size_t(sq) * sq, rng);
    __nv_bfloat16* b = random_bf16(size_t(sq) * sq, rng);
    float* c = device_alloc<float>(size_t(sq) * sq);
    const double ms = time_ms(streams[0], reps, [&] {
      check(cublasGemmEx(handles[0], CUBLAS_OP_T, CUBLAS_OP_N, sq, sq, sq, &one, a, CUDA_R_16BF,
                         sq, b, CUDA_R_16BF, sq, &zero, c, CUDA_R_32F, sq, CUBLAS_COMPUTE_32F,
                         CUBLAS_GEMM_DEFAULT),
            "cublasGemmEx (square)");
    });
    std::printf("  square %d^3 bf16 -> fp32: %.3f ms, %.0f TFLOP/s (the dense rate below)\n", sq,
                ms, 2.0 * sq * sq * sq / ms / 1e9);
    cudaFree(a);
    cudaFree(b);
    cudaFree(c);
  }
  std::printf("  %-15s %-8s %-28s %9s %10s %9s %s\n", "weights", "output", "variant", "ms",
              "TFLOP/s", "vs loop", "difference from the loop");
  for (const Problem& p : problems) {
    __nv_bfloat16* x = random_bf16(size_t(rows) * p.k, rng);
    std::vector<__nv_bfloat16*> w;
    for (int e = 0; e < experts; ++e) w.push_back(random_bf16(size_t(p.n) * p.k, rng));
    char* y = device_alloc<char>(size_t(rows) * p.n * sizeof(float));
    char* reference = device_alloc<char>(size_t(rows) * p.n * sizeof(float));
    const double flops = 2.0 * rows * p.n * p.k;
    // fp32 output is what kernels/cuda writes; bf16 output is what the grouped call accepts with
    // bf16 inputs (cuBLAS 13 refuses bf16 inputs with fp32 output there).
    for (const cudaDataType_t out_type : {CUDA_R_32F, CUDA_R_16BF}) {
      const char* out_name = out_type == CUDA_R_32F ? "fp32 out" : "bf16 out";
      const size_t out_size = element_size(out_type);
      auto row_of = [&](char* base, int row) { return base + size_t(row) * p.n * out_size; };

      // Per-expert GEMMs, expert e on stream e % used (used = 1: the loop kernels/cuda runs).
      auto per_expert = [&](int used, char* out) {
        if (used > 1) check(cudaEventRecord(joins[0], streams[0]), "cudaEventRecord");
        for (int s = 1; s < used; ++s) {
          check(cudaStreamWaitEvent(streams[s], joins[0]), "cudaStreamWaitEvent");
        }
        int begin = 0;
        for (int e = 0; e < experts; ++e) {
          const int s = e % used;
          if (counts[e] > 0) {
            check(cublasGemmEx(handles[s], CUBLAS_OP_T, CUBLAS_OP_N, p.n, counts[e], p.k, &one,
                               w[e], CUDA_R_16BF, p.k, x + size_t(begin) * p.k, CUDA_R_16BF, p.k,
                               &zero, row_of(out, begin), out_type, p.n, CUBLAS_COMPUTE_32F,
                               CUBLAS_GEMM_DEFAULT),
                  "cublasGemmEx (expert)");
          }
          begin += counts[e];
        }
        for (int s = 1; s < used; ++s) {
          check(cudaEventRecord(joins[s], streams[s]), "cudaEventRecord");
          check(cudaStreamWaitEvent(streams[0], joins[s]), "cudaStreamWaitEvent");
        }
      };
      const double loop_ms = time_ms(streams[0], reps, [&] { per_expert(1, reference); });
      auto report = [&](const std::string& variant, double ms, const char* out) {
        const std::string diff =
            out == nullptr ? std::string("-")
                           : std::to_string(relative_difference(out, reference, out_type,
                                                                size_t(rows) * p.n));
        std::printf("  %-15s %-8s %-28s %9.3f %10.0f %8.2fx %s\n", p.what, out_name,
                    variant.c_str(), ms, flops / ms / 1e9, loop_ms / ms, diff.c_str());
      };
      report("per expert, 1 stream", loop_ms, nullptr);
      if (n_streams > 1) {
        check(cudaMemset(y, 0xff, size_t(rows) * p.n * out_size), "poison");
        const double ms = time_ms(streams[0], reps, [&] { per_expert(n_streams, y); });
        report("per expert, " + std::to_string(n_streams) + " streams", ms, y);
      }

      // One grouped call: a group per non-empty expert (group_size 1), device pointer arrays.
      std::vector<cublasOperation_t> ta, tb;
      std::vector<int> m, n, k, lda, ldb, ldc, sizes;
      std::vector<float> alpha, beta;
      std::vector<const void*> a_ptr, b_ptr;
      std::vector<void*> c_ptr;
      int begin = 0;
      for (int e = 0; e < experts; ++e) {
        if (counts[e] > 0) {
          ta.push_back(CUBLAS_OP_T);
          tb.push_back(CUBLAS_OP_N);
          m.push_back(p.n);
          n.push_back(counts[e]);
          k.push_back(p.k);
          lda.push_back(p.k);
          ldb.push_back(p.k);
          ldc.push_back(p.n);
          alpha.push_back(1.f);
          beta.push_back(0.f);
          sizes.push_back(1);
          a_ptr.push_back(w[e]);
          b_ptr.push_back(x + size_t(begin) * p.k);
          c_ptr.push_back(row_of(y, begin));
        }
        begin += counts[e];
      }
      const int groups = static_cast<int>(sizes.size());
      auto* d_a = device_alloc<const void*>(groups);
      auto* d_b = device_alloc<const void*>(groups);
      auto* d_c = device_alloc<void*>(groups);
      check(cudaMemcpy(d_a, a_ptr.data(), groups * sizeof(void*), cudaMemcpyHostToDevice), "a");
      check(cudaMemcpy(d_b, b_ptr.data(), groups * sizeof(void*), cudaMemcpyHostToDevice), "b");
      check(cudaMemcpy(d_c, c_ptr.data(), groups * sizeof(void*), cudaMemcpyHostToDevice), "c");
      check(cudaMemset(y, 0xff, size_t(rows) * p.n * out_size), "poison");
      auto grouped = [&] {
        return cublasGemmGroupedBatchedEx(
            handles[0], ta.data(), tb.data(), m.data(), n.data(), k.data(), alpha.data(), d_a,
            CUDA_R_16BF, lda.data(), d_b, CUDA_R_16BF, ldb.data(), beta.data(), d_c, out_type,
            ldc.data(), groups, sizes.data(), CUBLAS_COMPUTE_32F);
      };
      const cublasStatus_t first = grouped();
      if (first != CUBLAS_STATUS_SUCCESS) {
        std::printf("  %-15s %-8s %-28s refused: %s\n", p.what, out_name, "grouped batched",
                    cublasGetStatusString(first));
      } else {
        const double ms =
            time_ms(streams[0], reps, [&] { check(grouped(), "cublasGemmGroupedBatchedEx"); });
        report("grouped batched, 1 call", ms, y);
      }
      cudaFree(d_a);
      cudaFree(d_b);
      cudaFree(d_c);

      // All rows through one weight: the same FLOPs without the raggedness.
      const double dense_ms = time_ms(streams[0], reps, [&] {
        check(cublasGemmEx(handles[0], CUBLAS_OP_T, CUBLAS_OP_N, p.n, rows, p.k, &one, w[0],
                           CUDA_R_16BF, p.k, x, CUDA_R_16BF, p.k, &zero, y, out_type, p.n,
                           CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
              "cublasGemmEx (dense)");
      });
      report("one dense GEMM (baseline)", dense_ms, nullptr);
    }
    cudaFree(x);
    for (auto* we : w) cudaFree(we);
    cudaFree(y);
    cudaFree(reference);
  }
  for (int s = 0; s < n_streams; ++s) {
    cublasDestroy(handles[s]);
    cudaStreamDestroy(streams[s]);
    cudaEventDestroy(joins[s]);
  }
  return 0;
}
