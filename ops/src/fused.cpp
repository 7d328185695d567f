// Fused ops: SoftmaxGrad (softmax's vjp), CrossentropySoftmax and its 1-hot gradient
// (what the stabilize rewrites produce), Gemm (what the specialize rewrites produce).
// The reference implementations accumulate in double: they are the oracle.
#include "thea/ops/fused.hpp"

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
#include "thea/ops/ops.hpp"
#include "thea_scalar.h"

namespace thea {

namespace {

void check_arity(const std::vector<NodePtr>& inputs, std::size_t n, const char* op,
                 const char* names) {
  if (inputs.size() != n) {
    throw TypeError(fmt::format("{} takes {} inputs {}, got {}", op, n, names, inputs.size()));
  }
}

void check_float_rows(const TensorType& t, const char* what) {
  if (!is_float(t.dtype) || (t.ndim() != 1 && t.ndim() != 2)) {
    throw TypeError(fmt::format("{} must be a float vector or matrix, got {}", what, t.str()));
  }
}

// Static shapes that must be equal (no broadcasting): known sizes agree; the merged
// shape keeps whichever size is known.
Shape merge_static(const Shape& a, const Shape& b, const char* what_a, const char* what_b) {
  if (a.size() != b.size()) {
    throw ShapeError(fmt::format("{} {} and {} {} differ in rank", what_a, static_shape_str(a),
                                 what_b, static_shape_str(b)));
  }
  Shape out(a.size());
  for (std::size_t d = 0; d < a.size(); ++d) {
    if (a[d] != kUnknownDim && b[d] != kUnknownDim && a[d] != b[d]) {
      throw ShapeError(fmt::format("{} has shape {} but {} has {} (axis {}: {} vs {})", what_a,
                                   static_shape_str(a), what_b, static_shape_str(b), d, a[d],
                                   b[d]));
    }
    out[d] = a[d] != kUnknownDim ? a[d] : b[d];
  }
  return out;
}

void require_equal_runtime(const Shape& a, const Shape& b, const char* what_a, const char* what_b) {
  if (a != b) {
    throw ShapeError(
        fmt::format("{} has shape {} but {} has {}", what_a, shape_str(a), what_b, shape_str(b)));
  }
}

// Rows x cols view of a contiguous vector (one row) or matrix.
struct RowView {
  std::int64_t rows = 1;
  std::int64_t cols = 0;
};
RowView row_view(const Shape& s) {
  RowView v;
  v.cols = s.back();
  v.rows = s.size() == 2 ? s[0] : 1;
  return v;
}

// log(sum(exp(row))) in double, shifted by the row max so exp never overflows.
template <class T>
double logsumexp(const T* row, std::int64_t cols) {
  double m = -std::numeric_limits<double>::infinity();
  for (std::int64_t j = 0; j < cols; ++j) m = thea_maximum(static_cast<double>(row[j]), m);
  if (std::isinf(m)) return m;  // all -inf (or a +inf): exp(x - m) would be NaN
  double s = 0;
  for (std::int64_t j = 0; j < cols; ++j) s += thea_exp(static_cast<double>(row[j]) - m);
  return m + thea_log(s);
}

std::int64_t checked_label(const Tensor& labels, std::int64_t i, std::int64_t classes) {
  const std::int64_t y = labels.at<std::int64_t>({i});
  if (y < 0 || y >= classes) {
    throw ValueError(
        fmt::format("label {} at row {} is out of range for {} classes", y, i, classes));
  }
  return y;
}

void check_labels_type(const TensorType& t) {
  if (!is_integer(t.dtype) || t.ndim() != 1) {
    throw TypeError(fmt::format("labels must be an integer vector, got {}", t.str()));
  }
}

void require(const Variable& v, const char* op, int index, const std::source_location& loc) {
  if (!v) {
    throw ValueError(fmt::format(
        "[{}] at {}: input {} is an empty Variable (default-constructed, never assigned)", op,
        SourceSite::from(loc).str(), index));
  }
}

// A weak literal (2.0 written in C++) adopts `dtype`, as it does in elementwise ops.
Variable adopt_literal(const Variable& v, Dtype dtype) {
  const NodePtr& n = v.node();
  if (n->kind != NodeKind::Constant || !n->weak_literal || n->type.dtype == dtype) return v;
  NodePtr c = make_constant(Tensor::scalar(n->value.item<double>(), dtype), n->name);
  c->weak_literal = true;
  return Variable(c);
}

// g shaped like the per-row output, as a column that broadcasts over the row's entries.
Variable per_row_column(const Variable& g, int z_ndim) {
  return z_ndim == 2 ? dimshuffle(g, {0, -1}) : g;
}

Variable same_dtype(const Variable& v, Dtype d) { return v.dtype() == d ? v : cast(v, d); }

}  // namespace

// ---------------------------------------------------------------------------------------
// SoftmaxGrad
// ---------------------------------------------------------------------------------------

TensorType SoftmaxGrad::infer_type(const std::vector<NodePtr>& inputs) const {
  check_arity(inputs, 2, "softmax_grad", "(g, sm)");
  const TensorType& g = inputs[0]->type;
  const TensorType& sm = inputs[1]->type;
  check_float_rows(g, "g");
  check_float_rows(sm, "sm");
  if (g.dtype != sm.dtype) {
    throw TypeError(fmt::format("g ({}) and sm ({}) must have the same dtype", g.str(), sm.str()));
  }
  return {sm.dtype, merge_static(g.shape, sm.shape, "g", "sm")};
}

Shape SoftmaxGrad::infer_shape(const std::vector<Shape>& in,
                               const std::vector<const Tensor*>&) const {
  if (in.size() != 2) throw TypeError("softmax_grad takes 2 inputs");
  require_equal_runtime(in[0], in[1], "g", "sm");
  return in[1];
}

Tensor SoftmaxGrad::perform(const std::vector<Tensor>& inputs) const {
  const Tensor& g = inputs.at(0);
  const Tensor& sm = inputs.at(1);
  if (g.dtype() != sm.dtype() || !is_float(sm.dtype()) || (sm.ndim() != 1 && sm.ndim() != 2)) {
    throw TypeError(fmt::format("expects float g and sm of one dtype, got {} and {}", g.describe(),
                                sm.describe()));
  }
  require_equal_runtime(g.shape(), sm.shape(), "g", "sm");
  const Tensor gc = g.contiguous();
  const Tensor sc = sm.contiguous();
  Tensor out = Tensor::empty(sm.shape(), sm.dtype());
  const RowView v = row_view(sm.shape());
  visit_dtype(sm.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_floating_point_v<T>) {
      const T* pg = gc.data<T>();
      const T* ps = sc.data<T>();
      T* o = out.data<T>();
      for (std::int64_t i = 0; i < v.rows; ++i) {
        const std::int64_t base = i * v.cols;
        double dot = 0;
        for (std::int64_t j = 0; j < v.cols; ++j) {
          dot += static_cast<double>(pg[base + j]) * static_cast<double>(ps[base + j]);
        }
        for (std::int64_t j = 0; j < v.cols; ++j) {
          o[base + j] = static_cast<T>(static_cast<double>(ps[base + j]) *
                                       (static_cast<double>(pg[base + j]) - dot));
        }
      }
    }
  });
  return out;
}

std::vector<Variable> SoftmaxGrad::vjp(const std::vector<Variable>& inputs, const Variable&,
                                       const Variable& gout) const {
  // out = sm * (g - s), s = sum(g * sm): the map g -> out is self-adjoint, and
  // d/dsm = u * (g - s) - g * sum(u * sm).
  const Variable& g = inputs[0];
  const Variable& sm = inputs[1];
  const Variable u = same_dtype(gout, sm.dtype());
  const Variable s = sum(mul(g, sm), -1, /*keepdims=*/true);
  Variable gg = softmax_grad(u, sm);
  Variable gsm = sub(mul(u, sub(g, s)), mul(g, sum(mul(u, sm), -1, /*keepdims=*/true)));
  return {same_dtype(gg, g.dtype()), same_dtype(gsm, sm.dtype())};
}

// ---------------------------------------------------------------------------------------
// CrossentropySoftmax
// ---------------------------------------------------------------------------------------

TensorType CrossentropySoftmax::infer_type(const std::vector<NodePtr>& inputs) const {
  check_arity(inputs, 2, "crossentropy_softmax", "(z, y)");
  const TensorType& z = inputs[0]->type;
  const TensorType& y = inputs[1]->type;
  check_float_rows(z, "the logits z");
  if (is_integer(y.dtype)) {
    if (z.ndim() != 2) {
      throw TypeError(fmt::format("integer labels need a matrix of logits, got {}", z.str()));
    }
    check_labels_type(y);
    return {z.dtype, merge_static({z.shape[0]}, y.shape, "z's rows", "labels")};
  }
  if (!is_float(y.dtype)) {
    throw TypeError(fmt::format(
        "targets must be float (shaped like z) or an integer label vector, got {}", y.str()));
  }
  if (y.dtype != z.dtype) {
    throw TypeError(
        fmt::format("targets ({}) must have the dtype of the logits ({})", y.str(), z.str()));
  }
  Shape s = merge_static(z.shape, y.shape, "z", "the targets");
  s.pop_back();
  return {z.dtype, s};
}

Shape CrossentropySoftmax::infer_shape(const std::vector<Shape>& in,
                                       const std::vector<const Tensor*>&) const {
  if (in.size() != 2 || in[0].empty() || in[0].size() > 2) {
    throw ShapeError("crossentropy_softmax expects a vector or matrix of logits and targets");
  }
  if (in[1].size() == 1 && in[0].size() == 2 && in[1][0] == in[0][0]) return {in[0][0]};
  require_equal_runtime(in[0], in[1], "z", "the targets");
  Shape s = in[0];
  s.pop_back();
  return s;
}

Tensor CrossentropySoftmax::perform(const std::vector<Tensor>& inputs) const {
  const Tensor& z = inputs.at(0);
  const Tensor& y = inputs.at(1);
  if (!is_float(z.dtype()) || (z.ndim() != 1 && z.ndim() != 2)) {
    throw TypeError("the logits must be a float vector or matrix, got " + z.describe());
  }
  const bool labels = is_integer(y.dtype());
  if (labels) {
    if (z.ndim() != 2 || y.ndim() != 1 || y.shape()[0] != z.shape()[0]) {
      throw ShapeError(fmt::format("logits {} and labels {} must have one label per row",
                                   z.describe(), y.describe()));
    }
  } else {
    if (y.dtype() != z.dtype()) {
      throw TypeError(fmt::format("targets {} must have the dtype of the logits {}", y.describe(),
                                  z.describe()));
    }
    require_equal_runtime(z.shape(), y.shape(), "z", "the targets");
  }
  const Tensor zc = z.contiguous();
  const Tensor yc = labels ? y : y.contiguous();
  const RowView v = row_view(z.shape());
  Shape out_shape = z.shape();
  out_shape.pop_back();
  Tensor out = Tensor::empty(out_shape, z.dtype());
  visit_dtype(z.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_floating_point_v<T>) {
      const T* pz = zc.data<T>();
      T* o = out.data<T>();
      for (std::int64_t i = 0; i < v.rows; ++i) {
        const T* row = pz + i * v.cols;
        const double lse = logsumexp(row, v.cols);
        if (labels) {
          o[i] = static_cast<T>(lse - static_cast<double>(row[checked_label(y, i, v.cols)]));
          continue;
        }
        // sum_j y_j (lse - z_j): each term is -y_j log softmax_j, never log(0).
        const T* py = yc.data<T>() + i * v.cols;
        double acc = 0;
        for (std::int64_t j = 0; j < v.cols; ++j) {
          acc += static_cast<double>(py[j]) * (lse - static_cast<double>(row[j]));
        }
        o[i] = static_cast<T>(acc);
      }
    }
  });
  return out;
}

std::vector<Variable> CrossentropySoftmax::vjp(const std::vector<Variable>& inputs, const Variable&,
                                               const Variable& gout) const {
  const Variable& z = inputs[0];
  const Variable& y = inputs[1];
  const Variable g = same_dtype(gout, z.dtype());
  const Variable sm = nnet::softmax(z);
  if (is_integer(y.dtype())) return {crossentropy_softmax_1hot_dx(g, sm, y), Variable()};
  const Variable gcol = per_row_column(g, z.ndim());
  Variable gz = mul(sub(mul(sm, sum(y, -1, /*keepdims=*/true)), y), gcol);
  Variable gy = neg(mul(nnet::log_softmax(z), gcol));
  return {same_dtype(gz, z.dtype()), same_dtype(gy, y.dtype())};
}

// ---------------------------------------------------------------------------------------
// CrossentropySoftmax1HotDx
// ---------------------------------------------------------------------------------------

TensorType CrossentropySoftmax1HotDx::infer_type(const std::vector<NodePtr>& inputs) const {
  check_arity(inputs, 3, "crossentropy_softmax_1hot_dx", "(g, sm, labels)");
  const TensorType& g = inputs[0]->type;
  const TensorType& sm = inputs[1]->type;
  if (!is_float(g.dtype) || g.ndim() != 1) {
    throw TypeError(fmt::format("g must be a float vector, got {}", g.str()));
  }
  if (!is_float(sm.dtype) || sm.ndim() != 2) {
    throw TypeError(fmt::format("sm must be a float matrix, got {}", sm.str()));
  }
  if (g.dtype != sm.dtype) {
    throw TypeError(fmt::format("g ({}) and sm ({}) must have the same dtype", g.str(), sm.str()));
  }
  check_labels_type(inputs[2]->type);
  Shape rows = merge_static({sm.shape[0]}, g.shape, "sm's rows", "g");
  rows = merge_static(rows, inputs[2]->type.shape, "sm's rows", "labels");
  return {sm.dtype, {rows[0], sm.shape[1]}};
}

Shape CrossentropySoftmax1HotDx::infer_shape(const std::vector<Shape>& in,
                                             const std::vector<const Tensor*>&) const {
  if (in.size() != 3 || in[0].size() != 1 || in[1].size() != 2 || in[2].size() != 1) {
    throw ShapeError("crossentropy_softmax_1hot_dx expects (vector, matrix, vector)");
  }
  require_equal_runtime({in[1][0]}, in[0], "sm's rows", "g");
  require_equal_runtime({in[1][0]}, in[2], "sm's rows", "labels");
  return in[1];
}

Tensor CrossentropySoftmax1HotDx::perform(const std::vector<Tensor>& inputs) const {
  const Tensor& g = inputs.at(0);
  const Tensor& sm = inputs.at(1);
  const Tensor& labels = inputs.at(2);
  const Shape shape = infer_shape({g.shape(), sm.shape(), labels.shape()}, {});
  if (g.dtype() != sm.dtype() || !is_float(sm.dtype())) {
    throw TypeError(fmt::format("expects float g and sm of one dtype, got {} and {}", g.describe(),
                                sm.describe()));
  }
  const Tensor gc = g.contiguous();
  const Tensor sc = sm.contiguous();
  Tensor out = Tensor::empty(shape, sm.dtype());
  visit_dtype(sm.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_floating_point_v<T>) {
      const T* pg = gc.data<T>();
      const T* ps = sc.data<T>();
      T* o = out.data<T>();
      for (std::int64_t i = 0; i < shape[0]; ++i) {
        const std::int64_t y = checked_label(labels, i, shape[1]);
        const double gi = static_cast<double>(pg[i]);
        for (std::int64_t j = 0; j < shape[1]; ++j) {
          const double s = static_cast<double>(ps[i * shape[1] + j]) - (j == y ? 1.0 : 0.0);
          o[i * shape[1] + j] = static_cast<T>(gi * s);
        }
      }
    }
  });
  return out;
}

std::vector<Variable> CrossentropySoftmax1HotDx::vjp(const std::vector<Variable>& inputs,
                                                     const Variable&, const Variable& gout) const {
  // out = g[:, None] * D with D = sm - onehot (this op at g = 1):
  // d/dg = sum(u * D, 1), d/dsm = u * g[:, None].
  const Variable& g = inputs[0];
  const Variable& sm = inputs[1];
  const Variable u = same_dtype(gout, sm.dtype());
  const Variable d = crossentropy_softmax_1hot_dx(ones_like(g), sm, inputs[2]);
  return {same_dtype(sum(mul(u, d), 1), g.dtype()),
          same_dtype(mul(u, dimshuffle(g, {0, -1})), sm.dtype()), Variable()};
}

// ---------------------------------------------------------------------------------------
// Gemm
// ---------------------------------------------------------------------------------------

std::string Gemm::params() const {
  std::string p;
  auto add = [&](const char* s) { p += p.empty() ? s : fmt::format(", {}", s); };
  if (trans_a_) add("trans_a");
  if (trans_b_) add("trans_b");
  if (accumulate_) add("accumulate");
  if (inplace_) add("inplace");
  return p;
}

namespace {
Shape op_shape(const Shape& s, bool trans) { return trans ? Shape{s[1], s[0]} : s; }
}  // namespace

TensorType Gemm::infer_type(const std::vector<NodePtr>& inputs) const {
  if (accumulate_) {
    check_arity(inputs, 5, "gemm", "(A, B, alpha, C, beta)");
  } else {
    check_arity(inputs, 3, "gemm", "(A, B, alpha)");
  }
  const Dtype d = inputs[kA]->type.dtype;
  static const char* const kNames[] = {"A", "B", "alpha", "C", "beta"};
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const TensorType& t = inputs[i]->type;
    const bool scalar = static_cast<int>(i) == kAlpha || static_cast<int>(i) == kBeta;
    if (!is_float(t.dtype) || t.dtype != d) {
      throw TypeError(fmt::format("{} must be float and of A's dtype ({}), got {}", kNames[i],
                                  dtype_name(d), t.str()));
    }
    if (t.ndim() != (scalar ? 0 : 2)) {
      throw TypeError(
          fmt::format("{} must be a {}, got {}", kNames[i], scalar ? "scalar" : "matrix", t.str()));
    }
  }
  const Shape a = op_shape(inputs[kA]->type.shape, trans_a_);
  const Shape b = op_shape(inputs[kB]->type.shape, trans_b_);
  if (a[1] != kUnknownDim && b[0] != kUnknownDim && a[1] != b[0]) {
    throw ShapeError(fmt::format("inner dimensions differ: op(A) is {} and op(B) is {}",
                                 static_shape_str(a), static_shape_str(b)));
  }
  Shape out{a[0], b[1]};
  if (accumulate_) out = merge_static(inputs[kC]->type.shape, out, "C", "op(A)·op(B)");
  return {d, out};
}

Shape Gemm::infer_shape(const std::vector<Shape>& in, const std::vector<const Tensor*>&) const {
  if (in.size() != (accumulate_ ? 5u : 3u) || in[kA].size() != 2 || in[kB].size() != 2) {
    throw ShapeError("gemm expects matrices A and B (and C)");
  }
  const Shape a = op_shape(in[kA], trans_a_);
  const Shape b = op_shape(in[kB], trans_b_);
  if (a[1] != b[0]) {
    throw ShapeError(fmt::format("inner dimensions differ at run time: op(A) is {} and op(B) is {}",
                                 shape_str(a), shape_str(b)));
  }
  const Shape out{a[0], b[1]};
  if (accumulate_) require_equal_runtime(in[kC], out, "C", "op(A)·op(B)");
  return out;
}

Tensor Gemm::perform(const std::vector<Tensor>& inputs) const {
  std::vector<Shape> shapes;
  for (const Tensor& t : inputs) shapes.push_back(t.shape());
  const Shape out_shape = infer_shape(shapes, {});
  const Dtype d = inputs[kA].dtype();
  for (const Tensor& t : inputs) {
    if (t.dtype() != d || !is_float(d)) {
      throw TypeError(fmt::format("expects float operands of one dtype, got {} and {}",
                                  inputs[kA].describe(), t.describe()));
    }
  }
  // op(A) and op(B) as contiguous row-major (m, k) and (k, n).
  const Tensor a = (trans_a_ ? inputs[kA].permute({1, 0}) : inputs[kA]).contiguous();
  const Tensor b = (trans_b_ ? inputs[kB].permute({1, 0}) : inputs[kB]).contiguous();
  const std::int64_t m = out_shape[0], n = out_shape[1], k = a.shape()[1];
  const double alpha = inputs[kAlpha].item<double>();
  const double beta = accumulate_ ? inputs[kBeta].item<double>() : 0.0;
  const Tensor c = accumulate_ ? inputs[kC].contiguous() : Tensor();
  Tensor out = Tensor::empty(out_shape, d);
  visit_dtype(d, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_floating_point_v<T>) {
      const T* pa = a.data<T>();
      const T* pb = b.data<T>();
      const T* pc = accumulate_ ? c.data<T>() : nullptr;
      T* po = out.data<T>();
      std::vector<double> acc(static_cast<std::size_t>(n));
      for (std::int64_t i = 0; i < m; ++i) {
        std::fill(acc.begin(), acc.end(), 0.0);
        for (std::int64_t p = 0; p < k; ++p) {
          const double av = static_cast<double>(pa[i * k + p]);
          for (std::int64_t j = 0; j < n; ++j) acc[j] += av * static_cast<double>(pb[p * n + j]);
        }
        for (std::int64_t j = 0; j < n; ++j) {
          double v = alpha * acc[j];
          // BLAS semantics: beta == 0 does not read C (NaN there does not propagate).
          if (beta != 0.0) v += beta * static_cast<double>(pc[i * n + j]);
          po[i * n + j] = static_cast<T>(v);
        }
      }
    }
  });
  return out;
}

std::vector<Variable> Gemm::vjp(const std::vector<Variable>& inputs, const Variable&,
                                const Variable& gout) const {
  const Variable& a = inputs[kA];
  const Variable& b = inputs[kB];
  const Variable& alpha = inputs[kAlpha];
  const Variable u = same_dtype(gout, a.dtype());
  const Variable op_a = trans_a_ ? transpose(a) : a;
  const Variable op_b = trans_b_ ? transpose(b) : b;
  // d op(A) = alpha u op(B)^T, d op(B) = alpha op(A)^T u; transposed back where needed.
  const Variable ga = trans_a_ ? mul(alpha, dot(op_b, transpose(u)))
                               : mul(alpha, dot(u, trans_b_ ? b : transpose(b)));
  const Variable gb = trans_b_ ? mul(alpha, dot(transpose(u), op_a))
                               : mul(alpha, dot(trans_a_ ? a : transpose(a), u));
  const Variable galpha = sum(mul(u, dot(op_a, op_b)));
  std::vector<Variable> out = {ga, gb, galpha};
  if (accumulate_) {
    out.push_back(mul(u, inputs[kBeta]));
    out.push_back(sum(mul(u, inputs[kC])));
  }
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = same_dtype(out[i], inputs[i].dtype());
  return out;
}

// ---------------------------------------------------------------------------------------
// API
// ---------------------------------------------------------------------------------------

Variable softmax_grad(const Variable& g, const Variable& sm, std::source_location loc) {
  require(g, "softmax_grad", 0, loc);
  require(sm, "softmax_grad", 1, loc);
  return Variable(make_apply(std::make_shared<SoftmaxGrad>(), {g.node(), sm.node()}, loc));
}

Variable crossentropy_softmax_1hot_dx(const Variable& g, const Variable& sm, const Variable& labels,
                                      std::source_location loc) {
  require(g, "crossentropy_softmax_1hot_dx", 0, loc);
  require(sm, "crossentropy_softmax_1hot_dx", 1, loc);
  require(labels, "crossentropy_softmax_1hot_dx", 2, loc);
  return Variable(make_apply(std::make_shared<CrossentropySoftmax1HotDx>(),
                             {g.node(), sm.node(), labels.node()}, loc));
}

Variable gemm(const Variable& c, const Variable& alpha, const Variable& a, const Variable& b,
              const Variable& beta, bool trans_a, bool trans_b, std::source_location loc) {
  require(a, "gemm", Gemm::kA, loc);
  require(b, "gemm", Gemm::kB, loc);
  require(alpha, "gemm", Gemm::kAlpha, loc);
  require(c, "gemm", Gemm::kC, loc);
  require(beta, "gemm", Gemm::kBeta, loc);
  const Dtype d = a.dtype();
  return Variable(make_apply(
      std::make_shared<Gemm>(trans_a, trans_b, true),
      {a.node(), b.node(), adopt_literal(alpha, d).node(), c.node(), adopt_literal(beta, d).node()},
      loc));
}

Variable gemm(const Variable& alpha, const Variable& a, const Variable& b, bool trans_a,
              bool trans_b, std::source_location loc) {
  require(a, "gemm", Gemm::kA, loc);
  require(b, "gemm", Gemm::kB, loc);
  require(alpha, "gemm", Gemm::kAlpha, loc);
  return Variable(make_apply(std::make_shared<Gemm>(trans_a, trans_b, false),
                             {a.node(), b.node(), adopt_literal(alpha, a.dtype()).node()}, loc));
}

namespace nnet {
Variable crossentropy_softmax(const Variable& z, const Variable& y, std::source_location loc) {
  require(z, "crossentropy_softmax", 0, loc);
  require(y, "crossentropy_softmax", 1, loc);
  return Variable(make_apply(std::make_shared<CrossentropySoftmax>(), {z.node(), y.node()}, loc));
}
}  // namespace nnet

}  // namespace thea
