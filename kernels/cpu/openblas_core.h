// Which kernels OpenBLAS runs, against what the CPU can do. OpenBLAS picks its kernels (its "core")
// from the CPU model when it loads; a release older than the CPU falls back to an old core
// (Debian's 0.3.21 runs its Prescott SSE3 kernels on Intel family 6 model 207, about 5x below its
// SkylakeX ones). The instruction-set level is read from the CPU's flags, never from model names.
#pragma once

#include <algorithm>
#include <string>

namespace switchyard::kernels {

// 0: SSE only, 1: AVX, 2: AVX2 + FMA, 3: AVX-512 (F, BW, DQ, VL).
int cpu_isa_level();
// The ISA level OpenBLAS core `core` (openblas_get_corename(), any case) needs; 0 when unknown.
int openblas_core_isa_level(const std::string& core);
// The OPENBLAS_CORETYPE that suits this CPU ("SkylakeX", "Haswell", "Sandybridge"),
// or "" where OpenBLAS's own choice is as good as any (not x86, or SSE only).
std::string recommended_openblas_coretype();

struct OpenBlasCoreCheck {
  std::string core;         // what OpenBLAS chose (or was told through OPENBLAS_CORETYPE)
  std::string recommended;  // recommended_openblas_coretype()
  int core_level = 0;
  int cpu_level = 0;
  // OpenBLAS runs kernels below AVX2 on a CPU that has AVX2 or more. AVX2 kernels on an AVX-512
  // CPU are not flagged: their SGEMM is within about 10% of the AVX-512 ones where measured
  // (Haswell 105, SkylakeX 99 GFLOP/s on one AMD Zen 4 core), far from the SSE3 cliff.
  bool too_old() const { return core_level < std::min(cpu_level, 2); }
  // One line saying what runs, what it costs and how to fix it; "" when nothing is wrong.
  std::string warning() const;
};

OpenBlasCoreCheck check_openblas_core();

}  // namespace switchyard::kernels
