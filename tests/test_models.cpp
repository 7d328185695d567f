// models/: the softmax-regression builder (the tutorial's graph, train and predict) and
// its helpers, on small hand-checkable data.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "thea/models/softmax_regression.hpp"
#include "thea/thea.hpp"

using thea::Dtype;
using thea::Tensor;
namespace models = thea::models;

namespace {

// Row-wise softmax(x w) in double, for the hand-computed gradient.
std::vector<double> softmax_rows(const Tensor& x, const Tensor& w) {
  const auto n = x.shape()[0], d = x.shape()[1], k = w.shape()[1];
  std::vector<double> p(n * k);
  for (std::int64_t i = 0; i < n; ++i) {
    double mx = -1e300;
    for (std::int64_t j = 0; j < k; ++j) {
      double s = 0;
      for (std::int64_t t = 0; t < d; ++t) s += x.get({i, t}) * w.get({t, j});
      p[i * k + j] = s;
      mx = std::max(mx, s);
    }
    double z = 0;
    for (std::int64_t j = 0; j < k; ++j) z += p[i * k + j] = std::exp(p[i * k + j] - mx);
    for (std::int64_t j = 0; j < k; ++j) p[i * k + j] /= z;
  }
  return p;
}

// Three well separated classes in 4 features: class c has feature c large.
void make_data(std::int64_t n, Tensor& x, Tensor& y, Tensor& labels) {
  x = Tensor::random_uniform({n, 4}, 0.0, 0.2, /*seed=*/3);
  y = Tensor::zeros({n, 3});
  labels = Tensor::zeros({n}, Dtype::Int64);
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t c = i % 3;
    x.set({i, c}, x.get({i, c}) + 1.0);
    y.set({i, c}, 1.0);
    labels.set({i}, static_cast<double>(c));
  }
}

models::SoftmaxRegressionOptions small_options() {
  models::SoftmaxRegressionOptions o;
  o.n_in = 4;
  o.n_out = 3;
  o.learning_rate = 0.5;
  o.seed = 11;
  o.backend = "reference";
  return o;
}

}  // namespace

TEST_CASE("the builder exposes the tutorial's graph and parameters") {
  auto m = models::build_softmax_regression(small_options());
  CHECK(m.X.type().str() == "fmatrix");
  CHECK(m.Y.type().str() == "fmatrix");
  CHECK(m.w.is_shared());
  CHECK(m.w.dtype() == Dtype::Float32);
  CHECK(m.w.type().shape == thea::Shape{4, 3});
  CHECK(m.cost.ndim() == 0);
  CHECK(m.cost.dtype() == Dtype::Float32);  // g * lr stays float32
  CHECK(m.y_pred.dtype() == Dtype::Int64);
  REQUIRE(m.params().size() == 1);
  CHECK(m.params()[0].same_as(m.w));
  CHECK(m.train.backend_name() == "reference");
}

TEST_CASE("initial weights: seeded N(0, stddev^2), or given") {
  auto a = models::build_softmax_regression(small_options());
  auto b = models::build_softmax_regression(small_options());
  CHECK(thea::allclose(a.weights(), b.weights(), 0, 0));
  auto o = small_options();
  o.seed = 12;
  CHECK_FALSE(thea::allclose(models::build_softmax_regression(o).weights(), a.weights()));

  // The default model: 784 x 10 with standard deviation 0.01, as init_weights().
  models::SoftmaxRegressionOptions d;
  d.backend = "reference";
  auto w = models::build_softmax_regression(d).weights().to_vector();
  REQUIRE(w.size() == 7840u);
  double mean = 0, sq = 0;
  for (double v : w) mean += v;
  mean /= w.size();
  for (double v : w) sq += (v - mean) * (v - mean);
  CHECK(std::abs(mean) < 0.001);
  CHECK(std::sqrt(sq / w.size()) == doctest::Approx(0.01).epsilon(0.05));

  o.initial_weights = Tensor::full({4, 3}, 0.25, Dtype::Float64);
  auto given = models::build_softmax_regression(o);
  CHECK(given.weights().dtype() == Dtype::Float32);
  CHECK(thea::allclose(given.weights(), Tensor::full({4, 3}, 0.25)));
}

TEST_CASE("one train step: cost from the old weights, then w -= lr * X^T (p - Y) / N") {
  Tensor x, y, labels;
  make_data(6, x, y, labels);
  auto o = small_options();
  auto m = models::build_softmax_regression(o);
  const Tensor w0 = m.weights();

  const auto p = softmax_rows(x, w0);
  double expected_cost = 0;
  for (std::int64_t i = 0; i < 6; ++i) expected_cost -= std::log(p[i * 3 + (i % 3)]) / 6;
  std::vector<double> expected_w(12);
  for (std::int64_t t = 0; t < 4; ++t)
    for (std::int64_t j = 0; j < 3; ++j) {
      double g = 0;
      for (std::int64_t i = 0; i < 6; ++i) g += x.get({i, t}) * (p[i * 3 + j] - y.get({i, j}));
      expected_w[t * 3 + j] = w0.get({t, j}) - o.learning_rate * g / 6;
    }

  const float cost = m.train_step(x, y);
  CHECK(cost == doctest::Approx(expected_cost).epsilon(1e-5));
  const auto w1 = m.weights().to_vector();
  for (std::size_t k = 0; k < 12; ++k) CHECK(w1[k] == doctest::Approx(expected_w[k]).epsilon(1e-4));
}

TEST_CASE("training lowers the cost and learns separable classes") {
  Tensor x, y, labels;
  make_data(30, x, y, labels);
  auto m = models::build_softmax_regression(small_options());
  const double before = models::accuracy(m.predict_labels(x), labels);
  std::vector<float> costs;
  for (int step = 0; step < 40; ++step)
    costs.push_back(m.train_step(x.slice(0, (step % 3) * 10, (step % 3) * 10 + 10),
                                 y.slice(0, (step % 3) * 10, (step % 3) * 10 + 10)));
  CHECK(costs.back() < 0.5f * costs.front());
  Tensor predicted = m.predict_labels(x);
  CHECK(predicted.dtype() == Dtype::Int64);
  CHECK(predicted.shape() == thea::Shape{30});
  CHECK(models::accuracy(predicted, labels) == 1.0);
  CHECK(before < 1.0);
}

TEST_CASE("set_weights checks shape and dtype") {
  auto m = models::build_softmax_regression(small_options());
  m.set_weights(Tensor::ones({4, 3}, Dtype::Float64));
  CHECK(thea::allclose(m.weights(), Tensor::ones({4, 3})));
  CHECK_THROWS_AS(m.set_weights(Tensor::ones({3, 4})), thea::ShapeError);
  CHECK_THROWS_WITH_AS(m.set_weights(Tensor::ones({4})), doctest::Contains("(4, 3)"),
                       thea::ShapeError);
  CHECK_THROWS_AS(m.set_weights(Tensor::ones({4, 3}, Dtype::Int32)), thea::TypeError);
  CHECK_THROWS_AS(m.set_weights(Tensor()), thea::ValueError);
}

TEST_CASE("bad options are clear errors") {
  auto o = small_options();
  o.learning_rate = 0;
  CHECK_THROWS_WITH_AS(models::build_softmax_regression(o), doctest::Contains("learning_rate"),
                       thea::ValueError);
  o = small_options();
  o.n_out = 0;
  CHECK_THROWS_AS(models::build_softmax_regression(o), thea::ValueError);
  o = small_options();
  o.initial_weights = Tensor::zeros({784, 10});
  CHECK_THROWS_WITH_AS(models::build_softmax_regression(o), doctest::Contains("(784, 10)"),
                       thea::ShapeError);
  o = small_options();
  o.backend = "no-such-backend";
  CHECK_THROWS_AS(models::build_softmax_regression(o), thea::BackendError);
}

TEST_CASE("accuracy and confusion_matrix") {
  Tensor pred = Tensor::from_vector<std::int64_t>({0, 1, 2, 2, 1});
  Tensor truth = Tensor::from_vector<std::uint8_t>({0, 1, 1, 2, 0});
  CHECK(models::accuracy(pred, truth) == doctest::Approx(0.6));
  Tensor c = models::confusion_matrix(pred, truth, 3);
  CHECK(c.dtype() == Dtype::Int64);
  CHECK(c.to_vector() == std::vector<double>{1, 1, 0, 0, 1, 1, 0, 0, 1});
  CHECK_THROWS_AS(models::accuracy(pred, Tensor::zeros({4}, Dtype::Int64)), thea::ShapeError);
  CHECK_THROWS_AS(
      models::accuracy(Tensor::zeros({0}, Dtype::Int64), Tensor::zeros({0}, Dtype::Int64)),
      thea::ValueError);
  CHECK_THROWS_WITH_AS(models::confusion_matrix(pred, truth, 2), doctest::Contains("example 2"),
                       thea::ValueError);
}

TEST_CASE("every available backend trains the model as the reference does") {
  Tensor x, y, labels;
  make_data(30, x, y, labels);
  auto ref = models::build_softmax_regression(small_options());
  std::vector<float> ref_costs;
  for (int step = 0; step < 6; ++step) ref_costs.push_back(ref.train_step(x, y));
  const Tensor ref_pred = ref.predict_labels(x);

  for (const auto& name : thea::backend_names()) {
    if (name == "reference") continue;
    CAPTURE(name);
    try {
      thea::get_backend(name);
    } catch (const thea::BackendError& e) {  // built but cannot run here (no GPU)
      MESSAGE("skipped: " << std::string(e.what()));
      continue;
    }
    auto o = small_options();
    o.backend = name;
    auto m = models::build_softmax_regression(o);
    CHECK(m.train.backend_name() == name);
    for (int step = 0; step < 6; ++step)
      CHECK(m.train_step(x, y) == doctest::Approx(ref_costs[step]).epsilon(1e-4));
    CHECK(thea::allclose(m.weights(), ref.weights(), 1e-4, 1e-6));
    CHECK(thea::allclose(m.predict_labels(x), ref_pred, 0, 0));
  }
}
