#include "cuda/blas.hpp"

#include <algorithm>

#include "cuda/cuda_libs.hpp"
#include "thea/error.hpp"

namespace thea::cuda {
namespace {

// The column-major call needs each operand as v^T. A view with unit column stride is, read
// column-major, already v^T (ld = row_stride); one with unit row stride is v (so: op T).
bool operand_for(const MatView& v, BlasOperand* out) {
  if ((v.col_stride == 1 || v.cols <= 1) && (v.rows <= 1 || v.row_stride >= v.cols)) {
    out->transpose = false;
    out->ld = std::max<std::int64_t>({v.row_stride, v.cols, 1});
    return true;
  }
  if ((v.row_stride == 1 || v.rows <= 1) && (v.cols <= 1 || v.col_stride >= v.rows)) {
    out->transpose = true;
    out->ld = std::max<std::int64_t>({v.col_stride, v.rows, 1});
    return true;
  }
  return false;
}

}  // namespace

bool blas_compatible(const MatView& v) {
  BlasOperand op;
  return operand_for(v, &op);
}

BlasPlan plan_gemm(const MatView& a, const MatView& b, const MatView& c) {
  BlasPlan p;
  p.m = c.rows;
  p.n = c.cols;
  p.k = a.cols;
  if (a.rows != c.rows || b.cols != c.cols || a.cols != b.rows) return p;
  // C must be written in place: column-major C^T with ld = row_stride needs unit col stride.
  if (!(c.col_stride == 1 || c.cols == 1)) return p;
  if (c.rows > 1 && c.row_stride < c.cols) return p;
  p.ldc = std::max<std::int64_t>({c.row_stride, c.cols, 1});
  // C^T (n x m) = B^T (n x k) . A^T (k x m): each operand is wanted transposed.
  if (!operand_for(b, &p.b)) return p;
  if (!operand_for(a, &p.a)) return p;
  p.ok = true;
  return p;
}

void gemm(cublasHandle_t handle, Dtype dtype, const BlasPlan& plan, double alpha, const MatView& a,
          const MatView& b, double beta, const MatView& c) {
  if (!plan.ok) throw ValueError("cuda gemm: operands are not in a cuBLAS-compatible layout");
  const CublasApi& api = cublas();
  auto op = [](const BlasOperand& o) { return o.transpose ? CUBLAS_OP_T : CUBLAS_OP_N; };
  const int n = static_cast<int>(plan.n), m = static_cast<int>(plan.m),
            k = static_cast<int>(plan.k);
  if (plan.m == 0 || plan.n == 0) return;
  if (dtype == Dtype::Float32) {
    float al = static_cast<float>(alpha), be = static_cast<float>(beta);
    check_cublas(api.cublasSgemm_v2(handle, op(plan.b), op(plan.a), n, m, k, &al,
                                    static_cast<const float*>(b.ptr), static_cast<int>(plan.b.ld),
                                    static_cast<const float*>(a.ptr), static_cast<int>(plan.a.ld),
                                    &be, static_cast<float*>(c.ptr), static_cast<int>(plan.ldc)),
                 "cublasSgemm");
  } else if (dtype == Dtype::Float64) {
    check_cublas(api.cublasDgemm_v2(handle, op(plan.b), op(plan.a), n, m, k, &alpha,
                                    static_cast<const double*>(b.ptr), static_cast<int>(plan.b.ld),
                                    static_cast<const double*>(a.ptr), static_cast<int>(plan.a.ld),
                                    &beta, static_cast<double*>(c.ptr), static_cast<int>(plan.ldc)),
                 "cublasDgemm");
  } else {
    throw TypeError(std::string("cuda gemm: cuBLAS path takes float32/float64, not ") +
                    dtype_name(dtype));
  }
}

BlasHandle::~BlasHandle() {
  if (handle_) {
    try {
      cublas().cublasDestroy_v2(handle_);
    } catch (...) {
    }
  }
}

cublasHandle_t BlasHandle::get(void* stream) {
  const CublasApi& api = cublas();
  if (!handle_) {
    check_cublas(api.cublasCreate_v2(&handle_), "cublasCreate");
    // Plain FP32 (no TF32): results must agree with the reference backend.
    check_cublas(api.cublasSetMathMode(handle_, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
    stream_ = nullptr;
    check_cublas(api.cublasSetStream_v2(handle_, nullptr), "cublasSetStream");
  }
  if (stream != stream_) {
    check_cublas(api.cublasSetStream_v2(handle_, static_cast<cudaStream_t>(stream)),
                 "cublasSetStream");
    stream_ = stream;
  }
  return handle_;
}

}  // namespace thea::cuda
