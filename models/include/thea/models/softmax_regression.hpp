// Softmax regression, the Theano MNIST tutorial's model, as a reusable builder:
//   py_x = softmax(X·w), y_pred = argmax(py_x, 1),
//   cost = mean(categorical_crossentropy(py_x, Y)), w <- w - lr * d cost / d w.
// Two ways to feed it: minibatch tensors as inputs (train/predict), or a resident dataset
// (train_index/predict_test): the data live in shared variables, on the device for a device
// backend, and the train function takes only the minibatch index (Theano's givens idiom).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "thea/function.hpp"
#include "thea/graph.hpp"
#include "thea/tensor.hpp"

namespace thea::models {

// A dataset held in shared variables, so a device backend keeps it in device memory and a
// training step moves only the minibatch index. Several models may share the same variables.
struct ResidentData {
  Variable train_x;  // shared float32 (N, n_in)
  Variable train_y;  // shared float32 (N, n_out): one-hot targets
  Variable test_x;   // shared float32 (M, n_in), or empty: no predict_test
  // Minibatch i is rows [i*batch_size, (i+1)*batch_size); the last partial batch is never
  // used (N / batch_size batches, as the app's input path).
  std::int64_t batch_size = 128;
  // train_index returns the cost (read back every step, as the tutorial prints it); false:
  // updates only, so a device backend need not synchronise per step.
  bool return_cost = true;
};

// Makes the shared variables of a ResidentData from host tensors (copied; float64 is
// converted to float32). test_x may be an undefined Tensor. The build checks the shapes.
ResidentData make_resident_data(const Tensor& train_x, const Tensor& train_y,
                                const Tensor& test_x = Tensor(), std::int64_t batch_size = 128);

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
  // Also compile the resident-data functions (train_index, predict_test) over this dataset.
  std::optional<ResidentData> resident;
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

  // With options.resident only (else empty): the dataset and the functions over it.
  ResidentData data;
  Variable index;                        // lscalar "i": the minibatch number
  std::int64_t n_batches = 0;            // N / batch_size
  std::optional<Function> train_index;   // train_index({i}) -> {cost} (or {}): one SGD step
                                         // on the rows of minibatch i, sliced where they live
  std::optional<Function> predict_test;  // predict_test({}) -> {labels of data.test_x}

  std::vector<Variable> params() const { return {w}; }
  bool resident() const { return train_index.has_value(); }

  // One SGD step on a minibatch; returns the cost before the update.
  float train_step(const Tensor& x, const Tensor& y_onehot);
  // Predicted class (int64) of every row of x.
  Tensor predict_labels(const Tensor& x);
  // Resident data: one SGD step on minibatch i in [0, n_batches) (a ValueError outside: the
  // slice would be short or empty); returns the cost before the update, or NaN when built
  // with return_cost = false.
  float train_batch(std::int64_t i);
  // The same step, returning the cost as a 0-d tensor (undefined when built with
  // return_cost = false) without waiting for it: on the cuda backend its value arrives in
  // the background and reading it waits, so a loop that reads costs once per epoch keeps
  // the device busy.
  Tensor train_batch_cost(std::int64_t i);
  // Resident data: predicted class (int64) of every row of the resident test set.
  Tensor predict_test_labels();
  // Resident data: new training examples and targets (e.g. reshuffled) of the same shapes.
  void set_train_data(const Tensor& x, const Tensor& y_onehot);
  // Current weights (a copy) and a replacement with a clear error on a shape/dtype mismatch.
  Tensor weights() const;
  void set_weights(const Tensor& value);
};

// Builds the graph and compiles train and predict (and, with options.resident, train_index
// and predict_test). Throws thea::Error on bad options or a dataset of the wrong shape/dtype.
SoftmaxRegression build_softmax_regression(const SoftmaxRegressionOptions& options = {});

// Fraction of rows whose predicted class equals `labels` (any integer dtype, shape (N)).
double accuracy(const Tensor& predicted, const Tensor& labels);

// counts[true][predicted], an int64 (n_classes, n_classes) tensor.
Tensor confusion_matrix(const Tensor& predicted, const Tensor& labels, std::int64_t n_classes);

}  // namespace thea::models
