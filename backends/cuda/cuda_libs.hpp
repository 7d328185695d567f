// The CUDA libraries thea uses beyond cudart, loaded with dlopen on first use: NVRTC
// (kernel compiler), cuBLAS (gemm) and cuDNN (optional). Loading at run time keeps every
// thea binary startable where these libraries (or the GPU) are missing; a missing library
// becomes a BackendError naming the file and where it was looked for.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <nvrtc.h>

#include <string>
#include <vector>

#if THEA_CUDNN_MAJOR > 0
#include <cudnn.h>
#endif

namespace thea::cuda {

// X-macro lists: the function pointer types come from the toolkit headers (decltype), so
// a signature mismatch is a compile error, not a crash.
// clang-format off (it reflows X-macro lists differently on every run)
#define THEA_NVRTC_FUNCS(X)    \
  X(nvrtcVersion)              \
  X(nvrtcCreateProgram)        \
  X(nvrtcDestroyProgram)       \
  X(nvrtcCompileProgram)       \
  X(nvrtcGetProgramLogSize)    \
  X(nvrtcGetProgramLog)        \
  X(nvrtcGetCUBINSize)         \
  X(nvrtcGetCUBIN)             \
  X(nvrtcGetPTXSize)           \
  X(nvrtcGetPTX)               \
  X(nvrtcGetErrorString)       \
  X(nvrtcGetNumSupportedArchs) \
  X(nvrtcGetSupportedArchs)

#define THEA_CUBLAS_FUNCS(X) \
  X(cublasCreate_v2)         \
  X(cublasDestroy_v2)        \
  X(cublasSetStream_v2)      \
  X(cublasSgemm_v2)          \
  X(cublasDgemm_v2)          \
  X(cublasGetStatusString)   \
  X(cublasSetMathMode)       \
  X(cublasGetVersion_v2)     \
  X(cublasSetWorkspace_v2)   \
  X(cublasSetPointerMode_v2) \
  X(cublasSgemmBatched)      \
  X(cublasDgemmBatched)

#if THEA_CUDNN_MAJOR > 0
#define THEA_CUDNN_FUNCS(X)       \
  X(cudnnGetVersion)              \
  X(cudnnCreate)                  \
  X(cudnnDestroy)                 \
  X(cudnnSetStream)               \
  X(cudnnGetErrorString)          \
  X(cudnnCreateTensorDescriptor)  \
  X(cudnnDestroyTensorDescriptor) \
  X(cudnnSetTensor4dDescriptor)   \
  X(cudnnSoftmaxForward)
#endif
// clang-format on

#define THEA_DECLARE_FN(name) decltype(&::name) name = nullptr;

struct NvrtcApi {
  THEA_NVRTC_FUNCS(THEA_DECLARE_FN)
  std::string path;  // the file that was loaded
};
struct CublasApi {
  THEA_CUBLAS_FUNCS(THEA_DECLARE_FN)
  std::string path;
};
#if THEA_CUDNN_MAJOR > 0
struct CudnnApi {
  THEA_CUDNN_FUNCS(THEA_DECLARE_FN)
  std::string path;
};
#endif
#undef THEA_DECLARE_FN

// Loaded once per process (thread-safe); throw BackendError when the library is missing
// or lacks a symbol. The message lists every place searched.
const NvrtcApi& nvrtc();
const CublasApi& cublas();
#if THEA_CUDNN_MAJOR > 0
const CudnnApi& cudnn();
#endif
// Whether cuDNN can be used here (built with its header and the library loads).
bool cudnn_available(std::string* why = nullptr);

// The sonames thea asks for ("libnvrtc.so.13", ...), and the directories tried after the
// dynamic loader's own search: $THEA_CUDA_LIB_DIR (colon separated), the configure-time
// toolkit library directory, /usr/local/cuda/lib64.
std::string nvrtc_soname();
std::string cublas_soname();
std::string cudnn_soname();
std::vector<std::string> library_search_dirs();

// "cudaErrorInsufficientDriver: CUDA driver version is insufficient ..." for messages.
std::string cuda_error_str(cudaError_t err);
// Throws BackendError "<what>: <error>" when err != cudaSuccess.
void check_cuda(cudaError_t err, const char* what);
void check_cublas(cublasStatus_t status, const char* what);
void check_nvrtc(nvrtcResult result, const char* what);

}  // namespace thea::cuda
