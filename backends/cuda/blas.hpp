// cuBLAS gemm on row-major strided matrix views: C = alpha * A·B + beta * C. With beta = 1
// and C the weights, the SGD step `w - lr * dot(X.T, G)` is one in-place call; transposed
// operands (X.T) are expressed as cuBLAS transposes, never copied.
#pragma once

#include <cstdint>

#include "thea/dtype.hpp"

struct cublasContext;
typedef struct cublasContext* cublasHandle_t;  // NOLINT: matches cublas_api.h

namespace thea::cuda {

// A 2-D view in elements: element (i, j) is at ptr + i*row_stride + j*col_stride.
struct MatView {
  void* ptr = nullptr;
  std::int64_t rows = 0, cols = 0;
  std::int64_t row_stride = 0, col_stride = 1;
};

// How one operand maps onto column-major cuBLAS: its transpose flag and leading dimension.
struct BlasOperand {
  bool transpose = false;
  std::int64_t ld = 1;
};
// nullopt-like: ok=false when the view has no unit stride (the caller copies it first).
struct BlasPlan {
  bool ok = false;
  // Column-major call computing C^T = B^T A^T: first operand is B, second A.
  BlasOperand b, a;
  std::int64_t ldc = 1;
  std::int64_t m = 0, n = 0, k = 0;  // row-major sizes: C is m x n, A m x k, B k x n
};
// Pure host logic (unit-tested): how to call cuBLAS for these views.
BlasPlan plan_gemm(const MatView& a, const MatView& b, const MatView& c);
// Whether a view can be handed to cuBLAS as is (one unit stride, other >= extent).
bool blas_compatible(const MatView& v);

// Runs the plan on `handle` (whose stream is already set). dtype Float32 or Float64.
// Throws BackendError on cuBLAS errors, ValueError when plan.ok is false.
void gemm(cublasHandle_t handle, Dtype dtype, const BlasPlan& plan, double alpha, const MatView& a,
          const MatView& b, double beta, const MatView& c);

// A cuBLAS handle bound to one stream, created lazily (cuBLAS is loaded on first use).
class BlasHandle {
 public:
  BlasHandle() = default;
  ~BlasHandle();
  BlasHandle(const BlasHandle&) = delete;
  BlasHandle& operator=(const BlasHandle&) = delete;
  cublasHandle_t get(void* stream);  // cudaStream_t

 private:
  cublasHandle_t handle_ = nullptr;
  void* stream_ = nullptr;
};

}  // namespace thea::cuda
