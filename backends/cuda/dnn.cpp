#include "cuda/dnn.hpp"

#include <cstdlib>

#include "cuda/cuda_libs.hpp"
#include "thea/error.hpp"

namespace thea::cuda {

bool cudnn_softmax_enabled() {
  // Read at each compile (not cached) so a benchmark can compile both variants.
  const char* v = std::getenv("THEA_CUDA_CUDNN");
  return !(v && (std::string(v) == "0" || std::string(v) == "off"));
}

bool DnnHandle::available(std::string* why) { return cudnn_available(why); }

#if THEA_CUDNN_MAJOR > 0
namespace {
void check_cudnn(cudnnStatus_t s, const char* what) {
  if (s == CUDNN_STATUS_SUCCESS) return;
  throw BackendError(std::string("cuda: ") + what + " failed: " + cudnn().cudnnGetErrorString(s));
}
}  // namespace

DnnHandle::~DnnHandle() {
  if (handle_) cudnn().cudnnDestroy(static_cast<cudnnHandle_t>(handle_));
}

void DnnHandle::softmax(void* stream, Dtype dtype, bool log, std::int64_t rows, std::int64_t cols,
                        const void* x, void* y) {
  const CudnnApi& api = cudnn();
  if (dtype != Dtype::Float32 && dtype != Dtype::Float64)
    throw TypeError(std::string("cuda cuDNN softmax takes float32/float64, not ") +
                    dtype_name(dtype));
  if (!handle_) {
    cudnnHandle_t h = nullptr;
    check_cudnn(api.cudnnCreate(&h), "cudnnCreate");
    handle_ = h;
    stream_ = reinterpret_cast<void*>(-1);
  }
  auto h = static_cast<cudnnHandle_t>(handle_);
  if (stream != stream_) {
    check_cudnn(api.cudnnSetStream(h, static_cast<cudaStream_t>(stream)), "cudnnSetStream");
    stream_ = stream;
  }
  cudnnTensorDescriptor_t desc = nullptr;
  check_cudnn(api.cudnnCreateTensorDescriptor(&desc), "cudnnCreateTensorDescriptor");
  cudnnDataType_t dt = dtype == Dtype::Float32 ? CUDNN_DATA_FLOAT : CUDNN_DATA_DOUBLE;
  cudnnStatus_t s = api.cudnnSetTensor4dDescriptor(
      desc, CUDNN_TENSOR_NCHW, dt, static_cast<int>(rows), static_cast<int>(cols), 1, 1);
  if (s == CUDNN_STATUS_SUCCESS) {
    double one_d = 1, zero_d = 0;
    float one_f = 1, zero_f = 0;
    const void* one = dtype == Dtype::Float32 ? static_cast<const void*>(&one_f) : &one_d;
    const void* zero = dtype == Dtype::Float32 ? static_cast<const void*>(&zero_f) : &zero_d;
    s = api.cudnnSoftmaxForward(h, log ? CUDNN_SOFTMAX_LOG : CUDNN_SOFTMAX_ACCURATE,
                                CUDNN_SOFTMAX_MODE_INSTANCE, one, desc, x, zero, desc, y);
  }
  api.cudnnDestroyTensorDescriptor(desc);
  check_cudnn(s, "cudnnSoftmaxForward");
}
#else
DnnHandle::~DnnHandle() = default;
void DnnHandle::softmax(void*, Dtype, bool, std::int64_t, std::int64_t, const void*, void*) {
  throw BackendError("cuda: thea was built without cuDNN (cudnn.h not found at configure time)");
}
#endif

}  // namespace thea::cuda
