#include "thea/type.hpp"

#include <string>

namespace thea {

bool TensorType::fully_static() const {
  for (auto d : shape)
    if (d < 0) return false;
  return true;
}

bool TensorType::accepts(const Shape& runtime_shape) const {
  if (runtime_shape.size() != shape.size()) return false;
  for (std::size_t i = 0; i < shape.size(); ++i)
    if (shape[i] != kUnknownDim && shape[i] != runtime_shape[i]) return false;
  return true;
}

namespace {
std::string rank_name(int ndim) {
  switch (ndim) {
    case 0:
      return "scalar";
    case 1:
      return "vector";
    case 2:
      return "matrix";
    default:
      return "tensor" + std::to_string(ndim);
  }
}
}  // namespace

std::string TensorType::str() const {
  bool any_static = false;
  for (auto d : shape) any_static = any_static || d != kUnknownDim;
  // Theano's short names ("fmatrix") only exist for fully dynamic types; bool has no letter
  // Theano users would recognise, so it always gets the long form.
  if (!any_static && dtype != Dtype::Bool) return dtype_letter(dtype) + rank_name(ndim());
  std::string s = std::string(dtype_name(dtype)) + " " + rank_name(ndim());
  if (ndim() > 0) s += " " + static_shape_str(shape);
  return s;
}

std::string static_shape_str(const Shape& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += shape[i] < 0 ? std::string("?") : std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

}  // namespace thea
