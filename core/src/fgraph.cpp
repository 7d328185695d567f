#include "thea/fgraph.hpp"

#include <cstdio>
#include <unordered_map>
#include <unordered_set>

#include "thea/error.hpp"
#include "thea/rewrite.hpp"

namespace thea {

namespace {

// Clones Apply nodes (memoized); leaves map to themselves unless substituted.
class Cloner {
 public:
  std::unordered_map<const Node*, NodePtr> memo;

  NodePtr clone(const NodePtr& root) {
    for (const NodePtr& n : toposort({root})) {
      if (memo.count(n.get())) continue;
      if (n->is_leaf()) {
        memo[n.get()] = n;
        continue;
      }
      auto c = std::make_shared<Node>(*n);
      for (NodePtr& in : c->inputs) in = memo.at(in.get());
      memo[n.get()] = c;
    }
    return memo.at(root.get());
  }
};

}  // namespace

FunctionGraph::FunctionGraph(std::vector<NodePtr> inputs, std::vector<NodePtr> outputs,
                             std::vector<UpdatePair> updates,
                             const std::vector<std::pair<NodePtr, NodePtr>>& givens)
    : inputs_(std::move(inputs)) {
  Cloner cloner;
  for (const auto& [old_node, new_node] : givens) {
    if (!old_node || !new_node) throw ValueError("givens: empty Variable in a (old, new) pair");
    if (old_node->type.dtype != new_node->type.dtype ||
        old_node->type.ndim() != new_node->type.ndim())
      throw TypeError("givens: cannot replace " + old_node->describe() + " by " +
                      new_node->describe() + ": dtype and rank must match");
    // The replacement is cloned before the substitution is registered, so an expression
    // that mentions the replaced variable keeps referring to the original.
    NodePtr replacement = cloner.clone(new_node);
    cloner.memo[old_node.get()] = replacement;
  }
  for (NodePtr& o : outputs) o = cloner.clone(o);
  outputs_ = std::move(outputs);
  for (UpdatePair& u : updates) {
    u.value = cloner.clone(u.value);
    updates_.push_back(u);
  }
}

std::vector<NodePtr> FunctionGraph::roots() const {
  std::vector<NodePtr> r = outputs_;
  for (const UpdatePair& u : updates_) r.push_back(u.value);
  return r;
}

std::vector<NodePtr> FunctionGraph::toposort() const { return thea::toposort(roots()); }

std::unordered_map<const Node*, std::vector<NodePtr>> FunctionGraph::clients() const {
  std::unordered_map<const Node*, std::vector<NodePtr>> c;
  for (const NodePtr& n : toposort())
    for (const NodePtr& in : n->inputs) c[in.get()].push_back(n);
  return c;
}

void FunctionGraph::replace(const NodePtr& old_node, const NodePtr& new_node,
                            const std::string& reason) {
  if (old_node == new_node) return;
  if (old_node->type.dtype != new_node->type.dtype ||
      old_node->type.ndim() != new_node->type.ndim())
    throw Error("rewrite '" + reason + "' tried to replace " + old_node->describe() + " by " +
                new_node->describe() + " of a different type (a bug in the rewrite)");
  if (debug_enabled("rewrites"))
    std::fprintf(stderr, "[thea rewrite] %s: %s -> %s\n", reason.c_str(), old_node->label().c_str(),
                 new_node->label().c_str());
  // Nodes inside the replacement keep their inputs: replace(x, f(x)) must not make f(x)
  // its own input.
  std::unordered_set<const Node*> inside;
  for (const NodePtr& n : thea::toposort({new_node})) inside.insert(n.get());
  for (const NodePtr& n : toposort()) {
    if (inside.count(n.get())) continue;
    for (NodePtr& in : n->inputs)
      if (in == old_node) in = new_node;
  }
  for (NodePtr& o : outputs_)
    if (o == old_node) o = new_node;
  for (UpdatePair& u : updates_)
    if (u.value == old_node) u.value = new_node;
  ++replacements_;
}

}  // namespace thea
