// Indexing ops: basic indexing (Subtensor, a zero-copy view; IncSubtensor writes through
// it), row gather (Take) and its scatter-add (IncRows), and OneHot. Slices follow numpy:
// negative bounds count from the end, out-of-range bounds clamp, steps may be negative.
#include <algorithm>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "thea/error.hpp"
#include "thea/grad.hpp"
#include "thea/ops/api.hpp"
#include "thea/ops/ops.hpp"
#include "thea/ops/slice.hpp"

namespace thea {

// CPython's PySlice_AdjustIndices (see thea/ops/slice.hpp).
SliceRange resolve_slice(std::optional<std::int64_t> start, std::optional<std::int64_t> stop,
                         std::optional<std::int64_t> step, std::int64_t dim) {
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
  constexpr std::int64_t kMin = std::numeric_limits<std::int64_t>::min();
  SliceRange r;
  r.step = step.value_or(1);
  if (r.step == 0) throw ValueError("slice step cannot be zero");
  std::int64_t b = start.value_or(r.step < 0 ? kMax : 0);
  std::int64_t e = stop.value_or(r.step < 0 ? kMin : kMax);
  auto adjust = [&](std::int64_t& v) {
    if (v < 0) {
      v += dim;
      if (v < 0) v = r.step < 0 ? -1 : 0;
    } else if (v >= dim) {
      v = r.step < 0 ? dim - 1 : dim;
    }
  };
  adjust(b);
  adjust(e);
  if (r.step < 0)
    r.length = e < b ? (b - e - 1) / (-r.step) + 1 : 0;
  else
    r.length = b < e ? (e - b - 1) / r.step + 1 : 0;
  r.start = b;
  return r;
}

namespace {

using Bound = IndexSpec::Bound;

Variable apply_nodes(OpPtr op, std::vector<NodePtr> nodes, const Loc& loc) {
  return Variable(make_apply(std::move(op), std::move(nodes), loc));
}

// ---- index specs ----

std::string bound_str(const Bound& b) {
  switch (b.kind) {
    case Bound::Kind::None:
      return "";
    case Bound::Kind::Const:
      return std::to_string(b.value);
    case Bound::Kind::Input:
      return "$" + std::to_string(b.input);
  }
  return "";
}

std::string index_str(const std::vector<IndexSpec>& index) {
  std::string s;
  for (std::size_t i = 0; i < index.size(); ++i) {
    if (i) s += ", ";
    const IndexSpec& e = index[i];
    if (e.kind == IndexSpec::Kind::Index) {
      s += bound_str(e.start);
    } else {
      s += bound_str(e.start) + ":" + bound_str(e.stop);
      if (e.step.kind != Bound::Kind::None) s += ":" + bound_str(e.step);
    }
  }
  return s;
}

// The same index with its symbolic bounds moved `delta` positions in the node's inputs
// (Subtensor's bounds start at input 1, IncSubtensor's at input 2).
std::vector<IndexSpec> shift_inputs(std::vector<IndexSpec> index, int delta) {
  for (IndexSpec& e : index)
    for (Bound* b : {&e.start, &e.stop, &e.step})
      if (b->kind == Bound::Kind::Input) b->input += delta;
  return index;
}

std::vector<int> bound_inputs(const std::vector<IndexSpec>& index) {
  std::vector<int> out;
  for (const IndexSpec& e : index)
    for (const Bound* b : {&e.start, &e.stop, &e.step})
      if (b->kind == Bound::Kind::Input && std::find(out.begin(), out.end(), b->input) == out.end())
        out.push_back(b->input);
  return out;
}

// Translates the user's IndexEntry list into specs; symbolic bounds become extra inputs
// (the same variable used twice is one input), integer constants are folded in.
class IndexBuilder {
 public:
  explicit IndexBuilder(int first_input) : first_(first_input) {}

  std::vector<IndexSpec> build(const std::vector<IndexEntry>& entries) {
    std::vector<IndexSpec> specs;
    for (const IndexEntry& entry : entries) {
      IndexSpec spec;
      if (const Variable* v = std::get_if<Variable>(&entry)) {
        spec.kind = IndexSpec::Kind::Index;
        spec.start = bound(*v);
      } else {
        const Slice& s = std::get<Slice>(entry);
        spec.kind = IndexSpec::Kind::Slice;
        if (s.start) spec.start = bound(*s.start);
        if (s.stop) spec.stop = bound(*s.stop);
        if (s.step) spec.step = bound(*s.step);
      }
      specs.push_back(spec);
    }
    return specs;
  }
  const std::vector<NodePtr>& extra_inputs() const { return extra_; }

 private:
  Bound bound(const Variable& v) {
    const NodePtr& n = v.node();
    if (!n) throw ValueError("an index or slice bound is an empty Variable");
    Bound b;
    if (n->kind == NodeKind::Constant && n->type.ndim() == 0 && is_integer(n->type.dtype)) {
      b.kind = Bound::Kind::Const;
      b.value = n->value.item<std::int64_t>();
      return b;
    }
    // Anything else (also a non-integer constant) becomes an input, so that type
    // inference reports it with the op, the variable and the call site.
    b.kind = Bound::Kind::Input;
    auto it = std::find(extra_.begin(), extra_.end(), n);
    if (it == extra_.end()) it = extra_.insert(extra_.end(), n);
    b.input = first_ + static_cast<int>(it - extra_.begin());
    return b;
  }

  int first_;
  std::vector<NodePtr> extra_;
};

// Where index `spec` puts a view into a tensor of shape/strides: offset (in elements,
// relative to the tensor's), shape and strides. `value_of(input)` gives a bound's value.
struct Region {
  std::int64_t offset = 0;
  Shape shape;
  Strides strides;
};

template <class ValueOf>
Region region_of(const std::vector<IndexSpec>& index, const Shape& shape, const Strides& strides,
                 ValueOf value_of) {
  if (index.size() > shape.size())
    throw ValueError("too many indices (" + std::to_string(index.size()) +
                     ") for a tensor of shape " + shape_str(shape));
  auto value = [&](const Bound& b) -> std::optional<std::int64_t> {
    switch (b.kind) {
      case Bound::Kind::None:
        return std::nullopt;
      case Bound::Kind::Const:
        return b.value;
      case Bound::Kind::Input:
        return value_of(b.input);
    }
    return std::nullopt;
  };
  Region r;
  for (std::size_t axis = 0; axis < shape.size(); ++axis) {
    const std::int64_t dim = shape[axis];
    if (axis >= index.size()) {
      r.shape.push_back(dim);
      r.strides.push_back(strides[axis]);
      continue;
    }
    const IndexSpec& e = index[axis];
    if (e.kind == IndexSpec::Kind::Index) {
      std::int64_t i = value(e.start).value_or(0);
      std::int64_t j = i < 0 ? i + dim : i;
      if (j < 0 || j >= dim)
        throw ValueError("index " + std::to_string(i) + " is out of bounds for axis " +
                         std::to_string(axis) + " with size " + std::to_string(dim) +
                         " (tensor shape " + shape_str(shape) + ")");
      r.offset += j * strides[axis];
      continue;
    }
    SliceRange s = resolve_slice(value(e.start), value(e.stop), value(e.step), dim);
    if (s.length > 0) r.offset += s.start * strides[axis];
    r.shape.push_back(s.length);
    r.strides.push_back(strides[axis] * s.step);
  }
  return r;
}

// Static shape of x[index], with sizes known where x's size and all the bounds are.
Shape static_region_shape(const std::vector<IndexSpec>& index, const std::vector<NodePtr>& inputs,
                          int first_bound) {
  const TensorType& x = inputs[0]->type;
  if (index.size() > static_cast<std::size_t>(x.ndim()))
    throw ValueError("too many indices (" + std::to_string(index.size()) + ") for " +
                     inputs[0]->label() + " of rank " + std::to_string(x.ndim()));
  for (int pos : bound_inputs(index)) {
    if (pos < first_bound || pos >= static_cast<int>(inputs.size()))
      throw ValueError("index bound refers to input " + std::to_string(pos) + ", which the node " +
                       "does not have");
    const TensorType& t = inputs[pos]->type;
    if (t.ndim() != 0 || !is_integer(t.dtype))
      throw TypeError("index and slice bounds must be integer scalars, but " +
                      inputs[pos]->label() + " is " + t.str());
  }
  Shape out;
  for (int axis = 0; axis < x.ndim(); ++axis) {
    const std::int64_t dim = x.shape[axis];
    if (axis >= static_cast<int>(index.size())) {
      out.push_back(dim);
      continue;
    }
    const IndexSpec& e = index[axis];
    if (e.kind == IndexSpec::Kind::Index) {
      if (e.start.kind == Bound::Kind::Const && dim != kUnknownDim) {
        std::int64_t i = e.start.value;
        if (i < -dim || i >= dim)
          throw ValueError("index " + std::to_string(i) + " is out of bounds for axis " +
                           std::to_string(axis) + " of " + inputs[0]->label() + ", of size " +
                           std::to_string(dim));
      }
      continue;
    }
    if (e.step.kind == Bound::Kind::Const && e.step.value == 0)
      throw ValueError("slice step cannot be zero (axis " + std::to_string(axis) + ")");
    auto known = [](const Bound& b) { return b.kind != Bound::Kind::Input; };
    auto opt = [](const Bound& b) {
      return b.kind == Bound::Kind::Const ? std::optional<std::int64_t>(b.value) : std::nullopt;
    };
    if (dim != kUnknownDim && known(e.start) && known(e.stop) && known(e.step))
      out.push_back(resolve_slice(opt(e.start), opt(e.stop), opt(e.step), dim).length);
    else
      out.push_back(kUnknownDim);
  }
  return out;
}

// y may be stored in a dtype of the same kind or narrower than x's (or be a literal).
void check_update_dtype(const NodePtr& x, const NodePtr& y) {
  Dtype xd = x->type.dtype, yd = y->type.dtype;
  bool ok = y->weak_literal || promote(xd, yd) == xd || (is_float(xd) && !is_float(yd));
  if (!ok)
    throw TypeError("the value " + y->label() + " (" + dtype_name(yd) + ") would be downcast to " +
                    x->label() + "'s dtype " + dtype_name(xd) + "; cast it explicitly");
}

// y must broadcast to the region it is written into (numpy rules, y's rank <= region's).
void check_broadcast_static(const NodePtr& y, const Shape& region, const std::string& where) {
  const Shape& ys = y->type.shape;
  bool ok = ys.size() <= region.size();
  for (std::size_t i = 0; ok && i < ys.size(); ++i) {
    std::int64_t yd = ys[ys.size() - 1 - i], rd = region[region.size() - 1 - i];
    ok = yd == kUnknownDim || rd == kUnknownDim || yd == 1 || yd == rd;
  }
  if (!ok)
    throw ShapeError("cannot broadcast " + y->label() + " of shape " + static_shape_str(ys) +
                     " to " + where + " of shape " + static_shape_str(region));
}

// View of y broadcast to `shape` (stride 0 along stretched axes).
Tensor broadcast_view(const Tensor& y, const Shape& shape) {
  const std::size_t n = shape.size(), ny = y.shape().size();
  bool ok = ny <= n;
  Strides strides(n, 0);
  for (std::size_t i = 0; ok && i < ny; ++i) {
    std::int64_t yd = y.shape()[ny - 1 - i], d = shape[n - 1 - i];
    if (yd == d)
      strides[n - 1 - i] = y.strides()[ny - 1 - i];
    else
      ok = yd == 1;
  }
  if (!ok)
    throw ShapeError("cannot broadcast a value of shape " + shape_str(y.shape()) +
                     " to the indexed region's shape " + shape_str(shape));
  return Tensor(y.storage(), y.offset(), shape, std::move(strides), y.dtype());
}

// dst[i] = f(dst[i], src[i]) over two same-shaped, same-dtype strided views.
template <class F>
void update_strided(Tensor& dst, const Tensor& src, F f) {
  visit_dtype(dst.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* d = dst.data<T>();
    const T* s = src.data<T>();
    const Shape& shape = dst.shape();
    const int nd = static_cast<int>(shape.size());
    if (dst.numel() == 0) return;
    std::vector<std::int64_t> idx(nd, 0);
    std::int64_t od = 0, os = 0;
    while (true) {
      d[od] = static_cast<T>(f(d[od], s[os]));
      int k = nd - 1;
      for (; k >= 0; --k) {
        od += dst.strides()[k];
        os += src.strides()[k];
        if (++idx[k] < shape[k]) break;
        od -= dst.strides()[k] * shape[k];
        os -= src.strides()[k] * shape[k];
        idx[k] = 0;
      }
      if (k < 0) break;
    }
  });
}

void write_region(Tensor& region, const Tensor& y, bool set) {
  if (set)
    update_strided(region, y, [](auto, auto b) { return b; });
  else
    update_strided(region, y, [](auto a, auto b) { return a + b; });
}

std::int64_t bound_value(const Tensor& t) { return t.item<std::int64_t>(); }

// An integer index vector as contiguous int64.
Tensor as_int64(const Tensor& t) {
  return (t.dtype() == Dtype::Int64 ? t : t.astype(Dtype::Int64)).contiguous();
}

void check_index_vector(const NodePtr& idx, const char* what) {
  const TensorType& t = idx->type;
  if (t.ndim() != 1 || !is_integer(t.dtype))
    throw TypeError(std::string(what) + " must be an integer vector, but " + idx->label() + " is " +
                    t.str());
}

// Checks and wraps one gathered/scattered row index.
std::int64_t row_index(std::int64_t i, std::int64_t k, std::int64_t rows, const Shape& x_shape) {
  std::int64_t j = i < 0 ? i + rows : i;
  if (j < 0 || j >= rows)
    throw ValueError("index " + std::to_string(i) + " (at position " + std::to_string(k) +
                     " of the indices) is out of bounds for axis 0 with size " +
                     std::to_string(rows) + " (x has shape " + shape_str(x_shape) + ")");
  return j;
}

Variable grad_as(const Variable& g, const Variable& like) {
  return g.dtype() == like.dtype() ? g : cast(g, like.dtype());
}

}  // namespace

// ---------------------------------------------------------------- Subtensor

std::string Subtensor::params() const { return index_str(index_); }

std::vector<int> Subtensor::value_inputs() const { return bound_inputs(index_); }

TensorType Subtensor::infer_type(const std::vector<NodePtr>& inputs) const {
  if (inputs.empty()) throw ValueError("expects the tensor to index as input 0");
  return {inputs[0]->type.dtype, static_region_shape(index_, inputs, 1)};
}

Shape Subtensor::infer_shape(const std::vector<Shape>& in,
                             const std::vector<const Tensor*>& values) const {
  auto value_of = [&](int pos) -> std::int64_t {
    if (pos >= static_cast<int>(values.size()) || !values[pos])
      throw ValueError("subtensor{" + params() + "}: the value of bound input " +
                       std::to_string(pos) + " is needed to infer the output shape");
    return bound_value(*values[pos]);
  };
  return region_of(index_, in.at(0), Strides(in[0].size(), 0), value_of).shape;
}

Tensor Subtensor::perform(const std::vector<Tensor>& inputs) const {
  const Tensor& x = inputs.at(0);
  Region r = region_of(index_, x.shape(), x.strides(),
                       [&](int pos) { return bound_value(inputs.at(pos)); });
  return Tensor(x.storage(), x.offset() + r.offset, std::move(r.shape), std::move(r.strides),
                x.dtype());
}

std::vector<Variable> Subtensor::vjp(const std::vector<Variable>& inputs, const Variable&,
                                     const Variable& g) const {
  std::vector<Variable> grads(inputs.size());
  const Variable& x = inputs[0];
  if (!is_float(x.dtype())) return grads;
  std::vector<NodePtr> nodes{zeros_like(x).node(), g.node()};
  for (std::size_t i = 1; i < inputs.size(); ++i) nodes.push_back(inputs[i].node());
  grads[0] = apply_nodes(std::make_shared<IncSubtensor>(shift_inputs(index_, 1), false),
                         std::move(nodes), Loc::current());
  return grads;
}

Variable subtensor(const Variable& x, const std::vector<IndexEntry>& index, Loc loc) {
  IndexBuilder builder(1);
  std::vector<IndexSpec> specs = builder.build(index);
  std::vector<NodePtr> nodes{x.node()};
  for (const NodePtr& n : builder.extra_inputs()) nodes.push_back(n);
  return apply_nodes(std::make_shared<Subtensor>(std::move(specs)), std::move(nodes), loc);
}

// ---------------------------------------------------------------- IncSubtensor

std::string IncSubtensor::params() const { return index_str(index_); }

std::vector<int> IncSubtensor::value_inputs() const { return bound_inputs(index_); }

TensorType IncSubtensor::infer_type(const std::vector<NodePtr>& inputs) const {
  if (inputs.size() < 2) throw ValueError("expects inputs (x, y, bounds...)");
  Shape region = static_region_shape(index_, inputs, 2);
  check_update_dtype(inputs[0], inputs[1]);
  check_broadcast_static(inputs[1], region,
                         "the region " + inputs[0]->label() + "[" + index_str(index_) + "]");
  return inputs[0]->type;
}

Shape IncSubtensor::infer_shape(const std::vector<Shape>& in,
                                const std::vector<const Tensor*>&) const {
  return in.at(0);
}

Tensor IncSubtensor::perform(const std::vector<Tensor>& inputs) const {
  const Tensor& x = inputs.at(0);
  const Tensor& y = inputs.at(1);
  Tensor out = x.clone();
  Region r = region_of(index_, out.shape(), out.strides(),
                       [&](int pos) { return bound_value(inputs.at(pos)); });
  Tensor region(out.storage(), out.offset() + r.offset, r.shape, r.strides, out.dtype());
  Tensor yv = y.dtype() == x.dtype() ? y : y.astype(x.dtype());
  write_region(region, broadcast_view(yv, r.shape), set_);
  return out;
}

std::vector<Variable> IncSubtensor::vjp(const std::vector<Variable>& inputs, const Variable&,
                                        const Variable& g) const {
  std::vector<Variable> grads(inputs.size());
  const Variable& x = inputs[0];
  const Variable& y = inputs[1];
  std::vector<NodePtr> bounds;
  for (std::size_t i = 2; i < inputs.size(); ++i) bounds.push_back(inputs[i].node());
  if (is_float(x.dtype())) {
    if (set_) {
      // Overwritten values do not reach the output: their gradient is zero.
      std::vector<NodePtr> nodes{g.node(), Variable(0.0).node()};
      nodes.insert(nodes.end(), bounds.begin(), bounds.end());
      grads[0] = apply_nodes(std::make_shared<IncSubtensor>(index_, true), std::move(nodes),
                             Loc::current());
    } else {
      grads[0] = g;
    }
  }
  if (is_float(y.dtype())) {
    std::vector<NodePtr> nodes{g.node()};
    nodes.insert(nodes.end(), bounds.begin(), bounds.end());
    Variable gy = apply_nodes(std::make_shared<Subtensor>(shift_inputs(index_, -1)),
                              std::move(nodes), Loc::current());
    grads[1] = grad_as(sum_to_type(gy, y.type()), y);
  }
  return grads;
}

namespace {

Variable make_inc_subtensor(const Variable& x, const std::vector<IndexEntry>& index,
                            const Variable& y, bool set, const Loc& loc) {
  IndexBuilder builder(2);
  std::vector<IndexSpec> specs = builder.build(index);
  std::vector<NodePtr> nodes{x.node(), y.node()};
  for (const NodePtr& n : builder.extra_inputs()) nodes.push_back(n);
  return apply_nodes(std::make_shared<IncSubtensor>(std::move(specs), set), std::move(nodes), loc);
}

}  // namespace

Variable inc_subtensor(const Variable& x, const std::vector<IndexEntry>& index, const Variable& y,
                       Loc loc) {
  return make_inc_subtensor(x, index, y, false, loc);
}

Variable set_subtensor(const Variable& x, const std::vector<IndexEntry>& index, const Variable& y,
                       Loc loc) {
  return make_inc_subtensor(x, index, y, true, loc);
}

// ---------------------------------------------------------------- Take

TensorType Take::infer_type(const std::vector<NodePtr>& inputs) const {
  if (inputs.size() != 2) throw ValueError("expects inputs (x, indices)");
  const TensorType& x = inputs[0]->type;
  if (x.ndim() < 1) throw TypeError("cannot take rows of " + inputs[0]->label() + ", a " + x.str());
  check_index_vector(inputs[1], "the indices");
  // Constant indices are checked now, not at the first call.
  if (inputs[1]->kind == NodeKind::Constant && x.shape[0] != kUnknownDim) {
    Tensor idx = as_int64(inputs[1]->value);
    for (std::int64_t k = 0; k < idx.numel(); ++k) {
      std::int64_t i = idx.data<std::int64_t>()[k];
      if (i < -x.shape[0] || i >= x.shape[0])
        throw ValueError("index " + std::to_string(i) + " (at position " + std::to_string(k) +
                         ") is out of bounds for axis 0 of " + inputs[0]->label() + ", of size " +
                         std::to_string(x.shape[0]));
    }
  }
  Shape out{inputs[1]->type.shape[0]};
  out.insert(out.end(), x.shape.begin() + 1, x.shape.end());
  return {x.dtype, out};
}

Shape Take::infer_shape(const std::vector<Shape>& in, const std::vector<const Tensor*>&) const {
  Shape out{in.at(1).at(0)};
  out.insert(out.end(), in.at(0).begin() + 1, in[0].end());
  return out;
}

Tensor Take::perform(const std::vector<Tensor>& inputs) const {
  const Tensor x = inputs.at(0).contiguous();
  const Tensor idx = as_int64(inputs.at(1));
  Tensor out = Tensor::empty(infer_shape({x.shape(), idx.shape()}, {}), x.dtype());
  const std::int64_t rows = x.shape()[0];
  const std::int64_t n = idx.numel();
  const std::size_t row_bytes =
      static_cast<std::size_t>(out.numel() / std::max<std::int64_t>(n, 1)) * dtype_size(x.dtype());
  const std::int64_t* ip = idx.data<std::int64_t>();
  const char* src = static_cast<const char*>(x.raw_data());
  char* dst = static_cast<char*>(out.raw_data());
  for (std::int64_t k = 0; k < n; ++k) {
    std::int64_t i = row_index(ip[k], k, rows, x.shape());
    if (row_bytes) std::memcpy(dst + k * row_bytes, src + i * row_bytes, row_bytes);
  }
  return out;
}

std::vector<Variable> Take::vjp(const std::vector<Variable>& inputs, const Variable&,
                                const Variable& g) const {
  const Variable& x = inputs[0];
  if (!is_float(x.dtype())) return {Variable(), Variable()};
  return {inc_rows(zeros_like(x), inputs[1], g), Variable()};
}

Variable take(const Variable& x, const Variable& indices, Loc loc) {
  return apply_nodes(std::make_shared<Take>(), {x.node(), indices.node()}, loc);
}

// ---------------------------------------------------------------- IncRows

TensorType IncRows::infer_type(const std::vector<NodePtr>& inputs) const {
  if (inputs.size() != 3) throw ValueError("expects inputs (x, indices, y)");
  const TensorType& x = inputs[0]->type;
  if (x.ndim() < 1)
    throw TypeError("cannot add into rows of " + inputs[0]->label() + ", a " + x.str());
  check_index_vector(inputs[1], "the indices");
  check_update_dtype(inputs[0], inputs[2]);
  Shape rows{inputs[1]->type.shape[0]};
  rows.insert(rows.end(), x.shape.begin() + 1, x.shape.end());
  check_broadcast_static(inputs[2], rows, "the selected rows of " + inputs[0]->label());
  return x;
}

Shape IncRows::infer_shape(const std::vector<Shape>& in, const std::vector<const Tensor*>&) const {
  return in.at(0);
}

Tensor IncRows::perform(const std::vector<Tensor>& inputs) const {
  const Tensor& x = inputs.at(0);
  const Tensor idx = as_int64(inputs.at(1));
  const Tensor& y = inputs.at(2);
  Tensor out = x.clone();
  const std::int64_t n = idx.numel();
  Shape rows_shape{n};
  rows_shape.insert(rows_shape.end(), x.shape().begin() + 1, x.shape().end());
  Tensor yb = broadcast_view(y.dtype() == x.dtype() ? y : y.astype(x.dtype()), rows_shape);
  const Shape row_shape(x.shape().begin() + 1, x.shape().end());
  const Strides out_row_strides(out.strides().begin() + 1, out.strides().end());
  const Strides y_row_strides(yb.strides().begin() + 1, yb.strides().end());
  const std::int64_t* ip = idx.data<std::int64_t>();
  for (std::int64_t k = 0; k < n; ++k) {
    std::int64_t i = row_index(ip[k], k, x.shape()[0], x.shape());
    Tensor dst(out.storage(), out.offset() + i * out.strides()[0], row_shape, out_row_strides,
               out.dtype());
    Tensor src(yb.storage(), yb.offset() + k * yb.strides()[0], row_shape, y_row_strides,
               yb.dtype());
    write_region(dst, src, /*set=*/false);
  }
  return out;
}

std::vector<Variable> IncRows::vjp(const std::vector<Variable>& inputs, const Variable&,
                                   const Variable& g) const {
  std::vector<Variable> grads(3);
  if (is_float(inputs[0].dtype())) grads[0] = g;
  if (is_float(inputs[2].dtype()))
    grads[2] = grad_as(sum_to_type(take(g, inputs[1]), inputs[2].type()), inputs[2]);
  return grads;
}

Variable inc_rows(const Variable& x, const Variable& indices, const Variable& y, Loc loc) {
  return apply_nodes(std::make_shared<IncRows>(), {x.node(), indices.node(), y.node()}, loc);
}

// ---------------------------------------------------------------- OneHot

std::string OneHot::params() const {
  return "num_classes=" + std::to_string(num_classes_) + ", dtype=" + dtype_name(dtype_);
}

TensorType OneHot::infer_type(const std::vector<NodePtr>& inputs) const {
  if (inputs.size() != 1) throw ValueError("expects one input (the labels)");
  check_index_vector(inputs[0], "the labels");
  if (num_classes_ <= 0)
    throw ValueError("num_classes must be positive, got " + std::to_string(num_classes_));
  return {dtype_, {inputs[0]->type.shape[0], num_classes_}};
}

Shape OneHot::infer_shape(const std::vector<Shape>& in, const std::vector<const Tensor*>&) const {
  return {in.at(0).at(0), num_classes_};
}

Tensor OneHot::perform(const std::vector<Tensor>& inputs) const {
  const Tensor labels = as_int64(inputs.at(0));
  const std::int64_t n = labels.numel();
  Tensor out = Tensor::zeros({n, num_classes_}, dtype_);
  const std::int64_t* lp = labels.data<std::int64_t>();
  visit_dtype(dtype_, [&](auto tag) {
    using T = decltype(tag);
    T* o = out.data<T>();
    for (std::int64_t k = 0; k < n; ++k) {
      if (lp[k] < 0 || lp[k] >= num_classes_)
        throw ValueError("label " + std::to_string(lp[k]) + " at position " + std::to_string(k) +
                         " is outside [0, " + std::to_string(num_classes_) + ")");
      o[k * num_classes_ + lp[k]] = static_cast<T>(1);
    }
  });
  return out;
}

Variable one_hot(const Variable& labels, std::int64_t num_classes, Dtype dtype, Loc loc) {
  return apply_nodes(std::make_shared<OneHot>(num_classes, dtype), {labels.node()}, loc);
}

}  // namespace thea
