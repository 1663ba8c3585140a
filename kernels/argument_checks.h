// Argument checks every backend makes before it computes, with one message each whatever the
// backend: a bad argument is a caller bug, reported as switchyard::Error(invalid_argument) naming
// the kernel and the offending argument. Header-only, so that kernels/cuda (a library of its own,
// linked into switchyard_kernels) shares them without a link cycle.
#pragma once

#include <algorithm>
#include <cstdint>
#include <sstream>

#include "base/error.h"
#include "kernels/gating.h"
#include "kernels/swiglu.h"

namespace switchyard::kernels::detail {

template <typename... Parts>
[[noreturn]] void invalid_argument(const Parts&... parts) {
  std::ostringstream msg;
  (msg << ... << parts);
  throw Error(ErrorCode::invalid_argument, msg.str());
}

// "<kernel>: <arg> = <value> must be in [<min>, <max>]" for the first of m, n, k, lda, ldb, ldc
// out of range (row-major operands); max bounds every one (CBLAS and cuBLAS take 32-bit ints).
inline void check_gemm_args(const char* kernel, bool trans_a, bool trans_b, int64_t m, int64_t n,
                            int64_t k, int64_t lda, int64_t ldb, int64_t ldc, int64_t max) {
  const struct {
    const char* name;
    int64_t value;
    int64_t min;
  } args[] = {
      {"m", m, 0},
      {"n", n, 0},
      {"k", k, 0},
      {"lda", lda, std::max<int64_t>(1, trans_a ? m : k)},
      {"ldb", ldb, std::max<int64_t>(1, trans_b ? k : n)},
      {"ldc", ldc, std::max<int64_t>(1, n)},
  };
  for (const auto& a : args) {
    if (a.value < a.min || a.value > max) {
      invalid_argument(kernel, ": ", a.name, " = ", a.value, " must be in [", a.min, ", ", max,
                       "]");
    }
  }
}

// The router kernels' token and expert counts.
inline void check_router_shape(const char* fn, int64_t tokens, int experts) {
  if (tokens < 0) invalid_argument(fn, ": tokens = ", tokens, " must be >= 0");
  if (experts < 1) invalid_argument(fn, ": experts = ", experts, " must be >= 1");
}

inline void check_top_k(const char* fn, int experts, const RouterOptions& opts) {
  if (opts.top_k < 1 || opts.top_k > experts) {
    invalid_argument(fn, ": opts.top_k = ", opts.top_k, " must be in [1, experts = ", experts, "]");
  }
}

// Group-limited selection: groups that divide the experts, and enough experts in the kept groups.
inline void check_groups(int experts, const RouterOptions& opts) {
  if (opts.n_group < 1 || experts % opts.n_group != 0) {
    invalid_argument("select_experts: opts.n_group = ", opts.n_group,
                     " must be >= 1 and divide experts = ", experts);
  }
  if (opts.topk_group < 1 || opts.topk_group > opts.n_group) {
    invalid_argument("select_experts: opts.topk_group = ", opts.topk_group,
                     " must be in [1, opts.n_group = ", opts.n_group, "]");
  }
  const int kept = opts.topk_group * (experts / opts.n_group);
  if (opts.top_k > kept) {
    invalid_argument("select_experts: opts.top_k = ", opts.top_k, " exceeds the ", kept,
                     " experts in the opts.topk_group = ", opts.topk_group, " kept groups");
  }
}

template <typename T>
void check_swiglu_shape(const char* fn, const SwigluWeights<T>& w, int64_t n) {
  if (n < 0) invalid_argument(fn, ": n = ", n, " must be >= 0");
  if (w.hidden < 1) invalid_argument(fn, ": weights.hidden = ", w.hidden, " must be >= 1");
  if (w.inter < 1) invalid_argument(fn, ": weights.inter = ", w.inter, " must be >= 1");
}

}  // namespace switchyard::kernels::detail
