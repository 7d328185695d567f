// models/: the softmax-regression builder (the tutorial's graph, train and predict, and the
// resident-data functions) and its helpers, on small hand-checkable data.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "test_util.hpp"
#include "thea/data/mnist.hpp"
#include "thea/models/softmax_regression.hpp"
#include "thea/thea.hpp"

#if THEA_HAVE_CUDA
#include "cuda/cuda_backend.hpp"
#endif

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

// ---------------------------------------------------------------- resident data

namespace {

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && a.to_vector() == b.to_vector();
}

// The same model trained twice from the same weights: minibatch tensors as inputs, and the
// resident path (shared dataset sliced by index). Costs and weights must be bit-identical.
void check_resident_matches_input(const Tensor& x, const Tensor& y, const Tensor& test_x,
                                  models::SoftmaxRegressionOptions o, std::int64_t bs, int epochs) {
  auto input = models::build_softmax_regression(o);
  o.resident = models::make_resident_data(x, y, test_x, bs);
  auto res = models::build_softmax_regression(o);
  REQUIRE(res.resident());
  CHECK_FALSE(input.resident());
  CHECK(res.train_index->backend_name() == input.train.backend_name());
  REQUIRE(bit_equal(res.weights(), input.weights()));
  const std::int64_t batches = x.shape()[0] / bs;
  CHECK(res.n_batches == batches);
  const Tensor xf = x.astype(Dtype::Float32), yf = y.astype(Dtype::Float32);
  for (int e = 0; e < epochs; ++e) {
    for (std::int64_t b = 0; b < batches; ++b) {
      CAPTURE(e);
      CAPTURE(b);
      const float c_in =
          input.train_step(xf.slice(0, b * bs, (b + 1) * bs), yf.slice(0, b * bs, (b + 1) * bs));
      const float c_res = res.train_batch(b);
      CHECK(c_res == c_in);
      CHECK(bit_equal(res.weights(), input.weights()));
    }
    CHECK(bit_equal(res.weights(), input.weights()));
    CHECK(bit_equal(res.predict_test_labels(), input.predict_labels(test_x)));
  }
}

models::SoftmaxRegressionOptions resident_options(const std::string& backend) {
  auto o = small_options();
  o.backend = backend;
  o.resident = models::make_resident_data(Tensor::zeros({9, 4}), Tensor::zeros({9, 3}),
                                          Tensor::zeros({2, 4}), 4);
  return o;
}

}  // namespace

TEST_CASE("resident data: the index path gives the input path's weights bit for bit") {
  Tensor x, y, labels;
  make_data(301, x, y, labels);  // 301 = 2 batches of 128 + a dropped partial batch of 45
  Tensor test_x, test_y, test_labels;
  make_data(12, test_x, test_y, test_labels);
  for (const std::string backend : {"reference", "cpu"}) {
    CAPTURE(backend);
    if (!thea::testing::backend_available(backend)) continue;
    auto o = small_options();
    o.backend = backend;
    check_resident_matches_input(x, y, test_x, o, 128, 3);
    check_resident_matches_input(x, y, test_x, o, 8, 1);
  }
}

TEST_CASE("resident data: the same on a real MNIST subset (skipped without data/mnist)") {
  const std::string dir = std::string(THEA_SOURCE_DIR) + "/data/mnist";
  thea::data::Mnist d;
  try {
    d = thea::data::load_mnist(dir, 1000, 300);
  } catch (const thea::Error& e) {
    MESSAGE("skipped: no MNIST in " << dir << ": " << std::string(e.what()));
    return;
  }
  for (const std::string backend : {"reference", "cpu"}) {
    CAPTURE(backend);
    if (!thea::testing::backend_available(backend)) continue;
    models::SoftmaxRegressionOptions o;  // the tutorial's 784 x 10, lr 0.05, seed 42
    o.backend = backend;
    check_resident_matches_input(d.trX, d.trY, d.teX, o, 128, 2);
  }
}

TEST_CASE("resident data: updates-only steps, replaced training data, shared datasets") {
  Tensor x, y, labels;
  make_data(24, x, y, labels);
  auto o = small_options();
  auto input = models::build_softmax_regression(o);
  o.resident = models::make_resident_data(x, y, Tensor(), 6);
  o.resident->return_cost = false;
  auto res = models::build_softmax_regression(o);
  CHECK(res.train_index->name() == "train_index_updates_only");
  CHECK_FALSE(res.predict_test.has_value());
  CHECK(std::isnan(res.train_batch(2)));
  input.train_step(x.slice(0, 12, 18), y.slice(0, 12, 18));
  CHECK(bit_equal(res.weights(), input.weights()));
  CHECK_FALSE(res.train_batch_cost(2).defined());  // the same step again, without a cost
  input.train_step(x.slice(0, 12, 18), y.slice(0, 12, 18));
  CHECK(bit_equal(res.weights(), input.weights()));

  // New (here: reversed) examples in the same shared variables; the next steps use them.
  Tensor xr = Tensor::zeros({24, 4}), yr = Tensor::zeros({24, 3});
  for (std::int64_t i = 0; i < 24; ++i)
    for (std::int64_t j = 0; j < 4; ++j) {
      xr.set({i, j}, x.get({23 - i, j}));
      if (j < 3) yr.set({i, j}, y.get({23 - i, j}));
    }
  res.set_train_data(xr, yr);
  res.train_batch(0);
  input.train_step(xr.slice(0, 0, 6), yr.slice(0, 0, 6));
  CHECK(bit_equal(res.weights(), input.weights()));
  CHECK(bit_equal(res.data.train_x.get_value(), xr.astype(Dtype::Float32)));

  // A second model over the same shared dataset (no second copy of the data).
  auto o2 = small_options();
  o2.resident = res.data;
  o2.resident->return_cost = true;
  auto other = models::build_softmax_regression(o2);
  CHECK(other.data.train_x.same_as(res.data.train_x));
  CHECK(std::isfinite(other.train_batch(3)));
}

TEST_CASE("resident data: bad minibatch indices and datasets are clear errors") {
  auto o = resident_options("reference");
  auto m = models::build_softmax_regression(o);
  CHECK(m.n_batches == 2);  // 9 examples in batches of 4
  const Tensor w0 = m.weights();
  for (std::int64_t bad : {-1, 2, 1000}) {
    CAPTURE(bad);
    CHECK_THROWS_WITH_AS(m.train_batch(bad), doctest::Contains("out of range"), thea::ValueError);
  }
  CHECK_THROWS_WITH_AS(m.train_batch(2), doctest::Contains("2 minibatches of 4 (valid: 0..1)"),
                       thea::ValueError);
  CHECK(bit_equal(m.weights(), w0));  // nothing was trained on a short slice
  CHECK(std::isfinite(m.train_batch(1)));

  CHECK_THROWS_WITH_AS(m.set_train_data(Tensor::zeros({8, 4}), Tensor::zeros({9, 3})),
                       doctest::Contains("(9, 4)"), thea::ShapeError);
  CHECK_THROWS_WITH_AS(m.set_train_data(Tensor::zeros({9, 4}, Dtype::Int32), Tensor::zeros({9, 3})),
                       doctest::Contains("int32"), thea::TypeError);
  CHECK_THROWS_AS(m.set_train_data(Tensor(), Tensor::zeros({9, 3})), thea::ValueError);

  auto plain = models::build_softmax_regression(small_options());
  CHECK_THROWS_WITH_AS(plain.train_batch(0), doctest::Contains("without resident data"),
                       thea::ValueError);
  CHECK_THROWS_WITH_AS(plain.predict_test_labels(), doctest::Contains("no resident test set"),
                       thea::ValueError);
  CHECK_THROWS_AS(plain.set_train_data(Tensor::zeros({9, 4}), Tensor::zeros({9, 3})),
                  thea::ValueError);

  auto bad = resident_options("reference");
  bad.resident->train_x = thea::fmatrix("X");
  CHECK_THROWS_WITH_AS(models::build_softmax_regression(bad),
                       doctest::Contains("must be a shared variable"), thea::ValueError);
  bad = resident_options("reference");
  bad.resident->train_x = thea::shared(Tensor::zeros({9, 4}, Dtype::Float64), "trX64");
  CHECK_THROWS_WITH_AS(models::build_softmax_regression(bad), doctest::Contains("float64"),
                       thea::TypeError);
  bad = resident_options("reference");
  bad.resident->train_x = thea::shared(Tensor::zeros({9, 5}), "trX5");
  CHECK_THROWS_WITH_AS(models::build_softmax_regression(bad), doctest::Contains("(N, 4)"),
                       thea::ShapeError);
  bad = resident_options("reference");
  bad.resident->train_y = thea::shared(Tensor::zeros({8, 3}), "trY8");
  CHECK_THROWS_WITH_AS(models::build_softmax_regression(bad),
                       doctest::Contains("9 examples but train_y 8"), thea::ShapeError);
  bad = resident_options("reference");
  bad.resident->test_x = thea::shared(Tensor::zeros({2, 3}), "teX3");
  CHECK_THROWS_WITH_AS(models::build_softmax_regression(bad), doctest::Contains("test_x"),
                       thea::ShapeError);
  for (std::int64_t bs : {0, 10}) {
    bad = resident_options("reference");
    bad.resident->batch_size = bs;
    CHECK_THROWS_WITH_AS(models::build_softmax_regression(bad), doctest::Contains("batch_size"),
                         thea::ValueError);
  }
  CHECK_THROWS_AS(models::make_resident_data(Tensor(), Tensor::zeros({9, 3})), thea::ValueError);
  CHECK_THROWS_WITH_AS(
      models::make_resident_data(Tensor::zeros({9, 4}, Dtype::Int64), Tensor::zeros({9, 3})),
      doctest::Contains("int64"), thea::TypeError);
}

TEST_CASE("resident data on the CUDA backend's SIMT emulator matches the reference") {
#if THEA_HAVE_CUDA
  static const bool registered = [] {
    thea::register_backend("cuda_emu", &thea::make_cuda_emu_backend);
    return true;
  }();
  (void)registered;
  Tensor x, y, labels;
  make_data(30, x, y, labels);
  auto ref_o = small_options();
  ref_o.resident = models::make_resident_data(x, y, x, 10);
  auto ref = models::build_softmax_regression(ref_o);
  auto emu_o = small_options();
  emu_o.backend = "cuda_emu";
  emu_o.resident = models::make_resident_data(x, y, x, 10);
  auto emu = models::build_softmax_regression(emu_o);
  CHECK(emu.train_index->backend_name() == "cuda_emu");
  // Every step on the device (no host_op step): the call can be captured and replayed.
  CHECK_MESSAGE(emu.train_index->debugprint().find("host_op") == std::string::npos,
                emu.train_index->debugprint());
  for (int e = 0; e < 2; ++e)
    for (std::int64_t b = 0; b < 3; ++b) {
      CAPTURE(b);
      CHECK(emu.train_batch(b) == doctest::Approx(ref.train_batch(b)).epsilon(1e-5));
    }
  // Costs kept unread for an epoch (the app's loop), then read in order.
  std::vector<Tensor> emu_costs;
  std::vector<float> ref_costs;
  for (std::int64_t b = 0; b < 3; ++b) {
    emu_costs.push_back(emu.train_batch_cost(b));
    ref_costs.push_back(ref.train_batch(b));
  }
  for (std::size_t b = 0; b < 3; ++b)
    CHECK(emu_costs[b].item<float>() == doctest::Approx(ref_costs[b]).epsilon(1e-5));
  CHECK(thea::allclose(emu.weights(), ref.weights(), 1e-4, 1e-6));
  CHECK(bit_equal(emu.predict_test_labels(), ref.predict_test_labels()));
  CHECK(bit_equal(emu.predict_test_labels(), emu.predict_labels(x)));
  CHECK_THROWS_WITH_AS(emu.train_batch(3), doctest::Contains("out of range"), thea::ValueError);
#else
  MESSAGE("skipped: built without the CUDA backend");
#endif
}
