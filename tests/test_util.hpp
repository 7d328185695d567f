// Helpers shared by the doctest suites: compiling on the reference backend, capturing
// error messages, evaluating a graph, comparing values and making test tensors. One copy
// here, so every suite checks values and messages the same way.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <thea/thea.hpp>
#include <utility>
#include <vector>

namespace thea::testing {

using V = std::vector<double>;

// Function options for the reference backend (the oracle), skipping `exclude` passes.
inline FunctionOptions ref(std::vector<std::string> exclude = {}) {
  FunctionOptions o;
  o.backend = "reference";
  o.exclude = std::move(exclude);
  return o;
}

// The message of the thea::Error that fn() throws, or "<no error>" (so a CHECK on the
// message fails, with the text shown, when nothing was thrown).
template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

// Whether backend `name` can run here (cpu needs a C++ compiler at run time, cuda a GPU);
// says why in the test log when it cannot.
inline bool backend_available(const std::string& name) {
  try {
    get_backend(name);
    return true;
  } catch (const BackendError& e) {
    MESSAGE("skipped " << name << ": " << std::string(e.what()));
    return false;
  }
}

inline bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// out evaluated at `args` for `inputs`, compiled on the reference backend.
inline Tensor eval(const std::vector<Variable>& inputs, const Variable& out,
                   const std::vector<Tensor>& args) {
  return function(inputs, {out}, {}, {}, ref())(args)[0];
}
inline Tensor eval1(const Variable& in, const Variable& out, const Tensor& value) {
  return eval({in}, out, {value});
}

// Every value of `t` against `expected` with a relative tolerance (suited to t's dtype by
// the caller); an expected NaN must be NaN.
inline void check_values(const Tensor& t, const std::vector<double>& expected,
                         double rtol = 1e-12) {
  const std::vector<double> got = t.to_vector();
  REQUIRE(got.size() == expected.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    CAPTURE(i);
    if (std::isnan(expected[i])) {
      CHECK(std::isnan(got[i]));
    } else {
      CHECK(got[i] == doctest::Approx(expected[i]).epsilon(rtol));
    }
  }
}

// Same shape and dtype, and |got - expected| <= atol + rtol |expected| elementwise.
inline void check_close(const Tensor& got, const Tensor& expected, double rtol = 1e-12,
                        double atol = 1e-12) {
  REQUIRE(got.shape() == expected.shape());
  CHECK(got.dtype() == expected.dtype());
  const std::vector<double> a = got.to_vector(), b = expected.to_vector();
  for (std::size_t i = 0; i < a.size(); ++i) {
    CAPTURE(i);
    CHECK(std::abs(a[i] - b[i]) <= atol + rtol * std::abs(b[i]));
  }
}

// Random values in [lo, hi) of a shape (float64 unless told).
inline Tensor uniform(const Shape& shape, double lo, double hi, std::uint64_t seed,
                      Dtype dtype = Dtype::Float64) {
  return Tensor::random_uniform(shape, lo, hi, seed, dtype);
}

// Standard normal float64 values of a shape.
inline Tensor rnd(const Shape& shape, std::uint64_t seed) {
  return Tensor::random_normal(shape, 0, 1, seed, Dtype::Float64);
}

// 0, 1, 2, ... in float64, row-major in `shape`.
inline Tensor arange_f64(const Shape& shape) {
  return Tensor::arange(shape_numel(shape), Dtype::Float64).reshape(shape);
}

// numpy-style softmax of one row: the reference the softmax ops are checked against.
inline std::vector<double> softmax_row(const std::vector<double>& x) {
  double m = x[0];
  for (double v : x) m = std::max(m, v);
  double s = 0;
  for (double v : x) s += std::exp(v - m);
  std::vector<double> out;
  for (double v : x) out.push_back(std::exp(v - m) / s);
  return out;
}

}  // namespace thea::testing
