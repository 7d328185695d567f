// The Op interface: everything one operation declares, in one place — its name and
// parameters, output type, runtime shape, vjp (built from other ops, so gradients are
// graphs too), a reference implementation on host tensors, equality for merging, traits.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "thea/graph.hpp"

namespace thea {

struct OpTraits {
  bool elementwise = false;  // pointwise over broadcast inputs: fusable into loops
  bool reduction = false;    // reduces some axes of input 0
  bool view = false;         // output aliases input 0 (no data movement needed)
  bool shape_only = false;   // output depends only on input shapes (cheap, host-side)
  // Index of an input whose buffer the output overwrites in place (compiled backends);
  // -1 when none. perform() must still return a fresh tensor.
  int destroys_input = -1;
};

class Op {
 public:
  virtual ~Op() = default;

  // Short op name used in messages and printing: "add", "dot", "softmax".
  virtual std::string name() const = 0;
  // Parameters that distinguish instances, printed in braces: "axes=(1), keepdims".
  // Two ops are equal when type, name and params() match, so params() must show them all.
  virtual std::string params() const { return {}; }

  // Output type from input nodes. Throws TypeError/ShapeError with a plain message
  // (make_apply adds the op, the variables and the call site).
  virtual TensorType infer_type(const std::vector<NodePtr>& inputs) const = 0;

  // Output shape from input shapes at run time. values[i] is the host value of input i
  // when the caller has it (always for inputs listed in value_inputs()).
  virtual Shape infer_shape(const std::vector<Shape>& input_shapes,
                            const std::vector<const Tensor*>& values) const = 0;
  // Inputs whose *values* (not just shapes) the output shape depends on (slice bounds).
  virtual std::vector<int> value_inputs() const { return {}; }

  // Reference implementation: plain loops on host tensors; the oracle for all backends.
  virtual Tensor perform(const std::vector<Tensor>& inputs) const = 0;

  // Vector-Jacobian product: one entry per input; an empty Variable means no gradient
  // flows to that input (integer, disconnected or non-differentiable).
  virtual std::vector<Variable> vjp(const std::vector<Variable>& inputs, const Variable& output,
                                    const Variable& output_grad) const;

  virtual OpTraits traits() const { return {}; }

  bool equals(const Op& other) const;
  std::size_t hash() const;
  std::string str() const;  // name{params}
};

// "[op] message\n  input 0: X (fmatrix (?, 784), created at train.cpp:3)\n  ..."
std::string describe_inputs(const std::vector<NodePtr>& inputs);

}  // namespace thea
