// Test cases shared by the CUDA suites: every op x dtype in a few functions, compared
// between the reference backend and a CUDA backend (the emulator in CI, the GPU in
// scripts/gpu-check), and a seeded random-graph generator.
#pragma once

#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <optional>
#include <random>
#include <string>
#include <vector>

#if THEA_HAVE_CUDA
#include "cuda/runtime.hpp"
#include "fuzz/graph_gen.hpp"
#endif
#include "thea/ops/fused.hpp"
#include "thea/ops/ops.hpp"
#include "thea/thea.hpp"

namespace thea::cuda_tests {

// Sets an environment variable for a scope (unset: nullptr), restoring it afterwards: the
// cuda backend reads its switches at each lowering.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value)
      setenv(name, value, 1);
    else
      unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_)
      setenv(name_, old_->c_str(), 1);
    else
      unsetenv(name_);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// The cuda lowerings: the shared schedule's groups (the default) and the backend's own row
// groups (THEA_CUDA_LOWERING=legacy), kept for comparison on a GPU.
inline const std::vector<const char*> kLowerings = {"schedule", "legacy"};

inline const std::vector<Dtype> kDtypes = {Dtype::Bool,  Dtype::UInt8,   Dtype::Int32,
                                           Dtype::Int64, Dtype::Float32, Dtype::Float64};

// A value of `dtype` safe for every op: positive (log, sqrt), small (pow, prod).
inline Tensor sample(const Shape& shape, Dtype dtype, std::uint64_t seed) {
  Tensor t = Tensor::random_uniform(shape, 0.5, 2.5, seed, Dtype::Float64);
  if (dtype == Dtype::Bool) {
    Tensor b = Tensor::empty(shape, Dtype::Bool);
    auto v = t.to_vector();
    for (std::size_t i = 0; i < v.size(); ++i)
      b.data<bool>()[i] = static_cast<int>(v[i] * 10) % 2 == 0;
    return b;
  }
  if (is_integer(dtype)) {
    // 0.5..2.5 floored: 0, 1 and 2 (small enough for pow and prod).
    Tensor f = Tensor::empty(shape, Dtype::Float64);
    auto v = t.to_vector();
    for (std::size_t i = 0; i < v.size(); ++i) f.data<double>()[i] = std::floor(v[i]);
    return f.astype(dtype);
  }
  return t.astype(dtype);
}

struct Case {
  std::vector<Variable> inputs;
  std::vector<Variable> outputs;
  std::vector<Tensor> args;
};

// Adds `make()` to the outputs unless building it is a type error (e.g. neg of bool).
inline void try_add(std::vector<Variable>& outs, const std::function<Variable()>& make) {
  try {
    outs.push_back(make());
  } catch (const TypeError&) {
  } catch (const ValueError&) {
  }
}

// Every elementwise op and reduction over one dtype, in one function.
inline Case elementwise_case(Dtype d) {
  Case c;
  Variable x = tensor(d, 2, "x"), y = tensor(d, 2, "y"), z = tensor(d, 2, "z");
  Variable row = tensor(d, Shape{1, -1}, "row");
  Variable b = tensor(Dtype::Bool, 2, "b");
  c.inputs = {x, y, z, row, b};
  auto& o = c.outputs;
  try_add(o, [&] { return neg(x); });
  try_add(o, [&] { return abs(x); });
  try_add(o, [&] { return sgn(x); });
  try_add(o, [&] { return exp(x); });
  try_add(o, [&] { return log(x); });
  try_add(o, [&] { return log1p(x); });
  try_add(o, [&] { return sqrt(x); });
  try_add(o, [&] { return sqr(x); });
  try_add(o, [&] { return inv(x); });
  try_add(o, [&] { return tanh(x); });
  try_add(o, [&] { return sigmoid(x); });
  try_add(o, [&] { return softplus(x); });
  try_add(o, [&] { return logical_not(x); });
  for (Dtype to : kDtypes) try_add(o, [&] { return cast(x, to); });
  try_add(o, [&] { return add(x, y); });
  try_add(o, [&] { return sub(x, row); });
  try_add(o, [&] { return mul(x, y); });
  try_add(o, [&] { return true_div(x, y); });
  try_add(o, [&] { return pow(x, y); });
  try_add(o, [&] { return maximum(x, row); });
  try_add(o, [&] { return minimum(x, y); });
  try_add(o, [&] { return lt(x, y); });
  try_add(o, [&] { return le(x, y); });
  try_add(o, [&] { return gt(x, y); });
  try_add(o, [&] { return ge(x, y); });
  try_add(o, [&] { return eq(x, y); });
  try_add(o, [&] { return neq(x, y); });
  try_add(o, [&] { return logical_and(x, y); });
  try_add(o, [&] { return logical_or(x, y); });
  try_add(o, [&] { return fill(x, y); });
  try_add(o, [&] { return switch_(b, x, y); });
  try_add(o, [&] { return clip(x, y, z); });
  // A fused chain mixing dtypes.
  try_add(o, [&] { return add(mul(cast(x, Dtype::Float32), 0.5), exp(cast(y, Dtype::Float64))); });
  // Reductions of every kind, over rows, columns and everything.
  try_add(o, [&] { return sum(x, 1); });
  try_add(o, [&] { return sum(x, 0); });
  try_add(o, [&] { return sum(x); });
  try_add(o, [&] { return mean(x, 1); });
  try_add(o, [&] { return prod(x, 0); });
  try_add(o, [&] { return max(x, 1); });
  try_add(o, [&] { return min(x, 0); });
  try_add(o, [&] { return argmax(x, 1); });
  try_add(o, [&] { return argmin(x, 0); });
  try_add(o, [&] { return argmax(x); });
  // Views feeding kernels: transposes and slices.
  try_add(o, [&] { return add(x.T(), z.T()); });
  try_add(o, [&] {
    return subtensor(x, {Slice(1, std::nullopt), Slice(std::nullopt, std::nullopt, 2)});
  });
  c.args = {sample({4, 6}, d, 1), sample({4, 6}, d, 2), sample({4, 6}, d, 3), sample({1, 6}, d, 4),
            sample({4, 6}, Dtype::Bool, 5)};
  return c;
}

inline Case float_case(Dtype d) {
  Case c;
  Variable x = tensor(d, 2, "x"), w = tensor(d, 2, "w"), v = tensor(d, 1, "v");
  Variable labels = tensor(Dtype::Int32, 1, "labels");
  c.inputs = {x, w, v, labels};
  Variable p = nnet::softmax(x);
  c.outputs = {
      p, nnet::log_softmax(x * 2.0), nnet::softmax(v), nnet::categorical_crossentropy(p, labels),
      Variable(make_apply(std::make_shared<CrossentropyCategorical1HotGrad>(),
                          {sum(x, 1).node(), p.node(), labels.node()},
                          std::source_location::current())),
      one_hot(labels, 6, d), dot(x, w), dot(x.T(), x), dot(v, w), dot(x, v), dot(v, v),
      reshape(x.T(), {-1}), dimshuffle(v, {-1, 0}) * x,
      // The fused ops the stabilize/specialize rewrites produce.
      nnet::crossentropy_softmax(x, labels), nnet::crossentropy_softmax(x, p),
      nnet::crossentropy_softmax(v, nnet::softmax(v)), softmax_grad(x * 0.5, p),
      softmax_grad(v, nnet::softmax(v)), crossentropy_softmax_1hot_dx(sum(x, 1), p, labels),
      gemm(0.5, x, w), gemm(dot(x.T(), x), -2.0, x, x, 0.25, true, false),
      gemm(dot(w.T(), x.T()), 1.0, w, x, -1.0, true, true)};
  c.args = {sample({4, 6}, d, 11), sample({6, 5}, d, 12), sample({6}, d, 13),
            Tensor::from_vector<std::int32_t>({0, 5, 2, 3})};
  return c;
}

inline Case int_dot_case() {
  Case c;
  Variable a = imatrix("a"), b = lmatrix("b"), v = ivector("v");
  c.inputs = {a, b, v};
  c.outputs = {dot(a, b), dot(v, a), dot(a.T(), v)};
  c.args = {sample({3, 4}, Dtype::Int32, 21), sample({4, 2}, Dtype::Int64, 22),
            sample({3}, Dtype::Int32, 23)};
  return c;
}

// Products with a few static output columns (the CUDA backend's generated skinny gemm,
// N <= 32) in every layout it reads: dot(X, W) (X's rows along the reduction), dot(X.T, G)
// (the SGD update's shape: X's columns), a transposed B, the C + s * dot epilogue, gemm with
// host and device alpha/beta and beta = 0, and a static and a per-call (index) slice of a
// larger matrix. X is m x k (run-time sizes); n is the static column count.
// (rows, reduction, columns) of a product case.
struct GemmShape {
  std::int64_t m, k, n;
};

// compare(case, tolerance) on make(dtype, m, k, n) for float32 and float64 over `shapes`,
// with the dtype and the shape in the failure log.
template <class Make, class Compare>
void for_float_shapes(std::initializer_list<GemmShape> shapes, double tol32, Make&& make,
                      Compare&& compare) {
  for (Dtype d : {Dtype::Float32, Dtype::Float64})
    for (const GemmShape& s : shapes) {
      CAPTURE(dtype_name(d));
      CAPTURE(s.m);
      CAPTURE(s.k);
      CAPTURE(s.n);
      compare(make(d, s.m, s.k, s.n), d == Dtype::Float32 ? tol32 : 1e-9);
    }
}

inline Case skinny_gemm_case(Dtype d, std::int64_t m, std::int64_t k, std::int64_t n) {
  Case c;
  Variable X = tensor(d, 2, "X");
  Variable W = tensor(d, Shape{-1, n}, "W");    // k x n
  Variable Wt = tensor(d, Shape{n, -1}, "Wt");  // n x k
  Variable G = tensor(d, Shape{-1, n}, "G");    // m x n
  Variable C = tensor(d, Shape{-1, n}, "C");    // k x n
  Variable big = tensor(d, 2, "big");           // (m + 3) x (k + 2)
  Variable s = tensor(d, 0, "s");
  Variable i = lscalar("i");
  c.inputs = {X, W, Wt, G, C, big, s, i};
  c.outputs = {dot(X, W),
               dot(X.T(), G),
               dot(X, Wt.T()),
               C + dot(X.T(), G) * s,
               gemm(C, s, X, G, 0.5, true, false),
               gemm(C, mean(G), X, G, sum(G) * 0.125, true, false),
               gemm(C, 2.0, X, G, 0.0, true, false),
               gemm(0.5, X, W),
               dot(subtensor(big, {Slice(1, m + 1), Slice(2, k + 2)}), W),
               dot(subtensor(big, {Slice(i, i + m), Slice(1, k + 1)}), W)};
  c.args = {sample({m, k}, d, 41),   sample({k, n}, d, 42),          sample({n, k}, d, 43),
            sample({m, n}, d, 44),   sample({k, n}, d, 45),          sample({m + 3, k + 2}, d, 46),
            Tensor::scalar(0.75, d), Tensor::scalar(2, Dtype::Int64)};
  return c;
}

// Row kernels that compute their product first: softmax/argmax/cross-entropy of dot(X, W)
// (predict and the cost), the product read twice (softmax and cross-entropy), X a transposed
// view and a per-call slice. X is m x k (run-time sizes), W k x n (n static).
inline Case row_gemm_case(Dtype d, std::int64_t m, std::int64_t k, std::int64_t n) {
  Case c;
  Variable X = tensor(d, 2, "X"), Xt = tensor(d, 2, "Xt"), big = tensor(d, 2, "big");
  Variable W = tensor(d, Shape{-1, n}, "W");
  Variable Y = tensor(d, Shape{-1, n}, "Y"), Y2 = tensor(d, Shape{-1, n}, "Y2");
  Variable labels = lvector("labels");
  Variable i = lscalar("i");
  c.inputs = {X, Xt, big, W, Y, Y2, labels, i};
  Variable xs = subtensor(big, {Slice(i, i + m), Slice(1, k + 1)});
  Variable p = nnet::softmax(dot(X, W));
  c.outputs = {argmax(nnet::softmax(dot(X, W)), 1),
               mean(nnet::categorical_crossentropy(p, Y)),
               grad(mean(nnet::categorical_crossentropy(p, Y)), W),
               nnet::log_softmax(dot(Xt.T(), W)) * 2.0,
               sum(nnet::softmax(dot(xs, W)) * Y2, 1),
               nnet::categorical_crossentropy(nnet::softmax(dot(xs, W)), labels)};
  Tensor lab = Tensor::zeros({m}, Dtype::Int64);
  for (std::int64_t r = 0; r < m; ++r) lab.set({r}, static_cast<double>((r * 5) % n));
  // Small weights keep the logits O(1): softmax neither saturates nor cancels.
  c.args = {sample({m, k}, d, 51),
            sample({k, m}, d, 52),
            sample({m + 3, k + 2}, d, 53),
            Tensor::random_uniform({k, n}, -0.02, 0.02, 54, Dtype::Float64).astype(d),
            sample({m, n}, d, 55),
            sample({m, n}, d, 56),
            lab,
            Tensor::scalar(2, Dtype::Int64)};
  return c;
}

// Row kernels that also add up a per-row value over all rows: the mean cost (rows not
// stored), a sum of row maxima, rows that are both an output and summed, a keepdims
// column; each over its own inputs (a row kernel of its own), or all over the same x (one
// row kernel, which adds up one of them: the others stay reduce kernels). m rows (run
// time), n columns (static).
inline Case row_total_case(Dtype d, std::int64_t m, std::int64_t n, bool shared_x) {
  Case c;
  std::vector<Variable> xs, ys;
  for (int k = 0; k < 4; ++k) {
    xs.push_back(tensor(d, Shape{-1, n}, "x" + std::to_string(k)));
    ys.push_back(tensor(d, Shape{-1, n}, "y" + std::to_string(k)));
    if (shared_x && k > 0) continue;
    c.inputs.push_back(xs.back());
    c.inputs.push_back(ys.back());
    c.args.push_back(sample({m, n}, d, 61 + 2 * static_cast<std::uint64_t>(k)));
    c.args.push_back(sample({m, n}, d, 62 + 2 * static_cast<std::uint64_t>(k)));
  }
  auto x = [&](int k) { return shared_x ? xs[0] : xs[static_cast<std::size_t>(k)]; };
  auto y = [&](int k) { return shared_x ? ys[0] : ys[static_cast<std::size_t>(k)]; };
  Variable r = sum(exp(x(2) * 0.5), 1);
  c.outputs = {mean(nnet::categorical_crossentropy(nnet::softmax(x(0)), y(0))),
               sum(max(x(1) * 2.0, 1)), r, mean(r), mean(sum(x(3) * y(3), 1, true))};
  return c;
}

// take and inc_rows over one dtype: strided and transposed sources, rank 1 and 3, negative
// and repeated indices (inc_rows sums duplicates in index order), int32/int64/uint8 indices,
// broadcast updates, empty index vectors, and Take's gradient (an inc_rows into zeros).
inline Case gather_scatter_case(Dtype d) {
  Case c;
  Variable x = tensor(d, 2, "x"), v = tensor(d, 1, "v"), t3 = tensor(d, 3, "t3");
  Variable y = tensor(d, 2, "y"), row = tensor(d, Shape{1, -1}, "row");
  Variable i64 = lvector("i64"), i32 = ivector("i32"), u8 = bvector("u8"), none = lvector("none");
  c.inputs = {x, v, t3, y, row, i64, i32, u8, none};
  auto& o = c.outputs;
  try_add(o, [&] { return take(x, i64); });
  try_add(o, [&] { return take(x.T(), i32); });
  try_add(o, [&] { return take(subtensor(x, {Slice(std::nullopt, std::nullopt, 2)}), u8); });
  try_add(o, [&] { return take(v, i64); });
  try_add(o, [&] { return take(t3, i32); });
  try_add(o, [&] { return take(x, none); });
  try_add(o, [&] { return inc_rows(x, i64, y); });    // duplicates: rows 1 and 3 twice
  try_add(o, [&] { return inc_rows(x, i64, row); });  // one row broadcast to every index
  try_add(o, [&] { return inc_rows(x.T(), u8, take(x.T(), u8)); });  // a view as x
  try_add(o, [&] { return inc_rows(v, i32, take(v, i32)); });
  try_add(o, [&] { return inc_rows(t3, i64, take(t3, i64)); });
  try_add(o, [&] { return inc_rows(x, none, take(x, none)); });
  if (is_float(d)) try_add(o, [&] { return grad(sum(sqr(take(x, i64))), x); });
  c.args = {sample({5, 4}, d, 31),
            sample({6}, d, 32),
            sample({4, 2, 3}, d, 33),
            sample({6, 4}, d, 34),
            sample({1, 4}, d, 35),
            Tensor::from_vector<std::int64_t>({1, 3, -1, 1, 0, 3}),
            Tensor::from_vector<std::int32_t>({3, -4, 0, 2}),
            Tensor::from_vector<std::uint8_t>({2, 0, 2}),
            Tensor::zeros({0}, Dtype::Int64)};
  return c;
}

// allclose that also accepts matching NaNs and infinities (integer division by zero).
inline bool same_values(const Tensor& a, const Tensor& b, double rtol, double atol) {
  if (a.shape() != b.shape()) return false;
  auto x = a.to_vector(), y = b.to_vector();
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (std::isnan(x[i]) || std::isnan(y[i])) {
      if (!(std::isnan(x[i]) && std::isnan(y[i]))) return false;
      continue;
    }
    if (std::isinf(x[i]) || std::isinf(y[i])) {
      if (x[i] != y[i]) return false;
      continue;
    }
    if (std::abs(x[i] - y[i]) > atol + rtol * std::abs(y[i])) return false;
  }
  return true;
}

inline void compare_backends(const Case& c, const std::string& backend, double rtol, double atol) {
  FunctionOptions ro, eo;
  ro.backend = "reference";
  eo.backend = backend;
  Function ref = function(c.inputs, c.outputs, {}, ro);
  Function emu = function(c.inputs, c.outputs, {}, eo);
  auto want = ref(c.args);
  auto got = emu(c.args);
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    CAPTURE(i);
    CAPTURE(c.outputs[i].describe());
    CHECK(got[i].dtype() == want[i].dtype());
    REQUIRE(got[i].shape() == want[i].shape());
    if (!same_values(got[i], want[i], rtol, atol)) {
      INFO("got  " << got[i].to_string());
      INFO("want " << want[i].to_string());
      CHECK(false);
    }
  }
}

// ---- random graphs -----------------------------------------------------------------

struct RandomGraph {
  std::vector<Variable> inputs, outputs;
  std::vector<Tensor> args;
  std::uint64_t seed = 0;
};

// A seeded random graph over small matrices: elementwise chains with broadcasting,
// reductions (any axis, keepdims), argmax, softmax/log_softmax, cross-entropy, dot,
// transposes, strided slices, casts, and the gradient of a scalar of the result. Runtime
// sizes are >= 2 wherever the static type is not 1, so broadcasting is always legal.
inline RandomGraph random_graph(std::uint64_t seed) {
  RandomGraph g;
  g.seed = seed;
  std::mt19937_64 rng(seed);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<std::uint64_t>(n)); };
  const std::int64_t R = 2 + pick(5), C = 2 + pick(6);
  const Dtype fdt = pick(4) == 0 ? Dtype::Float64 : Dtype::Float32;
  struct Entry {
    Variable v;
    Shape rt;  // runtime shape
  };
  std::vector<Entry> pool;
  auto input = [&](Shape stat, Shape rt, Dtype d) {
    Variable v = tensor(d, stat, "in" + std::to_string(g.inputs.size()));
    Tensor t = d == Dtype::Int32
                   ? Tensor::random_uniform(rt, -3, 3, rng(), Dtype::Float64).astype(Dtype::Int32)
                   : Tensor::random_uniform(rt, -2, 2, rng(), d);
    g.inputs.push_back(v);
    g.args.push_back(t);
    pool.push_back({v, rt});
  };
  input({-1, -1}, {R, C}, fdt);
  input({-1, -1}, {R, C}, fdt);
  if (pick(2)) input({1, -1}, {1, C}, fdt);
  if (pick(2)) input({-1, 1}, {R, 1}, fdt);
  if (pick(3) == 0) input({-1}, {C}, fdt);
  if (pick(3) == 0) input({-1, -1}, {R, C}, Dtype::Int32);
  if (pick(3) == 0) input({}, {}, fdt);
  auto is_mat = [](const Entry& e) { return e.rt.size() == 2 && e.rt[0] > 1 && e.rt[1] > 1; };
  auto any = [&]() -> Entry& {
    return pool[static_cast<std::size_t>(pick(static_cast<int>(pool.size())))];
  };
  auto any_float = [&]() -> Entry {
    Entry e = any();
    if (!is_float(e.v.dtype())) e.v = cast(e.v, fdt);
    return e;
  };
  auto mat = [&]() -> Entry {
    for (int tries = 0; tries < 20; ++tries) {
      Entry& e = any();
      if (is_mat(e)) return is_float(e.v.dtype()) ? e : Entry{cast(e.v, fdt), e.rt};
    }
    return pool[0];
  };
  auto bshape = [](const Shape& a, const Shape& b) -> std::optional<Shape> {
    std::size_t n = std::max(a.size(), b.size());
    Shape out(n, 1);
    for (std::size_t i = 0; i < n; ++i) {
      std::int64_t x = i + a.size() >= n ? a[i + a.size() - n] : 1;
      std::int64_t y = i + b.size() >= n ? b[i + b.size() - n] : 1;
      if (x != y && x != 1 && y != 1) return std::nullopt;
      out[i] = std::max(x, y);
    }
    return out;
  };
  const int n_ops = 4 + pick(6);
  for (int k = 0; k < n_ops; ++k) {
    Entry a = any_float(), b = any_float();
    auto bs = bshape(a.rt, b.rt);
    try {
      switch (pick(16)) {
        case 0:
          pool.push_back({tanh(a.v) * 2.0 + sigmoid(a.v), a.rt});
          break;
        case 1:
          pool.push_back({log(abs(a.v) + 1.0) - sqrt(abs(a.v)), a.rt});
          break;
        case 2:
          pool.push_back({exp(tanh(a.v)) * sqr(a.v) - softplus(a.v), a.rt});
          break;
        case 3:
          if (bs) pool.push_back({a.v * b.v + (a.v - b.v), *bs});
          break;
        case 4:
          if (bs) pool.push_back({true_div(a.v, abs(b.v) + 1.0), *bs});
          break;
        case 5:
          if (bs) pool.push_back({maximum(a.v, b.v) - minimum(a.v, -b.v), *bs});
          break;
        case 6:
          if (bs) pool.push_back({switch_(gt(a.v, b.v), a.v, b.v * 0.5), *bs});
          break;
        case 7: {
          if (a.rt.empty()) break;
          int axis = pick(static_cast<int>(a.rt.size()) + 1) - 1;  // -1: all axes
          bool keep = pick(2);
          Variable r;
          Shape rs;
          switch (pick(4)) {
            case 0:
              r = axis < 0 ? sum(a.v) : sum(a.v, axis, keep);
              break;
            case 1:
              r = axis < 0 ? mean(a.v) : mean(a.v, axis, keep);
              break;
            case 2:
              r = axis < 0 ? max(a.v) : max(a.v, axis, keep);
              break;
            default:
              r = axis < 0 ? min(a.v) : min(a.v, axis, keep);
              break;
          }
          for (int d = 0; d < static_cast<int>(a.rt.size()); ++d)
            if (axis >= 0 && d != axis)
              rs.push_back(a.rt[static_cast<std::size_t>(d)]);
            else if (axis >= 0 && keep)
              rs.push_back(1);
          pool.push_back({r, rs});
          break;
        }
        case 8: {
          Entry m = mat();
          pool.push_back({pick(2) ? nnet::softmax(m.v) : nnet::log_softmax(m.v), m.rt});
          break;
        }
        case 9: {
          Entry m = mat(), n = mat();
          if (m.rt == n.rt)
            pool.push_back({nnet::categorical_crossentropy(nnet::softmax(m.v), nnet::softmax(n.v)),
                            {m.rt[0]}});
          break;
        }
        case 10: {
          Entry m = mat();
          pool.push_back({dot(m.v, m.v.T()), {m.rt[0], m.rt[0]}});
          break;
        }
        case 11: {
          Entry m = mat();
          pool.push_back({m.v.T(), {m.rt[1], m.rt[0]}});
          break;
        }
        case 12: {
          Entry m = mat();
          if (m.rt[0] >= 4)
            pool.push_back({subtensor(m.v, {Slice(Variable(1), std::nullopt, Variable(2))}),
                            {(m.rt[0] - 1 + 1) / 2, m.rt[1]}});
          break;
        }
        case 13: {
          Entry m = mat();
          pool.push_back({cast(argmax(m.v, 1), fdt) + sum(m.v, 1), {m.rt[0]}});
          break;
        }
        case 14: {
          Dtype other = a.v.dtype() == Dtype::Float32 ? Dtype::Float64 : Dtype::Float32;
          pool.push_back({cast(cast(a.v, other) * 1.5, a.v.dtype()), a.rt});
          break;
        }
        default: {
          Entry m = mat();
          Variable w = m.v;
          pool.push_back({dot(nnet::softmax(w), w.T()) * 0.5, {m.rt[0], m.rt[0]}});
          break;
        }
      }
    } catch (const Error&) {
      // An invalid combination for this op (a static shape clash): draw again.
    }
  }
  // Outputs: the last results, one at random, and a gradient through everything.
  std::size_t n_in = g.inputs.size();
  for (std::size_t k = pool.size() > n_in + 2 ? pool.size() - 2 : n_in; k < pool.size(); ++k)
    g.outputs.push_back(pool[k].v);
  if (pool.size() > n_in)
    g.outputs.push_back(
        pool[n_in + static_cast<std::size_t>(pick(static_cast<int>(pool.size() - n_in)))].v);
  if (g.outputs.empty()) g.outputs.push_back(pool.back().v);
  // The gradient of a scalar touching every float result w.r.t. the first input: it runs
  // the vjps (softmax_grad, cross-entropy, dot, reductions, slices) backwards.
  Variable cost;
  for (std::size_t k = n_in; k < pool.size(); ++k) {
    if (!is_float(pool[k].v.dtype())) continue;
    Variable term = mean(sqr(pool[k].v));
    cost = cost ? cost + term : term;
  }
  if (cost) {
    try {
      GradOptions go;
      go.disconnected_inputs = Disconnected::Ignore;
      g.outputs.push_back(grad(cost, g.inputs[0], go));
      g.outputs.push_back(cost);
    } catch (const Error&) {
    }
  }
  return g;
}

// Compares `n` random graphs (seeds first..first+n) on `backend` with the reference,
// `batch` graphs per compiled function. Returns the number of mismatching graphs.
inline int fuzz_backend(const std::string& backend, std::uint64_t first, int n, int batch) {
  int bad = 0;
  for (int start = 0; start < n; start += batch) {
    std::vector<RandomGraph> gs;
    Case c;
    std::vector<std::pair<std::size_t, std::size_t>> owner;  // output -> (graph, index)
    for (int k = start; k < std::min(n, start + batch); ++k) {
      gs.push_back(random_graph(first + static_cast<std::uint64_t>(k)));
      const RandomGraph& rg = gs.back();
      for (std::size_t i = 0; i < rg.inputs.size(); ++i) {
        c.inputs.push_back(rg.inputs[i]);
        c.args.push_back(rg.args[i]);
      }
      for (std::size_t i = 0; i < rg.outputs.size(); ++i) {
        c.outputs.push_back(rg.outputs[i]);
        owner.emplace_back(gs.size() - 1, i);
      }
    }
    FunctionOptions ro, eo;
    ro.backend = "reference";
    eo.backend = backend;
    std::vector<Tensor> want;
    try {
      want = function(c.inputs, c.outputs, {}, ro)(c.args);
    } catch (const Error& e) {
      MESSAGE("reference rejected batch at seed " << first + static_cast<std::uint64_t>(start)
                                                  << ": " << std::string(e.what()));
      continue;
    }
    std::vector<Tensor> got;
    try {
      Function f = function(c.inputs, c.outputs, {}, eo);
      got = f(c.args);
      auto again = f(c.args);  // the replayed (captured) path too
      for (std::size_t i = 0; i < got.size(); ++i)
        if (!same_values(again[i], got[i], 0, 0)) {
          FAIL_CHECK("replay differs from the first call at output "
                     << i << " of batch at seed " << first + static_cast<std::uint64_t>(start));
          ++bad;
        }
    } catch (const Error& e) {
      FAIL_CHECK("backend " << backend << " threw on batch at seed "
                            << first + static_cast<std::uint64_t>(start) << ": "
                            << std::string(e.what()));
      ++bad;
      continue;
    }
    std::vector<char> graph_bad(gs.size(), 0);
    for (std::size_t i = 0; i < want.size(); ++i) {
      const bool f32 = want[i].dtype() == Dtype::Float32;
      const double tol = f32 ? 2e-4 : 1e-9;
      if (got[i].dtype() != want[i].dtype() || !same_values(got[i], want[i], tol, tol)) {
        const RandomGraph& rg = gs[owner[i].first];
        if (!graph_bad[owner[i].first]) {
          FAIL_CHECK("random graph seed " << rg.seed << " output " << owner[i].second << " ("
                                          << c.outputs[i].describe() << ") differs on " << backend
                                          << "\n  got  " << got[i].to_string() << "\n  want "
                                          << want[i].to_string());
          ++bad;
        }
        graph_bad[owner[i].first] = 1;
      }
    }
  }
  MESSAGE("random graphs: " << n << " graphs, " << bad << " mismatches (backend " << backend
                            << ")");
  return bad;
}

#if THEA_HAVE_CUDA
// Each Runtime operation on its own (module load, launch, copies, cuBLAS direct and
// indirect, capture/replay), so a failure names the CUDA feature that broke.
inline void runtime_smoke(cuda::Runtime& rt) {
  std::shared_ptr<cuda::Module> mod;
  REQUIRE_NOTHROW(mod = rt.load_module(R"(
extern "C" __global__ void __launch_bounds__(1024) smoke(const thea_params<3> p, const long long* __restrict__ args) {
  const long long n = p.w[0];
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    ((float*)p.w[2])[i] = thea_mul<float>(((const float*)p.w[1])[i], (float)thea_arg_f64(args, 0));
}
#ifdef THEA_EMU
extern "C" void smoke__emu(const long long* p, const long long* a) {
  smoke(*reinterpret_cast<const thea_params<3>*>(p), a);
}
#endif
)",
                                       "smoke"));
  MESSAGE("module compiled in " << mod->compile_seconds << " s (cache: " << mod->from_cache << ")");
  void* k = nullptr;
  REQUIRE_NOTHROW(k = mod->kernel("smoke"));
  cuda::Stream s = rt.create_stream();
  const int n = 1000;
  std::vector<float> x(n), y(n, -1);
  for (int i = 0; i < n; ++i) x[static_cast<std::size_t>(i)] = static_cast<float>(i);
  cuda::DeviceBuffer dx(&rt.allocator(), n * 4), dy(&rt.allocator(), n * 4),
      da(&rt.allocator(), 64);
  double three = 3.0;
  std::int64_t args[8] = {};
  std::memcpy(&args[0], &three, 8);
  float one = 1.0f, zero = 0.0f;
  std::memcpy(&args[1], &one, 4);
  std::memcpy(&args[2], &zero, 4);
  SUBCASE("copies and a kernel launch") {
    rt.memcpy_h2d(dx.get(), x.data(), n * 4, s);
    rt.memcpy_h2d(da.get(), args, sizeof args, s);
    std::int64_t params[3] = {n, reinterpret_cast<std::int64_t>(dx.get()),
                              reinterpret_cast<std::int64_t>(dy.get())};
    REQUIRE_NOTHROW(rt.launch(k, cuda::elementwise_config(n, rt.info()), params, 3,
                              static_cast<const std::int64_t*>(da.get()), s));
    rt.memcpy_d2h(y.data(), dy.get(), n * 4, s);
    REQUIRE_NOTHROW(rt.synchronize(s));
    CHECK(y[999] == 2997.0f);
    CHECK(y[1] == 3.0f);
  }
  SUBCASE("cuBLAS gemm, direct and indirect, alpha/beta in device memory") {
    // A (2x3) . B (3x2), row-major.
    std::vector<float> a = {1, 2, 3, 4, 5, 6}, b = {1, 0, 0, 1, 1, 1}, c(4, -1), c2(4, -1);
    cuda::DeviceBuffer ga(&rt.allocator(), 24), gb(&rt.allocator(), 24), gc(&rt.allocator(), 16),
        gp(&rt.allocator(), 24);
    rt.memcpy_h2d(ga.get(), a.data(), 24, s);
    rt.memcpy_h2d(gb.get(), b.data(), 24, s);
    rt.memcpy_h2d(da.get(), args, sizeof args, s);
    cuda::MatView A{ga.get(), 2, 3, 3, 1}, B{gb.get(), 3, 2, 2, 1}, C{gc.get(), 2, 2, 2, 1};
    auto plan = cuda::plan_gemm(A, B, C);
    REQUIRE(plan.ok);
    const auto* dargs = static_cast<const std::int64_t*>(da.get());
    REQUIRE_NOTHROW(rt.gemm(Dtype::Float32, plan, dargs + 1, A, B, dargs + 2, C, s));
    rt.memcpy_d2h(c.data(), gc.get(), 16, s);
    rt.synchronize(s);
    CHECK(c == std::vector<float>{4, 5, 10, 11});
    void* ptrs[3] = {ga.get(), gb.get(), gc.get()};
    rt.memcpy_h2d(gp.get(), ptrs, 24, s);
    auto* dp = static_cast<void* const*>(gp.get());
    rt.memset_d(gc.get(), 0, 16, s);
    REQUIRE_NOTHROW(
        rt.gemm_indirect(Dtype::Float32, plan, dargs + 1, dp, dp + 1, dargs + 2, dp + 2, s));
    rt.memcpy_d2h(c2.data(), gc.get(), 16, s);
    rt.synchronize(s);
    CHECK(c2 == std::vector<float>{4, 5, 10, 11});
  }
  SUBCASE("stream capture and replay") {
    rt.memcpy_h2d(dx.get(), x.data(), n * 4, s);
    rt.memcpy_h2d(da.get(), args, sizeof args, s);
    std::int64_t params[3] = {n, reinterpret_cast<std::int64_t>(dx.get()),
                              reinterpret_cast<std::int64_t>(dy.get())};
    rt.synchronize(s);
    rt.begin_capture(s);
    rt.launch(k, cuda::elementwise_config(n, rt.info()), params, 3,
              static_cast<const std::int64_t*>(da.get()), s);
    rt.memcpy_d2d(dx.get(), dy.get(), n * 4, s);
    auto g = rt.end_capture(s);
    REQUIRE(g != nullptr);
    g->launch(s);
    g->launch(s);  // x * 3 * 3
    rt.memcpy_d2h(y.data(), dy.get(), n * 4, s);
    rt.synchronize(s);
    CHECK(y[10] == 90.0f);
  }
  rt.destroy_stream(s);
}
#endif  // THEA_HAVE_CUDA

// Outputs returned before the device has copied them back (Storage::set_pending): 40 calls
// of a function updating a shared variable, every result kept unread, then read after the
// function is gone, against the reference; THEA_CUDA_LAZY_OUTPUTS=0 returns settled ones.
inline void lazy_outputs_case(const std::string& backend) {
  Variable x = fmatrix("x");
  Variable w = shared(Tensor::random_normal({6, 3}, 0, 1, 3), "w");
  Variable wr = shared(w.get_value().clone(), "wr");
  auto outs = [](const Variable& xx, const Variable& ww) {
    Variable y = dot(xx, ww);
    return std::vector<Variable>{sum(y * y), y};
  };
  FunctionOptions ref_o, dev_o;
  ref_o.backend = "reference";
  dev_o.backend = backend;
  Function ref = function({x}, outs(x, wr), {{wr, wr * 0.9f}}, ref_o);
  std::vector<std::vector<Tensor>> want, got;
  {
    Function dev = function({x}, outs(x, w), {{w, w * 0.9f}}, dev_o);
    // More calls than the ring has slots: its reuse settles the oldest results.
    for (int call = 0; call < 40; ++call) {
      const Tensor xs = Tensor::random_uniform({5, 6}, -1.0, 1.0, 100 + call);
      want.push_back(ref({xs}));
      got.push_back(dev({xs}));
      if (call == 0) {
        CHECK_FALSE(got[0][0].storage()->settled());  // returned before the copy was waited for
        CHECK_FALSE(got[0][1].storage()->settled());
      }
    }
  }  // results still unread when the function goes are settled by it
  for (std::size_t call = 0; call < got.size(); ++call) {
    CAPTURE(call);
    CHECK(allclose(got[call][0], want[call][0], 1e-5, 1e-5));
    CHECK(allclose(got[call][1], want[call][1], 1e-5, 1e-5));
  }
  setenv("THEA_CUDA_LAZY_OUTPUTS", "0", 1);
  Function eager = function({x}, outs(x, w), {}, dev_o);
  unsetenv("THEA_CUDA_LAZY_OUTPUTS");
  const std::vector<Tensor> r = eager({Tensor::random_uniform({5, 6}, -1.0, 1.0, 7)});
  CHECK(r[0].storage()->settled());
}

// softmax and log_softmax as kernels of their own, with THEA_CUDA_CUDNN=1 (cuDNN where it
// loads; the emulator has none and runs thea's kernel) and 0, float32 and float64, empty
// rows included, each call eager, captured and replayed, against the reference.
inline void standalone_softmax_case(const std::string& backend) {
  for (Dtype d : {Dtype::Float32, Dtype::Float64})
    for (const Shape& sh : {Shape{128, 10}, Shape{1000, 37}, Shape{64, 1024}, Shape{0, 5}}) {
      CAPTURE(shape_str(sh));
      CAPTURE(dtype_name(d));
      Variable x = tensor(d, Shape{kUnknownDim, kUnknownDim}, "x");
      const Tensor xs = Tensor::random_normal(sh, 0, 3, 11).astype(d);
      FunctionOptions ref_o, dev_o;
      ref_o.backend = "reference";
      dev_o.backend = backend;
      Function ref = function({x}, {nnet::softmax(x), nnet::log_softmax(x)}, {}, ref_o);
      const std::vector<Tensor> want = ref({xs});
      for (const char* dnn : {"1", "0"}) {
        CAPTURE(dnn);
        setenv("THEA_CUDA_CUDNN", dnn, 1);
        Function f = function({x}, {nnet::softmax(x), nnet::log_softmax(x)}, {}, dev_o);
        unsetenv("THEA_CUDA_CUDNN");
        for (int call = 0; call < 3; ++call) {
          const std::vector<Tensor> got = f({xs});
          CHECK(allclose(got[0], want[0], 1e-5, 1e-6));
          CHECK(allclose(got[1], want[1], 1e-5, 1e-5));
        }
      }
    }
}

// The shared fuzz generator's seeds [first, first + n) (THEA_FUZZ_SEED / THEA_FUZZ_COUNT
// override them) on `backend` against the reference, until `budget_s` seconds have passed;
// mismatches fail the test, the first three with the whole case. `progress` names each seed
// on stderr first, so a log cut by a timeout names the one that hung. `repeats` > 1 runs
// each case's calls that many times over, in order, so every call key comes back (memoized
// calls, graphs per call key).
inline void fuzz_generator_vs_reference(const std::string& backend, std::uint64_t first,
                                        std::uint64_t n, double budget_s, bool progress,
                                        int repeats = 1) {
  if (const char* env = std::getenv("THEA_FUZZ_SEED")) first = std::strtoull(env, nullptr, 10);
  if (const char* env = std::getenv("THEA_FUZZ_COUNT")) n = std::strtoull(env, nullptr, 10);
  int bad = 0;
  std::uint64_t ran = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (std::uint64_t seed = first; seed < first + n; ++seed, ++ran) {
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (t > budget_s) break;
    if (progress) {
      std::fprintf(stderr, "[fuzz %.1fs] seed %llu\n", t, static_cast<unsigned long long>(seed));
      std::fflush(stderr);
    }
    FunctionOptions a, b;
    a.backend = backend;
    b.backend = "reference";
    fuzz::FuzzCase c = fuzz::make_case(seed);
    const std::vector<std::vector<Tensor>> once = c.call_inputs;
    for (int k = 1; k < repeats; ++k)
      c.call_inputs.insert(c.call_inputs.end(), once.begin(), once.end());
    c.calls = static_cast<int>(c.call_inputs.size());
    const auto r = fuzz::compare_case(c, a, b);
    if (!r.ok) {
      ++bad;
      if (bad <= 3)
        FAIL_CHECK(r.message);
      else
        FAIL_CHECK("seed " << seed << " differs");
    }
  }
  const std::string how = repeats > 1 ? " with their calls repeated" : "";
  MESSAGE("random graphs (fuzz generator) on " << backend << ": " << ran << " graphs" << how << ", "
                                               << bad << " mismatches");
}

}  // namespace thea::cuda_tests
