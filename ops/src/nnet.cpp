// nnet: row-wise softmax / log-softmax, categorical cross-entropy with integer labels
// (and its gradient op), and the compositions users call (relu, binary cross-entropy...).
#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "thea/error.hpp"
#include "thea/ops/api.hpp"
#include "thea/ops/fused.hpp"
#include "thea/ops/ops.hpp"
#include "thea_scalar.h"

namespace thea {

namespace {

// Element (i, j) of a matrix view (any strides) as T.
template <class T>
T at2(const T* base, const Strides& st, std::int64_t i, std::int64_t j) {
  return base[i * st[0] + j * st[1]];
}

void check_float_matrix_or_vector(const TensorType& t, const char* what) {
  if (!is_float(t.dtype) || (t.ndim() != 1 && t.ndim() != 2)) {
    throw TypeError(fmt::format("{} must be a float vector or matrix, got {}", what, t.str()));
  }
}

void check_labels(const TensorType& t) {
  if (!is_integer(t.dtype) || t.ndim() != 1) {
    throw TypeError(fmt::format("labels must be an integer vector, got {}", t.str()));
  }
}

void check_probs(const TensorType& t) {
  if (!is_float(t.dtype) || t.ndim() != 2) {
    throw TypeError(fmt::format("probabilities must be a float matrix, got {}", t.str()));
  }
}

// Static row counts of p and labels must agree where both are known.
std::int64_t static_rows(const TensorType& p, const TensorType& labels) {
  const std::int64_t a = p.shape[0];
  const std::int64_t b = labels.shape[0];
  if (a != kUnknownDim && b != kUnknownDim && a != b) {
    throw ShapeError(fmt::format("p has {} rows {} but labels have {} {}", a,
                                 static_shape_str(p.shape), b, static_shape_str(labels.shape)));
  }
  return a != kUnknownDim ? a : b;
}

void check_rows_runtime(const Shape& p, const Shape& labels, const char* what) {
  if (p.size() != 2 || labels.size() != 1) {
    throw ShapeError(fmt::format("expects a matrix and a vector, got shapes {} and {}",
                                 shape_str(p), shape_str(labels)));
  }
  if (p[0] != labels[0]) {
    throw ShapeError(fmt::format("p has shape {} but {} have shape {} (rows differ)", shape_str(p),
                                 what, shape_str(labels)));
  }
}

// Label of row i as a checked column index.
std::int64_t label_at(const Tensor& labels, std::int64_t i, std::int64_t classes) {
  const std::int64_t y = labels.at<std::int64_t>({i});
  if (y < 0 || y >= classes) {
    throw ValueError(
        fmt::format("label {} at row {} is out of range for {} classes", y, i, classes));
  }
  return y;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Softmax
// ---------------------------------------------------------------------------------------

TensorType Softmax::infer_type(const std::vector<NodePtr>& inputs) const {
  if (inputs.size() != 1) {
    throw TypeError(fmt::format("{} takes 1 input, got {}", name(), inputs.size()));
  }
  check_float_matrix_or_vector(inputs[0]->type, "the input");
  return inputs[0]->type;
}

Shape Softmax::infer_shape(const std::vector<Shape>& in, const std::vector<const Tensor*>&) const {
  if (in.size() != 1 || (in[0].size() != 1 && in[0].size() != 2)) {
    throw ShapeError(fmt::format("{} expects one vector or matrix", name()));
  }
  return in[0];
}

Tensor Softmax::perform(const std::vector<Tensor>& inputs) const {
  const Tensor& x = inputs.at(0);
  if (!is_float(x.dtype()) || (x.ndim() != 1 && x.ndim() != 2)) {
    throw TypeError(
        fmt::format("{} expects a float vector or matrix, got {}", name(), x.describe()));
  }
  const Tensor xc = x.contiguous();
  const std::int64_t cols = x.shape().back();
  const std::int64_t rows = cols == 0 ? 0 : x.numel() / cols;
  Tensor out = Tensor::empty(x.shape(), x.dtype());
  visit_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_floating_point_v<T>) {
      const T* p = xc.data<T>();
      T* o = out.data<T>();
      std::vector<double> e(cols);
      for (std::int64_t i = 0; i < rows; ++i) {
        const T* row = p + i * cols;
        // Shift by the row max so exp never overflows; all in double (the oracle).
        double m = -std::numeric_limits<double>::infinity();
        for (std::int64_t j = 0; j < cols; ++j) m = thea_maximum(static_cast<double>(row[j]), m);
        double s = 0;
        for (std::int64_t j = 0; j < cols; ++j) {
          e[j] = thea_exp(static_cast<double>(row[j]) - m);
          s += e[j];
        }
        const double log_s = thea_log(s);
        for (std::int64_t j = 0; j < cols; ++j) {
          o[i * cols + j] =
              static_cast<T>(log_ ? static_cast<double>(row[j]) - m - log_s : e[j] / s);
        }
      }
    }
  });
  return out;
}

std::vector<Variable> Softmax::vjp(const std::vector<Variable>& inputs, const Variable& output,
                                   const Variable& gout) const {
  const Variable& x = inputs[0];
  Variable gx;
  if (log_) {
    gx = sub(gout, mul(exp(output), sum(gout, -1, /*keepdims=*/true)));
  } else {
    // One op (sm * (g - sum(g * sm))) so that the stabilize rewrites can see
    // SoftmaxGrad(a / sm, sm) in cross-entropy gradients and cancel the division.
    Variable g = gout.dtype() == output.dtype() ? gout : cast(gout, output.dtype());
    for (int d = 0; d < g.ndim(); ++d) {
      if (g.type().shape[d] == 1 && output.type().shape[d] != 1) {
        g = fill(output, g);  // a gradient that is broadcast along the rows
        break;
      }
    }
    gx = softmax_grad(g, output);
  }
  if (gx.dtype() != x.dtype()) gx = cast(gx, x.dtype());
  return {gx};
}

// ---------------------------------------------------------------------------------------
// CrossentropyCategorical1Hot and its gradient
// ---------------------------------------------------------------------------------------

TensorType CrossentropyCategorical1Hot::infer_type(const std::vector<NodePtr>& inputs) const {
  if (inputs.size() != 2) {
    throw TypeError(fmt::format("{} takes 2 inputs (p, labels), got {}", name(), inputs.size()));
  }
  check_probs(inputs[0]->type);
  check_labels(inputs[1]->type);
  return {inputs[0]->type.dtype, {static_rows(inputs[0]->type, inputs[1]->type)}};
}

Shape CrossentropyCategorical1Hot::infer_shape(const std::vector<Shape>& in,
                                               const std::vector<const Tensor*>&) const {
  if (in.size() != 2) throw TypeError(fmt::format("{} takes 2 inputs", name()));
  check_rows_runtime(in[0], in[1], "labels");
  return {in[0][0]};
}

Tensor CrossentropyCategorical1Hot::perform(const std::vector<Tensor>& inputs) const {
  const Shape shape = infer_shape({inputs.at(0).shape(), inputs.at(1).shape()}, {});
  const Tensor& p = inputs[0];
  const Tensor& labels = inputs[1];
  Tensor out = Tensor::empty(shape, p.dtype());
  const std::int64_t classes = p.shape()[1];
  visit_dtype(p.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_floating_point_v<T>) {
      const T* pp = p.data<T>();
      for (std::int64_t i = 0; i < shape[0]; ++i) {
        const std::int64_t y = label_at(labels, i, classes);
        out.data<T>()[i] =
            static_cast<T>(-thea_log(static_cast<double>(at2(pp, p.strides(), i, y))));
      }
    } else {
      throw TypeError("p must be float, got " + p.describe());
    }
  });
  return out;
}

std::vector<Variable> CrossentropyCategorical1Hot::vjp(const std::vector<Variable>& inputs,
                                                       const Variable&,
                                                       const Variable& gout) const {
  const Variable& p = inputs[0];
  Variable g = gout.dtype() == p.dtype() ? gout : cast(gout, p.dtype());
  return {Variable(make_apply_at(std::make_shared<CrossentropyCategorical1HotGrad>(),
                                 {g.node(), p.node(), inputs[1].node()}, gout.node()->site)),
          Variable()};
}

TensorType CrossentropyCategorical1HotGrad::infer_type(const std::vector<NodePtr>& inputs) const {
  if (inputs.size() != 3) {
    throw TypeError(fmt::format("{} takes 3 inputs (g, p, labels), got {}", name(), inputs.size()));
  }
  const TensorType& g = inputs[0]->type;
  if (!is_float(g.dtype) || g.ndim() != 1) {
    throw TypeError(fmt::format("g must be a float vector, got {}", g.str()));
  }
  check_probs(inputs[1]->type);
  check_labels(inputs[2]->type);
  static_rows(inputs[1]->type, inputs[2]->type);
  static_rows(inputs[1]->type, g);
  return inputs[1]->type;
}

Shape CrossentropyCategorical1HotGrad::infer_shape(const std::vector<Shape>& in,
                                                   const std::vector<const Tensor*>&) const {
  if (in.size() != 3) throw TypeError(fmt::format("{} takes 3 inputs", name()));
  check_rows_runtime(in[1], in[2], "labels");
  check_rows_runtime(in[1], in[0], "g");
  return in[1];
}

Tensor CrossentropyCategorical1HotGrad::perform(const std::vector<Tensor>& inputs) const {
  const Shape shape =
      infer_shape({inputs.at(0).shape(), inputs.at(1).shape(), inputs.at(2).shape()}, {});
  const Tensor& g = inputs[0];
  const Tensor& p = inputs[1];
  const Tensor& labels = inputs[2];
  Tensor out = Tensor::zeros(shape, p.dtype());
  visit_dtype(p.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_floating_point_v<T>) {
      const T* pp = p.data<T>();
      T* o = out.data<T>();
      for (std::int64_t i = 0; i < shape[0]; ++i) {
        const std::int64_t y = label_at(labels, i, shape[1]);
        o[i * shape[1] + y] =
            static_cast<T>(-g.at<double>({i}) / static_cast<double>(at2(pp, p.strides(), i, y)));
      }
    } else {
      throw TypeError("p must be float, got " + p.describe());
    }
  });
  return out;
}

std::vector<Variable> CrossentropyCategorical1HotGrad::vjp(const std::vector<Variable>& inputs,
                                                           const Variable&,
                                                           const Variable& gout) const {
  // out[i, j] = -g[i] / p[i, y_i] at j == y_i (else 0). With A = this op at g = 1
  // (-1 / p at the labels): d/dg = sum_j gout * A, d/dp = gout * g[:, None] * A^2.
  const Variable& g = inputs[0];
  const Variable& p = inputs[1];
  const Variable a(make_apply_at(std::make_shared<CrossentropyCategorical1HotGrad>(),
                                 {ones_like(g).node(), p.node(), inputs[2].node()},
                                 gout.node()->site));
  Variable gg = sum(mul(gout, a), 1);
  Variable gp = mul(mul(gout, sqr(a)), dimshuffle(g, {0, -1}));
  if (gg.dtype() != g.dtype()) gg = cast(gg, g.dtype());
  if (gp.dtype() != p.dtype()) gp = cast(gp, p.dtype());
  return {gg, gp, Variable()};
}

// ---------------------------------------------------------------------------------------
// API
// ---------------------------------------------------------------------------------------
namespace nnet {

Variable softmax(const Variable& x, Loc loc) {
  if (!x) throw ValueError("[softmax] at " + SourceSite::from(loc).str() + ": empty Variable");
  return Variable(make_apply(std::make_shared<Softmax>(false), {x.node()}, loc));
}

Variable log_softmax(const Variable& x, Loc loc) {
  if (!x) {
    throw ValueError("[log_softmax] at " + SourceSite::from(loc).str() + ": empty Variable");
  }
  return Variable(make_apply(std::make_shared<Softmax>(true), {x.node()}, loc));
}

// maximum(x, 0): the gradient at exactly 0 goes to x (ties to the first operand).
Variable relu(const Variable& x, Loc loc) { return maximum(x, 0, loc); }

Variable softplus(const Variable& x, Loc loc) { return thea::softplus(x, loc); }

Variable sigmoid(const Variable& x, Loc loc) { return thea::sigmoid(x, loc); }

Variable categorical_crossentropy(const Variable& p, const Variable& y, Loc loc) {
  if (!p || !y) {
    throw ValueError("[categorical_crossentropy] at " + SourceSite::from(loc).str() +
                     ": empty Variable");
  }
  if (is_integer(y.dtype()) && y.ndim() == 1 && p.ndim() == 2) {
    return Variable(
        make_apply(std::make_shared<CrossentropyCategorical1Hot>(), {p.node(), y.node()}, loc));
  }
  if (y.ndim() != p.ndim() || p.ndim() == 0) {
    throw TypeError(fmt::format(
        "[categorical_crossentropy] at {}: targets must be one-hot/probabilities shaped like p, "
        "or an integer class vector when p is a matrix\n{}",
        SourceSite::from(loc).str(), describe_inputs({p.node(), y.node()})));
  }
  // One-hot integer targets are cast so the product stays in p's dtype.
  const Variable t = is_float(y.dtype()) ? y : cast(y, p.dtype(), loc);
  return neg(sum(mul(t, log(p, loc), loc), -1, false, loc), loc);
}

Variable binary_crossentropy(const Variable& o, const Variable& t, Loc loc) {
  return neg(
      add(mul(t, log(o, loc), loc), mul(sub(1.0, t, loc), log(sub(1.0, o, loc), loc), loc), loc),
      loc);
}

}  // namespace nnet
}  // namespace thea
