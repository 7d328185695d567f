// Scalar functors shared by every backend. The reference backend includes this file;
// the CPU and CUDA renderers embed it verbatim in generated kernels, so all backends
// evaluate the same expressions. Each name is a row of the table in ops/src/scalar.cpp.
// Must compile as host C++ (with <cmath>) and under NVRTC (no standard headers).
#ifndef THEA_SCALAR_H
#define THEA_SCALAR_H

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define THEA_HD __host__ __device__ __forceinline__
#define THEA_MATH(f) ::f
#else
#include <cmath>
#include <cstdint>
#define THEA_HD inline
#define THEA_MATH(f) std::f
#endif

// Arithmetic on bool and uint8 follows numpy: compute in the promoted type.
template <class T>
THEA_HD T thea_neg(T a) {
  return static_cast<T>(-a);
}
template <class T>
THEA_HD T thea_abs(T a) {
  return a < T(0) ? static_cast<T>(-a) : a;
}
template <class T>
THEA_HD T thea_sign(T a) {
  return static_cast<T>((T(0) < a) - (a < T(0)));
}
template <class T>
THEA_HD T thea_exp(T a) {
  return THEA_MATH(exp)(a);
}
template <class T>
THEA_HD T thea_log(T a) {
  return THEA_MATH(log)(a);
}
template <class T>
THEA_HD T thea_log1p(T a) {
  return THEA_MATH(log1p)(a);
}
template <class T>
THEA_HD T thea_sqrt(T a) {
  return THEA_MATH(sqrt)(a);
}
template <class T>
THEA_HD T thea_sqr(T a) {
  return a * a;
}
template <class T>
THEA_HD T thea_inv(T a) {
  return T(1) / a;
}
template <class T>
THEA_HD T thea_tanh(T a) {
  return THEA_MATH(tanh)(a);
}
// Stable for large |a|: exp never overflows.
template <class T>
THEA_HD T thea_sigmoid(T a) {
  if (a >= T(0)) return T(1) / (T(1) + THEA_MATH(exp)(-a));
  T e = THEA_MATH(exp)(a);
  return e / (T(1) + e);
}
// log(1 + exp(a)) without overflow.
template <class T>
THEA_HD T thea_softplus(T a) {
  return (a > T(0) ? a : T(0)) + THEA_MATH(log1p)(THEA_MATH(exp)(-(a < T(0) ? -a : a)));
}
template <class T>
THEA_HD bool thea_not(T a) {
  return !a;
}
template <class T>
THEA_HD T thea_identity(T a) {
  return a;
}
template <class To, class T>
THEA_HD To thea_cast(T a) {
  return static_cast<To>(a);
}

template <class T>
THEA_HD T thea_add(T a, T b) {
  return a + b;
}
template <class T>
THEA_HD T thea_sub(T a, T b) {
  return a - b;
}
template <class T>
THEA_HD T thea_mul(T a, T b) {
  return a * b;
}
template <class T>
THEA_HD T thea_div(T a, T b) {
  return a / b;
}
template <class T>
THEA_HD T thea_pow(T a, T b) {
  return THEA_MATH(pow)(a, b);
}
// NaN-propagating like numpy.maximum.
template <class T>
THEA_HD T thea_maximum(T a, T b) {
  return (a != a || a >= b) ? a : b;
}
template <class T>
THEA_HD T thea_minimum(T a, T b) {
  return (a != a || a <= b) ? a : b;
}
template <class T>
THEA_HD bool thea_lt(T a, T b) {
  return a < b;
}
template <class T>
THEA_HD bool thea_le(T a, T b) {
  return a <= b;
}
template <class T>
THEA_HD bool thea_gt(T a, T b) {
  return a > b;
}
template <class T>
THEA_HD bool thea_ge(T a, T b) {
  return a >= b;
}
template <class T>
THEA_HD bool thea_eq(T a, T b) {
  return a == b;
}
template <class T>
THEA_HD bool thea_ne(T a, T b) {
  return a != b;
}
template <class T>
THEA_HD bool thea_and(T a, T b) {
  return a && b;
}
template <class T>
THEA_HD bool thea_or(T a, T b) {
  return a || b;
}
// Theano's `second`: the value of b, broadcast to the shape of both.
template <class A, class T>
THEA_HD T thea_second(A, T b) {
  return b;
}

template <class C, class T>
THEA_HD T thea_switch(C c, T a, T b) {
  return c ? a : b;
}
template <class T>
THEA_HD T thea_clip(T x, T lo, T hi) {
  return x < lo ? lo : (x > hi ? hi : x);
}

#endif  // THEA_SCALAR_H
