// The graph API users write models in. Names follow Theano: T.dot -> thea::dot,
// T.nnet.softmax -> thea::nnet::softmax. Every function records the caller's source
// location so errors point at user code.
#pragma once

#include <optional>
#include <source_location>
#include <string>
#include <variant>
#include <vector>

#include "thea/graph.hpp"

namespace thea {

using Loc = std::source_location;
#define THEA_LOC Loc loc = Loc::current()

// ---- elementwise (numpy broadcasting over static size-1 dims) ----
Variable add(const Variable& a, const Variable& b, THEA_LOC);
Variable sub(const Variable& a, const Variable& b, THEA_LOC);
Variable mul(const Variable& a, const Variable& b, THEA_LOC);
Variable true_div(const Variable& a, const Variable& b, THEA_LOC);
Variable pow(const Variable& a, const Variable& b, THEA_LOC);
Variable maximum(const Variable& a, const Variable& b, THEA_LOC);
Variable minimum(const Variable& a, const Variable& b, THEA_LOC);
Variable neg(const Variable& x, THEA_LOC);
Variable abs(const Variable& x, THEA_LOC);
Variable sgn(const Variable& x, THEA_LOC);
Variable exp(const Variable& x, THEA_LOC);
Variable log(const Variable& x, THEA_LOC);
Variable log1p(const Variable& x, THEA_LOC);
Variable sqrt(const Variable& x, THEA_LOC);
Variable sqr(const Variable& x, THEA_LOC);
Variable inv(const Variable& x, THEA_LOC);
Variable tanh(const Variable& x, THEA_LOC);
Variable sigmoid(const Variable& x, THEA_LOC);
Variable softplus(const Variable& x, THEA_LOC);
Variable clip(const Variable& x, const Variable& lo, const Variable& hi, THEA_LOC);
Variable lt(const Variable& a, const Variable& b, THEA_LOC);
Variable le(const Variable& a, const Variable& b, THEA_LOC);
Variable gt(const Variable& a, const Variable& b, THEA_LOC);
Variable ge(const Variable& a, const Variable& b, THEA_LOC);
Variable eq(const Variable& a, const Variable& b, THEA_LOC);
Variable neq(const Variable& a, const Variable& b, THEA_LOC);
Variable logical_and(const Variable& a, const Variable& b, THEA_LOC);
Variable logical_or(const Variable& a, const Variable& b, THEA_LOC);
Variable logical_not(const Variable& x, THEA_LOC);
// where(cond, a, b); Theano's T.switch.
Variable switch_(const Variable& cond, const Variable& a, const Variable& b, THEA_LOC);
Variable where(const Variable& cond, const Variable& a, const Variable& b, THEA_LOC);
Variable cast(const Variable& x, Dtype dtype, THEA_LOC);
// Theano's T.fill / second: `value` broadcast to the shape of `like`.
Variable fill(const Variable& like, const Variable& value, THEA_LOC);
Variable zeros_like(const Variable& x, THEA_LOC);
Variable ones_like(const Variable& x, THEA_LOC);

// Operators. A literal on either side is a weak constant that adopts the other operand's
// dtype (g * 0.05 stays float32; x + 1 stays int32), as Theano's autocast and JAX do.
// Elementwise functions of literals alone fold into weak literals (neg(0.05), 2 * 3), so
// w + neg(0.05) * g stays float32 too; cast() of a literal is a strong constant.
Variable operator+(const VarAt& a, const Variable& b);
Variable operator-(const VarAt& a, const Variable& b);
Variable operator*(const VarAt& a, const Variable& b);
Variable operator/(const VarAt& a, const Variable& b);
Variable operator-(const VarAt& x);
Variable operator<(const VarAt& a, const Variable& b);
Variable operator<=(const VarAt& a, const Variable& b);
Variable operator>(const VarAt& a, const Variable& b);
Variable operator>=(const VarAt& a, const Variable& b);
// Logical and/or on bool tensors (Theano's & and |); there is no symbolic ! because
// Variable converts to bool (is it set?) — use logical_not.
Variable operator&(const VarAt& a, const Variable& b);
Variable operator|(const VarAt& a, const Variable& b);

// ---- reductions: axis std::nullopt / {} means all axes; negative axes count from the end ----
using Axes = std::optional<std::vector<int>>;
Variable sum(const Variable& x, Axes axes = std::nullopt, bool keepdims = false, THEA_LOC);
Variable mean(const Variable& x, Axes axes = std::nullopt, bool keepdims = false, THEA_LOC);
Variable prod(const Variable& x, Axes axes = std::nullopt, bool keepdims = false, THEA_LOC);
Variable max(const Variable& x, Axes axes = std::nullopt, bool keepdims = false, THEA_LOC);
Variable min(const Variable& x, Axes axes = std::nullopt, bool keepdims = false, THEA_LOC);
// Index of the first max/min along one axis (all axes, flattened, when nullopt); int64.
Variable argmax(const Variable& x, std::optional<int> axis = std::nullopt, bool keepdims = false,
                THEA_LOC);
Variable argmin(const Variable& x, std::optional<int> axis = std::nullopt, bool keepdims = false,
                THEA_LOC);
// Single-axis spellings: sum(x, 1) reads like T.sum(x, axis=1).
Variable sum(const Variable& x, int axis, bool keepdims = false, THEA_LOC);
Variable mean(const Variable& x, int axis, bool keepdims = false, THEA_LOC);
Variable max(const Variable& x, int axis, bool keepdims = false, THEA_LOC);
Variable min(const Variable& x, int axis, bool keepdims = false, THEA_LOC);
Variable prod(const Variable& x, int axis, bool keepdims = false, THEA_LOC);
// Number of elements of x over `axes` at run time (int64 scalar); mean's gradient uses it.
Variable size_of(const Variable& x, Axes axes = std::nullopt, THEA_LOC);

// ---- linear algebra ----
// vector·vector -> scalar, matrix·vector, vector·matrix, matrix·matrix.
Variable dot(const Variable& a, const Variable& b, THEA_LOC);
Variable outer(const Variable& a, const Variable& b, THEA_LOC);

// ---- shape ----
// Theano's dimshuffle: entries are input axes or -1 for a new broadcastable axis ('x').
// Dropped axes must be broadcastable.
Variable dimshuffle(const Variable& x, std::vector<int> pattern, THEA_LOC);
Variable transpose(const Variable& x, std::optional<std::vector<int>> axes = std::nullopt,
                   THEA_LOC);
// Sizes: >= 0 fixed, -1 inferred (at most one), 0 copies the input's size at that position.
Variable reshape(const Variable& x, Shape shape, THEA_LOC);
// Keeps the first outdim-1 axes and flattens the rest (Theano's flatten(x, outdim)).
Variable flatten(const Variable& x, int outdim = 1, THEA_LOC);
Variable concatenate(const std::vector<Variable>& xs, int axis = 0, THEA_LOC);
Variable stack(const std::vector<Variable>& xs, int axis = 0, THEA_LOC);

// Slicing: x[{Slice(a, b)}] or x[{idx, Slice()}]; bounds may be symbolic integer scalars.
struct Slice {
  std::optional<Variable> start, stop, step;  // nullopt: numpy default
  Slice() = default;
  Slice(std::optional<Variable> start_, std::optional<Variable> stop_,
        std::optional<Variable> step_ = std::nullopt)
      : start(std::move(start_)), stop(std::move(stop_)), step(std::move(step_)) {}
};
// An integer index (drops the axis) or a slice (keeps it).
using IndexEntry = std::variant<Variable, Slice>;
Variable subtensor(const Variable& x, const std::vector<IndexEntry>& index, THEA_LOC);
// x with x[index] += y (inc) or x[index] = y (set), as new values (x is not modified).
Variable inc_subtensor(const Variable& x, const std::vector<IndexEntry>& index, const Variable& y,
                       THEA_LOC);
Variable set_subtensor(const Variable& x, const std::vector<IndexEntry>& index, const Variable& y,
                       THEA_LOC);
// Rows of x picked by an integer vector (numpy x[idx], Theano advanced_subtensor1).
Variable take(const Variable& x, const Variable& indices, THEA_LOC);
// x with rows idx[k] += y[k] (repeated indices accumulate).
Variable inc_rows(const Variable& x, const Variable& indices, const Variable& y, THEA_LOC);
// Integer class vector -> (n, num_classes) matrix of 0/1 (Theano's to_one_hot).
Variable one_hot(const Variable& labels, std::int64_t num_classes, Dtype dtype = Dtype::Float32,
                 THEA_LOC);

namespace nnet {
// Row-wise over the last axis of a matrix (Theano's T.nnet.softmax); a vector is one row.
Variable softmax(const Variable& x, THEA_LOC);
Variable log_softmax(const Variable& x, THEA_LOC);
Variable relu(const Variable& x, THEA_LOC);
Variable softplus(const Variable& x, THEA_LOC);
Variable sigmoid(const Variable& x, THEA_LOC);
// -sum(y * log(p), axis=-1) for one-hot/probability targets y (same shape as p), or
// -log(p[i, y[i]]) for an integer class vector y. One value per row.
Variable categorical_crossentropy(const Variable& p, const Variable& y, THEA_LOC);
// -(t log o + (1 - t) log(1 - o)), elementwise.
Variable binary_crossentropy(const Variable& o, const Variable& t, THEA_LOC);
}  // namespace nnet

#undef THEA_LOC
}  // namespace thea
