#include "kernels/backend.h"

#include <type_traits>

#include "base/error.h"
#include "kernels/environment.h"
#include "kernels/cpu/openblas_backend.h"
#ifdef SWITCHYARD_HAVE_ONEDNN
#include "kernels/onednn/onednn_backend.h"
#endif
#ifdef SWITCHYARD_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace switchyard::kernels {

ComputePrecision parse_compute_precision(const std::string& name) {
  if (name == "native") return ComputePrecision::native;
  if (name == "bf16") return ComputePrecision::bf16;
  throw Error(ErrorCode::invalid_argument,
              "compute precision '" + name + "' is not one of native, bf16");
}

const char* compute_precision_name(ComputePrecision compute) {
  return compute == ComputePrecision::bf16 ? "bf16" : "native";
}

template <typename T>
std::unique_ptr<Backend<T>> make_backend(const BackendOptions& options) {
  std::string name = options.name;
  if (name.empty()) {
    name = environment::backend();
    if (name.empty()) name = "openblas";
    // The environment chooses for the whole process, whose fp64 layers (references, tests) have
    // one backend only; asked by name, an fp64 onednn layer is refused below.
    if (std::is_same_v<T, double> && (name == "onednn" || name == "cuda")) name = "openblas";
  }
  const bool bf16 = options.compute == ComputePrecision::bf16;
  if (name == "openblas") {
    SY_ENFORCE_ARG(!bf16,
                   "the openblas backend computes in the layer's own precision only; bf16 compute "
                   "needs the onednn backend (--backend onednn)");
    return std::make_unique<OpenBlasBackend<T>>();
  }
  if (name == "onednn") {
#ifdef SWITCHYARD_HAVE_ONEDNN
    if constexpr (std::is_same_v<T, float>) {
      return std::make_unique<OneDnnBackend>(options.compute);
    } else {
      throw Error(
          ErrorCode::invalid_argument,
          "the onednn backend computes fp32 layers only (fp32 or bf16 compute); an fp64 layer "
          "uses the openblas backend");
    }
#else
    throw Error(
        ErrorCode::invalid_argument,
        "this build of switchyard has no oneDNN: install libdnnl-dev and rebuild (CMake finds "
        "it), or use the openblas backend");
#endif
  }
  if (name == "cuda") {
    // Device memory only (kernels/cuda/cuda_backend.h); the layer does not run on it yet.
#ifdef SWITCHYARD_HAVE_CUDA
    if constexpr (std::is_same_v<T, float>) {
      return make_cuda_backend(options.compute);
    } else {
      throw Error(ErrorCode::invalid_argument,
                  "the cuda backend computes fp32 layers only (fp32 or bf16)");
    }
#else
    throw Error(ErrorCode::invalid_argument,
                "this build of switchyard has no CUDA: rebuild with nvcc found (SWITCHYARD_CUDA)");
#endif
  }
  throw Error(ErrorCode::invalid_argument,
              "kernel backend '" + name +
                  "' is not one of openblas, onednn, cuda (SWITCHYARD_BACKEND or --backend)");
}

template std::unique_ptr<Backend<float>> make_backend<float>(const BackendOptions&);
template std::unique_ptr<Backend<double>> make_backend<double>(const BackendOptions&);

}  // namespace switchyard::kernels
