// nnet: softmax / log_softmax, categorical cross-entropy (probability and integer
// targets), binary cross-entropy, relu; forward values, stability, errors, gradients.
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

// Rows of random probabilities (each row sums to 1, entries in (0, 1)).
Tensor random_probs(std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
  Tensor u = uniform({rows, cols}, 0.2, 1.0, seed);
  std::vector<double> v = u.to_vector();
  for (std::int64_t i = 0; i < rows; ++i) {
    double s = 0;
    for (std::int64_t j = 0; j < cols; ++j) s += v[i * cols + j];
    for (std::int64_t j = 0; j < cols; ++j) v[i * cols + j] /= s;
  }
  return Tensor::from_vector(v, {rows, cols});
}

using Fn = std::function<Variable(const std::vector<Variable>&)>;

}  // namespace

TEST_CASE("softmax and log_softmax forward, row-wise") {
  Tensor x = Tensor::from_list({{1, 2, 3}, {-1, 0, 1}, {5, 5, 5}}, Dtype::Float64);
  Tensor sm = Softmax(false).perform({x});
  CHECK(sm.dtype() == Dtype::Float64);
  CHECK(sm.shape() == Shape{3, 3});
  std::vector<double> expected;
  for (const auto& row : std::vector<std::vector<double>>{{1, 2, 3}, {-1, 0, 1}, {5, 5, 5}}) {
    for (double v : softmax_row(row)) expected.push_back(v);
  }
  check_values(sm, expected);
  // Known values: softmax([1, 2, 3]) = [0.09003057, 0.24472847, 0.66524096].
  CHECK(sm.get({0, 0}) == doctest::Approx(0.09003057317038046));
  CHECK(sm.get({0, 2}) == doctest::Approx(0.6652409557748219));
  Tensor lsm = Softmax(true).perform({x});
  std::vector<double> logs;
  for (double v : expected) logs.push_back(std::log(v));
  check_values(lsm, logs, 1e-12);
  // float32 and a vector (one row).
  Tensor v = Tensor::from_list({1, 2, 3}, Dtype::Float32);
  Tensor sv = Softmax(false).perform({v});
  CHECK(sv.dtype() == Dtype::Float32);
  CHECK(sv.shape() == Shape{3});
  check_values(sv, softmax_row({1, 2, 3}), 1e-6);
  // Strided input (a transposed view).
  Tensor xt = Tensor::from_list({{1, -1}, {2, 0}, {3, 1}}, Dtype::Float64).permute({1, 0});
  check_values(Softmax(false).perform({xt}), [] {
    std::vector<double> e = softmax_row({1, 2, 3});
    for (double v : softmax_row({-1, 0, 1})) e.push_back(v);
    return e;
  }());
}

TEST_CASE("softmax is numerically stable for large inputs") {
  Tensor x = Tensor::from_list({{1000, 1001, 1002}, {-1000, -1001, -1002}}, Dtype::Float32);
  Tensor sm = Softmax(false).perform({x});
  for (double v : sm.to_vector()) CHECK(std::isfinite(v));
  CHECK(sm.get({0, 2}) == doctest::Approx(0.6652409557748219).epsilon(1e-6));
  CHECK(sm.get({1, 0}) == doctest::Approx(0.6652409557748219).epsilon(1e-6));
  Tensor lsm = Softmax(true).perform({x});
  for (double v : lsm.to_vector()) CHECK(std::isfinite(v));
  CHECK(lsm.get({0, 0}) == doctest::Approx(std::log(0.09003057317038046)).epsilon(1e-6));
  // Far tails: log_softmax stays exact where softmax underflows to 0.
  Tensor far = Tensor::from_list({{0, 800}}, Dtype::Float64);
  CHECK(Softmax(false).perform({far}).get({0, 0}) == 0.0);
  CHECK(Softmax(true).perform({far}).get({0, 0}) == doctest::Approx(-800));
}

TEST_CASE("softmax types and errors") {
  auto X = fmatrix("X");
  CHECK(nnet::softmax(X).type() == X.type());
  CHECK(nnet::log_softmax(dvector()).dtype() == Dtype::Float64);
  CHECK(nnet::softmax(X).node()->op->name() == "softmax");
  CHECK(nnet::log_softmax(X).node()->op->name() == "log_softmax");
  const std::string msg = error_of([] { (void)nnet::softmax(imatrix("labels")); });
  CHECK(contains(msg, "[softmax]"));
  CHECK(contains(msg, "labels (imatrix"));
  CHECK(contains(msg, "test_ops_nnet.cpp"));
  CHECK_THROWS_AS((void)nnet::softmax(ftensor3()), TypeError);
  CHECK_THROWS_AS((void)nnet::log_softmax(fscalar()), TypeError);
}

TEST_CASE("categorical cross-entropy: one-hot, probability and integer targets") {
  Tensor p = Tensor::from_list({{0.7, 0.2, 0.1}, {0.1, 0.1, 0.8}}, Dtype::Float64);
  Tensor onehot = Tensor::from_list({{1, 0, 0}, {0, 0, 1}}, Dtype::Float64);
  Tensor labels = Tensor::from_vector<std::int64_t>({0, 2});
  auto P = dmatrix("P");
  auto Y = dmatrix("Y");
  auto y = lvector("y");
  auto f = function({P, Y, y},
                    {nnet::categorical_crossentropy(P, Y), nnet::categorical_crossentropy(P, y)},
                    {}, {}, ref());
  auto out = f({p, onehot, labels});
  check_values(out[0], {-std::log(0.7), -std::log(0.8)});
  check_values(out[1], {-std::log(0.7), -std::log(0.8)});
  // Soft targets.
  Tensor soft = Tensor::from_list({{0.5, 0.5, 0}, {0, 0.25, 0.75}}, Dtype::Float64);
  auto soft_out =
      function({P, Y}, {nnet::categorical_crossentropy(P, Y)}, {}, {}, ref())({p, soft});
  check_values(soft_out[0], {-(0.5 * std::log(0.7) + 0.5 * std::log(0.2)),
                             -(0.25 * std::log(0.1) + 0.75 * std::log(0.8))});
  // The integer form is one op, the probability form a composition.
  CHECK(nnet::categorical_crossentropy(P, y).node()->op->name() == "crossentropy_categorical_1hot");
  CHECK(nnet::categorical_crossentropy(P, Y).node()->op->name() == "neg");
  // int32 labels and float32 probabilities keep float32.
  auto Pf = fmatrix("Pf");
  CHECK(nnet::categorical_crossentropy(Pf, ivector()).type() ==
        TensorType(Dtype::Float32, {kUnknownDim}));
  CHECK(nnet::categorical_crossentropy(Pf, fmatrix()).dtype() == Dtype::Float32);
  // Integer one-hot matrices are cast to p's dtype.
  CHECK(nnet::categorical_crossentropy(Pf, bmatrix()).dtype() == Dtype::Float32);
  // Direct perform, strided p.
  Tensor pt =
      Tensor::from_list({{0.7, 0.1}, {0.2, 0.1}, {0.1, 0.8}}, Dtype::Float64).permute({1, 0});
  check_values(CrossentropyCategorical1Hot().perform({pt, labels}),
               {-std::log(0.7), -std::log(0.8)});
  Tensor labels32 = Tensor::from_vector<std::int32_t>({1, 1});
  check_values(CrossentropyCategorical1Hot().perform({p, labels32}),
               {-std::log(0.2), -std::log(0.1)});
}

TEST_CASE("cross-entropy errors: labels out of range, shapes, ranks") {
  Tensor p = Tensor::from_list({{0.7, 0.3}, {0.4, 0.6}}, Dtype::Float64);
  const std::string msg = error_of([&] {
    CrossentropyCategorical1Hot().perform({p, Tensor::from_vector<std::int64_t>({0, 2})});
  });
  CHECK(contains(msg, "label 2"));
  CHECK(contains(msg, "row 1"));
  CHECK(contains(msg, "2 classes"));
  CHECK_THROWS_AS(
      CrossentropyCategorical1Hot().perform({p, Tensor::from_vector<std::int64_t>({0, -1})}),
      ValueError);
  CHECK_THROWS_AS(
      CrossentropyCategorical1Hot().perform({p, Tensor::from_vector<std::int64_t>({0, 1, 1})}),
      ShapeError);
  // Through a function: the error names the op and the node.
  auto P = dmatrix("P");
  auto y = lvector("y");
  auto f = function({P, y}, {nnet::categorical_crossentropy(P, y)}, {}, {}, ref());
  const std::string fmsg = error_of([&] { f({p, Tensor::from_vector<std::int64_t>({5, 0})}); });
  CHECK(contains(fmsg, "crossentropy_categorical_1hot"));
  CHECK(contains(fmsg, "label 5"));
  // Static checks.
  auto pv = tensor(Dtype::Float32, Shape{4, 10}, "p");
  auto yv = tensor(Dtype::Int64, Shape{3}, "labels");
  const std::string smsg = error_of([&] { (void)nnet::categorical_crossentropy(pv, yv); });
  CHECK(contains(smsg, "(4, 10)"));
  CHECK(contains(smsg, "(3,)"));
  CHECK(contains(smsg, "labels (int64"));
  const std::string rmsg =
      error_of([] { (void)nnet::categorical_crossentropy(fmatrix("p"), fvector("t")); });
  CHECK(contains(rmsg, "[categorical_crossentropy]"));
  CHECK(contains(rmsg, "t (fvector"));
  CHECK(contains(rmsg, "test_ops_nnet.cpp"));
  CHECK_THROWS_AS((void)nnet::categorical_crossentropy(fmatrix(), ftensor3()), TypeError);
}

TEST_CASE("binary cross-entropy and relu forward") {
  auto o = dvector("o");
  auto t = dvector("t");
  Tensor ov = Tensor::from_list({0.9, 0.2, 0.5}, Dtype::Float64);
  Tensor tv = Tensor::from_list({1, 0, 0.25}, Dtype::Float64);
  Tensor out = function({o, t}, {nnet::binary_crossentropy(o, t)}, {}, {}, ref())({ov, tv})[0];
  check_values(out,
               {-std::log(0.9), -std::log(0.8), -(0.25 * std::log(0.5) + 0.75 * std::log(0.5))});
  CHECK(nnet::binary_crossentropy(fvector(), fvector()).dtype() == Dtype::Float32);
  CHECK(nnet::relu(fmatrix()).dtype() == Dtype::Float32);
  CHECK(nnet::relu(ivector()).dtype() == Dtype::Int32);
  Tensor r = function({o}, {nnet::relu(o)}, {}, {},
                      ref())({Tensor::from_list({-2, 0, 3}, Dtype::Float64)})[0];
  check_values(r, {0, 0, 3});
}

// ---------------------------------------------------------------------------------------
// Gradients
// ---------------------------------------------------------------------------------------

TEST_CASE("gradients of softmax and log_softmax (matrix and vector)") {
  for (const Shape& s : {Shape{4}, Shape{3, 5}, Shape{1, 2}}) {
    CAPTURE(shape_str(s));
    Tensor x = uniform(s, -2, 2, 31 + s.size());
    CHECK_NOTHROW(
        verify_grad([](const std::vector<Variable>& v) { return nnet::softmax(v[0]); }, {x}));
    CHECK_NOTHROW(
        verify_grad([](const std::vector<Variable>& v) { return nnet::log_softmax(v[0]); }, {x}));
  }
  // Softmax of a broadcast sum (bias row).
  CHECK_NOTHROW(verify_grad(
      [](const std::vector<Variable>& v) { return nnet::softmax(dot(v[0], v[1]) + v[2]); },
      {uniform({3, 4}, -1, 1, 1), uniform({4, 5}, -1, 1, 2), uniform({5}, -1, 1, 3)}));
}

TEST_CASE("gradients of cross-entropies") {
  Tensor z = uniform({4, 3}, -2, 2, 50);
  Tensor onehot = Tensor::from_list({{1, 0, 0}, {0, 1, 0}, {0, 0, 1}, {0, 1, 0}}, Dtype::Float64);
  Tensor labels = Tensor::from_vector<std::int64_t>({0, 1, 2, 1});
  // Through softmax, as the tutorial's model uses them.
  CHECK_NOTHROW(verify_grad(
      [](const std::vector<Variable>& v) {
        return mean(nnet::categorical_crossentropy(nnet::softmax(v[0]), v[1]));
      },
      {z, onehot}));
  CHECK_NOTHROW(verify_grad(
      [](const std::vector<Variable>& v) {
        return mean(nnet::categorical_crossentropy(nnet::softmax(v[0]), v[1]));
      },
      {z, labels}));
  // Directly on probabilities (and w.r.t. soft targets too).
  Tensor p = random_probs(4, 3, 51);
  CHECK_NOTHROW(verify_grad(
      [](const std::vector<Variable>& v) { return nnet::categorical_crossentropy(v[0], v[1]); },
      {p, labels}));
  CHECK_NOTHROW(verify_grad(
      [](const std::vector<Variable>& v) { return nnet::categorical_crossentropy(v[0], v[1]); },
      {p, random_probs(4, 3, 52)}));
  // Binary cross-entropy w.r.t. output and target.
  CHECK_NOTHROW(verify_grad(
      [](const std::vector<Variable>& v) { return nnet::binary_crossentropy(v[0], v[1]); },
      {uniform({2, 3}, 0.1, 0.9, 53), uniform({2, 3}, 0, 1, 54)}));
  CHECK_NOTHROW(verify_grad(
      [](const std::vector<Variable>& v) {
        return nnet::binary_crossentropy(nnet::sigmoid(v[0]), v[1]);
      },
      {uniform({5}, -3, 3, 55), uniform({5}, 0, 1, 56)}));
  CHECK_NOTHROW(verify_grad(
      [](const std::vector<Variable>& v) { return nnet::softplus(v[0]) * nnet::relu(v[0]); },
      {Tensor::from_list({-1.5, -0.3, 0.4, 2.0}, Dtype::Float64)}));
}

TEST_CASE("the tutorial's gradient: d mean(xent(softmax(z), y)) / dz = (softmax(z) - y) / n") {
  auto z = dmatrix("z");
  auto Y = dmatrix("Y");
  auto y = lvector("y");
  Tensor zv = uniform({4, 3}, -2, 2, 60);
  Tensor onehot = Tensor::from_list({{1, 0, 0}, {0, 1, 0}, {0, 0, 1}, {0, 1, 0}}, Dtype::Float64);
  Tensor labels = Tensor::from_vector<std::int64_t>({0, 1, 2, 1});
  Variable sm = nnet::softmax(z);
  Variable g1 = grad(mean(nnet::categorical_crossentropy(sm, Y)), z);
  Variable g2 = grad(mean(nnet::categorical_crossentropy(sm, y)), z);
  auto out = function({z, Y, y}, {g1, g2, (sm - Y) / 4.0}, {}, {}, ref())({zv, onehot, labels});
  check_values(out[0], out[2].to_vector(), 1e-10);
  check_values(out[1], out[2].to_vector(), 1e-10);
  // float32 end to end: the gradient of a float32 model stays float32.
  auto zf = fmatrix("zf");
  auto Yf = fmatrix("Yf");
  Variable gf = grad(mean(nnet::categorical_crossentropy(nnet::softmax(zf), Yf)), zf);
  CHECK(gf.dtype() == Dtype::Float32);
}

TEST_CASE("second-order gradients through softmax and the 1-hot cross-entropy") {
  Tensor z = uniform({3, 4}, -1, 1, 70);
  Tensor labels = Tensor::from_vector<std::int64_t>({3, 0, 2});
  Tensor dir = uniform({3, 4}, -1, 1, 71);
  // Hessian-vector products: differentiate sum(grad(cost) * v) again.
  CHECK_NOTHROW(verify_grad(
      [](const std::vector<Variable>& v) {
        Variable cost = sum(nnet::categorical_crossentropy(nnet::softmax(v[0]), v[1]));
        return sum(grad(cost, v[0]) * v[2]);
      },
      {z, labels, dir}));
  CHECK_NOTHROW(verify_grad(
      [](const std::vector<Variable>& v) {
        Variable cost = sum(nnet::log_softmax(v[0]) * v[1]);
        return sum(grad(cost, v[0]) * v[1]);
      },
      {z, dir}));
  // The gradient op of the 1-hot cross-entropy on its own (w.r.t. g and p).
  Tensor p = random_probs(3, 4, 72);
  CHECK_NOTHROW(verify_grad(
      [](const std::vector<Variable>& v) {
        return Variable(make_apply(std::make_shared<CrossentropyCategorical1HotGrad>(),
                                   {v[0].node(), v[1].node(), v[2].node()},
                                   std::source_location::current()));
      },
      {uniform({3}, -1, 1, 73), p, labels}));
  // Its forward value.
  Tensor g = Tensor::from_list({1, 2, -1}, Dtype::Float64);
  Tensor gp = CrossentropyCategorical1HotGrad().perform({g, p, labels});
  CHECK(gp.shape() == Shape{3, 4});
  for (std::int64_t i = 0; i < 3; ++i)
    for (std::int64_t j = 0; j < 4; ++j) {
      const double expected = j == labels.at<std::int64_t>({i}) ? -g.get({i}) / p.get({i, j}) : 0.0;
      CHECK(gp.get({i, j}) == doctest::Approx(expected));
    }
}
