#include "kernels/environment.h"

#include <algorithm>
#include <cstdlib>

namespace switchyard::kernels::environment {

std::string backend() {
  const char* env = std::getenv("SWITCHYARD_BACKEND");
  return env != nullptr && *env != '\0' ? env : "";
}

std::optional<int> onednn_threads() {
  if (std::getenv("OMP_NUM_THREADS") != nullptr) return std::nullopt;
  const char* blas_threads = std::getenv("OPENBLAS_NUM_THREADS");
  return blas_threads != nullptr ? std::max(1, std::atoi(blas_threads)) : 1;
}

}  // namespace switchyard::kernels::environment
