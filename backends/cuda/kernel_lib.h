// Device helpers shared by thea's generated CUDA kernels (embedded after the scalar
// preamble). Compiles under NVRTC and, for the SIMT emulator, as host C++.
#ifndef THEA_KERNEL_LIB_H
#define THEA_KERNEL_LIB_H

#ifndef THEA_EMU
#define THEA_DYN_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

// Loops over a compile-time count of per-thread sums (acc[j], j < NC): unrolled, so every
// index is static and acc stays in registers (a loop left rolled indexes it dynamically,
// which puts it in local memory).
#ifdef THEA_EMU
#define THEA_UNROLL
#else
#define THEA_UNROLL _Pragma("unroll")
#endif

// A kernel's by-value parameter block: N 8-byte words (pointers, sizes, strides).
template <int N>
struct thea_params {
  long long w[N];
};

// Per-call scalars and pointers arrive in the argument block as 8-byte words.
__device__ __forceinline__ double thea_arg_f64(const long long* a, int k) {
  return __longlong_as_double(a[k]);
}
__device__ __forceinline__ long long thea_arg_i64(const long long* a, int k) { return a[k]; }
// A float stored in the low 4 bytes of a word (gemm alpha/beta slots, as cuBLAS reads them).
__device__ __forceinline__ float thea_arg_f32(const long long* a, int k) {
  return __int_as_float(static_cast<int>(
      static_cast<unsigned>(static_cast<unsigned long long>(a[k]) & 0xffffffffull)));
}

template <class T>
__device__ __forceinline__ T thea_neg_inf();
template <>
__device__ __forceinline__ float thea_neg_inf<float>() {
  return __int_as_float(static_cast<int>(0xff800000u));
}
template <>
__device__ __forceinline__ double thea_neg_inf<double>() {
  return __longlong_as_double(static_cast<long long>(0xfff0000000000000ull));
}

template <class T>
struct thea_op_add {
  __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};
template <class T>
struct thea_op_mul {
  __device__ __forceinline__ T operator()(T a, T b) const { return a * b; }
};
template <class T>
struct thea_op_max {
  __device__ __forceinline__ T operator()(T a, T b) const { return thea_maximum(a, b); }
};
template <class T>
struct thea_op_min {
  __device__ __forceinline__ T operator()(T a, T b) const { return thea_minimum(a, b); }
};

// All-reduce across the blockDim.x threads that share threadIdx.y (one segment): a
// shuffle tree inside each warp, then the warps' partials through shared memory. Every
// thread of the block must call it (convergent); each gets the segment's result, combined
// in a fixed order, so results are identical run to run. `smem` holds blockDim.x / 32 *
// blockDim.y values.
template <class T, class Op>
__device__ __forceinline__ T thea_segment_allreduce(T v, Op op, T* smem) {
  const unsigned tx = blockDim.x;
  const unsigned width = tx < 32u ? tx : 32u;
  for (unsigned off = width / 2; off > 0; off /= 2)
    v = op(v, __shfl_xor_sync(0xffffffffu, v, static_cast<int>(off), 32));
  if (tx <= 32u) return v;
  const unsigned wpr = tx / 32u, lane = threadIdx.x % 32u, w = threadIdx.x / 32u;
  __syncthreads();  // a previous call's readers are done with smem
  if (lane == 0) smem[threadIdx.y * wpr + w] = v;
  __syncthreads();
  T r = smem[threadIdx.y * wpr];
  for (unsigned k = 1; k < wpr; ++k) r = op(r, smem[threadIdx.y * wpr + k]);
  return r;
}

// Arg-reductions: (value, index) pairs where a NaN beats everything (numpy's argmax
// returns the first NaN) and ties go to the lower index.
template <class T>
__device__ __forceinline__ bool thea_arg_better(T v, long long i, T bv, long long bi, bool is_max) {
  const bool vn = v != v, bn = bv != bv;
  if (vn || bn) return vn && (!bn || i < bi);
  if (v == bv) return i < bi;
  return is_max ? v > bv : v < bv;
}

template <class T>
__device__ __forceinline__ void thea_segment_argreduce(T& v, long long& idx, bool is_max,
                                                       unsigned char* smem_raw) {
  const unsigned tx = blockDim.x;
  const unsigned width = tx < 32u ? tx : 32u;
  for (unsigned off = width / 2; off > 0; off /= 2) {
    T ov = __shfl_xor_sync(0xffffffffu, v, static_cast<int>(off), 32);
    long long oi = __shfl_xor_sync(0xffffffffu, idx, static_cast<int>(off), 32);
    if (thea_arg_better(ov, oi, v, idx, is_max)) {
      v = ov;
      idx = oi;
    }
  }
  if (tx <= 32u) return;
  const unsigned wpr = tx / 32u, lane = threadIdx.x % 32u, w = threadIdx.x / 32u;
  T* sv = reinterpret_cast<T*>(smem_raw);
  long long* si = reinterpret_cast<long long*>(smem_raw + 8u * blockDim.y * wpr);
  __syncthreads();
  if (lane == 0) {
    sv[threadIdx.y * wpr + w] = v;
    si[threadIdx.y * wpr + w] = idx;
  }
  __syncthreads();
  v = sv[threadIdx.y * wpr];
  idx = si[threadIdx.y * wpr];
  for (unsigned k = 1; k < wpr; ++k) {
    if (thea_arg_better(sv[threadIdx.y * wpr + k], si[threadIdx.y * wpr + k], v, idx, is_max)) {
      v = sv[threadIdx.y * wpr + k];
      idx = si[threadIdx.y * wpr + k];
    }
  }
}

// Error codes kernels raise (atomicOr into the program's error word); the host turns them
// into exceptions naming the node.
#define THEA_ERR_INDEX 1

#endif  // THEA_KERNEL_LIB_H
