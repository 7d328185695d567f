// Hand-written building blocks for generated CPU kernels: GEMM micro-kernels specialised at
// compile time for the skinny shapes of small classifiers (N <= 16 output columns, static K).
// Embedded verbatim in every generated translation unit after thea_scalar.h (CMake turns it
// into a string constant), so kernels and library agree without files at run time.
// Plain C++17 with GCC/Clang vector extensions: the same source vectorises for SSE, AVX2 and
// AVX-512 (THEA_VEC_BYTES, set by the renderer from the CPU's widest vector).
#ifndef THEA_CPU_KERNELS_H
#define THEA_CPU_KERNELS_H

#include <stdint.h>

#ifndef THEA_VEC_BYTES
#define THEA_VEC_BYTES 32
#endif

#if defined(__x86_64__) || defined(__i386__)
#define THEA_KEEP_IN_REGISTER(v) __asm__("" : "+v"(v))
#else
#define THEA_KEEP_IN_REGISTER(v) ((void)0)
#endif

namespace thea_k {

template <class T>
struct Vec {
  typedef T type __attribute__((vector_size(THEA_VEC_BYTES)));
  static constexpr int lanes = THEA_VEC_BYTES / static_cast<int>(sizeof(T));
};

template <class V, class T>
static inline V vload(const T* p) {
  V v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

// Loads n < lanes elements, zero-filling the rest (a K tail).
template <class V, class T>
static inline V vload_partial(const T* p, int n) {
  V v = V{};
  __builtin_memcpy(&v, p, static_cast<unsigned long>(n) * sizeof(T));
  return v;
}

// Sum of the lanes in a fixed order (halves first), so results do not depend on threads.
template <class V, class T, int L>
static inline T hsum(V v) {
  if constexpr (L == 16) {
    typedef T H __attribute__((vector_size(sizeof(T) * 8)));
    typedef T Q __attribute__((vector_size(sizeof(T) * 4)));
    H h = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
          __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    Q q = __builtin_shufflevector(h, h, 0, 1, 2, 3) + __builtin_shufflevector(h, h, 4, 5, 6, 7);
    return (q[0] + q[2]) + (q[1] + q[3]);
  } else if constexpr (L == 8) {
    typedef T Q __attribute__((vector_size(sizeof(T) * 4)));
    Q q = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
    return (q[0] + q[2]) + (q[1] + q[3]);
  } else {
    T tmp[L];
    __builtin_memcpy(tmp, &v, sizeof v);
    for (int w = L / 2; w >= 1; w /= 2)
      for (int l = 0; l < w; ++l) tmp[l] += tmp[l + w];
    return tmp[0];
  }
}

// Bt[j * K + k] = B[k * ldb + j]: the K x N right operand transposed, so that the product
// reads both operands along K.
// Runs once per product (every train step for the forward's weights): written along K so
// the stores are contiguous and the strided loads vectorise (~1.5x faster than along N).
template <class T, int K, int N>
static inline void pack_bt(const T* B, int64_t ldb, T* Bt) {
  for (int j = 0; j < N; ++j)
    for (int k = 0; k < K; ++k) Bt[j * K + k] = B[k * ldb + j];
}

// Accumulator registers the micro-kernels may use (of 32 with AVX-512, 16 otherwise).
#ifndef THEA_ACC_REGS
#define THEA_ACC_REGS (THEA_VEC_BYTES == 64 ? 20 : 12)
#endif
constexpr int kAccRegs = THEA_ACC_REGS;
// Output columns handled together: groups of at most 5 keep R x NJ accumulators in
// registers with R >= 6 rows sharing every load of Bt (AVX-512).
constexpr int kColGroup = THEA_VEC_BYTES == 64 ? 5 : 4;
// Streaming A (a minibatch slice of a large array usually comes from DRAM): the cache lines
// of the row kPrefetchRows ahead are prefetched into L2 (prefetcht1). Measured on the MNIST
// forward product streamed over the 60000x784 training set (4-16 rows, L1 vs L2): 8 rows into L2 is
// ~30% faster than 6 rows into L1, which evicts the rows in use.
#ifndef THEA_PREFETCH_LOCALITY
#define THEA_PREFETCH_LOCALITY 2
#endif
#ifndef THEA_PREFETCH_ROWS
#define THEA_PREFETCH_ROWS 8
#endif
constexpr int kPrefetchRows = THEA_PREFETCH_ROWS;

// R rows [i, i + R) x columns [J0, J0 + NJ) of C; the next groups of the same rows follow
// while those rows of A are still in L1. The tile prefetches rows [PF0, PF1) of the tile
// kPrefetchRows ahead: the column groups share the tile's rows, so the prefetches are spread
// evenly over the whole tile instead of coming in bursts the memory system drops.
template <class T, int K, int R, int J0, int NJ, int PF0, int PF1>
static inline void nn_tile(int64_t i, const T* A, int64_t lda, const T* Bt, int64_t ldbt, T* C,
                           int64_t ldc, T alpha, T beta) {
  typedef typename Vec<T>::type V;
  constexpr int L = Vec<T>::lanes;
  constexpr int Kfull = K / L * L;
  V acc[R][NJ];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NJ; ++j) acc[r][j] = V{};
  for (int k = 0; k < Kfull; k += L) {
    V a[R];
    for (int r = 0; r < R; ++r) a[r] = vload<V>(A + (i + r) * lda + k);
    for (int r = PF0; r < PF1; ++r)
      __builtin_prefetch(A + (i + r + kPrefetchRows) * lda + k, 0, THEA_PREFETCH_LOCALITY);
    for (int j = 0; j < NJ; ++j) {
      V b = vload<V>(Bt + (J0 + j) * ldbt + k);
      // Keep b in a register: folded into each FMA it would be loaded R times.
      THEA_KEEP_IN_REGISTER(b);
      for (int r = 0; r < R; ++r) acc[r][j] += a[r] * b;
    }
  }
  if constexpr (Kfull < K) {
    V a[R];
    for (int r = 0; r < R; ++r) a[r] = vload_partial<V>(A + (i + r) * lda + Kfull, K - Kfull);
    for (int j = 0; j < NJ; ++j) {
      V b = vload_partial<V>(Bt + (J0 + j) * ldbt + Kfull, K - Kfull);
      for (int r = 0; r < R; ++r) acc[r][j] += a[r] * b;
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NJ; ++j) {
      T s = alpha * hsum<V, T, L>(acc[r][j]);
      T* c = C + (i + r) * ldc + J0 + j;
      *c = beta == T(0) ? s : s + beta * *c;
    }
}

template <class T, int K, int N, int R, int J0>
static inline void nn_row_block(int64_t i, const T* A, int64_t lda, const T* Bt, int64_t ldbt, T* C,
                                int64_t ldc, T alpha, T beta) {
  if constexpr (J0 < N) {
    constexpr int NJ = N - J0 < kColGroup ? N - J0 : kColGroup;
    constexpr int groups = (N + kColGroup - 1) / kColGroup, g = J0 / kColGroup;
    constexpr int rows = R == 1 ? 0 : R;  // single leftover rows: the end of a part
    constexpr int pf0 = rows * g / groups, pf1 = rows * (g + 1) / groups;
    nn_tile<T, K, R, J0, NJ, pf0, pf1>(i, A, lda, Bt, ldbt, C, ldc, alpha, beta);
    nn_row_block<T, K, N, R, J0 + NJ>(i, A, lda, Bt, ldbt, C, ldc, alpha, beta);
  }
}

// C[i, j] = alpha * sum_k A[i, k] * Bt[j, k] + beta * C[i, j] for rows [i0, i1), where Bt
// (N x K, row stride ldbt) is the right operand transposed (pack_bt, or a B^T given as is).
// Vectorised along K; R rows at a time share every load of Bt; beta == 0 never reads C.
// Each output is one dot product in a fixed order: results do not depend on the row split.
template <class T, int K, int N>
static inline void gemm_nn_smalln(int64_t i0, int64_t i1, const T* A, int64_t lda, const T* Bt,
                                  int64_t ldbt, T* C, int64_t ldc, T alpha, T beta) {
  constexpr int NJ = N < kColGroup ? N : kColGroup;
  constexpr int R = kAccRegs / NJ > 8 ? 8 : kAccRegs / NJ;
  int64_t i = i0;
  // (Prefetches past the end of A are harmless: they never fault.)
  for (; i + R <= i1; i += R) nn_row_block<T, K, N, R, 0>(i, A, lda, Bt, ldbt, C, ldc, alpha, beta);
  for (; i < i1; ++i) nn_row_block<T, K, N, 1, 0>(i, A, lda, Bt, ldbt, C, ldc, alpha, beta);
}

// One chunk of Aᵀ·D: acc[j] = sum_i A[i, k:k+width] * D[i, j] over all M rows, vectorised
// along K with N accumulators, the rows in order (deterministic). `next` (optional): rows of a
// later operand (the next minibatch of the same array); its first `next_rows` rows are
// prefetched into L2 while this product, which reads only cached data, leaves the memory bus
// idle.
template <class T, int N>
static inline void tn_chunk(int64_t k, int width, int64_t M, const T* A, int64_t lda, const T* D,
                            int64_t ldd, const T* next, int64_t next_rows,
                            typename Vec<T>::type (&acc)[N]) {
  typedef typename Vec<T>::type V;
  constexpr int L = Vec<T>::lanes;
  for (int j = 0; j < N; ++j) acc[j] = V{};
  if (next_rows > M) next_rows = M;
  if (width == L) {
    int64_t i = 0;
    for (; i < next_rows; ++i) {
      V a = vload<V>(A + i * lda + k);
      // One cache line per row and chunk when L elements fill a line (every line once).
      __builtin_prefetch(next + i * lda + k, 0, 2);
      const T* d = D + i * ldd;
      for (int j = 0; j < N; ++j) acc[j] += d[j] * a;
    }
    for (; i < M; ++i) {
      V a = vload<V>(A + i * lda + k);
      const T* d = D + i * ldd;
      for (int j = 0; j < N; ++j) acc[j] += d[j] * a;
    }
  } else {
    for (int64_t i = 0; i < M; ++i) {
      V a = vload_partial<V>(A + i * lda + k, width);
      const T* d = D + i * ldd;
      for (int j = 0; j < N; ++j) acc[j] += d[j] * a;
    }
  }
}

// C[k, j] = alpha * sum_i A[i, k] * D[i, j] + beta * C[k, j] (C = alpha A^T D + beta C) for
// k in [k0, k1) (multiples of the lanes except at K), chunk by chunk (tn_chunk). C may be the
// buffer being updated in place (w -= lr X^T G): each C element is read once, right before
// it is written.
template <class T, int K, int N>
static inline void gemm_tn_smalln(int64_t k0, int64_t k1, int64_t M, const T* A, int64_t lda,
                                  const T* D, int64_t ldd, T* C, int64_t ldc, T alpha, T beta,
                                  const T* next = nullptr, int64_t next_rows = 0) {
  typedef typename Vec<T>::type V;
  constexpr int L = Vec<T>::lanes;
  for (int64_t k = k0; k < k1; k += L) {
    const int width = k + L <= k1 ? L : static_cast<int>(k1 - k);
    V acc[N];
    tn_chunk<T, N>(k, width, M, A, lda, D, ldd, next, next_rows, acc);
    T tmp[N][L];
    __builtin_memcpy(tmp, acc, sizeof tmp);
    for (int l = 0; l < width; ++l) {
      T* c = C + (k + l) * ldc;
      for (int j = 0; j < N; ++j)
        c[j] = beta == T(0) ? alpha * tmp[j][l] : alpha * tmp[j][l] + beta * c[j];
    }
  }
}

// The same product written transposed: Ct[j, k] = sum_i A[i, k] * D[i, j] (N x K, row stride
// ldct), for all K. Each chunk's accumulators are stored as they are, one vector per column,
// where the row-major C above needs a scalar transpose of every chunk (a quarter of the
// product's time on the tutorial's shape).
template <class T, int K, int N>
static inline void gemm_tn_smalln_t(int64_t M, const T* A, int64_t lda, const T* D, int64_t ldd,
                                    T* Ct, int64_t ldct, const T* next = nullptr,
                                    int64_t next_rows = 0) {
  typedef typename Vec<T>::type V;
  constexpr int L = Vec<T>::lanes;
  for (int64_t k = 0; k < K; k += L) {
    const int width = k + L <= K ? L : static_cast<int>(K - k);
    V acc[N];
    tn_chunk<T, N>(k, width, M, A, lda, D, ldd, next, next_rows, acc);
    for (int j = 0; j < N; ++j) {
      if (width == L)
        __builtin_memcpy(Ct + j * ldct + k, &acc[j], sizeof(V));
      else
        __builtin_memcpy(Ct + j * ldct + k, &acc[j], static_cast<unsigned long>(width) * sizeof(T));
    }
  }
}

// Plain triple loop for any dtype and layout (integer products, odd shapes): C = alpha op(A)
// op(B) + beta C with explicit strides, rows [i0, i1).
template <class T>
static inline void gemm_generic(int64_t i0, int64_t i1, int64_t N, int64_t K, const T* A,
                                int64_t sa0, int64_t sa1, const T* B, int64_t sb0, int64_t sb1,
                                T* C, int64_t sc0, int64_t sc1, T alpha, T beta) {
  for (int64_t i = i0; i < i1; ++i)
    for (int64_t j = 0; j < N; ++j) {
      T s = T(0);
      for (int64_t k = 0; k < K; ++k) s += A[i * sa0 + k * sa1] * B[k * sb0 + j * sb1];
      T* c = C + i * sc0 + j * sc1;
      *c = beta == T(0) ? T(alpha * s) : T(alpha * s + beta * *c);
    }
}

}  // namespace thea_k

#endif  // THEA_CPU_KERNELS_H
