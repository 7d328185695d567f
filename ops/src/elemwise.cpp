// Elemwise: one scalar op from the table in scalar.cpp applied pointwise over inputs
// broadcast together. The reference perform() evaluates the functors of the shared
// preamble (thea_scalar.h), so it computes exactly what the generated kernels compute.
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "thea/error.hpp"
#include "thea/grad.hpp"
#include "thea/ops/api.hpp"
#include "thea/ops/ops.hpp"
// bool operands are multiplied as numpy does (True * True is True); the warning about
// '*' on bools in the shared preamble is expected there.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wint-in-bool-context"
#include "thea_scalar.h"
#pragma GCC diagnostic pop
#else
#include "thea_scalar.h"
#endif

namespace thea {

// ---------------------------------------------------------------------------------------
// Broadcasting and axis helpers (shared by every op family).
// ---------------------------------------------------------------------------------------
namespace {

std::string shapes_list(const std::vector<Shape>& shapes, bool runtime) {
  std::string out;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    if (i > 0) out += (i + 1 == shapes.size()) ? " and " : ", ";
    out += runtime ? shape_str(shapes[i]) : static_shape_str(shapes[i]);
  }
  return out;
}

// numpy broadcasting; in static shapes kUnknownDim is a size known only at run time,
// which must then match the other (non-1) sizes of its axis.
Shape broadcast_impl(const std::vector<Shape>& shapes, bool runtime) {
  std::size_t rank = 0;
  for (const Shape& s : shapes) rank = std::max(rank, s.size());
  Shape out(rank, 1);
  for (std::size_t d = 0; d < rank; ++d) {
    std::int64_t size = 1;
    bool unknown = false;
    for (const Shape& s : shapes) {
      if (s.size() + d < rank) continue;  // left padding: an implicit size-1 axis
      const std::int64_t v = s[d - (rank - s.size())];
      if (v == 1) continue;
      if (v == kUnknownDim && !runtime) {
        unknown = true;
        continue;
      }
      if (size == 1) {
        size = v;
      } else if (size != v) {
        throw ShapeError(fmt::format("cannot broadcast shapes {} (axis {} of the result: {} vs {})",
                                     shapes_list(shapes, runtime), d, size, v));
      }
    }
    out[d] = (size == 1 && unknown) ? kUnknownDim : size;
  }
  return out;
}

}  // namespace

Shape broadcast_static(const std::vector<Shape>& shapes) { return broadcast_impl(shapes, false); }
Shape broadcast_runtime(const std::vector<Shape>& shapes) { return broadcast_impl(shapes, true); }

int normalize_axis(int axis, int ndim, const char* op_name) {
  if (axis < -ndim || axis >= ndim) {
    throw ValueError(
        fmt::format("[{}] axis {} is out of range for a tensor of rank {}", op_name, axis, ndim));
  }
  return axis < 0 ? axis + ndim : axis;
}

// ---------------------------------------------------------------------------------------
// Dtype rules.
// ---------------------------------------------------------------------------------------
namespace {

using ScalarKind = ScalarOutKind;

// Operands whose values make the output (Switch's condition and Second's shape-giver do not).
std::vector<int> value_operands(ScalarOp op, int n) {
  if (op == ScalarOp::Switch) return {1, 2};
  if (op == ScalarOp::Second) return {1};
  std::vector<int> idx(n);
  for (int i = 0; i < n; ++i) idx[i] = i;
  return idx;
}

// Operands a weak literal adopts its dtype from: the value operands, plus Second's
// shape-giver (fill(x, 0.5) takes x's float type).
std::vector<int> context_operands(ScalarOp op, int n) {
  if (op == ScalarOp::Second) return {0, 1};
  return value_operands(op, n);
}

int dtype_kind(Dtype d) { return d == Dtype::Bool ? 0 : (is_float(d) ? 2 : 1); }

// The dtype each input takes part with: a weak literal adopts the promoted dtype of the
// non-weak context operands when it is of the same or a lower kind (bool < int < float),
// so g * 0.05 stays float32 and x + 1 stays int32, but ivector * 0.5 is float64.
std::vector<Dtype> effective_dtypes(ScalarOp op, const std::vector<NodePtr>& in) {
  const int n = static_cast<int>(in.size());
  std::vector<Dtype> dt(n);
  for (int i = 0; i < n; ++i) dt[i] = in[i]->type.dtype;
  bool have_strong = false;
  Dtype strong = Dtype::Bool;
  for (int i : context_operands(op, n)) {
    if (i >= n || in[i]->weak_literal) continue;
    strong = have_strong ? promote(strong, dt[i]) : dt[i];
    have_strong = true;
  }
  if (!have_strong) return dt;  // all weak: literals keep their own dtypes
  for (int i : context_operands(op, n)) {
    if (i < n && in[i]->weak_literal && dtype_kind(dt[i]) <= dtype_kind(strong)) dt[i] = strong;
  }
  return dt;
}

struct DtypePlan {
  Dtype compute;  // dtype the value operands are converted to and the functor runs in
  Dtype out;
};

// The one place that maps input dtypes to the computation and output dtypes; used by
// infer_type (on effective dtypes) and perform (on the actual tensors).
DtypePlan plan_dtypes(ScalarOp op, Dtype cast_to, const std::vector<Dtype>& dt) {
  const ScalarOpInfo& info = scalar_info(op);
  const std::vector<int> vals = value_operands(op, static_cast<int>(dt.size()));
  Dtype p = dt[vals[0]];
  for (std::size_t k = 1; k < vals.size(); ++k) p = promote(p, dt[vals[k]]);
  switch (info.out) {
    case ScalarKind::Same:
      if (p == Dtype::Bool && (op == ScalarOp::Neg || op == ScalarOp::Sub)) {
        throw TypeError(fmt::format(
            "{} is not defined for bool operands (as in numpy); use logical_not/logical_and or "
            "cast first",
            info.name));
      }
      return {p, p};
    case ScalarKind::Float: {
      const Dtype f = is_float(p) ? p : Dtype::Float64;
      return {f, f};
    }
    case ScalarKind::Bool:
      return {p, Dtype::Bool};
    case ScalarKind::Explicit:
      return {dt[0], cast_to};
    case ScalarKind::Last:
      return {p, p};
  }
  return {p, p};
}

// ---------------------------------------------------------------------------------------
// The N-d strided loop used by perform.
// ---------------------------------------------------------------------------------------

// Operand 0 is the (contiguous) output, the others are inputs with stride 0 along
// broadcast axes. Size-1 axes are dropped and axes that are contiguous for every
// operand merged, so most loops become one long contiguous row.
struct LoopPlan {
  Shape shape;
  std::vector<Strides> strides;  // [operand][axis], in elements
};

LoopPlan make_plan(const Tensor& out, const std::vector<const Tensor*>& ins) {
  const Shape& full = out.shape();
  const std::size_t rank = full.size();
  std::vector<Strides> st;
  st.push_back(out.strides());
  for (const Tensor* t : ins) {
    Strides s(rank, 0);
    const std::size_t r = t->shape().size();
    for (std::size_t j = 0; j < r; ++j) {
      if (t->shape()[j] != 1) s[rank - r + j] = t->strides()[j];
    }
    st.push_back(std::move(s));
  }
  LoopPlan plan;
  plan.strides.resize(st.size());
  for (std::size_t d = 0; d < rank; ++d) {
    if (full[d] == 1) continue;
    bool merge = !plan.shape.empty();
    for (std::size_t k = 0; k < st.size() && merge; ++k) {
      merge = plan.strides[k].back() == st[k][d] * full[d];
    }
    if (merge) {
      plan.shape.back() *= full[d];
      for (std::size_t k = 0; k < st.size(); ++k) plan.strides[k].back() = st[k][d];
    } else {
      plan.shape.push_back(full[d]);
      for (std::size_t k = 0; k < st.size(); ++k) plan.strides[k].push_back(st[k][d]);
    }
  }
  if (plan.shape.empty()) {
    plan.shape = {1};
    for (auto& s : plan.strides) s = {0};
  }
  return plan;
}

// Calls row(offsets, n) once per innermost row; offsets[k] is operand k's element offset.
template <class Row>
void for_each_row(const LoopPlan& plan, Row&& row) {
  const int nd = static_cast<int>(plan.shape.size());
  const std::size_t nops = plan.strides.size();
  const std::int64_t inner = plan.shape[nd - 1];
  std::int64_t rows = 1;
  for (int d = 0; d < nd - 1; ++d) rows *= plan.shape[d];
  std::vector<std::int64_t> off(nops, 0);
  std::vector<std::int64_t> idx(nd, 0);
  for (std::int64_t r = 0; r < rows; ++r) {
    row(off.data(), inner);
    for (int d = nd - 2; d >= 0; --d) {
      if (++idx[d] < plan.shape[d]) {
        for (std::size_t k = 0; k < nops; ++k) off[k] += plan.strides[k][d];
        break;
      }
      idx[d] = 0;
      for (std::size_t k = 0; k < nops; ++k) off[k] -= plan.strides[k][d] * (plan.shape[d] - 1);
    }
  }
}

template <class TO, class F, class... TI, std::size_t... I>
void run_loop_impl(TO* out, const LoopPlan& plan, F& f, std::index_sequence<I...>,
                   const TI*... in) {
  const std::size_t last = plan.shape.size() - 1;
  const std::int64_t so = plan.strides[0][last];
  const std::array<std::int64_t, sizeof...(TI)> s = {plan.strides[I + 1][last]...};
  const bool contiguous = so == 1 && ((s[I] == 1) && ...);
  for_each_row(plan, [&](const std::int64_t* off, std::int64_t n) {
    TO* po = out + off[0];
    if (contiguous) {  // the common case: a plain loop the compiler vectorizes
      for (std::int64_t i = 0; i < n; ++i) po[i] = f(in[off[I + 1] + i]...);
    } else {
      for (std::int64_t i = 0; i < n; ++i) po[i * so] = f(in[off[I + 1] + i * s[I]]...);
    }
  });
}

template <class>
using TensorFor = Tensor;

// run_loop<Out, In...>(out, plan, f, inputs...): out[i] = f(inputs[i]...).
template <class TO, class... TI, class F>
void run_loop(Tensor& out, const LoopPlan& plan, F f, const TensorFor<TI>&... in) {
  run_loop_impl<TO>(out.data<TO>(), plan, f, std::index_sequence_for<TI...>{},
                    in.template data<TI>()...);
}

[[noreturn]] void unreachable_dtype(ScalarOp op, Dtype d) {
  throw Error(fmt::format("internal error: {} has no kernel for computation dtype {}",
                          scalar_info(op).name, dtype_name(d)));
}

// Unary ops computed in T (the computation dtype).
template <class T>
void unary_kernel(ScalarOp op, Tensor& out, const LoopPlan& plan, const Tensor& a) {
  auto run = [&](auto f) { run_loop<T, T>(out, plan, f, a); };
  auto run_bool = [&](auto f) { run_loop<bool, T>(out, plan, f, a); };
  constexpr bool kFloat = std::is_floating_point_v<T>;
  switch (op) {
    case ScalarOp::Neg:
      if constexpr (!std::is_same_v<T, bool>) return run([](T x) { return thea_neg(x); });
      break;
    case ScalarOp::Abs:
      return run([](T x) { return thea_abs(x); });
    case ScalarOp::Sign:
      return run([](T x) { return thea_sign(x); });
    case ScalarOp::Sqr:
      return run([](T x) { return thea_sqr(x); });
    case ScalarOp::Identity:
      return run([](T x) { return thea_identity(x); });
    case ScalarOp::Not:
      return run_bool([](T x) { return thea_not(x); });
    case ScalarOp::Exp:
      if constexpr (kFloat) return run([](T x) { return thea_exp(x); });
      break;
    case ScalarOp::Log:
      if constexpr (kFloat) return run([](T x) { return thea_log(x); });
      break;
    case ScalarOp::Log1p:
      if constexpr (kFloat) return run([](T x) { return thea_log1p(x); });
      break;
    case ScalarOp::Sqrt:
      if constexpr (kFloat) return run([](T x) { return thea_sqrt(x); });
      break;
    case ScalarOp::Inv:
      if constexpr (kFloat) return run([](T x) { return thea_inv(x); });
      break;
    case ScalarOp::Tanh:
      if constexpr (kFloat) return run([](T x) { return thea_tanh(x); });
      break;
    case ScalarOp::Sigmoid:
      if constexpr (kFloat) return run([](T x) { return thea_sigmoid(x); });
      break;
    case ScalarOp::Softplus:
      if constexpr (kFloat) return run([](T x) { return thea_softplus(x); });
      break;
    case ScalarOp::Cast:
      return visit_dtype(out.dtype(), [&](auto to_tag) {
        using To = decltype(to_tag);
        run_loop<To, T>(
            out, plan, [](T x) { return thea_cast<To>(x); }, a);
      });
    default:
      break;
  }
  unreachable_dtype(op, dtype_of<T>);
}

template <class T>
void binary_kernel(ScalarOp op, Tensor& out, const LoopPlan& plan, const Tensor& a,
                   const Tensor& b) {
  auto run = [&](auto f) { run_loop<T, T, T>(out, plan, f, a, b); };
  auto run_bool = [&](auto f) { run_loop<bool, T, T>(out, plan, f, a, b); };
  switch (op) {
    case ScalarOp::Add:
      return run([](T x, T y) { return thea_add(x, y); });
    case ScalarOp::Sub:
      if constexpr (!std::is_same_v<T, bool>) return run([](T x, T y) { return thea_sub(x, y); });
      break;
    case ScalarOp::Mul:
      return run([](T x, T y) { return thea_mul(x, y); });
    case ScalarOp::Div:
      if constexpr (std::is_floating_point_v<T>) {
        return run([](T x, T y) { return thea_div(x, y); });
      }
      break;
    case ScalarOp::Pow:
      return run([](T x, T y) { return static_cast<T>(thea_pow(x, y)); });
    case ScalarOp::Maximum:
      return run([](T x, T y) { return thea_maximum(x, y); });
    case ScalarOp::Minimum:
      return run([](T x, T y) { return thea_minimum(x, y); });
    case ScalarOp::Lt:
      return run_bool([](T x, T y) { return thea_lt(x, y); });
    case ScalarOp::Le:
      return run_bool([](T x, T y) { return thea_le(x, y); });
    case ScalarOp::Gt:
      return run_bool([](T x, T y) { return thea_gt(x, y); });
    case ScalarOp::Ge:
      return run_bool([](T x, T y) { return thea_ge(x, y); });
    case ScalarOp::Eq:
      return run_bool([](T x, T y) { return thea_eq(x, y); });
    case ScalarOp::Ne:
      return run_bool([](T x, T y) { return thea_ne(x, y); });
    case ScalarOp::And:
      return run_bool([](T x, T y) { return thea_and(x, y); });
    case ScalarOp::Or:
      return run_bool([](T x, T y) { return thea_or(x, y); });
    case ScalarOp::Second:
      // Input 0 only gives the shape; it keeps its own dtype.
      return visit_dtype(a.dtype(), [&](auto like_tag) {
        using A = decltype(like_tag);
        run_loop<T, A, T>(
            out, plan, [](A x, T y) { return thea_second(x, y); }, a, b);
      });
    default:
      break;
  }
  unreachable_dtype(op, dtype_of<T>);
}

template <class T>
void ternary_kernel(ScalarOp op, Tensor& out, const LoopPlan& plan, const Tensor& a,
                    const Tensor& b, const Tensor& c) {
  switch (op) {
    case ScalarOp::Clip:
      return run_loop<T, T, T, T>(
          out, plan, [](T x, T lo, T hi) { return thea_clip(x, lo, hi); }, a, b, c);
    case ScalarOp::Switch:
      // The condition keeps its own dtype (any non-zero value is true).
      return visit_dtype(a.dtype(), [&](auto cond_tag) {
        using C = decltype(cond_tag);
        run_loop<T, C, T, T>(
            out, plan, [](C k, T x, T y) { return thea_switch(k, x, y); }, a, b, c);
      });
    default:
      break;
  }
  unreachable_dtype(op, dtype_of<T>);
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Elemwise
// ---------------------------------------------------------------------------------------

std::string Elemwise::name() const { return scalar_info(scalar_op_).name; }

std::string Elemwise::params() const {
  return scalar_op_ == ScalarOp::Cast ? std::string(dtype_name(cast_to_)) : std::string();
}

namespace {
void check_arity(ScalarOp op, std::size_t n) {
  const ScalarOpInfo& info = scalar_info(op);
  if (static_cast<int>(n) != info.arity) {
    throw TypeError(fmt::format("{} takes {} input{}, got {}", info.name, info.arity,
                                info.arity == 1 ? "" : "s", n));
  }
}
}  // namespace

Dtype Elemwise::compute_dtype(const std::vector<Dtype>& input_dtypes) const {
  check_arity(scalar_op_, input_dtypes.size());
  return plan_dtypes(scalar_op_, cast_to_, input_dtypes).compute;
}

bool Elemwise::converts_input(int i) const {
  if (scalar_op_ == ScalarOp::Switch || scalar_op_ == ScalarOp::Second) return i > 0;
  return i >= 0 && i < scalar_info(scalar_op_).arity;
}

TensorType Elemwise::infer_type(const std::vector<NodePtr>& inputs) const {
  check_arity(scalar_op_, inputs.size());
  std::vector<Shape> shapes;
  shapes.reserve(inputs.size());
  for (const NodePtr& n : inputs) shapes.push_back(n->type.shape);
  Shape shape = broadcast_static(shapes);
  const DtypePlan dp = plan_dtypes(scalar_op_, cast_to_, effective_dtypes(scalar_op_, inputs));
  return {dp.out, std::move(shape)};
}

Shape Elemwise::infer_shape(const std::vector<Shape>& in,
                            const std::vector<const Tensor*>& /*values*/) const {
  check_arity(scalar_op_, in.size());
  return broadcast_runtime(in);
}

Tensor Elemwise::perform(const std::vector<Tensor>& inputs) const {
  check_arity(scalar_op_, inputs.size());
  std::vector<Shape> shapes;
  std::vector<Dtype> dtypes;
  for (const Tensor& t : inputs) {
    if (!t.defined()) throw ValueError("undefined input tensor");
    shapes.push_back(t.shape());
    dtypes.push_back(t.dtype());
  }
  // Messages stay plain: the caller (a backend) adds the op, node and call site.
  const Shape shape = broadcast_runtime(shapes);
  const DtypePlan dp = plan_dtypes(scalar_op_, cast_to_, dtypes);
  // Value operands run in the computation dtype; Switch's condition and Second's
  // shape-giver keep theirs.
  std::vector<Tensor> ins(inputs);
  for (int i = 0; i < static_cast<int>(ins.size()); ++i) {
    if (converts_input(i) && ins[i].dtype() != dp.compute) ins[i] = ins[i].astype(dp.compute);
  }
  Tensor out = Tensor::empty(shape, dp.out);
  if (out.numel() == 0) return out;
  std::vector<const Tensor*> ptrs;
  for (const Tensor& t : ins) ptrs.push_back(&t);
  const LoopPlan plan = make_plan(out, ptrs);
  visit_dtype(dp.compute, [&](auto tag) {
    using T = decltype(tag);
    switch (ins.size()) {
      case 1:
        return unary_kernel<T>(scalar_op_, out, plan, ins[0]);
      case 2:
        return binary_kernel<T>(scalar_op_, out, plan, ins[0], ins[1]);
      default:
        return ternary_kernel<T>(scalar_op_, out, plan, ins[0], ins[1], ins[2]);
    }
  });
  return out;
}

std::vector<Variable> Elemwise::vjp(const std::vector<Variable>& x, const Variable& out,
                                    const Variable& g) const {
  std::vector<Variable> gx(x.size());
  switch (scalar_op_) {
    case ScalarOp::Add:
      gx = {g, g};
      break;
    case ScalarOp::Sub:
      gx = {g, neg(g)};
      break;
    case ScalarOp::Mul:
      gx = {mul(g, x[1]), mul(g, x[0])};
      break;
    case ScalarOp::Div:
      gx = {true_div(g, x[1]), neg(true_div(mul(g, out), x[1]))};
      break;
    case ScalarOp::Pow:
      // d/da a^b = b a^(b-1); d/db a^b = a^b log(a) (NaN for a <= 0, as in Theano).
      gx = {mul(mul(g, x[1]), pow(x[0], sub(x[1], 1))), mul(mul(g, out), log(x[0]))};
      break;
    case ScalarOp::Neg:
      gx = {neg(g)};
      break;
    case ScalarOp::Abs:
      gx = {mul(g, sgn(x[0]))};
      break;
    case ScalarOp::Exp:
      gx = {mul(g, out)};
      break;
    case ScalarOp::Log:
      gx = {true_div(g, x[0])};
      break;
    case ScalarOp::Log1p:
      gx = {true_div(g, add(x[0], 1))};
      break;
    case ScalarOp::Sqrt:
      gx = {true_div(g, mul(out, 2))};
      break;
    case ScalarOp::Sqr:
      gx = {mul(g, mul(x[0], 2))};
      break;
    case ScalarOp::Inv:
      gx = {neg(mul(g, sqr(out)))};
      break;
    case ScalarOp::Tanh:
      gx = {mul(g, sub(1, sqr(out)))};
      break;
    case ScalarOp::Sigmoid:
      gx = {mul(g, mul(out, sub(1, out)))};
      break;
    case ScalarOp::Softplus:
      gx = {mul(g, sigmoid(x[0]))};
      break;
    case ScalarOp::Identity:
      gx = {g};
      break;
    case ScalarOp::Maximum:
      // Ties go to the first operand, matching thea_maximum's choice.
      gx = {mul(g, ge(x[0], x[1])), mul(g, lt(x[0], x[1]))};
      break;
    case ScalarOp::Minimum:
      gx = {mul(g, le(x[0], x[1])), mul(g, gt(x[0], x[1]))};
      break;
    case ScalarOp::Clip:
      // Theano's masks: x inside [lo, hi] gets g; a bound gets g where it is active.
      gx = {mul(g, logical_and(ge(x[0], x[1]), le(x[0], x[2]))), mul(g, lt(x[0], x[1])),
            mul(g, gt(x[0], x[2]))};
      break;
    case ScalarOp::Switch:
      gx = {Variable(), switch_(x[0], g, 0), switch_(x[0], 0, g)};
      break;
    case ScalarOp::Second:
      gx = {Variable(), g};
      break;
    case ScalarOp::Cast:
      if (!is_float(x[0].dtype())) return {Variable()};
      // A float cast to an integer is flat: zero gradient, not a disconnected one.
      if (!is_float(cast_to_)) return {zeros_like(x[0])};
      return {cast(g, x[0].dtype())};
    default:
      // Comparisons, logic and sign are piecewise constant: no gradient.
      return std::vector<Variable>(x.size());
  }
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (!gx[i]) continue;
    if (!is_float(x[i].dtype())) {  // integer inputs are not differentiable
      gx[i] = Variable();
      continue;
    }
    gx[i] = sum_to_type(gx[i], x[i].type());
    if (gx[i].dtype() != x[i].dtype()) gx[i] = cast(gx[i], x[i].dtype());
  }
  return gx;
}

// ---------------------------------------------------------------------------------------
// API
// ---------------------------------------------------------------------------------------
namespace {

// A weak literal stored in `dtype`; out-of-range integer literals are refused (numpy's
// NEP 50 does the same) instead of silently wrapping.
NodePtr materialize_literal(const NodePtr& lit, Dtype dtype, ScalarOp op,
                            const std::vector<NodePtr>& inputs, const Loc& loc) {
  const double v = lit->value.item<double>();
  if (is_integer(dtype)) {
    const auto [lo, hi] = visit_dtype(dtype, [](auto tag) {
      using T = decltype(tag);
      return std::pair<double, double>(static_cast<double>(std::numeric_limits<T>::lowest()),
                                       static_cast<double>(std::numeric_limits<T>::max()));
    });
    if (v < lo || v > hi) {
      throw ValueError(fmt::format(
          "[{}] at {}: the literal {} does not fit in {}, the dtype of the tensor it meets; "
          "cast that tensor to a wider dtype first\n{}",
          scalar_info(op).name, SourceSite::from(loc).str(), lit->value.item<std::int64_t>(),
          dtype_name(dtype), describe_inputs(inputs)));
    }
  }
  NodePtr c = make_constant(Tensor::scalar(v, dtype), lit->name);
  c->weak_literal = true;
  return c;
}

Variable apply_elemwise(ScalarOp op, const std::vector<Variable>& xs, const Loc& loc,
                        Dtype cast_to = Dtype::Float32) {
  std::vector<NodePtr> nodes;
  nodes.reserve(xs.size());
  for (std::size_t i = 0; i < xs.size(); ++i) {
    if (!xs[i]) {
      throw ValueError(fmt::format(
          "[{}] at {}: input {} is an empty Variable (default-constructed, never assigned)",
          scalar_info(op).name, SourceSite::from(loc).str(), i));
    }
    nodes.push_back(xs[i].node());
  }
  // Store adopted literals in their final dtype, so that every backend (and perform, which
  // sees only tensors) computes in the dtype infer_type announced.
  if (nodes.size() == static_cast<std::size_t>(scalar_info(op).arity)) {
    const std::vector<Dtype> eff = effective_dtypes(op, nodes);
    for (std::size_t i = 0; i < nodes.size(); ++i) {
      if (nodes[i]->weak_literal && nodes[i]->kind == NodeKind::Constant &&
          eff[i] != nodes[i]->type.dtype) {
        nodes[i] = materialize_literal(nodes[i], eff[i], op, nodes, loc);
      }
    }
  }
  NodePtr node = make_apply(std::make_shared<Elemwise>(op, cast_to), nodes, loc);
  // Arithmetic on literals alone (-0.05, 2 * 3) folds into a literal that is weak again,
  // as a Python scalar expression is in numpy, so w + (-lr) * g stays float32. A cast asks
  // for a definite dtype: it folds into a strong constant.
  const bool all_weak = std::all_of(nodes.begin(), nodes.end(), [](const NodePtr& n) {
    return n->kind == NodeKind::Constant && n->weak_literal;
  });
  if (!all_weak) return Variable(node);
  std::vector<Tensor> values;
  for (const NodePtr& n : nodes) values.push_back(n->value);
  Tensor folded;
  try {
    folded = node->op->perform(values);
  } catch (const Error& e) {
    throw Error(fmt::format("[{}] at {}: folding literals: {}\n{}", node->op->str(),
                            node->site.str(), e.what(), describe_inputs(nodes)));
  }
  NodePtr c = make_constant(std::move(folded));
  c->weak_literal = op != ScalarOp::Cast;
  c->site = node->site;
  return Variable(c);
}

}  // namespace

Variable add(const Variable& a, const Variable& b, Loc loc) {
  return apply_elemwise(ScalarOp::Add, {a, b}, loc);
}
Variable sub(const Variable& a, const Variable& b, Loc loc) {
  return apply_elemwise(ScalarOp::Sub, {a, b}, loc);
}
Variable mul(const Variable& a, const Variable& b, Loc loc) {
  return apply_elemwise(ScalarOp::Mul, {a, b}, loc);
}
Variable true_div(const Variable& a, const Variable& b, Loc loc) {
  return apply_elemwise(ScalarOp::Div, {a, b}, loc);
}
Variable pow(const Variable& a, const Variable& b, Loc loc) {
  return apply_elemwise(ScalarOp::Pow, {a, b}, loc);
}
Variable maximum(const Variable& a, const Variable& b, Loc loc) {
  return apply_elemwise(ScalarOp::Maximum, {a, b}, loc);
}
Variable minimum(const Variable& a, const Variable& b, Loc loc) {
  return apply_elemwise(ScalarOp::Minimum, {a, b}, loc);
}
Variable neg(const Variable& x, Loc loc) { return apply_elemwise(ScalarOp::Neg, {x}, loc); }
Variable abs(const Variable& x, Loc loc) { return apply_elemwise(ScalarOp::Abs, {x}, loc); }
Variable sgn(const Variable& x, Loc loc) { return apply_elemwise(ScalarOp::Sign, {x}, loc); }
Variable exp(const Variable& x, Loc loc) { return apply_elemwise(ScalarOp::Exp, {x}, loc); }
Variable log(const Variable& x, Loc loc) { return apply_elemwise(ScalarOp::Log, {x}, loc); }
Variable log1p(const Variable& x, Loc loc) { return apply_elemwise(ScalarOp::Log1p, {x}, loc); }
Variable sqrt(const Variable& x, Loc loc) { return apply_elemwise(ScalarOp::Sqrt, {x}, loc); }
Variable sqr(const Variable& x, Loc loc) { return apply_elemwise(ScalarOp::Sqr, {x}, loc); }
Variable inv(const Variable& x, Loc loc) { return apply_elemwise(ScalarOp::Inv, {x}, loc); }
Variable tanh(const Variable& x, Loc loc) { return apply_elemwise(ScalarOp::Tanh, {x}, loc); }
Variable sigmoid(const Variable& x, Loc loc) { return apply_elemwise(ScalarOp::Sigmoid, {x}, loc); }
Variable softplus(const Variable& x, Loc loc) {
  return apply_elemwise(ScalarOp::Softplus, {x}, loc);
}
Variable clip(const Variable& x, const Variable& lo, const Variable& hi, Loc loc) {
  return apply_elemwise(ScalarOp::Clip, {x, lo, hi}, loc);
}
Variable lt(const Variable& a, const Variable& b, Loc loc) {
  return apply_elemwise(ScalarOp::Lt, {a, b}, loc);
}
Variable le(const Variable& a, const Variable& b, Loc loc) {
  return apply_elemwise(ScalarOp::Le, {a, b}, loc);
}
Variable gt(const Variable& a, const Variable& b, Loc loc) {
  return apply_elemwise(ScalarOp::Gt, {a, b}, loc);
}
Variable ge(const Variable& a, const Variable& b, Loc loc) {
  return apply_elemwise(ScalarOp::Ge, {a, b}, loc);
}
Variable eq(const Variable& a, const Variable& b, Loc loc) {
  return apply_elemwise(ScalarOp::Eq, {a, b}, loc);
}
Variable neq(const Variable& a, const Variable& b, Loc loc) {
  return apply_elemwise(ScalarOp::Ne, {a, b}, loc);
}
Variable logical_and(const Variable& a, const Variable& b, Loc loc) {
  return apply_elemwise(ScalarOp::And, {a, b}, loc);
}
Variable logical_or(const Variable& a, const Variable& b, Loc loc) {
  return apply_elemwise(ScalarOp::Or, {a, b}, loc);
}
Variable logical_not(const Variable& x, Loc loc) { return apply_elemwise(ScalarOp::Not, {x}, loc); }
Variable switch_(const Variable& cond, const Variable& a, const Variable& b, Loc loc) {
  return apply_elemwise(ScalarOp::Switch, {cond, a, b}, loc);
}
Variable where(const Variable& cond, const Variable& a, const Variable& b, Loc loc) {
  return apply_elemwise(ScalarOp::Switch, {cond, a, b}, loc);
}
Variable cast(const Variable& x, Dtype dtype, Loc loc) {
  // As Theano: casting to the same dtype is a no-op, except that it makes a literal strong.
  if (x && x.dtype() == dtype && !x.node()->weak_literal) return x;
  return apply_elemwise(ScalarOp::Cast, {x}, loc, dtype);
}
Variable fill(const Variable& like, const Variable& value, Loc loc) {
  return apply_elemwise(ScalarOp::Second, {like, value}, loc);
}

namespace {
// A weak literal already in x's dtype, so zeros_like(bool) stays bool.
Variable literal_like(const Variable& x, double value, const Loc& loc) {
  if (!x) {
    throw ValueError(fmt::format(
        "[second] at {}: input 0 is an empty Variable (default-constructed, never assigned)",
        SourceSite::from(loc).str()));
  }
  NodePtr c = make_constant(Tensor::scalar(value, x.dtype()));
  c->weak_literal = true;
  return Variable(c);
}
}  // namespace

Variable zeros_like(const Variable& x, Loc loc) { return fill(x, literal_like(x, 0, loc), loc); }
Variable ones_like(const Variable& x, Loc loc) { return fill(x, literal_like(x, 1, loc), loc); }

Variable operator+(const VarAt& a, const Variable& b) { return add(a.var, b, a.loc); }
Variable operator-(const VarAt& a, const Variable& b) { return sub(a.var, b, a.loc); }
Variable operator*(const VarAt& a, const Variable& b) { return mul(a.var, b, a.loc); }
Variable operator/(const VarAt& a, const Variable& b) { return true_div(a.var, b, a.loc); }
Variable operator-(const VarAt& x) { return neg(x.var, x.loc); }
Variable operator<(const VarAt& a, const Variable& b) { return lt(a.var, b, a.loc); }
Variable operator<=(const VarAt& a, const Variable& b) { return le(a.var, b, a.loc); }
Variable operator>(const VarAt& a, const Variable& b) { return gt(a.var, b, a.loc); }
Variable operator>=(const VarAt& a, const Variable& b) { return ge(a.var, b, a.loc); }
namespace {
// & and | are logical on bool tensors only: on integers numpy's & is bitwise, and a
// silently logical result there would be a trap.
void require_bool_operands(const char* op, const VarAt& a, const Variable& b) {
  if (a.var && b && a.var.dtype() == Dtype::Bool && b.dtype() == Dtype::Bool) return;
  if (!a.var || !b) return;  // apply_elemwise reports empty operands
  throw TypeError(fmt::format(
      "[{}] at {}: operator{} needs bool operands (comparisons such as x > 0); use logical_{} "
      "for other dtypes (there is no bitwise {})\n{}",
      op, SourceSite::from(a.loc).str(), op[0] == 'a' ? "&" : "|", op, op,
      describe_inputs({a.var.node(), b.node()})));
}
}  // namespace

Variable operator&(const VarAt& a, const Variable& b) {
  require_bool_operands("and", a, b);
  return logical_and(a.var, b, a.loc);
}
Variable operator|(const VarAt& a, const Variable& b) {
  require_bool_operands("or", a, b);
  return logical_or(a.var, b, a.loc);
}

}  // namespace thea
