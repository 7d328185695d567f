// Reductions (sum, prod, max, min, mean), argmax/argmin and size_of. The reference
// implementations accumulate floats in double: they are the oracle other backends meet.
#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
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

std::string axes_str(const std::vector<int>& axes) {
  // Python's tuple spelling, like shape_str: (1,) and (0, 2).
  return axes.size() == 1 ? fmt::format("({},)", axes[0])
                          : fmt::format("({})", fmt::join(axes, ", "));
}

// The axes a reduction covers: `axes`, or all of them when empty.
std::vector<int> covered_axes(const std::vector<int>& axes, int ndim) {
  if (!axes.empty()) return axes;
  std::vector<int> all(ndim);
  for (int i = 0; i < ndim; ++i) all[i] = i;
  return all;
}

// Axes as stored in ops must be sorted, unique and within [0, ndim).
void check_axes(const std::vector<int>& axes, int ndim) {
  for (std::size_t i = 0; i < axes.size(); ++i) {
    if (axes[i] < 0 || axes[i] >= ndim) {
      throw ValueError(
          fmt::format("axis {} is out of range for a tensor of rank {}", axes[i], ndim));
    }
    if (i > 0 && axes[i] <= axes[i - 1]) {
      throw ValueError(fmt::format("axes {} must be sorted and unique", axes_str(axes)));
    }
  }
}

// Errors found by an API function before it builds a node, formatted as make_apply does.
[[noreturn]] void api_error(const std::string& op, const Loc& loc, const std::string& msg,
                            const Variable& x) {
  throw ValueError(fmt::format("[{}] at {}: {}\n{}", op, SourceSite::from(loc).str(), msg,
                               describe_inputs({x.node()})));
}

void require(const Variable& x, const char* op, const Loc& loc) {
  if (!x) {
    throw ValueError(fmt::format(
        "[{}] at {}: input 0 is an empty Variable (default-constructed, never assigned)", op,
        SourceSite::from(loc).str()));
  }
}

// User axes (negative count from the end; nullopt or empty = all) -> sorted, unique,
// non-negative; all axes become {} so that sum(x) and sum(x, {0, 1}) merge.
std::vector<int> normalize_axes(const Axes& axes, const Variable& x, const char* op,
                                const Loc& loc) {
  const int ndim = x.ndim();
  if (!axes || axes->empty()) return {};
  std::vector<int> out;
  for (int a : *axes) {
    if (a < -ndim || a >= ndim) {
      api_error(op, loc, fmt::format("axis {} is out of range for a tensor of rank {}", a, ndim),
                x);
    }
    out.push_back(a < 0 ? a + ndim : a);
  }
  std::sort(out.begin(), out.end());
  if (std::adjacent_find(out.begin(), out.end()) != out.end()) {
    api_error(op, loc, fmt::format("axes ({}) name the same axis twice", fmt::join(*axes, ", ")),
              x);
  }
  if (static_cast<int>(out.size()) == ndim) return {};
  return out;
}

// Shape left after reducing `axes` (sizes become 1 with keepdims).
Shape reduced_shape(const Shape& in, const std::vector<int>& axes, bool keepdims) {
  const std::vector<int> cov = covered_axes(axes, static_cast<int>(in.size()));
  Shape out;
  for (int i = 0; i < static_cast<int>(in.size()); ++i) {
    const bool reduced = std::find(cov.begin(), cov.end(), i) != cov.end();
    if (!reduced) {
      out.push_back(in[i]);
    } else if (keepdims) {
      out.push_back(1);
    }
  }
  return out;
}

// x viewed as a contiguous (kept, reduced) matrix: kept axes first in order, then reduced.
struct Rows {
  Tensor data;
  std::int64_t m = 1;  // number of outputs
  std::int64_t r = 1;  // elements reduced into each
};

Rows as_rows(const Tensor& x, const std::vector<int>& cov) {
  std::vector<int> perm;
  Rows rows;
  for (int i = 0; i < x.ndim(); ++i) {
    if (std::find(cov.begin(), cov.end(), i) == cov.end()) {
      perm.push_back(i);
      rows.m *= x.shape()[i];
    }
  }
  for (int a : cov) {
    perm.push_back(a);
    rows.r *= x.shape()[a];
  }
  rows.data = x.ndim() == 0 ? x.contiguous() : x.permute(perm).contiguous();
  return rows;
}

Dtype reduce_out_dtype(ReduceKind kind, Dtype in) {
  switch (kind) {
    case ReduceKind::Sum:
    case ReduceKind::Prod:
      return is_float(in) ? in : Dtype::Int64;
    case ReduceKind::Mean:
      return is_float(in) ? in : Dtype::Float64;
    case ReduceKind::Max:
    case ReduceKind::Min:
      break;
  }
  return in;
}

// Inserts a size-1 axis at every reduced position of `g` (shaped like the reduction's
// output without keepdims) so that it broadcasts against the input again.
Variable expand_reduced(const Variable& g, int in_ndim, const std::vector<int>& cov,
                        bool keepdims) {
  if (keepdims || cov.empty() || in_ndim == 0) return g;
  std::vector<int> pattern;
  int k = 0;
  for (int i = 0; i < in_ndim; ++i) {
    const bool reduced = std::find(cov.begin(), cov.end(), i) != cov.end();
    pattern.push_back(reduced ? -1 : k++);
  }
  return dimshuffle(g, pattern);
}

}  // namespace

const char* reduce_kind_name(ReduceKind kind) {
  switch (kind) {
    case ReduceKind::Sum:
      return "sum";
    case ReduceKind::Prod:
      return "prod";
    case ReduceKind::Max:
      return "max";
    case ReduceKind::Min:
      return "min";
    case ReduceKind::Mean:
      return "mean";
  }
  return "reduce";
}

// ---------------------------------------------------------------------------------------
// Reduce
// ---------------------------------------------------------------------------------------

std::string Reduce::name() const { return reduce_kind_name(kind_); }

std::string Reduce::params() const {
  std::string p = axes_.empty() ? std::string() : "axes=" + axes_str(axes_);
  if (keepdims_) p += p.empty() ? "keepdims" : ", keepdims";
  return p;
}

TensorType Reduce::infer_type(const std::vector<NodePtr>& inputs) const {
  if (inputs.size() != 1) {
    throw TypeError(fmt::format("{} takes 1 input, got {}", name(), inputs.size()));
  }
  const TensorType& t = inputs[0]->type;
  check_axes(axes_, t.ndim());
  if (kind_ == ReduceKind::Max || kind_ == ReduceKind::Min) {
    for (int a : covered_axes(axes_, t.ndim())) {
      if (t.shape[a] == 0) {
        throw ValueError(
            fmt::format("zero-size reduction over axis {} of shape {} has no "
                        "identity",
                        a, static_shape_str(t.shape)));
      }
    }
  }
  return {reduce_out_dtype(kind_, t.dtype), reduced_shape(t.shape, axes_, keepdims_)};
}

Shape Reduce::infer_shape(const std::vector<Shape>& in, const std::vector<const Tensor*>&) const {
  if (in.size() != 1) {
    throw TypeError(fmt::format("{} takes 1 input, got {}", name(), in.size()));
  }
  check_axes(axes_, static_cast<int>(in[0].size()));
  return reduced_shape(in[0], axes_, keepdims_);
}

Tensor Reduce::perform(const std::vector<Tensor>& inputs) const {
  const Shape out_shape = infer_shape({inputs.at(0).shape()}, {});
  const Tensor& x = inputs[0];
  const std::vector<int> cov = covered_axes(axes_, x.ndim());
  const Rows rows = as_rows(x, cov);
  const std::int64_t m = rows.m;
  const std::int64_t r = rows.r;
  if ((kind_ == ReduceKind::Max || kind_ == ReduceKind::Min) && r == 0 && m > 0) {
    throw ValueError(fmt::format("zero-size reduction over axes {} of shape {} has no identity",
                                 axes_str(cov), shape_str(x.shape())));
  }
  Tensor out = Tensor::empty(out_shape, reduce_out_dtype(kind_, x.dtype()));
  visit_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    constexpr bool kFloat = std::is_floating_point_v<T>;
    const T* p = rows.data.template data<T>();
    switch (kind_) {
      case ReduceKind::Sum:
      case ReduceKind::Mean:
        for (std::int64_t i = 0; i < m; ++i) {
          const T* row = p + i * r;
          if constexpr (kFloat) {
            double acc = 0;  // double accumulation even for float32: this is the oracle
            for (std::int64_t j = 0; j < r; ++j) acc += static_cast<double>(row[j]);
            out.data<T>()[i] =
                static_cast<T>(kind_ == ReduceKind::Mean ? acc / static_cast<double>(r) : acc);
          } else if (kind_ == ReduceKind::Mean) {
            double acc = 0;
            for (std::int64_t j = 0; j < r; ++j) acc += static_cast<double>(row[j]);
            out.data<double>()[i] = acc / static_cast<double>(r);
          } else {
            std::uint64_t acc = 0;  // unsigned: wraps like numpy instead of overflowing (UB)
            for (std::int64_t j = 0; j < r; ++j) {
              acc += static_cast<std::uint64_t>(static_cast<std::int64_t>(row[j]));
            }
            out.data<std::int64_t>()[i] = static_cast<std::int64_t>(acc);
          }
        }
        break;
      case ReduceKind::Prod:
        for (std::int64_t i = 0; i < m; ++i) {
          const T* row = p + i * r;
          if constexpr (kFloat) {
            double acc = 1;
            for (std::int64_t j = 0; j < r; ++j) acc *= static_cast<double>(row[j]);
            out.data<T>()[i] = static_cast<T>(acc);
          } else {
            std::uint64_t acc = 1;
            for (std::int64_t j = 0; j < r; ++j) {
              acc *= static_cast<std::uint64_t>(static_cast<std::int64_t>(row[j]));
            }
            out.data<std::int64_t>()[i] = static_cast<std::int64_t>(acc);
          }
        }
        break;
      case ReduceKind::Max:
      case ReduceKind::Min: {
        const bool is_max = kind_ == ReduceKind::Max;
        T* o = out.data<T>();
        for (std::int64_t i = 0; i < m; ++i) {
          const T* row = p + i * r;
          T acc = row[0];
          // The preamble's maximum/minimum propagate NaN, as numpy's max/min do.
          for (std::int64_t j = 1; j < r; ++j) {
            acc = is_max ? thea_maximum(acc, row[j]) : thea_minimum(acc, row[j]);
          }
          o[i] = acc;
        }
        break;
      }
    }
  });
  return out;
}

std::vector<Variable> Reduce::vjp(const std::vector<Variable>& inputs, const Variable& output,
                                  const Variable& gout) const {
  const Variable& x = inputs[0];
  if (!is_float(x.dtype())) return {Variable()};
  const std::vector<int> cov = covered_axes(axes_, x.ndim());
  const Variable ge = expand_reduced(gout, x.ndim(), cov, keepdims_);
  Variable gx;
  switch (kind_) {
    case ReduceKind::Sum:
      gx = fill(x, ge);
      break;
    case ReduceKind::Mean: {
      // A constant count when the reduced sizes are static, else counted at run time.
      std::int64_t count = 1;
      bool known = true;
      for (int a : cov) {
        if (x.type().shape[a] == kUnknownDim) known = false;
        count *= std::max<std::int64_t>(x.type().shape[a], 0);
      }
      const Variable n = known
                             ? Variable(static_cast<double>(count))
                             : cast(size_of(x, axes_.empty() ? Axes() : Axes(axes_)), gout.dtype());
      gx = fill(x, true_div(ge, n));
      break;
    }
    case ReduceKind::Max:
    case ReduceKind::Min:
      // Theano's choice: every element equal to the extreme gets the gradient (ties too).
      gx = mul(ge, eq(x, expand_reduced(output, x.ndim(), cov, keepdims_)));
      break;
    case ReduceKind::Prod: {
      // d prod / d x_i is the product of the others (Theano's zero-aware grad, by counting
      // zeros): prod / x_i at non-zeros (0 when the slice has a zero); at a zero, the
      // product of the non-zeros times that of the other zeros: 1 when it is the only one,
      // the other zero (sum of zeros - x_i, 0 but with the right derivative) when there are
      // two, 0 when more. Zeros replaced by 1 before dividing keep inf/NaN out of every
      // branch, so second derivatives are exact too (with up to two zeros per slice).
      const Axes ax = axes_.empty() ? Axes() : Axes(axes_);
      auto expand = [&](const Variable& r) { return expand_reduced(r, x.ndim(), cov, keepdims_); };
      const Variable is_zero = eq(x, 0);
      const Variable x_or_one = switch_(is_zero, 1, x);
      const Variable zeros = expand(sum(is_zero, ax, keepdims_));
      const Variable other_zero = sub(expand(sum(switch_(is_zero, x, 0), ax, keepdims_)), x);
      const Variable other_zeros = switch_(eq(zeros, 1), 1, switch_(eq(zeros, 2), other_zero, 0));
      const Variable at_zero = mul(expand(prod(x_or_one, ax, keepdims_)), other_zeros);
      gx = mul(ge, switch_(is_zero, at_zero, true_div(expand(output), x_or_one)));
      break;
    }
  }
  if (gx.dtype() != x.dtype()) gx = cast(gx, x.dtype());
  return {gx};
}

// ---------------------------------------------------------------------------------------
// ArgReduce
// ---------------------------------------------------------------------------------------

std::string ArgReduce::params() const {
  std::string p = axis_ < 0 ? "axis=all" : fmt::format("axis={}", axis_);
  if (keepdims_) p += ", keepdims";
  return p;
}

namespace {
Shape arg_shape(const Shape& in, int axis, bool keepdims) {
  if (axis < 0) return keepdims ? Shape(in.size(), 1) : Shape{};
  return reduced_shape(in, {axis}, keepdims);
}
}  // namespace

TensorType ArgReduce::infer_type(const std::vector<NodePtr>& inputs) const {
  if (inputs.size() != 1) {
    throw TypeError(fmt::format("{} takes 1 input, got {}", name(), inputs.size()));
  }
  const TensorType& t = inputs[0]->type;
  if (axis_ < -1 || axis_ >= t.ndim()) {
    throw ValueError(
        fmt::format("axis {} is out of range for a tensor of rank {}", axis_, t.ndim()));
  }
  const bool empty = axis_ < 0 ? std::find(t.shape.begin(), t.shape.end(), 0) != t.shape.end()
                               : t.shape[axis_] == 0;
  if (empty) {
    throw ValueError(fmt::format("attempt to get {} of an empty sequence (shape {})", name(),
                                 static_shape_str(t.shape)));
  }
  return {Dtype::Int64, arg_shape(t.shape, axis_, keepdims_)};
}

Shape ArgReduce::infer_shape(const std::vector<Shape>& in,
                             const std::vector<const Tensor*>&) const {
  if (in.size() != 1) {
    throw TypeError(fmt::format("{} takes 1 input, got {}", name(), in.size()));
  }
  if (axis_ < -1 || axis_ >= static_cast<int>(in[0].size())) {
    throw ValueError(
        fmt::format("axis {} is out of range for a tensor of rank {}", axis_, in[0].size()));
  }
  return arg_shape(in[0], axis_, keepdims_);
}

Tensor ArgReduce::perform(const std::vector<Tensor>& inputs) const {
  const Shape out_shape = infer_shape({inputs.at(0).shape()}, {});
  const Tensor& x = inputs[0];
  const Rows rows = axis_ < 0 ? as_rows(x, covered_axes({}, x.ndim())) : as_rows(x, {axis_});
  if (rows.r == 0 && rows.m > 0) {
    throw ValueError(fmt::format("attempt to get {} of an empty sequence (shape {})", name(),
                                 shape_str(x.shape())));
  }
  Tensor out = Tensor::empty(out_shape, Dtype::Int64);
  std::int64_t* o = out.data<std::int64_t>();
  visit_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* p = rows.data.template data<T>();
    for (std::int64_t i = 0; i < rows.m; ++i) {
      const T* row = p + i * rows.r;
      std::int64_t best = 0;
      // numpy: the first NaN wins; otherwise the first occurrence of the extreme.
      bool is_nan = false;
      if constexpr (std::is_floating_point_v<T>) is_nan = row[0] != row[0];
      for (std::int64_t j = 1; j < rows.r && !is_nan; ++j) {
        if constexpr (std::is_floating_point_v<T>) {
          if (row[j] != row[j]) {
            best = j;
            is_nan = true;
            break;
          }
        }
        if (is_max_ ? row[j] > row[best] : row[j] < row[best]) best = j;
      }
      o[i] = best;
    }
  });
  return out;
}

// ---------------------------------------------------------------------------------------
// SizeOf
// ---------------------------------------------------------------------------------------

std::string SizeOf::params() const {
  return axes_.empty() ? std::string() : "axes=" + axes_str(axes_);
}

TensorType SizeOf::infer_type(const std::vector<NodePtr>& inputs) const {
  if (inputs.size() != 1) {
    throw TypeError(fmt::format("size_of takes 1 input, got {}", inputs.size()));
  }
  check_axes(axes_, inputs[0]->type.ndim());
  return {Dtype::Int64, {}};
}

Tensor SizeOf::perform(const std::vector<Tensor>& inputs) const {
  const Tensor& x = inputs.at(0);
  check_axes(axes_, x.ndim());
  std::int64_t n = 1;
  for (int a : covered_axes(axes_, x.ndim())) n *= x.shape()[a];
  return Tensor::from_vector<std::int64_t>({n}, {});
}

// ---------------------------------------------------------------------------------------
// API
// ---------------------------------------------------------------------------------------
namespace {

Variable reduce_api(ReduceKind kind, const Variable& x, const Axes& axes, bool keepdims,
                    const Loc& loc) {
  const char* op = reduce_kind_name(kind);
  require(x, op, loc);
  std::vector<int> ax = normalize_axes(axes, x, op, loc);
  return Variable(
      make_apply(std::make_shared<Reduce>(kind, std::move(ax), keepdims), {x.node()}, loc));
}

Variable arg_api(bool is_max, const Variable& x, std::optional<int> axis, bool keepdims,
                 const Loc& loc) {
  const char* op = is_max ? "argmax" : "argmin";
  require(x, op, loc);
  int a = -1;
  if (axis) {
    const int ndim = x.ndim();
    if (*axis < -ndim || *axis >= ndim) {
      api_error(op, loc,
                fmt::format("axis {} is out of range for a tensor of rank {}", *axis, ndim), x);
    }
    a = *axis < 0 ? *axis + ndim : *axis;
  }
  return Variable(make_apply(std::make_shared<ArgReduce>(is_max, a, keepdims), {x.node()}, loc));
}

}  // namespace

Variable sum(const Variable& x, Axes axes, bool keepdims, Loc loc) {
  return reduce_api(ReduceKind::Sum, x, axes, keepdims, loc);
}
Variable mean(const Variable& x, Axes axes, bool keepdims, Loc loc) {
  return reduce_api(ReduceKind::Mean, x, axes, keepdims, loc);
}
Variable prod(const Variable& x, Axes axes, bool keepdims, Loc loc) {
  return reduce_api(ReduceKind::Prod, x, axes, keepdims, loc);
}
Variable max(const Variable& x, Axes axes, bool keepdims, Loc loc) {
  return reduce_api(ReduceKind::Max, x, axes, keepdims, loc);
}
Variable min(const Variable& x, Axes axes, bool keepdims, Loc loc) {
  return reduce_api(ReduceKind::Min, x, axes, keepdims, loc);
}
Variable sum(const Variable& x, int axis, bool keepdims, Loc loc) {
  return reduce_api(ReduceKind::Sum, x, std::vector<int>{axis}, keepdims, loc);
}
Variable mean(const Variable& x, int axis, bool keepdims, Loc loc) {
  return reduce_api(ReduceKind::Mean, x, std::vector<int>{axis}, keepdims, loc);
}
Variable max(const Variable& x, int axis, bool keepdims, Loc loc) {
  return reduce_api(ReduceKind::Max, x, std::vector<int>{axis}, keepdims, loc);
}
Variable min(const Variable& x, int axis, bool keepdims, Loc loc) {
  return reduce_api(ReduceKind::Min, x, std::vector<int>{axis}, keepdims, loc);
}
Variable prod(const Variable& x, int axis, bool keepdims, Loc loc) {
  return reduce_api(ReduceKind::Prod, x, std::vector<int>{axis}, keepdims, loc);
}

Variable argmax(const Variable& x, std::optional<int> axis, bool keepdims, Loc loc) {
  return arg_api(true, x, axis, keepdims, loc);
}
Variable argmin(const Variable& x, std::optional<int> axis, bool keepdims, Loc loc) {
  return arg_api(false, x, axis, keepdims, loc);
}

Variable size_of(const Variable& x, Axes axes, Loc loc) {
  require(x, "size_of", loc);
  std::vector<int> ax = normalize_axes(axes, x, "size_of", loc);
  return Variable(make_apply(std::make_shared<SizeOf>(std::move(ax)), {x.node()}, loc));
}

}  // namespace thea
