// Elementwise ops: forward values per scalar op and dtype, dtype promotion (weak literals
// included), broadcasting and its errors, and finite-difference gradients in float64.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <thea/ops/ops.hpp>
#include <thea/thea.hpp>
#include <vector>

#include "test_util.hpp"

using namespace thea;
using namespace thea::testing;

namespace {

Tensor run(ScalarOp op, const std::vector<Tensor>& inputs, Dtype cast_to = Dtype::Float32) {
  return Elemwise(op, cast_to).perform(inputs);
}

Tensor vec(std::initializer_list<double> v, Dtype d) { return Tensor::from_list(v, d); }

std::vector<double> map(const std::vector<double>& x, const std::function<double(double)>& f) {
  std::vector<double> y;
  for (double v : x) y.push_back(f(v));
  return y;
}

// Random values with |x| in [0.3, 2): away from the kinks of abs, sign and friends.
Tensor away_from_zero(const Shape& shape, std::uint64_t seed) {
  Tensor mag = uniform(shape, 0.3, 2.0, seed);
  Tensor sign = uniform(shape, -1.0, 1.0, seed + 1);
  std::vector<double> m = mag.to_vector(), s = sign.to_vector();
  for (std::size_t i = 0; i < m.size(); ++i) m[i] = s[i] < 0 ? -m[i] : m[i];
  return Tensor::from_vector(m, shape);
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Forward values
// ---------------------------------------------------------------------------------------

TEST_CASE("unary float ops match libm in float32 and float64") {
  const std::vector<double> xs = {0.25, 0.5, 1.0, 1.5, 3.0};
  struct Case {
    ScalarOp op;
    std::function<double(double)> f;
  };
  const std::vector<Case> cases = {
      {ScalarOp::Neg, [](double v) { return -v; }},
      {ScalarOp::Abs, [](double v) { return std::fabs(v); }},
      {ScalarOp::Exp, [](double v) { return std::exp(v); }},
      {ScalarOp::Log, [](double v) { return std::log(v); }},
      {ScalarOp::Log1p, [](double v) { return std::log1p(v); }},
      {ScalarOp::Sqrt, [](double v) { return std::sqrt(v); }},
      {ScalarOp::Sqr, [](double v) { return v * v; }},
      {ScalarOp::Inv, [](double v) { return 1 / v; }},
      {ScalarOp::Tanh, [](double v) { return std::tanh(v); }},
      {ScalarOp::Sigmoid, [](double v) { return 1 / (1 + std::exp(-v)); }},
      {ScalarOp::Softplus, [](double v) { return std::log1p(std::exp(v)); }},
      {ScalarOp::Identity, [](double v) { return v; }},
  };
  for (Dtype d : {Dtype::Float32, Dtype::Float64}) {
    for (const Case& c : cases) {
      CAPTURE(scalar_info(c.op).name);
      CAPTURE(dtype_name(d));
      for (double sign : {1.0, -1.0}) {
        std::vector<double> in = xs;
        if (sign < 0 && c.op != ScalarOp::Log && c.op != ScalarOp::Sqrt) {
          for (double& v : in) v = -v * 0.5;  // negatives where the function is defined
        }
        Tensor x = Tensor::from_vector(in).astype(d);
        Tensor y = run(c.op, {x});
        CHECK(y.dtype() == d);
        // float32 inputs are rounded; compare against f of the rounded input.
        check_values(y, map(x.to_vector(), c.f), d == Dtype::Float32 ? 1e-6 : 1e-14);
      }
    }
  }
}

TEST_CASE("sigmoid and softplus are stable for large arguments") {
  Tensor x = vec({-1000, -40, 0, 40, 1000}, Dtype::Float64);
  Tensor s = run(ScalarOp::Sigmoid, {x});
  check_values(s, {0, 1 / (1 + std::exp(40.0)), 0.5, 1 / (1 + std::exp(-40.0)), 1});
  Tensor sp = run(ScalarOp::Softplus, {x});
  check_values(
      sp, {0, std::log1p(std::exp(-40.0)), std::log(2.0), 40 + std::log1p(std::exp(-40.0)), 1000});
  Tensor s32 = run(ScalarOp::Sigmoid, {x.astype(Dtype::Float32)});
  for (double v : s32.to_vector()) CHECK(std::isfinite(v));
}

TEST_CASE("sign, abs and integer arithmetic") {
  check_values(run(ScalarOp::Sign, {vec({-2.5, 0, 3}, Dtype::Float64)}), {-1, 0, 1});
  Tensor i = vec({-3, 0, 7}, Dtype::Int32);
  Tensor si = run(ScalarOp::Sign, {i});
  CHECK(si.dtype() == Dtype::Int32);
  check_values(si, {-1, 0, 1});
  check_values(run(ScalarOp::Abs, {i}), {3, 0, 7});
  check_values(run(ScalarOp::Neg, {i}), {3, 0, -7});
  check_values(run(ScalarOp::Sqr, {i}), {9, 0, 49});
  Tensor j = vec({2, 5, -4}, Dtype::Int32);
  Tensor sum = run(ScalarOp::Add, {i, j});
  CHECK(sum.dtype() == Dtype::Int32);
  check_values(sum, {-1, 5, 3});
  check_values(run(ScalarOp::Sub, {i, j}), {-5, -5, 11});
  check_values(run(ScalarOp::Mul, {i, j}), {-6, 0, -28});
  check_values(run(ScalarOp::Maximum, {i, j}), {2, 5, 7});
  check_values(run(ScalarOp::Minimum, {i, j}), {-3, 0, -4});
  check_values(run(ScalarOp::Pow, {vec({2, 3, 10}, Dtype::Int64), vec({3, 2, 0}, Dtype::Int64)}),
               {8, 9, 1});
  // uint8 wraps like numpy.
  Tensor u = run(ScalarOp::Add, {vec({250, 1}, Dtype::UInt8), vec({10, 1}, Dtype::UInt8)});
  CHECK(u.dtype() == Dtype::UInt8);
  check_values(u, {4, 2});
}

TEST_CASE("true division and float-only ops compute integers in float64") {
  Tensor d = run(ScalarOp::Div, {vec({1, 7, -9}, Dtype::Int32), vec({2, 2, 4}, Dtype::Int32)});
  CHECK(d.dtype() == Dtype::Float64);
  check_values(d, {0.5, 3.5, -2.25});
  Tensor e = run(ScalarOp::Exp, {vec({0, 1}, Dtype::Int64)});
  CHECK(e.dtype() == Dtype::Float64);
  check_values(e, {1, std::exp(1.0)});
  Tensor s = run(ScalarOp::Sqrt, {vec({4, 9}, Dtype::UInt8)});
  CHECK(s.dtype() == Dtype::Float64);
  check_values(s, {2, 3});
  Tensor b = run(ScalarOp::Log1p, {vec({0, 1}, Dtype::Bool)});
  CHECK(b.dtype() == Dtype::Float64);
  check_values(b, {0, std::log(2.0)});
}

TEST_CASE("binary float ops, pow, maximum/minimum with NaN") {
  Tensor a = vec({1.5, -2, 4}, Dtype::Float64);
  Tensor b = vec({0.5, 3, -8}, Dtype::Float64);
  check_values(run(ScalarOp::Add, {a, b}), {2, 1, -4});
  check_values(run(ScalarOp::Sub, {a, b}), {1, -5, 12});
  check_values(run(ScalarOp::Mul, {a, b}), {0.75, -6, -32});
  check_values(run(ScalarOp::Div, {a, b}), {3, -2.0 / 3, -0.5});
  check_values(
      run(ScalarOp::Pow, {vec({2, 9, 0.5}, Dtype::Float32), vec({3, 0.5, -1}, Dtype::Float32)}),
      {8, 3, 2}, 1e-6);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  Tensor n = vec({nan, 1, 2}, Dtype::Float64);
  Tensor m = vec({0, nan, 1}, Dtype::Float64);
  check_values(run(ScalarOp::Maximum, {n, m}), {nan, nan, 2});
  check_values(run(ScalarOp::Minimum, {n, m}), {nan, nan, 1});
}

TEST_CASE("comparisons compare in the promoted dtype and give bool") {
  Tensor f = vec({0.5, 1, 2}, Dtype::Float32);
  Tensor i = vec({1, 1, 1}, Dtype::Int32);
  struct Case {
    ScalarOp op;
    std::vector<double> expected;
  };
  for (const Case& c : std::vector<Case>{{ScalarOp::Lt, {1, 0, 0}},
                                         {ScalarOp::Le, {1, 1, 0}},
                                         {ScalarOp::Gt, {0, 0, 1}},
                                         {ScalarOp::Ge, {0, 1, 1}},
                                         {ScalarOp::Eq, {0, 1, 0}},
                                         {ScalarOp::Ne, {1, 0, 1}}}) {
    CAPTURE(scalar_info(c.op).name);
    Tensor r = run(c.op, {f, i});
    CHECK(r.dtype() == Dtype::Bool);
    check_values(r, c.expected);
  }
  // 16777217 is not a float32: compared in float64 (int32 + float32 -> float64) it differs.
  Tensor big = vec({16777217}, Dtype::Int32);
  Tensor bigf = vec({16777216}, Dtype::Float32);
  check_values(run(ScalarOp::Eq, {big, bigf}), {0});
}

TEST_CASE("logic ops treat non-zero as true") {
  Tensor a = vec({0, 1, 2, 0}, Dtype::Int32);
  Tensor b = vec({0, 0, -1.5, 3}, Dtype::Float64);
  Tensor r = run(ScalarOp::And, {a, b});
  CHECK(r.dtype() == Dtype::Bool);
  check_values(r, {0, 0, 1, 0});
  check_values(run(ScalarOp::Or, {a, b}), {0, 1, 1, 1});
  Tensor n = run(ScalarOp::Not, {b});
  CHECK(n.dtype() == Dtype::Bool);
  check_values(n, {1, 1, 0, 0});
  // bool arithmetic follows numpy: True + True is True, True * False is False.
  Tensor t = vec({1, 1, 0}, Dtype::Bool);
  Tensor u = vec({1, 0, 0}, Dtype::Bool);
  CHECK(run(ScalarOp::Add, {t, u}).dtype() == Dtype::Bool);
  check_values(run(ScalarOp::Add, {t, u}), {1, 1, 0});
  check_values(run(ScalarOp::Mul, {t, u}), {1, 0, 0});
  CHECK_THROWS_AS(run(ScalarOp::Sub, {t, u}), TypeError);
  CHECK_THROWS_AS(run(ScalarOp::Neg, {t}), TypeError);
}

TEST_CASE("switch, clip, second and cast") {
  Tensor cond = vec({1, 0, 2, 0}, Dtype::Int64);
  Tensor a = vec({1, 2, 3, 4}, Dtype::Float32);
  Tensor b = vec({-1, -2, -3, -4}, Dtype::Float64);
  Tensor s = run(ScalarOp::Switch, {cond, a, b});
  CHECK(s.dtype() == Dtype::Float64);  // value operands promote; the condition does not count
  check_values(s, {1, -2, 3, -4});

  Tensor c = run(ScalarOp::Clip, {vec({-2, 0.5, 7}, Dtype::Float32), vec({0}, Dtype::Float32),
                                  vec({1}, Dtype::Float32)});
  CHECK(c.dtype() == Dtype::Float32);
  check_values(c, {0, 0.5, 1});

  // second: the value of the second input in the shape of both, in its dtype.
  Tensor like = Tensor::zeros({2, 3}, Dtype::Int32);
  Tensor f = run(ScalarOp::Second, {like, Tensor::scalar(2.5, Dtype::Float32)});
  CHECK(f.dtype() == Dtype::Float32);
  CHECK(f.shape() == Shape{2, 3});
  check_values(f, std::vector<double>(6, 2.5));

  Tensor x = vec({-1.7, 0.2, 2.9, 300}, Dtype::Float64);
  Tensor ci = run(ScalarOp::Cast, {x}, Dtype::Int32);
  CHECK(ci.dtype() == Dtype::Int32);
  check_values(ci, {-1, 0, 2, 300});  // truncation toward zero, as numpy
  Tensor cb = run(ScalarOp::Cast, {vec({0, 0.5, -3}, Dtype::Float32)}, Dtype::Bool);
  CHECK(cb.dtype() == Dtype::Bool);
  check_values(cb, {0, 1, 1});
  Tensor cf = run(ScalarOp::Cast, {vec({1, 0}, Dtype::Bool)}, Dtype::Float32);
  CHECK(cf.dtype() == Dtype::Float32);
  check_values(cf, {1, 0});
}

TEST_CASE("compute_dtype: what backends convert the operands to") {
  using D = Dtype;
  CHECK(Elemwise(ScalarOp::Add).compute_dtype({D::Int32, D::Float32}) == D::Float64);
  CHECK(Elemwise(ScalarOp::Add).compute_dtype({D::UInt8, D::UInt8}) == D::UInt8);
  CHECK(Elemwise(ScalarOp::Exp).compute_dtype({D::Int32}) == D::Float64);
  CHECK(Elemwise(ScalarOp::Exp).compute_dtype({D::Float32}) == D::Float32);
  CHECK(Elemwise(ScalarOp::Div).compute_dtype({D::Int64, D::Int64}) == D::Float64);
  CHECK(Elemwise(ScalarOp::Lt).compute_dtype({D::Int32, D::Float32}) == D::Float64);
  CHECK(Elemwise(ScalarOp::Switch).compute_dtype({D::Float64, D::Float32, D::Float32}) ==
        D::Float32);
  CHECK(Elemwise(ScalarOp::Second).compute_dtype({D::Float64, D::Int32}) == D::Int32);
  CHECK(Elemwise(ScalarOp::Cast, D::Int32).compute_dtype({D::Float32}) == D::Float32);
  CHECK_FALSE(Elemwise(ScalarOp::Switch).converts_input(0));
  CHECK(Elemwise(ScalarOp::Switch).converts_input(2));
  CHECK_FALSE(Elemwise(ScalarOp::Second).converts_input(0));
  CHECK(Elemwise(ScalarOp::Clip).converts_input(1));
  CHECK_THROWS_AS(Elemwise(ScalarOp::Neg).compute_dtype({D::Bool}), TypeError);
  CHECK_THROWS_AS(Elemwise(ScalarOp::Add).compute_dtype({D::Float32}), TypeError);
}

TEST_CASE("broadcasting in perform: padding, size-1 axes, scalars, strided views") {
  Tensor m = Tensor::from_list({{1, 2, 3}, {4, 5, 6}}, Dtype::Float64);
  Tensor row = vec({10, 20, 30}, Dtype::Float64);
  check_values(run(ScalarOp::Add, {m, row}), {11, 22, 33, 14, 25, 36});
  Tensor col = Tensor::from_vector<double>({100, 200}, {2, 1});
  check_values(run(ScalarOp::Add, {m, col}), {101, 102, 103, 204, 205, 206});
  Tensor outer = run(ScalarOp::Mul, {col, row.reshape({1, 3})});
  CHECK(outer.shape() == Shape{2, 3});
  check_values(outer, {1000, 2000, 3000, 2000, 4000, 6000});
  Tensor s = run(ScalarOp::Sub, {Tensor::scalar(1, Dtype::Float64), m});
  check_values(s, {0, -1, -2, -3, -4, -5});
  // Transposed and stepped views are read through their strides.
  Tensor t = m.permute({1, 0});
  Tensor tt = run(ScalarOp::Add, {t, Tensor::from_list({{0, 0}, {0, 0}, {0, 0}}, Dtype::Float64)});
  CHECK(tt.shape() == Shape{3, 2});
  check_values(tt, {1, 4, 2, 5, 3, 6});
  Tensor stepped = Tensor::arange(10, Dtype::Float64).slice(0, 1, 10, 3);  // 1, 4, 7
  check_values(run(ScalarOp::Sqr, {stepped}), {1, 16, 49});
  // Rank 3 against rank 2 with size-1 axes on both sides.
  Tensor a = Tensor::arange(6, Dtype::Float64).reshape({3, 1, 2});
  Tensor b = Tensor::arange(8, Dtype::Float64).reshape({4, 2}).slice(1, 0, 2);
  Tensor c = run(ScalarOp::Add, {a, b});
  CHECK(c.shape() == Shape{3, 4, 2});
  for (std::int64_t i = 0; i < 3; ++i)
    for (std::int64_t j = 0; j < 4; ++j)
      for (std::int64_t k = 0; k < 2; ++k)
        CHECK(c.get({i, j, k}) == a.get({i, 0, k}) + b.get({j, k}));
  // Empty results and rank-0 results.
  CHECK(run(ScalarOp::Add, {Tensor::zeros({0, 3}, Dtype::Float64), row}).shape() == Shape{0, 3});
  Tensor sc =
      run(ScalarOp::Mul, {Tensor::scalar(3, Dtype::Float64), Tensor::scalar(4, Dtype::Float64)});
  CHECK(sc.ndim() == 0);
  CHECK(sc.item<double>() == 12);
  // Mixed dtypes: inputs are converted to the computation dtype.
  Tensor mixed = run(ScalarOp::Add, {vec({1, 2}, Dtype::Int32), vec({0.5, 0.25}, Dtype::Float32)});
  CHECK(mixed.dtype() == Dtype::Float64);
  check_values(mixed, {1.5, 2.25});
}

TEST_CASE("runtime broadcasting errors name both shapes") {
  Tensor a = Tensor::zeros({2, 3}, Dtype::Float64);
  Tensor b = Tensor::zeros({4, 3}, Dtype::Float64);
  const std::string msg = error_of([&] { run(ScalarOp::Add, {a, b}); });
  CHECK(contains(msg, "(2, 3)"));
  CHECK(contains(msg, "(4, 3)"));
  CHECK_THROWS_AS(run(ScalarOp::Add, {a, b}), ShapeError);
  CHECK_THROWS_AS(run(ScalarOp::Add, {a}), TypeError);
}

TEST_CASE("broadcast helpers") {
  CHECK(broadcast_static({{2, 3}, {3}}) == Shape{2, 3});
  CHECK(broadcast_static({{kUnknownDim, 1}, {1, 5}}) == Shape{kUnknownDim, 5});
  CHECK(broadcast_static({{kUnknownDim, 3}, {1, 3}}) == Shape{kUnknownDim, 3});
  CHECK(broadcast_static({{1}, {kUnknownDim}}) == Shape{kUnknownDim});
  CHECK(broadcast_static({{kUnknownDim}, {4}}) == Shape{4});
  CHECK(broadcast_static({{}, {2, 1}}) == Shape{2, 1});
  CHECK(broadcast_static({{0, 1}, {1, 4}}) == Shape{0, 4});
  CHECK_THROWS_AS(broadcast_static({{2, 3}, {kUnknownDim, 4}}), ShapeError);
  const std::string msg = error_of([] { broadcast_static({{2, kUnknownDim}, {3, 1}}); });
  CHECK(contains(msg, "(2, ?)"));
  CHECK(contains(msg, "(3, 1)"));
  CHECK(broadcast_runtime({{5, 1, 3}, {4, 1}}) == Shape{5, 4, 3});
  CHECK_THROWS_AS(broadcast_runtime({{5, 2}, {3}}), ShapeError);
  CHECK(normalize_axis(-1, 3, "sum") == 2);
  CHECK(normalize_axis(0, 3, "sum") == 0);
  const std::string axis_msg = error_of([] { normalize_axis(3, 3, "sum"); });
  CHECK(contains(axis_msg, "[sum]"));
  CHECK(contains(axis_msg, "axis 3"));
  CHECK_THROWS_AS(normalize_axis(-4, 3, "sum"), ValueError);
}

// ---------------------------------------------------------------------------------------
// Types, weak literals, graph-level errors
// ---------------------------------------------------------------------------------------

TEST_CASE("dtype promotion and weak literals") {
  auto fm = fmatrix("fm");
  auto dm = dmatrix("dm");
  auto iv = ivector("iv");
  auto lv = lvector("lv");
  auto bv = bvector("bv");
  CHECK((fm * 0.05).dtype() == Dtype::Float32);
  CHECK((0.05 * fm).dtype() == Dtype::Float32);
  CHECK((fm + 1).dtype() == Dtype::Float32);
  CHECK((iv + 1).dtype() == Dtype::Int32);
  CHECK((1 - iv).dtype() == Dtype::Int32);
  CHECK((iv * 0.5).dtype() == Dtype::Float64);
  CHECK((bv + 1).dtype() == Dtype::UInt8);
  CHECK((fm + dm).dtype() == Dtype::Float64);
  CHECK((iv + fm).dtype() == Dtype::Float64);  // numpy: int32 + float32 -> float64
  CHECK((iv + lv).dtype() == Dtype::Int64);
  CHECK((bv + iv).dtype() == Dtype::Int32);
  CHECK((iv / iv).dtype() == Dtype::Float64);
  CHECK((fm / 2).dtype() == Dtype::Float32);
  CHECK(exp(iv).dtype() == Dtype::Float64);
  CHECK(exp(fm).dtype() == Dtype::Float32);
  CHECK((fm < 0.5).dtype() == Dtype::Bool);
  CHECK((iv < 0.5).dtype() == Dtype::Bool);
  CHECK(cast(fm, Dtype::Int32).dtype() == Dtype::Int32);
  CHECK(cast(fm, Dtype::Float32).same_as(fm));
  CHECK(switch_(fm > 0, fm, 0).dtype() == Dtype::Float32);
  CHECK(where(iv, fm, dm).dtype() == Dtype::Float64);
  CHECK(clip(fm, 0.0, 1.0).dtype() == Dtype::Float32);
  CHECK(fill(fm, 0.5).dtype() == Dtype::Float32);
  CHECK(fill(iv, 0.5).dtype() == Dtype::Float64);
  CHECK(fill(iv, 2).dtype() == Dtype::Int32);
  CHECK(fill(fm, dscalar()).dtype() == Dtype::Float64);  // a strong value keeps its dtype
  CHECK(zeros_like(bv).dtype() == Dtype::UInt8);
  CHECK(ones_like(bvector() > 0).dtype() == Dtype::Bool);
  CHECK(maximum(iv, 0).dtype() == Dtype::Int32);
  CHECK(pow(fm, 2).dtype() == Dtype::Float32);
  // Only literals are weak: a float64 tensor still promotes.
  CHECK((fm * dscalar()).dtype() == Dtype::Float64);
  // Literals alone keep their own dtypes.
  CHECK((Variable(2.0) * Variable(3)).dtype() == Dtype::Float64);
  CHECK((Variable(2) * Variable(3)).dtype() == Dtype::Int64);
}

TEST_CASE("adopted literals are stored in the adopted dtype") {
  auto g = fmatrix("g");
  Variable y = g * 0.05;
  const NodePtr& lit = y.node()->inputs[1];
  CHECK(lit->kind == NodeKind::Constant);
  CHECK(lit->weak_literal);
  CHECK(lit->type.dtype == Dtype::Float32);
  CHECK(lit->value.item<float>() == 0.05f);
  // ... so the computation happens in float32 on every backend.
  Tensor out = eval1(g, y, Tensor::full({2, 2}, 10, Dtype::Float32));
  CHECK(out.dtype() == Dtype::Float32);
  CHECK(out.to_vector()[0] == doctest::Approx(0.5));
  auto iv = ivector("iv");
  Tensor r = eval1(iv, iv * 0.5, Tensor::from_list({1, 3}, Dtype::Int32));
  CHECK(r.dtype() == Dtype::Float64);
  check_values(r, {0.5, 1.5});
}

TEST_CASE("expressions of literals alone are weak literals (numpy's Python scalars)") {
  // -lr written as neg(0.05): a folded literal, still weak, so float32 stays float32.
  const Variable lr = neg(Variable(0.05));
  REQUIRE(lr.node()->kind == NodeKind::Constant);
  CHECK(lr.node()->weak_literal);
  CHECK(lr.dtype() == Dtype::Float64);
  CHECK(lr.node()->value.item<double>() == -0.05);
  CHECK(contains(lr.describe(), "test_ops_elemwise.cpp"));  // where it was written
  auto w = fvector("w"), g = fvector("g");
  Variable step = w + neg(0.05) * g;
  CHECK(step.dtype() == Dtype::Float32);
  CHECK((w + (-Variable(0.05)) * g).dtype() == Dtype::Float32);
  Tensor out = function({w, g}, {step}, {}, {}, ref())(
      {Tensor::from_list({1, 2}, Dtype::Float32), Tensor::from_list({10, -20}, Dtype::Float32)})[0];
  CHECK(out.dtype() == Dtype::Float32);
  check_values(out, {0.5, 3}, 1e-6);
  // Other unary and binary ops on literals fold the same way, with numpy's values.
  auto fm = fmatrix("fm");
  auto iv = ivector("iv");
  const Variable e = exp(Variable(1.0));
  CHECK(e.node()->weak_literal);
  CHECK(e.node()->value.item<double>() == doctest::Approx(std::exp(1.0)).epsilon(1e-15));
  CHECK((fm * e).dtype() == Dtype::Float32);
  const Variable root = sqrt(Variable(4));  // a float op on an int literal: float64, weak
  CHECK(root.dtype() == Dtype::Float64);
  CHECK(root.node()->weak_literal);
  CHECK(root.node()->value.item<double>() == 2.0);
  CHECK((fm * root).dtype() == Dtype::Float32);
  const Variable six = Variable(2) * Variable(3);
  CHECK(six.node()->weak_literal);
  CHECK(six.dtype() == Dtype::Int64);
  CHECK(six.node()->value.item<std::int64_t>() == 6);
  CHECK((iv + six).dtype() == Dtype::Int32);
  CHECK((iv + neg(Variable(2))).dtype() == Dtype::Int32);
  CHECK((iv + abs(Variable(-3))).dtype() == Dtype::Int32);
  check_values(eval1(iv, iv - abs(Variable(-3)), Tensor::from_list({1, 5}, Dtype::Int32)), {-2, 2});
  CHECK(eval1(iv, iv - abs(Variable(-3)), Tensor::from_list({1, 5}, Dtype::Int32)).dtype() ==
        Dtype::Int32);
  CHECK((fm * (Variable(2.0) * Variable(3))).dtype() == Dtype::Float32);
  CHECK((fm * maximum(Variable(0.5), Variable(0.25))).dtype() == Dtype::Float32);
  CHECK((fm * clip(Variable(2.0), 0.0, 1.0)).dtype() == Dtype::Float32);
  // A comparison of literals is a weak bool: it adopts the tensor's dtype.
  const Variable yes = Variable(1) < Variable(2);
  CHECK(yes.dtype() == Dtype::Bool);
  CHECK(yes.node()->weak_literal);
  CHECK((iv * yes).dtype() == Dtype::Int32);
  CHECK(switch_(yes, Variable(1.5), Variable(2)).node()->value.item<double>() == 1.5);
  // The kind rule stays: an integer tensor meeting a float literal is float64, as before.
  CHECK((iv * neg(Variable(0.5))).dtype() == Dtype::Float64);
  check_values(eval1(iv, iv * neg(Variable(0.5)), Tensor::from_list({1, 3}, Dtype::Int32)),
               {-0.5, -1.5});
  // A folded integer literal that does not fit the tensor's dtype is refused like a written one.
  auto bv = bvector("pixels");
  const std::string msg = error_of([&] { (void)(bv + neg(Variable(1))); });
  CHECK(contains(msg, "-1"));
  CHECK(contains(msg, "uint8"));
  CHECK(contains(msg, "pixels"));
  // An explicit cast asks for a definite dtype: it is a strong value, not a literal.
  const Variable half = cast(Variable(0.5), Dtype::Float64);
  CHECK_FALSE(half.node()->weak_literal);
  CHECK((fm * half).dtype() == Dtype::Float64);
  CHECK((fm * cast(Variable(2), Dtype::Float32)).dtype() == Dtype::Float32);
  CHECK((iv * cast(Variable(2), Dtype::Int64)).dtype() == Dtype::Int64);
  // Operations numpy refuses on bools are refused on literal bools too, naming the op.
  const std::string neg_msg = error_of([&] { (void)neg(Variable(1) < Variable(2)); });
  CHECK(contains(neg_msg, "[neg]"));
  CHECK(contains(neg_msg, "bool"));
  // A tensor among the inputs keeps the node: only literals alone fold.
  CHECK(neg(fm).node()->kind == NodeKind::Apply);
  CHECK((fm + Variable(1.0)).node()->kind == NodeKind::Apply);
}

TEST_CASE("an SGD step with a negated literal rate keeps float32 gradients and updates") {
  auto x = fvector("x");
  auto w = shared(Tensor::from_list({1, -2}, Dtype::Float32), "w");
  Variable cost = sum(sqr(w * x));
  Variable gw = grad(cost, w);
  Variable step = w + neg(0.1) * gw;
  CHECK(step.dtype() == Dtype::Float32);
  auto f = function({x}, {cost}, {{w, step}}, ref());
  f({Tensor::from_list({1, 2}, Dtype::Float32)});
  // gw = 2 w x^2 = (2, -16): w - 0.1 gw, computed in float32.
  const Tensor wv = w.get_value();
  CHECK(wv.dtype() == Dtype::Float32);
  check_values(wv, {0.8, -0.4}, 1e-6);
}

TEST_CASE("integer literals that do not fit are refused") {
  auto bv = bvector("pixels");
  const std::string msg = error_of([&] { (void)(bv + 300); });
  CHECK(contains(msg, "300"));
  CHECK(contains(msg, "uint8"));
  CHECK(contains(msg, "pixels"));
  CHECK(contains(msg, "test_ops_elemwise.cpp"));
  CHECK_NOTHROW((void)(bv + 255));
  CHECK_THROWS_AS((void)(bv - (-1)), ValueError);
}

TEST_CASE("static broadcasting: result shapes and errors naming op, variables and shapes") {
  auto a = tensor(Dtype::Float32, Shape{2, 3}, "a");
  auto b = tensor(Dtype::Float32, Shape{4, 3}, "b");
  const std::string msg = error_of([&] { (void)(a + b); });
  CHECK(contains(msg, "[add]"));
  CHECK(contains(msg, "a (float32"));
  CHECK(contains(msg, "b (float32"));
  CHECK(contains(msg, "(2, 3)"));
  CHECK(contains(msg, "(4, 3)"));
  CHECK(contains(msg, "test_ops_elemwise.cpp"));
  CHECK_THROWS_AS((void)(a * b), ShapeError);

  auto col = tensor(Dtype::Float32, Shape{kUnknownDim, 1}, "col");
  auto row = tensor(Dtype::Float32, Shape{1, 5}, "row");
  CHECK((col + row).type().shape == Shape{kUnknownDim, 5});
  CHECK((fmatrix() + fvector()).type().shape == Shape{kUnknownDim, kUnknownDim});
  CHECK((a + fscalar()).type().shape == Shape{2, 3});
  CHECK(clip(a, fvector(), 1.0).type().shape == Shape{2, 3});
  CHECK(switch_(bvector(), a, 0).type().shape == Shape{2, 3});
}

TEST_CASE("runtime broadcasting error through a compiled function") {
  auto x = dmatrix("x");
  auto y = dmatrix("y");
  Function f = function({x, y}, {x + y}, {}, {}, ref());
  std::string msg;
  try {
    f({Tensor::zeros({2, 3}, Dtype::Float64), Tensor::zeros({4, 3}, Dtype::Float64)});
  } catch (const ShapeError& e) {
    msg = e.what();
  }
  CHECK(contains(msg, "add"));
  CHECK(contains(msg, "(2, 3)"));
  CHECK(contains(msg, "(4, 3)"));
  // Broadcasting through size-1 static dims works.
  auto c = tensor(Dtype::Float64, Shape{kUnknownDim, 1}, "c");
  Tensor out = function({x, c}, {x * c}, {}, {}, ref())(
      {Tensor::ones({2, 3}, Dtype::Float64), Tensor::from_vector<double>({2, 3}, {2, 1})})[0];
  check_values(out, {2, 2, 2, 3, 3, 3});
}

TEST_CASE("neg and sub on bool are type errors; wrong arity is a type error") {
  auto m = bmatrix() > 0;
  CHECK_THROWS_AS((void)(-m), TypeError);
  CHECK_THROWS_AS((void)(m - m), TypeError);
  CHECK_NOTHROW((void)logical_not(m));
  CHECK_THROWS_AS(make_apply(std::make_shared<Elemwise>(ScalarOp::Add), {fvector().node()},
                             std::source_location::current()),
                  TypeError);
}

TEST_CASE("op identity: names, params, equality") {
  Elemwise add_op(ScalarOp::Add);
  CHECK(add_op.name() == "add");
  CHECK(add_op.str() == "add");
  CHECK(add_op.equals(Elemwise(ScalarOp::Add, Dtype::Float64)));  // cast_to only matters for cast
  CHECK_FALSE(add_op.equals(Elemwise(ScalarOp::Mul)));
  Elemwise c64(ScalarOp::Cast, Dtype::Float64);
  CHECK(c64.str() == "cast{float64}");
  CHECK_FALSE(c64.equals(Elemwise(ScalarOp::Cast, Dtype::Int32)));
  CHECK(add_op.traits().elementwise);
  CHECK((fvector() + 1).node()->op->name() == "add");
}

TEST_CASE("operators and API functions evaluate as expected") {
  auto x = dvector("x");
  auto y = dvector("y");
  Tensor xv = Tensor::from_list({-1, 0.5, 2}, Dtype::Float64);
  Tensor yv = Tensor::from_list({1, 0.5, -3}, Dtype::Float64);
  auto eval2 = [&](const Variable& out) {
    return function({x, y}, {out}, {}, {}, ref())({xv, yv})[0];
  };
  check_values(eval2(x + y), {0, 1, -1});
  check_values(eval2(x - y), {-2, 0, 5});
  check_values(eval2(x * y), {-1, 0.25, -6});
  check_values(eval2(x / y), {-1, 1, -2.0 / 3});
  check_values(eval2(-x), {1, -0.5, -2});
  check_values(eval2(x < y), {1, 0, 0});
  check_values(eval2(x <= y), {1, 1, 0});
  check_values(eval2(x > y), {0, 0, 1});
  check_values(eval2(x >= y), {0, 1, 1});
  check_values(eval2(eq(x, y)), {0, 1, 0});
  check_values(eval2(neq(x, y)), {1, 0, 1});
  check_values(eval2((x > 0) & (y > 0)), {0, 1, 0});
  check_values(eval2((x > 0) | (y > 0)), {1, 1, 1});
  check_values(eval2(logical_and(x, y)), {1, 1, 1});
  check_values(eval2(logical_or(x - x, y - y)), {0, 0, 0});
  check_values(eval2(logical_not(x > 0)), {1, 0, 0});
  // & and | are logical, so they refuse non-bool operands rather than guess "bitwise".
  const std::string amp = error_of([&] { (void)(x & y); });
  CHECK(contains(amp, "bool"));
  CHECK(contains(amp, "test_ops_elemwise.cpp"));
  CHECK_THROWS_AS((void)((x > 0) | y), TypeError);
  check_values(eval2(where(x > y, x, y)), {1, 0.5, 2});
  check_values(eval2(clip(x, -0.5, 1.0)), {-0.5, 0.5, 1});
  check_values(eval2(abs(x)), {1, 0.5, 2});
  check_values(eval2(sgn(x)), {-1, 1, 1});
  check_values(eval2(pow(abs(x), y)), {1, std::sqrt(0.5), 0.125});
  check_values(eval2(2 * x + 1), {-1, 2, 5});
  check_values(eval2(1 / y), {1, 2, -1.0 / 3});
  check_values(eval2(inv(y)), {1, 2, -1.0 / 3});
  check_values(eval2(zeros_like(x)), {0, 0, 0});
  check_values(eval2(ones_like(x)), {1, 1, 1});
  check_values(eval2(fill(x, 7)), {7, 7, 7});
  check_values(eval2(nnet::relu(x)), {0, 0.5, 2});
  check_values(eval2(nnet::sigmoid(x)),
               {1 / (1 + std::exp(1.0)), 1 / (1 + std::exp(-0.5)), 1 / (1 + std::exp(-2.0))});
  check_values(eval2(nnet::softplus(x)),
               {std::log1p(std::exp(-1.0)), std::log1p(std::exp(0.5)), std::log1p(std::exp(2.0))});
  // Operators record the user's line, not the library's.
  Variable z = x + y;
  CHECK(z.node()->site.file == "test_ops_elemwise.cpp");
  Variable w = 3.0 * x;
  CHECK(w.node()->site.file == "test_ops_elemwise.cpp");
}

// ---------------------------------------------------------------------------------------
// Gradients
// ---------------------------------------------------------------------------------------

namespace {

using Fn = std::function<Variable(const std::vector<Variable>&)>;

void check_grad(const char* what, const Fn& fn, const std::vector<Tensor>& points) {
  CAPTURE(what);
  CHECK_NOTHROW(verify_grad(fn, points));
}

}  // namespace

TEST_CASE("gradients of unary ops (float64, several shapes)") {
  struct Case {
    const char* name;
    std::function<Variable(const Variable&)> f;
    bool positive;  // domain restricted to x > 0
  };
  const std::vector<Case> cases = {
      {"neg", [](const Variable& x) { return neg(x); }, false},
      {"abs", [](const Variable& x) { return abs(x); }, false},
      {"exp", [](const Variable& x) { return exp(x); }, false},
      {"log", [](const Variable& x) { return log(x); }, true},
      {"log1p", [](const Variable& x) { return log1p(x); }, true},
      {"sqrt", [](const Variable& x) { return sqrt(x); }, true},
      {"sqr", [](const Variable& x) { return sqr(x); }, false},
      {"inv", [](const Variable& x) { return inv(x); }, false},
      {"tanh", [](const Variable& x) { return tanh(x); }, false},
      {"sigmoid", [](const Variable& x) { return sigmoid(x); }, false},
      {"softplus", [](const Variable& x) { return softplus(x); }, false},
      {"identity",
       [](const Variable& x) {
         return Variable(make_apply(std::make_shared<Elemwise>(ScalarOp::Identity), {x.node()},
                                    std::source_location::current()));
       },
       false},
      {"relu", [](const Variable& x) { return nnet::relu(x); }, false},
      {"cast to float64 of an expression",
       [](const Variable& x) { return cast(x * x, Dtype::Float64); }, false},
  };
  const std::vector<Shape> shapes = {{}, {5}, {2, 3}, {2, 1, 3}};
  std::uint64_t seed = 1;
  for (const Case& c : cases) {
    for (const Shape& s : shapes) {
      CAPTURE(shape_str(s));
      Tensor x = c.positive ? uniform(s, 0.3, 2.5, seed++) : away_from_zero(s, seed++);
      check_grad(c.name, [&](const std::vector<Variable>& v) { return c.f(v[0]); }, {x});
    }
  }
}

TEST_CASE("cast passes the gradient back in the input's dtype") {
  // A float32 round trip: the rounding is visible to a 1e-6 finite difference, so the
  // analytic gradient (exactly 1) is checked directly.
  auto x = dvector("x");
  Variable g = grad(sum(cast(cast(x, Dtype::Float32), Dtype::Float64) * 3), x);
  CHECK(g.dtype() == Dtype::Float64);
  check_values(eval1(x, g, Tensor::from_list({0.5, 2}, Dtype::Float64)), {3, 3});
  auto f = fvector("f");
  Variable gf = grad(sum(cast(f, Dtype::Float64) * 2.0), f);
  CHECK(gf.dtype() == Dtype::Float32);
  check_values(eval1(f, gf, Tensor::from_list({0.5, 2}, Dtype::Float32)), {2, 2});
}

TEST_CASE("gradients of binary ops, with broadcasting") {
  struct Case {
    const char* name;
    std::function<Variable(const Variable&, const Variable&)> f;
    bool positive_a;
  };
  const std::vector<Case> cases = {
      {"add", [](const Variable& a, const Variable& b) { return a + b; }, false},
      {"sub", [](const Variable& a, const Variable& b) { return a - b; }, false},
      {"mul", [](const Variable& a, const Variable& b) { return a * b; }, false},
      {"true_div", [](const Variable& a, const Variable& b) { return a / b; }, false},
      {"pow", [](const Variable& a, const Variable& b) { return pow(a, b); }, true},
      {"maximum", [](const Variable& a, const Variable& b) { return maximum(a, b); }, false},
      {"minimum", [](const Variable& a, const Variable& b) { return minimum(a, b); }, false},
  };
  const std::vector<std::pair<Shape, Shape>> shapes = {
      {{4}, {4}},       {{2, 3}, {2, 3}}, {{2, 3}, {3}}, {{2, 3}, {2, 1}},
      {{1, 3}, {2, 1}}, {{2, 3}, {}},     {{}, {2, 2}},  {{3, 1, 2}, {4, 1}}};
  std::uint64_t seed = 100;
  for (const Case& c : cases) {
    for (const auto& [sa, sb] : shapes) {
      CAPTURE(shape_str(sa));
      CAPTURE(shape_str(sb));
      Tensor a = c.positive_a ? uniform(sa, 0.3, 2.5, seed++) : away_from_zero(sa, seed++);
      Tensor b = away_from_zero(sb, seed++);
      check_grad(c.name, [&](const std::vector<Variable>& v) { return c.f(v[0], v[1]); }, {a, b});
    }
  }
}

TEST_CASE("gradients of clip, switch, fill and mixed dtypes") {
  Tensor x = uniform({3, 4}, -2, 2, 7);
  Tensor lo = uniform({4}, -1.5, -0.2, 8);
  Tensor hi = uniform({3, 1}, 0.2, 1.5, 9);
  check_grad("clip", [](const std::vector<Variable>& v) { return clip(v[0], v[1], v[2]); },
             {x, lo, hi});
  check_grad("clip with literal bounds",
             [](const std::vector<Variable>& v) { return clip(v[0], -0.5, 0.5) * v[0]; }, {x});
  Tensor cond = Tensor::from_list({{1, 0, 1, 0}, {0, 0, 1, 1}, {1, 1, 0, 0}}, Dtype::Bool);
  check_grad("switch",
             [](const std::vector<Variable>& v) { return switch_(v[0], v[1] * v[1], exp(v[2])); },
             {cond, x, uniform({4}, -1, 1, 10)});
  check_grad("fill", [](const std::vector<Variable>& v) { return fill(v[0], v[1]) * v[0]; },
             {x, uniform({}, -1, 1, 11)});
  // An integer operand gets no gradient; the float one still does.
  check_grad("float * int", [](const std::vector<Variable>& v) { return v[0] * v[1]; },
             {x, Tensor::from_list({1, -2, 3, 4}, Dtype::Int32)});
}

TEST_CASE("vjp details: integer, comparison and disconnected inputs") {
  auto x = dvector("x");
  auto i = ivector("i");
  // Comparisons and sign pass no gradient.
  Elemwise lt_op(ScalarOp::Lt);
  Variable out = x < 1.0;
  auto g = lt_op.vjp({x, Variable(1.0)}, out, ones_like(out));
  CHECK_FALSE(g[0]);
  CHECK_FALSE(g[1]);
  Elemwise sgn_op(ScalarOp::Sign);
  CHECK_FALSE(sgn_op.vjp({x}, sgn(x), ones_like(x))[0]);
  // Integer inputs get none; the float input gets a float gradient of its own type.
  Elemwise mul_op(ScalarOp::Mul);
  Variable prod = x * i;
  auto gm = mul_op.vjp({x, i}, prod, ones_like(prod));
  CHECK(gm[0]);
  CHECK(gm[0].dtype() == Dtype::Float64);
  CHECK_FALSE(gm[1]);
  // Switch gives nothing to its condition; second nothing to its shape-giver.
  auto c = dvector("c");
  Elemwise sw(ScalarOp::Switch);
  auto gs = sw.vjp({c, x, x}, switch_(c, x, x), ones_like(x));
  CHECK_FALSE(gs[0]);
  CHECK(gs[1]);
  Elemwise second(ScalarOp::Second);
  auto gf = second.vjp({x, c}, fill(x, c), ones_like(x));
  CHECK_FALSE(gf[0]);
  CHECK(gf[1]);
  // float32 * float64 -> the float32 input's gradient is float32.
  auto f = fvector("f");
  Variable mixed = f * x;
  auto gmix = mul_op.vjp({f, x}, mixed, ones_like(mixed));
  CHECK(gmix[0].dtype() == Dtype::Float32);
  // Casting a float to an integer is flat: zero gradient, not a missing one.
  Elemwise to_int(ScalarOp::Cast, Dtype::Int32);
  Variable ci = cast(x, Dtype::Int32);
  auto gci = to_int.vjp({x}, ci, ones_like(ci));
  REQUIRE(gci[0]);
  check_values(eval1(x, gci[0], Tensor::from_list({1, 2}, Dtype::Float64)), {0, 0});
  // Cost through a comparison only: grad raises unless told to ignore.
  Variable cost = sum(cast(x > 0.0, Dtype::Float64));
  CHECK_THROWS_AS(grad(cost, x), GradError);
}

TEST_CASE("maximum/minimum ties send the gradient to the first operand") {
  auto a = dvector("a");
  auto b = dvector("b");
  Variable cost = sum(maximum(a, b)) + sum(minimum(a, b));
  auto gs = grad(cost, {a, b});
  auto f = function({a, b}, gs, {}, {}, ref());
  auto out = f(
      {Tensor::from_list({1, 2, 3}, Dtype::Float64), Tensor::from_list({1, 0, 5}, Dtype::Float64)});
  check_values(out[0], {2, 1, 1});
  check_values(out[1], {0, 1, 1});
  // relu at 0: maximum(x, 0) ties go to x.
  check_values(eval1(a, grad(sum(nnet::relu(a)), a), Tensor::from_list({-1, 0, 1}, Dtype::Float64)),
               {0, 1, 1});
}

TEST_CASE("second-order gradients through elementwise graphs") {
  // Hessian-vector product of sum(x^3 * y + tanh(x)) is checked by differentiating
  // the gradient graph again.
  check_grad("hvp",
             [](const std::vector<Variable>& v) {
               Variable cost = sum(v[0] * v[0] * v[0] * v[1] + tanh(v[0]) + sigmoid(v[0]) * v[1]);
               Variable g = grad(cost, v[0]);
               return sum(g * v[2]);
             },
             {uniform({2, 3}, -1, 1, 20), uniform({3}, -1, 1, 21), uniform({2, 3}, -1, 1, 22)});
  auto x = dvector("x");
  Variable g = grad(sum(x * x * x), x);
  Variable h = grad(sum(g), x);  // d/dx sum(3x^2) = 6x
  check_values(eval1(x, h, Tensor::from_list({1, -2}, Dtype::Float64)), {6, -12});
}

TEST_CASE("gradients keep float32 for float32 graphs with literals") {
  auto w = fvector("w");
  Variable cost = sum(sqr(w * 0.5 - 1));
  Variable g = grad(cost, w);
  CHECK(g.dtype() == Dtype::Float32);
  Tensor out = eval1(w, g, Tensor::from_list({2, 4}, Dtype::Float32));
  CHECK(out.dtype() == Dtype::Float32);
  check_values(out, {0, 1});  // d/dw (w/2 - 1)^2 = (w/2 - 1)
}
