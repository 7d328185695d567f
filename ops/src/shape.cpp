// Shape ops: dimshuffle (and transpose / .T), reshape (and flatten), concatenate (and
// stack). DimShuffle, Reshape and ConcatenateGrad outputs are zero-copy views of their input.
#include <algorithm>
#include <string>
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

std::string join_ints(const std::vector<std::int64_t>& v) {
  std::string s;
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s;
}

// Prefix for errors raised by API functions before a node exists (make_apply formats the
// others the same way).
std::string api_error(const char* op, const Loc& loc, const std::string& msg,
                      const std::vector<Variable>& vars) {
  std::vector<NodePtr> nodes;
  for (const Variable& v : vars) nodes.push_back(v.node());
  return std::string("[") + op + "] at " + SourceSite::from(loc).str() + ": " + msg + "\n" +
         describe_inputs(nodes);
}

void check_arity(const std::vector<NodePtr>& inputs, std::size_t n) {
  if (inputs.size() != n)
    throw ValueError("expects " + std::to_string(n) + " input(s), got " +
                     std::to_string(inputs.size()));
}

// A view of `t` restricted to [start, start + len) along `axis`.
Tensor narrow(const Tensor& t, int axis, std::int64_t start, std::int64_t len) {
  Shape shape = t.shape();
  shape[axis] = len;
  std::int64_t offset = len > 0 ? t.offset() + start * t.strides()[axis] : t.offset();
  return Tensor(t.storage(), offset, std::move(shape), t.strides(), t.dtype());
}

// Resolves a reshape spec against an input shape whose sizes may be unknown (static
// inference) or all known (run time). Sizes copied with 0 cancel out of the -1 inference,
// so (?, 28, 28) reshaped to (0, -1) is statically (?, 784).
Shape resolve_spec(const Shape& spec, const Shape& in, const std::string& what) {
  Shape out(spec.size());
  int infer = -1;
  std::vector<bool> copied(in.size(), false);
  std::int64_t out_rest = 1;
  for (std::size_t i = 0; i < spec.size(); ++i) {
    if (spec[i] == -1) {
      infer = static_cast<int>(i);
      out[i] = kUnknownDim;
    } else if (spec[i] == 0) {
      out[i] = in[i];
      copied[i] = true;
    } else {
      out[i] = spec[i];
      out_rest *= spec[i];
    }
  }
  bool in_known = true;
  std::int64_t in_rest = 1;
  for (std::size_t j = 0; j < in.size(); ++j) {
    if (copied[j]) continue;
    if (in[j] == kUnknownDim)
      in_known = false;
    else
      in_rest *= in[j];
  }
  if (!in_known) return out;
  auto fail = [&](const std::string& why) {
    throw ShapeError("cannot reshape " + what + " of shape " + static_shape_str(in) + " into (" +
                     join_ints(spec) + "): " + why);
  };
  if (infer >= 0) {
    if (out_rest == 0) fail("the -1 size cannot be inferred next to a size 0");
    if (in_rest % out_rest != 0)
      fail(std::to_string(in_rest) + " elements do not divide into rows of " +
           std::to_string(out_rest));
    out[infer] = in_rest / out_rest;
  } else if (in_rest != out_rest) {
    fail("the sizes multiply out to " + std::to_string(out_rest) + " elements, not " +
         std::to_string(in_rest));
  }
  return out;
}

void validate_spec(const Shape& spec, int in_ndim) {
  int inferred = 0;
  for (std::size_t i = 0; i < spec.size(); ++i) {
    if (spec[i] < -1)
      throw ValueError("reshape size " + std::to_string(spec[i]) + " at position " +
                       std::to_string(i) + " is negative (only -1, inferred, is allowed)");
    if (spec[i] == -1 && ++inferred > 1)
      throw ValueError("reshape spec (" + join_ints(spec) + ") has more than one -1");
    if (spec[i] == 0 && static_cast<int>(i) >= in_ndim)
      throw ValueError("reshape size 0 at position " + std::to_string(i) +
                       " copies the input's axis " + std::to_string(i) +
                       ", but the input has rank " + std::to_string(in_ndim));
  }
}

std::vector<int> identity_pattern(int n) {
  std::vector<int> p(n);
  for (int i = 0; i < n; ++i) p[i] = i;
  return p;
}

}  // namespace

// ---------------------------------------------------------------- DimShuffle

std::string DimShuffle::params() const {
  std::string s;
  for (std::size_t i = 0; i < pattern_.size(); ++i)
    s += (i ? "," : "") + (pattern_[i] == -1 ? std::string("x") : std::to_string(pattern_[i]));
  return s;
}

TensorType DimShuffle::infer_type(const std::vector<NodePtr>& inputs) const {
  check_arity(inputs, 1);
  const TensorType& t = inputs[0]->type;
  std::vector<bool> used(t.ndim(), false);
  Shape out;
  for (int p : pattern_) {
    if (p == -1) {
      out.push_back(1);
      continue;
    }
    if (p < 0 || p >= t.ndim())
      throw ValueError("pattern entry " + std::to_string(p) + " is neither an axis of " +
                       inputs[0]->label() + " (rank " + std::to_string(t.ndim()) +
                       ") nor -1 (a new axis)");
    if (used[p]) throw ValueError("axis " + std::to_string(p) + " appears twice in the pattern");
    used[p] = true;
    out.push_back(t.shape[p]);
  }
  for (int a = 0; a < t.ndim(); ++a)
    if (!used[a] && t.shape[a] != 1)
      throw ValueError("the pattern drops axis " + std::to_string(a) + " of " + inputs[0]->label() +
                       " (shape " + static_shape_str(t.shape) +
                       "), which is not broadcastable (static size 1)");
  return {t.dtype, out};
}

Shape DimShuffle::infer_shape(const std::vector<Shape>& in,
                              const std::vector<const Tensor*>&) const {
  const Shape& s = in.at(0);
  std::vector<bool> used(s.size(), false);
  Shape out;
  for (int p : pattern_) {
    if (p == -1) {
      out.push_back(1);
    } else {
      used.at(p) = true;
      out.push_back(s[p]);
    }
  }
  for (std::size_t a = 0; a < s.size(); ++a)
    if (!used[a] && s[a] != 1)
      throw ShapeError("dropped axis " + std::to_string(a) + " has size " + std::to_string(s[a]) +
                       " at run time (input shape " + shape_str(s) + ")");
  return out;
}

Tensor DimShuffle::perform(const std::vector<Tensor>& inputs) const {
  const Tensor& x = inputs.at(0);
  Shape shape = infer_shape({x.shape()}, {});
  // Dropped axes have size 1, so they never move the offset: only strides change.
  Strides strides(shape.size(), 0);
  for (std::size_t k = 0; k < pattern_.size(); ++k)
    if (pattern_[k] != -1) strides[k] = x.strides()[pattern_[k]];
  // New axes get the stride a contiguous layout would give them, so a contiguous input
  // stays contiguous under any stride convention for size-1 axes.
  for (int k = static_cast<int>(shape.size()) - 1; k >= 0; --k)
    if (pattern_[k] == -1)
      strides[k] = k + 1 < static_cast<int>(shape.size()) ? strides[k + 1] * shape[k + 1] : 1;
  return Tensor(x.storage(), x.offset(), std::move(shape), std::move(strides), x.dtype());
}

std::vector<Variable> DimShuffle::vjp(const std::vector<Variable>& inputs, const Variable&,
                                      const Variable& g) const {
  const Variable& x = inputs[0];
  if (!is_float(x.dtype())) return {Variable()};
  std::vector<int> new_axes;
  for (std::size_t k = 0; k < pattern_.size(); ++k)
    if (pattern_[k] == -1) new_axes.push_back(static_cast<int>(k));
  // The gradient's new axes must go; dimshuffle may drop them only when g's type knows
  // they have size 1, otherwise summing over them removes them just as well.
  bool droppable =
      std::all_of(new_axes.begin(), new_axes.end(), [&](int k) { return g.type().shape[k] == 1; });
  Variable gg = g;
  if (!droppable) gg = sum(g, new_axes, /*keepdims=*/false);
  std::vector<int> order(x.ndim(), -1);  // dropped input axes come back as new axes
  int pos = 0;
  for (std::size_t k = 0; k < pattern_.size(); ++k) {
    if (pattern_[k] != -1) order[pattern_[k]] = droppable ? static_cast<int>(k) : pos++;
  }
  if (gg.ndim() == x.ndim() && order == identity_pattern(x.ndim())) return {gg};
  return {dimshuffle(gg, order)};
}

Variable dimshuffle(const Variable& x, std::vector<int> pattern, Loc loc) {
  return apply_op(std::make_shared<DimShuffle>(std::move(pattern)), {x}, loc);
}

Variable transpose(const Variable& x, std::optional<std::vector<int>> axes, Loc loc) {
  const int n = x.ndim();
  std::vector<int> pattern(n);
  if (!axes) {
    for (int i = 0; i < n; ++i) pattern[i] = n - 1 - i;
  } else {
    bool ok = static_cast<int>(axes->size()) == n;
    std::vector<bool> seen(n, false);
    for (int i = 0; ok && i < n; ++i) {
      int a = (*axes)[i] < 0 ? (*axes)[i] + n : (*axes)[i];
      ok = a >= 0 && a < n && !seen[a];
      if (ok) seen[a] = true;
      pattern[i] = a;
    }
    if (!ok) {
      std::vector<std::int64_t> v(axes->begin(), axes->end());
      throw ValueError(api_error("transpose", loc,
                                 "axes (" + join_ints(v) + ") are not a permutation of the " +
                                     std::to_string(n) + " axes of " + x.node()->label(),
                                 {x}));
    }
  }
  return dimshuffle(x, std::move(pattern), loc);
}

Variable Variable::T(std::source_location loc) const { return transpose(*this, std::nullopt, loc); }

// ---------------------------------------------------------------- Reshape

std::string Reshape::params() const { return "(" + join_ints(spec_) + ")"; }

TensorType Reshape::infer_type(const std::vector<NodePtr>& inputs) const {
  if (inputs.size() == 2) {
    // Gradient form: the shape of input 1 at run time.
    const TensorType& x = inputs[0]->type;
    const TensorType& like = inputs[1]->type;
    if (x.fully_static() && like.fully_static() && shape_numel(x.shape) != shape_numel(like.shape))
      throw ShapeError("cannot reshape " + inputs[0]->label() + " of shape " +
                       static_shape_str(x.shape) + " to the shape of " + inputs[1]->label() + ", " +
                       static_shape_str(like.shape));
    return {x.dtype, like.shape};
  }
  check_arity(inputs, 1);
  const TensorType& x = inputs[0]->type;
  validate_spec(spec_, x.ndim());
  return {x.dtype, resolve_spec(spec_, x.shape, inputs[0]->label())};
}

Shape Reshape::infer_shape(const std::vector<Shape>& in, const std::vector<const Tensor*>&) const {
  if (in.size() == 2) {
    if (shape_numel(in[0]) != shape_numel(in[1]))
      throw ShapeError("cannot reshape a tensor of shape " + shape_str(in[0]) + " to shape " +
                       shape_str(in[1]) + " at run time");
    return in[1];
  }
  validate_spec(spec_, static_cast<int>(in.at(0).size()));
  return resolve_spec(spec_, in[0], "a tensor");
}

Tensor Reshape::perform(const std::vector<Tensor>& inputs) const {
  std::vector<Shape> shapes;
  for (const Tensor& t : inputs) shapes.push_back(t.shape());
  return inputs.at(0).reshape(infer_shape(shapes, {}));
}

std::vector<Variable> Reshape::vjp(const std::vector<Variable>& inputs, const Variable&,
                                   const Variable& g) const {
  std::vector<Variable> grads(inputs.size());
  if (is_float(inputs[0].dtype()))
    grads[0] = apply_op(std::make_shared<Reshape>(Shape{}), {g, inputs[0]}, Loc::current());
  return grads;
}

Variable reshape(const Variable& x, Shape shape, Loc loc) {
  return apply_op(std::make_shared<Reshape>(std::move(shape)), {x}, loc);
}

Variable flatten(const Variable& x, int outdim, Loc loc) {
  if (outdim < 1 || (outdim > 1 && outdim > x.ndim()))
    throw ValueError(api_error("flatten", loc,
                               "outdim " + std::to_string(outdim) + " must be in [1, " +
                                   std::to_string(std::max(1, x.ndim())) + "]",
                               {x}));
  Shape spec(outdim - 1, 0);
  spec.push_back(-1);
  return reshape(x, std::move(spec), loc);
}

// ---------------------------------------------------------------- Concatenate

std::string Concatenate::params() const { return "axis=" + std::to_string(axis_); }

TensorType Concatenate::infer_type(const std::vector<NodePtr>& inputs) const {
  if (inputs.empty()) throw ValueError("needs at least one input");
  const int ndim = inputs[0]->type.ndim();
  if (ndim == 0) throw ValueError("cannot concatenate scalars (rank 0); use stack");
  if (axis_ < 0 || axis_ >= ndim)
    throw ValueError("axis " + std::to_string(axis_) + " is out of range for rank " +
                     std::to_string(ndim));
  Dtype dtype = inputs[0]->type.dtype;
  Shape out = inputs[0]->type.shape;
  for (std::size_t i = 1; i < inputs.size(); ++i) {
    const TensorType& t = inputs[i]->type;
    if (t.ndim() != ndim)
      throw TypeError("all inputs must have the same rank, but " + inputs[0]->label() +
                      " has rank " + std::to_string(ndim) + " and " + inputs[i]->label() +
                      " has rank " + std::to_string(t.ndim()));
    dtype = promote(dtype, t.dtype);
    for (int d = 0; d < ndim; ++d) {
      if (d == axis_) continue;
      if (out[d] == kUnknownDim) {
        out[d] = t.shape[d];
      } else if (t.shape[d] != kUnknownDim && t.shape[d] != out[d]) {
        throw ShapeError("sizes must match except along axis " + std::to_string(axis_) + ", but " +
                         inputs[i]->label() + " has shape " + static_shape_str(t.shape) +
                         " and the inputs before it have size " + std::to_string(out[d]) +
                         " on axis " + std::to_string(d));
      }
    }
  }
  std::int64_t total = 0;
  for (const NodePtr& in : inputs) {
    if (in->type.shape[axis_] == kUnknownDim) {
      total = kUnknownDim;
      break;
    }
    total += in->type.shape[axis_];
  }
  out[axis_] = total;
  return {dtype, out};
}

Shape Concatenate::infer_shape(const std::vector<Shape>& in,
                               const std::vector<const Tensor*>&) const {
  Shape out = in.at(0);
  out.at(axis_) = 0;
  for (const Shape& s : in) {
    bool ok = s.size() == out.size();
    for (std::size_t d = 0; ok && d < s.size(); ++d)
      ok = static_cast<int>(d) == axis_ || s[d] == out[d];
    if (!ok)
      throw ShapeError("input shape " + shape_str(s) + " does not match " + shape_str(in[0]) +
                       " off the concatenation axis at run time");
    out[axis_] += s[axis_];
  }
  return out;
}

Tensor Concatenate::perform(const std::vector<Tensor>& inputs) const {
  std::vector<Shape> shapes;
  Dtype dtype = inputs.at(0).dtype();
  for (const Tensor& t : inputs) {
    shapes.push_back(t.shape());
    dtype = promote(dtype, t.dtype());
  }
  Tensor out = Tensor::empty(infer_shape(shapes, {}), dtype);
  std::int64_t offset = 0;
  for (const Tensor& t : inputs) {
    std::int64_t n = t.shape()[axis_];
    if (n > 0 && t.numel() > 0) narrow(out, axis_, offset, n).copy_from(t);
    offset += n;
  }
  return out;
}

std::vector<Variable> Concatenate::vjp(const std::vector<Variable>& inputs, const Variable&,
                                       const Variable& g) const {
  std::vector<NodePtr> grad_inputs{g.node()};
  for (const Variable& v : inputs) grad_inputs.push_back(v.node());
  std::vector<Variable> grads(inputs.size());
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (!is_float(inputs[i].dtype())) continue;
    Variable gi(make_apply(std::make_shared<ConcatenateGrad>(axis_, static_cast<int>(i)),
                           grad_inputs, Loc::current()));
    grads[i] = gi.dtype() == inputs[i].dtype() ? gi : cast(gi, inputs[i].dtype());
  }
  return grads;
}

std::string ConcatenateGrad::params() const {
  return "axis=" + std::to_string(axis_) + ", index=" + std::to_string(index_);
}

TensorType ConcatenateGrad::infer_type(const std::vector<NodePtr>& inputs) const {
  if (inputs.size() < 2 || index_ < 0 || index_ + 1 >= static_cast<int>(inputs.size()))
    throw ValueError("piece " + std::to_string(index_) + " of " +
                     std::to_string(inputs.size() - 1) + " concatenated inputs does not exist");
  const TensorType& g = inputs[0]->type;
  const TensorType& x = inputs[1 + index_]->type;
  if (g.ndim() != x.ndim() || axis_ < 0 || axis_ >= g.ndim())
    throw TypeError("the gradient " + inputs[0]->label() + " (" + g.str() + ") does not match " +
                    inputs[1 + index_]->label() + " (" + x.str() + ") along axis " +
                    std::to_string(axis_));
  Shape out = x.shape;
  for (int d = 0; d < g.ndim(); ++d)
    if (d != axis_ && out[d] == kUnknownDim) out[d] = g.shape[d];
  return {g.dtype, out};
}

Shape ConcatenateGrad::infer_shape(const std::vector<Shape>& in,
                                   const std::vector<const Tensor*>&) const {
  std::int64_t total = 0;
  for (std::size_t i = 1; i < in.size(); ++i) total += in[i].at(axis_);
  if (in.at(0).size() != in.at(1 + index_).size() || in[0][axis_] != total)
    throw ShapeError("gradient of shape " + shape_str(in[0]) +
                     " does not match the concatenated size " + std::to_string(total) +
                     " along axis " + std::to_string(axis_));
  Shape out = in[0];
  out[axis_] = in[1 + index_][axis_];
  return out;
}

Tensor ConcatenateGrad::perform(const std::vector<Tensor>& inputs) const {
  std::vector<Shape> shapes;
  for (const Tensor& t : inputs) shapes.push_back(t.shape());
  Shape out = infer_shape(shapes, {});
  std::int64_t offset = 0;
  for (int i = 0; i < index_; ++i) offset += inputs[1 + i].shape()[axis_];
  // A zero-copy view of g: the op is declared a view (traits), so in-place consumers
  // (destroy analysis looks through views to g) leave g alone while the piece is needed.
  return narrow(inputs[0], axis_, offset, out[axis_]);
}

std::vector<Variable> ConcatenateGrad::vjp(const std::vector<Variable>& inputs, const Variable&,
                                           const Variable& g) const {
  // The piece came from a slice of g: its gradient is g placed there, zeros elsewhere.
  std::vector<Variable> grads(inputs.size());
  if (!is_float(inputs[0].dtype())) return grads;
  std::vector<Variable> parts;
  for (std::size_t i = 1; i < inputs.size(); ++i) {
    if (static_cast<int>(i) == 1 + index_) {
      parts.push_back(g);
    } else {
      Variable z = zeros_like(inputs[i]);
      parts.push_back(z.dtype() == g.dtype() ? z : cast(z, g.dtype()));
    }
  }
  grads[0] = concatenate(parts, axis_);
  return grads;
}

namespace {

int checked_axis(int axis, int ndim, const char* op, const Variable& x, const Loc& loc) {
  if (axis < -ndim || axis >= ndim)
    throw ValueError(api_error(op, loc,
                               "axis " + std::to_string(axis) + " is out of range for " +
                                   x.node()->label() + " of rank " + std::to_string(ndim),
                               {x}));
  return axis < 0 ? axis + ndim : axis;
}

}  // namespace

Variable concatenate(const std::vector<Variable>& xs, int axis, Loc loc) {
  if (xs.empty()) throw ValueError(api_error("concatenate", loc, "needs at least one tensor", {}));
  if (xs[0].ndim() == 0)
    throw ValueError(
        api_error("concatenate", loc, "cannot concatenate scalars (rank 0); use stack", xs));
  int a = checked_axis(axis, xs[0].ndim(), "concatenate", xs[0], loc);
  return apply_op(std::make_shared<Concatenate>(a), xs, loc);
}

Variable stack(const std::vector<Variable>& xs, int axis, Loc loc) {
  if (xs.empty()) throw ValueError(api_error("stack", loc, "needs at least one tensor", {}));
  const int ndim = xs[0].ndim();
  for (const Variable& x : xs)
    if (x.ndim() != ndim)
      throw TypeError(api_error("stack", loc, "all tensors must have the same rank", xs));
  int a = checked_axis(axis, ndim + 1, "stack", xs[0], loc);
  std::vector<int> pattern;
  for (int i = 0; i < ndim; ++i) {
    if (i == a) pattern.push_back(-1);
    pattern.push_back(i);
  }
  if (a == ndim) pattern.push_back(-1);
  std::vector<Variable> parts;
  for (const Variable& x : xs) parts.push_back(dimshuffle(x, pattern, loc));
  return concatenate(parts, a, loc);
}

}  // namespace thea
