#include "kernels/cpu/openblas_core.h"

#include <algorithm>
#include <cctype>
#include <sstream>

// OpenBLAS exports this beside the CBLAS interface; cblas.h of some releases does not declare it.
extern "C" char* openblas_get_corename(void);

namespace switchyard::kernels {

namespace {

const char* isa_name(int level) {
  static const char* const names[] = {"SSE", "AVX", "AVX2", "AVX-512"};
  return names[std::clamp(level, 0, 3)];
}

}  // namespace

int cpu_isa_level() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")) {
    return 3;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 2;
  if (__builtin_cpu_supports("avx")) return 1;
#endif
  return 0;
}

int openblas_core_isa_level(const std::string& core) {
  std::string name = core;
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (const char* avx512 : {"skylakex", "cooperlake", "sapphirerapids"}) {
    if (name == avx512) return 3;
  }
  for (const char* avx2 : {"haswell", "zen", "excavator"}) {
    if (name == avx2) return 2;
  }
  for (const char* avx : {"sandybridge", "bulldozer", "piledriver", "steamroller"}) {
    if (name == avx) return 1;
  }
  return 0;
}

std::string recommended_openblas_coretype() {
  switch (cpu_isa_level()) {
    case 3:
      return "SkylakeX";
    case 2:
      return "Haswell";
    case 1:
      return "Sandybridge";
    default:
      return "";
  }
}

std::string OpenBlasCoreCheck::warning() const {
  if (!too_old()) return "";
  std::ostringstream msg;
  msg << "switchyard: OpenBLAS runs its " << core << " kernels (" << isa_name(core_level)
      << ") on a CPU with " << isa_name(cpu_level)
      << ": its GEMMs run up to 5x below what the same library reaches with the right kernels "
         "(sy-bench gemm measures both). Set OPENBLAS_CORETYPE="
      << recommended << " before the program starts (tools/bootstrap.sh and the project's "
      << "launchers do), or choose --backend onednn.";
  return msg.str();
}

OpenBlasCoreCheck check_openblas_core() {
  OpenBlasCoreCheck check;
  const char* core = openblas_get_corename();
  check.core = core != nullptr ? core : "unknown";
  check.recommended = recommended_openblas_coretype();
  check.core_level = openblas_core_isa_level(check.core);
  check.cpu_level = cpu_isa_level();
  return check;
}

}  // namespace switchyard::kernels
