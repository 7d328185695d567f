// Core: graph construction, grad, function() semantics, givens, rewrites, printing, errors.
#include <doctest/doctest.h>

#include <cmath>
#include <thea/thea.hpp>

#include "test_util.hpp"

using namespace thea;
using namespace thea::testing;

TEST_CASE("variables record name, type and creation site") {
  auto X = fmatrix("X");
  CHECK(X.name() == "X");
  CHECK(X.dtype() == Dtype::Float32);
  CHECK(X.ndim() == 2);
  CHECK(X.type().str() == "fmatrix");
  CHECK(X.node()->site.file == "test_core.cpp");
  CHECK(X.describe().find("test_core.cpp:") != std::string::npos);
  auto v = lvector("idx");
  CHECK(v.dtype() == Dtype::Int64);
  CHECK(dscalar().ndim() == 0);
}

TEST_CASE("float literals adopt the tensor's float type") {
  auto g = fmatrix("g");
  CHECK((g * 0.05).dtype() == Dtype::Float32);
  CHECK((0.05 * g).dtype() == Dtype::Float32);
  CHECK((g - g * 0.05).dtype() == Dtype::Float32);
}

TEST_CASE("function computes outputs and applies updates after all outputs") {
  auto x = dvector("x");
  auto s = shared(Tensor::from_list({1.0, 2.0}, Dtype::Float64), "s");
  auto t = shared(Tensor::from_list({10.0, 20.0}, Dtype::Float64), "t");
  // Both updates read the values from before the call (a swap).
  auto f = function({x}, {s + x}, {{s, t}, {t, s}}, ref());
  auto out = f({Tensor::from_list({0.5, 0.5}, Dtype::Float64)});
  CHECK(out[0].to_vector() == std::vector<double>{1.5, 2.5});
  CHECK(s.get_value().to_vector() == std::vector<double>{10, 20});
  CHECK(t.get_value().to_vector() == std::vector<double>{1, 2});
  f({Tensor::from_list({0.0, 0.0}, Dtype::Float64)});
  CHECK(s.get_value().to_vector() == std::vector<double>{1, 2});
}

TEST_CASE("outputs never alias shared state") {
  auto s = shared(Tensor::from_list({1.0, 2.0}, Dtype::Float64), "s");
  auto f = function({}, {s}, {{s, s * 2.0}}, ref());
  Tensor before = f({})[0];
  CHECK(before.to_vector() == std::vector<double>{1, 2});
  CHECK(s.get_value().to_vector() == std::vector<double>{2, 4});
}

TEST_CASE("grad of a simple expression and a Hessian-vector product") {
  auto x = dvector("x");
  auto cost = sum(x * x * x);  // d/dx = 3x^2, Hessian = diag(6x)
  auto g = grad(cost, x);
  auto v = dvector("v");
  auto hv = grad(sum(g * v), x);
  auto f = function({x, v}, {g, hv}, {}, ref());
  auto out = f({Tensor::from_list({1.0, -2.0, 3.0}, Dtype::Float64),
                Tensor::from_list({1.0, 1.0, 2.0}, Dtype::Float64)});
  CHECK(out[0].to_vector() == std::vector<double>{3, 12, 27});
  CHECK(out[1].to_vector() == std::vector<double>{6, -12, 36});
}

TEST_CASE("grad errors: non-scalar cost, disconnected input, option for zeros") {
  auto x = dvector("x");
  auto y = dvector("y");
  CHECK(error_of([&] { grad(x * 2.0, x); }).find("must be a scalar") != std::string::npos);
  std::string msg = error_of([&] { grad(sum(x), y); });
  CHECK(msg.find("does not depend on y") != std::string::npos);
  auto gy = grad(sum(x), y, {.disconnected_inputs = Disconnected::Ignore});
  auto f = function({x, y}, {gy}, {}, ref());
  auto out =
      f({Tensor::from_list({1.0}, Dtype::Float64), Tensor::from_list({5.0}, Dtype::Float64)});
  CHECK(out[0].to_vector() == std::vector<double>{0});
  // argmax carries no gradient
  CHECK(error_of([&] { grad(sum(cast(argmax(x), Dtype::Float64)), x); }).find("does not depend") !=
        std::string::npos);
}

TEST_CASE("verify_grad accepts a correct gradient") {
  Tensor a = Tensor::random_normal({3, 4}, 0, 1, 1, Dtype::Float64);
  Tensor b = Tensor::random_normal({1, 4}, 0, 1, 2, Dtype::Float64);
  verify_grad([](const std::vector<Variable>& v) { return sum(tanh(v[0] * v[1]) + v[1]); }, {a, b});
}

TEST_CASE("function input checks name the input") {
  auto X = fmatrix("X");
  auto f = function({X}, {sum(X)}, {}, ref());
  std::string msg = error_of([&] { f({Tensor::zeros({2}, Dtype::Float32)}); });
  CHECK(msg.find("X") != std::string::npos);
  CHECK(msg.find("rank 2") != std::string::npos);
  msg = error_of([&] { f({Tensor::zeros({2, 2}, Dtype::Float64)}); });
  CHECK(msg.find("allow_input_downcast") != std::string::npos);
  FunctionOptions downcast = ref();
  downcast.allow_input_downcast = true;
  auto g = function({X}, {sum(X)}, {}, {}, downcast);
  CHECK(g({Tensor::ones({2, 2}, Dtype::Float64)})[0].item<float>() == 4.0f);
  msg = error_of([&] { f({}); });
  CHECK(msg.find("takes 1 inputs, got 0") != std::string::npos);
  auto Y = fmatrix("Y");
  msg = error_of([&] { function({X}, {X + Y}, {}, ref()); });
  CHECK(msg.find("Y") != std::string::npos);
  CHECK(msg.find("not in the inputs list") != std::string::npos);
}

TEST_CASE("update type errors name the shared variable") {
  auto w = shared(Tensor::zeros({3}, Dtype::Float32), "w");
  auto x = dvector("x");
  std::string msg = error_of([&] { function({x}, {}, {{w, x}}, ref()); });
  CHECK(msg.find("w") != std::string::npos);
  CHECK(msg.find("type") != std::string::npos);
}

TEST_CASE("shared get_value/set_value check shape and dtype") {
  auto w = shared(Tensor::zeros({2, 3}), "w");
  CHECK_THROWS_AS(w.set_value(Tensor::zeros({3, 2})), ShapeError);
  CHECK_THROWS_AS(w.set_value(Tensor::zeros({2, 3}, Dtype::Float64)), TypeError);
  w.set_value(Tensor::ones({2, 3}));
  CHECK(w.get_value().to_vector() == std::vector<double>(6, 1.0));
}

TEST_CASE("givens substitute a minibatch of a shared dataset") {
  Tensor data = Tensor::arange(12, Dtype::Float64).reshape({6, 2});
  auto trX = shared(data, "trX");
  auto X = dmatrix("X");
  auto i = lscalar("i");
  const std::int64_t bs = 2;
  auto f = function({i}, {sum(X)}, {}, {{X, subtensor(trX, {Slice(i * bs, (i + 1) * bs)})}}, ref());
  CHECK(f({Tensor::scalar(0, Dtype::Int64)})[0].item<double>() == 0 + 1 + 2 + 3);
  CHECK(f({Tensor::scalar(2, Dtype::Int64)})[0].item<double>() == 8 + 9 + 10 + 11);
}

TEST_CASE("merge and constant folding rewrite the graph") {
  auto x = dvector("x");
  auto a = exp(x) + exp(x);  // two equal exp nodes
  auto c = Variable(Tensor::from_list({2.0}, Dtype::Float64)) * 3.0;
  auto f = function({x}, {a * c}, {}, ref());
  int exps = 0, muls = 0;
  for (const NodePtr& n : f.graph().toposort()) {
    if (n->kind != NodeKind::Apply) continue;
    if (n->op->name() == "exp") ++exps;
    if (n->op->name() == "mul") ++muls;
  }
  CHECK(exps == 1);
  CHECK(muls == 1);  // 2*3 folded to a constant
  auto out = f({Tensor::from_list({0.0}, Dtype::Float64)});
  CHECK(out[0].item<double>() == doctest::Approx(12.0));
  FunctionOptions plain = ref();
  plain.exclude = {"merge", "constant_folding"};
  auto g = function({x}, {a * c}, {}, {}, plain);
  int exps2 = 0;
  for (const NodePtr& n : g.graph().toposort())
    if (n->kind == NodeKind::Apply && n->op->name() == "exp") ++exps2;
  CHECK(exps2 == 2);
}

TEST_CASE("rewrites do not modify the user's graph") {
  auto x = dvector("x");
  auto y = exp(x) + exp(x);
  auto before = debugprint(y);
  function({x}, {y}, {}, ref());
  CHECK(debugprint(y) == before);
}

TEST_CASE("debugprint and dot export") {
  auto X = fmatrix("X");
  auto w = shared(Tensor::zeros({784, 10}), "w");
  auto py_x = nnet::softmax(dot(X, w));
  std::string s = debugprint(py_x);
  CHECK(s.find("softmax") != std::string::npos);
  CHECK(s.find("dot") != std::string::npos);
  CHECK(s.find(" |X [id") != std::string::npos);
  std::string d = to_dot({py_x});
  CHECK(d.find("digraph") == 0);
  CHECK(d.find("softmax") != std::string::npos);
  auto f = function({X}, {py_x}, {}, ref());
  CHECK(f.debugprint().find("schedule") != std::string::npos);
}

TEST_CASE("the seed's model trains on synthetic data") {
  // Two well-separated blobs; the tutorial's graph line for line.
  const std::int64_t n = 64, d = 8, k = 2;
  Tensor xs = Tensor::random_normal({n, d}, 0, 1, 3);
  Tensor ys = Tensor::zeros({n, k});
  for (std::int64_t r = 0; r < n; ++r) {
    const int cls = r % 2;
    ys.set({r, cls}, 1.0);
    xs.set({r, 0}, xs.get({r, 0}) + (cls ? 3.0 : -3.0));
  }
  auto X = fmatrix("X");
  auto Y = fmatrix("Y");
  auto w = shared(random_normal({d, k}, 0.0, 0.01, 42), "w");
  auto py_x = nnet::softmax(dot(X, w));
  auto y_pred = argmax(py_x, 1);
  auto cost = mean(nnet::categorical_crossentropy(py_x, Y));
  auto g = grad(cost, w);
  auto train = function({X, Y}, {cost}, {{w, w - g * 0.05}}, ref());
  auto predict = function({X}, {y_pred}, {}, ref());
  float first = train({xs, ys})[0].item<float>();
  float last = first;
  for (int i = 0; i < 50; ++i) last = train({xs, ys})[0].item<float>();
  CHECK(last < first * 0.5f);
  Tensor labels = predict({xs})[0];
  CHECK(labels.dtype() == Dtype::Int64);
  CHECK(labels.shape() == Shape{n});
  int correct = 0;
  for (std::int64_t r = 0; r < n; ++r) correct += labels.at<std::int64_t>({r}) == r % 2;
  CHECK(correct >= n - 2);
}
