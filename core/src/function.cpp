#include "thea/function.hpp"

#include <chrono>
#include <unordered_set>

#include "thea/backend.hpp"
#include "thea/error.hpp"
#include "thea/fgraph.hpp"
#include "thea/printing.hpp"

namespace thea {

struct Function::Impl {
  std::string name;
  std::string backend;
  FunctionOptions options;
  std::vector<NodePtr> inputs;
  std::unique_ptr<FunctionGraph> graph;
  std::vector<PassStat> stats;
  std::unique_ptr<Program> program;
  double compile_seconds = 0;
  SourceSite site;

  Tensor check_input(std::size_t i, const Tensor& value) const;
};

Tensor Function::Impl::check_input(std::size_t i, const Tensor& value) const {
  const Node& in = *inputs[i];
  // The prefix is built only on failure: this runs on every call of a hot train step.
  auto who = [&] {
    return "function '" + name + "' (created at " + site.str() + "), input " + std::to_string(i) +
           " " + in.describe();
  };
  if (!value.defined()) throw ValueError(who() + ": got an undefined Tensor");
  if (value.ndim() != in.type.ndim())
    throw TypeError(who() + ": expected rank " + std::to_string(in.type.ndim()) + ", got " +
                    value.describe());
  if (!in.type.accepts(value.shape()))
    throw ShapeError(who() + ": expected shape " + static_shape_str(in.type.shape) + ", got " +
                     shape_str(value.shape()));
  if (value.dtype() == in.type.dtype) return value;
  const bool lossless = promote(value.dtype(), in.type.dtype) == in.type.dtype &&
                        !(is_float(value.dtype()) && !is_float(in.type.dtype));
  if (lossless || options.allow_input_downcast) return value.astype(in.type.dtype);
  throw TypeError(who() + ": got " + value.describe() + "; converting " +
                  dtype_name(value.dtype()) + " to " + dtype_name(in.type.dtype) +
                  " may lose precision (cast the data, or build the function with "
                  "FunctionOptions{.allow_input_downcast = true})");
}

std::vector<Tensor> Function::operator()(const std::vector<Tensor>& args) {
  Impl& f = *impl_;
  if (args.size() != f.inputs.size())
    throw ValueError("function '" + f.name + "' (created at " + f.site.str() + ") takes " +
                     std::to_string(f.inputs.size()) + " inputs, got " +
                     std::to_string(args.size()));
  std::vector<Tensor> checked;
  checked.reserve(args.size());
  for (std::size_t i = 0; i < args.size(); ++i) checked.push_back(f.check_input(i, args[i]));
  return f.program->run(checked);
}

const std::string& Function::name() const { return impl_->name; }
const std::string& Function::backend_name() const { return impl_->backend; }
const FunctionGraph& Function::graph() const { return *impl_->graph; }
const std::vector<PassStat>& Function::rewrite_stats() const { return impl_->stats; }
std::size_t Function::kernel_count() const { return impl_->program->kernel_count(); }
double Function::compile_seconds() const { return impl_->compile_seconds; }

std::string Function::debugprint() const {
  std::string s = "function '" + impl_->name + "' on backend " + impl_->backend + ":\n";
  s += thea::debugprint(impl_->graph->roots());
  if (!impl_->graph->updates().empty()) {
    s += "updates:\n";
    for (const UpdatePair& u : impl_->graph->updates())
      s += "  " + u.target->label() + " <- " + u.value->label() + "\n";
  }
  s += "schedule (" + std::to_string(impl_->program->kernel_count()) + " kernels):\n";
  s += impl_->program->describe();
  return s;
}

Function function(const std::vector<Variable>& inputs, const std::vector<Variable>& outputs,
                  const Updates& updates, const Givens& givens, FunctionOptions options,
                  std::source_location loc) {
  auto t0 = std::chrono::steady_clock::now();
  auto impl = std::make_shared<Function::Impl>();
  impl->site = SourceSite::from(loc);
  impl->name = options.name.empty() ? "f@" + impl->site.str() : options.name;
  const std::string where = "function '" + impl->name + "'";

  std::unordered_set<const Node*> seen_inputs;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const Variable& v = inputs[i];
    if (!v) throw ValueError(where + ": input " + std::to_string(i) + " is an empty Variable");
    if (v.node()->kind != NodeKind::Input)
      throw TypeError(where + ": input " + std::to_string(i) + " " + v.describe() +
                      " is not a symbolic input (fmatrix(), ...); shared variables and "
                      "constants are available to the graph without being listed");
    if (!seen_inputs.insert(v.node().get()).second)
      throw ValueError(where + ": input " + v.describe() + " is listed twice");
    impl->inputs.push_back(v.node());
  }
  std::vector<NodePtr> outs;
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    if (!outputs[i]) throw ValueError(where + ": output " + std::to_string(i) + " is empty");
    outs.push_back(outputs[i].node());
  }
  std::vector<UpdatePair> ups;
  std::unordered_set<const Node*> updated;
  for (const auto& [target, value] : updates) {
    if (!target || !value) throw ValueError(where + ": an update pair holds an empty Variable");
    if (!target.is_shared())
      throw TypeError(where + ": update target " + target.describe() + " is not a shared variable");
    if (!updated.insert(target.node().get()).second)
      throw ValueError(where + ": shared variable " + target.describe() + " is updated twice");
    const TensorType& tt = target.type();
    const TensorType& vt = value.type();
    if (tt.dtype != vt.dtype || tt.ndim() != vt.ndim())
      throw TypeError(where + ": the update of " + target.describe() + " has type " + vt.str() +
                      " (from " + value.describe() + "); it must keep the shared variable's type " +
                      tt.str());
    for (int d = 0; d < tt.ndim(); ++d)
      if (vt.shape[d] != kUnknownDim && vt.shape[d] != tt.shape[d])
        throw ShapeError(where + ": the update of " + target.describe() + " has shape " +
                         static_shape_str(vt.shape) + ", not " + static_shape_str(tt.shape));
    ups.push_back({target.node(), value.node()});
  }
  std::vector<std::pair<NodePtr, NodePtr>> gv;
  for (const auto& [old_var, new_var] : givens) {
    if (!old_var || !new_var) throw ValueError(where + ": a givens pair holds an empty Variable");
    if (!old_var.node()->is_leaf() || old_var.is_constant())
      throw TypeError(where + ": givens may only replace inputs and shared variables, not " +
                      old_var.describe());
    gv.emplace_back(old_var.node(), new_var.node());
  }

  impl->graph = std::make_unique<FunctionGraph>(impl->inputs, outs, ups, gv);
  for (const NodePtr& n : impl->graph->toposort())
    if (n->kind == NodeKind::Input && !seen_inputs.count(n.get()))
      throw ValueError(where + ": the graph needs " + n->describe() +
                       ", which is not in the inputs list (nor replaced through givens)");

  impl->stats = run_rewrites(*impl->graph, options.exclude);
  impl->backend = options.backend.empty() ? default_backend_name() : options.backend;
  std::shared_ptr<Backend> backend = get_backend(impl->backend);
  std::string why;
  if (!backend->supports(*impl->graph, &why))
    throw BackendError(where + ": backend '" + impl->backend + "' cannot run this graph: " + why);
  impl->program = backend->compile(*impl->graph);
  impl->options = std::move(options);
  impl->compile_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return Function(impl);
}

Function function(const std::vector<Variable>& inputs, const std::vector<Variable>& outputs,
                  const Updates& updates, FunctionOptions options, std::source_location loc) {
  return function(inputs, outputs, updates, {}, std::move(options), loc);
}

}  // namespace thea
