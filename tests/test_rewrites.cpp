// The op rewrites (canonicalize, stabilize, specialize) and the fused ops they produce
// (SoftmaxGrad, CrossentropySoftmax, CrossentropySoftmax1HotDx, Gemm): forward values,
// finite-difference gradients, errors; and for each rewrite, the node that replaced the
// pattern plus values against the same graph compiled without the rewrites.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <thea/ops/fused.hpp>
#include <thea/ops/ops.hpp>
#include <thea/thea.hpp>
#include <vector>

#include "test_util.hpp"

using namespace thea;
using namespace thea::testing;

namespace {

// The passes of this suite, by tag; constant folding shares the canonicalize tag.
const std::vector<std::string> kOpRewrites = {"canonicalize", "stabilize", "specialize"};

FunctionOptions unrewritten() { return ref(kOpRewrites); }

std::vector<NodePtr> apply_nodes(const Function& f) {
  std::vector<NodePtr> out;
  for (const NodePtr& n : f.graph().toposort())
    if (n->kind == NodeKind::Apply) out.push_back(n);
  return out;
}

int count_op(const Function& f, const std::string& name) {
  int k = 0;
  for (const NodePtr& n : apply_nodes(f)) k += n->op->name() == name;
  return k;
}

// Every rewritten node still has the type its op infers from its (rewritten) inputs.
void check_types(const Function& f) {
  for (const NodePtr& n : apply_nodes(f)) {
    CAPTURE(n->describe());
    const TensorType t = n->op->infer_type(n->inputs);
    CHECK(t.dtype == n->type.dtype);
    CHECK(t.ndim() == n->type.ndim());
  }
}

bool all_finite(const Tensor& t) {
  for (double v : t.to_vector())
    if (!std::isfinite(v)) return false;
  return true;
}

// One-hot rows (float) for the given labels.
Tensor one_hot_rows(const std::vector<std::int64_t>& labels, std::int64_t classes, Dtype dtype) {
  Tensor t = Tensor::zeros({static_cast<std::int64_t>(labels.size()), classes}, dtype);
  for (std::size_t i = 0; i < labels.size(); ++i)
    t.set({static_cast<std::int64_t>(i), labels[i]}, 1);
  return t;
}

double logsumexp_row(const std::vector<double>& x) {
  double m = x[0];
  for (double v : x) m = std::max(m, v);
  double s = 0;
  for (double v : x) s += std::exp(v - m);
  return m + std::log(s);
}

// Row i of a matrix tensor.
std::vector<double> row(const Tensor& t, std::int64_t i) {
  std::vector<double> r;
  for (std::int64_t j = 0; j < t.shape()[1]; ++j) r.push_back(t.get({i, j}));
  return r;
}

// The tutorial's model (seed): X, Y fmatrix, w shared (784, 10).
struct SeedModel {
  Variable X = fmatrix("X");
  Variable Y = fmatrix("Y");
  Variable w;
  Variable py_x, cost, g;
  explicit SeedModel(const Tensor& w0) {
    w = shared(w0, "w");
    py_x = nnet::softmax(dot(X, w));
    cost = mean(nnet::categorical_crossentropy(py_x, Y));
    g = grad(cost, w);
  }
  Function train(FunctionOptions o) const {
    return function({X, Y}, {cost}, {{w, w - g * 0.05}}, o);
  }
};

}  // namespace

// =======================================================================================
// SoftmaxGrad
// =======================================================================================

TEST_CASE("softmax_grad forward: sm * (g - sum(g * sm, -1))") {
  Tensor g = Tensor::from_list({{1, -2, 0.5}, {0, 3, 1}}, Dtype::Float64);
  Tensor sm = Tensor::from_list({{0.2, 0.3, 0.5}, {0.6, 0.1, 0.3}}, Dtype::Float64);
  Tensor out = SoftmaxGrad().perform({g, sm});
  CHECK(out.shape() == Shape{2, 3});
  // Row 0: s = 0.2 - 0.6 + 0.25 = -0.15; row 1: s = 0 + 0.3 + 0.3 = 0.6.
  check_values(out, {0.2 * 1.15, 0.3 * -1.85, 0.5 * 0.65, 0.6 * -0.6, 0.1 * 2.4, 0.3 * 0.4});
  // A vector is one row; float32 stays float32; strided views are read correctly.
  Tensor gv = Tensor::from_list({1, -2, 0.5}, Dtype::Float32);
  Tensor sv = Tensor::from_list({0.2, 0.3, 0.5}, Dtype::Float32);
  Tensor ov = SoftmaxGrad().perform({gv, sv});
  CHECK(ov.dtype() == Dtype::Float32);
  check_values(ov, {0.2 * 1.15, 0.3 * -1.85, 0.5 * 0.65}, 1e-6);
  Tensor gt = Tensor::from_list({{1, 0}, {-2, 3}, {0.5, 1}}, Dtype::Float64).permute({1, 0});
  check_close(SoftmaxGrad().perform({gt, sm}), out);
}

TEST_CASE("softmax's vjp is one softmax_grad node") {
  auto x = dmatrix("x");
  auto c = dmatrix("c");
  Variable gx = grad(sum(nnet::softmax(x) * c), x);
  CHECK(gx.node()->op->name() == "softmax_grad");
  // Its value is the Jacobian product: (diag(sm) - sm smᵀ) c per row.
  Tensor xv = uniform({2, 4}, -1, 1, 1), cv = uniform({2, 4}, -1, 1, 2);
  auto f = function({x, c}, {gx, nnet::softmax(x)}, {}, ref());
  auto out = f({xv, cv});
  for (std::int64_t i = 0; i < 2; ++i) {
    const std::vector<double> sm = row(out[1], i), cr = row(cv, i);
    double s = 0;
    for (std::size_t j = 0; j < sm.size(); ++j) s += sm[j] * cr[j];
    for (std::int64_t j = 0; j < 4; ++j)
      CHECK(out[0].get({i, j}) == doctest::Approx(sm[j] * (cr[j] - s)));
  }
}

TEST_CASE("softmax_grad types and errors") {
  auto g = fmatrix("g");
  auto sm = fmatrix("sm");
  CHECK(softmax_grad(g, sm).type() == sm.type());
  CHECK(softmax_grad(dvector(), dvector()).dtype() == Dtype::Float64);
  const std::string dt = error_of([] { (void)softmax_grad(dmatrix("g64"), fmatrix("sm32")); });
  CHECK(contains(dt, "[softmax_grad]"));
  CHECK(contains(dt, "same dtype"));
  CHECK(contains(dt, "g64 (dmatrix"));
  CHECK(contains(dt, "test_rewrites.cpp"));
  const std::string sh = error_of([] {
    (void)softmax_grad(tensor(Dtype::Float32, Shape{2, 3}, "g"),
                       tensor(Dtype::Float32, Shape{2, 4}, "sm"));
  });
  CHECK(contains(sh, "(2, 3)"));
  CHECK(contains(sh, "(2, 4)"));
  CHECK_THROWS_AS((void)softmax_grad(imatrix(), imatrix()), TypeError);
  CHECK_THROWS_AS((void)softmax_grad(ftensor3(), ftensor3()), TypeError);
  CHECK_THROWS_AS((void)softmax_grad(fmatrix(), fvector()), ShapeError);
  CHECK_THROWS_AS((void)softmax_grad(Variable(), fmatrix()), ValueError);
  // Run-time shapes must agree.
  auto f = function({g, sm}, {softmax_grad(g, sm)}, {}, ref());
  const std::string rt = error_of([&] { f({Tensor::zeros({2, 3}), Tensor::zeros({3, 3})}); });
  CHECK(contains(rt, "softmax_grad"));
  CHECK(contains(rt, "(2, 3)"));
  CHECK(contains(rt, "(3, 3)"));
}

TEST_CASE("softmax_grad gradients (w.r.t. g and sm), and softmax's second derivative") {
  for (const Shape& s : {Shape{4}, Shape{3, 5}}) {
    CAPTURE(shape_str(s));
    CHECK_NOTHROW(
        verify_grad([](const std::vector<Variable>& v) { return softmax_grad(v[0], v[1]); },
                    {uniform(s, -1, 1, 10), uniform(s, 0.1, 1, 11)}));
  }
  // Hessian-vector product of a softmax model.
  CHECK_NOTHROW(verify_grad(
      [](const std::vector<Variable>& v) {
        Variable cost = sum(sqr(nnet::softmax(v[0])) * v[1]);
        return sum(grad(cost, v[0]) * v[1]);
      },
      {uniform({3, 4}, -1, 1, 12), uniform({3, 4}, -1, 1, 13)}));
}

// =======================================================================================
// CrossentropySoftmax and CrossentropySoftmax1HotDx
// =======================================================================================

TEST_CASE("crossentropy_softmax forward: float targets, integer labels, a vector") {
  Tensor z = Tensor::from_list({{1, 2, 3}, {-1, 0, 4}}, Dtype::Float64);
  Tensor y = Tensor::from_list({{0, 0, 1}, {0.25, 0.75, 0}}, Dtype::Float64);
  Tensor out = CrossentropySoftmax().perform({z, y});
  CHECK(out.shape() == Shape{2});
  std::vector<double> expected;
  for (std::int64_t i = 0; i < 2; ++i) {
    const std::vector<double> sm = softmax_row(row(z, i));
    double e = 0;
    for (int j = 0; j < 3; ++j) e -= y.get({i, j}) * std::log(sm[j]);
    expected.push_back(e);
  }
  check_values(out, expected);
  // Integer labels (int64 and int32): logsumexp(z_i) - z[i, y_i].
  Tensor lab = Tensor::from_vector<std::int64_t>({2, 1});
  check_values(CrossentropySoftmax().perform({z, lab}),
               {logsumexp_row({1, 2, 3}) - 3, logsumexp_row({-1, 0, 4}) - 0});
  check_values(CrossentropySoftmax().perform({z, Tensor::from_vector<std::int32_t>({0, 0})}),
               {logsumexp_row({1, 2, 3}) - 1, logsumexp_row({-1, 0, 4}) + 1});
  // A vector of logits is one row and gives a scalar.
  Tensor zv = Tensor::from_list({1, 2, 3}, Dtype::Float32);
  Tensor yv = Tensor::from_list({0, 1, 0}, Dtype::Float32);
  Tensor sv = CrossentropySoftmax().perform({zv, yv});
  CHECK(sv.ndim() == 0);
  CHECK(sv.dtype() == Dtype::Float32);
  CHECK(sv.item<double>() == doctest::Approx(logsumexp_row({1, 2, 3}) - 2).epsilon(1e-6));
}

TEST_CASE("crossentropy_softmax is finite for logits of +-1000") {
  Tensor z = Tensor::from_list({{1000, -1000, 0}, {-1000, 1000, 999}}, Dtype::Float32);
  Tensor y = Tensor::from_list({{0, 1, 0}, {0, 0, 1}}, Dtype::Float32);
  Tensor out = CrossentropySoftmax().perform({z, y});
  CHECK(all_finite(out));
  CHECK(out.get({0}) == doctest::Approx(2000));
  CHECK(out.get({1}) == doctest::Approx(1 + std::log1p(std::exp(-1.0))).epsilon(1e-6));
  Tensor lab = Tensor::from_vector<std::int64_t>({1, 2});
  check_close(CrossentropySoftmax().perform({z, lab}), out, 1e-6);
}

TEST_CASE("crossentropy_softmax types and errors") {
  auto z = fmatrix("z");
  CHECK(nnet::crossentropy_softmax(z, fmatrix()).type() ==
        TensorType(Dtype::Float32, {kUnknownDim}));
  CHECK(nnet::crossentropy_softmax(z, ivector()).type() ==
        TensorType(Dtype::Float32, {kUnknownDim}));
  CHECK(nnet::crossentropy_softmax(dvector(), dvector()).type() == TensorType(Dtype::Float64, {}));
  CHECK(nnet::crossentropy_softmax(tensor(Dtype::Float32, Shape{128, 10}), ivector()).type() ==
        TensorType(Dtype::Float32, {128}));
  const std::string dt = error_of([&] { (void)nnet::crossentropy_softmax(z, dmatrix("targets")); });
  CHECK(contains(dt, "[crossentropy_softmax]"));
  CHECK(contains(dt, "dtype of the logits"));
  CHECK(contains(dt, "targets (dmatrix"));
  CHECK(contains(dt, "test_rewrites.cpp"));
  const std::string rows = error_of([] {
    (void)nnet::crossentropy_softmax(tensor(Dtype::Float32, Shape{4, 10}, "z"),
                                     tensor(Dtype::Int64, Shape{3}, "labels"));
  });
  CHECK(contains(rows, "labels"));
  CHECK(contains(rows, "(3,)"));
  CHECK_THROWS_AS((void)nnet::crossentropy_softmax(fvector(), ivector()), TypeError);
  CHECK_THROWS_AS((void)nnet::crossentropy_softmax(z, imatrix()), TypeError);
  CHECK_THROWS_AS((void)nnet::crossentropy_softmax(z, bmatrix()), TypeError);
  CHECK_THROWS_AS((void)nnet::crossentropy_softmax(imatrix(), ivector()), TypeError);
  CHECK_THROWS_AS((void)nnet::crossentropy_softmax(z, fvector()), ShapeError);
  // Labels out of range, at run time, name the op, the label and the row.
  auto labels = lvector("labels");
  auto f = function({z, labels}, {nnet::crossentropy_softmax(z, labels)}, {}, ref());
  const std::string msg = error_of([&] {
    f({Tensor::zeros({2, 3}), Tensor::from_vector<std::int64_t>({0, 3})});
  });
  CHECK(contains(msg, "crossentropy_softmax"));
  CHECK(contains(msg, "label 3 at row 1"));
  CHECK(contains(msg, "3 classes"));
  CHECK_THROWS_AS(f({Tensor::zeros({2, 3}), Tensor::from_vector<std::int64_t>({-1, 0})}),
                  ValueError);
  CHECK_THROWS_AS(f({Tensor::zeros({2, 3}), Tensor::from_vector<std::int64_t>({0}, {1})}),
                  ShapeError);
}

TEST_CASE("crossentropy_softmax gradients: z and float y, z with labels, second order") {
  Tensor z = uniform({4, 3}, -2, 2, 20);
  Tensor soft = uniform({4, 3}, 0, 1, 21);
  Tensor labels = Tensor::from_vector<std::int64_t>({0, 2, 1, 2});
  CHECK_NOTHROW(verify_grad(
      [](const std::vector<Variable>& v) { return nnet::crossentropy_softmax(v[0], v[1]); },
      {z, soft}));
  CHECK_NOTHROW(verify_grad(
      [](const std::vector<Variable>& v) { return nnet::crossentropy_softmax(v[0], v[1]); },
      {z, labels}));
  CHECK_NOTHROW(verify_grad(
      [](const std::vector<Variable>& v) { return nnet::crossentropy_softmax(v[0], v[1]); },
      {uniform({5}, -2, 2, 22), uniform({5}, 0, 1, 23)}));
  // Gradients of the gradient (Hessian-vector products), both target forms.
  Tensor dir = uniform({4, 3}, -1, 1, 24);
  CHECK_NOTHROW(verify_grad(
      [](const std::vector<Variable>& v) {
        Variable cost = sum(nnet::crossentropy_softmax(v[0], v[1]));
        return sum(grad(cost, v[0]) * v[2]);
      },
      {z, labels, dir}));
  CHECK_NOTHROW(verify_grad(
      [](const std::vector<Variable>& v) {
        Variable cost = sum(nnet::crossentropy_softmax(v[0], v[1]));
        return sum(grad(cost, v[0]) * v[2]);
      },
      {z, soft, dir}));
  // The gradient w.r.t. z is (softmax(z) * rowsum(y) - y) * g.
  auto zs = dmatrix("z");
  auto ys = dmatrix("y");
  auto f = function({zs, ys}, {grad(sum(nnet::crossentropy_softmax(zs, ys) * 2.0), zs)}, {}, ref());
  Tensor gz = f({z, soft})[0];
  for (std::int64_t i = 0; i < 4; ++i) {
    const std::vector<double> sm = softmax_row(row(z, i)), yr = row(soft, i);
    const double ysum = yr[0] + yr[1] + yr[2];
    for (std::int64_t j = 0; j < 3; ++j)
      CHECK(gz.get({i, j}) == doctest::Approx(2 * (sm[j] * ysum - yr[j])));
  }
}

TEST_CASE("crossentropy_softmax_1hot_dx forward, errors and gradients") {
  Tensor g = Tensor::from_list({2, -1}, Dtype::Float64);
  Tensor sm = Tensor::from_list({{0.2, 0.3, 0.5}, {0.6, 0.1, 0.3}}, Dtype::Float64);
  Tensor labels = Tensor::from_vector<std::int64_t>({1, 0});
  check_values(CrossentropySoftmax1HotDx().perform({g, sm, labels}),
               {0.4, -1.4, 1.0, 0.4, -0.1, -0.3});
  CHECK(crossentropy_softmax_1hot_dx(fvector(), fmatrix(), ivector()).type() ==
        TensorType(Dtype::Float32, {kUnknownDim, kUnknownDim}));
  const std::string msg = error_of(
      [] { (void)crossentropy_softmax_1hot_dx(dvector("g"), fmatrix("sm"), ivector("y")); });
  CHECK(contains(msg, "[crossentropy_softmax_1hot_dx]"));
  CHECK(contains(msg, "same dtype"));
  CHECK_THROWS_AS((void)crossentropy_softmax_1hot_dx(fmatrix(), fmatrix(), ivector()), TypeError);
  CHECK_THROWS_AS((void)crossentropy_softmax_1hot_dx(fvector(), fmatrix(), fvector()), TypeError);
  CHECK_THROWS_AS(
      CrossentropySoftmax1HotDx().perform({g, sm, Tensor::from_vector<std::int64_t>({1, 3})}),
      ValueError);
  CHECK_THROWS_AS(
      CrossentropySoftmax1HotDx().perform({g, sm, Tensor::from_vector<std::int64_t>({1})}),
      ShapeError);
  CHECK_NOTHROW(verify_grad(
      [](const std::vector<Variable>& v) { return crossentropy_softmax_1hot_dx(v[0], v[1], v[2]); },
      {uniform({3}, -1, 1, 30), uniform({3, 4}, 0.1, 1, 31),
       Tensor::from_vector<std::int64_t>({3, 0, 2})}));
}

// =======================================================================================
// Gemm
// =======================================================================================

TEST_CASE("gemm forward: transposes, accumulation, beta = 0 does not read C") {
  Tensor a = Tensor::from_list({{1, 2}, {3, 4}, {5, 6}}, Dtype::Float64);  // (3, 2)
  Tensor b = Tensor::from_list({{1, 0, -1}, {2, 1, 0}}, Dtype::Float64);   // (2, 3)
  Tensor c = Tensor::from_list({{1, 1, 1}, {0, 0, 0}, {-1, 2, 3}}, Dtype::Float64);
  Tensor two = Tensor::scalar(2, Dtype::Float64), half = Tensor::scalar(0.5, Dtype::Float64);
  // a·b = [[5, 2, -1], [11, 4, -3], [17, 6, -5]]
  Tensor ab = Tensor::from_list({{5, 2, -1}, {11, 4, -3}, {17, 6, -5}}, Dtype::Float64);
  check_close(Gemm(false, false, false).perform({a, b, two}),
              Tensor::from_list({{10, 4, -2}, {22, 8, -6}, {34, 12, -10}}, Dtype::Float64));
  check_close(
      Gemm(false, false, true).perform({a, b, two, c, half}),
      Tensor::from_list({{10.5, 4.5, -1.5}, {22, 8, -6}, {33.5, 13, -8.5}}, Dtype::Float64));
  // The same product through every transpose flag (operands stored transposed).
  Tensor at = a.permute({1, 0}).clone(), bt = b.permute({1, 0}).clone();
  Tensor one = Tensor::scalar(1, Dtype::Float64);
  check_close(Gemm(true, false, false).perform({at, b, one}), ab);
  check_close(Gemm(false, true, false).perform({a, bt, one}), ab);
  check_close(Gemm(true, true, false).perform({at, bt, one}), ab);
  // Strided (view) operands.
  check_close(
      Gemm(true, false, false).perform({a.permute({1, 0}).permute({1, 0}).permute({1, 0}), b, one}),
      ab);
  // beta = 0: C is not read, as in BLAS (a NaN there does not propagate).
  Tensor nan = Tensor::full({3, 3}, std::numeric_limits<double>::quiet_NaN(), Dtype::Float64);
  check_close(Gemm(false, false, true).perform({a, b, one, nan, Tensor::scalar(0, Dtype::Float64)}),
              ab);
  // float32 in, float32 out; perform never writes C, even for an in-place Gemm.
  Tensor c32 = c.astype(Dtype::Float32);
  Tensor out =
      Gemm(false, false, true, true)
          .perform({a.astype(Dtype::Float32), b.astype(Dtype::Float32),
                    Tensor::scalar(1, Dtype::Float32), c32, Tensor::scalar(1, Dtype::Float32)});
  CHECK(out.dtype() == Dtype::Float32);
  check_values(c32, c.to_vector());
  check_values(out, {6, 3, 0, 11, 4, -3, 16, 8, -2}, 1e-6);
}

TEST_CASE("gemm params, traits and types") {
  CHECK(Gemm(true, false, true, true).params() == "trans_a, accumulate, inplace");
  CHECK(Gemm(false, true, false).params() == "trans_b");
  CHECK(Gemm(false, false, true, true).traits().destroys_input == Gemm::kC);
  CHECK(Gemm(false, false, true).traits().destroys_input == -1);
  CHECK_FALSE(Gemm(false, false, false, true).inplace());  // nothing to write into
  CHECK_FALSE(Gemm(false, false, true).equals(Gemm(false, false, true, true)));
  auto A = tensor(Dtype::Float32, Shape{kUnknownDim, 784}, "A");
  auto B = tensor(Dtype::Float32, Shape{kUnknownDim, 10}, "B");
  auto C = tensor(Dtype::Float32, Shape{784, 10}, "C");
  // Aᵀ·B: (784, ?)·(?, 10); a literal alpha adopts float32.
  Variable g = gemm(C, -0.05, A, B, 1.0, /*trans_a=*/true);
  CHECK(g.type() == TensorType(Dtype::Float32, {784, 10}));
  CHECK(g.node()->inputs[Gemm::kAlpha]->type.dtype == Dtype::Float32);
  CHECK(gemm(2.0, dmatrix(), dmatrix()).dtype() == Dtype::Float64);
}

TEST_CASE("gemm errors") {
  auto A = tensor(Dtype::Float32, Shape{3, 4}, "A");
  auto B = tensor(Dtype::Float32, Shape{5, 2}, "B");
  const std::string inner = error_of([&] { (void)gemm(1.0, A, B); });
  CHECK(contains(inner, "[gemm]"));
  CHECK(contains(inner, "inner dimensions"));
  CHECK(contains(inner, "(3, 4)"));
  CHECK(contains(inner, "(5, 2)"));
  CHECK(contains(inner, "test_rewrites.cpp"));
  auto C = tensor(Dtype::Float32, Shape{3, 3}, "C");
  const std::string cs = error_of([&] {
    (void)gemm(C, 1.0, A, tensor(Dtype::Float32, Shape{4, 2}), 1.0);
  });
  CHECK(contains(cs, "C has shape (3, 3)"));
  const std::string dt = error_of([&] { (void)gemm(1.0, A, dmatrix("B64")); });
  CHECK(contains(dt, "B64 (dmatrix"));
  CHECK(contains(dt, "A's dtype"));
  CHECK_THROWS_AS((void)gemm(1.0, imatrix(), imatrix()), TypeError);
  CHECK_THROWS_AS((void)gemm(1.0, fvector(), fmatrix()), TypeError);
  CHECK_THROWS_AS((void)gemm(fvector(), fmatrix(), fmatrix()), TypeError);  // alpha not a scalar
  CHECK_THROWS_AS((void)gemm(1.0, Variable(), fmatrix()), ValueError);
  // Run time: inner sizes and C's shape.
  auto a = fmatrix("a"), b = fmatrix("b"), c = fmatrix("c");
  auto f = function({a, b, c}, {gemm(c, 1.0, a, b, 1.0)}, {}, ref());
  CHECK_THROWS_AS(f({Tensor::zeros({2, 3}), Tensor::zeros({4, 2}), Tensor::zeros({2, 2})}),
                  ShapeError);
  const std::string rc = error_of([&] {
    f({Tensor::zeros({2, 3}), Tensor::zeros({3, 2}), Tensor::zeros({2, 1})});
  });
  CHECK(contains(rc, "gemm"));
  CHECK(contains(rc, "C has shape (2, 1)"));
}

TEST_CASE("gemm gradients w.r.t. A, B, alpha, C and beta, for every transpose flag") {
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      CAPTURE(ta);
      CAPTURE(tb);
      Tensor a = uniform(ta ? Shape{4, 3} : Shape{3, 4}, -1, 1, 40);
      Tensor b = uniform(tb ? Shape{2, 4} : Shape{4, 2}, -1, 1, 41);
      CHECK_NOTHROW(verify_grad(
          [=](const std::vector<Variable>& v) {
            return gemm(v[3], v[2], v[0], v[1], v[4], ta, tb);
          },
          {a, b, Tensor::scalar(0.7, Dtype::Float64), uniform({3, 2}, -1, 1, 42),
           Tensor::scalar(-1.3, Dtype::Float64)}));
      CHECK_NOTHROW(verify_grad(
          [=](const std::vector<Variable>& v) { return gemm(v[2], v[0], v[1], ta, tb); },
          {a, b, Tensor::scalar(1.5, Dtype::Float64)}));
    }
  }
}

// =======================================================================================
// canonicalize
// =======================================================================================

TEST_CASE("rewrite passes are registered in order with their tags") {
  const std::vector<std::string> names = RewriteRegistry::instance().names();
  auto pos = [&](const std::string& n) {
    auto it = std::find(names.begin(), names.end(), n);
    REQUIRE(it != names.end());
    return it - names.begin();
  };
  CHECK(pos("constant_folding") < pos("neutral_elements"));
  CHECK(pos("div_by_constant") < pos("neutral_elements"));
  CHECK(pos("sub_neg") < pos("log_softmax"));
  CHECK(pos("softmax_grad_div") < pos("gemm"));
  CHECK(pos("gemm") < pos("dot_transpose"));
  CHECK(pos("gemm_inplace") < pos("merge_late"));
  for (const RewritePass* p : RewriteRegistry::instance().passes()) {
    if (p->name == "neutral_elements") CHECK(p->tags == std::vector<std::string>{"canonicalize"});
    if (p->name == "crossentropy_softmax") CHECK(p->tags == std::vector<std::string>{"stabilize"});
    if (p->name == "gemm_inplace") CHECK(p->tags.front() == "specialize");
  }
}

TEST_CASE("neutral elements: x*1, 1*x, x+0, 0+x, x-0, x/1 -> x") {
  auto x = dmatrix("x");
  Tensor xv = uniform({2, 3}, -1, 1, 50);
  for (const Variable& e : {x * 1, 1.0 * x, x + 0, 0 + x, x - 0.0, x / 1.0}) {
    auto f = function({x}, {e}, {}, ref());
    CHECK(f.graph().outputs()[0] == x.node());
    CHECK(apply_nodes(f).empty());
    check_close(f({xv})[0], xv);
  }
  // Only the pass: with it excluded the mul stays.
  auto g = function({x}, {x * 1}, {}, ref({"neutral_elements"}));
  CHECK(count_op(g, "mul") == 1);
}

TEST_CASE("neutral elements keep broadcasting and dtypes") {
  // A neutral constant that broadcasts x up: the values are x's, the shape the result's.
  auto x = dvector("x");
  Variable ones = Variable(Tensor::ones({2, 1}, Dtype::Float64));
  auto f = function({x}, {x * ones}, {}, ref());
  CHECK(count_op(f, "mul") == 0);
  CHECK(f.graph().outputs()[0]->op->name() == "second");
  CHECK(f.graph().outputs()[0]->type == (x * ones).type());
  check_close(f({Tensor::from_list({1, 2, 3}, Dtype::Float64)})[0],
              Tensor::from_list({{1, 2, 3}, {1, 2, 3}}, Dtype::Float64));
  // int * 1.0 is float64: not neutral.
  auto i = ivector("i");
  auto fi = function({i}, {i * Variable(Tensor::scalar(1, Dtype::Float64))}, {}, ref());
  CHECK(count_op(fi, "mul") == 1);
  CHECK(fi({Tensor::from_vector<std::int32_t>({3}, {1})})[0].dtype() == Dtype::Float64);
  // x * 0 is not folded: inf * 0 is NaN.
  auto f0 = function({x}, {x * 0}, {}, ref());
  CHECK(count_op(f0, "mul") == 1);
  Tensor r =
      f0({Tensor::from_list({std::numeric_limits<double>::infinity(), 2}, Dtype::Float64)})[0];
  CHECK(std::isnan(r.get({0})));
  CHECK(r.get({1}) == 0);
}

TEST_CASE("double negation, x - (-y), x + (-y)") {
  auto x = dvector("x");
  auto y = dvector("y");
  Tensor xv = Tensor::from_list({1, -2, 3}, Dtype::Float64);
  Tensor yv = Tensor::from_list({0.5, 4, -1}, Dtype::Float64);
  auto f = function({x}, {-(-x)}, {}, ref());
  CHECK(f.graph().outputs()[0] == x.node());
  auto g = function({x, y}, {x - (-y), x + (-y), (-y) + x}, {}, ref());
  const auto& outs = g.graph().outputs();
  CHECK(outs[0]->op->name() == "add");
  CHECK(outs[0]->inputs == std::vector<NodePtr>{x.node(), y.node()});
  CHECK(outs[1]->op->name() == "sub");
  CHECK(outs[1]->inputs == std::vector<NodePtr>{x.node(), y.node()});
  CHECK(outs[2]->op->name() == "sub");
  CHECK(count_op(g, "neg") == 0);
  auto r = g({xv, yv});
  check_close(r[0], Tensor::from_list({1.5, 2, 2}, Dtype::Float64));
  check_close(r[1], Tensor::from_list({0.5, -6, 4}, Dtype::Float64));
  check_close(r[2], r[1]);
}

TEST_CASE("x / c -> x * (1/c) for float constants") {
  auto x = fvector("x");
  auto f = function({x}, {x / 4.0, x / 3.0}, {}, ref());
  CHECK(count_op(f, "true_div") == 0);
  const NodePtr& q = f.graph().outputs()[0];
  CHECK(q->op->name() == "mul");
  CHECK(q->inputs[1]->kind == NodeKind::Constant);
  CHECK(q->inputs[1]->value.item<double>() == 0.25);
  CHECK(q->type == (x / 4.0).type());
  Tensor xv = Tensor::from_list({1, -6, 7.5}, Dtype::Float32);
  auto r = f({xv});
  check_values(r[0], {0.25, -1.5, 1.875});  // a power of two: exact
  auto plain = function({x}, {x / 3.0}, {}, unrewritten())({xv})[0];
  check_close(r[1], plain, 2e-7);  // within an ulp
  // Integer division and a division by a variable are left alone.
  auto i = ivector("i");
  auto y = fvector("y");
  auto g = function({i, x, y}, {i / 2, x / y, x / 0.0}, {}, ref());
  CHECK(count_op(g, "true_div") == 3);
}

TEST_CASE("fill only reads a shape: the shape comes from a leaf, the fill sinks into users") {
  auto x = dmatrix("x");
  auto y = dmatrix("y");
  // ones_like(exp(x) * y) needs no exp; fill(x, 2) * x needs no fill.
  auto f = function({x, y}, {ones_like(exp(x) * y), fill(x, 2.0) * x}, {}, ref());
  CHECK(count_op(f, "exp") == 0);
  CHECK(f.graph().outputs()[1]->op->name() == "mul");
  CHECK(count_op(f, "second") == 1);
  Tensor xv = uniform({2, 3}, -1, 1, 60), yv = uniform({2, 3}, -1, 1, 61);
  auto r = f({xv, yv});
  auto p = function({x, y}, {ones_like(exp(x) * y), fill(x, 2.0) * x}, {}, unrewritten())({xv, yv});
  check_close(r[0], p[0]);
  check_close(r[1], p[1]);
  // A fill whose shape source is a reduction stays (no leaf has its shape).
  auto g = function({x}, {zeros_like(sum(exp(x), 1))}, {}, ref());
  CHECK(count_op(g, "exp") == 1);
}

// =======================================================================================
// stabilize
// =======================================================================================

TEST_CASE("log(softmax(x)) -> log_softmax(x), finite where softmax underflows") {
  auto x = fmatrix("x");
  auto f = function({x}, {log(nnet::softmax(x))}, {}, ref());
  CHECK(f.graph().outputs()[0]->op->name() == "log_softmax");
  CHECK(f.graph().outputs()[0]->inputs[0] == x.node());
  CHECK(count_op(f, "log") == 0);
  Tensor xv = uniform({3, 4}, -3, 3, 70, Dtype::Float32);
  check_close(f({xv})[0], function({x}, {log(nnet::softmax(x))}, {}, unrewritten())({xv})[0], 1e-6,
              1e-6);
  Tensor big = Tensor::from_list({{1000, -1000, 0}}, Dtype::Float32);
  Tensor r = f({big})[0];
  CHECK(all_finite(r));
  CHECK(r.get({0, 1}) == doctest::Approx(-2000));
  CHECK_FALSE(all_finite(function({x}, {log(nnet::softmax(x))}, {}, unrewritten())({big})[0]));
}

TEST_CASE("log(sigmoid(x)) -> -softplus(-x)") {
  auto x = dvector("x");
  auto f = function({x}, {log(sigmoid(x))}, {}, ref());
  CHECK(count_op(f, "log") == 0);
  CHECK(count_op(f, "sigmoid") == 0);
  CHECK(f.graph().outputs()[0]->op->name() == "neg");
  CHECK(f.graph().outputs()[0]->inputs[0]->op->name() == "softplus");
  Tensor xv = Tensor::from_list({-3, 0, 2.5, -800}, Dtype::Float64);
  Tensor r = f({xv})[0];
  Tensor p = function({x}, {log(sigmoid(x))}, {}, unrewritten())({xv})[0];
  for (std::int64_t i = 0; i < 3; ++i) CHECK(r.get({i}) == doctest::Approx(p.get({i})));
  CHECK(r.get({3}) == doctest::Approx(-800));
  CHECK(std::isinf(p.get({3})));
}

TEST_CASE("categorical_crossentropy(softmax(z), Y) -> crossentropy_softmax(z, Y)") {
  auto z = fmatrix("z");
  auto Y = fmatrix("Y");
  Variable xent = nnet::categorical_crossentropy(nnet::softmax(z), Y);
  auto f = function({z, Y}, {xent}, {}, ref());
  const NodePtr& out = f.graph().outputs()[0];
  CHECK(out->op->name() == "crossentropy_softmax");
  CHECK(out->inputs == std::vector<NodePtr>{z.node(), Y.node()});
  CHECK(out->type == xent.type());
  CHECK(out->site.line == xent.node()->site.line);  // errors still point at the user's line
  CHECK(count_op(f, "log") + count_op(f, "softmax") + count_op(f, "log_softmax") == 0);
  check_types(f);
  Tensor zv = uniform({5, 4}, -3, 3, 80, Dtype::Float32);
  Tensor yv = one_hot_rows({0, 3, 1, 1, 2}, 4, Dtype::Float32);
  check_close(f({zv, yv})[0], function({z, Y}, {xent}, {}, unrewritten())({zv, yv})[0], 1e-6, 1e-6);
  // The target operand on either side of the product, and soft targets.
  auto g = function({z, Y}, {-sum(log(nnet::softmax(z)) * Y, 1)}, {}, ref());
  CHECK(g.graph().outputs()[0]->op->name() == "crossentropy_softmax");
  Tensor soft = uniform({5, 4}, 0, 1, 81, Dtype::Float32);
  check_close(
      g({zv, soft})[0],
      function({z, Y}, {-sum(log(nnet::softmax(z)) * Y, 1)}, {}, unrewritten())({zv, soft})[0],
      1e-5, 1e-6);
  // A vector of logits (one row): the sum over all axes is the sum over the last one.
  auto zv1 = dvector("zv1");
  auto yv1 = dvector("yv1");
  Variable xv1 = nnet::categorical_crossentropy(nnet::softmax(zv1), yv1);
  auto fv = function({zv1, yv1}, {xv1}, {}, ref());
  CHECK(fv.graph().outputs()[0]->op->name() == "crossentropy_softmax");
  CHECK(fv({Tensor::from_list({1, 2, 3}, Dtype::Float64),
            Tensor::from_list({0, 0, 1}, Dtype::Float64)})[0]
            .item<double>() == doctest::Approx(logsumexp_row({1, 2, 3}) - 3));
  // Not matched: a broadcast target row, a sum over the wrong axis.
  auto row_t = tensor(Dtype::Float32, Shape{1, kUnknownDim}, "t");
  auto h = function(
      {z, row_t, Y},
      {-sum(Variable(row_t) * log(nnet::softmax(z)), 1), -sum(Y * log(nnet::softmax(z)), 0)}, {},
      ref({"log_softmax"}));
  CHECK(count_op(h, "crossentropy_softmax") == 0);
}

TEST_CASE("integer labels: crossentropy_categorical_1hot(softmax(z), y) and its gradient") {
  auto z = dmatrix("z");
  auto y = lvector("y");
  Variable cost = mean(nnet::categorical_crossentropy(nnet::softmax(z), y));
  Variable gz = grad(cost, z);
  auto f = function({z, y}, {cost, gz}, {}, ref());
  CHECK(count_op(f, "crossentropy_softmax") == 1);
  CHECK(count_op(f, "crossentropy_categorical_1hot") == 0);
  CHECK(count_op(f, "crossentropy_categorical_1hot_grad") == 0);
  CHECK(count_op(f, "softmax_grad") == 0);
  CHECK(count_op(f, "crossentropy_softmax_1hot_dx") == 1);
  CHECK(count_op(f, "log") == 0);
  check_types(f);
  Tensor zv = uniform({4, 3}, -2, 2, 90);
  Tensor labels = Tensor::from_vector<std::int64_t>({0, 2, 1, 2});
  auto r = f({zv, labels});
  auto p = function({z, y}, {cost, gz}, {}, unrewritten())({zv, labels});
  check_close(r[0], p[0], 1e-12, 1e-14);
  check_close(r[1], p[1], 1e-10, 1e-14);
  // (softmax(z) - onehot) / n.
  for (std::int64_t i = 0; i < 4; ++i) {
    const std::vector<double> sm = softmax_row(row(zv, i));
    for (std::int64_t j = 0; j < 3; ++j)
      CHECK(r[1].get({i, j}) == doctest::Approx((sm[j] - (j == labels.get({i}) ? 1 : 0)) / 4));
  }
  // Logits of +-1000: finite here, not without the rewrites.
  Tensor big = Tensor::from_list({{1000, -1000, 0}, {-1000, 1000, 0}, {0, 0, 0}, {5, 1000, -1000}},
                                 Dtype::Float64);
  auto rb = f({big, labels});
  CHECK(all_finite(rb[0]));
  CHECK(all_finite(rb[1]));
  CHECK(rb[0].item<double>() == doctest::Approx((0 + 1000 + std::log(3.0) + 2000) / 4));
  auto pb = function({z, y}, {cost, gz}, {}, unrewritten())({big, labels});
  CHECK_FALSE(all_finite(pb[0]));
}

TEST_CASE("softmax_grad(a / sm, sm) -> a - sm * sum(a, -1): no division by sm") {
  auto z = dmatrix("z");
  auto a = dmatrix("a");
  auto col = tensor(Dtype::Float64, Shape{kUnknownDim, 1}, "col");
  Variable sm = nnet::softmax(z);
  Variable e1 = softmax_grad(a / sm, sm);
  Variable e2 = softmax_grad(Variable(col) / sm, sm);  // a broadcast along the rows
  auto f = function({z, a, col}, {e1, e2}, {}, ref());
  CHECK(count_op(f, "true_div") == 0);
  CHECK(count_op(f, "softmax_grad") == 0);
  CHECK(f.graph().outputs()[0]->op->name() == "sub");
  check_types(f);
  Tensor zv = uniform({3, 4}, -2, 2, 100), av = uniform({3, 4}, -1, 1, 101),
         cv = uniform({3, 1}, -1, 1, 102);
  auto r = f({zv, av, cv});
  auto p = function({z, a, col}, {e1, e2}, {}, unrewritten())({zv, av, cv});
  check_close(r[0], p[0], 1e-10, 1e-14);
  check_close(r[1], p[1], 1e-10, 1e-14);
  // softmax_grad of anything else stays.
  auto g = function({z, a}, {softmax_grad(a * sm, sm)}, {}, ref());
  CHECK(count_op(g, "softmax_grad") == 1);
}

TEST_CASE("argmax(softmax(x), -1) -> argmax(x, -1)") {
  auto x = fmatrix("x");
  auto f = function({x}, {argmax(nnet::softmax(x), 1), argmin(nnet::log_softmax(x), -1, true)}, {},
                    ref());
  CHECK(count_op(f, "softmax") + count_op(f, "log_softmax") == 0);
  CHECK(f.graph().outputs()[0]->inputs[0] == x.node());
  CHECK(f.graph().outputs()[1]->op->str() == "argmin{axis=1, keepdims}");
  Tensor xv = uniform({6, 5}, -3, 3, 110, Dtype::Float32);
  auto r = f({xv});
  auto p = function({x}, {argmax(nnet::softmax(x), 1), argmin(nnet::log_softmax(x), -1, true)}, {},
                    unrewritten())({xv});
  CHECK(r[0].to_vector() == p[0].to_vector());
  CHECK(r[1].to_vector() == p[1].to_vector());
  // Over the flattened matrix the rows' scales differ: left alone.
  auto g = function({x}, {argmax(nnet::softmax(x))}, {}, ref());
  CHECK(count_op(g, "softmax") == 1);
  auto v = fvector("v");
  auto h = function({v}, {argmax(nnet::softmax(v))}, {}, ref());
  CHECK(count_op(h, "softmax") == 0);
}

// =======================================================================================
// The seed model
// =======================================================================================

TEST_CASE("the seed model's train graph: crossentropy_softmax, (sm * rowsum(Y) - Y) / n, gemm") {
  SeedModel m(Tensor::random_normal({784, 10}, 0, 0.01, 1));
  Function train = m.train(ref());
  check_types(train);
  // Forward: one fused cross-entropy; no log anywhere, no division by the softmax.
  CHECK(count_op(train, "crossentropy_softmax") == 1);
  CHECK(count_op(train, "log") == 0);
  CHECK(count_op(train, "log_softmax") == 0);
  CHECK(count_op(train, "softmax_grad") == 0);
  CHECK(count_op(train, "softmax") == 1);
  for (const NodePtr& n : apply_nodes(train))  // only 1 / n for the mean remains
    if (n->op->name() == "true_div") CHECK(n->inputs[1]->type.ndim() == 0);
  // The update is one in-place gemm: w - 0.05 * dot(Xᵀ, G) with X read transposed.
  const NodePtr& upd = train.graph().updates()[0].value;
  REQUIRE(upd->op->name() == "gemm");
  const auto* gm = dynamic_cast<const Gemm*>(upd->op.get());
  CHECK(gm->trans_a());
  CHECK_FALSE(gm->trans_b());
  CHECK(gm->inplace());
  CHECK(upd->op->traits().destroys_input == Gemm::kC);
  CHECK(upd->inputs[Gemm::kC] == m.w.node());
  CHECK(upd->inputs[Gemm::kA] == m.X.node());
  CHECK(upd->inputs[Gemm::kAlpha]->value.item<double>() == doctest::Approx(-0.05));
  CHECK(upd->inputs[Gemm::kBeta]->value.item<double>() == 1);
  CHECK(count_op(train, "dot") == 1);         // the forward dot(X, w) only
  CHECK(count_op(train, "dimshuffle") == 1);  // the per-row scale (?, 1), no Xᵀ copy
}

TEST_CASE("the seed model: same values as without the rewrites; finite for logits of +-1000") {
  const Tensor w0 = Tensor::random_normal({784, 10}, 0, 0.01, 2, Dtype::Float32);
  SeedModel m(w0);
  Function opt = m.train(ref());
  Function plain = m.train(unrewritten());
  CHECK(count_op(plain, "log") == 1);
  CHECK(count_op(plain, "gemm") == 0);
  std::vector<std::int64_t> labels;
  for (int i = 0; i < 16; ++i) labels.push_back((i * 7) % 10);
  const Tensor X = uniform({16, 784}, 0, 1, 3, Dtype::Float32);
  const Tensor Y = one_hot_rows(labels, 10, Dtype::Float32);
  // Two steps each from the same start: costs and weights agree.
  std::vector<Tensor> costs_opt, costs_plain;
  m.w.set_value(w0);
  for (int s = 0; s < 2; ++s) costs_opt.push_back(opt({X, Y})[0]);
  const Tensor w_opt = m.w.get_value();
  m.w.set_value(w0);
  for (int s = 0; s < 2; ++s) costs_plain.push_back(plain({X, Y})[0]);
  const Tensor w_plain = m.w.get_value();
  for (int s = 0; s < 2; ++s) check_close(costs_opt[s], costs_plain[s], 1e-5, 1e-6);
  check_close(w_opt, w_plain, 1e-4, 1e-6);
  CHECK(costs_opt[1].item<double>() < costs_opt[0].item<double>());
  // Logits of about +-1000 (w ~ N(0, 60²), X in [0, 1)): the fused graph stays finite.
  const Tensor w_big = Tensor::random_normal({784, 10}, 0, 60, 4, Dtype::Float32);
  m.w.set_value(w_big);
  const Tensor c_opt = opt({X, Y})[0];
  const Tensor w_opt_big = m.w.get_value();
  CHECK(all_finite(c_opt));
  CHECK(all_finite(w_opt_big));
  CHECK(c_opt.item<double>() > 10);
  m.w.set_value(w_big);
  const Tensor c_plain = plain({X, Y})[0];
  CHECK_FALSE((all_finite(c_plain) && all_finite(m.w.get_value())));
  // The fused cost is the exact mean of logsumexp(z) - z[label], in double.
  m.w.set_value(w_big);
  const Tensor zb = function({m.X}, {dot(m.X, m.w)}, {}, ref())({X})[0];
  double expected = 0;
  for (std::int64_t i = 0; i < 16; ++i)
    expected += logsumexp_row(row(zb, i)) - zb.get({i, labels[i]});
  CHECK(c_opt.item<double>() == doctest::Approx(expected / 16).epsilon(1e-5));
}

TEST_CASE("predict needs no exp: argmax(softmax(dot(X, w)), 1)") {
  SeedModel m(Tensor::random_normal({784, 10}, 0, 0.01, 5));
  auto predict = function({m.X}, {argmax(m.py_x, 1)}, {}, ref());
  CHECK(apply_nodes(predict).size() == 2);
  CHECK(count_op(predict, "dot") == 1);
  CHECK(count_op(predict, "argmax") == 1);
}

// =======================================================================================
// specialize
// =======================================================================================

TEST_CASE("a * dot(A, B) + b * C -> gemm") {
  auto A = dmatrix("A"), B = dmatrix("B"), C = dmatrix("C");
  auto s = dscalar("s");
  const std::vector<Variable> exprs = {
      dot(A, B) * 2.0 + C * 3.0,   // alpha 2, beta 3
      C - dot(A.T(), B.T()),       // alpha -1, both transposed
      s * dot(A, B) + C,           // a symbolic alpha
      -(dot(A, B) * s) - 0.5 * C,  // alpha -s, beta -0.5
      C + dot(A, B.T()) / 4.0,     // 1/4 after canonicalize
  };
  Tensor av = uniform({3, 3}, -1, 1, 120), bv = uniform({3, 3}, -1, 1, 121),
         cv = uniform({3, 3}, -1, 1, 122), sv = Tensor::scalar(0.7, Dtype::Float64);
  for (std::size_t k = 0; k < exprs.size(); ++k) {
    CAPTURE(k);
    auto f = function({A, B, C, s}, {exprs[k]}, {}, ref());
    const NodePtr& out = f.graph().outputs()[0];
    CHECK(out->op->name() == "gemm");
    CHECK(count_op(f, "dot") == 0);
    CHECK(count_op(f, "dimshuffle") == 0);
    check_types(f);
    check_close(f({av, bv, cv, sv})[0],
                function({A, B, C, s}, {exprs[k]}, {}, unrewritten())({av, bv, cv, sv})[0], 1e-12,
                1e-14);
  }
  auto f1 = function({A, B, C, s}, {exprs[1]}, {}, ref());
  const auto* g1 = dynamic_cast<const Gemm*>(f1.graph().outputs()[0]->op.get());
  CHECK(g1->trans_a());
  CHECK(g1->trans_b());
  CHECK(f1.graph().outputs()[0]->inputs[Gemm::kAlpha]->value.item<double>() == -1);
  CHECK_FALSE(g1->inplace());  // C is an input, not an updated shared variable
}

TEST_CASE("gemm is not formed where it would change results or duplicate work") {
  auto A = fmatrix("A"), B = fmatrix("B"), C = fmatrix("C");
  auto b = fvector("b");
  // A bias row broadcast over the product.
  auto f = function({A, B, b}, {dot(A, B) + b}, {}, ref());
  CHECK(count_op(f, "gemm") == 0);
  // The product is also an output: a gemm would compute it twice.
  auto g = function({A, B, C}, {dot(A, B), dot(A, B) + C}, {}, ref());
  CHECK(count_op(g, "gemm") == 0);
  CHECK(count_op(g, "dot") == 1);
  // Mixed dtypes promote the sum to float64.
  auto d = dmatrix("D");
  auto h = function({A, B, d}, {dot(A, B) + d}, {}, ref());
  CHECK(count_op(h, "gemm") == 0);
  // A matrix-vector product.
  auto v = fvector("v");
  auto k = function({A, v, b}, {dot(A, v) + b}, {}, ref());
  CHECK(count_op(k, "gemm") == 0);
}

TEST_CASE("dot with a transposed operand -> gemm with a transpose flag") {
  auto X = fmatrix("X"), G = fmatrix("G"), H = fmatrix("H");
  const std::vector<Variable> outs = {dot(X.T(), G), dot(X, G.T()), dot(X, H)};
  auto f = function({X, G, H}, outs, {}, ref());
  const auto& roots = f.graph().outputs();
  REQUIRE(roots[0]->op->name() == "gemm");
  CHECK(roots[0]->op->str() == "gemm{trans_a}");
  CHECK(roots[0]->inputs[Gemm::kA] == X.node());
  CHECK(roots[1]->op->str() == "gemm{trans_b}");
  CHECK(roots[2]->op->name() == "dot");
  CHECK(count_op(f, "dimshuffle") == 0);
  Tensor xv = uniform({5, 3}, -1, 1, 130, Dtype::Float32);
  Tensor gv = uniform({5, 3}, -1, 1, 131, Dtype::Float32);
  Tensor hv = uniform({3, 2}, -1, 1, 132, Dtype::Float32);
  auto r = f({xv, gv, hv});
  auto p = function({X, G, H}, outs, {}, unrewritten())({xv, gv, hv});
  for (int i = 0; i < 3; ++i) check_close(r[i], p[i], 1e-6, 1e-6);
}

TEST_CASE("in-place gemm only where nothing reads the shared variable afterwards") {
  auto X = fmatrix("X"), G = fmatrix("G");
  const Tensor w0 = uniform({3, 2}, -1, 1, 140, Dtype::Float32);
  auto w = shared(w0, "w");
  auto lr = shared(Tensor::scalar(0.1, Dtype::Float32), "lr");
  Variable step = w - lr * dot(X.T(), G);
  auto gemm_of = [](const Function& f) {
    return dynamic_cast<const Gemm*>(f.graph().updates()[0].value->op.get());
  };
  // The SGD update alone.
  auto f = function({X, G}, {}, {{w, step}}, ref());
  REQUIRE(gemm_of(f));
  CHECK(gemm_of(f)->inplace());
  CHECK(f.graph().updates()[0].value->inputs[Gemm::kAlpha]->op->name() == "neg");  // -lr
  // A cost that reads w on the way to the gradient (as in training) runs before the gemm.
  Variable err = dot(X, w) - G;
  auto fe = function({X, G}, {sum(sqr(err))}, {{w, w - lr * dot(X.T(), err)}}, ref());
  REQUIRE(gemm_of(fe));
  CHECK(gemm_of(fe)->inplace());
  // An output that reads w but that the gemm does not wait for: the update could overwrite
  // w before it runs.
  auto fo = function({X, G}, {sum(dot(X, w))}, {{w, step}}, ref());
  REQUIRE(gemm_of(fo));
  CHECK_FALSE(gemm_of(fo)->inplace());
  // w is also an output: its old value must survive the update.
  auto g = function({X, G}, {Variable(w) * 1}, {{w, step}}, ref());
  REQUIRE(gemm_of(g));
  CHECK_FALSE(gemm_of(g)->inplace());
  // Another update reads w (and is not needed by the gemm).
  auto v = shared(Tensor::zeros({}, Dtype::Float32), "v");
  auto h = function({X, G}, {}, {{w, step}, {v, sum(w)}}, ref());
  REQUIRE(gemm_of(h));
  CHECK_FALSE(gemm_of(h)->inplace());
  // The product reads w itself (through a transpose view).
  auto sq = shared(uniform({3, 3}, -1, 1, 141, Dtype::Float32), "sq");
  auto k = function({X}, {}, {{sq, sq - dot(Variable(sq).T(), X)}}, ref());
  REQUIRE(gemm_of(k));
  CHECK_FALSE(gemm_of(k)->inplace());
  // The reference backend computes the same either way.
  Tensor xv = uniform({4, 3}, -1, 1, 142, Dtype::Float32),
         gv = uniform({4, 2}, -1, 1, 143, Dtype::Float32);
  w.set_value(w0);
  const Tensor cost_fe = fe({xv, gv})[0];
  const Tensor w_fe = w.get_value();
  w.set_value(w0);
  auto plain = function({X, G}, {sum(sqr(err))}, {{w, w - lr * dot(X.T(), err)}}, unrewritten());
  check_close(cost_fe, plain({xv, gv})[0], 1e-6, 1e-6);
  check_close(w_fe, w.get_value(), 1e-6, 1e-7);
  w.set_value(w0);
  const Tensor out_g = g({xv, gv})[0];
  check_values(out_g, w0.to_vector());
}

// =======================================================================================
// expand_row_ops
// =======================================================================================

TEST_CASE("expand_row_ops rewrites the row ops into elementwise ops and reductions") {
  auto z = dmatrix("z");
  auto y = dmatrix("y");
  auto labels = lvector("labels");
  auto g = dmatrix("g");
  Variable sm = nnet::softmax(z);
  const std::vector<Variable> outs = {sm, nnet::log_softmax(z), softmax_grad(g, sm),
                                      nnet::crossentropy_softmax(z, y),
                                      nnet::crossentropy_softmax(z, labels)};
  std::vector<NodePtr> roots;
  for (const Variable& o : outs) roots.push_back(o.node());
  FunctionGraph fg({z.node(), y.node(), labels.node(), g.node()}, roots, {});
  const std::size_t n = expand_row_ops(fg);
  CHECK(n == 4);  // the integer-label cross-entropy is a gather: left as it is
  std::vector<std::string> names;
  for (const NodePtr& m : fg.toposort())
    if (m->kind == NodeKind::Apply) names.push_back(m->op->name());
  for (const char* gone : {"softmax", "log_softmax", "softmax_grad"})
    CHECK(std::find(names.begin(), names.end(), gone) == names.end());
  CHECK(std::count(names.begin(), names.end(), "crossentropy_softmax") == 1);
  CHECK(std::count(names.begin(), names.end(), "max") >= 1);
  CHECK(std::count(names.begin(), names.end(), "exp") >= 1);
  for (std::size_t i = 0; i < outs.size(); ++i) CHECK(fg.outputs()[i]->type == outs[i].type());
  // Same values, including logits of +-1000.
  Tensor zv = uniform({3, 4}, -2, 2, 150);
  zv.set({1, 0}, 1000);
  zv.set({1, 1}, -1000);
  Tensor yv = uniform({3, 4}, 0, 1, 151), gv = uniform({3, 4}, -1, 1, 152);
  Tensor lv = Tensor::from_vector<std::int64_t>({1, 0, 3});
  auto expanded = get_backend("reference")->compile(fg)->run({zv, yv, lv, gv});
  auto fused = function({z, y, labels, g}, outs, {}, unrewritten())({zv, yv, lv, gv});
  for (std::size_t i = 0; i < outs.size(); ++i) {
    CAPTURE(i);
    CHECK(all_finite(expanded[i]));
    check_close(expanded[i], fused[i], 1e-12, 1e-12);
  }
  // Vectors are one row.
  auto zvec = dvector("zv");
  auto yvec = dvector("yv");
  Variable c = nnet::crossentropy_softmax(zvec, yvec);
  FunctionGraph fv({zvec.node(), yvec.node()}, {c.node(), nnet::softmax(zvec).node()}, {});
  CHECK(expand_row_ops(fv) == 2);
  CHECK(fv.outputs()[0]->type == c.type());
  Tensor a = Tensor::from_list({1, 2, 3}, Dtype::Float64),
         b = Tensor::from_list({0, 1, 0}, Dtype::Float64);
  auto ev = get_backend("reference")->compile(fv)->run({a, b});
  CHECK(ev[0].item<double>() == doctest::Approx(logsumexp_row({1, 2, 3}) - 2));
  check_values(ev[1], softmax_row({1, 2, 3}));
}
