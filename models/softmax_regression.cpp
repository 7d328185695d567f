#include "thea/models/softmax_regression.hpp"

#include <exception>
#include <functional>
#include <future>
#include <limits>
#include <string>
#include <tuple>

#include "thea/backend.hpp"
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

// A resident dataset variable: shared, float32, a matrix with `cols` columns.
void check_resident(const Variable& v, const char* field, std::int64_t cols, const char* what) {
  const std::string where = std::string("build_softmax_regression: ResidentData.") + field;
  if (!v) throw ValueError(where + " is an empty Variable (make_resident_data makes it)");
  if (!v.is_shared())
    throw ValueError(where + " must be a shared variable holding the data, but " + v.describe() +
                     " is not (make_resident_data makes one from a tensor)");
  if (v.dtype() != Dtype::Float32)
    throw TypeError(where + " is " + v.describe() + " of dtype " + dtype_name(v.dtype()) +
                    ", the model needs float32 " + what);
  const Shape& shape = v.type().shape;
  if (shape.size() != 2 || shape[1] != cols)
    throw ShapeError(where + " has shape " + shape_str(shape) + ", the model needs (N, " +
                     std::to_string(cols) + ") " + what);
  if (shape[0] <= 0) throw ValueError(where + " holds no examples");
}

// Runs the compile jobs, concurrently where the backend allows: a cold compile on the cpu
// backend is mostly a system-compiler process per function, so on two cores train and predict
// build in about the time of one. The cuda backend (one device context) compiles in turn.
// The first error is rethrown once every job has finished.
std::vector<Function> compile_all(const std::string& backend,
                                  std::vector<std::function<Function()>> jobs) {
  std::vector<Function> out;
  const std::string name = backend.empty() ? default_backend_name() : backend;
  if (name == "cuda" || jobs.size() < 2) {
    for (auto& job : jobs) out.push_back(job());
    return out;
  }
  std::vector<std::future<Function>> running;
  for (auto& job : jobs) running.push_back(std::async(std::launch::async, job));
  std::exception_ptr error;
  for (auto& f : running) {
    try {
      out.push_back(f.get());
    } catch (...) {
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
  return out;
}

// The model's float32 data without a copy when it already is float32 (datasets are large).
Tensor as_float32(const Tensor& t) {
  return t.dtype() == Dtype::Float32 ? t : t.astype(Dtype::Float32);
}

}  // namespace

ResidentData make_resident_data(const Tensor& train_x, const Tensor& train_y, const Tensor& test_x,
                                std::int64_t batch_size) {
  auto share = [](const Tensor& t, const char* name) {
    if (!t.defined())
      throw ValueError(std::string("make_resident_data: ") + name + " is an undefined tensor");
    if (!is_float(t.dtype()))
      throw TypeError(std::string("make_resident_data: ") + name + " is " + t.describe() +
                      ", the model needs float32 (float64 is converted)");
    return shared(as_float32(t), name);  // shared() copies
  };
  ResidentData d;
  d.train_x = share(train_x, "trX");
  d.train_y = share(train_y, "trY");
  if (test_x.defined()) d.test_x = share(test_x, "teX");
  d.batch_size = batch_size;
  return d;
}

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

  // The resident functions first, so that their compile time (Function::compile_seconds)
  // is measured with a cold kernel cache, not after the input path warmed it.
  ResidentData data;
  Variable index;
  std::int64_t n_batches = 0;
  std::optional<Function> train_index, predict_test;
  if (options.resident) {
    data = *options.resident;
    check_resident(data.train_x, "train_x", options.n_in, "examples");
    check_resident(data.train_y, "train_y", options.n_out, "one-hot targets");
    const std::int64_t n = data.train_x.type().shape[0];
    if (data.train_y.type().shape[0] != n)
      throw ShapeError("build_softmax_regression: ResidentData.train_x holds " + std::to_string(n) +
                       " examples but train_y " + std::to_string(data.train_y.type().shape[0]) +
                       " targets");
    if (data.batch_size <= 0 || data.batch_size > n)
      throw ValueError("build_softmax_regression: ResidentData.batch_size must be in [1, " +
                       std::to_string(n) + "] (the training examples), got " +
                       std::to_string(data.batch_size));
    if (data.test_x) check_resident(data.test_x, "test_x", options.n_in, "examples");
    n_batches = n / data.batch_size;

    // Theano's givens={X: trX[i*bs:(i+1)*bs], Y: trY[i*bs:(i+1)*bs]}.
    index = lscalar("i");
    const std::int64_t bs = data.batch_size;
    Givens givens = {{X, subtensor(data.train_x, {Slice(index * bs, (index + 1) * bs)})},
                     {Y, subtensor(data.train_y, {Slice(index * bs, (index + 1) * bs)})}};
    FunctionOptions o = train_opts;
    o.name = data.return_cost ? "train_index" : "train_index_updates_only";
    std::vector<Variable> outs;
    if (data.return_cost) outs.push_back(cost);
    std::vector<std::function<Function()>> jobs = {
        [=] { return function({index}, outs, updates, givens, o); }};
    if (data.test_x) {
      FunctionOptions po = o;
      po.name = "predict_test";
      jobs.push_back([=] { return function({}, {y_pred}, {}, {{X, data.test_x}}, po); });
    }
    std::vector<Function> fs = compile_all(options.backend, std::move(jobs));
    train_index = std::move(fs[0]);
    if (fs.size() > 1) predict_test = std::move(fs[1]);
  }

  std::vector<Function> fs =
      compile_all(options.backend, {[=] {
                                      return function({X, Y}, {cost}, updates, train_opts);
                                    },
                                    [=] { return function({X}, {y_pred}, {}, predict_opts); }});
  Function train = std::move(fs[0]), predict = std::move(fs[1]);
  return SoftmaxRegression{.X = X,
                           .Y = Y,
                           .w = w,
                           .py_x = py_x,
                           .y_pred = y_pred,
                           .cost = cost,
                           .train = std::move(train),
                           .predict = std::move(predict),
                           .data = data,
                           .index = index,
                           .n_batches = n_batches,
                           .train_index = std::move(train_index),
                           .predict_test = std::move(predict_test)};
}

float SoftmaxRegression::train_step(const Tensor& x, const Tensor& y_onehot) {
  return train({x, y_onehot})[0].item<float>();
}

Tensor SoftmaxRegression::predict_labels(const Tensor& x) { return predict({x})[0]; }

float SoftmaxRegression::train_batch(std::int64_t i) {
  const Tensor cost = train_batch_cost(i);
  return cost.defined() ? cost.item<float>() : std::numeric_limits<float>::quiet_NaN();
}

Tensor SoftmaxRegression::train_batch_cost(std::int64_t i) {
  if (!train_index)
    throw ValueError(
        "SoftmaxRegression::train_batch: the model was built without resident data "
        "(SoftmaxRegressionOptions::resident); use train_step");
  // Out of range, the slice of the shared set would be short or empty (numpy semantics) and
  // the step would silently train on it.
  if (i < 0 || i >= n_batches)
    throw ValueError("SoftmaxRegression::train_batch: minibatch " + std::to_string(i) +
                     " is out of range: " + data.train_x.describe() + " holds " +
                     std::to_string(n_batches) + " minibatches of " +
                     std::to_string(data.batch_size) + " (valid: 0.." +
                     std::to_string(n_batches - 1) + ")");
  auto out = (*train_index)({Tensor::scalar(static_cast<double>(i), Dtype::Int64)});
  return out.empty() ? Tensor() : out[0];
}

Tensor SoftmaxRegression::predict_test_labels() {
  if (!predict_test)
    throw ValueError(
        "SoftmaxRegression::predict_test_labels: the model has no resident test set "
        "(ResidentData::test_x); use predict_labels");
  return (*predict_test)({})[0];
}

void SoftmaxRegression::set_train_data(const Tensor& x, const Tensor& y_onehot) {
  if (!train_index)
    throw ValueError(
        "SoftmaxRegression::set_train_data: the model was built without resident "
        "data (SoftmaxRegressionOptions::resident)");
  for (auto [t, v, what] : {std::tuple{&x, &data.train_x, "examples"},
                            std::tuple{&y_onehot, &data.train_y, "targets"}}) {
    if (!t->defined())
      throw ValueError(std::string("SoftmaxRegression::set_train_data: the ") + what +
                       " are an undefined tensor");
    if (t->shape() != v->type().shape)
      throw ShapeError(std::string("SoftmaxRegression::set_train_data: the new ") + what + " are " +
                       t->describe() + ", but " + v->describe() + " holds " +
                       shape_str(v->type().shape) + " (the shape cannot change)");
    if (!is_float(t->dtype()))
      throw TypeError(std::string("SoftmaxRegression::set_train_data: the new ") + what + " are " +
                      t->describe() + ", the model needs float32 (float64 is converted)");
  }
  data.train_x.set_value(as_float32(x));  // set_value copies
  data.train_y.set_value(as_float32(y_onehot));
}

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
