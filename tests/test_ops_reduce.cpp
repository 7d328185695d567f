// Reductions: forward values over every axis combination, dtypes, axis handling and its
// errors, argmax/argmin and size_of, and finite-difference gradients in float64.
#include <doctest/doctest.h>

#include <algorithm>
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

Tensor reduce(ReduceKind kind, const Tensor& x, std::vector<int> axes, bool keepdims = false) {
  return Reduce(kind, std::move(axes), keepdims).perform({x});
}

// Naive reduction of a (2, 3, 4) tensor over `axes` (others kept, in order).
std::vector<double> naive(const Tensor& x, const std::vector<int>& axes,
                          const std::function<double(const std::vector<double>&)>& f) {
  const Shape& s = x.shape();
  auto reduced = [&](int a) {
    return axes.empty() || std::find(axes.begin(), axes.end(), a) != axes.end();
  };
  std::vector<double> out;
  for (std::int64_t i = 0; i < (reduced(0) ? 1 : s[0]); ++i)
    for (std::int64_t j = 0; j < (reduced(1) ? 1 : s[1]); ++j)
      for (std::int64_t k = 0; k < (reduced(2) ? 1 : s[2]); ++k) {
        std::vector<double> vals;
        for (std::int64_t a = 0; a < s[0]; ++a)
          for (std::int64_t b = 0; b < s[1]; ++b)
            for (std::int64_t c = 0; c < s[2]; ++c) {
              if ((!reduced(0) && a != i) || (!reduced(1) && b != j) || (!reduced(2) && c != k))
                continue;
              vals.push_back(x.get({a, b, c}));
            }
        out.push_back(f(vals));
      }
  return out;
}

double fsum(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s;
}
double fprod(const std::vector<double>& v) {
  double s = 1;
  for (double x : v) s *= x;
  return s;
}
double fmax(const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); }
double fmin(const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); }
double fmean(const std::vector<double>& v) { return fsum(v) / static_cast<double>(v.size()); }

}  // namespace

TEST_CASE("every reduction over every axis subset of a rank-3 tensor") {
  Tensor x = uniform({2, 3, 4}, 0.5, 1.5, 3);
  const std::vector<std::vector<int>> subsets = {{}, {0}, {1}, {2}, {0, 1}, {0, 2}, {1, 2}};
  struct Case {
    ReduceKind kind;
    double (*f)(const std::vector<double>&);
  };
  for (const Case& c :
       {Case{ReduceKind::Sum, fsum}, Case{ReduceKind::Prod, fprod}, Case{ReduceKind::Max, fmax},
        Case{ReduceKind::Min, fmin}, Case{ReduceKind::Mean, fmean}}) {
    for (const auto& axes : subsets) {
      CAPTURE(reduce_kind_name(c.kind));
      CAPTURE(axes.size());
      Tensor r = reduce(c.kind, x, axes);
      check_values(r, naive(x, axes, c.f));
      Tensor k = reduce(c.kind, x, axes, /*keepdims=*/true);
      CHECK(k.ndim() == 3);
      check_values(k, naive(x, axes, c.f));
      // A transposed view reduces to the same values (strided input).
      Tensor xt = x.permute({2, 1, 0}).contiguous().permute({2, 1, 0});
      check_values(reduce(c.kind, xt, axes), naive(x, axes, c.f));
    }
  }
  CHECK(reduce(ReduceKind::Sum, x, {1}).shape() == Shape{2, 4});
  CHECK(reduce(ReduceKind::Sum, x, {1}, true).shape() == Shape{2, 1, 4});
  CHECK(reduce(ReduceKind::Sum, x, {}).ndim() == 0);
  CHECK(reduce(ReduceKind::Sum, x, {}, true).shape() == Shape{1, 1, 1});
}

TEST_CASE("hand-computed reductions and numpy dtypes") {
  Tensor m = Tensor::from_list({{1, 2, 3}, {4, 5, 6}}, Dtype::Int32);
  Tensor s = reduce(ReduceKind::Sum, m, {0});
  CHECK(s.dtype() == Dtype::Int64);
  check_values(s, {5, 7, 9});
  check_values(reduce(ReduceKind::Sum, m, {1}), {6, 15});
  check_values(reduce(ReduceKind::Prod, m, {}), {720});
  CHECK(reduce(ReduceKind::Prod, m, {}).dtype() == Dtype::Int64);
  Tensor mx = reduce(ReduceKind::Max, m, {1});
  CHECK(mx.dtype() == Dtype::Int32);
  check_values(mx, {3, 6});
  check_values(reduce(ReduceKind::Min, m, {0}), {1, 2, 3});
  Tensor mean = reduce(ReduceKind::Mean, m, {0});
  CHECK(mean.dtype() == Dtype::Float64);
  check_values(mean, {2.5, 3.5, 4.5});
  Tensor f = Tensor::from_list({{1, 2}, {3, 4}}, Dtype::Float32);
  CHECK(reduce(ReduceKind::Mean, f, {}).dtype() == Dtype::Float32);
  check_values(reduce(ReduceKind::Mean, f, {}), {2.5});
  Tensor b = Tensor::from_list({1, 0, 1, 1}, Dtype::Bool);
  CHECK(reduce(ReduceKind::Sum, b, {}).dtype() == Dtype::Int64);
  check_values(reduce(ReduceKind::Sum, b, {}), {3});
  CHECK(reduce(ReduceKind::Max, b, {}).dtype() == Dtype::Bool);
  check_values(reduce(ReduceKind::Max, b, {}), {1});
  check_values(reduce(ReduceKind::Min, b, {}), {0});
  Tensor u = Tensor::from_list({200, 100}, Dtype::UInt8);
  check_values(reduce(ReduceKind::Sum, u, {}), {300});  // no uint8 wrap: summed in int64
  // A rank-0 input reduces to itself.
  check_values(reduce(ReduceKind::Sum, Tensor::scalar(4, Dtype::Float64), {}), {4});
}

TEST_CASE("float32 sums accumulate in double") {
  Tensor x = Tensor::from_list({1e8, 1, -1e8}, Dtype::Float32);
  Tensor s = reduce(ReduceKind::Sum, x, {});
  CHECK(s.dtype() == Dtype::Float32);
  CHECK(s.item<float>() == 1.0f);  // a float accumulator would give 0
  Tensor big = Tensor::full({1 << 20}, 0.1, Dtype::Float32);
  CHECK(reduce(ReduceKind::Mean, big, {}).item<float>() == doctest::Approx(0.1).epsilon(1e-7));
}

TEST_CASE("NaN propagates through max/min; empty reductions") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  Tensor x = Tensor::from_list({{1, nan, 3}, {4, 5, 6}}, Dtype::Float64);
  check_values(reduce(ReduceKind::Max, x, {1}), {nan, 6});
  check_values(reduce(ReduceKind::Min, x, {1}), {nan, 4});
  check_values(reduce(ReduceKind::Max, x, {0}), {4, nan, 6});
  Tensor empty = Tensor::zeros({2, 0}, Dtype::Float64);
  check_values(reduce(ReduceKind::Sum, empty, {1}), {0, 0});
  check_values(reduce(ReduceKind::Prod, empty, {1}), {1, 1});
  check_values(reduce(ReduceKind::Mean, empty, {1}), {nan, nan});
  CHECK(reduce(ReduceKind::Sum, empty, {0}).shape() == Shape{0});
  const std::string msg = error_of([&] { reduce(ReduceKind::Max, empty, {1}); });
  CHECK(contains(msg, "zero-size"));
  CHECK(contains(msg, "(2, 0)"));
  CHECK_THROWS_AS(reduce(ReduceKind::Min, empty, {}), ValueError);
  // Statically empty: refused when the graph is built.
  CHECK_THROWS_AS(max(tensor(Dtype::Float32, Shape{3, 0}), 1), ValueError);
}

TEST_CASE("argmax and argmin") {
  Tensor x = Tensor::from_list({{1, 7, 7, 0}, {5, -2, 5, -2}}, Dtype::Float32);
  Tensor am = ArgReduce(true, 1, false).perform({x});
  CHECK(am.dtype() == Dtype::Int64);
  check_values(am, {1, 0});  // ties: the first
  check_values(ArgReduce(false, 1, false).perform({x}), {3, 1});
  check_values(ArgReduce(true, 0, false).perform({x}), {1, 0, 0, 0});
  check_values(ArgReduce(false, 0, false).perform({x}), {0, 1, 1, 1});
  Tensor flat = ArgReduce(true, -1, false).perform({x});
  CHECK(flat.ndim() == 0);
  CHECK(flat.item<std::int64_t>() == 1);
  CHECK(ArgReduce(false, -1, false).perform({x}).item<std::int64_t>() == 5);
  CHECK(ArgReduce(true, 1, true).perform({x}).shape() == Shape{2, 1});
  CHECK(ArgReduce(true, -1, true).perform({x}).shape() == Shape{1, 1});
  const double nan = std::numeric_limits<double>::quiet_NaN();
  Tensor n = Tensor::from_list({1, nan, 9, nan}, Dtype::Float64);
  CHECK(ArgReduce(true, -1, false).perform({n}).item<std::int64_t>() == 1);  // numpy: first NaN
  CHECK(ArgReduce(false, -1, false).perform({n}).item<std::int64_t>() == 1);
  Tensor ints = Tensor::from_list({3, 9, 2, 9}, Dtype::Int64);
  CHECK(ArgReduce(true, 0, false).perform({ints}).item<std::int64_t>() == 1);
  CHECK(ArgReduce(false, 0, false).perform({ints}).item<std::int64_t>() == 2);
  CHECK_THROWS_AS(ArgReduce(true, 1, false).perform({Tensor::zeros({2, 0}, Dtype::Float32)}),
                  ValueError);

  // Through the API, with negative axes and a compiled function.
  auto m = fmatrix("m");
  auto f = function({m}, {argmax(m, 1), argmin(m, -1), argmax(m)}, {}, {}, ref());
  auto out = f({x});
  check_values(out[0], {1, 0});
  check_values(out[1], {3, 1});
  check_values(out[2], {1});
  CHECK(argmax(m, 1).type() == TensorType(Dtype::Int64, {kUnknownDim}));
  CHECK(argmax(m, 1, true).type().shape == Shape{kUnknownDim, 1});
  CHECK(argmax(m).type().ndim() == 0);
  CHECK(argmax(m, -1).node()->op->str() == "argmax{axis=1}");
  const std::string msg = error_of([&] { (void)argmax(m, 2); });
  CHECK(contains(msg, "[argmax]"));
  CHECK(contains(msg, "axis 2"));
  CHECK(contains(msg, "m (fmatrix"));
  CHECK(contains(msg, "test_ops_reduce.cpp"));
  // argmax has no gradient.
  CHECK_THROWS_AS(grad(sum(cast(argmax(m, 1), Dtype::Float32)), m), GradError);
}

TEST_CASE("size_of") {
  Tensor x = Tensor::zeros({2, 3, 5}, Dtype::Float32);
  CHECK(SizeOf({}).perform({x}).item<std::int64_t>() == 30);
  CHECK(SizeOf({0, 2}).perform({x}).item<std::int64_t>() == 10);
  CHECK(SizeOf({1}).perform({x}).dtype() == Dtype::Int64);
  auto t = ftensor3("t");
  Variable n = size_of(t, std::vector<int>{-1, 0});
  CHECK(n.type() == TensorType(Dtype::Int64, {}));
  CHECK(n.node()->op->str() == "size_of{axes=(0, 2)}");
  CHECK(eval1(t, n, x).item<std::int64_t>() == 10);
  CHECK(eval1(t, size_of(t), x).item<std::int64_t>() == 30);
}

TEST_CASE("reduction types, axis normalization and errors") {
  auto im = imatrix("im");
  auto fm = fmatrix("fm");
  CHECK(sum(im).type() == TensorType(Dtype::Int64, {}));
  CHECK(mean(im, 0).type() == TensorType(Dtype::Float64, {kUnknownDim}));
  CHECK(max(im, 1).dtype() == Dtype::Int32);
  CHECK(prod(bvector()).dtype() == Dtype::Int64);
  CHECK(mean(fm).dtype() == Dtype::Float32);
  CHECK(sum(fm, 1, true).type().shape == Shape{kUnknownDim, 1});
  auto t = tensor(Dtype::Float32, Shape{2, kUnknownDim, 4}, "t");
  CHECK(sum(t, std::vector<int>{0, 2}).type().shape == Shape{kUnknownDim});
  CHECK(sum(t, std::vector<int>{0, 2}, true).type().shape == Shape{1, kUnknownDim, 1});
  CHECK(max(t, -1).type().shape == Shape{2, kUnknownDim});
  // Negative axes and full axis lists are normalized so equal reductions merge.
  CHECK(sum(fm, -1).node()->op->str() == "sum{axes=(1,)}");
  CHECK(sum(fm, std::vector<int>{1, 0}).node()->op->str() == "sum");
  CHECK(sum(fm, std::vector<int>{}).node()->op->str() == "sum");
  CHECK(sum(fm, std::nullopt, true).node()->op->str() == "sum{keepdims}");
  CHECK(mean(t, std::vector<int>{2, 0}, true).node()->op->str() == "mean{axes=(0, 2), keepdims}");
  CHECK(sum(fm, -1).node()->op->equals(*sum(fm, 1).node()->op));
  const std::string msg = error_of([&] { (void)sum(fm, 2); });
  CHECK(contains(msg, "[sum]"));
  CHECK(contains(msg, "axis 2"));
  CHECK(contains(msg, "fm (fmatrix"));
  CHECK(contains(msg, "test_ops_reduce.cpp"));
  CHECK_THROWS_AS((void)mean(fm, -3), ValueError);
  const std::string dup = error_of([&] { (void)sum(fm, std::vector<int>{1, -1}); });
  CHECK(contains(dup, "twice"));
  // An op built directly with bad axes is refused by its type inference.
  CHECK_THROWS_AS(make_apply(std::make_shared<Reduce>(ReduceKind::Sum, std::vector<int>{3}, false),
                             {fm.node()}, std::source_location::current()),
                  ValueError);
  CHECK_THROWS_AS(
      make_apply(std::make_shared<Reduce>(ReduceKind::Sum, std::vector<int>{1, 0}, false),
                 {fm.node()}, std::source_location::current()),
      ValueError);
}

TEST_CASE("reductions through compiled functions") {
  auto x = dmatrix("x");
  Tensor v = Tensor::from_list({{1, -2, 3}, {4, 5, -6}}, Dtype::Float64);
  auto f = function({x},
                    {sum(x), sum(x, 0), mean(x, 1), max(x, 0), min(x), prod(x, 1, true),
                     sum(x, std::vector<int>{0, 1}, true)},
                    {}, {}, ref());
  auto out = f({v});
  check_values(out[0], {5});
  check_values(out[1], {5, 3, -3});
  check_values(out[2], {2.0 / 3, 1});
  check_values(out[3], {4, 5, 3});
  check_values(out[4], {-6});
  CHECK(out[5].shape() == Shape{2, 1});
  check_values(out[5], {-6, -120});
  CHECK(out[6].shape() == Shape{1, 1});
}

// ---------------------------------------------------------------------------------------
// Gradients
// ---------------------------------------------------------------------------------------

TEST_CASE("gradients of sum, mean, prod, max, min over axes (float64)") {
  using R = std::function<Variable(const Variable&)>;
  struct Case {
    const char* name;
    R f;
  };
  const std::vector<Case> cases = {
      {"sum all", [](const Variable& x) { return sum(x); }},
      {"sum 0", [](const Variable& x) { return sum(x, 0); }},
      {"sum -1 keepdims", [](const Variable& x) { return sum(x, -1, true) * x; }},
      {"mean all", [](const Variable& x) { return mean(x); }},
      {"mean 0", [](const Variable& x) { return mean(x, 0); }},
      {"mean -1 keepdims", [](const Variable& x) { return mean(x, -1, true) * x; }},
      {"prod all", [](const Variable& x) { return prod(x); }},
      {"prod 0", [](const Variable& x) { return prod(x, 0); }},
      {"prod -1 keepdims", [](const Variable& x) { return prod(x, -1, true); }},
      {"max all", [](const Variable& x) { return max(x); }},
      {"max 0", [](const Variable& x) { return max(x, 0); }},
      {"max -1 keepdims", [](const Variable& x) { return max(x, -1, true) * x; }},
      {"min all", [](const Variable& x) { return min(x); }},
      {"min 0", [](const Variable& x) { return min(x, 0); }},
      {"min -1 keepdims", [](const Variable& x) { return min(x, -1, true); }},
  };
  const std::vector<Shape> shapes = {{5}, {3, 4}, {2, 3, 4}, {1, 3}};
  std::uint64_t seed = 40;
  for (const Case& c : cases) {
    for (const Shape& s : shapes) {
      CAPTURE(c.name);
      CAPTURE(shape_str(s));
      // Distinct values away from zero: max/min have no ties, prod no zeros.
      Tensor x = uniform(s, 0.5, 2.0, seed++);
      CHECK_NOTHROW(verify_grad([&](const std::vector<Variable>& v) { return c.f(v[0]); }, {x}));
    }
  }
  // Multi-axis reductions of a rank-3 tensor.
  Tensor x3 = uniform({2, 3, 4}, 0.5, 2.0, 77);
  for (const std::vector<int>& axes : {std::vector<int>{0, 2}, std::vector<int>{1, 2}}) {
    CHECK_NOTHROW(verify_grad(
        [&](const std::vector<Variable>& v) {
          return sum(v[0], axes) + mean(v[0], axes) + max(v[0], axes) + prod(v[0], axes, true);
        },
        {x3}));
  }
}

TEST_CASE("max gradient: every tie gets it (Theano's choice); mean with run-time sizes") {
  auto x = dmatrix("x");
  Tensor v = Tensor::from_list({{1, 3, 3}, {2, 0, -1}}, Dtype::Float64);
  check_values(eval1(x, grad(sum(max(x, 1)), x), v), {0, 1, 1, 1, 0, 0});
  check_values(eval1(x, grad(min(x), x), v), {0, 0, 0, 0, 0, 1});
  // x's sizes are unknown statically: mean's gradient counts them at run time.
  Variable g = grad(mean(x), x);
  check_values(eval1(x, g, v), std::vector<double>(6, 1.0 / 6));
  check_values(eval1(x, grad(sum(mean(x, 0)), x), v), std::vector<double>(6, 0.5));
  // A float32 mean keeps float32 gradients.
  auto f = fmatrix("f");
  Variable gf = grad(mean(f), f);
  CHECK(gf.dtype() == Dtype::Float32);
  Tensor gv = eval1(f, gf, v.astype(Dtype::Float32));
  CHECK(gv.dtype() == Dtype::Float32);
  check_values(gv, std::vector<double>(6, 1.0 / 6), 1e-6);
  // prod: the product of the others (prod / x away from zeros).
  check_values(
      eval1(x, grad(prod(x), x), Tensor::from_list({{1, 2, 3}, {4, 5, 6}}, Dtype::Float64)),
      {720, 360, 240, 180, 144, 120});
  // Integer inputs get no gradient.
  auto i = imatrix("i");
  Reduce s(ReduceKind::Sum, {}, false);
  CHECK_FALSE(s.vjp({i}, sum(i), ones_like(sum(i)))[0]);
}

namespace {

// Flat index -> coordinates of a row-major shape.
std::vector<std::int64_t> unravel(std::int64_t flat, const Shape& shape) {
  std::vector<std::int64_t> idx(shape.size());
  for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
    idx[d] = flat % shape[d];
    flat /= shape[d];
  }
  return idx;
}

// Which slice of a reduction over `axes` (empty: all) element `idx` belongs to: its
// coordinates on the kept axes, flattened.
std::int64_t slice_of(const std::vector<std::int64_t>& idx, const Shape& shape,
                      const std::vector<int>& axes) {
  std::int64_t s = 0;
  for (std::size_t d = 0; d < shape.size(); ++d) {
    const bool reduced =
        axes.empty() || std::find(axes.begin(), axes.end(), static_cast<int>(d)) != axes.end();
    if (!reduced) s = s * shape[d] + idx[d];
  }
  return s;
}

// Values in [0.5, 2) with (slice + variant) % 3 zeros in each reduced slice: every slice
// count of 0, 1 and 2 zeros shows up over the three variants, whatever the axes.
Tensor with_zeros(const Shape& shape, const std::vector<int>& axes, int variant,
                  std::uint64_t seed) {
  Tensor x = uniform(shape, 0.5, 2.0, seed);
  std::vector<int> placed(static_cast<std::size_t>(x.numel()), 0);
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    const std::vector<std::int64_t> idx = unravel(i, shape);
    const std::int64_t s = slice_of(idx, shape, axes);
    if (placed[s] < (s + variant) % 3) {
      x.set(idx, 0.0);
      ++placed[s];
    }
  }
  return x;
}

// d prod / d x_i by brute force: the product of the other elements of i's slice.
std::vector<double> prod_of_others(const Tensor& x, const std::vector<int>& axes) {
  std::vector<double> out;
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    const std::int64_t si = slice_of(unravel(i, x.shape()), x.shape(), axes);
    double p = 1;
    for (std::int64_t j = 0; j < x.numel(); ++j) {
      const std::vector<std::int64_t> jdx = unravel(j, x.shape());
      if (j != i && slice_of(jdx, x.shape(), axes) == si) p *= x.get(jdx);
    }
    out.push_back(p);
  }
  return out;
}

}  // namespace

TEST_CASE("prod gradient: the product of the others, exact at zeros (float64)") {
  const Shape shape{2, 3, 4};
  const std::vector<std::vector<int>> axes_list = {{}, {0}, {1}, {2}, {0, 1}, {0, 2}, {1, 2}};
  std::uint64_t seed = 300;
  for (const std::vector<int>& axes : axes_list) {
    for (bool keepdims : {false, true}) {
      for (int variant = 0; variant < 3; ++variant) {
        CAPTURE(axes.size() == 0 ? -1 : axes[0]);
        CAPTURE(axes.size());
        CAPTURE(keepdims);
        CAPTURE(variant);
        const Tensor xv = with_zeros(shape, axes, variant, seed++);
        const Axes ax = axes.empty() ? Axes() : Axes(axes);
        auto x = dtensor3("x");
        Variable g = grad(sum(prod(x, ax, keepdims)), x);
        const Tensor gv = eval1(x, g, xv);
        CHECK(gv.shape() == shape);
        check_values(gv, prod_of_others(xv, axes));
        // Finite differences (prod is linear in each element, so they are exact at zeros).
        CHECK_NOTHROW(verify_grad(
            [&](const std::vector<Variable>& v) { return prod(v[0], ax, keepdims); }, {xv}));
      }
    }
  }
}

TEST_CASE("prod gradient at zeros: vectors, scalars, float32, and second derivatives") {
  auto v = dvector("v");
  // No zero, one zero, two zeros.
  check_values(eval1(v, grad(prod(v), v), Tensor::from_list({2, 3, 4}, Dtype::Float64)),
               {12, 8, 6});
  check_values(eval1(v, grad(prod(v), v), Tensor::from_list({2, 0, 4}, Dtype::Float64)), {0, 8, 0});
  check_values(eval1(v, grad(prod(v), v), Tensor::from_list({0, 3, 0}, Dtype::Float64)), {0, 0, 0});
  // Negative values and -0.0 count as they do in the product.
  check_values(eval1(v, grad(prod(v), v), Tensor::from_list({-2, -0.0, 5}, Dtype::Float64)),
               {0, -10, 0});
  // A rank-0 product is the value itself.
  auto s = dscalar("s");
  check_values(eval1(s, grad(prod(s), s), Tensor::scalar(0.0, Dtype::Float64)), {1});
  // Empty slices: nothing to differentiate, and no error.
  auto m = dmatrix("m");
  CHECK(eval1(m, grad(sum(prod(m, 1)), m), Tensor::zeros({2, 0}, Dtype::Float64)).shape() ==
        Shape{2, 0});
  // float32 stays float32, with no NaN at the zero.
  auto f = fvector("f");
  Variable gf = grad(prod(f), f);
  CHECK(gf.dtype() == Dtype::Float32);
  Tensor gfv = eval1(f, gf, Tensor::from_list({3, 0, 0.5}, Dtype::Float32));
  CHECK(gfv.dtype() == Dtype::Float32);
  check_values(gfv, {0, 1.5, 0}, 1e-6);
  // Second derivatives (Hessian-vector products) hold with no, one and two zeros per slice:
  // no inf or NaN in any branch, and the other zero's derivative is kept.
  for (int variant = 0; variant < 3; ++variant) {
    CAPTURE(variant);
    for (bool keepdims : {false, true}) {
      CHECK_NOTHROW(verify_grad(
          [&](const std::vector<Variable>& w) {
            return sum(grad(sum(prod(w[0], std::vector<int>{0, 2}, keepdims) * w[2]), w[0]) * w[1]);
          },
          {with_zeros({3, 2, 4}, {0, 2}, variant, 360 + variant), uniform({3, 2, 4}, -1, 1, 350),
           uniform(keepdims ? Shape{1, 2, 1} : Shape{2}, -1, 1, 351)}));
    }
  }
  // The compiled CPU backend computes the same gradient graph, zeros included.
  for (int variant = 0; variant < 3; ++variant) {
    CAPTURE(variant);
    auto x = dtensor3("x");
    const Tensor xv = with_zeros({2, 3, 4}, {0, 2}, variant, 370 + variant);
    FunctionOptions cpu;
    cpu.backend = "cpu";
    const Variable g = grad(sum(prod(x, std::vector<int>{0, 2}) * Variable(rnd({3}, 9))), x);
    check_close(function({x}, {g}, {}, {}, cpu)({xv})[0], eval1(x, g, xv), 1e-12, 1e-12);
  }
  // The exact Hessian of prod(v) at two zeros: d2/dv0 dv2 = v1, everything else 0.
  Variable hv =
      grad(sum(grad(prod(v), v) * Variable(Tensor::from_list({0, 0, 1}, Dtype::Float64))), v);
  check_values(eval1(v, hv, Tensor::from_list({0, 3, 0}, Dtype::Float64)), {3, 0, 0});
}

TEST_CASE("second-order gradients through reductions") {
  CHECK_NOTHROW(verify_grad(
      [](const std::vector<Variable>& v) {
        Variable cost = sum(sqr(sum(v[0], 1))) + mean(v[0] * v[0] * v[0]) + prod(v[0]);
        return sum(grad(cost, v[0]) * v[1]);
      },
      {uniform({3, 4}, 0.5, 1.5, 5), uniform({3, 4}, -1, 1, 6)}));
}
