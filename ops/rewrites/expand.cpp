// expand_row_ops: the inverse of fusing — softmax, log_softmax, softmax_grad and the
// float-target crossentropy_softmax rewritten into Elemwise + Reduce primitives, for a
// backend whose generic elementwise + reduction fuser handles those better than a
// dedicated row kernel. Not a registered pass: a backend calls it on its own graph.
#include "rewrite_util.hpp"
#include "thea/ops/api.hpp"
#include "thea/ops/fused.hpp"

namespace thea {

namespace {

// The primitive form of one row op (shifted by the row max, as the ops themselves are).
NodePtr expand(const NodePtr& n) {
  using rw::op_as;
  if (const Softmax* s = op_as<Softmax>(n)) {
    const Variable x(n->inputs[0]);
    const Variable shifted = sub(x, max(x, -1, /*keepdims=*/true));
    if (s->log()) return sub(shifted, log(sum(exp(shifted), -1, true))).node();
    const Variable e = exp(shifted);
    return true_div(e, sum(e, -1, true)).node();
  }
  if (op_as<SoftmaxGrad>(n)) {
    const Variable g(n->inputs[0]);
    const Variable sm(n->inputs[1]);
    return mul(sm, sub(g, sum(mul(g, sm), -1, true))).node();
  }
  if (op_as<CrossentropySoftmax>(n) && is_float(n->inputs[1]->type.dtype)) {
    const Variable z(n->inputs[0]);
    const Variable y(n->inputs[1]);
    const Variable m = max(z, -1, true);
    const Variable lse = add(log(sum(exp(sub(z, m)), -1, true)), m);
    return sum(mul(y, sub(lse, z)), -1).node();
  }
  return nullptr;
}

}  // namespace

std::size_t expand_row_ops(FunctionGraph& fg) {
  std::size_t count = 0;
  for (const NodePtr& n : fg.toposort()) {
    NodePtr repl = rw::build_replacement(n, [&] { return expand(n); });
    if (!repl) continue;
    fg.replace(n, repl, "expand_row_ops");
    ++count;
  }
  return count;
}

}  // namespace thea
