#include "kernels/onednn/onednn_backend.h"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <sstream>
#include <unordered_map>
#include <vector>

#include <dnnl.hpp>

#include "kernels/blas.h"
#include "kernels/argument_checks.h"
#include "kernels/cpu/gemm_args.h"
#include "kernels/cpu/openblas_core.h"
#include "kernels/environment.h"

namespace switchyard::kernels {

namespace {

using dnnl::memory;
using dt = memory::data_type;

// One GEMM's shape as the cache keys it: everything a primitive depends on. alpha and beta are
// compared bitwise (the layer uses 1 and 0/1).
struct GemmKey {
  int64_t m, n, k, lda, ldb, ldc;
  bool trans_a, trans_b;
  uint32_t alpha_bits, beta_bits;
  bool bf16;
  bool operator==(const GemmKey&) const = default;
};

// A conversion: op(X) of a stored row-major matrix into a row-major one of leading dimension
// dst_ld, overwriting it (beta 0) or added to beta times it.
struct MatrixKey {
  int64_t rows, cols, ld, dst_ld;
  bool trans, to_bf16;
  uint32_t beta_bits;
  bool operator==(const MatrixKey&) const = default;
};

// FNV-1a over the keys' fields (not their bytes: padding holds anything).
struct KeyHash {
  static size_t mix(size_t h, int64_t v) {
    for (int i = 0; i < 8; ++i)
      h = (h ^ ((static_cast<uint64_t>(v) >> (8 * i)) & 0xff)) * 1099511628211ull;
    return h;
  }
  size_t operator()(const GemmKey& k) const {
    size_t h = 1469598103934665603ull;
    for (int64_t v : {k.m, k.n, k.k, k.lda, k.ldb, k.ldc, int64_t{k.trans_a}, int64_t{k.trans_b},
                      int64_t{k.alpha_bits}, int64_t{k.beta_bits}, int64_t{k.bf16}}) {
      h = mix(h, v);
    }
    return h;
  }
  size_t operator()(const MatrixKey& k) const {
    size_t h = 1469598103934665603ull;
    for (int64_t v : {k.rows, k.cols, k.ld, k.dst_ld, int64_t{k.trans}, int64_t{k.to_bf16},
                      int64_t{k.beta_bits}}) {
      h = mix(h, v);
    }
    return h;
  }
};

// With bf16 compute, weight gradients (transposed A) shallower than this go to OpenBLAS in fp32.
constexpr int64_t kBf16WeightGradDepthForBlas = 48;

// The most rows a GEMM with a transposed parameter B may have to run as its transpose.
constexpr int64_t kTransposedProductRows = 128;

uint32_t bits_of(float v) {
  uint32_t b;
  std::memcpy(&b, &v, sizeof b);
  return b;
}

// op(X) of a stored row-major matrix as a oneDNN descriptor of dims {rows, cols}: strides (ld, 1),
// or (1, ld) when the stored matrix is the transpose.
memory::desc matrix_desc(int64_t rows, int64_t cols, int64_t ld, bool trans, dt type) {
  return memory::desc({rows, cols}, type, trans ? memory::dims{1, ld} : memory::dims{ld, 1});
}

}  // namespace

struct OneDnnBackend::State {
  struct Matmul {
    dnnl::matmul primitive;
    memory a, b, c, scratch;  // descriptors fixed, data handles set per call
  };
  struct Conversion {
    dnnl::reorder primitive;
    memory src, dst;
  };
  struct ParamCopy {
    std::vector<uint16_t> bf16;
    uint64_t generation = 0;
  };

  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  std::unordered_map<GemmKey, Matmul, KeyHash> matmuls;
  std::unordered_map<MatrixKey, Conversion, KeyHash> conversions;
  std::unordered_map<const float*, ParamCopy> params;
  uint64_t generation = 1;  // bumped by parameters_changed()
  uint64_t param_conversions = 0;
  std::vector<uint16_t> a_bf16, b_bf16;
  std::vector<float> a_f32;
  std::vector<float> product_t;  // C^T of a GEMM run transposed (OneDnnBackend::gemm)
  // The primitives' scratchpad, ours rather than oneDNN's (scratchpad_mode::user): oneDNN's own
  // is allocated per call and page-faults on every step. One buffer serves every primitive:
  // calls never overlap.
  std::vector<uint8_t> scratchpad;

  // op(src) [rows, cols], fp32 with leading dimension ld (stored transposed when trans) -> dst,
  // row-major [rows, cols] of type `to` with leading dimension dst_ld (compact by default):
  // dst = op(src) + beta * dst.
  void convert(const float* src, int64_t rows, int64_t cols, int64_t ld, bool trans, dt to,
               void* dst, int64_t dst_ld = 0, float beta = 0.f) {
    if (dst_ld == 0) dst_ld = cols;
    const MatrixKey key{rows, cols, ld, dst_ld, trans, to == dt::bf16, bits_of(beta)};
    auto it = conversions.find(key);
    if (it == conversions.end()) {
      const memory::desc from = matrix_desc(rows, cols, ld, trans, dt::f32);
      const memory::desc into = matrix_desc(rows, cols, dst_ld, false, to);
      memory src_mem(from, engine, DNNL_MEMORY_NONE), dst_mem(into, engine, DNNL_MEMORY_NONE);
      dnnl::primitive_attr attr;
      if (beta != 0.f) {
        dnnl::post_ops ops;
        ops.append_sum(beta);
        attr.set_post_ops(ops);
      }
      const dnnl::reorder::primitive_desc pd(engine, from, engine, into, attr);
      it = conversions.emplace(key, Conversion{dnnl::reorder(pd), src_mem, dst_mem}).first;
    }
    Conversion& c = it->second;
    c.src.set_data_handle(const_cast<float*>(src));
    c.dst.set_data_handle(dst);
    c.primitive.execute(stream, c.src, c.dst);
  }

  // The bf16 copy of a stored parameter [rows, cols] of this generation (made once per update;
  // kept in the stored layout, so that both orientations of a weight read one copy).
  const uint16_t* param_bf16(const float* src, int64_t rows, int64_t cols, int64_t ld) {
    const size_t count = static_cast<size_t>(rows * cols);
    ParamCopy& copy = params[src];
    if (copy.generation != generation || copy.bf16.size() != count) {
      copy.bf16.resize(count);
      convert(src, rows, cols, ld, false, dt::bf16, copy.bf16.data());
      copy.generation = generation;
      ++param_conversions;
    }
    return copy.bf16.data();
  }

  // op(src) [rows, cols] as a compact row-major copy in buffer, fp32 or bf16.
  template <typename Element>
  Element* compact(const float* src, int64_t rows, int64_t cols, int64_t ld, bool trans,
                   std::vector<Element>& buffer) {
    const size_t count = static_cast<size_t>(rows * cols);
    if (buffer.size() < count) buffer.resize(count);
    convert(src, rows, cols, ld, trans, sizeof(Element) == 2 ? dt::bf16 : dt::f32, buffer.data());
    return buffer.data();
  }
};

OneDnnBackend::OneDnnBackend(ComputePrecision compute)
    : compute_(compute), state_(std::make_unique<State>()) {
  // Only where OpenBLAS runs AVX-512 kernels: older ones lose to oneDNN (issue: Debian's 0.3.21
  // falls back to SSE3 on CPUs it does not know; kernels/cpu/openblas_core.h).
  const OpenBlasCoreCheck blas = check_openblas_core();
  weight_grads_by_blas_ = blas.core_level >= 3;
  blas_core_ = blas.core;
  // oneDNN threads with OpenMP: without OMP_NUM_THREADS it would take every core in each rank.
  // Follow OpenBLAS's setting (one thread per rank under the project's launchers).
  if (const std::optional<int> threads = environment::onednn_threads()) {
    omp_set_num_threads(*threads);
  }
}

OneDnnBackend::~OneDnnBackend() = default;

std::string OneDnnBackend::describe() const {
  std::ostringstream out;
  const auto isa = dnnl::get_effective_cpu_isa();
  const char* isa_name = isa == dnnl::cpu_isa::avx512_core_amx    ? "avx512_core_amx"
                         : isa == dnnl::cpu_isa::avx512_core_bf16 ? "avx512_core_bf16"
                         : isa == dnnl::cpu_isa::avx512_core_vnni ? "avx512_core_vnni"
                         : isa == dnnl::cpu_isa::avx512_core      ? "avx512_core"
                         : isa == dnnl::cpu_isa::avx2             ? "avx2"
                                                                  : "below avx2";
  const auto* v = dnnl::version();
  out << "onednn " << v->major << "." << v->minor << "." << v->patch << " ("
      << (compute_ == ComputePrecision::bf16 ? "bf16 compute, fp32 accumulation" : "fp32") << ", "
      << isa_name << ", " << omp_get_max_threads() << " thread"
      << (omp_get_max_threads() == 1 ? "" : "s");
  if (weight_grads_by_blas_) {
    out << "; weight gradients added through OpenBLAS " << blas_core_
        << (compute_ == ComputePrecision::bf16 ? " in fp32 below depth 48" : "");
  }
  out << ")";
  return out.str();
}

void OneDnnBackend::parameters_changed() { ++state_->generation; }

size_t OneDnnBackend::cached_primitives() const { return state_->matmuls.size(); }

uint64_t OneDnnBackend::param_conversions() const { return state_->param_conversions; }

void OneDnnBackend::gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                         const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                         float* c, int64_t ldc, ParamOperand param, GemmPrecision precision) {
  detail::check_gemm_args("gemm (onednn)", trans_a, trans_b, m, n, k, lda, ldb, ldc,
                          std::numeric_limits<int64_t>::max());
  if (m == 0 || n == 0) return;
  if (k == 0) {
    detail::scale_by_beta(m, n, beta, c, ldc);
    return;
  }
  State& s = *state_;
  const bool bf16 = compute_ == ComputePrecision::bf16 && precision == GemmPrecision::compute;
  // fp32 GEMMs of a transposed A are the weight gradients (x^T grad, accumulated into a
  // parameter-sized C over a depth of a few dozen tokens): OpenBLAS's AVX-512 kernels run them
  // faster than oneDNN's matmul on a compact copy (measured on one Zen 4 core, C cold, 1408 x 2048:
  // depth 24: 62 against 45 GFLOP/s; 96: 85 against 75; 384: 89 against 86). With bf16 compute
  // too while the depth is short: C's memory traffic bounds these, not the multiplications
  // (DeepSeekMoE-16B's routed backward on 1 / 2 / 4 ranks, depth 24 / 48 / 96: OpenBLAS fp32
  // 626 / 502 / 882 ms, oneDNN bf16 710 / 495 / 694); they are then fp32 products, not bf16.
  // A weight gradient written rather than added (beta 0: fresh gradient memory, C API 0.6) stays
  // with oneDNN: its matmul writes C without reading it, where OpenBLAS clears C in a pass of its
  // own first (`sy-bench gemm`, cold 1408 x 2048 gradients at depth 24: fp32 oneDNN 70-72,
  // OpenBLAS 52-53 GFLOP/s, against 63-68 for OpenBLAS adding; bf16 compute: oneDNN 104, against
  // 50 through OpenBLAS).
  const bool blas_weight_grad = beta != 0.f && (!bf16 || k < kBf16WeightGradDepthForBlas);
  if (trans_a && weight_grads_by_blas_ && blas_weight_grad) {
    kernels::gemm<float>(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  // A few rows times a parameter's transpose (the expert FFNs' forward at a few dozen tokens per
  // expert) runs as C^T = B op(A)^T, the parameter as A, then C = C^T^T + beta C by a reorder:
  // oneDNN's matmul streams a large A better than a large B when M is small (measured on one
  // Zen 4 core, 48 cold 1408 x 2048 weights: 24 rows 61-65 -> 66-75 GFLOP/s, 48 rows 76 -> 104,
  // 96 rows 95 -> 103; even at 160 and behind from 256). Not in bf16, whose kernels run the other
  // way round better (DeepSeekMoE-16B's routed forward on one rank: 345 ms transposed, 212 not).
  if (!bf16 && param == ParamOperand::b && trans_b && m <= kTransposedProductRows && n >= 4 * m) {
    if (s.product_t.size() < static_cast<size_t>(n * m)) s.product_t.resize(n * m);
    gemm(false, !trans_a, n, m, k, alpha, b, ldb, a, lda, 0.f, s.product_t.data(), m,
         ParamOperand::a, precision);
    s.convert(s.product_t.data(), m, n, m, true, dt::f32, c, ldc, beta);
    s.stream.wait();
    return;
  }
  const dt in = bf16 ? dt::bf16 : dt::f32;
  // Operands as the matmul reads them. A transposed A is copied into a compact op(A) first:
  // oneDNN's matmul runs 1.5-2x slower on one (measured on the weight gradients' [I, tokens] x
  // [tokens, H] GEMMs), and the copy is the size of A, small beside the product. bf16 operands
  // are converted copies: B a parameter's (once per update, stored layout), others per call.
  const void* a_data = a;
  const void* b_data = b;
  int64_t a_ld = lda, b_ld = ldb;
  bool a_trans = trans_a;
  if (bf16 && param == ParamOperand::a) {
    a_data = s.param_bf16(a, trans_a ? k : m, trans_a ? m : k, lda);
    a_ld = trans_a ? m : k;
  } else if (bf16) {
    a_data = s.compact(a, m, k, lda, trans_a, s.a_bf16);
    a_ld = k, a_trans = false;
  } else if (trans_a) {
    a_data = s.compact(a, m, k, lda, trans_a, s.a_f32);
    a_ld = k, a_trans = false;
  }
  if (bf16 && param == ParamOperand::b) {
    b_data = s.param_bf16(b, trans_b ? n : k, trans_b ? k : n, ldb);
    b_ld = trans_b ? k : n;
  } else if (bf16) {
    b_data = s.compact(b, k, n, ldb, trans_b, s.b_bf16);
    b_ld = n;
  }
  const bool b_trans = trans_b && !(bf16 && param != ParamOperand::b);
  const GemmKey key{m,   n, k, a_ld, b_ld, ldc, a_trans, b_trans, bits_of(alpha), bits_of(beta),
                    bf16};
  auto it = s.matmuls.find(key);
  if (it == s.matmuls.end()) {
    const memory::desc a_md = matrix_desc(m, k, a_ld, a_trans, in);
    const memory::desc b_md = matrix_desc(k, n, b_ld, b_trans, in);
    const memory::desc c_md = matrix_desc(m, n, ldc, false, dt::f32);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (alpha != 1.f) attr.set_output_scales(0, {alpha});
    if (beta != 0.f) {
      dnnl::post_ops ops;
      ops.append_sum(beta);
      attr.set_post_ops(ops);
    }
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_md, c_md), attr, s.engine);
    const memory::desc scratch_md = pd.scratchpad_desc();
    if (s.scratchpad.size() < scratch_md.get_size()) s.scratchpad.resize(scratch_md.get_size());
    it = s.matmuls
             .emplace(key, State::Matmul{dnnl::matmul(pd), memory(a_md, s.engine, DNNL_MEMORY_NONE),
                                         memory(b_md, s.engine, DNNL_MEMORY_NONE),
                                         memory(c_md, s.engine, DNNL_MEMORY_NONE),
                                         memory(scratch_md, s.engine, DNNL_MEMORY_NONE)})
             .first;
  }
  State::Matmul& mm = it->second;
  mm.a.set_data_handle(const_cast<void*>(a_data));
  mm.b.set_data_handle(const_cast<void*>(b_data));
  mm.c.set_data_handle(c);
  mm.scratch.set_data_handle(s.scratchpad.data());
  mm.primitive.execute(s.stream, {{DNNL_ARG_SRC, mm.a},
                                  {DNNL_ARG_WEIGHTS, mm.b},
                                  {DNNL_ARG_DST, mm.c},
                                  {DNNL_ARG_SCRATCHPAD, mm.scratch}});
  s.stream.wait();
}

}  // namespace switchyard::kernels
