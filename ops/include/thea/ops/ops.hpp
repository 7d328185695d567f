// The Op classes, for code that inspects graphs (rewrites, backends' lowering).
// Users build graphs with the functions in api.hpp instead.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "thea/op.hpp"
#include "thea/ops/scalar.hpp"

namespace thea {

// Pointwise application of one scalar op over inputs broadcast together
// (numpy rules over static size-1 dims; ranks are left-padded).
class Elemwise : public Op {
 public:
  explicit Elemwise(ScalarOp op, Dtype cast_to = Dtype::Float32)
      : scalar_op_(op), cast_to_(cast_to) {}
  ScalarOp scalar_op() const { return scalar_op_; }
  Dtype cast_to() const { return cast_to_; }  // Cast only
  std::string name() const override;
  std::string params() const override;
  TensorType infer_type(const std::vector<NodePtr>& inputs) const override;
  Shape infer_shape(const std::vector<Shape>& in, const std::vector<const Tensor*>&) const override;
  Tensor perform(const std::vector<Tensor>& inputs) const override;
  std::vector<Variable> vjp(const std::vector<Variable>& inputs, const Variable& output,
                            const Variable& gout) const override;
  OpTraits traits() const override { return {.elementwise = true}; }

  // The dtype the scalar functor runs in, given the input dtypes: inputs for which
  // converts_input(i) holds are converted to it first (Switch's condition and Second's
  // shape-giving first input keep their own dtype). Code-generating backends use this
  // so that they compute exactly what perform() computes.
  Dtype compute_dtype(const std::vector<Dtype>& input_dtypes) const;
  bool converts_input(int i) const;

 private:
  ScalarOp scalar_op_;
  Dtype cast_to_;
};

enum class ReduceKind : std::uint8_t { Sum, Prod, Max, Min, Mean };
const char* reduce_kind_name(ReduceKind kind);

// Reduction of input 0 over sorted, non-negative `axes` (all axes when empty).
class Reduce : public Op {
 public:
  Reduce(ReduceKind kind, std::vector<int> axes, bool keepdims)
      : kind_(kind), axes_(std::move(axes)), keepdims_(keepdims) {}
  ReduceKind kind() const { return kind_; }
  const std::vector<int>& axes() const { return axes_; }
  bool keepdims() const { return keepdims_; }
  std::string name() const override;
  std::string params() const override;
  TensorType infer_type(const std::vector<NodePtr>& inputs) const override;
  Shape infer_shape(const std::vector<Shape>& in, const std::vector<const Tensor*>&) const override;
  Tensor perform(const std::vector<Tensor>& inputs) const override;
  std::vector<Variable> vjp(const std::vector<Variable>& inputs, const Variable& output,
                            const Variable& gout) const override;
  OpTraits traits() const override { return {.reduction = true}; }

 private:
  ReduceKind kind_;
  std::vector<int> axes_;
  bool keepdims_;
};

// Index of the first max (or min) along `axis` (-1: over the flattened input); int64.
class ArgReduce : public Op {
 public:
  ArgReduce(bool is_max, int axis, bool keepdims)
      : is_max_(is_max), axis_(axis), keepdims_(keepdims) {}
  bool is_max() const { return is_max_; }
  int axis() const { return axis_; }
  bool keepdims() const { return keepdims_; }
  std::string name() const override { return is_max_ ? "argmax" : "argmin"; }
  std::string params() const override;
  TensorType infer_type(const std::vector<NodePtr>& inputs) const override;
  Shape infer_shape(const std::vector<Shape>& in, const std::vector<const Tensor*>&) const override;
  Tensor perform(const std::vector<Tensor>& inputs) const override;
  // No vjp: argmax is not differentiable (the default returns no gradients).

 private:
  bool is_max_;
  int axis_;
  bool keepdims_;
};

// Number of elements of input 0 over `axes` (all when empty), as an int64 scalar.
class SizeOf : public Op {
 public:
  explicit SizeOf(std::vector<int> axes) : axes_(std::move(axes)) {}
  const std::vector<int>& axes() const { return axes_; }
  std::string name() const override { return "size_of"; }
  std::string params() const override;
  TensorType infer_type(const std::vector<NodePtr>& inputs) const override;
  Shape infer_shape(const std::vector<Shape>&, const std::vector<const Tensor*>&) const override {
    return {};
  }
  Tensor perform(const std::vector<Tensor>& inputs) const override;
  OpTraits traits() const override { return {.shape_only = true}; }

 private:
  std::vector<int> axes_;
};

// dot of vectors/matrices (ranks 1 or 2 each).
class Dot : public Op {
 public:
  std::string name() const override { return "dot"; }
  TensorType infer_type(const std::vector<NodePtr>& inputs) const override;
  Shape infer_shape(const std::vector<Shape>& in, const std::vector<const Tensor*>&) const override;
  Tensor perform(const std::vector<Tensor>& inputs) const override;
  std::vector<Variable> vjp(const std::vector<Variable>& inputs, const Variable& output,
                            const Variable& gout) const override;
};

// Theano's DimShuffle: output axis k is input axis pattern[k], or a new size-1 axis when
// pattern[k] == -1. Input axes not listed must be broadcastable (static size 1).
class DimShuffle : public Op {
 public:
  explicit DimShuffle(std::vector<int> pattern) : pattern_(std::move(pattern)) {}
  const std::vector<int>& pattern() const { return pattern_; }
  std::string name() const override { return "dimshuffle"; }
  std::string params() const override;
  TensorType infer_type(const std::vector<NodePtr>& inputs) const override;
  Shape infer_shape(const std::vector<Shape>& in, const std::vector<const Tensor*>&) const override;
  Tensor perform(const std::vector<Tensor>& inputs) const override;
  std::vector<Variable> vjp(const std::vector<Variable>& inputs, const Variable& output,
                            const Variable& gout) const override;
  OpTraits traits() const override { return {.view = true}; }

 private:
  std::vector<int> pattern_;
};

// Reshape to `spec` (>= 0 fixed, -1 inferred, 0 copy input size at that position).
// With a second input, reshapes to that input's runtime shape instead (spec unused):
// the gradient of reshape uses this form.
class Reshape : public Op {
 public:
  explicit Reshape(Shape spec) : spec_(std::move(spec)) {}
  const Shape& spec() const { return spec_; }
  std::string name() const override { return "reshape"; }
  std::string params() const override;
  TensorType infer_type(const std::vector<NodePtr>& inputs) const override;
  Shape infer_shape(const std::vector<Shape>& in, const std::vector<const Tensor*>&) const override;
  Tensor perform(const std::vector<Tensor>& inputs) const override;
  std::vector<Variable> vjp(const std::vector<Variable>& inputs, const Variable& output,
                            const Variable& gout) const override;
  OpTraits traits() const override { return {.view = true}; }

 private:
  Shape spec_;
};

class Concatenate : public Op {
 public:
  explicit Concatenate(int axis) : axis_(axis) {}
  int axis() const { return axis_; }
  std::string name() const override { return "concatenate"; }
  std::string params() const override;
  TensorType infer_type(const std::vector<NodePtr>& inputs) const override;
  Shape infer_shape(const std::vector<Shape>& in, const std::vector<const Tensor*>&) const override;
  Tensor perform(const std::vector<Tensor>& inputs) const override;
  std::vector<Variable> vjp(const std::vector<Variable>& inputs, const Variable& output,
                            const Variable& gout) const override;

 private:
  int axis_;
};

// Piece `index` of a concatenation's gradient: inputs (g, x0, x1, ...) -> slice of g
// shaped like x_index along axis. A view of g, as Subtensor is.
class ConcatenateGrad : public Op {
 public:
  ConcatenateGrad(int axis, int index) : axis_(axis), index_(index) {}
  int axis() const { return axis_; }
  int index() const { return index_; }
  std::string name() const override { return "concatenate_grad"; }
  std::string params() const override;
  TensorType infer_type(const std::vector<NodePtr>& inputs) const override;
  Shape infer_shape(const std::vector<Shape>& in, const std::vector<const Tensor*>&) const override;
  Tensor perform(const std::vector<Tensor>& inputs) const override;
  std::vector<Variable> vjp(const std::vector<Variable>& inputs, const Variable& output,
                            const Variable& gout) const override;
  OpTraits traits() const override { return {.view = true}; }

 private:
  int axis_;
  int index_;
};

// One entry of a subtensor index: an integer index (drops the axis) or a slice. Each
// bound is absent, a constant, or input number `input` (an integer scalar).
struct IndexSpec {
  enum class Kind : std::uint8_t { Index, Slice } kind = Kind::Slice;
  struct Bound {
    enum class Kind : std::uint8_t { None, Const, Input } kind = Kind::None;
    std::int64_t value = 0;  // Const
    int input = 0;           // Input: position in the node's inputs
  };
  Bound start, stop, step;  // Index uses `start` only
};

// x[index...]: inputs (x, bound inputs...). A view: basic indexing never copies.
class Subtensor : public Op {
 public:
  explicit Subtensor(std::vector<IndexSpec> index) : index_(std::move(index)) {}
  const std::vector<IndexSpec>& index() const { return index_; }
  std::string name() const override { return "subtensor"; }
  std::string params() const override;
  TensorType infer_type(const std::vector<NodePtr>& inputs) const override;
  Shape infer_shape(const std::vector<Shape>& in,
                    const std::vector<const Tensor*>& values) const override;
  std::vector<int> value_inputs() const override;
  Tensor perform(const std::vector<Tensor>& inputs) const override;
  std::vector<Variable> vjp(const std::vector<Variable>& inputs, const Variable& output,
                            const Variable& gout) const override;
  OpTraits traits() const override { return {.view = true}; }

 private:
  std::vector<IndexSpec> index_;
};

// x with x[index] += y (or = y when set): inputs (x, y, bound inputs...).
class IncSubtensor : public Op {
 public:
  IncSubtensor(std::vector<IndexSpec> index, bool set) : index_(std::move(index)), set_(set) {}
  const std::vector<IndexSpec>& index() const { return index_; }
  bool set() const { return set_; }
  std::string name() const override { return set_ ? "set_subtensor" : "inc_subtensor"; }
  std::string params() const override;
  TensorType infer_type(const std::vector<NodePtr>& inputs) const override;
  Shape infer_shape(const std::vector<Shape>& in, const std::vector<const Tensor*>&) const override;
  std::vector<int> value_inputs() const override;
  Tensor perform(const std::vector<Tensor>& inputs) const override;
  std::vector<Variable> vjp(const std::vector<Variable>& inputs, const Variable& output,
                            const Variable& gout) const override;

 private:
  std::vector<IndexSpec> index_;
  bool set_;
};

// x[indices] for an integer vector: rows gathered along axis 0.
class Take : public Op {
 public:
  std::string name() const override { return "take"; }
  TensorType infer_type(const std::vector<NodePtr>& inputs) const override;
  Shape infer_shape(const std::vector<Shape>& in, const std::vector<const Tensor*>&) const override;
  Tensor perform(const std::vector<Tensor>& inputs) const override;
  std::vector<Variable> vjp(const std::vector<Variable>& inputs, const Variable& output,
                            const Variable& gout) const override;
};

// (x, indices, y) -> x with rows indices[k] += y[k].
class IncRows : public Op {
 public:
  std::string name() const override { return "inc_rows"; }
  TensorType infer_type(const std::vector<NodePtr>& inputs) const override;
  Shape infer_shape(const std::vector<Shape>& in, const std::vector<const Tensor*>&) const override;
  Tensor perform(const std::vector<Tensor>& inputs) const override;
  std::vector<Variable> vjp(const std::vector<Variable>& inputs, const Variable& output,
                            const Variable& gout) const override;
};

class OneHot : public Op {
 public:
  OneHot(std::int64_t num_classes, Dtype dtype) : num_classes_(num_classes), dtype_(dtype) {}
  std::int64_t num_classes() const { return num_classes_; }
  Dtype dtype() const { return dtype_; }
  std::string name() const override { return "one_hot"; }
  std::string params() const override;
  TensorType infer_type(const std::vector<NodePtr>& inputs) const override;
  Shape infer_shape(const std::vector<Shape>& in, const std::vector<const Tensor*>&) const override;
  Tensor perform(const std::vector<Tensor>& inputs) const override;

 private:
  std::int64_t num_classes_;
  Dtype dtype_;
};

// Row-wise softmax / log-softmax over the last axis of a matrix (or a vector).
class Softmax : public Op {
 public:
  explicit Softmax(bool log) : log_(log) {}
  bool log() const { return log_; }
  std::string name() const override { return log_ ? "log_softmax" : "softmax"; }
  TensorType infer_type(const std::vector<NodePtr>& inputs) const override;
  Shape infer_shape(const std::vector<Shape>& in, const std::vector<const Tensor*>&) const override;
  Tensor perform(const std::vector<Tensor>& inputs) const override;
  std::vector<Variable> vjp(const std::vector<Variable>& inputs, const Variable& output,
                            const Variable& gout) const override;

 private:
  bool log_;
};

// (p, labels) -> -log(p[i, labels[i]]) per row, for an integer label vector.
class CrossentropyCategorical1Hot : public Op {
 public:
  std::string name() const override { return "crossentropy_categorical_1hot"; }
  TensorType infer_type(const std::vector<NodePtr>& inputs) const override;
  Shape infer_shape(const std::vector<Shape>& in, const std::vector<const Tensor*>&) const override;
  Tensor perform(const std::vector<Tensor>& inputs) const override;
  std::vector<Variable> vjp(const std::vector<Variable>& inputs, const Variable& output,
                            const Variable& gout) const override;
};

// (g, p, labels) -> matrix shaped like p: -g[i] / p[i, labels[i]] at the label, else 0.
class CrossentropyCategorical1HotGrad : public Op {
 public:
  std::string name() const override { return "crossentropy_categorical_1hot_grad"; }
  TensorType infer_type(const std::vector<NodePtr>& inputs) const override;
  Shape infer_shape(const std::vector<Shape>& in, const std::vector<const Tensor*>&) const override;
  Tensor perform(const std::vector<Tensor>& inputs) const override;
  // To g and p (so second derivatives of the cross-entropy work); none to the labels.
  std::vector<Variable> vjp(const std::vector<Variable>& inputs, const Variable& output,
                            const Variable& gout) const override;
};

// Helpers shared by op implementations.
// Broadcast static shapes (numpy rules over size-1 dims; ranks left-padded); throws
// ShapeError naming both shapes when they cannot broadcast.
Shape broadcast_static(const std::vector<Shape>& shapes);
// The same for runtime shapes.
Shape broadcast_runtime(const std::vector<Shape>& shapes);
// Normalize an axis against ndim (negative counts from the end); throws ValueError.
int normalize_axis(int axis, int ndim, const char* op_name);

}  // namespace thea
