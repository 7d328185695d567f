// dot and outer. The reference Dot::perform is the oracle every backend's GEMM is
// compared with, so it accumulates floats in double and integers in int64.
#include <algorithm>
#include <string>
#include <type_traits>
#include <vector>

#include "thea/error.hpp"
#include "thea/grad.hpp"
#include "thea/ops/api.hpp"
#include "thea/ops/ops.hpp"

namespace thea {
namespace {

Variable apply_op(OpPtr op, const std::vector<Variable>& inputs, const Loc& loc) {
  std::vector<NodePtr> nodes;
  nodes.reserve(inputs.size());
  for (const Variable& v : inputs) nodes.push_back(v.node());
  return Variable(make_apply(std::move(op), std::move(nodes), loc));
}

const char* rank_word(int ndim) {
  switch (ndim) {
    case 0:
      return "a scalar";
    case 1:
      return "a vector";
    case 2:
      return "a matrix";
    default:
      return "a tensor";
  }
}

// Inner dimension of `a` (its last axis) and of `b` (its first axis).
std::int64_t inner_a(const Shape& a) { return a.back(); }
std::int64_t inner_b(const Shape& b) { return b.front(); }

Shape dot_shape(const Shape& a, const Shape& b) {
  Shape out;
  if (a.size() == 2) out.push_back(a[0]);
  if (b.size() == 2) out.push_back(b[1]);
  return out;
}

// Gradient for a differentiable input: none for integer inputs, cast back to the input's
// dtype when promotion widened it (float32 · float64).
Variable grad_for(const Variable& input, const Variable& g) {
  if (!is_float(input.dtype())) return Variable();
  return g.dtype() == input.dtype() ? g : cast(g, input.dtype());
}

}  // namespace

TensorType Dot::infer_type(const std::vector<NodePtr>& inputs) const {
  if (inputs.size() != 2)
    throw ValueError("expects 2 inputs, got " + std::to_string(inputs.size()));
  const TensorType& a = inputs[0]->type;
  const TensorType& b = inputs[1]->type;
  for (int i = 0; i < 2; ++i) {
    const TensorType& t = inputs[i]->type;
    if (t.ndim() < 1 || t.ndim() > 2)
      throw TypeError("dot takes vectors and matrices, but " + inputs[i]->label() + " is " +
                      rank_word(t.ndim()) + " (" + t.str() + ")" +
                      (t.ndim() == 0 ? "; use mul for scalars" : ""));
  }
  if (a.dtype == Dtype::Bool || b.dtype == Dtype::Bool)
    throw TypeError("dot of bool tensors is not supported; cast " +
                    inputs[a.dtype == Dtype::Bool ? 0 : 1]->label() + " first");
  std::int64_t ka = inner_a(a.shape), kb = inner_b(b.shape);
  if (ka != kUnknownDim && kb != kUnknownDim && ka != kb)
    throw ShapeError("inner dimensions differ: " + inputs[0]->label() + " has shape " +
                     static_shape_str(a.shape) + " but " + inputs[1]->label() + " has " +
                     static_shape_str(b.shape) + " (" + std::to_string(ka) +
                     " != " + std::to_string(kb) + ")");
  return {promote(a.dtype, b.dtype), dot_shape(a.shape, b.shape)};
}

Shape Dot::infer_shape(const std::vector<Shape>& in, const std::vector<const Tensor*>&) const {
  if (in.size() != 2 || in[0].empty() || in[1].empty() || in[0].size() > 2 || in[1].size() > 2)
    throw TypeError("expects two vectors or matrices at run time");
  if (inner_a(in[0]) != inner_b(in[1]))
    throw ShapeError("inner dimensions differ at run time: " + shape_str(in[0]) + " · " +
                     shape_str(in[1]));
  return dot_shape(in[0], in[1]);
}

Tensor Dot::perform(const std::vector<Tensor>& inputs) const {
  Shape out_shape = infer_shape({inputs[0].shape(), inputs[1].shape()}, {});
  if (inputs[0].dtype() == Dtype::Bool || inputs[1].dtype() == Dtype::Bool)
    throw TypeError("bool tensors are not supported");
  Dtype dtype = promote(inputs[0].dtype(), inputs[1].dtype());
  auto prepare = [dtype](const Tensor& t) {
    return (t.dtype() == dtype ? t : t.astype(dtype)).contiguous();
  };
  const Tensor a = prepare(inputs[0]);
  const Tensor b = prepare(inputs[1]);
  // Both operands as row-major matrices: a is (m, k), b is (k, n); vectors are m = 1 / n = 1.
  const std::int64_t m = a.ndim() == 2 ? a.shape()[0] : 1;
  const std::int64_t k = a.shape().back();
  const std::int64_t n = b.ndim() == 2 ? b.shape()[1] : 1;
  Tensor out = Tensor::empty(out_shape, dtype);
  visit_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    using Acc = std::conditional_t<std::is_floating_point_v<T>, double, std::int64_t>;
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    T* pc = out.data<T>();
    std::vector<Acc> acc(static_cast<std::size_t>(n));
    // i-p-j order walks b and the accumulator row contiguously (cache friendly).
    for (std::int64_t i = 0; i < m; ++i) {
      std::fill(acc.begin(), acc.end(), Acc(0));
      const T* arow = pa + i * k;
      for (std::int64_t p = 0; p < k; ++p) {
        const Acc av = static_cast<Acc>(arow[p]);
        const T* brow = pb + p * n;
        for (std::int64_t j = 0; j < n; ++j) acc[j] += av * static_cast<Acc>(brow[j]);
      }
      for (std::int64_t j = 0; j < n; ++j) pc[i * n + j] = static_cast<T>(acc[j]);
    }
  });
  return out;
}

std::vector<Variable> Dot::vjp(const std::vector<Variable>& inputs, const Variable&,
                               const Variable& g) const {
  const Variable& a = inputs[0];
  const Variable& b = inputs[1];
  Variable ga, gb;
  if (a.ndim() == 2 && b.ndim() == 2) {
    ga = dot(g, b.T());
    gb = dot(a.T(), g);
  } else if (a.ndim() == 2) {  // (m, k) · (k) -> (m)
    ga = outer(g, b);
    gb = dot(a.T(), g);
  } else if (b.ndim() == 2) {  // (k) · (k, n) -> (n)
    ga = dot(b, g);
    gb = outer(a, g);
  } else {  // (k) · (k) -> scalar
    ga = mul(g, b);
    gb = mul(g, a);
  }
  return {grad_for(a, ga), grad_for(b, gb)};
}

Variable dot(const Variable& a, const Variable& b, Loc loc) {
  return apply_op(std::make_shared<Dot>(), {a, b}, loc);
}

Variable outer(const Variable& a, const Variable& b, Loc loc) {
  if (!a.node() || !b.node() || a.ndim() != 1 || b.ndim() != 1)
    throw TypeError("[outer] at " + SourceSite::from(loc).str() + ": expects two vectors\n" +
                    describe_inputs({a.node(), b.node()}));
  // (n, 1) * (1, m) broadcasts to (n, m); fusion turns it back into one loop.
  return mul(dimshuffle(a, {0, -1}, loc), dimshuffle(b, {-1, 0}, loc), loc);
}

}  // namespace thea
