// Shape ops: dimshuffle / transpose / .T, reshape / flatten, concatenate / stack.
// Forward values, views sharing storage, static shapes, errors and gradients.
#include <doctest/doctest.h>

#include <functional>
#include <thea/ops/fused.hpp>
#include <thea/ops/ops.hpp>
#include <thea/thea.hpp>

#include "test_util.hpp"

using namespace thea;
using namespace thea::testing;

// ---------------------------------------------------------------- dimshuffle

TEST_CASE("dimshuffle: permutes axes as a zero-copy view") {
  Tensor x = arange_f64({2, 3, 4});
  DimShuffle op({2, 0, 1});
  Tensor y = op.perform({x});
  CHECK(y.shape() == Shape{4, 2, 3});
  CHECK(y.storage() == x.storage());
  for (std::int64_t i = 0; i < 2; ++i)
    for (std::int64_t j = 0; j < 3; ++j)
      for (std::int64_t k = 0; k < 4; ++k) CHECK(y.get({k, i, j}) == x.get({i, j, k}));
  // Writes through the input show in the view: it really aliases.
  x.set({1, 2, 3}, -5);
  CHECK(y.get({3, 1, 2}) == -5);
}

TEST_CASE("dimshuffle: adds and drops broadcastable axes") {
  Tensor x = Tensor::from_list({1, 2, 3}, Dtype::Float64);
  Tensor col = DimShuffle({0, -1}).perform({x});
  CHECK(col.shape() == Shape{3, 1});
  CHECK(col.to_vector() == V{1, 2, 3});
  CHECK(col.storage() == x.storage());
  Tensor row = DimShuffle({-1, 0, -1}).perform({x});
  CHECK(row.shape() == Shape{1, 3, 1});
  CHECK(row.to_vector() == V{1, 2, 3});
  // Dropping the size-1 axes again.
  Tensor back = DimShuffle({1}).perform({row});
  CHECK(back.shape() == Shape{3});
  CHECK(back.to_vector() == V{1, 2, 3});

  auto v = fvector("v");
  CHECK(dimshuffle(v, {-1, 0}).type().shape == Shape{1, -1});
  auto b = tensor(Dtype::Float32, Shape{1, 5}, "b");
  CHECK(dimshuffle(b, {1}).type().shape == Shape{5});
  CHECK(dimshuffle(b, {1, -1, 0}).type().shape == Shape{5, 1, 1});
  CHECK(eval({b}, dimshuffle(b, {1}), {Tensor::from_vector<float>({1, 2, 3, 4, 5}, {1, 5})})
            .to_vector() == V{1, 2, 3, 4, 5});
}

TEST_CASE("dimshuffle: errors") {
  auto X = tensor(Dtype::Float32, Shape{-1, 3}, "X");
  std::string msg = error_of([&] { dimshuffle(X, {0}); });
  CHECK(contains(msg, "[dimshuffle{0}]"));
  CHECK(contains(msg, "X"));
  CHECK(contains(msg, "(?, 3)"));
  CHECK(contains(msg, "broadcastable"));
  CHECK(contains(msg, "test_ops_shape.cpp"));
  CHECK_THROWS_AS(dimshuffle(X, {0}), ValueError);
  CHECK(contains(error_of([&] { dimshuffle(X, {0, 0}); }), "twice"));
  CHECK(contains(error_of([&] { dimshuffle(X, {0, 2}); }), "axis"));
  CHECK_THROWS_AS(dimshuffle(X, {1, -2}), ValueError);
  // An axis of unknown size may still be 1 at run time; a larger size is an error then.
  DimShuffle drop({1});
  CHECK_THROWS_AS(drop.infer_shape({{2, 3}}, {}), ShapeError);
  CHECK(drop.infer_shape({{1, 3}}, {}) == Shape{3});
}

TEST_CASE("transpose and .T") {
  Tensor m = Tensor::from_list({{1, 2, 3}, {4, 5, 6}});
  auto M = fmatrix("M");
  Tensor t = eval({M}, M.T(), {m});
  CHECK(t.shape() == Shape{3, 2});
  CHECK(t.to_vector() == V{1, 4, 2, 5, 3, 6});
  CHECK(eval({M}, transpose(M), {m}).to_vector() == V{1, 4, 2, 5, 3, 6});
  auto T3 = tensor(Dtype::Float32, Shape{2, 3, 4}, "T3");
  CHECK(T3.T().type().shape == Shape{4, 3, 2});
  CHECK(transpose(T3, std::vector<int>{1, 0, 2}).type().shape == Shape{3, 2, 4});
  CHECK(transpose(T3, std::vector<int>{-1, 0, 1}).type().shape == Shape{4, 2, 3});
  auto v = fvector("v");
  CHECK(v.T().type().shape == Shape{-1});  // a vector's transpose is itself
  CHECK(fscalar("s").T().ndim() == 0);
  std::string msg = error_of([&] { transpose(T3, std::vector<int>{0, 0, 1}); });
  CHECK(contains(msg, "[transpose]"));
  CHECK(contains(msg, "T3"));
  CHECK(contains(msg, "permutation"));
  CHECK_THROWS_AS(transpose(T3, std::vector<int>{0, 1}), ValueError);
}

TEST_CASE("dimshuffle and transpose: gradients") {
  CHECK_NOTHROW(
      verify_grad([](const std::vector<Variable>& v) { return v[0].T(); }, {rnd({3, 4}, 1)}));
  CHECK_NOTHROW(verify_grad(
      [](const std::vector<Variable>& v) {
        return transpose(v[0], std::vector<int>{2, 0, 1});
      },
      {rnd({2, 3, 4}, 2)}));
  CHECK_NOTHROW(verify_grad(
      [](const std::vector<Variable>& v) {
        return dimshuffle(v[0], {-1, 1, -1, 0});
      },
      {rnd({3, 2}, 3)}));
  CHECK_NOTHROW(verify_grad(
      [](const std::vector<Variable>& v) {
        return dimshuffle(v[0], {2, 0});
      },
      {rnd({3, 1, 2}, 4)}));
  // Broadcasting through a new axis: the gradient sums over it.
  CHECK_NOTHROW(verify_grad(
      [](const std::vector<Variable>& v) {
        return dimshuffle(v[0], {0, -1}) * v[1];
      },
      {rnd({3}, 5), rnd({3, 4}, 6)}));
}

TEST_CASE("dimshuffle: vjp removes new axes whose size the gradient's type does not know") {
  auto x = tensor(Dtype::Float64, Shape{3}, "x");
  DimShuffle op({0, -1});
  Variable y = dimshuffle(x, {0, -1});
  auto g = dmatrix("g");  // (?, ?): the new axis is not statically 1
  std::vector<Variable> gx = op.vjp({x}, y, g);
  REQUIRE(gx[0]);
  CHECK(gx[0].ndim() == 1);
  auto gin = dmatrix("gin");
  Tensor r = eval({gin}, op.vjp({x}, y, gin)[0], {Tensor::from_vector<double>({1, 2, 3}, {3, 1})});
  CHECK(r.to_vector() == V{1, 2, 3});
}

// ---------------------------------------------------------------- reshape / flatten

TEST_CASE("reshape: fixed, inferred and copied sizes") {
  Tensor x = arange_f64({2, 3, 4});
  CHECK(Reshape({4, 6}).perform({x}).shape() == Shape{4, 6});
  CHECK(Reshape({-1, 2}).perform({x}).shape() == Shape{12, 2});
  CHECK(Reshape({0, -1}).perform({x}).shape() == Shape{2, 12});
  CHECK(Reshape({0, 0, 2, 2}).perform({x}).shape() == Shape{2, 3, 2, 2});
  CHECK(Reshape({-1}).perform({x}).shape() == Shape{24});
  Tensor y = Reshape({4, 6}).perform({x});
  CHECK(y.storage() == x.storage());  // contiguous input: a view
  CHECK(y.to_vector() == x.to_vector());
  // A non-contiguous input is copied in row-major order of its logical layout.
  Tensor xt = x.permute({2, 1, 0});
  Tensor z = Reshape({-1}).perform({xt});
  CHECK(z.to_vector() == xt.contiguous().to_vector());
  // To a scalar and back.
  Tensor one = Tensor::from_list({7}, Dtype::Float64);
  CHECK(Reshape({}).perform({one}).shape() == Shape{});
  CHECK(Reshape({-1}).perform({Reshape({}).perform({one})}).shape() == Shape{1});
}

TEST_CASE("reshape: static shapes keep what is known") {
  auto X = tensor(Dtype::Float32, Shape{-1, 28, 28}, "X");
  CHECK(reshape(X, {0, -1}).type().shape == Shape{-1, 784});
  CHECK(reshape(X, {0, 784}).type().shape == Shape{-1, 784});
  CHECK(reshape(X, {-1, 784}).type().shape == Shape{-1, 784});
  CHECK(reshape(X, {0, 4, 7, 28}).type().shape == Shape{-1, 4, 7, 28});
  auto S = tensor(Dtype::Float32, Shape{6, 4}, "S");
  CHECK(reshape(S, {-1, 3}).type().shape == Shape{8, 3});
  CHECK(reshape(S, {2, 0, 3}).type().shape == Shape{2, 4, 3});
  CHECK(flatten(X).type().shape == Shape{-1});
  CHECK(flatten(X, 2).type().shape == Shape{-1, 784});
  CHECK(flatten(S, 2).type().shape == Shape{6, 4});
  CHECK(flatten(S).type().shape == Shape{24});
  CHECK(flatten(fscalar("s")).type().shape == Shape{1});
  Tensor x = arange_f64({2, 2, 3});
  auto Xd = dtensor3("Xd");
  CHECK(eval({Xd}, flatten(Xd, 2), {x}).shape() == Shape{2, 6});
  CHECK(eval({Xd}, flatten(Xd, 2), {x}).to_vector() == x.to_vector());
}

TEST_CASE("reshape: errors") {
  auto S = tensor(Dtype::Float32, Shape{6, 4}, "S");
  std::string msg = error_of([&] { reshape(S, {5, -1}); });
  CHECK(contains(msg, "[reshape{(5,-1)}]"));
  CHECK(contains(msg, "S"));
  CHECK(contains(msg, "(6, 4)"));
  CHECK_THROWS_AS(reshape(S, {5, -1}), ShapeError);
  msg = error_of([&] { reshape(S, {5, 5}); });
  CHECK(contains(msg, "25"));
  CHECK(contains(msg, "24"));
  CHECK_THROWS_AS(reshape(S, {-1, -1}), ValueError);
  CHECK_THROWS_AS(reshape(S, {-2, 12}), ValueError);
  CHECK_THROWS_AS(reshape(S, {4, 0, 0}), ValueError);  // 0 copies axis 2, which S lacks
  CHECK_THROWS_AS(reshape(S, {0, -1, 0}), ValueError);
  CHECK_THROWS_AS(flatten(S, 3), ValueError);
  CHECK_THROWS_AS(flatten(S, 0), ValueError);
  // Unknown sizes: checked at run time.
  auto M = fmatrix("M");
  Function f = function({M}, {reshape(M, {-1, 5})}, {}, {}, ref());
  msg = error_of([&] { f({Tensor::zeros({3, 3})}); });
  CHECK(contains(msg, "[reshape"));
  CHECK(contains(msg, "(3, 3)"));
  CHECK_THROWS_AS(f({Tensor::zeros({3, 3})}), ShapeError);
  CHECK(f({Tensor::zeros({5, 2})})[0].shape() == Shape{2, 5});
}

TEST_CASE("reshape: to another variable's runtime shape (the gradient form)") {
  auto x = dmatrix("x");
  auto like = dtensor3("like");
  Variable r(make_apply(std::make_shared<Reshape>(Shape{}), {x.node(), like.node()},
                        std::source_location::current()));
  CHECK(r.ndim() == 3);
  Tensor out = eval({x, like}, r, {arange_f64({2, 6}), Tensor::zeros({3, 2, 2}, Dtype::Float64)});
  CHECK(out.shape() == Shape{3, 2, 2});
  CHECK(out.to_vector() == arange_f64({12}).to_vector());
  CHECK_THROWS_AS(
      eval({x, like}, r, {arange_f64({2, 6}), Tensor::zeros({3, 2, 3}, Dtype::Float64)}),
      ShapeError);
}

TEST_CASE("reshape and flatten: gradients") {
  CHECK_NOTHROW(verify_grad(
      [](const std::vector<Variable>& v) {
        return reshape(v[0], {3, -1});
      },
      {rnd({2, 6}, 1)}));
  CHECK_NOTHROW(verify_grad(
      [](const std::vector<Variable>& v) {
        return reshape(v[0], {0, 2, -1});
      },
      {rnd({2, 6}, 2)}));
  CHECK_NOTHROW(verify_grad([](const std::vector<Variable>& v) { return flatten(v[0], 2); },
                            {rnd({2, 3, 2}, 3)}));
  // Through a transposed (non-contiguous) value.
  CHECK_NOTHROW(verify_grad([](const std::vector<Variable>& v) { return flatten(v[0].T()); },
                            {rnd({3, 4}, 4)}));
}

// ---------------------------------------------------------------- concatenate / stack

TEST_CASE("concatenate: along any axis, dtypes promoted") {
  Tensor a = Tensor::from_list({{1, 2}, {3, 4}});
  Tensor b = Tensor::from_vector<float>({5, 6}, {1, 2});
  Tensor c = Tensor::from_vector<float>({7, 8}, {2, 1});
  Tensor r0 = Concatenate(0).perform({a, b});
  CHECK(r0.shape() == Shape{3, 2});
  CHECK(r0.to_vector() == V{1, 2, 3, 4, 5, 6});
  Tensor r1 = Concatenate(1).perform({a, c, a});
  CHECK(r1.shape() == Shape{2, 5});
  CHECK(r1.to_vector() == V{1, 2, 7, 1, 2, 3, 4, 8, 3, 4});
  Tensor d = Tensor::from_vector<std::uint8_t>({9, 10}, {1, 2});
  Tensor r2 = Concatenate(0).perform({a, d});
  CHECK(r2.dtype() == Dtype::Float32);
  CHECK(Concatenate(0).perform({a, d.astype(Dtype::Int32)}).dtype() == Dtype::Float64);
  CHECK(r2.to_vector() == V{1, 2, 3, 4, 9, 10});
  // Strided input and an empty piece.
  Tensor r3 = Concatenate(0).perform({a.permute({1, 0}), Tensor::zeros({0, 2})});
  CHECK(r3.to_vector() == V{1, 3, 2, 4});

  auto A = fmatrix("A");
  auto B = fmatrix("B");
  CHECK(eval({A, B}, concatenate({A, B}, -1), {a, a}).to_vector() == V{1, 2, 1, 2, 3, 4, 3, 4});
}

TEST_CASE("concatenate: static shapes") {
  auto A = tensor(Dtype::Float32, Shape{2, 3}, "A");
  auto B = tensor(Dtype::Float32, Shape{4, -1}, "B");
  auto C = tensor(Dtype::Float64, Shape{-1, 3}, "C");
  CHECK(concatenate({A, B}).type().shape == Shape{6, 3});
  CHECK(concatenate({A, B, C}).type().shape == Shape{-1, 3});
  CHECK(concatenate({A, B, C}).dtype() == Dtype::Float64);
  CHECK(concatenate({A, A}, 1).type().shape == Shape{2, 6});
}

TEST_CASE("concatenate: errors") {
  auto A = tensor(Dtype::Float32, Shape{2, 3}, "A");
  auto B = tensor(Dtype::Float32, Shape{2, 4}, "B");
  std::string msg = error_of([&] { concatenate({A, B}, 0); });
  CHECK(contains(msg, "[concatenate{axis=0}]"));
  CHECK(contains(msg, "B"));
  CHECK(contains(msg, "(2, 4)"));
  CHECK(contains(msg, "A"));
  CHECK_THROWS_AS(concatenate({A, B}, 0), ShapeError);
  CHECK_NOTHROW(concatenate({A, B}, 1));
  CHECK_THROWS_AS(concatenate({A, fvector("v")}), TypeError);
  msg = error_of([&] { concatenate({A, B}, 2); });
  CHECK(contains(msg, "[concatenate]"));
  CHECK(contains(msg, "axis 2"));
  CHECK_THROWS_AS(concatenate({A, B}, 2), ValueError);
  CHECK_THROWS_AS(concatenate({}), ValueError);
  CHECK_THROWS_AS(concatenate({fscalar("s")}), ValueError);
  auto M = fmatrix("M");
  auto N = fmatrix("N");
  Function f = function({M, N}, {concatenate({M, N})}, {}, {}, ref());
  msg = error_of([&] { f({Tensor::zeros({1, 2}), Tensor::zeros({1, 3})}); });
  CHECK(contains(msg, "[concatenate"));
  CHECK(contains(msg, "(1, 3)"));
}

TEST_CASE("stack: a new axis anywhere") {
  Tensor a = Tensor::from_list({1, 2, 3});
  Tensor b = Tensor::from_list({4, 5, 6});
  auto x = fvector("x");
  auto y = fvector("y");
  Tensor s0 = eval({x, y}, stack({x, y}), {a, b});
  CHECK(s0.shape() == Shape{2, 3});
  CHECK(s0.to_vector() == V{1, 2, 3, 4, 5, 6});
  Tensor s1 = eval({x, y}, stack({x, y}, 1), {a, b});
  CHECK(s1.shape() == Shape{3, 2});
  CHECK(s1.to_vector() == V{1, 4, 2, 5, 3, 6});
  CHECK(eval({x, y}, stack({x, y}, -1), {a, b}).to_vector() == s1.to_vector());
  auto p = fscalar("p");
  auto q = fscalar("q");
  Tensor s2 = eval({p, q}, stack({p, q, p}), {Tensor::scalar(1), Tensor::scalar(2)});
  CHECK(s2.to_vector() == V{1, 2, 1});
  auto S = tensor(Dtype::Float32, Shape{2, 3}, "S");
  CHECK(stack({S, S, S}, 1).type().shape == Shape{2, 3, 3});
  CHECK_THROWS_AS(stack({S, x}), TypeError);
  CHECK_THROWS_AS(stack({S, S}, 3), ValueError);
}

TEST_CASE("concatenate and stack: gradients") {
  auto cat0 = [](const std::vector<Variable>& v) { return concatenate({v[0], v[1], v[0]}); };
  CHECK_NOTHROW(verify_grad(cat0, {rnd({2, 3}, 1), rnd({1, 3}, 2)}));
  auto cat1 = [](const std::vector<Variable>& v) { return concatenate({v[0], v[1]}, 1); };
  CHECK_NOTHROW(verify_grad(cat1, {rnd({2, 3}, 3), rnd({2, 1}, 4)}));
  auto st = [](const std::vector<Variable>& v) { return stack({v[0], v[1]}, 1); };
  CHECK_NOTHROW(verify_grad(st, {rnd({2, 3}, 5), rnd({2, 3}, 6)}));
}

TEST_CASE("concatenate_grad: forward and its own gradient") {
  Tensor g = arange_f64({5, 2});
  Tensor a = Tensor::zeros({2, 2}, Dtype::Float64);
  Tensor b = Tensor::zeros({3, 2}, Dtype::Float64);
  CHECK(ConcatenateGrad(0, 0).perform({g, a, b}).to_vector() == V{0, 1, 2, 3});
  CHECK(ConcatenateGrad(0, 1).perform({g, a, b}).to_vector() == V{4, 5, 6, 7, 8, 9});
  CHECK_THROWS_AS(ConcatenateGrad(0, 1).perform({g, a, a}), ShapeError);
  // Differentiable again (second derivatives through a concatenation).
  auto piece = [](const std::vector<Variable>& v) {
    return Variable(make_apply(std::make_shared<ConcatenateGrad>(1, 1),
                               {v[0].node(), v[1].node(), v[2].node()},
                               std::source_location::current()));
  };
  CHECK_NOTHROW(verify_grad(piece, {rnd({2, 5}, 7), rnd({2, 2}, 8), rnd({2, 3}, 9)}));
}

TEST_CASE("concatenate_grad: pieces are zero-copy views of the gradient") {
  ConcatenateGrad op0(1, 0), op1(1, 1), rows(0, 1);
  CHECK(op1.traits().view);  // so in-place analyses look through it to g
  CHECK(op1.traits().destroys_input == -1);
  Tensor g = arange_f64({3, 5});
  Tensor a = Tensor::zeros({3, 2}, Dtype::Float64);
  Tensor b = Tensor::zeros({3, 3}, Dtype::Float64);
  Tensor p0 = op0.perform({g, a, b});
  Tensor p1 = op1.perform({g, a, b});
  CHECK(p0.storage() == g.storage());
  CHECK(p1.storage() == g.storage());
  CHECK(p0.shape() == Shape{3, 2});
  CHECK(p0.to_vector() == V{0, 1, 5, 6, 10, 11});
  CHECK(p1.shape() == Shape{3, 3});
  CHECK(p1.to_vector() == V{2, 3, 4, 7, 8, 9, 12, 13, 14});
  // Along axis 0 the piece is a contiguous block of g.
  Tensor r = rows.perform({g, Tensor::zeros({1, 5}, Dtype::Float64), a.reshape({2, 3})});
  CHECK(r.storage() == g.storage());
  CHECK(r.to_vector() == V{5, 6, 7, 8, 9, 10, 11, 12, 13, 14});
  // Writes through g show in the pieces: they really alias.
  g.set({1, 3}, -1);
  CHECK(p1.get({1, 1}) == -1);
  CHECK(r.get({0, 3}) == -1);
  // A piece of nothing (an empty input) is empty.
  Tensor e = ConcatenateGrad(1, 1).perform(
      {g, Tensor::zeros({3, 5}, Dtype::Float64), Tensor::zeros({3, 0}, Dtype::Float64)});
  CHECK(e.shape() == Shape{3, 0});
}

TEST_CASE("concatenate_grad: a gemm does not update storage that a piece still shows") {
  // w stands in for the gradient: a piece of it is an output and feeds the update of w.
  // Were w overwritten in place, the piece (a view of w) would change under its readers.
  auto A = dmatrix("A"), X = dmatrix("X"), x0 = dmatrix("x0"), x1 = dmatrix("x1");
  const Tensor w0 = rnd({4, 3}, 21);
  auto w = shared(w0, "w");
  const Variable piece(make_apply(std::make_shared<ConcatenateGrad>(0, 0),
                                  {Variable(w).node(), x0.node(), x1.node()},
                                  std::source_location::current()));
  const Tensor av = rnd({4, 2}, 22), xv = rnd({2, 3}, 23);
  const Tensor x0v = Tensor::zeros({2, 3}, Dtype::Float64);
  const Tensor x1v = Tensor::zeros({2, 3}, Dtype::Float64);
  // Expected values from plain loops on the old w.
  auto old_piece = [&](std::int64_t i, std::int64_t j) { return w0.get({i, j}); };
  auto x_entry = [&](std::int64_t i, std::int64_t j) { return xv.get({i, j}); };
  std::vector<double> piece_v, sum_piece(1, 0.0);
  for (std::int64_t i = 0; i < 2; ++i)
    for (std::int64_t j = 0; j < 3; ++j) {
      piece_v.push_back(old_piece(i, j));
      sum_piece[0] += old_piece(i, j);
    }
  struct Case {
    const char* name;
    Variable update;
    std::function<double(std::int64_t, std::int64_t)> b;  // the gemm's B operand
    double scale;
  };
  const std::vector<Case> cases = {
      // The piece is the product's operand.
      {"B is the piece", w + dot(A, piece), old_piece, 1.0},
      // The piece only scales the product, and is an output of the function.
      {"the piece is read before the gemm", w + dot(A * sum(piece), X), x_entry, sum_piece[0]},
  };
  for (const Case& c : cases) {
    for (const char* backend : {"reference", "cpu"}) {
      CAPTURE(c.name);
      CAPTURE(backend);
      w.set_value(w0);
      FunctionOptions o;
      o.backend = backend;
      auto f = function({A, X, x0, x1}, {piece, sum(piece)}, {{w, c.update}}, o);
      const auto* gemm = dynamic_cast<const Gemm*>(f.graph().updates()[0].value->op.get());
      REQUIRE(gemm);
      CHECK_FALSE(gemm->inplace());
      const std::vector<Tensor> out = f({av, xv, x0v, x1v});
      check_values(out[0], piece_v);
      check_values(out[1], sum_piece);
      std::vector<double> w1;
      for (std::int64_t i = 0; i < 4; ++i)
        for (std::int64_t j = 0; j < 3; ++j) {
          double acc = w0.get({i, j});
          for (std::int64_t k = 0; k < 2; ++k) acc += c.scale * av.get({i, k}) * c.b(k, j);
          w1.push_back(acc);
        }
      check_values(w.get_value(), w1, 1e-12);
    }
  }
}

TEST_CASE("shape ops: second derivatives") {
  auto fn = [](const std::vector<Variable>& v) {
    Variable c = concatenate({flatten(v[0].T()), flatten(v[0])});
    return grad(sum(sqr(c) * subtensor(stack({c, c}, 1).T(), {0})), v[0]);
  };
  CHECK_NOTHROW(verify_grad(fn, {rnd({2, 3}, 21)}));
}
