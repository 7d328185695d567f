// Reverse-mode symbolic differentiation: the gradient is a graph built from the ops'
// vjps, so it can be compiled, optimized and differentiated again.
#pragma once

#include <cstdint>
#include <functional>
#include <source_location>
#include <vector>

#include "thea/graph.hpp"

namespace thea {

// What grad() does with a wrt variable that the cost does not depend on
// (Theano's disconnected_inputs='raise'|'warn'|'ignore').
enum class Disconnected { Raise, Warn, Ignore };

struct GradOptions {
  Disconnected disconnected_inputs = Disconnected::Raise;
};

// d cost / d wrt for a scalar cost. A disconnected wrt gets zeros_like(wrt) unless
// disconnected_inputs is Raise.
std::vector<Variable> grad(const Variable& cost, const std::vector<Variable>& wrt,
                           GradOptions options = {},
                           std::source_location loc = std::source_location::current());
Variable grad(const Variable& cost, const Variable& wrt, GradOptions options = {},
              std::source_location loc = std::source_location::current());

// Sums `g` over the axes along which a value of type `target` was broadcast to g's
// shape (leading extra axes and target axes of static size 1), giving target's shape.
Variable sum_to_type(const Variable& g, const TensorType& target);

struct VerifyGradOptions {
  std::uint64_t seed = 0;
  double eps = 1e-6;   // central-difference step (float64)
  double rtol = 1e-4;  // tolerance on |analytic - numeric| / max(1, |numeric|)
  double atol = 1e-6;
  int directions = 3;  // random directions projected per check
};

// Checks grad() of `fn(inputs)` (which must give a scalar, or is reduced with a random
// projection otherwise) against central finite differences at `points`, in float64 on
// the reference backend. Throws GradError naming the input and the mismatch.
void verify_grad(const std::function<Variable(const std::vector<Variable>&)>& fn,
                 const std::vector<Tensor>& points, VerifyGradOptions options = {});

}  // namespace thea
