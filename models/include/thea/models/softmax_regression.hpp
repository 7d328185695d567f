// Softmax regression, the Theano MNIST tutorial's model, as a reusable builder:
//   py_x = softmax(X·w), y_pred = argmax(py_x, 1),
//   cost = mean(categorical_crossentropy(py_x, Y)), w <- w - lr * d cost / d w.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "thea/function.hpp"
#include "thea/graph.hpp"
#include "thea/tensor.hpp"

namespace thea::models {

struct SoftmaxRegressionOptions {
  std::int64_t n_in = 784;  // features per example (28x28 pixels)
  std::int64_t n_out = 10;  // classes
  double learning_rate = 0.05;
  double init_stddev = 0.01;  // w ~ N(0, init_stddev^2), as init_weights() in the tutorial
  std::uint64_t seed = 42;
  // Starting weights of shape (n_in, n_out) instead of the random draw (e.g. a saved .npy).
  std::optional<Tensor> initial_weights;
  std::string backend;  // empty: THEA_BACKEND or the default backend
  // The tutorial compiles with allow_input_downcast=True (float64 data into fmatrix).
  bool allow_input_downcast = true;
};

// The symbolic graph, its parameters and the two compiled functions.
struct SoftmaxRegression {
  Variable X;        // fmatrix (batch, n_in)
  Variable Y;        // fmatrix (batch, n_out), one-hot targets
  Variable w;        // shared fmatrix (n_in, n_out)
  Variable py_x;     // class probabilities
  Variable y_pred;   // int64 vector of predicted classes
  Variable cost;     // float32 scalar: mean cross-entropy of the batch
  Function train;    // train({x, y}) -> {cost}; applies the SGD update to w
  Function predict;  // predict({x}) -> {labels}

  std::vector<Variable> params() const { return {w}; }

  // One SGD step on a minibatch; returns the cost before the update.
  float train_step(const Tensor& x, const Tensor& y_onehot);
  // Predicted class (int64) of every row of x.
  Tensor predict_labels(const Tensor& x);
  // Current weights (a copy) and a replacement with a clear error on a shape/dtype mismatch.
  Tensor weights() const;
  void set_weights(const Tensor& value);
};

// Builds the graph and compiles train and predict. Throws thea::Error on bad options.
SoftmaxRegression build_softmax_regression(const SoftmaxRegressionOptions& options = {});

// Fraction of rows whose predicted class equals `labels` (any integer dtype, shape (N)).
double accuracy(const Tensor& predicted, const Tensor& labels);

// counts[true][predicted], an int64 (n_classes, n_classes) tensor.
Tensor confusion_matrix(const Tensor& predicted, const Tensor& labels, std::int64_t n_classes);

}  // namespace thea::models
