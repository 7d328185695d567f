// canonicalize: algebraic clean-ups that make later patterns simpler and graphs smaller.
// Only exact identities (up to the sign of a zero) except x / c -> x * (1/c), which
// rounds differently by at most an ulp and trades a division for a multiplication.
// x * 0 is never folded: it is NaN for x = inf or NaN.
#include <cmath>
#include <memory>
#include <vector>

#include "rewrite_util.hpp"
#include "thea/ops/api.hpp"
#include "thea/ops/fused.hpp"

namespace thea::rw {

namespace {

// x * 1, 1 * x, x + 0, 0 + x, x - 0, x / 1 -> x. When the neutral constant broadcasts x
// to a larger shape, x's values are kept but broadcast: fill(constant, x).
NodePtr neutral_elements(FunctionGraph&, const NodePtr& n) {
  const Elemwise* e = op_as<Elemwise>(n);
  if (!e || n->inputs.size() != 2) return nullptr;
  const NodePtr& a = n->inputs[0];
  const NodePtr& b = n->inputs[1];
  NodePtr keep, neutral;
  switch (e->scalar_op()) {
    case ScalarOp::Add:  // -0.0 + 0 is +0.0: the only value this changes is a zero's sign
      if (is_constant_value(b, 0)) {
        keep = a, neutral = b;
      } else if (is_constant_value(a, 0)) {
        keep = b, neutral = a;
      }
      break;
    case ScalarOp::Mul:
      if (is_constant_value(b, 1)) {
        keep = a, neutral = b;
      } else if (is_constant_value(a, 1)) {
        keep = b, neutral = a;
      }
      break;
    case ScalarOp::Sub:
      if (is_constant_value(b, 0)) keep = a, neutral = b;
      break;
    case ScalarOp::Div:
      if (is_constant_value(b, 1)) keep = a, neutral = b;
      break;
    default:
      break;
  }
  // A neutral element of a wider dtype promotes (int x * 1.0 is float): not neutral then.
  if (!keep || keep->type.dtype != n->type.dtype) return nullptr;
  if (fits_type(keep->type, n->type)) return keep;
  return build_replacement(n, [&] { return fill(Variable(neutral), Variable(keep)).node(); });
}

// -(-x) -> x.
NodePtr double_negation(FunctionGraph&, const NodePtr& n) {
  if (!is_elemwise(n, ScalarOp::Neg) || !is_elemwise(n->inputs[0], ScalarOp::Neg)) return nullptr;
  const NodePtr& x = n->inputs[0]->inputs[0];
  return fits_type(x->type, n->type) ? x : nullptr;
}

// x - (-y) -> x + y; x + (-y) and (-y) + x -> x - y.
NodePtr sub_neg(FunctionGraph&, const NodePtr& n) {
  if (n->inputs.size() != 2) return nullptr;
  const NodePtr& a = n->inputs[0];
  const NodePtr& b = n->inputs[1];
  // -y wrapped around in uint8 is not undone by widening it: int64 x - (-y) != x + y.
  if (a->type.dtype != n->type.dtype || b->type.dtype != n->type.dtype) return nullptr;
  if (is_elemwise(n, ScalarOp::Sub) && is_elemwise(b, ScalarOp::Neg)) {
    return build_replacement(n, [&] { return add(Variable(a), Variable(b->inputs[0])).node(); });
  }
  if (is_elemwise(n, ScalarOp::Add)) {
    if (is_elemwise(b, ScalarOp::Neg)) {
      return build_replacement(n, [&] { return sub(Variable(a), Variable(b->inputs[0])).node(); });
    }
    if (is_elemwise(a, ScalarOp::Neg)) {
      return build_replacement(n, [&] { return sub(Variable(b), Variable(a->inputs[0])).node(); });
    }
  }
  return nullptr;
}

// x / c -> x * (1/c) for a float constant c (of the result's dtype, so 1/c is rounded
// where the division would have been computed). Skips c with zeros or infinities.
NodePtr div_by_constant(FunctionGraph&, const NodePtr& n) {
  if (!is_elemwise(n, ScalarOp::Div)) return nullptr;
  const NodePtr& x = n->inputs[0];
  const NodePtr& c = n->inputs[1];
  if (c->kind != NodeKind::Constant || !is_float(c->type.dtype) || c->type.dtype != n->type.dtype ||
      is_constant_value(c, 1)) {
    return nullptr;
  }
  std::vector<double> recip = c->value.to_vector();
  for (double& v : recip) {
    if (v == 0 || !std::isfinite(v)) return nullptr;
    v = 1.0 / v;
  }
  NodePtr rc =
      make_constant(Tensor::from_vector(recip, c->value.shape()).astype(c->type.dtype), c->name);
  rc->weak_literal = c->weak_literal;
  return build_replacement(n, [&] { return mul(Variable(x), Variable(rc)).node(); });
}

// Ops whose output has the runtime shape of any input whose static type has the
// output's broadcast pattern (broadcasting only stretches static size-1 axes).
bool shape_follows_inputs(const NodePtr& n) {
  return op_as<Elemwise>(n) || op_as<Softmax>(n) || op_as<SoftmaxGrad>(n);
}

// A leaf (input, shared variable, constant) with the runtime shape of x, found through
// shape-preserving ops; nullptr when there is none within a few levels.
NodePtr leaf_with_shape_of(const NodePtr& x, int depth = 8) {
  if (depth == 0 || !shape_follows_inputs(x)) return nullptr;
  const TensorType shape_of_x{Dtype::Float32, x->type.shape};
  for (const NodePtr& in : x->inputs) {
    if (!fits_type({Dtype::Float32, in->type.shape}, shape_of_x)) continue;
    if (in->is_leaf()) return in;
    if (NodePtr leaf = leaf_with_shape_of(in, depth - 1)) return leaf;
  }
  return nullptr;
}

// fill(x, v) only reads x's shape (grad builds such fills everywhere). Take the shape from
// a leaf that has it, so that x (a log, a product) need not be computed for its shape:
// fill(f(Y, g(z)), v) -> fill(Y, v). Only leaves: moving to another computed node could
// keep alive a node that later rewrites would have removed.
NodePtr fill_shape_source(FunctionGraph&, const NodePtr& n) {
  if (!is_elemwise(n, ScalarOp::Second) || n->inputs[0]->is_leaf()) return nullptr;
  NodePtr leaf = leaf_with_shape_of(n->inputs[0]);
  if (!leaf) return nullptr;
  return build_replacement(n, [&] { return make_apply_at(n->op, {leaf, n->inputs[1]}, n->site); });
}

// An elementwise op reading fill(x, v) gets its shape from its other operands too when
// those already have the result's broadcast pattern: read v directly. fill(x, v) with v
// already of the result's type is v.
NodePtr fill_sink(FunctionGraph&, const NodePtr& n) {
  const Elemwise* e = op_as<Elemwise>(n);
  if (!e) return nullptr;
  if (e->scalar_op() == ScalarOp::Second) {
    const NodePtr& v = n->inputs[1];
    return fits_type(v->type, n->type) ? v : nullptr;
  }
  for (std::size_t i = 0; i < n->inputs.size(); ++i) {
    if (!is_elemwise(n->inputs[i], ScalarOp::Second) || !e->converts_input(static_cast<int>(i))) {
      continue;
    }
    std::vector<NodePtr> ins = n->inputs;
    ins[i] = n->inputs[i]->inputs[1];
    NodePtr repl = build_replacement(n, [&] { return make_apply_at(n->op, ins, n->site); });
    if (repl) return repl;
  }
  return nullptr;
}

}  // namespace

void register_canonicalize_rewrites(RewriteRegistry& registry) {
  registry.add({.name = "div_by_constant",
                .tags = {"canonicalize"},
                .order = 10,
                .local = div_by_constant,
                .global = nullptr});
  registry.add({.name = "neutral_elements",
                .tags = {"canonicalize"},
                .order = 10.1,
                .local = neutral_elements,
                .global = nullptr});
  registry.add({.name = "fill_shape_source",
                .tags = {"canonicalize"},
                .order = 10.2,
                .local = fill_shape_source,
                .global = nullptr});
  registry.add({.name = "fill_sink",
                .tags = {"canonicalize"},
                .order = 10.3,
                .local = fill_sink,
                .global = nullptr});
  registry.add({.name = "double_negation",
                .tags = {"canonicalize"},
                .order = 10.4,
                .local = double_negation,
                .global = nullptr});
  registry.add({.name = "sub_neg",
                .tags = {"canonicalize"},
                .order = 10.5,
                .local = sub_neg,
                .global = nullptr});
}

}  // namespace thea::rw
