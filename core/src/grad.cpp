#include "thea/grad.hpp"

#include <cmath>
#include <cstdio>
#include <unordered_map>
#include <unordered_set>

#include "thea/error.hpp"
#include "thea/function.hpp"
#include "thea/op.hpp"
#include "thea/ops/api.hpp"

namespace thea {

Variable sum_to_type(const Variable& g, const TensorType& target) {
  const int extra = g.ndim() - target.ndim();
  if (extra < 0)
    throw GradError("sum_to_type: gradient " + g.describe() + " has lower rank than its target " +
                    target.str());
  Variable r = g;
  if (extra > 0) {
    std::vector<int> lead(extra);
    for (int i = 0; i < extra; ++i) lead[i] = i;
    r = sum(r, lead, false);
  }
  std::vector<int> stretched;
  for (int i = 0; i < target.ndim(); ++i)
    if (target.shape[i] == 1 && r.type().shape[i] != 1) stretched.push_back(i);
  if (!stretched.empty()) r = sum(r, stretched, true);
  if (r.dtype() != target.dtype && is_float(target.dtype)) r = cast(r, target.dtype);
  return r;
}

std::vector<Variable> grad(const Variable& cost, const std::vector<Variable>& wrt,
                           GradOptions options, std::source_location loc) {
  const std::string where = SourceSite::from(loc).str();
  if (!cost) throw GradError("grad at " + where + ": cost is an empty Variable");
  if (cost.ndim() != 0)
    throw GradError("grad at " + where + ": cost must be a scalar, but " + cost.describe() +
                    " has rank " + std::to_string(cost.ndim()) + " (reduce it with sum or mean)");
  if (!is_float(cost.dtype()))
    throw GradError("grad at " + where + ": cost " + cost.describe() +
                    " is not a float; integer values have no gradient");
  std::unordered_set<const Node*> targets;
  for (std::size_t i = 0; i < wrt.size(); ++i) {
    if (!wrt[i]) throw GradError("grad at " + where + ": wrt[" + std::to_string(i) + "] is empty");
    if (!is_float(wrt[i].dtype()))
      throw GradError("grad at " + where + ": cannot differentiate with respect to " +
                      wrt[i].describe() + ": it is not a float variable");
    targets.insert(wrt[i].node().get());
  }

  const std::vector<NodePtr> order = toposort({cost.node()});
  // Nodes whose value depends on some wrt: only those need gradients.
  std::unordered_set<const Node*> depends;
  for (const NodePtr& n : order) {
    bool d = targets.count(n.get()) > 0;
    for (const NodePtr& in : n->inputs) d = d || depends.count(in.get());
    if (d) depends.insert(n.get());
  }

  std::unordered_map<const Node*, Variable> grads;
  grads[cost.node().get()] = Variable(make_constant(Tensor::scalar(1.0, cost.dtype())));
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    const NodePtr& n = *it;
    if (n->kind != NodeKind::Apply || !depends.count(n.get())) continue;
    auto g = grads.find(n.get());
    if (g == grads.end()) continue;
    std::vector<Variable> ins;
    for (const NodePtr& in : n->inputs) ins.emplace_back(in);
    const std::uint64_t first_new_id = next_node_id();
    std::vector<Variable> in_grads = n->op->vjp(ins, Variable(n), g->second);
    // Gradient nodes point at the user's line that created the forward node, not at the
    // library line inside the vjp: errors and debugprint then lead back to user code.
    // Only nodes newer than the vjp call are visited, so grad stays linear in graph size.
    std::vector<Node*> fresh;
    for (const Variable& v : in_grads)
      if (v && v.node()->id > first_new_id) fresh.push_back(v.node().get());
    std::unordered_set<const Node*> relabeled;
    while (!fresh.empty()) {
      Node* m = fresh.back();
      fresh.pop_back();
      if (!relabeled.insert(m).second) continue;
      m->site = n->site;
      for (const NodePtr& in : m->inputs)
        if (in->id > first_new_id) fresh.push_back(in.get());
    }
    if (in_grads.size() != ins.size())
      throw GradError("[" + n->op->str() + "] vjp returned " + std::to_string(in_grads.size()) +
                      " gradients for " + std::to_string(ins.size()) + " inputs (a bug in the op)");
    for (std::size_t i = 0; i < ins.size(); ++i) {
      const NodePtr& in = n->inputs[i];
      if (!in_grads[i] || !depends.count(in.get()) || !is_float(in->type.dtype)) continue;
      Variable gi = in_grads[i];
      if (gi.ndim() != in->type.ndim())
        throw GradError("[" + n->op->str() + "] vjp gave a gradient of rank " +
                        std::to_string(gi.ndim()) + " for input " + in->describe() +
                        " (a bug in the op)");
      if (gi.dtype() != in->type.dtype) gi = cast(gi, in->type.dtype);
      auto [slot, fresh] = grads.emplace(in.get(), gi);
      if (!fresh) slot->second = add(slot->second, gi);
    }
  }

  std::vector<Variable> result;
  for (const Variable& w : wrt) {
    auto g = grads.find(w.node().get());
    if (g != grads.end()) {
      result.push_back(g->second);
      continue;
    }
    const std::string msg = "grad at " + where + ": the cost " + cost.describe() +
                            " does not depend on " + w.describe() +
                            " (or only through non-differentiable ops such as argmax)";
    if (options.disconnected_inputs == Disconnected::Raise)
      throw GradError(msg +
                      "; pass GradOptions{.disconnected_inputs = Disconnected::Ignore} to "
                      "get zeros instead");
    if (options.disconnected_inputs == Disconnected::Warn)
      std::fprintf(stderr, "thea warning: %s; using zeros\n", msg.c_str());
    result.push_back(zeros_like(w));
  }
  return result;
}

Variable grad(const Variable& cost, const Variable& wrt, GradOptions options,
              std::source_location loc) {
  return grad(cost, std::vector<Variable>{wrt}, options, loc)[0];
}

// ---- verify_grad ----

namespace {

double dot_all(const Tensor& a, const Tensor& b) {
  std::vector<double> x = a.to_vector(), y = b.to_vector();
  double s = 0;
  for (std::size_t i = 0; i < x.size(); ++i) s += x[i] * y[i];
  return s;
}

}  // namespace

void verify_grad(const std::function<Variable(const std::vector<Variable>&)>& fn,
                 const std::vector<Tensor>& points, VerifyGradOptions options) {
  std::vector<Variable> vars;
  std::vector<Tensor> values;
  std::vector<std::size_t> float_inputs;
  for (std::size_t i = 0; i < points.size(); ++i) {
    Tensor p = points[i];
    if (is_float(p.dtype())) {
      p = p.astype(Dtype::Float64);
      float_inputs.push_back(i);
    }
    values.push_back(p.contiguous());
    vars.push_back(tensor(p.dtype(), p.shape(), "x" + std::to_string(i)));
  }
  if (float_inputs.empty()) throw GradError("verify_grad: no float input to differentiate");
  Variable out = fn(vars);
  FunctionOptions ref;
  ref.backend = "reference";
  Variable cost = out;
  if (out.ndim() != 0 || !is_float(out.dtype())) {
    // Project a non-scalar output on a fixed random tensor so one scalar sees every entry.
    Tensor probe = function(vars, {out}, {}, {}, ref)(values)[0];
    Tensor w = Tensor::random_normal(probe.shape(), 0, 1, options.seed + 7919, Dtype::Float64);
    cost = sum(mul(cast(out, Dtype::Float64), constant(w)));
  }
  std::vector<Variable> wrt;
  for (std::size_t i : float_inputs) wrt.push_back(vars[i]);
  std::vector<Variable> grads = grad(cost, wrt, {.disconnected_inputs = Disconnected::Ignore});
  Function f = function(vars, {cost}, {}, {}, ref);
  Function gf = function(vars, grads, {}, {}, ref);
  std::vector<Tensor> analytic = gf(values);

  for (std::size_t k = 0; k < float_inputs.size(); ++k) {
    const std::size_t i = float_inputs[k];
    for (int d = 0; d < options.directions; ++d) {
      Tensor dir = Tensor::random_normal(values[i].shape(), 0, 1,
                                         options.seed * 1000003 + i * 101 + d, Dtype::Float64);
      auto shifted = [&](double s) {
        std::vector<Tensor> v = values;
        Tensor x = values[i].clone();
        double* px = x.data<double>();
        const double* pd = dir.data<double>();
        for (std::int64_t e = 0; e < x.numel(); ++e) px[e] += s * pd[e];
        v[i] = x;
        return f(v)[0].item<double>();
      };
      const double numeric = (shifted(options.eps) - shifted(-options.eps)) / (2 * options.eps);
      const double exact = dot_all(analytic[k], dir);
      const double err = std::abs(exact - numeric);
      if (!(err <= options.atol + options.rtol * std::max(1.0, std::abs(numeric))))
        throw GradError("verify_grad: gradient mismatch for input " + std::to_string(i) + " " +
                        values[i].describe() + " along random direction " + std::to_string(d) +
                        ": analytic " + std::to_string(exact) + " vs finite difference " +
                        std::to_string(numeric) + " (abs error " + std::to_string(err) + ")");
    }
  }
}

}  // namespace thea
