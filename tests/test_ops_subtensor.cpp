// Indexing: subtensor (numpy basic slicing, symbolic bounds, views), inc/set_subtensor,
// take, inc_rows, one_hot. Forward values, static shapes, errors and gradients.
#include <doctest/doctest.h>

#include <optional>
#include <thea/ops/ops.hpp>
#include <thea/thea.hpp>

#include "test_util.hpp"

using namespace thea;
using namespace thea::testing;

namespace {

using Opt = std::optional<std::int64_t>;

Tensor lscalar_value(std::int64_t v) {
  return Tensor::scalar(static_cast<double>(v), Dtype::Int64);
}

std::optional<Variable> lit(Opt v) {
  if (!v) return std::nullopt;
  return Variable(static_cast<int>(*v));
}

// The node produced by subtensor(), for calling perform directly.
const Op& op_of(const Variable& v) { return *v.node()->op; }

}  // namespace

// Expected values from Python's list slicing, which numpy's basic slicing matches.
struct SliceCase {
  Opt start, stop, step;
  V expected;
};
const Opt N = std::nullopt;
const std::vector<SliceCase> kSliceCases = {
    {2, 7, N, {2, 3, 4, 5, 6}},
    {-3, N, N, {7, 8, 9}},
    {N, N, -1, {9, 8, 7, 6, 5, 4, 3, 2, 1, 0}},
    {8, 2, -2, {8, 6, 4}},
    {-100, 100, N, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
    {5, 2, N, {}},
    {N, N, 3, {0, 3, 6, 9}},
    {N, -1, -1, {}},
    {-1, N, -3, {9, 6, 3, 0}},
    {100, N, -1, {9, 8, 7, 6, 5, 4, 3, 2, 1, 0}},
    {-100, N, -1, {}},
    {N, -100, -1, {9, 8, 7, 6, 5, 4, 3, 2, 1, 0}},
    {3, 3, N, {}},
    {1, -1, 4, {1, 5}},
    {-2, -8, -3, {8, 5}},
    {N, 5, -2, {9, 7}},
    {0, 10, 20, {0}},
    {9, N, -20, {9}},
    {-11, -10, N, {}},
    {10, N, N, {}},
};

TEST_CASE("subtensor: numpy slice semantics with constant bounds") {
  Tensor x = arange_f64({10});
  auto sx = tensor(Dtype::Float64, Shape{10}, "x");
  for (const SliceCase& c : kSliceCases) {
    CAPTURE(c.start.value_or(999));
    CAPTURE(c.stop.value_or(999));
    CAPTURE(c.step.value_or(999));
    Variable y = subtensor(sx, {Slice(lit(c.start), lit(c.stop), lit(c.step))});
    // Constant bounds and a known size: the length is static.
    CHECK(y.type().shape == Shape{static_cast<std::int64_t>(c.expected.size())});
    Tensor r = op_of(y).perform({x});
    CHECK(r.to_vector() == c.expected);
    CHECK(r.storage() == x.storage());
  }
}

TEST_CASE("subtensor: the same slices with symbolic bounds") {
  Tensor x = arange_f64({10});
  auto vx = dvector("x");
  auto a = lscalar("a");
  auto b = lscalar("b");
  auto s = lscalar("s");
  for (const SliceCase& c : kSliceCases) {
    std::vector<Variable> ins{vx};
    std::vector<Tensor> args{x};
    auto sym = [&](Opt v, const Variable& var) -> std::optional<Variable> {
      if (!v) return std::nullopt;
      ins.push_back(var);
      args.push_back(lscalar_value(*v));
      return var;
    };
    Slice sl(sym(c.start, a), sym(c.stop, b), sym(c.step, s));
    Variable y = subtensor(vx, {sl});
    CHECK(y.type().shape == Shape{-1});
    CHECK(eval(ins, y, args).to_vector() == c.expected);
  }
}

TEST_CASE("subtensor: integer indices drop axes; views share storage") {
  Tensor x = arange_f64({3, 4});
  auto X = tensor(Dtype::Float64, Shape{3, 4}, "X");
  Variable row = subtensor(X, {1});
  CHECK(row.type().shape == Shape{4});
  Tensor r = op_of(row).perform({x});
  CHECK(r.to_vector() == V{4, 5, 6, 7});
  CHECK(r.storage() == x.storage());
  Variable col = subtensor(X, {Slice(), -1});
  CHECK(col.type().shape == Shape{3});
  CHECK(op_of(col).perform({x}).to_vector() == V{3, 7, 11});
  Variable el = subtensor(X, {-1, 2});
  CHECK(el.type().shape == Shape{});
  CHECK(op_of(el).perform({x}).item<double>() == 10);
  Variable rev = subtensor(X, {Slice(N, N, -1), Slice(1, 3)});
  CHECK(rev.type().shape == Shape{3, 2});
  Tensor rv = op_of(rev).perform({x});
  CHECK(rv.to_vector() == V{9, 10, 5, 6, 1, 2});
  CHECK(rv.storage() == x.storage());
  // The view aliases: a write into x shows through.
  x.set({0, 1}, 100);
  CHECK(rv.get({2, 0}) == 100);
  // A slice of a slice.
  Tensor inner = op_of(subtensor(dmatrix("m"), {Slice(N, N, -2)})).perform({rv});
  CHECK(inner.to_vector() == V{100, 2, 9, 10});
  // Fewer indices than axes keep the rest.
  CHECK(subtensor(X, {Slice(1, N)}).type().shape == Shape{2, 4});
  // Unknown sizes stay unknown.
  CHECK(subtensor(dmatrix("U"), {Slice(0, 2), 1}).type().shape == Shape{-1});
}

TEST_CASE("subtensor: Theano's minibatch idiom trX[i * bs:(i + 1) * bs]") {
  Tensor data = arange_f64({10, 3});
  auto trX = shared(data, "trX");
  auto i = lscalar("i");
  const int bs = 4;
  Variable batch = subtensor(trX, {Slice(i * bs, (i + 1) * bs)});
  CHECK(batch.type().shape == Shape{-1, 3});
  CHECK(batch.node()->inputs.size() == 3);  // trX and the two bounds
  Function f = function({i}, {batch}, {}, {}, ref());
  Tensor b0 = f({lscalar_value(0)})[0];
  CHECK(b0.shape() == Shape{4, 3});
  CHECK(b0.to_vector() == V{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
  Tensor b2 = f({lscalar_value(2)})[0];
  CHECK(b2.shape() == Shape{2, 3});  // the last, partial batch
  CHECK(b2.to_vector() == V{24, 25, 26, 27, 28, 29});

  // With givens, as in the tutorial: the model reads X, the function takes only i.
  auto X = dmatrix("X");
  auto w = shared(Tensor::from_list({1, 10, 100}, Dtype::Float64), "w");
  Function g = function({i}, {dot(X, w)}, {}, {{X, batch}}, ref());
  CHECK(g({lscalar_value(1)})[0].to_vector() == V{1542, 1875, 2208, 2541});
}

TEST_CASE("subtensor: a bound used twice is one input; integer indices may be symbolic") {
  auto x = dvector("x");
  auto i = lscalar("i");
  Variable y = subtensor(x, {Slice(i, i + 2)});
  Variable z = subtensor(x, {Slice(i, i)});
  CHECK(z.node()->inputs.size() == 2);
  CHECK(z.node()->op->value_inputs() == std::vector<int>{1});
  CHECK(eval({x, i}, y, {arange_f64({5}), lscalar_value(-3)}).to_vector() == V{2, 3});
  CHECK(eval({x, i}, z, {arange_f64({5}), lscalar_value(1)}).numel() == 0);
  auto j = iscalar("j");  // int32 bounds work too
  Variable e = subtensor(x, {j});
  CHECK(e.ndim() == 0);
  CHECK(eval({x, j}, e, {arange_f64({5}), Tensor::scalar(-2, Dtype::Int32)}).item<double>() == 3);
  // infer_shape needs the bound values, which value_inputs() lists.
  Tensor three = lscalar_value(3), five = lscalar_value(5);
  CHECK(op_of(y).value_inputs() == std::vector<int>{1, 2});
  CHECK(op_of(y).infer_shape({{5}, {}, {}}, {nullptr, &three, &five}) == Shape{2});
  CHECK_THROWS_AS(op_of(y).infer_shape({{5}, {}, {}}, {nullptr, &three, nullptr}), ValueError);
}

TEST_CASE("subtensor: params distinguish indices (for merging)") {
  auto x = dmatrix("x");
  auto i = lscalar("i");
  std::string p1 = op_of(subtensor(x, {Slice(1, N, -1), 2})).params();
  std::string p2 = op_of(subtensor(x, {Slice(1, N), 2})).params();
  std::string p3 = op_of(subtensor(x, {Slice(i, N), 2})).params();
  CHECK(p1 == "1::-1, 2");
  CHECK(p2 == "1:, 2");
  CHECK(p3 == "$1:, 2");
  CHECK_FALSE(op_of(subtensor(x, {1})).equals(op_of(subtensor(x, {2}))));
  CHECK(op_of(subtensor(x, {1})).equals(op_of(subtensor(x, {1}))));
}

TEST_CASE("subtensor: errors") {
  auto X = tensor(Dtype::Float32, Shape{3, 4}, "X");
  std::string msg = error_of([&] { subtensor(X, {0, 1, 2}); });
  CHECK(contains(msg, "[subtensor"));
  CHECK(contains(msg, "too many indices"));
  CHECK(contains(msg, "X"));
  CHECK(contains(msg, "test_ops_subtensor.cpp"));
  CHECK_THROWS_AS(subtensor(X, {0, 1, 2}), ValueError);
  msg = error_of([&] { subtensor(X, {3}); });
  CHECK(contains(msg, "index 3"));
  CHECK(contains(msg, "size 3"));
  CHECK_THROWS_AS(subtensor(X, {-4}), ValueError);
  CHECK_NOTHROW(subtensor(X, {-3}));
  CHECK_THROWS_AS(subtensor(X, {Slice(N, N, 0)}), ValueError);
  auto f = fscalar("f");
  msg = error_of([&] { subtensor(X, {Slice(f, N)}); });
  CHECK(contains(msg, "integer scalar"));
  CHECK(contains(msg, "f"));
  CHECK_THROWS_AS(subtensor(X, {Slice(f, N)}), TypeError);
  CHECK_THROWS_AS(subtensor(X, {lvector("v")}), TypeError);
  CHECK_THROWS_AS(subtensor(X, {Variable(1.5)}), TypeError);

  // Run-time errors name the node.
  auto i = lscalar("i");
  auto s = lscalar("s");
  auto M = fmatrix("M");
  Function g = function({M, i}, {subtensor(M, {i})}, {}, {}, ref());
  msg = error_of([&] { g({Tensor::zeros({3, 2}), lscalar_value(7)}); });
  CHECK(contains(msg, "[subtensor"));
  CHECK(contains(msg, "index 7"));
  CHECK(contains(msg, "size 3"));
  CHECK_THROWS_AS(g({Tensor::zeros({3, 2}), lscalar_value(-4)}), ValueError);
  CHECK(g({Tensor::zeros({3, 2}), lscalar_value(-3)})[0].shape() == Shape{2});
  Function h = function({M, s}, {subtensor(M, {Slice(N, N, s)})}, {}, {}, ref());
  CHECK(contains(error_of([&] { h({Tensor::zeros({3, 2}), lscalar_value(0)}); }), "zero"));
}

TEST_CASE("subtensor: gradients") {
  auto slice2d = [](const std::vector<Variable>& v) {
    return subtensor(v[0], {Slice(1, N), Slice(N, N, -2)});
  };
  CHECK_NOTHROW(verify_grad(slice2d, {rnd({4, 5}, 1)}));
  auto index = [](const std::vector<Variable>& v) { return subtensor(v[0], {Slice(), -2}); };
  CHECK_NOTHROW(verify_grad(index, {rnd({3, 4}, 2)}));
  auto symbolic = [](const std::vector<Variable>& v) {
    return subtensor(v[0], {Slice(v[1], v[1] + 2)});
  };
  CHECK_NOTHROW(verify_grad(symbolic, {rnd({5, 2}, 3), lscalar_value(2)}));
  // The same element read twice accumulates.
  auto twice = [](const std::vector<Variable>& v) {
    return subtensor(v[0], {1}) * subtensor(v[0], {Slice(1, 2)});
  };
  CHECK_NOTHROW(verify_grad(twice, {rnd({3}, 4)}));
}

// ---------------------------------------------------------------- inc / set_subtensor

TEST_CASE("inc_subtensor and set_subtensor: forward") {
  Tensor x = arange_f64({3, 4});
  auto X = dmatrix("X");
  auto y = dvector("y");
  Tensor yv = Tensor::from_list({10, 20}, Dtype::Float64);
  // Row 1, columns 3 and 1 (a negative step), y broadcast over nothing.
  Tensor inc = eval({X, y}, inc_subtensor(X, {1, Slice(3, 0, -2)}, y), {x, yv});
  CHECK(inc.to_vector() == V{0, 1, 2, 3, 4, 25, 6, 17, 8, 9, 10, 11});
  Tensor set = eval({X, y}, set_subtensor(X, {1, Slice(3, 0, -2)}, y), {x, yv});
  CHECK(set.to_vector() == V{0, 1, 2, 3, 4, 20, 6, 10, 8, 9, 10, 11});
  // A scalar literal broadcast over a 2-D region.
  Tensor zeroed = eval({X}, set_subtensor(X, {Slice(N, 2), Slice(2, N)}, 0), {x});
  CHECK(zeroed.to_vector() == V{0, 1, 0, 0, 4, 5, 0, 0, 8, 9, 10, 11});
  // A row broadcast down the rows of the region.
  Tensor r = eval({X, y}, inc_subtensor(X, {Slice(1, N), Slice(N, 2)}, y), {x, yv});
  CHECK(r.to_vector() == V{0, 1, 2, 3, 14, 25, 6, 7, 18, 29, 10, 11});
  // The input is not modified.
  CHECK(x.to_vector() == arange_f64({3, 4}).to_vector());
  // Symbolic bounds.
  auto i = lscalar("i");
  Tensor si = eval({X, i}, set_subtensor(X, {i}, -1), {x, lscalar_value(-1)});
  CHECK(si.to_vector() == V{0, 1, 2, 3, 4, 5, 6, 7, -1, -1, -1, -1});
  // Integer y into a float x is allowed (widening); the output keeps x's type.
  Variable iv = inc_subtensor(X, {0}, lvector("k"));
  CHECK(iv.type() == X.type());
}

TEST_CASE("inc_subtensor: perform leaves its inputs alone") {
  Tensor x = arange_f64({4});
  auto X = tensor(Dtype::Float64, Shape{4}, "X");
  Variable r = inc_subtensor(X, {Slice(1, 3)}, 1.0);
  Tensor out = op_of(r).perform({x, Tensor::scalar(1, Dtype::Float64)});
  CHECK(out.to_vector() == V{0, 2, 3, 3});
  CHECK(x.to_vector() == V{0, 1, 2, 3});
  CHECK(out.storage() != x.storage());
}

TEST_CASE("inc_subtensor: errors") {
  auto X = tensor(Dtype::Float32, Shape{3, 4}, "X");
  auto y3 = tensor(Dtype::Float32, Shape{3}, "y3");
  std::string msg = error_of([&] { inc_subtensor(X, {0}, y3); });
  CAPTURE(msg);
  CHECK(contains(msg, "[inc_subtensor"));
  CHECK(contains(msg, "y3"));
  CHECK(contains(msg, "(3,)"));
  CHECK(contains(msg, "(4,)"));
  CHECK_THROWS_AS(inc_subtensor(X, {0}, y3), ShapeError);
  CHECK_THROWS_AS(set_subtensor(X, {0}, fmatrix("m")), ShapeError);  // rank 2 into rank 1
  msg = error_of([&] { set_subtensor(X, {0}, dvector("d")); });
  CHECK(contains(msg, "[set_subtensor"));
  CHECK(contains(msg, "downcast"));
  CHECK_THROWS_AS(set_subtensor(X, {0}, dvector("d")), TypeError);
  CHECK_THROWS_AS(set_subtensor(lmatrix("L"), {0}, fvector("f")), TypeError);
  // Sizes unknown until run time.
  auto M = fmatrix("M");
  auto v = fvector("v");
  Function f = function({M, v}, {inc_subtensor(M, {0}, v)}, {}, {}, ref());
  msg = error_of([&] { f({Tensor::zeros({2, 3}), Tensor::zeros({2})}); });
  CAPTURE(msg);
  CHECK(contains(msg, "[inc_subtensor"));
  CHECK(contains(msg, "(2,)"));
  CHECK(contains(msg, "(3,)"));
}

TEST_CASE("inc_subtensor and set_subtensor: gradients") {
  auto inc = [](const std::vector<Variable>& v) {
    return inc_subtensor(v[0], {Slice(1, N), Slice(N, N, -2)}, v[1]);
  };
  CHECK_NOTHROW(verify_grad(inc, {rnd({3, 4}, 1), rnd({2, 2}, 2)}));
  CHECK_NOTHROW(verify_grad(inc, {rnd({3, 4}, 3), rnd({2}, 4)}));     // y broadcast on rows
  CHECK_NOTHROW(verify_grad(inc, {rnd({3, 4}, 5), rnd({1, 1}, 6)}));  // y broadcast fully
  auto set = [](const std::vector<Variable>& v) {
    return set_subtensor(v[0], {Slice(N, N, 2), 1}, v[1]);
  };
  CHECK_NOTHROW(verify_grad(set, {rnd({3, 4}, 7), rnd({2}, 8)}));
  auto symbolic = [](const std::vector<Variable>& v) {
    return set_subtensor(v[0], {v[2]}, v[1]) * v[0];
  };
  CHECK_NOTHROW(verify_grad(symbolic, {rnd({3, 2}, 9), rnd({2}, 10), lscalar_value(-1)}));
}

// ---------------------------------------------------------------- take / inc_rows

TEST_CASE("take: gathers rows, repeated and negative indices") {
  Tensor x = arange_f64({4, 2});
  auto X = dmatrix("X");
  auto idx = lvector("idx");
  Tensor r = eval({X, idx}, take(X, idx), {x, Tensor::from_vector<std::int64_t>({3, 0, 3, -1})});
  CHECK(r.shape() == Shape{4, 2});
  CHECK(r.to_vector() == V{6, 7, 0, 1, 6, 7, 6, 7});
  // uint8 indices (MNIST labels), a strided x, and a vector x.
  Take op;
  Tensor xt = x.permute({1, 0});  // (2, 4)
  Tensor g = op.perform({xt, Tensor::from_vector<std::uint8_t>({1, 1, 0})});
  CHECK(g.to_vector() == V{1, 3, 5, 7, 1, 3, 5, 7, 0, 2, 4, 6});
  Tensor v = op.perform(
      {Tensor::from_list({5, 6, 7}, Dtype::Float64), Tensor::from_vector<std::int32_t>({2, 0})});
  CHECK(v.to_vector() == V{7, 5});
  CHECK(op.perform({x, Tensor::from_vector<std::int64_t>({}, {0})}).shape() == Shape{0, 2});
  // Static shape: (len(idx), x.shape[1:]).
  auto T3 = tensor(Dtype::Float32, Shape{-1, 5, 6}, "T3");
  CHECK(take(T3, lvector("i")).type().shape == Shape{-1, 5, 6});
  CHECK(take(T3, tensor(Dtype::Int32, Shape{7}, "k")).type().shape == Shape{7, 5, 6});
}

TEST_CASE("take: errors") {
  auto X = dmatrix("X");
  auto idx = lvector("idx");
  Function f = function({X, idx}, {take(X, idx)}, {}, {}, ref());
  std::string msg = error_of([&] {
    f({arange_f64({3, 2}), Tensor::from_vector<std::int64_t>({0, 3})});
  });
  CHECK(contains(msg, "[take]"));
  CHECK(contains(msg, "index 3"));
  CHECK(contains(msg, "position 1"));
  CHECK(contains(msg, "size 3"));
  CHECK_THROWS_AS(f({arange_f64({3, 2}), Tensor::from_vector<std::int64_t>({-4}, {1})}),
                  ValueError);
  CHECK_THROWS_AS(take(X, fvector("f")), TypeError);
  CHECK_THROWS_AS(take(X, lmatrix("m")), TypeError);
  CHECK_THROWS_AS(take(dscalar("s"), idx), TypeError);
  // Constant indices are checked against a known size when the graph is built.
  auto S = tensor(Dtype::Float64, Shape{3, 2}, "S");
  msg = error_of([&] { take(S, constant(Tensor::from_vector<std::int64_t>({1, 5}))); });
  CHECK(contains(msg, "[take]"));
  CHECK(contains(msg, "index 5"));
  CHECK(contains(msg, "S"));
}

TEST_CASE("inc_rows: repeated indices accumulate") {
  Tensor x = Tensor::zeros({3, 2}, Dtype::Float64);
  auto X = dmatrix("X");
  auto idx = lvector("idx");
  auto Y = dmatrix("Y");
  Tensor y = Tensor::from_list({{1, 2}, {10, 20}, {100, 200}}, Dtype::Float64);
  Tensor r =
      eval({X, idx, Y}, inc_rows(X, idx, Y), {x, Tensor::from_vector<std::int64_t>({2, 0, 2}), y});
  CHECK(r.to_vector() == V{10, 20, 0, 0, 101, 202});
  CHECK(x.to_vector() == V(6, 0.0));
  // A broadcast row and a vector x.
  IncRows op;
  Tensor b = op.perform({arange_f64({3, 2}), Tensor::from_vector<std::int64_t>({1, 1}),
                         Tensor::from_list({1, 2}, Dtype::Float64)});
  CHECK(b.to_vector() == V{0, 1, 4, 7, 4, 5});
  Tensor v = op.perform({arange_f64({3}), Tensor::from_vector<std::int64_t>({0, -1, 0}),
                         Tensor::from_list({1, 2, 3}, Dtype::Float64)});
  CHECK(v.to_vector() == V{4, 1, 4});
  CHECK_THROWS_AS(op.perform({arange_f64({3}), Tensor::from_vector<std::int64_t>({3}),
                              Tensor::from_list({1}, Dtype::Float64)}),
                  ValueError);
  CHECK_THROWS_AS(inc_rows(X, idx, dtensor3("T")), ShapeError);
  CHECK(inc_rows(X, idx, Y).type() == X.type());
}

TEST_CASE("take and inc_rows: gradients") {
  auto gather = [](const std::vector<Variable>& v) { return take(v[0], v[1]); };
  CHECK_NOTHROW(
      verify_grad(gather, {rnd({4, 3}, 1), Tensor::from_vector<std::int64_t>({3, 0, 3, -1})}));
  auto scatter = [](const std::vector<Variable>& v) { return inc_rows(v[0], v[1], v[2]); };
  CHECK_NOTHROW(verify_grad(
      scatter, {rnd({4, 3}, 2), Tensor::from_vector<std::int64_t>({1, 1, 2}), rnd({3, 3}, 3)}));
  CHECK_NOTHROW(verify_grad(
      scatter, {rnd({4, 3}, 4), Tensor::from_vector<std::int64_t>({0, 3}), rnd({3}, 5)}));
}

// ---------------------------------------------------------------- one_hot

TEST_CASE("one_hot: forward, types and errors") {
  auto labels = bvector("labels");  // uint8, as MNIST stores them
  Variable oh = one_hot(labels, 4);
  CHECK(oh.dtype() == Dtype::Float32);
  CHECK(oh.type().shape == Shape{-1, 4});
  Tensor r = eval({labels}, oh, {Tensor::from_vector<std::uint8_t>({2, 0, 3})});
  CHECK(r.to_vector() == V{0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1});
  Variable oh64 = one_hot(lvector("l"), 3, Dtype::Float64);
  CHECK(oh64.dtype() == Dtype::Float64);
  CHECK(one_hot(tensor(Dtype::Int32, Shape{5}, "k"), 3).type().shape == Shape{5, 3});
  Function f = function({labels}, {oh}, {}, {}, ref());
  std::string msg = error_of([&] { f({Tensor::from_vector<std::uint8_t>({1, 4})}); });
  CHECK(contains(msg, "[one_hot"));
  CHECK(contains(msg, "label 4"));
  CHECK(contains(msg, "position 1"));
  CHECK_THROWS_AS(f({Tensor::from_vector<std::uint8_t>({1, 4})}), ValueError);
  CHECK_THROWS_AS(one_hot(fvector("p"), 3), TypeError);
  CHECK_THROWS_AS(one_hot(labels, 0), ValueError);
  CHECK(OneHot(10, Dtype::Float32).params() == "num_classes=10, dtype=float32");
}

TEST_CASE("indexing ops: second derivatives") {
  auto fn = [](const std::vector<Variable>& v) {
    Variable a = subtensor(v[0], {Slice(1, N), -1});
    Variable b = take(v[0], v[1]);
    return grad(sum(sqr(a)) + sum(sqr(b) * b), v[0]);
  };
  CHECK_NOTHROW(verify_grad(fn, {rnd({3, 2}, 31), Tensor::from_vector<std::int64_t>({2, 0, 2})}));
  auto upd = [](const std::vector<Variable>& v) {
    Variable s = set_subtensor(v[0], {Slice(N, N, -2)}, v[1]);
    Variable r = inc_rows(s, v[2], v[1]);
    return grad(sum(sqr(r) * r), v[1]);
  };
  CHECK_NOTHROW(verify_grad(
      upd, {rnd({3, 2}, 32), rnd({2, 2}, 33), Tensor::from_vector<std::int64_t>({1, 1})}));
}
