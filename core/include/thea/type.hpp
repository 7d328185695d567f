// Symbolic tensor types: dtype + rank + per-dimension static size (-1 unknown).
// A dimension of static size 1 is "broadcastable", as in Theano/PyTensor: only those
// dimensions stretch when combined with larger ones.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "thea/dtype.hpp"
#include "thea/tensor.hpp"

namespace thea {

constexpr std::int64_t kUnknownDim = -1;

struct TensorType {
  Dtype dtype = Dtype::Float32;
  Shape shape;  // static sizes; kUnknownDim where only known at run time

  TensorType() = default;
  TensorType(Dtype d, Shape s) : dtype(d), shape(std::move(s)) {}
  // Rank `ndim`, all sizes unknown.
  static TensorType of_rank(Dtype d, int ndim) { return {d, Shape(ndim, kUnknownDim)}; }
  // Exact type of a concrete value (all sizes static).
  static TensorType of(const Tensor& t) { return {t.dtype(), t.shape()}; }

  int ndim() const { return static_cast<int>(shape.size()); }
  bool broadcastable(int axis) const { return shape[axis] == 1; }
  bool fully_static() const;
  // Whether a runtime shape fits this type.
  bool accepts(const Shape& runtime_shape) const;
  // "fmatrix", "float32 tensor3 (?, 28, 28)", "float64 scalar"
  std::string str() const;
  bool operator==(const TensorType& o) const { return dtype == o.dtype && shape == o.shape; }
  bool operator!=(const TensorType& o) const { return !(*this == o); }
};

// Static shape string with '?' for unknown sizes: "(?, 784)".
std::string static_shape_str(const Shape& shape);

}  // namespace thea
