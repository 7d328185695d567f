// The reference backend: runs each node's Op::perform in topological order on host
// tensors. Slow and obviously correct; every other backend is tested against it.
#include <unordered_map>
#include <unordered_set>

#include "thea/backend.hpp"
#include "thea/error.hpp"
#include "thea/op.hpp"

namespace thea {

namespace {

std::string describe_runtime_inputs(const Node& n, const std::vector<Tensor>& values) {
  std::string s;
  for (std::size_t i = 0; i < n.inputs.size(); ++i)
    s += "\n  input " + std::to_string(i) + ": " + n.inputs[i]->describe() + " with value " +
         values[i].describe();
  return s;
}

// Elementwise ops stretch only dimensions that are broadcastable in the static type
// (as Theano and PyTensor do), so gradients can sum over them statically.
void check_elementwise_broadcast(const Node& n, const std::vector<Tensor>& values,
                                 const Shape& out_shape) {
  for (std::size_t i = 0; i < values.size(); ++i) {
    const int offset = static_cast<int>(out_shape.size()) - values[i].ndim();
    for (int d = 0; d < values[i].ndim(); ++d) {
      const std::int64_t size = values[i].shape()[d];
      if (size == 1 && out_shape[offset + d] != 1 && n.inputs[i]->type.shape[d] != 1)
        throw ShapeError("[" + n.op->str() + "] at " + n.site.str() + ": dimension " +
                         std::to_string(d) + " of " + n.inputs[i]->describe() +
                         " has size 1 at run time but is not broadcastable in its type, while "
                         "the result has size " +
                         std::to_string(out_shape[offset + d]) +
                         "; declare the size-1 dimension statically (tensor(dtype, {1, -1})) "
                         "or insert it with dimshuffle" +
                         describe_runtime_inputs(n, values));
    }
  }
}

class ReferenceProgram : public Program {
 public:
  explicit ReferenceProgram(const FunctionGraph& fg)
      : order_(fg.toposort()),
        inputs_(fg.inputs()),
        outputs_(fg.outputs()),
        updates_(fg.updates()) {
    for (const NodePtr& n : order_)
      if (n->kind == NodeKind::Apply) ++apply_count_;
  }

  std::vector<Tensor> run(const std::vector<Tensor>& args) override {
    std::unordered_map<const Node*, Tensor> env;
    std::unordered_set<const Storage*> leaf_storage;
    for (std::size_t i = 0; i < inputs_.size(); ++i) {
      env[inputs_[i].get()] = args[i];
      leaf_storage.insert(args[i].storage().get());
    }
    for (const NodePtr& n : order_) {
      switch (n->kind) {
        case NodeKind::Input:
          if (!env.count(n.get())) throw Error("reference: unbound input " + n->describe());
          break;
        case NodeKind::Constant:
          env[n.get()] = n->value;
          leaf_storage.insert(n->value.storage().get());
          break;
        case NodeKind::Shared: {
          SharedState& s = *n->shared;
          if (!s.host_valid && s.mirror) {
            s.mirror->download(s.value);
            s.host_valid = true;
          }
          env[n.get()] = s.value;
          leaf_storage.insert(s.value.storage().get());
          break;
        }
        case NodeKind::Apply:
          env[n.get()] = execute(*n, env);
          break;
      }
    }
    std::vector<Tensor> results;
    for (const NodePtr& o : outputs_) {
      Tensor t = env.at(o.get());
      // Outputs never alias inputs or shared state (Theano's borrow=False).
      results.push_back(leaf_storage.count(t.storage().get()) ? t.clone() : t);
    }
    // All update values are computed from the old values before any is written.
    std::vector<Tensor> new_values;
    for (const UpdatePair& u : updates_) new_values.push_back(env.at(u.value.get()).clone());
    for (std::size_t k = 0; k < updates_.size(); ++k) {
      SharedState& s = *updates_[k].target->shared;
      s.value.copy_from(new_values[k]);
      s.host_valid = true;
      ++s.version;
      if (s.mirror) s.mirror->host_changed();
    }
    return results;
  }

  std::size_t kernel_count() const override { return apply_count_; }

  std::string describe() const override {
    std::string s;
    int k = 0;
    for (const NodePtr& n : order_)
      if (n->kind == NodeKind::Apply)
        s += "  " + std::to_string(k++) + ": " + n->op->str() + " -> " + n->type.str() + "\n";
    return s;
  }

 private:
  static Tensor execute(const Node& n, const std::unordered_map<const Node*, Tensor>& env) {
    std::vector<Tensor> values;
    values.reserve(n.inputs.size());
    for (const NodePtr& in : n.inputs) values.push_back(env.at(in.get()));
    Tensor out;
    try {
      out = n.op->perform(values);
    } catch (const Error& e) {
      const std::string msg = "[" + n.op->str() + "] at " + n.site.str() + " (" + n.label() +
                              "): " + e.what() + describe_runtime_inputs(n, values);
      if (dynamic_cast<const ShapeError*>(&e)) throw ShapeError(msg);
      if (dynamic_cast<const ValueError*>(&e)) throw ValueError(msg);
      if (dynamic_cast<const TypeError*>(&e)) throw TypeError(msg);
      throw Error(msg);
    }
    if (n.op->traits().elementwise) check_elementwise_broadcast(n, values, out.shape());
    if (out.dtype() != n.type.dtype || !n.type.accepts(out.shape()))
      throw Error("[" + n.op->str() + "] at " + n.site.str() + ": produced " + out.describe() +
                  " but its type is " + n.type.str() + " (a bug in the op)" +
                  describe_runtime_inputs(n, values));
    return out;
  }

  std::vector<NodePtr> order_;
  std::vector<NodePtr> inputs_;
  std::vector<NodePtr> outputs_;
  std::vector<UpdatePair> updates_;
  std::size_t apply_count_ = 0;
};

class ReferenceBackend : public Backend {
 public:
  std::string name() const override { return "reference"; }
  bool supports(const FunctionGraph&, std::string*) const override { return true; }
  std::unique_ptr<Program> compile(const FunctionGraph& fg) override {
    return std::make_unique<ReferenceProgram>(fg);
  }
};

}  // namespace

std::shared_ptr<Backend> make_reference_backend() { return std::make_shared<ReferenceBackend>(); }

}  // namespace thea
