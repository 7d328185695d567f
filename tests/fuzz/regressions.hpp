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
  const char* note;  // what failed, where
};

inline const std::vector<Regression> kRegressions = {};

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
  // gave 4.611686018e+18 instead of -2.5. With its neighbours: other reductions of int32
  // and int64 inputs, whole and along an axis.
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
  return cases;
}

}  // namespace thea::fuzz
