// Every random graph that ever failed, re-run on every backend by test_fuzz
// ("fuzz: regression seeds"). Two kinds:
//  - kRegressions: (generator version, seed) pairs. A seed only reproduces its graph with
//    the generator version that found it; bumping kGeneratorVersion makes them stale
//    (reported, not run), so before bumping, turn each into a regression_cases() entry.
//  - regression_cases(): the failing graph written out by hand (minimized), independent
//    of the generator.
// Append to both when a fuzz run finds a bug: the seed right away, the hand-written case
// once the graph is understood.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "fuzz/graph_gen.hpp"

namespace thea::fuzz {

struct Regression {
  int generator_version;
  std::uint64_t seed;
  const char* note;                    // what failed, where
  int max_ops = GenOptions().max_ops;  // THEA_FUZZ_MAX_OPS of the run that found it
};

inline const std::vector<Regression> kRegressions = {
    // cpu backend: mean of an integer tensor whose sum is negative (float64 result) is
    // ~2^62 (the negative sum converted as unsigned?); see regression_cases().
    {1, 568, "cpu: mean(int32 vector) with a negative sum"},
    {1, 1439, "cpu: mean(int64 vector, keepdims) with a negative sum, then pow(tanh(..), x)"},
    {1, 1891, "cpu: mean over an axis of an int tensor, negative sums"},
    {1, 2082, "cpu: mean(reshape(int)) with a negative sum"},
    {1, 2567, "cpu: mean(minimum(int, int)) with negative sums"},
    {1, 2592, "cpu: mean(int scalar input) negative"},
    {1, 2766, "cpu: mean(int tensor3) negative, then arithmetic"},
    {1, 200358, "cpu: sum over an empty slice fused into its consumer (pow): garbage", 30},
    {1, 202319, "cpu: zero-size switch fused with a (1, 2) update: update never computed", 30},
    {1, 97, "cpu: a chain's combine wrote w in place before its loop's finish read w (decay)"},
};

struct RegressionCase {
  std::string note;
  std::function<FuzzCase()> build;
};

// A case from explicit inputs, outputs and per-call input values (no shared variables).
inline FuzzCase hand_case(std::vector<Variable> inputs, std::vector<Variable> outputs,
                          std::vector<Shape> output_shapes,
                          std::vector<std::vector<Tensor>> call_inputs) {
  FuzzCase c;
  c.calls = static_cast<int>(call_inputs.size());
  c.inputs = std::move(inputs);
  c.outputs = std::move(outputs);
  c.output_shapes = std::move(output_shapes);
  c.output_mags.assign(c.outputs.size(), 1);
  c.call_inputs = std::move(call_inputs);
  return c;
}

inline std::vector<RegressionCase> regression_cases() {
  std::vector<RegressionCase> cases;
  // Found as seed 494 (generator under development): canonicalize's sub_neg rewrote
  // x - (-y) into x + y for an int64 x and a uint8 y, but -y wraps around in uint8 before
  // it is widened (numpy: -uint8(8) == 248), so x - (-y) is x - 248, not x + 8. The same
  // for x + (-y) -> x - y. Fixed in ops/rewrites/canonicalize.cpp (operands must already
  // have the result's dtype).
  cases.push_back({"sub_neg with a uint8 negation widened to int64", [] {
                     Variable x = tensor(Dtype::Int64, 1, "x");
                     Variable y = tensor(Dtype::UInt8, 1, "y");
                     auto u8 = [](std::vector<std::uint8_t> v) { return Tensor::from_vector(v); };
                     auto i64 = [](std::vector<std::int64_t> v) { return Tensor::from_vector(v); };
                     return hand_case(
                         {x, y}, {sub(x, neg(y)), add(x, neg(y)), add(neg(y), x)}, {{3}, {3}, {3}},
                         {{i64({0, 5, -3}), u8({8, 0, 200})}, {i64({7, -1, 2}), u8({1, 255, 9})}});
                   }});
  // Found as seed 568 on the cpu backend: mean(x) of an int32 vector (a float64 result)
  // gave 4.611686018e+18 (~2^62) instead of -2.5: every integer mean whose sum is negative
  // is wrong (mean(x), mean(m, 0) here), those with positive sums are right. With its
  // neighbours: other reductions of int32 and int64 inputs, whole and along an axis.
  cases.push_back(
      {"reductions of int32 inputs (mean -> float64, sum -> int64)", [] {
         Variable x = tensor(Dtype::Int32, 1, "x");
         Variable m = tensor(Dtype::Int32, 2, "m");
         Variable l = tensor(Dtype::Int64, 1, "l");
         auto i32 = [](std::vector<std::int32_t> v, Shape s = {}) {
           return Tensor::from_vector(v, s);
         };
         auto i64 = [](std::vector<std::int64_t> v) { return Tensor::from_vector(v); };
         return hand_case(
             {x, m, l}, {mean(x), sum(x), max(x), prod(x), mean(m, 0), sum(m, 1), mean(l), mean(m)},
             {{}, {}, {}, {}, {3}, {2}, {}, {}},
             {{i32({-4, -4, 3, -5}), i32({1, 2, 3, -4, 5, -6}, {2, 3}), i64({7, -2})},
              {i32({4, 3, 3, 4}), i32({0, 0, 9, 9, -9, 1}, {2, 3}), i64({1, 1})}});
       }});
  // Found as seed 202319 (THEA_FUZZ_MAX_OPS=30) on the cpu backend: an elementwise op with a
  // zero-size result (switch over (0, 0, 1, 2)) and one over (1, 2) reading the same shared
  // variable were fused into one loop over the empty shape, so the (1, 2) update was never
  // computed (w0 became 0.5 instead of 1.17).
  cases.push_back({"a zero-size elementwise result next to a non-empty one reading the same w", [] {
                     Tensor w0 = Tensor::from_vector(std::vector<double>{1.25, -0.5}, {1, 2});
                     Variable w = shared(w0, "w");
                     Variable e = tensor(Dtype::Float64, Shape{kUnknownDim, 1, 2}, "e");
                     FuzzCase c = hand_case({e}, {add(w, e), mul(w, 2.0)}, {{0, 1, 2}, {1, 2}},
                                            {{Tensor::zeros({0, 1, 2}, Dtype::Float64)},
                                             {Tensor::zeros({0, 1, 2}, Dtype::Float64)}});
                     c.updates.push_back({w, clip(add(mul(0.9, w), 0.1), -2.0, 2.0)});
                     c.shared = {w};
                     c.shared_init = {w0};
                     return c;
                   }});
  // Found as seed 97 on the cpu backend: a softmax-regression step whose cost adds a decay
  // term, 0.01 * sum(w^2), computed in the row chain's loop finish; the chain's combine had
  // been moved before that finish and wrote the new w in place first, so the cost read it.
  cases.push_back(
      {"a weight decay in the cost, read after the chain's in-place update", [] {
         Tensor w0 = Tensor::from_vector(std::vector<double>{-0.25, 0.25, 0.5, -0.75}, {2, 2});
         Tensor b0 = Tensor::from_vector(std::vector<double>{0.01, -0.09});
         Variable w = shared(w0, "w"), b = shared(b0, "b");
         Variable x = tensor(Dtype::Float64, 2, "x");
         std::vector<std::int32_t> labels(16);
         for (int i = 0; i < 16; ++i) labels[i] = (i * 7) % 3 == 0 ? 1 : 0;
         Variable y = one_hot(Variable(Tensor::from_vector(labels)), 2, Dtype::Float64);
         auto p = nnet::softmax(add(dot(x, w), b));
         // The cross-entropy written out, as the generator's composed model does.
         Variable cost = add(neg(mean(sum(mul(y, log(p)), 1))), mul(0.01, sum(sqr(w))));
         std::vector<std::vector<Tensor>> calls;
         for (int c = 0; c < 3; ++c)
           calls.push_back({random_uniform({16, 2}, -1, 1, 97 + c).astype(Dtype::Float64)});
         FuzzCase fc = hand_case({x}, {cost}, {{}}, calls);
         fc.updates.push_back({w, sub(w, mul(grad(cost, w), 0.5))});
         fc.updates.push_back({b, sub(b, mul(grad(cost, b), 0.5))});
         fc.shared = {w, b};
         fc.shared_init = {w0, b0};
         return fc;
       }});
  // Found as seed 200358 (THEA_FUZZ_MAX_OPS=30) on the cpu backend: sum over an empty axis
  // (a slice x[-4:-4]) must be 0 (pow(y, 0) = 1 followed); the cpu backend gave garbage
  // (-4.2e-35), as if the accumulator were not initialised when the loop runs zero times.
  cases.push_back({"reductions over a zero-length axis (sum 0, prod 1)", [] {
                     Variable x = tensor(Dtype::Float32, 2, "x");
                     Variable empty = subtensor(x, {Slice(Variable(2), Variable(2))});
                     Tensor v = Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {3, 2});
                     return hand_case({x},
                                      {sum(empty, 0), prod(empty, 0), exp(sum(empty, 0)),
                                       sum(empty, std::nullopt, true), sum(empty, 1)},
                                      {{2}, {2}, {2}, {1, 1}, {0}}, {{v}, {v.clone()}});
                   }});
  cases.push_back(
      {"a sum over an empty slice of a fused elementwise producer (seed 200358's shape)", [] {
         Variable x = tensor(Dtype::Float32, Shape{4, 4, 1}, "x");
         Variable y = tensor(Dtype::Float32, Shape{1, kUnknownDim, kUnknownDim}, "y");
         Variable t = true_div(sigmoid(x), add(sqr(y), 0.75));  // (4, 4, n)
         Variable s =
             sum(subtensor(t, {Slice(Variable(-4), Variable(-4))}), std::vector<int>{0, 1});
         Variable base = dimshuffle(sub(sigmoid(x), 0.0), {2, 1, 0});  // (1, 4, 4)
         std::vector<Tensor> call;
         call.push_back(Tensor::full({4, 4, 1}, 0.5, Dtype::Float32));
         call.push_back(Tensor::full({1, 4, 4}, 1.0, Dtype::Float32));
         return hand_case({x, y}, {s, pow(base, s)}, {{4}, {1, 4, 4}}, {call, call});
       }});
  return cases;
}

}  // namespace thea::fuzz
