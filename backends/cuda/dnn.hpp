// cuDNN softmax over the rows of a contiguous matrix. Used only where it measures faster
// than thea's fused row kernel (THEA_CUDA_CUDNN=1 opts in; bench/gpu_softmax compares);
// cuDNN is optional and loaded at run time.
#pragma once

#include <cstdint>
#include <string>

#include "thea/dtype.hpp"

namespace thea::cuda {

class DnnHandle {
 public:
  DnnHandle() = default;
  ~DnnHandle();
  DnnHandle(const DnnHandle&) = delete;
  DnnHandle& operator=(const DnnHandle&) = delete;

  // Whether cuDNN can be used (built with its header and the library loads here).
  static bool available(std::string* why = nullptr);
  // y = softmax(x) (or log_softmax) over each of `rows` contiguous rows of `cols`.
  void softmax(void* stream, Dtype dtype, bool log, std::int64_t rows, std::int64_t cols,
               const void* x, void* y);

 private:
  void* handle_ = nullptr;  // cudnnHandle_t
  void* stream_ = nullptr;
};

// Opt-in switch THEA_CUDA_CUDNN=1, read when a function is compiled.
bool cudnn_softmax_enabled();

}  // namespace thea::cuda
