// stabilize: replace compositions that lose precision or overflow (log of a softmax that
// underflowed, a division by a probability) with forms computed from the logits.
// grad() runs on the user's graph before any rewrite, so the gradient patterns matter
// as much as the forward ones: softmax's vjp is a SoftmaxGrad node, and log's vjp
// divides by its input, giving SoftmaxGrad(a / sm, sm) here.
#include <memory>
#include <vector>

#include "rewrite_util.hpp"
#include "thea/ops/api.hpp"
#include "thea/ops/fused.hpp"

namespace thea::rw {

namespace {

// x when n is softmax(x) (log_softmax(x) when `log`), else nullptr.
NodePtr softmax_input(const NodePtr& n, bool log) {
  const Softmax* s = op_as<Softmax>(n);
  return s && s->log() == log ? n->inputs[0] : nullptr;
}

// log(softmax(x)) -> log_softmax(x).
NodePtr log_softmax(FunctionGraph&, const NodePtr& n) {
  if (!is_elemwise(n, ScalarOp::Log)) return nullptr;
  NodePtr x = softmax_input(n->inputs[0], false);
  if (!x) return nullptr;
  return build_replacement(n, [&] { return nnet::log_softmax(Variable(x)).node(); });
}

// log(sigmoid(x)) -> -softplus(-x): finite where sigmoid(x) underflows to 0.
NodePtr log_sigmoid(FunctionGraph&, const NodePtr& n) {
  if (!is_elemwise(n, ScalarOp::Log) || !is_elemwise(n->inputs[0], ScalarOp::Sigmoid)) {
    return nullptr;
  }
  const Variable x(n->inputs[0]->inputs[0]);
  if (!is_float(x.dtype())) return nullptr;
  return build_replacement(n, [&] { return neg(softplus(neg(x))).node(); });
}

// The logits z when n is log(softmax(z)) or log_softmax(z).
NodePtr log_softmax_input(const NodePtr& n) {
  if (is_elemwise(n, ScalarOp::Log)) return softmax_input(n->inputs[0], false);
  return softmax_input(n, true);
}

// Whether r sums exactly the last axis of its input, without keepdims.
bool sums_last_axis(const NodePtr& r) {
  const Reduce* red = op_as<Reduce>(r);
  if (!red || red->kind() != ReduceKind::Sum || red->keepdims()) return false;
  const int ndim = r->inputs[0]->type.ndim();
  if (red->axes().empty()) return ndim == 1;  // all axes of a vector: its last
  return red->axes() == std::vector<int>{ndim - 1};
}

// categorical_crossentropy(softmax(z), y) -> crossentropy_softmax(z, y), in both forms:
//   -sum(y * log(softmax(z)), axis=-1)     (float targets; as nnet::categorical_crossentropy
//                                           builds it, or log_softmax after that pass)
//   crossentropy_categorical_1hot(softmax(z), labels)
NodePtr crossentropy_softmax(FunctionGraph&, const NodePtr& n) {
  if (op_as<CrossentropyCategorical1Hot>(n)) {
    NodePtr z = softmax_input(n->inputs[0], false);
    if (!z) return nullptr;
    const NodePtr labels = n->inputs[1];
    return build_replacement(
        n, [&] { return nnet::crossentropy_softmax(Variable(z), Variable(labels)).node(); });
  }
  if (!is_elemwise(n, ScalarOp::Neg) || !sums_last_axis(n->inputs[0])) return nullptr;
  const NodePtr& m = n->inputs[0]->inputs[0];
  if (!is_elemwise(m, ScalarOp::Mul)) return nullptr;
  for (int k = 0; k < 2; ++k) {
    const NodePtr& y = m->inputs[k];
    NodePtr z = log_softmax_input(m->inputs[1 - k]);
    // y must be shaped like z (a broadcast target row would weigh every row alike: the
    // op takes one target per entry).
    if (!z || !is_float(y->type.dtype) || !fits_type(y->type, z->type)) continue;
    return build_replacement(
        n, [&] { return nnet::crossentropy_softmax(Variable(z), Variable(y)).node(); });
  }
  return nullptr;
}

// The gradient side of the cross-entropy fusion (exact identities, no assumption on y):
//   softmax_grad(a / sm, sm) = sm * (a / sm - sum(a)) -> a - sm * sum(a, -1, keepdims)
//   softmax_grad(crossentropy_categorical_1hot_grad(g, sm, labels), sm)
//     = g[:, None] * (sm - onehot(labels)) -> crossentropy_softmax_1hot_dx(g, sm, labels)
NodePtr softmax_grad_div(FunctionGraph&, const NodePtr& n) {
  if (!op_as<SoftmaxGrad>(n)) return nullptr;
  const NodePtr& h = n->inputs[0];
  const NodePtr& sm = n->inputs[1];
  if (is_elemwise(h, ScalarOp::Div) && h->inputs[1] == sm) {
    const NodePtr& a = h->inputs[0];
    return build_replacement(n, [&] {
      // a broadcast along a row must be summed once per entry: materialize it first.
      Variable av(a);
      if (!fits_type({a->type.dtype, h->type.shape}, a->type)) av = fill(Variable(sm), av);
      const Variable smv(sm);
      return sub(av, mul(smv, sum(av, -1, /*keepdims=*/true))).node();
    });
  }
  if (op_as<CrossentropyCategorical1HotGrad>(h) && h->inputs[1] == sm) {
    return build_replacement(n, [&] {
      const Variable g = cast(Variable(h->inputs[0]), sm->type.dtype);
      return crossentropy_softmax_1hot_dx(g, Variable(sm), Variable(h->inputs[2])).node();
    });
  }
  return nullptr;
}

// argmax(softmax(x), -1) -> argmax(x, -1) (also argmin, and log_softmax): both are
// monotonic within a row, so prediction needs no exp.
NodePtr argmax_softmax(FunctionGraph&, const NodePtr& n) {
  const ArgReduce* a = op_as<ArgReduce>(n);
  if (!a) return nullptr;
  const NodePtr& s = n->inputs[0];
  NodePtr x = softmax_input(s, false);
  if (!x) x = softmax_input(s, true);
  if (!x) return nullptr;
  // Only along the rows: over a flattened matrix the rows' scales differ.
  const int ndim = x->type.ndim();
  if (a->axis() != ndim - 1 && !(ndim == 1 && a->axis() == -1)) return nullptr;
  return build_replacement(n, [&] {
    return make_apply_at(std::make_shared<ArgReduce>(a->is_max(), a->axis(), a->keepdims()), {x},
                         n->site);
  });
}

}  // namespace

void register_stabilize_rewrites(RewriteRegistry& registry) {
  registry.add({.name = "log_softmax",
                .tags = {"stabilize"},
                .order = 20,
                .local = log_softmax,
                .global = nullptr});
  registry.add({.name = "log_sigmoid",
                .tags = {"stabilize"},
                .order = 20.1,
                .local = log_sigmoid,
                .global = nullptr});
  registry.add({.name = "crossentropy_softmax",
                .tags = {"stabilize"},
                .order = 20.2,
                .local = crossentropy_softmax,
                .global = nullptr});
  registry.add({.name = "softmax_grad_div",
                .tags = {"stabilize"},
                .order = 20.3,
                .local = softmax_grad_div,
                .global = nullptr});
  registry.add({.name = "argmax_softmax",
                .tags = {"stabilize"},
                .order = 20.4,
                .local = argmax_softmax,
                .global = nullptr});
}

}  // namespace thea::rw
