#include "thea/models/softmax_regression.hpp"

#include <string>

#include "thea/error.hpp"
#include "thea/grad.hpp"
#include "thea/ops/api.hpp"

namespace thea::models {
namespace {

void check_weights(const Tensor& value, std::int64_t n_in, std::int64_t n_out, const char* where) {
  if (!value.defined()) throw ValueError(std::string(where) + ": weights are an undefined tensor");
  if (value.ndim() != 2 || value.shape()[0] != n_in || value.shape()[1] != n_out)
    throw ShapeError(std::string(where) + ": weights have shape " + shape_str(value.shape()) +
                     ", the model needs " + shape_str({n_in, n_out}));
  if (!is_float(value.dtype()))
    throw TypeError(std::string(where) + ": weights are " + dtype_name(value.dtype()) +
                    ", the model needs float32 (float64 is converted)");
}

void check_labels(const Tensor& predicted, const Tensor& labels, const char* where) {
  if (predicted.ndim() != 1 || labels.ndim() != 1 || predicted.shape() != labels.shape())
    throw ShapeError(std::string(where) + ": predicted " + predicted.describe() + " and labels " +
                     labels.describe() + " must be vectors of the same length");
}

}  // namespace

SoftmaxRegression build_softmax_regression(const SoftmaxRegressionOptions& options) {
  if (options.n_in <= 0 || options.n_out <= 0)
    throw ValueError("build_softmax_regression: n_in and n_out must be positive, got " +
                     std::to_string(options.n_in) + " and " + std::to_string(options.n_out));
  if (!(options.learning_rate > 0))
    throw ValueError("build_softmax_regression: learning_rate must be positive, got " +
                     std::to_string(options.learning_rate));
  if (!(options.init_stddev >= 0))
    throw ValueError("build_softmax_regression: init_stddev must be >= 0");

  Tensor w0;
  if (options.initial_weights) {
    check_weights(*options.initial_weights, options.n_in, options.n_out,
                  "build_softmax_regression");
    w0 = options.initial_weights->astype(Dtype::Float32);
  } else {
    w0 = random_normal({options.n_in, options.n_out}, 0.0, options.init_stddev, options.seed);
  }

  // The tutorial, line for line.
  auto X = fmatrix("X");
  auto Y = fmatrix("Y");
  auto w = shared(w0, "w");
  auto py_x = nnet::softmax(dot(X, w)).set_name("py_x");
  auto y_pred = argmax(py_x, /*axis=*/1).set_name("y_pred");
  auto cost = mean(nnet::categorical_crossentropy(py_x, Y)).set_name("cost");
  auto g = grad(cost, w);
  Updates updates = {{w, w - g * options.learning_rate}};

  FunctionOptions train_opts;
  train_opts.backend = options.backend;
  train_opts.allow_input_downcast = options.allow_input_downcast;
  train_opts.name = "train";
  FunctionOptions predict_opts = train_opts;
  predict_opts.name = "predict";

  auto train = function({X, Y}, {cost}, updates, train_opts);
  auto predict = function({X}, {y_pred}, {}, predict_opts);
  return SoftmaxRegression{.X = X,
                           .Y = Y,
                           .w = w,
                           .py_x = py_x,
                           .y_pred = y_pred,
                           .cost = cost,
                           .train = std::move(train),
                           .predict = std::move(predict)};
}

float SoftmaxRegression::train_step(const Tensor& x, const Tensor& y_onehot) {
  return train({x, y_onehot})[0].item<float>();
}

Tensor SoftmaxRegression::predict_labels(const Tensor& x) { return predict({x})[0]; }

Tensor SoftmaxRegression::weights() const { return w.get_value(); }

void SoftmaxRegression::set_weights(const Tensor& value) {
  const Shape& shape = w.type().shape;
  check_weights(value, shape[0], shape[1], "SoftmaxRegression::set_weights");
  w.set_value(value.astype(Dtype::Float32));
}

double accuracy(const Tensor& predicted, const Tensor& labels) {
  check_labels(predicted, labels, "accuracy");
  const std::int64_t n = labels.numel();
  if (n == 0) throw ValueError("accuracy: no examples");
  std::int64_t correct = 0;
  for (std::int64_t i = 0; i < n; ++i)
    correct += predicted.at<std::int64_t>({i}) == labels.at<std::int64_t>({i});
  return static_cast<double>(correct) / static_cast<double>(n);
}

Tensor confusion_matrix(const Tensor& predicted, const Tensor& labels, std::int64_t n_classes) {
  check_labels(predicted, labels, "confusion_matrix");
  if (n_classes <= 0) throw ValueError("confusion_matrix: n_classes must be positive");
  Tensor counts = Tensor::zeros({n_classes, n_classes}, Dtype::Int64);
  std::int64_t* c = counts.data<std::int64_t>();
  for (std::int64_t i = 0; i < labels.numel(); ++i) {
    const auto t = labels.at<std::int64_t>({i});
    const auto p = predicted.at<std::int64_t>({i});
    if (t < 0 || t >= n_classes || p < 0 || p >= n_classes)
      throw ValueError("confusion_matrix: example " + std::to_string(i) + " has label " +
                       std::to_string(t) + " / prediction " + std::to_string(p) + " outside [0, " +
                       std::to_string(n_classes) + ")");
    ++c[t * n_classes + p];
  }
  return counts;
}

}  // namespace thea::models
