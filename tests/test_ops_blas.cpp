// dot and outer: forward values in every rank combination, dtype promotion, the float32
// oracle's double accumulation, static shapes, error messages and gradients.
#include <doctest/doctest.h>

#include <thea/ops/ops.hpp>
#include <thea/thea.hpp>

#include "test_util.hpp"

using namespace thea;
using namespace thea::testing;

TEST_CASE("dot: matrix · matrix, matrix · vector, vector · matrix, vector · vector") {
  Tensor A = Tensor::from_list({{1, 2, 3}, {4, 5, 6}});     // (2, 3)
  Tensor B = Tensor::from_list({{1, 0}, {0, 1}, {2, -1}});  // (3, 2)
  Tensor u = Tensor::from_list({1, -1, 2});                 // (3)
  Tensor v = Tensor::from_list({3, 4});                     // (2)
  Dot op;
  Tensor AB = op.perform({A, B});
  CHECK(AB.shape() == Shape{2, 2});
  CHECK(AB.dtype() == Dtype::Float32);
  CHECK(AB.to_vector() == V{7, -1, 16, -1});
  Tensor Au = op.perform({A, u});
  CHECK(Au.shape() == Shape{2});
  CHECK(Au.to_vector() == V{5, 11});
  Tensor vA = op.perform({v, A});
  CHECK(vA.shape() == Shape{3});
  CHECK(vA.to_vector() == V{19, 26, 33});
  Tensor uu = op.perform({u, u});
  CHECK(uu.shape() == Shape{});
  CHECK(uu.item<double>() == 6);

  // The same through a compiled graph.
  auto X = fmatrix("X");
  auto Y = fmatrix("Y");
  auto x = fvector("x");
  CHECK(eval({X, Y}, dot(X, Y), {A, B}).to_vector() == V{7, -1, 16, -1});
  CHECK(eval({X, x}, dot(X, x), {A, u}).to_vector() == V{5, 11});
  CHECK(eval({x, X}, dot(x, X), {v, A}).to_vector() == V{19, 26, 33});
  CHECK(eval({x}, dot(x, x), {u}).item<double>() == 6);
}

TEST_CASE("dot: empty inner dimension gives zeros, empty outer dimension gives empty") {
  Dot op;
  Tensor z = op.perform({Tensor::zeros({2, 0}), Tensor::zeros({0, 3})});
  CHECK(z.shape() == Shape{2, 3});
  CHECK(z.to_vector() == V(6, 0.0));
  CHECK(op.perform({Tensor::zeros({0, 4}), Tensor::zeros({4, 3})}).shape() == Shape{0, 3});
}

TEST_CASE("dot: strided (transposed) operands") {
  Tensor A = Tensor::from_list({{1, 2, 3}, {4, 5, 6}}, Dtype::Float64);
  Tensor At = A.permute({1, 0});  // (3, 2) view, not contiguous
  REQUIRE_FALSE(At.is_contiguous());
  Dot op;
  // At · A = A^T A
  CHECK(op.perform({At, A}).to_vector() == V{17, 22, 27, 22, 29, 36, 27, 36, 45});
  Tensor col = A.slice(1, 1, 2).reshape({2});  // column 1 as a strided vector
  CHECK(op.perform({At, col}).to_vector() == V{22, 29, 36});
}

TEST_CASE("dot: output dtype is the promotion of the inputs") {
  Dot op;
  Tensor a32 = Tensor::from_vector<float>({1, 2}, {1, 2});
  Tensor b64 = Tensor::from_vector<double>({3, 4}, {2, 1});
  Tensor r = op.perform({a32, b64});
  CHECK(r.dtype() == Dtype::Float64);
  CHECK(r.item<double>() == 11);
  Tensor i32 = Tensor::from_vector<std::int32_t>({1, 2}, {1, 2});
  Tensor i64 = Tensor::from_vector<std::int64_t>({3, 4}, {2, 1});
  Tensor ri = op.perform({i32, i64});
  CHECK(ri.dtype() == Dtype::Int64);
  CHECK(ri.item<std::int64_t>() == 11);
  CHECK(dot(imatrix("a"), lmatrix("b")).dtype() == Dtype::Int64);
  CHECK(dot(fmatrix("a"), dmatrix("b")).dtype() == Dtype::Float64);
  CHECK(dot(fvector("a"), fvector("b")).dtype() == Dtype::Float32);
}

TEST_CASE("dot: the float32 oracle accumulates in double") {
  // Summed left to right in float32, 1e8 + 1 rounds back to 1e8 and the result is 0.
  Tensor a = Tensor::from_list({1e8, 1, -1e8}, Dtype::Float32);
  Tensor b = Tensor::from_list({1, 1, 1}, Dtype::Float32);
  Tensor r = Dot().perform({a, b});
  CHECK(r.dtype() == Dtype::Float32);
  CHECK(r.item<float>() == 1.0f);
}

TEST_CASE("dot: static shapes") {
  auto X = tensor(Dtype::Float32, Shape{-1, 784}, "X");
  auto w = shared(Tensor::zeros({784, 10}), "w");
  CHECK(dot(X, w).type().shape == Shape{-1, 10});
  CHECK(dot(w.T(), X.T()).type().shape == Shape{10, -1});
  CHECK(dot(fvector("v"), w).type().shape == Shape{10});
  CHECK(dot(w, fvector("v")).type().shape == Shape{784});
  CHECK(dot(fvector("a"), fvector("b")).type().shape == Shape{});
}

TEST_CASE("dot: errors name the op, both variables and their shapes") {
  auto X = tensor(Dtype::Float32, Shape{128, 784}, "X");
  auto w = shared(Tensor::zeros({785, 10}), "w");
  Variable bad;
  std::string msg = error_of([&] { bad = dot(X, w); });
  CHECK(contains(msg, "[dot]"));
  CHECK(contains(msg, "X"));
  CHECK(contains(msg, "w"));
  CHECK(contains(msg, "(128, 784)"));
  CHECK(contains(msg, "(785, 10)"));
  CHECK(contains(msg, "test_ops_blas.cpp"));
  CHECK_THROWS_AS(dot(X, w), ShapeError);

  auto T3 = ftensor3("T3");
  msg = error_of([&] { bad = dot(T3, w); });
  CHECK(contains(msg, "[dot]"));
  CHECK(contains(msg, "T3"));
  CHECK(contains(msg, "tensor3"));
  CHECK_THROWS_AS(dot(T3, w), TypeError);
  CHECK_THROWS_AS(dot(fscalar("s"), w), TypeError);

  // Unknown sizes: the mismatch surfaces at run time, still naming the node.
  auto A = fmatrix("A");
  auto B = fmatrix("B");
  Function f = function({A, B}, {dot(A, B)}, {}, {}, ref());
  msg = error_of([&] { f({Tensor::zeros({2, 3}), Tensor::zeros({4, 5})}); });
  CHECK(contains(msg, "[dot]"));
  CHECK(contains(msg, "(2, 3)"));
  CHECK(contains(msg, "(4, 5)"));
  CHECK_THROWS_AS(f({Tensor::zeros({2, 3}), Tensor::zeros({4, 5})}), ShapeError);
}

TEST_CASE("outer: forward, static shape and errors") {
  auto a = fvector("a");
  auto b = fvector("b");
  Tensor r = eval({a, b}, outer(a, b), {Tensor::from_list({1, 2}), Tensor::from_list({3, 4, 5})});
  CHECK(r.shape() == Shape{2, 3});
  CHECK(r.to_vector() == V{3, 4, 5, 6, 8, 10});
  auto s2 = tensor(Dtype::Float32, Shape{2}, "s2");
  auto s3 = tensor(Dtype::Float32, Shape{3}, "s3");
  CHECK(outer(s2, s3).type().shape == Shape{2, 3});
  std::string msg = error_of([&] { outer(fmatrix("M"), b); });
  CHECK(contains(msg, "[outer]"));
  CHECK(contains(msg, "M"));
  CHECK(contains(msg, "two vectors"));
  CHECK_THROWS_AS(outer(fmatrix("M"), b), TypeError);
}

TEST_CASE("dot and outer: finite-difference gradients") {
  auto fn = [](const std::vector<Variable>& v) { return dot(v[0], v[1]); };
  Tensor M34 = rnd({3, 4}, 1);
  Tensor M45 = rnd({4, 5}, 2);
  Tensor M53 = rnd({5, 3}, 7);
  Tensor v4 = rnd({4}, 3);
  Tensor v3 = rnd({3}, 4);
  CHECK_NOTHROW(verify_grad(fn, {M34, M45}));
  CHECK_NOTHROW(verify_grad(fn, {M34, v4}));
  CHECK_NOTHROW(verify_grad(fn, {v3, M34}));
  CHECK_NOTHROW(verify_grad(fn, {v4, v4}));
  CHECK_NOTHROW(
      verify_grad([](const std::vector<Variable>& v) { return outer(v[0], v[1]); }, {v3, v4}));
  // A chain, so gradients flow through dot's vjp outputs into another dot.
  CHECK_NOTHROW(verify_grad(
      [](const std::vector<Variable>& v) { return dot(dot(v[0], v[1]), v[2]); }, {M34, M45, M53}));
}

TEST_CASE("dot: integer operands get no gradient, float ones do") {
  auto a = tensor(Dtype::Int64, Shape{2, 3}, "a");
  auto b = tensor(Dtype::Float64, Shape{3, 2}, "b");
  std::vector<Variable> g = Dot().vjp({a, b}, dot(a, b), tensor(Dtype::Float64, Shape{2, 2}, "g"));
  CHECK_FALSE(g[0]);
  REQUIRE(g[1]);
  CHECK(g[1].type().shape == Shape{3, 2});
}

TEST_CASE("dot: second derivatives (the gradient graph is differentiable)") {
  auto hess = [](const std::vector<Variable>& v) { return grad(sum(sqr(dot(v[0], v[1]))), v[0]); };
  CHECK_NOTHROW(verify_grad(hess, {rnd({2, 3}, 11), rnd({3, 2}, 12)}));
  auto hess_vec = [](const std::vector<Variable>& v) {
    return grad(sum(sqr(dot(v[0], v[1]))), v[1]);
  };
  CHECK_NOTHROW(verify_grad(hess_vec, {rnd({2, 3}, 13), rnd({3}, 14)}));
}
