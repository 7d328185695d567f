// Host tensors: dtypes and promotion, TensorType names, creation, views with numpy
// semantics, conversions, printing and comparison.
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "thea/dtype.hpp"
#include "thea/tensor.hpp"
#include "thea/type.hpp"

using namespace thea;

namespace {
const std::vector<Dtype> kAll = {Dtype::Bool,  Dtype::UInt8,   Dtype::Int32,
                                 Dtype::Int64, Dtype::Float32, Dtype::Float64};
constexpr std::int64_t kMin = std::numeric_limits<std::int64_t>::min();
constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();

std::vector<double> vals(const Tensor& t) { return t.to_vector(); }
}  // namespace

TEST_CASE("dtype sizes, names, letters") {
  CHECK(dtype_size(Dtype::Bool) == 1);
  CHECK(dtype_size(Dtype::UInt8) == 1);
  CHECK(dtype_size(Dtype::Int32) == 4);
  CHECK(dtype_size(Dtype::Int64) == 8);
  CHECK(dtype_size(Dtype::Float32) == 4);
  CHECK(dtype_size(Dtype::Float64) == 8);
  CHECK(std::string(dtype_name(Dtype::Float32)) == "float32");
  CHECK(std::string(dtype_name(Dtype::Bool)) == "bool");
  CHECK(dtype_letter(Dtype::Float32) == 'f');
  CHECK(dtype_letter(Dtype::Float64) == 'd');
  CHECK(dtype_letter(Dtype::Int32) == 'i');
  CHECK(dtype_letter(Dtype::Int64) == 'l');
  CHECK(dtype_letter(Dtype::UInt8) == 'b');
  for (Dtype d : kAll) CHECK(dtype_from_name(dtype_name(d)) == d);
  CHECK_THROWS_AS(dtype_from_name("float16"), TypeError);
  CHECK_THROWS_WITH(dtype_from_name("floatX"), doctest::Contains("floatX"));
}

TEST_CASE("promote follows numpy.result_type") {
  // Rows/columns in enum order; table printed by numpy 1.24's np.result_type.
  const Dtype B = Dtype::Bool, U = Dtype::UInt8, I = Dtype::Int32, L = Dtype::Int64,
              F = Dtype::Float32, D = Dtype::Float64;
  const Dtype table[6][6] = {{B, U, I, L, F, D}, {U, U, I, L, F, D}, {I, I, I, L, D, D},
                             {L, L, L, L, D, D}, {F, F, D, D, F, D}, {D, D, D, D, D, D}};
  for (int a = 0; a < 6; ++a)
    for (int b = 0; b < 6; ++b) {
      CAPTURE(a);
      CAPTURE(b);
      CHECK(promote(kAll[a], kAll[b]) == table[a][b]);
    }
}

TEST_CASE("TensorType names and shape checks") {
  CHECK(TensorType::of_rank(Dtype::Float32, 2).str() == "fmatrix");
  CHECK(TensorType::of_rank(Dtype::Float64, 1).str() == "dvector");
  CHECK(TensorType::of_rank(Dtype::Int64, 0).str() == "lscalar");
  CHECK(TensorType::of_rank(Dtype::Int32, 3).str() == "itensor3");
  CHECK(TensorType::of_rank(Dtype::UInt8, 4).str() == "btensor4");
  CHECK(TensorType(Dtype::Float32, {kUnknownDim, 784}).str() == "float32 matrix (?, 784)");
  CHECK(TensorType(Dtype::Float32, {kUnknownDim, 28, 28}).str() == "float32 tensor3 (?, 28, 28)");
  CHECK(TensorType(Dtype::Int64, {10}).str() == "int64 vector (10,)");
  CHECK(TensorType::of_rank(Dtype::Bool, 2).str() == "bool matrix (?, ?)");
  CHECK(static_shape_str({kUnknownDim, 784}) == "(?, 784)");
  CHECK(static_shape_str({}) == "()");

  TensorType t(Dtype::Float32, {kUnknownDim, 784});
  CHECK_FALSE(t.fully_static());
  CHECK(TensorType(Dtype::Float32, {3, 4}).fully_static());
  CHECK(TensorType::of_rank(Dtype::Float32, 0).fully_static());
  CHECK(t.accepts({128, 784}));
  CHECK_FALSE(t.accepts({128, 785}));
  CHECK_FALSE(t.accepts({784}));
  CHECK(t.broadcastable(0) == false);
  CHECK(TensorType(Dtype::Float32, {1, 5}).broadcastable(0));
  auto of = TensorType::of(Tensor::zeros({2, 3}, Dtype::Int32));
  CHECK(of == TensorType(Dtype::Int32, {2, 3}));
  CHECK(of != TensorType(Dtype::Int64, {2, 3}));
}

TEST_CASE("shape helpers") {
  CHECK(shape_str({128, 784}) == "(128, 784)");
  CHECK(shape_str({5}) == "(5,)");
  CHECK(shape_str({}) == "()");
  CHECK(shape_numel({}) == 1);
  CHECK(shape_numel({3, 0, 2}) == 0);
  CHECK(contiguous_strides({2, 3, 4}) == Strides{12, 4, 1});
}

TEST_CASE("creation: zeros, ones, full, scalar, arange, empty") {
  for (Dtype d : kAll) {
    CAPTURE(dtype_name(d));
    auto z = Tensor::zeros({2, 3}, d);
    CHECK(z.dtype() == d);
    CHECK(z.shape() == Shape{2, 3});
    CHECK(z.strides() == Strides{3, 1});
    CHECK(z.is_contiguous());
    CHECK(vals(z) == std::vector<double>(6, 0.0));
    CHECK(vals(Tensor::ones({4}, d)) == std::vector<double>(4, 1.0));
    // Storage is 64-byte aligned for vectorised kernels.
    CHECK(reinterpret_cast<std::uintptr_t>(Tensor::empty({7}, d).raw_data()) % 64 == 0);
  }
  CHECK(vals(Tensor::full({3}, 2.5)) == std::vector<double>{2.5, 2.5, 2.5});
  CHECK(vals(Tensor::full({2}, 300.7, Dtype::Int32)) == std::vector<double>{300, 300});
  auto s = Tensor::scalar(3.5, Dtype::Float64);
  CHECK(s.ndim() == 0);
  CHECK(s.numel() == 1);
  CHECK(s.item<double>() == 3.5);
  CHECK(vals(Tensor::arange(4)) == std::vector<double>{0, 1, 2, 3});
  CHECK(Tensor::arange(4).dtype() == Dtype::Int64);
  CHECK(Tensor::arange(0).numel() == 0);
  CHECK(Tensor::empty({0, 5}).numel() == 0);
  CHECK_FALSE(Tensor().defined());
  CHECK(Tensor::zeros({1}).defined());
  CHECK_THROWS_AS(Tensor::zeros({2, -1}), ValueError);
  CHECK_THROWS_WITH(Tensor::empty({-3}), doctest::Contains("negative dimension"));
  CHECK_THROWS_AS(Tensor::arange(-1), ValueError);
  CHECK_THROWS_AS(Tensor::empty({kMax, kMax}), ValueError);
}

TEST_CASE("from_list and from_vector") {
  auto v = Tensor::from_list({1, 2, 3});
  CHECK(v.shape() == Shape{3});
  CHECK(v.dtype() == Dtype::Float32);
  auto m = Tensor::from_list({{1, 2, 3}, {4, 5, 6}}, Dtype::Int64);
  CHECK(m.shape() == Shape{2, 3});
  CHECK(m.at<std::int64_t>({1, 2}) == 6);
  CHECK(m.get({0, 1}) == 2);
  CHECK_THROWS_AS(Tensor::from_list({{1, 2}, {3}}), ShapeError);
  CHECK_THROWS_WITH(Tensor::from_list({{1, 2}, {3}}), doctest::Contains("row 1"));

  auto f = Tensor::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6}, {3, 2});
  CHECK(f.dtype() == Dtype::Float64);
  CHECK(f.get({2, 1}) == 6);
  CHECK(Tensor::from_vector(std::vector<std::int32_t>{7, 8}).dtype() == Dtype::Int32);
  CHECK(Tensor::from_vector(std::vector<float>{4.f}).ndim() == 0);
  CHECK_THROWS_AS(Tensor::from_vector(std::vector<float>{1, 2, 3}, {2, 2}), ShapeError);
}

TEST_CASE("element access and errors") {
  auto t = Tensor::from_list({{1, 2}, {3, 4}});
  CHECK(t.size(0) == 2);
  CHECK(t.size(-1) == 2);
  CHECK_THROWS_AS(t.size(2), ValueError);
  t.set({1, 0}, 9);
  CHECK(t.get({1, 0}) == 9);
  CHECK_THROWS_AS(t.get({2, 0}), ValueError);
  CHECK_THROWS_AS(t.get({0}), ValueError);
  CHECK_THROWS_AS(t.set({0, 5}, 1), ValueError);
  CHECK_THROWS_AS(t.item<float>(), ValueError);
  CHECK(t.data<float>()[3] == 4.f);
  CHECK_THROWS_AS(t.data<double>(), TypeError);
  CHECK_THROWS_WITH(t.data<std::int64_t>(), doctest::Contains("int64"));
}

TEST_CASE("random numbers: golden values from an independent implementation") {
  // Expected values computed by a Python port of splitmix64 + xoshiro256** (+ polar method);
  // they pin the stream so it stays identical on every platform and across refactors.
  auto u = Tensor::random_uniform({4}, 0.0, 1.0, 42, Dtype::Float64);
  CHECK(vals(u) == std::vector<double>{0.08386297105988216, 0.3789802506626686, 0.6800434110281394,
                                       0.9246929453253876});
  auto n = Tensor::random_normal({4}, 0.0, 1.0, 42, Dtype::Float64);
  const std::vector<double> expect = {-0.7262191382447857, -0.21119691823195985, 0.2216227015035933,
                                      0.5227716877560146};
  for (int i = 0; i < 4; ++i) CHECK(n.get({i}) == doctest::Approx(expect[i]).epsilon(1e-14));
}

TEST_CASE("random numbers: determinism and statistics") {
  auto a = random_normal({100, 10}, 0.0, 0.01, 7);
  auto b = random_normal({100, 10}, 0.0, 0.01, 7);
  auto c = random_normal({100, 10}, 0.0, 0.01, 8);
  CHECK(a.dtype() == Dtype::Float32);
  CHECK(vals(a) == vals(b));
  CHECK(vals(a) != vals(c));

  auto big = Tensor::random_normal({200000}, 2.0, 3.0, 1, Dtype::Float64);
  double sum = 0, sq = 0;
  for (double v : vals(big)) {
    sum += v;
    sq += v * v;
  }
  const double mean = sum / 200000, var = sq / 200000 - mean * mean;
  CHECK(mean == doctest::Approx(2.0).epsilon(0.01));
  CHECK(std::sqrt(var) == doctest::Approx(3.0).epsilon(0.01));

  auto un = random_uniform({100000}, -2.0, 5.0, 3);
  double lo = 1e9, hi = -1e9, usum = 0;
  for (double v : vals(un)) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
    usum += v;
  }
  CHECK(lo >= -2.0);
  CHECK(hi < 5.0);
  CHECK(lo < -1.99);
  CHECK(hi > 4.99);
  CHECK(usum / 100000 == doctest::Approx(1.5).epsilon(0.01));

  auto ints = Tensor::random_uniform({1000}, 0, 10, 5, Dtype::Int64);
  std::vector<int> counts(10, 0);
  for (double v : vals(ints)) {
    REQUIRE(v >= 0);
    REQUIRE(v < 10);
    counts[static_cast<int>(v)]++;
  }
  for (int k : counts) CHECK(k > 50);

  CHECK_THROWS_AS(random_normal({2}, 0, -1, 0), ValueError);
  CHECK_THROWS_AS(random_normal({2}, 0, 1, 0, Dtype::Int32), TypeError);
  CHECK_THROWS_AS(random_uniform({2}, 1, 0, 0), ValueError);
}

TEST_CASE("slice follows numpy semantics and is a view") {
  auto a = Tensor::arange(10);
  CHECK(vals(a.slice(0, 2, 8, 3)) == std::vector<double>{2, 5});               // a[2:8:3]
  CHECK(vals(a.slice(0, -3, 100)) == std::vector<double>{7, 8, 9});            // a[-3:100]
  CHECK(vals(a.slice(0, 8, 2, -2)) == std::vector<double>{8, 6, 4});           // a[8:2:-2]
  CHECK(vals(a.slice(0, kMax, kMin, -3)) == std::vector<double>{9, 6, 3, 0});  // a[::-3]
  CHECK(vals(a.slice(0, -100, 3)) == std::vector<double>{0, 1, 2});            // a[-100:3]
  CHECK(a.slice(0, 5, 2).numel() == 0);                                        // a[5:2]
  CHECK(a.slice(0, 5, 2).shape() == Shape{0});
  CHECK(a.slice(0, 20, 30).numel() == 0);
  CHECK_THROWS_AS(a.slice(0, 0, 5, 0), ValueError);
  CHECK_THROWS_AS(a.slice(1, 0, 5), ValueError);

  auto m = Tensor::arange(12, Dtype::Float32).reshape({3, 4});
  auto cols = m.slice(1, 1, 3);  // m[:, 1:3]
  CHECK(cols.shape() == Shape{3, 2});
  CHECK_FALSE(cols.is_contiguous());
  CHECK(cols.storage() == m.storage());
  CHECK(vals(cols) == std::vector<double>{1, 2, 5, 6, 9, 10});
  cols.fill(-1);  // writes through the view only
  CHECK(vals(m) == std::vector<double>{0, -1, -1, 3, 4, -1, -1, 7, 8, -1, -1, 11});
  auto rows = m.slice(0, 1, 3);  // a minibatch: contiguous view with an offset
  CHECK(rows.is_contiguous());
  CHECK(rows.offset() == 4);
  CHECK(rows.get({0, 0}) == 4);
}

TEST_CASE("select and permute") {
  auto m = Tensor::arange(24, Dtype::Int32).reshape({2, 3, 4});
  auto s = m.select(1, 2);  // m[:, 2, :]
  CHECK(s.shape() == Shape{2, 4});
  CHECK(vals(s) == std::vector<double>{8, 9, 10, 11, 20, 21, 22, 23});
  CHECK(vals(m.select(0, -1).select(0, 0)) == std::vector<double>{12, 13, 14, 15});
  CHECK(m.select(2, 3).select(1, 1).select(0, 1).item<int>() == 19);
  CHECK_THROWS_AS(m.select(0, 2), ValueError);
  CHECK_THROWS_AS(m.select(3, 0), ValueError);

  auto p = m.permute({2, 0, 1});  // np.transpose(m, (2, 0, 1))
  CHECK(p.shape() == Shape{4, 2, 3});
  CHECK(p.strides() == Strides{1, 12, 4});
  CHECK(p.get({3, 1, 2}) == m.get({1, 2, 3}));
  CHECK(p.storage() == m.storage());
  CHECK_FALSE(p.is_contiguous());
  auto pc = p.contiguous();
  CHECK(pc.is_contiguous());
  CHECK(pc.storage() != m.storage());
  CHECK(vals(pc) == vals(p));
  CHECK(m.contiguous().storage() == m.storage());
  CHECK(vals(m.permute({-1, 1, 0}).slice(0, 0, 1)) == std::vector<double>{0, 12, 4, 16, 8, 20});
  CHECK_THROWS_AS(m.permute({0, 0, 1}), ValueError);
  CHECK_THROWS_AS(m.permute({0, 1}), ValueError);
  CHECK_THROWS_WITH(m.permute({0, 1, 5}), doctest::Contains("(2, 3, 4)"));
}

TEST_CASE("reshape: views when contiguous, copies otherwise") {
  auto a = Tensor::arange(12, Dtype::Float64);
  auto r = a.reshape({3, -1});
  CHECK(r.shape() == Shape{3, 4});
  CHECK(r.storage() == a.storage());
  CHECK(a.reshape({2, 2, 3}).get({1, 0, 2}) == 8);
  auto t = r.permute({1, 0});
  auto f = t.reshape({12});  // np.reshape(r.T, 12)
  CHECK(f.storage() != a.storage());
  CHECK(vals(f) == std::vector<double>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11});
  CHECK(Tensor::scalar(1).reshape({1, 1}).shape() == Shape{1, 1});
  CHECK(Tensor::zeros({0, 3}).reshape({-1, 3}).shape() == Shape{0, 3});
  CHECK_THROWS_AS(a.reshape({5, -1}), ShapeError);
  CHECK_THROWS_AS(a.reshape({5, 2}), ShapeError);
  CHECK_THROWS_AS(a.reshape({-1, -1}), ValueError);
  CHECK_THROWS_WITH(a.reshape({5, 2}), doctest::Contains("float64 (12,)"));
}

TEST_CASE("astype, clone and copy_from across dtypes and strides") {
  auto f = Tensor::from_list({-1.7, 0.0, 2.9, 300.5});
  CHECK(vals(f.astype(Dtype::Int32)) == std::vector<double>{-1, 0, 2, 300});
  CHECK(vals(f.astype(Dtype::Bool)) == std::vector<double>{1, 0, 1, 1});
  CHECK(vals(f.astype(Dtype::UInt8)) == std::vector<double>{0, 0, 2, 255});  // saturates
  auto nan = Tensor::from_list({std::nan(""), 1e300}, Dtype::Float64);
  CHECK(vals(nan.astype(Dtype::Int64)) ==
        std::vector<double>{0, static_cast<double>(std::numeric_limits<std::int64_t>::max())});
  CHECK(vals(Tensor::from_list({1, 0, 1}, Dtype::Bool).astype(Dtype::Float32)) ==
        std::vector<double>{1, 0, 1});
  auto same = f.astype(Dtype::Float32);
  CHECK(same.storage() != f.storage());

  auto c = f.clone();
  c.set({0}, 5);
  CHECK(f.get({0}) == doctest::Approx(-1.7f));

  auto dst = Tensor::zeros({3, 2}, Dtype::Float64);
  auto src = Tensor::arange(6, Dtype::Int32).reshape({2, 3});
  dst.copy_from(src.permute({1, 0}));
  CHECK(vals(dst) == std::vector<double>{0, 3, 1, 4, 2, 5});
  auto big = Tensor::zeros({4, 4}, Dtype::UInt8);
  big.slice(0, 0, 4, 2).slice(1, 1, 4, 2).copy_from(Tensor::full({2, 2}, 7, Dtype::Int64));
  CHECK(vals(big) == std::vector<double>{0, 7, 0, 7, 0, 0, 0, 0, 0, 7, 0, 7, 0, 0, 0, 0});
  CHECK_THROWS_AS(dst.copy_from(src), ShapeError);
  CHECK_THROWS_WITH(dst.copy_from(src), doctest::Contains("int32 (2, 3)"));

  // Overlapping source and destination behave as if the source were copied first.
  auto a = Tensor::arange(6);
  a.slice(0, 1, 6).copy_from(a.slice(0, 0, 5));
  CHECK(vals(a) == std::vector<double>{0, 0, 1, 2, 3, 4});
}

TEST_CASE("view bounds are checked") {
  auto st = std::make_shared<Storage>(16 * 4);
  CHECK_NOTHROW(Tensor(st, 0, {4, 4}, {4, 1}, Dtype::Float32));
  CHECK_NOTHROW(Tensor(st, 15, {4}, {-1}, Dtype::Float32));
  CHECK_THROWS_AS(Tensor(st, 1, {4, 4}, {4, 1}, Dtype::Float32), ValueError);
  CHECK_THROWS_AS(Tensor(st, 0, {4, 4}, {4, 1}, Dtype::Float64), ValueError);
  CHECK_THROWS_AS(Tensor(st, 2, {4}, {-1}, Dtype::Float32), ValueError);
  CHECK_THROWS_AS(Tensor(st, 0, {4}, {1, 1}, Dtype::Float32), ValueError);
  CHECK(st->nbytes() == 64);
}

TEST_CASE("to_string matches numpy's layout") {
  CHECK(Tensor::from_list({{1.0, 2.5}, {3.25, -4}}).to_string() ==
        "[[ 1.  ,  2.5 ],\n [ 3.25, -4.  ]]");
  CHECK(Tensor::from_list({0.001, 2.0}, Dtype::Float64).to_string() == "[1.e-03, 2.e+00]");
  CHECK(Tensor::arange(24, Dtype::Float64).reshape({2, 3, 4}).to_string() ==
        "[[[ 0.,  1.,  2.,  3.],\n  [ 4.,  5.,  6.,  7.],\n  [ 8.,  9., 10., 11.]],\n\n"
        " [[12., 13., 14., 15.],\n  [16., 17., 18., 19.],\n  [20., 21., 22., 23.]]]");
  CHECK(Tensor::arange(20).reshape({2, 10}).to_string(0) ==
        "[[ 0,  1,  2,  3,  4,  5,  6,  7,  8,  9],\n [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]]");
  CHECK(Tensor::arange(20).to_string() == "[ 0,  1,  2, ..., 17, 18, 19]");
  CHECK(Tensor::arange(100).reshape({10, 10}).to_string(4) ==
        "[[ 0,  1, ...,  8,  9],\n [10, 11, ..., 18, 19],\n ...,\n [80, 81, ..., 88, 89],\n"
        " [90, 91, ..., 98, 99]]");
  CHECK(Tensor::from_list({1, 0}, Dtype::Bool).to_string() == "[ True, False]");
  CHECK(Tensor::scalar(0.5).to_string() == "0.5");
  CHECK(Tensor::from_list({std::nan(""), 1.5}).to_string() == "[nan, 1.5]");
  CHECK(Tensor::zeros({0}).to_string() == "[]");
  CHECK(Tensor().to_string() == "Tensor(undefined)");
  std::ostringstream os;
  os << Tensor::from_list({1, 2}, Dtype::Int32);
  CHECK(os.str() == "[1, 2]");
  CHECK(Tensor::zeros({128, 784}).describe() == "float32 (128, 784)");
}

TEST_CASE("allclose and max_abs_diff") {
  auto a = Tensor::from_list({1.0, 2.0, 3.0}, Dtype::Float64);
  auto b = Tensor::from_list({1.0, 2.0, 3.0 + 1e-9}, Dtype::Float32);
  CHECK(allclose(a, b));
  CHECK(allclose(a, Tensor::from_list({1, 2, 3}, Dtype::Int64)));
  CHECK_FALSE(allclose(a, Tensor::from_list({1.0, 2.0, 3.1})));
  CHECK(allclose(a, Tensor::from_list({1.0, 2.0, 3.1}), 0.0, 0.2));
  CHECK_FALSE(allclose(a, Tensor::from_list({1.0, 2.0})));
  auto n = Tensor::from_list({1.0, std::nan(""), 3.0});
  CHECK_FALSE(allclose(n, n));
  CHECK(std::isnan(max_abs_diff(a, n)));
  auto inf = Tensor::from_list({INFINITY});
  CHECK(allclose(inf, inf));
  CHECK(max_abs_diff(a, Tensor::from_list({1.5, 2.0, 1.0})) == 2.0);
  CHECK(max_abs_diff(a.slice(0, kMax, kMin, -1), Tensor::from_list({3, 2, 1})) == 0.0);
  CHECK_THROWS_AS(max_abs_diff(a, Tensor::zeros({2})), ShapeError);
}

TEST_CASE("storage with pending contents: filled once, on first access, from any thread") {
  Tensor t = Tensor::empty({4}, Dtype::Float32);
  std::atomic<int> fills{0};
  t.storage()->set_pending([&](void* dst) {
    ++fills;
    float* p = static_cast<float*>(dst);
    for (int i = 0; i < 4; ++i) p[i] = static_cast<float>(i + 1);
  });
  CHECK_FALSE(t.storage()->settled());
  CHECK(fills == 0);  // shape and dtype need no data
  CHECK(t.shape() == Shape{4});
  std::vector<std::thread> readers;
  std::atomic<int> wrong{0};
  for (int r = 0; r < 4; ++r)
    readers.emplace_back([&] {
      if (t.at<float>({3}) != 4.0f) ++wrong;
    });
  for (std::thread& th : readers) th.join();
  CHECK(wrong == 0);
  CHECK(fills == 1);
  CHECK(t.storage()->settled());
  CHECK(t.at<float>({0}) == 1.0f);
  CHECK(fills == 1);
  // A view of it and a clone see the contents too.
  Tensor u = Tensor::empty({2}, Dtype::Float32);
  u.storage()->set_pending([](void* dst) { static_cast<float*>(dst)[1] = 7.0f; });
  CHECK(u.clone().at<float>({1}) == 7.0f);
}

TEST_CASE("storage with pending contents: a fill that fails is retried on the next access") {
  Tensor t = Tensor::empty({1}, Dtype::Float64);
  int attempts = 0;
  t.storage()->set_pending([&](void* dst) {
    if (++attempts == 1) throw std::runtime_error("device error");
    *static_cast<double*>(dst) = 2.5;
  });
  CHECK_THROWS_AS(t.item<double>(), std::runtime_error);
  CHECK_FALSE(t.storage()->settled());
  CHECK(t.item<double>() == 2.5);
  CHECK(attempts == 2);
}
