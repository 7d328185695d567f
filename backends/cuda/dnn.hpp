// cuDNN softmax over the rows of a contiguous matrix, for a softmax that is a kernel of its
// own (nothing fused into it): on the H200 it measured faster than thea's row kernel at
// (128, 10), (10000, 10) and (4096, 1024) (gpu_bench compares both every run). Softmaxes
// fused with their inputs or consumers stay in thea's kernels. cuDNN is optional and
// loaded at run time; without it the row kernel runs.
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

// On unless THEA_CUDA_CUDNN=0 (or off), read when a function is compiled.
bool cudnn_softmax_enabled();

}  // namespace thea::cuda
