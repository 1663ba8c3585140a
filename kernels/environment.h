// Every environment variable kernels/ reads, read here and nowhere else in kernels/ (docs/reference.md
// lists them). Each reader looks at the environment when it is called.
#pragma once

#include <optional>
#include <string>

namespace switchyard::kernels::environment {

// SWITCHYARD_BACKEND: the kernel backend a layer uses when none is named (openblas, onednn,
// cuda; make_backend checks it); "" when unset or empty.
std::string backend();

// The OpenMP thread count the onednn backend sets: nullopt when OMP_NUM_THREADS is set (OpenMP
// follows it), else OPENBLAS_NUM_THREADS (at least 1), else 1: one thread per rank, as OpenBLAS
// runs under the project's launchers.
std::optional<int> onednn_threads();

}  // namespace switchyard::kernels::environment
