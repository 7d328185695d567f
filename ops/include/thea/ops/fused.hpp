// Ops that fuse a pattern of simpler ops into one numerically better or cheaper node:
// what softmax's vjp emits (SoftmaxGrad), what the stabilize rewrites produce
// (CrossentropySoftmax and its 1-hot gradient) and what the specialize rewrites produce
// (Gemm). Each is a full op: type and shape inference, reference perform, vjp built from
// ops (so gradients of gradients work), and clear errors. Users rarely build them directly.
#pragma once

#include <cstddef>
#include <source_location>
#include <string>
#include <vector>

#include "thea/op.hpp"

namespace thea {

class FunctionGraph;

// (g, sm) -> sm * (g - sum(g * sm, -1, keepdims)): the vjp of a row-wise softmax whose
// output is sm, as one op so that the stabilize rewrites can recognise it (Theano's
// SoftmaxGrad). g and sm: float vectors or matrices of the same dtype and shape.
class SoftmaxGrad : public Op {
 public:
  std::string name() const override { return "softmax_grad"; }
  TensorType infer_type(const std::vector<NodePtr>& inputs) const override;
  Shape infer_shape(const std::vector<Shape>& in, const std::vector<const Tensor*>&) const override;
  Tensor perform(const std::vector<Tensor>& inputs) const override;
  std::vector<Variable> vjp(const std::vector<Variable>& inputs, const Variable& output,
                            const Variable& gout) const override;
};

// (z, y) -> the categorical cross-entropy of softmax(z), computed from the logits without
// forming log(softmax(z)) (which is -inf where softmax underflows). One value per row:
//   float targets y shaped like z:  sum_j y_j * (logsumexp(z) - z_j)
//   integer label vector (z a matrix): logsumexp(z_i) - z[i, y_i]
// A vector z with float targets is one row and gives a scalar.
class CrossentropySoftmax : public Op {
 public:
  std::string name() const override { return "crossentropy_softmax"; }
  TensorType infer_type(const std::vector<NodePtr>& inputs) const override;
  Shape infer_shape(const std::vector<Shape>& in, const std::vector<const Tensor*>&) const override;
  Tensor perform(const std::vector<Tensor>& inputs) const override;
  // d/dz = (softmax(z) * rowsum(y) - y) * g (integer labels: softmax(z) - onehot);
  // d/dy = -log_softmax(z) * g for float targets; none for labels.
  std::vector<Variable> vjp(const std::vector<Variable>& inputs, const Variable& output,
                            const Variable& gout) const override;
};

// (g, sm, labels) -> g[:, None] * (sm - onehot(labels)): the gradient of the integer-label
// CrossentropySoftmax w.r.t. the logits when sm = softmax(z) (Theano's
// CrossentropySoftmax1HotWithBiasDx). g: float vector, sm: float matrix, labels: integers.
class CrossentropySoftmax1HotDx : public Op {
 public:
  std::string name() const override { return "crossentropy_softmax_1hot_dx"; }
  TensorType infer_type(const std::vector<NodePtr>& inputs) const override;
  Shape infer_shape(const std::vector<Shape>& in, const std::vector<const Tensor*>&) const override;
  Tensor perform(const std::vector<Tensor>& inputs) const override;
  // To g and sm; none to the labels.
  std::vector<Variable> vjp(const std::vector<Variable>& inputs, const Variable& output,
                            const Variable& gout) const override;
};

// General matrix product with accumulation (BLAS gemm):
//   accumulate: inputs (A, B, alpha, C, beta) -> beta * C + alpha * op(A) · op(B)
//   otherwise:  inputs (A, B, alpha)          -> alpha * op(A) · op(B)
// op(X) is X or its transpose (trans_a / trans_b), so dot(X.T, G) reads X in place.
// A, B, C are matrices and alpha, beta scalars (0-d), all of one float dtype; C has the
// product's shape (no broadcasting). As in BLAS, beta == 0 means C is not read.
// `inplace`: compiled backends write the result into C's buffer (traits().destroys_input);
// the specialize rewrites set it only where C is a shared variable's current value that
// nothing reads afterwards. perform() always returns a fresh tensor.
class Gemm : public Op {
 public:
  static constexpr int kA = 0, kB = 1, kAlpha = 2, kC = 3, kBeta = 4;

  Gemm(bool trans_a, bool trans_b, bool accumulate, bool inplace = false)
      : trans_a_(trans_a),
        trans_b_(trans_b),
        accumulate_(accumulate),
        inplace_(inplace && accumulate) {}
  bool trans_a() const { return trans_a_; }
  bool trans_b() const { return trans_b_; }
  bool accumulate() const { return accumulate_; }
  bool inplace() const { return inplace_; }
  std::string name() const override { return "gemm"; }
  std::string params() const override;  // "trans_a, accumulate, inplace"
  TensorType infer_type(const std::vector<NodePtr>& inputs) const override;
  Shape infer_shape(const std::vector<Shape>& in, const std::vector<const Tensor*>&) const override;
  Tensor perform(const std::vector<Tensor>& inputs) const override;
  std::vector<Variable> vjp(const std::vector<Variable>& inputs, const Variable& output,
                            const Variable& gout) const override;
  OpTraits traits() const override { return {.destroys_input = inplace_ ? kC : -1}; }

 private:
  bool trans_a_, trans_b_, accumulate_, inplace_;
};

// ---- graph-building functions (the vjps and the rewrites use them; so may users) ----
Variable softmax_grad(const Variable& g, const Variable& sm,
                      std::source_location loc = std::source_location::current());
Variable crossentropy_softmax_1hot_dx(const Variable& g, const Variable& sm, const Variable& labels,
                                      std::source_location loc = std::source_location::current());
// beta * C + alpha * op(A) · op(B); alpha and beta are 0-d (literals adopt A's dtype).
Variable gemm(const Variable& c, const Variable& alpha, const Variable& a, const Variable& b,
              const Variable& beta, bool trans_a = false, bool trans_b = false,
              std::source_location loc = std::source_location::current());
// alpha * op(A) · op(B).
Variable gemm(const Variable& alpha, const Variable& a, const Variable& b, bool trans_a = false,
              bool trans_b = false, std::source_location loc = std::source_location::current());

namespace nnet {
// categorical_crossentropy(softmax(z), y), computed stably from the logits z.
Variable crossentropy_softmax(const Variable& z, const Variable& y,
                              std::source_location loc = std::source_location::current());
}  // namespace nnet

// Rewrites softmax, log_softmax, softmax_grad and crossentropy_softmax (float targets)
// into Elemwise and Reduce primitives (max, sub, exp, sum, log, ...), for a backend
// whose generic elementwise + reduction fuser would rather see those. Not part of the
// default rewrites. Returns the number of nodes replaced. (Integer-label cross-entropy and
// its gradient are gathers/scatters, not elementwise + reduce, and are left alone.)
std::size_t expand_row_ops(FunctionGraph& fg);

}  // namespace thea
