// The one table of scalar operations. Each row's functor name is the name of a function
// in backends/preamble/thea_scalar.h, which the reference backend includes directly and
// the code-generating backends (CPU, CUDA) embed verbatim: every backend prints and
// evaluates the same expression.
#pragma once

#include <cstdint>
#include <string>

#include "thea/dtype.hpp"

namespace thea {

enum class ScalarOp : std::uint8_t {
  // unary
  Neg,
  Abs,
  Sign,
  Exp,
  Log,
  Log1p,
  Sqrt,
  Sqr,
  Inv,
  Tanh,
  Sigmoid,
  Softplus,
  Not,
  Identity,
  Cast,
  // binary
  Add,
  Sub,
  Mul,
  Div,
  Pow,
  Maximum,
  Minimum,
  Lt,
  Le,
  Gt,
  Ge,
  Eq,
  Ne,
  And,
  Or,
  Second,
  // ternary
  Switch,
  Clip,
  Count_
};

// How the output dtype follows from the (promoted) input dtype.
enum class ScalarOutKind : std::uint8_t {
  Same,      // promoted input dtype
  Float,     // promoted dtype, ints become float64 (exp, log, true division)
  Bool,      // comparisons and logic
  Explicit,  // Cast: given by the op
  Last,      // Second/Switch: the dtype of the value operands
};

struct ScalarOpInfo {
  const char* name;     // "add"
  const char* functor;  // "thea_add": the preamble function every backend calls
  int arity;
  ScalarOutKind out;
  const char* symbol;  // infix for printing ("+"), or nullptr
};

const ScalarOpInfo& scalar_info(ScalarOp op);

}  // namespace thea
